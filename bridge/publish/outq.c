/* The bounded outgoing queue. Every entry is threaded through three
 * structures at once: the global FIFO (order of publication), a per-class
 * FIFO (so the oldest message of the lowest class is found in O(1) when a
 * bound is hit) and, when it has a coalesce key, a chained hash table (so
 * the previous message with the same key is found in O(1)). An entry and
 * its strings live in one allocation; entries up to OUTQ_POOLED_MAX bytes
 * come from size-class free lists, so a steady stream of pushes and pops
 * does not call malloc. */
#include "outq.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "hash.h"

/* Size classes of recycled entries: 256, 512, ... 4096 bytes of strings.
 * Bigger messages (previews) get an exact allocation that is not kept. */
#define OUTQ_POOL_CLASSES 5
#define OUTQ_POOL_MIN     256
#define OUTQ_POOLED_MAX   (OUTQ_POOL_MIN << (OUTQ_POOL_CLASSES - 1))
/* Recycled entries kept per size class: enough for a busy steady state,
 * small enough that a long outage does not pin its peak memory. */
#define OUTQ_POOL_KEEP     128
#define OUTQ_HASH_MIN_BITS 6
#define OUTQ_NO_POOL       (-1)

struct entry {
	struct out_msg msg; /* view into data[] */
	struct entry *prev, *next; /* global FIFO */
	struct entry *cls_prev, *cls_next;
	struct entry *hash_next; /* only for entries with a key */
	uint32_t hash;
	int pool; /* size class, or OUTQ_NO_POOL */
	size_t cost; /* topic + payload + property strings */
	char data[];
};

struct class_list {
	struct entry *head, *tail;
	size_t count;
	size_t bytes;
};

struct outq {
	size_t max_msgs;
	size_t max_bytes;
	struct entry *head, *tail;
	size_t count;
	size_t bytes;
	struct class_list cls[MSG_CLASS_COUNT];
	uint64_t dropped[MSG_CLASS_COUNT];
	uint64_t coalesced;
	uint64_t allocations;
	struct entry **buckets; /* 1 << hash_bits chains */
	unsigned hash_bits;
	size_t keyed; /* entries in the hash table */
	struct entry *pool[OUTQ_POOL_CLASSES];
	size_t pool_len[OUTQ_POOL_CLASSES];
};

const char *
msg_class_name(int cls)
{
	static const char *const names[MSG_CLASS_COUNT]
	    = { "critical", "lifecycle", "progress", "preview" };
	if (cls < 0 || cls >= MSG_CLASS_COUNT)
		return "unknown";
	return names[cls];
}

const char *
pub_refusal_name(int r)
{
	static const char *const names[PR_COUNT]
	    = { "not_authorized", "topic_name_invalid", "packet_too_large",
		      "quota_exceeded", "payload_format_invalid", "other" };
	return r >= 0 && r < PR_COUNT ? names[r] : "other";
}

/* FNV-1a: keys are short ASCII topics, collisions only cost a strcmp. */
static uint32_t
hash_key(const char *s)
{
	return hash32(HASH32_INIT, s, strlen(s));
}

struct outq *
outq_create(size_t max_msgs, size_t max_bytes)
{
	struct outq *q = calloc(1, sizeof(*q));
	if (q == NULL)
		return NULL;
	q->hash_bits = OUTQ_HASH_MIN_BITS;
	q->buckets = calloc((size_t) 1 << q->hash_bits, sizeof(*q->buckets));
	if (q->buckets == NULL) {
		free(q);
		return NULL;
	}
	q->max_msgs = max_msgs;
	q->max_bytes = max_bytes;
	return q;
}

void
outq_destroy(struct outq *q)
{
	if (q == NULL)
		return;
	struct entry *e = q->head;
	while (e != NULL) {
		struct entry *next = e->next;
		free(e);
		e = next;
	}
	for (int i = 0; i < OUTQ_POOL_CLASSES; i++) {
		e = q->pool[i];
		while (e != NULL) {
			struct entry *next = e->next;
			free(e);
			e = next;
		}
	}
	free(q->buckets);
	free(q);
}

static size_t
slen(const char *s)
{
	return s != NULL ? strlen(s) : 0;
}

/* Bytes a message counts against max_bytes. */
static size_t
msg_cost(const struct out_msg *m)
{
	const struct out_props *p = &m->props;
	return slen(m->topic) + m->len + slen(p->content_type)
	    + slen(p->instance) + slen(p->type) + slen(p->prompt_id)
	    + p->correlation_len;
}

/* Bytes of data[] needed to hold copies of every string plus the payload
 * (NUL-terminated, so text payloads can be logged safely). */
static size_t
msg_storage(const struct out_msg *m)
{
	const struct out_props *p = &m->props;
	size_t n = m->len + 1 + slen(m->topic) + 1 + p->correlation_len;
	const char *opt[] = { p->content_type, p->instance, p->type,
		p->prompt_id, m->coalesce_key };
	for (size_t i = 0; i < sizeof(opt) / sizeof(opt[0]); i++)
		if (opt[i] != NULL)
			n += strlen(opt[i]) + 1;
	return n;
}

static int
pool_for(size_t storage)
{
	size_t cap = OUTQ_POOL_MIN;
	for (int i = 0; i < OUTQ_POOL_CLASSES; i++, cap <<= 1)
		if (storage <= cap)
			return i;
	return OUTQ_NO_POOL;
}

static struct entry *
entry_get(struct outq *q, size_t storage)
{
	int pool = pool_for(storage);
	if (pool != OUTQ_NO_POOL && q->pool[pool] != NULL) {
		struct entry *e = q->pool[pool];
		q->pool[pool] = e->next;
		q->pool_len[pool]--;
		return e;
	}
	size_t cap
	    = pool != OUTQ_NO_POOL ? (size_t) OUTQ_POOL_MIN << pool : storage;
	struct entry *e = malloc(sizeof(*e) + cap);
	if (e == NULL)
		return NULL;
	q->allocations++;
	e->pool = pool;
	return e;
}

static void
entry_put(struct outq *q, struct entry *e)
{
	if (e->pool == OUTQ_NO_POOL
	    || q->pool_len[e->pool] >= OUTQ_POOL_KEEP) {
		free(e);
		return;
	}
	e->next = q->pool[e->pool];
	q->pool[e->pool] = e;
	q->pool_len[e->pool]++;
}

/* Copies s (may be NULL) to *cursor; returns the copy or NULL. */
static const char *
copy_str(char **cursor, const char *s)
{
	if (s == NULL)
		return NULL;
	size_t n = strlen(s) + 1;
	char *dst = *cursor;
	memcpy(dst, s, n);
	*cursor += n;
	return dst;
}

static void
entry_fill(struct entry *e, const struct out_msg *m, size_t cost)
{
	char *cursor = e->data;
	e->msg = *m;
	memcpy(cursor, m->payload != NULL ? m->payload : "", m->len);
	cursor[m->len] = '\0';
	e->msg.payload = cursor;
	cursor += m->len + 1;
	e->msg.topic = copy_str(&cursor, m->topic != NULL ? m->topic : "");
	e->msg.props.content_type = copy_str(&cursor, m->props.content_type);
	e->msg.props.instance = copy_str(&cursor, m->props.instance);
	e->msg.props.type = copy_str(&cursor, m->props.type);
	e->msg.props.prompt_id = copy_str(&cursor, m->props.prompt_id);
	e->msg.coalesce_key = copy_str(&cursor, m->coalesce_key);
	if (m->props.correlation != NULL) {
		memcpy(cursor, m->props.correlation, m->props.correlation_len);
		e->msg.props.correlation = cursor;
	}
	e->cost = cost;
	e->hash
	    = e->msg.coalesce_key != NULL ? hash_key(e->msg.coalesce_key) : 0;
}

static struct entry **
bucket_of(struct outq *q, uint32_t hash)
{
	return &q->buckets[hash & (((uint32_t) 1 << q->hash_bits) - 1)];
}

static struct entry *
hash_find(struct outq *q, const char *key, uint32_t hash)
{
	for (struct entry *e = *bucket_of(q, hash); e != NULL;
	     e = e->hash_next)
		if (e->hash == hash && strcmp(e->msg.coalesce_key, key) == 0)
			return e;
	return NULL;
}

static void
hash_unlink(struct outq *q, struct entry *e)
{
	struct entry **link = bucket_of(q, e->hash);
	while (*link != e)
		link = &(*link)->hash_next;
	*link = e->hash_next;
	q->keyed--;
}

/* Doubles the table when chains would get longer than one on average;
 * failure to grow only makes chains longer, so it is not an error. */
static void
hash_maybe_grow(struct outq *q)
{
	size_t n = (size_t) 1 << q->hash_bits;
	if (q->keyed < n || q->hash_bits >= 30)
		return;
	struct entry **grown = calloc(n * 2, sizeof(*grown));
	if (grown == NULL)
		return;
	for (size_t i = 0; i < n; i++) {
		struct entry *e = q->buckets[i];
		while (e != NULL) {
			struct entry *next = e->hash_next;
			struct entry **b = &grown[e->hash & (n * 2 - 1)];
			e->hash_next = *b;
			*b = e;
			e = next;
		}
	}
	free(q->buckets);
	q->buckets = grown;
	q->hash_bits++;
}

static void
hash_link(struct outq *q, struct entry *e)
{
	hash_maybe_grow(q);
	struct entry **b = bucket_of(q, e->hash);
	e->hash_next = *b;
	*b = e;
	q->keyed++;
}

/* Links e last in its class (the youngest, dropped last) and last in the
 * global order, or first there when it is urgent. */
static void
link_entry(struct outq *q, struct entry *e)
{
	struct class_list *c = &q->cls[e->msg.cls];
	if (e->msg.urgent) {
		e->prev = NULL;
		e->next = q->head;
		if (q->head != NULL)
			q->head->prev = e;
		else
			q->tail = e;
		q->head = e;
	} else {
		e->next = NULL;
		e->prev = q->tail;
		if (q->tail != NULL)
			q->tail->next = e;
		else
			q->head = e;
		q->tail = e;
	}
	e->cls_next = NULL;
	e->cls_prev = c->tail;
	if (c->tail != NULL)
		c->tail->cls_next = e;
	else
		c->head = e;
	c->tail = e;
	c->count++;
	c->bytes += e->cost;
	q->count++;
	q->bytes += e->cost;
	if (e->msg.coalesce_key != NULL)
		hash_link(q, e);
}

/* Takes e out of every structure and recycles it. */
static void
remove_entry(struct outq *q, struct entry *e)
{
	struct class_list *c = &q->cls[e->msg.cls];
	if (e->prev != NULL)
		e->prev->next = e->next;
	else
		q->head = e->next;
	if (e->next != NULL)
		e->next->prev = e->prev;
	else
		q->tail = e->prev;
	if (e->cls_prev != NULL)
		e->cls_prev->cls_next = e->cls_next;
	else
		c->head = e->cls_next;
	if (e->cls_next != NULL)
		e->cls_next->cls_prev = e->cls_prev;
	else
		c->tail = e->cls_prev;
	c->count--;
	c->bytes -= e->cost;
	q->count--;
	q->bytes -= e->cost;
	if (e->msg.coalesce_key != NULL)
		hash_unlink(q, e);
	entry_put(q, e);
}

static bool
fits(const struct outq *q, size_t count, size_t bytes, size_t cost)
{
	bool count_ok = q->max_msgs == 0 || count + 1 <= q->max_msgs;
	bool bytes_ok = q->max_bytes == 0 || bytes + cost <= q->max_bytes;
	return count_ok && bytes_ok;
}

/* Drops queued messages of classes cls..lowest (lowest first, oldest first)
 * until a message of the given cost fits. Drops nothing and returns false
 * when even dropping all of them would not be enough. */
static bool
make_room(struct outq *q, enum msg_class cls, size_t cost)
{
	size_t count = q->count, bytes = q->bytes;
	for (int c = cls; c < MSG_CLASS_COUNT; c++) {
		count -= q->cls[c].count;
		bytes -= q->cls[c].bytes;
	}
	if (!fits(q, count, bytes, cost))
		return false;
	for (int c = MSG_CLASS_COUNT - 1; c >= (int) cls; c--) {
		while (q->cls[c].head != NULL
		    && !fits(q, q->count, q->bytes, cost)) {
			q->dropped[c]++;
			remove_entry(q, q->cls[c].head);
		}
	}
	return true;
}

int
outq_push(struct outq *q, const struct out_msg *m)
{
	if (q == NULL || m == NULL || m->cls < 0 || m->cls >= MSG_CLASS_COUNT)
		return BR_EINVAL;
	if (m->coalesce_key != NULL) {
		struct entry *old
		    = hash_find(q, m->coalesce_key, hash_key(m->coalesce_key));
		if (old != NULL) {
			q->coalesced++;
			remove_entry(q, old);
		}
	}
	size_t cost = msg_cost(m);
	if (!make_room(q, m->cls, cost)) {
		q->dropped[m->cls]++;
		return BR_EFULL;
	}
	struct entry *e = entry_get(q, msg_storage(m));
	if (e == NULL)
		return BR_ENOMEM;
	entry_fill(e, m, cost);
	link_entry(q, e);
	return BR_OK;
}

const struct out_msg *
outq_peek(const struct outq *q)
{
	return q->head != NULL ? &q->head->msg : NULL;
}

void
outq_pop(struct outq *q)
{
	if (q->head != NULL)
		remove_entry(q, q->head);
}

size_t
outq_count(const struct outq *q)
{
	return q->count;
}

size_t
outq_bytes(const struct outq *q)
{
	return q->bytes;
}

uint64_t
outq_dropped(const struct outq *q, enum msg_class cls)
{
	if (cls < 0 || cls >= MSG_CLASS_COUNT)
		return 0;
	return q->dropped[cls];
}

uint64_t
outq_coalesced(const struct outq *q)
{
	return q->coalesced;
}

uint64_t
outq_allocations(const struct outq *q)
{
	return q->allocations;
}
