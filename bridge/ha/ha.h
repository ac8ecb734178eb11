/* The Home Assistant feature (--ha-discovery) of one instance: its
 * discovery message, built once, is announced on every broker connect (the
 * broker may have lost it, and a retained copy from an older version must
 * be replaced) and again when Home Assistant publishes "online" on its
 * status topic (it restarted, and its entities stay unavailable until it
 * gets discovery again). Anyone who can publish there may repeat "online",
 * and each announce is a retained 3 KB message and a log line, so a burst
 * is answered at most once per HA_REANNOUNCE_WINDOW_MS (bridge/base/
 * throttle.h). Pure: time is passed in, the world is reached through
 * struct ha_io. */
#ifndef C2M_HA_H
#define C2M_HA_H

#include <stddef.h>
#include <stdint.h>

#include "discovery.h"
#include "outq.h"

#define HA_REANNOUNCE_WINDOW_MS 10000

struct ha_io {
	/* Publish m (the callee copies what it keeps). */
	void (*publish)(void *ud, const struct out_msg *m);
	/* Call ha_on_timer() once after delay_ms (>= 0). */
	void (*arm_timer)(void *ud, int64_t delay_ms);
	void *ud;
};

struct ha;

/* Builds the topics and the payload from c (its strings are copied or
 * used only here) into *out (NULL on failure). Returns 0, BR_ENOMEM, or
 * discovery_topic's / discovery_write's error. */
int ha_create(
    const struct discovery_cfg *c, const struct ha_io *io, struct ha **out);
void ha_destroy(struct ha *h);

/* "<ha_prefix>/device/<node>/config" (borrowed from h). */
const char *ha_discovery_topic(const struct ha *h);
/* Home Assistant's status topic, to subscribe to (borrowed from h). */
const char *ha_status_topic(const struct ha *h);

/* The broker accepted us: announces. */
void ha_on_broker_connected(struct ha *h);
/* A message on the status topic (payload borrowed); now_ms: monotonic. */
void ha_on_status(
    struct ha *h, const void *payload, size_t len, int64_t now_ms);
/* The timer armed through ha_io fired; now_ms: monotonic. */
void ha_on_timer(struct ha *h, int64_t now_ms);

/* A preview went out on the retained preview topic with content_type
 * (borrowed): Home Assistant's image entity has one fixed content type, so
 * a change (JPEG to PNG, or back) re-announces with the new one. */
void ha_on_preview(struct ha *h, const char *content_type);

/* The empty retained message that clears the discovery message (topic
 * borrowed from h), for --ha-remove. */
void ha_clear_msg(const struct ha *h, struct out_msg *m);

#endif
