/* WebSocket message reassembly. The state machine mirrors what
 * libwebsockets reports per CLIENT_RECEIVE callback: "first" on the first
 * chunk of a message, "final" only on the last chunk of the whole message
 * (across frames and rx-buffer chunks). */
#include "reasm.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Smallest buffer worth allocating when growing from a tiny start. */
#define REASM_MIN_GROW 64

enum reasm_state {
	REASM_IDLE, /* between messages */
	REASM_COLLECTING, /* appending chunks of the current message */
	REASM_SWALLOWING, /* current message was dropped: eat until final */
};

struct reasm {
	uint8_t *buf; /* cap + 1 bytes: room for the trailing NUL */
	size_t cap; /* message bytes buf can hold */
	size_t len; /* bytes of the current message */
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
	r->buf = malloc(initial_cap + 1);
	if (r->buf == NULL) {
		free(r);
		return NULL;
	}
	r->buf[0] = '\0';
	r->cap = initial_cap;
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
	free(r->buf);
	free(r);
}

/* Makes room for need message bytes (need <= max_msg). Doubles so that a
 * message arriving in many chunks costs O(log n) reallocations. */
static bool
reserve(struct reasm *r, size_t need)
{
	if (need <= r->cap)
		return true;
	size_t new_cap = r->cap < REASM_MIN_GROW ? REASM_MIN_GROW : r->cap;
	while (new_cap < need)
		new_cap *= 2;
	if (new_cap > r->max_msg)
		new_cap = r->max_msg;
	uint8_t *grown = realloc(r->buf, new_cap + 1);
	if (grown == NULL)
		return false;
	r->buf = grown;
	r->cap = new_cap;
	return true;
}

/* Drops the current message; its remaining chunks (if any) are eaten. */
static int
drop_message(struct reasm *r, bool final, int result)
{
	r->len = 0;
	r->buf[0] = '\0';
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
		r->len = 0;
		r->binary = binary;
	} else if (r->state == REASM_IDLE) {
		return REASM_PROTO;
	}

	if (r->state == REASM_SWALLOWING) {
		if (final)
			r->state = REASM_IDLE;
		return REASM_MORE;
	}

	/* Written as a subtraction so that len cannot wrap the sum. */
	if (len > r->max_msg - r->len)
		return drop_message(r, final, REASM_OVERSIZE);
	if (!reserve(r, r->len + len))
		return drop_message(r, final, REASM_NOMEM);

	if (len > 0)
		memcpy(r->buf + r->len, chunk, len);
	r->len += len;
	r->buf[r->len] = '\0';

	if (!final)
		return REASM_MORE;
	r->state = REASM_IDLE;
	r->ready = true;
	return REASM_DONE;
}

const uint8_t *
reasm_msg(const struct reasm *r, size_t *len, bool *binary)
{
	if (len != NULL)
		*len = r->ready ? r->len : 0;
	if (binary != NULL)
		*binary = r->ready && r->binary;
	return r->ready ? r->buf : NULL;
}

void
reasm_reset(struct reasm *r)
{
	r->state = REASM_IDLE;
	r->ready = false;
	r->len = 0;
	/* initial_cap <= max_msg <= SIZE_MAX / 4: the product can't wrap. */
	if (r->cap > 4 * r->initial_cap) {
		uint8_t *shrunk = realloc(r->buf, r->initial_cap + 1);
		/* On failure the big buffer stays: still correct, just
		 * not shrunk. */
		if (shrunk != NULL) {
			r->buf = shrunk;
			r->cap = r->initial_cap;
		}
	}
	r->buf[0] = '\0';
}
