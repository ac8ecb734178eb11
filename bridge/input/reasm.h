/* WebSocket message reassembly: chunks (as libwebsockets delivers them) in,
 * whole messages out. Bounded: a message over max_msg bytes is dropped and
 * reported once. The buffer grows as needed and is kept for reuse, so
 * messages up to the largest seen cost no allocation. */
#ifndef C2M_REASM_H
#define C2M_REASM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum reasm_result {
	REASM_MORE = 0, /* need more chunks */
	REASM_DONE = 1, /* a whole message is ready: reasm_msg() */
	REASM_OVERSIZE = -1, /* this message exceeds max_msg; it is dropped
	                        (reported once, its remaining chunks are
	                        swallowed and return REASM_MORE) */
	REASM_PROTO = -2, /* continuation without a start: chunk dropped */
	REASM_NOMEM = -3, /* could not grow the buffer: message dropped */
};

struct reasm;

/* Creates a reassembler with an initial buffer of initial_cap bytes and a
 * message cap of max_msg bytes. */
struct reasm *reasm_create(size_t initial_cap, size_t max_msg);
void reasm_destroy(struct reasm *r);

/* Feeds one chunk (borrowed, copied). first: first chunk of a message;
 * final: last chunk of the message; binary: the message is binary (only
 * looked at on the first chunk). */
int reasm_feed(struct reasm *r, const void *chunk, size_t len, bool first,
    bool final, bool binary);

/* The completed message after REASM_DONE (borrowed, valid until the next
 * feed or reset). The buffer has one extra NUL byte after len. */
const uint8_t *reasm_msg(const struct reasm *r, size_t *len, bool *binary);

/* Forgets any partial message (connection dropped). If the buffer grew
 * beyond 4 x initial_cap it is shrunk back, keeping RSS flat. */
void reasm_reset(struct reasm *r);

#endif
