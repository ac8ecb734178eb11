/* mqtt_mids: the broker link's in-flight table by message id. Entries are
 * found, claimed and released; iteration visits exactly the ids in flight,
 * in order, also while they are released; and the pages follow the
 * in-flight window: cycling the whole 16-bit id space several times with a
 * window of 1,000 never holds more than a handful of pages. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "mqtt_mids.h"
#include "test.h"

static unsigned
pages(const struct mids *t)
{
	unsigned n = 0;
	for (size_t i = 0; i < MID_SPACE / MIDS_PAGE; i++)
		n += t->page[i] != NULL;
	return n;
}

static void
test_claim_find_release(void)
{
	struct mids t;
	memset(&t, 0, sizeof t);
	CHECK(mids_find(&t, 5) == NULL);
	CHECK(mids_claim(&t, 0) == NULL);
	CHECK(mids_claim(&t, MID_SPACE) == NULL);
	struct mid_info *e = mids_claim(&t, 5);
	CHECK(e != NULL);
	e->state = MID_QOS1;
	e->size = 77;
	CHECK(mids_find(&t, 5) == e);
	CHECK(mids_find(&t, 6) == NULL);
	/* claiming an id in flight again keeps one entry */
	CHECK(mids_claim(&t, 5) == e);
	CHECK_INT(pages(&t), 1);
	mids_release(&t, 5);
	CHECK(mids_find(&t, 5) == NULL);
	CHECK_INT(pages(&t), 0);
	mids_release(&t, 5); /* twice: nothing */
	mids_clear(&t);
}

static void
test_next_visits_in_flight_ids(void)
{
	struct mids t;
	memset(&t, 0, sizeof t);
	int ids[] = { 1, 255, 256, 4000, 65535 };
	for (size_t i = 0; i < 5; i++)
		mids_claim(&t, ids[i])->state = MID_QOS0;
	size_t n = 0;
	for (int mid = mids_next(&t, 0); mid; mid = mids_next(&t, mid)) {
		CHECK(n < 5 && mid == ids[n]);
		n++;
		mids_release(&t, mid); /* allowed while iterating */
	}
	CHECK_INT(n, 5);
	CHECK_INT(pages(&t), 0);
	CHECK_INT(mids_next(&t, 0), 0);
	mids_clear(&t);
}

/* libmosquitto numbers mids 1..65535 and wraps; at most a window of them
 * is in flight. */
static void
test_pages_follow_the_window(void)
{
	struct mids t;
	memset(&t, 0, sizeof t);
	const int window = 1000;
	unsigned most = 0;
	int mid = 0, oldest = 0;
	for (long i = 0; i < 4L * MID_SPACE; i++) {
		mid = mid % (MID_SPACE - 1) + 1;
		mids_claim(&t, mid)->state = MID_QOS1;
		if (i >= window) {
			oldest = oldest % (MID_SPACE - 1) + 1;
			mids_release(&t, oldest);
		}
		unsigned p = pages(&t);
		if (p > most)
			most = p;
	}
	CHECK(most <= (unsigned) window / MIDS_PAGE + 2);
	mids_clear(&t);
	CHECK_INT(pages(&t), 0);
}

int
main(void)
{
	RUN(test_claim_find_release);
	RUN(test_next_visits_in_flight_ids);
	RUN(test_pages_follow_the_window);
	TEST_MAIN_END();
}
