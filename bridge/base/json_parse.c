/* json_parse: the one translation unit holding jsmn's implementation, the
 * parser's token array, and the validation jsmn leaves out.
 *
 * Validation is one pass over the tokens in order. jsmn's tokens are
 * sorted by start offset, so walking them while keeping a stack of open
 * containers re-derives the document's grammar: every byte of the input is
 * either inside a token (checked as a string or a primitive), an opening or
 * closing bracket, or in a gap between two of those, which must be
 * whitespace plus exactly the separator the grammar wants there. Nothing
 * that jsmn tolerates (missing commas, `{a:1}`, `{}{}`, ...) survives that,
 * and the token tree is checked against jsmn's parent links and sizes so the
 * accessors in json_read.c can trust it. */
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

static bool
is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

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

static bool
is_primitive(const char *p, size_t n)
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
 * content is not valid: what validate() reports when it gets there. */
struct bad_string {
	int start; /* -1: none */
	int reason;
};

/* true when buf[from..to) is whitespace around exactly one `sep`, or only
 * whitespace when sep is 0. */
static bool
gap_ok(const char *buf, int from, int to, char sep)
{
	int i = from;
	while (i < to && is_ws(buf[i]))
		i++;
	if (sep) {
		if (i >= to || buf[i] != sep)
			return false;
		i++;
		while (i < to && is_ws(buf[i]))
			i++;
	}
	return i == to;
}

enum frame_state { FRAME_EMPTY, FRAME_AFTER_KEY, FRAME_AFTER_VALUE };

struct frame {
	int tok; /* the container */
	int last_key; /* objects: the key whose value comes next */
	int members; /* elements or keys seen */
	enum frame_state state;
};

/* Pops the top frame after checking the bytes up to its closing bracket. */
static int
close_frame(const char *buf, const jsmntok_t *tok, struct frame *f, int *pos)
{
	const jsmntok_t *t = &tok[f->tok];
	int close = t->end - 1;
	char want = t->type == JSMN_OBJECT ? '}' : ']';
	if (close < *pos || buf[close] != want || f->state == FRAME_AFTER_KEY)
		return BR_ESYNTAX;
	if (!gap_ok(buf, *pos, close, 0) || t->size != f->members)
		return BR_ESYNTAX;
	*pos = close + 1;
	return BR_OK;
}

/* Places token i in the innermost open container f: checks the separator
 * before it, its role (key or value) and jsmn's parent link. */
static int
place_token(
    const char *buf, const jsmntok_t *tok, int i, struct frame *f, int pos)
{
	const jsmntok_t *t = &tok[i];
	bool is_obj = tok[f->tok].type == JSMN_OBJECT;
	char sep = f->state == FRAME_EMPTY ? 0
	    : f->state == FRAME_AFTER_KEY  ? ':'
	                                   : ',';
	if (!gap_ok(buf, pos, json_outer_start(t), sep))
		return BR_ESYNTAX;
	if (is_obj && f->state != FRAME_AFTER_KEY) {
		if (t->type != JSMN_STRING || t->parent != f->tok
		    || t->size != 1)
			return BR_ESYNTAX;
		f->last_key = i;
		f->members++;
		f->state = FRAME_AFTER_KEY;
		return BR_OK;
	}
	int parent = is_obj ? f->last_key : f->tok;
	if (t->parent != parent)
		return BR_ESYNTAX;
	if (!is_obj)
		f->members++;
	f->state = FRAME_AFTER_VALUE;
	return BR_OK;
}

/* The walk's state: the containers open around the next token and the
 * first byte not yet checked. */
struct validator {
	const char *buf;
	const jsmntok_t *tok;
	int ntok;
	const struct bad_string *bad; /* what prescan() found in strings */
	int finite_prefix; /* see struct json_doc */
	int pos;
	int depth;
	struct frame stack[JSON_MAX_DEPTH];
};

/* true when the innermost open container ends at or before byte
 * `before`. */
static bool
top_ends_by(const struct validator *v, int before)
{
	return v->depth > 0
	    && v->tok[v->stack[v->depth - 1].tok].end <= before;
}

/* Closes the open containers that end at or before byte `before`. */
static int
close_frames(struct validator *v, int before)
{
	while (top_ends_by(v, before)) {
		int rc = close_frame(
		    v->buf, v->tok, &v->stack[v->depth - 1], &v->pos);
		if (rc != BR_OK)
			return rc;
		v->depth--;
	}
	return BR_OK;
}

/* Opens the object or array at token i. */
static int
open_frame(struct validator *v, int i)
{
	const jsmntok_t *t = &v->tok[i];
	if (v->buf[t->start] != (t->type == JSMN_OBJECT ? '{' : '['))
		return BR_ESYNTAX;
	if (v->depth == JSON_MAX_DEPTH)
		return BR_EDEPTH;
	struct frame *f = &v->stack[v->depth++];
	f->tok = i;
	f->last_key = -1;
	f->members = 0;
	f->state = FRAME_EMPTY;
	v->pos = t->start + 1;
	return BR_OK;
}

/* Checks token i's own bytes, then moves pos past the token (or into the
 * container it opens). */
static int
check_token(struct validator *v, int i)
{
	const jsmntok_t *t = &v->tok[i];
	switch (t->type) {
	case JSMN_STRING:
		/* content checked by prescan() */
		if (t->start == v->bad->start)
			return v->bad->reason;
		v->pos = json_outer_end(t);
		return BR_OK;
	case JSMN_PRIMITIVE:
		if (!is_primitive(
		        v->buf + t->start, (size_t) (t->end - t->start)))
			return BR_ESYNTAX;
		if (v->finite_prefix == v->ntok
		    && json_nonfinite_text(v->buf + t->start))
			v->finite_prefix = i;
		v->pos = t->end;
		return BR_OK;
	case JSMN_OBJECT:
	case JSMN_ARRAY:
		return open_frame(v, i);
	default:
		return BR_ESYNTAX;
	}
}

/* Checks the token at i in order: the containers it comes after are
 * closed, it sits where the grammar allows (the root alone at the start,
 * or a key or value of the innermost container), and its bytes are
 * valid. */
static int
visit_token(struct validator *v, int i)
{
	const jsmntok_t *t = &v->tok[i];
	if (t->start < 0 || t->end < t->start)
		return BR_ESYNTAX;
	int start = json_outer_start(t);
	int rc;
	/* most tokens close nothing: test before the call */
	if (top_ends_by(v, start)) {
		rc = close_frames(v, start);
		if (rc != BR_OK)
			return rc;
	}
	if (v->depth == 0) {
		/* the root, and nothing after it */
		if (i != 0 || start != v->pos || t->parent != -1)
			return BR_ESYNTAX;
	} else {
		rc = place_token(
		    v->buf, v->tok, i, &v->stack[v->depth - 1], v->pos);
		if (rc != BR_OK)
			return rc;
	}
	return check_token(v, i);
}

/* Checks the tokens of buf, whose value spans [first, last) without the
 * surrounding whitespace. bad: what prescan() found wrong in strings.
 * Sets *finite_prefix (see struct json_doc) on success. */
static int
validate(const char *buf, int first, int last, const jsmntok_t *tok, int ntok,
    const struct bad_string *bad, int *finite_prefix)
{
	/* fields one by one: the stack needs no clearing */
	struct validator v;
	v.buf = buf;
	v.tok = tok;
	v.ntok = ntok;
	v.bad = bad;
	v.finite_prefix = ntok;
	v.pos = first;
	v.depth = 0;
	for (int i = 0; i < ntok; i++) {
		int rc = visit_token(&v, i);
		if (rc != BR_OK)
			return rc;
	}
	int rc = close_frames(&v, INT_MAX);
	if (rc != BR_OK)
		return rc;
	*finite_prefix = v.finite_prefix;
	return v.pos == last ? BR_OK : BR_ESYNTAX;
}

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
		bad->start = (int) content;
		bad->reason = reason;
	}
	return i + 1;
}

/* jsmn closes a bracket by walking up the parent links from the last
 * token to the innermost open container. That walk is as long as the
 * nesting (quadratic for [[[[...]]]]: 16k levels cost 0.4 s), and a closer
 * with nothing open walks the whole chain without failing, once per closer.
 * So before jsmn runs, a scan that splits the input exactly as jsmn does
 * (quoted strings with backslash escapes, unquoted runs ending at jsmn's
 * delimiters, a NUL ending everything) measures the nesting: deeper than
 * JSON_MAX_DEPTH is rejected, and so is a closer at depth 0, which valid
 * JSON never has. Then every walk is bounded and parsing stays linear.
 * The same walk checks string contents (see scan_string), so validate()
 * need not read them again: every string token jsmn makes starts where
 * this scan saw a string start. *lone: some string holds an unpaired
 * surrogate. */
static int
prescan(const char *buf, size_t len, struct bad_string *bad, bool *lone)
{
	int depth = 0;
	size_t i = 0;
	while (i < len) {
		switch (buf[i++]) {
		case '\0':
			return BR_OK; /* jsmn stops here */
		case '{':
		case '[':
			if (++depth > JSON_MAX_DEPTH)
				return BR_EDEPTH;
			break;
		case '}':
		case ']':
			if (depth-- == 0)
				return BR_ESYNTAX;
			break;
		case '"':
			i = scan_string(buf, len, i, bad, lone);
			break;
		case ' ':
		case '\t':
		case '\r':
		case '\n':
		case ',':
		case ':':
			break;
		default:
			while (i < len && !ends_primitive(buf[i]))
				i++;
			break;
		}
	}
	return BR_OK;
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
	size_t first = 0, last = len;
	while (first < len && is_ws(buf[first]))
		first++;
	if (first == len)
		return BR_EEMPTY;
	while (last > first && is_ws(buf[last - 1]))
		last--;

	struct bad_string bad = { -1, BR_OK };
	bool lone = false;
	int rc = prescan(buf, len, &bad, &lone);
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
	int finite_prefix;
	rc = validate(
	    buf, (int) first, (int) last, p->tok, r, &bad, &finite_prefix);
	if (rc != BR_OK)
		return rc;
	if (require_object && p->tok[0].type != JSMN_OBJECT)
		return BR_ETYPE;
	out->ntok = r;
	out->finite_prefix = finite_prefix;
	out->no_lone_surrogates = !lone;
	return BR_OK;
}
