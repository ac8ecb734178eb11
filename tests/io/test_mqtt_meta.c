/* mqtt_link's MQTT 5 request/response side against a real mosquitto: a
 * received message's Response Topic and Correlation Data reach a
 * mqtt_link_subscribe_meta callback (absent for a 3.1.1 link), the
 * connection number grows with each new connection, and an outgoing
 * message's correlation data reaches an MQTT 5 subscriber (queued or
 * direct; dropped for 3.1.1). What a resumed MQTT 5 session gets before
 * the SUBACK is marked resent, a live message is not (nor with 3.1.1).
 * The link runs in the real event loop. */
#include "mqtt_link.h"

#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "helper_broker.h"
#include "helper_loop.h"
#include "helper_mqttc.h"
#include "test.h"

/* Correlation data with a NUL inside: copied as bytes, never as a string. */
static const char CORR[] = { 'c', 0, 'r', '\xff', '7' };

/* ---- the link in the event loop ---------------------------------------- */

struct drv {
	struct loop *loop;
	struct mqtt_link *link;
};

static void
pump(struct drv *d, int ms)
{
	helper_wait_for(d->loop, NULL, NULL, ms);
}

#define PUMP_UNTIL(d, cond, timeout_ms)                                       \
	HELPER_LOOP_UNTIL((d)->loop, cond, timeout_ms)

static struct drv *
drv_start(int port, int protocol, const char *id)
{
	struct drv *d = calloc(1, sizeof(*d));
	d->loop = loop_create_tls(false);
	if (d->loop == NULL)
		abort();
	struct mqtt_link_cfg cfg = {
		.host = "127.0.0.1",
		.port = port,
		.client_id = id,
		.protocol = protocol,
		.keepalive_s = 30,
		.queue_max_messages = 1000,
		.queue_max_bytes = 1 << 20,
	};
	CHECK_INT(
	    mqtt_link_create(d->loop, &cfg, NULL, NULL, &d->link), BR_OK);
	if (d->link == NULL)
		abort();
	return d;
}

static void
drv_stop(struct drv *d)
{
	mqtt_link_destroy(d->link);
	loop_destroy(d->loop);
	free(d);
}

/* What a meta callback saw, copied out of the borrowed call. */
#define GOT_MAX 8
struct got_one {
	char topic[64];
	char payload[64];
	bool has_rt, has_corr;
	char rt[64];
	char corr[16];
	size_t corr_len;
	uint64_t connection;
	int qos;
	bool retain;
	bool resent;
};
struct got {
	int n;
	struct got_one m[GOT_MAX];
};

static void
on_meta(void *ud, const char *topic, const void *payload, size_t len,
    const struct mqtt_rx_meta *meta)
{
	struct got *g = ud;
	if (g->n >= GOT_MAX)
		return;
	struct got_one *o = &g->m[g->n++];
	snprintf(o->topic, sizeof(o->topic), "%s", topic);
	snprintf(o->payload, sizeof(o->payload), "%.*s", (int) len,
	    (const char *) payload);
	o->has_rt = meta->response_topic != NULL;
	if (o->has_rt)
		snprintf(o->rt, sizeof(o->rt), "%s", meta->response_topic);
	o->has_corr = meta->correlation != NULL;
	o->corr_len = meta->correlation_len;
	if (o->has_corr && o->corr_len <= sizeof(o->corr))
		memcpy(o->corr, meta->correlation, o->corr_len);
	o->connection = meta->connection;
	o->qos = meta->qos;
	o->retain = meta->retain;
	o->resent = meta->resent;
}

static int plain_n;
static char plain_last[64];

static void
on_plain(void *ud, const char *topic, const void *payload, size_t len)
{
	plain_n++;
	snprintf(plain_last, sizeof(plain_last), "%s=%.*s", topic, (int) len,
	    (const char *) payload);
}

/* ---- tests ---------------------------------------------------------------
 */

/* MQTT 5: the Response Topic and the Correlation Data a client sent reach
 * the meta callback byte for byte, with the connection number, QoS and
 * retain flag; a message without them gets NULLs; a plain subscription
 * beside it still gets its messages. */
static void
test_meta_v5(void)
{
	struct broker *b = broker_create(NULL);
	CHECK_INT(broker_start(b), 0);
	struct drv *d = drv_start(broker_port(b), 5, "meta-v5");
	struct got g = { 0 };
	plain_n = 0;
	CHECK_INT(mqtt_link_connection(d->link), 0);
	CHECK_INT(
	    mqtt_link_subscribe_meta(d->link, "m1/command/+", on_meta, &g),
	    BR_OK);
	CHECK_INT(mqtt_link_subscribe_meta(d->link, "m1/#/x", on_meta, &g),
	    BR_EINVAL);
	CHECK_INT(
	    mqtt_link_subscribe(d->link, "m1/plain", on_plain, NULL), BR_OK);
	CHECK_INT(mqtt_link_start(d->link), BR_OK);
	CHECK(PUMP_UNTIL(d, mqtt_link_connected(d->link), 5000));
	pump(d, 200); /* the SUBSCRIBEs are answered */
	CHECK_INT(mqtt_link_connection(d->link), 1);
	struct mqttc *p = mqttc_start(broker_port(b), NULL, 5, NULL);
	CHECK(PUMP_UNTIL(d, mqttc_ready(p), 5000));
	CHECK_INT(mqttc_publish(p, "m1/command/prompt", "{\"a\":1}", "resp/me",
	              CORR, sizeof(CORR)),
	    0);
	CHECK_INT(
	    mqttc_publish(p, "m1/command/clear", "{}", NULL, NULL, 0), 0);
	CHECK_INT(mqttc_publish(p, "m1/plain", "hello", "resp/x", NULL, 0), 0);
	CHECK(PUMP_UNTIL(d, g.n >= 2 && plain_n >= 1, 5000));
	pump(d, 100);
	CHECK_INT(g.n, 2);
	CHECK_STR(g.m[0].topic, "m1/command/prompt");
	CHECK_STR(g.m[0].payload, "{\"a\":1}");
	CHECK(g.m[0].has_rt);
	CHECK_STR(g.m[0].rt, "resp/me");
	CHECK(g.m[0].has_corr);
	CHECK_INT(g.m[0].corr_len, sizeof(CORR));
	CHECK(memcmp(g.m[0].corr, CORR, sizeof(CORR)) == 0);
	CHECK_INT(g.m[0].connection, 1);
	CHECK_INT(g.m[0].qos, 1);
	CHECK(!g.m[0].retain);
	CHECK(!g.m[0].resent);
	CHECK_STR(g.m[1].topic, "m1/command/clear");
	CHECK(!g.m[1].resent);
	CHECK(!g.m[1].has_rt);
	CHECK(!g.m[1].has_corr);
	CHECK_INT(g.m[1].corr_len, 0);
	CHECK_INT(plain_n, 1);
	CHECK_STR(plain_last, "m1/plain=hello");
	mqttc_stop(p);
	drv_stop(d);
	broker_destroy(b);
}

/* MQTT 3.1.1 carries no properties: the same request reaches a 3.1.1
 * link's meta callback with both absent. */
static void
test_meta_311_absent(void)
{
	struct broker *b = broker_create(NULL);
	CHECK_INT(broker_start(b), 0);
	struct drv *d = drv_start(broker_port(b), 4, "meta-311");
	struct got g = { 0 };
	CHECK_INT(mqtt_link_subscribe_meta(d->link, "m2/#", on_meta, &g), 0);
	CHECK_INT(mqtt_link_start(d->link), BR_OK);
	CHECK(PUMP_UNTIL(d, mqtt_link_connected(d->link), 5000));
	pump(d, 200);
	struct mqttc *p = mqttc_start(broker_port(b), NULL, 5, NULL);
	CHECK(PUMP_UNTIL(d, mqttc_ready(p), 5000));
	CHECK_INT(mqttc_publish(p, "m2/command/prompt", "{}", "resp/me", CORR,
	              sizeof(CORR)),
	    0);
	CHECK(PUMP_UNTIL(d, g.n >= 1, 5000));
	CHECK_STR(g.m[0].payload, "{}");
	CHECK(!g.m[0].has_rt);
	CHECK(!g.m[0].has_corr);
	CHECK_INT(g.m[0].connection, 1);
	CHECK(!g.m[0].resent);
	mqttc_stop(p);
	drv_stop(d);
	broker_destroy(b);
}

/* Each new connection gets the next number: after a broker restart the
 * link is on connection 2, and what it receives then says so. */
static void
test_connection_number_grows(void)
{
	struct broker *b = broker_create(NULL);
	CHECK_INT(broker_start(b), 0);
	struct drv *d = drv_start(broker_port(b), 5, "meta-conn");
	struct got g = { 0 };
	CHECK_INT(mqtt_link_subscribe_meta(d->link, "m3/#", on_meta, &g), 0);
	CHECK_INT(mqtt_link_start(d->link), BR_OK);
	CHECK(PUMP_UNTIL(d, mqtt_link_connected(d->link), 5000));
	CHECK_INT(mqtt_link_connection(d->link), 1);
	broker_stop(b);
	CHECK(PUMP_UNTIL(d, !mqtt_link_connected(d->link), 5000));
	CHECK_INT(mqtt_link_connection(d->link), 1); /* still the last one */
	CHECK_INT(broker_start(b), 0);
	CHECK(PUMP_UNTIL(d, mqtt_link_connected(d->link), 10000));
	CHECK_INT(mqtt_link_connection(d->link), 2);
	pump(d, 200); /* re-subscribed */
	struct mqttc *p = mqttc_start(broker_port(b), NULL, 5, NULL);
	CHECK(PUMP_UNTIL(d, mqttc_ready(p), 5000));
	CHECK_INT(mqttc_publish(p, "m3/x", "after", NULL, NULL, 0), 0);
	CHECK(PUMP_UNTIL(d, g.n >= 1, 5000));
	CHECK_STR(g.m[0].payload, "after");
	CHECK_INT(g.m[0].connection, 2);
	mqttc_stop(p);
	drv_stop(d);
	broker_destroy(b);
}

/* A resumed MQTT 5 session: the broker sends the QoS 1 message it kept
 * while the link was away right after the CONNACK, before the SUBACK of
 * the new SUBSCRIBE, so it arrives resent; one published after the
 * SUBACK does not. */
static void
test_resent_before_suback(void)
{
	struct broker *b = broker_create(NULL);
	CHECK_INT(broker_start(b), 0);
	struct mqttc *w
	    = mqttc_start(broker_port(b), NULL, 5, "m5/#"); /* a witness */
	struct mqttc *p = mqttc_start(broker_port(b), NULL, 5, NULL);
	int64_t until = loop_mono_ms() + 5000;
	while ((!mqttc_ready(w) || !mqttc_ready(p)) && loop_mono_ms() < until)
		usleep(5000);
	CHECK(mqttc_ready(w) && mqttc_ready(p));
	struct drv *d = drv_start(broker_port(b), 5, "meta-resent");
	struct got g = { 0 };
	CHECK_INT(mqtt_link_subscribe_meta(d->link, "m5/#", on_meta, &g), 0);
	CHECK_INT(mqtt_link_start(d->link), BR_OK);
	CHECK(PUMP_UNTIL(d, mqtt_link_connected(d->link), 5000));
	/* subscribed once a message arrives */
	CHECK_INT(mqttc_publish(p, "m5/first", "first", NULL, NULL, 0), 0);
	CHECK(PUMP_UNTIL(d, g.n >= 1, 5000));
	CHECK(!g.m[0].resent);
	mqtt_link_shutdown(d->link, NULL, 1000);
	drv_stop(d);
	/* the broker holds it for the session once the witness has it */
	CHECK_INT(mqttc_publish(p, "m5/x", "queued", NULL, NULL, 0), 0);
	until = loop_mono_ms() + 5000;
	while (mqttc_count(w) < 2 && loop_mono_ms() < until)
		usleep(5000);
	CHECK_INT(mqttc_count(w), 2);
	d = drv_start(broker_port(b), 5, "meta-resent");
	g = (struct got) { 0 };
	CHECK_INT(mqtt_link_subscribe_meta(d->link, "m5/#", on_meta, &g), 0);
	CHECK_INT(mqtt_link_start(d->link), BR_OK);
	CHECK(PUMP_UNTIL(d, g.n >= 1, 5000));
	CHECK_STR(g.m[0].payload, "queued");
	CHECK_INT(g.m[0].connection, 1);
	CHECK(g.m[0].resent);
	/* after the SUBACK */
	CHECK_INT(mqttc_publish(p, "m5/live", "live", NULL, NULL, 0), 0);
	CHECK(PUMP_UNTIL(d, g.n >= 2, 5000));
	CHECK_STR(g.m[1].payload, "live");
	CHECK(!g.m[1].resent);
	mqttc_stop(p);
	mqttc_stop(w);
	drv_stop(d);
	broker_destroy(b);
}

static struct out_msg
answer(const char *topic, const char *payload, bool with_corr)
{
	return (struct out_msg) { .cls = MSG_CRITICAL,
		.topic = topic,
		.payload = payload,
		.len = strlen(payload),
		.qos = 1,
		.props = { .content_type = "application/json",
		    .utf8 = true,
		    .correlation = with_corr ? CORR : NULL,
		    .correlation_len = with_corr ? sizeof(CORR) : 0 } };
}

/* An answer's correlation data reaches an MQTT 5 subscriber byte for
 * byte, whether it waited in the link's queue (published before the
 * CONNACK) or went straight out; a message without it carries none; a
 * 3.1.1 link drops it and still delivers the message. */
static void
test_correlation_out(void)
{
	struct broker *b = broker_create(NULL);
	CHECK_INT(broker_start(b), 0);
	struct mqttc *s = mqttc_start(broker_port(b), NULL, 5, "m4/#");
	int64_t until = loop_mono_ms() + 5000;
	while (!mqttc_ready(s) && loop_mono_ms() < until)
		usleep(5000);
	CHECK(mqttc_ready(s));
	struct drv *d = drv_start(broker_port(b), 5, "meta-out");
	CHECK_INT(mqtt_link_start(d->link), BR_OK);
	struct out_msg q = answer("m4/queued", "{\"q\":1}", true);
	CHECK_INT(mqtt_link_publish(d->link, &q), BR_OK); /* not up yet */
	struct mqtt_link_stats st;
	mqtt_link_get_stats(d->link, &st);
	CHECK_INT(st.queued, 1);
	CHECK(PUMP_UNTIL(d, mqtt_link_connected(d->link), 5000));
	struct out_msg direct = answer("m4/direct", "{\"d\":1}", true);
	CHECK_INT(mqtt_link_publish(d->link, &direct), BR_OK);
	struct out_msg none = answer("m4/none", "{}", false);
	CHECK_INT(mqtt_link_publish(d->link, &none), BR_OK);
	CHECK(PUMP_UNTIL(d, mqttc_count(s) >= 3, 5000));
	struct drv *d4 = drv_start(broker_port(b), 4, "meta-out-311");
	CHECK_INT(mqtt_link_start(d4->link), BR_OK);
	CHECK(PUMP_UNTIL(d4, mqtt_link_connected(d4->link), 5000));
	struct out_msg old = answer("m4/v311", "{\"o\":1}", true);
	CHECK_INT(mqtt_link_publish(d4->link, &old), BR_OK);
	CHECK(PUMP_UNTIL(d4, mqttc_count(s) >= 4, 5000));
	pthread_mutex_lock(&s->mu);
	CHECK_INT(s->n, 4);
	CHECK_STR(s->msgs[0].topic, "m4/queued");
	CHECK_STR(s->msgs[0].payload, "{\"q\":1}");
	CHECK(s->msgs[0].has_corr);
	CHECK_INT(s->msgs[0].corr_len, sizeof(CORR));
	CHECK(memcmp(s->msgs[0].corr, CORR, sizeof(CORR)) == 0);
	CHECK_STR(s->msgs[1].topic, "m4/direct");
	CHECK(s->msgs[1].has_corr);
	CHECK(memcmp(s->msgs[1].corr, CORR, sizeof(CORR)) == 0);
	CHECK_STR(s->msgs[2].topic, "m4/none");
	CHECK(!s->msgs[2].has_corr);
	CHECK_STR(s->msgs[3].topic, "m4/v311");
	CHECK_STR(s->msgs[3].payload, "{\"o\":1}");
	CHECK(!s->msgs[3].has_corr);
	pthread_mutex_unlock(&s->mu);
	drv_stop(d4);
	drv_stop(d);
	mqttc_stop(s);
	broker_destroy(b);
}

int
main(void)
{
	signal(SIGPIPE, SIG_IGN);
	mosquitto_lib_init();
	RUN(test_meta_v5);
	RUN(test_meta_311_absent);
	RUN(test_connection_number_grows);
	RUN(test_correlation_out);
	RUN(test_resent_before_suback);
	mosquitto_lib_cleanup();
	TEST_MAIN_END();
}
