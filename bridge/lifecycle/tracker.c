#include "tracker.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "hash.h"
#include "idset.h"

bool
node_list_has(const struct node_list *l, const char *id)
{
	for (unsigned i = 0; i < l->n; i++)
		if (strcmp(l->ids[i].id, id) == 0)
			return true;
	return false;
}

int
node_list_add(struct node_list *l, const char *id, int64_t ms)
{
	if (node_list_has(l, id))
		return 0;
	if (l->n == l->cap) {
		unsigned cap = l->cap ? l->cap * 2 : 8;
		struct node_entry *ids = realloc(l->ids, cap * sizeof(*ids));
		if (!ids)
			return BR_ENOMEM;
		l->ids = ids;
		l->cap = cap;
	}
	struct node_entry *e = &l->ids[l->n++];
	size_t len = strnlen(id, NODE_ID_MAX);
	memcpy(e->id, id, len);
	e->id[len] = '\0';
	e->ms = ms;
	return 0;
}

void
node_list_free(struct node_list *l)
{
	free(l->ids);
	memset(l, 0, sizeof(*l));
}

int64_t
prompt_duration(const struct prompt *p)
{
	if (p->started_at > 0 && p->finished_at >= p->started_at)
		return p->finished_at - p->started_at;
	return -1;
}

const char *
prompt_status_name(enum prompt_status s)
{
	static const char *const names[] = { "queued", "running", "success",
		"error", "interrupted", "lost", "cancelled" };
	return (unsigned) s < sizeof(names) / sizeof(names[0]) ? names[s]
	                                                       : "unknown";
}

const char *
prompt_source_name(enum prompt_source s)
{
	static const char *const names[] = { "live", "poll", "history" };
	return (unsigned) s < 3 ? names[s] : "live";
}

/* Live prompts (queued or running) are never evicted to make room: the
 * table grows by chunks (which never move, so a struct prompt * stays valid)
 * up to its live limit (TRACKER_GROWTH times its first size unless given).
 * Past that the oldest queued one
 * goes, and its id is kept in `announced`, so it never gets a second queued
 * event. */
#define TRACKER_CHUNK     256
#define TRACKER_GROWTH    4
#define TRACKER_ANNOUNCED 65536

struct tracker {
	struct prompt **chunks;
	unsigned chunk, n_chunks, max_chunks;
	unsigned capacity; /* chunk * n_chunks */
	int *buckets;
	unsigned n_buckets;
	int free_head; /* freed slots chained through next_in_bucket */
	unsigned high_water; /* slots below it have been used at least once */
	unsigned count;
	tracker_evict_fn *evict;
	void *evict_ud;
	struct idset announced; /* live prompts evicted at the limit */
};

static struct prompt *
slot(const struct tracker *t, unsigned i)
{
	return &t->chunks[i / t->chunk][i % t->chunk];
}

static int
index_of(const struct tracker *t, const struct prompt *p)
{
	for (unsigned c = 0; c < t->n_chunks; c++)
		if (p >= t->chunks[c] && p < t->chunks[c] + t->chunk)
			return (int) (c * t->chunk
			    + (unsigned) (p - t->chunks[c]));
	return -1;
}

uint64_t
tracker_hash(const char *id, size_t len)
{
	return hash64(HASH64_INIT, id, len);
}

void
tracker_on_evict(struct tracker *t, tracker_evict_fn *fn, void *ud)
{
	t->evict = fn;
	t->evict_ud = ud;
}

/* Buckets for twice the slots, every used slot linked again. */
static int
rehash(struct tracker *t)
{
	unsigned n = t->n_buckets ? t->n_buckets : 1;
	while (n < t->capacity * 2)
		n *= 2;
	if (n == t->n_buckets)
		return 0;
	int *b = malloc(n * sizeof(*b));
	if (!b)
		return BR_ENOMEM;
	free(t->buckets);
	t->buckets = b;
	t->n_buckets = n;
	for (unsigned i = 0; i < n; i++)
		b[i] = -1;
	for (unsigned i = 0; i < t->high_water; i++) {
		struct prompt *p = slot(t, i);
		if (!p->used)
			continue;
		int *bucket = &b[p->hash & (n - 1)];
		p->next_in_bucket = *bucket;
		*bucket = (int) i;
	}
	return 0;
}

/* One more chunk of slots; BR_EFULL at the limit. */
static int
grow(struct tracker *t)
{
	if (t->n_chunks == t->max_chunks)
		return BR_EFULL;
	struct prompt *c = calloc(t->chunk, sizeof(*c));
	if (!c)
		return BR_ENOMEM;
	t->chunks[t->n_chunks++] = c;
	t->capacity += t->chunk;
	if (rehash(t) != 0) {
		t->capacity -= t->chunk;
		free(t->chunks[--t->n_chunks]);
		return BR_ENOMEM;
	}
	return 0;
}

struct tracker *
tracker_create(unsigned capacity)
{
	capacity = capacity ? capacity : 1;
	return tracker_create_max(capacity, capacity * TRACKER_GROWTH);
}

struct tracker *
tracker_create_max(unsigned capacity, unsigned max_live)
{
	struct tracker *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	capacity = capacity ? capacity : 1;
	t->chunk = capacity < TRACKER_CHUNK ? capacity : TRACKER_CHUNK;
	unsigned first = (capacity + t->chunk - 1) / t->chunk;
	unsigned most = (max_live + t->chunk - 1) / t->chunk;
	t->max_chunks = most > first ? most : first;
	t->chunks = calloc(t->max_chunks, sizeof(*t->chunks));
	/* slots are handed out in order first (high_water), so untouched
	 * pages of the table stay out of RSS */
	t->free_head = -1;
	idset_init(&t->announced, TRACKER_ANNOUNCED);
	bool ok = t->chunks != NULL;
	for (unsigned i = 0; ok && i < first; i++)
		ok = grow(t) == 0;
	if (!ok) {
		tracker_destroy(t);
		return NULL;
	}
	return t;
}

static void
free_buffers(struct prompt *p)
{
	node_list_free(&p->cached);
	node_list_free(&p->done);
	buf_free(&p->error);
	buf_free(&p->state);
	buf_free(&p->preview_held);
	for (unsigned i = 0; i < p->n_outputs; i++)
		buf_free(&p->outputs[i].json);
	free(p->outputs);
}

void
tracker_destroy(struct tracker *t)
{
	if (!t)
		return;
	for (unsigned i = 0; i < t->high_water; i++)
		if (slot(t, i)->used)
			free_buffers(slot(t, i));
	for (unsigned c = 0; c < t->n_chunks; c++)
		free(t->chunks[c]);
	free(t->chunks);
	free(t->buckets);
	idset_free(&t->announced);
	free(t);
}

struct prompt *
tracker_find(struct tracker *t, const char *id, size_t len)
{
	uint64_t h = tracker_hash(id, len);
	int i = t->buckets[h & (t->n_buckets - 1)];
	while (i >= 0) {
		struct prompt *p = slot(t, (unsigned) i);
		if (p->hash == h && p->id_len == len
		    && memcmp(p->id, id, len) == 0)
			return p;
		i = p->next_in_bucket;
	}
	return NULL;
}

void
tracker_remove(struct tracker *t, struct prompt *p)
{
	int idx = index_of(t, p);
	int *link = &t->buckets[p->hash & (t->n_buckets - 1)];
	while (*link >= 0 && *link != idx)
		link = &slot(t, (unsigned) *link)->next_in_bucket;
	if (*link == idx)
		*link = p->next_in_bucket;
	free_buffers(p);
	memset(p, 0, sizeof(*p));
	p->next_in_bucket = t->free_head;
	t->free_head = idx;
	t->count--;
}

static struct prompt *
pick_victim(struct tracker *t)
{
	struct prompt *finished = NULL, *queued = NULL, *any = NULL;
	for (unsigned i = 0; i < t->high_water; i++) {
		struct prompt *p = slot(t, i);
		if (!p->used)
			continue;
		if (p->terminal_sent) {
			if (!finished
			    || p->finished_at < finished->finished_at)
				finished = p;
		} else if (p->status == PS_QUEUED) {
			if (!queued || p->queued_at < queued->queued_at)
				queued = p;
		} else if (!any) {
			any = p;
		}
	}
	return finished ? finished : queued ? queued : any;
}

/* Frees a slot: the finished prompt that finished first goes, else the
 * table grows, else (at the limit) the oldest queued prompt goes. */
static void
make_room(struct tracker *t)
{
	struct prompt *victim = pick_victim(t);
	if (!victim->terminal_sent && grow(t) == 0)
		return;
	if (!victim->terminal_sent)
		(void) idset_add(&t->announced, victim->hash);
	if (t->evict)
		t->evict(t->evict_ud, victim);
	tracker_remove(t, victim);
}

struct prompt *
tracker_get(struct tracker *t, const char *id, size_t len, bool *created)
{
	struct prompt *p = tracker_find(t, id, len);
	*created = false;
	if (p)
		return p;
	if (len > PROMPT_ID_MAX)
		len = PROMPT_ID_MAX;
	if (t->free_head < 0 && t->high_water == t->capacity)
		make_room(t);
	int idx;
	if (t->free_head >= 0) {
		idx = t->free_head;
		t->free_head = slot(t, (unsigned) idx)->next_in_bucket;
	} else {
		idx = (int) t->high_water++;
	}
	p = slot(t, (unsigned) idx);
	memset(p, 0, sizeof(*p));
	memcpy(p->id, id, len);
	p->id[len] = '\0';
	p->id_len = len;
	topic_sanitize(p->tid, sizeof(p->tid), id, len);
	p->hash = tracker_hash(id, len);
	p->used = true;
	p->status = PS_QUEUED;
	/* evicted while live: its queued event went out */
	p->queued_sent = idset_has(&t->announced, p->hash);
	int *bucket = &t->buckets[p->hash & (t->n_buckets - 1)];
	p->next_in_bucket = *bucket;
	*bucket = idx;
	t->count++;
	*created = true;
	return p;
}

struct prompt *
tracker_next(struct tracker *t, unsigned *i)
{
	while (*i < t->high_water) {
		struct prompt *p = slot(t, (*i)++);
		if (p->used)
			return p;
	}
	return NULL;
}

unsigned
tracker_count(const struct tracker *t)
{
	return t->count;
}
