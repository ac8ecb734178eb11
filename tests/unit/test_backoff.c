/* backoff: the table's steps in order, the last one repeated, and jitter
 * that stays within the policy's percentage and actually varies. */
#include "test.h"

#include <stdbool.h>

#include "backoff.h"

static void
test_steps_double_then_cap(void)
{
	const struct backoff_policy *p = &backoff_http;
	uint32_t prev = 0;

	CHECK(p->n_steps > 1);
	for (unsigned i = 0; i < p->n_steps; i++) {
		uint32_t d = backoff_step_ms(p, i);
		CHECK(d > prev);
		prev = d;
	}
	CHECK_INT(backoff_step_ms(p, p->n_steps), prev);
	CHECK_INT(backoff_step_ms(p, 1000000), prev);
	CHECK_INT(backoff_step_ms(p, 0), p->steps_ms[0]);
}

static void
test_jitter_within_bounds_and_varies(void)
{
	const struct backoff_policy *p = &backoff_broker;
	uint32_t seed = 0, lo = UINT32_MAX, hi = 0;

	CHECK(p->jitter_pct > 0);
	for (unsigned i = 0; i < 1000; i++) {
		uint32_t base = backoff_step_ms(p, 3);
		uint32_t d = backoff_delay_ms(p, 3, &seed);
		uint32_t span = base * p->jitter_pct / 100;
		CHECK(d >= base - span && d <= base + span);
		lo = d < lo ? d : lo;
		hi = d > hi ? d : hi;
	}
	CHECK(hi > lo);
}

static void
test_no_jitter_is_exact(void)
{
	uint32_t seed = 7;

	CHECK_INT(backoff_delay_ms(&backoff_http, 2, &seed),
	    backoff_step_ms(&backoff_http, 2));
	CHECK_INT(seed, 7);
}

int
main(void)
{
	RUN(test_steps_double_then_cap);
	RUN(test_jitter_within_bounds_and_varies);
	RUN(test_no_jitter_is_exact);
	TEST_MAIN_END();
}
