#include "engine.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "binframe.h"
#include "err.h"
#include "event.h"
#include "json.h"
#include "jsonw.h"
#include "log.h"
#include "topic.h"
#include "tracker.h"
#include "utf8.h"

#define MAX_PAYLOAD      (256 * 1024)
#define OUTBUF_CAP       (MAX_PAYLOAD + 16 * 1024)
#define TRACKER_CAPACITY 1024
/* HTTP bodies (/queue, /history) get a token array that starts small and
 * grows for a big body (a long queue of big workflows: 2.3 MB is about
 * 325k tokens), up to 4M tokens (80 MiB), and is trimmed after each body */
#define HTTP_INITIAL_TOKENS   (1u << 14)
#define HTTP_MAX_TOKENS       (1u << 22)
#define STATE_MIN_INTERVAL_MS 100
#define HISTORY_GRACE_MS      1500
#define PROGRESS_EXPIRY_S     60
/* retained states of an earlier run waiting for their TTL to pass */
#define STALE_STATES_MAX 1024
#define TRACEBACK_MAX    16384
#define SEEN_RING        4096
#define REJECT_LOG_MAX   5

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

static const char *const reject_names[RJ_COUNT] = {
	"empty",
	"invalid_json",
	"invalid_utf8",
	"too_deep",
	"too_many_tokens",
	"not_object",
	"missing_type",
	"bad_field",
	"too_large",
	"truncated_binary",
	"unknown_binary_type",
	"bad_image_format",
};

/* Retry delays for failed HTTP requests: backoff as data. */
static const int64_t http_backoff_ms[]
    = { 250, 500, 1000, 2000, 4000, 8000, 16000, 30000 };
#define HTTP_BACKOFF_N (sizeof(http_backoff_ms) / sizeof(http_backoff_ms[0]))

/* A retained state of an earlier run, cleared when its TTL has passed. */
struct stale_state {
	char *topic;
	int64_t due;
};

/* What log_faults_on_change compares. */
struct fault_counts {
	uint64_t rejected, recovered, lost, resyncs, http_failures;
	uint64_t dropped[MSG_CLASS_COUNT];
	uint64_t reconnects_comfyui, reconnects_mqtt;
};

struct engine {
	struct engine_cfg cfg;
	char *prefix, *instance, *client_id, *mqtt_client_id, *comfy_url;
	struct engine_io io;

	struct json_parser *parser; /* frames */
	struct json_parser *http_parser; /* /queue and /history bodies */
	struct tracker *tracker;

	char *obuf; /* scratch payload buffer */
	char topic[TOPIC_MAX];
	char key[TOPIC_MAX + NODE_ID_MAX + 2];
	size_t max_payload;

	int64_t run;
	uint64_t seq;

	/* upstream */
	bool upstream_up, upstream_ever_up;
	int64_t last_frame_at;
	char comfyui_version[64];
	bool stats_requested;

	/* polling */
	bool poll_inflight, poll_pending;
	int64_t poll_retry_at;
	unsigned poll_failures;
	bool resyncing;
	uint64_t queue_generation;
	int64_t queue_remaining;
	size_t last_queue_total;
	struct dbuf queue_payload; /* retained copy */
	struct dbuf queue_ids; /* to detect changes */
	char running_id[PROMPT_ID_MAX + 1]; /* prompt executing live */

	/* liveness of the WebSocket (orphaned socket, protocol.md §1.4) */
	int64_t upstream_up_at;
	int64_t last_status_count; /* queue_remaining of the last status */
	int64_t next_watchdog_at;
	int64_t watchdog_asked_at; /* a watchdog check is in flight */
	unsigned watchdog_mismatches;

	/* history list */
	bool baseline_taken, list_inflight, list_pending;
	/* a status frame said the queue shrank and asked for the list: the
	 * next /queue answer showing the same need not ask again */
	bool list_asked_by_status;
	unsigned http_reasons_logged; /* json_reason bits already warned of */

	/* retained states left by an earlier run (engine_on_retained_state) */
	struct stale_state *stale;
	size_t n_stale;
	char state_filter[TOPIC_MAX];
	uint64_t seen[SEEN_RING];
	unsigned seen_next;

	/* retained memory */
	struct dbuf info_payload;
	struct dbuf current_payload;
	char current_id[PROMPT_ID_MAX + 1];
	bool broker_ever_connected;

	/* earliest time engine_tick() has work; 0: nothing known */
	int64_t due;

	/* health */
	int64_t next_health_at;
	int64_t started_mono;
	uint64_t rejected[RJ_COUNT];
	struct fault_counts last_logged_faults;
	struct engine_counters counters;
};

/* ------------------------------------------------------------------ */
/* small helpers */

static char *
dupstr(const char *s)
{
	return strdup(s ? s : "");
}

/* snprintf(dst, cap, "%s", src) without the format machinery, which was a
 * measurable share of the per-event cost: copies at most cap - 1 bytes,
 * always terminates (cap > 0). Returns the length copied. */
static size_t
copy_str(char *dst, size_t cap, const char *src)
{
	size_t n = strnlen(src, cap - 1);
	memcpy(dst, src, n);
	dst[n] = '\0';
	return n;
}

static void print_line(struct engine *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
print_line(struct engine *e, const char *fmt, ...)
{
	if (!e->cfg.print)
		return;
	if (e->cfg.print_timestamps) {
		time_t now = time(NULL);
		struct tm tm;
		localtime_r(&now, &tm);
		fprintf(e->cfg.print, "[%02d:%02d:%02d] ", tm.tm_hour,
		    tm.tm_min, tm.tm_sec);
	}
	va_list ap;
	va_start(ap, fmt);
	vfprintf(e->cfg.print, fmt, ap);
	va_end(ap);
	fputc('\n', e->cfg.print);
	fflush(e->cfg.print);
}

void
engine_print_line(struct engine *e, const char *line)
{
	print_line(e, "%s", line);
}

static void
seen_add(struct engine *e, const char *id, size_t len)
{
	e->seen[e->seen_next++ % SEEN_RING] = tracker_hash(id, len);
}

static bool
seen_has(const struct engine *e, const char *id, size_t len)
{
	uint64_t h = tracker_hash(id, len);
	for (unsigned i = 0; i < SEEN_RING; i++)
		if (e->seen[i] == h && h != 0)
			return true;
	return false;
}

/* Remembers that engine_tick() has work at time t. */
static void
schedule(struct engine *e, int64_t t)
{
	if (e->due == 0 || t < e->due)
		e->due = t;
}

static bool
is_progress_type(const char *type)
{
	return strcmp(type, "progress") == 0
	    || strcmp(type, "progress_state") == 0
	    || strcmp(type, "progress_text") == 0
	    || strcmp(type, "crystools.monitor") == 0
	    || strcmp(type, "logs") == 0;
}

static bool
event_allowed(struct engine *e, const char *type)
{
	if (!e->cfg.event_allowed)
		return true;
	return e->cfg.event_allowed(
	    e->cfg.event_allowed_ud, type, strlen(type));
}

/* Hands one message to the publisher. */
static void
emit_urgent(struct engine *e, bool urgent, enum msg_class cls,
    const char *topic, const void *payload, size_t len, int qos, bool retain,
    const char *content_type, uint32_t expiry, const char *type_prop,
    const char *prompt_prop, const char *coalesce_key)
{
	/* MQTT user properties are UTF-8 strings the broker checks: a control
	 * character in a prompt id or an event type makes mosquitto drop the
	 * connection, and the resent message would do it again for ever.
	 * (Topics are sanitized; payloads are JSON-escaped.) */
	char type_clean[EVENT_TYPE_MAX * 3 + 1];
	char prompt_clean[PROMPT_ID_MAX * 3 + 1];
	if (type_prop != NULL && !utf8_mqtt_ok(type_prop)) {
		utf8_mqtt_clean(type_clean, sizeof(type_clean), type_prop);
		type_prop = type_clean;
	}
	if (prompt_prop != NULL && !utf8_mqtt_ok(prompt_prop)) {
		utf8_mqtt_clean(
		    prompt_clean, sizeof(prompt_clean), prompt_prop);
		prompt_prop = prompt_clean;
	}
	struct out_msg m = {
		.cls = cls,
		.topic = topic,
		.payload = payload,
		.len = len,
		.qos = qos,
		.retain = retain,
		.props = { .content_type = content_type,
		    .utf8 = content_type != NULL
		        && strncmp(content_type, "image/", 6) != 0,
		    .expiry_s = expiry,
		    .instance = e->instance,
		    .type = type_prop,
		    .prompt_id = prompt_prop },
		.coalesce_key = coalesce_key,
		.urgent = urgent,
	};
	e->io.publish(e->io.ud, &m);
}

static void
emit(struct engine *e, enum msg_class cls, const char *topic,
    const void *payload, size_t len, int qos, bool retain,
    const char *content_type, uint32_t expiry, const char *type_prop,
    const char *prompt_prop, const char *coalesce_key)
{
	emit_urgent(e, false, cls, topic, payload, len, qos, retain,
	    content_type, expiry, type_prop, prompt_prop, coalesce_key);
}

static void
w_common_tail(struct engine *e, struct jsonw *w, int64_t ts)
{
	jsonw_kint(w, "ts", ts);
	jsonw_kint(w, "seq", (int64_t) ++e->seq);
	jsonw_kint(w, "run", e->run);
}

static void
w_nullable_int(struct jsonw *w, const char *k, int64_t v)
{
	if (v > 0)
		jsonw_kint(w, k, v);
	else
		jsonw_knull(w, k);
}

static size_t
data_budget(const struct engine *e, const struct jsonw *w)
{
	size_t used = w->len + 64;
	return used < e->max_payload ? e->max_payload - used : 1;
}

/* ------------------------------------------------------------------ */
/* envelopes */

struct envelope {
	const char *type;
	const char *prompt_id; /* raw, NULL: none */
	size_t prompt_len;
	const char *tid; /* sanitized prompt id for the topic */
	const char *node; /* NULL: null */
	int64_t ts;
	enum prompt_source source;
	bool derived;
	/* derived fields */
	bool has_percent;
	double percent;
	bool percent_null;
	bool has_node_started;
	int64_t node_started_at; /* <= 0: null */
	bool has_node_ms;
	int64_t node_ms; /* < 0: null */
	bool has_images;
	int64_t images;
	bool has_duration;
	int64_t duration_ms; /* < 0: null */
	/* data: a token of doc, or raw JSON */
	const struct json_doc *doc;
	int data_tok;
	const char *data_raw;
	size_t data_raw_len;
	enum msg_class cls;
	int qos;
};

static void
publish_envelope(struct engine *e, const struct envelope *ev)
{
	if (!event_allowed(e, ev->type))
		return;
	struct jsonw w;
	bool truncated = false;
	jsonw_init(&w, e->obuf, e->max_payload + 1024);
	jsonw_obj_begin(&w);
	jsonw_kint(&w, "v", 1);
	jsonw_kstr(&w, "type", ev->type);
	jsonw_kstr(&w, "instance", e->instance);
	if (ev->prompt_id)
		jsonw_kstrn(&w, "prompt_id", ev->prompt_id, ev->prompt_len);
	else
		jsonw_knull(&w, "prompt_id");
	if (ev->node)
		jsonw_kstr(&w, "node", ev->node);
	else
		jsonw_knull(&w, "node");
	w_common_tail(e, &w, ev->ts);
	jsonw_kstr(&w, "source", prompt_source_name(ev->source));
	if (ev->has_percent) {
		jsonw_key(&w, "percent");
		if (ev->percent_null)
			jsonw_null(&w);
		else
			jsonw_fixed(&w, ev->percent, 1);
	}
	if (ev->has_node_started)
		w_nullable_int(&w, "node_started_at", ev->node_started_at);
	if (ev->has_node_ms) {
		if (ev->node_ms >= 0)
			jsonw_kint(&w, "node_ms", ev->node_ms);
		else
			jsonw_knull(&w, "node_ms");
	}
	if (ev->has_images)
		jsonw_kint(&w, "images", ev->images);
	if (ev->has_duration) {
		if (ev->duration_ms >= 0)
			jsonw_kint(&w, "duration_ms", ev->duration_ms);
		else
			jsonw_knull(&w, "duration_ms");
	}
	jsonw_key(&w, "data");
	if (ev->doc && ev->data_tok >= 0)
		json_emit(
		    ev->doc, ev->data_tok, &w, data_budget(e, &w), &truncated);
	else if (ev->data_raw)
		jsonw_raw(&w, ev->data_raw, ev->data_raw_len);
	else
		jsonw_raw(&w, "{}", 2);
	if (truncated)
		jsonw_kbool(&w, "truncated", true);
	if (ev->derived)
		jsonw_kbool(&w, "derived", true);
	jsonw_obj_end(&w);
	if (jsonw_finish(&w) != 0) {
		log_warn("bridge",
		    "%s event for %s does not fit in %zu bytes; "
		    "dropped",
		    ev->type, ev->tid ? ev->tid : "-", e->max_payload);
		return;
	}
	int rc;
	if (ev->tid)
		rc = topic_prompt(e->topic, sizeof(e->topic), e->prefix,
		    e->instance, ev->tid, strlen(ev->tid), "event", ev->type,
		    strlen(ev->type));
	else
		rc = topic_event(e->topic, sizeof(e->topic), e->prefix,
		    e->instance, ev->type, strlen(ev->type));
	if (rc < 0)
		return;
	const char *key = NULL;
	if (ev->cls == MSG_PROGRESS) {
		size_t tl = copy_str(e->key, sizeof(e->key), e->topic);
		if (tl + 1 < sizeof(e->key)) {
			e->key[tl] = '|';
			copy_str(e->key + tl + 1, sizeof(e->key) - tl - 1,
			    ev->node ? ev->node : "");
		}
		key = e->key;
	}
	bool progress = is_progress_type(ev->type);
	/* events of no prompt (<p>/<i>/event/<type>: status, feature_flags,
	 * custom nodes') go out at QoS 0 (contract 2) */
	emit(e, ev->cls, e->topic, w.buf, w.len, ev->tid ? ev->qos : 0, false,
	    "application/json", progress ? PROGRESS_EXPIRY_S : 0, ev->type,
	    ev->prompt_id ? ev->prompt_id : NULL, key);
	e->counters.published_events++;
}

/* value of max in percent, within 0..100 (the schemas' range): a custom
 * node may report a value above its max, or below 0. */
static double
percent_of(double value, double max)
{
	double pc = value * 100.0 / max;
	return pc < 0 ? 0 : pc > 100 ? 100 : pc;
}

static void
envelope_init(
    struct envelope *ev, const char *type, int64_t ts, enum prompt_source src)
{
	memset(ev, 0, sizeof(*ev));
	ev->type = type;
	ev->ts = ts;
	ev->source = src;
	ev->data_tok = -1;
	ev->cls = is_progress_type(type) ? MSG_PROGRESS : MSG_LIFECYCLE;
	ev->qos = ev->cls == MSG_PROGRESS ? 0 : 1;
}

static void
envelope_for(struct envelope *ev, const struct prompt *p)
{
	ev->prompt_id = p->id;
	ev->prompt_len = p->id_len;
	ev->tid = p->tid;
}

/* ------------------------------------------------------------------ */
/* state and completion */

static void
w_str_list(struct jsonw *w, const char *k, const struct dbuf *b)
{
	jsonw_key(w, k);
	jsonw_arr_begin(w);
	if (b->len)
		jsonw_raw(w, b->p, b->len);
	jsonw_arr_end(w);
}

static bool
w_outputs(struct jsonw *w, const struct prompt *p, size_t budget)
{
	bool truncated = p->outputs_truncated;
	jsonw_key(w, "outputs");
	if (p->n_outputs == 0 && p->status != PS_SUCCESS) {
		jsonw_null(w);
		return truncated;
	}
	jsonw_obj_begin(w);
	size_t start = w->len;
	for (unsigned i = 0; i < p->n_outputs; i++) {
		const struct prompt_output *o = &p->outputs[i];
		if (w->len - start + o->json.len + 140 > budget) {
			truncated = true;
			break;
		}
		jsonw_key(w, o->node);
		jsonw_raw(w, o->json.p, o->json.len);
	}
	jsonw_obj_end(w);
	return truncated;
}

static int64_t
prompt_duration(const struct prompt *p)
{
	if (p->started_at > 0 && p->finished_at >= p->started_at)
		return p->finished_at - p->started_at;
	return -1;
}

static void
state_topic(struct engine *e, const struct prompt *p)
{
	topic_prompt(e->topic, sizeof(e->topic), e->prefix, e->instance,
	    p->tid, strlen(p->tid), "state", NULL, 0);
}

/* Publishes a retained JSON payload (QoS 1) on <p>/<i>/<rest> and keeps a
 * copy in keep (when given) for republishing after a broker reconnect. */
static void
publish_retained_json(struct engine *e, enum msg_class cls, const char *rest,
    const char *type, const char *prompt_id, const char *json, size_t len,
    struct dbuf *keep)
{
	if (keep != NULL && keep->p != json)
		dbuf_set(keep, json, len);
	if (topic_join(
	        e->topic, sizeof(e->topic), e->prefix, e->instance, rest)
	    < 0)
		return;
	emit(e, cls, e->topic, json, len, 1, true, "application/json", 0, type,
	    prompt_id, e->topic);
}

/* The members state and completion end with: error, source, ts/seq/run,
 * the truncation mark; closes the object. */
static void
w_outcome_tail(struct engine *e, struct jsonw *w, const struct prompt *p,
    int64_t now, bool truncated)
{
	if (p->error.len)
		jsonw_kraw(w, "error", p->error.p, p->error.len);
	else
		jsonw_knull(w, "error");
	jsonw_kstr(w, "source", prompt_source_name(p->source));
	w_common_tail(e, w, now);
	if (truncated)
		jsonw_kbool(w, "truncated", true);
	jsonw_obj_end(w);
}

/* Writes the state snapshot into e->obuf; returns its length or -1. */
static long
build_state(struct engine *e, struct prompt *p, int64_t now)
{
	struct jsonw w;
	bool truncated = false;
	jsonw_init(&w, e->obuf, e->max_payload + 1024);
	jsonw_obj_begin(&w);
	jsonw_kint(&w, "v", 1);
	jsonw_kstrn(&w, "prompt_id", p->id, p->id_len);
	jsonw_kstr(&w, "instance", e->instance);
	jsonw_kstr(&w, "status", prompt_status_name(p->status));
	w_nullable_int(&w, "queued_at", p->queued_at);
	w_nullable_int(&w, "started_at", p->started_at);
	w_nullable_int(&w, "finished_at", p->finished_at);
	int64_t d = prompt_duration(p);
	if (p->terminal_sent && d >= 0)
		jsonw_kint(&w, "duration_ms", d);
	else
		jsonw_knull(&w, "duration_ms");
	if (p->has_node && !p->terminal_sent)
		jsonw_kstr(&w, "node", p->node);
	else
		jsonw_knull(&w, "node");
	jsonw_key(&w, "progress");
	if (p->has_progress && !p->terminal_sent) {
		jsonw_obj_begin(&w);
		jsonw_kstr(&w, "node", p->pnode);
		jsonw_key(&w, "value");
		jsonw_double(&w, p->value);
		jsonw_key(&w, "max");
		jsonw_double(&w, p->max);
		jsonw_key(&w, "percent");
		if (p->max > 0 && isfinite(p->value))
			jsonw_fixed(&w, percent_of(p->value, p->max), 1);
		else
			jsonw_null(&w);
		jsonw_obj_end(&w);
	} else {
		jsonw_null(&w);
	}
	w_str_list(&w, "nodes_cached", &p->cached);
	w_str_list(&w, "nodes_done", &p->done);
	if (p->node_ms.len)
		jsonw_kraw(&w, "node_ms", p->node_ms.p, p->node_ms.len);
	else
		jsonw_kraw(&w, "node_ms", "{}", 2);
	if (p->terminal_sent)
		truncated |= w_outputs(&w, p, data_budget(e, &w) / 2);
	else
		jsonw_knull(&w, "outputs");
	w_outcome_tail(e, &w, p, now, truncated);
	if (jsonw_finish(&w) != 0) {
		log_warn("bridge", "state of %s does not fit; not published",
		    p->tid);
		return -1;
	}
	return (long) w.len;
}

static void
publish_state(struct engine *e, struct prompt *p, int64_t now)
{
	long len = build_state(e, p, now);
	if (len < 0)
		return;
	dbuf_set(&p->state, e->obuf, (size_t) len);
	state_topic(e, p);
	emit(e, MSG_CRITICAL, e->topic, e->obuf, (size_t) len, 1, true,
	    "application/json", (uint32_t) e->cfg.state_ttl_s, "state", p->id,
	    e->topic);
	p->state_dirty = false;
	p->state_published_at = now;
	if (p->terminal_sent) {
		p->expire_at = now + e->cfg.state_ttl_s * 1000;
		schedule(e, p->expire_at);
	}
	/* <p>/<i>/current mirrors the prompt running now (or the last one to
	 * finish): a fixed topic for dashboards and Home Assistant. Its own
	 * seq, so consumers never see one seq twice. */
	if (strcmp(e->running_id, p->id) == 0 || p->terminal_sent) {
		len = build_state(e, p, now);
		if (len < 0)
			return;
		copy_str(e->current_id, sizeof(e->current_id), p->id);
		publish_retained_json(e, MSG_CRITICAL, "current", "current",
		    p->id, e->obuf, (size_t) len, &e->current_payload);
	}
}

static const char *
completion_type(enum prompt_status s)
{
	switch (s) {
	case PS_SUCCESS:
		return "success";
	case PS_ERROR:
		return "error";
	case PS_INTERRUPTED:
		return "interrupted";
	default:
		return "lost";
	}
}

static void
publish_completion(struct engine *e, struct prompt *p, int64_t now)
{
	struct jsonw w;
	jsonw_init(&w, e->obuf, e->max_payload + 1024);
	jsonw_obj_begin(&w);
	jsonw_kint(&w, "v", 1);
	jsonw_kstr(&w, "event_type", completion_type(p->status));
	jsonw_kstrn(&w, "prompt_id", p->id, p->id_len);
	jsonw_kstr(&w, "instance", e->instance);
	int64_t d = prompt_duration(p);
	if (d >= 0)
		jsonw_kint(&w, "duration_ms", d);
	else
		jsonw_knull(&w, "duration_ms");
	bool truncated = w_outputs(&w, p, data_budget(e, &w) / 2);
	w_outcome_tail(e, &w, p, now, truncated);
	if (jsonw_finish(&w) != 0) {
		log_warn("bridge", "completion of %s does not fit", p->tid);
		return;
	}
	if (topic_join(e->topic, sizeof(e->topic), e->prefix, e->instance,
	        "completion")
	    < 0)
		return;
	emit(e, MSG_CRITICAL, e->topic, w.buf, w.len, 1, false,
	    "application/json", 0, "completion", p->id, NULL);
}

/* ------------------------------------------------------------------ */
/* prompt bookkeeping */

static bool
list_has(const struct dbuf *b, const char *node)
{
	if (!b->len)
		return false;
	char pat[NODE_ID_MAX * 6 + 4];
	struct jsonw w;
	jsonw_init(&w, pat, sizeof(pat));
	jsonw_str(&w, node);
	const char *hit = b->p;
	size_t pl = w.len;
	while ((hit = strstr(hit, pat)) != NULL) {
		bool start_ok = hit == b->p || hit[-1] == ',';
		bool end_ok
		    = hit[pl] == '\0' || hit[pl] == ',' || hit[pl] == ':';
		if (start_ok && end_ok)
			return true;
		hit += pl;
	}
	return false;
}

static void
list_add(struct dbuf *b, const char *node)
{
	char tmp[NODE_ID_MAX * 6 + 4];
	struct jsonw w;
	if (list_has(b, node))
		return;
	jsonw_init(&w, tmp, sizeof(tmp));
	jsonw_str(&w, node);
	if (b->len)
		dbuf_append(b, ",", 1);
	dbuf_append(b, w.buf, w.len);
}

static int64_t
node_started(const struct prompt *p, const char *node)
{
	uint64_t h = tracker_hash(node, strlen(node));
	for (unsigned i = 0; i < PROMPT_RECENT_NODES; i++)
		if (p->recent[i].node_hash == h && p->recent[i].started_at)
			return p->recent[i].started_at;
	return 0;
}

static void
node_done(struct prompt *p, const char *node, int64_t now)
{
	if (list_has(&p->done, node))
		return;
	list_add(&p->done, node);
	int64_t t0 = node_started(p, node);
	if (t0 > 0 && now >= t0) {
		char tmp[NODE_ID_MAX * 6 + 32];
		struct jsonw w;
		jsonw_init(&w, tmp, sizeof(tmp));
		jsonw_str(&w, node);
		int n = snprintf(tmp + w.len, sizeof(tmp) - w.len, ":%lld}",
		    (long long) (now - t0));
		/* node_ms holds a whole object: insert before its '}' */
		if (p->node_ms.len > 2) {
			p->node_ms.p[p->node_ms.len - 1] = ',';
		} else {
			dbuf_set(&p->node_ms, "{", 1);
		}
		dbuf_append(&p->node_ms, tmp, w.len + (size_t) n);
	}
}

static void
ensure_queued(
    struct engine *e, struct prompt *p, enum prompt_source src, int64_t now)
{
	if (p->queued_sent)
		return;
	p->queued_sent = true;
	if (!p->queued_at)
		p->queued_at = now;
	struct envelope ev;
	char data[PROMPT_ID_MAX * 12 + 128];
	struct jsonw w;
	jsonw_init(&w, data, sizeof(data));
	jsonw_obj_begin(&w);
	jsonw_kstrn(&w, "prompt_id", p->id, p->id_len);
	if (p->has_number)
		jsonw_kint(&w, "number", p->number);
	else
		jsonw_knull(&w, "number");
	if (p->has_client_id)
		jsonw_kstr(&w, "client_id", p->client_id);
	else
		jsonw_knull(&w, "client_id");
	jsonw_obj_end(&w);
	envelope_init(&ev, "queued", now, src);
	envelope_for(&ev, p);
	ev.data_raw = w.buf;
	ev.data_raw_len = w.len;
	publish_envelope(e, &ev);
	print_line(e, "[QUEUED] Prompt %s", p->id);
}

/* A start we did not see live: from /queue or history. */
static void
derive_start(struct engine *e, struct prompt *p, enum prompt_source src,
    int64_t started_at, int64_t now)
{
	if (p->start_sent)
		return;
	p->start_sent = true;
	p->started_at = started_at > 0 ? started_at : now;
	char data[PROMPT_ID_MAX * 12 + 64];
	struct jsonw w;
	jsonw_init(&w, data, sizeof(data));
	jsonw_obj_begin(&w);
	jsonw_kstrn(&w, "prompt_id", p->id, p->id_len);
	jsonw_kint(&w, "timestamp", p->started_at);
	jsonw_obj_end(&w);
	struct envelope ev;
	envelope_init(&ev, "execution_start", now, src);
	envelope_for(&ev, p);
	ev.data_raw = w.buf;
	ev.data_raw_len = w.len;
	publish_envelope(e, &ev);
	if (!p->terminal_sent) {
		p->status = PS_RUNNING;
		p->source = src;
		copy_str(e->running_id, sizeof(e->running_id), p->id);
	}
}

/* Writes key: the string at data.key (cut at 4 KiB), or when that is
 * absent or not a string, null (nullable) or "". */
static void
put_error_str(struct jsonw *w, const struct json_doc *d, int data,
    const char *key, bool nullable, bool *truncated)
{
	int t = d != NULL && data >= 0 ? json_obj_get(d, data, key) : -1;
	jsonw_key(w, key);
	if (t >= 0 && json_is_string(d, t))
		json_emit(d, t, w, 4096, truncated);
	else if (nullable)
		jsonw_null(w);
	else
		jsonw_str(w, "");
}

/* Writes "traceback": its strings, at most TRACEBACK_MAX bytes of them;
 * [] when ComfyUI sent none. */
static void
put_traceback(
    struct jsonw *w, const struct json_doc *d, int data, bool *truncated)
{
	int tb
	    = d != NULL && data >= 0 ? json_obj_get(d, data, "traceback") : -1;
	jsonw_key(w, "traceback");
	jsonw_arr_begin(w);
	if (tb >= 0 && json_is_array(d, tb)) {
		size_t start = w->len;
		int n = json_size(d, tb), t = tb + 1;
		for (int i = 0; i < n; i++, t = json_skip(d, t)) {
			if (!json_is_string(d, t))
				continue;
			size_t used = w->len - start;
			if (used + 2 >= TRACEBACK_MAX) {
				*truncated = true;
				break;
			}
			json_emit(d, t, w, TRACEBACK_MAX - used, truncated);
		}
	}
	jsonw_arr_end(w);
}

/* Builds p->error from an execution_error / execution_interrupted data
 * object (d NULL: an error with no details, e.g. history's status "error"
 * without its message). Every member the schemas require is there, with
 * its type, whatever ComfyUI sent. */
static void
set_error(struct engine *e, struct prompt *p, const struct json_doc *d,
    int data, bool interrupted)
{
	char *buf = malloc(TRACEBACK_MAX + 8192);
	if (!buf)
		return;
	struct jsonw w;
	bool truncated = false;
	jsonw_init(&w, buf, TRACEBACK_MAX + 8192);
	jsonw_obj_begin(&w);
	put_error_str(&w, d, data, "node_id", true, &truncated);
	put_error_str(&w, d, data, "node_type", true, &truncated);
	if (!interrupted) {
		put_error_str(
		    &w, d, data, "exception_type", false, &truncated);
		put_error_str(
		    &w, d, data, "exception_message", false, &truncated);
		put_traceback(&w, d, data, &truncated);
	}
	if (truncated)
		jsonw_kbool(&w, "truncated", true);
	jsonw_obj_end(&w);
	if (jsonw_finish(&w) == 0)
		dbuf_set(&p->error, w.buf, w.len);
	free(buf);
	(void) e;
}

static void
url_encode(struct dbuf *out, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	for (; *s; s++) {
		unsigned char c = (unsigned char) *s;
		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
		    || (c >= '0' && c <= '9') || c == '-' || c == '_'
		    || c == '.' || c == '~') {
			dbuf_append(out, s, 1);
		} else {
			char esc[3] = { '%', hex[c >> 4], hex[c & 15] };
			dbuf_append(out, esc, 3);
		}
	}
}

/* Emits a file reference object with an added "url". */
static void
emit_file_ref(struct engine *e, const struct json_doc *d, int obj,
    struct jsonw *w, bool *truncated)
{
	char fn[1024], sub[1024], type[64];
	int fnt = json_obj_get(d, obj, "filename");
	int subt = json_obj_get(d, obj, "subfolder");
	int typet = json_obj_get(d, obj, "type");
	if (fnt < 0 || json_str_get(d, fnt, fn, sizeof(fn)) < 0
	    || (subt >= 0 && json_str_get(d, subt, sub, sizeof(sub)) < 0)
	    || (typet >= 0
	        && json_str_get(d, typet, type, sizeof(type)) < 0)) {
		json_emit(d, obj, w, 0, truncated);
		return;
	}
	if (subt < 0)
		sub[0] = '\0';
	if (typet < 0)
		snprintf(type, sizeof(type), "output");
	jsonw_obj_begin(w);
	int n = json_size(d, obj);
	int k = obj + 1;
	for (int i = 0; i < n; i++) {
		char key[64];
		if (json_str_get(d, k, key, sizeof(key)) < 0
		    || strcmp(key, "url") == 0) {
			k = json_skip(d, k + 1);
			continue;
		}
		jsonw_key(w, key);
		json_emit(d, k + 1, w, 0, truncated);
		k = json_skip(d, k + 1);
	}
	struct dbuf url = { 0 };
	dbuf_append(&url, e->comfy_url, strlen(e->comfy_url));
	dbuf_append(&url, "/view?filename=", 15);
	url_encode(&url, fn);
	dbuf_append(&url, "&subfolder=", 11);
	url_encode(&url, sub);
	dbuf_append(&url, "&type=", 6);
	url_encode(&url, type);
	jsonw_kstrn(w, "url", url.p ? url.p : "", url.len);
	dbuf_free(&url);
	jsonw_obj_end(w);
}

/* Emits a node output object, adding urls to file references. */
static void
emit_output(struct engine *e, const struct json_doc *d, int out,
    struct jsonw *w, bool *truncated)
{
	if (!json_is_object(d, out)) {
		json_emit(d, out, w, 0, truncated);
		return;
	}
	jsonw_obj_begin(w);
	int n = json_size(d, out);
	int k = out + 1;
	for (int i = 0; i < n; i++) {
		char key[256];
		int v = k + 1;
		if (json_str_get(d, k, key, sizeof(key)) < 0) {
			*truncated = true;
			k = json_skip(d, v);
			continue;
		}
		jsonw_key(w, key);
		if (json_is_array(d, v)) {
			jsonw_arr_begin(w);
			int m = json_size(d, v);
			int el = v + 1;
			for (int j = 0; j < m; j++) {
				if (json_is_object(d, el)
				    && json_obj_get(d, el, "filename") >= 0)
					emit_file_ref(e, d, el, w, truncated);
				else
					json_emit(d, el, w, 0, truncated);
				el = json_skip(d, el);
			}
			jsonw_arr_end(w);
		} else {
			json_emit(d, v, w, 0, truncated);
		}
		k = json_skip(d, v);
	}
	jsonw_obj_end(w);
}

/* Output files of a node's UI output (contract 3.1: "count of output
 * files"): the file references, objects with a "filename", in any of its
 * lists (images, gifs, audio, video, 3D models, a custom node's). */
static int
count_images(const struct json_doc *d, int out)
{
	if (out < 0 || !json_is_object(d, out))
		return 0;
	int files = 0, n = json_size(d, out), k = out + 1;
	for (int i = 0; i < n; i++) {
		int list = k + 1;
		if (json_is_array(d, list)) {
			int m = json_size(d, list), t = list + 1;
			for (int j = 0; j < m; j++, t = json_skip(d, t))
				files += json_is_object(d, t)
				    && json_obj_get(d, t, "filename") >= 0;
		}
		k = json_skip(d, list);
	}
	return files;
}

static void
set_output(struct engine *e, struct prompt *p, const char *node,
    const struct json_doc *d, int out)
{
	struct prompt_output *o = NULL;
	for (unsigned i = 0; i < p->n_outputs; i++)
		if (strcmp(p->outputs[i].node, node) == 0)
			o = &p->outputs[i];
	if (!o) {
		if (p->n_outputs >= PROMPT_MAX_OUTPUT_NODES) {
			p->outputs_truncated = true;
			return;
		}
		if (p->n_outputs == p->cap_outputs) {
			unsigned cap = p->cap_outputs ? p->cap_outputs * 2 : 4;
			struct prompt_output *no
			    = realloc(p->outputs, cap * sizeof(*no));
			if (!no)
				return;
			p->outputs = no;
			p->cap_outputs = cap;
		}
		o = &p->outputs[p->n_outputs++];
		memset(o, 0, sizeof(*o));
		copy_str(o->node, sizeof(o->node), node);
	}
	struct jsonw w;
	bool truncated = false;
	jsonw_init(&w, e->obuf, e->max_payload / 2);
	emit_output(e, d, out, &w, &truncated);
	if (jsonw_finish(&w) != 0) {
		/* too big: keep a valid placeholder and say so */
		dbuf_set(&o->json, "{}", 2);
		p->outputs_truncated = true;
		return;
	}
	if (truncated)
		p->outputs_truncated = true;
	dbuf_set(&o->json, w.buf, w.len);
}

/* The terminal step: event, state, completion; exactly once. */
static void
finish_prompt(struct engine *e, struct prompt *p, enum prompt_status st,
    enum prompt_source src, const char *type, const struct json_doc *d,
    int data, int64_t finished_at, const char *node, bool derived, int64_t now)
{
	if (p->terminal_sent)
		return;
	ensure_queued(e, p, src, now);
	if (!p->start_sent && st != PS_LOST)
		derive_start(e, p, src, p->started_at, now);
	p->terminal_sent = true;
	p->status = st;
	p->source = src;
	p->finished_at = finished_at > 0 ? finished_at : now;
	if (p->finished_at < p->started_at)
		p->finished_at = p->started_at;
	if (st == PS_SUCCESS && p->has_node)
		node_done(p, p->node, now);
	if (st == PS_ERROR || st == PS_INTERRUPTED)
		set_error(e, p, d, data, st == PS_INTERRUPTED);

	char synth[PROMPT_ID_MAX * 12 + 160];
	struct envelope ev;
	envelope_init(&ev, type, now, src);
	envelope_for(&ev, p);
	ev.cls = MSG_CRITICAL;
	ev.qos = 1;
	ev.node = node;
	ev.derived = derived;
	ev.has_duration = true;
	ev.duration_ms = prompt_duration(p);
	if (d && data >= 0) {
		ev.doc = d;
		ev.data_tok = data;
	} else {
		struct jsonw w;
		jsonw_init(&w, synth, sizeof(synth));
		jsonw_obj_begin(&w);
		jsonw_kstrn(&w, "prompt_id", p->id, p->id_len);
		if (st == PS_LOST)
			jsonw_kstr(&w, "reason",
			    "not in queue or history after it left the "
			    "queue or after a reconnect");
		else if (!derived)
			w_nullable_int(&w, "timestamp", finished_at);
		jsonw_obj_end(&w);
		ev.data_raw = w.buf;
		ev.data_raw_len = w.len;
	}
	publish_envelope(e, &ev);
	e->counters.terminals++;
	if (strcmp(e->running_id, p->id) == 0)
		e->running_id[0] = '\0';

	switch (st) {
	case PS_SUCCESS:
		print_line(e, "[SUCCESS] Prompt %s (%lld ms)", p->id,
		    (long long) prompt_duration(p));
		break;
	case PS_LOST:
		print_line(e, "[LOST] Prompt %s", p->id);
		e->counters.lost++;
		break;
	default:
		break;
	}
	publish_state(e, p, now);
	publish_completion(e, p, now);
	seen_add(e, p->id, p->id_len);
	/* A finished prompt is kept until its state expires (dedupe, TTL
	 * clear, republish from p->state); the parts the state was built
	 * from are not needed any more: memory stays flat with many prompts.
	 */
	dbuf_free(&p->cached);
	dbuf_free(&p->done);
	dbuf_free(&p->node_ms);
	dbuf_free(&p->error);
	for (unsigned i = 0; i < p->n_outputs; i++)
		dbuf_free(&p->outputs[i].json);
	free(p->outputs);
	p->outputs = NULL;
	p->n_outputs = p->cap_outputs = 0;
}

/* ------------------------------------------------------------------ */
/* --print of error details */

static void
print_error(struct engine *e, const struct prompt *p, const struct json_doc *d,
    const struct comfy_event *ev, bool interrupted)
{
	if (!e->cfg.print)
		return;
	char ntype[128] = "", etype[256] = "", msg[2048] = "";
	if (ev->node_type >= 0)
		json_str_get(d, ev->node_type, ntype, sizeof(ntype));
	print_line(e, "[%s] Prompt %s, Node %s (%s)",
	    interrupted ? "INTERRUPTED" : "ERROR", p->id,
	    ev->has_node ? ev->node : "?", ntype);
	if (interrupted)
		return;
	if (ev->exception_type >= 0)
		json_str_get(d, ev->exception_type, etype, sizeof(etype));
	if (ev->exception_message >= 0)
		json_str_get(d, ev->exception_message, msg, sizeof(msg));
	print_line(e, "  Type: %s", etype);
	/* ComfyUI appends hints after a newline: indent them under Message */
	char *save = NULL;
	char *first = strtok_r(msg, "\n", &save);
	print_line(e, "  Message: %s", first ? first : "");
	for (char *l = strtok_r(NULL, "\n", &save); l;
	     l = strtok_r(NULL, "\n", &save))
		print_line(e, "           %s", l);
	if (ev->traceback >= 0 && json_is_array(d, ev->traceback)) {
		print_line(e, "  Traceback:");
		int n = json_size(d, ev->traceback);
		int t = ev->traceback + 1;
		for (int i = 0; i < n; i++) {
			char line[2048];
			if (json_str_get(d, t, line, sizeof(line)) >= 0) {
				char *lsave = NULL;
				for (char *l = strtok_r(line, "\n", &lsave); l;
				     l = strtok_r(NULL, "\n", &lsave)) {
					while (*l == ' ')
						l++;
					print_line(e, "    %s", l);
				}
			}
			t = json_skip(d, t);
		}
	}
}

/* ------------------------------------------------------------------ */
/* rejected input */

static void
reject(struct engine *e, enum reject_reason r, const void *buf, size_t len)
{
	e->rejected[r]++;
	e->counters.rejected_total++;
	if (e->rejected[r] <= REJECT_LOG_MAX) {
		char ex[96];
		log_warn("ws", "dropped a frame (%s, %zu bytes): %s%s",
		    reject_names[r], len,
		    log_excerpt(ex, sizeof(ex), buf, len),
		    e->rejected[r] == REJECT_LOG_MAX
		        ? " (further ones are only counted)"
		        : "");
	}
}

/* ------------------------------------------------------------------ */
/* polling */

static void
request_poll(struct engine *e)
{
	if (!e->upstream_up)
		return;
	if (e->poll_inflight) {
		e->poll_pending = true;
		return;
	}
	e->poll_inflight = true;
	e->poll_pending = false;
	e->io.http_get(e->io.ud, EHTTP_QUEUE, "/queue", NULL);
}

static void
request_history_list(struct engine *e)
{
	if (!e->upstream_up)
		return;
	if (e->list_inflight) {
		e->list_pending = true;
		return;
	}
	char path[64];
	snprintf(path, sizeof(path), "/history?max_items=%u",
	    e->cfg.history_items ? e->cfg.history_items : 20);
	e->list_inflight = true;
	e->list_pending = false;
	e->io.http_get(e->io.ud, EHTTP_HISTORY_LIST, path, NULL);
}

static void
request_history(struct engine *e, struct prompt *p)
{
	char path[PROMPT_ID_MAX * 3 + 16];
	struct dbuf enc = { 0 };
	url_encode(&enc, p->id);
	snprintf(path, sizeof(path), "/history/%s", enc.p ? enc.p : "");
	dbuf_free(&enc);
	p->history_inflight = true;
	p->history_tries++;
	e->io.http_get(e->io.ud, EHTTP_HISTORY_ID, path, p->id);
}

/* ------------------------------------------------------------------ */
/* text frames */

static struct prompt *
prompt_for(struct engine *e, const char *id, size_t len, int64_t now)
{
	bool created;
	struct prompt *p = tracker_get(e->tracker, id, len, &created);
	if (created) {
		p->source = SRC_LIVE;
		p->queued_at = now;
		p->rejected_mark = e->counters.rejected_total;
	}
	return p;
}

static void
handle_prompt_event(struct engine *e, const struct json_doc *d,
    const struct comfy_event *ev, struct prompt *p, int64_t now)
{
	struct envelope env;
	envelope_init(&env, ev->type, now, SRC_LIVE);
	envelope_for(&env, p);
	env.doc = d;
	env.data_tok = ev->data;
	if (ev->has_node)
		env.node = ev->node;

	switch (ev->kind) {
	case EVK_EXECUTION_START:
	case EVK_EXECUTION_CACHED:
	case EVK_EXECUTING:
	case EVK_EXECUTED:
	case EVK_EXECUTION_SUCCESS:
	case EVK_EXECUTION_ERROR:
		/* only the prompt's own client receives these */
		p->ours = true;
		break;
	default:
		break;
	}
	if (p->terminal_sent && event_is_terminal(ev)) {
		log_debug("bridge", "duplicate terminal %s for %s ignored",
		    ev->type, p->tid);
		return;
	}
	if (!p->terminal_sent)
		ensure_queued(e, p, SRC_LIVE, now);

	switch (ev->kind) {
	case EVK_EXECUTION_START:
		publish_envelope(e, &env);
		if (!p->start_sent) {
			p->start_sent = true;
			p->started_at
			    = ev->has_timestamp ? ev->timestamp : now;
		}
		if (!p->terminal_sent) {
			p->status = PS_RUNNING;
			p->source = SRC_LIVE;
			copy_str(e->running_id, sizeof(e->running_id), p->id);
			publish_state(e, p, now);
		}
		break;
	case EVK_EXECUTION_CACHED: {
		publish_envelope(e, &env);
		if (ev->nodes >= 0 && e->cfg.print) {
			char line[1024] = "";
			size_t ll = 0;
			int n = json_size(d, ev->nodes), t = ev->nodes + 1;
			for (int i = 0; i < n && ll + 140 < sizeof(line);
			     i++) {
				char node[NODE_ID_MAX + 1];
				if (json_str_get(d, t, node, sizeof(node))
				    >= 0)
					ll += (size_t) snprintf(line + ll,
					    sizeof(line) - ll, "%s%s",
					    i ? ", " : "", node);
				t = json_skip(d, t);
			}
			if (n > 0)
				print_line(e, "[CACHED] Prompt %s, Nodes %s",
				    p->id, line);
		}
		if (ev->nodes >= 0) {
			int n = json_size(d, ev->nodes), t = ev->nodes + 1;
			for (int i = 0; i < n; i++) {
				char node[NODE_ID_MAX + 1];
				if (json_str_get(d, t, node, sizeof(node))
				    >= 0)
					list_add(&p->cached, node);
				t = json_skip(d, t);
			}
		}
		if (!p->terminal_sent)
			publish_state(e, p, now);
		break;
	}
	case EVK_EXECUTING:
		env.has_node_started = true;
		if (ev->node_null || !ev->has_node) {
			publish_envelope(e, &env);
			print_line(
			    e, "[EXECUTING] Prompt %s completed", p->id);
			if (p->terminal_sent || p->history_inflight)
				break;
			/* No terminal frame came. Servers older than
			 * execution_success end a good run like this; but a
			 * frame dropped meanwhile may have been its
			 * execution_error: ask history, which is written
			 * before this frame is sent (protocol.md 1.5). */
			if (e->counters.rejected_total != p->rejected_mark) {
				p->history_due = now;
				schedule(e, now);
				break;
			}
			finish_prompt(e, p, PS_SUCCESS, SRC_LIVE,
			    "execution_success", NULL, -1, 0, NULL, true, now);
			break;
		}
		env.has_node_started = true;
		env.node_started_at = now;
		publish_envelope(e, &env);
		print_line(
		    e, "[EXECUTING] Prompt %s, Node %s", p->id, ev->node);
		if (p->has_node && strcmp(p->node, ev->node) != 0)
			node_done(p, p->node, now);
		copy_str(p->node, sizeof(p->node), ev->node);
		p->has_node = true;
		p->recent[p->recent_next++ % PROMPT_RECENT_NODES]
		    = (struct prompt_node_time) {
			      tracker_hash(ev->node, ev->node_len), now
		      };
		copy_str(e->running_id, sizeof(e->running_id), p->id);
		if (!p->terminal_sent) {
			if (p->status == PS_QUEUED) {
				p->status = PS_RUNNING;
				if (!p->start_sent) {
					p->start_sent = true;
					p->started_at = now;
				}
			}
			publish_state(e, p, now);
		}
		break;
	case EVK_PROGRESS: {
		env.has_percent = true;
		if (ev->max > 0 && isfinite(ev->value) && isfinite(ev->max)) {
			env.percent = percent_of(ev->value, ev->max);
		} else {
			env.percent_null = true;
		}
		publish_envelope(e, &env);
		if (isfinite(ev->value) && isfinite(ev->max))
			print_line(e, "[PROGRESS] %g/%g (%.1f%%)", ev->value,
			    ev->max,
			    ev->max > 0 ? ev->value * 100.0 / ev->max : 0.0);
		if (p->terminal_sent)
			break;
		p->has_progress = true;
		p->value = ev->value;
		p->max = ev->max;
		copy_str(
		    p->pnode, sizeof(p->pnode), ev->has_node ? ev->node : "");
		if (p->status == PS_QUEUED)
			p->status = PS_RUNNING;
		if (now - p->state_published_at >= STATE_MIN_INTERVAL_MS)
			publish_state(e, p, now);
		else {
			p->state_dirty = true;
			schedule(
			    e, p->state_published_at + STATE_MIN_INTERVAL_MS);
		}
		break;
	}
	case EVK_EXECUTED: {
		int64_t t0 = ev->has_node ? node_started(p, ev->node) : 0;
		env.has_node_ms = true;
		env.node_ms = t0 > 0 && now >= t0 ? now - t0 : -1;
		env.has_images = true;
		env.images = count_images(d, ev->output);
		publish_envelope(e, &env);
		if (ev->has_node) {
			print_line(e, "[EXECUTED] Node %s in prompt %s",
			    ev->node, p->id);
			if (env.images > 0)
				print_line(e, "  → Produced %lld image(s)",
				    (long long) env.images);
			if (ev->output >= 0 && json_is_object(d, ev->output))
				set_output(e, p, ev->node, d, ev->output);
			if (!p->terminal_sent && t0 > 0)
				node_done(p, ev->node, now);
		}
		if (!p->terminal_sent)
			publish_state(e, p, now);
		break;
	}
	case EVK_EXECUTION_SUCCESS:
		finish_prompt(e, p, PS_SUCCESS, SRC_LIVE, ev->type, d,
		    ev->data, ev->has_timestamp ? ev->timestamp : now, NULL,
		    false, now);
		break;
	case EVK_EXECUTION_ERROR:
		if (ev->blocked) {
			/* "Execution Blocked": the prompt goes on */
			publish_envelope(e, &env);
			break;
		}
		print_error(e, p, d, ev, false);
		finish_prompt(e, p, PS_ERROR, SRC_LIVE, ev->type, d, ev->data,
		    ev->has_timestamp ? ev->timestamp : now,
		    ev->has_node ? ev->node : NULL, false, now);
		break;
	case EVK_EXECUTION_INTERRUPTED:
		print_error(e, p, d, ev, true);
		finish_prompt(e, p, PS_INTERRUPTED, SRC_LIVE, ev->type, d,
		    ev->data, ev->has_timestamp ? ev->timestamp : now,
		    ev->has_node ? ev->node : NULL, false, now);
		break;
	default:
		publish_envelope(e, &env);
		break;
	}
	/* a prompt first learned from a frame that changes nothing else */
	if (!p->terminal_sent && p->state.len == 0)
		publish_state(e, p, now);
}

static void
handle_global_event(struct engine *e, const struct json_doc *d,
    const struct comfy_event *ev, int64_t now)
{
	struct envelope env;
	envelope_init(&env, ev->type, now, SRC_LIVE);
	env.doc = d;
	env.data_tok = ev->data;
	if (ev->kind == EVK_STATUS) {
		publish_envelope(e, &env);
		if (ev->has_queue_remaining) {
			/* the queue shrank: a prompt finished (its history
			 * entry is written before this frame), maybe one
			 * that was queued and done between two polls */
			if (ev->queue_remaining < e->last_status_count) {
				request_history_list(e);
				e->list_asked_by_status = true;
			}
			e->last_status_count = ev->queue_remaining;
			print_line(e, "[STATUS] Queue remaining: %lld",
			    (long long) ev->queue_remaining);
			e->queue_remaining = ev->queue_remaining;
		}
		request_poll(e);
		return;
	}
	publish_envelope(e, &env);
}

void
engine_on_text(struct engine *e, const char *buf, size_t len, int64_t now)
{
	struct json_doc doc;
	struct comfy_event ev;

	e->counters.frames_text++;
	e->last_frame_at = now;
	int rc = json_parse(e->parser, buf, len, true, &doc);
	if (rc != JSON_OK) {
		/* json_reason values 1..6 map onto the first reject reasons */
		reject(e, (enum reject_reason)(rc - 1), buf, len);
		return;
	}
	rc = event_parse(&doc, &ev);
	if (rc != EVR_OK) {
		reject(e,
		    rc == EVR_MISSING_TYPE ? RJ_MISSING_TYPE : RJ_BAD_FIELD,
		    buf, len);
		return;
	}
	if (ev.has_prompt) {
		struct prompt *p
		    = prompt_for(e, ev.prompt_id, ev.prompt_len, now);
		handle_prompt_event(e, &doc, &ev, p, now);
		return;
	}
	if (ev.kind == EVK_EXECUTING && ev.has_node && e->running_id[0]) {
		/* the reconnect hint: no prompt id, the running prompt's node
		 */
		struct prompt *p = tracker_find(
		    e->tracker, e->running_id, strlen(e->running_id));
		if (p) {
			handle_prompt_event(e, &doc, &ev, p, now);
			return;
		}
	}
	handle_global_event(e, &doc, &ev, now);
}

/* ------------------------------------------------------------------ */
/* binary frames */

static void
publish_preview(struct engine *e, struct prompt *p, const char *mime,
    const uint8_t *img, size_t len, int64_t now)
{
	if (len > e->cfg.preview_max_bytes || len > e->max_payload * 4) {
		e->rejected[RJ_TOO_LARGE]++;
		return;
	}
	double rate = e->cfg.preview_rate > 0 ? e->cfg.preview_rate : 2.0;
	int64_t gap = (int64_t) (1000.0 / rate);
	if (p) {
		if (p->last_preview_at && now - p->last_preview_at < gap)
			return;
		p->last_preview_at = now;
		topic_prompt(e->topic, sizeof(e->topic), e->prefix,
		    e->instance, p->tid, strlen(p->tid), "preview", NULL, 0);
		copy_str(e->key, sizeof(e->key), e->topic);
		emit(e, MSG_PREVIEW, e->topic, img, len, 0, false, mime, 0,
		    "preview", p->id, e->key);
	}
	topic_join(
	    e->topic, sizeof(e->topic), e->prefix, e->instance, "preview");
	copy_str(e->key, sizeof(e->key), e->topic);
	emit(e, MSG_PREVIEW, e->topic, img, len, 0, true, mime, 0, "preview",
	    p ? p->id : NULL, e->key);
}

void
engine_on_binary(struct engine *e, const uint8_t *buf, size_t len, int64_t now)
{
	struct binframe bf;
	e->counters.frames_binary++;
	e->last_frame_at = now;
	int rc = binframe_parse(buf, len, &bf);
	if (rc == BINFRAME_E_TRUNCATED) {
		reject(e, RJ_TRUNCATED_BINARY, buf, len);
		return;
	}
	if (rc == BINFRAME_E_UNKNOWN_TYPE) {
		reject(e, RJ_UNKNOWN_BINARY, buf, len < 16 ? len : 16);
		return;
	}
	if (rc == BINFRAME_E_FORMAT) {
		reject(e, RJ_BAD_IMAGE_FORMAT, buf, len < 16 ? len : 16);
		return;
	}
	if (bf.type == BINFRAME_TEXT) {
		char data[8192];
		struct jsonw w;
		bool cut = false;
		jsonw_init(&w, data, sizeof(data));
		jsonw_obj_begin(&w);
		jsonw_key(&w, "node");
		jsonw_strn_max(&w, bf.node_id, bf.node_id_len, 256, &cut);
		jsonw_key(&w, "text");
		jsonw_strn_max(&w, bf.text, bf.text_len, 4096, &cut);
		jsonw_obj_end(&w);
		struct envelope env;
		envelope_init(&env, "progress_text", now, SRC_LIVE);
		env.data_raw = w.buf;
		env.data_raw_len = w.len;
		publish_envelope(e, &env);
		return;
	}
	if (!e->cfg.previews)
		return;
	struct prompt *p = NULL;
	const char *mime = bf.mime;
	if (bf.type == BINFRAME_PREVIEW_METADATA) {
		struct json_doc doc;
		char id[PROMPT_ID_MAX + 1], it[32];
		if (json_parse(
		        e->parser, bf.metadata, bf.metadata_len, true, &doc)
		    != JSON_OK) {
			reject(
			    e, RJ_INVALID_JSON, bf.metadata, bf.metadata_len);
			return;
		}
		int t = json_obj_get(&doc, 0, "prompt_id");
		int n = t >= 0 ? json_str_get(&doc, t, id, sizeof(id)) : -1;
		if (n > 0)
			p = prompt_for(e, id, (size_t) n, now);
		t = json_obj_get(&doc, 0, "image_type");
		mime = "image/jpeg";
		if (t >= 0 && json_str_get(&doc, t, it, sizeof(it)) > 0
		    && strcmp(it, "image/png") == 0)
			mime = "image/png";
	} else if (e->running_id[0]) {
		p = tracker_find(
		    e->tracker, e->running_id, strlen(e->running_id));
	}
	publish_preview(e, p, mime, bf.image, bf.image_len, now);
}

void
engine_on_oversize(struct engine *e, size_t len_so_far, bool binary)
{
	e->rejected[RJ_TOO_LARGE]++;
	e->counters.rejected_total++;
	if (e->rejected[RJ_TOO_LARGE] <= REJECT_LOG_MAX)
		log_warn("ws",
		    "dropped a %s frame over the size cap (%zu "
		    "bytes so far)",
		    binary ? "binary" : "text", len_so_far);
}

/* ------------------------------------------------------------------ */
/* retained bridge topics */

/* A retained availability text (bridge/state, upstream/state). */
static void
publish_text(struct engine *e, const char *rest, const char *text, bool urgent)
{
	if (topic_join(
	        e->topic, sizeof(e->topic), e->prefix, e->instance, rest)
	    < 0)
		return;
	emit_urgent(e, urgent, MSG_CRITICAL, e->topic, text, strlen(text), 1,
	    true, "text/plain", 0, rest, NULL, e->topic);
}

static void
publish_info(struct engine *e, int64_t now)
{
	struct jsonw w;
	jsonw_init(&w, e->obuf, e->max_payload + 1024);
	jsonw_obj_begin(&w);
	jsonw_kint(&w, "v", 1);
	jsonw_kstr(&w, "version", C2M_VERSION);
	jsonw_kstr(&w, "instance", e->instance);
	jsonw_kstr(&w, "prefix", e->prefix);
	jsonw_kstr(&w, "comfyui_url", e->comfy_url);
	if (e->comfyui_version[0])
		jsonw_kstr(&w, "comfyui_version", e->comfyui_version);
	else
		jsonw_knull(&w, "comfyui_version");
	jsonw_kstr(&w, "client_id", e->client_id);
	jsonw_kstr(&w, "mqtt_client_id", e->mqtt_client_id);
	jsonw_kstr(
	    &w, "mqtt_protocol", e->cfg.mqtt_protocol == 4 ? "3.1.1" : "5");
	jsonw_kint(&w, "started_at", e->run);
	jsonw_key(&w, "options");
	jsonw_obj_begin(&w);
	if (e->cfg.write_options)
		e->cfg.write_options(e->cfg.write_options_ud, &w);
	jsonw_obj_end(&w);
	w_common_tail(e, &w, now);
	jsonw_obj_end(&w);
	if (jsonw_finish(&w) != 0)
		return;
	publish_retained_json(e, MSG_CRITICAL, "bridge/info", "info", NULL,
	    w.buf, w.len, &e->info_payload);
}

static void
republish_retained(struct engine *e)
{
	publish_text(
	    e, "upstream/state", e->upstream_up ? "online" : "offline", false);
	if (e->info_payload.len) {
		publish_retained_json(e, MSG_CRITICAL, "bridge/info", "info",
		    NULL, e->info_payload.p, e->info_payload.len, NULL);
	}
	if (e->queue_payload.len) {
		publish_retained_json(e, MSG_LIFECYCLE, "queue", "queue", NULL,
		    e->queue_payload.p, e->queue_payload.len, NULL);
	}
	if (e->current_payload.len) {
		publish_retained_json(e, MSG_CRITICAL, "current", "current",
		    e->current_id, e->current_payload.p,
		    e->current_payload.len, NULL);
	}
	unsigned i = 0;
	struct prompt *p;
	while ((p = tracker_next(e->tracker, &i)) != NULL) {
		if (!p->state.len)
			continue;
		state_topic(e, p);
		emit(e, MSG_CRITICAL, e->topic, p->state.p, p->state.len, 1,
		    true, "application/json", (uint32_t) e->cfg.state_ttl_s,
		    "state", p->id, e->topic);
	}
}

void
engine_on_broker_connected(struct engine *e, bool session_present, int64_t now)
{
	/* contract 4.3: on every reconnect, a resumed session included: a
	 * broker restarted from an older database resumes the session but
	 * holds retained copies from before the outage */
	bool republish = e->broker_ever_connected;
	e->broker_ever_connected = true;
	/* ahead of the backlog of the outage: until it is out, subscribers
	 * see the will's "offline" */
	publish_text(e, "bridge/state", "online", true);
	if (republish) {
		log_info("mqtt",
		    "reconnected (%s session): republishing retained "
		    "topics",
		    session_present ? "resumed" : "new");
		republish_retained(e);
	}
	(void) now;
}

void
engine_set_max_packet(struct engine *e, uint32_t max_packet)
{
	size_t limit = MAX_PAYLOAD;
	/* room for the topic and the properties */
	if (max_packet > 0 && (size_t) max_packet < limit + 2048)
		limit = max_packet > 4096 ? max_packet - 2048 : 2048;
	e->max_payload = limit;
}

void
engine_offline_msg(struct engine *e, struct out_msg *m)
{
	static char topic[TOPIC_MAX];
	topic_join(
	    topic, sizeof(topic), e->prefix, e->instance, "bridge/state");
	memset(m, 0, sizeof(*m));
	m->cls = MSG_CRITICAL;
	m->topic = topic;
	m->payload = "offline";
	m->len = 7;
	m->qos = 1;
	m->retain = true;
	m->props.content_type = "text/plain";
	m->props.utf8 = true;
	m->props.instance = e->instance;
	m->props.type = "bridge/state";
}

/* ------------------------------------------------------------------ */
/* upstream */

void
engine_on_upstream(struct engine *e, bool up, int64_t now)
{
	if (up == e->upstream_up)
		return;
	e->upstream_up = up;
	publish_text(e, "upstream/state", up ? "online" : "offline", false);
	if (!up) {
		print_line(e, "WebSocket closed");
		e->poll_inflight = e->poll_pending = false;
		e->list_inflight = e->list_pending = false;
		e->stats_requested = false;
		return;
	}
	print_line(e, "Connected! Listening for events...");
	e->upstream_up_at = now;
	e->watchdog_asked_at = 0;
	e->watchdog_mismatches = 0;
	e->poll_failures = 0;
	e->poll_retry_at = 0;
	if (e->upstream_ever_up) {
		/* §4.2: anything may have finished while we were away */
		e->counters.resyncs++;
		e->resyncing = true;
		log_info("bridge",
		    "resync after reconnect: reading the queue "
		    "and history");
	}
	e->upstream_ever_up = true;
	if (!e->comfyui_version[0] && !e->stats_requested) {
		e->stats_requested = true;
		e->io.http_get(
		    e->io.ud, EHTTP_SYSTEM_STATS, "/system_stats", NULL);
	}
	request_history_list(e);
	request_poll(e);
	(void) now;
}

/* ------------------------------------------------------------------ */
/* HTTP answers */

static int64_t
backoff(unsigned failures)
{
	unsigned i = failures ? failures - 1 : 0;
	if (i >= HTTP_BACKOFF_N)
		i = HTTP_BACKOFF_N - 1;
	return http_backoff_ms[i];
}

struct queue_item {
	char id[PROMPT_ID_MAX + 1];
	size_t id_len;
	double number;
	bool has_number;
	char client_id[PROMPT_ID_MAX + 1];
	bool has_client_id;
	int64_t create_time;
};

static int
parse_queue_item(const struct json_doc *d, int item, struct queue_item *qi)
{
	memset(qi, 0, sizeof(*qi));
	if (!json_is_array(d, item) || json_size(d, item) < 2)
		return BR_EINVAL;
	int num = item + 1;
	int id = json_skip(d, num);
	int n = json_str_get(d, id, qi->id, sizeof(qi->id));
	if (n <= 0)
		return BR_EINVAL;
	qi->id_len = (size_t) n;
	if (json_get_double(d, num, &qi->number) == 0)
		qi->has_number = true;
	if (json_size(d, item) >= 4) {
		int prompt = json_skip(d, id);
		int extra = json_skip(d, prompt);
		if (json_is_object(d, extra)) {
			int c = json_obj_get(d, extra, "client_id");
			if (c >= 0
			    && json_str_get(
			           d, c, qi->client_id, sizeof(qi->client_id))
			        >= 0)
				qi->has_client_id = true;
			c = json_obj_get(d, extra, "create_time");
			if (c >= 0)
				json_get_int64(d, c, &qi->create_time);
		}
	}
	return 0;
}

static int
cmp_items(const void *a, const void *b)
{
	const struct queue_item *x = a, *y = b;
	if (x->number != y->number)
		return x->number < y->number ? -1 : 1;
	return strcmp(x->id, y->id);
}

static void
apply_queue_item(
    struct engine *e, const struct queue_item *qi, bool running, int64_t now)
{
	bool created;
	struct prompt *p
	    = tracker_get(e->tracker, qi->id, qi->id_len, &created);
	if (created) {
		p->source = SRC_POLL;
		p->queued_at = qi->create_time > 0 ? qi->create_time : now;
	}
	p->queue_generation = e->queue_generation;
	if (qi->has_number) {
		p->has_number = true;
		p->number = (int64_t) qi->number;
	}
	if (qi->has_client_id) {
		p->has_client_id = true;
		copy_str(p->client_id, sizeof(p->client_id), qi->client_id);
		if (strcmp(qi->client_id, e->client_id) == 0)
			p->ours = true;
	}
	if (p->terminal_sent)
		return;
	bool changed = !p->queued_sent;
	ensure_queued(e, p, SRC_POLL, now);
	if (running && !p->start_sent && (!p->ours || e->resyncing)) {
		derive_start(e, p, SRC_POLL, now, now);
		changed = true;
	}
	if (running && p->status == PS_QUEUED && p->start_sent) {
		p->status = PS_RUNNING;
		changed = true;
	}
	if (changed)
		publish_state(e, p, now);
}

static void
publish_queue(struct engine *e, const struct queue_item *items, size_t n_run,
    size_t n, int64_t now)
{
	struct dbuf ids = { 0 };
	char tmp[32];
	int tl = snprintf(tmp, sizeof(tmp), "%zu|%zu|", n, n_run);
	dbuf_append(&ids, tmp, (size_t) tl);
	for (size_t i = 0; i < n; i++) {
		dbuf_append(&ids, items[i].id, items[i].id_len);
		dbuf_append(&ids, "\n", 1);
	}
	bool same = ids.len == e->queue_ids.len
	    && memcmp(ids.p, e->queue_ids.p, ids.len) == 0;
	if (same) {
		dbuf_free(&ids);
		return;
	}
	dbuf_free(&e->queue_ids);
	e->queue_ids = ids;
	struct jsonw w;
	jsonw_init(&w, e->obuf, e->max_payload + 1024);
	jsonw_obj_begin(&w);
	jsonw_kint(&w, "v", 1);
	jsonw_kint(&w, "queue_remaining", (int64_t) n);
	jsonw_key(&w, "running");
	jsonw_arr_begin(&w);
	for (size_t i = 0; i < n_run; i++)
		jsonw_strn(&w, items[i].id, items[i].id_len);
	jsonw_arr_end(&w);
	jsonw_key(&w, "pending");
	jsonw_arr_begin(&w);
	for (size_t i = n_run; i < n; i++)
		jsonw_strn(&w, items[i].id, items[i].id_len);
	jsonw_arr_end(&w);
	w_common_tail(e, &w, now);
	jsonw_obj_end(&w);
	if (jsonw_finish(&w) != 0)
		return;
	publish_retained_json(e, MSG_LIFECYCLE, "queue", "queue", NULL, w.buf,
	    w.len, &e->queue_payload);
}

/* True while a watchdog check is in flight and no frame came since it was
 * asked: then a queue change or a newly finished prompt (both of which
 * ComfyUI announces with a broadcast status frame) means we are deaf. */
static bool
watchdog_silent(const struct engine *e)
{
	return e->watchdog_asked_at != 0
	    && e->last_frame_at < e->watchdog_asked_at;
}

static void
orphaned(struct engine *e, const char *evidence)
{
	log_warn("ws",
	    "no frame for %lld s although %s: the WebSocket looks orphaned "
	    "(protocol.md 1.4); reconnecting",
	    (long long) (e->watchdog_asked_at
	        - (e->last_frame_at > e->upstream_up_at ? e->last_frame_at
	                                                : e->upstream_up_at))
	        / 1000,
	    evidence);
	e->watchdog_asked_at = 0;
	e->watchdog_mismatches = 0;
	if (e->io.reconnect_upstream)
		e->io.reconnect_upstream(e->io.ud);
}

/* Runs from engine_tick: after a silence, ask /queue and /history whether
 * anything happened that we should have heard about. */
static int64_t
watchdog_tick(struct engine *e, int64_t now)
{
	int64_t period = (int64_t) (e->cfg.upstream_watchdog_s > 0
	                         ? e->cfg.upstream_watchdog_s
	                         : 60)
	    * 1000;
	if (!e->upstream_up)
		return 0;
	int64_t last = e->last_frame_at > e->upstream_up_at
	    ? e->last_frame_at
	    : e->upstream_up_at;
	int64_t due = last + period;
	if (e->next_watchdog_at > due)
		due = e->next_watchdog_at;
	if (now < due)
		return due;
	if (!e->poll_inflight && !e->list_inflight) {
		e->watchdog_asked_at = now;
		request_poll(e);
		request_history_list(e);
	}
	e->next_watchdog_at = now + period;
	return e->next_watchdog_at;
}

/* A 2xx body that cannot be used: counted as an HTTP failure (health) and
 * logged, at warn the first time for a reason, then at debug. */
static void
http_body_unusable(struct engine *e, const char *what, int reason, size_t len)
{
	e->counters.http_failures++;
	unsigned bit = reason > 0 && reason < 32 ? 1u << reason : 1u;
	bool first = (e->http_reasons_logged & bit) == 0;
	e->http_reasons_logged |= bit;
	log_msg(first ? LOG_LVL_WARN : LOG_LVL_DEBUG, "http",
	    "GET %s: unusable body (%s, %zu bytes)%s", what,
	    json_reason_name(reason), len,
	    first ? "; further ones are logged at debug" : "");
}

static void
on_queue(struct engine *e, const char *body, size_t len, int64_t now)
{
	struct json_doc d;
	int rc = json_parse(e->http_parser, body, len, true, &d);
	if (rc != JSON_OK) {
		http_body_unusable(e, "/queue", rc, len);
		return;
	}
	int run = json_obj_get(&d, 0, "queue_running");
	int pend = json_obj_get(&d, 0, "queue_pending");
	size_t n_run = run >= 0 && json_is_array(&d, run)
	    ? (size_t) json_size(&d, run)
	    : 0;
	size_t n_pend = pend >= 0 && json_is_array(&d, pend)
	    ? (size_t) json_size(&d, pend)
	    : 0;
	struct queue_item *items = calloc(n_run + n_pend + 1, sizeof(*items));
	if (!items)
		return;
	size_t n = 0;
	int t = run + 1;
	for (size_t i = 0; i < n_run; i++, t = json_skip(&d, t))
		if (parse_queue_item(&d, t, &items[n]) == 0)
			n++;
	size_t nr = n;
	t = pend + 1;
	for (size_t i = 0; i < n_pend; i++, t = json_skip(&d, t))
		if (parse_queue_item(&d, t, &items[n]) == 0)
			n++;
	qsort(items + nr, n - nr, sizeof(*items), cmp_items);

	e->queue_generation++;
	for (size_t i = 0; i < n; i++)
		apply_queue_item(e, &items[i], i < nr, now);

	/* tracked prompts that left the queue without a terminal event */
	bool vanished = false;
	unsigned it = 0;
	struct prompt *p;
	while ((p = tracker_next(e->tracker, &it)) != NULL) {
		if (p->terminal_sent || p->history_due || p->history_inflight
		    || p->queue_generation == e->queue_generation)
			continue;
		if (!p->queued_sent && !p->start_sent)
			continue;
		vanished = true;
		p->history_due
		    = now + (p->ours && !e->resyncing ? HISTORY_GRACE_MS : 0);
		schedule(e, p->history_due);
	}
	if (vanished || (n < e->last_queue_total && !e->list_asked_by_status))
		request_history_list(e);
	e->list_asked_by_status = false;
	e->last_queue_total = n;
	publish_queue(e, items, nr, n, now);
	free(items);
	e->resyncing = false;
	if (watchdog_silent(e)) {
		/* two checks in a row, in case a status frame is in flight */
		if ((int64_t) n != e->last_status_count) {
			if (++e->watchdog_mismatches >= 2)
				orphaned(e, "the queue changed");
		} else {
			e->watchdog_mismatches = 0;
		}
	}
}

/* Reports a finished prompt read from a history entry. */
static void
apply_history_entry(struct engine *e, struct prompt *p,
    const struct json_doc *d, int entry, int64_t now)
{
	int status = json_obj_get(d, entry, "status");
	int outputs = json_obj_get(d, entry, "outputs");
	int msgs = status >= 0 ? json_obj_get(d, status, "messages") : -1;
	int term_data = -1;
	const char *term = NULL;
	int64_t start_ts = 0, end_ts = 0;
	char status_str[32] = "";
	if (status >= 0) {
		int ss = json_obj_get(d, status, "status_str");
		if (ss >= 0)
			json_str_get(d, ss, status_str, sizeof(status_str));
	}
	if (msgs >= 0 && json_is_array(d, msgs)) {
		int n = json_size(d, msgs), m = msgs + 1;
		for (int i = 0; i < n; i++, m = json_skip(d, m)) {
			if (!json_is_array(d, m) || json_size(d, m) < 2)
				continue;
			int name = m + 1, data = json_skip(d, name);
			int64_t ts = 0;
			int tt = json_is_object(d, data)
			    ? json_obj_get(d, data, "timestamp")
			    : -1;
			if (tt >= 0)
				json_get_int64(d, tt, &ts);
			if (json_str_eq(d, name, "execution_start")) {
				start_ts = ts;
			} else if (json_str_eq(d, name, "execution_success")) {
				term = "execution_success";
				term_data = data;
				end_ts = ts;
			} else if (json_str_eq(d, name, "execution_error")) {
				term = "execution_error";
				term_data = data;
				end_ts = ts;
			} else if (json_str_eq(
			               d, name, "execution_interrupted")) {
				term = "execution_interrupted";
				term_data = data;
				end_ts = ts;
			}
		}
	}
	enum prompt_status st = PS_SUCCESS;
	if (term && strcmp(term, "execution_error") == 0)
		st = PS_ERROR;
	else if (term && strcmp(term, "execution_interrupted") == 0)
		st = PS_INTERRUPTED;
	else if (!term && strcmp(status_str, "error") == 0)
		st = PS_ERROR;
	if (!term)
		term
		    = st == PS_ERROR ? "execution_error" : "execution_success";

	ensure_queued(e, p, SRC_HISTORY, now);
	if (!p->start_sent)
		derive_start(e, p, SRC_HISTORY, start_ts, now);
	if (outputs >= 0 && json_is_object(d, outputs)) {
		int n = json_size(d, outputs), k = outputs + 1;
		for (int i = 0; i < n; i++) {
			char node[NODE_ID_MAX + 1];
			if (json_str_get(d, k, node, sizeof(node)) > 0)
				set_output(e, p, node, d, k + 1);
			k = json_skip(d, k + 1);
		}
	}
	char node[NODE_ID_MAX + 1];
	const char *nodep = NULL;
	if (term_data >= 0 && json_is_object(d, term_data)) {
		int nt = json_obj_get(d, term_data, "node_id");
		if (nt >= 0 && json_str_get(d, nt, node, sizeof(node)) > 0)
			nodep = node;
	}
	e->counters.recovered++;
	finish_prompt(e, p, st, SRC_HISTORY, term, term_data >= 0 ? d : NULL,
	    term_data, end_ts, nodep, false, now);
}

static void
on_history_id(struct engine *e, const char *id, const char *body, size_t len,
    int64_t now)
{
	struct prompt *p = tracker_find(e->tracker, id, strlen(id));
	if (!p)
		return;
	p->history_inflight = false;
	if (p->terminal_sent)
		return;
	struct json_doc d;
	int rc = json_parse(e->http_parser, body, len, true, &d);
	if (rc != JSON_OK) {
		http_body_unusable(e, "/history/<id>", rc, len);
		p->history_due = now + backoff(p->history_tries);
		schedule(e, p->history_due);
		return;
	}
	int entry = json_obj_get(&d, 0, id);
	if (entry >= 0 && json_is_object(&d, entry)) {
		apply_history_entry(e, p, &d, entry, now);
		return;
	}
	if (p->queue_generation == e->queue_generation
	    && e->queue_generation != 0) {
		/* listed by the latest poll: still queued or running */
		return;
	}
	finish_prompt(e, p, PS_LOST, SRC_HISTORY, "lost", NULL, -1, now, NULL,
	    false, now);
}

static void
on_history_list(struct engine *e, const char *body, size_t len, int64_t now)
{
	struct json_doc d;
	int rc = json_parse(e->http_parser, body, len, true, &d);
	if (rc != JSON_OK) {
		http_body_unusable(e, "/history", rc, len);
		return;
	}
	int n = json_size(&d, 0), k = 1;
	bool deaf = false;
	bool baseline = !e->baseline_taken;
	e->baseline_taken = true;
	for (int i = 0; i < n; i++, k = json_skip(&d, k + 1)) {
		char id[PROMPT_ID_MAX + 1];
		int il = json_str_get(&d, k, id, sizeof(id));
		if (il <= 0 || !json_is_object(&d, k + 1))
			continue;
		if (baseline) {
			seen_add(e, id, (size_t) il);
			continue;
		}
		struct prompt *p = tracker_find(e->tracker, id, (size_t) il);
		if (p && (p->terminal_sent || p->history_inflight))
			continue;
		if (!p && seen_has(e, id, (size_t) il))
			continue;
		if (!p) {
			bool created;
			if (watchdog_silent(e))
				deaf = true;
			p = tracker_get(e->tracker, id, (size_t) il, &created);
			p->source = SRC_HISTORY;
			p->queued_at = 0;
		} else if (p->ours && !e->resyncing) {
			/* its own frames decide, which may still be on their
			 * way: the list can be read (a status frame of the
			 * prompt before) while they wait in the socket; a
			 * terminal frame that never comes is looked up
			 * after the grace once it left the queue (on_queue) */
			continue;
		}
		apply_history_entry(e, p, &d, k + 1, now);
	}
	if (deaf)
		orphaned(e, "a prompt finished");
}

static void
on_system_stats(struct engine *e, const char *body, size_t len, int64_t now)
{
	struct json_doc d;
	if (json_parse(e->http_parser, body, len, true, &d) != JSON_OK)
		return;
	int sys = json_obj_get(&d, 0, "system");
	int v = sys >= 0 ? json_obj_get(&d, sys, "comfyui_version") : -1;
	char ver[64];
	if (v >= 0 && json_str_get(&d, v, ver, sizeof(ver)) > 0
	    && strcmp(ver, e->comfyui_version) != 0) {
		copy_str(e->comfyui_version, sizeof(e->comfyui_version), ver);
		log_info("bridge", "ComfyUI version %s", ver);
		publish_info(e, now);
	}
}

void
engine_on_http(struct engine *e, enum engine_http_kind kind, const char *tag,
    int status, const char *body, size_t len, int64_t now)
{
	bool ok = status >= 200 && status < 300;
	if (!ok && !(kind == EHTTP_HISTORY_ID && status == 404))
		e->counters.http_failures++;
	switch (kind) {
	case EHTTP_QUEUE:
		e->poll_inflight = false;
		if (!ok) {
			e->poll_failures++;
			e->poll_retry_at = now + backoff(e->poll_failures);
			schedule(e, e->poll_retry_at);
			log_debug("http",
			    "GET /queue failed (%d); retry in "
			    "%lld ms",
			    status, (long long) (e->poll_retry_at - now));
			return;
		}
		e->poll_failures = 0;
		on_queue(e, body, len, now);
		if (e->poll_pending)
			request_poll(e);
		break;
	case EHTTP_HISTORY_ID: {
		struct prompt *p
		    = tag ? tracker_find(e->tracker, tag, strlen(tag)) : NULL;
		if (!ok && status != 404) {
			if (p) {
				p->history_inflight = false;
				p->history_due
				    = now + backoff(p->history_tries);
				schedule(e, p->history_due);
			}
			return;
		}
		on_history_id(
		    e, tag ? tag : "", ok ? body : "{}", ok ? len : 2, now);
		break;
	}
	case EHTTP_HISTORY_LIST:
		e->list_inflight = false;
		if (ok)
			on_history_list(e, body, len, now);
		if (e->list_pending)
			request_history_list(e);
		break;
	case EHTTP_SYSTEM_STATS:
		if (ok)
			on_system_stats(e, body, len, now);
		break;
	}
	/* give back what a big body made the token array grow to */
	json_parser_trim(e->http_parser);
}

/* ------------------------------------------------------------------ */
/* time */

/* The health figures that say something went wrong (contract 4.5: logged
 * at info when they change; traffic counters change all the time and are
 * only published). */
static struct fault_counts
fault_counts_of(const struct engine *e, const struct engine_health_io *h)
{
	struct fault_counts f;
	memset(&f, 0, sizeof(f));
	f.rejected = e->counters.rejected_total;
	f.recovered = e->counters.recovered;
	f.lost = e->counters.lost;
	f.resyncs = e->counters.resyncs;
	f.http_failures = e->counters.http_failures;
	if (h != NULL) {
		for (int i = 0; i < MSG_CLASS_COUNT; i++)
			f.dropped[i] = h->dropped[i];
		f.reconnects_comfyui = h->comfyui_reconnects;
		f.reconnects_mqtt = h->mqtt_reconnects;
	}
	return f;
}

static void
log_faults_on_change(struct engine *e, const struct engine_health_io *h)
{
	struct fault_counts f = fault_counts_of(e, h);
	if (memcmp(&f, &e->last_logged_faults, sizeof(f)) == 0)
		return;
	e->last_logged_faults = f;
	log_info("bridge",
	    "health: %llu frames rejected, dropped %llu critical / %llu "
	    "lifecycle / %llu progress / %llu preview, %llu prompts "
	    "recovered from history, %llu lost, %llu resyncs, %llu HTTP "
	    "failures, reconnects %llu ComfyUI / %llu MQTT",
	    (unsigned long long) f.rejected,
	    (unsigned long long) f.dropped[MSG_CRITICAL],
	    (unsigned long long) f.dropped[MSG_LIFECYCLE],
	    (unsigned long long) f.dropped[MSG_PROGRESS],
	    (unsigned long long) f.dropped[MSG_PREVIEW],
	    (unsigned long long) f.recovered, (unsigned long long) f.lost,
	    (unsigned long long) f.resyncs,
	    (unsigned long long) f.http_failures,
	    (unsigned long long) f.reconnects_comfyui,
	    (unsigned long long) f.reconnects_mqtt);
}

static void
publish_health(struct engine *e, int64_t now, const struct engine_health_io *h)
{
	struct jsonw w;
	jsonw_init(&w, e->obuf, e->max_payload + 1024);
	jsonw_obj_begin(&w);
	jsonw_kint(&w, "v", 1);
	jsonw_kint(&w, "uptime_s", (now - e->run) / 1000);
	jsonw_kbool(&w, "comfyui_connected", e->upstream_up);
	jsonw_kbool(&w, "mqtt_connected", h && h->mqtt_connected);
	jsonw_key(&w, "frames");
	jsonw_obj_begin(&w);
	jsonw_kint(&w, "text", (int64_t) e->counters.frames_text);
	jsonw_kint(&w, "binary", (int64_t) e->counters.frames_binary);
	jsonw_obj_end(&w);
	static const char *const cls[]
	    = { "critical", "lifecycle", "progress", "preview" };
	jsonw_key(&w, "published");
	jsonw_obj_begin(&w);
	for (int i = 0; i < MSG_CLASS_COUNT; i++)
		jsonw_kint(&w, cls[i], h ? (int64_t) h->published[i] : 0);
	jsonw_obj_end(&w);
	jsonw_key(&w, "queue");
	jsonw_obj_begin(&w);
	jsonw_kint(&w, "depth", h ? (int64_t) h->queue_depth : 0);
	jsonw_kint(&w, "bytes", h ? (int64_t) h->queue_bytes : 0);
	jsonw_obj_end(&w);
	jsonw_key(&w, "dropped");
	jsonw_obj_begin(&w);
	for (int i = 0; i < MSG_CLASS_COUNT; i++)
		jsonw_kint(&w, cls[i], h ? (int64_t) h->dropped[i] : 0);
	jsonw_obj_end(&w);
	jsonw_key(&w, "rejected");
	jsonw_obj_begin(&w);
	for (int i = 0; i < RJ_COUNT; i++)
		jsonw_kint(&w, reject_names[i], (int64_t) e->rejected[i]);
	jsonw_obj_end(&w);
	jsonw_key(&w, "reconnects");
	jsonw_obj_begin(&w);
	jsonw_kint(&w, "comfyui", h ? (int64_t) h->comfyui_reconnects : 0);
	jsonw_kint(&w, "mqtt", h ? (int64_t) h->mqtt_reconnects : 0);
	jsonw_obj_end(&w);
	jsonw_kint(&w, "resyncs", (int64_t) e->counters.resyncs);
	jsonw_kint(
	    &w, "recovered_from_history", (int64_t) e->counters.recovered);
	jsonw_kint(&w, "lost", (int64_t) e->counters.lost);
	jsonw_kint(&w, "http_failures", (int64_t) e->counters.http_failures);
	jsonw_key(&w, "last_frame_age_s");
	if (e->last_frame_at)
		jsonw_double(&w, (double) (now - e->last_frame_at) / 1000.0);
	else
		jsonw_null(&w);
	w_common_tail(e, &w, now);
	jsonw_obj_end(&w);
	if (jsonw_finish(&w) != 0)
		return;
	topic_join(e->topic, sizeof(e->topic), e->prefix, e->instance,
	    "bridge/health");
	emit(e, MSG_LIFECYCLE, e->topic, w.buf, w.len, 0, true,
	    "application/json", (uint32_t) e->cfg.health_interval_s * 3,
	    "health", NULL, e->topic);
	log_faults_on_change(e, h);
}

static int64_t
min_due(int64_t a, int64_t b)
{
	if (a <= 0)
		return b;
	if (b <= 0)
		return a;
	return a < b ? a : b;
}

/* Publishes the empty retained message that removes a state (where
 * message expiry is not honoured: 3.1.1, some brokers); prompt_id: for the
 * user property, NULL when unknown. */
static void
clear_retained_state(
    struct engine *e, const char *topic, const char *prompt_id)
{
	emit(e, MSG_CRITICAL, topic, "", 0, 1, true, NULL, 0, "state",
	    prompt_id, topic);
}

/* Clears the stale states whose TTL has passed; returns the next due. */
static int64_t
clear_stale_states(struct engine *e, int64_t now)
{
	int64_t next = 0;
	size_t kept = 0;
	for (size_t i = 0; i < e->n_stale; i++) {
		struct stale_state *s = &e->stale[i];
		if (now >= s->due) {
			clear_retained_state(e, s->topic, NULL);
			free(s->topic);
			continue;
		}
		next = min_due(next, s->due);
		e->stale[kept++] = *s;
	}
	e->n_stale = kept;
	return next;
}

const char *
engine_state_filter(const struct engine *e)
{
	return e->state_filter;
}

/* Reads the retained state topic/payload; ignores everything but the
 * finished state of a prompt this run does not follow. */
void
engine_on_retained_state(struct engine *e, const char *topic,
    const void *payload, size_t len, int64_t now)
{
	size_t base = strlen(e->state_filter) - strlen("+/state");
	size_t tl = strlen(topic);
	if (len == 0 || tl >= TOPIC_MAX || tl <= base + strlen("/state")
	    || strncmp(topic, e->state_filter, base) != 0
	    || strcmp(topic + tl - strlen("/state"), "/state") != 0
	    || memchr(topic + base, '/', tl - base - strlen("/state")) != NULL)
		return;
	struct json_doc d;
	int64_t finished_at = 0;
	char id[PROMPT_ID_MAX + 1], status[16] = "";
	int rc = json_parse(e->http_parser, payload, len, true, &d);
	int t_id = rc == JSON_OK ? json_obj_get(&d, 0, "prompt_id") : -1;
	int t_st = rc == JSON_OK ? json_obj_get(&d, 0, "status") : -1;
	int t_fin = rc == JSON_OK ? json_obj_get(&d, 0, "finished_at") : -1;
	int il = t_id >= 0 ? json_str_get(&d, t_id, id, sizeof(id)) : -1;
	if (t_st >= 0)
		json_str_get(&d, t_st, status, sizeof(status));
	bool finished = t_fin >= 0
	    && json_get_int64(&d, t_fin, &finished_at) == 0 && finished_at > 0;
	json_parser_trim(e->http_parser);
	if (il <= 0 || !finished
	    || !(strcmp(status, "success") == 0 || strcmp(status, "error") == 0
	        || strcmp(status, "interrupted") == 0
	        || strcmp(status, "lost") == 0))
		return;
	if (tracker_find(e->tracker, id, (size_t) il) != NULL)
		return; /* this run's own: its timer runs */
	int64_t due = finished_at + (int64_t) e->cfg.state_ttl_s * 1000;
	if (now >= due) {
		clear_retained_state(e, topic, id);
		return;
	}
	for (size_t i = 0; i < e->n_stale; i++)
		if (strcmp(e->stale[i].topic, topic) == 0)
			return; /* read again after a reconnect */
	if (e->n_stale == 0 && e->stale == NULL)
		e->stale = calloc(STALE_STATES_MAX, sizeof(*e->stale));
	char *copy = e->stale != NULL && e->n_stale < STALE_STATES_MAX
	    ? strdup(topic)
	    : NULL;
	if (copy == NULL)
		return; /* read again at the next connect */
	e->stale[e->n_stale++] = (struct stale_state) { copy, due };
	schedule(e, due);
}

int64_t
engine_tick(struct engine *e, int64_t now, const struct engine_health_io *h)
{
	int64_t next = now + 1000;
	if (e->poll_retry_at && now >= e->poll_retry_at) {
		e->poll_retry_at = 0;
		request_poll(e);
	}
	next = min_due(next, e->poll_retry_at);
	unsigned i = 0;
	struct prompt *p;
	while ((p = tracker_next(e->tracker, &i)) != NULL) {
		if (p->state_dirty) {
			int64_t due
			    = p->state_published_at + STATE_MIN_INTERVAL_MS;
			if (now >= due)
				publish_state(e, p, now);
			else
				next = min_due(next, due);
		}
		if (p->history_due && !p->terminal_sent && !p->history_inflight
		    && e->upstream_up) {
			if (now >= p->history_due) {
				p->history_due = 0;
				request_history(e, p);
			} else {
				next = min_due(next, p->history_due);
			}
		}
		if (p->terminal_sent && p->expire_at) {
			if (now >= p->expire_at) {
				state_topic(e, p);
				clear_retained_state(e, e->topic, p->id);
				tracker_remove(e->tracker, p);
				continue;
			}
			next = min_due(next, p->expire_at);
		}
	}
	next = min_due(next, clear_stale_states(e, now));
	next = min_due(next, watchdog_tick(e, now));
	if (now >= e->next_health_at) {
		publish_health(e, now, h);
		e->next_health_at
		    = now + (int64_t) e->cfg.health_interval_s * 1000;
	}
	next = min_due(next, e->next_health_at);
	e->due = next;
	return next;
}

int64_t
engine_due(const struct engine *e)
{
	return e->due;
}

/* ------------------------------------------------------------------ */
/* life cycle */

struct engine *
engine_create(
    const struct engine_cfg *cfg, const struct engine_io *io, int64_t now)
{
	struct engine *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->cfg = *cfg;
	e->io = *io;
	e->prefix = dupstr(cfg->prefix);
	e->instance = dupstr(cfg->instance);
	e->client_id = dupstr(cfg->client_id);
	e->mqtt_client_id = dupstr(cfg->mqtt_client_id);
	e->comfy_url = dupstr(cfg->comfyui_public);
	topic_join(e->state_filter, sizeof(e->state_filter), e->prefix,
	    e->instance, "prompt/+/state");
	if (e->cfg.health_interval_s <= 0)
		e->cfg.health_interval_s = 30;
	if (e->cfg.state_ttl_s <= 0)
		e->cfg.state_ttl_s = 86400;
	unsigned ht
	    = cfg->http_max_tokens ? cfg->http_max_tokens : HTTP_MAX_TOKENS;
	e->parser
	    = json_parser_create(cfg->max_tokens ? cfg->max_tokens : 8192);
	e->http_parser = json_parser_create_growing(
	    ht < HTTP_INITIAL_TOKENS ? ht : HTTP_INITIAL_TOKENS, ht);
	e->tracker = tracker_create(
	    cfg->max_prompts ? cfg->max_prompts : TRACKER_CAPACITY);
	e->max_payload = MAX_PAYLOAD;
	e->obuf = malloc(OUTBUF_CAP);
	if (!e->prefix || !e->instance || !e->client_id || !e->comfy_url
	    || !e->mqtt_client_id || !e->parser || !e->http_parser
	    || !e->tracker || !e->obuf) {
		engine_destroy(e);
		return NULL;
	}
	e->run = now;
	e->next_health_at = now + 1000;
	schedule(e, e->next_health_at);
	print_line(e, "Connecting to ComfyUI WebSocket...");
	publish_info(e, now);
	publish_text(e, "upstream/state", "offline", false);
	return e;
}

void
engine_destroy(struct engine *e)
{
	if (!e)
		return;
	json_parser_destroy(e->parser);
	json_parser_destroy(e->http_parser);
	tracker_destroy(e->tracker);
	for (size_t i = 0; i < e->n_stale; i++)
		free(e->stale[i].topic);
	free(e->stale);
	dbuf_free(&e->queue_payload);
	dbuf_free(&e->queue_ids);
	dbuf_free(&e->info_payload);
	dbuf_free(&e->current_payload);
	free(e->obuf);
	free(e->prefix);
	free(e->instance);
	free(e->client_id);
	free(e->mqtt_client_id);
	free(e->comfy_url);
	free(e);
}

void
engine_get_counters(const struct engine *e, struct engine_counters *c)
{
	*c = e->counters;
}
