/* The subscriber: counts what reaches a consumer, takes latency samples
 * from the "bench_ts" stamps, and captures one prompt's messages so the
 * baseline can publish exactly the same mix. */
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

static int64_t
parse_ts(const char *p)
{
	int64_t v = 0;
	for (int i = 0; i < BENCH_TS_LEN; i++) {
		if (p[i] < '0' || p[i] > '9')
			return 0;
		v = v * 10 + (p[i] - '0');
	}
	return v;
}

static void
take_latency(struct bench_sub *s, const struct mosquitto_message *msg)
{
	const char *k
	    = memmem(msg->payload, (size_t) msg->payloadlen, BENCH_TS_KEY, 12);
	if (k == NULL
	    || (size_t) (k - (const char *) msg->payload) + 12 + BENCH_TS_LEN
	        > (size_t) msg->payloadlen)
		return;
	int64_t sent = parse_ts(k + 12);
	if (sent == 0)
		return;
	size_t i = atomic_fetch_add(&s->lat_n, 1);
	if (i < s->lat_cap)
		s->lat_ns[i] = bench_wall_ns() - sent;
}

static void
capture(struct bench_sub *s, const struct mosquitto_message *msg,
    const mosquitto_property *props)
{
	pthread_mutex_lock(&s->cap_mu);
	bool match = s->cap_id[0] != '\0'
	    && (strstr(msg->topic, s->cap_id) != NULL
	        || memmem(msg->payload, (size_t) msg->payloadlen, s->cap_id,
	               BENCH_ID_LEN)
	            != NULL);
	if (match && s->cap_n == s->cap_cap) {
		size_t c = s->cap_cap ? s->cap_cap * 2 : 64;
		void *n = realloc(s->cap, c * sizeof(*s->cap));
		if (n == NULL)
			match = false;
		else {
			s->cap = n;
			s->cap_cap = c;
		}
	}
	if (match) {
		struct bench_capture_msg *c = &s->cap[s->cap_n++];
		c->topic = strdup(msg->topic);
		c->payload = malloc((size_t) msg->payloadlen + 1);
		memcpy(c->payload, msg->payload, (size_t) msg->payloadlen);
		c->len = msg->payloadlen;
		c->qos = msg->qos;
		c->retain = msg->retain;
		mosquitto_property *copy = NULL;
		mosquitto_property_copy_all(&copy, props);
		c->props = copy;
	}
	pthread_mutex_unlock(&s->cap_mu);
}

static bool
is_lifecycle(const char *ev)
{
	static const char *const types[] = { "/event/execution_start",
		"/event/execution_success", "/event/execution_error",
		"/event/execution_interrupted" };
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		if (strcmp(ev, types[i]) == 0)
			return true;
	return false;
}

static void
count(struct bench_counter *c, int64_t now)
{
	atomic_store(&c->last_ns, now);
	atomic_fetch_add(&c->events, 1);
}

static void
on_message(struct mosquitto *m, void *ud, const struct mosquitto_message *msg,
    const mosquitto_property *props)
{
	struct bench_sub *s = ud;
	const char *ev = strstr(msg->topic, "/event/");
	int64_t now = bench_now_ns();
	count(&s->all, now);
	if (ev != NULL && is_lifecycle(ev))
		count(&s->lifecycle, now);
	if (ev != NULL
	    && (strcmp(ev, "/event/queued") == 0
	        || strcmp(ev, "/event/lost") == 0)) {
		atomic_fetch_add(&s->made_up, 1);
	} else if (ev != NULL) {
		if (atomic_load(&s->lat_on))
			take_latency(s, msg);
		if (strstr(msg->topic, "/event/feature_flags") != NULL)
			atomic_fetch_add(&s->hello_seen, 1);
		atomic_store(&s->count.last_ns, bench_now_ns());
		atomic_fetch_add(&s->count.events, 1);
	} else {
		atomic_fetch_add(&s->others, 1);
	}
	if (s->cap_id[0] != '\0')
		capture(s, msg, props);
	size_t tl = strlen(msg->topic);
	if (tl > 14 && strcmp(msg->topic + tl - 14, "/bridge/health") == 0
	    && (size_t) msg->payloadlen < sizeof(s->health)) {
		pthread_mutex_lock(&s->cap_mu);
		memcpy(s->health, msg->payload, (size_t) msg->payloadlen);
		s->health[msg->payloadlen] = '\0';
		pthread_mutex_unlock(&s->cap_mu);
		atomic_fetch_add(&s->health_n, 1);
	}
}

static void
on_connect(struct mosquitto *m, void *ud, int rc, int flags,
    const mosquitto_property *props)
{
	struct bench_sub *s = ud;
	if (rc != 0)
		return;
	/* retain-as-published: the capture must see the retain flag */
	mosquitto_subscribe_v5(
	    m, NULL, s->filter, 1, MQTT_SUB_OPT_RETAIN_AS_PUBLISHED, NULL);
}

static void
on_subscribe(struct mosquitto *m, void *ud, int mid, int n, const int *granted,
    const mosquitto_property *props)
{
	struct bench_sub *s = ud;
	atomic_store(&s->connected, n > 0 && granted[0] <= 2);
}

int
bench_sub_start(
    struct bench_sub *s, int port, const char *filter, size_t lat_cap)
{
	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->cap_mu, NULL);
	snprintf(s->filter, sizeof(s->filter), "%s", filter);
	s->lat_cap = lat_cap;
	s->lat_ns = calloc(lat_cap ? lat_cap : 1, sizeof(int64_t));
	mosquitto_lib_init();
	struct mosquitto *m = mosquitto_new("bench-sub", true, s);
	if (m == NULL || s->lat_ns == NULL)
		return -1;
	s->mosq = m;
	mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
	mosquitto_int_option(m, MOSQ_OPT_TCP_NODELAY, 1);
	mosquitto_connect_v5_callback_set(m, on_connect);
	mosquitto_subscribe_v5_callback_set(m, on_subscribe);
	mosquitto_message_v5_callback_set(m, on_message);
	if (mosquitto_connect_bind_v5(m, "127.0.0.1", port, 60, NULL, NULL)
	        != MOSQ_ERR_SUCCESS
	    || mosquitto_loop_start(m) != MOSQ_ERR_SUCCESS) {
		fprintf(stderr, "bench: subscriber cannot reach the broker\n");
		return -1;
	}
	for (int i = 0; i < 500 && !atomic_load(&s->connected); i++) {
		struct timespec t = { 0, 10000000 };
		nanosleep(&t, NULL);
	}
	return atomic_load(&s->connected) ? 0 : -1;
}

void
bench_sub_capture(struct bench_sub *s, const char *id)
{
	pthread_mutex_lock(&s->cap_mu);
	snprintf(s->cap_id, sizeof(s->cap_id), "%s", id);
	pthread_mutex_unlock(&s->cap_mu);
}

void
bench_sub_stop(struct bench_sub *s)
{
	if (s->mosq == NULL)
		return;
	mosquitto_disconnect(s->mosq);
	mosquitto_loop_stop(s->mosq, false);
	mosquitto_destroy(s->mosq);
	s->mosq = NULL;
	for (size_t i = 0; i < s->cap_n; i++) {
		free(s->cap[i].topic);
		free(s->cap[i].payload);
		mosquitto_property *p = s->cap[i].props;
		mosquitto_property_free_all(&p);
	}
	free(s->cap);
	free(s->lat_ns);
}
