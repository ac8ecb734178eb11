/* One instance: one ComfyUI server followed and published under
 * <prefix>/<instance>/, as a single server is. It owns its upstream
 * (bridge/upstream.h), its own broker link (one MQTT session, with its own
 * client id and its own will on <prefix>/<instance>/bridge/state, so that
 * every instance reads offline after a crash: bridge/README.md#one-session-
 * per-instance) and its add-ons (Home Assistant). Nothing is shared between
 * instances but the loop, so main runs one per --comfyui on one loop.
 * Loop thread only. */
#ifndef C2M_INSTANCE_H
#define C2M_INSTANCE_H

#include "config.h"
#include "loop.h"
#include "mqtt_link.h"

struct instance;

/* Creates the instance of server number server of c (an index in
 * c->server; c is borrowed and must outlive it) into *out (NULL on
 * failure): its link, its upstream, its add-ons. Nothing connects yet.
 * print_prefix goes before its --print lines (NULL: none). Returns 0 or an
 * enum br_err (logged). */
int instance_create(struct loop *l, const struct config *c, int server,
    const char *print_prefix, struct instance **out);
/* Starts connecting to the broker and to ComfyUI. */
int instance_start(struct instance *in);
/* Prints line on the --print console and closes the WebSocket. */
void instance_stop(struct instance *in, const char *line);
/* Drains the link until deadline (loop_mono_ms() clock), publishes
 * bridge/state offline and disconnects; blocks (see mqtt_link_shutdown).
 * Several instances share one deadline: a broker that is away costs the
 * wait once, not once per instance. */
void instance_shutdown(struct instance *in, int64_t deadline);
void instance_destroy(struct instance *in);

/* The broker settings of server number server of c: its own client id,
 * no will (the caller adds one). */
void instance_broker_cfg(
    const struct config *c, int server, struct mqtt_link_cfg *mc);

#endif
