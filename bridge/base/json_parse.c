/* json_parse: the one translation unit holding jsmn's implementation, the
 * parser's token array, and the validation jsmn leaves out.
 *
 * Validation is one walk over the input's bytes before jsmn runs
 * (scan_doc): it splits the input as jsmn does and checks the grammar,
 * string contents and the nesting on the way, so jsmn's tokens need no
 * second look. Nothing that jsmn tolerates (missing commas, `{a:1}`,
 * `{}{}`, ...) survives that, and on what it accepts jsmn's tokens are the
 * document's tree, so the accessors in json_read.c can trust them. */
#include <jsmn.h>

#include "json.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "json_internal.h"
#include "utf8.h"

struct json_parser {
	jsmntok_t *tok;
	unsigned cap; /* entries in tok now */
	unsigned initial; /* what json_parser_trim shrinks back to */
	unsigned max; /* cap never grows past it; == initial when fixed */
};

struct json_parser *
json_parser_create_growing(unsigned initial_tokens, unsigned max_tokens)
{
	if (initial_tokens == 0 || initial_tokens > max_tokens
	    || max_tokens > INT_MAX / 2)
		return NULL;
	struct json_parser *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->tok = calloc(initial_tokens, sizeof(*p->tok));
	if (!p->tok) {
		free(p);
		return NULL;
	}
	p->cap = initial_tokens;
	p->initial = initial_tokens;
	p->max = max_tokens;
	return p;
}

struct json_parser *
json_parser_create(unsigned max_tokens)
{
	/* max == initial: json_parse never finds room to grow, so it never
	 * allocates */
	return json_parser_create_growing(max_tokens, max_tokens);
}

unsigned
json_parser_capacity(const struct json_parser *p)
{
	return p ? p->cap : 0;
}

void
json_parser_trim(struct json_parser *p)
{
	if (!p || p->cap <= p->initial)
		return;
	jsmntok_t *t = realloc(p->tok, p->initial * sizeof(*p->tok));
	/* a shrink that fails leaves the big array, still usable */
	if (!t)
		return;
	p->tok = t;
	p->cap = p->initial;
}

void
json_parser_trim_over(struct json_parser *p, size_t max_bytes)
{
	if (p && (size_t) p->cap * sizeof(*p->tok) > max_bytes)
		json_parser_trim(p);
}

/* Doubles the token array, within p->max, keeping the tokens already made
 * (jsmn continues after them). false when it cannot grow. */
static bool
parser_grow(struct json_parser *p)
{
	size_t want = (size_t) p->cap * 2;
	if (want > p->max)
		want = p->max;
	if (want > SIZE_MAX / sizeof(*p->tok))
		want = SIZE_MAX / sizeof(*p->tok); /* 32-bit size_t */
	if (want <= p->cap)
		return false;
	jsmntok_t *t = realloc(p->tok, want * sizeof(*p->tok));
	if (!t)
		return false;
	p->tok = t;
	p->cap = (unsigned) want;
	return true;
}

void
json_parser_destroy(struct json_parser *p)
{
	if (!p)
		return;
	free(p->tok);
	free(p);
}

/* ---------------------------------------------------------------------- */
/* validation                                                              */

/* RFC 8259: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static bool
is_number(const char *p, size_t n)
{
	size_t i = 0;
	if (i < n && p[i] == '-')
		i++;
	if (i >= n || !json_digit(p[i]))
		return false;
	if (p[i++] != '0')
		while (i < n && json_digit(p[i]))
			i++;
	if (i < n && p[i] == '.') {
		if (++i >= n || !json_digit(p[i]))
			return false;
		while (i < n && json_digit(p[i]))
			i++;
	}
	if (i < n && (p[i] == 'e' || p[i] == 'E')) {
		if (++i < n && (p[i] == '+' || p[i] == '-'))
			i++;
		if (i >= n || !json_digit(p[i]))
			return false;
		while (i < n && json_digit(p[i]))
			i++;
	}
	return i == n;
}

static bool
is_word(const char *p, size_t n, const char *word)
{
	return n == strlen(word) && memcmp(p, word, n) == 0;
}

bool
json_primitive_ok(const char *p, size_t n)
{
	if (n == 0)
		return false;
	switch (p[0]) {
	case 't':
		return is_word(p, n, "true");
	case 'f':
		return is_word(p, n, "false");
	case 'n':
		return is_word(p, n, "null");
	case 'N':
		return is_word(p, n, "NaN");
	case 'I':
		return is_word(p, n, "Infinity");
	case '-':
		return is_word(p, n, "-Infinity") || is_number(p, n);
	default:
		return is_number(p, n);
	}
}

static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Four hex digits at p (p[0..4) must be readable); -1 if not hex. */
static long
hex4(const char *p)
{
	long v = 0;
	for (int k = 0; k < 4; k++) {
		int h = hex_value(p[k]);
		if (h < 0)
			return -1;
		v = (v << 4) | h;
	}
	return v;
}

/* See json_internal.h. */
size_t
json_escape_len(const char *s, size_t n, uint32_t *cp)
{
	if (n < 2)
		return 0;
	switch (s[1]) {
	case '"':
	case '\\':
	case '/':
		*cp = (unsigned char) s[1];
		return 2;
	case 'b':
		*cp = '\b';
		return 2;
	case 'f':
		*cp = '\f';
		return 2;
	case 'n':
		*cp = '\n';
		return 2;
	case 'r':
		*cp = '\r';
		return 2;
	case 't':
		*cp = '\t';
		return 2;
	case 'u':
		break;
	default:
		return 0;
	}
	if (n < 6)
		return 0;
	long hi = hex4(s + 2);
	if (hi < 0)
		return 0;
	if (hi < 0xD800 || hi > 0xDFFF) {
		*cp = (uint32_t) hi;
		return 6;
	}
	/* a malformed escape after a high half is reported when the scan
	 * gets to it */
	long lo = hi <= 0xDBFF && n >= 12 && s[6] == '\\' && s[7] == 'u'
	    ? hex4(s + 8)
	    : -1;
	if (lo < 0xDC00 || lo > 0xDFFF) {
		*cp = JSON_REPLACEMENT_CHAR;
		return 6;
	}
	*cp = 0x10000 + (((uint32_t) hi - 0xD800) << 10)
	    + ((uint32_t) lo - 0xDC00);
	return 12;
}

/* First string (by where its content starts, as jsmn's token does) whose
 * content is not valid. */
struct bad_string {
	long start; /* -1: none */
	int reason;
};

/* jsmn's primitive delimiters (and a NUL, where jsmn stops). */
static bool
ends_primitive(char c)
{
	switch (c) {
	case ' ':
	case '\t':
	case '\r':
	case '\n':
	case ',':
	case ']':
	case '}':
	case ':':
	case '\0':
		return true;
	default:
		return false;
	}
}

/* Walks the string whose content starts at buf[i], splitting it as jsmn
 * does (a backslash hides the next byte), and checks its content on the
 * way: escapes, UTF-8, no raw control characters. It runs to the buffer's
 * end rather than the closing quote, which is harmless: an escape or a
 * UTF-8 sequence cut by the closing quote fails on that quote just as it
 * fails on the content's end. Returns the index after the closing quote,
 * or len when a NUL or the end comes first (jsmn then fails). */
static size_t
scan_string(
    const char *buf, size_t len, size_t i, struct bad_string *bad, bool *lone)
{
	const unsigned char *s = (const unsigned char *) buf;
	size_t content = i;
	int reason = BR_OK;
	for (;;) {
		i += utf8_json_plain_run(s + i, len - i);
		if (i >= len || s[i] == '\0')
			return len;
		unsigned char c = s[i];
		if (c == '"')
			break;
		uint32_t cp;
		size_t k;
		if (c == '\\') {
			k = json_escape_len(buf + i, len - i, &cp);
			if (k == 0) {
				if (reason == BR_OK)
					reason = BR_ESYNTAX;
				k = i + 1 < len ? 2 : 1;
			} else if (json_lone_surrogate(buf + i, k, cp)) {
				*lone = true;
			}
		} else if (c < 0x20) {
			if (reason == BR_OK)
				reason = BR_EUTF8;
			k = 1;
		} else {
			k = utf8_decode(s + i, len - i, &cp);
			if (k == 0) {
				if (reason == BR_OK)
					reason = BR_EUTF8;
				k = 1;
			}
		}
		i += k;
	}
	if (reason != BR_OK && bad->start < 0) {
		bad->start = (long) content;
		bad->reason = reason;
	}
	return i + 1;
}

/* What the grammar wants next (see scan_doc). */
enum want {
	W_VALUE, /* the root, after ':', after ',' in an array */
	W_VALUE_OR_CLOSE, /* after '[' */
	W_KEY_OR_CLOSE, /* after '{' */
	W_KEY, /* after ',' in an object */
	W_COLON, /* after a key */
	W_NEXT, /* after a member: ',' or the container's closer */
	W_END, /* after the root: whitespace only */
	W_FAILED /* after a grammar error: only the nesting is measured */
};

/* The one walk over the input (see scan_doc). */
struct scan {
	const char *buf;
	size_t len;
	int depth;
	enum want want;
	int ntok; /* tokens jsmn makes of the bytes walked so far */
	int nonfinite; /* the first NaN/Infinity/-Infinity token, or -1 */
	struct bad_string bad;
	bool lone; /* some string holds an unpaired surrogate */
	bool is_obj[JSON_MAX_DEPTH]; /* the containers open now */
};

static void
grammar_fail(struct scan *s)
{
	s->want = W_FAILED;
}

static bool
wants_value(const struct scan *s)
{
	return s->want == W_VALUE || s->want == W_VALUE_OR_CLOSE;
}

/* A value ended: the root, or a member of the innermost container. */
static void
value_done(struct scan *s)
{
	s->want = s->depth == 0 ? W_END : W_NEXT;
}

/* '{' or '['. */
static int
scan_open(struct scan *s, bool obj)
{
	if (s->depth == JSON_MAX_DEPTH)
		return BR_EDEPTH;
	if (s->want != W_FAILED) {
		if (!wants_value(s)) {
			grammar_fail(s);
		} else {
			s->is_obj[s->depth] = obj;
			s->want = obj ? W_KEY_OR_CLOSE : W_VALUE_OR_CLOSE;
			s->ntok++;
		}
	}
	s->depth++;
	return BR_OK;
}

/* '}' or ']'. */
static int
scan_close(struct scan *s, bool obj)
{
	if (s->depth == 0)
		return BR_ESYNTAX;
	s->depth--;
	if (s->want == W_FAILED)
		return BR_OK;
	bool empty_ok
	    = obj ? s->want == W_KEY_OR_CLOSE : s->want == W_VALUE_OR_CLOSE;
	if (s->is_obj[s->depth] != obj || !(s->want == W_NEXT || empty_ok))
		grammar_fail(s);
	else
		value_done(s);
	return BR_OK;
}

/* A string's opening quote: a key or a value. */
static void
scan_string_token(struct scan *s)
{
	if (s->want == W_KEY_OR_CLOSE || s->want == W_KEY) {
		s->want = W_COLON;
		s->ntok++;
	} else if (wants_value(s)) {
		value_done(s);
		s->ntok++;
	} else {
		grammar_fail(s);
	}
}

/* An unquoted run buf[from..to): a value when it is a literal or a number
 * (json_primitive_ok). */
static void
scan_primitive(struct scan *s, size_t from, size_t to)
{
	if (s->want == W_FAILED)
		return;
	const char *p = s->buf + from;
	if (!wants_value(s) || !json_primitive_ok(p, to - from)) {
		grammar_fail(s);
		return;
	}
	if (s->nonfinite < 0 && json_nonfinite_text(p))
		s->nonfinite = s->ntok;
	s->ntok++;
	value_done(s);
}

/* One separator (',' or ':'). */
static void
scan_separator(struct scan *s, char c)
{
	if (c == ':' && s->want == W_COLON)
		s->want = W_VALUE;
	else if (c == ',' && s->want == W_NEXT)
		s->want = s->is_obj[s->depth - 1] ? W_KEY : W_VALUE;
	else
		grammar_fail(s);
}

/* The one walk over every byte, before jsmn runs. It splits the input
 * exactly as jsmn does (quoted strings with backslash escapes, unquoted
 * runs ending at jsmn's delimiters, a NUL ending everything) and on the
 * way:
 * - measures the nesting. jsmn closes a bracket by walking up the parent
 *   links from the last token to the innermost open container: that walk
 *   is as long as the nesting (quadratic for [[[[...]]]]: 16k levels cost
 *   0.4 s), and a closer with nothing open walks the whole chain without
 *   failing, once per closer. So deeper than JSON_MAX_DEPTH is rejected
 *   (BR_EDEPTH), and so is a closer at depth 0 (BR_ESYNTAX), which valid
 *   JSON never has; then every walk is bounded and parsing stays linear.
 * - checks the grammar (RFC 8259 plus NaN, Infinity and -Infinity); from
 *   the first byte it refuses on only the nesting is measured. Nothing
 *   that jsmn tolerates (missing commas, `{a:1}`, `{}{}`, ...) survives
 *   that, and on what it accepts jsmn's tokens are the document's tree,
 *   in the order the walk counts them. Which error a refused input
 *   reports is json_check_tokens' business.
 * - checks string contents (scan_string).
 * Returns BR_OK, or the nesting's error, which comes before all others. */
static int
scan_doc(struct scan *s)
{
	const char *buf = s->buf;
	size_t len = s->len, i = 0;
	while (i < len) {
		size_t at = i;
		char c = buf[i++];
		/* the most common byte outside strings (", " and ": "), before
		 * the switch */
		if (c == ' ')
			continue;
		int rc = BR_OK;
		switch (c) {
		case '\0':
			grammar_fail(s);
			return BR_OK; /* jsmn stops here */
		case '{':
		case '[':
			rc = scan_open(s, c == '{');
			break;
		case '}':
		case ']':
			rc = scan_close(s, c == '}');
			break;
		case '"':
			if (s->want != W_FAILED)
				scan_string_token(s);
			i = scan_string(buf, len, i, &s->bad, &s->lone);
			break;
		case ' ':
		case '\t':
		case '\r':
		case '\n':
			break;
		case ',':
		case ':':
			if (s->want != W_FAILED)
				scan_separator(s, c);
			break;
		default:
			while (i < len && !ends_primitive(buf[i]))
				i++;
			scan_primitive(s, at, i);
			break;
		}
		if (rc != BR_OK)
			return rc;
	}
	if (s->want != W_END)
		grammar_fail(s);
	return BR_OK;
}

/* The walk found a grammar error or a bad string. */
static bool
scan_refused(const struct scan *s)
{
	return s->want == W_FAILED || s->bad.start >= 0;
}

int
json_parse(struct json_parser *p, const char *buf, size_t len,
    bool require_object, struct json_doc *out)
{
	out->buf = buf;
	out->len = len;
	out->tok = p->tok;
	out->ntok = 0;
	out->finite_prefix = 0;
	out->no_lone_surrogates = false;
	if (len > INT_MAX)
		return BR_ESYNTAX; /* jsmn counts in int */
	size_t first = 0;
	while (first < len && json_ws(buf[first]))
		first++;
	if (first == len)
		return BR_EEMPTY;

	struct scan s;
	s.buf = buf;
	s.len = len;
	s.depth = 0;
	s.want = W_VALUE;
	s.ntok = 0;
	s.nonfinite = -1;
	s.bad.start = -1;
	s.bad.reason = BR_OK;
	s.lone = false;
	int rc = scan_doc(&s);
	if (rc != BR_OK)
		return rc;
	jsmn_parser jp;
	jsmn_init(&jp);
	int r;
	/* On JSMN_ERROR_NOMEM jsmn has left its position at the token it
	 * could not store and kept the tokens before it (parent links are
	 * indexes), so after growing the array it resumes there. */
	while ((r = jsmn_parse(&jp, buf, len, p->tok, p->cap))
	    == JSMN_ERROR_NOMEM) {
		if (!parser_grow(p))
			return BR_ETOKENS;
		out->tok = p->tok;
	}
	if (r <= 0)
		return BR_ESYNTAX;
	if (scan_refused(&s)) {
		/* which error: the one a walk over jsmn's tokens meets first
		 * (json_check.c); an input the walk refused never passes */
		size_t last = len;
		while (last > first && json_ws(buf[last - 1]))
			last--;
		rc = json_check_tokens(buf, (int) first, (int) last, p->tok, r,
		    s.bad.start, s.bad.reason);
		return rc != BR_OK ? rc : BR_ESYNTAX;
	}
	/* jsmn made the tokens the walk counted (a guard: it always does on
	 * what the grammar accepts) */
	if (r != s.ntok)
		return BR_ESYNTAX;
	if (require_object && p->tok[0].type != JSMN_OBJECT)
		return BR_ETYPE;
	out->ntok = r;
	out->finite_prefix = s.nonfinite >= 0 ? s.nonfinite : r;
	out->no_lone_surrogates = !s.lone;
	return BR_OK;
}
