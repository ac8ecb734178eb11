/* mqtt_link against a real mosquitto: offline queueing, broker restarts,
 * the queue bound, MQTT 5 properties, 3.1.1, a silent broker, routing by
 * topic filter, shutdown. The link runs in the real event loop, as in the
 * daemon; the test runs the loop for a while between its checks. */
#include "mqtt_link.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "helper_broker.h"
#include "helper_loop.h"
#include "helper_mqttc.h"
#include "test.h"

/* ---- the driver: the event loop ------------------------------------------
 */

struct drv {
	struct loop *loop;
	struct mqtt_link *link;
	char events[64]; /* 'C' connected (or 'c' session present), 'D' */
	int nev;
};

static void
drv_on_connected(void *ud, bool session_present)
{
	struct drv *d = ud;
	if (d->nev < (int) sizeof(d->events) - 1)
		d->events[d->nev++] = session_present ? 'c' : 'C';
}

static void
drv_on_disconnected(void *ud, const char *why)
{
	struct drv *d = ud;
	if (d->nev < (int) sizeof(d->events) - 1)
		d->events[d->nev++] = 'D';
	CHECK(why != NULL && why[0] != '\0');
}

/* Runs the loop for ms (at least one pass). */
static void
pump(struct drv *d, int ms)
{
	helper_wait_for(d->loop, NULL, NULL, ms);
}

#define PUMP_UNTIL(d, cond, timeout_ms)                                       \
	HELPER_LOOP_UNTIL((d)->loop, cond, timeout_ms)

static struct mqtt_link_stats
stats(struct drv *d)
{
	struct mqtt_link_stats s;
	mqtt_link_get_stats(d->link, &s);
	return s;
}

struct link_opts {
	int port;
	int protocol;
	const char *id;
	size_t queue_max;
	unsigned window;
	int keepalive;
	const char *will_topic;
	bool tls; /* with the system's CAs unless ca is set */
	const char *ca, *cert, *key; /* --tls-ca, --tls-cert, --tls-key */
	uint32_t max_packet; /* --mqtt-max-packet */
};

static struct drv *
drv_start(const struct link_opts *o)
{
	struct drv *d = calloc(1, sizeof(*d));
	d->loop = loop_create_tls(false);
	if (d->loop == NULL)
		abort();
	struct mqtt_link_cfg cfg = {
		.host = "127.0.0.1",
		.port = o->port,
		.client_id = o->id,
		.protocol = o->protocol,
		.tls = o->tls,
		.tls_opts = { .ca = o->ca, .cert = o->cert, .key = o->key },
		.keepalive_s = o->keepalive ? o->keepalive : 30,
		.will_topic = o->will_topic,
		.will_payload = "will-offline",
		.window = o->window,
		.queue_max_messages = o->queue_max ? o->queue_max : 100000,
		.queue_max_bytes = 64 * 1024 * 1024,
		.max_packet = o->max_packet,
	};
	struct mqtt_link_cb cb = { .on_connected = drv_on_connected,
		.on_disconnected = drv_on_disconnected };
	CHECK_INT(mqtt_link_create(d->loop, &cfg, &cb, d, &d->link), BR_OK);
	if (d->link == NULL)
		abort(); /* nothing below could run */
	CHECK_INT(mqtt_link_start(d->link), BR_OK);
	return d;
}

static void
drv_stop(struct drv *d)
{
	mqtt_link_destroy(d->link);
	loop_destroy(d->loop);
	free(d);
}

static int
publish_seq(
    struct drv *d, const char *topic, enum msg_class cls, int qos, int i)
{
	char payload[16];
	snprintf(payload, sizeof(payload), "%05d", i);
	struct out_msg m = { .cls = cls,
		.topic = topic,
		.payload = payload,
		.len = strlen(payload),
		.qos = qos };
	return mqtt_link_publish(d->link, &m);
}

/* The subscriber got exactly payloads first..first+n-1, in order. */
static void
check_seq(struct mqttc *s, int n)
{
	pthread_mutex_lock(&s->mu);
	CHECK_INT(s->n, n);
	int bad = 0;
	for (int i = 0; i < s->n && i < n; i++) {
		char want[16];
		snprintf(want, sizeof(want), "%05d", i);
		if (strcmp(s->msgs[i].payload, want) != 0 && bad++ < 3)
			TEST_FAIL("message %d is %s, expected %s", i,
			    s->msgs[i].payload, want);
	}
	CHECK_INT(bad, 0);
	pthread_mutex_unlock(&s->mu);
}

/* A persistent subscriber session, created and left offline. */
static void
make_offline_session(int port, const char *id, const char *topic)
{
	struct mqttc *s = mqttc_start(port, id, 4, topic);
	int64_t until = loop_mono_ms() + 5000;
	while (!mqttc_ready(s) && loop_mono_ms() < until)
		usleep(10000);
	CHECK(mqttc_ready(s));
	mqttc_stop(s);
}

/* ---- the link's log lines (stderr) ----------------------------------- */

struct capture {
	char path[32];
	int fd, saved;
	char text[16384];
};

static void
capture_start(struct capture *c)
{
	snprintf(c->path, sizeof(c->path), "/tmp/c2m-log-XXXXXX");
	c->fd = mkstemp(c->path);
	c->saved = dup(2);
	fflush(stderr);
	dup2(c->fd, 2);
}

/* Restores stderr and returns what was written meanwhile. */
static const char *
capture_end(struct capture *c)
{
	fflush(stderr);
	dup2(c->saved, 2);
	close(c->saved);
	ssize_t n = pread(c->fd, c->text, sizeof(c->text) - 1, 0);
	c->text[n > 0 ? n : 0] = '\0';
	close(c->fd);
	unlink(c->path);
	return c->text;
}

/* ---- scenarios ------------------------------------------------------- */

static void
test_broker_down_at_start(void)
{
	struct broker_opts bo = { .persistence = true };
	struct broker *b = broker_create(&bo);
	CHECK_INT(broker_start(b), 0);
	make_offline_session(broker_port(b), "sub-down-at-start", "t1/#");
	broker_stop(b);

	struct link_opts lo = { .port = broker_port(b),
		.protocol = 5,
		.id = "link-down-at-start" };
	struct drv *d = drv_start(&lo);
	for (int i = 0; i < 50; i++)
		CHECK_INT(publish_seq(d, "t1/x", MSG_CRITICAL, 1, i), BR_OK);
	pump(d, 200);
	struct mqtt_link_stats st = stats(d);
	CHECK(!st.connected);
	CHECK_INT(st.queued, 50);
	CHECK_INT(st.inflight, 0);
	CHECK_INT(st.published[MSG_CRITICAL], 0);

	CHECK_INT(broker_start(b), 0);
	struct mqttc *s
	    = mqttc_start(broker_port(b), "sub-down-at-start", 4, "t1/#");
	CHECK(PUMP_UNTIL(
	    d, mqttc_count(s) >= 50 && stats(d).inflight == 0, 15000));
	pump(d, 200); /* a quiet moment for stray duplicates to show up */
	check_seq(s, 50);
	st = stats(d);
	CHECK_INT(st.queued, 0);
	CHECK_INT(st.connects, 1);
	CHECK_INT(st.published[MSG_CRITICAL], 50);
	CHECK_STR(d->events, "C");
	mqttc_stop(s);
	drv_stop(d);
	broker_destroy(b);
}

/* The subscriber got payloads 0..n-1, each at least once, first
 * occurrences in order; returns the number of duplicates. */
static int
check_seq_at_least_once(struct mqttc *s, int n)
{
	pthread_mutex_lock(&s->mu);
	int next = 0, dups = 0, bad = 0;
	for (int i = 0; i < s->n; i++) {
		int v = atoi(s->msgs[i].payload);
		if (v == next)
			next++;
		else if (v < next)
			dups++;
		else if (bad++ < 3)
			TEST_FAIL(
			    "message %d is %d, expected %d (or a repeat)", i,
			    v, next);
	}
	CHECK_INT(next, n);
	CHECK_INT(bad, 0);
	pthread_mutex_unlock(&s->mu);
	return dups;
}

/* SIGTERM the broker in the middle of a stream of critical messages,
 * publish on during the outage, restart it. quiescent: the stop comes
 * when everything sent so far was acknowledged (then delivery is exactly
 * once); otherwise with a full in-flight window (then QoS 1 may repeat
 * what was in flight, never more, and order of first arrival holds). */
static void
restart_midstream(bool quiescent)
{
	struct broker_opts bo = { .persistence = true };
	struct broker *b = broker_create(&bo);
	CHECK_INT(broker_start(b), 0);
	struct mqttc *s
	    = mqttc_start(broker_port(b), "sub-restart", 4, "t2/#");
	unsigned window = 50;
	struct link_opts lo = { .port = broker_port(b),
		.protocol = 5,
		.id = "link-restart",
		.window = window };
	struct drv *d = drv_start(&lo);
	CHECK(PUMP_UNTIL(d, stats(d).connected && mqttc_ready(s), 5000));
	CHECK_STR(d->events, "C");

	int i = 0;
	for (; i < 300; i++) {
		CHECK_INT(publish_seq(d, "t2/x", MSG_CRITICAL, 1, i), BR_OK);
		if (i % 20 == 0)
			pump(d, 1);
	}
	if (quiescent) {
		CHECK(PUMP_UNTIL(d,
		    mqttc_count(s) >= 300 && stats(d).inflight == 0
		        && stats(d).queued == 0,
		    10000));
		/* else the subscriber's own unacknowledged deliveries come
		 * back after the restart, which is not the link's doing */
		CHECK(mqttc_sync(s));
	} else {
		CHECK(stats(d).inflight > 0);
	}
	broker_stop(b);
	CHECK(PUMP_UNTIL(d, !stats(d).connected, 5000));
	CHECK_STR(d->events, "CD");
	size_t queued_before = stats(d).queued;
	for (; i < 600; i++)
		CHECK_INT(publish_seq(d, "t2/x", MSG_CRITICAL, 1, i), BR_OK);
	pump(d, 1);
	/* nothing is handed to libmosquitto while the broker is away */
	CHECK_INT(stats(d).queued, queued_before + 300);

	CHECK_INT(broker_start(b), 0);
	for (; i < 900; i++) {
		CHECK_INT(publish_seq(d, "t2/x", MSG_CRITICAL, 1, i), BR_OK);
		if (i % 20 == 0)
			pump(d, 1);
	}
	CHECK(PUMP_UNTIL(d,
	    mqttc_count(s) >= 900 && stats(d).queued == 0
	        && stats(d).inflight == 0,
	    20000));
	pump(d, 200); /* a quiet moment for stray duplicates to show up */
	if (quiescent) {
		check_seq(s, 900);
	} else {
		int dups = check_seq_at_least_once(s, 900);
		fprintf(stderr, "restart mid-burst: %d repeats\n", dups);
		CHECK(dups <= (int) window * 2); /* ours + the subscriber's */
	}
	/* the session expiry interval on CONNECT kept the session */
	CHECK_STR(d->events, "CDc");
	struct mqtt_link_stats st = stats(d);
	CHECK_INT(st.connects, 2);
	CHECK_INT(st.disconnects, 1);
	CHECK_INT(st.published[MSG_CRITICAL], 900);
	CHECK_INT(st.dropped[MSG_CRITICAL], 0);
	mqttc_stop(s);
	drv_stop(d);
	broker_destroy(b);
}

static void
test_broker_restart_quiescent(void)
{
	restart_midstream(true);
}

static void
test_broker_restart_mid_burst(void)
{
	restart_midstream(false);
}

/* Bursts of QoS 0 and 1 messages, serviced once per burst (as the daemon
 * does after each pass of its loop): every message arrives exactly once
 * and in order. */
static void
test_mixed_bursts_deliver_in_order(void)
{
	struct broker *b = broker_create(NULL);
	CHECK_INT(broker_start(b), 0);
	struct mqttc *s0 = mqttc_start(broker_port(b), NULL, 5, "t9/q0");
	struct mqttc *s1 = mqttc_start(broker_port(b), NULL, 5, "t9/q1");
	struct link_opts lo = { .port = broker_port(b),
		.protocol = 5,
		.id = "link-bursts",
		.window = 200 };
	struct drv *d = drv_start(&lo);
	CHECK(PUMP_UNTIL(d,
	    stats(d).connected && mqttc_ready(s0) && mqttc_ready(s1), 5000));
	enum { N = 2000, BATCH = 150 };
	int i0 = 0, i1 = 0;
	for (int k = 0; k < 2 * N; k++) {
		/* an uneven mix, so batches hold both kinds */
		bool qos1 = k % 3 == 0 ? i1 < N : i0 >= N;
		int rc = qos1
		    ? publish_seq(d, "t9/q1", MSG_CRITICAL, 1, i1++)
		    : publish_seq(d, "t9/q0", MSG_LIFECYCLE, 0, i0++);
		CHECK_INT(rc, BR_OK);
		if (k % BATCH == BATCH - 1)
			pump(d, 0);
	}
	CHECK(PUMP_UNTIL(d,
	    mqttc_count(s0) >= N && mqttc_count(s1) >= N
	        && stats(d).queued == 0 && stats(d).inflight == 0,
	    20000));
	check_seq(s0, N);
	check_seq(s1, N);
	/* and each publish wakes the network thread at once: a lone message
	 * must not wait for its poll tick (5 in a row, so a tick that
	 * happens to come soon cannot hide a missing wake-up) */
	for (int r = 0; r < 5; r++) {
		int before = mqttc_count(s1);
		CHECK_INT(
		    publish_seq(d, "t9/q1", MSG_CRITICAL, 1, N + r), BR_OK);
		pump(d, 0);
		int64_t until = loop_mono_ms() + 300;
		while (mqttc_count(s1) <= before && loop_mono_ms() < until)
			usleep(1000);
		CHECK_INT(mqttc_count(s1), before + 1);
	}
	struct mqtt_link_stats st = stats(d);
	CHECK_INT(st.published[MSG_CRITICAL], N + 5);
	CHECK_INT(st.published[MSG_LIFECYCLE], N);
	CHECK_INT(st.dropped[MSG_LIFECYCLE], 0);
	mqttc_stop(s0);
	mqttc_stop(s1);
	drv_stop(d);
	broker_destroy(b);
}

/* Publishes N QoS 1 messages one at a time, servicing the link after
 * each, so PUBACKs stream back; every one arrives in order and is
 * acknowledged. */
static void
stream_acks(const struct broker_opts *bo)
{
	enum { N = 3000 };
	struct broker *b = broker_create(bo);
	CHECK_INT(broker_start(b), 0);
	struct mqttc *s = mqttc_start(broker_port(b), NULL, 5, "t10/q1");
	struct link_opts lo = { .port = broker_port(b),
		.protocol = 5,
		.id = "link-stream",
		.window = 1000 };
	struct drv *d = drv_start(&lo);
	CHECK(PUMP_UNTIL(d, stats(d).connected && mqttc_ready(s), 5000));
	for (int i = 0; i < N; i++) {
		CHECK_INT(publish_seq(d, "t10/q1", MSG_CRITICAL, 1, i), BR_OK);
		pump(d, 0);
	}
	CHECK(PUMP_UNTIL(d,
	    mqttc_count(s) >= N && stats(d).queued == 0
	        && stats(d).inflight == 0,
	    20000));
	check_seq(s, N);
	CHECK_INT(stats(d).published[MSG_CRITICAL], N);
	mqttc_stop(s);
	drv_stop(d);
	broker_destroy(b);
}

/* Acknowledgements streaming back, with and without a broker receive
 * maximum (20, mosquitto's default) below the window: libmosquitto then
 * holds messages back until acknowledgements are read. */
static void
test_acks_stream(void)
{
	stream_acks(NULL);
	struct broker_opts small
	    = { .extra_conf = "max_inflight_messages 20" };
	stream_acks(&small);
}

struct route_rx {
	int n;
	char last[64];
};

static void
route_fn(void *ud, const char *topic, const void *payload, size_t len)
{
	struct route_rx *r = ud;
	r->n++;
	snprintf(r->last, sizeof(r->last), "%s=%.*s", topic, (int) len,
	    (const char *) payload);
}

/* Subscriptions route by topic filter: each message goes to the filter
 * it matches (wildcards included), subscribed before or after the
 * connect, and again after a broker restart. (The filters do not overlap:
 * mosquitto sends a message once per matching subscription.) With MQTT 5
 * what the link publishes itself does not come back (no local); another
 * client's messages do. */
static void
test_subscriptions_route_by_filter(void)
{
	struct broker *b = broker_create(NULL);
	CHECK_INT(broker_start(b), 0);
	struct link_opts lo
	    = { .port = broker_port(b), .protocol = 5, .id = "link-routes" };
	struct drv *d = drv_start(&lo);
	struct route_rx ra = { 0 }, rl = { 0 }, rc = { 0 };
	CHECK_INT(mqtt_link_subscribe(d->link, "t11/a/+", route_fn, &ra), 0);
	CHECK_INT(mqtt_link_subscribe(d->link, "t11/+", route_fn, &rl), 0);
	CHECK_INT(
	    mqtt_link_subscribe(d->link, "t11/#/x", route_fn, &rc), BR_EINVAL);
	CHECK(PUMP_UNTIL(d, stats(d).connected, 5000));
	CHECK_INT(mqtt_link_subscribe(d->link, "t12/#", route_fn, &rc), 0);
	pump(d, 200); /* the SUBSCRIBEs are answered */
	/* its own publication is not read back */
	CHECK_INT(publish_seq(d, "t12/own", MSG_CRITICAL, 1, 9), BR_OK);
	struct link_opts po = {
		.port = broker_port(b), .protocol = 5, .id = "link-routes-pub"
	};
	struct drv *p = drv_start(&po);
	CHECK(PUMP_UNTIL(p, stats(p).connected, 5000));
	CHECK_INT(publish_seq(p, "t11/a/x", MSG_CRITICAL, 1, 1), BR_OK);
	CHECK_INT(publish_seq(p, "t11/b", MSG_CRITICAL, 1, 2), BR_OK);
	CHECK_INT(publish_seq(p, "t12/c", MSG_CRITICAL, 1, 3), BR_OK);
	pump(p, 300);
	CHECK(PUMP_UNTIL(d, rl.n >= 1 && ra.n >= 1 && rc.n >= 1, 5000));
	pump(d, 100);
	CHECK_INT(ra.n, 1);
	CHECK_STR(ra.last, "t11/a/x=00001");
	CHECK_INT(rl.n, 1);
	CHECK_STR(rl.last, "t11/b=00002");
	CHECK_INT(rc.n, 1);
	CHECK_STR(rc.last, "t12/c=00003");
	/* re-subscribed after a restart (new session: no persistence) */
	broker_stop(b);
	CHECK(PUMP_UNTIL(d, !stats(d).connected, 5000));
	CHECK_INT(broker_start(b), 0);
	CHECK(PUMP_UNTIL(d, stats(d).connected, 10000));
	CHECK(PUMP_UNTIL(p, stats(p).connected, 10000));
	pump(d, 200);
	CHECK_INT(publish_seq(p, "t12/c", MSG_CRITICAL, 1, 4), BR_OK);
	pump(p, 300);
	CHECK(PUMP_UNTIL(d, rc.n >= 2, 5000));
	CHECK_STR(rc.last, "t12/c=00004");
	drv_stop(p);
	drv_stop(d);
	broker_destroy(b);
}

/* What the broker sent while the link was busy is read in one go: the
 * acknowledgements of a burst, interleaved (MQTT 3.1.1 has no no-local)
 * with the link's own messages coming back to it. A read used to end after
 * one packet (bridge/README.md#mosquitto-stale-eagain), so a busy bridge
 * read one acknowledgement per pass of the loop, its window filled with
 * messages the broker had long taken, and progress was coalesced away.
 * N stays below the link's 256 QoS 1 messages in flight, so the whole
 * burst goes out in one pass. */
static void
test_burst_acks_read_together(void)
{
	enum { N = 250, PASSES = 10 };
	struct broker *b = broker_create(NULL);
	CHECK_INT(broker_start(b), 0);
	struct mqttc *s = mqttc_start(broker_port(b), NULL, 5, "t20/#");
	struct link_opts lo = { .port = broker_port(b),
		.protocol = 4,
		.id = "link-read-together",
		.window = 1000 };
	struct drv *d = drv_start(&lo);
	struct route_rx own = { 0 };
	CHECK_INT(mqtt_link_subscribe(d->link, "t20/#", route_fn, &own), 0);
	CHECK(PUMP_UNTIL(d, stats(d).connected && mqttc_ready(s), 5000));
	pump(d, 200); /* the SUBSCRIBE is answered */
	for (int i = 0; i < N; i++)
		CHECK_INT(publish_seq(d, "t20/x", MSG_CRITICAL, 1, i), BR_OK);
	pump(d, 0); /* the pass that finds the socket writable sends all */
	/* the loop stands still while the broker answers: once the other
	 * subscriber's round trip is done, the broker has handled every
	 * message and written every acknowledgement */
	int64_t until = loop_mono_ms() + 10000;
	while (mqttc_count(s) < N && loop_mono_ms() < until)
		usleep(1000);
	CHECK_INT(mqttc_count(s), N);
	CHECK(mqttc_sync(s));
	int passes = 0;
	while (stats(d).inflight > 0 && passes < PASSES) {
		pump(d, 0);
		passes++;
	}
	CHECK_INT(stats(d).inflight, 0);
	CHECK(PUMP_UNTIL(d, own.n >= N, 10000));
	CHECK_INT(own.n, N);
	check_seq(s, N);
	mqttc_stop(s);
	drv_stop(d);
	broker_destroy(b);
}

/* At most 256 QoS 1 messages wait for their acknowledgement in
 * libmosquitto, which walks all of them for each one
 * (bridge/README.md#mosquitto-inflight-walk); the rest wait in the queue
 * and all arrive, in order. QoS 0 messages are not held back by it. */
static void
test_qos1_window(void)
{
	enum { N = 700 };
	struct broker *b = broker_create(NULL);
	CHECK_INT(broker_start(b), 0);
	struct mqttc *s = mqttc_start(broker_port(b), NULL, 5, "t21/#");
	struct link_opts lo = { .port = broker_port(b),
		.id = "link-qos1-window",
		.window = 1000 };
	struct drv *d = drv_start(&lo);
	CHECK(PUMP_UNTIL(d, stats(d).connected && mqttc_ready(s), 5000));
	for (int i = 0; i < N; i++)
		CHECK_INT(publish_seq(d, "t21/x", MSG_CRITICAL, 1, i), BR_OK);
	CHECK_INT(stats(d).inflight, 256);
	CHECK_INT(stats(d).queued, N - 256);
	CHECK(PUMP_UNTIL(
	    d, mqttc_count(s) >= N && stats(d).inflight == 0, 10000));
	CHECK_INT(mqttc_count(s), N);
	check_seq(s, N);
	mqttc_stop(s);
	drv_stop(d);
	broker_destroy(b);
}

/* An ended subscription: the broker is told (MQTT 3.1.1 would otherwise
 * send back every message the link publishes on it), and a reconnect
 * does not subscribe it again. */
static void
test_unsubscribe(void)
{
	struct broker *b = broker_create(NULL);
	CHECK_INT(broker_start(b), 0);
	struct link_opts lo = {
		.port = broker_port(b), .protocol = 4, .id = "link-unsubscribe"
	};
	struct drv *d = drv_start(&lo);
	struct route_rx own = { 0 }, other = { 0 };
	CHECK_INT(mqtt_link_subscribe(d->link, "t22/#", route_fn, &own), 0);
	CHECK_INT(mqtt_link_subscribe(d->link, "u22/#", route_fn, &other), 0);
	CHECK(PUMP_UNTIL(d, stats(d).connected, 5000));
	pump(d, 200);
	CHECK_INT(publish_seq(d, "t22/x", MSG_CRITICAL, 1, 1), BR_OK);
	CHECK(PUMP_UNTIL(d, own.n == 1, 5000));
	CHECK_INT(mqtt_link_unsubscribe(d->link, "t22/#", route_fn, &own), 0);
	CHECK_INT(mqtt_link_unsubscribe(d->link, "t22/#", route_fn, &own),
	    BR_EINVAL);
	pump(d, 200);
	CHECK_INT(publish_seq(d, "t22/x", MSG_CRITICAL, 1, 2), BR_OK);
	CHECK_INT(publish_seq(d, "u22/x", MSG_CRITICAL, 1, 3), BR_OK);
	CHECK(PUMP_UNTIL(d, other.n == 1, 5000));
	pump(d, 200);
	CHECK_INT(own.n, 1);
	CHECK_STR(other.last, "u22/x=00003");
	drv_stop(d);
	broker_destroy(b);
}

static void
test_queue_bound_during_outage(void)
{
	struct broker_opts bo = { .persistence = true };
	struct broker *b = broker_create(&bo);
	CHECK_INT(broker_start(b), 0);
	struct mqttc *s = mqttc_start(broker_port(b), "sub-bound", 4, "t3/#");
	struct link_opts lo = { .port = broker_port(b),
		.protocol = 5,
		.id = "link-bound",
		.queue_max = 20 };
	struct drv *d = drv_start(&lo);
	CHECK(PUMP_UNTIL(d, stats(d).connected && mqttc_ready(s), 5000));
	broker_stop(b);
	CHECK(PUMP_UNTIL(d, !stats(d).connected, 5000));

	/* 10 critical and 30 progress messages (QoS 1, so the offline
	 * subscriber session keeps them) */
	char expected[40][16];
	int nexp = 0, progress_seen = 0;
	for (int i = 0; i < 40; i++) {
		bool critical = i % 4 == 0;
		CHECK_INT(publish_seq(d, "t3/x",
		              critical ? MSG_CRITICAL : MSG_PROGRESS, 1, i),
		    BR_OK);
		/* the 20 oldest progress messages must make room */
		if (critical || progress_seen++ >= 20)
			snprintf(expected[nexp++], 16, "%05d", i);
	}
	struct mqtt_link_stats st = stats(d);
	CHECK_INT(st.queued, 20);
	CHECK_INT(st.dropped[MSG_PROGRESS], 20);
	CHECK_INT(st.dropped[MSG_CRITICAL], 0);

	CHECK_INT(broker_start(b), 0);
	CHECK(PUMP_UNTIL(
	    d, mqttc_count(s) >= nexp && stats(d).inflight == 0, 15000));
	pump(d, 200);
	pthread_mutex_lock(&s->mu);
	CHECK_INT(s->n, nexp);
	CHECK_INT(40 - s->n, st.dropped[MSG_PROGRESS]);
	for (int i = 0; i < s->n && i < nexp; i++)
		CHECK_STR(s->msgs[i].payload, expected[i]);
	pthread_mutex_unlock(&s->mu);
	mqttc_stop(s);
	drv_stop(d);
	broker_destroy(b);
}

/* QoS 0 messages still waiting in libmosquitto when the link drops are
 * lost (it frees them without on_publish): they are counted as dropped, by
 * class. The broker is stopped (SIGSTOP) so that the socket fills and
 * libmosquitto keeps the rest, then killed. */
static void
test_qos0_lost_in_a_drop_is_counted(void)
{
	struct broker_opts bo = { 0 };
	struct broker *b = broker_create(&bo);
	CHECK_INT(broker_start(b), 0);
	struct link_opts lo
	    = { .port = broker_port(b), .protocol = 5, .id = "link-qos0" };
	struct drv *d = drv_start(&lo);
	CHECK(PUMP_UNTIL(d, stats(d).connected, 5000));
	broker_signal(b, SIGSTOP);
	static char big[32768];
	memset(big, 'x', sizeof(big));
	struct out_msg m = { .cls = MSG_PROGRESS,
		.topic = "t9/x",
		.payload = big,
		.len = sizeof(big),
		.qos = 0 };
	for (int i = 0; i < 400; i++)
		CHECK_INT(mqtt_link_publish(d->link, &m), BR_OK);
	CHECK(PUMP_UNTIL(d, stats(d).published[MSG_PROGRESS] == 400, 5000));
	/* the socket takes what it can, then nothing moves */
	unsigned left = stats(d).inflight;
	for (int i = 0; i < 20; i++) {
		pump(d, 50);
		unsigned now = stats(d).inflight;
		if (now == left && i >= 5)
			break;
		left = now;
	}
	CHECK(left > 0);
	CHECK_INT(stats(d).dropped[MSG_PROGRESS], 0);
	broker_signal(b, SIGKILL);
	CHECK(PUMP_UNTIL(d, !stats(d).connected, 5000));
	struct mqtt_link_stats st = stats(d);
	CHECK_INT(st.inflight, 0);
	CHECK_INT(st.dropped[MSG_PROGRESS], left);
	CHECK_INT(st.dropped[MSG_CRITICAL], 0);
	drv_stop(d);
	broker_destroy(b);
}

static void
test_v5_properties(void)
{
	struct broker_opts bo = { .extra_conf = "max_packet_size 100000" };
	struct broker *b = broker_create(&bo);
	CHECK_INT(broker_start(b), 0);
	struct mqttc *s = mqttc_start(broker_port(b), NULL, 5, "t4/#");
	struct link_opts lo
	    = { .port = broker_port(b), .protocol = 5, .id = "link-props" };
	struct drv *d = drv_start(&lo);
	CHECK(PUMP_UNTIL(d, stats(d).connected && mqttc_ready(s), 5000));
	CHECK_INT(mqtt_link_max_packet(d->link), 100000);

	struct out_msg m = {
		.cls = MSG_PROGRESS,
		.topic = "t4/a",
		.payload = "{}",
		.len = 2,
		.qos = 1,
		.props = { .content_type = "application/json",
		    .utf8 = true,
		    .expiry_s = 60,
		    .instance = "gpu1",
		    .type = "progress",
		    .prompt_id = "p-1" },
	};
	CHECK_INT(mqtt_link_publish(d->link, &m), BR_OK);
	struct out_msg bare = {
		.cls = MSG_PREVIEW, .topic = "t4/b", .payload = "raw", .len = 3
	};
	CHECK_INT(mqtt_link_publish(d->link, &bare), BR_OK);
	struct out_msg some = { .cls = MSG_LIFECYCLE,
		.topic = "t4/c",
		.payload = "x",
		.len = 1,
		.qos = 1,
		.props = { .type = "queued" } };
	CHECK_INT(mqtt_link_publish(d->link, &some), BR_OK);
	CHECK(PUMP_UNTIL(d, mqttc_count(s) >= 3, 5000));
	pthread_mutex_lock(&s->mu);
	CHECK_INT(s->n, 3);
	CHECK_STR(s->msgs[0].payload, "{}");
	CHECK_STR(s->msgs[0].content_type, "application/json");
	CHECK_INT(s->msgs[0].pfi, 1);
	CHECK(s->msgs[0].expiry > 50 && s->msgs[0].expiry <= 60);
	CHECK_STR(
	    s->msgs[0].user, "instance=gpu1;type=progress;prompt_id=p-1;");
	CHECK_STR(s->msgs[1].payload, "raw");
	CHECK_STR(s->msgs[1].content_type, "");
	CHECK_INT(s->msgs[1].pfi, -1);
	CHECK_INT(s->msgs[1].expiry, -1);
	CHECK_STR(s->msgs[1].user, "");
	CHECK_STR(s->msgs[2].user, "type=queued;");
	pthread_mutex_unlock(&s->mu);
	struct mqtt_link_stats st = stats(d);
	CHECK_INT(st.published[MSG_PROGRESS], 1);
	CHECK_INT(st.published[MSG_PREVIEW], 1);
	CHECK_INT(st.published[MSG_LIFECYCLE], 1);
	CHECK(PUMP_UNTIL(d, stats(d).inflight == 0, 5000));
	mqttc_stop(s);
	drv_stop(d);
	broker_destroy(b);
}

static void
test_mqtt311(void)
{
	struct broker *b = broker_create(NULL);
	CHECK_INT(broker_start(b), 0);
	struct mqttc *s = mqttc_start(broker_port(b), NULL, 5, "t5/#");
	struct link_opts lo
	    = { .port = broker_port(b), .protocol = 4, .id = "link-311" };
	struct drv *d = drv_start(&lo);
	CHECK(PUMP_UNTIL(d, stats(d).connected && mqttc_ready(s), 5000));
	CHECK_STR(d->events, "C");
	CHECK_INT(mqtt_link_max_packet(d->link), 0);
	struct out_msg m = {
		.cls = MSG_CRITICAL,
		.topic = "t5/a",
		.payload = "v311",
		.len = 4,
		.qos = 1,
		.props = { .content_type = "text/plain",
		    .utf8 = true,
		    .expiry_s = 60,
		    .instance = "gpu1" },
	};
	CHECK_INT(mqtt_link_publish(d->link, &m), BR_OK);
	for (int i = 0; i < 20; i++)
		CHECK_INT(publish_seq(d, "t5/seq", MSG_PROGRESS, 0, i), BR_OK);
	CHECK(PUMP_UNTIL(
	    d, mqttc_count(s) >= 21 && stats(d).inflight == 0, 5000));
	pthread_mutex_lock(&s->mu);
	CHECK_INT(s->n, 21);
	CHECK_STR(s->msgs[0].payload, "v311");
	CHECK_STR(s->msgs[0].content_type, "");
	CHECK_STR(s->msgs[0].user, "");
	CHECK_INT(s->msgs[0].expiry, -1);
	CHECK_STR(s->msgs[20].payload, "00019");
	pthread_mutex_unlock(&s->mu);
	mqttc_stop(s);
	drv_stop(d);
	broker_destroy(b);
}

/* A 3.1.1 broker with max_packet_size 2048 drops the connection of a
 * client that sends a larger packet, and libmosquitto resends an
 * unacknowledged message after every reconnect: one 6 kB message used to
 * loop for ever and nothing after it arrived. With --mqtt-max-packet the
 * link drops it before it leaves, counts it, and the rest flows. */
static void
test_max_packet_311(void)
{
	struct broker_opts bo = { .extra_conf = "max_packet_size 2048\n" };
	struct broker *b = broker_create(&bo);
	CHECK_INT(broker_start(b), 0);
	struct mqttc *s = mqttc_start(broker_port(b), NULL, 4, "mp/#");
	struct link_opts lo = { .port = broker_port(b),
		.protocol = 4,
		.id = "link-maxpkt",
		.max_packet = 2048 };
	struct drv *d = drv_start(&lo);
	CHECK(PUMP_UNTIL(d, stats(d).connected && mqttc_ready(s), 5000));
	CHECK_INT(mqtt_link_max_packet(d->link), 2048);
	static char big[6000];
	memset(big, 'x', sizeof(big));
	struct out_msg m = { .cls = MSG_CRITICAL,
		.topic = "mp/prompt/p1/completion",
		.payload = big,
		.len = sizeof(big),
		.qos = 1 };
	CHECK_INT(mqtt_link_publish(d->link, &m), BR_OK);
	for (int i = 0; i < 5; i++)
		CHECK_INT(publish_seq(d, "mp/seq", MSG_CRITICAL, 1, i), BR_OK);
	CHECK(PUMP_UNTIL(
	    d, mqttc_count(s) >= 5 && stats(d).inflight == 0, 5000));
	pump(d, 300);
	check_seq(s, 5);
	CHECK_STR(d->events, "C");
	CHECK_INT(stats(d).oversize[MSG_CRITICAL], 1);
	CHECK_INT(stats(d).dropped[MSG_CRITICAL], 1);
	CHECK_INT(stats(d).published[MSG_CRITICAL], 5);
	/* a message that fits still goes */
	m.len = 1500;
	CHECK_INT(mqtt_link_publish(d->link, &m), BR_OK);
	CHECK(PUMP_UNTIL(d, mqttc_count(s) >= 6, 5000));
	CHECK_STR(d->events, "C");
	mqttc_stop(s);
	drv_stop(d);
	broker_destroy(b);
}

/* Without --mqtt-max-packet a 3.1.1 link cannot know the broker's
 * limit: the broker drops the link right after the oversize message, and
 * libmosquitto resends it after every reconnect. After three such quick
 * losses with the same oldest message the link drops it as poison (counted
 * as dropped) and later messages arrive again. */
static void
test_poison_message_dropped(void)
{
	struct broker_opts bo = { .extra_conf = "max_packet_size 2048\n" };
	struct broker *b = broker_create(&bo);
	CHECK_INT(broker_start(b), 0);
	struct mqttc *s = mqttc_start(broker_port(b), NULL, 4, "pz/#");
	struct link_opts lo
	    = { .port = broker_port(b), .protocol = 4, .id = "link-poison" };
	struct drv *d = drv_start(&lo);
	CHECK(PUMP_UNTIL(d, stats(d).connected && mqttc_ready(s), 5000));
	static char big[6000];
	memset(big, 'x', sizeof(big));
	struct out_msg m = { .cls = MSG_CRITICAL,
		.topic = "pz/prompt/p1/completion",
		.payload = big,
		.len = sizeof(big),
		.qos = 1 };
	CHECK_INT(mqtt_link_publish(d->link, &m), BR_OK);
	CHECK(PUMP_UNTIL(d, stats(d).dropped[MSG_CRITICAL] >= 1, 20000));
	CHECK_INT(stats(d).dropped[MSG_CRITICAL], 1);
	/* its size is the limit from now on: the same again is dropped as
	 * oversize, at once when connected, else when the reconnect would
	 * send it (a loaded machine may still be reconnecting here) */
	CHECK_INT(mqtt_link_max_packet(d->link), 6030 - 1);
	CHECK_INT(mqtt_link_publish(d->link, &m), BR_OK);
	CHECK(PUMP_UNTIL(d, stats(d).oversize[MSG_CRITICAL] >= 1, 10000));
	CHECK_INT(stats(d).oversize[MSG_CRITICAL], 1);
	for (int i = 0; i < 5; i++)
		CHECK_INT(publish_seq(d, "pz/seq", MSG_CRITICAL, 1, i), BR_OK);
	CHECK(PUMP_UNTIL(
	    d, mqttc_count(s) >= 5 && stats(d).inflight == 0, 10000));
	pump(d, 300);
	check_seq(s, 5);
	CHECK(stats(d).connected);
	CHECK_INT(stats(d).dropped[MSG_CRITICAL], 2);
	mqttc_stop(s);
	drv_stop(d);
	broker_destroy(b);
}

/* An ACL denial: mosquitto answers the MQTT 5 PUBLISH with PUBACK 0x87
 * (not authorized). Such a message counts as refused (by reason), not as
 * published. */
static void
test_acl_refusal_counted(void)
{
	char acl[] = "/tmp/c2m-acl-XXXXXX";
	int fd = mkstemp(acl);
	CHECK(fd >= 0);
	const char *rules = "topic readwrite ok/#\ntopic readwrite sync/#\n";
	CHECK(write(fd, rules, strlen(rules)) == (ssize_t) strlen(rules));
	close(fd);
	char conf[128];
	/* mosquitto 2.0.11 drops a client after a denied QoS 1 publish
	 * when max_queued_messages is 0 (the helper's setting) */
	snprintf(conf, sizeof(conf), "acl_file %s\nmax_queued_messages 1000\n",
	    acl);
	struct broker_opts bo = { .extra_conf = conf };
	struct broker *b = broker_create(&bo);
	CHECK_INT(broker_start(b), 0);
	struct mqttc *s = mqttc_start(broker_port(b), NULL, 5, "ok/#");
	struct link_opts lo
	    = { .port = broker_port(b), .protocol = 5, .id = "link-acl" };
	struct drv *d = drv_start(&lo);
	CHECK(PUMP_UNTIL(d, stats(d).connected && mqttc_ready(s), 5000));
	CHECK_INT(publish_seq(d, "ok/seq", MSG_CRITICAL, 1, 0), BR_OK);
	CHECK_INT(publish_seq(d, "deny/p1/state", MSG_CRITICAL, 1, 1), BR_OK);
	CHECK_INT(publish_seq(d, "deny/p2/state", MSG_CRITICAL, 1, 2), BR_OK);
	CHECK_INT(publish_seq(d, "ok/seq", MSG_CRITICAL, 1, 1), BR_OK);
	CHECK(PUMP_UNTIL(
	    d, mqttc_count(s) >= 2 && stats(d).inflight == 0, 5000));
	struct mqtt_link_stats st = stats(d);
	CHECK_INT(st.refused[MSG_CRITICAL], 2);
	CHECK_INT(st.refused_by[PR_NOT_AUTHORIZED], 2);
	CHECK_INT(st.refused_by[PR_OTHER], 0);
	CHECK_INT(st.published[MSG_CRITICAL], 2);
	CHECK_INT(st.dropped[MSG_CRITICAL], 0);
	CHECK_STR(d->events, "C");
	check_seq(s, 2);
	mqttc_stop(s);
	drv_stop(d);
	broker_destroy(b);
	unlink(acl);
}

/* Critical messages (state, completion) dropped by the queue bound are
 * logged at warn, not only counted in bridge/health. */
static void
test_critical_drops_logged(void)
{
	struct broker *b = broker_create(NULL);
	struct link_opts lo = { .port = broker_port(b),
		.protocol = 5,
		.id = "link-crit",
		.queue_max = 10 };
	struct capture cap;
	capture_start(&cap);
	struct drv *d = drv_start(&lo);
	for (int i = 0; i < 15; i++)
		CHECK_INT(
		    publish_seq(d, "cr/prompt/p/state", MSG_CRITICAL, 1, i),
		    BR_OK);
	pump(d, 50);
	const char *text = capture_end(&cap);
	CHECK_INT(stats(d).dropped[MSG_CRITICAL], 5);
	CHECK(strstr(text, "WARN  [mqtt] the outgoing queue is full") != NULL);
	CHECK(strstr(text, "critical messages (state, completion) dropped")
	    != NULL);
	drv_stop(d);
	broker_destroy(b);
}

/* An MQTT 3.1.1 refusal names its CONNACK code's reason in the log: a
 * broker without anonymous access answers 5, not authorized. */
static void
test_mqtt311_refusal_named(void)
{
	struct broker_opts bo = { .extra_conf = "allow_anonymous false\n" };
	struct broker *b = broker_create(&bo);
	CHECK_INT(broker_start(b), 0);
	struct capture cap;
	capture_start(&cap);
	struct link_opts lo
	    = { .port = broker_port(b), .protocol = 4, .id = "link-refused" };
	struct drv *d = drv_start(&lo);
	CHECK(PUMP_UNTIL(d, stats(d).connect_failures >= 1, 5000));
	pump(d, 100);
	const char *text = capture_end(&cap);
	CHECK(strstr(text,
	          "refused the connection: not authorized (CONNACK "
	          "code 5)")
	    != NULL);
	CHECK(!stats(d).connected);
	drv_stop(d);
	broker_destroy(b);
}

/* A listener that completes TCP handshakes (backlog) and never answers. */
static int
silent_listener(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in sa
	    = { .sin_family = AF_INET, .sin_port = htons((uint16_t) port) };
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) != 0
	    || listen(fd, 64) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* libmosquitto 2.0.11 itself drops a connection whose CONNACK does not
 * come within keepalive (measured: 5.0 s for keepalive 5) and the link
 * retries with its backoff, so no extra CONNACK watchdog is needed; this
 * pins that. */
static void
test_silent_broker(void)
{
	struct broker *b = broker_create(NULL);
	int fd = silent_listener(broker_port(b));
	CHECK(fd >= 0);
	struct link_opts lo = { .port = broker_port(b),
		.protocol = 5,
		.id = "link-silent",
		.keepalive = 5 };
	struct drv *d = drv_start(&lo);
	int64_t t0 = loop_mono_ms();
	for (int i = 0; i < 5; i++)
		CHECK_INT(publish_seq(d, "t6/x", MSG_CRITICAL, 1, i), BR_OK);
	/* the silent peer keeps the link down; the attempt is given up
	 * after keepalive, not hung for ever */
	CHECK(PUMP_UNTIL(d, stats(d).connect_failures >= 1, 8000));
	int64_t gave_up = loop_mono_ms() - t0;
	CHECK(gave_up >= 4500 && gave_up <= 7000);
	CHECK(!stats(d).connected);
	CHECK_INT(stats(d).queued, 5);
	/* a real broker takes the silent one's place */
	close(fd);
	CHECK_INT(broker_start(b), 0);
	struct mqttc *s = mqttc_start(broker_port(b), NULL, 4, "t6/#");
	CHECK(PUMP_UNTIL(d, stats(d).connected && mqttc_ready(s), 20000));
	fprintf(stderr,
	    "silent broker: gave up after %.1f s, connected %.1f s "
	    "after start\n",
	    gave_up / 1000.0, (loop_mono_ms() - t0) / 1000.0);
	CHECK(PUMP_UNTIL(d, mqttc_count(s) >= 5, 5000));
	check_seq(s, 5);
	CHECK_STR(d->events, "C");
	mqttc_stop(s);
	drv_stop(d);
	broker_destroy(b);
}

struct garbage_srv {
	int fd;
	int conns;
	volatile bool stop;
	pthread_t th;
};

/* Answers every CONNECT with a malformed CONNACK. */
static void *
garbage_main(void *arg)
{
	struct garbage_srv *g = arg;
	while (!g->stop) {
		struct pollfd pfd = { .fd = g->fd, .events = POLLIN };
		if (poll(&pfd, 1, 50) <= 0)
			continue;
		int c = accept(g->fd, NULL, NULL);
		if (c < 0)
			continue;
		char buf[256];
		struct pollfd cp = { .fd = c, .events = POLLIN };
		if (poll(&cp, 1, 2000) > 0 && read(c, buf, sizeof(buf)) > 0
		    && write(c, "\x20\x02\x00\x99", 4) == 4)
			__atomic_add_fetch(&g->conns, 1, __ATOMIC_SEQ_CST);
		poll(&cp, 1, 200); /* let the client see it before the FIN */
		close(c);
	}
	return NULL;
}

/* libmosquitto 2.0.11's own loop thread would exit for good on
 * MOSQ_ERR_PROTOCOL (and TLS, EAI, ...): the link must keep retrying. */
static void
test_garbage_broker_keeps_retrying(void)
{
	struct broker *b = broker_create(NULL);
	struct garbage_srv g = { .fd = silent_listener(broker_port(b)) };
	CHECK(g.fd >= 0);
	pthread_create(&g.th, NULL, garbage_main, &g);
	struct link_opts lo
	    = { .port = broker_port(b), .protocol = 5, .id = "link-garbage" };
	struct drv *d = drv_start(&lo);
	CHECK(PUMP_UNTIL(
	    d, __atomic_load_n(&g.conns, __ATOMIC_SEQ_CST) >= 3, 10000));
	CHECK(stats(d).connect_failures >= 2);
	CHECK(!stats(d).connected);
	g.stop = true;
	pthread_join(g.th, NULL);
	close(g.fd);
	CHECK_INT(broker_start(b), 0);
	CHECK(PUMP_UNTIL(d, stats(d).connected, 10000));
	CHECK_STR(d->events, "C");
	drv_stop(d);
	broker_destroy(b);
}

/* A TLS handshake that fails (here: the peer answers the ClientHello with
 * bytes that are no TLS record) ends libmosquitto 2.0.11's own loop with
 * MOSQ_ERR_TLS and no on_disconnect; the link must keep retrying with its
 * backoff (1, 2, 4 s: the fourth attempt by about 7 s). */
static void
test_tls_handshake_failure_keeps_retrying(void)
{
	struct broker *b = broker_create(NULL);
	struct garbage_srv g = { .fd = silent_listener(broker_port(b)) };
	CHECK(g.fd >= 0);
	pthread_create(&g.th, NULL, garbage_main, &g);
	struct link_opts lo = { .port = broker_port(b),
		.protocol = 5,
		.id = "link-tls-fail",
		.tls = true };
	struct drv *d = drv_start(&lo);
	int64_t t0 = loop_mono_ms();
	CHECK(PUMP_UNTIL(
	    d, __atomic_load_n(&g.conns, __ATOMIC_SEQ_CST) >= 4, 12000));
	fprintf(stderr, "tls failure: 4 attempts in %.1f s\n",
	    (loop_mono_ms() - t0) / 1000.0);
	CHECK(PUMP_UNTIL(d, stats(d).connect_failures >= 3, 2000));
	CHECK(!stats(d).connected);
	CHECK_STR(d->events, "");
	t0 = loop_mono_ms();
	mqtt_link_shutdown(d->link, NULL, 0);
	CHECK(loop_mono_ms() - t0 <= 300);
	g.stop = true;
	pthread_join(g.th, NULL);
	close(g.fd);
	drv_stop(d);
	broker_destroy(b);
}

/* A client certificate without --tls-ca: libmosquitto 2.0.11 refuses
 * mosquitto_tls_set() without a cafile or capath, so the link used to fail
 * creation. Now the broker is verified against the system trust store:
 * a broker whose certificate the system does not trust is rejected, one
 * it trusts is accepted (OpenSSL's SSL_CERT_FILE stands in for adding
 * the test CA to the system store), and so is the same broker with
 * --tls-ca. The broker requires a client certificate, so every connect
 * also shows that the certificate was presented. */
static void
test_tls_client_cert_without_ca(void)
{
	struct broker_opts bo = { .tls = true };
	struct broker *b = broker_create(&bo);
	if (b == NULL) {
		TEST_FAIL("no TLS broker (openssl CLI missing?)");
		return;
	}
	CHECK_INT(broker_start(b), 0);
	char ca[160], cert[160], key[160];
	struct link_opts lo = { .port = broker_port(b),
		.protocol = 5,
		.id = "link-tls-cert",
		.tls = true,
		.cert = broker_file(b, "client.pem", cert, sizeof(cert)),
		.key = broker_file(b, "client.key", key, sizeof(key)) };
	broker_file(b, "ca.pem", ca, sizeof(ca));

	/* the test CA is not in the system store: rejected, retried */
	unsetenv("SSL_CERT_FILE");
	struct drv *d = drv_start(&lo);
	CHECK(PUMP_UNTIL(d, stats(d).connect_failures >= 2, 10000));
	CHECK(!stats(d).connected);
	CHECK_STR(d->events, "");
	drv_stop(d);

	/* trusted through OpenSSL's default paths: accepted, and again
	 * after a broker restart (the SSL context is built once, reused) */
	setenv("SSL_CERT_FILE", ca, 1);
	d = drv_start(&lo);
	CHECK(PUMP_UNTIL(d, stats(d).connected, 5000));
	broker_stop(b);
	CHECK(PUMP_UNTIL(d, !stats(d).connected, 5000));
	CHECK_INT(broker_start(b), 0);
	CHECK(PUMP_UNTIL(d, stats(d).connected, 10000));
	CHECK_STR(d->events, "CDC");
	drv_stop(d);
	unsetenv("SSL_CERT_FILE");

	/* with --tls-ca */
	lo.ca = ca;
	d = drv_start(&lo);
	CHECK(PUMP_UNTIL(d, stats(d).connected, 5000));
	drv_stop(d);
	broker_destroy(b);
}

/* A --tls-* file that cannot be read: creation fails with BR_EIO (the log
 * names the option and the file), not with a bare "out of memory". */
static void
test_tls_unreadable_file(void)
{
	struct mqtt_link_cfg cfg = { .host = "127.0.0.1",
		.port = 1,
		.client_id = "link-tls-nofile",
		.tls = true,
		.tls_opts = { .cert = "/nonexistent/client.pem",
		    .key = "/nonexistent/client.key" } };
	struct mqtt_link_cb cb = { 0 };
	struct loop *l = loop_create_tls(false);
	/* not NULL, to see that a failure sets it */
	struct mqtt_link *m = (struct mqtt_link *) (void *) &cfg;
	CHECK_INT(mqtt_link_create(l, &cfg, &cb, NULL, &m), BR_EIO);
	CHECK(m == NULL);
	cfg.tls_opts = (struct tls_opts) { .ca = "/nonexistent/ca.pem" };
	CHECK_INT(mqtt_link_create(l, &cfg, &cb, NULL, &m), BR_EIO);
	CHECK(m == NULL);
	/* without TLS the files are not used, so not checked */
	cfg.tls = false;
	CHECK_INT(mqtt_link_create(l, &cfg, &cb, NULL, &m), BR_OK);
	CHECK(m != NULL);
	mqtt_link_destroy(m);
	loop_destroy(l);
}

static void
test_shutdown_live(void)
{
	struct broker *b = broker_create(NULL);
	CHECK_INT(broker_start(b), 0);
	struct mqttc *s = mqttc_start(broker_port(b), NULL, 4, "t7/#");
	struct link_opts lo = { .port = broker_port(b),
		.protocol = 5,
		.id = "link-shutdown",
		.window = 10,
		.will_topic = "t7/state" };
	struct drv *d = drv_start(&lo);
	CHECK(PUMP_UNTIL(d, stats(d).connected && mqttc_ready(s), 5000));
	for (int i = 0; i < 300; i++)
		CHECK_INT(publish_seq(d, "t7/x", MSG_CRITICAL, 1, i), BR_OK);
	CHECK(stats(d).queued > 0); /* the small window made them wait */
	struct out_msg last = { .cls = MSG_CRITICAL,
		.topic = "t7/state",
		.payload = "offline",
		.len = 7,
		.qos = 1,
		.retain = true };
	int64_t t0 = loop_mono_ms();
	mqtt_link_shutdown(d->link, &last, 2000);
	int64_t took = loop_mono_ms() - t0;
	CHECK(took <= 2200);
	/* everything was flushed, then `last`; the will was not sent */
	int64_t until = loop_mono_ms() + 5000;
	while (mqttc_count(s) < 301 && loop_mono_ms() < until)
		usleep(10000);
	pthread_mutex_lock(&s->mu);
	CHECK_INT(s->n, 301);
	CHECK_STR(s->msgs[299].payload, "00299");
	CHECK_STR(s->msgs[300].payload, "offline");
	pthread_mutex_unlock(&s->mu);
	mqttc_stop(s);
	struct mqttc *late = mqttc_start(broker_port(b), NULL, 4, "t7/state");
	until = loop_mono_ms() + 5000;
	while (mqttc_count(late) < 1 && loop_mono_ms() < until)
		usleep(10000);
	pthread_mutex_lock(&late->mu);
	CHECK_INT(late->n, 1);
	CHECK_STR(late->msgs[0].payload, "offline");
	CHECK(late->msgs[0].retained);
	pthread_mutex_unlock(&late->mu);
	mqttc_stop(late);
	drv_stop(d);
	broker_destroy(b);
}

static void
test_shutdown_without_broker(void)
{
	struct broker *b = broker_create(NULL); /* a port nobody listens on */
	struct link_opts lo
	    = { .port = broker_port(b), .protocol = 5, .id = "link-nobroker" };
	struct drv *d = drv_start(&lo);
	for (int i = 0; i < 5; i++)
		CHECK_INT(publish_seq(d, "t8/x", MSG_CRITICAL, 1, i), BR_OK);
	pump(d, 100);
	struct out_msg last = { .cls = MSG_CRITICAL,
		.topic = "t8/state",
		.payload = "offline",
		.len = 7,
		.qos = 1,
		.retain = true };
	int64_t t0 = loop_mono_ms();
	mqtt_link_shutdown(d->link, &last, 300);
	int64_t took = loop_mono_ms() - t0;
	CHECK(took >= 290);
	CHECK(took <= 500);
	/* and a silent peer: connected, never answering */
	int fd = silent_listener(broker_port(b));
	struct drv *d2 = drv_start(&lo);
	pump(d2, 300);
	t0 = loop_mono_ms();
	mqtt_link_shutdown(d2->link, &last, 300);
	took = loop_mono_ms() - t0;
	CHECK(took <= 500);
	close(fd);
	drv_stop(d2);
	drv_stop(d);
	broker_destroy(b);
}

int
main(void)
{
	signal(SIGPIPE, SIG_IGN);
	mosquitto_lib_init();
	RUN(test_broker_down_at_start);
	RUN(test_broker_restart_quiescent);
	RUN(test_broker_restart_mid_burst);
	RUN(test_mixed_bursts_deliver_in_order);
	RUN(test_acks_stream);
	RUN(test_subscriptions_route_by_filter);
	RUN(test_burst_acks_read_together);
	RUN(test_qos1_window);
	RUN(test_unsubscribe);
	RUN(test_queue_bound_during_outage);
	RUN(test_qos0_lost_in_a_drop_is_counted);
	RUN(test_v5_properties);
	RUN(test_mqtt311);
	RUN(test_max_packet_311);
	RUN(test_poison_message_dropped);
	RUN(test_acl_refusal_counted);
	RUN(test_mqtt311_refusal_named);
	RUN(test_critical_drops_logged);
	RUN(test_silent_broker);
	RUN(test_garbage_broker_keeps_retrying);
	RUN(test_tls_handshake_failure_keeps_retrying);
	RUN(test_tls_client_cert_without_ca);
	RUN(test_tls_unreadable_file);
	RUN(test_shutdown_live);
	RUN(test_shutdown_without_broker);
	mosquitto_lib_cleanup();
	TEST_MAIN_END();
}
