/* See dedup.h. A ring in arrival order: the oldest entry is the next to
 * go, and a lookup scans at most max_entries (commands are rare). */
#include "dedup.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"

struct entry {
	bool used;
	bool correlated;
	bool ok;
	uint64_t key;
	uint64_t connection;
	int64_t at_ms;
	char *result;
	size_t len;
};

struct dedup {
	struct entry *e;
	unsigned max, head, count; /* head: the oldest */
	size_t max_bytes, bytes;
	int64_t ttl_ms;
};

struct dedup *
dedup_create(unsigned max_entries, size_t max_bytes, int64_t ttl_ms)
{
	struct dedup *d = calloc(1, sizeof(*d));
	if (d == NULL || max_entries == 0)
		return free(d), NULL;
	d->e = calloc(max_entries, sizeof(*d->e));
	if (d->e == NULL)
		return free(d), NULL;
	d->max = max_entries;
	d->max_bytes = max_bytes;
	d->ttl_ms = ttl_ms;
	return d;
}

static void
drop(struct dedup *d, struct entry *e)
{
	if (!e->used)
		return;
	d->bytes -= e->len;
	free(e->result);
	memset(e, 0, sizeof(*e));
}

void
dedup_destroy(struct dedup *d)
{
	if (d == NULL)
		return;
	for (unsigned i = 0; i < d->max; i++)
		drop(d, &d->e[i]);
	free(d->e);
	free(d);
}

/* Forgets the oldest slot (used or a hole left by a replacement). */
static void
pop_oldest(struct dedup *d)
{
	drop(d, &d->e[d->head]);
	d->head = (d->head + 1) % d->max;
	d->count--;
}

static void
expire(struct dedup *d, int64_t now_ms)
{
	while (d->count > 0) {
		struct entry *e = &d->e[d->head];
		if (e->used && now_ms - e->at_ms < d->ttl_ms)
			break;
		pop_oldest(d);
	}
}

static struct entry *
lookup(struct dedup *d, uint64_t key)
{
	for (unsigned n = 0; n < d->count; n++) {
		struct entry *e = &d->e[(d->head + n) % d->max];
		if (e->used && e->key == key)
			return e;
	}
	return NULL;
}

bool
dedup_find(struct dedup *d, uint64_t key, bool correlated, bool resent,
    uint64_t connection, int64_t now_ms, struct dedup_hit *hit)
{
	expire(d, now_ms);
	struct entry *e = lookup(d, key);
	if (e == NULL || e->correlated != correlated)
		return false;
	if (!correlated && (!resent || connection <= e->connection))
		return false;
	*hit = (struct dedup_hit) { e->ok, e->result, e->len };
	return true;
}

int
dedup_put(struct dedup *d, uint64_t key, bool correlated, uint64_t connection,
    int64_t now_ms, bool ok, const char *result, size_t len)
{
	expire(d, now_ms);
	struct entry *old = lookup(d, key);
	if (old != NULL)
		drop(d, old);
	if (len > d->max_bytes)
		return BR_EFULL;
	char *copy = malloc(len + 1);
	if (copy == NULL)
		return BR_ENOMEM;
	memcpy(copy, result, len);
	copy[len] = '\0';
	while (d->count > 0
	    && (d->count == d->max || d->bytes + len > d->max_bytes))
		pop_oldest(d);
	struct entry *e = &d->e[(d->head + d->count) % d->max];
	*e = (struct entry) { true, correlated, ok, key, connection, now_ms,
		copy, len };
	d->count++;
	d->bytes += len;
	return 0;
}

unsigned
dedup_count(const struct dedup *d)
{
	unsigned n = 0;
	for (unsigned i = 0; i < d->count; i++)
		n += d->e[(d->head + i) % d->max].used;
	return n;
}
