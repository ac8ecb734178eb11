/* The engine's parts, private to bridge/lifecycle: the struct they share
 * and the functions one part calls in another. Each part keeps its own
 * state in its own member of struct engine:
 *
 *   engine.c     the public entry points; routes frames, HTTP answers,
 *                broker and upstream changes and time to the parts
 *   lifecycle.c  the prompt state machine: events in, transitions of
 *                struct prompt (tracker.h) out
 *   emit.c       renders a transition (bridge/render) and publishes it
 *                through the topic-kind table (bridge/publish/pubkind.h)
 *   recon.c      reconciliation: /queue and /history polling, resync
 *                after a reconnect, the WebSocket watchdog
 *   catchup.c    what finished while the bridge was down (its cursor)
 *   retained.c   retained memory, republish on reconnect, TTL clears
 *   health.c     rejected-input and fault counters, bridge/health
 *   console.c    --print: the same transitions as human lines
 */
#ifndef C2M_ENGINE_INT_H
#define C2M_ENGINE_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "console.h"
#include "engine.h"
#include "event.h"
#include "expiry.h"
#include "idset.h"
#include "json.h"
#include "pubkind.h"
#include "ratelog.h"
#include "render.h"
#include "topic.h"
#include "tracker.h"

/* Finished prompt ids remembered, so that no terminal event goes out twice
 * whatever /history lists: ComfyUI keeps at most 10,000 history entries,
 * and a server that ignores max_items lists them all. 12 bytes each. */
#define FINISHED_IDS_MAX 32768

enum reject_reason {
	RJ_EMPTY = 0,
	RJ_INVALID_JSON,
	RJ_INVALID_UTF8,
	RJ_TOO_DEEP,
	RJ_TOO_MANY_TOKENS,
	RJ_NOT_OBJECT,
	RJ_MISSING_TYPE,
	RJ_BAD_FIELD,
	RJ_TOO_LARGE,
	RJ_TRUNCATED_BINARY,
	RJ_UNKNOWN_BINARY,
	RJ_BAD_IMAGE_FORMAT,
	RJ_COUNT
};

/* What log_faults_on_change compares. */
struct fault_counts {
	uint64_t rejected, recovered, lost, resyncs, http_failures;
	uint64_t dropped[MSG_CLASS_COUNT];
	uint64_t reconnects_comfyui, reconnects_mqtt;
};

struct health {
	int64_t next_at;
	uint64_t rejected[RJ_COUNT];
	struct ratelog reject_log[RJ_COUNT];
	struct ratelog body_log[RJ_COUNT]; /* unusable HTTP bodies */
	/* rendered too big for the broker's maximum packet: dropped */
	uint64_t unfit[MSG_CLASS_COUNT];
	struct ratelog unfit_log;
	struct fault_counts last_logged;
	struct engine_counters counters;
};

/* Reconciliation with ComfyUI's own view (/queue, /history). */
struct recon {
	bool poll_inflight, poll_pending;
	int64_t poll_retry_at;
	unsigned poll_failures;
	bool resyncing;
	uint64_t queue_generation;
	size_t last_queue_total;
	struct buf queue_ids; /* the last queue published, to see changes */
	/* history list */
	bool baseline_taken, list_inflight, list_pending;
	/* the pages read after an earlier run's cursor (catchup.c) */
	bool after_inflight, after_done, after_passed;
	int64_t after_offset; /* -1: the newest page */
	char after_newest[PROMPT_ID_MAX + 1]; /* the last page's first id */
	/* a status frame said the queue shrank and asked for the list: the
	 * next /queue answer showing the same need not ask again */
	bool list_asked_by_status;
	/* ids of prompts finished or in the history baseline */
	struct idset finished;
	/* liveness of the WebSocket: see bridge/README.md#orphaned-socket */
	int64_t last_status_count; /* queue_remaining of the last status */
	int64_t next_watchdog_at;
	int64_t watchdog_asked_at; /* a watchdog check is in flight */
	unsigned watchdog_mismatches;
};

/* Retained states waiting for their TTL to pass (where message expiry is
 * not honoured) beyond the prompt table: of prompts evicted from the
 * table (24 bytes each for a UUID id: its heap record, expiry.h), or of an
 * earlier run (36: the record and its hash in the dedupe set), so 768 KiB
 * to 1.1 MiB at most. Once full, the state due first is cleared early, so
 * that none is ever left behind on the broker. */
#define EXPIRY_MAX 32768

struct retained {
	struct buf info, queue, current, cursor; /* payloads to republish */
	char current_id[PROMPT_ID_MAX + 1];
	bool broker_ever_connected;
	struct expiry_heap exp;
	struct idset exp_levels; /* hashes of the levels read back queued */
	uint64_t early_clears;
	struct ratelog full_log;
	char state_filter[TOPIC_MAX];
	/* bridge/cursor: the newest finished prompt accounted for; see
	 * bridge/README.md#restart-catch-up */
	char cursor_topic[TOPIC_MAX];
	char old_id[PROMPT_ID_MAX + 1]; /* an earlier run's cursor */
	int64_t old_at; /* its finished_at; 0: none read back */
	int64_t mine_at; /* finished_at of the cursor this run published */
};

struct engine {
	struct engine_cfg cfg;
	char *prefix, *instance, *client_id, *mqtt_client_id, *comfy_url;
	char *print_prefix; /* NULL: none */
	struct engine_io io;

	struct json_parser *parser; /* frames */
	struct json_parser *http_parser; /* /queue and /history bodies */
	struct tracker *tracker;

	char *obuf; /* scratch payload buffer */
	char topic[TOPIC_MAX]; /* of the message being published */
	char offline_topic[TOPIC_MAX]; /* engine_offline_msg's */
	struct pub_scratch scratch;
	struct pub_env pub_env;
	struct render_ctx rctx;
	uint64_t seq;

	/* upstream */
	bool upstream_up, upstream_ever_up;
	/* upstream/state is published once the link's state is known: the
	 * first connect succeeded, or failed, or did not answer by
	 * upstream_known_by (a retained "offline" at every start would tell
	 * HA that ComfyUI went down) */
	bool upstream_known;
	int64_t upstream_known_by;
	int64_t upstream_up_at;
	/* reading the WebSocket is paused (backpressure), and when it last
	 * went on again: our prompts' history lookups wait for the frames
	 * still unread (bridge/README.md#backpressure) */
	bool upstream_paused;
	int64_t upstream_resumed_at;
	int64_t last_frame_at;
	char comfyui_version[64];
	bool stats_requested;
	char running_id[PROMPT_ID_MAX + 1]; /* prompt executing live */

	/* earliest time engine_tick() has work; 0: nothing known */
	int64_t due;

	struct console console;
	struct recon recon;
	struct retained retained;
	struct health health;
};

/* engine.c */
void engine_schedule(struct engine *e, int64_t t);
int64_t min_due(int64_t a, int64_t b);
size_t copy_str(char *dst, size_t cap, const char *src);

/* lifecycle.c */
struct prompt *lc_prompt_for(
    struct engine *e, const char *id, size_t len, int64_t now);
void lc_on_event(struct engine *e, const struct json_doc *d,
    const struct comfy_event *ev, struct prompt *p, int64_t now);
/* Publishes a state held back by the progress rate limit once it is due;
 * returns when it is due (0: nothing held back). */
int64_t lc_prompt_tick(struct engine *e, struct prompt *p, int64_t now);
/* Publishes queued once per prompt. */
void lc_ensure_queued(
    struct engine *e, struct prompt *p, enum prompt_source src, int64_t now);
/* An execution_start the bridge infers (from /queue or history). */
void lc_derive_start(struct engine *e, struct prompt *p,
    enum prompt_source src, int64_t started_at, int64_t now);
/* ComfyUI's timestamp of the prompt's start (0: none): it replaces a
 * start time the bridge took from its own clock; keeps the times in
 * order. */
void lc_clock_start(struct prompt *p, int64_t ts);
/* How a prompt ends, for lc_finish. */
struct lc_end {
	enum prompt_status status;
	enum prompt_source source;
	const char *type; /* the terminal event's type */
	const struct json_doc *doc; /* its data, or NULL */
	int data;
	int64_t finished_at; /* 0: now */
	const char *node; /* NULL: none */
	bool derived;
};
void lc_finish(
    struct engine *e, struct prompt *p, const struct lc_end *end, int64_t now);
/* Keeps a node's output (with file URLs) for the state and completion. */
void lc_set_output(struct engine *e, struct prompt *p, const char *node,
    const struct json_doc *d, int out);

/* emit.c: each renders its payload into e->obuf and publishes it */
void emit_msg(struct engine *e, const struct pub_req *r);
void emit_envelope(struct engine *e, const struct envelope *ev);
void emit_state(struct engine *e, struct prompt *p, int64_t now);
void emit_state_again(struct engine *e, const struct prompt *p);
void emit_completion(struct engine *e, struct prompt *p, int64_t now);
void emit_text(struct engine *e, enum topic_kind k, const char *text);
/* A message on a topic of no prompt (keep: a copy to republish). */
void emit_global(struct engine *e, enum topic_kind k, const char *prompt_id,
    const char *json, size_t len, struct buf *keep);
void emit_info(struct engine *e, int64_t now);
/* bridge/cursor (retained, kept to republish). */
void emit_cursor(
    struct engine *e, const char *id, int64_t finished_at, int64_t now);
void emit_queue(struct engine *e, const struct queue_item *items, size_t n_run,
    size_t n, int64_t now);
void emit_preview(struct engine *e, struct prompt *p, const char *mime,
    const uint8_t *img, size_t len, int64_t now);
/* Publishes a preview held back by the rate limit once its window opens;
 * returns when that is (0: none held). */
int64_t emit_preview_tick(struct engine *e, struct prompt *p, int64_t now);

/* recon.c */
/* ComfyUI took our own POST /prompt (id: len bytes, unescaped): recorded
 * as a pending /queue entry with our client id. */
void recon_on_submitted(
    struct engine *e, const char *id, size_t len, int64_t number, int64_t now);
/* A status frame: the queue is read again (and the history list when it
 * shrank). */
void recon_on_status(struct engine *e, const struct comfy_event *ev);
/* The WebSocket went up or down (called before upstream_ever_up is set:
 * a second up is a reconnect, which starts a resync). */
void recon_on_upstream(struct engine *e, bool up, int64_t now);
/* Reads the queue (when the link is up; else it is read on connect). */
void recon_poll_soon(struct engine *e);
/* Reads the history list and the queue (after the WebSocket came up). */
void recon_catch_up(struct engine *e);
/* A history entry: its prompt finished (published once). */
void recon_apply_entry(struct engine *e, struct prompt *p,
    const struct json_doc *d, int entry, int64_t now);
/* The finish time of a history entry, 0 when it lists none. */
int64_t recon_entry_end(const struct json_doc *d, int entry);

/* catchup.c: see bridge/README.md#restart-catch-up */
#define CATCHUP_TAG "after"
/* Reads history for what finished after an earlier run's cursor. */
void recon_after_cursor(struct engine *e);
/* Whether an earlier run's cursor waits for that read. */
bool recon_catching_up(const struct engine *e);
void recon_on_catch_up_page(
    struct engine *e, bool ok, const char *body, size_t len, int64_t now);
/* Publishes the cursor at a finished prompt when it is the newest. */
void retained_cursor(
    struct engine *e, const char *id, int64_t finished_at, int64_t now);
void recon_on_http(struct engine *e, enum engine_http_kind kind,
    const char *tag, int status, const char *body, size_t len, int64_t now);
/* The ticks return the time they are due next (0: nothing). A failed
 * /queue read is retried: */
int64_t recon_retry_tick(struct engine *e, int64_t now);
/* A prompt's history look-up: */
int64_t recon_prompt_tick(struct engine *e, struct prompt *p, int64_t now);
/* The watchdog: */
int64_t recon_watchdog_tick(struct engine *e, int64_t now);
/* Remembers a finished prompt, so the history list does not report it. */
void recon_seen_add(struct engine *e, const char *id, size_t len);
/* Whether this run published the prompt's terminal event. */
bool recon_finished_here(const struct engine *e, const char *id, size_t len);
void recon_init(struct recon *r);
void recon_destroy(struct recon *r);

/* retained.c */
void retained_init(struct engine *e);
void retained_on_connected(struct engine *e, bool session_present);
void retained_on_state(struct engine *e, const char *topic,
    const void *payload, size_t len, int64_t now);
/* Clears the prompt's retained state once its TTL has passed (the prompt
 * is removed then: returns true). *next: the earliest due. */
bool retained_prompt_tick(
    struct engine *e, struct prompt *p, int64_t now, int64_t *next);
int64_t retained_tick(struct engine *e, int64_t now);
void retained_destroy(struct retained *r);

/* health.c */
void health_init(struct health *h);
void health_reject(
    struct engine *e, enum reject_reason r, const void *buf, size_t len);
void health_oversize(struct engine *e, size_t len_so_far, bool binary);
/* A message of class cls (what: "state", ...; of prompt tid or NULL) did
 * not fit in the broker's maximum packet: counted as dropped, logged. */
void health_unfit(
    struct engine *e, enum msg_class cls, const char *what, const char *tid);
/* The reject reason of a json_parse() error (an enum br_err). */
enum reject_reason health_json_reason(int err);
void health_body_unusable(
    struct engine *e, const char *what, int err, size_t len);
int64_t health_tick(
    struct engine *e, int64_t now, const struct engine_health_io *h);

#endif
