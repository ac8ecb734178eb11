/* Bounded JSON writer. Every write goes through put(), which refuses a piece
 * that would not leave room for the terminating NUL; the first refusal makes
 * the error sticky so the output is a clean prefix, never a spliced one. */
#include "jsonw.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "utf8.h"

static void
fail(struct jsonw *w, int err)
{
	if (w->err == 0)
		w->err = err;
}

static void
put(struct jsonw *w, const char *s, size_t n)
{
	if (w->err)
		return;
	if (w->cap == 0 || n > w->cap - 1 - w->len) {
		fail(w, BR_ETRUNC);
		return;
	}
	memcpy(w->buf + w->len, s, n);
	w->len += n;
	w->buf[w->len] = '\0';
}

static void
put_char(struct jsonw *w, char c)
{
	put(w, &c, 1);
}

void
jsonw_init(struct jsonw *w, char *buf, size_t cap)
{
	w->buf = buf;
	w->cap = cap;
	jsonw_reset(w);
}

void
jsonw_reset(struct jsonw *w)
{
	w->len = 0;
	w->err = 0;
	w->depth = 0;
	w->after_key = false;
	memset(w->has_items, 0, sizeof(w->has_items));
	if (w->cap > 0)
		w->buf[0] = '\0';
	else
		w->err = BR_ETRUNC; /* not even room for the NUL */
}

static bool
in_object(const struct jsonw *w)
{
	return w->depth > 0 && (w->has_items[w->depth] & JSONW_IS_OBJECT);
}

size_t
jsonw_sep_len(const struct jsonw *w)
{
	if (w->after_key || w->depth == 0)
		return 0;
	return (w->has_items[w->depth] & JSONW_HAS_ITEMS) ? 1 : 0;
}

/* Writes the separator a value needs; false when the value must not be
 * written (sticky error, or a value where a key is required). */
static bool
begin_value(struct jsonw *w)
{
	if (w->err)
		return false;
	if (w->after_key) {
		w->after_key = false;
		return true;
	}
	uint8_t *flags = &w->has_items[w->depth];
	if (in_object(w) || (w->depth == 0 && (*flags & JSONW_HAS_ITEMS))) {
		/* a value without key, or a second top-level value */
		fail(w, BR_ESTATE);
		return false;
	}
	if (*flags & JSONW_HAS_ITEMS)
		put_char(w, ',');
	*flags |= JSONW_HAS_ITEMS;
	return w->err == 0;
}

static void
open_container(struct jsonw *w, char c, uint8_t kind)
{
	if (!begin_value(w))
		return;
	if (w->depth + 1 >= JSONW_MAX_DEPTH) {
		fail(w, BR_EDEPTH);
		return;
	}
	put_char(w, c);
	w->depth++;
	w->has_items[w->depth] = kind;
}

static void
close_container(struct jsonw *w, char c, uint8_t kind)
{
	if (w->err)
		return;
	if (w->depth == 0 || w->after_key
	    || (w->has_items[w->depth] & JSONW_IS_OBJECT) != kind) {
		fail(w, BR_ESTATE);
		return;
	}
	put_char(w, c);
	w->depth--;
}

void
jsonw_obj_begin(struct jsonw *w)
{
	open_container(w, '{', JSONW_IS_OBJECT);
}

void
jsonw_obj_end(struct jsonw *w)
{
	close_container(w, '}', JSONW_IS_OBJECT);
}

void
jsonw_arr_begin(struct jsonw *w)
{
	open_container(w, '[', 0);
}

void
jsonw_arr_end(struct jsonw *w)
{
	close_container(w, ']', 0);
}

/* Writes s[0..n) escaped, without quotes. Runs of bytes that need no
 * escaping are copied with one put() so plain ASCII costs one memcpy. */
static void
put_escaped(struct jsonw *w, const char *str, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *s = (const unsigned char *) str;
	size_t run = 0, i = 0;
	while (i < n && !w->err) {
		i += utf8_json_plain_run(s + i, n - i);
		if (i >= n)
			break;
		unsigned char c = s[i];
		uint32_t cp;
		if (c >= 0x80) {
			size_t seq = utf8_decode(s + i, n - i, &cp);
			if (seq > 0) {
				i += seq;
				continue;
			}
		}
		put(w, str + run, i - run);
		char esc[6] = { '\\', 0 };
		switch (c) {
		case '"':
		case '\\':
			esc[1] = (char) c;
			put(w, esc, 2);
			break;
		case '\n':
			put(w, "\\n", 2);
			break;
		case '\t':
			put(w, "\\t", 2);
			break;
		case '\r':
			put(w, "\\r", 2);
			break;
		case '\b':
			put(w, "\\b", 2);
			break;
		case '\f':
			put(w, "\\f", 2);
			break;
		default:
			if (c < 0x20) {
				memcpy(esc, "\\u00", 4);
				esc[4] = hex[c >> 4];
				esc[5] = hex[c & 0xF];
				put(w, esc, 6);
			} else {
				/* one U+FFFD per byte that starts no valid
				 * sequence */
				put(w, "\xEF\xBF\xBD", 3);
			}
			break;
		}
		i++;
		run = i;
	}
	put(w, str + run, i - run);
}

/* Writes "s" followed by tail (0-2 bytes, e.g. ":" after a key). A string
 * that needs no escaping is written in one step. */
static void
put_quoted(struct jsonw *w, const char *s, size_t n, const char *tail,
    size_t tail_len)
{
	if (w->err)
		return;
	if (utf8_json_plain_run(s, n) == n && w->cap > 0
	    && n <= w->cap - 1 - w->len
	    && w->cap - 1 - w->len - n >= 2 + tail_len) {
		char *o = w->buf + w->len;
		*o++ = '"';
		memcpy(o, s, n);
		o += n;
		*o++ = '"';
		memcpy(o, tail, tail_len);
		o += tail_len;
		*o = '\0';
		w->len = (size_t) (o - w->buf);
		return;
	}
	put_char(w, '"');
	put_escaped(w, s, n);
	put_char(w, '"');
	put(w, tail, tail_len);
}

/* Writes "s" then tail (':' after a key, 0: none) for a NUL-terminated s:
 * what put_quoted(w, s, strlen(s), ...) writes, in one pass over s when s
 * needs no escaping and fits, as keys and names mostly do. */
static void
put_quoted_cstr(struct jsonw *w, const char *s, char tail)
{
	if (w->err)
		return;
	size_t tl = tail ? 1 : 0;
	/* bytes before the NUL's slot (cap > 0: jsonw_reset made a
	 * zero-capacity writer's error sticky) */
	size_t room = w->cap - 1 - w->len;
	/* the most bytes of s that leave room for the quotes and tail */
	size_t max = room >= 2 + tl ? room - 2 - tl : 0;
	char *o = w->buf + w->len;
	size_t i = 0;
	unsigned char c;
	/* what utf8_json_plain_run lets through: '1' for 0x20..0x7F but
	 * '"' and '\\' (a NUL ends the loop as a byte below 0x20) */
	static const char plain[256] = "0000000000000000" /* 0x00 */
	                               "0000000000000000" /* 0x10 */
	                               "1101111111111111" /* 0x20 */
	                               "1111111111111111" /* 0x30 */
	                               "1111111111111111" /* 0x40 */
	                               "1111111111110111" /* 0x50 */
	                               "1111111111111111" /* 0x60 */
	                               "1111111111111111" /* 0x70 */
	                               /* 0x80..0xff */
	                               "00000000000000000000000000000000"
	                               "00000000000000000000000000000000"
	                               "00000000000000000000000000000000"
	                               "00000000000000000000000000000000";
	while (i < max && plain[c = (unsigned char) s[i]] == '1')
		o[1 + i++] = (char) c;
	if (s[i] == '\0' && i + 2 + tl <= room) {
		o[0] = '"';
		o[1 + i] = '"';
		o[2 + i] = tail;
		o[2 + i + tl] = '\0';
		w->len += i + 2 + tl;
		return;
	}
	/* o[0] is still the NUL: the bytes copied after it are not part of
	 * the output */
	put_quoted(w, s, i + strlen(s + i), tail ? ":" : "", tl);
}

void
jsonw_key(struct jsonw *w, const char *k)
{
	if (w->err)
		return;
	if (!in_object(w) || w->after_key) {
		fail(w, BR_ESTATE);
		return;
	}
	if (w->has_items[w->depth] & JSONW_HAS_ITEMS)
		put_char(w, ',');
	w->has_items[w->depth] |= JSONW_HAS_ITEMS;
	put_quoted_cstr(w, k, ':');
	w->after_key = true;
}

void
jsonw_key_raw(struct jsonw *w, const char *escaped, size_t n)
{
	if (w->err)
		return;
	if (!in_object(w) || w->after_key) {
		fail(w, BR_ESTATE);
		return;
	}
	if (w->has_items[w->depth] & JSONW_HAS_ITEMS)
		put_char(w, ',');
	w->has_items[w->depth] |= JSONW_HAS_ITEMS;
	put_char(w, '"');
	put(w, escaped, n);
	put(w, "\":", 2);
	w->after_key = true;
}

void
jsonw_str(struct jsonw *w, const char *s)
{
	if (begin_value(w))
		put_quoted_cstr(w, s, 0);
}

void
jsonw_strn(struct jsonw *w, const char *s, size_t n)
{
	if (begin_value(w))
		put_quoted(w, s, n, "", 0);
}

void
jsonw_strn_max(struct jsonw *w, const char *s, size_t n, size_t max_bytes,
    bool *truncated)
{
	size_t keep = utf8_cut(s, n, max_bytes);
	if (keep < n && truncated)
		*truncated = true;
	jsonw_strn(w, s, keep);
}

void
jsonw_str_raw(struct jsonw *w, const char *escaped, size_t n)
{
	if (!begin_value(w))
		return;
	put_char(w, '"');
	put(w, escaped, n);
	put_char(w, '"');
}

/* Decimal digits of v, right-aligned ending at end; returns the start.
 * (snprintf was a measurable share of the per-event cost.) */
static char *
format_u64(char *end, uint64_t v)
{
	/* two digits per division: timestamps have 13 */
	static const char pairs[201]
	    = "0001020304050607080910111213141516171819"
	      "2021222324252627282930313233343536373839"
	      "4041424344454647484950515253545556575859"
	      "6061626364656667686970717273747576777879"
	      "8081828384858687888990919293949596979899";
	char *p = end;
	while (v >= 100) {
		unsigned r = (unsigned) (v % 100);
		v /= 100;
		p -= 2;
		p[0] = pairs[2 * r];
		p[1] = pairs[2 * r + 1];
	}
	if (v >= 10) {
		p -= 2;
		p[0] = pairs[2 * v];
		p[1] = pairs[2 * v + 1];
	} else {
		*--p = (char) ('0' + v);
	}
	return p;
}

void
jsonw_int(struct jsonw *w, int64_t v)
{
	char tmp[24];
	char *end = tmp + sizeof(tmp);
	/* the magnitude as unsigned, which also covers INT64_MIN */
	uint64_t mag = v < 0 ? 0 - (uint64_t) v : (uint64_t) v;
	char *p = format_u64(end, mag);
	if (v < 0)
		*--p = '-';
	if (begin_value(w))
		put(w, p, (size_t) (end - p));
}

void
jsonw_uint(struct jsonw *w, uint64_t v)
{
	char tmp[24];
	char *end = tmp + sizeof(tmp);
	char *p = format_u64(end, v);
	if (begin_value(w))
		put(w, p, (size_t) (end - p));
}

void
jsonw_double(struct jsonw *w, double v)
{
	if (!isfinite(v)) {
		jsonw_null(w);
		return;
	}
	/* A whole number below 1e15 is what %.15g prints as digits only
	 * (progress values and maxima mostly are): no snprintf needed. */
	if (v == trunc(v) && fabs(v) < 1e15 && !(v == 0 && signbit(v))) {
		jsonw_int(w, (int64_t) v);
		return;
	}
	/* 15 significant digits always survive decimal -> double -> decimal,
	 * so the first precision that reads back as v is the shortest. */
	char tmp[32];
	int n = 0;
	for (int prec = 15; prec <= 17; prec++) {
		n = snprintf(tmp, sizeof(tmp), "%.*g", prec, v);
		if (strtod(tmp, NULL) == v)
			break;
	}
	if (begin_value(w))
		put(w, tmp, (size_t) n);
}

/* printf("%.*f", decimals, v) for the common case, or -1. printf rounds
 * the exact binary value; |v| * 10^decimals computed in double is within
 * 2^-14 of the exact product when it is below 2^40, so wherever the
 * fraction is not within 1e-3 of a half the nearest integer is the same
 * and so is the text. Near halves (and for large values) printf decides. */
static int
fixed_fast(char *out, double v, int decimals)
{
	static const double scale[] = { 1, 10, 100, 1e3, 1e4, 1e5, 1e6 };
	if (decimals > 6)
		return -1;
	double x = fabs(v) * scale[decimals];
	if (!(x < 1099511627776.0)) /* 2^40 */
		return -1;
	double frac = x - floor(x);
	if (fabs(frac - 0.5) < 1e-3)
		return -1;
	uint64_t q = (uint64_t) floor(x + 0.5);
	char digits[24];
	char *end = digits + sizeof(digits);
	char *p = format_u64(end, q);
	/* at least decimals + 1 digits: 0.05 -> "005" for "0.05" */
	while (end - p < decimals + 1)
		*--p = '0';
	size_t n = 0, int_len = (size_t) (end - p) - (size_t) decimals;
	if (signbit(v))
		out[n++] = '-';
	memcpy(out + n, p, int_len);
	n += int_len;
	if (decimals > 0) {
		out[n++] = '.';
		memcpy(out + n, p + int_len, (size_t) decimals);
		n += (size_t) decimals;
	}
	out[n] = '\0';
	return (int) n;
}

void
jsonw_fixed(struct jsonw *w, double v, int decimals)
{
	if (!isfinite(v)) {
		jsonw_null(w);
		return;
	}
	if (decimals < 0)
		decimals = 0;
	if (decimals > 17)
		decimals = 17;
	/* DBL_MAX has 309 integer digits. */
	char tmp[352];
	int n = fixed_fast(tmp, v, decimals);
	if (n < 0)
		n = snprintf(tmp, sizeof(tmp), "%.*f", decimals, v);
	if (begin_value(w))
		put(w, tmp, (size_t) n);
}

void
jsonw_bool(struct jsonw *w, bool v)
{
	if (begin_value(w))
		put(w, v ? "true" : "false", v ? 4 : 5);
}

void
jsonw_null(struct jsonw *w)
{
	if (begin_value(w))
		put(w, "null", 4);
}

void
jsonw_raw(struct jsonw *w, const char *json, size_t n)
{
	if (begin_value(w))
		put(w, json, n);
}

char *
jsonw_raw_reserve(struct jsonw *w, size_t *room)
{
	jsonw_raw(w, "", 0);
	*room = jsonw_room(w);
	return w->err ? NULL : w->buf + w->len;
}

void
jsonw_raw_commit(struct jsonw *w, size_t n)
{
	if (w->err || w->cap == 0 || n > w->cap - 1 - w->len) {
		fail(w, BR_ETRUNC);
		return;
	}
	w->len += n;
	w->buf[w->len] = '\0';
}

void
jsonw_kstr(struct jsonw *w, const char *k, const char *s)
{
	jsonw_key(w, k);
	jsonw_str(w, s);
}

void
jsonw_kstrn(struct jsonw *w, const char *k, const char *s, size_t n)
{
	jsonw_key(w, k);
	jsonw_strn(w, s, n);
}

void
jsonw_kint(struct jsonw *w, const char *k, int64_t v)
{
	jsonw_key(w, k);
	jsonw_int(w, v);
}

void
jsonw_kbool(struct jsonw *w, const char *k, bool v)
{
	jsonw_key(w, k);
	jsonw_bool(w, v);
}

void
jsonw_knull(struct jsonw *w, const char *k)
{
	jsonw_key(w, k);
	jsonw_null(w);
}

void
jsonw_kraw(struct jsonw *w, const char *k, const char *json, size_t n)
{
	jsonw_key(w, k);
	jsonw_raw(w, json, n);
}

size_t
jsonw_room(const struct jsonw *w)
{
	if (w->err || w->cap == 0)
		return 0;
	return w->cap - 1 - w->len;
}

struct jsonw_mark
jsonw_mark(const struct jsonw *w)
{
	struct jsonw_mark m
	    = { w->len, w->depth, w->after_key, w->has_items[w->depth] };
	return m;
}

void
jsonw_rewind(struct jsonw *w, const struct jsonw_mark *m)
{
	if (m->len > w->len || m->depth < 0 || m->depth >= JSONW_MAX_DEPTH)
		return;
	w->len = m->len;
	if (w->cap > 0)
		w->buf[w->len] = '\0';
	w->depth = m->depth;
	w->after_key = m->after_key;
	w->has_items[w->depth] = m->has_items;
}

int
jsonw_finish(const struct jsonw *w)
{
	if (w->err)
		return w->err;
	if (w->depth != 0 || w->after_key)
		return BR_ESTATE;
	return 0;
}
