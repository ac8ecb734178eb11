/* comfy2mqtt: wiring. Parses the options, builds the loop, the ComfyUI
 * WebSocket and HTTP clients, the broker link and the pure engine, and
 * connects their callbacks. Everything interesting lives in the modules. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "discovery.h"
#include "engine.h"
#include "event.h"
#include "err.h"
#include "http_client.h"
#include "jsonw.h"
#include "log.h"
#include "loop.h"
#include "mqtt_link.h"
#include "reasm.h"
#include "throttle.h"
#include "ws_client.h"

#define HTTP_TIMEOUT_MS   10000
#define HTTP_MAX_BODY     (64u * 1024 * 1024)
#define REASM_INITIAL     (64 * 1024)
#define SHUTDOWN_FLUSH_MS 1500
/* --ha-remove: how long to wait for the broker to take the empty config */
#define HA_REMOVE_TIMEOUT_MS 10000
#define HA_PAYLOAD_MAX       8192
#define HA_TOPIC_MAX         600
/* at most one re-announce per window for Home Assistant's "online" */
#define HA_REANNOUNCE_WINDOW_MS 10000

/* origin.support_url in the Home Assistant discovery message; a packager
 * may define it (-DC2M_SUPPORT_URL=...), else it is left out. */
#ifndef C2M_SUPPORT_URL
#define C2M_SUPPORT_URL NULL
#endif

static const char feature_flags_frame[]
    = "{\"type\":\"feature_flags\",\"data\":{\"supports_preview_metadata\":"
      "true}}";

struct app {
	struct config cfg;
	struct loop *loop;
	struct engine *engine;
	struct ws_client *ws;
	struct http_client *http;
	struct mqtt_link *mqtt;
	struct reasm *reasm;
	struct loop_timer *tick_timer;
	struct loop_timer *shutdown_timer;
	struct loop_timer *ha_timer; /* the deferred re-announce */
	int64_t tick_armed_for;
	bool stopping;
	char comfy_public[600];
	/* --ha-discovery: built once, (re)published on every broker connect
	 * and whenever Home Assistant announces itself */
	char ha_topic[HA_TOPIC_MAX];
	char ha_status_topic[HA_TOPIC_MAX];
	char ha_payload[HA_PAYLOAD_MAX];
	size_t ha_payload_len;
	/* every "online" may be retained and repeated by anyone who can
	 * publish there; each re-announce is a retained 3 KB publish and a
	 * log line, so a burst gets the first and one more at its end */
	struct throttle ha_throttle;
};

struct http_req {
	struct app *app;
	enum engine_http_kind kind;
	char tag[PROMPT_ID_MAX + 1];
	bool has_tag;
};

static void
fill_health(struct app *a, struct engine_health_io *h)
{
	struct mqtt_link_stats s;
	memset(h, 0, sizeof(*h));
	if (!a->mqtt)
		return;
	mqtt_link_get_stats(a->mqtt, &s);
	h->mqtt_connected = s.connected;
	h->mqtt_reconnects = s.connects > 0 ? s.connects - 1 : 0;
	h->comfyui_reconnects = a->ws ? ws_client_reconnects(a->ws) : 0;
	memcpy(h->published, s.published, sizeof(h->published));
	memcpy(h->dropped, s.dropped, sizeof(h->dropped));
	h->queue_depth = s.queued;
	h->queue_bytes = s.queued_bytes;
}

/* Re-arms the engine tick when the engine has something due earlier. */
static void
arm_tick(struct app *a)
{
	int64_t due = engine_due(a->engine);
	if (due <= 0)
		return;
	if (loop_timer_pending(a->tick_timer) && a->tick_armed_for <= due)
		return;
	int64_t delay = due - loop_now_ms();
	a->tick_armed_for = due;
	loop_timer_arm(a->tick_timer, delay > 0 ? delay : 0);
}

static void
on_tick(void *ud)
{
	struct app *a = ud;
	struct engine_health_io h;
	fill_health(a, &h);
	engine_tick(a->engine, loop_now_ms(), &h);
	a->tick_armed_for = 0;
	arm_tick(a);
}

/* --- engine -> world --- */

static void
do_publish(void *ud, const struct out_msg *m)
{
	struct app *a = ud;
	if (a->mqtt)
		mqtt_link_publish(a->mqtt, m);
}

static void
http_done(void *ud, int status, const char *body, size_t len)
{
	struct http_req *r = ud;
	struct app *a = r->app;
	engine_on_http(a->engine, r->kind, r->has_tag ? r->tag : NULL, status,
	    body, len, loop_now_ms());
	free(r);
	arm_tick(a);
}

static void
do_http_get(
    void *ud, enum engine_http_kind kind, const char *path, const char *tag)
{
	struct app *a = ud;
	struct http_req *r = calloc(1, sizeof(*r));
	if (!r) {
		engine_on_http(
		    a->engine, kind, tag, BR_ENOMEM, "", 0, loop_now_ms());
		return;
	}
	r->app = a;
	r->kind = kind;
	if (tag) {
		snprintf(r->tag, sizeof(r->tag), "%s", tag);
		r->has_tag = true;
	}
	int rc = http_client_get(a->http, path, HTTP_TIMEOUT_MS, http_done, r);
	if (rc != 0) {
		free(r);
		engine_on_http(a->engine, kind, tag, rc, "", 0, loop_now_ms());
	}
}

static void
do_reconnect_upstream(void *ud)
{
	struct app *a = ud;
	ws_client_reconnect(a->ws);
}

static bool
event_allowed(void *ud, const char *type, size_t len)
{
	return config_event_allowed(ud, type, len);
}

static void
write_options(void *ud, void *w)
{
	config_write_json(ud, w);
}

/* --- ComfyUI WebSocket -> engine --- */

static void
ws_up(void *ud)
{
	struct app *a = ud;
	reasm_reset(a->reasm);
	engine_on_upstream(a->engine, true, loop_now_ms());
	arm_tick(a);
}

static void
ws_down(void *ud, const char *why)
{
	struct app *a = ud;
	reasm_reset(a->reasm);
	engine_on_upstream(a->engine, false, loop_now_ms());
	(void) why;
}

static void
ws_chunk(
    void *ud, const void *buf, size_t len, bool first, bool final, bool binary)
{
	struct app *a = ud;
	int rc = reasm_feed(a->reasm, buf, len, first, final, binary);
	if (rc == REASM_DONE) {
		size_t n;
		bool bin;
		const uint8_t *msg = reasm_msg(a->reasm, &n, &bin);
		if (bin)
			engine_on_binary(a->engine, msg, n, loop_now_ms());
		else
			engine_on_text(
			    a->engine, (const char *) msg, n, loop_now_ms());
		/* give a huge buffer back once it is consumed: flat RSS */
		if (n > 4 * REASM_INITIAL)
			reasm_reset(a->reasm);
		arm_tick(a);
	} else if (rc == REASM_OVERSIZE || rc == REASM_NOMEM) {
		engine_on_oversize(a->engine, len, binary);
	}
}

/* --- Home Assistant discovery --- */

static void
ha_discovery_cfg(const struct app *a, struct discovery_cfg *dc)
{
	const struct config *c = &a->cfg;
	*dc = (struct discovery_cfg) {
		.ha_prefix = c->ha_prefix,
		.prefix = c->prefix,
		.instance = c->instance,
		.version = C2M_VERSION,
		.comfyui_url = a->comfy_public,
		.support_url = C2M_SUPPORT_URL,
		.previews = c->previews,
	};
}

/* Builds the discovery topic and payload once (--ha-discovery). */
static int
ha_prepare(struct app *a)
{
	struct discovery_cfg dc;
	struct jsonw w;
	ha_discovery_cfg(a, &dc);
	if (discovery_topic(&dc, a->ha_topic, sizeof(a->ha_topic)) < 0)
		return BR_ETRUNC;
	int n = snprintf(a->ha_status_topic, sizeof(a->ha_status_topic),
	    "%s/status", a->cfg.ha_prefix);
	if (n < 0 || (size_t) n >= sizeof(a->ha_status_topic))
		return BR_ETRUNC;
	jsonw_init(&w, a->ha_payload, sizeof(a->ha_payload));
	int rc = discovery_write(&dc, &w);
	if (rc != 0)
		return rc;
	a->ha_payload_len = w.len;
	return 0;
}

static void
ha_announce(struct app *a)
{
	struct out_msg m = {
		.cls = MSG_CRITICAL,
		.topic = a->ha_topic,
		.payload = a->ha_payload,
		.len = a->ha_payload_len,
		.qos = 1,
		.retain = true,
		.props = { .content_type = "application/json",
		    .utf8 = true,
		    .instance = a->cfg.instance,
		    .type = "discovery" },
		/* one pending announcement is enough */
		.coalesce_key = a->ha_topic,
	};
	mqtt_link_publish(a->mqtt, &m);
}

/* --ha-remove: clears the retained discovery message and returns the exit
 * code. Connects to the broker only (never to ComfyUI), with its own
 * client id and no will, so a running bridge of the same instance is
 * neither kicked off nor marked offline. */
static int
ha_remove(struct app *a)
{
	struct config *c = &a->cfg;
	url_format_public(&c->comfy, a->comfy_public, sizeof(a->comfy_public));
	struct discovery_cfg dc;
	ha_discovery_cfg(a, &dc);
	if (discovery_topic(&dc, a->ha_topic, sizeof(a->ha_topic)) < 0) {
		log_error("ha", "discovery topic does not fit");
		return 1;
	}
	/* 20 + "-rm" keeps within the 23 bytes 3.1.1 brokers must accept */
	char client_id[64];
	snprintf(client_id, sizeof(client_id), "%.20s-rm", c->mqtt_client_id);
	struct mqtt_link_cfg mc = {
		.host = c->broker.host,
		.port = c->broker.port,
		.tls = c->broker.tls,
		.tls_opts
		= { c->tls_ca, c->tls_cert, c->tls_key, c->tls_insecure },
		.client_id = client_id,
		.username = c->mqtt_username,
		.password = c->mqtt_password,
		.protocol = c->mqtt_protocol,
		.keepalive_s = c->mqtt_keepalive,
		.window = 1,
		.queue_max_messages = 1,
		.queue_max_bytes = 0,
	};
	struct mqtt_link_cb mcb = { 0 };
	/* the link needs a loop, though shutdown below runs it by itself */
	a->loop = loop_create_tls(false);
	int rc = a->loop != NULL
	    ? mqtt_link_create(a->loop, &mc, &mcb, a, &a->mqtt)
	    : BR_EIO;
	if (rc == BR_OK)
		rc = mqtt_link_start(a->mqtt);
	if (rc != BR_OK) {
		log_error(
		    "ha", "cannot start the broker link: %s", br_strerror(rc));
		return 1;
	}
	struct out_msg m = {
		.cls = MSG_CRITICAL,
		.topic = a->ha_topic,
		.payload = "",
		.len = 0,
		.qos = 1,
		.retain = true,
	};
	mqtt_link_publish(a->mqtt, &m);
	/* drains: waits for the connect and the PUBACK, then disconnects */
	mqtt_link_shutdown(a->mqtt, NULL, HA_REMOVE_TIMEOUT_MS);
	struct mqtt_link_stats s;
	mqtt_link_get_stats(a->mqtt, &s);
	if (s.published[MSG_CRITICAL] != 1 || s.queued != 0
	    || s.inflight != 0) {
		log_error("ha",
		    "%s not cleared: broker %s:%d did not "
		    "acknowledge within %d ms",
		    a->ha_topic, c->broker.host, c->broker.port,
		    HA_REMOVE_TIMEOUT_MS);
		return 1;
	}
	log_info("ha", "cleared %s", a->ha_topic);
	return 0;
}

/* --- broker link -> engine --- */

static void
mqtt_connected(void *ud, bool session_present)
{
	struct app *a = ud;
	engine_set_max_packet(a->engine, mqtt_link_max_packet(a->mqtt));
	engine_on_broker_connected(a->engine, session_present, loop_now_ms());
	/* announced on every connect: the broker may have lost it, and a
	 * retained copy from an older version must be replaced */
	if (a->cfg.ha_discovery)
		ha_announce(a);
}

static void
mqtt_disconnected(void *ud, const char *why)
{
	(void) ud;
	(void) why;
}

/* The deferred re-announce of a burst of "online"s; a timer that fired a
 * little early is armed again for the rest. */
static void
on_ha_timer(void *ud)
{
	struct app *a = ud;
	int64_t now = loop_mono_ms();
	uint64_t n = throttle_poll(&a->ha_throttle, now);
	if (n == 0) {
		int64_t due = throttle_due(&a->ha_throttle);
		if (due >= 0)
			loop_timer_arm(a->ha_timer, due > now ? due - now : 0);
		return;
	}
	log_info("ha",
	    "Home Assistant is online: re-announcing (%llu more \"online\" "
	    "within %d s)",
	    (unsigned long long) n, HA_REANNOUNCE_WINDOW_MS / 1000);
	ha_announce(a);
}

/* Prompt states an earlier run left retained (MQTT 3.1.1 read-back). */
static void
mqtt_retained_state(
    void *ud, const char *topic, const void *payload, size_t len)
{
	struct app *a = ud;
	engine_on_retained_state(
	    a->engine, topic, payload, len, loop_now_ms());
}

/* Home Assistant's birth message: it (re)started and wants discovery
 * again (its entities are unavailable until it gets it) */
static void
mqtt_ha_status(void *ud, const char *topic, const void *payload, size_t len)
{
	struct app *a = ud;
	(void) topic;
	if (len != 6 || memcmp(payload, "online", 6) != 0)
		return;
	int64_t now = loop_mono_ms();
	if (!throttle_request(&a->ha_throttle, now)) {
		if (!loop_timer_pending(a->ha_timer))
			loop_timer_arm(
			    a->ha_timer, throttle_due(&a->ha_throttle) - now);
		return;
	}
	log_info("ha", "Home Assistant is online: re-announcing");
	ha_announce(a);
}

/* --- shutdown --- */

static void
hard_exit(int signo)
{
	(void) signo;
	_exit(1);
}

static void
finish_shutdown(void *ud)
{
	struct app *a = ud;
	struct out_msg offline;
	engine_offline_msg(a->engine, &offline);
	mqtt_link_shutdown(a->mqtt, &offline, SHUTDOWN_FLUSH_MS);
	loop_quit(a->loop);
}

static void
on_signal(void *ud, int signo)
{
	struct app *a = ud;
	if (a->stopping) {
		hard_exit(signo);
		return;
	}
	a->stopping = true;
	log_info("bridge", "signal %d: shutting down", signo);
	engine_print_line(a->engine, "Shutting down...");
	/* A second signal during the (blocking) flush exits at once. */
	struct sigaction sa = { 0 };
	sa.sa_handler = hard_exit;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	ws_client_stop(a->ws);
	/* let the loop send the close frame, then flush and leave */
	loop_timer_arm(a->shutdown_timer, 50);
}

/* --- setup --- */

static int
setup(struct app *a)
{
	struct config *c = &a->cfg;
	url_format_public(&c->comfy, a->comfy_public, sizeof(a->comfy_public));

	a->loop = loop_create_tls(c->comfy.tls);
	if (!a->loop)
		return BR_EIO;
	loop_set_signal_cb(a->loop, on_signal, a);
	a->tick_timer = loop_timer_create(a->loop, on_tick, a);
	a->shutdown_timer = loop_timer_create(a->loop, finish_shutdown, a);
	a->ha_timer = loop_timer_create(a->loop, on_ha_timer, a);
	throttle_init(&a->ha_throttle, HA_REANNOUNCE_WINDOW_MS);
	a->reasm = reasm_create(REASM_INITIAL, c->max_frame_bytes);
	if (!a->tick_timer || !a->shutdown_timer || !a->ha_timer || !a->reasm)
		return BR_ENOMEM;

	struct engine_cfg ec = {
		.prefix = c->prefix,
		.instance = c->instance,
		.client_id = c->client_id,
		.mqtt_client_id = c->mqtt_client_id,
		.comfyui_public = a->comfy_public,
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
		.event_allowed_ud = c,
		.print = c->print ? stdout : NULL,
		.print_timestamps = c->print_timestamps,
		.write_options = write_options,
		.write_options_ud = c,
	};
	struct engine_io eio = { .publish = do_publish,
		.http_get = do_http_get,
		.reconnect_upstream = do_reconnect_upstream,
		.ud = a };

	char will_topic[600];
	snprintf(will_topic, sizeof(will_topic), "%s/%s/bridge/state",
	    c->prefix, c->instance);
	struct mqtt_link_cfg mc = {
		.host = c->broker.host,
		.port = c->broker.port,
		.tls = c->broker.tls,
		.tls_opts
		= { c->tls_ca, c->tls_cert, c->tls_key, c->tls_insecure },
		.client_id = c->mqtt_client_id,
		.username = c->mqtt_username,
		.password = c->mqtt_password,
		.protocol = c->mqtt_protocol,
		.keepalive_s = c->mqtt_keepalive,
		.will_topic = will_topic,
		.will_payload = "offline",
		.window = 1000,
		.queue_max_messages = c->queue_max_messages,
		.queue_max_bytes = c->queue_max_bytes,
	};
	struct mqtt_link_cb mcb = { .on_connected = mqtt_connected,
		.on_disconnected = mqtt_disconnected };
	/* mqtt_link_create logs what failed (e.g. which --tls-* file) */
	int rc = mqtt_link_create(a->loop, &mc, &mcb, a, &a->mqtt);
	if (rc != BR_OK)
		return rc;
	if (c->ha_discovery) {
		rc = ha_prepare(a);
		if (rc != 0)
			return rc;
		rc = mqtt_link_subscribe(
		    a->mqtt, a->ha_status_topic, mqtt_ha_status, a);
		if (rc != 0)
			return rc;
	}
	/* the engine publishes retained start-up state into the link's queue
	 */
	a->engine = engine_create(&ec, &eio, loop_now_ms());
	if (!a->engine)
		return BR_ENOMEM;
	/* MQTT 3.1.1 has no message expiry: finished states an earlier run
	 * left retained are read back and cleared when their TTL passes */
	if (c->mqtt_protocol == MQTT_PROTO_311) {
		rc = mqtt_link_subscribe(a->mqtt,
		    engine_state_filter(a->engine), mqtt_retained_state, a);
		if (rc != 0)
			return rc;
	}

	struct tls_opts tls
	    = { c->tls_ca, c->tls_cert, c->tls_key, c->tls_insecure };
	a->http = http_client_create(a->loop, &c->comfy, c->comfyui_header,
	    c->n_comfyui_headers, &tls, HTTP_MAX_BODY);
	struct ws_client_cfg wc = {
		.base = &c->comfy,
		.client_id = c->client_id,
		.headers = c->comfyui_header,
		.n_headers = c->n_comfyui_headers,
		.first_frame = feature_flags_frame,
		.tls = tls,
		.ping_interval_s = 20,
		.pong_timeout_s = 10,
		.handshake_timeout_s = 10,
		.stable_s = 60,
	};
	struct ws_client_cb wcb
	    = { .on_up = ws_up, .on_down = ws_down, .on_chunk = ws_chunk };
	a->ws = ws_client_create(a->loop, &wc, &wcb, a);
	if (!a->http || !a->ws)
		return BR_ENOMEM;

	rc = mqtt_link_start(a->mqtt);
	if (rc != BR_OK)
		return rc;
	if (ws_client_start(a->ws) != 0)
		return BR_EIO;
	arm_tick(a);
	return 0;
}

static void
teardown(struct app *a)
{
	if (a->ws)
		ws_client_destroy(a->ws);
	if (a->http)
		http_client_destroy(a->http);
	if (a->tick_timer)
		loop_timer_destroy(a->tick_timer);
	if (a->shutdown_timer)
		loop_timer_destroy(a->shutdown_timer);
	if (a->ha_timer)
		loop_timer_destroy(a->ha_timer);
	if (a->mqtt)
		mqtt_link_destroy(a->mqtt);
	if (a->engine)
		engine_destroy(a->engine);
	if (a->reasm)
		reasm_destroy(a->reasm);
	if (a->loop)
		loop_destroy(a->loop);
	config_free(&a->cfg);
}

int
main(int argc, char **argv)
{
	static struct app app;
	char err[512] = "";
	int exit_code = 0;

	int rc = config_load(
	    &app.cfg, argc, argv, NULL, err, sizeof(err), stdout);
	if (rc == CONFIG_EXIT_OK) {
		config_free(&app.cfg);
		return 0;
	}
	if (rc != CONFIG_OK) {
		fprintf(stderr, "comfy2mqtt: %s\n", err);
		config_free(&app.cfg);
		return rc;
	}
	log_setup(app.cfg.log_level, app.cfg.log_format);
	char public_url[600];
	url_format_public(&app.cfg.comfy, public_url, sizeof(public_url));
	log_info("bridge",
	    "comfy2mqtt %s: ComfyUI %s, instance %s, "
	    "client id %s",
	    C2M_VERSION, public_url, app.cfg.instance, app.cfg.client_id);

	if (app.cfg.ha_remove) {
		exit_code = ha_remove(&app);
		teardown(&app);
		return exit_code;
	}

	rc = setup(&app);
	if (rc != 0) {
		log_error("bridge", "start-up failed: %s", br_strerror(rc));
		exit_code = 1;
	} else {
		loop_run(app.loop);
	}
	teardown(&app);
	return exit_code;
}
