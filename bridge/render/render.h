/* Rendering: pure functions that write the bridge's JSON payloads (event
 * envelope, prompt state, completion, queue, bridge/info, bridge/health)
 * into a struct jsonw the caller owns. They read plain data and publish
 * nothing; the caller passes the time and the sequence number. Each
 * returns 0, or BR_ETRUNC when the payload did not fit in the writer. */
#ifndef C2M_RENDER_H
#define C2M_RENDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "json.h"
#include "jsonw.h"
#include "tracker.h"

/* What every payload of one bridge shares. */
struct render_ctx {
	const char *instance;
	int64_t run; /* the bridge's start (wall-clock ms) */
	size_t max_payload; /* the largest payload the broker takes */
};

/* One event envelope. Optional members are written only when their has_
 * flag is set; a negative (or, for node_started_at, non-positive) value
 * writes null. */
struct envelope {
	const char *type;
	const char *prompt_id; /* raw; NULL: null */
	size_t prompt_len;
	const char *tid; /* the prompt id sanitized for topics; NULL: none */
	const char *node; /* NULL: null */
	int64_t ts;
	enum prompt_source source;
	bool derived; /* made up by the bridge, not sent by ComfyUI */
	bool terminal; /* the prompt's terminal event */
	bool has_percent, percent_null;
	double percent;
	bool has_node_started;
	int64_t node_started_at;
	bool has_node_ms;
	int64_t node_ms;
	bool has_images;
	int64_t images;
	bool has_duration;
	int64_t duration_ms;
	/* data: a token of doc, else raw JSON, else {} */
	const struct json_doc *doc;
	int data_tok;
	const char *data_raw;
	size_t data_raw_len;
};

/* Clears ev and sets its type, time and source (no data yet). */
void envelope_init(
    struct envelope *ev, const char *type, int64_t ts, enum prompt_source src);
/* Sets the prompt members from p. */
void envelope_for(struct envelope *ev, const struct prompt *p);

int render_envelope(struct jsonw *w, const struct render_ctx *c,
    const struct envelope *ev, uint64_t seq);

/* The data of events the bridge writes itself: queued, an execution_start
 * it derived, a terminal event without ComfyUI's data (lost and cancelled:
 * the reason; else the timestamp unless derived), progress_text from a binary
 * frame (node cut at 256 bytes, text at 4 KiB). Room needed: RENDER_DATA_MAX
 * plus 6 bytes per byte of the prompt id (or of node and text). */
#define RENDER_DATA_MAX 256
void render_queued_data(struct jsonw *w, const struct prompt *p);
void render_start_data(struct jsonw *w, const struct prompt *p);
void render_end_data(struct jsonw *w, const struct prompt *p,
    enum prompt_status st, bool derived, int64_t finished_at);
void render_progress_text_data(struct jsonw *w, const char *node,
    size_t node_len, const char *text, size_t text_len);

/* value of max in percent, kept within 0..100 (a custom node may report a
 * value above its max, or below 0). max must be > 0. */
double render_percent(double value, double max);

/* The prompt snapshot for prompt/<id>/state and current. */
int render_state(struct jsonw *w, const struct render_ctx *c,
    const struct prompt *p, int64_t ts, uint64_t seq);
/* The state rendered by render_state with seq instead of its own: the
 * bytes of state (len) copied into dst (cap bytes incl. a NUL) with the
 * tail's seq replaced, what render_state with seq writes. Sets *out_len;
 * BR_ETRUNC when it does not fit, BR_EINVAL when state has no tail. */
int render_state_reseq(char *dst, size_t cap, const char *state, size_t len,
    uint64_t seq, size_t *out_len);
/* The message on completion for a finished prompt. */
int render_completion(struct jsonw *w, const struct render_ctx *c,
    const struct prompt *p, int64_t ts, uint64_t seq);
/* The event type completion names for a final status. */
const char *render_completion_type(enum prompt_status s);

/* One /queue entry as reconciliation reads it. */
struct queue_item {
	char id[PROMPT_ID_MAX + 1];
	size_t id_len;
	double number;
	bool has_number;
	char client_id[PROMPT_ID_MAX + 1];
	bool has_client_id;
	int64_t create_time;
};

/* The queue: items[0..n_run) run, items[n_run..n) wait, in run order. */
int render_queue(struct jsonw *w, const struct render_ctx *c,
    const struct queue_item *items, size_t n_run, size_t n, int64_t ts,
    uint64_t seq);

/* The facts bridge/info shows. */
struct info_facts {
	const char *version, *prefix, *comfyui_url;
	const char *comfyui_version; /* "" when not known yet */
	const char *client_id, *mqtt_client_id;
	int mqtt_protocol; /* 4 or 5 */
	/* writes the options object's members (w is a struct jsonw *) */
	void (*write_options)(void *ud, void *w);
	void *write_options_ud;
};

int render_info(struct jsonw *w, const struct render_ctx *c,
    const struct info_facts *f, int64_t ts, uint64_t seq);

/* bridge/cursor: the newest finished prompt a run accounted for. */
int render_cursor(struct jsonw *w, const struct render_ctx *c, const char *id,
    int64_t finished_at, int64_t ts, uint64_t seq);

/* The facts bridge/health shows, besides the adapters' (io, may be NULL). */
struct health_facts {
	const struct engine_counters *counters;
	const uint64_t *rejected; /* per reason */
	const char *const *reject_names;
	unsigned n_reasons;
	bool upstream_up;
	int64_t last_frame_at; /* 0: none yet */
	const struct engine_health_io *io;
};

int render_health(struct jsonw *w, const struct render_ctx *c,
    const struct health_facts *f, int64_t ts, uint64_t seq);

/* A node's output object from ComfyUI, with a "url" added to every file
 * reference (an object with a "filename"), built on comfy_url. Sets
 * *truncated when something was cut. */
void render_node_output(struct jsonw *w, const char *comfy_url,
    const struct json_doc *d, int out, bool *truncated);
/* The number of file references in a node's UI output, in any of its
 * lists (images, gifs, audio, video, 3D models, a custom node's). */
int render_count_files(const struct json_doc *d, int out);
/* The error object of an execution_error or execution_interrupted data
 * object (d NULL: no details): every member the schemas require, with its
 * type, whatever ComfyUI sent; the traceback is cut at 16 KiB. A writer
 * of RENDER_ERROR_MAX bytes always has room. */
#define RENDER_ERROR_MAX (16384 + 8192)
void render_error(
    struct jsonw *w, const struct json_doc *d, int data, bool interrupted);

#endif
