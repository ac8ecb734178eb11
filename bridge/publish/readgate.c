/* See readgate.h. */
#include "readgate.h"

void
read_gate_init(struct read_gate *g, int64_t interval_ns, unsigned min_batch)
{
	*g = (struct read_gate) { .interval_ns = interval_ns,
		.min_batch = min_batch };
}

void
read_gate_allow(struct read_gate *g, bool allowed)
{
	g->allowed = allowed;
	g->gathering = false;
}

int64_t
read_gate_wait_ns(const struct read_gate *g, int64_t now_ns)
{
	if (!g->gathering)
		return 0;
	int64_t since = now_ns - g->last_read_ns;
	return since >= g->interval_ns ? 0 : g->interval_ns - since;
}

bool
read_gate_read(struct read_gate *g, int64_t now_ns, unsigned items)
{
	bool gathered = g->gathering;
	g->last_read_ns = now_ns;
	g->gathering = g->allowed && items >= g->min_batch;
	return gathered;
}
