/* comfy2mqtt: wiring. Parses the options, sets up logging, and builds the
 * loop, the broker link, the upstream (one ComfyUI server: bridge/
 * upstream.h) and Home Assistant (bridge/ha_link.h); connects their
 * callbacks, runs the loop, and tears everything down. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "err.h"
#include "ha_link.h"
#include "log.h"
#include "loop.h"
#include "mqtt_link.h"
#include "topic.h"
#include "upstream.h"

#define SHUTDOWN_FLUSH_MS 1500

struct app {
	struct config cfg;
	char comfy_public[600];
	struct loop *loop;
	struct mqtt_link *mqtt;
	struct upstream *up;
	struct ha_link *ha; /* NULL without --ha-discovery */
	struct loop_timer *shutdown_timer;
	bool stopping;
};

/* The broker settings every link of this process shares. */
static void
broker_cfg(const struct config *c, struct mqtt_link_cfg *mc)
{
	*mc = (struct mqtt_link_cfg) {
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
		.max_packet = (uint32_t) c->mqtt_max_packet,
	};
}

static void
mqtt_connected(void *ud, bool session_present)
{
	struct app *a = ud;
	upstream_on_broker_connected(
	    a->up, session_present, mqtt_link_max_packet(a->mqtt));
	if (a->ha)
		ha_link_on_connected(a->ha);
}

/* Home Assistant's image entity follows the retained preview's type. */
static void
publish(void *ud, const struct out_msg *m)
{
	struct app *a = ud;
	const char *ct = m->props.content_type;
	mqtt_link_publish(a->mqtt, m);
	if (a->ha != NULL && m->retain && ct && strncmp(ct, "image/", 6) == 0)
		ha_link_on_preview(a->ha, ct);
}

static void
broker_health(void *ud, struct engine_health_io *h)
{
	struct mqtt_link_stats s;
	mqtt_link_get_stats(((struct app *) ud)->mqtt, &s);
	h->mqtt_connected = s.connected;
	h->mqtt_reconnects = s.connects > 0 ? s.connects - 1 : 0;
	memcpy(h->published, s.published, sizeof(h->published));
	memcpy(h->dropped, s.dropped, sizeof(h->dropped));
	memcpy(h->refused, s.refused_by, sizeof(h->refused));
	h->queue_depth = s.queued;
	h->queue_bytes = s.queued_bytes;
}

/* --- shutdown --- */

static void
finish_shutdown(void *ud)
{
	struct app *a = ud;
	struct out_msg offline;
	upstream_offline_msg(a->up, &offline);
	mqtt_link_shutdown(a->mqtt, &offline, SHUTDOWN_FLUSH_MS);
	loop_quit(a->loop);
}

static void
on_signal(void *ud, int signo)
{
	struct app *a = ud;
	if (a->stopping)
		_exit(1);
	a->stopping = true;
	log_info("bridge", "signal %d: shutting down", signo);
	/* a second signal during the (blocking) flush exits at once */
	loop_exit_on_signal(a->loop);
	upstream_stop(a->up, "Shutting down...");
	/* let the loop send the close frame, then flush and leave */
	loop_timer_arm(a->shutdown_timer, 50);
}

/* --- set-up --- */

static int
create_link(struct app *a)
{
	const struct config *c = &a->cfg;
	char will_topic[TOPIC_MAX];
	struct mqtt_link_cfg mc;
	int rc = topic_join(will_topic, sizeof(will_topic), c->prefix,
	    c->instance, "bridge/state");
	if (rc < 0)
		return rc;
	broker_cfg(c, &mc);
	mc.will_topic = will_topic;
	mc.will_payload = "offline";
	mc.window = 1000;
	mc.queue_max_messages = c->queue_max_messages;
	mc.queue_max_bytes = c->queue_max_bytes;
	struct mqtt_link_cb mcb = { .on_connected = mqtt_connected };
	/* mqtt_link_create logs what failed (e.g. which --tls-* file) */
	return mqtt_link_create(a->loop, &mc, &mcb, a, &a->mqtt);
}

static int
setup(struct app *a)
{
	const struct config *c = &a->cfg;
	a->loop = loop_create_tls(c->comfy.tls);
	if (!a->loop)
		return BR_EIO;
	loop_set_signal_cb(a->loop, on_signal, a);
	a->shutdown_timer = loop_timer_create(a->loop, finish_shutdown, a);
	if (!a->shutdown_timer)
		return BR_ENOMEM;
	int rc = create_link(a);
	if (rc == 0 && c->ha_discovery) {
		struct discovery_cfg dc;
		ha_link_cfg(c, c->instance, a->comfy_public, &dc);
		rc = ha_link_create(a->loop, a->mqtt, &dc, &a->ha);
		if (rc == 0)
			rc = mqtt_link_subscribe(a->mqtt,
			    ha_link_status_topic(a->ha), ha_link_on_status,
			    a->ha);
	}
	struct upstream_cfg uc;
	upstream_cfg_from_config(c, &uc);
	struct upstream_out out = { publish, broker_health, a };
	/* the engine publishes its start-up state into the link's queue */
	if (rc == 0)
		rc = upstream_create(a->loop, &uc, &out, &a->up);
	/* the retained states an earlier run left: queued or running ones
	 * are followed again (their end is read from history); finished
	 * ones are cleared when their TTL passes (MQTT 3.1.1 has no message
	 * expiry) */
	if (rc == 0)
		rc = mqtt_link_subscribe(a->mqtt, upstream_state_filter(a->up),
		    upstream_on_retained_state, a->up);
	/* what an earlier run accounted for in history */
	if (rc == 0)
		rc = mqtt_link_subscribe(a->mqtt, upstream_cursor_topic(a->up),
		    upstream_on_retained_state, a->up);
	if (rc == 0)
		rc = mqtt_link_start(a->mqtt);
	if (rc == 0)
		rc = upstream_start(a->up);
	return rc;
}

static void
teardown(struct app *a)
{
	upstream_destroy(a->up);
	ha_link_destroy(a->ha);
	if (a->shutdown_timer)
		loop_timer_destroy(a->shutdown_timer);
	if (a->mqtt)
		mqtt_link_destroy(a->mqtt);
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
	if (rc != CONFIG_OK) { /* or --help / --version printed */
		if (rc != CONFIG_EXIT_OK)
			fprintf(stderr, "comfy2mqtt: %s\n", err);
		config_free(&app.cfg);
		return rc == CONFIG_EXIT_OK ? 0 : rc;
	}
	log_setup(app.cfg.log_level, app.cfg.log_format);
	config_log_warnings(&app.cfg);
	url_format_public(
	    &app.cfg.comfy, app.comfy_public, sizeof(app.comfy_public));
	log_info("bridge",
	    "comfy2mqtt %s: ComfyUI %s, instance %s, client id %s",
	    C2M_VERSION, app.comfy_public, app.cfg.instance,
	    app.cfg.client_id);

	if (app.cfg.ha_remove) {
		/* the broker only, never ComfyUI */
		struct discovery_cfg dc;
		struct mqtt_link_cfg mc;
		ha_link_cfg(&app.cfg, app.cfg.instance, app.comfy_public, &dc);
		broker_cfg(&app.cfg, &mc);
		exit_code = ha_link_remove(&mc, &dc);
	} else if ((rc = setup(&app)) != 0) {
		log_error("bridge", "start-up failed: %s", br_strerror(rc));
		exit_code = 1;
	} else {
		loop_run(app.loop);
	}
	teardown(&app);
	return exit_code;
}
