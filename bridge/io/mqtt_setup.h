/* io-internal: what the broker link sets up once (the libmosquitto client
 * with its options, will and TLS) and the MQTT 5 property lists it reuses.
 * Never included outside bridge/io. */
#ifndef C2M_MQTT_SETUP_H
#define C2M_MQTT_SETUP_H

#include <stdbool.h>
#include <stdint.h>

#include <mosquitto.h>

#include "mqtt_link.h"
#include "outq.h"

/* Creates the client for c (no wake-up socket pair, protocol,
 * TCP_NODELAY, threaded mode, the in-flight window, credentials, will,
 * TLS) into *out, with obj as the callbacks' user data. Returns a br_err;
 * logs the cause of a failure. */
int mqtt_setup_client(const struct mqtt_link_cfg *c, unsigned window,
    void *obj, struct mosquitto **out);

/* Makes every later (re)connect carry the MQTT 5 session expiry. Returns
 * a MOSQ_ERR_* code. */
int mqtt_setup_connect_props(
    struct mosquitto *mosq, const struct mqtt_link_cfg *c);

/* Copies src and its strings into dst, with the defaults filled in
 * (protocol 5 unless 4, keepalive); false when out of memory (dst is then
 * still freed by mqtt_setup_free_cfg). */
bool mqtt_setup_copy_cfg(
    struct mqtt_link_cfg *dst, const struct mqtt_link_cfg *src);
void mqtt_setup_free_cfg(struct mqtt_link_cfg *c);

/* The text of a MOSQ_ERR_* code, or of an MQTT 5 reason code (>= 0x80) a
 * broker's DISCONNECT carried. */
const char *mqtt_rc_text(int rc);
/* What a refused CONNACK code means, in the protocol's (5 or 4) words. */
const char *mqtt_refusal_text(int protocol, int rc);
/* A hint for the refusals a user can fix with an option, or "". */
const char *mqtt_refusal_hint(int protocol, int rc);

/* TCP_CORK on (1) or off (0) for fd; nothing for a non-TCP socket. */
void mqtt_set_cork(int fd, int on);

/* br_err for a MOSQ_ERR_* code. */
int mqtt_setup_br_err(int mosq_rc);

/* MQTT 5 property lists are immutable once built and libmosquitto copies
 * what it keeps, so consecutive messages with the same properties (the
 * same prompt and event type) reuse one list instead of five allocations
 * per publish. */
#define MQTT_PROP_CACHE_SIZE 8
#define MQTT_PROP_STR_MAX    288
struct mqtt_prop_entry {
	bool valid;
	bool utf8;
	uint32_t expiry_s;
	/* by value: a queued message's strings are the queue's copies */
	char content_type[MQTT_PROP_STR_MAX], instance[MQTT_PROP_STR_MAX],
	    type[MQTT_PROP_STR_MAX], prompt_id[MQTT_PROP_STR_MAX];
	bool has_content_type, has_instance, has_type, has_prompt_id;
	mosquitto_property *props;
	uint64_t used;
};

struct mqtt_prop_cache {
	struct mqtt_prop_entry e[MQTT_PROP_CACHE_SIZE];
	uint64_t clock;
};

/* The property list for o: cached (borrowed, *owned = false) or freshly
 * built (the caller frees it, *owned = true). *rc: a MOSQ_ERR_* code. */
mosquitto_property *mqtt_props_get(struct mqtt_prop_cache *c,
    const struct out_props *o, int *rc, bool *owned);
void mqtt_props_clear(struct mqtt_prop_cache *c);

#endif
