/* A bounded set of prompt ids, kept as 64-bit hashes (tracker_hash): the
 * oldest id is forgotten once cap ids are held. 12 bytes per id below
 * 65,536 ids (the hash in insertion order, and a 16-bit slot index at most
 * half full), 16 bytes from there (a 32-bit index); the ring is allocated
 * on the first add, the index grows with the ids held. Pure. */
#ifndef C2M_IDSET_H
#define C2M_IDSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct idset {
	uint64_t *ring; /* hashes, oldest at next once full */
	/* open addressing: ring position + 1, 0: free; uint16_t entries
	 * when cap < IDSET_WIDE, else uint32_t */
	void *index;
	unsigned cap, n, next, mask;
};

/* From this cap on, ring positions + 1 no longer fit 16 bits. */
#define IDSET_WIDE 65536u

/* An empty set of up to cap ids (cap at least 1). */
void idset_init(struct idset *s, unsigned cap);
/* Adds the hash (forgetting the oldest when full); returns 0 or
 * BR_ENOMEM. */
int idset_add(struct idset *s, uint64_t h);
bool idset_has(const struct idset *s, uint64_t h);
/* Bytes the set holds allocated now (ring and index). */
size_t idset_bytes(const struct idset *s);
void idset_free(struct idset *s);

#endif
