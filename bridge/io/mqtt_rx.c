/* The broker link's receiving side: subscriptions routed to callbacks, and
 * the messages libmosquitto hands over, kept until the link delivers them
 * after the loop call that read them (mqtt_link.h). */
#include <mqtt_protocol.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "mqtt_link_int.h"

/* Subscribes r at QoS 1. With MQTT 5 the broker does not send back
 * what this connection publishes itself (no local): the bridge reads its
 * own topics only for what an earlier connection left retained. A meta
 * route also gets the retain flag as published, so that a command left
 * retained is known as such even when it arrives live. */
static int
subscribe_route(struct mqtt_link *m, struct route *r)
{
	r->sub_mid = 0;
	r->subacked = false;
	if (m->cfg.protocol != 5)
		return mosquitto_subscribe(m->mosq, &r->sub_mid, r->filter, 1);
	int opts = MQTT_SUB_OPT_NO_LOCAL;
	if (r->meta_fn != NULL)
		opts |= MQTT_SUB_OPT_RETAIN_AS_PUBLISHED;
	return mosquitto_subscribe_v5(
	    m->mosq, &r->sub_mid, r->filter, 1, opts, NULL);
}

void
mqtt_rx_resubscribe(struct mqtt_link *m)
{
	for (size_t i = 0; i < m->nroutes; i++)
		subscribe_route(m, &m->routes[i]);
}

void
mqtt_rx_on_subscribe(struct mosquitto *mosq, void *obj, int mid, int qos_count,
    const int *granted_qos, const mosquitto_property *props)
{
	struct mqtt_link *m = obj;
	for (size_t i = 0; i < m->nroutes; i++)
		if (m->routes[i].sub_mid == mid)
			m->routes[i].subacked = true;
}

/* Whether topic matches a meta route whose SUBACK has not come on this
 * connection: then the broker sent it before handling the SUBSCRIBE. */
static bool
before_suback(const struct mqtt_link *m, const char *topic)
{
	for (size_t i = 0; i < m->nroutes; i++) {
		const struct route *r = &m->routes[i];
		bool match = false;
		if (r->meta_fn != NULL && !r->subacked
		    && mosquitto_topic_matches_sub(r->filter, topic, &match)
		        == MOSQ_ERR_SUCCESS
		    && match)
			return true;
	}
	return false;
}

/* A copy of msg with the response topic rt and the correlation data
 * (corr, clen), all three possibly absent, in one allocation. */
static struct rx_msg *
rx_new(const struct mosquitto_message *msg, const char *rt, const void *corr,
    size_t clen)
{
	size_t len = msg->payloadlen > 0 ? (size_t) msg->payloadlen : 0;
	size_t tlen = strlen(msg->topic) + 1;
	size_t rtlen = rt != NULL ? strlen(rt) + 1 : 0;
	struct rx_msg *rx
	    = malloc(sizeof(*rx) + len + 1 + tlen + rtlen + clen);
	if (rx == NULL)
		return NULL;
	char *cursor = rx->payload;
	memcpy(cursor, msg->payload != NULL ? msg->payload : "", len);
	cursor[len] = '\0';
	cursor += len + 1;
	memcpy(cursor, msg->topic, tlen);
	rx->topic = cursor;
	cursor += tlen;
	rx->meta
	    = (struct mqtt_rx_meta) { .qos = msg->qos, .retain = msg->retain };
	if (rt != NULL) {
		memcpy(cursor, rt, rtlen);
		rx->meta.response_topic = cursor;
		cursor += rtlen;
	}
	if (corr != NULL) {
		memcpy(cursor, corr, clen);
		rx->meta.correlation = cursor;
		rx->meta.correlation_len = clen;
	}
	rx->next = NULL;
	rx->len = len;
	return rx;
}

/* Keeps a received message for mqtt_rx_deliver(), which runs after the
 * loop call that read it: what one read of the socket holds (a burst of
 * retained states at subscribe may be thousands) all waits, none is
 * dropped. libmosquitto hands out properties only as copies, made only
 * when the message carries them. */
void
mqtt_rx_on_message(struct mosquitto *mosq, void *obj,
    const struct mosquitto_message *msg, const mosquitto_property *props)
{
	struct mqtt_link *m = obj;
	char *rt = NULL;
	void *corr = NULL;
	uint16_t clen = 0;
	if (props != NULL) {
		mosquitto_property_read_string(
		    props, MQTT_PROP_RESPONSE_TOPIC, &rt, false);
		mosquitto_property_read_binary(
		    props, MQTT_PROP_CORRELATION_DATA, &corr, &clen, false);
	}
	struct rx_msg *rx = rx_new(msg, rt, corr, corr != NULL ? clen : 0);
	free(rt);
	free(corr);
	if (rx == NULL)
		return;
	rx->meta.connection = m->f.connacks;
	rx->meta.resent = before_suback(m, msg->topic);
	if (m->f.rx_tail != NULL)
		m->f.rx_tail->next = rx;
	else
		m->f.rx_head = rx;
	m->f.rx_tail = rx;
	m->f.rx_len++;
}

static int
add_route(struct mqtt_link *m, const char *filter, mqtt_link_msg_fn fn,
    mqtt_link_meta_fn meta_fn, void *ud)
{
	if (m == NULL || filter == NULL || (fn == NULL && meta_fn == NULL)
	    || mosquitto_sub_topic_check(filter) != MOSQ_ERR_SUCCESS)
		return BR_EINVAL;
	char *copy = strdup(filter);
	if (copy == NULL)
		return BR_ENOMEM;
	struct route *grown
	    = realloc(m->routes, (m->nroutes + 1) * sizeof(*grown));
	if (grown == NULL) {
		free(copy);
		return BR_ENOMEM;
	}
	m->routes = grown;
	m->routes[m->nroutes++] = (struct route) {
		.filter = copy, .fn = fn, .meta_fn = meta_fn, .ud = ud
	};
	/* not up: record_connack subscribes after the (re)connect */
	if (m->f.up && subscribe_route(m, &m->routes[m->nroutes - 1]) == 0)
		loop_fd_want_write(m->watch);
	return BR_OK;
}

int
mqtt_link_subscribe(
    struct mqtt_link *m, const char *filter, mqtt_link_msg_fn fn, void *ud)
{
	return add_route(m, filter, fn, NULL, ud);
}

int
mqtt_link_subscribe_meta(
    struct mqtt_link *m, const char *filter, mqtt_link_meta_fn fn, void *ud)
{
	return add_route(m, filter, NULL, fn, ud);
}

int
mqtt_link_unsubscribe(
    struct mqtt_link *m, const char *filter, mqtt_link_msg_fn fn, void *ud)
{
	for (size_t i = 0; m != NULL && filter != NULL && i < m->nroutes;
	     i++) {
		struct route *r = &m->routes[i];
		if (r->fn != fn || r->ud != ud
		    || strcmp(r->filter, filter) != 0)
			continue;
		if (m->f.up
		    && mosquitto_unsubscribe(m->mosq, NULL, r->filter)
		        == MOSQ_ERR_SUCCESS)
			loop_fd_want_write(m->watch);
		free(r->filter);
		memmove(r, r + 1, (m->nroutes - i - 1) * sizeof(*r));
		m->nroutes--;
		return BR_OK;
	}
	return BR_EINVAL;
}

void
mqtt_rx_deliver(struct mqtt_link *m)
{
	struct rx_msg *rx = m->f.rx_head;
	m->f.rx_head = m->f.rx_tail = NULL;
	m->f.rx_len = 0;
	while (rx != NULL) {
		struct rx_msg *next = rx->next;
		for (size_t i = 0; i < m->nroutes && !m->stopping; i++) {
			const struct route *r = &m->routes[i];
			bool match = false;
			mosquitto_topic_matches_sub(
			    r->filter, rx->topic, &match);
			if (match && r->meta_fn != NULL)
				r->meta_fn(r->ud, rx->topic, rx->payload,
				    rx->len, &rx->meta);
			else if (match)
				r->fn(r->ud, rx->topic, rx->payload, rx->len);
		}
		free(rx);
		rx = next;
	}
}

void
mqtt_rx_free(struct mqtt_link *m)
{
	struct rx_msg *rx = m->f.rx_head;
	while (rx != NULL) {
		struct rx_msg *next = rx->next;
		free(rx);
		rx = next;
	}
	m->f.rx_head = m->f.rx_tail = NULL;
	for (size_t i = 0; i < m->nroutes; i++)
		free(m->routes[i].filter);
	free(m->routes);
	m->routes = NULL;
	m->nroutes = 0;
}
