/* A bounded set of prompt ids, kept as 64-bit hashes (tracker_hash): the
 * oldest id is forgotten once cap ids are held. 16 bytes per id (the hash
 * in insertion order, and a slot index at most half full); the ring is
 * allocated on the first add, the index grows with the ids held. Pure. */
#ifndef C2M_IDSET_H
#define C2M_IDSET_H

#include <stdbool.h>
#include <stdint.h>

struct idset {
	uint64_t *ring; /* hashes, oldest at next once full */
	uint32_t *index; /* open addressing: ring position + 1, 0: free */
	unsigned cap, n, next, mask;
};

/* An empty set of up to cap ids (cap at least 1). */
void idset_init(struct idset *s, unsigned cap);
/* Adds the hash (forgetting the oldest when full); returns 0 or
 * BR_ENOMEM. */
int idset_add(struct idset *s, uint64_t h);
bool idset_has(const struct idset *s, uint64_t h);
void idset_free(struct idset *s);

#endif
