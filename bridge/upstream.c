/* See upstream.h. The WebSocket's chunks go through the reassembler into
 * the engine; the engine's HTTP reads go to the HTTP client and come back
 * with their kind and tag; the tick timer follows engine_due(). */
#include "upstream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "event.h"
#include "http_client.h"
#include "reasm.h"
#include "ws_client.h"

#define HTTP_TIMEOUT_MS 10000
#define HTTP_MAX_BODY   (64u * 1024 * 1024)
#define REASM_INITIAL   (64 * 1024)

static const char feature_flags_frame[]
    = "{\"type\":\"feature_flags\",\"data\":{\"supports_preview_metadata\":"
      "true}}";

struct upstream {
	struct upstream_out out;
	const struct config *opts;
	int server;
	struct engine *engine;
	struct ws_client *ws;
	struct http_client *http;
	struct reasm *reasm;
	struct loop_timer *tick_timer;
	int64_t tick_armed_for;
	char public_url[600]; /* the base URL without credentials */
};

/* One HTTP read in flight: the answer goes back with its kind and tag. */
struct http_req {
	struct upstream *u;
	enum engine_http_kind kind;
	char tag[PROMPT_ID_MAX + 1];
	bool has_tag;
};

void
upstream_cfg_from_config(
    const struct config *opts, int server, struct upstream_cfg *c)
{
	const struct config_server *s = &opts->server[server];
	*c = (struct upstream_cfg) {
		.opts = opts,
		.server = server,
		.comfy = &s->comfy,
		.headers = s->headers,
		.n_headers = s->n_headers,
		.instance = s->instance,
		.client_id = s->client_id,
		.mqtt_client_id = s->mqtt_client_id,
	};
}

/* Re-arms the engine tick when the engine has something due earlier. */
static void
arm_tick(struct upstream *u)
{
	int64_t due = engine_due(u->engine);
	if (due <= 0)
		return;
	if (loop_timer_pending(u->tick_timer) && u->tick_armed_for <= due)
		return;
	int64_t delay = due - loop_now_ms();
	u->tick_armed_for = due;
	loop_timer_arm(u->tick_timer, delay > 0 ? delay : 0);
}

static void
on_tick(void *ud)
{
	struct upstream *u = ud;
	struct engine_health_io h;
	memset(&h, 0, sizeof(h));
	u->out.broker_health(u->out.ud, &h);
	h.comfyui_reconnects = ws_client_returns(u->ws);
	h.upstream_pauses = ws_client_pauses(u->ws);
	h.upstream_paused_ms = ws_client_paused_ms(u->ws);
	engine_tick(u->engine, loop_now_ms(), &h);
	u->tick_armed_for = 0;
	arm_tick(u);
}

/* --- engine -> world --- */

static void
do_publish(void *ud, const struct out_msg *m)
{
	struct upstream *u = ud;
	u->out.publish(u->out.ud, m);
}

static void
http_done(void *ud, int status, const char *body, size_t len)
{
	struct http_req *r = ud;
	struct upstream *u = r->u;
	engine_on_http(u->engine, r->kind, r->has_tag ? r->tag : NULL, status,
	    body, len, loop_now_ms());
	free(r);
	arm_tick(u);
}

static void
do_http_get(
    void *ud, enum engine_http_kind kind, const char *path, const char *tag)
{
	struct upstream *u = ud;
	struct http_req *r = calloc(1, sizeof(*r));
	if (!r) {
		engine_on_http(
		    u->engine, kind, tag, BR_ENOMEM, "", 0, loop_now_ms());
		return;
	}
	r->u = u;
	r->kind = kind;
	if (tag) {
		snprintf(r->tag, sizeof(r->tag), "%s", tag);
		r->has_tag = true;
	}
	int rc = http_client_get(u->http, path, HTTP_TIMEOUT_MS, http_done, r);
	if (rc != 0) {
		free(r);
		engine_on_http(u->engine, kind, tag, rc, "", 0, loop_now_ms());
	}
}

static void
do_reconnect_upstream(void *ud)
{
	struct upstream *u = ud;
	ws_client_reconnect(u->ws);
}

static bool
event_allowed(void *ud, const char *type, size_t len)
{
	return config_event_allowed(ud, type, len);
}

static void
write_options(void *ud, void *w)
{
	struct upstream *u = ud;
	config_write_json(u->opts, u->server, w);
}

/* --- ComfyUI WebSocket -> engine --- */

static void
ws_up(void *ud)
{
	struct upstream *u = ud;
	reasm_reset(u->reasm);
	engine_on_upstream(u->engine, true, loop_now_ms());
	arm_tick(u);
}

static void
ws_pause(void *ud, bool paused)
{
	struct upstream *u = ud;
	engine_on_upstream_paused(u->engine, paused, loop_now_ms());
	arm_tick(u);
}

static void
ws_down(void *ud, const char *why)
{
	struct upstream *u = ud;
	reasm_reset(u->reasm);
	engine_on_upstream(u->engine, false, loop_now_ms());
	(void) why;
}

static void
ws_chunk(
    void *ud, const void *buf, size_t len, bool first, bool final, bool binary)
{
	struct upstream *u = ud;
	const uint8_t *msg = buf;
	size_t n = len;
	bool bin = binary;
	int rc;

	/* a message in one chunk goes to the engine from the read buffer */
	if (first && final)
		rc = reasm_whole(u->reasm, len);
	else if ((rc = reasm_feed(u->reasm, buf, len, first, final, binary))
	    == REASM_DONE)
		msg = reasm_msg(u->reasm, &n, &bin);
	if (rc == REASM_DONE) {
		if (bin)
			engine_on_binary(u->engine, msg, n, loop_now_ms());
		else
			engine_on_text(
			    u->engine, (const char *) msg, n, loop_now_ms());
		/* give a huge buffer back once it is consumed: flat RSS */
		if (n > 4 * REASM_INITIAL && msg != buf)
			reasm_reset(u->reasm);
		arm_tick(u);
	} else if (rc == BR_EFULL || rc == BR_ENOMEM) {
		engine_on_oversize(u->engine, len, binary);
	}
}

/* --- set-up --- */

static struct engine *
create_engine(struct upstream *u, const struct upstream_cfg *uc)
{
	const struct config *c = uc->opts;
	struct engine_cfg ec = {
		.prefix = c->prefix,
		.instance = uc->instance,
		.client_id = uc->client_id,
		.mqtt_client_id = uc->mqtt_client_id,
		.comfyui_public = u->public_url,
		.mqtt_protocol = c->mqtt_protocol,
		.state_ttl_s = c->state_ttl,
		.max_tokens = c->max_tokens,
		.history_items = c->history_items,
		.upstream_watchdog_s = c->upstream_watchdog,
		.health_interval_s = c->health_interval,
		.previews = c->previews,
		.preview_max_bytes = c->preview_max_bytes,
		.preview_rate = c->preview_rate,
		.event_allowed = event_allowed,
		.event_allowed_ud = (void *) c,
		.print = c->print ? stdout : NULL,
		.print_timestamps = c->print_timestamps,
		.print_prefix = uc->print_prefix,
		.write_options = write_options,
		.write_options_ud = u,
	};
	struct engine_io eio = { .publish = do_publish,
		.http_get = do_http_get,
		.reconnect_upstream = do_reconnect_upstream,
		.ud = u };
	return engine_create(&ec, &eio, loop_now_ms());
}

static struct ws_client *
create_ws(struct upstream *u, struct loop *l, const struct upstream_cfg *uc,
    const struct tls_opts *tls)
{
	struct ws_client_cfg wc = {
		.base = uc->comfy,
		.client_id = uc->client_id,
		.headers = uc->headers,
		.n_headers = uc->n_headers,
		.first_frame = feature_flags_frame,
		.tls = *tls,
		.ping_interval_s = 20,
		.pong_timeout_s = 10,
		.handshake_timeout_s = 10,
		.stable_s = 60,
	};
	struct ws_client_cb wcb = { .on_up = ws_up,
		.on_down = ws_down,
		.on_chunk = ws_chunk,
		.on_pause = ws_pause };
	return ws_client_create(l, &wc, &wcb, u);
}

int
upstream_create(struct loop *l, const struct upstream_cfg *uc,
    const struct upstream_out *out, struct upstream **up)
{
	*up = NULL;
	if (l == NULL || uc == NULL || uc->opts == NULL || uc->comfy == NULL
	    || out == NULL || out->publish == NULL
	    || out->broker_health == NULL)
		return BR_EINVAL;
	struct upstream *u = calloc(1, sizeof(*u));
	if (u == NULL)
		return BR_ENOMEM;
	const struct config *c = uc->opts;
	struct tls_opts tls
	    = { c->tls_ca, c->tls_cert, c->tls_key, c->tls_insecure };
	u->out = *out;
	u->opts = c;
	u->server = uc->server;
	url_format_public(uc->comfy, u->public_url, sizeof(u->public_url));
	u->tick_timer = loop_timer_create(l, on_tick, u);
	u->reasm = reasm_create(REASM_INITIAL, c->max_frame_bytes);
	/* the engine publishes retained start-up state through out */
	u->engine = create_engine(u, uc);
	u->http = http_client_create(
	    l, uc->comfy, uc->headers, uc->n_headers, &tls, HTTP_MAX_BODY);
	u->ws = create_ws(u, l, uc, &tls);
	if (!u->tick_timer || !u->reasm || !u->engine || !u->http || !u->ws) {
		upstream_destroy(u);
		return BR_ENOMEM;
	}
	*up = u;
	return 0;
}

int
upstream_start(struct upstream *u)
{
	if (ws_client_start(u->ws) != 0)
		return BR_EIO;
	arm_tick(u);
	return 0;
}

void
upstream_stop(struct upstream *u, const char *line)
{
	engine_print_line(u->engine, line);
	ws_client_stop(u->ws);
}

void
upstream_destroy(struct upstream *u)
{
	if (u == NULL)
		return;
	/* the clients first: they cancel what would call back into u */
	ws_client_destroy(u->ws);
	http_client_destroy(u->http);
	if (u->tick_timer)
		loop_timer_destroy(u->tick_timer);
	if (u->engine)
		engine_destroy(u->engine);
	if (u->reasm)
		reasm_destroy(u->reasm);
	free(u);
}

void
upstream_on_broker_connected(
    struct upstream *u, bool session_present, uint32_t max_packet)
{
	engine_set_max_packet(u->engine, max_packet);
	engine_on_broker_connected(u->engine, session_present, loop_now_ms());
}

void
upstream_on_retained_state(
    void *ud, const char *topic, const void *payload, size_t len)
{
	struct upstream *u = ud;
	engine_on_retained_state(
	    u->engine, topic, payload, len, loop_now_ms());
}

void
upstream_on_submitted(
    void *ud, const char *prompt_id, size_t len, int64_t number)
{
	struct upstream *u = ud;
	engine_on_submitted(u->engine, prompt_id, len, number, loop_now_ms());
	arm_tick(u);
}

const char *
upstream_state_filter(const struct upstream *u)
{
	return engine_state_filter(u->engine);
}

const char *
upstream_cursor_topic(const struct upstream *u)
{
	return engine_cursor_topic(u->engine);
}

void
upstream_offline_msg(struct upstream *u, struct out_msg *m)
{
	engine_offline_msg(u->engine, m);
}

void
upstream_pause(struct upstream *u, bool on)
{
	if (u != NULL)
		ws_client_pause(u->ws, on);
}
