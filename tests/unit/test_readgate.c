/* The read gate: at once for a sparse stream, once per interval while
 * acknowledgements come in batches, never when not allowed. */
#include "readgate.h"
#include "test.h"

#define MS 1000000

static void
test_sparse_reads_at_once(void)
{
	struct read_gate g;
	read_gate_init(&g, MS, 2);
	read_gate_allow(&g, true);
	int64_t t = 5 * MS;
	for (int i = 0; i < 10; i++, t += MS / 10) {
		CHECK_INT(read_gate_wait_ns(&g, t), 0);
		CHECK(!read_gate_read(&g, t, 1));
	}
}

static void
test_batch_starts_gathering(void)
{
	struct read_gate g;
	read_gate_init(&g, MS, 2);
	read_gate_allow(&g, true);
	CHECK(!read_gate_read(&g, 10 * MS, 3));
	/* the next read waits out the interval from the last one */
	CHECK_INT(read_gate_wait_ns(&g, 10 * MS), MS);
	CHECK_INT(read_gate_wait_ns(&g, 10 * MS + 300000), 700000);
	CHECK_INT(read_gate_wait_ns(&g, 11 * MS), 0);
	CHECK_INT(read_gate_wait_ns(&g, 12 * MS), 0);
	CHECK(read_gate_read(&g, 11 * MS, 5));
	CHECK_INT(read_gate_wait_ns(&g, 11 * MS + 1), MS - 1);
	/* a gathered read that finds one: the stream thinned, read at once */
	CHECK(read_gate_read(&g, 12 * MS, 1));
	CHECK_INT(read_gate_wait_ns(&g, 12 * MS), 0);
	CHECK(!read_gate_read(&g, 12 * MS + 10, 0));
	CHECK_INT(read_gate_wait_ns(&g, 12 * MS + 20), 0);
}

static void
test_not_allowed_never_waits(void)
{
	struct read_gate g;
	read_gate_init(&g, MS, 2);
	/* not allowed until a connection says so */
	CHECK(!read_gate_read(&g, MS, 50));
	CHECK_INT(read_gate_wait_ns(&g, MS), 0);
	read_gate_allow(&g, true);
	CHECK(!read_gate_read(&g, 2 * MS, 50));
	CHECK(read_gate_wait_ns(&g, 2 * MS) > 0);
	/* a new connection that forbids it ends gathering at once */
	read_gate_allow(&g, false);
	CHECK_INT(read_gate_wait_ns(&g, 2 * MS), 0);
	CHECK(!read_gate_read(&g, 2 * MS, 50));
	CHECK_INT(read_gate_wait_ns(&g, 2 * MS), 0);
	/* and one that allows it starts from a clean state */
	read_gate_allow(&g, true);
	CHECK_INT(read_gate_wait_ns(&g, 2 * MS), 0);
}

int
main(void)
{
	RUN(test_sparse_reads_at_once);
	RUN(test_batch_starts_gathering);
	RUN(test_not_allowed_never_waits);
	TEST_MAIN_END();
}
