/* The engine routes: frames to the lifecycle (or, for events of no
 * prompt, straight to the publisher), HTTP answers to reconciliation,
 * broker and upstream changes to the retained topics and reconciliation,
 * and time to whichever part has something due. The parts are described
 * in engine_int.h. */
#include "engine.h"

#include <stdlib.h>
#include <string.h>

#include "binframe.h"
#include "engine_int.h"
#include "log.h"

#define MAX_PAYLOAD (256 * 1024)
#define OUTBUF_CAP  (MAX_PAYLOAD + 16 * 1024)
/* The prompt table keeps the newest TRACKER_CAPACITY finished prompts (each
 * its record and its final state for the republish after a broker
 * reconnect); an older one leaves with its TTL clear kept by retained.c and
 * its id by recon.c, so only the republish of its final state is lost.
 * Live prompts grow the table up to TRACKER_LIVE_MAX. */
#define TRACKER_CAPACITY 256
#define TRACKER_LIVE_MAX 4096
/* HTTP bodies (/queue, /history) get a token array that starts small and
 * grows for a big body (a long queue of big workflows: 2.3 MB is about
 * 325k tokens), up to 4M tokens (80 MiB), and is trimmed after each body */
#define HTTP_INITIAL_TOKENS (1u << 14)
#define HTTP_MAX_TOKENS     (1u << 22)
/* how long the first connect may take before the link counts as down */
#define UPSTREAM_FIRST_CONNECT_MS 2000

/* snprintf(dst, cap, "%s", src) without the format machinery, which is a
 * large share of the per-event cost: copies at most cap - 1 bytes, always
 * terminates (cap > 0). Returns the length copied. */
size_t
copy_str(char *dst, size_t cap, const char *src)
{
	size_t n = strnlen(src, cap - 1);
	memcpy(dst, src, n);
	dst[n] = '\0';
	return n;
}

void
engine_schedule(struct engine *e, int64_t t)
{
	if (e->due == 0 || t < e->due)
		e->due = t;
}

int64_t
min_due(int64_t a, int64_t b)
{
	if (a <= 0)
		return b;
	if (b <= 0)
		return a;
	return a < b ? a : b;
}

void
engine_print_line(struct engine *e, const char *line)
{
	console_line(&e->console, "%s", line);
}

/* ------------------------------------------------------------------ */
/* text frames */

/* An event of no prompt: published as it is; status also drives
 * reconciliation. */
static void
on_global_event(struct engine *e, const struct json_doc *d,
    const struct comfy_event *ev, int64_t now)
{
	struct envelope env;
	envelope_init(&env, ev->type, now, SRC_LIVE);
	env.doc = d;
	env.data_tok = ev->data;
	emit_envelope(e, &env);
	if (ev->kind != EVK_STATUS)
		return;
	if (ev->has_queue_remaining)
		console_status(&e->console, ev->queue_remaining);
	recon_on_status(e, ev);
}

void
engine_on_text(struct engine *e, const char *buf, size_t len, int64_t now)
{
	struct json_doc doc;
	struct comfy_event ev;

	e->health.counters.frames_text++;
	e->last_frame_at = now;
	int rc = json_parse(e->parser, buf, len, true, &doc);
	if (rc != BR_OK) {
		health_reject(e, health_json_reason(rc), buf, len);
		return;
	}
	rc = event_parse(&doc, &ev);
	if (rc != BR_OK) {
		health_reject(e,
		    rc == BR_ENOTFOUND ? RJ_MISSING_TYPE : RJ_BAD_FIELD, buf,
		    len);
		return;
	}
	struct prompt *p = NULL;
	if (ev.has_prompt)
		p = lc_prompt_for(e, ev.prompt_id, ev.prompt_len, now);
	else if (ev.kind == EVK_EXECUTING && ev.has_node && e->running_id[0])
		/* the reconnect hint: no prompt id, the running prompt's
		 * node */
		p = tracker_find(
		    e->tracker, e->running_id, strlen(e->running_id));
	if (p)
		lc_on_event(e, &doc, &ev, p, now);
	else
		on_global_event(e, &doc, &ev, now);
}

/* ------------------------------------------------------------------ */
/* binary frames */

static void
on_progress_text(struct engine *e, const struct binframe *bf, int64_t now)
{
	char data[256 * 6 + 4096 * 6 + RENDER_DATA_MAX];
	struct jsonw w;
	jsonw_init(&w, data, sizeof(data));
	render_progress_text_data(
	    &w, bf->node_id, bf->node_id_len, bf->text, bf->text_len);
	struct envelope env;
	envelope_init(&env, "progress_text", now, SRC_LIVE);
	env.data_raw = w.buf;
	env.data_raw_len = w.len;
	emit_envelope(e, &env);
}

/* A preview with metadata: its prompt and image type. Returns false when
 * the metadata is no JSON (rejected). */
static bool
preview_meta(struct engine *e, const struct binframe *bf, int64_t now,
    struct prompt **p, const char **mime)
{
	struct json_doc doc;
	char id[PROMPT_ID_MAX + 1], it[32];
	if (json_parse(e->parser, bf->metadata, bf->metadata_len, true, &doc)
	    != BR_OK) {
		health_reject(
		    e, RJ_INVALID_JSON, bf->metadata, bf->metadata_len);
		return false;
	}
	int t = json_obj_get(&doc, 0, "prompt_id");
	int n = t >= 0 ? json_str_get(&doc, t, id, sizeof(id)) : -1;
	if (n > 0)
		*p = lc_prompt_for(e, id, (size_t) n, now);
	t = json_obj_get(&doc, 0, "image_type");
	*mime = "image/jpeg";
	if (t >= 0 && json_str_get(&doc, t, it, sizeof(it)) > 0
	    && strcmp(it, "image/png") == 0)
		*mime = "image/png";
	return true;
}

void
engine_on_binary(struct engine *e, const uint8_t *buf, size_t len, int64_t now)
{
	struct binframe bf;
	e->health.counters.frames_binary++;
	e->last_frame_at = now;
	size_t head = len < 16 ? len : 16;
	switch (binframe_parse(buf, len, &bf)) {
	case BR_ESHORT:
		health_reject(e, RJ_TRUNCATED_BINARY, buf, len);
		return;
	case BR_EUNSUPPORTED:
		health_reject(e, RJ_UNKNOWN_BINARY, buf, head);
		return;
	case BR_EINVAL:
		health_reject(e, RJ_BAD_IMAGE_FORMAT, buf, head);
		return;
	default:
		break;
	}
	if (bf.type == BINFRAME_TEXT) {
		on_progress_text(e, &bf, now);
		return;
	}
	if (!e->cfg.previews)
		return;
	struct prompt *p = NULL;
	const char *mime = bf.mime;
	if (bf.type == BINFRAME_PREVIEW_METADATA) {
		if (!preview_meta(e, &bf, now, &p, &mime))
			return;
	} else if (e->running_id[0]) {
		p = tracker_find(
		    e->tracker, e->running_id, strlen(e->running_id));
	}
	emit_preview(e, p, mime, bf.image, bf.image_len, now);
}

void
engine_on_oversize(struct engine *e, size_t len_so_far, bool binary)
{
	health_oversize(e, len_so_far, binary);
}

/* ------------------------------------------------------------------ */
/* broker and upstream */

void
engine_on_broker_connected(struct engine *e, bool session_present, int64_t now)
{
	retained_on_connected(e, session_present);
	(void) now;
}

void
engine_on_submitted(struct engine *e, const char *prompt_id, size_t len,
    int64_t number, int64_t now)
{
	recon_on_submitted(e, prompt_id, len, number, now);
}

void
engine_on_retained_state(struct engine *e, const char *topic,
    const void *payload, size_t len, int64_t now)
{
	retained_on_state(e, topic, payload, len, now);
}

const char *
engine_state_filter(const struct engine *e)
{
	return e->retained.state_filter;
}

const char *
engine_cursor_topic(const struct engine *e)
{
	return e->retained.cursor_topic;
}

void
engine_set_max_packet(struct engine *e, uint32_t max_packet)
{
	size_t limit = MAX_PAYLOAD;
	/* room for the topic and the properties */
	if (max_packet > 0 && (size_t) max_packet < limit + 2048)
		limit = max_packet > 4096 ? max_packet - 2048 : 2048;
	e->rctx.max_payload = limit;
}

void
engine_offline_msg(struct engine *e, struct out_msg *m)
{
	char *topic = e->offline_topic;
	pub_topic(topic, sizeof(e->offline_topic), e->prefix, e->instance,
	    TK_BRIDGE_STATE, NULL, NULL);
	pub_build(&e->pub_env,
	    &(struct pub_req) { .kind = TK_BRIDGE_STATE,
	        .topic = topic,
	        .payload = "offline",
	        .len = 7 },
	    &e->scratch, m);
	m->urgent = false; /* the will and the shutdown: nothing follows */
	m->coalesce_key = NULL;
}

void
engine_on_upstream_paused(struct engine *e, bool paused, int64_t now)
{
	if (!paused && e->upstream_paused)
		e->upstream_resumed_at = now;
	e->upstream_paused = paused;
}

void
engine_on_upstream(struct engine *e, bool up, int64_t now)
{
	if (e->upstream_known && up == e->upstream_up)
		return;
	e->upstream_known = true;
	e->upstream_up = up;
	emit_text(e, TK_UPSTREAM_STATE, up ? "online" : "offline");
	console_upstream(&e->console, up);
	if (!up) {
		recon_on_upstream(e, false, now);
		e->stats_requested = false;
		return;
	}
	e->upstream_up_at = now;
	recon_on_upstream(e, true, now);
	e->upstream_ever_up = true;
	if (!e->comfyui_version[0] && !e->stats_requested) {
		e->stats_requested = true;
		e->io.http_get(
		    e->io.ud, EHTTP_SYSTEM_STATS, "/system_stats", NULL);
	}
	recon_catch_up(e);
}

void
engine_on_http(struct engine *e, enum engine_http_kind kind, const char *tag,
    int status, const char *body, size_t len, int64_t now)
{
	recon_on_http(e, kind, tag, status, body, len, now);
}

/* ------------------------------------------------------------------ */
/* time */

/* The first connect did not answer in time: the link is down. */
static int64_t
upstream_known_tick(struct engine *e, int64_t now)
{
	if (e->upstream_known)
		return 0;
	if (now < e->upstream_known_by)
		return e->upstream_known_by;
	e->upstream_known = true;
	emit_text(e, TK_UPSTREAM_STATE, "offline");
	return 0;
}

int64_t
engine_tick(struct engine *e, int64_t now, const struct engine_health_io *h)
{
	int64_t next = min_due(now + 1000, recon_retry_tick(e, now));
	next = min_due(next, upstream_known_tick(e, now));
	unsigned i = 0;
	struct prompt *p;
	while ((p = tracker_next(e->tracker, &i)) != NULL) {
		next = min_due(next, lc_prompt_tick(e, p, now));
		next = min_due(next, emit_preview_tick(e, p, now));
		next = min_due(next, recon_prompt_tick(e, p, now));
		retained_prompt_tick(e, p, now, &next);
	}
	next = min_due(next, retained_tick(e, now));
	next = min_due(next, recon_watchdog_tick(e, now));
	next = min_due(next, health_tick(e, now, h));
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

static char *
dupstr(const char *s)
{
	return strdup(s ? s : "");
}

/* Copies the configuration and fills in the defaults. */
static bool
init_cfg(struct engine *e, const struct engine_cfg *cfg)
{
	e->cfg = *cfg;
	e->prefix = dupstr(cfg->prefix);
	e->instance = dupstr(cfg->instance);
	e->client_id = dupstr(cfg->client_id);
	e->mqtt_client_id = dupstr(cfg->mqtt_client_id);
	e->comfy_url = dupstr(cfg->comfyui_public);
	if (e->cfg.health_interval_s <= 0)
		e->cfg.health_interval_s = 30;
	if (e->cfg.state_ttl_s <= 0)
		e->cfg.state_ttl_s = 86400;
	if (cfg->print_prefix
	    && !(e->print_prefix = strdup(cfg->print_prefix)))
		return false;
	e->console = (struct console) { cfg->print, cfg->print_timestamps,
		e->print_prefix };
	e->pub_env
	    = (struct pub_env) { e->instance, (uint32_t) e->cfg.state_ttl_s,
		      (uint32_t) e->cfg.health_interval_s };
	topic_join(e->retained.state_filter, sizeof(e->retained.state_filter),
	    e->prefix, e->instance, "prompt/+/state");
	topic_join(e->retained.cursor_topic, sizeof(e->retained.cursor_topic),
	    e->prefix, e->instance, "bridge/cursor");
	return e->prefix && e->instance && e->client_id && e->comfy_url
	    && e->mqtt_client_id;
}

struct engine *
engine_create(
    const struct engine_cfg *cfg, const struct engine_io *io, int64_t now)
{
	struct engine *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->io = *io;
	bool ok = init_cfg(e, cfg);
	unsigned ht
	    = cfg->http_max_tokens ? cfg->http_max_tokens : HTTP_MAX_TOKENS;
	e->parser
	    = json_parser_create(cfg->max_tokens ? cfg->max_tokens : 8192);
	e->http_parser = json_parser_create_growing(
	    ht < HTTP_INITIAL_TOKENS ? ht : HTTP_INITIAL_TOKENS, ht);
	e->tracker = cfg->max_prompts
	    ? tracker_create(cfg->max_prompts)
	    : tracker_create_max(TRACKER_CAPACITY, TRACKER_LIVE_MAX);
	e->obuf = malloc(OUTBUF_CAP);
	if (!ok || !e->parser || !e->http_parser || !e->tracker || !e->obuf) {
		engine_destroy(e);
		return NULL;
	}
	e->rctx = (struct render_ctx) { e->instance, now, MAX_PAYLOAD };
	health_init(&e->health);
	recon_init(&e->recon);
	retained_init(e);
	e->health.next_at = now + 1000;
	engine_schedule(e, e->health.next_at);
	console_line(&e->console, "Connecting to ComfyUI WebSocket...");
	emit_info(e, now);
	e->upstream_known_by = now + UPSTREAM_FIRST_CONNECT_MS;
	engine_schedule(e, e->upstream_known_by);
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
	recon_destroy(&e->recon);
	retained_destroy(&e->retained);
	free(e->obuf);
	free(e->prefix);
	free(e->instance);
	free(e->client_id);
	free(e->mqtt_client_id);
	free(e->comfy_url);
	free(e->print_prefix);
	free(e);
}

void
engine_get_counters(const struct engine *e, struct engine_counters *c)
{
	*c = e->health.counters;
}
