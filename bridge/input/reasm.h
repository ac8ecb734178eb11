/* WebSocket message reassembly: chunks (as libwebsockets delivers them) in,
 * whole messages out. Bounded: a message over max_msg bytes is dropped and
 * reported once. The buffer grows as needed and is kept for reuse, so
 * messages up to the largest seen cost no allocation. */
#ifndef C2M_REASM_H
#define C2M_REASM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* What reasm_feed returns when nothing went wrong; failures are enum
 * br_err values (negative). */
enum { REASM_MORE = 0, REASM_DONE = 1 };

struct reasm;

/* Creates a reassembler with an initial buffer of initial_cap bytes and a
 * message cap of max_msg bytes. */
struct reasm *reasm_create(size_t initial_cap, size_t max_msg);
void reasm_destroy(struct reasm *r);

/* Feeds one chunk (borrowed, copied). first: first chunk of a message;
 * final: last chunk of the message; binary: the message is binary (only
 * looked at on the first chunk). */
/* Returns REASM_MORE (need more chunks), REASM_DONE (a whole message is
 * ready: reasm_msg()), BR_EFULL (this message exceeds max_msg: it is dropped,
 * reported once, and its remaining chunks are swallowed as REASM_MORE),
 * BR_ESTATE (a continuation without a start: the chunk is dropped) or
 * BR_ENOMEM (the buffer could not grow: the message is dropped). */
int reasm_feed(struct reasm *r, const void *chunk, size_t len, bool first,
    bool final, bool binary);

/* A message that arrives whole in one chunk (first && final) of len bytes:
 * the caller uses its own bytes, uncopied. Any partial message is
 * abandoned, as a first chunk does in reasm_feed. Returns REASM_DONE, or
 * BR_EFULL when len exceeds max_msg (dropped, reported once). */
int reasm_whole(struct reasm *r, size_t len);

/* The completed message after REASM_DONE (borrowed, valid until the next
 * feed or reset). The buffer has one extra NUL byte after len. */
const uint8_t *reasm_msg(const struct reasm *r, size_t *len, bool *binary);

/* Forgets any partial message (connection dropped). If the buffer grew
 * beyond 4 x initial_cap it is shrunk back, keeping RSS flat. */
void reasm_reset(struct reasm *r);

#endif
