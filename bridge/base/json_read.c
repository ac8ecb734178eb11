/* The accessors that read a document json_parse has validated: navigation
 * by token index, type tests, raw bytes, and typed values (unescaped
 * strings, integers, doubles, booleans). They trust the validation, so
 * they walk the tokens and bytes without checking the grammar again. */
#include "json.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "json_internal.h"
#include "utf8.h"

int
json_skip(const struct json_doc *d, int i)
{
	const jsmntok_t *t = json_tok_at(d, i);
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
	const jsmntok_t *t = json_tok_at(d, parent);
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
	const jsmntok_t *t = json_tok_at(d, i);
	return t && t->type == JSMN_PRIMITIVE && d->buf[t->start] == 'n';
}

bool
json_is_string(const struct json_doc *d, int i)
{
	const jsmntok_t *t = json_tok_at(d, i);
	return t && t->type == JSMN_STRING;
}

bool
json_is_object(const struct json_doc *d, int i)
{
	const jsmntok_t *t = json_tok_at(d, i);
	return t && t->type == JSMN_OBJECT;
}

bool
json_is_array(const struct json_doc *d, int i)
{
	const jsmntok_t *t = json_tok_at(d, i);
	return t && t->type == JSMN_ARRAY;
}

bool
json_is_nonfinite(const struct json_doc *d, int i)
{
	const jsmntok_t *t = json_tok_at(d, i);
	if (!t || t->type != JSMN_PRIMITIVE)
		return false;
	return json_nonfinite_text(d->buf + t->start);
}

bool
json_is_number(const struct json_doc *d, int i)
{
	const jsmntok_t *t = json_tok_at(d, i);
	if (!t || t->type != JSMN_PRIMITIVE)
		return false;
	char c = d->buf[t->start];
	return json_digit(c) || (c == '-' && json_digit(d->buf[t->start + 1]));
}

int
json_size(const struct json_doc *d, int i)
{
	const jsmntok_t *t = json_tok_at(d, i);
	if (!t || (t->type != JSMN_OBJECT && t->type != JSMN_ARRAY))
		return 0;
	return t->size;
}

const char *
json_raw(const struct json_doc *d, int i, size_t *len)
{
	const jsmntok_t *t = json_tok_at(d, i);
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
	const jsmntok_t *t = json_tok_at(d, i);
	if (!t) {
		*len = 0;
		return NULL;
	}
	*len = (size_t) (json_outer_end(t) - json_outer_start(t));
	return d->buf + json_outer_start(t);
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
	size_t k = json_escape_len(s + *i, n - *i, &cp);
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
	const jsmntok_t *t = json_tok_at(d, i);
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
	const jsmntok_t *t = json_tok_at(d, obj);
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
	const jsmntok_t *t = json_tok_at(d, i);
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
	while (i < n && json_digit(p[i]))
		i++;
	np->int_len = (size_t) (p + i - np->int_digits);
	np->frac_digits = p + i;
	np->frac_len = 0;
	if (i < n && p[i] == '.') {
		np->frac_digits = p + ++i;
		while (i < n && json_digit(p[i]))
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
	const jsmntok_t *t = json_tok_at(d, i);
	if (!t || t->type != JSMN_PRIMITIVE)
		return BR_ETYPE;
	char c = d->buf[t->start];
	if (c != 't' && c != 'f')
		return BR_ETYPE;
	*out = c == 't';
	return 0;
}
