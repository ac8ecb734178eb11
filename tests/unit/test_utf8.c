/* UTF-8 helpers: strict decoding boundaries, validation, safe cutting. */
#include "test.h"
#include "utf8.h"

static size_t
dec(const char *s, size_t n, uint32_t *cp)
{
	return utf8_decode((const unsigned char *) s, n, cp);
}

static void
test_decode_boundaries(void)
{
	uint32_t cp = 0;
	CHECK_INT(dec("A", 1, &cp), 1);
	CHECK_INT(cp, 'A');
	CHECK_INT(dec("\xC2\x80", 2, &cp), 2);
	CHECK_INT(cp, 0x80);
	CHECK_INT(dec("\xDF\xBF", 2, &cp), 2);
	CHECK_INT(cp, 0x7FF);
	CHECK_INT(dec("\xE0\xA0\x80", 3, &cp), 3);
	CHECK_INT(cp, 0x800);
	CHECK_INT(dec("\xED\x9F\xBF", 3, &cp), 3);
	CHECK_INT(cp, 0xD7FF);
	CHECK_INT(dec("\xEE\x80\x80", 3, &cp), 3);
	CHECK_INT(cp, 0xE000);
	CHECK_INT(dec("\xEF\xBF\xBF", 3, &cp), 3);
	CHECK_INT(cp, 0xFFFF);
	CHECK_INT(dec("\xF0\x90\x80\x80", 4, &cp), 4);
	CHECK_INT(cp, 0x10000);
	CHECK_INT(dec("\xF4\x8F\xBF\xBF", 4, &cp), 4);
	CHECK_INT(cp, 0x10FFFF);
	CHECK_INT(dec("\xF0\x9F\x98\x80", 4, &cp), 4);
	CHECK_INT(cp, 0x1F600);
}

static void
test_decode_rejects(void)
{
	uint32_t cp;
	CHECK_INT(dec("", 0, &cp), 0);
	CHECK_INT(dec("\x80", 1, &cp), 0); /* lone continuation */
	CHECK_INT(dec("\xC0\xAF", 2, &cp), 0); /* overlong '/' */
	CHECK_INT(dec("\xC1\xBF", 2, &cp), 0); /* overlong */
	CHECK_INT(dec("\xE0\x9F\xBF", 3, &cp), 0); /* overlong 3-byte */
	CHECK_INT(dec("\xF0\x8F\xBF\xBF", 4, &cp), 0); /* overlong 4-byte */
	CHECK_INT(dec("\xED\xA0\x80", 3, &cp), 0); /* U+D800 */
	CHECK_INT(dec("\xED\xBF\xBF", 3, &cp), 0); /* U+DFFF */
	CHECK_INT(dec("\xF4\x90\x80\x80", 4, &cp), 0); /* U+110000 */
	CHECK_INT(dec("\xF5\x80\x80\x80", 4, &cp), 0);
	CHECK_INT(dec("\xFF", 1, &cp), 0);
	CHECK_INT(dec("\xFE", 1, &cp), 0);
	CHECK_INT(dec("\xE2\x82", 2, &cp), 0); /* truncated */
	CHECK_INT(dec("\xE2\x28\xA1", 3, &cp), 0); /* bad continuation */
	CHECK_INT(dec("\xF0\x9F\x98", 3, &cp), 0);
}

static void
test_valid(void)
{
	CHECK(utf8_valid("", 0));
	CHECK(utf8_valid("plain ascii", 11));
	CHECK(utf8_valid("a\0b", 3));
	CHECK(utf8_valid("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80", 14));
	CHECK(!utf8_valid("caf\xC3", 4));
	CHECK(!utf8_valid("\xFF", 1));
	CHECK(!utf8_valid("x\xC0\xAFy", 4));
	CHECK(!utf8_valid("\xED\xA0\x80", 3));
	CHECK(!utf8_valid("\xF4\x90\x80\x80", 4));
}

static void
test_cut(void)
{
	/* "aé€😀" = 1 + 2 + 3 + 4 bytes */
	const char *s = "a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80";
	size_t n = strlen(s);
	const size_t want[] = { 0, 1, 1, 3, 3, 3, 6, 6, 6, 6, 10 };
	for (size_t max = 0; max <= n; max++)
		CHECK_INT(utf8_cut(s, n, max), want[max]);
	CHECK_INT(utf8_cut(s, n, 1000), n);
	/* every cut of valid text is itself valid */
	for (size_t max = 0; max <= n; max++)
		CHECK(utf8_valid(s, utf8_cut(s, n, max)));
}

static void
test_encode_roundtrip(void)
{
	const uint32_t cps[] = { 0, 0x7F, 0x80, 0x7FF, 0x800, 0xD7FF, 0xE000,
		0xFFFD, 0xFFFF, 0x10000, 0x1F600, 0x10FFFF };
	for (size_t k = 0; k < sizeof(cps) / sizeof(cps[0]); k++) {
		unsigned char buf[4];
		uint32_t back = 0xFFFFFFFF;
		size_t n = utf8_encode(cps[k], buf);
		CHECK(n >= 1 && n <= 4);
		CHECK_INT(utf8_decode(buf, n, &back), n);
		CHECK_INT(back, cps[k]);
	}
	unsigned char buf[4];
	CHECK_INT(utf8_encode(0xD800, buf), 0);
	CHECK_INT(utf8_encode(0xDFFF, buf), 0);
	CHECK_INT(utf8_encode(0x110000, buf), 0);
}

static size_t
plain_run_bytewise(const unsigned char *s, size_t n)
{
	size_t i = 0;
	while (i < n && s[i] >= 0x20 && s[i] < 0x80 && s[i] != '"'
	    && s[i] != '\\')
		i++;
	return i;
}

/* The word-at-a-time scan against the byte-at-a-time definition: every
 * byte value at every position of a plain run (both sides of each word
 * boundary, in the tail), a second special byte after the first (a
 * borrow must not move the answer), and random strings. */
static void
test_json_plain_run(void)
{
	unsigned char s[40];
	memset(s, 'a', sizeof(s));
	CHECK_INT(utf8_json_plain_run(s, 0), 0);
	CHECK_INT(utf8_json_plain_run(s, sizeof(s)), sizeof(s));
	int mismatches = 0;
	for (size_t len = 1; len <= 24; len++)
		for (size_t at = 0; at < len; at++)
			for (int v = 0; v < 256; v++) {
				memset(s, 'a', sizeof(s));
				s[at] = (unsigned char) v;
				if (at + 1 < len)
					s[at + 1] = 0x01;
				mismatches += utf8_json_plain_run(s, len)
				    != plain_run_bytewise(s, len);
				if (at + 1 < len)
					s[at + 1] = '\\';
				mismatches += utf8_json_plain_run(s, len)
				    != plain_run_bytewise(s, len);
			}
	CHECK_INT(mismatches, 0);
	/* a special byte right before the run must not be looked at */
	memset(s, 'b', sizeof(s));
	s[0] = '"';
	CHECK_INT(utf8_json_plain_run(s + 1, 16), 16);
	uint32_t seed = 12345;
	for (int k = 0; k < 20000; k++) {
		size_t len = 0;
		for (size_t i = 0; i < sizeof(s); i++) {
			seed = seed * 1103515245u + 12345u;
			unsigned r = seed >> 16;
			/* mostly plain bytes, sometimes a special one */
			s[i] = (unsigned char) (r % 16 ? 0x20 + r % 0x5F
			                               : r >> 4);
		}
		len = (seed >> 8) % sizeof(s);
		mismatches += utf8_json_plain_run(s, len)
		    != plain_run_bytewise(s, len);
	}
	CHECK_INT(mismatches, 0);
}

/* MQTT strings: what mosquitto refuses is replaced by U+FFFD, everything
 * else is kept byte for byte, and a cut never splits a sequence. */
static void
test_mqtt_clean(void)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
		{ "plain-id_1.2:3", "plain-id_1.2:3" },
		{ "a\x07z", "a\xEF\xBF\xBDz" },
		{ "\x01\x1F\x7F", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD" },
		{ "x\xC2\x85y", "x\xEF\xBF\xBDy" }, /* U+0085, C1 */
		{ "\xC2\xA0\xC3\xA9",
		    "\xC2\xA0\xC3\xA9" }, /* U+00A0, é kept */
		{ "\xEF\xB7\x90", "\xEF\xBF\xBD" }, /* U+FDD0 */
		{ "\xEF\xBF\xBE\xEF\xBF\xBF", "\xEF\xBF\xBD\xEF\xBF\xBD" },
		{ "\xF0\x9F\xBF\xBF", "\xEF\xBF\xBD" }, /* U+1FFFF */
		{ "\xF0\x9F\x98\x80", "\xF0\x9F\x98\x80" }, /* emoji kept */
		{ "\xEF\xBF\xBD", "\xEF\xBF\xBD" }, /* U+FFFD itself is fine */
		{ "a\xFF"
		  "b",
		    "a\xEF\xBF\xBD"
		    "b" }, /* an invalid byte */
		{ "\xE2\x82", "\xEF\xBF\xBD\xEF\xBF\xBD" }, /* cut sequence */
		{ "", "" },
	};
	char out[64];
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t n = utf8_mqtt_clean(out, sizeof(out), cases[i].in);
		CHECK_STR(out, cases[i].out);
		CHECK_INT(n, strlen(cases[i].out));
		CHECK_INT(utf8_mqtt_ok(cases[i].in),
		    strcmp(cases[i].in, cases[i].out) == 0);
		CHECK(utf8_mqtt_ok(out));
	}
	/* every code point: allowed exactly outside the refused ranges */
	for (uint32_t cp = 1; cp <= 0x10FFFF; cp++) {
		if (cp >= 0xD800 && cp <= 0xDFFF)
			continue;
		bool refused = cp < 0x20 || (cp >= 0x7F && cp <= 0x9F)
		    || (cp >= 0xFDD0 && cp <= 0xFDEF)
		    || (cp & 0xFFFF) >= 0xFFFE;
		if (utf8_mqtt_allowed(cp) == refused)
			TEST_FAIL(
			    "U+%04X allowed=%d", (unsigned) cp, !refused);
	}
	/* a small buffer: whole sequences only, always terminated */
	const char *emoji = "\xF0\x9F\x98\x80\xF0\x9F\x98\x80";
	for (size_t cap = 1; cap <= 10; cap++) {
		char small[16];
		memset(small, 'Z', sizeof(small));
		size_t n = utf8_mqtt_clean(small, cap, emoji);
		CHECK_INT(n, (cap - 1) / 4 * 4);
		CHECK_INT(small[n], '\0');
		CHECK(utf8_valid(small, n));
	}
	CHECK_INT(utf8_mqtt_clean(out, 0, "abc"), 0);
}

int
main(void)
{
	RUN(test_decode_boundaries);
	RUN(test_decode_rejects);
	RUN(test_valid);
	RUN(test_cut);
	RUN(test_encode_roundtrip);
	RUN(test_json_plain_run);
	RUN(test_mqtt_clean);
	TEST_MAIN_END();
}
