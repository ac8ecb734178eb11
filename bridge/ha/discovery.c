/* Home Assistant device-based discovery. One retained
 * message describes the whole ComfyUI instance; HA's own documentation
 * (integrations/mqtt, device discovery payload) lists the keys used here.
 * Full key names are used throughout: HA accepts them everywhere, and they
 * keep the payload readable for people debugging with mosquitto_sub. */
#include "discovery.h"

#include <stdio.h>
#include <string.h>

#include "err.h"
#include "jsonw.h"
#include "topic.h"

/* "<prefix>_<instance>" after mapping to HA's id alphabet. */
#define NODE_ID_MAX   256
#define UNIQUE_ID_MAX (NODE_ID_MAX + 32)

/* State templates. value_json is the parsed payload of the state topic;
 * each template must render something HA accepts even for payloads that
 * lack the field (a prompt that has not started, an error without an
 * exception). "None" is HA's "unknown" for numeric sensors. */
static const char tpl_queue_remaining[] = "{{ value_json.queue_remaining }}";
static const char tpl_running[]
    = "{{ 'ON' if value_json.running | length > 0 else 'OFF' }}";
static const char tpl_progress[]
    = "{% if value_json.status == 'running' and value_json.progress"
      " and value_json.progress.percent is not none %}"
      "{{ value_json.progress.percent }}{% else %}0{% endif %}";
/* HA rejects sensor states longer than 255 characters. */
static const char tpl_current_prompt[] = "{{ value_json.prompt_id[:255] }}";
/* Last duration and last error read the retained current snapshot, so they
 * are back after a Home Assistant restart; while a prompt runs they keep
 * their state (entity_id is the entity itself). */
static const char tpl_last_duration[]
    = "{% if value_json.finished_at is not none"
      " and value_json.duration_ms is not none %}"
      "{{ (value_json.duration_ms / 1000) | round(3) }}"
      "{% else %}{{ states(entity_id) | float(None) }}{% endif %}";
static const char tpl_last_error[]
    = "{% if value_json.finished_at is none %}{{ states(entity_id) }}"
      "{% elif value_json.status == 'error' and value_json.error %}"
      "{{ ((value_json.error.get('exception_type') or 'error') ~ ': ' ~"
      " (value_json.error.get('exception_message') or ''))[:255] }}"
      "{% else %}none{% endif %}";

/* The command buttons: what each press publishes on
 * <p>/<i>/command/<verb> (the calls they make:
 * bridge/README.md#comfyui-post-api). */
static const struct button {
	const char *object, *name, *verb, *press, *icon;
} buttons[] = {
	{ "interrupt", "Interrupt", "interrupt", "{}", "mdi:stop-circle" },
	{ "clear_queue", "Clear queue", "clear", "{}", "mdi:playlist-remove" },
	{ "free_memory", "Free memory", "free",
	    "{\"unload_models\":true,\"free_memory\":true}", "mdi:memory" },
};

static bool
ha_id_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
	    || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

/* HA ids allow only [A-Za-z0-9_-]: the instance may also hold '.' and
 * ':' (topic alphabet) and the prefix '/'. */
int
discovery_device_id(
    const char *prefix, const char *instance, char *dst, size_t cap)
{
	int n = snprintf(dst, cap, "%s_%s", prefix, instance);
	if (n < 0 || (size_t) n >= cap)
		return BR_ETRUNC;
	for (int i = 0; i < n; i++)
		if (!ha_id_char((unsigned char) dst[i]))
			dst[i] = '_';
	return n;
}

static int
node_id(const struct discovery_cfg *c, char *dst, size_t cap)
{
	return discovery_device_id(c->prefix, c->instance, dst, cap);
}

static bool
cfg_valid(const struct discovery_cfg *c)
{
	return c != NULL && c->ha_prefix != NULL && c->prefix != NULL
	    && c->instance != NULL && c->version != NULL
	    && c->ha_prefix[0] != '\0' && c->prefix[0] != '\0'
	    && c->instance[0] != '\0';
}

int
discovery_topic(const struct discovery_cfg *c, char *topic, size_t cap)
{
	char node[NODE_ID_MAX];
	if (!cfg_valid(c))
		return BR_EINVAL;
	if (node_id(c, node, sizeof(node)) < 0)
		return BR_ETRUNC;
	int n
	    = snprintf(topic, cap, "%s/device/%s/config", c->ha_prefix, node);
	if (n < 0 || (size_t) n >= cap)
		return BR_ETRUNC;
	return n;
}

int
discovery_status_topic(const struct discovery_cfg *c, char *topic, size_t cap)
{
	if (!cfg_valid(c))
		return BR_EINVAL;
	int n = snprintf(topic, cap, "%s/status", c->ha_prefix);
	if (n < 0 || (size_t) n >= cap)
		return BR_ETRUNC;
	return n;
}

/* Writes "<prefix>/<instance>/<leaf>" as the value of key k. */
static void
w_topic(struct jsonw *w, const struct discovery_cfg *c, const char *k,
    const char *leaf)
{
	char t[TOPIC_MAX];
	if (topic_join(t, sizeof(t), c->prefix, c->instance, leaf) < 0) {
		/* leave a sticky error instead of a wrong topic */
		w->err = BR_ETRUNC;
		return;
	}
	jsonw_kstr(w, k, t);
}

/* Opens one component: its key (= unique_id), platform, unique_id and
 * name. The caller adds the platform's own keys and closes it. */
static void
component_begin(struct jsonw *w, const char *node, const char *object,
    const char *platform, const char *name)
{
	char uid[UNIQUE_ID_MAX];
	snprintf(uid, sizeof(uid), "%s_%s", node, object);
	jsonw_key(w, uid);
	jsonw_obj_begin(w);
	jsonw_kstr(w, "platform", platform);
	jsonw_kstr(w, "unique_id", uid);
	jsonw_kstr(w, "name", name);
}

static void
w_device(struct jsonw *w, const struct discovery_cfg *c, const char *node)
{
	char name[160];
	snprintf(name, sizeof(name), "ComfyUI %s", c->instance);
	jsonw_key(w, "device");
	jsonw_obj_begin(w);
	jsonw_key(w, "identifiers");
	jsonw_arr_begin(w);
	jsonw_str(w, node);
	jsonw_arr_end(w);
	jsonw_kstr(w, "name", name);
	jsonw_kstr(w, "manufacturer", "ComfyUI");
	jsonw_kstr(w, "model", "ComfyUI server (via comfy2mqtt)");
	jsonw_kstr(w, "sw_version", c->version);
	if (c->comfyui_url != NULL && c->comfyui_url[0] != '\0')
		jsonw_kstr(w, "configuration_url", c->comfyui_url);
	jsonw_obj_end(w);
}

static void
w_origin(struct jsonw *w, const struct discovery_cfg *c)
{
	jsonw_key(w, "origin");
	jsonw_obj_begin(w);
	jsonw_kstr(w, "name", "comfy2mqtt");
	jsonw_kstr(w, "sw_version", c->version);
	if (c->support_url != NULL && c->support_url[0] != '\0')
		jsonw_kstr(w, "support_url", c->support_url);
	jsonw_obj_end(w);
}

static void
w_availability_entry(
    struct jsonw *w, const struct discovery_cfg *c, const char *leaf)
{
	jsonw_obj_begin(w);
	w_topic(w, c, "topic", leaf);
	jsonw_kstr(w, "payload_available", "online");
	jsonw_kstr(w, "payload_not_available", "offline");
	jsonw_obj_end(w);
}

/* Both links must be up: a bridge that cannot see ComfyUI would only
 * show stale values. */
static void
w_availability(struct jsonw *w, const struct discovery_cfg *c)
{
	jsonw_key(w, "availability");
	jsonw_arr_begin(w);
	w_availability_entry(w, c, "bridge/state");
	w_availability_entry(w, c, "upstream/state");
	jsonw_arr_end(w);
	jsonw_kstr(w, "availability_mode", "all");
}

static void
w_buttons(struct jsonw *w, const struct discovery_cfg *c, const char *node)
{
	for (size_t i = 0; i < sizeof(buttons) / sizeof(buttons[0]); i++) {
		const struct button *b = &buttons[i];
		char leaf[32];
		snprintf(leaf, sizeof(leaf), "command/%s", b->verb);
		component_begin(w, node, b->object, "button", b->name);
		w_topic(w, c, "command_topic", leaf);
		jsonw_kstr(w, "payload_press", b->press);
		jsonw_kbool(w, "retain", false);
		jsonw_kstr(w, "icon", b->icon);
		jsonw_obj_end(w);
	}
}

static void
w_components(struct jsonw *w, const struct discovery_cfg *c, const char *node)
{
	jsonw_key(w, "components");
	jsonw_obj_begin(w);

	component_begin(
	    w, node, "queue_remaining", "sensor", "Queue remaining");
	w_topic(w, c, "state_topic", "queue");
	jsonw_kstr(w, "value_template", tpl_queue_remaining);
	jsonw_kstr(w, "state_class", "measurement");
	jsonw_kstr(w, "icon", "mdi:tray-full");
	jsonw_obj_end(w);

	component_begin(w, node, "running", "binary_sensor", "Running");
	w_topic(w, c, "state_topic", "queue");
	jsonw_kstr(w, "value_template", tpl_running);
	jsonw_kstr(w, "device_class", "running");
	jsonw_obj_end(w);

	component_begin(w, node, "progress", "sensor", "Progress");
	w_topic(w, c, "state_topic", "current");
	jsonw_kstr(w, "value_template", tpl_progress);
	jsonw_kstr(w, "unit_of_measurement", "%");
	jsonw_kstr(w, "state_class", "measurement");
	jsonw_kint(w, "suggested_display_precision", 0);
	jsonw_kstr(w, "icon", "mdi:progress-clock");
	jsonw_obj_end(w);

	component_begin(w, node, "current_prompt", "sensor", "Current prompt");
	w_topic(w, c, "state_topic", "current");
	jsonw_kstr(w, "value_template", tpl_current_prompt);
	/* the whole snapshot (status, node, progress, outputs, error) */
	w_topic(w, c, "json_attributes_topic", "current");
	jsonw_kstr(w, "icon", "mdi:image-edit");
	jsonw_obj_end(w);

	component_begin(w, node, "last_duration", "sensor", "Last duration");
	w_topic(w, c, "state_topic", "current");
	jsonw_kstr(w, "value_template", tpl_last_duration);
	jsonw_kstr(w, "unit_of_measurement", "s");
	jsonw_kstr(w, "device_class", "duration");
	jsonw_kstr(w, "state_class", "measurement");
	jsonw_obj_end(w);

	component_begin(w, node, "last_error", "sensor", "Last error");
	w_topic(w, c, "state_topic", "current");
	jsonw_kstr(w, "value_template", tpl_last_error);
	jsonw_kstr(w, "entity_category", "diagnostic");
	jsonw_kstr(w, "icon", "mdi:alert-circle-outline");
	jsonw_obj_end(w);

	/* completion carries "event_type" itself: no template needed, and
	 * the other fields become the event's attributes */
	component_begin(w, node, "completion", "event", "Completion");
	w_topic(w, c, "state_topic", "completion");
	jsonw_key(w, "event_types");
	jsonw_arr_begin(w);
	jsonw_str(w, "success");
	jsonw_str(w, "error");
	jsonw_str(w, "interrupted");
	jsonw_str(w, "cancelled");
	jsonw_str(w, "lost");
	jsonw_arr_end(w);
	jsonw_obj_end(w);

	if (c->previews) {
		component_begin(w, node, "preview", "image", "Preview");
		w_topic(w, c, "image_topic", "preview");
		jsonw_kstr(w, "content_type",
		    c->preview_type ? c->preview_type : "image/jpeg");
		jsonw_obj_end(w);
	}
	if (c->commands)
		w_buttons(w, c, node);

	jsonw_obj_end(w);
}

int
discovery_write(const struct discovery_cfg *c, struct jsonw *w)
{
	char node[NODE_ID_MAX];
	if (!cfg_valid(c) || w == NULL)
		return BR_EINVAL;
	if (node_id(c, node, sizeof(node)) < 0)
		return BR_ETRUNC;
	jsonw_obj_begin(w);
	w_device(w, c, node);
	w_origin(w, c);
	w_availability(w, c);
	/* completion is published with QoS 1: subscribe likewise */
	jsonw_kint(w, "qos", 1);
	w_components(w, c, node);
	jsonw_obj_end(w);
	return jsonw_finish(w);
}
