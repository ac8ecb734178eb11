/* See instance.h. The upstream publishes through the instance into its
 * link; the link's connection reaches the upstream and the add-ons. */
#include "instance.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "command_link.h"
#include "err.h"
#include "ha_link.h"
#include "log.h"
#include "topic.h"
#include "upstream.h"

/* How long after each connection the retained states and cursor are read
 * back with MQTT 3.1.1; then their subscriptions end. */
#define READBACK_MS 10000
/* With --commands, the largest packet the bridge takes is four times the
 * command limit (at least RX_PACKET_FLOOR, for the retained states read
 * back) plus RX_PACKET_SLACK for the topic and properties. */
#define RX_PACKET_FLOOR (1024u * 1024)
#define RX_PACKET_SLACK (64u * 1024)

struct instance {
	const struct config *cfg;
	int server;
	char comfy_public[600];
	struct mqtt_link *mqtt;
	struct upstream *up;

	/* Add-ons: features of this one instance on its upstream and its
	 * link, created in attach_addons() and destroyed in
	 * instance_destroy(). Each is NULL when its option is off. */
	struct ha_link *ha; /* --ha-discovery */
	struct command_link *cmd; /* --commands */

	/* the read-back of what earlier runs left retained: subscribed at
	 * every connection. With MQTT 3.1.1 it ends after READBACK_MS, as
	 * the broker also sends back every state this run publishes while
	 * it lasts; with MQTT 5 it stays (no local: nothing comes back, and
	 * a state read late after a stall is still read) */
	struct loop_timer *readback_end;
	bool readback;
};

/* the retained states an earlier run left: queued or running ones are
 * followed again (their end is read from history); finished ones are
 * cleared when their TTL passes (MQTT 3.1.1 has no message expiry). And
 * what an earlier run accounted for in history (its cursor). */
static int
readback_start(struct instance *in)
{
	int rc = mqtt_link_subscribe(in->mqtt, upstream_state_filter(in->up),
	    upstream_on_retained_state, in->up);
	if (rc == 0)
		rc = mqtt_link_subscribe(in->mqtt,
		    upstream_cursor_topic(in->up), upstream_on_retained_state,
		    in->up);
	in->readback = rc == 0;
	return rc;
}

static void
readback_stop(void *ud)
{
	struct instance *in = ud;
	if (!in->readback)
		return;
	in->readback = false;
	mqtt_link_unsubscribe(in->mqtt, upstream_state_filter(in->up),
	    upstream_on_retained_state, in->up);
	mqtt_link_unsubscribe(in->mqtt, upstream_cursor_topic(in->up),
	    upstream_on_retained_state, in->up);
}

void
instance_broker_cfg(
    const struct config *c, int server, struct mqtt_link_cfg *mc)
{
	*mc = (struct mqtt_link_cfg) {
		.host = c->broker.host,
		.port = c->broker.port,
		.tls = c->broker.tls,
		.tls_opts
		= { c->tls_ca, c->tls_cert, c->tls_key, c->tls_insecure },
		.client_id = c->server[server].mqtt_client_id,
		.username = c->mqtt_username,
		.password = c->mqtt_password,
		.protocol = c->mqtt_protocol,
		.keepalive_s = c->mqtt_keepalive,
		.max_packet = (uint32_t) c->mqtt_max_packet,
	};
	/* a giant command is dropped by the broker, not allocated here; one
	 * up to four times --command-max-bytes still arrives, so its sender
	 * gets a too_large answer */
	if (c->commands && c->mqtt_protocol == 5) {
		size_t rx = c->command_max_bytes <= SIZE_MAX / 4
		    ? 4 * c->command_max_bytes
		    : SIZE_MAX;
		if (rx < RX_PACKET_FLOOR)
			rx = RX_PACKET_FLOOR;
		mc->rx_max_packet = rx < UINT32_MAX - RX_PACKET_SLACK
		    ? (uint32_t) (rx + RX_PACKET_SLACK)
		    : UINT32_MAX;
	}
}

static void
mqtt_connected(void *ud, bool session_present)
{
	struct instance *in = ud;
	upstream_on_broker_connected(
	    in->up, session_present, mqtt_link_max_packet(in->mqtt));
	/* a broker restarted from an older database may hold older states */
	if (!in->readback && readback_start(in) != 0)
		log_warn("bridge", "cannot read back the retained states");
	if (in->readback && in->cfg->mqtt_protocol != 5)
		loop_timer_arm(in->readback_end, READBACK_MS);
	if (in->ha)
		ha_link_on_connected(in->ha);
}

/* Home Assistant's image entity follows the retained preview's type. */
static void
publish(void *ud, const struct out_msg *m)
{
	struct instance *in = ud;
	const char *ct = m->props.content_type;
	mqtt_link_publish(in->mqtt, m);
	if (in->ha != NULL && m->retain && ct && strncmp(ct, "image/", 6) == 0)
		ha_link_on_preview(in->ha, ct);
}

/* The broker is slower than ComfyUI: read ComfyUI no faster than it
 * takes messages (bridge/README.md#backpressure). */
static void
mqtt_backlog(void *ud, bool high)
{
	struct instance *in = ud;
	upstream_pause(in->up, high);
}

static void
broker_health(void *ud, struct engine_health_io *h)
{
	struct instance *in = ud;
	struct mqtt_link_stats s;
	mqtt_link_get_stats(in->mqtt, &s);
	h->mqtt_connected = s.connected;
	h->mqtt_reconnects = s.connects > 0 ? s.connects - 1 : 0;
	memcpy(h->published, s.published, sizeof(h->published));
	memcpy(h->dropped, s.dropped, sizeof(h->dropped));
	memcpy(h->refused, s.refused_by, sizeof(h->refused));
	h->queue_depth = s.queued;
	h->queue_bytes = s.queued_bytes;
	if (in->cmd != NULL) {
		h->write_addons = command_link_write_health;
		h->addons_ud = in->cmd;
	}
}

/* The instance's own session: its will marks this instance, and only it,
 * offline when the process dies. */
static int
create_link(struct instance *in, struct loop *l)
{
	const struct config *c = in->cfg;
	char will_topic[TOPIC_MAX];
	struct mqtt_link_cfg mc;
	int rc = topic_join(will_topic, sizeof(will_topic), c->prefix,
	    c->server[in->server].instance, "bridge/state");
	if (rc < 0)
		return rc;
	instance_broker_cfg(c, in->server, &mc);
	mc.will_topic = will_topic;
	mc.will_payload = "offline";
	mc.window = 1000;
	mc.queue_max_messages = c->queue_max_messages;
	mc.queue_max_bytes = c->queue_max_bytes;
	struct mqtt_link_cb mcb
	    = { .on_connected = mqtt_connected, .on_backlog = mqtt_backlog };
	/* mqtt_link_create logs what failed (e.g. which --tls-* file) */
	return mqtt_link_create(l, &mc, &mcb, in, &in->mqtt);
}

/* Per-instance features attach here, each to in->up and in->mqtt. */
static int
attach_addons(struct instance *in, struct loop *l)
{
	const struct config *c = in->cfg;
	int rc = 0;
	if (c->ha_discovery) {
		struct discovery_cfg dc;
		ha_link_cfg(
		    c, c->server[in->server].instance, in->comfy_public, &dc);
		rc = ha_link_create(l, in->mqtt, &dc, &in->ha);
		if (rc == 0)
			rc = mqtt_link_subscribe(in->mqtt,
			    ha_link_status_topic(in->ha), ha_link_on_status,
			    in->ha);
	}
	/* the bridge's own answers on command/response are ignored there */
	if (rc == 0 && c->commands) {
		rc = command_link_create(
		    l, in->mqtt, c, in->server, in->comfy_public, &in->cmd);
		if (rc == 0)
			rc = mqtt_link_subscribe_meta(in->mqtt,
			    command_link_filter(in->cmd),
			    command_link_on_message, in->cmd);
	}
	return rc;
}

int
instance_create(struct loop *l, const struct config *c, int server,
    const char *print_prefix, struct instance **out)
{
	*out = NULL;
	struct instance *in = calloc(1, sizeof(*in));
	if (in == NULL)
		return BR_ENOMEM;
	in->cfg = c;
	in->server = server;
	const struct config_server *s = &c->server[server];
	url_format_public(
	    &s->comfy, in->comfy_public, sizeof(in->comfy_public));
	log_info("bridge",
	    "instance %s: ComfyUI %s, client id %s, MQTT client "
	    "id %s",
	    s->instance, in->comfy_public, s->client_id, s->mqtt_client_id);
	int rc = create_link(in, l);
	if (rc == 0)
		rc = attach_addons(in, l);
	struct upstream_cfg uc;
	upstream_cfg_from_config(c, server, &uc);
	uc.print_prefix = print_prefix;
	struct upstream_out uo = { publish, broker_health, in };
	/* the engine publishes its start-up state into the link's queue */
	if (rc == 0)
		rc = upstream_create(l, &uc, &uo, &in->up);
	/* subscribed before the first connect, so the first CONNACK
	 * subscribes them */
	if (rc == 0)
		rc = readback_start(in);
	if (rc == 0
	    && (in->readback_end = loop_timer_create(l, readback_stop, in))
	        == NULL)
		rc = BR_ENOMEM;
	/* a prompt command's queued event carries its number */
	if (rc == 0 && in->cmd != NULL)
		command_link_on_accepted(
		    in->cmd, upstream_on_submitted, in->up);
	if (rc != 0) {
		instance_destroy(in);
		return rc;
	}
	*out = in;
	return 0;
}

int
instance_start(struct instance *in)
{
	int rc = mqtt_link_start(in->mqtt);
	return rc != 0 ? rc : upstream_start(in->up);
}

void
instance_stop(struct instance *in, const char *line)
{
	/* before instance_shutdown: its flush publishes the answers */
	if (in->cmd != NULL)
		command_link_stop(in->cmd);
	upstream_stop(in->up, line);
}

void
instance_shutdown(struct instance *in, int64_t deadline)
{
	struct out_msg offline;
	int64_t left = deadline - loop_mono_ms();
	upstream_offline_msg(in->up, &offline);
	mqtt_link_shutdown(in->mqtt, &offline, left > 0 ? (int) left : 0);
}

void
instance_destroy(struct instance *in)
{
	if (in == NULL)
		return;
	if (in->readback_end)
		loop_timer_destroy(in->readback_end);
	upstream_destroy(in->up);
	ha_link_destroy(in->ha);
	command_link_destroy(in->cmd);
	if (in->mqtt)
		mqtt_link_destroy(in->mqtt);
	free(in);
}
