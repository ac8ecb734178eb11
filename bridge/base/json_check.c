/* json_check: names the error of a document json_parse's walk refused
 * after jsmn tokenized it, as a walk over jsmn's tokens finds it first.
 *
 * jsmn's tokens are sorted by start offset, so walking them while keeping
 * a stack of open containers re-derives the document's grammar: every
 * byte of the input is either inside a token (checked as a string or a
 * primitive), an opening or closing bracket, or in a gap between two of
 * those, which must be whitespace plus exactly the separator the grammar
 * wants there; the token tree is checked against jsmn's parent links and
 * sizes. Which error that meets first (a key jsmn gave no single value, a
 * bad string, a separator) is the one json_parse reports, the same for
 * every input whatever the walk before jsmn saw first. */
#include <limits.h>

#include "err.h"
#include "json.h"
#include "json_internal.h"

/* true when buf[from..to) is whitespace around exactly one `sep`, or only
 * whitespace when sep is 0. */
static bool
gap_ok(const char *buf, int from, int to, char sep)
{
	int i = from;
	while (i < to && json_ws(buf[i]))
		i++;
	if (sep) {
		if (i >= to || buf[i] != sep)
			return false;
		i++;
		while (i < to && json_ws(buf[i]))
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
	long bad_start; /* the first bad string's content, or -1 */
	int bad_reason;
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
		/* content checked by the scan */
		if (t->start == v->bad_start)
			return v->bad_reason;
		v->pos = json_outer_end(t);
		return BR_OK;
	case JSMN_PRIMITIVE:
		if (!json_primitive_ok(
		        v->buf + t->start, (size_t) (t->end - t->start)))
			return BR_ESYNTAX;
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

int
json_check_tokens(const char *buf, int first, int last, const jsmntok_t *tok,
    int ntok, long bad_start, int bad_reason)
{
	/* fields one by one: the stack needs no clearing */
	struct validator v;
	v.buf = buf;
	v.tok = tok;
	v.ntok = ntok;
	v.bad_start = bad_start;
	v.bad_reason = bad_reason;
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
	return v.pos == last ? BR_OK : BR_ESYNTAX;
}
