/* JSON parser/validator, navigation and emission, against the shared traces
 * and against hostile input. */
#include "test.h"

#include <dirent.h>
#include <limits.h>
#include <time.h>

#include "err.h"
#include "json.h"
#include "json_oracle.h"
#include "utf8.h"

static struct json_parser *big; /* 16384 tokens, like the bridge */
static struct json_parser *check; /* re-parses what was emitted */

static int
parse_n(const char *s, size_t n, bool require_object, struct json_doc *d)
{
	return json_parse(big, s, n, require_object, d);
}

static int
parse(const char *s, bool require_object)
{
	struct json_doc d;
	return parse_n(s, strlen(s), require_object, &d);
}

/* Copies s without the whitespace outside strings: the compact form. */
static size_t
strip_ws(const char *s, size_t n, char *out)
{
	size_t k = 0;
	bool in_str = false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (in_str) {
			out[k++] = c;
			if (c == '\\')
				out[k++] = s[++i];
			else if (c == '"')
				in_str = false;
			continue;
		}
		if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
			continue;
		if (c == '"')
			in_str = true;
		out[k++] = c;
	}
	return k;
}

/* Emits value i of d into out (cap bytes); returns the writer's result. */
static int
emit(const struct json_doc *d, int i, size_t budget, char *out, size_t cap,
    bool *truncated)
{
	struct jsonw w;
	jsonw_init(&w, out, cap);
	*truncated = false;
	return json_emit(d, i, &w, budget, truncated);
}

/* Emitted text must parse again and hold no unpaired surrogate. */
static int
reparse(const char *s)
{
	struct json_doc d;
	bool lone = has_lone_surrogate(s);
	if (lone)
		fprintf(stderr, "  unpaired surrogate in: %s\n", s);
	CHECK(!lone);
	return json_parse(check, s, strlen(s), false, &d);
}

/* Where the value under test is written: a fresh document, an array that
 * already has an element, or an object after a key and another member. */
enum emit_ctx { CTX_TOP, CTX_ARRAY, CTX_OBJECT, CTX_COUNT };

/* Writes ctx's prefix, value i of d (through json_emit, or the token-by-token
 * path when tokenwise), then one more member and the closers, into out. */
static int
emit_in_ctx(const struct json_doc *d, int i, size_t budget, enum emit_ctx ctx,
    bool tokenwise, char *out, size_t cap, bool *truncated, int *finish)
{
	struct jsonw w;
	jsonw_init(&w, out, cap);
	*truncated = false;
	if (ctx == CTX_ARRAY) {
		jsonw_arr_begin(&w);
		jsonw_int(&w, 7);
	} else if (ctx == CTX_OBJECT) {
		jsonw_obj_begin(&w);
		jsonw_kint(&w, "before", 7);
		jsonw_key(&w, "v");
	}
	int rc = tokenwise
	    ? json_emit_tokenwise_for_tests(d, i, &w, budget, truncated)
	    : json_emit(d, i, &w, budget, truncated);
	if (ctx == CTX_ARRAY) {
		jsonw_null(&w);
		jsonw_arr_end(&w);
	} else if (ctx == CTX_OBJECT) {
		jsonw_kbool(&w, "after", true);
		jsonw_obj_end(&w);
	}
	*finish = jsonw_finish(&w);
	return rc;
}

static int fast_slow_compared;

/* json_emit (fast path when it applies) and the token-by-token path give
 * the same bytes, result, truncation and writer state for value i. */
static void
check_fast_eq_slow(const struct json_doc *d, int i, size_t budget,
    enum emit_ctx ctx, size_t cap)
{
	char *fast = malloc(cap), *slow = malloc(cap);
	bool tf, ts;
	int ff, fs;
	int rf = emit_in_ctx(d, i, budget, ctx, false, fast, cap, &tf, &ff);
	int rs = emit_in_ctx(d, i, budget, ctx, true, slow, cap, &ts, &fs);
	CHECK_INT(rf, rs);
	CHECK_INT(tf, ts);
	CHECK_INT(ff, fs);
	CHECK_STR(fast, slow);
	/* whatever was written whole is valid JSON, surrogates fixed */
	if (rf == 0 && ff == 0)
		CHECK_INT(reparse(fast), BR_OK);
	if (rf != rs || tf != ts || ff != fs || strcmp(fast, slow) != 0) {
		size_t n;
		const char *raw = json_raw_value(d, i, &n);
		fprintf(stderr, "  value %d budget %zu ctx %d cap %zu: %.*s\n",
		    i, budget, (int) ctx, cap, (int) (n > 300 ? 300 : n), raw);
	}
	fast_slow_compared++;
	free(fast);
	free(slow);
}

/* The value at i against the slow path: unlimited, at its compact size
 * (the edge of the fast path), one byte short, in every context, and in
 * writers just big enough and one byte too small. */
static void
check_fast_eq_slow_edges(const struct json_doc *d, int i)
{
	struct jsonw w;
	size_t n;
	json_raw_value(d, i, &n);
	size_t cap = n + 64;
	char *full = malloc(cap);
	jsonw_init(&w, full, cap);
	bool trunc = false;
	CHECK_INT(json_emit_tokenwise_for_tests(d, i, &w, 0, &trunc), 0);
	size_t clen = w.len;
	free(full);
	for (int ctx = 0; ctx < CTX_COUNT; ctx++) {
		check_fast_eq_slow(d, i, 0, (enum emit_ctx) ctx, cap);
		check_fast_eq_slow(d, i, clen, (enum emit_ctx) ctx, cap);
		if (clen > 1)
			check_fast_eq_slow(
			    d, i, clen - 1, (enum emit_ctx) ctx, cap);
	}
	/* CTX_TOP needs clen + 1 bytes (the NUL) */
	check_fast_eq_slow(d, i, 0, CTX_TOP, clen + 1);
	check_fast_eq_slow(d, i, 0, CTX_TOP, clen);
	check_fast_eq_slow(d, i, 0, CTX_ARRAY, clen + 3);
}

/* ---------------------------------------------------------------------- */

static int trace_lines, trace_text_frames, trace_text_by_substring;

static void
check_trace_line(const char *line, size_t n)
{
	struct json_doc d;
	int rc = parse_n(line, n, true, &d);
	CHECK_INT(rc, BR_OK);
	if (rc != BR_OK) {
		fprintf(
		    stderr, "  line: %.*s\n", (int) (n > 200 ? 200 : n), line);
		return;
	}
	trace_lines++;
	if (json_obj_get(&d, 0, "binary_hex_header") >= 0)
		return;
	trace_text_frames++;
	CHECK(json_is_string(&d, json_obj_get(&d, 0, "type")));
	check_fast_eq_slow_edges(&d, 0);
	int data = json_obj_get(&d, 0, "data");
	if (data >= 0)
		check_fast_eq_slow_edges(&d, data);

	char *out = malloc(n + 64), *again = malloc(n + 64),
	     *compact = malloc(n + 1);
	bool trunc;
	CHECK_INT(emit(&d, 0, 0, out, n + 64, &trunc), 0);
	CHECK(!trunc);
	size_t clen = strip_ws(line, n, compact);
	CHECK_MEM(out, strlen(out), compact, clen);

	struct json_doc d2;
	CHECK_INT(json_parse(check, out, strlen(out), true, &d2), BR_OK);
	CHECK_INT(d2.ntok, d.ntok);
	CHECK_INT(emit(&d2, 0, 0, again, n + 64, &trunc), 0);
	CHECK_STR(again, out);

	/* a budget of half the compact size cuts it, still valid */
	size_t budget = clen / 2;
	CHECK_INT(emit(&d, 0, budget, out, n + 64, &trunc), 0);
	CHECK(trunc);
	CHECK(strlen(out) <= budget);
	CHECK_INT(reparse(out), BR_OK);
	free(out);
	free(again);
	free(compact);
}

static void
test_traces(void)
{
	const char *dir = test_traces_dir();
	DIR *dp = opendir(dir);
	CHECK(dp != NULL);
	if (!dp)
		return;
	int files = 0;
	struct dirent *de;
	while ((de = readdir(dp)) != NULL) {
		size_t nl = strlen(de->d_name);
		if (nl < 6 || strcmp(de->d_name + nl - 6, ".jsonl") != 0)
			continue;
		char path[1024];
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		size_t len;
		char *text = test_read_file(path, &len);
		files++;
		char *p = text;
		while (p < text + len) {
			char *eol = memchr(p, '\n', (size_t) (text + len - p));
			size_t n = eol ? (size_t) (eol - p)
			               : (size_t) (text + len - p);
			if (n > 0) {
				/* memmem on a line copy: the line has no NUL
				 */
				char *copy = malloc(n + 1);
				memcpy(copy, p, n);
				copy[n] = '\0';
				if (!strstr(copy, "\"binary_hex_header\""))
					trace_text_by_substring++;
				check_trace_line(copy, n);
				free(copy);
			}
			p += n + 1;
		}
		free(text);
	}
	closedir(dp);
	CHECK(files > 0);
	CHECK(trace_text_frames > 0);
	CHECK_INT(trace_text_frames, trace_text_by_substring);
	CHECK(fast_slow_compared >= trace_text_frames * 12);
	fprintf(stderr, "traces: %d files, %d lines, %d text frames\n", files,
	    trace_lines, trace_text_frames);
}

/* ---------------------------------------------------------------------- */

struct bad_case {
	const char *in;
	size_t len; /* 0: strlen */
	int want;
};

/* Each case must be rejected with its reason (the parser reports it). */
static void
check_bad_cases(const struct bad_case *cases, size_t count)
{
	for (size_t k = 0; k < count; k++) {
		const struct bad_case *c = &cases[k];
		size_t n = c->len ? c->len : strlen(c->in);
		struct json_doc d;
		int rc = json_parse(big, c->in, n, false, &d);
		if (rc != c->want)
			fprintf(
			    stderr, "  case %zu: %.*s\n", k, (int) n, c->in);
		CHECK_INT(rc, c->want);
	}
}

static void
test_rejects(void)
{
	static const struct bad_case cases[] = {
		{ "", 0, BR_EEMPTY }, { " \t\r\n ", 0, BR_EEMPTY },
		{ "{\"a\":\"\xff\"}", 0, BR_EUTF8 },
		{ "{\"a\":\"\xc0\xaf\"}", 0, BR_EUTF8 },
		{ "{\"a\":\"\xed\xa0\x80\"}", 0, BR_EUTF8 },
		{ "{\"a\":\"\xf4\x90\x80\x80\"}", 0, BR_EUTF8 },
		{ "{\"a\":\"\xe2\x82\"}", 0, BR_EUTF8 },
		{ "{\"\xff\":1}", 0, BR_EUTF8 },
		{ "{\"a\":\"x\ny\"}", 0, BR_EUTF8 },
		{ "{\"a\":\"tab\there\"}", 0, BR_EUTF8 },
		{ "{\"a\":\"\x01\"}", 0, BR_EUTF8 },
		{ "{\"a\":\"\\x\"}", 0, BR_ESYNTAX },
		{ "{\"a\":\"\\u12G4\"}", 0, BR_ESYNTAX },
		{ "{\"a\":\"\\u12\"}", 0, BR_ESYNTAX },
		/* an unpaired surrogate is fine, not what follows it */
		{ "{\"a\":\"\\ud800\\u12G4\"}", 0, BR_ESYNTAX },
		{ "{\"a\":\"\\ud800\\udc0\"}", 0, BR_ESYNTAX },
		{ "{\"a\":\"\\ud800\\x\"}", 0, BR_ESYNTAX },
		{ "{\"a\":\"\\ud800\\\"}", 0, BR_ESYNTAX },
		{ "{\"a\":\"\\ud800\x01\"}", 0, BR_EUTF8 },
		{ "{\"a\":\"\\udc00\xff\"}", 0, BR_EUTF8 },
		{ "{\"a\":\"\\'\"}", 0, BR_ESYNTAX },
		{ "{\"a\":1.2.3}", 0, BR_ESYNTAX },
		{ "{\"a\":tru}", 0, BR_ESYNTAX },
		{ "{\"a\":truex}", 0, BR_ESYNTAX },
		{ "{\"a\":nul}", 0, BR_ESYNTAX },
		{ "{\"a\":01}", 0, BR_ESYNTAX },
		{ "{\"a\":-}", 0, BR_ESYNTAX },
		{ "{\"a\":1.}", 0, BR_ESYNTAX },
		{ "{\"a\":.5}", 0, BR_ESYNTAX },
		{ "{\"a\":+1}", 0, BR_ESYNTAX },
		{ "{\"a\":1e}", 0, BR_ESYNTAX },
		{ "{\"a\":1e+}", 0, BR_ESYNTAX },
		{ "{\"a\":0x10}", 0, BR_ESYNTAX },
		{ "{\"a\":nan}", 0, BR_ESYNTAX },
		{ "{\"a\":-NaN}", 0, BR_ESYNTAX },
		{ "{\"a\":infinity}", 0, BR_ESYNTAX },
		{ "{\"a\":hello}", 0, BR_ESYNTAX },
		{ "{\"a\":1 \"b\":2}", 0, BR_ESYNTAX },
		{ "[1 2]", 0, BR_ESYNTAX },
		{ "{\"a\":{} \"b\":2}", 0, BR_ESYNTAX },
		{ "{\"a\":1,}", 0, BR_ESYNTAX }, { "[1,2,]", 0, BR_ESYNTAX },
		{ "[,1]", 0, BR_ESYNTAX }, { "[1,,2]", 0, BR_ESYNTAX },
		{ "{,\"a\":1}", 0, BR_ESYNTAX },
		{ "{\"a\" 1}", 0, BR_ESYNTAX },
		{ "{\"a\"::1}", 0, BR_ESYNTAX }, { "{\"a\"}", 0, BR_ESYNTAX },
		{ "{\"a\":}", 0, BR_ESYNTAX },
		{ "{\"a\":1,\"b\"}", 0, BR_ESYNTAX },
		{ "{\"a\":1,\"b\":}", 0, BR_ESYNTAX },
		{ "{a:1}", 0, BR_ESYNTAX }, { "{1:1}", 0, BR_ESYNTAX },
		{ "{{}:1}", 0, BR_ESYNTAX }, { "{[]:1}", 0, BR_ESYNTAX },
		{ "{\"a\":1} xyz", 0, BR_ESYNTAX },
		{ "{\"a\":1}}", 0, BR_ESYNTAX }, { "{}{}", 0, BR_ESYNTAX },
		{ "{} {}", 0, BR_ESYNTAX }, { "[1]:", 0, BR_ESYNTAX },
		{ "[1:2]", 0, BR_ESYNTAX }, { "1 2", 0, BR_ESYNTAX },
		{ "{\"a\":1}\0{{{{", 12, BR_ESYNTAX },
		{ "{\"a\":1}\0", 8, BR_ESYNTAX },
		{ "{\"a\":\"b\0c\"}", 11, BR_ESYNTAX },
		{ "\0", 1, BR_ESYNTAX }, { "{\"a\":1", 0, BR_ESYNTAX },
		{ "{\"a\":\"1}", 0, BR_ESYNTAX }, { "{]", 0, BR_ESYNTAX },
		{ "]", 0, BR_ESYNTAX }, { ",", 0, BR_ESYNTAX },
		{ ":", 0, BR_ESYNTAX }, { "{\"a\":\xff}", 0, BR_ESYNTAX },
		{ "\xef\xbb\xbf{}", 0, BR_ESYNTAX }, /* BOM is not JSON */
		{ "{\"a\":1}\f", 0, BR_ESYNTAX }, /* \f is not JSON ws */
	};
	check_bad_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

/* String contents are checked during the scan that precedes jsmn, yet the
 * reason reported is still that of the first fault in document order (and
 * depth before everything). */
static void
test_reason_order(void)
{
	static const struct bad_case cases[] = {
		{ "{\"a\" 1, \"b\": \"\xff\"}", 0, BR_ESYNTAX },
		{ "{\"a\": \"\xff\", \"b\" 1}", 0, BR_EUTF8 },
		{ "[\"\x01\", \"\\ud800\"]", 0, BR_EUTF8 },
		/* an unpaired surrogate is no fault: the control char is */
		{ "[\"\\ud800\", \"\x01\"]", 0, BR_EUTF8 },
		{ "[\"ok\", 01, \"\\q\"]", 0, BR_ESYNTAX },
		/* jsmn itself rejects a short \\u escape */
		{ "[\"\xc3\", \"\\u12\"]", 0, BR_ESYNTAX },
		{ "[\"\\u12\", \"\xc3\"]", 0, BR_ESYNTAX },
		{ "[\"\xff\", "
		  "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
		  "[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"
		  "]]]"
		  "]]]]]]]]]]]]]]]]]]]]]",
		    0, BR_EDEPTH },
		{ "[\"\xff\"", 0, BR_ESYNTAX },
		{ "[\"\\q\" \"x\"]", 0, BR_ESYNTAX },
		{ "[\"a\", \"b\xe2\x82\"]", 0, BR_EUTF8 },
	};
	check_bad_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

/* The rules the one walk before jsmn applies to string bytes (RFC 8259
 * strings of RFC 3629 UTF-8), each at its boundary: the last
 * value refused and the first accepted, so that dropping or loosening a
 * rule fails here. */
static void
test_utf8_rules(void)
{
	static const struct bad_case bad[] = {
		/* overlong forms of U+002F, U+07FF, U+FFFF */
		{ "[\"\xc0\xaf\"]", 0, BR_EUTF8 },
		{ "[\"\xc1\xbf\"]", 0, BR_EUTF8 },
		{ "[\"\xe0\x9f\xbf\"]", 0, BR_EUTF8 },
		{ "[\"\xf0\x8f\xbf\xbf\"]", 0, BR_EUTF8 },
		/* UTF-16 surrogates encoded in UTF-8 */
		{ "[\"\xed\xa0\x80\"]", 0, BR_EUTF8 },
		{ "[\"\xed\xbf\xbf\"]", 0, BR_EUTF8 },
		/* above U+10FFFF */
		{ "[\"\xf4\x90\x80\x80\"]", 0, BR_EUTF8 },
		{ "[\"\xf5\x80\x80\x80\"]", 0, BR_EUTF8 },
		/* raw control characters, in values and keys */
		{ "[\"\x1f\"]", 0, BR_EUTF8 },
		{ "{\"a\x0b\":1}", 0, BR_EUTF8 },
		/* a NUL, raw, in a string or between tokens */
		{ "[\"a\0\"]", 5, BR_ESYNTAX },
		{ "[1,\0 2]", 7, BR_ESYNTAX },
		/* a bad string counts only once the walk over jsmn's tokens
		 * gets to it: a key with no single value fails first */
		{ "{\"\xff\":1 2}", 0, BR_ESYNTAX },
		{ "{\"a\":\"\xff\" 2}", 0, BR_ESYNTAX },
		{ "{\"\xff\"::1}", 0, BR_EUTF8 },
	};
	check_bad_cases(bad, sizeof(bad) / sizeof(bad[0]));
	static const char *const good[] = {
		"[\"\xc2\x80\xdf\xbf\"]", /* U+0080, U+07FF */
		"[\"\xe0\xa0\x80\xed\x9f\xbf\"]", /* U+0800, U+D7FF */
		"[\"\xee\x80\x80\xef\xbf\xbf\"]", /* U+E000, U+FFFF */
		"[\"\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\"]", /* U+10000.. */
		"[\" \x7f\"]", /* DEL is no control character in JSON */
	};
	for (size_t k = 0; k < sizeof(good) / sizeof(good[0]); k++) {
		struct json_doc d;
		CHECK_INT(json_parse(big, good[k], strlen(good[k]), false, &d),
		    BR_OK);
	}
	struct json_doc d;
	const char *nf = "[1,\"x\",NaN,2]";
	CHECK_INT(json_parse(big, nf, strlen(nf), false, &d), BR_OK);
	CHECK_INT(d.finite_prefix, 3);
}

static void
test_accepts(void)
{
	static const char *const good[] = {
		"{}",
		" \r\n\t{ } \n",
		"[]",
		"0",
		"-0",
		"1e5",
		"-1.5E-3",
		"1E+2",
		"\"\"",
		"true",
		"null",
		"{\"a\":[1,{\"b\":[]},\"c\",true,false,null]}",
		"{\"a\" : 1 , \"b\" : [ 1 , 2 ] }",
		"{\"a\": \"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\"}",
		"{\"\\u0000\": \"\\u0000\"}",
		"{\"a\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \x7f\"}",
		"{\"a\":\"\\uDBFF\\uDFFF\"}",
		"[\"\\ud83d\", \"\\ude00\"]", /* unpaired halves */
		"{\"\\udcff\":\"\\ud800\\ud800\\udc00\\udfff\"}",
		"{\"a\":1,\"a\":2}", /* duplicate keys are JSON */
		"[NaN, Infinity, -Infinity]",
	};
	for (size_t k = 0; k < sizeof(good) / sizeof(good[0]); k++) {
		int rc = parse(good[k], false);
		if (rc != BR_OK)
			fprintf(stderr, "  case %zu: %s\n", k, good[k]);
		CHECK_INT(rc, BR_OK);
	}
}

static void
test_require_object(void)
{
	CHECK_INT(parse("[1,2]", true), BR_ETYPE);
	CHECK_INT(parse("\"s\"", true), BR_ETYPE);
	CHECK_INT(parse("3", true), BR_ETYPE);
	CHECK_INT(parse("[1,2]", false), BR_OK);
	CHECK_INT(parse("{\"a\":[1]}", true), BR_OK);
	/* a broken array is a syntax error first */
	CHECK_INT(parse("[1,]", true), BR_ESYNTAX);
}

static char *
nested(int depth, const char *open, const char *close)
{
	char *s = malloc((size_t) depth * 2 + 1);
	for (int k = 0; k < depth; k++) {
		s[k] = open[k % 2];
		s[2 * depth - 1 - k] = close[k % 2];
	}
	s[2 * depth] = '\0';
	return s;
}

static void
test_depth(void)
{
	char *ok = nested(JSON_MAX_DEPTH, "[[", "]]");
	char *deep = nested(JSON_MAX_DEPTH + 1, "[[", "]]");
	CHECK_INT(parse(ok, false), BR_OK);
	CHECK_INT(parse(deep, false), BR_EDEPTH);
	free(ok);
	free(deep);

	/* objects count too: {"k":{"k":...}} */
	char buf[1024];
	for (int depth = JSON_MAX_DEPTH; depth <= JSON_MAX_DEPTH + 1;
	     depth++) {
		size_t n = 0;
		for (int k = 0; k < depth - 1; k++)
			n += (size_t) sprintf(buf + n, "{\"k\":");
		n += (size_t) sprintf(buf + n, "[]");
		for (int k = 0; k < depth - 1; k++)
			buf[n++] = '}';
		buf[n] = '\0';
		CHECK_INT(parse(buf, true),
		    depth == JSON_MAX_DEPTH ? BR_OK : BR_EDEPTH);
	}
	/* very deep input costs no recursion and fails cleanly */
	char *huge = nested(200000, "[{", "]}");
	CHECK(parse(huge, false) != BR_OK);
	free(huge);
}

/* Inputs on which jsmn alone is quadratic (measured: 0.4 s for 16k nested
 * brackets, 5.8 s for the closer flood) must be rejected in linear time. */
static void
test_pathological_cpu(void)
{
	size_t cap = 400000, n = 0;
	char *s = malloc(cap);
	for (int k = 0; k < 16383; k++)
		s[n++] = '[';
	for (int k = 0; k < 16383; k++)
		s[n++] = ']';
	clock_t c0 = clock();
	CHECK_INT(parse_n(s, n, false, &(struct json_doc) { 0 }), BR_EDEPTH);

	/* jsmn lets ':' chain tokens and walks the chain for every closer
	 * that has nothing to close */
	n = (size_t) sprintf(s, "[]");
	for (int k = 0; k < 8000; k++)
		n += (size_t) sprintf(s + n, ":1");
	while (n < 300000)
		s[n++] = ']';
	CHECK_INT(parse_n(s, n, false, &(struct json_doc) { 0 }), BR_ESYNTAX);
	double cpu = (double) (clock() - c0) / CLOCKS_PER_SEC;
	CHECK(cpu < 0.5);
	free(s);
}

static void
test_tokens(void)
{
	struct json_parser *small = json_parser_create(8);
	CHECK(small != NULL);
	struct json_doc d;
	const char *many = "{\"a\":[1,2,3,4,5,6,7,8,9]}";
	CHECK_INT(json_parse(small, many, strlen(many), true, &d), BR_ETOKENS);
	const char *few = "{\"a\":[1,2,3]}";
	CHECK_INT(json_parse(small, few, strlen(few), true, &d), BR_OK);
	CHECK_INT(d.ntok, 6);
	CHECK_INT(json_size(&d, json_obj_get(&d, 0, "a")), 3);
	/* exactly at the budget */
	const char *eight = "[1,2,3,4,5,6,7]";
	CHECK_INT(json_parse(small, eight, strlen(eight), false, &d), BR_OK);
	CHECK_INT(d.ntok, 8);
	json_parser_destroy(small);
	CHECK(json_parser_create(0) == NULL);
}

/* ---------------------------------------------------------------------- */

static void
test_navigation(void)
{
	const char *s = "{\"type\": \"progress\", \"data\": {\"value\": 20.0, "
	                "\"max\": 2e1, \"nested\": {\"x\": [1, [2, 3], {}]}, "
	                "\"t\\u0061b\": \"v\", \"k\\\"q\": 1, \"ok\": true, "
	                "\"no\": false, \"nil\": null, \"n\": NaN}}";
	struct json_doc d;
	CHECK_INT(parse_n(s, strlen(s), true, &d), BR_OK);
	int data = json_obj_get(&d, 0, "data");
	CHECK(json_is_object(&d, data));
	CHECK_INT(json_size(&d, 0), 2);
	CHECK_INT(json_size(&d, data), 9);
	CHECK(json_str_eq(&d, json_obj_get(&d, 0, "type"), "progress"));
	CHECK(!json_str_eq(&d, json_obj_get(&d, 0, "type"), "progres"));
	CHECK(!json_str_eq(&d, json_obj_get(&d, 0, "type"), "progressx"));
	CHECK_INT(json_obj_get(&d, 0, "value"), -1); /* not a root key */
	CHECK_INT(json_obj_get(&d, data, "missing"), -1);
	CHECK_INT(json_obj_get(&d, json_obj_get(&d, 0, "type"), "x"), -1);
	CHECK_INT(json_obj_get(&d, 999, "x"), -1);

	/* keys compared after unescaping */
	CHECK(json_str_eq(&d, json_obj_get(&d, data, "tab"), "v"));
	int kq = json_obj_get(&d, data, "k\"q");
	int64_t v = 0;
	CHECK_INT(json_get_int64(&d, kq, &v), 0);
	CHECK_INT(v, 1);

	int nestedv = json_obj_get(&d, data, "nested");
	int x = json_obj_get(&d, nestedv, "x");
	CHECK(json_is_array(&d, x));
	CHECK_INT(json_size(&d, x), 3);
	int e1 = json_child(&d, x, 1);
	CHECK(json_is_array(&d, e1));
	CHECK_INT(json_get_int64(&d, json_child(&d, e1, 1), &v), 0);
	CHECK_INT(v, 3);
	CHECK(json_is_object(&d, json_child(&d, x, 2)));
	CHECK_INT(json_child(&d, x, 3), -1);
	CHECK_INT(json_child(&d, x, -1), -1);
	/* object children are keys */
	CHECK(json_str_eq(&d, json_child(&d, data, 1), "max"));
	CHECK(json_str_eq(&d, json_child(&d, data, 3), "tab"));
	/* skip lands on the next sibling key */
	CHECK_INT(json_skip(&d, nestedv), json_child(&d, data, 3));
	CHECK_INT(json_skip(&d, 0), d.ntok);

	bool b = false;
	CHECK_INT(json_get_bool(&d, json_obj_get(&d, data, "ok"), &b), 0);
	CHECK(b);
	CHECK_INT(json_get_bool(&d, json_obj_get(&d, data, "no"), &b), 0);
	CHECK(!b);
	CHECK_INT(
	    json_get_bool(&d, json_obj_get(&d, data, "nil"), &b), BR_ETYPE);
	CHECK(json_is_null(&d, json_obj_get(&d, data, "nil")));
	CHECK(!json_is_null(&d, json_obj_get(&d, data, "no")));
	int nan = json_obj_get(&d, data, "n");
	CHECK(json_is_nonfinite(&d, nan));
	CHECK(!json_is_number(&d, nan));
	CHECK_INT(json_get_int64(&d, nan, &v), BR_ETYPE);
	double dv;
	CHECK_INT(json_get_double(&d, nan, &dv), BR_ETYPE);
	CHECK_INT(
	    json_get_double(&d, json_obj_get(&d, data, "value"), &dv), 0);
	CHECK(dv == 20.0);

	size_t len;
	const char *raw = json_raw(&d, json_child(&d, data, 3), &len);
	CHECK_MEM(raw, len, "t\\u0061b", 8);
	raw = json_raw_value(&d, json_child(&d, data, 3), &len);
	CHECK_MEM(raw, len, "\"t\\u0061b\"", 10);
	raw = json_raw_value(&d, e1, &len);
	CHECK_MEM(raw, len, "[2, 3]", 6);
	raw = json_raw(&d, -1, &len);
	CHECK(raw == NULL && len == 0);
}

static void
get_int(const char *num, int want_rc, int64_t want)
{
	char buf[96];
	snprintf(buf, sizeof(buf), "[%s]", num);
	struct json_doc d;
	int rc = parse_n(buf, strlen(buf), false, &d);
	CHECK_INT(rc, BR_OK);
	if (rc != BR_OK)
		return;
	int64_t v = 12345;
	rc = json_get_int64(&d, 1, &v);
	if (rc != want_rc)
		fprintf(stderr, "  number %s\n", num);
	CHECK_INT(rc, want_rc);
	if (want_rc == 0)
		CHECK_INT(v, want);
}

static void
test_int64(void)
{
	get_int("20", 0, 20);
	get_int("20.0", 0, 20);
	get_int("2e1", 0, 20);
	get_int("2E+1", 0, 20);
	get_int("200e-1", 0, 20);
	get_int("0.2e2", 0, 20);
	get_int("-3", 0, -3);
	get_int("-0", 0, 0);
	get_int("0.000", 0, 0);
	get_int("0e99999999999999999999", 0, 0);
	get_int("9223372036854775807", 0, INT64_MAX);
	get_int("-9223372036854775808", 0, INT64_MIN);
	get_int("9223372036854775807.000", 0, INT64_MAX);
	get_int("922337203685477580.7e1", 0, INT64_MAX);
	get_int("9223372036854775808", BR_ERANGE, 0);
	get_int("-9223372036854775809", BR_ERANGE, 0);
	get_int("1e19", BR_ERANGE, 0);
	get_int("1e99999999999999999999", BR_ERANGE, 0);
	get_int("20.5", BR_ERANGE, 0);
	get_int("1e-2", BR_ERANGE, 0);
	get_int("1e-99999999999999999999", BR_ERANGE, 0);
	get_int("\"20\"", BR_ETYPE, 0);
	get_int("true", BR_ETYPE, 0);
	get_int("null", BR_ETYPE, 0);
	get_int("Infinity", BR_ETYPE, 0);
	get_int("-Infinity", BR_ETYPE, 0);
	get_int("[]", BR_ETYPE, 0);
}

static void
test_str_get(void)
{
	const char *s = "[\"plain\", \"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\", "
	                "\"\\u00e9\\u20ac\\ud83d\\ude00\", \"x\\u0000y\", "
	                "\"caf\xc3\xa9\xe2\x82\xac\", 5]";
	struct json_doc d;
	CHECK_INT(parse_n(s, strlen(s), false, &d), BR_OK);
	char out[64];
	CHECK_INT(json_str_get(&d, 1, out, sizeof(out)), 5);
	CHECK_STR(out, "plain");
	CHECK_INT(json_str_get(&d, 2, out, sizeof(out)), 12);
	CHECK_STR(out, "a\"b\\c/d\b\f\n\r\t");
	CHECK_INT(json_str_get(&d, 3, out, sizeof(out)), 9);
	CHECK_STR(out, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
	CHECK(json_str_eq(&d, 3, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"));
	CHECK(!json_str_eq(&d, 3, "\xc3\xa9\xe2\x82\xac"));
	CHECK_INT(json_str_get(&d, 4, out, sizeof(out)), BR_EINVAL);
	CHECK(!json_str_eq(&d, 4, "x"));
	CHECK_INT(json_str_get(&d, 6, out, sizeof(out)), BR_ETYPE);
	/* truncation keeps whole characters: "é€😀" into 6 bytes -> "é€" */
	CHECK_INT(json_str_get(&d, 3, out, 6), BR_ETRUNC);
	CHECK_STR(out, "\xc3\xa9\xe2\x82\xac");
	CHECK_INT(json_str_get(&d, 3, out, 5), BR_ETRUNC);
	CHECK_STR(out, "\xc3\xa9");
	CHECK_INT(json_str_get(&d, 5, out, 5), BR_ETRUNC);
	CHECK_STR(out, "caf");
	CHECK_INT(json_str_get(&d, 1, out, 6), 5);
	CHECK_INT(json_str_get(&d, 1, out, 5), BR_ETRUNC);
	CHECK_STR(out, "plai");

	/* plain runs (copied whole) between escapes and multi-byte
	 * characters: every buffer size keeps the longest prefix of whole
	 * characters, and stops at the first one that does not fit */
	const char *mixed = "[\"ab\\ncdefghijklmnopqrstuvw\xc3\xa9xy\\u20ac"
	                    "0123456789\"]";
	const char *decoded = "ab\ncdefghijklmnopqrstuvw\xc3\xa9xy\xe2\x82\xac"
	                      "0123456789";
	size_t dlen = strlen(decoded);
	CHECK_INT(parse_n(mixed, strlen(mixed), false, &d), BR_OK);
	int bad = 0;
	for (size_t cap = 0; cap <= dlen + 2; cap++) {
		char small[64];
		memset(small, '#', sizeof(small));
		int rc = json_str_get(&d, 1, small, cap);
		size_t keep = cap > 0 ? utf8_cut(decoded, dlen, cap - 1) : 0;
		bool ok = cap > dlen ? rc == (int) dlen : rc == BR_ETRUNC;
		if (cap > 0)
			ok = ok && memcmp(small, decoded, keep) == 0
			    && small[keep] == '\0';
		else
			ok = ok && small[0] == '#';
		bad += !ok;
	}
	CHECK_INT(bad, 0);
}

/* ---------------------------------------------------------------------- */

static void
test_emit_nonfinite(void)
{
	const char *s = "{\"a\": NaN, \"b\": [Infinity, -Infinity, 1.5], "
	                "\"c\" : -0.0}";
	struct json_doc d;
	CHECK_INT(parse_n(s, strlen(s), true, &d), BR_OK);
	CHECK(json_is_nonfinite(&d, json_obj_get(&d, 0, "a")));
	char out[128];
	bool trunc;
	CHECK_INT(emit(&d, 0, 0, out, sizeof(out), &trunc), 0);
	CHECK_STR(out, "{\"a\":null,\"b\":[null,null,1.5],\"c\":-0.0}");
	CHECK(!trunc);
	CHECK_INT(reparse(out), BR_OK);
}

static void
test_emit_into_container(void)
{
	const char *s = "{\"x\": [1, 2], \"y\": \"s\"}";
	struct json_doc d;
	CHECK_INT(parse_n(s, strlen(s), true, &d), BR_OK);
	char out[128];
	struct jsonw w;
	bool trunc = false;
	jsonw_init(&w, out, sizeof(out));
	jsonw_arr_begin(&w);
	jsonw_int(&w, 0);
	CHECK_INT(json_emit(&d, json_obj_get(&d, 0, "x"), &w, 0, &trunc), 0);
	CHECK_INT(json_emit(&d, 0, &w, 0, &trunc), 0);
	jsonw_obj_begin(&w);
	jsonw_key(&w, "k");
	CHECK_INT(json_emit(&d, json_obj_get(&d, 0, "y"), &w, 0, &trunc), 0);
	jsonw_key(&w, "cut");
	/* the budget counts the value, not the comma or key before it */
	CHECK_INT(json_emit(&d, json_obj_get(&d, 0, "x"), &w, 4, &trunc), 0);
	jsonw_obj_end(&w);
	jsonw_arr_end(&w);
	CHECK_INT(jsonw_finish(&w), 0);
	CHECK_STR(out,
	    "[0,[1,2],{\"x\":[1,2],\"y\":\"s\"},{\"k\":\"s\","
	    "\"cut\":[1]}]");
	CHECK(trunc);
	CHECK_INT(reparse(out), BR_OK);

	/* a writer that is too small reports it */
	char tiny[10];
	jsonw_init(&w, tiny, sizeof(tiny));
	trunc = false;
	CHECK_INT(json_emit(&d, 0, &w, 0, &trunc), BR_ETRUNC);
	CHECK(strlen(tiny) < sizeof(tiny));
}

/* Emits value i with every budget from 1 to past its full size: each result
 * re-parses, is no longer than the budget (beyond the minimal form), is cut
 * exactly when the budget is short, and cuts arrays/objects into a prefix
 * of whole members. */
static void
sweep_budgets(const char *doc, bool string_prefix)
{
	struct json_doc d;
	CHECK_INT(parse_n(doc, strlen(doc), false, &d), BR_OK);
	char full[1024], out[1024];
	bool trunc;
	CHECK_INT(emit(&d, 0, 0, full, sizeof(full), &trunc), 0);
	size_t flen = strlen(full);
	for (size_t budget = 1; budget <= flen + 2; budget++) {
		CHECK_INT(emit(&d, 0, budget, out, sizeof(out), &trunc), 0);
		size_t olen = strlen(out);
		int rc = reparse(out);
		if (rc != BR_OK)
			fprintf(stderr, "  budget %zu: %s\n", budget, out);
		CHECK_INT(rc, BR_OK);
		if (budget >= flen) {
			CHECK(!trunc);
			CHECK_STR(out, full);
			continue;
		}
		CHECK(trunc);
		CHECK(olen <= budget || olen == 2);
		if (string_prefix) {
			/* the cut content is a prefix of the full content */
			CHECK(olen >= 2 && strncmp(out, full, olen - 1) == 0);
		} else {
			/* a prefix of whole members: full minus the closer */
			CHECK(strncmp(out, full, olen - 1) == 0);
			CHECK(full[olen - 1] == ',' || olen == 2);
		}
	}
}

static void
test_emit_budgets(void)
{
	/* multibyte characters and every kind of escape near each cut */
	sweep_budgets("\"a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\\n\\u00e9"
	              "\\ud83d\\ude00\\\"x\\\\\"",
	    true);
	sweep_budgets("\"\\ud83d\\ude00\\ud83d\\ude00\"", true);
	sweep_budgets("[1, \"two\", [3, 4], {\"five\": 5}, null, NaN, "
	              "\"\xf0\x9f\x98\x80\"]",
	    false);
	sweep_budgets("{\"a\": {\"b\": {\"c\": [1, 2, 3]}}, \"d\": \"long "
	              "string value\", \"e\": [{\"f\": []}]}",
	    false);
	sweep_budgets("{\"traceback\": [\"  File \\\"main.py\\\", line 1\\n\","
	              " \"  File \\\"x.py\\\"\\n\", \"Error: \xc3\xa9\"]}",
	    false);

	/* scalars that cannot be cut become null */
	struct json_doc d;
	char out[64];
	bool trunc;
	CHECK_INT(parse_n("12345678", 8, false, &d), BR_OK);
	CHECK_INT(emit(&d, 0, 5, out, sizeof(out), &trunc), 0);
	CHECK_STR(out, "null");
	CHECK(trunc);
	CHECK_INT(emit(&d, 0, 8, out, sizeof(out), &trunc), 0);
	CHECK_STR(out, "12345678");
	CHECK(!trunc);
	/* a string shorter budget than its quotes still gives "" */
	CHECK_INT(parse_n("\"abc\"", 5, false, &d), BR_OK);
	CHECK_INT(emit(&d, 0, 1, out, sizeof(out), &trunc), 0);
	CHECK_STR(out, "\"\"");
	CHECK(trunc);
	/* the truncated flag is never reset by json_emit */
	trunc = true;
	struct jsonw w;
	jsonw_init(&w, out, sizeof(out));
	CHECK_INT(json_emit(&d, 0, &w, 0, &trunc), 0);
	CHECK(trunc);
}

/* ---------------------------------------------------------------------- */
/* json_emit's fast path (whole subtrees copied compacted) against the
 * token-by-token path */

/* Every value of doc, at the edges of budget and writer room. */
static void
check_doc_fast_eq_slow(const char *doc)
{
	struct json_doc d;
	int rc = parse_n(doc, strlen(doc), false, &d);
	CHECK_INT(rc, BR_OK);
	if (rc != BR_OK) {
		fprintf(stderr, "  doc: %s\n", doc);
		return;
	}
	for (int i = 0; i < d.ntok; i++)
		check_fast_eq_slow_edges(&d, i);
}

static void
test_fast_path_cases(void)
{
	static const char *const docs[] = {
		" { \"a\" : [ 1 , 2 ,\t3 ] ,\n\"b\":{ } ,\r\n \"c\":[ ] } ",
		"[\n\t{\"k\"\t:\r\n\"v\"}\n,\n[\n]\n]",
		"{\"s p a c e s\": \" in  a \\t string \", \"x\": \"  \"}",
		"[\"\\\"\", \"\\\\\", \"\\\\\\\"\", \"a\\\\\\\\\", \" \\\" , "
		"\\\" \"]",
		"{\"\\\" key \\\\\": \"\\\\\\\\\\\\\\\\\\\"\\\\\"}",
		"[\"\\u00e9 \\ud83d\\ude00 \xc3\xa9\\/\\b\\f\\n\\r\\t\"]",
		"{\"n\": [true, false, null, -0.5e+10, 0, "
		"12345678901234567890]}",
		"{\"deep\": {\"a\": [1, {\"b\": [NaN]}], \"c\": \"x\"}}",
		"[[Infinity], [1, 2], {\"m\": -Infinity}, \"NaN\", [3]]",
		"  \"top string\"  ",
		" 42 ",
		"{\"a\":{\"b\":{\"c\":[[[[\"d\"]]]]}}}",
	};
	for (size_t k = 0; k < sizeof(docs) / sizeof(docs[0]); k++)
		check_doc_fast_eq_slow(docs[k]);

	/* the expected bytes themselves, not only fast == slow */
	const char *s
	    = " { \"a\" : [ 1 ,\t\"x \\\" \\\\\" ] ,\n\"b\" : NaN } ";
	struct json_doc d;
	CHECK_INT(parse_n(s, strlen(s), true, &d), BR_OK);
	char out[128];
	bool trunc;
	CHECK_INT(emit(&d, 0, 0, out, sizeof(out), &trunc), 0);
	CHECK_STR(out, "{\"a\":[1,\"x \\\" \\\\\"],\"b\":null}");
	CHECK_INT(emit(&d, 1 + 1, 0, out, sizeof(out), &trunc), 0);
	CHECK_STR(out, "[1,\"x \\\" \\\\\"]");
	CHECK(!trunc);
	/* a budget cut still truncates as before */
	CHECK_INT(emit(&d, 2, 12, out, sizeof(out), &trunc), 0);
	CHECK_STR(out, "[1]");
	CHECK(trunc);
}

/* The fast path really runs, and trusts finite_prefix: a doc whose prefix
 * claims (falsely) to hold no NaN gets its NaN copied verbatim, which only
 * the fast path does. A zero-initialised prefix promises nothing. */
static void
test_fast_path_taken(void)
{
	const char *s = "[ NaN , 1 ]";
	struct json_doc d;
	CHECK_INT(parse_n(s, strlen(s), false, &d), BR_OK);
	CHECK_INT(d.finite_prefix, 1);
	char out[64];
	bool trunc;
	CHECK_INT(emit(&d, 0, 0, out, sizeof(out), &trunc), 0);
	CHECK_STR(out, "[null,1]");
	d.finite_prefix = d.ntok;
	CHECK_INT(emit(&d, 0, 0, out, sizeof(out), &trunc), 0);
	CHECK_STR(out, "[NaN,1]");
	d.finite_prefix = 0;
	CHECK_INT(emit(&d, 0, 0, out, sizeof(out), &trunc), 0);
	CHECK_STR(out, "[null,1]");
	CHECK_INT(parse_n("[1, [2]]", 8, false, &d), BR_OK);
	CHECK_INT(d.finite_prefix, d.ntok);
}

/* Deterministic PRNG (xorshift32) so a failure reproduces. */
static uint32_t rng_state;

static uint32_t
rng(uint32_t n)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 17;
	rng_state ^= rng_state << 5;
	return n ? rng_state % n : 0;
}

struct gen {
	char *buf;
	size_t len, cap;
};

static void
gen_put(struct gen *g, const char *s)
{
	size_t n = strlen(s);
	if (g->len + n < g->cap) {
		memcpy(g->buf + g->len, s, n);
		g->len += n;
	}
}

static void
gen_ws(struct gen *g)
{
	static const char *const ws[] = { " ", "\t", "\n", "\r" };
	uint32_t n = rng(4) == 0 ? rng(5) : 0;
	for (uint32_t k = 0; k < n; k++)
		gen_put(g, ws[rng(4)]);
}

static void
gen_string(struct gen *g)
{
	static const char *const pieces[] = { "a", "Z", " ", "  ", "\\\"",
		"\\\\", "\\/", "\\n", "\\t", "\\u0041", "\\u00e9",
		"\\ud83d\\ude00", "\xc3\xa9", "\xe2\x82\xac",
		"\xf0\x9f\x98\x80", ",", ":", "{", "]", "NaN", "\\\\\\\"",
		/* unpaired surrogates, which may also pair up by chance */
		"\\ud800", "\\uDBFF", "\\udc00", "\\udfff", "\\\\\\udcff" };
	gen_put(g, "\"");
	uint32_t n = rng(8);
	for (uint32_t k = 0; k < n; k++)
		gen_put(g, pieces[rng(sizeof(pieces) / sizeof(pieces[0]))]);
	gen_put(g, "\"");
}

static void
gen_value(struct gen *g, int depth)
{
	static const char *const prims[]
	    = { "0", "-1", "3.25", "1e5", "-0.0E-2", "true", "false", "null",
		      "123456789012", "NaN", "Infinity", "-Infinity" };
	uint32_t kind = depth >= 6 ? rng(2) : rng(4);
	if (kind == 0) {
		/* NaN and friends only now and then */
		uint32_t n = sizeof(prims) / sizeof(prims[0]);
		uint32_t k = rng(n);
		if (k >= n - 3 && rng(3) != 0)
			k = 0;
		gen_put(g, prims[k]);
	} else if (kind == 1) {
		gen_string(g);
	} else {
		bool obj = kind == 3;
		gen_put(g, obj ? "{" : "[");
		uint32_t n = rng(5);
		for (uint32_t k = 0; k < n; k++) {
			gen_ws(g);
			if (k > 0) {
				gen_put(g, ",");
				gen_ws(g);
			}
			if (obj) {
				gen_string(g);
				gen_ws(g);
				gen_put(g, ":");
				gen_ws(g);
			}
			gen_value(g, depth + 1);
		}
		gen_ws(g);
		gen_put(g, obj ? "}" : "]");
	}
}

static void
test_fast_path_random(void)
{
	rng_state = 0x2545F491u;
	char buf[8192];
	int docs = 0, before = test_failures;
	for (int round = 0; round < 3000 && test_failures == before; round++) {
		struct gen g = { buf, 0, sizeof(buf) - 1 };
		gen_ws(&g);
		gen_value(&g, 0);
		gen_ws(&g);
		buf[g.len] = '\0';
		struct json_doc d;
		int rc = parse_n(buf, g.len, false, &d);
		CHECK_INT(rc, BR_OK);
		if (rc != BR_OK) {
			fprintf(stderr, "  generated: %s\n", buf);
			continue;
		}
		docs++;
		for (int i = 0; i < d.ntok; i++) {
			size_t n;
			json_raw_value(&d, i, &n);
			size_t budget
			    = rng(3) == 0 ? 0 : rng((uint32_t) n + 4);
			size_t cap
			    = rng(4) == 0 ? rng((uint32_t) n + 8) + 1 : n + 64;
			check_fast_eq_slow(&d, i, budget,
			    (enum emit_ctx) rng(CTX_COUNT), cap);
		}
		check_fast_eq_slow_edges(&d, 0);
	}
	CHECK_INT(docs, 3000);
}

/* ---------------------------------------------------------------------- */
/* unpaired surrogates */

struct surrogate_case {
	const char *in; /* string content as written in the JSON */
	const char *decoded; /* what json_str_get gives */
	const char *emitted; /* what json_emit writes between the quotes */
};

#define FFFD "\xef\xbf\xbd"

static const struct surrogate_case surrogate_cases[] = {
	/* surrogateescape'd byte 0xff of a file name */
	{ "\\udcff", FFFD, "\\ufffd" },
	{ "a\\ud800b", "a" FFFD "b", "a\\ufffdb" },
	{ "\\ud800", FFFD, "\\ufffd" }, /* high at the very end */
	{ "\\udc00", FFFD, "\\ufffd" }, /* low alone */
	{ "\\uD834x", FFFD "x", "\\ufffdx" },
	{ "\\ud800\\ud800", FFFD FFFD, "\\ufffd\\ufffd" },
	{ "\\udc00\\ud800", FFFD FFFD, "\\ufffd\\ufffd" },
	{ "\\ud800\\u0041", FFFD "A", "\\ufffd\\u0041" },
	{ "\\ud800\\n", FFFD "\n", "\\ufffd\\n" },
	/* the second high pairs with the low after it */
	{ "\\ud800\\ud800\\udc00", FFFD "\xf0\x90\x80\x80",
	    "\\ufffd\\ud800\\udc00" },
	{ "\\ud83d\\ude00\\ude00", "\xf0\x9f\x98\x80" FFFD,
	    "\\ud83d\\ude00\\ufffd" },
	/* an escaped backslash before "udc00" is no escape */
	{ "\\ud800\\\\udc00", FFFD "\\udc00", "\\ufffd\\\\udc00" },
	{ "\\\\\\udc00", "\\" FFFD, "\\\\\\ufffd" },
	{ "\\u00e9\\udfff\xc3\xa9", "\xc3\xa9" FFFD "\xc3\xa9",
	    "\\u00e9\\ufffd\xc3\xa9" },
	/* left as they are */
	{ "\\ud83d\\ude00", "\xf0\x9f\x98\x80", "\\ud83d\\ude00" },
	{ "\\uDBFF\\uDFFF", "\xf4\x8f\xbf\xbf", "\\uDBFF\\uDFFF" },
	{ "\\ud7ff\\ue000", "\xed\x9f\xbf\xee\x80\x80", "\\ud7ff\\ue000" },
	{ "\\uFFFD\\ufffd", FFFD FFFD, "\\uFFFD\\ufffd" },
	{ "d800 udc00 \\u0064c00", "d800 udc00 dc00",
	    "d800 udc00 \\u0064c00" },
};

/* One case as key and value of {"<in>": "<in>"}, and alone: decoding,
 * comparison, key lookup, emission on both paths, every budget. */
static void
check_surrogate_case(const struct surrogate_case *c)
{
	char doc[256], want[256], out[256], str[64];
	snprintf(doc, sizeof(doc), "{ \"%s\" : [\"%s\"] }", c->in, c->in);
	struct json_doc d;
	int rc = parse_n(doc, strlen(doc), true, &d);
	CHECK_INT(rc, BR_OK);
	if (rc != BR_OK) {
		fprintf(stderr, "  doc: %s\n", doc);
		return;
	}
	int value = json_child(&d, json_obj_get(&d, 0, c->decoded), 0);
	CHECK_INT(value, 3);
	CHECK_INT(
	    json_str_get(&d, 3, str, sizeof(str)), (int) strlen(c->decoded));
	CHECK_STR(str, c->decoded);
	CHECK(utf8_valid(str, strlen(str)));
	CHECK(json_str_eq(&d, 1, c->decoded));

	bool trunc;
	snprintf(
	    want, sizeof(want), "{\"%s\":[\"%s\"]}", c->emitted, c->emitted);
	CHECK_INT(emit(&d, 0, 0, out, sizeof(out), &trunc), 0);
	CHECK_STR(out, want);
	CHECK_INT(reparse(out), BR_OK);
	struct jsonw w;
	jsonw_init(&w, out, sizeof(out));
	CHECK_INT(json_emit_tokenwise_for_tests(&d, 0, &w, 0, &trunc), 0);
	CHECK_STR(out, want);
	snprintf(want, sizeof(want), "\"%s\"", c->emitted);
	CHECK_INT(emit(&d, 3, 0, out, sizeof(out), &trunc), 0);
	CHECK_STR(out, want);
	check_doc_fast_eq_slow(doc);

	snprintf(doc, sizeof(doc), "\"%s\"", c->in);
	sweep_budgets(doc, true);
}

static void
test_lone_surrogates(void)
{
	size_t n = sizeof(surrogate_cases) / sizeof(surrogate_cases[0]);
	for (size_t k = 0; k < n; k++) {
		int before = test_failures;
		check_surrogate_case(&surrogate_cases[k]);
		if (test_failures != before)
			fprintf(stderr, "  case %zu: %s\n", k,
			    surrogate_cases[k].in);
	}

	/* a U+FFFD that does not fit is left out whole */
	const char *s = "[\"ab\\udcff\"]";
	struct json_doc d;
	CHECK_INT(parse_n(s, strlen(s), false, &d), BR_OK);
	char out[8];
	CHECK_INT(json_str_get(&d, 1, out, 5), BR_ETRUNC);
	CHECK_STR(out, "ab");
	CHECK_INT(json_str_get(&d, 1, out, 6), 5);
	CHECK_STR(out, "ab" FFFD);
	/* the re-emitted escape is never cut */
	bool trunc;
	CHECK_INT(emit(&d, 1, 7, out, sizeof(out), &trunc), 0);
	CHECK_STR(out, "\"ab\"");
	CHECK(trunc);

	/* the checker itself sees what it must */
	CHECK(has_lone_surrogate("\"\\ud800\""));
	CHECK(has_lone_surrogate("\"\\uDC00\\ud83d\\ude00\""));
	CHECK(has_lone_surrogate("[\"\\\\\", \"\\udfff\"]"));
	CHECK(!has_lone_surrogate("\"\\\\udc00\\ud83d\\ude00\""));
}

/* json_parse records that a doc has no unpaired surrogate, and json_emit
 * trusts that: a doc claiming (falsely) to have none gets its surrogate
 * copied as it is on both paths. */
static void
test_lone_surrogate_flag(void)
{
	struct json_doc d;
	const char *plain = "{\"a\": \"\\ud83d\\ude00\\u00e9\"}";
	CHECK_INT(parse_n(plain, strlen(plain), true, &d), BR_OK);
	CHECK(d.no_lone_surrogates);
	const char *s = "{\"\\udc80\": \"\\udcff\"}";
	CHECK_INT(parse_n(s, strlen(s), true, &d), BR_OK);
	CHECK(!d.no_lone_surrogates);
	char out[64];
	bool trunc;
	CHECK_INT(emit(&d, 0, 0, out, sizeof(out), &trunc), 0);
	CHECK_STR(out, "{\"\\ufffd\":\"\\ufffd\"}");
	d.no_lone_surrogates = true;
	CHECK_INT(emit(&d, 0, 0, out, sizeof(out), &trunc), 0);
	CHECK_STR(out, "{\"\\udc80\":\"\\udcff\"}");
	struct jsonw w;
	jsonw_init(&w, out, sizeof(out));
	CHECK_INT(json_emit_tokenwise_for_tests(&d, 0, &w, 0, &trunc), 0);
	CHECK_STR(out, "{\"\\udc80\":\"\\udcff\"}");
}

/* ---------------------------------------------------------------------- */
/* growing token arrays */

/* "[0,1,...,n-1]": n + 1 tokens. */
static char *
int_array(int n, size_t *len)
{
	char *s = malloc((size_t) n * 8 + 3);
	size_t k = 0;
	s[k++] = '[';
	for (int i = 0; i < n; i++)
		k += (size_t) sprintf(s + k, i ? ",%d" : "%d", i);
	s[k++] = ']';
	s[k] = '\0';
	*len = k;
	return s;
}

static bool
same_tokens(const struct json_doc *a, const struct json_doc *b)
{
	if (a->ntok != b->ntok)
		return false;
	for (int i = 0; i < a->ntok; i++) {
		const jsmntok_t *x = &a->tok[i], *y = &b->tok[i];
		if (x->type != y->type || x->start != y->start
		    || x->end != y->end || x->size != y->size
		    || x->parent != y->parent)
			return false;
	}
	return true;
}

static void
test_growing(void)
{
	CHECK(json_parser_create_growing(0, 8) == NULL);
	CHECK(json_parser_create_growing(9, 8) == NULL);
	CHECK(
	    json_parser_create_growing(1, (unsigned) INT_MAX / 2 + 1) == NULL);

	struct json_parser *g = json_parser_create_growing(4, 64);
	CHECK(g != NULL);
	if (!g)
		return;
	CHECK_INT(json_parser_capacity(g), 4);
	size_t len;
	char *s = int_array(40, &len);
	struct json_doc d;
	CHECK_INT(json_parse(g, s, len, false, &d), BR_OK);
	CHECK_INT(d.ntok, 41);
	CHECK_INT(json_parser_capacity(g), 64);
	int bad = 0;
	for (int k = 0; k < 40; k++) {
		int64_t v = -1;
		bad += json_get_int64(&d, json_child(&d, 0, k), &v) != 0
		    || v != k;
	}
	CHECK_INT(bad, 0);
	free(s);

	/* max is a hard limit, as for a fixed parser */
	s = int_array(63, &len);
	CHECK_INT(json_parse(g, s, len, false, &d), BR_OK);
	CHECK_INT(d.ntok, 64);
	free(s);
	s = int_array(64, &len);
	CHECK_INT(json_parse(g, s, len, false, &d), BR_ETOKENS);
	CHECK_INT(json_parser_capacity(g), 64);
	free(s);

	/* trim goes back to the initial array, which then grows again */
	json_parser_trim(g);
	CHECK_INT(json_parser_capacity(g), 4);
	json_parser_trim(g);
	CHECK_INT(json_parser_capacity(g), 4);
	CHECK_INT(json_parse(g, "[1,2]", 5, false, &d), BR_OK);
	CHECK_INT(json_parser_capacity(g), 4);
	s = int_array(20, &len);
	CHECK_INT(json_parse(g, s, len, false, &d), BR_OK);
	CHECK_INT(d.ntok, 21);
	CHECK_INT(json_parser_capacity(g), 32);
	free(s);
	json_parser_destroy(g);
	json_parser_trim(NULL);

	/* a fixed parser neither grows nor trims */
	struct json_parser *f = json_parser_create(8);
	s = int_array(8, &len);
	CHECK_INT(json_parse(f, s, len, false, &d), BR_ETOKENS);
	CHECK_INT(json_parser_capacity(f), 8);
	json_parser_trim(f);
	CHECK_INT(json_parser_capacity(f), 8);
	free(s);
	json_parser_destroy(f);
}

/* jsmn resumes after growing wherever it ran out: at an object or array,
 * a key, a string or a primitive value, deep or shallow. Every start size
 * gives the tokens a big fixed parser gives, and the same emission. */
static void
test_growing_resumes(void)
{
	const char *s = " {\"a\": [1, {\"b\": \"x\\\"y\", \"c\": [[], {}]}, "
	                "true], \"d\": {\"e\": null, \"f\": \"\\ud800\"}, "
	                "\"g\": -1.5e3, \"h\": [\"\\u00e9\", NaN]} ";
	struct json_doc want;
	CHECK_INT(parse_n(s, strlen(s), true, &want), BR_OK);
	char want_out[256], out[256];
	bool trunc;
	CHECK_INT(emit(&want, 0, 0, want_out, sizeof(want_out), &trunc), 0);
	int bad = 0;
	for (int initial = 1; initial <= want.ntok + 1; initial++) {
		struct json_parser *g
		    = json_parser_create_growing((unsigned) initial, 1024);
		struct json_doc d;
		int rc = json_parse(g, s, strlen(s), true, &d);
		bool ok = rc == BR_OK && same_tokens(&d, &want)
		    && emit(&d, 0, 0, out, sizeof(out), &trunc) == 0
		    && strcmp(out, want_out) == 0;
		if (!ok)
			fprintf(stderr, "  initial %d: rc %d\n", initial, rc);
		bad += !ok;
		json_parser_destroy(g);
	}
	CHECK_INT(bad, 0);
}

/* The case that motivated it: a /queue body of ~300k tokens is too many
 * for the engine's fixed 262,144 but fits a growing parser, and trim gives
 * the memory back. */
static void
test_growing_big_body(void)
{
	size_t len;
	char *s = int_array(300000, &len);
	struct json_parser *f = json_parser_create(262144);
	struct json_parser *g = json_parser_create_growing(262144, 1u << 20);
	struct json_doc d;
	CHECK_INT(json_parse(f, s, len, false, &d), BR_ETOKENS);
	CHECK_INT(json_parse(g, s, len, false, &d), BR_OK);
	CHECK_INT(d.ntok, 300001);
	CHECK_INT(json_parser_capacity(g), 524288);
	int64_t v = 0;
	CHECK_INT(json_get_int64(&d, d.ntok - 1, &v), 0);
	CHECK_INT(v, 299999);
	json_parser_trim(g);
	CHECK_INT(json_parser_capacity(g), 262144);
	json_parser_destroy(f);
	json_parser_destroy(g);
	free(s);
}

int
main(void)
{
	big = json_parser_create(16384);
	check = json_parser_create(16384);
	if (!big || !check)
		return 2;
	RUN(test_traces);
	RUN(test_rejects);
	RUN(test_reason_order);
	RUN(test_utf8_rules);
	RUN(test_accepts);
	RUN(test_require_object);
	RUN(test_depth);
	RUN(test_tokens);
	RUN(test_pathological_cpu);
	RUN(test_navigation);
	RUN(test_int64);
	RUN(test_str_get);
	RUN(test_emit_nonfinite);
	RUN(test_emit_into_container);
	RUN(test_emit_budgets);
	RUN(test_fast_path_cases);
	RUN(test_fast_path_taken);
	RUN(test_fast_path_random);
	RUN(test_lone_surrogates);
	RUN(test_lone_surrogate_flag);
	RUN(test_growing);
	RUN(test_growing_resumes);
	RUN(test_growing_big_body);
	json_parser_destroy(big);
	json_parser_destroy(check);
	TEST_MAIN_END();
}
