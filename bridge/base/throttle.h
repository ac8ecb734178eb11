/* At most one action per window for a request that may come in bursts
 * (Home Assistant's birth message, answered with a 3 KB retained
 * discovery message): the first request acts at once, every later one in
 * the window is folded into one action at the window's end, so the last
 * request is always followed by an action. Pure: the caller passes the
 * time in, owns the struct and runs the deferred action from a timer. */
#ifndef C2M_THROTTLE_H
#define C2M_THROTTLE_H

#include <stdbool.h>
#include <stdint.h>

struct throttle {
	int64_t window_ms;
	bool acted; /* last_ms is set */
	int64_t last_ms; /* time of the last action */
	uint64_t deferred; /* requests waiting for the deferred action */
};

/* Sets up t: nothing done yet, nothing deferred. */
void throttle_init(struct throttle *t, int64_t window_ms);
/* A request at now_ms. Returns true when the caller acts now; false when
 * it was deferred: act when throttle_poll says so (at throttle_due). */
bool throttle_request(struct throttle *t, int64_t now_ms);
/* When the deferred action is due (ms, same clock), or -1 for none. */
int64_t throttle_due(const struct throttle *t);
/* The timer at now_ms: returns how many requests the caller answers now
 * with one action, 0 when none is deferred or it is not due yet. */
uint64_t throttle_poll(struct throttle *t, int64_t now_ms);

#endif
