/* The pending state clears (expiry.h): order, bound, levels given back
 * byte for byte, and what a record costs. */
#include "err.h"
#include "expiry.h"
#include "idset.h"
#include "test.h"

static void
level_of(char *out, size_t size, unsigned i)
{
	switch (i % 5) {
	case 0: /* ComfyUI's own: packed */
		snprintf(out, size, "%08x-%04x-4%03x-8%03x-%012x",
		    i * 2654435761u, i & 0xffff, i & 0xfff, (i >> 12) & 0xfff,
		    i);
		break;
	case 1: /* uppercase: kept apart, as it is */
		snprintf(out, size, "%08X-%04X-4%03X-8%03X-%012X",
		    i * 2654435761u, i & 0xffff, i & 0xfff, (i >> 12) & 0xfff,
		    i);
		break;
	case 2: /* 16 bytes: inline */
		snprintf(out, size, "p-%014u", i);
		break;
	case 3: /* 17 bytes */
		snprintf(out, size, "p-%015u", i);
		break;
	default: /* a UUID's length and dashes, not hex */
		snprintf(out, size, "%08x-%04x-4%03x-8%03x-%011xg",
		    i * 2654435761u, i & 0xffff, i & 0xfff, (i >> 12) & 0xfff,
		    i);
		break;
	}
}

/* A permutation of 0..n-1, so that due times come in no order. */
static unsigned
shuffled(unsigned i, unsigned n)
{
	return (unsigned) (((uint64_t) i * 40503u + 7u) % n);
}

/* Records come out due first, each level exactly as it went in, and
 * every one comes out at the bound. */
static void
test_order_and_levels(void)
{
	enum { N = 5000 };
	static unsigned char seen[N];
	struct expiry_heap x;
	expiry_init(&x, N);
	int64_t base = 1765000000000; /* ms, 2025 */
	char level[128], got[128];
	for (unsigned i = 0; i < N; i++) {
		unsigned k = shuffled(i, N);
		level_of(level, sizeof(level), k);
		CHECK_INT(expiry_push(&x, level, strlen(level),
		              base + 4294967295000ll + k),
		    BR_OK);
	}
	CHECK(expiry_full(&x));
	CHECK_INT(expiry_push(&x, "one-more", 8, base), BR_EFULL);
	int64_t due = 0, last = 0;
	for (unsigned i = 0; i < N; i++) {
		CHECK(expiry_next(&x, &due));
		CHECK_INT(due, base + 4294967295000ll + i);
		CHECK(due >= last);
		last = due;
		int len = expiry_pop(&x, got, sizeof(got));
		level_of(level, sizeof(level), i);
		CHECK_INT(len, (int) strlen(level));
		CHECK_STR(got, level);
		seen[i]++;
	}
	CHECK(!expiry_next(&x, &due));
	CHECK_INT(expiry_pop(&x, got, sizeof(got)), -1);
	for (unsigned i = 0; i < N; i++)
		CHECK_INT(seen[i], 1);
	expiry_free(&x);
}

/* Full, the heap takes a record again once one has gone; equal due
 * times all come out; a due time past 48 bits is kept as the last one. */
static void
test_bound_and_due_range(void)
{
	struct expiry_heap x;
	expiry_init(&x, 3);
	CHECK_INT(expiry_push(&x, "a", 1, 5), BR_OK);
	CHECK_INT(expiry_push(&x, "b", 1, 5), BR_OK);
	CHECK_INT(expiry_push(&x, "c", 1, INT64_MAX), BR_OK);
	CHECK_INT(expiry_push(&x, "d", 1, 1), BR_EFULL);
	char got[8];
	CHECK_INT(expiry_pop(&x, got, sizeof(got)), 1);
	CHECK_INT(expiry_push(&x, "d", 1, -3), BR_OK);
	int64_t due;
	CHECK(expiry_next(&x, &due));
	CHECK_INT(due, 0);
	CHECK_INT(expiry_pop(&x, got, sizeof(got)), 1);
	CHECK_STR(got, "d");
	CHECK_INT(expiry_pop(&x, got, sizeof(got)), 1);
	CHECK(expiry_next(&x, &due));
	CHECK_INT(due, EXPIRY_DUE_MAX);
	/* cut to the buffer, its length still told */
	CHECK_INT(expiry_push(&x, "0123456789abcdefXYZ", 19, 9), BR_OK);
	CHECK_INT(expiry_pop(&x, got, sizeof(got)), 19);
	CHECK_STR(got, "0123456");
	expiry_free(&x);
}

/* What the pending clears cost at their bound (32,768 UUID ids): 24
 * bytes a record and no copy apart, 12 bytes a hash in the dedupe set. */
static void
test_bytes_at_the_bound(void)
{
	enum { N = 32768 };
	CHECK_INT(sizeof(struct expiry), 24);
	struct expiry_heap x;
	struct idset s;
	expiry_init(&x, N);
	idset_init(&s, N);
	char level[64];
	for (unsigned i = 0; i < N; i++) {
		level_of(level, sizeof(level), i * 5); /* a lowercase UUID */
		CHECK_INT(expiry_push(&x, level, strlen(level), i), BR_OK);
		CHECK_INT(idset_add(&s, (uint64_t) i * 0x9e3779b97f4a7c15ull),
		    BR_OK);
	}
	CHECK_INT(expiry_bytes(&x), N * 24);
	CHECK_INT(idset_bytes(&s), N * 12);
	CHECK_INT(expiry_push(&x, "x", 1, 0), BR_EFULL);
	idset_free(&s);
	expiry_free(&x);
	/* a set of 65,536 ids or more needs 32-bit positions */
	idset_init(&s, 70000);
	for (uint64_t i = 0; i < 140000; i++)
		CHECK_INT(idset_add(&s, i * 0x9e3779b97f4a7c15ull), BR_OK);
	unsigned held = 0;
	for (uint64_t i = 0; i < 140000; i++)
		held += idset_has(&s, i * 0x9e3779b97f4a7c15ull)
		    == (i >= 70000);
	CHECK_INT(held, 140000);
	CHECK_INT(idset_bytes(&s), 70000 * 8 + 262144 * 4);
	idset_free(&s);
}

int
main(void)
{
	RUN(test_order_and_levels);
	RUN(test_bound_and_due_range);
	RUN(test_bytes_at_the_bound);
	TEST_MAIN_END();
}
