/* Fuzzes the JSON core: anything json_parse accepts must re-emit (with and
 * without a budget, fast path and token by token alike) into JSON that
 * json_parse accepts again, canonically, with no unpaired surrogate escape
 * left; strings decode to valid UTF-8 (no surrogate either); a growing
 * parser gives the tokens a big fixed one gives; navigation and accessors
 * must agree with each other. Any disagreement aborts, which libFuzzer
 * reports as a crash. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "json.h"
#include "../unit/json_oracle.h"
#include "jsonw.h"
#include "utf8.h"

#define REQUIRE(cond)                                                         \
	do {                                                                  \
		if (!(cond)) {                                                \
			fprintf(stderr, "fuzz_json: %s failed at line %d\n",  \
			    #cond, __LINE__);                                 \
			abort();                                              \
		}                                                             \
	} while (0)

static struct json_parser *small_parser, *big_parser, *check_parser;
static struct json_parser *growing_parser;

/* Bytes a minimal form of a cut value may take beyond the budget. */
static bool
is_minimal(const char *s)
{
	return strcmp(s, "\"\"") == 0 || strcmp(s, "[]") == 0
	    || strcmp(s, "{}") == 0 || strcmp(s, "null") == 0;
}

static void
exercise_value(const struct json_doc *d, int i)
{
	char str[256];
	int64_t iv;
	double dv;
	bool bv;
	int irc = json_get_int64(d, i, &iv);
	int drc = json_get_double(d, i, &dv);
	if (irc == 0 && drc == 0)
		REQUIRE(dv == (double) iv); /* both round the same integer */
	if (irc == 0)
		REQUIRE(json_is_number(d, i));
	if (json_is_number(d, i))
		REQUIRE(irc == 0 || irc == BR_ERANGE);
	else
		REQUIRE(irc == BR_ETYPE);
	if (json_get_bool(d, i, &bv) == 0)
		REQUIRE(!json_is_number(d, i) && !json_is_null(d, i));
	int src = json_str_get(d, i, str, sizeof(str));
	if (json_is_string(d, i)) {
		REQUIRE(src >= 0 || src == BR_ETRUNC || src == BR_EINVAL);
		/* unpaired surrogates decode as U+FFFD: valid UTF-8, also
		 * when cut (up to a \u0000, where strlen stops) */
		REQUIRE(utf8_valid(str, strlen(str)));
		if (src >= 0) {
			REQUIRE(strlen(str) == (size_t) src);
			REQUIRE(json_str_eq(d, i, str));
		}
	} else {
		REQUIRE(src == BR_ETYPE);
	}
	size_t raw_len;
	REQUIRE(json_raw_value(d, i, &raw_len) != NULL);
	REQUIRE(raw_len <= d->len);
}

/* Walks the root's members: keys found by name lead to a key with the same
 * text (the first one, with duplicates), children are in order. */
static void
exercise_members(const struct json_doc *d)
{
	int n = json_size(d, 0);
	bool obj = json_is_object(d, 0);
	int expect = 1;
	for (int k = 0; k < n && k < 64; k++) {
		int c = json_child(d, 0, k);
		REQUIRE(c == expect);
		int value = obj ? c + 1 : c;
		REQUIRE(value < d->ntok);
		expect = json_skip(d, value);
		REQUIRE(expect > value && expect <= d->ntok);
		exercise_value(d, value);
		if (!obj)
			continue;
		char key[128];
		if (json_str_get(d, c, key, sizeof(key)) < 0)
			continue; /* long key or one with \u0000 */
		REQUIRE(utf8_valid(key, strlen(key)));
		int found = json_obj_get(d, 0, key);
		REQUIRE(found > 0 && found <= value);
		REQUIRE(json_str_eq(d, found - 1, key));
	}
	REQUIRE(json_child(d, 0, n) == -1);
	if (n < 64)
		REQUIRE(expect == json_skip(d, 0));
}

/* Emits the root and checks the output re-parses; with budget 0 it must be
 * complete and canonical (emitting the re-parse gives the same bytes). */
static void
check_emit(const struct json_doc *d, size_t budget, char *out, size_t cap,
    const char *full)
{
	struct jsonw w;
	bool truncated = false;
	jsonw_init(&w, out, cap);
	REQUIRE(json_emit(d, 0, &w, budget, &truncated) == 0);
	REQUIRE(jsonw_finish(&w) == 0);
	size_t len = strlen(out);
	REQUIRE(len == w.len);
	REQUIRE(!has_lone_surrogate(out));

	/* json_emit's compacting fast path must write exactly what the
	 * token-by-token path writes */
	char *slow = malloc(cap);
	REQUIRE(slow != NULL);
	struct jsonw sw;
	bool slow_truncated = false;
	jsonw_init(&sw, slow, cap);
	REQUIRE(
	    json_emit_tokenwise_for_tests(d, 0, &sw, budget, &slow_truncated)
	    == 0);
	REQUIRE(jsonw_finish(&sw) == 0);
	REQUIRE(strcmp(slow, out) == 0 && slow_truncated == truncated);
	free(slow);

	struct json_doc again;
	int rc = json_parse(check_parser, out, len, false, &again);
	REQUIRE(rc == BR_OK && again.no_lone_surrogates);
	if (budget == 0) {
		REQUIRE(!truncated);
		REQUIRE(again.ntok == d->ntok);
		char *second = malloc(cap);
		REQUIRE(second != NULL);
		jsonw_init(&w, second, cap);
		REQUIRE(json_emit(&again, 0, &w, 0, &truncated) == 0);
		REQUIRE(strcmp(second, out) == 0);
		free(second);
		return;
	}
	if (!truncated) {
		/* only a minimal form may not fit and still be whole */
		REQUIRE(strcmp(out, full) == 0);
		REQUIRE(len <= budget || is_minimal(out));
	} else {
		REQUIRE(len <= budget || is_minimal(out));
		REQUIRE(strlen(full) > budget);
	}
}

/* Everything above, on one input. */
static void
check_input(const char *buf, size_t size)
{
	struct json_doc d;

	int small_rc = json_parse(small_parser, buf, size, false, &d);
	REQUIRE(small_rc <= 0 && small_rc >= BR_EUNSUPPORTED);
	/* trimmed now and then, so it grows again from its small start */
	if (size % 4 == 0)
		json_parser_trim(growing_parser);
	struct json_doc gd;
	int growing_rc = json_parse(growing_parser, buf, size, false, &gd);
	int obj_rc = json_parse(big_parser, buf, size, true, &d);
	int rc = json_parse(big_parser, buf, size, false, &d);
	REQUIRE(rc <= 0 && rc >= BR_EUNSUPPORTED && rc != BR_ETYPE);
	/* a small token budget can only add "too many tokens" */
	REQUIRE(small_rc == rc || small_rc == BR_ETOKENS);
	/* growing to the same maximum decides alike, on the same tokens */
	REQUIRE(growing_rc == rc);
	if (rc == BR_OK) {
		REQUIRE(gd.ntok == d.ntok && gd.tok != d.tok);
		REQUIRE(memcmp(gd.tok, d.tok, (size_t) d.ntok * sizeof(*d.tok))
		    == 0);
		REQUIRE(gd.finite_prefix == d.finite_prefix);
		REQUIRE(gd.no_lone_surrogates == d.no_lone_surrogates);
	}
	if (rc != BR_OK) {
		REQUIRE(obj_rc == rc);
		return;
	}
	REQUIRE(obj_rc == (json_is_object(&d, 0) ? BR_OK : BR_ETYPE));
	REQUIRE(d.ntok >= 1 && json_skip(&d, 0) == d.ntok);

	/* only NaN -> null grows: by 1 byte per 3 input bytes at most */
	size_t cap = 2 * size + 64;
	char *full = malloc(cap), *out = malloc(cap);
	REQUIRE(full && out);
	check_emit(&d, 0, full, cap, NULL);
	size_t flen = strlen(full);
	/* tiny, around the cut points, and one that moves with the input */
	size_t moving = (size * 2654435761u) % (flen + 1) + 1;
	const size_t budgets[]
	    = { 1, flen / 2 + 1, flen > 1 ? flen - 1 : 1, moving };
	for (size_t k = 0; k < sizeof(budgets) / sizeof(budgets[0]); k++)
		check_emit(&d, budgets[k], out, cap, full);

	exercise_members(&d);
	free(full);
	free(out);
}

/* The trace seeds hold no \u escape at all and mutations seldom make a
 * surrogate, so every input with strings is tried a second time with
 * surrogate escapes put at the start of each string: unpaired halves,
 * pairs and runs of both, in keys and values, the mix changing with the
 * input. A string starts at a quote met outside any string; inside one, a
 * backslash hides the next byte (as jsmn splits them). */
static void
check_surrogate_variant(const uint8_t *data, size_t size)
{
	static const char *const halves[]
	    = { "\\ud800", "\\udc00", "\\ud83d\\ude00", "\\udbff\\udbff",
		      "\\udfff\\ud800", "", "\\uD834x\\uDC00" };
	const size_t nh = sizeof(halves) / sizeof(halves[0]);
	if (!memchr(data, '"', size))
		return;
	/* a byte becomes itself plus at most the longest entry (13) */
	size_t cap = size * 14;
	char *v = malloc(cap);
	REQUIRE(v != NULL);
	size_t n = 0, pick = size;
	bool in_str = false;
	for (size_t i = 0; i < size; i++) {
		char c = (char) data[i];
		v[n++] = c;
		if (in_str && c == '\\' && i + 1 < size) {
			v[n++] = (char) data[++i];
		} else if (c == '"' && !in_str) {
			const char *h = halves[pick++ % nh];
			memcpy(v + n, h, strlen(h));
			n += strlen(h);
			in_str = true;
		} else if (c == '"') {
			in_str = false;
		}
	}
	check_input(v, n);
	free(v);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!small_parser) {
		small_parser = json_parser_create(16);
		big_parser = json_parser_create(16384);
		check_parser = json_parser_create(16384);
		growing_parser = json_parser_create_growing(2, 16384);
		REQUIRE(small_parser && big_parser && check_parser
		    && growing_parser);
	}
	check_input((const char *) data, size);
	check_surrogate_variant(data, size);
	return 0;
}
