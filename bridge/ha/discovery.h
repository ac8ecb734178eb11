/* Home Assistant MQTT discovery: one retained device-based discovery
 * message per instance. Pure: builds the topics and the JSON. */
#ifndef C2M_DISCOVERY_H
#define C2M_DISCOVERY_H

#include <stdbool.h>
#include <stddef.h>

struct jsonw;

struct discovery_cfg {
	const char *ha_prefix; /* "homeassistant" */
	const char *prefix; /* topic prefix, e.g. "comfyui" */
	const char *instance; /* sanitized instance */
	const char *version; /* bridge version */
	const char *comfyui_url; /* public base URL (configuration_url);
	                            NULL or "": omitted */
	const char *support_url; /* origin support_url; NULL or "": omitted */
	bool previews; /* add the image entity */
	const char *preview_type; /* its content type; NULL: image/jpeg */
	bool commands; /* --commands: add the command buttons */
};

/* Writes Home Assistant's id of the device of instance under prefix,
 * "<prefix>_<instance>" with every character outside [A-Za-z0-9_-] as '_',
 * into dst (cap bytes). Two instances with one id would be one device.
 * Returns the length or BR_ETRUNC. */
int discovery_device_id(
    const char *prefix, const char *instance, char *dst, size_t cap);

/* Writes "<ha_prefix>/device/<prefix>_<instance>/config" (prefix '/' and
 * other characters outside [A-Za-z0-9_-] become '_') into topic (cap
 * bytes). Returns the length, BR_ETRUNC, or BR_EINVAL when a required
 * field (ha_prefix, prefix, instance, version) is missing or empty. */
int discovery_topic(const struct discovery_cfg *c, char *topic, size_t cap);

/* Writes "<ha_prefix>/status", where Home Assistant publishes "online"
 * when it (re)starts, into topic (cap bytes). Returns the length,
 * BR_ETRUNC or BR_EINVAL (see discovery_topic). */
int discovery_status_topic(
    const struct discovery_cfg *c, char *topic, size_t cap);

/* Writes the discovery payload (one JSON object) into w (borrowed; strings
 * copied into its buffer). Returns 0, BR_EINVAL (see discovery_topic) or
 * the writer's error (BR_ETRUNC: w's buffer is too small; 8 KiB is ample).
 * Full HA key names throughout ("device", "origin", "components",
 * "platform"), availability at the device level. Entities: queue remaining
 * (sensor), running (binary_sensor), progress % (sensor), current prompt
 * (sensor with JSON attributes), last duration (sensor), last error (sensor,
 * diagnostic), completion (event), preview (image, only with previews),
 * and with commands the buttons Interrupt, Clear queue and Free memory
 * (command topics <p>/<i>/command/interrupt, clear and free). State
 * topics: <p>/<i>/queue, <p>/<i>/current (retained snapshot of the prompt
 * running now or last), <p>/<i>/completion, <p>/<i>/preview. Availability on
 * <p>/<i>/bridge/state and <p>/<i>/upstream/state, availability_mode all. */
int discovery_write(const struct discovery_cfg *c, struct jsonw *w);

#endif
