/* The prompt table: lookup, creation, eviction order, buffers. */
#include "idset.h"
#include "test.h"
#include "tracker.h"

static void
test_find_and_get(void)
{
	struct tracker *t = tracker_create(8);
	bool created;
	struct prompt *p = tracker_get(t, "a/b", 3, &created);
	CHECK(created && p);
	CHECK_STR(p->id, "a/b");
	CHECK_STR(p->tid, "a_b");
	CHECK_INT(p->status, PS_QUEUED);
	CHECK(tracker_get(t, "a/b", 3, &created) == p && !created);
	CHECK(tracker_find(t, "a/b", 3) == p);
	CHECK(tracker_find(t, "a/c", 3) == NULL);
	CHECK_INT(tracker_count(t), 1);
	node_list_add(&p->done, "1", 5);
	tracker_remove(t, p);
	CHECK(tracker_find(t, "a/b", 3) == NULL);
	CHECK_INT(tracker_count(t), 0);
	tracker_destroy(t);
}

static void
test_eviction_prefers_finished(void)
{
	struct tracker *t = tracker_create(4);
	bool created;
	char id[16];
	for (int i = 0; i < 4; i++) {
		snprintf(id, sizeof(id), "p%d", i);
		struct prompt *p = tracker_get(t, id, strlen(id), &created);
		p->queued_at = 100 + i;
		if (i == 2 || i == 3) {
			p->terminal_sent = true;
			p->finished_at = i == 2 ? 500 : 400;
		}
	}
	/* full: the prompt that finished first (p3) goes */
	tracker_get(t, "p4", 2, &created)->queued_at = 200;
	CHECK(created);
	CHECK(tracker_find(t, "p3", 2) == NULL);
	CHECK(tracker_find(t, "p2", 2) != NULL);
	tracker_get(t, "p5", 2, &created)->queued_at = 201;
	CHECK(tracker_find(t, "p2", 2) == NULL);
	/* only live prompts left: the table grows (by 4 here), none goes */
	struct prompt *p1 = tracker_find(t, "p1", 2);
	p1->status = PS_RUNNING;
	tracker_get(t, "p6", 2, &created);
	CHECK(tracker_find(t, "p0", 2) != NULL);
	CHECK(tracker_find(t, "p1", 2) == p1);
	CHECK_INT(tracker_count(t), 5);
	unsigned i = 0, n = 0;
	while (tracker_next(t, &i))
		n++;
	CHECK_INT(n, 5);
	tracker_destroy(t);
}

/* Live prompts stay (their pointers too) up to four times the first size;
 * past it the oldest queued one goes, but comes back announced. */
static void
test_live_prompts_grow_the_table(void)
{
	struct tracker *t = tracker_create(4);
	bool created;
	char id[16];
	struct prompt *first = tracker_get(t, "q0", 2, &created);
	first->queued_sent = true;
	first->status = PS_RUNNING;
	for (int i = 1; i < 16; i++) {
		snprintf(id, sizeof(id), "q%d", i);
		struct prompt *p = tracker_get(t, id, strlen(id), &created);
		CHECK(created);
		p->queued_sent = true;
		p->queued_at = 100 + i;
	}
	CHECK_INT(tracker_count(t), 16);
	CHECK(tracker_find(t, "q0", 2) == first);
	CHECK_STR(first->id, "q0");
	for (int i = 0; i < 16; i++) {
		snprintf(id, sizeof(id), "q%d", i);
		CHECK(tracker_find(t, id, strlen(id)) != NULL);
	}
	/* the limit: q1 (oldest queued; q0 runs) goes, remembered */
	tracker_get(t, "q16", 3, &created)->queued_at = 200;
	CHECK_INT(tracker_count(t), 16);
	CHECK(tracker_find(t, "q1", 2) == NULL);
	CHECK(tracker_find(t, "q0", 2) == first);
	struct prompt *back = tracker_get(t, "q1", 2, &created);
	CHECK(created && back->queued_sent);
	CHECK(!tracker_find(t, "q16", 3)
	    || !tracker_find(t, "q16", 3)->queued_sent);
	tracker_destroy(t);
}

/* A table that keeps 4 finished prompts but holds up to 32 live ones (not
 * the 16 of tracker_create(4)). */
static void
test_finished_kept_apart_from_live_limit(void)
{
	struct tracker *t = tracker_create_max(4, 32);
	bool created;
	char id[16];
	for (int i = 0; i < 10; i++) {
		snprintf(id, sizeof(id), "f%d", i);
		struct prompt *p = tracker_get(t, id, strlen(id), &created);
		p->terminal_sent = true;
		p->finished_at = 100 + i;
	}
	CHECK_INT(tracker_count(t), 4);
	CHECK(tracker_find(t, "f9", 2) != NULL);
	CHECK(tracker_find(t, "f6", 2) != NULL);
	CHECK(tracker_find(t, "f5", 2) == NULL);
	for (int i = 0; i < 40; i++) {
		snprintf(id, sizeof(id), "q%d", i);
		tracker_get(t, id, strlen(id), &created)->queued_at = 200 + i;
	}
	/* the finished ones made room first, then the table grew to 32
	 * live prompts, and past that the oldest queued ones went */
	CHECK_INT(tracker_count(t), 32);
	CHECK(tracker_find(t, "f9", 2) == NULL);
	CHECK(tracker_find(t, "q7", 2) == NULL);
	CHECK(tracker_find(t, "q8", 2) != NULL);
	CHECK(tracker_find(t, "q39", 3) != NULL);
	tracker_destroy(t);
}

static void
test_many_ids_collide_safely(void)
{
	struct tracker *t = tracker_create(512);
	bool created;
	char id[32];
	for (int i = 0; i < 2000; i++) {
		snprintf(id, sizeof(id), "prompt-%d", i);
		struct prompt *p = tracker_get(t, id, strlen(id), &created);
		CHECK(p && created);
		p->terminal_sent = true;
		p->finished_at = i;
	}
	CHECK_INT(tracker_count(t), 512);
	/* the newest 512 survive */
	CHECK(tracker_find(t, "prompt-1999", 11) != NULL);
	CHECK(tracker_find(t, "prompt-1488", 11) != NULL);
	CHECK(tracker_find(t, "prompt-1487", 11) == NULL);
	tracker_destroy(t);
}

/* A set sized for many ids but holding few has an index for the few (its
 * pages stay out of RSS), and every id is still found as it grows. */
static void
test_idset_index_grows_with_the_ids(void)
{
	struct idset s;
	idset_init(&s, 32768);
	for (uint64_t i = 0; i < 100; i++)
		CHECK_INT(idset_add(&s, i * 0x9e3779b97f4a7c15ull), 0);
	CHECK(s.mask + 1 <= 256);
	for (uint64_t i = 100; i < 5000; i++)
		CHECK_INT(idset_add(&s, i * 0x9e3779b97f4a7c15ull), 0);
	CHECK(s.mask + 1 <= 16384);
	for (uint64_t i = 0; i < 5000; i++)
		CHECK(idset_has(&s, i * 0x9e3779b97f4a7c15ull));
	CHECK(!idset_has(&s, 5000 * 0x9e3779b97f4a7c15ull));
	idset_free(&s);
}

/* The finished-id set forgets the oldest id once full, and only it. */
static void
test_idset_bounded_fifo(void)
{
	struct idset s;
	idset_init(&s, 1000);
	CHECK(!idset_has(&s, 1));
	char id[32];
	for (int i = 0; i < 100000; i++) {
		snprintf(id, sizeof(id), "id-%d", i);
		CHECK_INT(idset_add(&s, tracker_hash(id, strlen(id))), 0);
		/* small hashes crowd one probe run */
		CHECK_INT(idset_add(&s, (uint64_t) i * 4096 + 1), 0);
	}
	int held = 0, newest = 0;
	for (int i = 0; i < 100000; i++) {
		snprintf(id, sizeof(id), "id-%d", i);
		bool has = idset_has(&s, tracker_hash(id, strlen(id)));
		held += has;
		newest += has && i >= 99500;
	}
	CHECK_INT(held, 500);
	CHECK_INT(newest, 500);
	CHECK(idset_has(&s, (uint64_t) 99999 * 4096 + 1));
	CHECK(!idset_has(&s, (uint64_t) 99499 * 4096 + 1));
	idset_free(&s);
}

int
main(void)
{
	RUN(test_find_and_get);
	RUN(test_eviction_prefers_finished);
	RUN(test_finished_kept_apart_from_live_limit);
	RUN(test_idset_index_grows_with_the_ids);
	RUN(test_many_ids_collide_safely);
	RUN(test_idset_bounded_fifo);
	RUN(test_live_prompts_grow_the_table);
	TEST_MAIN_END();
}
