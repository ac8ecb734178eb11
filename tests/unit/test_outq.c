/* outq: order, bounds, drop policy, coalescing, recycling, and a
 * randomized comparison against a deliberately naive reference model. */
#include "outq.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "test.h"

static struct out_msg
mk(enum msg_class cls, const char *topic, const char *payload)
{
	struct out_msg m = { 0 };
	m.cls = cls;
	m.topic = topic;
	m.payload = payload;
	m.len = strlen(payload);
	m.qos = cls <= MSG_LIFECYCLE ? 1 : 0;
	return m;
}

/* Pops everything, appending "payload," for each message to out. */
static void
drain(struct outq *q, char *out, size_t cap)
{
	out[0] = '\0';
	const struct out_msg *m;
	while ((m = outq_peek(q)) != NULL) {
		size_t used = strlen(out);
		snprintf(out + used, cap - used, "%.*s,", (int) m->len,
		    (const char *) m->payload);
		outq_pop(q);
	}
}

static void
test_order_and_copy(void)
{
	struct outq *q = outq_create(100, 100000);
	char topic[16], payload[16];
	for (int i = 0; i < 10; i++) {
		snprintf(topic, sizeof(topic), "t/%d", i);
		snprintf(payload, sizeof(payload), "p%d", i);
		struct out_msg m = mk(i % MSG_CLASS_COUNT, topic, payload);
		CHECK_INT(outq_push(q, &m), BR_OK);
	}
	/* the queue copied: scribbling on our buffers changes nothing */
	memset(topic, 'x', sizeof(topic) - 1);
	memset(payload, 'x', sizeof(payload) - 1);
	CHECK_INT(outq_count(q), 10);
	const struct out_msg *m = outq_peek(q);
	CHECK_STR(m->topic, "t/0");
	CHECK_MEM(m->payload, m->len, "p0", 2);
	CHECK_INT(m->cls, MSG_CRITICAL);
	char out[256];
	drain(q, out, sizeof(out));
	CHECK_STR(out, "p0,p1,p2,p3,p4,p5,p6,p7,p8,p9,");
	CHECK_INT(outq_count(q), 0);
	CHECK_INT(outq_bytes(q), 0);
	CHECK(outq_peek(q) == NULL);
	outq_pop(q); /* popping an empty queue is harmless */
	CHECK_INT(outq_count(q), 0);
	outq_destroy(q);
}

static void
test_props_copied_and_counted(void)
{
	struct outq *q = outq_create(10, 1000);
	char ct[] = "application/json", inst[] = "gpu1", type[] = "progress",
	     pid[] = "abc";
	struct out_msg m = mk(MSG_PROGRESS, "a/b", "{}");
	m.props.content_type = ct;
	m.props.utf8 = true;
	m.props.expiry_s = 60;
	m.props.instance = inst;
	m.props.type = type;
	m.props.prompt_id = pid;
	m.retain = true;
	m.qos = 1;
	CHECK_INT(outq_push(q, &m), BR_OK);
	ct[0] = inst[0] = type[0] = pid[0] = 'X';
	/* topic 3 + payload 2 + 16 + 4 + 8 + 3 */
	CHECK_INT(outq_bytes(q), 36);
	const struct out_msg *v = outq_peek(q);
	CHECK_STR(v->props.content_type, "application/json");
	CHECK_STR(v->props.instance, "gpu1");
	CHECK_STR(v->props.type, "progress");
	CHECK_STR(v->props.prompt_id, "abc");
	CHECK(v->props.utf8);
	CHECK_INT(v->props.expiry_s, 60);
	CHECK(v->retain);
	CHECK_INT(v->qos, 1);
	CHECK(v->coalesce_key == NULL);
	outq_pop(q);
	m.props.content_type = NULL;
	m.props.instance = NULL;
	CHECK_INT(outq_push(q, &m), BR_OK);
	v = outq_peek(q);
	CHECK(v->props.content_type == NULL);
	CHECK(v->props.instance == NULL);
	CHECK_STR(v->props.type, "Xrogress");
	outq_destroy(q);
}

static void
test_bound_by_count(void)
{
	struct outq *q = outq_create(3, 0);
	struct out_msg a = mk(MSG_CRITICAL, "t", "a");
	struct out_msg b = mk(MSG_CRITICAL, "t", "b");
	struct out_msg c = mk(MSG_CRITICAL, "t", "c");
	struct out_msg d = mk(MSG_CRITICAL, "t", "d");
	CHECK_INT(outq_push(q, &a), BR_OK);
	CHECK_INT(outq_push(q, &b), BR_OK);
	CHECK_INT(outq_push(q, &c), BR_OK);
	/* same class: the oldest goes, the new one is kept */
	CHECK_INT(outq_push(q, &d), BR_OK);
	CHECK_INT(outq_count(q), 3);
	CHECK_INT(outq_dropped(q, MSG_CRITICAL), 1);
	char out[64];
	drain(q, out, sizeof(out));
	CHECK_STR(out, "b,c,d,");
	outq_destroy(q);
}

static void
test_bound_by_bytes(void)
{
	/* each message costs 1 (topic) + 9 (payload) = 10 bytes */
	struct outq *q = outq_create(0, 35);
	struct out_msg m1 = mk(MSG_PROGRESS, "t", "progress1");
	struct out_msg m2 = mk(MSG_PROGRESS, "t", "progress2");
	struct out_msg m3 = mk(MSG_PROGRESS, "t", "progress3");
	struct out_msg m4 = mk(MSG_PROGRESS, "t", "progress4");
	CHECK_INT(outq_push(q, &m1), BR_OK);
	CHECK_INT(outq_push(q, &m2), BR_OK);
	CHECK_INT(outq_push(q, &m3), BR_OK);
	CHECK_INT(outq_bytes(q), 30);
	CHECK_INT(outq_push(q, &m4), BR_OK);
	CHECK_INT(outq_bytes(q), 30);
	CHECK_INT(outq_dropped(q, MSG_PROGRESS), 1);
	/* a message bigger than the whole bound is dropped, nothing else */
	char big[64];
	memset(big, 'B', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	struct out_msg huge = mk(MSG_CRITICAL, "t", big);
	CHECK_INT(outq_push(q, &huge), BR_EFULL);
	CHECK_INT(outq_dropped(q, MSG_CRITICAL), 1);
	CHECK_INT(outq_count(q), 3);
	char out[64];
	drain(q, out, sizeof(out));
	CHECK_STR(out, "progress2,progress3,progress4,");
	outq_destroy(q);
}

static void
test_drop_order_by_class(void)
{
	struct outq *q = outq_create(8, 0);
	/* two of each class, interleaved */
	const char *names[]
	    = { "c1", "l1", "g1", "v1", "c2", "l2", "g2", "v2" };
	const enum msg_class cls[]
	    = { MSG_CRITICAL, MSG_LIFECYCLE, MSG_PROGRESS, MSG_PREVIEW,
		      MSG_CRITICAL, MSG_LIFECYCLE, MSG_PROGRESS, MSG_PREVIEW };
	for (int i = 0; i < 8; i++) {
		struct out_msg m = mk(cls[i], "t", names[i]);
		CHECK_INT(outq_push(q, &m), BR_OK);
	}
	const char *incoming[] = { "C3", "C4", "C5", "C6", "C7", "C8", "C9" };
	/* expected drop counts after each critical push: previews, then
	 * progress, then lifecycle, then the oldest critical */
	const int want[][MSG_CLASS_COUNT] = {
		{ 0, 0, 0, 1 },
		{ 0, 0, 0, 2 },
		{ 0, 0, 1, 2 },
		{ 0, 0, 2, 2 },
		{ 0, 1, 2, 2 },
		{ 0, 2, 2, 2 },
		{ 1, 2, 2, 2 },
	};
	for (int i = 0; i < 7; i++) {
		struct out_msg m = mk(MSG_CRITICAL, "t", incoming[i]);
		CHECK_INT(outq_push(q, &m), BR_OK);
		for (int c = 0; c < MSG_CLASS_COUNT; c++)
			CHECK_INT(outq_dropped(q, c), want[i][c]);
		CHECK_INT(outq_count(q), 8);
	}
	char out[128];
	drain(q, out, sizeof(out));
	CHECK_STR(out, "c2,C3,C4,C5,C6,C7,C8,C9,");
	outq_destroy(q);
}

/* An urgent message goes ahead of everything queued; within its class it
 * is still the youngest, so critical drops take older ones first; a newer
 * urgent one with the same key replaces it, again at the head. */
static void
test_urgent_goes_first(void)
{
	struct outq *q = outq_create(4, 0);
	const char *names[] = { "c1", "l1", "c2" };
	const enum msg_class cls[]
	    = { MSG_CRITICAL, MSG_LIFECYCLE, MSG_CRITICAL };
	for (int i = 0; i < 3; i++) {
		struct out_msg m = mk(cls[i], "t", names[i]);
		CHECK_INT(outq_push(q, &m), BR_OK);
	}
	struct out_msg u = mk(MSG_CRITICAL, "state", "U1");
	u.urgent = true;
	u.coalesce_key = "state";
	CHECK_INT(outq_push(q, &u), BR_OK);
	CHECK_STR((const char *) outq_peek(q)->payload, "U1");
	/* full: a critical push drops the lifecycle one, then c1, never U */
	struct out_msg c3 = mk(MSG_CRITICAL, "t", "c3");
	CHECK_INT(outq_push(q, &c3), BR_OK);
	struct out_msg c4 = mk(MSG_CRITICAL, "t", "c4");
	CHECK_INT(outq_push(q, &c4), BR_OK);
	CHECK_INT(outq_dropped(q, MSG_LIFECYCLE), 1);
	CHECK_INT(outq_dropped(q, MSG_CRITICAL), 1);
	u.payload = "U2";
	CHECK_INT(outq_push(q, &u), BR_OK);
	CHECK_INT(outq_coalesced(q), 1);
	char out[64];
	drain(q, out, sizeof(out));
	CHECK_STR(out, "U2,c2,c3,c4,");
	/* an urgent push into an empty queue, then a normal one */
	u.payload = "U3";
	CHECK_INT(outq_push(q, &u), BR_OK);
	CHECK_INT(outq_push(q, &c3), BR_OK);
	drain(q, out, sizeof(out));
	CHECK_STR(out, "U3,c3,");
	outq_destroy(q);
}

static void
test_incoming_lowest_class_dropped(void)
{
	struct outq *q = outq_create(2, 0);
	struct out_msg c = mk(MSG_CRITICAL, "t", "c");
	struct out_msg l = mk(MSG_LIFECYCLE, "t", "l");
	struct out_msg p = mk(MSG_PREVIEW, "t", "p");
	CHECK_INT(outq_push(q, &c), BR_OK);
	CHECK_INT(outq_push(q, &l), BR_OK);
	CHECK_INT(outq_push(q, &p), BR_EFULL);
	CHECK_INT(outq_dropped(q, MSG_PREVIEW), 1);
	CHECK_INT(outq_dropped(q, MSG_LIFECYCLE), 0);
	CHECK_INT(outq_dropped(q, MSG_CRITICAL), 0);
	/* a lifecycle message evicts the older lifecycle one */
	struct out_msg l2 = mk(MSG_LIFECYCLE, "t", "l2");
	CHECK_INT(outq_push(q, &l2), BR_OK);
	CHECK_INT(outq_dropped(q, MSG_LIFECYCLE), 1);
	char out[64];
	drain(q, out, sizeof(out));
	CHECK_STR(out, "c,l2,");
	outq_destroy(q);
}

static void
test_coalesce(void)
{
	struct outq *q = outq_create(10, 0);
	struct out_msg a = mk(MSG_PROGRESS, "t", "A1");
	a.coalesce_key = "progress/p/a";
	struct out_msg b = mk(MSG_PROGRESS, "t", "B1");
	b.coalesce_key = "progress/p/b";
	struct out_msg x = mk(MSG_LIFECYCLE, "t", "X");
	CHECK_INT(outq_push(q, &a), BR_OK);
	CHECK_INT(outq_push(q, &b), BR_OK);
	CHECK_INT(outq_push(q, &x), BR_OK);
	struct out_msg a2 = mk(MSG_PROGRESS, "t", "A2");
	char key[] = "progress/p/a";
	a2.coalesce_key = key;
	CHECK_INT(outq_push(q, &a2), BR_OK);
	key[0] = 'Z'; /* the key was copied */
	struct out_msg a3 = mk(MSG_PROGRESS, "t", "A3");
	a3.coalesce_key = "progress/p/a";
	CHECK_INT(outq_push(q, &a3), BR_OK);
	CHECK_INT(outq_coalesced(q), 2);
	CHECK_INT(outq_dropped(q, MSG_PROGRESS), 0);
	CHECK_INT(outq_count(q), 3);
	CHECK_INT(outq_bytes(q), 1 + 2 + 1 + 1 + 1 + 2);
	CHECK_STR(outq_peek(q)->coalesce_key, "progress/p/b");
	char out[64];
	drain(q, out, sizeof(out));
	CHECK_STR(out, "B1,X,A3,");
	/* a popped key no longer coalesces */
	CHECK_INT(outq_push(q, &a), BR_OK);
	CHECK_INT(outq_coalesced(q), 2);
	outq_destroy(q);
}

/* Correlation data is copied as bytes (a NUL inside included), counted in
 * the bytes bound, and absent when not given. */
static void
test_correlation_copied_and_counted(void)
{
	struct outq *q = outq_create(10, 1000);
	char corr[] = { 'k', 0, '\xfe', 'z' };
	struct out_msg m = mk(MSG_CRITICAL, "a/b", "{}");
	m.props.correlation = corr;
	m.props.correlation_len = sizeof(corr);
	CHECK_INT(outq_push(q, &m), BR_OK);
	struct out_msg plain = mk(MSG_CRITICAL, "a/c", "{}");
	CHECK_INT(outq_push(q, &plain), BR_OK);
	corr[0] = 'X';
	/* topics 3 + 3, payloads 2 + 2, correlation 4 */
	CHECK_INT(outq_bytes(q), 14);
	const struct out_msg *v = outq_peek(q);
	CHECK_INT(v->props.correlation_len, 4);
	CHECK(v->props.correlation != NULL
	    && memcmp(v->props.correlation, "k\0\xfez", 4) == 0);
	outq_pop(q);
	v = outq_peek(q);
	CHECK(v->props.correlation == NULL);
	CHECK_INT(v->props.correlation_len, 0);
	outq_destroy(q);
}

static void
test_many_keys_hash_growth(void)
{
	struct outq *q = outq_create(0, 0);
	char key[32], payload[32];
	for (int round = 0; round < 2; round++)
		for (int i = 0; i < 5000; i++) {
			snprintf(key, sizeof(key), "k/%d", i);
			snprintf(payload, sizeof(payload), "%d/%d", round, i);
			struct out_msg m = mk(MSG_PROGRESS, "t", payload);
			m.coalesce_key = key;
			CHECK_INT(outq_push(q, &m), BR_OK);
		}
	CHECK_INT(outq_count(q), 5000);
	CHECK_INT(outq_coalesced(q), 5000);
	const struct out_msg *m = outq_peek(q);
	CHECK_MEM(m->payload, m->len, "1/0", 3);
	outq_destroy(q);
}

static void
test_big_payloads(void)
{
	size_t n = 3 * 1024 * 1024;
	unsigned char *big = malloc(n);
	for (size_t i = 0; i < n; i++)
		big[i] = (unsigned char) (i * 31 + 7);
	struct outq *q = outq_create(10, 8 * 1024 * 1024);
	struct out_msg m
	    = { .cls = MSG_PREVIEW, .topic = "p", .payload = big, .len = n };
	CHECK_INT(outq_push(q, &m), BR_OK);
	CHECK_INT(outq_push(q, &m), BR_OK);
	/* the third does not fit: the oldest preview goes */
	CHECK_INT(outq_push(q, &m), BR_OK);
	CHECK_INT(outq_dropped(q, MSG_PREVIEW), 1);
	CHECK_INT(outq_bytes(q), 2 * (n + 1));
	const struct out_msg *v = outq_peek(q);
	CHECK_INT(v->len, n);
	CHECK(memcmp(v->payload, big, n) == 0);
	/* binary payloads with NUL bytes survive */
	outq_pop(q);
	outq_pop(q);
	const unsigned char bin[] = { 0, 1, 0, 255 };
	struct out_msg b = { .cls = MSG_PREVIEW,
		.topic = "b",
		.payload = bin,
		.len = sizeof(bin) };
	CHECK_INT(outq_push(q, &b), BR_OK);
	v = outq_peek(q);
	CHECK_MEM(v->payload, v->len, bin, sizeof(bin));
	outq_destroy(q);
	free(big);
}

static void
test_recycling_does_not_allocate(void)
{
	struct outq *q = outq_create(1000, 0);
	char payload[300];
	memset(payload, 'p', sizeof(payload) - 1);
	payload[sizeof(payload) - 1] = '\0';
	for (int i = 0; i < 50; i++) {
		struct out_msg m = mk(MSG_LIFECYCLE, "a/topic", payload + i);
		CHECK_INT(outq_push(q, &m), BR_OK);
	}
	for (int i = 0; i < 50; i++)
		outq_pop(q);
	uint64_t before = outq_allocations(q);
	CHECK(before > 0);
	for (int i = 0; i < 100000; i++) {
		struct out_msg m
		    = mk(MSG_LIFECYCLE, "a/topic", payload + i % 50);
		CHECK_INT(outq_push(q, &m), BR_OK);
		if (i % 3 == 2) {
			outq_pop(q);
			outq_pop(q);
			outq_pop(q);
		}
	}
	CHECK_INT(outq_allocations(q), before);
	outq_destroy(q);
}

/* Reference model: an array in order, drops by linear scans. */
struct ref_msg {
	int cls;
	int id;
	int key; /* -1: none */
	size_t cost;
};

struct ref {
	struct ref_msg *v;
	size_t n;
	size_t max_msgs, max_bytes;
	uint64_t dropped[MSG_CLASS_COUNT];
	uint64_t coalesced;
};

static size_t
ref_bytes(const struct ref *r)
{
	size_t b = 0;
	for (size_t i = 0; i < r->n; i++)
		b += r->v[i].cost;
	return b;
}

static void
ref_remove(struct ref *r, size_t i)
{
	memmove(&r->v[i], &r->v[i + 1], (r->n - i - 1) * sizeof(r->v[0]));
	r->n--;
}

static bool
ref_fits(const struct ref *r, size_t cost)
{
	return (r->max_msgs == 0 || r->n + 1 <= r->max_msgs)
	    && (r->max_bytes == 0 || ref_bytes(r) + cost <= r->max_bytes);
}

static int
ref_push(struct ref *r, struct ref_msg m)
{
	if (m.key >= 0)
		for (size_t i = 0; i < r->n; i++)
			if (r->v[i].key == m.key) {
				ref_remove(r, i);
				r->coalesced++;
				break;
			}
	/* would dropping every message of class >= m.cls be enough? */
	size_t keep_n = 0, keep_b = 0;
	for (size_t i = 0; i < r->n; i++)
		if (r->v[i].cls < m.cls) {
			keep_n++;
			keep_b += r->v[i].cost;
		}
	if ((r->max_msgs != 0 && keep_n + 1 > r->max_msgs)
	    || (r->max_bytes != 0 && keep_b + m.cost > r->max_bytes)) {
		r->dropped[m.cls]++;
		return BR_EFULL;
	}
	while (!ref_fits(r, m.cost)) {
		int lowest = -1;
		for (size_t i = 0; i < r->n; i++)
			if (r->v[i].cls > lowest)
				lowest = r->v[i].cls;
		for (size_t i = 0; i < r->n; i++)
			if (r->v[i].cls == lowest) {
				r->dropped[lowest]++;
				ref_remove(r, i);
				break;
			}
	}
	r->v[r->n++] = m;
	return BR_OK;
}

static void
test_randomized_against_model(void)
{
	srand(12345);
	for (int trial = 0; trial < 40; trial++) {
		size_t max_msgs = (size_t) (rand() % 20);
		size_t max_bytes
		    = (size_t) (rand() % 4 == 0 ? 0 : rand() % 400);
		struct outq *q = outq_create(max_msgs, max_bytes);
		struct ref r = { .v = calloc(5000, sizeof(struct ref_msg)),
			.max_msgs = max_msgs,
			.max_bytes = max_bytes };
		int next_id = 0;
		for (int step = 0; step < 3000; step++) {
			if (rand() % 3 == 0) {
				const struct out_msg *m = outq_peek(q);
				CHECK_INT(m != NULL, r.n > 0);
				if (m == NULL)
					continue;
				CHECK_INT(atoi(m->topic), r.v[0].id);
				CHECK_INT(m->cls, r.v[0].cls);
				outq_pop(q);
				ref_remove(&r, 0);
				continue;
			}
			char topic[16], key[16], payload[128];
			struct ref_msg rm = { .cls = rand() % MSG_CLASS_COUNT,
				.id = next_id++,
				.key = rand() % 2 ? rand() % 6 : -1 };
			snprintf(topic, sizeof(topic), "%d", rm.id);
			snprintf(key, sizeof(key), "k%d", rm.key);
			size_t plen = (size_t) (rand() % 100);
			memset(payload, 'x', plen);
			payload[plen] = '\0';
			struct out_msg m = mk(rm.cls, topic, payload);
			m.coalesce_key = rm.key >= 0 ? key : NULL;
			if (rand() % 4 == 0)
				m.props.type = "some-type";
			rm.cost = strlen(topic) + plen
			    + (m.props.type ? strlen(m.props.type) : 0);
			CHECK_INT(outq_push(q, &m), ref_push(&r, rm));
			CHECK_INT(outq_count(q), r.n);
			CHECK_INT(outq_bytes(q), ref_bytes(&r));
		}
		for (int c = 0; c < MSG_CLASS_COUNT; c++)
			CHECK_INT(outq_dropped(q, c), r.dropped[c]);
		CHECK_INT(outq_coalesced(q), r.coalesced);
		/* final contents, in order */
		for (size_t i = 0; i < r.n; i++) {
			const struct out_msg *m = outq_peek(q);
			CHECK(m != NULL);
			if (m == NULL)
				break;
			CHECK_INT(atoi(m->topic), r.v[i].id);
			outq_pop(q);
		}
		CHECK(outq_peek(q) == NULL);
		free(r.v);
		outq_destroy(q);
	}
}

static void
test_class_names(void)
{
	CHECK_STR(msg_class_name(MSG_CRITICAL), "critical");
	CHECK_STR(msg_class_name(MSG_LIFECYCLE), "lifecycle");
	CHECK_STR(msg_class_name(MSG_PROGRESS), "progress");
	CHECK_STR(msg_class_name(MSG_PREVIEW), "preview");
	CHECK_STR(msg_class_name(7), "unknown");
}

int
main(void)
{
	RUN(test_order_and_copy);
	RUN(test_props_copied_and_counted);
	RUN(test_bound_by_count);
	RUN(test_bound_by_bytes);
	RUN(test_drop_order_by_class);
	RUN(test_urgent_goes_first);
	RUN(test_incoming_lowest_class_dropped);
	RUN(test_coalesce);
	RUN(test_many_keys_hash_growth);
	RUN(test_big_payloads);
	RUN(test_recycling_does_not_allocate);
	RUN(test_randomized_against_model);
	RUN(test_class_names);
	RUN(test_correlation_copied_and_counted);
	TEST_MAIN_END();
}
