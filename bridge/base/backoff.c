/* See backoff.h. Delays double from 0.25 s. The upstream stops at 4 s, 4.8 s
 * with its jitter: a ComfyUI restart is routine (every custom-node install
 * does one), and the bridge is back within 5 s of the server answering,
 * however many restarts came before. The broker and HTTP retries go on to 30
 * s. */
#include "backoff.h"

static const uint32_t doubling_4s[] = { 250, 500, 1000, 2000, 4000 };
static const uint32_t doubling_30s[]
    = { 250, 500, 1000, 2000, 4000, 8000, 16000, 30000 };

#define STEPS(a) (a), (uint16_t) (sizeof(a) / sizeof((a)[0]))

const struct backoff_policy backoff_upstream = { STEPS(doubling_4s), 20 };
const struct backoff_policy backoff_http = { STEPS(doubling_30s), 0 };
const struct backoff_policy backoff_broker = { STEPS(doubling_30s), 20 };

uint32_t
backoff_step_ms(const struct backoff_policy *p, unsigned failures)
{
	if (p->n_steps == 0)
		return 0;
	unsigned i = failures < p->n_steps ? failures : p->n_steps - 1u;
	return p->steps_ms[i];
}

uint32_t
backoff_delay_ms(
    const struct backoff_policy *p, unsigned failures, uint32_t *seed)
{
	uint32_t d = backoff_step_ms(p, failures);
	uint32_t span = (uint32_t) ((uint64_t) d * p->jitter_pct / 100);
	if (span == 0)
		return d;
	uint32_t s = *seed ? *seed : 0x9e3779b9u;
	s ^= s << 13; /* xorshift32 */
	s ^= s >> 17;
	s ^= s << 5;
	*seed = s;
	return d - span + s % (2 * span + 1);
}
