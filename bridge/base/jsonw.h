/* Bounded JSON writer: writes into a caller buffer, never overflows, inserts
 * commas itself, escapes strings, and reports truncation instead of writing
 * past the end. No allocation. */
#ifndef C2M_JSONW_H
#define C2M_JSONW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JSONW_MAX_DEPTH 80

struct jsonw {
	char *buf; /* borrowed; always NUL-terminated after any call */
	size_t cap; /* bytes available including the NUL */
	size_t len; /* bytes written so far (excluding NUL) */
	int err; /* sticky: 0 or BR_ETRUNC (or BR_EDEPTH) */
	int depth; /* current nesting */
	bool after_key; /* a key was written, the value comes next */
	/* per depth: JSONW_HAS_ITEMS when the container (or, at depth 0, the
	 * document) has members; JSONW_IS_OBJECT for objects */
	uint8_t has_items[JSONW_MAX_DEPTH];
};

#define JSONW_HAS_ITEMS 1u
#define JSONW_IS_OBJECT 2u

/* A writer position to go back to (see jsonw_rewind). */
struct jsonw_mark {
	size_t len;
	int depth;
	bool after_key;
	uint8_t has_items;
};

/* Starts writing into buf (borrowed, cap bytes incl. NUL); buf[0] = 0. */
void jsonw_init(struct jsonw *w, char *buf, size_t cap);
/* Resets to an empty document in the same buffer. */
void jsonw_reset(struct jsonw *w);

void jsonw_obj_begin(struct jsonw *w);
void jsonw_obj_end(struct jsonw *w);
void jsonw_arr_begin(struct jsonw *w);
void jsonw_arr_end(struct jsonw *w);

/* Object key; k is NUL-terminated UTF-8, escaped as needed. */
void jsonw_key(struct jsonw *w, const char *k);

/* String value from UTF-8 bytes (copied, escaped). Invalid UTF-8 sequences
 * are replaced by U+FFFD, so the output is always valid. */
void jsonw_str(struct jsonw *w, const char *s);
void jsonw_strn(struct jsonw *w, const char *s, size_t n);
/* Like jsonw_strn but writes at most max_bytes of s (cut on a UTF-8
 * boundary); sets *truncated when it cut. */
void jsonw_strn_max(struct jsonw *w, const char *s, size_t n, size_t max_bytes,
    bool *truncated);

void jsonw_int(struct jsonw *w, int64_t v);
void jsonw_uint(struct jsonw *w, uint64_t v);
/* Shortest round-trip form ("%.17g" trimmed); NaN/Inf written as null. */
void jsonw_double(struct jsonw *w, double v);
/* Fixed decimals ("%.*f"), e.g. percent 25.0; NaN/Inf written as null. */
void jsonw_fixed(struct jsonw *w, double v, int decimals);
void jsonw_bool(struct jsonw *w, bool v);
void jsonw_null(struct jsonw *w);
/* Raw, already valid JSON value (borrowed bytes copied as is). */
void jsonw_raw(struct jsonw *w, const char *json, size_t n);
/* String value whose n bytes are already escaped JSON string content
 * (without quotes), copied as is between quotes. */
void jsonw_str_raw(struct jsonw *w, const char *escaped, size_t n);
/* Object key whose n bytes are already escaped (without quotes). */
void jsonw_key_raw(struct jsonw *w, const char *escaped, size_t n);

/* key + value shorthands */
void jsonw_kstr(struct jsonw *w, const char *k, const char *s);
void jsonw_kstrn(struct jsonw *w, const char *k, const char *s, size_t n);
void jsonw_kint(struct jsonw *w, const char *k, int64_t v);
void jsonw_kbool(struct jsonw *w, const char *k, bool v);
void jsonw_knull(struct jsonw *w, const char *k);
void jsonw_kraw(struct jsonw *w, const char *k, const char *json, size_t n);

/* Starts a raw value to be written straight into the buffer (the
 * separator and bookkeeping done as for jsonw_raw): returns where its bytes
 * go (borrowed, valid until the next call on w) and sets *room to how many
 * fit, or returns NULL on a sticky error. Finish with jsonw_raw_commit. */
char *jsonw_raw_reserve(struct jsonw *w, size_t *room);
/* Adds the n bytes written at jsonw_raw_reserve's pointer (n <= room). */
void jsonw_raw_commit(struct jsonw *w, size_t n);

/* Remaining room (bytes) before truncation. */
size_t jsonw_room(const struct jsonw *w);
/* Bytes (0 or 1: a comma) the writer puts before the next value or key. */
size_t jsonw_sep_len(const struct jsonw *w);
/* Current position, to drop what is written after it with jsonw_rewind. */
struct jsonw_mark jsonw_mark(const struct jsonw *w);
/* Goes back to m (taken at the same or a shallower nesting, on the same
 * document): later bytes are dropped. A sticky error stays set. */
void jsonw_rewind(struct jsonw *w, const struct jsonw_mark *m);
/* 0 when everything fit and all containers are closed, else BR_ETRUNC,
 * BR_EDEPTH or BR_ESTATE. */
int jsonw_finish(const struct jsonw *w);

#endif
