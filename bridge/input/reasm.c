/* WebSocket message reassembly. The state machine mirrors what
 * libwebsockets reports per CLIENT_RECEIVE callback: "first" on the first
 * chunk of a message, "final" only on the last chunk of the whole message
 * (across frames and rx-buffer chunks). */
#include "reasm.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

enum reasm_state {
	REASM_IDLE, /* between messages */
	REASM_COLLECTING, /* appending chunks of the current message */
	REASM_SWALLOWING, /* current message was dropped: eat until final */
};

struct reasm {
	struct buf b; /* the current message, NUL-terminated */
	size_t initial_cap; /* size reasm_reset shrinks back to */
	size_t max_msg;
	enum reasm_state state;
	bool binary; /* latched on the first chunk */
	bool ready; /* buf holds a completed message */
};

struct reasm *
reasm_create(size_t initial_cap, size_t max_msg)
{
	/* Keeps cap + 1 (the NUL) and every doubling below free of
	 * overflow; no WebSocket message comes anywhere near this. */
	if (max_msg > SIZE_MAX / 4)
		max_msg = SIZE_MAX / 4;
	if (initial_cap > max_msg)
		initial_cap = max_msg;

	struct reasm *r = calloc(1, sizeof(*r));
	if (r == NULL)
		return NULL;
	if (buf_reserve(&r->b, initial_cap) != 0) {
		free(r);
		return NULL;
	}
	buf_reset(&r->b);
	r->initial_cap = initial_cap;
	r->max_msg = max_msg;
	r->state = REASM_IDLE;
	return r;
}

void
reasm_destroy(struct reasm *r)
{
	if (r == NULL)
		return;
	buf_free(&r->b);
	free(r);
}

/* Drops the current message; its remaining chunks (if any) are eaten. */
static int
drop_message(struct reasm *r, bool final, int result)
{
	buf_reset(&r->b);
	r->state = final ? REASM_IDLE : REASM_SWALLOWING;
	return result;
}

int
reasm_feed(struct reasm *r, const void *chunk, size_t len, bool first,
    bool final, bool binary)
{
	r->ready = false;

	if (first) {
		/* A new start also abandons any partial or swallowed
		 * message: the peer (or lws) has moved on. */
		r->state = REASM_COLLECTING;
		buf_reset(&r->b);
		r->binary = binary;
	} else if (r->state == REASM_IDLE) {
		return BR_ESTATE;
	}

	if (r->state == REASM_SWALLOWING) {
		if (final)
			r->state = REASM_IDLE;
		return REASM_MORE;
	}

	/* Written as a subtraction so that len cannot wrap the sum. */
	if (len > r->max_msg - r->b.len)
		return drop_message(r, final, BR_EFULL);
	if (buf_append(&r->b, chunk, len) != 0)
		return drop_message(r, final, BR_ENOMEM);

	if (!final)
		return REASM_MORE;
	r->state = REASM_IDLE;
	r->ready = true;
	return REASM_DONE;
}

int
reasm_whole(struct reasm *r, size_t len)
{
	r->ready = false;
	r->state = REASM_IDLE;
	buf_reset(&r->b);
	return len > r->max_msg ? BR_EFULL : REASM_DONE;
}

const uint8_t *
reasm_msg(const struct reasm *r, size_t *len, bool *binary)
{
	if (len != NULL)
		*len = r->ready ? r->b.len : 0;
	if (binary != NULL)
		*binary = r->ready && r->binary;
	return r->ready ? (const uint8_t *) r->b.p : NULL;
}

void
reasm_reset(struct reasm *r)
{
	r->state = REASM_IDLE;
	r->ready = false;
	/* initial_cap <= max_msg <= SIZE_MAX / 4: the product can't wrap. */
	if (r->b.cap > 4 * (r->initial_cap + 1)) {
		struct buf small = { 0 };
		/* On failure the big buffer stays: still correct, just
		 * not shrunk. */
		if (buf_reserve(&small, r->initial_cap) == 0) {
			buf_free(&r->b);
			r->b = small;
		}
	}
	buf_reset(&r->b);
}
