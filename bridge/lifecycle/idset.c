#include "idset.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"

void
idset_init(struct idset *s, unsigned cap)
{
	memset(s, 0, sizeof(*s));
	s->cap = cap ? cap : 1;
}

static bool
wide(const struct idset *s)
{
	return s->cap >= IDSET_WIDE;
}

static size_t
slot_size(const struct idset *s)
{
	return wide(s) ? sizeof(uint32_t) : sizeof(uint16_t);
}

/* Index slot i: a ring position + 1, 0 when free. */
static unsigned
at(const struct idset *s, unsigned i)
{
	return wide(s) ? ((const uint32_t *) s->index)[i]
	               : ((const uint16_t *) s->index)[i];
}

static void
set_at(struct idset *s, unsigned i, unsigned v)
{
	if (wide(s))
		((uint32_t *) s->index)[i] = v;
	else
		((uint16_t *) s->index)[i] = (uint16_t) v;
}

/* The index slot holding ring position pos + 1, or of the free slot
 * where hash h would go. */
static unsigned
slot_of(const struct idset *s, uint64_t h)
{
	unsigned i = (unsigned) h & s->mask;
	while (at(s, i) && s->ring[at(s, i) - 1] != h)
		i = (i + 1) & s->mask;
	return i;
}

bool
idset_has(const struct idset *s, uint64_t h)
{
	return s->index != NULL && at(s, slot_of(s, h)) != 0;
}

size_t
idset_bytes(const struct idset *s)
{
	return (s->ring ? s->cap * sizeof(*s->ring) : 0)
	    + (s->index ? (s->mask + 1) * slot_size(s) : 0);
}

/* Empties slot i and moves later entries of its probe run back, so that
 * every lookup still finds them (linear probing without tombstones). */
static void
unlink_slot(struct idset *s, unsigned i)
{
	unsigned j = i;
	for (;;) {
		j = (j + 1) & s->mask;
		if (!at(s, j))
			break;
		unsigned home = (unsigned) s->ring[at(s, j) - 1] & s->mask;
		/* the entry at j may move to i when its home is not in
		 * the cyclic range (i, j] */
		bool in_range = i <= j ? (home > i && home <= j)
		                       : (home > i || home <= j);
		if (in_range)
			continue;
		set_at(s, i, at(s, j));
		i = j;
	}
	set_at(s, i, 0);
}

/* The index for twice the ids held, doubled as the set fills (up to twice
 * cap): a set sized for many ids but holding few keeps few pages, where
 * one index for cap would have all its pages written by scattered
 * hashes. The ring holds positions 0..n-1 until it is full. */
static int
grow_index(struct idset *s)
{
	unsigned want = 64;
	while (want < (s->n + 1) * 2)
		want *= 2;
	if (s->index && want <= s->mask + 1)
		return 0;
	void *old = s->index;
	s->index = calloc(want, slot_size(s));
	if (!s->index) {
		s->index = old;
		return BR_ENOMEM;
	}
	s->mask = want - 1;
	for (unsigned pos = 0; pos < s->n; pos++)
		set_at(s, slot_of(s, s->ring[pos]), pos + 1);
	free(old);
	return 0;
}

int
idset_add(struct idset *s, uint64_t h)
{
	if (!s->ring) {
		s->ring = calloc(s->cap, sizeof(*s->ring));
		if (!s->ring)
			return BR_ENOMEM;
	}
	if (idset_has(s, h))
		return 0;
	if (s->n < s->cap && grow_index(s) != 0)
		return BR_ENOMEM;
	if (s->n == s->cap)
		unlink_slot(s, slot_of(s, s->ring[s->next]));
	else
		s->n++;
	s->ring[s->next] = h;
	set_at(s, slot_of(s, h), s->next + 1);
	s->next = (s->next + 1) % s->cap;
	return 0;
}

void
idset_free(struct idset *s)
{
	unsigned cap = s->cap;
	free(s->ring);
	free(s->index);
	idset_init(s, cap);
}
