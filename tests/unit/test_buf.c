/* buf: appends grow and keep a NUL after the content, reset keeps memory,
 * free empties, and a failed reservation leaves the buffer unchanged. */
#include "test.h"

#include <stdint.h>

#include "buf.h"
#include "err.h"

static void
test_append_grows_and_terminates(void)
{
	struct buf b = { 0 };
	char chunk[100];

	memset(chunk, 'x', sizeof chunk);
	for (int i = 0; i < 50; i++)
		CHECK_INT(buf_append(&b, chunk, sizeof chunk), 0);
	CHECK_INT(b.len, 5000);
	CHECK(b.cap > 5000);
	CHECK_INT(b.p[5000], '\0');
	CHECK_INT(strspn(b.p, "x"), 5000);
	CHECK_INT(buf_puts(&b, "yz"), 0);
	CHECK_STR(b.p + 5000, "yz");
	buf_free(&b);
	CHECK(b.p == NULL);
	CHECK_INT(b.len, 0);
}

static void
test_set_and_reset(void)
{
	struct buf b = { 0 };

	CHECK_INT(buf_set(&b, "hello", 5), 0);
	CHECK_STR(b.p, "hello");
	char *mem = b.p;
	buf_reset(&b);
	CHECK_INT(b.len, 0);
	CHECK_STR(b.p, "");
	CHECK_INT(buf_set(&b, "hi", 2), 0);
	CHECK(b.p == mem);
	CHECK_STR(b.p, "hi");
	CHECK_INT(buf_append(&b, NULL, 0), 0);
	CHECK_STR(b.p, "hi");
	buf_free(&b);
}

static void
test_fit_keeps_the_contents(void)
{
	struct buf b = { 0 };
	for (int i = 0; i < 100; i++)
		CHECK_INT(buf_puts(&b, "0123456789"), 0);
	CHECK(b.cap > b.len + 1);
	buf_fit(&b);
	CHECK_INT(b.cap, 1001);
	CHECK_INT(b.len, 1000);
	CHECK_INT(memcmp(b.p + 990, "0123456789", 11), 0);
	CHECK_INT(buf_puts(&b, "x"), 0); /* grows again */
	CHECK_STR(b.p + 1000, "x");
	buf_free(&b);
	buf_fit(&b); /* nothing held: nothing to do */
	CHECK(b.p == NULL);
}

static void
test_impossible_reservation_fails_cleanly(void)
{
	struct buf b = { 0 };

	CHECK_INT(buf_set(&b, "keep", 4), 0);
	CHECK_INT(buf_reserve(&b, SIZE_MAX - 2), BR_ENOMEM);
	CHECK_STR(b.p, "keep");
	CHECK_INT(b.len, 4);
	buf_free(&b);
}

/* A bounded buffer never holds more than its bound, and its memory never
 * grows past it: doubling stops at max + 1. */
static void
test_bounded_growth_stops_at_the_bound(void)
{
	struct buf b = { 0 };
	char chunk[1000];
	size_t max = 10000;

	memset(chunk, 'x', sizeof chunk);
	for (int i = 0; i < 10; i++) {
		CHECK_INT(buf_reserve_max(&b, sizeof chunk, max), 0);
		CHECK_INT(buf_append(&b, chunk, sizeof chunk), 0);
		CHECK(b.cap <= max + 1);
	}
	CHECK_INT(b.len, max);
	CHECK_INT(buf_reserve_max(&b, 1, max), BR_EFULL);
	CHECK_INT(b.len, max);
	CHECK_INT(buf_reserve_max(&b, SIZE_MAX, max), BR_EFULL);
	buf_free(&b);
}

int
main(void)
{
	RUN(test_append_grows_and_terminates);
	RUN(test_set_and_reset);
	RUN(test_fit_keeps_the_contents);
	RUN(test_impossible_reservation_fails_cleanly);
	RUN(test_bounded_growth_stops_at_the_bound);
	TEST_MAIN_END();
}
