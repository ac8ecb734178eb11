/* The test client of helper_mqttc.h. */
#include "helper_mqttc.h"

#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loop.h"

static void
set_ready(struct mqttc *c)
{
	pthread_mutex_lock(&c->mu);
	c->ready = true;
	pthread_mutex_unlock(&c->mu);
}

static void
on_connect(struct mosquitto *mosq, void *obj, int rc, int flags,
    const mosquitto_property *p)
{
	struct mqttc *c = obj;
	if (rc != 0)
		return;
	if (c->filter != NULL)
		mosquitto_subscribe(mosq, NULL, c->filter, 1);
	else
		set_ready(c);
}

static void
on_subscribe(struct mosquitto *mosq, void *obj, int mid, int n,
    const int *granted, const mosquitto_property *p)
{
	set_ready(obj);
}

static void
on_publish(struct mosquitto *mosq, void *obj, int mid)
{
	struct mqttc *c = obj;
	pthread_mutex_lock(&c->mu);
	c->acked_mid = mid;
	pthread_mutex_unlock(&c->mu);
}

/* Copies the properties the tests look at into r. */
static void
read_props(struct mqttc_msg *r, const mosquitto_property *props)
{
	r->pfi = -1;
	r->expiry = -1;
	char *ct = NULL;
	if (mosquitto_property_read_string(
	        props, MQTT_PROP_CONTENT_TYPE, &ct, false)
	    != NULL) {
		snprintf(r->content_type, sizeof(r->content_type), "%s", ct);
		free(ct);
	}
	uint8_t pfi;
	if (mosquitto_property_read_byte(
	        props, MQTT_PROP_PAYLOAD_FORMAT_INDICATOR, &pfi, false)
	    != NULL)
		r->pfi = pfi;
	uint32_t exp;
	if (mosquitto_property_read_int32(
	        props, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, &exp, false)
	    != NULL)
		r->expiry = exp;
	void *corr = NULL;
	uint16_t clen = 0;
	mosquitto_property_read_binary(
	    props, MQTT_PROP_CORRELATION_DATA, &corr, &clen, false);
	r->has_corr = corr != NULL;
	r->corr_len = clen;
	if (corr != NULL && clen <= sizeof(r->corr))
		memcpy(r->corr, corr, clen);
	free(corr);
	const mosquitto_property *p = props;
	for (bool skip = false;; skip = true) {
		char *k = NULL, *v = NULL;
		p = mosquitto_property_read_string_pair(
		    p, MQTT_PROP_USER_PROPERTY, &k, &v, skip);
		if (p == NULL)
			break;
		size_t used = strlen(r->user);
		snprintf(
		    r->user + used, sizeof(r->user) - used, "%s=%s;", k, v);
		free(k);
		free(v);
	}
}

static void
on_message(struct mosquitto *mosq, void *obj,
    const struct mosquitto_message *msg, const mosquitto_property *props)
{
	struct mqttc *c = obj;
	pthread_mutex_lock(&c->mu);
	if (c->n < MQTTC_MAX) {
		struct mqttc_msg *r = &c->msgs[c->n++];
		memset(r, 0, sizeof(*r));
		snprintf(r->topic, sizeof(r->topic), "%s", msg->topic);
		snprintf(r->payload, sizeof(r->payload), "%.*s",
		    msg->payloadlen, (const char *) msg->payload);
		r->retained = msg->retain;
		read_props(r, props);
	}
	pthread_mutex_unlock(&c->mu);
}

struct mqttc *
mqttc_start(int port, const char *id, int protocol, const char *filter)
{
	struct mqttc *c = calloc(1, sizeof(*c));
	if (c == NULL)
		abort();
	pthread_mutex_init(&c->mu, NULL);
	c->filter = filter;
	c->mosq = mosquitto_new(id, id == NULL, c);
	mosquitto_int_option(c->mosq, MOSQ_OPT_PROTOCOL_VERSION,
	    protocol == 5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311);
	mosquitto_connect_v5_callback_set(c->mosq, on_connect);
	mosquitto_subscribe_v5_callback_set(c->mosq, on_subscribe);
	mosquitto_message_v5_callback_set(c->mosq, on_message);
	mosquitto_publish_callback_set(c->mosq, on_publish);
	mosquitto_reconnect_delay_set(c->mosq, 1, 1, false);
	mosquitto_loop_start(c->mosq);
	mosquitto_connect_async(c->mosq, "127.0.0.1", port, 30);
	return c;
}

bool
mqttc_ready(struct mqttc *c)
{
	pthread_mutex_lock(&c->mu);
	bool v = c->ready;
	pthread_mutex_unlock(&c->mu);
	return v;
}

int
mqttc_count(struct mqttc *c)
{
	pthread_mutex_lock(&c->mu);
	int n = c->n;
	pthread_mutex_unlock(&c->mu);
	return n;
}

int
mqttc_publish(struct mqttc *c, const char *topic, const char *payload,
    const char *rt, const void *corr, uint16_t clen)
{
	mosquitto_property *props = NULL;
	if (rt != NULL)
		mosquitto_property_add_string(
		    &props, MQTT_PROP_RESPONSE_TOPIC, rt);
	if (corr != NULL)
		mosquitto_property_add_binary(
		    &props, MQTT_PROP_CORRELATION_DATA, corr, clen);
	int rc = mosquitto_publish_v5(c->mosq, NULL, topic,
	    (int) strlen(payload), payload, 1, false, props);
	mosquitto_property_free_all(&props);
	return rc;
}

bool
mqttc_sync(struct mqttc *c)
{
	int mid = 0;
	if (mosquitto_publish(c->mosq, &mid, "sync/x", 1, "x", 1, false) != 0)
		return false;
	int64_t until = loop_mono_ms() + 5000;
	for (;;) {
		pthread_mutex_lock(&c->mu);
		bool done = c->acked_mid == mid;
		pthread_mutex_unlock(&c->mu);
		if (done || loop_mono_ms() > until)
			return done;
		usleep(5000);
	}
}

void
mqttc_stop(struct mqttc *c)
{
	mosquitto_disconnect(c->mosq);
	mosquitto_loop_stop(c->mosq, false);
	mosquitto_destroy(c->mosq);
	pthread_mutex_destroy(&c->mu);
	free(c);
}
