/* A message the broker cannot take (over a maximum packet the bridge did
 * not know, say) makes it drop the connection; libmosquitto resends every
 * unacknowledged QoS >= 1 message after each reconnect, so without this
 * the same message would end the link for ever and nothing after it would
 * arrive. When the broker drops the link soon after (re)sending, POISON_HITS
 * times in a row with the same suspect in flight, that message is dropped
 * as poison. The suspect is the largest message in flight (the oldest of
 * the largest): the messages sent just before the poison are still
 * unacknowledged when the broker cuts the link, so the oldest one is
 * usually innocent, while a packet over the broker's limit is the
 * largest. */
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "hash.h"
#include "log.h"
#include "mqtt_guard.h"
#include "loop.h"
#include "mqtt_link_int.h"

/* The largest in-flight QoS >= 1 mid (the oldest of equals), or 0:
 * libmosquitto numbers mids in order, so the scan starts after the latest
 * one, circularly. */
static int
suspect_mid(const struct mqtt_link *m)
{
	const struct mids *t = &m->mids;
	int best = 0;
	uint32_t best_size = 0;
	/* after the latest mid, then from the start up to it */
	for (int pass = 0; pass < 2; pass++) {
		int from = pass == 0 ? m->last_mid : 0;
		for (int mid = mids_next(t, from);
		     mid != 0 && (pass == 0 || mid <= m->last_mid);
		     mid = mids_next(t, mid)) {
			const struct mid_info *e = mids_find(t, mid);
			if (e->state == MID_QOS1
			    && (best == 0 || e->size > best_size)) {
				best = mid;
				best_size = e->size;
			}
		}
	}
	return best;
}

void
mqtt_poison_on_loss(struct mqtt_link *m)
{
	int head = m->f.inflight1 > 0 ? suspect_mid(m) : 0;
	if (head == 0 || loop_mono_ms() - m->sent_at > POISON_QUICK_MS) {
		m->poison_mid = 0;
		m->poison_hits = 0;
		m->poison_size = 0;
		return;
	}
	const struct mid_info *e = mids_find(&m->mids, head);
	if (e->kind != m->poison_kind || e->size != m->poison_size
	    || e->sig != m->poison_sig) {
		m->poison_kind = e->kind;
		m->poison_size = e->size;
		m->poison_sig = e->sig;
		m->poison_hits = 0;
	}
	m->poison_mid = head;
	m->poison_hits++;
}

bool
mqtt_poison_reset(struct mqtt_link *m)
{
	struct mosquitto *fresh = NULL;
	if (mqtt_link_new_client(m, &fresh) != BR_OK
	    || (m->cfg.protocol == 5
	        && mqtt_setup_connect_props(fresh, &m->cfg)
	            != MOSQ_ERR_SUCCESS)) {
		if (fresh != NULL)
			mosquitto_destroy(fresh);
		return false; /* tried again at the next attempt */
	}
	mosquitto_destroy(m->mosq);
	m->mosq = fresh;
	int poison = m->poison_mid;
	const struct mid_info *pe = mids_find(&m->mids, poison);
	enum msg_class cls = pe ? (enum msg_class) pe->cls : MSG_CRITICAL;
	uint8_t kind = pe ? pe->kind : m->poison_kind;
	uint64_t after = 0;
	for (int mid = mids_next(&m->mids, 0); mid;
	     mid = mids_next(&m->mids, mid)) {
		if (mid != poison) {
			m->f.lost[mids_find(&m->mids, mid)->cls]++;
			after++;
		}
		mids_release(&m->mids, mid);
	}
	m->f.inflight0 = m->f.inflight1 = 0;
	m->f.resend_pending = false;
	m->poison_mid = 0;
	m->poison_hits = 0;
	m->failures = 0; /* the cause is gone: no reason to wait longer */
	/* most likely over the broker's limit, which MQTT 3.1.1 cannot tell:
	 * a packet this large is dropped before it leaves from now on */
	uint32_t size = m->poison_size;
	bool learned = size > POISON_LEARN_MIN;
	if (learned && (m->learned_max == 0 || size - 1 < m->learned_max))
		m->learned_max = size - 1;
	mqtt_guard_poison(
	    &m->guard, cls, kind, POISON_HITS, size, after, learned);
	return true;
}

/* See mqtt_link_int.h. */
void
mqtt_track_mid(struct mqtt_link *m, int mid, int qos,
    const struct out_msg *msg, size_t size)
{
	/* A mid still marked would mean the 16-bit space wrapped onto a
	 * message we never saw complete: retire it so counts stay exact. */
	struct mid_info *e = mids_find(&m->mids, mid);
	if (e != NULL && e->state == MID_QOS0)
		m->f.inflight0--;
	else if (e != NULL)
		m->f.inflight1--;
	/* out of memory: untracked, as a mid out of range would be */
	if ((e = mids_claim(&m->mids, mid)) == NULL)
		return;
	e->state = qos > 0 ? MID_QOS1 : MID_QOS0;
	e->cls = (uint8_t) msg->cls;
	e->kind = mqtt_guard_kind(&m->guard, msg);
	e->size = size > UINT32_MAX ? UINT32_MAX : (uint32_t) size;
	/* the same bytes: the envelope's seq comes first */
	e->sig = hash32(HASH32_INIT, msg->payload,
	    msg->len < POISON_SIG_BYTES ? msg->len : POISON_SIG_BYTES);
	if (qos > 0)
		m->f.inflight1++;
	else
		m->f.inflight0++;
}
