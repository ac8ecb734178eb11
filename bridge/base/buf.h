/* The one growable byte buffer: always NUL-terminated after its len bytes,
 * at least doubling (from 128 bytes) when it grows, kept for reuse (buf_reset
 * keeps the memory). A zeroed struct is an empty buffer. */
#ifndef C2M_BUF_H
#define C2M_BUF_H

#include <stddef.h>

struct buf {
	char *p; /* NULL until the first append */
	size_t len, cap;
};

/* Makes room for n more bytes (plus the NUL); returns 0 or BR_ENOMEM. */
int buf_reserve(struct buf *b, size_t n);
/* The same, for a buffer that never holds more than max bytes: BR_EFULL
 * when len + n would pass max, and the memory never grows past max + 1. */
int buf_reserve_max(struct buf *b, size_t n, size_t max);
/* Copies n bytes to the end; returns 0 or BR_ENOMEM (b unchanged). */
int buf_append(struct buf *b, const void *s, size_t n);
/* Appends a NUL-terminated string; returns 0 or BR_ENOMEM. */
int buf_puts(struct buf *b, const char *s);
/* Replaces the content; returns 0 or BR_ENOMEM. */
int buf_set(struct buf *b, const void *s, size_t n);
/* Empties b and keeps its memory. */
void buf_reset(struct buf *b);
/* Gives back the room past the contents (a buffer kept long after its
 * last change); on failure it stays as it was. */
void buf_fit(struct buf *b);
/* Frees the memory when b holds more than max bytes (a buffer reused per
 * message that grew for a big one); b is then an empty buffer. */
void buf_trim(struct buf *b, size_t max);
/* Frees the memory; b is an empty buffer again. */
void buf_free(struct buf *b);

#endif
