/* discovery: the Home Assistant device discovery message parses with the
 * project's JSON module, has every entity Home Assistant is promised (the
 * image only with previews), points every entity at the bridge's topics, and
 * ids stay inside HA's [A-Za-z0-9_-] alphabet. */
#include <stdbool.h>
#include <stdint.h>

#include "discovery.h"
#include "err.h"
#include "ha.h"
#include "json.h"
#include "jsonw.h"
#include "test.h"

static char buf[16384];
static struct json_parser *parser;

static struct discovery_cfg
cfg(bool previews)
{
	struct discovery_cfg c = {
		.ha_prefix = "homeassistant",
		.prefix = "comfyui",
		.instance = "gpu1",
		.version = "0.1.0",
		.comfyui_url = "http://127.0.0.1:8188",
		.support_url = "https://example.org/comfy2mqtt",
		.previews = previews,
	};
	return c;
}

/* Writes c's payload into buf and parses it into d; returns its length. */
static size_t
build(const struct discovery_cfg *c, struct json_doc *d)
{
	struct jsonw w;
	jsonw_init(&w, buf, sizeof(buf));
	CHECK_INT(discovery_write(c, &w), 0);
	CHECK_INT(json_parse(parser, buf, w.len, true, d), BR_OK);
	return w.len;
}

static bool
str_at(const struct json_doc *d, int obj, const char *key, const char *want)
{
	int t = json_obj_get(d, obj, key);
	return t >= 0 && json_str_eq(d, t, want);
}

/* Component value token whose platform is p and unique id ends in
 * suffix, or -1. */
static int
component(const struct json_doc *d, const char *suffix, const char *p)
{
	int comps = json_obj_get(d, 0, "components");
	if (comps < 0)
		return -1;
	char want[128];
	snprintf(want, sizeof(want), "comfyui_gpu1_%s", suffix);
	int t = json_obj_get(d, comps, want);
	if (t < 0 || !str_at(d, t, "platform", p)
	    || !str_at(d, t, "unique_id", want))
		return -1;
	return t;
}

static void
test_topic(void)
{
	char t[256];
	struct discovery_cfg c = cfg(false);
	int n = discovery_topic(&c, t, sizeof(t));
	CHECK_STR(t, "homeassistant/device/comfyui_gpu1/config");
	CHECK_INT(n, strlen("homeassistant/device/comfyui_gpu1/config"));

	/* '/' in the prefix and the topic alphabet's '.' and ':' are not HA
	 * id characters */
	c.prefix = "lab/comfy";
	c.instance = "gpu.1:a-b_c";
	c.ha_prefix = "ha";
	discovery_topic(&c, t, sizeof(t));
	CHECK_STR(t, "ha/device/lab_comfy_gpu_1_a-b_c/config");

	CHECK_INT(discovery_topic(&c, t, 10), BR_ETRUNC);
	c.instance = "";
	CHECK_INT(discovery_topic(&c, t, sizeof(t)), BR_EINVAL);
	c.instance = NULL;
	CHECK_INT(discovery_topic(&c, t, sizeof(t)), BR_EINVAL);
}

static void
test_device_origin_availability(void)
{
	struct json_doc d;
	struct discovery_cfg c = cfg(false);
	build(&c, &d);

	int dev = json_obj_get(&d, 0, "device");
	CHECK(json_is_object(&d, dev));
	CHECK(str_at(&d, dev, "name", "ComfyUI gpu1"));
	CHECK(str_at(&d, dev, "sw_version", "0.1.0"));
	CHECK(str_at(&d, dev, "configuration_url", "http://127.0.0.1:8188"));
	CHECK(json_obj_get(&d, dev, "manufacturer") >= 0);
	CHECK(json_obj_get(&d, dev, "model") >= 0);
	int ids = json_obj_get(&d, dev, "identifiers");
	CHECK(json_is_array(&d, ids) && json_size(&d, ids) == 1);
	CHECK(json_str_eq(&d, json_child(&d, ids, 0), "comfyui_gpu1"));

	int o = json_obj_get(&d, 0, "origin");
	CHECK(str_at(&d, o, "name", "comfy2mqtt"));
	CHECK(str_at(&d, o, "sw_version", "0.1.0"));
	CHECK(str_at(&d, o, "support_url", "https://example.org/comfy2mqtt"));

	CHECK(str_at(&d, 0, "availability_mode", "all"));
	int av = json_obj_get(&d, 0, "availability");
	CHECK(json_is_array(&d, av) && json_size(&d, av) == 2);
	static const char *const topics[]
	    = { "comfyui/gpu1/bridge/state", "comfyui/gpu1/upstream/state" };
	for (int i = 0; i < 2 && json_is_array(&d, av); i++) {
		int e = json_child(&d, av, i);
		CHECK(str_at(&d, e, "topic", topics[i]));
		CHECK(str_at(&d, e, "payload_available", "online"));
		CHECK(str_at(&d, e, "payload_not_available", "offline"));
	}

	/* optional URLs are left out rather than written empty */
	c.comfyui_url = "";
	c.support_url = NULL;
	build(&c, &d);
	CHECK(json_obj_get(
	          &d, json_obj_get(&d, 0, "device"), "configuration_url")
	    < 0);
	CHECK(json_obj_get(&d, json_obj_get(&d, 0, "origin"), "support_url")
	    < 0);
}

static void
test_entities(void)
{
	struct json_doc d;
	struct discovery_cfg c = cfg(false);
	build(&c, &d);

	int comps = json_obj_get(&d, 0, "components");
	CHECK(json_is_object(&d, comps));
	CHECK_INT(json_size(&d, comps), 7);

	int t = component(&d, "queue_remaining", "sensor");
	CHECK(t >= 0);
	CHECK(str_at(&d, t, "state_topic", "comfyui/gpu1/queue"));
	CHECK(str_at(
	    &d, t, "value_template", "{{ value_json.queue_remaining }}"));
	CHECK(str_at(&d, t, "state_class", "measurement"));

	t = component(&d, "running", "binary_sensor");
	CHECK(t >= 0);
	CHECK(str_at(&d, t, "state_topic", "comfyui/gpu1/queue"));
	CHECK(json_obj_get(&d, t, "value_template") >= 0);

	t = component(&d, "progress", "sensor");
	CHECK(t >= 0);
	CHECK(str_at(&d, t, "state_topic", "comfyui/gpu1/current"));
	CHECK(str_at(&d, t, "unit_of_measurement", "%"));

	t = component(&d, "current_prompt", "sensor");
	CHECK(t >= 0);
	CHECK(str_at(&d, t, "state_topic", "comfyui/gpu1/current"));
	CHECK(str_at(&d, t, "json_attributes_topic", "comfyui/gpu1/current"));

	t = component(&d, "last_duration", "sensor");
	CHECK(t >= 0);
	CHECK(str_at(&d, t, "state_topic", "comfyui/gpu1/current"));
	CHECK(str_at(&d, t, "unit_of_measurement", "s"));
	CHECK(str_at(&d, t, "device_class", "duration"));

	t = component(&d, "last_error", "sensor");
	CHECK(t >= 0);
	CHECK(str_at(&d, t, "state_topic", "comfyui/gpu1/current"));
	CHECK(str_at(&d, t, "entity_category", "diagnostic"));

	t = component(&d, "completion", "event");
	CHECK(t >= 0);
	CHECK(str_at(&d, t, "state_topic", "comfyui/gpu1/completion"));
	int et = json_obj_get(&d, t, "event_types");
	CHECK(json_is_array(&d, et) && json_size(&d, et) == 5);
	static const char *const types[]
	    = { "success", "error", "interrupted", "cancelled", "lost" };
	for (int i = 0; i < 5 && json_is_array(&d, et); i++)
		CHECK(json_str_eq(&d, json_child(&d, et, i), types[i]));

	CHECK(component(&d, "preview", "image") < 0);
}

static void
test_preview_only_with_previews(void)
{
	struct json_doc d;
	struct discovery_cfg c = cfg(true);
	build(&c, &d);
	CHECK_INT(json_size(&d, json_obj_get(&d, 0, "components")), 8);
	int t = component(&d, "preview", "image");
	CHECK(t >= 0);
	CHECK(str_at(&d, t, "image_topic", "comfyui/gpu1/preview"));
	CHECK(str_at(&d, t, "content_type", "image/jpeg"));
	/* the other seven are still there */
	CHECK(component(&d, "completion", "event") >= 0);
	CHECK(component(&d, "queue_remaining", "sensor") >= 0);
}

/* With --commands three buttons appear, each publishing its press on its
 * verb's command topic; without, none. Availability stays device-wide. */
static void
test_buttons_only_with_commands(void)
{
	static const char *const want[][4] = {
		{ "interrupt", "Interrupt", "comfyui/gpu1/command/interrupt",
		    "{}" },
		{ "clear_queue", "Clear queue", "comfyui/gpu1/command/clear",
		    "{}" },
		{ "free_memory", "Free memory", "comfyui/gpu1/command/free",
		    "{\"unload_models\":true,\"free_memory\":true}" },
	};
	struct json_doc d;
	struct discovery_cfg c = cfg(false);
	build(&c, &d);
	CHECK_INT(json_size(&d, json_obj_get(&d, 0, "components")), 7);
	for (int i = 0; i < 3; i++)
		CHECK(component(&d, want[i][0], "button") < 0);

	c.commands = true;
	build(&c, &d);
	CHECK_INT(json_size(&d, json_obj_get(&d, 0, "components")), 10);
	for (int i = 0; i < 3; i++) {
		int t = component(&d, want[i][0], "button");
		CHECK(t >= 0);
		CHECK(str_at(&d, t, "name", want[i][1]));
		CHECK(str_at(&d, t, "command_topic", want[i][2]));
		CHECK(str_at(&d, t, "payload_press", want[i][3]));
		bool retain = true;
		CHECK_INT(
		    json_get_bool(&d, json_obj_get(&d, t, "retain"), &retain),
		    0);
		CHECK(!retain);
	}
	/* the device-level availability and QoS cover the buttons too */
	CHECK(json_obj_get(&d, 0, "availability") >= 0);
	CHECK(component(&d, "completion", "event") >= 0);
	int a = json_obj_get(&d, 0, "availability_mode");
	CHECK(a >= 0 && json_str_eq(&d, a, "all"));
	/* everything on still fits ha.c's payload buffer (8 KiB) */
	c.previews = true;
	CHECK(build(&c, &d) < 8192);
}

/* Every unique id differs and every one is built from HA's id alphabet,
 * also for a prefix and instance that are not. */
static void
test_unique_ids(void)
{
	struct json_doc d;
	struct discovery_cfg c = cfg(true);
	c.prefix = "lab/comfy";
	c.instance = "gpu.1";
	build(&c, &d);
	int comps = json_obj_get(&d, 0, "components");
	int n = json_size(&d, comps);
	char seen[8][128];
	CHECK_INT(n, 8);
	for (int i = 0; i < n && i < 8; i++) {
		int k = json_child(&d, comps, i);
		int uid = json_obj_get(&d, k + 1, "unique_id");
		CHECK(json_str_get(&d, uid, seen[i], sizeof(seen[i])) > 0);
		CHECK(json_str_get(&d, k, buf + 15000, 1000) > 0);
		CHECK_STR(buf + 15000, seen[i]);
		CHECK(strncmp(seen[i], "lab_comfy_gpu_1_", 16) == 0);
		CHECK(
		    strspn(seen[i],
		        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
		        "0123456789_-")
		    == strlen(seen[i]));
		for (int j = 0; j < i; j++)
			CHECK(strcmp(seen[i], seen[j]) != 0);
	}
	/* topics keep the real prefix and instance */
	int t = json_obj_get(&d,
	    json_obj_get(&d, comps, "lab_comfy_gpu_1_preview"), "image_topic");
	CHECK(t >= 0 && json_str_eq(&d, t, "lab/comfy/gpu.1/preview"));
}

/* Hostile-looking text (quotes in the instance) is escaped, and a
 * too-small buffer is reported instead of overflowing. */
static void
test_escaping_and_truncation(void)
{
	struct json_doc d;
	struct discovery_cfg c = cfg(false);
	c.comfyui_url = "http://h/\"x\"\\";
	build(&c, &d);
	CHECK(str_at(&d, json_obj_get(&d, 0, "device"), "configuration_url",
	    "http://h/\"x\"\\"));

	struct jsonw w;
	char small[512];
	memset(small, 'Z', sizeof(small));
	jsonw_init(&w, small, 300);
	CHECK_INT(discovery_write(&c, &w), BR_ETRUNC);
	CHECK(small[300] == 'Z');
	c.version = NULL;
	jsonw_init(&w, buf, sizeof(buf));
	CHECK_INT(discovery_write(&c, &w), BR_EINVAL);
}

/* ---- ha.h: announce, re-announce, clear ---- */

struct ha_capture {
	int published;
	char topic[256];
	char payload[8192];
	size_t len;
	bool retain;
	int qos;
	int armed; /* arm_timer calls */
	int64_t delay_ms;
};

static void
cap_publish(void *ud, const struct out_msg *m)
{
	struct ha_capture *c = ud;
	c->published++;
	snprintf(c->topic, sizeof(c->topic), "%s", m->topic);
	c->len = m->len;
	snprintf(c->payload, sizeof(c->payload), "%.*s", (int) m->len,
	    (const char *) m->payload);
	c->retain = m->retain;
	c->qos = m->qos;
}

static void
cap_arm(void *ud, int64_t delay_ms)
{
	struct ha_capture *c = ud;
	c->armed++;
	c->delay_ms = delay_ms;
}

static struct ha *
make_ha(struct ha_capture *cap)
{
	struct discovery_cfg c = cfg(false);
	struct ha_io io = { cap_publish, cap_arm, cap };
	struct ha *h = NULL;
	memset(cap, 0, sizeof(*cap));
	CHECK_INT(ha_create(&c, &io, &h), 0);
	return h;
}

static void
test_ha_topics_and_announce(void)
{
	struct ha_capture cap;
	struct ha *h = make_ha(&cap);
	if (h == NULL)
		return;
	CHECK_STR(
	    ha_discovery_topic(h), "homeassistant/device/comfyui_gpu1/config");
	CHECK_STR(ha_status_topic(h), "homeassistant/status");
	ha_on_broker_connected(h);
	CHECK_INT(cap.published, 1);
	CHECK_STR(cap.topic, "homeassistant/device/comfyui_gpu1/config");
	CHECK(cap.len > 1000 && cap.retain && cap.qos == 1);

	struct out_msg m;
	ha_clear_msg(h, &m);
	CHECK_STR(m.topic, ha_discovery_topic(h));
	CHECK(m.len == 0 && m.retain && m.qos == 1);
	ha_destroy(h);

	struct discovery_cfg bad = cfg(false);
	bad.ha_prefix = "";
	struct ha_io io = { cap_publish, cap_arm, &cap };
	CHECK_INT(ha_create(&bad, &io, &h), BR_EINVAL);
	CHECK(h == NULL);
}

static void
test_ha_online_burst(void)
{
	struct ha_capture cap;
	struct ha *h = make_ha(&cap);
	if (h == NULL)
		return;
	/* anything but exactly "online" is ignored */
	ha_on_status(h, "offline", 7, 1000);
	ha_on_status(h, "online ", 7, 1000);
	CHECK_INT(cap.published, 0);
	ha_on_status(h, "online", 6, 1000);
	CHECK_INT(cap.published, 1);
	/* the rest of the burst: one timer for the window's end */
	ha_on_status(h, "online", 6, 3000);
	ha_on_status(h, "online", 6, 4000);
	CHECK_INT(cap.published, 1);
	CHECK_INT(cap.armed, 1);
	CHECK_INT((int) cap.delay_ms, HA_REANNOUNCE_WINDOW_MS - 2000);
	/* a timer that fires early is armed again for the rest */
	ha_on_timer(h, 10000);
	CHECK_INT(cap.published, 1);
	CHECK_INT(cap.armed, 2);
	CHECK_INT((int) cap.delay_ms, 1000);
	ha_on_timer(h, 11000);
	CHECK_INT(cap.published, 2);
	/* nothing deferred: the timer does nothing */
	ha_on_timer(h, 12000);
	CHECK_INT(cap.published, 2);
	CHECK_INT(cap.armed, 2);
	ha_destroy(h);
}

/* The image entity's one content type follows the previews: a change
 * re-announces, the same type again does not. */
static void
test_ha_preview_type_follows(void)
{
	struct ha_capture cap;
	struct discovery_cfg c = cfg(true);
	struct ha_io io = { cap_publish, cap_arm, &cap };
	struct ha *h = NULL;
	memset(&cap, 0, sizeof(cap));
	CHECK_INT(ha_create(&c, &io, &h), 0);
	if (h == NULL)
		return;
	ha_on_broker_connected(h);
	CHECK(strstr(cap.payload, "\"content_type\":\"image/jpeg\"") != NULL);
	ha_on_preview(h, "image/jpeg");
	CHECK_INT(cap.published, 1);
	ha_on_preview(h, "image/png");
	CHECK_INT(cap.published, 2);
	CHECK(strstr(cap.payload, "\"content_type\":\"image/png\"") != NULL);
	CHECK(strstr(cap.payload, "image/jpeg") == NULL);
	ha_on_preview(h, "image/png");
	CHECK_INT(cap.published, 2);
	/* a reconnect announces the type in force */
	ha_on_broker_connected(h);
	CHECK(strstr(cap.payload, "\"content_type\":\"image/png\"") != NULL);
	ha_destroy(h);

	/* without previews there is no image entity to follow */
	struct ha *n = make_ha(&cap);
	if (n == NULL)
		return;
	ha_on_preview(n, "image/png");
	CHECK_INT(cap.published, 0);
	ha_destroy(n);
}

int
main(void)
{
	parser = json_parser_create(2048);
	RUN(test_topic);
	RUN(test_device_origin_availability);
	RUN(test_entities);
	RUN(test_preview_only_with_previews);
	RUN(test_buttons_only_with_commands);
	RUN(test_unique_ids);
	RUN(test_escaping_and_truncation);
	RUN(test_ha_topics_and_announce);
	RUN(test_ha_online_burst);
	RUN(test_ha_preview_type_follows);
	json_parser_destroy(parser);
	TEST_MAIN_END();
}
