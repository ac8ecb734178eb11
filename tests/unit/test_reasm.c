/* reasm: chunk sequences as libwebsockets delivers them. */
#include <malloc.h>
#include <stdbool.h>
#include <stdint.h>

#include "reasm.h"
#include "test.h"

/* Deterministic, position-dependent bytes so misplaced chunks show. */
static uint8_t *
make_pattern(size_t len, unsigned seed)
{
	uint8_t *p = malloc(len ? len : 1);
	if (p == NULL)
		abort();
	uint32_t x = 2463534242u ^ seed;
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		p[i] = (uint8_t) x;
	}
	return p;
}

/* Checks that the completed message equals want[0..want_len) plus NUL. */
static void
check_msg(struct reasm *r, const void *want, size_t want_len, bool want_binary)
{
	size_t len = 12345;
	bool binary = !want_binary;
	const uint8_t *msg = reasm_msg(r, &len, &binary);
	CHECK(msg != NULL);
	if (msg == NULL)
		return;
	CHECK_INT(len, want_len);
	if (len == want_len)
		CHECK(memcmp(msg, want, len) == 0);
	CHECK_INT(msg[len], 0);
	CHECK_INT(binary, want_binary);
}

static void
test_single_chunk(void)
{
	struct reasm *r = reasm_create(64, 4096);
	CHECK(r != NULL);
	CHECK_INT(reasm_feed(r, "hello", 5, true, true, false), REASM_DONE);
	check_msg(r, "hello", 5, false);
	CHECK_STR((const char *) reasm_msg(r, NULL, NULL), "hello");
	reasm_destroy(r);
}

static void
test_multi_chunk(void)
{
	struct reasm *r = reasm_create(4, 4096);
	CHECK_INT(reasm_feed(r, "{\"ty", 4, true, false, false), REASM_MORE);
	CHECK(reasm_msg(r, NULL, NULL) == NULL);
	CHECK_INT(reasm_feed(r, "pe\": ", 5, false, false, false), REASM_MORE);
	CHECK_INT(reasm_feed(r, "1}", 2, false, true, false), REASM_DONE);
	check_msg(r, "{\"type\": 1}", 11, false);
	/* The next message starts from an empty buffer. */
	CHECK_INT(reasm_feed(r, "x", 1, true, true, false), REASM_DONE);
	check_msg(r, "x", 1, false);
	reasm_destroy(r);
}

/* A 20 040-byte message sent as frames of 9 000 + 11 040 bytes with an
 * rx_buffer_size of 4096 (style-anchors.md §2 item 5): first only on the
 * very first chunk, final only on the very last. */
static void
test_lws_rx_buffer_split(void)
{
	static const size_t chunks[] = { 4096, 4096, 808, 4096, 4096, 2848 };
	const size_t n = sizeof(chunks) / sizeof(chunks[0]);
	size_t total = 0;
	for (size_t i = 0; i < n; i++)
		total += chunks[i];
	CHECK_INT(total, 20040);
	uint8_t *data = make_pattern(total, 1);

	/* Once with growth from a small buffer, once with the production
	 * 64 KiB start where the buffer must not move. */
	static const size_t initial[] = { 1024, 65536 };
	for (size_t k = 0; k < 2; k++) {
		struct reasm *r = reasm_create(initial[k], 16u << 20);
		const uint8_t *first_msg = NULL;
		for (int round = 0; round < 2; round++) {
			size_t off = 0;
			for (size_t i = 0; i < n; i++) {
				bool last = i == n - 1;
				int rc = reasm_feed(r, data + off, chunks[i],
				    i == 0, last, false);
				CHECK_INT(rc, last ? REASM_DONE : REASM_MORE);
				off += chunks[i];
			}
			check_msg(r, data, total, false);
			if (round == 0)
				first_msg = reasm_msg(r, NULL, NULL);
		}
		if (initial[k] >= total)
			CHECK(reasm_msg(r, NULL, NULL) == first_msg);
		reasm_destroy(r);
	}
	free(data);
}

static void
test_binary_latched_on_first_chunk(void)
{
	struct reasm *r = reasm_create(64, 4096);
	CHECK_INT(reasm_feed(r, "\x00\x00", 2, true, false, true), REASM_MORE);
	CHECK_INT(
	    reasm_feed(r, "\x00\x01", 2, false, true, false), REASM_DONE);
	check_msg(r, "\x00\x00\x00\x01", 4, true);

	CHECK_INT(reasm_feed(r, "ab", 2, true, false, false), REASM_MORE);
	CHECK_INT(reasm_feed(r, "cd", 2, false, true, true), REASM_DONE);
	check_msg(r, "abcd", 4, false);
	reasm_destroy(r);
}

static void
test_oversize_reported_once(void)
{
	struct reasm *r = reasm_create(16, 100);
	uint8_t *data = make_pattern(400, 2);
	CHECK_INT(reasm_feed(r, data, 60, true, false, false), REASM_MORE);
	CHECK_INT(reasm_feed(r, data + 60, 60, false, false, false), BR_EFULL);
	CHECK(reasm_msg(r, NULL, NULL) == NULL);
	/* The rest is swallowed, final included, without a second report
	 * and without a PROTO for the continuations. */
	int oversize = 0, other = 0;
	for (size_t off = 120; off < 400; off += 40) {
		int rc = reasm_feed(
		    r, data + off, 40, false, off + 40 >= 400, false);
		if (rc == BR_EFULL)
			oversize++;
		else if (rc != REASM_MORE)
			other++;
	}
	CHECK_INT(oversize, 0);
	CHECK_INT(other, 0);
	CHECK(reasm_msg(r, NULL, NULL) == NULL);

	CHECK_INT(reasm_feed(r, "next", 4, true, true, false), REASM_DONE);
	check_msg(r, "next", 4, false);

	/* A single oversize final chunk: the next message still works. */
	CHECK_INT(reasm_feed(r, data, 101, true, true, true), BR_EFULL);
	CHECK_INT(reasm_feed(r, "ok", 2, true, true, false), REASM_DONE);
	check_msg(r, "ok", 2, false);
	/* ... and a continuation after it is again a protocol error. */
	CHECK_INT(reasm_feed(r, data, 101, true, true, true), BR_EFULL);
	CHECK_INT(reasm_feed(r, "x", 1, false, true, false), BR_ESTATE);
	free(data);
	reasm_destroy(r);
}

static void
test_first_while_swallowing_starts_afresh(void)
{
	struct reasm *r = reasm_create(16, 100);
	uint8_t *data = make_pattern(200, 3);
	CHECK_INT(reasm_feed(r, data, 150, true, false, false), BR_EFULL);
	CHECK_INT(reasm_feed(r, data, 10, false, false, false), REASM_MORE);
	CHECK_INT(reasm_feed(r, "fresh", 5, true, true, false), REASM_DONE);
	check_msg(r, "fresh", 5, false);
	free(data);
	reasm_destroy(r);
}

static void
test_continuation_without_start(void)
{
	struct reasm *r = reasm_create(64, 4096);
	CHECK_INT(reasm_feed(r, "orphan", 6, false, false, false), BR_ESTATE);
	CHECK_INT(reasm_feed(r, "orphan", 6, false, true, false), BR_ESTATE);
	CHECK(reasm_msg(r, NULL, NULL) == NULL);
	CHECK_INT(reasm_feed(r, "a", 1, true, true, false), REASM_DONE);
	/* After a completed message there is again nothing to continue. */
	CHECK_INT(reasm_feed(r, "b", 1, false, true, false), BR_ESTATE);
	CHECK_INT(reasm_feed(r, "c", 1, true, true, false), REASM_DONE);
	check_msg(r, "c", 1, false);
	reasm_destroy(r);
}

static void
test_first_mid_message_restarts(void)
{
	struct reasm *r = reasm_create(64, 4096);
	CHECK_INT(reasm_feed(r, "partial", 7, true, false, true), REASM_MORE);
	CHECK_INT(reasm_feed(r, "xy", 2, true, false, false), REASM_MORE);
	CHECK_INT(reasm_feed(r, "z", 1, false, true, false), REASM_DONE);
	check_msg(r, "xyz", 3, false);
	reasm_destroy(r);
}

static void
test_empty_message(void)
{
	struct reasm *r = reasm_create(64, 4096);
	CHECK_INT(reasm_feed(r, NULL, 0, true, true, false), REASM_DONE);
	check_msg(r, "", 0, false);
	/* Empty chunks inside a message add nothing. */
	CHECK_INT(reasm_feed(r, "ab", 2, true, false, false), REASM_MORE);
	CHECK_INT(reasm_feed(r, NULL, 0, false, false, false), REASM_MORE);
	CHECK_INT(reasm_feed(r, NULL, 0, false, true, false), REASM_DONE);
	check_msg(r, "ab", 2, false);
	/* A zero cap still admits the empty message. */
	struct reasm *z = reasm_create(0, 0);
	CHECK(z != NULL);
	CHECK_INT(reasm_feed(z, NULL, 0, true, true, true), REASM_DONE);
	check_msg(z, "", 0, true);
	CHECK_INT(reasm_feed(z, "a", 1, true, true, false), BR_EFULL);
	reasm_destroy(z);
	reasm_destroy(r);
}

static void
test_reset_shrinks_and_forgets(void)
{
	const size_t big = 1u << 20;
	struct reasm *r = reasm_create(1024, 16u << 20);
	uint8_t *data = make_pattern(big, 4);
	for (size_t off = 0; off < big; off += 4096)
		CHECK_INT(reasm_feed(r, data + off, 4096, off == 0,
		              off + 4096 == big, true),
		    off + 4096 == big ? REASM_DONE : REASM_MORE);
	check_msg(r, data, big, true);
	CHECK(malloc_usable_size((void *) reasm_msg(r, NULL, NULL)) >= big);

	reasm_reset(r);
	CHECK(reasm_msg(r, NULL, NULL) == NULL);
	CHECK_INT(reasm_feed(r, "small", 5, true, true, false), REASM_DONE);
	check_msg(r, "small", 5, false);
	/* The 1 MiB buffer is gone: back near the 1 KiB start. */
	CHECK(malloc_usable_size((void *) reasm_msg(r, NULL, NULL)) < 4096);

	/* Reset in the middle of a message drops it. */
	CHECK_INT(reasm_feed(r, "half", 4, true, false, false), REASM_MORE);
	reasm_reset(r);
	CHECK_INT(reasm_feed(r, "rest", 4, false, true, false), BR_ESTATE);
	/* Reset while swallowing an oversize message drops that too. */
	struct reasm *s = reasm_create(16, 32);
	CHECK_INT(reasm_feed(s, data, 40, true, false, false), BR_EFULL);
	reasm_reset(s);
	CHECK_INT(reasm_feed(s, "tail", 4, false, true, false), BR_ESTATE);
	CHECK_INT(reasm_feed(s, "new", 3, true, true, false), REASM_DONE);
	check_msg(s, "new", 3, false);
	reasm_destroy(s);
	free(data);
	reasm_destroy(r);
}

static void
test_cap_boundary(void)
{
	const size_t cap = 100;
	uint8_t *data = make_pattern(cap + 1, 5);
	struct reasm *r = reasm_create(8, cap);

	CHECK_INT(reasm_feed(r, data, cap, true, true, false), REASM_DONE);
	check_msg(r, data, cap, false);
	CHECK_INT(reasm_feed(r, data, cap + 1, true, true, false), BR_EFULL);

	CHECK_INT(reasm_feed(r, data, 50, true, false, false), REASM_MORE);
	CHECK_INT(
	    reasm_feed(r, data + 50, 50, false, true, false), REASM_DONE);
	check_msg(r, data, cap, false);

	CHECK_INT(reasm_feed(r, data, cap, true, false, false), REASM_MORE);
	CHECK_INT(reasm_feed(r, data + cap, 1, false, true, false), BR_EFULL);
	/* A huge length must not wrap the size check. */
	CHECK_INT(reasm_feed(r, data, 10, true, false, false), REASM_MORE);
	CHECK_INT(
	    reasm_feed(r, data, SIZE_MAX - 5, false, true, false), BR_EFULL);
	free(data);
	reasm_destroy(r);
}

/* A whole message in one chunk: not copied, capped, and it abandons a
 * partial message like a first chunk does. */
static void
test_whole_message(void)
{
	struct reasm *r = reasm_create(16, 100);
	size_t len;

	CHECK_INT(reasm_feed(r, "par", 3, true, false, false), REASM_MORE);
	CHECK_INT(reasm_whole(r, 100), REASM_DONE);
	CHECK(reasm_msg(r, &len, NULL) == NULL); /* the caller's bytes */
	CHECK_INT(len, 0);
	/* the partial message is gone: a continuation has no start */
	CHECK_INT(reasm_feed(r, "x", 1, false, true, false), BR_ESTATE);
	CHECK_INT(reasm_whole(r, 101), BR_EFULL);
	CHECK_INT(reasm_feed(r, "ab", 2, true, true, true), REASM_DONE);
	bool bin = false;
	const uint8_t *m = reasm_msg(r, &len, &bin);
	CHECK_MEM(m, len, "ab", 2);
	CHECK(bin);
	reasm_destroy(r);
}

int
main(void)
{
	RUN(test_single_chunk);
	RUN(test_whole_message);
	RUN(test_multi_chunk);
	RUN(test_lws_rx_buffer_split);
	RUN(test_binary_latched_on_first_chunk);
	RUN(test_oversize_reported_once);
	RUN(test_first_while_swallowing_starts_afresh);
	RUN(test_continuation_without_start);
	RUN(test_first_mid_message_restarts);
	RUN(test_empty_message);
	RUN(test_reset_shrinks_and_forgets);
	RUN(test_cap_boundary);
	TEST_MAIN_END();
}
