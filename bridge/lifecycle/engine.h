/* The bridge's pure core for one ComfyUI server: frames and HTTP bodies
 * in, MQTT messages and HTTP requests out. Inside, a pipeline: the prompt
 * lifecycle (tracker.h, lifecycle.c), rendering (bridge/render), the
 * topic-kind table (bridge/publish/pubkind.h); beside it reconciliation
 * with /queue and /history (recon.c), the retained topics (retained.c),
 * health (health.c) and the --print console (console.h); engine.c routes
 * (engine_int.h lists the parts). It never touches a socket: the adapters
 * call it and carry out what it asks through struct engine_io. Time is
 * passed in. Nothing in it is global: several engines can live in one
 * process. */
#ifndef C2M_ENGINE_H
#define C2M_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "outq.h"

/* What the engine asks the HTTP side to fetch. */
enum engine_http_kind {
	EHTTP_QUEUE = 0, /* GET /queue */
	EHTTP_HISTORY_ID = 1, /* GET /history/<id> (tag = the prompt id) */
	EHTTP_HISTORY_LIST = 2, /* GET /history?max_items=N */
	EHTTP_SYSTEM_STATS = 3, /* GET /system_stats */
};

struct engine_io {
	/* Publish a message (the callee copies what it keeps). */
	void (*publish)(void *ud, const struct out_msg *m);
	/* Start GET path (starts with '/', relative to the ComfyUI base);
	 * the answer comes back through engine_on_http(kind, tag). */
	void (*http_get)(void *ud, enum engine_http_kind kind,
	    const char *path, const char *tag);
	/* The WebSocket looks orphaned (open, but ComfyUI no longer sends
	 * it anything; bridge/README.md#orphaned-socket): close it and
	 * connect again. */
	void (*reconnect_upstream)(void *ud);
	void *ud;
};

/* Link and queue facts the engine puts into bridge/health. */
struct engine_health_io {
	bool mqtt_connected;
	uint64_t mqtt_reconnects;
	uint64_t comfyui_reconnects;
	/* reading ComfyUI paused for a slow broker: times, and ms in all */
	uint64_t upstream_pauses;
	uint64_t upstream_paused_ms;
	uint64_t published[MSG_CLASS_COUNT];
	uint64_t dropped[MSG_CLASS_COUNT];
	uint64_t refused[PR_COUNT]; /* by the broker, by enum pub_refusal */
	size_t queue_depth;
	size_t queue_bytes;
	/* add-ons' members of bridge/health (w is a struct jsonw *), e.g.
	 * "commands"; NULL: none */
	void (*write_addons)(void *ud, void *w);
	void *addons_ud;
};

struct engine_cfg {
	const char *prefix;
	const char *instance;
	const char *client_id; /* our ComfyUI clientId */
	const char *mqtt_client_id;
	const char *comfyui_public; /* base URL without credentials */
	int mqtt_protocol; /* 5 or 4 */
	int64_t state_ttl_s;
	unsigned max_tokens;
	unsigned http_max_tokens; /* for /queue and /history; 0: 4194304 */
	unsigned max_prompts; /* finished prompts kept (live ones: 4 times
	                         that); 0: 256 kept, 4096 live */
	unsigned history_items;
	int upstream_watchdog_s; /* silence before a liveness check; 0: 60 */
	int health_interval_s;
	bool previews;
	size_t preview_max_bytes;
	double preview_rate;
	/* allow-list for event/ topics: returns true to publish type */
	bool (*event_allowed)(void *ud, const char *type, size_t len);
	void *event_allowed_ud;
	FILE *print; /* --print: human lines go here; NULL: off */
	bool print_timestamps;
	const char *print_prefix; /* before each --print line; NULL: none */
	/* writes the options object's members for bridge/info (struct jsonw *)
	 */
	void (*write_options)(void *ud, void *jsonw);
	void *write_options_ud;
};

struct engine;

/* Creates the engine (copies cfg strings). now_ms: wall clock. */
struct engine *engine_create(
    const struct engine_cfg *cfg, const struct engine_io *io, int64_t now_ms);
void engine_destroy(struct engine *e);

/* A complete WebSocket message (borrowed). */
void engine_on_text(
    struct engine *e, const char *buf, size_t len, int64_t now_ms);
void engine_on_binary(
    struct engine *e, const uint8_t *buf, size_t len, int64_t now_ms);
/* A message over the frame cap was dropped by the reassembler. */
void engine_on_oversize(struct engine *e, size_t len_so_far, bool binary);

/* The ComfyUI WebSocket went up/down. */
void engine_on_upstream(struct engine *e, bool up, int64_t now_ms);
/* Reading the WebSocket paused (backpressure) or went on again. */
void engine_on_upstream_paused(struct engine *e, bool paused, int64_t now_ms);
/* An HTTP answer (status < 0: no answer, an enum br_err). */
void engine_on_http(struct engine *e, enum engine_http_kind kind,
    const char *tag, int status, const char *body, size_t len, int64_t now_ms);
/* The broker accepted us (CONNACK). Publishes online (ahead of any
 * backlog) and, on every reconnect, republishes the retained topics. */
void engine_on_broker_connected(
    struct engine *e, bool session_present, int64_t now_ms);
/* A retained prompt state read back from the broker (topic and payload
 * borrowed), left by an earlier run: a queued or running one is followed
 * again, so that its end is published (from /queue and /history); a
 * finished one, whose TTL timer died with that run, is cleared (an empty
 * retained message) once its TTL has passed, at once or later. States of
 * prompts this run follows, and anything that is not such a state, are
 * ignored. The owner subscribes to <prefix>/<instance>/prompt/+/state. */
void engine_on_retained_state(struct engine *e, const char *topic,
    const void *payload, size_t len, int64_t now_ms);
/* The topic filter for engine_on_retained_state (borrowed from e). */
const char *engine_state_filter(const struct engine *e);
/* The retained cursor topic, read back at start like the states. */
const char *engine_cursor_topic(const struct engine *e);

/* ComfyUI accepted a prompt the bridge posted with its own client id
 * (a command): prompt_id (len bytes, borrowed) with its queue number.
 * Recorded as a /queue poll's pending entry would be, so its queued
 * event (published now unless it is out already) carries the number and
 * the client id. */
void engine_on_submitted(struct engine *e, const char *prompt_id, size_t len,
    int64_t number, int64_t now_ms);

/* Largest MQTT packet the broker takes (0: unknown). */
void engine_set_max_packet(struct engine *e, uint32_t max_packet);

/* Runs what is due (coalesced state, history retries, TTL clears,
 * health). Returns the wall-clock ms of the next thing due. */
int64_t engine_tick(
    struct engine *e, int64_t now_ms, const struct engine_health_io *h);

/* Earliest wall-clock ms at which engine_tick() has work (updated by every
 * call that schedules something); 0 when nothing is known. */
int64_t engine_due(const struct engine *e);

/* The message for bridge/state offline (for the will and shutdown);
 * topic and payload borrowed from the engine. */
void engine_offline_msg(struct engine *e, struct out_msg *m);
/* Prints the shutdown line for --print. */
void engine_print_line(struct engine *e, const char *line);

/* Counters for tests and the health payload. */
struct engine_counters {
	uint64_t frames_text, frames_binary;
	uint64_t rejected_total;
	uint64_t published_events;
	uint64_t terminals;
	uint64_t resyncs, recovered, lost;
	uint64_t http_failures;
};
void engine_get_counters(const struct engine *e, struct engine_counters *c);

#endif
