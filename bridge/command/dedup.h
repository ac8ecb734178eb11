/* The answers of finished commands, kept so that a repeat is answered from
 * the first result instead of running again: bounded by entries and bytes
 * (the oldest goes first), each kept COMMAND_DEDUP_MS. Keys are 64-bit
 * hashes (base/hash). A correlated key (verb + answer route +
 * correlation) matches any repeat; an uncorrelated one (topic + payload +
 * response topic) only a resent copy (delivered before the subscription's
 * SUBACK) on a later link connection: a broker redelivers a QoS 1 message
 * only after a reconnect, and then before the SUBACK, while the same
 * uncorrelated command sent again is meant again (a button pressed again,
 * after a reconnect too). Pure. */
#ifndef C2M_DEDUP_H
#define C2M_DEDUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dedup;

/* One kept answer (borrowed from the table until the next put). */
struct dedup_hit {
	bool ok;
	const char *result; /* the answer's members after "correlation" */
	size_t len;
};

struct dedup *dedup_create(
    unsigned max_entries, size_t max_bytes, int64_t ttl_ms);
void dedup_destroy(struct dedup *d);

/* true when a command of key, delivered on connection at now_ms (resent:
 * before the SUBACK), repeats a kept one under the rules above; *hit then
 * holds its answer. */
bool dedup_find(struct dedup *d, uint64_t key, bool correlated, bool resent,
    uint64_t connection, int64_t now_ms, struct dedup_hit *hit);
/* Keeps the answer of a command that ran (copied), replacing a kept one
 * of the same key. Returns 0, BR_ENOMEM or BR_EFULL (larger than the
 * byte bound: not kept). */
int dedup_put(struct dedup *d, uint64_t key, bool correlated,
    uint64_t connection, int64_t now_ms, bool ok, const char *result,
    size_t len);
/* Entries kept now (tests). */
unsigned dedup_count(const struct dedup *d);

#endif
