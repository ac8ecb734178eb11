/* mqtt_link's backlog edges (on_backlog) against a real mosquitto: a
 * connected broker that stops reading (SIGSTOP) while messages are
 * published gives one high edge, from the loop; once it reads again
 * (SIGCONT) and the queue drains, one low edge, and every message arrives
 * in order. A broker that goes away while the backlog is high gives a low
 * edge at once, and a queue that grows while the link is down gives none. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "helper_broker.h"
#include "helper_loop.h"
#include "helper_mqttc.h"
#include "mqtt_link.h"
#include "test.h"

#define N_MSGS    2000
#define PAYLOAD_N 1024 /* N_MSGS of these are well over the high mark */

struct drv {
	struct loop *loop;
	struct mqtt_link *link;
	char edges[16]; /* 'H' high, 'L' low, in order */
	int nedges;
};

static void
on_backlog(void *ud, bool high)
{
	struct drv *d = ud;
	if (d->nedges < (int) sizeof(d->edges) - 1)
		d->edges[d->nedges++] = high ? 'H' : 'L';
}

static struct mqtt_link_stats
stats(struct drv *d)
{
	struct mqtt_link_stats s;
	mqtt_link_get_stats(d->link, &s);
	return s;
}

#define PUMP_UNTIL(d, cond, ms) HELPER_LOOP_UNTIL((d)->loop, cond, ms)

static struct drv *
drv_start_bounded(int port, size_t max_msgs, size_t max_bytes)
{
	struct drv *d = calloc(1, sizeof(*d));
	d->loop = loop_create_tls(false);
	if (d->loop == NULL)
		abort();
	struct mqtt_link_cfg cfg = {
		.host = "127.0.0.1",
		.port = port,
		.client_id = "link-backlog",
		.protocol = 5,
		.keepalive_s = 30,
		.queue_max_messages = max_msgs,
		.queue_max_bytes = max_bytes,
	};
	struct mqtt_link_cb cb = { .on_backlog = on_backlog };
	CHECK_INT(mqtt_link_create(d->loop, &cfg, &cb, d, &d->link), BR_OK);
	if (d->link == NULL)
		abort();
	CHECK_INT(mqtt_link_start(d->link), BR_OK);
	return d;
}

static struct drv *
drv_start(int port)
{
	return drv_start_bounded(port, 100000, 64 * 1024 * 1024);
}

static void
drv_stop(struct drv *d)
{
	mqtt_link_destroy(d->link);
	loop_destroy(d->loop);
	free(d);
}

/* Publishes messages first..first+n-1 (QoS 1, lifecycle): "%06d" then
 * padding to PAYLOAD_N bytes. */
static void
publish_range(struct drv *d, int first, int n)
{
	static char p[PAYLOAD_N];
	memset(p, '.', sizeof(p));
	for (int i = first; i < first + n; i++) {
		char head[16];
		snprintf(head, sizeof(head), "%06d", i);
		memcpy(p, head, 6);
		struct out_msg m = { .cls = MSG_LIFECYCLE,
			.topic = "bl/x",
			.payload = p,
			.len = sizeof(p),
			.qos = 1 };
		CHECK_INT(mqtt_link_publish(d->link, &m), BR_OK);
	}
}

static bool
edges_are(struct drv *d, const char *want)
{
	d->edges[d->nedges] = '\0';
	return strcmp(d->edges, want) == 0;
}

static void
test_stopped_broker_high_then_low(void)
{
	struct broker_opts bo = { 0 };
	struct broker *b = broker_create(&bo);
	CHECK_INT(broker_start(b), 0);
	struct mqttc *s = mqttc_start(broker_port(b), NULL, 5, "bl/#");
	struct drv *d = drv_start(broker_port(b));
	CHECK(PUMP_UNTIL(d, stats(d).connected && mqttc_ready(s), 5000));

	broker_signal(b, SIGSTOP);
	publish_range(d, 0, N_MSGS);
	/* never from inside a call into the link */
	CHECK(edges_are(d, ""));
	CHECK(stats(d).queued_bytes >= MQTT_BACKLOG_HIGH);
	CHECK(PUMP_UNTIL(d, d->nedges >= 1, 2000));
	CHECK(edges_are(d, "H"));
	CHECK(stats(d).backlog_high);
	/* a stopped broker takes nothing: no edge while it stays stopped */
	helper_wait_for(d->loop, NULL, NULL, 300);
	CHECK(edges_are(d, "H"));

	broker_signal(b, SIGCONT);
	CHECK(PUMP_UNTIL(d, d->nedges >= 2, 10000));
	CHECK(edges_are(d, "HL"));
	CHECK(stats(d).queued_bytes <= MQTT_BACKLOG_HIGH / 4);
	CHECK(PUMP_UNTIL(d, mqttc_count(s) >= N_MSGS, 10000));
	pthread_mutex_lock(&s->mu);
	CHECK_INT(s->n, N_MSGS);
	int bad = 0;
	for (int i = 0; i < s->n; i++) {
		char want[16];
		snprintf(want, sizeof(want), "%06d", i);
		bad += strncmp(s->msgs[i].payload, want, 6) != 0;
	}
	CHECK_INT(bad, 0);
	pthread_mutex_unlock(&s->mu);
	CHECK_INT(stats(d).backlog_highs, 1);
	mqttc_stop(s);
	drv_stop(d);
	broker_destroy(b);
}

static void
test_disconnect_while_high_gives_low(void)
{
	struct broker_opts bo = { 0 };
	struct broker *b = broker_create(&bo);
	CHECK_INT(broker_start(b), 0);
	struct drv *d = drv_start(broker_port(b));
	CHECK(PUMP_UNTIL(d, stats(d).connected, 5000));

	broker_signal(b, SIGSTOP);
	publish_range(d, 0, N_MSGS);
	CHECK(PUMP_UNTIL(d, d->nedges >= 1, 2000));
	CHECK(edges_are(d, "H"));
	broker_signal(b, SIGKILL);
	CHECK(PUMP_UNTIL(d, !stats(d).connected, 5000));
	CHECK(PUMP_UNTIL(d, d->nedges >= 2, 1000));
	CHECK(edges_are(d, "HL"));
	/* low because the link went down: the queue is still full */
	CHECK(stats(d).queued_bytes > MQTT_BACKLOG_HIGH);
	CHECK(!stats(d).backlog_high);
	/* offline, the queue grows without a high edge */
	publish_range(d, N_MSGS, N_MSGS);
	helper_wait_for(d->loop, NULL, NULL, 300);
	CHECK(edges_are(d, "HL"));
	CHECK(stats(d).queued_bytes > 2 * MQTT_BACKLOG_HIGH);
	drv_stop(d);
	broker_destroy(b);
}

/* A queue bound below twice the high mark lowers the mark to half the
 * bound (bytes or messages): the high edge comes before the queue drops
 * anything. */
static void
check_small_bound(size_t max_msgs, size_t max_bytes)
{
	struct broker_opts bo = { 0 };
	struct broker *b = broker_create(&bo);
	CHECK_INT(broker_start(b), 0);
	struct drv *d = drv_start_bounded(broker_port(b), max_msgs, max_bytes);
	CHECK(PUMP_UNTIL(d, stats(d).connected, 5000));
	broker_signal(b, SIGSTOP);
	int i;
	for (i = 0; i < 5000 && d->nedges == 0
	     && stats(d).dropped[MSG_LIFECYCLE] == 0;
	     i++) {
		publish_range(d, i, 1);
		helper_wait_for(d->loop, NULL, NULL, 1);
	}
	fprintf(stderr,
	    "  bound %zu msgs / %zu bytes: edge after %d, "
	    "queued %zu\n",
	    max_msgs, max_bytes, i, stats(d).queued);
	CHECK(edges_are(d, "H"));
	CHECK_INT(stats(d).dropped[MSG_LIFECYCLE], 0);
	broker_signal(b, SIGCONT);
	drv_stop(d);
	broker_destroy(b);
}

static void
test_small_bound_lowers_the_mark(void)
{
	check_small_bound(400, 64 * 1024 * 1024);
	check_small_bound(100000, 256 * 1024);
}

int
main(void)
{
	RUN(test_stopped_broker_high_then_low);
	RUN(test_disconnect_while_high_gives_low);
	RUN(test_small_bound_lowers_the_mark);
	TEST_MAIN_END();
}
