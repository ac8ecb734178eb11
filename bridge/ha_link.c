/* See ha_link.h. */
#include "ha_link.h"

#include <stdio.h>
#include <stdlib.h>

#include "err.h"
#include "ha.h"
#include "log.h"

/* origin.support_url in the Home Assistant discovery message; a packager
 * may define it (-DC2M_SUPPORT_URL=...), else it is left out. */
#ifndef C2M_SUPPORT_URL
#define C2M_SUPPORT_URL NULL
#endif

/* --ha-remove: how long to wait for the broker to take the empty config */
#define HA_REMOVE_TIMEOUT_MS 10000

struct ha_link {
	struct ha *ha;
	struct mqtt_link *mqtt;
	struct loop_timer *timer; /* the deferred re-announce */
};

void
ha_link_cfg(const struct config *c, const char *instance,
    const char *comfyui_url, struct discovery_cfg *dc)
{
	*dc = (struct discovery_cfg) {
		.ha_prefix = c->ha_prefix,
		.prefix = c->prefix,
		.instance = instance,
		.version = C2M_VERSION,
		.comfyui_url = comfyui_url,
		.support_url = C2M_SUPPORT_URL,
		.previews = c->previews,
		.commands = c->commands,
	};
}

static void
do_publish(void *ud, const struct out_msg *m)
{
	struct ha_link *h = ud;
	mqtt_link_publish(h->mqtt, m);
}

static void
do_arm_timer(void *ud, int64_t delay_ms)
{
	struct ha_link *h = ud;
	loop_timer_arm(h->timer, delay_ms);
}

static void
on_timer(void *ud)
{
	struct ha_link *h = ud;
	ha_on_timer(h->ha, loop_mono_ms());
}

int
ha_link_create(struct loop *l, struct mqtt_link *m,
    const struct discovery_cfg *c, struct ha_link **out)
{
	*out = NULL;
	struct ha_link *h = calloc(1, sizeof(*h));
	if (h == NULL)
		return BR_ENOMEM;
	h->mqtt = m;
	h->timer = loop_timer_create(l, on_timer, h);
	struct ha_io io = { do_publish, do_arm_timer, h };
	int rc = h->timer != NULL ? ha_create(c, &io, &h->ha) : BR_ENOMEM;
	if (rc != 0) {
		ha_link_destroy(h);
		return rc;
	}
	*out = h;
	return 0;
}

void
ha_link_destroy(struct ha_link *h)
{
	if (h == NULL)
		return;
	if (h->timer != NULL)
		loop_timer_destroy(h->timer);
	ha_destroy(h->ha);
	free(h);
}

const char *
ha_link_status_topic(const struct ha_link *h)
{
	return ha_status_topic(h->ha);
}

void
ha_link_on_status(void *ud, const char *topic, const void *payload, size_t len)
{
	struct ha_link *h = ud;
	(void) topic;
	ha_on_status(h->ha, payload, len, loop_mono_ms());
}

void
ha_link_on_preview(struct ha_link *h, const char *content_type)
{
	ha_on_preview(h->ha, content_type);
}

void
ha_link_on_connected(struct ha_link *h)
{
	ha_on_broker_connected(h->ha);
}

/* Publishes msg on a link of its own, waits for the broker's PUBACK and
 * returns the exit code: 0 when the broker took it. */
static int
publish_once(const struct mqtt_link_cfg *b, const struct out_msg *msg)
{
	/* 20 + "-rm" keeps within the 23 bytes 3.1.1 brokers must accept */
	char client_id[64];
	snprintf(client_id, sizeof(client_id), "%.20s-rm", b->client_id);
	struct mqtt_link_cfg mc = *b;
	mc.client_id = client_id;
	mc.will_topic = mc.will_payload = NULL;
	mc.window = 1;
	mc.queue_max_messages = 1;
	mc.queue_max_bytes = 0;
	struct mqtt_link *m = NULL;
	struct mqtt_link_cb mcb = { 0 };
	/* the link runs on a loop; this one lives for the one message */
	struct loop *l = loop_create_tls(false);
	int rc
	    = l != NULL ? mqtt_link_create(l, &mc, &mcb, NULL, &m) : BR_ENOMEM;
	if (rc == BR_OK)
		rc = mqtt_link_start(m);
	if (rc != BR_OK) {
		log_error(
		    "ha", "cannot start the broker link: %s", br_strerror(rc));
		mqtt_link_destroy(m);
		loop_destroy(l);
		return 1;
	}
	mqtt_link_publish(m, msg);
	/* drains: waits for the connect and the PUBACK, then disconnects */
	mqtt_link_shutdown(m, NULL, HA_REMOVE_TIMEOUT_MS);
	struct mqtt_link_stats s;
	mqtt_link_get_stats(m, &s);
	mqtt_link_destroy(m);
	loop_destroy(l);
	if (s.published[MSG_CRITICAL] != 1 || s.queued != 0
	    || s.inflight != 0) {
		log_error("ha",
		    "%s not cleared: broker %s:%d did not "
		    "acknowledge within %d ms",
		    msg->topic, b->host, b->port, HA_REMOVE_TIMEOUT_MS);
		return 1;
	}
	log_info("ha", "cleared %s", msg->topic);
	return 0;
}

int
ha_link_remove(
    const struct mqtt_link_cfg *broker, const struct discovery_cfg *c)
{
	struct ha_io io = { 0 };
	struct ha *ha = NULL;
	if (ha_create(c, &io, &ha) != 0) {
		log_error("ha", "discovery topic does not fit");
		return 1;
	}
	struct out_msg clear;
	ha_clear_msg(ha, &clear);
	int code = publish_once(broker, &clear);
	ha_destroy(ha);
	return code;
}
