/* Oversize messages and broker refusals: see mqtt_guard.h. */
#include "mqtt_guard.h"

#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <string.h>

#include "log.h"

static size_t
varint_len(size_t n)
{
	size_t len = 1;
	while (n >= 128) {
		n /= 128;
		len++;
	}
	return len;
}

/* The property bytes mqtt_setup's build_props produces for o. */
static size_t
props_size(const struct out_props *o)
{
	size_t n = 0;
	if (o->content_type != NULL)
		n += 3 + strlen(o->content_type);
	if (o->utf8)
		n += 2;
	if (o->expiry_s != 0)
		n += 5;
	if (o->correlation != NULL)
		n += 3 + o->correlation_len;
	const char *names[] = { "instance", "type", "prompt_id" };
	const char *values[] = { o->instance, o->type, o->prompt_id };
	for (int i = 0; i < 3; i++)
		if (values[i] != NULL)
			n += 5 + strlen(names[i]) + strlen(values[i]);
	return n;
}

size_t
mqtt_packet_size(int protocol, const struct out_msg *msg)
{
	size_t rest
	    = 2 + strlen(msg->topic) + (msg->qos > 0 ? 2 : 0) + msg->len;
	if (protocol == 5) {
		size_t p = props_size(&msg->props);
		rest += varint_len(p) + p;
	}
	return 1 + varint_len(rest) + rest;
}

uint8_t
mqtt_guard_kind(struct mqtt_guard *g, const struct out_msg *msg)
{
	/* a static name is found by its address, without reading it */
	if (msg->kind != NULL)
		for (unsigned i = 0; i < g->nkinds; i++)
			if (g->kind_ptr[i] == msg->kind)
				return (uint8_t) i;
	const char *leaf = msg->kind;
	if (leaf == NULL) {
		const char *slash = strrchr(msg->topic, '/');
		leaf = slash != NULL ? slash + 1 : msg->topic;
	}
	for (unsigned i = 0; i < g->nkinds; i++)
		if (strcmp(g->kinds[i], leaf) == 0) {
			if (g->kind_ptr[i] == NULL)
				g->kind_ptr[i] = msg->kind;
			return (uint8_t) i;
		}
	if (g->nkinds == GUARD_KINDS - 1 || strlen(leaf) >= GUARD_KIND_MAX) {
		/* the last slot is "other" */
		strcpy(g->kinds[GUARD_KINDS - 1], "other");
		return GUARD_KINDS - 1;
	}
	g->kind_ptr[g->nkinds] = msg->kind;
	strcpy(g->kinds[g->nkinds], leaf);
	return (uint8_t) g->nkinds++;
}

void
mqtt_guard_init(struct mqtt_guard *g)
{
	memset(g, 0, sizeof(*g));
	g->reject_log = (struct ratelog) RATELOG_INIT(5);
	g->critical_log = (struct ratelog) RATELOG_INIT_EVERY(3, 1000);
	for (int i = 0; i < GUARD_KINDS; i++) {
		g->over_log[i] = (struct ratelog) RATELOG_INIT(1);
		g->refused_log[i] = (struct ratelog) RATELOG_INIT(1);
	}
}

void
mqtt_guard_rejected(struct mqtt_guard *g, const struct out_msg *msg, int rc)
{
	g->rejected[msg->cls]++;
	if (rc != MOSQ_ERR_NO_CONN) /* NO_CONN: the link is dropping */
		ratelog_msg(&g->reject_log, LOG_LVL_WARN, "mqtt",
		    "message on %s (%zu bytes) rejected: %s", msg->topic,
		    msg->len, mosquitto_strerror(rc));
}

void
mqtt_guard_queue_drops(struct mqtt_guard *g, const struct outq *q)
{
	uint64_t n = outq_dropped(q, MSG_CRITICAL);
	if (n == g->critical_seen)
		return;
	g->critical_seen = n;
	ratelog_msg(&g->critical_log, LOG_LVL_WARN, "mqtt",
	    "the outgoing queue is full (%zu messages, %zu bytes): %llu "
	    "critical messages (state, completion) dropped so far",
	    outq_count(q), outq_bytes(q), (unsigned long long) n);
}

void
mqtt_guard_oversize(struct mqtt_guard *g, const struct out_msg *msg,
    size_t size, uint32_t limit)
{
	g->oversize[msg->cls]++;
	uint8_t kind = mqtt_guard_kind(g, msg);
	ratelog_msg(&g->over_log[kind], LOG_LVL_WARN, "mqtt",
	    "dropped a %s message on %s: %zu bytes, over the broker's maximum "
	    "packet of %u (--mqtt-max-packet); further ones of this kind are "
	    "only counted",
	    msg_class_name(msg->cls), msg->topic, size, (unsigned) limit);
}

void
mqtt_guard_poison(struct mqtt_guard *g, enum msg_class cls, uint8_t kind,
    unsigned hits, uint32_t size, uint64_t after, bool learned)
{
	g->poison[cls]++;
	if (kind >= GUARD_KINDS)
		kind = GUARD_KINDS - 1;
	ratelog_msg(&g->over_log[kind], LOG_LVL_WARN, "mqtt",
	    "the broker dropped the connection right after the same %s "
	    "message (%s topic, %u bytes) %u times: dropped it as "
	    "undeliverable, and %llu sent after it%s; further ones of this "
	    "kind are only counted",
	    msg_class_name(cls), g->kinds[kind][0] ? g->kinds[kind] : "other",
	    (unsigned) size, hits, (unsigned long long) after,
	    learned ? "; packets this large are dropped from now on (set "
	              "--mqtt-max-packet to the broker's max_packet_size)"
	            : "");
}

static enum pub_refusal
reason_of(int code)
{
	switch (code) {
	case MQTT_RC_NOT_AUTHORIZED:
		return PR_NOT_AUTHORIZED;
	case MQTT_RC_TOPIC_NAME_INVALID:
		return PR_TOPIC_INVALID;
	case MQTT_RC_PACKET_TOO_LARGE:
		return PR_PACKET_TOO_LARGE;
	case MQTT_RC_QUOTA_EXCEEDED:
		return PR_QUOTA_EXCEEDED;
	case MQTT_RC_PAYLOAD_FORMAT_INVALID:
		return PR_PAYLOAD_FORMAT;
	default:
		return PR_OTHER;
	}
}

void
mqtt_guard_refused(
    struct mqtt_guard *g, int reason, enum msg_class cls, uint8_t kind)
{
	g->refused[cls]++;
	g->refused_by[reason_of(reason)]++;
	if (kind >= GUARD_KINDS)
		kind = GUARD_KINDS - 1;
	ratelog_msg(&g->refused_log[kind], LOG_LVL_WARN, "mqtt",
	    "the broker refused a %s message (%s topic): %s (0x%02x); further "
	    "ones of this kind are only counted",
	    msg_class_name(cls), g->kinds[kind][0] ? g->kinds[kind] : "other",
	    mosquitto_reason_string(reason), (unsigned) reason);
}
