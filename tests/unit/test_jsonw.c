/* Bounded JSON writer: escaping, commas, numbers, overflow behaviour. */
#include "test.h"

#include <math.h>

#include "err.h"
#include "jsonw.h"

static void
test_escaping_controls(void)
{
	char buf[512];
	struct jsonw w;
	jsonw_init(&w, buf, sizeof(buf));
	char all[32];
	for (int c = 0; c < 32; c++)
		all[c] = (char) c;
	jsonw_strn(&w, all, sizeof(all));
	CHECK_INT(jsonw_finish(&w), 0);
	CHECK_STR(buf,
	    "\"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006"
	    "\\u0007\\b\\t\\n\\u000b\\f\\r\\u000e\\u000f\\u0010"
	    "\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017"
	    "\\u0018\\u0019\\u001a\\u001b\\u001c\\u001d\\u001e"
	    "\\u001f\"");
}

static void
test_escaping_quotes_and_utf8(void)
{
	char buf[256];
	struct jsonw w;
	jsonw_init(&w, buf, sizeof(buf));
	jsonw_obj_begin(&w);
	jsonw_kstr(&w, "k\"ey\\", "say \"hi\" \\ / caf\xC3\xA9 \x7F");
	jsonw_obj_end(&w);
	CHECK_INT(jsonw_finish(&w), 0);
	CHECK_STR(buf,
	    "{\"k\\\"ey\\\\\":\"say \\\"hi\\\" \\\\ / caf\xC3\xA9 "
	    "\x7F\"}");
	CHECK_INT(w.len, strlen(buf));
}

static void
test_invalid_utf8_replaced(void)
{
	char buf[256];
	struct jsonw w;
	const char *rep = "\xEF\xBF\xBD";
	char want[128];

	jsonw_init(&w, buf, sizeof(buf));
	jsonw_str(&w,
	    "a\xFF"
	    "b");
	snprintf(want, sizeof(want), "\"a%sb\"", rep);
	CHECK_STR(buf, want);

	/* overlong, encoded surrogate, > U+10FFFF, truncated sequence */
	jsonw_reset(&w);
	jsonw_arr_begin(&w);
	jsonw_str(&w, "\xC0\xAF");
	jsonw_str(&w, "\xED\xA0\x80");
	jsonw_str(&w, "\xF4\x90\x80\x80");
	jsonw_str(&w, "x\xE2\x82");
	jsonw_arr_end(&w);
	CHECK_INT(jsonw_finish(&w), 0);
	snprintf(want, sizeof(want),
	    "[\"%s%s\",\"%s%s%s\",\"%s%s%s%s\",\"x%s%s\"]", rep, rep, rep, rep,
	    rep, rep, rep, rep, rep, rep, rep);
	CHECK_STR(buf, want);

	/* valid multi-byte text is kept as is */
	jsonw_reset(&w);
	jsonw_str(&w, "\xE2\x82\xAC\xF0\x9F\x98\x80");
	CHECK_STR(buf, "\"\xE2\x82\xAC\xF0\x9F\x98\x80\"");
}

static void
test_commas_nested(void)
{
	char buf[256];
	struct jsonw w;
	jsonw_init(&w, buf, sizeof(buf));
	jsonw_obj_begin(&w);
	jsonw_kint(&w, "a", 1);
	jsonw_key(&w, "b");
	jsonw_arr_begin(&w);
	jsonw_int(&w, -2);
	jsonw_obj_begin(&w);
	jsonw_obj_end(&w);
	jsonw_arr_begin(&w);
	jsonw_arr_end(&w);
	jsonw_obj_begin(&w);
	jsonw_knull(&w, "c");
	jsonw_kbool(&w, "d", false);
	jsonw_obj_end(&w);
	jsonw_uint(&w, UINT64_MAX);
	jsonw_arr_end(&w);
	jsonw_kbool(&w, "e", true);
	jsonw_kraw(&w, "f", "[1,2]", 5);
	jsonw_kstrn(&w, "g", "xyz", 2);
	jsonw_obj_end(&w);
	CHECK_INT(jsonw_finish(&w), 0);
	CHECK_STR(buf,
	    "{\"a\":1,\"b\":[-2,{},[],{\"c\":null,\"d\":false},"
	    "18446744073709551615],\"e\":true,\"f\":[1,2],"
	    "\"g\":\"xy\"}");
	CHECK_INT(w.depth, 0);
}

static void
test_state_errors(void)
{
	char buf[64];
	struct jsonw w;
	jsonw_init(&w, buf, sizeof(buf));
	jsonw_obj_begin(&w);
	CHECK_INT(jsonw_finish(&w), BR_ESTATE); /* unclosed */
	jsonw_int(&w, 1); /* value without key */
	CHECK_INT(w.err, BR_ESTATE);

	jsonw_init(&w, buf, sizeof(buf));
	jsonw_arr_begin(&w);
	jsonw_obj_end(&w); /* mismatched close */
	CHECK_INT(jsonw_finish(&w), BR_ESTATE);

	jsonw_init(&w, buf, sizeof(buf));
	jsonw_int(&w, 1);
	jsonw_int(&w, 2); /* second top-level value */
	CHECK_INT(jsonw_finish(&w), BR_ESTATE);
	CHECK_STR(buf, "1");

	char deep[256];
	jsonw_init(&w, deep, sizeof(deep));
	for (int k = 0; k < JSONW_MAX_DEPTH + 5; k++)
		jsonw_arr_begin(&w);
	CHECK_INT(jsonw_finish(&w), BR_EDEPTH);
	CHECK(w.len < JSONW_MAX_DEPTH);
}

static void
test_doubles(void)
{
	char buf[512];
	struct jsonw w;
	jsonw_init(&w, buf, sizeof(buf));
	jsonw_arr_begin(&w);
	jsonw_double(&w, 0.1);
	jsonw_double(&w, 1e-05);
	jsonw_double(&w, 25.0);
	jsonw_double(&w, 0.30000000000000004);
	jsonw_double(&w, -1.5e300);
	jsonw_double(&w, NAN);
	jsonw_double(&w, INFINITY);
	jsonw_double(&w, -INFINITY);
	jsonw_fixed(&w, 25.0, 1);
	jsonw_fixed(&w, 2.0 / 3.0, 2);
	jsonw_fixed(&w, 7.6, 0);
	jsonw_fixed(&w, NAN, 1);
	jsonw_arr_end(&w);
	CHECK_INT(jsonw_finish(&w), 0);
	CHECK_STR(buf,
	    "[0.1,1e-05,25,0.30000000000000004,-1.5e+300,null,"
	    "null,null,25.0,0.67,8,null]");

	/* shortest form reads back exactly */
	const double vals[] = { 1.0 / 3.0, 123456789.123, 5e-324,
		1.7976931348623157e308, -0.0, 100 };
	for (size_t k = 0; k < sizeof(vals) / sizeof(vals[0]); k++) {
		jsonw_reset(&w);
		jsonw_double(&w, vals[k]);
		CHECK(strtod(buf, NULL) == vals[k]);
		CHECK(w.len <= 24);
	}
}

/* The printf-free paths of jsonw_fixed and jsonw_double must write
 * exactly what printf writes: compared over halves and near-halves (where
 * the fast path must step aside), percent values as the engine computes
 * them, negative and tiny values, whole numbers up to and past 1e15, and
 * random magnitudes. */
static void
test_numbers_match_printf(void)
{
	char buf[512], want[400];
	struct jsonw w;
	jsonw_init(&w, buf, sizeof(buf));
	int fixed_bad = 0, double_bad = 0, checked = 0;
	double vals[6000];
	size_t nv = 0;
	for (int k = -40; k <= 40; k++) {
		vals[nv++] = k / 8.0; /* exact halves at 0..3 decimals */
		vals[nv++] = k * 0.05; /* inexact halves: 0.15, 0.35, ... */
		vals[nv++] = k * 0.005 + 1e-12;
	}
	for (int max = 1; max <= 40; max++)
		for (int v = 0; v <= max; v++)
			vals[nv++] = v * 100.0 / max;
	const double fixed[] = { -0.0, 0.0, -0.04, -0.05, 0.05, 0.95, 9.95,
		99.95, 0.0005, 1e-300, 1e9, 1e12, 1099511627775.5,
		1099511627776.0, 123456789.987654, 4503599627370497.0,
		999999999999999.0, 1e15, 1e15 + 1, -1e15, 2.5, 1.5e300 };
	for (size_t k = 0; k < sizeof(fixed) / sizeof(fixed[0]); k++)
		vals[nv++] = fixed[k];
	uint64_t seed = 42;
	while (nv < sizeof(vals) / sizeof(vals[0])) {
		seed = seed * 6364136223846793005u + 1442695040888963407u;
		double mant = (double) (seed >> 11) / 9007199254740992.0;
		int exp = (int) ((seed >> 3) % 40) - 20;
		double v = ldexp(mant, exp) * ((seed & 1) ? -1 : 1);
		vals[nv++] = (seed & 6) == 0 ? floor(v * 1e6) : v;
	}
	for (size_t k = 0; k < nv; k++) {
		for (int d = 0; d <= 7; d++) {
			jsonw_reset(&w);
			jsonw_fixed(&w, vals[k], d);
			snprintf(want, sizeof(want), "%.*f", d, vals[k]);
			if (strcmp(buf, want) != 0 && fixed_bad++ < 5)
				fprintf(stderr,
				    "fixed %.17g/%d: %s, want %s\n", vals[k],
				    d, buf, want);
			checked++;
		}
		/* jsonw_double: the shortest %.15g..%.17g that reads back */
		for (int prec = 15; prec <= 17; prec++) {
			snprintf(want, sizeof(want), "%.*g", prec, vals[k]);
			if (strtod(want, NULL) == vals[k])
				break;
		}
		jsonw_reset(&w);
		jsonw_double(&w, vals[k]);
		if (strcmp(buf, want) != 0 && double_bad++ < 5)
			fprintf(stderr, "double %.17g: %s, want %s\n", vals[k],
			    buf, want);
	}
	CHECK_INT(fixed_bad, 0);
	CHECK_INT(double_bad, 0);
	CHECK(checked > 40000);
}

static void
test_ints(void)
{
	char buf[64];
	struct jsonw w;
	jsonw_init(&w, buf, sizeof(buf));
	jsonw_arr_begin(&w);
	jsonw_int(&w, INT64_MIN);
	jsonw_int(&w, 0);
	jsonw_uint(&w, 7);
	jsonw_arr_end(&w);
	CHECK_STR(buf, "[-9223372036854775808,0,7]");
	/* every digit count, each side of a power of ten, as printf writes */
	uint64_t v = 1;
	for (int k = 0; k < 20; k++, v *= 10) {
		const uint64_t around[] = { v - 1, v, v + 1, v * 7 + 3 };
		for (size_t j = 0; j < 4; j++) {
			char want[48];
			jsonw_init(&w, buf, sizeof(buf));
			jsonw_arr_begin(&w);
			jsonw_uint(&w, around[j]);
			jsonw_int(&w, -(int64_t) (around[j] >> 1));
			jsonw_arr_end(&w);
			snprintf(want, sizeof(want),
			    "[%" PRIu64 ",%" PRId64 "]", around[j],
			    -(int64_t) (around[j] >> 1));
			CHECK_STR(buf, want);
		}
	}
	jsonw_init(&w, buf, sizeof(buf));
	jsonw_uint(&w, UINT64_MAX);
	CHECK_STR(buf, "18446744073709551615");
}

/* Writes a document of every kind of value into exactly cap bytes followed
 * by canaries; returns the writer's error. */
static int
write_into(size_t cap, char *out, size_t out_size)
{
	char area[300];
	memset(area, '#', sizeof(area));
	struct jsonw w;
	jsonw_init(&w, area, cap);
	jsonw_obj_begin(&w);
	jsonw_kstr(&w, "text", "line\nwith \"quotes\" and \xC3\xA9\x01");
	jsonw_kint(&w, "n", -1234567);
	jsonw_key(&w, "list");
	jsonw_arr_begin(&w);
	jsonw_double(&w, 3.25);
	jsonw_fixed(&w, 99.5, 1);
	jsonw_bool(&w, true);
	jsonw_null(&w);
	jsonw_str(&w, "\xFF");
	jsonw_arr_end(&w);
	jsonw_kraw(&w, "raw", "{\"x\":[]}", 8);
	jsonw_obj_end(&w);
	for (size_t k = cap; k < sizeof(area); k++)
		if (area[k] != '#')
			return 99; /* wrote past cap */
	if (cap > 0 && (area[w.len] != '\0' || w.len >= cap))
		return 98; /* not NUL-terminated inside cap */
	if (cap > 0 && strlen(area) != w.len)
		return 97;
	CHECK(jsonw_room(&w) == 0 || w.err == 0);
	if (out)
		snprintf(out, out_size, "%s", cap > 0 ? area : "");
	return jsonw_finish(&w);
}

static void
test_overflow(void)
{
	char full[300];
	CHECK_INT(write_into(250, full, sizeof(full)), 0);
	size_t need = strlen(full) + 1;
	CHECK_STR(full,
	    "{\"text\":\"line\\nwith \\\"quotes\\\" and \xC3\xA9"
	    "\\u0001\",\"n\":-1234567,\"list\":[3.25,99.5,true,"
	    "null,\"\xEF\xBF\xBD\"],\"raw\":{\"x\":[]}}");
	CHECK_INT(write_into(need, NULL, 0), 0);
	for (size_t cap = 0; cap < need; cap++) {
		char part[300];
		int rc = write_into(cap, part, sizeof(part));
		CHECK_INT(rc, BR_ETRUNC);
		/* what was written is a prefix of the full output */
		CHECK(strncmp(full, part, strlen(part)) == 0);
	}
}

static void
test_sticky_and_reset(void)
{
	char buf[8];
	struct jsonw w;
	jsonw_init(&w, buf, sizeof(buf));
	jsonw_arr_begin(&w);
	jsonw_str(&w, "too long for this");
	CHECK_INT(w.err, BR_ETRUNC);
	char before[sizeof(buf)];
	memcpy(before, buf, sizeof(buf));
	size_t len_before = w.len;
	jsonw_int(&w, 1); /* would fit, but the error is sticky */
	CHECK_MEM(buf, sizeof(buf), before, sizeof(before));
	CHECK_INT(w.len, len_before);
	CHECK(strncmp(buf, "[\"too", strlen(buf)) == 0);
	CHECK_INT(jsonw_room(&w), 0);
	jsonw_reset(&w);
	CHECK_INT(w.err, 0);
	CHECK_STR(buf, "");
	jsonw_int(&w, 42);
	CHECK_INT(jsonw_finish(&w), 0);
	CHECK_STR(buf, "42");
	CHECK_INT(jsonw_room(&w), 5);
}

static void
test_strn_max(void)
{
	char buf[64];
	struct jsonw w;
	bool cut = false;
	jsonw_init(&w, buf, sizeof(buf));
	jsonw_arr_begin(&w);
	/* "é€" is 5 bytes; 4 must drop the whole € */
	jsonw_strn_max(&w, "\xC3\xA9\xE2\x82\xAC", 5, 4, &cut);
	CHECK(cut);
	cut = false;
	jsonw_strn_max(&w, "abc", 3, 3, &cut);
	CHECK(!cut);
	jsonw_arr_end(&w);
	CHECK_STR(buf, "[\"\xC3\xA9\",\"abc\"]");
}

static void
test_raw_pieces_and_rewind(void)
{
	char buf[64];
	struct jsonw w;
	jsonw_init(&w, buf, sizeof(buf));
	jsonw_obj_begin(&w);
	CHECK_INT(jsonw_sep_len(&w), 0);
	jsonw_key_raw(&w, "a\\n", 3);
	CHECK_INT(jsonw_sep_len(&w), 0);
	jsonw_str_raw(&w, "x\\u00e9", 7);
	CHECK_INT(jsonw_sep_len(&w), 1);
	struct jsonw_mark m = jsonw_mark(&w);
	jsonw_key(&w, "dropped");
	jsonw_arr_begin(&w);
	jsonw_int(&w, 1);
	jsonw_rewind(&w, &m);
	CHECK_STR(buf, "{\"a\\n\":\"x\\u00e9\"");
	jsonw_kint(&w, "b", 2);
	jsonw_obj_end(&w);
	CHECK_INT(jsonw_finish(&w), 0);
	CHECK_STR(buf, "{\"a\\n\":\"x\\u00e9\",\"b\":2}");
}

static void
test_raw_reserve_commit(void)
{
	char buf[16];
	struct jsonw w;
	jsonw_init(&w, buf, sizeof(buf));
	jsonw_arr_begin(&w);
	jsonw_int(&w, 1);
	size_t room = 0;
	char *dst = jsonw_raw_reserve(&w, &room);
	/* the separator is already written, the room is what is left */
	CHECK(dst == buf + 3);
	CHECK_STR(buf, "[1,");
	CHECK_INT(room, sizeof(buf) - 1 - 3);
	memcpy(dst, "{}", 2);
	jsonw_raw_commit(&w, 2);
	jsonw_int(&w, 7);
	jsonw_arr_end(&w);
	CHECK_INT(jsonw_finish(&w), 0);
	CHECK_STR(buf, "[1,{},7]");

	/* committing more than the room fails like any overflow */
	jsonw_init(&w, buf, sizeof(buf));
	dst = jsonw_raw_reserve(&w, &room);
	CHECK(dst != NULL);
	jsonw_raw_commit(&w, room + 1);
	CHECK_INT(jsonw_finish(&w), BR_ETRUNC);
	/* and a writer in error hands out nothing */
	CHECK(jsonw_raw_reserve(&w, &room) == NULL);
	CHECK_INT(room, 0);
}

/* jsonw_str (NUL-terminated) and jsonw_key write what the counted forms
 * write at every capacity: the same bytes, length and error, whether the
 * string is plain (one pass) or needs escaping, fits or is cut. */
static void
test_cstr_matches_counted(void)
{
	static const char *const strs[] = { "", "ts", "prompt_id", "a\"b",
		"tab\there", "caf\xc3\xa9", "\xff", "x\x7f" };
	for (size_t k = 0; k < sizeof(strs) / sizeof(strs[0]); k++) {
		const char *str = strs[k];
		for (size_t cap = 1; cap < 32; cap++) {
			char a[32], b[32];
			struct jsonw wa, wb;
			jsonw_init(&wa, a, cap);
			jsonw_init(&wb, b, cap);
			jsonw_arr_begin(&wa);
			jsonw_arr_begin(&wb);
			jsonw_str(&wa, str);
			jsonw_strn(&wb, str, strlen(str));
			CHECK_INT((long) wa.len, (long) wb.len);
			CHECK_INT(wa.err, wb.err);
			CHECK_STR(a, b);
			/* a key: the same bytes plus the colon as
			 * jsonw_key_raw of the escaped form writes */
			char esc[32];
			struct jsonw we;
			jsonw_init(&we, esc, sizeof(esc));
			jsonw_strn(&we, str, strlen(str));
			jsonw_init(&wa, a, cap);
			jsonw_init(&wb, b, cap);
			jsonw_obj_begin(&wa);
			jsonw_obj_begin(&wb);
			jsonw_key(&wa, str);
			jsonw_key_raw(&wb, esc + 1, we.len - 2);
			if (wa.err == 0 || wb.err == 0) {
				CHECK_INT((long) wa.len, (long) wb.len);
				CHECK_STR(a, b);
			}
			CHECK_INT(wa.err == 0, wb.err == 0);
		}
	}
	/* every byte value inside a string */
	for (int b = 1; b < 256; b++) {
		char str[4] = { 'a', (char) b, 'z', 0 }, a[32], c[32];
		struct jsonw wa, wc;
		jsonw_init(&wa, a, sizeof(a));
		jsonw_init(&wc, c, sizeof(c));
		jsonw_str(&wa, str);
		jsonw_strn(&wc, str, 3);
		CHECK_STR(a, c);
	}
}

int
main(void)
{
	RUN(test_escaping_controls);
	RUN(test_escaping_quotes_and_utf8);
	RUN(test_invalid_utf8_replaced);
	RUN(test_commas_nested);
	RUN(test_state_errors);
	RUN(test_doubles);
	RUN(test_numbers_match_printf);
	RUN(test_ints);
	RUN(test_overflow);
	RUN(test_sticky_and_reset);
	RUN(test_strn_max);
	RUN(test_raw_pieces_and_rewind);
	RUN(test_raw_reserve_commit);
	RUN(test_cstr_matches_counted);
	TEST_MAIN_END();
}
