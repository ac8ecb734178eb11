/* The baseline publisher: replays the messages the bridge published for
 * one captured prompt (same topics, payload sizes, QoS, retain flags and
 * MQTT 5 properties) with the prompt id patched per prompt, from a
 * libmosquitto client configured like the bridge's (own thread, MQTT 5,
 * in-flight window 1000). It does no other work: the ceiling for "this
 * mix through this broker". */
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"

struct tmpl {
	char *topic;
	char *payload;
	int len;
	int qos;
	bool retain;
	bool event;
	mosquitto_property *props;
	size_t topic_ids[4];
	size_t n_topic_ids;
	size_t *ids; /* id offsets in payload */
	size_t n_ids;
	long ts_off; /* -1: no stamp */
};

struct bench_pub {
	struct mosquitto *mosq;
	/* the network thread is ours (not mosquitto_loop_start's) so that
	 * its CPU time can be read: pthread_getcpuclockid */
	pthread_t net;
	bool net_started;
	int64_t publish_cpu_ns; /* caller's CPU inside bench_pub_prompt */
	atomic_bool connected;
	struct tmpl *msgs;
	size_t n;
	size_t events;
};

static void
on_connect(struct mosquitto *m, void *ud, int rc, int flags,
    const mosquitto_property *props)
{
	struct bench_pub *p = ud;
	atomic_store(&p->connected, rc == 0);
}

static void *
net_main(void *arg)
{
	struct bench_pub *p = arg;
	/* what mosquitto_loop_start's thread runs */
	mosquitto_loop_forever(p->mosq, 1000, 1);
	return NULL;
}

static int
index_template(struct tmpl *t, const char *id)
{
	const char *s = t->topic;
	while ((s = strstr(s, id)) != NULL && t->n_topic_ids < 4) {
		t->topic_ids[t->n_topic_ids++] = (size_t) (s - t->topic);
		s += BENCH_ID_LEN;
	}
	size_t cap = 0;
	const char *p = t->payload, *end = t->payload + t->len;
	while ((p = memmem(p, (size_t) (end - p), id, BENCH_ID_LEN)) != NULL) {
		if (t->n_ids == cap) {
			cap = cap ? cap * 2 : 16;
			void *n = realloc(t->ids, cap * sizeof(size_t));
			if (n == NULL)
				return -1;
			t->ids = n;
		}
		t->ids[t->n_ids++] = (size_t) (p - t->payload);
		p += BENCH_ID_LEN;
	}
	const char *k = memmem(t->payload, (size_t) t->len, BENCH_TS_KEY, 12);
	t->ts_off = k != NULL ? (long) (k - t->payload) + 12 : -1;
	return 0;
}

struct bench_pub *
bench_pub_start(int port, const struct bench_capture_msg *cap, size_t n,
    const char *cap_id)
{
	struct bench_pub *p = calloc(1, sizeof(*p));
	if (p == NULL || n == 0)
		goto fail;
	p->msgs = calloc(n, sizeof(*p->msgs));
	if (p->msgs == NULL)
		goto fail;
	for (size_t i = 0; i < n; i++) {
		struct tmpl *t = &p->msgs[p->n++];
		t->topic = strdup(cap[i].topic);
		t->payload = malloc((size_t) cap[i].len + 1);
		if (t->topic == NULL || t->payload == NULL)
			goto fail;
		memcpy(t->payload, cap[i].payload, (size_t) cap[i].len);
		t->len = cap[i].len;
		t->qos = cap[i].qos;
		t->retain = cap[i].retain;
		const char *ev = strstr(t->topic, "/event/");
		t->event = ev != NULL && strcmp(ev, "/event/queued") != 0
		    && strcmp(ev, "/event/lost") != 0;
		p->events += t->event;
		mosquitto_property_copy_all(&t->props, cap[i].props);
		if (index_template(t, cap_id) != 0)
			goto fail;
	}
	mosquitto_lib_init();
	p->mosq = mosquitto_new("bench-baseline", true, p);
	if (p->mosq == NULL)
		goto fail;
	mosquitto_int_option(
	    p->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
	mosquitto_max_inflight_messages_set(p->mosq, 1000);
	/* the ceiling: no Nagle delay on the publisher's link (README) */
	mosquitto_int_option(p->mosq, MOSQ_OPT_TCP_NODELAY, 1);
	mosquitto_connect_v5_callback_set(p->mosq, on_connect);
	mosquitto_threaded_set(p->mosq, true);
	if (mosquitto_connect_bind_v5(
	        p->mosq, "127.0.0.1", port, 60, NULL, NULL)
	    != MOSQ_ERR_SUCCESS)
		goto fail;
	if (pthread_create(&p->net, NULL, net_main, p) != 0)
		goto fail;
	p->net_started = true;
	for (int i = 0; i < 500 && !atomic_load(&p->connected); i++) {
		struct timespec ts = { 0, 10000000 };
		nanosleep(&ts, NULL);
	}
	if (atomic_load(&p->connected))
		return p;
fail:
	fprintf(stderr, "bench: baseline publisher failed to start\n");
	bench_pub_stop(p);
	return NULL;
}

size_t
bench_pub_events_per_prompt(const struct bench_pub *p)
{
	return p->events;
}

size_t
bench_pub_msgs_per_prompt(const struct bench_pub *p)
{
	return p->n;
}

bool
bench_pub_is_event(const struct bench_pub *p, size_t msg)
{
	return p->msgs[msg].event;
}

bool
bench_pub_one(struct bench_pub *p, const char *id, size_t msg, int64_t ts_wall)
{
	struct tmpl *t = &p->msgs[msg];
	for (size_t i = 0; i < t->n_topic_ids; i++)
		memcpy(t->topic + t->topic_ids[i], id, BENCH_ID_LEN);
	bench_patch_ids(t->payload, t->ids, t->n_ids, id);
	if (t->ts_off >= 0 && t->event)
		bench_put_ts(t->payload + t->ts_off, ts_wall);
	int rc = mosquitto_publish_v5(p->mosq, NULL, t->topic, t->len,
	    t->payload, t->qos, t->retain, t->props);
	return rc == MOSQ_ERR_SUCCESS;
}

size_t
bench_pub_prompt(struct bench_pub *p, const char *id)
{
	int64_t c0 = bench_cpu_ns(CLOCK_THREAD_CPUTIME_ID);
	size_t ok = 0;
	for (size_t i = 0; i < p->n; i++)
		ok += bench_pub_one(p, id, i, 0) && p->msgs[i].event;
	p->publish_cpu_ns += bench_cpu_ns(CLOCK_THREAD_CPUTIME_ID) - c0;
	return ok;
}

int64_t
bench_pub_cpu_ns(const struct bench_pub *p, int64_t *net_ns)
{
	*net_ns = bench_thread_cpu_ns(p->net, p->net_started);
	return p->publish_cpu_ns;
}

void
bench_pub_stop(struct bench_pub *p)
{
	if (p == NULL)
		return;
	if (p->mosq != NULL) {
		mosquitto_disconnect(p->mosq);
		if (p->net_started) {
			/* loop_forever returns once the disconnect is sent */
			pthread_join(p->net, NULL);
		}
		mosquitto_destroy(p->mosq);
	}
	for (size_t i = 0; i < p->n; i++) {
		free(p->msgs[i].topic);
		free(p->msgs[i].payload);
		free(p->msgs[i].ids);
		mosquitto_property_free_all(&p->msgs[i].props);
	}
	free(p->msgs);
	free(p);
}
