/* See throttle.h. Leading edge at once, trailing edge at the window's
 * end: a burst costs two actions, and a request never goes unanswered. */
#include "throttle.h"

void
throttle_init(struct throttle *t, int64_t window_ms)
{
	*t = (struct throttle) { .window_ms = window_ms };
}

bool
throttle_request(struct throttle *t, int64_t now_ms)
{
	if (t->acted && now_ms - t->last_ms < t->window_ms) {
		t->deferred++;
		return false;
	}
	/* past the window: acting now also answers requests still deferred
	 * (their timer ran late), and the timer then finds nothing to do */
	t->acted = true;
	t->last_ms = now_ms;
	t->deferred = 0;
	return true;
}

int64_t
throttle_due(const struct throttle *t)
{
	if (t->deferred == 0)
		return -1;
	return t->last_ms + t->window_ms;
}

uint64_t
throttle_poll(struct throttle *t, int64_t now_ms)
{
	if (t->deferred == 0 || now_ms < throttle_due(t))
		return 0;
	uint64_t n = t->deferred;
	t->deferred = 0;
	t->last_ms = now_ms;
	return n;
}
