/* Private to json_parse.c, json_read.c and json_emit.c: the facts about a
 * validated document the three share (token spans, primitives, escapes).
 * Nothing outside those files includes it. */
#ifndef C2M_JSON_INTERNAL_H
#define C2M_JSON_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "json.h"

#define JSON_REPLACEMENT_CHAR 0xFFFDu

static inline bool
json_digit(char c)
{
	return c >= '0' && c <= '9';
}

static inline bool
json_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* A jsmn primitive's bytes: a number (RFC 8259), true, false, null, NaN,
 * Infinity or -Infinity? (json_parse.c) */
bool json_primitive_ok(const char *p, size_t n);

/* The error a walk over jsmn's tokens of buf (the value spanning
 * [first, last) without whitespace around it) meets first; bad_start: where
 * the content of the first string that is not valid starts (-1: none),
 * bad_reason: what is wrong with it (json_check.c). */
int json_check_tokens(const char *buf, int first, int last,
    const jsmntok_t *tok, int ntok, long bad_start, int bad_reason);

/* First bytes of a validated primitive: NaN, Infinity or -Infinity? */
static inline bool
json_nonfinite_text(const char *p)
{
	return p[0] == 'N' || p[0] == 'I' || (p[0] == '-' && p[1] == 'I');
}

/* Outer span of token t: strings include their quotes. */
static inline int
json_outer_start(const jsmntok_t *t)
{
	return t->type == JSMN_STRING ? t->start - 1 : t->start;
}

static inline int
json_outer_end(const jsmntok_t *t)
{
	return t->type == JSMN_STRING ? t->end + 1 : t->end;
}

/* Token i of d, or NULL when there is none. */
static inline const jsmntok_t *
json_tok_at(const struct json_doc *d, int i)
{
	if (!d || i < 0 || i >= d->ntok)
		return NULL;
	return &d->tok[i];
}

/* Length of the escape at s[0..n) (s[0] == '\\'): 2, 6, or 12 for a
 * surrogate pair; the code point in *cp. 0 when the escape is malformed.
 * A surrogate that is not the high half of a high+low pair is valid JSON
 * (Python's surrogateescape file names, JS strings cut inside an emoji) but
 * no character: it is one 6-byte escape for U+FFFD, so nothing decoded
 * from it, nor re-emitted (json_emit rewrites it), holds a surrogate.
 * Defined in json_parse.c. */
size_t json_escape_len(const char *s, size_t n, uint32_t *cp);

/* true when the escape at s (k bytes long, code point cp, as
 * json_escape_len gave them) is an unpaired surrogate: U+FFFD spelled
 * \uDxxx, which only a surrogate is. */
static inline bool
json_lone_surrogate(const char *s, size_t k, uint32_t cp)
{
	return k == 6 && cp == JSON_REPLACEMENT_CHAR
	    && (s[2] == 'd' || s[2] == 'D');
}

#endif
