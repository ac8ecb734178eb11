/* See ha.h. */
#include "ha.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "jsonw.h"
#include "log.h"
#include "throttle.h"

#define HA_PAYLOAD_MAX 8192 /* the payload takes about 3 KB */
#define HA_TOPIC_MAX   600

struct ha {
	struct ha_io io;
	char *instance; /* for the message's user properties */
	char topic[HA_TOPIC_MAX];
	char status_topic[HA_TOPIC_MAX];
	char payload[HA_PAYLOAD_MAX];
	size_t payload_len;
	struct throttle throttle;
	bool timer_armed;
};

static int
build(struct ha *h, const struct discovery_cfg *c)
{
	struct jsonw w;
	int rc = discovery_topic(c, h->topic, sizeof(h->topic));
	if (rc >= 0)
		rc = discovery_status_topic(
		    c, h->status_topic, sizeof(h->status_topic));
	if (rc < 0)
		return rc;
	jsonw_init(&w, h->payload, sizeof(h->payload));
	rc = discovery_write(c, &w);
	h->payload_len = w.len;
	return rc;
}

int
ha_create(
    const struct discovery_cfg *c, const struct ha_io *io, struct ha **out)
{
	*out = NULL;
	if (c == NULL || io == NULL || c->instance == NULL)
		return BR_EINVAL;
	struct ha *h = calloc(1, sizeof(*h));
	if (h == NULL)
		return BR_ENOMEM;
	h->io = *io;
	throttle_init(&h->throttle, HA_REANNOUNCE_WINDOW_MS);
	h->instance = strdup(c->instance);
	int rc = h->instance != NULL ? build(h, c) : BR_ENOMEM;
	if (rc != 0) {
		ha_destroy(h);
		return rc;
	}
	*out = h;
	return 0;
}

void
ha_destroy(struct ha *h)
{
	if (h == NULL)
		return;
	free(h->instance);
	free(h);
}

const char *
ha_discovery_topic(const struct ha *h)
{
	return h->topic;
}

const char *
ha_status_topic(const struct ha *h)
{
	return h->status_topic;
}

static void
announce(struct ha *h)
{
	struct out_msg m = {
		.cls = MSG_CRITICAL,
		.topic = h->topic,
		.payload = h->payload,
		.len = h->payload_len,
		.qos = 1,
		.retain = true,
		.props = { .content_type = "application/json",
		    .utf8 = true,
		    .instance = h->instance,
		    .type = "discovery" },
		/* one pending announcement is enough */
		.coalesce_key = h->topic,
	};
	h->io.publish(h->io.ud, &m);
}

void
ha_on_broker_connected(struct ha *h)
{
	announce(h);
}

static void
arm(struct ha *h, int64_t now_ms)
{
	int64_t due = throttle_due(&h->throttle);
	if (due < 0)
		return;
	h->timer_armed = true;
	h->io.arm_timer(h->io.ud, due > now_ms ? due - now_ms : 0);
}

void
ha_on_status(struct ha *h, const void *payload, size_t len, int64_t now_ms)
{
	if (len != 6 || memcmp(payload, "online", 6) != 0)
		return;
	if (!throttle_request(&h->throttle, now_ms)) {
		if (!h->timer_armed)
			arm(h, now_ms);
		return;
	}
	log_info("ha", "Home Assistant is online: re-announcing");
	announce(h);
}

/* The deferred re-announce of a burst of "online"s; a timer that fired a
 * little early is armed again for the rest. */
void
ha_on_timer(struct ha *h, int64_t now_ms)
{
	h->timer_armed = false;
	uint64_t n = throttle_poll(&h->throttle, now_ms);
	if (n == 0) {
		arm(h, now_ms);
		return;
	}
	log_info("ha",
	    "Home Assistant is online: re-announcing (%llu more \"online\" "
	    "within %d s)",
	    (unsigned long long) n, HA_REANNOUNCE_WINDOW_MS / 1000);
	announce(h);
}

void
ha_clear_msg(const struct ha *h, struct out_msg *m)
{
	*m = (struct out_msg) {
		.cls = MSG_CRITICAL,
		.topic = h->topic,
		.payload = "",
		.len = 0,
		.qos = 1,
		.retain = true,
	};
}
