/* Home Assistant on the loop and the broker link: the feature of
 * bridge/ha/ha.h with a loop timer for its deferred re-announce and the
 * broker link it publishes on; and --ha-remove. Loop thread only; one per
 * instance. */
#ifndef C2M_HA_LINK_H
#define C2M_HA_LINK_H

#include <stddef.h>

#include "config.h"
#include "discovery.h"
#include "loop.h"
#include "mqtt_link.h"

struct ha_link;

/* Fills dc for instance (sanitized) with the options of c; comfyui_url is
 * its ComfyUI base URL without credentials (all borrowed). */
void ha_link_cfg(const struct config *c, const char *instance,
    const char *comfyui_url, struct discovery_cfg *dc);

/* Builds the discovery message for c (see ha_create) into *out (NULL on
 * failure); m is borrowed and must outlive it. Returns 0 or an enum
 * br_err. */
int ha_link_create(struct loop *l, struct mqtt_link *m,
    const struct discovery_cfg *c, struct ha_link **out);
void ha_link_destroy(struct ha_link *h);

/* The topic Home Assistant announces itself on (borrowed from h): the
 * owner subscribes to it with ha_link_on_status as the callback. */
const char *ha_link_status_topic(const struct ha_link *h);
/* A message on the status topic; ud is the ha_link. */
void ha_link_on_status(
    void *ud, const char *topic, const void *payload, size_t len);
/* A preview went out on the retained preview topic (see ha_on_preview). */
void ha_link_on_preview(struct ha_link *h, const char *content_type);
/* The broker accepted us: announces. */
void ha_link_on_connected(struct ha_link *h);

/* --ha-remove: clears the retained discovery message of c on the broker of
 * broker (its connection settings only) and returns the exit code. Uses
 * its own client id and no will, so that a running bridge of the same
 * instance is neither kicked off nor marked offline; never connects to
 * ComfyUI. */
int ha_link_remove(
    const struct mqtt_link_cfg *broker, const struct discovery_cfg *c);

#endif
