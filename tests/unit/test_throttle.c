/* throttle: the first request acts at once, a burst becomes one deferred
 * action at the window's end, never more than one action per window, and
 * the last request of any sequence is answered. */
#include "throttle.h"

#include "test.h"

static void
test_first_request_acts_at_once(void)
{
	struct throttle t;

	throttle_init(&t, 10000);
	CHECK_INT(throttle_due(&t), -1);
	CHECK(throttle_request(&t, 5));
	CHECK_INT(throttle_due(&t), -1);
	CHECK_INT(throttle_poll(&t, 5), 0);
	CHECK_INT(throttle_poll(&t, 1000000), 0);
}

static void
test_burst_is_one_deferred_action(void)
{
	struct throttle t;

	throttle_init(&t, 10000);
	CHECK(throttle_request(&t, 1000));
	/* 2999 more within the window: all deferred to 11000 */
	for (int i = 1; i < 3000; i++)
		CHECK(!throttle_request(&t, 1000 + i));
	CHECK_INT(throttle_due(&t), 11000);
	CHECK_INT(throttle_poll(&t, 10999), 0);
	CHECK_INT(throttle_due(&t), 11000);
	CHECK_INT(throttle_poll(&t, 11000), 2999);
	CHECK_INT(throttle_due(&t), -1);
	CHECK_INT(throttle_poll(&t, 11001), 0);
}

static void
test_deferred_action_starts_a_window(void)
{
	struct throttle t;

	throttle_init(&t, 10000);
	CHECK(throttle_request(&t, 0));
	CHECK(!throttle_request(&t, 9000));
	CHECK_INT(throttle_poll(&t, 10000), 1);
	/* just after the deferred action: deferred again, a window later */
	CHECK(!throttle_request(&t, 10001));
	CHECK_INT(throttle_due(&t), 20000);
	CHECK_INT(throttle_poll(&t, 20000), 1);
	/* a quiet window later: at once again */
	CHECK(throttle_request(&t, 30000));
	CHECK_INT(throttle_due(&t), -1);
}

static void
test_late_timer_request_acts_for_all(void)
{
	struct throttle t;

	throttle_init(&t, 10000);
	CHECK(throttle_request(&t, 0));
	CHECK(!throttle_request(&t, 5000));
	/* the timer has not run by the time the window is over: a new
	 * request acts at once and answers the deferred one too */
	CHECK(throttle_request(&t, 10500));
	CHECK_INT(throttle_due(&t), -1);
	CHECK_INT(throttle_poll(&t, 10600), 0);
	CHECK(!throttle_request(&t, 10600));
	CHECK_INT(throttle_due(&t), 20500);
}

/* A random request pattern, checked against the two promises: actions are
 * at least a window apart, and no request waits longer than a window for
 * an action. The timer runs on every millisecond. */
static void
test_random_pattern_keeps_both_promises(void)
{
	struct throttle t;
	int64_t last_action = -1, unanswered_since = -1, window = 50;
	unsigned seed = 12345, actions = 0, requests = 0, late = 0;

	throttle_init(&t, window);
	for (int64_t now = 0; now < 200000; now++) {
		bool acted = false;
		seed = seed * 1103515245u + 12345u;
		if (now < 190000 && (seed >> 16) % 7 == 0) {
			requests++;
			acted = throttle_request(&t, now);
			if (!acted && unanswered_since < 0)
				unanswered_since = now;
		}
		if (!acted && throttle_poll(&t, now) > 0)
			acted = true;
		if (!acted) {
			late += unanswered_since >= 0
			    && now - unanswered_since > window;
			continue;
		}
		if (last_action >= 0 && now - last_action < window)
			TEST_FAIL("actions at %lld and %lld",
			    (long long) last_action, (long long) now);
		last_action = now;
		unanswered_since = -1;
		actions++;
	}
	CHECK_INT(late, 0);
	CHECK_INT(unanswered_since, -1);
	CHECK(requests > 10000);
	CHECK(actions <= 190000 / window + 1);
	CHECK(actions > 190000 / window / 2);
}

int
main(void)
{
	RUN(test_first_request_acts_at_once);
	RUN(test_burst_is_one_deferred_action);
	RUN(test_deferred_action_starts_a_window);
	RUN(test_late_timer_request_acts_for_all);
	RUN(test_random_pattern_keeps_both_promises);
	TEST_MAIN_END();
}
