/* topic: hostile ids never escape their level; prefixes are checked;
 * builders report truncation instead of overflowing. */
#include <stdbool.h>
#include <stdint.h>

#include "err.h"
#include "test.h"
#include "topic.h"

static bool
only_allowed(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
		    || (c >= '0' && c <= '9') || c == '.' || c == '_'
		    || c == ':' || c == '-';
		if (!ok)
			return false;
	}
	return true;
}

/* Sanitizes id[0..len) into a fresh buffer and checks the invariants that
 * hold for every input: NUL-terminated, returned length matches, bounded,
 * allowed characters only. */
static size_t
sanitize(char *dst, const char *id, size_t len)
{
	memset(dst, 'Z', TOPIC_ID_MAX + 8);
	size_t n = topic_sanitize(dst, TOPIC_ID_MAX + 1, id, len);
	CHECK(n >= 1 && n <= TOPIC_ID_MAX);
	CHECK_INT(strlen(dst), n);
	CHECK(only_allowed(dst, n));
	CHECK(dst[TOPIC_ID_MAX + 1] == 'Z');
	return n;
}

static void
test_sanitize_hostile(void)
{
	static const struct {
		const char *in;
		size_t len;
		const char *want;
	} cases[] = {
		{ "a/b", 3, "a_b" },
		{ "+", 1, "_" },
		{ "#", 1, "_" },
		{ "$SYS", 4, "_SYS" },
		{ "$", 1, "_" },
		{ "", 0, "_" },
		{ "a\0b", 3, "a_b" },
		{ "\0", 1, "_" },
		{ "\xc3\xa9", 2, "__" }, /* é */
		{ "caf\xc3\xa9", 5, "caf__" },
		{ "sp ace\t\n", 8, "sp_ace__" },
		{ "../x", 4, ".._x" },
		{ "8c2f0e1a-3b1d-4c7e-9a62-1d4e8b7f0c35", 36,
		    "8c2f0e1a-3b1d-4c7e-9a62-1d4e8b7f0c35" },
		{ "crystools.monitor", 17, "crystools.monitor" },
		{ "assets.seed:done_X-1", 20, "assets.seed:done_X-1" },
	};
	char dst[TOPIC_ID_MAX + 8];
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t n = sanitize(dst, cases[i].in, cases[i].len);
		CHECK_STR(dst, cases[i].want);
		CHECK_INT(n, strlen(cases[i].want));
	}
}

static void
test_sanitize_every_byte(void)
{
	char dst[TOPIC_ID_MAX + 8];
	for (int b = 0; b < 256; b++) {
		char in[3] = { 'x', (char) b, 'y' };
		sanitize(dst, in, 3);
		bool allowed = only_allowed(in + 1, 1);
		CHECK_INT(dst[1], allowed ? (char) b : '_');
		/* And as the first byte, where '$' matters. */
		sanitize(dst, in + 1, 1);
		CHECK_INT(dst[0], allowed ? (char) b : '_');
	}
}

static uint32_t
reference_fnv1a(const char *s, size_t len)
{
	uint32_t h = 0x811c9dc5u;
	for (size_t i = 0; i < len; i++)
		h = (h ^ (uint8_t) s[i]) * 0x01000193u;
	return h;
}

static void
test_sanitize_long_ids(void)
{
	char a[200], b[200];
	memset(a, 'p', sizeof(a));
	memcpy(b, a, sizeof(b));
	b[150] = 'q'; /* same first 100 (and 149) bytes */
	char da[TOPIC_ID_MAX + 8], db[TOPIC_ID_MAX + 8];
	size_t na = sanitize(da, a, sizeof(a));
	size_t nb = sanitize(db, b, sizeof(b));
	CHECK_INT(na, TOPIC_ID_MAX);
	CHECK_INT(nb, TOPIC_ID_MAX);
	CHECK(strcmp(da, db) != 0);

	/* Cut prefix, '_', 8 lowercase hex digits of FNV-1a of the whole
	 * raw id. */
	char want[16];
	snprintf(want, sizeof(want), "_%08x", reference_fnv1a(b, sizeof(b)));
	CHECK_STR(db + TOPIC_ID_MAX - 9, want);
	CHECK(memcmp(db, b, TOPIC_ID_MAX - 9) == 0);

	/* Deterministic. */
	char again[TOPIC_ID_MAX + 8];
	sanitize(again, b, sizeof(b));
	CHECK_STR(again, db);

	/* Exactly TOPIC_ID_MAX is kept whole; one more byte is hashed. */
	size_t n = sanitize(da, a, TOPIC_ID_MAX);
	CHECK_INT(n, TOPIC_ID_MAX);
	CHECK(memcmp(da, a, TOPIC_ID_MAX) == 0);
	n = sanitize(da, a, TOPIC_ID_MAX + 1);
	CHECK_INT(n, TOPIC_ID_MAX);
	snprintf(
	    want, sizeof(want), "_%08x", reference_fnv1a(a, TOPIC_ID_MAX + 1));
	CHECK_STR(da + TOPIC_ID_MAX - 9, want);

	/* A long hostile id stays inside the allowed set. */
	char h[200];
	for (size_t i = 0; i < sizeof(h); i++)
		h[i] = "/+#$\0\xff"[i % 6];
	sanitize(da, h, sizeof(h));
	CHECK(da[0] == '_');
}

static void
test_sanitize_small_buffers(void)
{
	char buf[16];
	memset(buf, 'Z', sizeof(buf));
	CHECK_INT(topic_sanitize(buf, 0, "abc", 3), 0);
	CHECK_INT(buf[0], 'Z');
	CHECK_INT(topic_sanitize(buf, 1, "abc", 3), 0);
	CHECK_STR(buf, "");
	CHECK_INT(buf[1], 'Z');
	CHECK_INT(topic_sanitize(buf, 4, "a/bcdef", 7), 3);
	CHECK_STR(buf, "a_b");
	CHECK_INT(buf[4], 'Z');
	/* Room for a hash suffix: distinct long ids stay distinct. */
	char x[16];
	size_t n = topic_sanitize(buf, 12, "abcdefghijklmnop", 16);
	CHECK_INT(n, 11);
	topic_sanitize(x, 12, "abcdefghijklmnoq", 16);
	CHECK(strcmp(buf, x) != 0);
	CHECK_INT(buf[12], 'Z');
}

static void
test_prefix_valid(void)
{
	char longest[130];
	memset(longest, 'p', 128);
	longest[128] = '\0';
	CHECK(topic_prefix_valid("comfyui"));
	CHECK(topic_prefix_valid("home/comfy"));
	CHECK(topic_prefix_valid("a"));
	CHECK(topic_prefix_valid("caf\xc3\xa9/\xf0\x9f\x8e\xa8")); /* café/🎨 */
	CHECK(topic_prefix_valid("a.b/c d/x$"));
	CHECK(topic_prefix_valid(longest));

	longest[128] = 'p';
	longest[129] = '\0';
	CHECK(!topic_prefix_valid(longest));
	static const char *bad[] = {
		"", "/", "/a", "a/", "a//b", "a/+/b", "+", "a#", "#", "$SYS",
		"$", "a\xff", "\xc0\xaf", /* overlong '/' */
		"\xe0\x80\xaf", /* overlong '/' */
		"\xed\xa0\x80", /* surrogate */
		"\xf4\x90\x80\x80", /* above U+10FFFF */
		"a\xc3", /* truncated sequence */
		"\xe2\x82", /* truncated sequence */
		"a\tb", /* control: mosquitto refuses it */
		"\x7f", "\xc2\x85", /* C1 control */
		"\xef\xbf\xbf", /* U+FFFF non-character */
		"\xef\xb7\x90", /* U+FDD0 non-character */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (topic_prefix_valid(bad[i]))
			TEST_FAIL("prefix #%zu accepted", i);
		test_checks++;
	}
	CHECK(!topic_prefix_valid(NULL));
}

/* Builds into every cap from 0 to len + 1: below len + 1 it must report
 * BR_ETRUNC, leave an empty string and write nothing past cap. */
typedef int (*build_fn)(char *dst, size_t cap);

static void
check_truncation(build_fn build, const char *want)
{
	size_t len = strlen(want);
	char buf[TOPIC_MAX + 16];
	for (size_t cap = 0; cap <= len + 1; cap++) {
		memset(buf, 'Z', sizeof(buf));
		int rc = build(buf, cap);
		if (cap <= len) {
			CHECK_INT(rc, BR_ETRUNC);
			if (cap > 0)
				CHECK_STR(buf, "");
		} else {
			CHECK_INT(rc, (int) len);
			CHECK_STR(buf, want);
		}
		CHECK_INT(buf[cap], 'Z');
	}
}

static int
build_join(char *dst, size_t cap)
{
	return topic_join(dst, cap, "comfyui", "gpu1", "bridge/state");
}

static int
build_prompt_state(char *dst, size_t cap)
{
	return topic_prompt(
	    dst, cap, "comfyui", "gpu1", "8c2f", 4, "state", NULL, 0);
}

static int
build_prompt_event(char *dst, size_t cap)
{
	return topic_prompt(
	    dst, cap, "comfyui", "gpu1", "8c2f", 4, "event", "progress", 8);
}

static int
build_event(char *dst, size_t cap)
{
	return topic_event(
	    dst, cap, "home/comfy", "gpu1", "crystools.monitor", 17);
}

static void
test_builders(void)
{
	check_truncation(build_join, "comfyui/gpu1/bridge/state");
	check_truncation(build_prompt_state, "comfyui/gpu1/prompt/8c2f/state");
	check_truncation(
	    build_prompt_event, "comfyui/gpu1/prompt/8c2f/event/progress");
	check_truncation(
	    build_event, "home/comfy/gpu1/event/crystools.monitor");

	char buf[TOPIC_MAX];
	CHECK_INT(topic_join(buf, sizeof(buf), "p", "i", NULL), 3);
	CHECK_STR(buf, "p/i");
}

static int
count_char(const char *s, char c)
{
	int n = 0;
	for (; *s; s++)
		n += *s == c;
	return n;
}

static void
test_builders_hostile_ids(void)
{
	char buf[TOPIC_MAX];
	int rc = topic_prompt(buf, sizeof(buf), "c", "i", "../#/+\0x", 8,
	    "event", "$SYS/a+b", 8);
	CHECK_STR(buf, "c/i/prompt/.._____x/event/_SYS_a_b");
	CHECK_INT(rc, (int) strlen(buf));
	CHECK_INT(count_char(buf, '/'), 5);

	rc = topic_event(buf, sizeof(buf), "c", "i", "", 0);
	CHECK_STR(buf, "c/i/event/_");
	rc = topic_event(buf, sizeof(buf), "c", "i", NULL, 0);
	CHECK_STR(buf, "c/i/event/_");
	rc = topic_prompt(buf, sizeof(buf), "c", "i", "", 0, "state", NULL, 0);
	CHECK_STR(buf, "c/i/prompt/_/state");

	/* A long prompt id is cut to TOPIC_ID_MAX in the topic. */
	char id[300];
	for (size_t i = 0; i < sizeof(id); i++)
		id[i] = "ab/#"[i % 4];
	rc = topic_prompt(
	    buf, sizeof(buf), "c", "i", id, sizeof(id), "state", NULL, 0);
	CHECK_INT(rc, (int) strlen("c/i/prompt//state") + TOPIC_ID_MAX);
	CHECK_INT(count_char(buf, '/'), 4);
	CHECK_INT(count_char(buf, '#'), 0);
	CHECK_INT(count_char(buf, '+'), 0);
}

int
main(void)
{
	RUN(test_sanitize_hostile);
	RUN(test_sanitize_every_byte);
	RUN(test_sanitize_long_ids);
	RUN(test_sanitize_small_buffers);
	RUN(test_prefix_valid);
	RUN(test_builders);
	RUN(test_builders_hostile_ids);
	TEST_MAIN_END();
}
