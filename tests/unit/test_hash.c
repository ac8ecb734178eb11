/* hash: FNV-1a's published test vectors (topics and the default client id
 * depend on these exact values), and chaining equals hashing the whole. */
#include "test.h"

#include "hash.h"

static void
test_vectors(void)
{
	CHECK_INT(hash32(HASH32_INIT, "", 0), 0x811c9dc5u);
	CHECK_INT(hash32(HASH32_INIT, "a", 1), 0xe40c292cu);
	CHECK_INT(hash32(HASH32_INIT, "foobar", 6), 0xbf9cf968u);
	CHECK(hash64(HASH64_INIT, "a", 1) == 0xaf63dc4c8601ec8cULL);
	CHECK(hash64(HASH64_INIT, "foobar", 6) == 0x85944171f73967e8ULL);
}

static void
test_chaining(void)
{
	CHECK_INT(hash32(hash32(HASH32_INIT, "foo", 3), "bar", 3),
	    hash32(HASH32_INIT, "foobar", 6));
	CHECK(hash64(hash64(HASH64_INIT, "foo", 3), "bar", 3)
	    == hash64(HASH64_INIT, "foobar", 6));
}

int
main(void)
{
	RUN(test_vectors);
	RUN(test_chaining);
	TEST_MAIN_END();
}
