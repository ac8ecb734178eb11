/* When to read a socket on which acknowledgements stream (the broker link):
 * at once while they arrive one at a time, at most once per interval once
 * a read finds several, so that one wake-up takes many. Pure: the caller
 * passes the time in and owns the struct. */
#ifndef C2M_READGATE_H
#define C2M_READGATE_H

#include <stdbool.h>
#include <stdint.h>

struct read_gate {
	int64_t interval_ns; /* gathered reads are at least this far apart */
	unsigned min_batch; /* a read that finds this many starts gathering */
	bool allowed; /* false: every read at once */
	bool gathering;
	int64_t last_read_ns;
};

/* Sets up g: not allowed yet (see read_gate_allow), not gathering. */
void read_gate_init(
    struct read_gate *g, int64_t interval_ns, unsigned min_batch);
/* Allows or forbids gathering (a new connection); stops gathering. */
void read_gate_allow(struct read_gate *g, bool allowed);
/* Nanoseconds until the socket may be read; 0: now. */
int64_t read_gate_wait_ns(const struct read_gate *g, int64_t now_ns);
/* A read at now_ns took in `items` acknowledgements. Returns whether that
 * read was a gathered one (it waited for its turn). */
bool read_gate_read(struct read_gate *g, int64_t now_ns, unsigned items);

#endif
