/* libFuzzer target: the input is a sequence of chunks, each
 *   1 flag byte (bit 0 first, bit 1 final, bit 2 binary, bit 3 reset
 *   before this chunk), 2-byte big-endian length, then that many bytes
 *   (cut short by the end of the input),
 * fed to a reasm with a small cap. A reference model of the contract in
 * reasm.h predicts every result; any difference aborts. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "reasm.h"

/* Well under libFuzzer's default -max_len of 4096, so that oversize
 * messages (and the swallowing after them) are reachable. */
#define FUZZ_MAX_MSG     512
#define FUZZ_INITIAL_CAP 16

enum model_state { MODEL_IDLE, MODEL_COLLECTING, MODEL_SWALLOWING };

struct model {
	enum model_state state;
	uint8_t msg[FUZZ_MAX_MSG];
	size_t len;
	bool binary;
};

/* What reasm_feed must return for this chunk, updating the model. */
static int
model_feed(struct model *m, const uint8_t *chunk, size_t len, bool first,
    bool final, bool binary)
{
	if (first) {
		m->state = MODEL_COLLECTING;
		m->len = 0;
		m->binary = binary;
	} else if (m->state == MODEL_IDLE) {
		return BR_ESTATE;
	}
	if (m->state == MODEL_SWALLOWING) {
		if (final)
			m->state = MODEL_IDLE;
		return REASM_MORE;
	}
	if (len > FUZZ_MAX_MSG - m->len) {
		m->state = final ? MODEL_IDLE : MODEL_SWALLOWING;
		return BR_EFULL;
	}
	memcpy(m->msg + m->len, chunk, len);
	m->len += len;
	if (!final)
		return REASM_MORE;
	m->state = MODEL_IDLE;
	return REASM_DONE;
}

static void
check_done(const struct reasm *r, const struct model *m)
{
	size_t len;
	bool binary;
	const uint8_t *msg = reasm_msg(r, &len, &binary);
	if (msg == NULL || len > FUZZ_MAX_MSG || len != m->len)
		abort();
	if (memcmp(msg, m->msg, len) != 0 || msg[len] != '\0')
		abort();
	if (binary != m->binary)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct reasm *r = reasm_create(FUZZ_INITIAL_CAP, FUZZ_MAX_MSG);
	if (r == NULL)
		return 0;
	static struct model m;
	m.state = MODEL_IDLE;
	m.len = 0;

	size_t pos = 0;
	while (size - pos >= 3) {
		uint8_t flags = data[pos];
		size_t len = (size_t) data[pos + 1] << 8 | data[pos + 2];
		pos += 3;
		if (len > size - pos)
			len = size - pos;
		bool first = flags & 1, final = flags & 2, binary = flags & 4;
		if (flags & 8) {
			reasm_reset(r);
			m.state = MODEL_IDLE;
		}

		/* A private copy, so ASan catches reads past the chunk. */
		uint8_t *chunk = malloc(len ? len : 1);
		if (chunk == NULL)
			break;
		memcpy(chunk, data + pos, len);
		pos += len;
		int want = model_feed(&m, chunk, len, first, final, binary);
		int got = reasm_feed(r, chunk, len, first, final, binary);
		free(chunk);

		if (got == BR_ENOMEM)
			abort(); /* nothing here allocates more than 512 bytes
			          */
		if (got != want)
			abort();
		if (got == REASM_DONE)
			check_done(r, &m);
		else if (reasm_msg(r, NULL, NULL) != NULL)
			abort();
	}
	reasm_destroy(r);
	return 0;
}
