/* The one backoff: each policy is a table of delays (the n-th failure in a
 * row waits steps_ms[n], the last step repeats) plus a jitter, so that many
 * bridges restarted together do not retry in lockstep. Pure: the caller
 * counts failures and owns the jitter seed. */
#ifndef C2M_BACKOFF_H
#define C2M_BACKOFF_H

#include <stdint.h>

struct backoff_policy {
	const uint32_t *steps_ms;
	uint16_t n_steps;
	uint8_t jitter_pct; /* each delay is moved by up to +- this % */
};

/* The policies, one line each in backoff.c. */
extern const struct backoff_policy backoff_upstream; /* ComfyUI WebSocket */
extern const struct backoff_policy backoff_http; /* failed HTTP reads */
extern const struct backoff_policy backoff_broker; /* MQTT connects */

/* The delay before retry number failures + 1 (failures counts from 0),
 * without jitter. */
uint32_t backoff_step_ms(const struct backoff_policy *p, unsigned failures);
/* The same with the policy's jitter applied; *seed is the caller's state
 * (any value; 0 is replaced). */
uint32_t backoff_delay_ms(
    const struct backoff_policy *p, unsigned failures, uint32_t *seed);

#endif
