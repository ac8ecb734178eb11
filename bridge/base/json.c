/* jsmn wrapper: the one translation unit holding jsmn's implementation, plus
 * the validation jsmn leaves out.
 *
 * Validation is one pass over the tokens in order. jsmn's tokens are
 * sorted by start offset, so walking them while keeping a stack of open
 * containers re-derives the document's grammar: every byte of the input is
 * either inside a token (checked as a string or a primitive), an opening or
 * closing bracket, or in a gap between two of those, which must be
 * whitespace plus exactly the separator the grammar wants there. Nothing
 * that jsmn tolerates (missing commas, `{a:1}`, `{}{}`, ...) survives that,
 * and the token tree is checked against jsmn's parent links and sizes so the
 * navigation below can trust it. */
#include <jsmn.h>

#include "json.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "utf8.h"

#define REPLACEMENT_CHAR 0xFFFDu

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

static bool
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* RFC 8259: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static bool
is_number(const char *p, size_t n)
{
	size_t i = 0;
	if (i < n && p[i] == '-')
		i++;
	if (i >= n || !is_digit(p[i]))
		return false;
	if (p[i++] != '0')
		while (i < n && is_digit(p[i]))
			i++;
	if (i < n && p[i] == '.') {
		if (++i >= n || !is_digit(p[i]))
			return false;
		while (i < n && is_digit(p[i]))
			i++;
	}
	if (i < n && (p[i] == 'e' || p[i] == 'E')) {
		if (++i < n && (p[i] == '+' || p[i] == '-'))
			i++;
		if (i >= n || !is_digit(p[i]))
			return false;
		while (i < n && is_digit(p[i]))
			i++;
	}
	return i == n;
}

static bool
is_word(const char *p, size_t n, const char *word)
{
	return n == strlen(word) && memcmp(p, word, n) == 0;
}

/* First bytes of a validated primitive: NaN, Infinity or -Infinity? */
static bool
is_nonfinite_text(const char *p)
{
	return p[0] == 'N' || p[0] == 'I' || (p[0] == '-' && p[1] == 'I');
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

/* Length of the escape at s[0..n) (s[0] == '\\'): 2, 6, or 12 for a
 * surrogate pair; the code point in *cp. 0 when the escape is malformed.
 * A surrogate that is not the high half of a high+low pair is valid JSON
 * (Python's surrogateescape file names, JS strings cut inside an emoji) but
 * no character: it is one 6-byte escape for U+FFFD, so nothing decoded
 * from it, nor re-emitted (see fix_lone_surrogates), holds a surrogate. */
static size_t
escape_len(const char *s, size_t n, uint32_t *cp)
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
		*cp = REPLACEMENT_CHAR;
		return 6;
	}
	*cp = 0x10000 + (((uint32_t) hi - 0xD800) << 10)
	    + ((uint32_t) lo - 0xDC00);
	return 12;
}

/* true when the escape at s (k bytes long, code point cp, as escape_len
 * gave them) is an unpaired surrogate: U+FFFD spelled \uDxxx, which only a
 * surrogate is. */
static bool
is_lone_surrogate(const char *s, size_t k, uint32_t cp)
{
	return k == 6 && cp == REPLACEMENT_CHAR
	    && (s[2] == 'd' || s[2] == 'D');
}

/* Rewrites in place every unpaired surrogate escape of s[0..n) as \ufffd.
 * s is JSON text or string content that starts outside any escape, so
 * every backslash in it starts one. The rewrite keeps the length, so what
 * was measured on the source bytes (budgets, cuts, the fast path's size)
 * still holds. */
static void
fix_lone_surrogates(char *s, size_t n)
{
	char *p = s, *end = s + n;
	while ((p = memchr(p, '\\', (size_t) (end - p))) != NULL) {
		uint32_t cp;
		size_t k = escape_len(p, (size_t) (end - p), &cp);
		if (k == 0)
			return; /* cannot happen: the writer never cuts one */
		if (is_lone_surrogate(p, k, cp))
			memcpy(p + 2, "fffd", 4);
		p += k;
	}
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

/* Outer span of token t: strings include their quotes. */
static int
outer_start(const jsmntok_t *t)
{
	return t->type == JSMN_STRING ? t->start - 1 : t->start;
}

static int
outer_end(const jsmntok_t *t)
{
	return t->type == JSMN_STRING ? t->end + 1 : t->end;
}

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
	if (!gap_ok(buf, pos, outer_start(t), sep))
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

/* bad: what prescan() found wrong in strings. Also sets *finite_prefix
 * (see struct json_doc). */
static int
validate(const char *buf, int first, int last, const jsmntok_t *tok, int ntok,
    const struct bad_string *bad, int *finite_prefix)
{
	struct frame stack[JSON_MAX_DEPTH];
	*finite_prefix = ntok;
	int depth = 0;
	int pos = first;
	for (int i = 0; i < ntok; i++) {
		const jsmntok_t *t = &tok[i];
		if (t->start < 0 || t->end < t->start)
			return BR_ESYNTAX;
		int start = outer_start(t);
		while (depth > 0 && tok[stack[depth - 1].tok].end <= start) {
			int rc
			    = close_frame(buf, tok, &stack[depth - 1], &pos);
			if (rc != BR_OK)
				return rc;
			depth--;
		}
		if (depth == 0) {
			/* the root, and nothing after it */
			if (i != 0 || start != pos || t->parent != -1)
				return BR_ESYNTAX;
		} else {
			int rc
			    = place_token(buf, tok, i, &stack[depth - 1], pos);
			if (rc != BR_OK)
				return rc;
		}
		switch (t->type) {
		case JSMN_STRING:
			/* content checked by prescan() */
			if (t->start == bad->start)
				return bad->reason;
			pos = outer_end(t);
			break;
		case JSMN_PRIMITIVE:
			if (!is_primitive(
			        buf + t->start, (size_t) (t->end - t->start)))
				return BR_ESYNTAX;
			if (*finite_prefix == ntok
			    && is_nonfinite_text(buf + t->start))
				*finite_prefix = i;
			pos = t->end;
			break;
		case JSMN_OBJECT:
		case JSMN_ARRAY:
			if (buf[t->start]
			    != (t->type == JSMN_OBJECT ? '{' : '['))
				return BR_ESYNTAX;
			if (depth == JSON_MAX_DEPTH)
				return BR_EDEPTH;
			stack[depth].tok = i;
			stack[depth].last_key = -1;
			stack[depth].members = 0;
			stack[depth].state = FRAME_EMPTY;
			depth++;
			pos = t->start + 1;
			break;
		default:
			return BR_ESYNTAX;
		}
	}
	while (depth > 0) {
		int rc = close_frame(buf, tok, &stack[depth - 1], &pos);
		if (rc != BR_OK)
			return rc;
		depth--;
	}
	return pos == last ? BR_OK : BR_ESYNTAX;
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
			k = escape_len(buf + i, len - i, &cp);
			if (k == 0) {
				if (reason == BR_OK)
					reason = BR_ESYNTAX;
				k = i + 1 < len ? 2 : 1;
			} else if (is_lone_surrogate(buf + i, k, cp)) {
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

/* ---------------------------------------------------------------------- */
/* navigation                                                              */

static const jsmntok_t *
tok_at(const struct json_doc *d, int i)
{
	if (!d || i < 0 || i >= d->ntok)
		return NULL;
	return &d->tok[i];
}

int
json_skip(const struct json_doc *d, int i)
{
	const jsmntok_t *t = tok_at(d, i);
	if (!t)
		return -1;
	if (t->type == JSMN_STRING || t->type == JSMN_PRIMITIVE
	    || t->size == 0)
		return i + 1;
	/* Starts are strictly increasing, so the subtree's end is the first
	 * token starting after t ends: a binary search, whatever the size. */
	int lo = i + 1, hi = d->ntok;
	while (lo < hi) {
		int mid = lo + (hi - lo) / 2;
		if (d->tok[mid].start < t->end)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

int
json_child(const struct json_doc *d, int parent, int n)
{
	const jsmntok_t *t = tok_at(d, parent);
	if (!t || (t->type != JSMN_OBJECT && t->type != JSMN_ARRAY) || n < 0
	    || n >= t->size)
		return -1;
	bool is_obj = t->type == JSMN_OBJECT;
	int j = parent + 1;
	for (int k = 0; k < n; k++)
		j = json_skip(d, is_obj ? j + 1 : j);
	return j;
}

bool
json_is_null(const struct json_doc *d, int i)
{
	const jsmntok_t *t = tok_at(d, i);
	return t && t->type == JSMN_PRIMITIVE && d->buf[t->start] == 'n';
}

bool
json_is_string(const struct json_doc *d, int i)
{
	const jsmntok_t *t = tok_at(d, i);
	return t && t->type == JSMN_STRING;
}

bool
json_is_object(const struct json_doc *d, int i)
{
	const jsmntok_t *t = tok_at(d, i);
	return t && t->type == JSMN_OBJECT;
}

bool
json_is_array(const struct json_doc *d, int i)
{
	const jsmntok_t *t = tok_at(d, i);
	return t && t->type == JSMN_ARRAY;
}

bool
json_is_nonfinite(const struct json_doc *d, int i)
{
	const jsmntok_t *t = tok_at(d, i);
	if (!t || t->type != JSMN_PRIMITIVE)
		return false;
	return is_nonfinite_text(d->buf + t->start);
}

bool
json_is_number(const struct json_doc *d, int i)
{
	const jsmntok_t *t = tok_at(d, i);
	if (!t || t->type != JSMN_PRIMITIVE)
		return false;
	char c = d->buf[t->start];
	return is_digit(c) || (c == '-' && is_digit(d->buf[t->start + 1]));
}

int
json_size(const struct json_doc *d, int i)
{
	const jsmntok_t *t = tok_at(d, i);
	if (!t || (t->type != JSMN_OBJECT && t->type != JSMN_ARRAY))
		return 0;
	return t->size;
}

const char *
json_raw(const struct json_doc *d, int i, size_t *len)
{
	const jsmntok_t *t = tok_at(d, i);
	if (!t) {
		*len = 0;
		return NULL;
	}
	*len = (size_t) (t->end - t->start);
	return d->buf + t->start;
}

const char *
json_raw_value(const struct json_doc *d, int i, size_t *len)
{
	const jsmntok_t *t = tok_at(d, i);
	if (!t) {
		*len = 0;
		return NULL;
	}
	*len = (size_t) (outer_end(t) - outer_start(t));
	return d->buf + outer_start(t);
}

/* Decodes the next character of validated string content s[*i..n) into
 * UTF-8 bytes in out; returns how many (1..4). */
static size_t
next_char(const char *s, size_t n, size_t *i, unsigned char out[4])
{
	unsigned char c = (unsigned char) s[*i];
	if (c != '\\') {
		/* copy a whole UTF-8 sequence, so callers never split one */
		size_t k = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
		if (k > n - *i)
			k = n - *i;
		memcpy(out, s + *i, k);
		*i += k;
		return k;
	}
	uint32_t cp = 0;
	size_t k = escape_len(s + *i, n - *i, &cp);
	if (k == 0) { /* cannot happen on a validated document */
		out[0] = (unsigned char) s[(*i)++];
		return 1;
	}
	*i += k;
	return utf8_encode(cp, out);
}

bool
json_str_eq(const struct json_doc *d, int i, const char *s)
{
	const jsmntok_t *t = tok_at(d, i);
	if (!t || t->type != JSMN_STRING || !s)
		return false;
	const char *raw = d->buf + t->start;
	size_t n = (size_t) (t->end - t->start);
	if (!memchr(raw, '\\', n))
		return strlen(s) == n && memcmp(raw, s, n) == 0;
	size_t at = 0, k = 0;
	while (at < n) {
		unsigned char ch[4];
		size_t m = next_char(raw, n, &at, ch);
		for (size_t j = 0; j < m; j++, k++)
			if (s[k] == '\0' || (unsigned char) s[k] != ch[j])
				return false;
	}
	return s[k] == '\0';
}

int
json_obj_get(const struct json_doc *d, int obj, const char *key)
{
	const jsmntok_t *t = tok_at(d, obj);
	if (!t || t->type != JSMN_OBJECT)
		return -1;
	int j = obj + 1;
	for (int k = 0; k < t->size; k++) {
		if (json_str_eq(d, j, key))
			return j + 1;
		j = json_skip(d, j + 1);
	}
	return -1;
}

int
json_str_get(const struct json_doc *d, int i, char *dst, size_t cap)
{
	const jsmntok_t *t = tok_at(d, i);
	if (!t || t->type != JSMN_STRING)
		return BR_ETYPE;
	const char *raw = d->buf + t->start;
	size_t n = (size_t) (t->end - t->start);
	size_t at = 0, len = 0;
	bool full = false, has_nul = false;
	while (at < n) {
		/* runs that need no decoding are copied as they are */
		size_t run = utf8_json_plain_run(raw + at, n - at);
		if (run > 0) {
			size_t room = full || cap == 0 ? 0 : cap - 1 - len;
			size_t k = run <= room ? run : room;
			if (k > 0)
				memcpy(dst + len, raw + at, k);
			len += k;
			full = full || k < run;
			at += run;
			continue;
		}
		unsigned char ch[4];
		size_t m = next_char(raw, n, &at, ch);
		if (ch[0] == 0)
			has_nul = true;
		if (full || cap == 0 || m > cap - 1 - len) {
			/* keep scanning: a NUL later still makes it invalid */
			full = true;
			continue;
		}
		memcpy(dst + len, ch, m);
		len += m;
	}
	if (cap > 0)
		dst[len] = '\0';
	if (has_nul)
		return BR_EINVAL;
	if (full)
		return BR_ETRUNC;
	return len > INT_MAX ? BR_ERANGE : (int) len;
}

/* Splits a validated number into its digits and decimal exponent. */
struct num_parts {
	bool neg;
	const char *int_digits, *frac_digits;
	size_t int_len, frac_len;
	long exp; /* clamped to +-LONG_MAX/4 */
};

static void
split_number(const char *p, size_t n, struct num_parts *np)
{
	size_t i = 0;
	np->neg = p[0] == '-';
	if (np->neg)
		i++;
	np->int_digits = p + i;
	while (i < n && is_digit(p[i]))
		i++;
	np->int_len = (size_t) (p + i - np->int_digits);
	np->frac_digits = p + i;
	np->frac_len = 0;
	if (i < n && p[i] == '.') {
		np->frac_digits = p + ++i;
		while (i < n && is_digit(p[i]))
			i++;
		np->frac_len = (size_t) (p + i - np->frac_digits);
	}
	np->exp = 0;
	if (i < n && (p[i] == 'e' || p[i] == 'E')) {
		bool eneg = p[++i] == '-';
		if (p[i] == '+' || p[i] == '-')
			i++;
		for (; i < n; i++) {
			if (np->exp < LONG_MAX / 40)
				np->exp = np->exp * 10 + (p[i] - '0');
		}
		if (eneg)
			np->exp = -np->exp;
	}
}

int
json_get_int64(const struct json_doc *d, int i, int64_t *out)
{
	if (!json_is_number(d, i))
		return BR_ETYPE;
	const jsmntok_t *t = &d->tok[i];
	struct num_parts np;
	split_number(d->buf + t->start, (size_t) (t->end - t->start), &np);

	/* value = digits(int ++ frac) * 10^(exp - frac_len); trailing zeros
	 * of the digit string move into the exponent. */
	size_t total = np.int_len + np.frac_len;
#define DIGIT(k)                                                              \
	((k) < np.int_len ? np.int_digits[(k)]                                \
	                  : np.frac_digits[(k) -np.int_len])
	size_t lead = 0;
	while (lead < total && DIGIT(lead) == '0')
		lead++;
	if (lead == total) {
		*out = 0;
		return 0;
	}
	size_t end = total;
	while (DIGIT(end - 1) == '0')
		end--;
	long scale = np.exp - (long) np.frac_len + (long) (total - end);
	if (scale < 0)
		return BR_ERANGE; /* a fraction */
	if ((long) (end - lead) + scale > 19)
		return BR_ERANGE;
	uint64_t mag = 0;
	for (size_t k = lead; k < end; k++)
		mag = mag * 10 + (uint64_t) (DIGIT(k) - '0');
#undef DIGIT
	for (long s = 0; s < scale; s++) {
		if (mag > UINT64_MAX / 10)
			return BR_ERANGE;
		mag *= 10;
	}
	if (np.neg) {
		if (mag > (uint64_t) INT64_MAX + 1)
			return BR_ERANGE;
		*out = mag == (uint64_t) INT64_MAX + 1 ? INT64_MIN
		                                       : -(int64_t) mag;
	} else {
		if (mag > (uint64_t) INT64_MAX)
			return BR_ERANGE;
		*out = (int64_t) mag;
	}
	return 0;
}

int
json_get_double(const struct json_doc *d, int i, double *out)
{
	if (!json_is_number(d, i))
		return BR_ETYPE;
	const jsmntok_t *t = &d->tok[i];
	size_t n = (size_t) (t->end - t->start);
	/* strtod needs a NUL the document does not have. */
	char tmp[128];
	if (n >= sizeof(tmp))
		return BR_ERANGE;
	memcpy(tmp, d->buf + t->start, n);
	tmp[n] = '\0';
	char *endp;
	double v = strtod(tmp, &endp);
	if (endp != tmp + n)
		return BR_ETYPE;
	if (!isfinite(v))
		return BR_ERANGE;
	*out = v;
	return 0;
}

int
json_get_bool(const struct json_doc *d, int i, bool *out)
{
	const jsmntok_t *t = tok_at(d, i);
	if (!t || t->type != JSMN_PRIMITIVE)
		return BR_ETYPE;
	char c = d->buf[t->start];
	if (c != 't' && c != 'f')
		return BR_ETYPE;
	*out = c == 't';
	return 0;
}

/* ---------------------------------------------------------------------- */
/* emission                                                                */

/* Longest prefix of validated string content s[0..n) no longer than max
 * bytes that ends on a character boundary: never inside a UTF-8 sequence,
 * an escape, or between the halves of a surrogate pair. */
static size_t
string_cut(const char *s, size_t n, size_t max)
{
	size_t at = 0;
	while (at < n) {
		size_t k;
		unsigned char c = (unsigned char) s[at];
		if (c == '\\') {
			uint32_t cp;
			k = escape_len(s + at, n - at, &cp);
		} else if (c < 0x80) {
			k = 1;
		} else if (c >= 0xF0) {
			k = 4;
		} else if (c >= 0xE0) {
			k = 3;
		} else {
			k = 2;
		}
		if (k == 0 || at + k > max)
			break;
		at += k;
	}
	return at;
}

struct emitter {
	const struct json_doc *d;
	struct jsonw *w;
	bool *truncated;
};

/* Applies fix_lone_surrogates to what w got since from (whole pieces:
 * the writer never writes part of one). */
static void
fix_written(const struct emitter *e, size_t from)
{
	if (e->d->no_lone_surrogates || e->w->len <= from)
		return;
	fix_lone_surrogates(e->w->buf + from, e->w->len - from);
}

static void
mark_truncated(struct emitter *e)
{
	if (e->truncated)
		*e->truncated = true;
}

/* Room left before limit for a piece of n bytes plus the separator. */
static bool
fits(const struct emitter *e, size_t limit, size_t n)
{
	size_t used = e->w->len + jsonw_sep_len(e->w);
	return used <= limit && n <= limit - used;
}

/* Emits token i within limit (an absolute w->len). whole: the value must
 * fit entirely or not at all (returns false, caller rewinds); otherwise it
 * is cut to fit as well as it can. Sets *next to the token after i's
 * subtree. Depth is bounded by JSON_MAX_DEPTH through validation. */
static bool
emit_value(struct emitter *e, int i, size_t limit, bool whole, int *next)
{
	const struct json_doc *d = e->d;
	const jsmntok_t *t = &d->tok[i];
	size_t n = (size_t) (t->end - t->start);
	const char *raw = d->buf + t->start;
	*next = i + 1;

	if (t->type == JSMN_STRING) {
		size_t from = e->w->len;
		if (fits(e, limit, n + 2)) {
			jsonw_str_raw(e->w, raw, n);
			fix_written(e, from);
			return true;
		}
		if (whole)
			return false;
		size_t used = e->w->len + jsonw_sep_len(e->w) + 2;
		size_t room = used < limit ? limit - used : 0;
		jsonw_str_raw(e->w, raw, string_cut(raw, n, room));
		fix_written(e, from);
		mark_truncated(e);
		return true;
	}
	if (t->type == JSMN_PRIMITIVE) {
		bool nonfinite = json_is_nonfinite(d, i);
		const char *text = nonfinite ? "null" : raw;
		size_t len = nonfinite ? 4 : n;
		if (fits(e, limit, len)) {
			jsonw_raw(e->w, text, len);
			return true;
		}
		if (whole)
			return false;
		/* null (and NaN, which becomes null) lose nothing */
		jsonw_null(e->w);
		if (raw[0] != 'n' && !nonfinite)
			mark_truncated(e);
		return true;
	}

	bool is_obj = t->type == JSMN_OBJECT;
	if (whole && !fits(e, limit, 2))
		return false;
	if (is_obj)
		jsonw_obj_begin(e->w);
	else
		jsonw_arr_begin(e->w);
	/* room for the closing bracket */
	size_t inner = limit > 0 ? limit - 1 : 0;
	int j = i + 1;
	for (int k = 0; k < t->size; k++) {
		struct jsonw_mark m = jsonw_mark(e->w);
		bool ok = true;
		if (is_obj) {
			const jsmntok_t *key = &d->tok[j];
			size_t klen = (size_t) (key->end - key->start);
			ok = fits(e, inner, klen + 3);
			if (ok) {
				jsonw_key_raw(e->w, d->buf + key->start, klen);
				fix_written(e, m.len);
			}
			j++;
		}
		int after;
		ok = ok && emit_value(e, j, inner, true, &after);
		if (!ok) {
			if (whole)
				return false;
			jsonw_rewind(e->w, &m);
			mark_truncated(e);
			*next = json_skip(d, i);
			break;
		}
		j = after;
		*next = j;
	}
	if (is_obj)
		jsonw_obj_end(e->w);
	else
		jsonw_arr_end(e->w);
	return true;
}

/* End of the validated string whose content starts at s (just after its
 * opening quote): the closing quote, the first quote not escaped by an odd
 * run of backslashes before it. */
static const char *
string_close(const char *s, const char *end)
{
	for (;;) {
		const char *q = memchr(s, '"', (size_t) (end - s));
		if (!q)
			return end - 1; /* cannot happen on a validated doc */
		const char *b = q;
		while (b[-1] == '\\')
			b--;
		if (((q - b) & 1) == 0)
			return q;
		s = q + 1;
	}
}

/* Writes the validated value src[0..n) to dst without the whitespace
 * outside its strings, or only counts when dst is NULL. Outside strings a
 * valid document has no byte <= ' ' but whitespace. Returns the length. */
static size_t
compact_copy(char *dst, const char *src, size_t n)
{
	const char *p = src, *end = src + n;
	size_t k = 0;
	while (p < end) {
		char c = *p++;
		if (c == '"') {
			const char *q = string_close(p, end) + 1;
			size_t len = (size_t) (q - p) + 1;
			if (dst)
				memcpy(dst + k, p - 1, len);
			k += len;
			p = q;
		} else if ((unsigned char) c > ' ') {
			if (dst)
				dst[k] = c;
			k++;
		}
	}
	return k;
}

/* The fast path of json_emit: when the subtree at i has no NaN/Infinity
 * (which must become null) and its compact form fits both the budget and
 * the writer, that form is exactly what emit_value would write, so its
 * bytes are copied with the whitespace outside strings dropped (and
 * unpaired surrogates rewritten, as emit_value does). Returns
 * false, with w as it was, when emit_value must do the work instead. */
static bool
emit_compact(const struct json_doc *d, int i, struct jsonw *w, size_t budget)
{
	/* emit_value fails with BR_EDEPTH past the writer's depth; leave
	 * anything near that to it */
	if (w->err || w->depth + JSON_MAX_DEPTH >= JSONW_MAX_DEPTH)
		return false;
	int end = json_skip(d, i);
	int from = i > d->finite_prefix ? i : d->finite_prefix;
	for (int j = from; j < end; j++)
		if (d->tok[j].type == JSMN_PRIMITIVE
		    && is_nonfinite_text(d->buf + d->tok[j].start))
			return false;

	size_t n;
	const char *src = json_raw_value(d, i, &n);
	struct jsonw_mark m = jsonw_mark(w);
	/* the separator and the writer's bookkeeping of one value, exactly
	 * as emit_value's first write would do them */
	size_t cap;
	char *dst = jsonw_raw_reserve(w, &cap);
	if (dst == NULL)
		return false; /* emit_value then finds the same sticky error */
	if (budget > 0 && budget < cap)
		cap = budget;
	/* the compact form is never longer than the raw bytes */
	if (n > cap && compact_copy(NULL, src, n) > cap) {
		jsonw_rewind(w, &m);
		return false;
	}
	size_t k = compact_copy(dst, src, n);
	if (!d->no_lone_surrogates)
		fix_lone_surrogates(dst, k);
	jsonw_raw_commit(w, k);
	return true;
}

static int
emit_tokenwise(const struct json_doc *d, int i, struct jsonw *w, size_t budget,
    bool *truncated)
{
	struct emitter e = { d, w, truncated };
	size_t limit = SIZE_MAX;
	if (budget > 0) {
		size_t start = w->len + jsonw_sep_len(w);
		limit = budget > SIZE_MAX - start ? SIZE_MAX : start + budget;
	}
	int next;
	emit_value(&e, i, limit, false, &next);
	return w->err;
}

int
json_emit(const struct json_doc *d, int i, struct jsonw *w, size_t budget,
    bool *truncated)
{
	if (!tok_at(d, i))
		return BR_EINVAL;
	if (emit_compact(d, i, w, budget))
		return 0;
	return emit_tokenwise(d, i, w, budget, truncated);
}

int
json_emit_tokenwise_for_tests(const struct json_doc *d, int i, struct jsonw *w,
    size_t budget, bool *truncated)
{
	if (!tok_at(d, i))
		return BR_EINVAL;
	return emit_tokenwise(d, i, w, budget, truncated);
}
