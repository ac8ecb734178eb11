/* One ComfyUI server followed: its WebSocket client, its HTTP client, the
 * frame reassembler, the lifecycle engine with its tick timer, and the
 * health counters the engine reports. An upstream keeps every piece of its
 * state in its own object and reaches the broker only through struct
 * upstream_out, so several can run in one loop, each publishing on the
 * broker session its owner picks. Loop thread only. */
#ifndef C2M_UPSTREAM_H
#define C2M_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "engine.h"
#include "loop.h"

/* What makes one server: the options shared by every server come from
 * opts, the fields below are this server's own. Everything is borrowed and
 * must outlive the upstream (the HTTP client keeps pointing at comfy). */
struct upstream_cfg {
	const struct config *opts;
	int server; /* index in opts->server: its options in bridge/info */
	const struct url *comfy;
	char *const *headers; /* "Name: value" sent to ComfyUI */
	int n_headers;
	const char *instance; /* sanitized: <prefix>/<instance>/ */
	const char *client_id; /* our ComfyUI clientId */
	const char *mqtt_client_id; /* named in bridge/info */
	const char *print_prefix; /* before its --print lines; NULL: none */
};

/* The broker side, as the owner wires it. */
struct upstream_out {
	/* Publish m (the callee copies what it keeps). */
	void (*publish)(void *ud, const struct out_msg *m);
	/* Fills the broker's part of the health payload (connection,
	 * reconnects, published, dropped, queue); h arrives zeroed. */
	void (*broker_health)(void *ud, struct engine_health_io *h);
	void *ud;
};

struct upstream;

/* Fills c for server number server of opts (an index in opts->server). */
void upstream_cfg_from_config(
    const struct config *opts, int server, struct upstream_cfg *c);

/* Creates the upstream into *out (NULL on failure); not connected yet.
 * The engine publishes its retained start-up state through out at once.
 * Returns 0, BR_ENOMEM or BR_EINVAL. */
int upstream_create(struct loop *l, const struct upstream_cfg *c,
    const struct upstream_out *out, struct upstream **up);
/* Starts connecting to ComfyUI (and reconnecting for ever). */
int upstream_start(struct upstream *u);
/* Prints line on the --print console (if on) and closes the WebSocket:
 * the loop sends the close frame, reconnecting stops. */
void upstream_stop(struct upstream *u, const char *line);
void upstream_destroy(struct upstream *u);

/* The broker accepted the session this upstream publishes on. */
/* Backpressure from the broker link: pauses reading ComfyUI or reads
 * again (ws_client_pause; bridge/README.md#backpressure). */
void upstream_pause(struct upstream *u, bool on);
void upstream_on_broker_connected(
    struct upstream *u, bool session_present, uint32_t max_packet);
/* A retained prompt state read back from the broker on the subscription
 * to upstream_state_filter() (borrowed); ud is the upstream. */
void upstream_on_retained_state(
    void *ud, const char *topic, const void *payload, size_t len);
/* The filter to subscribe to where the broker has no message expiry
 * (MQTT 3.1.1): <prefix>/<instance>/prompt/+/state (borrowed from u). */
const char *upstream_state_filter(const struct upstream *u);
const char *upstream_cursor_topic(const struct upstream *u);
/* ComfyUI accepted a prompt the bridge posted (a command): prompt_id
 * (len bytes, borrowed) with its queue number, for the engine; ud is the
 * upstream. */
void upstream_on_submitted(
    void *ud, const char *prompt_id, size_t len, int64_t number);
/* The bridge/state offline message, for the will and the last publish at
 * shutdown (borrowed from u). */
void upstream_offline_msg(struct upstream *u, struct out_msg *m);

#endif
