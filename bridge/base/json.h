/* jsmn wrapper. json_parse.c is the one translation unit that holds jsmn's
 * implementation; every other file sees only declarations (JSMN_HEADER).
 *
 * json_parse() tokenizes within the parser's token budget (a fixed parser
 * never allocates per call; a growing one allocates only for documents
 * bigger than its initial array) and then validates what jsmn does not:
 * RFC 8259 grammar of every primitive and of the separators between tokens,
 * escapes and UTF-8 inside strings (no raw control characters), nesting
 * depth, a single top-level value that spans the whole input. Python's bare
 * NaN, Infinity and -Infinity are accepted as primitives; json_emit() writes
 * them as null.
 *
 * Unpaired surrogate escapes (\uD800-\uDFFF that are not a high half
 * followed by a low half: a low one alone, a high one before anything else
 * or at the end, \ud800\ud800) are valid RFC 8259 grammar and accepted:
 * Python's json.dumps writes them for surrogateescape'd file names, and
 * JSON.stringify for a string cut inside an emoji. They are no character,
 * so each unpaired half reads as U+FFFD wherever a string is decoded
 * (json_str_get, json_str_eq, key lookup in json_obj_get) and is re-emitted
 * as the escape \ufffd by json_emit: nothing the bridge writes from a
 * document holds a lone surrogate. A proper pair decodes to its code point
 * and is re-emitted as it is. json_raw and json_raw_value alone give the
 * bytes untouched. */
#ifndef C2M_JSON_H
#define C2M_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifndef JSMN_HEADER
#define JSMN_HEADER
#endif
#include <jsmn.h>

#include "err.h"
#include "jsonw.h"

#define JSON_MAX_DEPTH 64

/* A parsed document: tokens borrowed from the parser, bytes borrowed from
 * the caller. Valid until the next json_parse() or json_parser_trim() on
 * the same parser (either may move the token array). */
struct json_doc {
	const char *buf;
	size_t len;
	const jsmntok_t *tok;
	int ntok;
	/* Tokens [0, finite_prefix) hold no NaN/Infinity/-Infinity, so
	 * json_emit may copy their bytes as they are. json_parse sets it (ntok
	 * when there is none); 0, as in a zero-initialised doc, promises
	 * nothing. */
	int finite_prefix;
	/* true: no string holds an unpaired surrogate escape, so json_emit
	 * need not look for one to rewrite. json_parse sets it; false, as in
	 * a zero-initialised doc, promises nothing. */
	bool no_lone_surrogates;
};

struct json_parser;

/* Creates a parser owning a fixed token array of max_tokens entries
 * (1..INT_MAX/2): json_parse never allocates, which the WebSocket path
 * relies on; a document needing more tokens is BR_ETOKENS. */
struct json_parser *json_parser_create(unsigned max_tokens);
/* Creates a parser whose token array starts with initial_tokens entries
 * (1..max_tokens) and that json_parse grows, doubling, up to max_tokens
 * (at most INT_MAX/2) for documents that need more: big HTTP bodies such
 * as a long /queue. A document needing more than max_tokens, or memory
 * that cannot be had, is BR_ETOKENS. */
struct json_parser *json_parser_create_growing(
    unsigned initial_tokens, unsigned max_tokens);
/* Shrinks a grown token array back to its initial_tokens entries, so the
 * memory a big document took is given back (no-op for a fixed parser or
 * one that has not grown). Invalidates every doc parsed with p. */
void json_parser_trim(struct json_parser *p);
/* json_parser_trim when the token array takes more than max_bytes: a
 * parser reused per message keeps a usual document's array and gives back
 * a big one's. */
void json_parser_trim_over(struct json_parser *p, size_t max_bytes);
/* Entries in p's token array now (tests, metrics). */
unsigned json_parser_capacity(const struct json_parser *p);
void json_parser_destroy(struct json_parser *p);

/* Tokenizes and validates buf[0..len) (borrowed). Returns BR_OK,
 * BR_EEMPTY (empty or whitespace only), BR_ESYNTAX (not JSON: jsmn error,
 * bad primitive, separators, trailing garbage, embedded NUL, ...),
 * BR_EUTF8 (invalid UTF-8 or a raw control character), BR_EDEPTH (nesting
 * deeper than JSON_MAX_DEPTH), BR_ETOKENS (more tokens than the parser's
 * budget) or BR_ETYPE (the top-level value is not an object, with
 * require_object). require_object: the top-level value must be an object.
 * A growing parser may move its token array: docs from earlier calls are
 * invalid afterwards, as they are after any json_parse. */
int json_parse(struct json_parser *p, const char *buf, size_t len,
    bool require_object, struct json_doc *out);

/* --- navigation (indexes into doc->tok; -1 means absent) --- */

/* Index of the first token after the subtree rooted at i. */
int json_skip(const struct json_doc *d, int i);
/* Value token of key in object obj (keys compared after unescaping), or -1.
 * Returns -1 when obj is not an object. */
int json_obj_get(const struct json_doc *d, int obj, const char *key);
/* Index of the n-th element (0-based) of array/object-value iteration:
 * for arrays the element, for objects the key (its value is key+1). */
int json_child(const struct json_doc *d, int parent, int n);

bool json_is_null(const struct json_doc *d, int i);
bool json_is_string(const struct json_doc *d, int i);
bool json_is_object(const struct json_doc *d, int i);
bool json_is_array(const struct json_doc *d, int i);
/* true for a number primitive (not NaN/Infinity, not true/false/null). */
bool json_is_number(const struct json_doc *d, int i);
/* true for NaN, Infinity, -Infinity */
bool json_is_nonfinite(const struct json_doc *d, int i);
/* number of children (array elements / object keys) */
int json_size(const struct json_doc *d, int i);

/* Raw bytes of token i (strings: without quotes, still escaped). */
const char *json_raw(const struct json_doc *d, int i, size_t *len);
/* Raw bytes of the whole value at i including quotes for strings. */
const char *json_raw_value(const struct json_doc *d, int i, size_t *len);

/* Compares the unescaped string token i with s (an unpaired surrogate
 * compares as U+FFFD). */
bool json_str_eq(const struct json_doc *d, int i, const char *s);
/* Unescapes string token i into dst (cap bytes incl. NUL, copied), each
 * unpaired surrogate as U+FFFD (EF BF BD), so dst is valid UTF-8. Returns
 * the length, BR_ETYPE if not a string, BR_ETRUNC if it did not fit (dst
 * then holds a prefix cut on a UTF-8 boundary), BR_EINVAL if it contains
 * NUL (\u0000). */
int json_str_get(const struct json_doc *d, int i, char *dst, size_t cap);
/* Integer value (an integral number such as 5, -3 or 20.0); BR_ETYPE if
 * not a number, BR_ERANGE if not integral or out of int64 range. */
int json_get_int64(const struct json_doc *d, int i, int64_t *out);
/* Finite number value; BR_ETYPE if not a number (NaN and Infinity
 * included), BR_ERANGE if it overflows a double or is written with more than
 * 127 characters. */
int json_get_double(const struct json_doc *d, int i, double *out);
/* Boolean; BR_ETYPE otherwise. */
int json_get_bool(const struct json_doc *d, int i, bool *out);

/* Writes the value at i to w as compact JSON: canonical separators, strings
 * copied verbatim (already valid) but for unpaired surrogate escapes,
 * written \ufffd (the same length), NaN/Infinity as null.
 * budget == 0: no limit. Otherwise, when the value would exceed budget
 * bytes, it is cut: strings at a UTF-8 boundary (never inside an escape),
 * arrays and objects after the last whole member that fits; *truncated is
 * then set to true (it is never reset). Numbers and booleans that do not
 * fit become null; nothing is cut below "", [], {} or null, which a budget
 * smaller than that is exceeded by. Returns 0 or the writer's error. */
int json_emit(const struct json_doc *d, int i, struct jsonw *w, size_t budget,
    bool *truncated);

/* Tests only: json_emit without its fast path (the compacted copy of a whole
 * subtree), so tests can check both give the same bytes. */
int json_emit_tokenwise_for_tests(const struct json_doc *d, int i,
    struct jsonw *w, size_t budget, bool *truncated);

#endif
