/* Retained states waiting for their TTL, the one due first on top: a
 * min-heap of 24-byte records in one array, which grows by doubling up to
 * its bound. Each record holds the due time and the topic level between
 * <prefix>/<instance>/prompt/ and /state, in the record itself when it is
 * up to 16 bytes, or a lowercase UUID (ComfyUI's own prompt ids: packed
 * to its 16 bytes); only another, longer level is copied apart. Pure. */
#ifndef C2M_EXPIRY_H
#define C2M_EXPIRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Due times are kept in 48 bits: later ones (after the year 10889) are
 * kept as this one. */
#define EXPIRY_DUE_MAX ((int64_t) 0xffffffffffff)

struct expiry {
	uint32_t due_lo;
	uint16_t due_hi;
	uint8_t kind; /* enum expiry_kind (expiry.c) */
	uint8_t len; /* of an inline level */
	union {
		unsigned char b[16]; /* inline level, or the UUID's bytes */
		char *s; /* a longer level, NUL-terminated */
	} level;
};

struct expiry_heap {
	struct expiry *h;
	size_t n, cap, max;
};

/* An empty heap for up to max records (at least 1). */
void expiry_init(struct expiry_heap *x, size_t max);
bool expiry_full(const struct expiry_heap *x);
/* Adds level (len bytes, no NUL in it) due at due; 0, BR_EFULL when the
 * heap holds max records, or BR_ENOMEM. */
int expiry_push(
    struct expiry_heap *x, const char *level, size_t len, int64_t due);
/* The time the top record is due; false when the heap is empty. */
bool expiry_next(const struct expiry_heap *x, int64_t *due);
/* Removes the top record and writes its level, NUL-terminated, to out
 * (size bytes; cut if it does not fit); returns the level's length, or
 * -1 when the heap is empty. */
int expiry_pop(struct expiry_heap *x, char *out, size_t size);
/* Bytes the heap holds allocated now (the array and the levels copied
 * apart). */
size_t expiry_bytes(const struct expiry_heap *x);
void expiry_free(struct expiry_heap *x);

#endif
