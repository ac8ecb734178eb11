/* See ha.h. */
#include "ha.h"

#include <stdio.h>
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
	struct discovery_cfg cfg; /* strings in strs */
	char *strs[6];
	char preview_type[32];
	const char *instance; /* for the user properties (in strs) */
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

/* Keeps a copy of c, so that the payload can be built again. */
static int
copy_cfg(struct ha *h, const struct discovery_cfg *c)
{
	const char *src[] = { c->ha_prefix, c->prefix, c->instance, c->version,
		c->comfyui_url, c->support_url };
	const char **dst[] = { &h->cfg.ha_prefix, &h->cfg.prefix,
		&h->cfg.instance, &h->cfg.version, &h->cfg.comfyui_url,
		&h->cfg.support_url };
	h->cfg = *c;
	for (size_t i = 0; i < sizeof(src) / sizeof(src[0]); i++) {
		*dst[i] = NULL;
		if (src[i] == NULL)
			continue;
		h->strs[i] = strdup(src[i]);
		if (h->strs[i] == NULL)
			return BR_ENOMEM;
		*dst[i] = h->strs[i];
	}
	snprintf(h->preview_type, sizeof(h->preview_type), "%s",
	    c->preview_type ? c->preview_type : "image/jpeg");
	h->cfg.preview_type = h->preview_type;
	return 0;
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
	int rc = copy_cfg(h, c);
	h->instance = h->cfg.instance;
	if (rc == 0)
		rc = build(h, &h->cfg);
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
	for (size_t i = 0; i < sizeof(h->strs) / sizeof(h->strs[0]); i++)
		free(h->strs[i]);
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
ha_on_preview(struct ha *h, const char *content_type)
{
	if (!h->cfg.previews || content_type == NULL
	    || strcmp(content_type, h->preview_type) == 0
	    || strlen(content_type) >= sizeof(h->preview_type))
		return;
	char was[sizeof(h->preview_type)];
	memcpy(was, h->preview_type, sizeof(was));
	memcpy(h->preview_type, content_type, strlen(content_type) + 1);
	if (build(h, &h->cfg) != 0) {
		memcpy(h->preview_type, was, sizeof(was));
		build(h, &h->cfg);
		return;
	}
	log_info("ha", "previews are %s now: re-announcing", content_type);
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
