/* json_emit: copies a value of a validated document into a jsonw as
 * compact JSON, within a byte budget. A fast path copies a whole subtree
 * with the whitespace dropped; the token-wise path writes member by member
 * and cuts what does not fit. Both rewrite unpaired surrogate escapes as
 * \ufffd and NaN/Infinity as null. */
#include "json.h"

#include <stdint.h>
#include <string.h>

#include "err.h"
#include "json_internal.h"

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
		size_t k = json_escape_len(p, (size_t) (end - p), &cp);
		if (k == 0)
			return; /* cannot happen: the writer never cuts one */
		if (json_lone_surrogate(p, k, cp))
			memcpy(p + 2, "fffd", 4);
		p += k;
	}
}

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
			k = json_escape_len(s + at, n - at, &cp);
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

/* A string token: copied when it fits; otherwise, unless whole, cut at a
 * character boundary. */
static bool
emit_string(struct emitter *e, const jsmntok_t *t, size_t limit, bool whole)
{
	const char *raw = e->d->buf + t->start;
	size_t n = (size_t) (t->end - t->start);
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

/* A primitive token: copied when it fits, NaN/Infinity as null;
 * otherwise, unless whole, null. */
static bool
emit_primitive(struct emitter *e, const jsmntok_t *t, size_t limit, bool whole)
{
	const char *raw = e->d->buf + t->start;
	bool nonfinite = json_nonfinite_text(raw);
	const char *text = nonfinite ? "null" : raw;
	size_t len = nonfinite ? 4 : (size_t) (t->end - t->start);
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

static bool emit_value(
    struct emitter *e, int i, size_t limit, bool whole, int *next);

/* One member of a container, whole or not at all: the element at *j, or
 * for an object the key at *j and its value. Moves *j past it. */
static bool
emit_member(struct emitter *e, bool is_obj, int *j, size_t limit)
{
	if (is_obj) {
		const jsmntok_t *key = &e->d->tok[*j];
		size_t klen = (size_t) (key->end - key->start);
		if (!fits(e, limit, klen + 3))
			return false;
		size_t from = e->w->len;
		jsonw_key_raw(e->w, e->d->buf + key->start, klen);
		fix_written(e, from);
		(*j)++;
	}
	return emit_value(e, *j, limit, true, j);
}

/* An object or array at i: its members in order; unless whole, it ends
 * after the last member that fits. */
static bool
emit_container(struct emitter *e, int i, size_t limit, bool whole, int *next)
{
	const jsmntok_t *t = &e->d->tok[i];
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
		if (!emit_member(e, is_obj, &j, inner)) {
			if (whole)
				return false;
			jsonw_rewind(e->w, &m);
			mark_truncated(e);
			*next = json_skip(e->d, i);
			break;
		}
		*next = j;
	}
	if (is_obj)
		jsonw_obj_end(e->w);
	else
		jsonw_arr_end(e->w);
	return true;
}

/* Emits token i within limit (an absolute w->len). whole: the value must
 * fit entirely or not at all (returns false, caller rewinds); otherwise it
 * is cut to fit as well as it can. Sets *next to the token after i's
 * subtree. Depth is bounded by JSON_MAX_DEPTH through validation. */
static bool
emit_value(struct emitter *e, int i, size_t limit, bool whole, int *next)
{
	const jsmntok_t *t = &e->d->tok[i];
	*next = i + 1;
	if (t->type == JSMN_STRING)
		return emit_string(e, t, limit, whole);
	if (t->type == JSMN_PRIMITIVE)
		return emit_primitive(e, t, limit, whole);
	return emit_container(e, i, limit, whole, next);
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
		    && json_nonfinite_text(d->buf + d->tok[j].start))
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
	if (!json_tok_at(d, i))
		return BR_EINVAL;
	if (emit_compact(d, i, w, budget))
		return 0;
	return emit_tokenwise(d, i, w, budget, truncated);
}

int
json_emit_tokenwise_for_tests(const struct json_doc *d, int i, struct jsonw *w,
    size_t budget, bool *truncated)
{
	if (!json_tok_at(d, i))
		return BR_EINVAL;
	return emit_tokenwise(d, i, w, budget, truncated);
}
