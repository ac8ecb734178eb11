/* The broker link. libmosquitto runs in its own thread (loop_start, then
 * connect_async: the other order never connects when the broker is down
 * at start). Its callbacks only record facts under link->mu and call
 * cfg->wake; mqtt_link_service() turns the facts into mqtt_link_cb calls in
 * the owner's thread and feeds the bounded outq into libmosquitto while the
 * link is up and the in-flight window has room.
 *
 * Locking. link->mu is held across mosquitto_publish_v5/subscribe calls
 * and taken inside on_publish/on_connect/on_disconnect/on_message. That is
 * deadlock-free with libmosquitto 2.0.11 because (lib/actions.c,
 * lib/messages_mosq.c, lib/packet_mosq.c, lib/handle_pubackcomp.c):
 *  - publish/subscribe from a thread other than the loop only take
 *    mid_mutex, msgs_out.mutex and out_packet_mutex, each released before
 *    returning; in threaded mode packet__queue() only pokes the sockpair
 *    and never writes, so they never take callback_mutex or
 *    current_out_packet_mutex;
 *  - the loop thread runs every callback holding callback_mutex (plus
 *    current_out_packet_mutex for the QoS 0 on_publish fired from
 *    packet__write), but never mid_mutex, msgs_out.mutex or out_packet_mutex:
 *    handle__pubackcomp() releases msgs_out.mutex before on_publish.
 * So the two threads never wait for each other's locks in opposite order.
 * Holding mu across publish is what makes the in-flight bookkeeping exact:
 * the mid is registered before its on_publish can look for it, and a
 * disconnect cannot slip between "publish accepted" and "registered".
 *
 * In-flight bookkeeping: mid_state[mid] says whether a handed-over message
 * is a QoS 0 one (completed by on_publish once written, silently discarded
 * by libmosquitto if the link drops first) or a QoS >= 1 one (completed by
 * on_publish at PUBACK/PUBCOMP; kept and resent by libmosquitto across
 * reconnects). on_disconnect forgets the QoS 0 ones, so neither count can
 * leak or go negative. */
#include "mqtt_link.h"

#include <errno.h>
#include <limits.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "log.h"

#define MID_SPACE 65536
enum mid_kind { MID_FREE = 0, MID_QOS0 = 1, MID_QOS1 = 2 };

#define DEFAULT_WINDOW    1000u
#define MAX_WINDOW        60000u /* stays well below the 16-bit mid space */
#define DEFAULT_KEEPALIVE 30
#define SESSION_EXPIRY_S  86400u
#define RX_QUEUE_MAX      1024 /* received messages waiting for service() */
#define REJECT_LOG_MAX    5
#define LAST_ACK_EXTRA_MS                                                     \
	100 /* how long `last` may wait past the deadline                     \
	     */
#define DISCONNECT_WAIT_MS 80
#define REVIVE_MIN_MS      1000
#define REVIVE_MAX_MS      30000

struct rx_msg {
	struct rx_msg *next;
	char *topic;
	size_t len;
	char payload[];
};

/* What the mosquitto thread reports; protected by mqtt_link.mu. */
struct facts {
	bool up; /* CONNACK accepted and not lost since */
	uint64_t connacks; /* accepted CONNACKs so far */
	uint64_t losses; /* disconnects after an accepted CONNACK */
	uint64_t failures; /* refused CONNACKs, drops before CONNACK */
	bool session_present; /* of the latest CONNACK */
	uint32_t max_packet; /* of the latest CONNACK; 0: not said */
	int last_loss_rc; /* on_disconnect rc of the latest loss */
	int last_failure_rc; /* refused CONNACK code or disconnect rc */
	bool last_failure_refused;
	unsigned inflight0, inflight1;
	/* QoS >= 1 messages from before the latest drop are still with
	 * libmosquitto, which resends them only after on_connect returns:
	 * anything handed over before they complete would overtake them. */
	bool resend_pending;
	/* the owner has messages waiting for window room: only then must a
	 * completion wake it (a wake per message costs two syscalls and a
	 * thread switch) */
	bool backlog;
	/* libmosquitto's loop thread returned for good (see loop_gave_up) */
	bool loop_dead;
	int loop_dead_rc;
	struct rx_msg *rx_head, *rx_tail;
	size_t rx_len;
	uint64_t rx_dropped;
};

/* MQTT 5 property lists are immutable once built and libmosquitto copies
 * what it keeps, so consecutive messages with the same properties (the
 * same prompt and event type) reuse one list instead of five allocations
 * per publish. */
#define PROP_CACHE_SIZE 8
#define PROP_STR_MAX    288
struct prop_entry {
	bool valid;
	const char *content_type; /* static strings: compared by address */
	bool utf8;
	uint32_t expiry_s;
	char instance[PROP_STR_MAX], type[PROP_STR_MAX], prompt_id[PROP_STR_MAX];
	bool has_instance, has_type, has_prompt_id;
	mosquitto_property *props;
	uint64_t used;
};

struct mqtt_link {
	struct mqtt_link_cfg cfg; /* strings point at owned copies */
	struct prop_entry prop_cache[PROP_CACHE_SIZE]; /* owner thread only */
	uint64_t prop_clock;
	struct mqtt_link_cb cb;
	void *ud;
	struct mosquitto *mosq;
	struct outq *q; /* owner thread only */
	unsigned window;
	bool started;
	bool stopped;

	pthread_mutex_t mu;
	pthread_cond_t changed; /* completions and state changes */
	struct facts f;
	uint8_t *mid_state; /* MID_SPACE entries */
	char **topics; /* subscriptions, replayed on every CONNACK */
	size_t ntopics;

	/* owner thread view */
	bool connected; /* as reported through cb */
	uint64_t seen_connacks, seen_losses, seen_failures;
	uint64_t connects, disconnects;
	uint64_t published[MSG_CLASS_COUNT];
	uint64_t rejected[MSG_CLASS_COUNT]; /* NO_CONN QoS 0, invalid, ... */
	uint64_t reject_logged;
	bool retry_logged; /* "retrying" said once per outage */
	int64_t revive_at; /* when to restart a dead loop thread; 0: not due */
	int64_t revive_delay_ms;
	atomic_bool connected_pub; /* for mqtt_link_connected() */
};

static int64_t
now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits on link->changed (mu held) until at most deadline (monotonic ms). */
static void
wait_changed(struct mqtt_link *m, int64_t deadline)
{
	int64_t now = now_ms();
	if (now >= deadline)
		return;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	int64_t ns = ts.tv_nsec + (deadline - now) * 1000000;
	ts.tv_sec += ns / 1000000000;
	ts.tv_nsec = ns % 1000000000;
	pthread_cond_timedwait(&m->changed, &m->mu, &ts);
}

static void
wake(struct mqtt_link *m)
{
	if (m->cfg.wake != NULL)
		m->cfg.wake(m->cfg.wake_ud);
}

static const char *
rc_text(int rc)
{
	/* v5 reason codes from a broker DISCONNECT are >= 0x80; smaller
	 * values are libmosquitto's own MOSQ_ERR_* codes */
	return rc >= 0x80 ? mosquitto_reason_string(rc)
	                  : mosquitto_strerror(rc);
}

/* ---- mosquitto thread ------------------------------------------------ */

/* The watchdog may cancel the mosquitto thread (loop_stop(force)); a
 * cancellation inside our callbacks would leave libmosquitto's
 * callback_mutex or our mu locked for ever, so callbacks are not
 * cancellable. */
static int
callback_enter(void)
{
	int old;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
	return old;
}

static void
callback_leave(int old)
{
	int ignored;
	pthread_setcancelstate(old, &ignored);
}

static void
on_connect(struct mosquitto *mosq, void *obj, int rc, int flags,
    const mosquitto_property *props)
{
	struct mqtt_link *m = obj;
	int cs = callback_enter();
	pthread_mutex_lock(&m->mu);
	if (rc == 0) {
		uint32_t max_packet = 0;
		mosquitto_property_read_int32(
		    props, MQTT_PROP_MAXIMUM_PACKET_SIZE, &max_packet, false);
		m->f.up = true;
		m->f.connacks++;
		m->f.session_present = (flags & 1) != 0;
		m->f.max_packet = max_packet;
		for (size_t i = 0; i < m->ntopics; i++)
			mosquitto_subscribe(mosq, NULL, m->topics[i], 1);
	} else {
		m->f.failures++;
		m->f.last_failure_rc = rc;
		m->f.last_failure_refused = true;
	}
	pthread_cond_broadcast(&m->changed);
	pthread_mutex_unlock(&m->mu);
	wake(m);
	callback_leave(cs);
}

/* QoS 0 messages not yet written when the link drops are discarded by
 * libmosquitto without on_publish: forget them (mu held). */
static void
forget_qos0(struct mqtt_link *m)
{
	if (m->f.inflight0 == 0)
		return;
	for (size_t mid = 0; mid < MID_SPACE; mid++)
		if (m->mid_state[mid] == MID_QOS0)
			m->mid_state[mid] = MID_FREE;
	m->f.inflight0 = 0;
}

/* mosquitto_loop_forever() 2.0.11 returns, ending the loop_start thread
 * for good, after these errors (lib/loop.c); e.g. a broker answering
 * CONNECT with a malformed packet gives MOSQ_ERR_PROTOCOL and no retry
 * ever again (measured). on_disconnect runs just before that return, in
 * the dying thread, so errno is still the thread's own. */
static bool
loop_gave_up(int rc)
{
	switch (rc) {
	case MOSQ_ERR_NOMEM:
	case MOSQ_ERR_PROTOCOL:
	case MOSQ_ERR_INVAL:
	case MOSQ_ERR_NOT_FOUND:
	case MOSQ_ERR_TLS:
	case MOSQ_ERR_PAYLOAD_SIZE:
	case MOSQ_ERR_NOT_SUPPORTED:
	case MOSQ_ERR_AUTH:
	case MOSQ_ERR_ACL_DENIED:
	case MOSQ_ERR_UNKNOWN:
	case MOSQ_ERR_EAI:
	case MOSQ_ERR_PROXY:
		return true;
	case MOSQ_ERR_ERRNO:
		return errno == EPROTO;
	default:
		return false;
	}
}

static void
on_disconnect(
    struct mosquitto *mosq, void *obj, int rc, const mosquitto_property *props)
{
	struct mqtt_link *m = obj;
	int cs = callback_enter();
	bool gave_up = loop_gave_up(rc);
	pthread_mutex_lock(&m->mu);
	if (gave_up) {
		m->f.loop_dead = true;
		m->f.loop_dead_rc = rc;
	}
	if (m->f.up) {
		m->f.up = false;
		m->f.losses++;
		m->f.last_loss_rc = rc;
	} else {
		m->f.failures++;
		m->f.last_failure_rc = rc;
		m->f.last_failure_refused = false;
	}
	forget_qos0(m);
	if (m->f.inflight1 > 0)
		m->f.resend_pending = true;
	pthread_cond_broadcast(&m->changed);
	pthread_mutex_unlock(&m->mu);
	wake(m);
	callback_leave(cs);
}

static void
on_publish(struct mosquitto *mosq, void *obj, int mid, int reason,
    const mosquitto_property *props)
{
	struct mqtt_link *m = obj;
	bool need_wake = false;
	int cs = callback_enter();
	pthread_mutex_lock(&m->mu);
	if (mid > 0 && mid < MID_SPACE) {
		if (m->mid_state[mid] == MID_QOS0)
			m->f.inflight0--;
		else if (m->mid_state[mid] == MID_QOS1)
			m->f.inflight1--;
		m->mid_state[mid] = MID_FREE;
		if (m->f.inflight1 == 0 && m->f.resend_pending) {
			m->f.resend_pending = false;
			need_wake = true;
		}
	}
	need_wake |= m->f.backlog;
	pthread_cond_broadcast(&m->changed);
	pthread_mutex_unlock(&m->mu);
	if (need_wake)
		wake(m);
	callback_leave(cs);
}

static void
on_message(struct mosquitto *mosq, void *obj,
    const struct mosquitto_message *msg, const mosquitto_property *props)
{
	struct mqtt_link *m = obj;
	int cs = callback_enter();
	size_t len = msg->payloadlen > 0 ? (size_t) msg->payloadlen : 0;
	struct rx_msg *rx = malloc(sizeof(*rx) + len + 1);
	char *topic = rx != NULL ? strdup(msg->topic) : NULL;
	pthread_mutex_lock(&m->mu);
	if (topic == NULL || m->f.rx_len >= RX_QUEUE_MAX) {
		m->f.rx_dropped++;
		free(topic);
		free(rx);
		rx = NULL;
	} else {
		rx->next = NULL;
		rx->topic = topic;
		rx->len = len;
		memcpy(rx->payload, msg->payload != NULL ? msg->payload : "",
		    len);
		rx->payload[len] = '\0';
		if (m->f.rx_tail != NULL)
			m->f.rx_tail->next = rx;
		else
			m->f.rx_head = rx;
		m->f.rx_tail = rx;
		m->f.rx_len++;
	}
	pthread_mutex_unlock(&m->mu);
	if (rx != NULL)
		wake(m);
	callback_leave(cs);
}

/* ---- creation -------------------------------------------------------- */

static bool
dup_str(const char **dst, const char *src)
{
	if (src == NULL) {
		*dst = NULL;
		return true;
	}
	*dst = strdup(src);
	return *dst != NULL;
}

static void
free_cfg_strings(struct mqtt_link_cfg *c)
{
	free((char *) c->host);
	free((char *) c->client_id);
	free((char *) c->username);
	free((char *) c->password);
	free((char *) c->will_topic);
	free((char *) c->will_payload);
	free((char *) c->tls_opts.ca);
	free((char *) c->tls_opts.cert);
	free((char *) c->tls_opts.key);
}

static bool
copy_cfg(struct mqtt_link_cfg *dst, const struct mqtt_link_cfg *src)
{
	*dst = *src;
	bool ok = dup_str(&dst->host, src->host);
	ok &= dup_str(&dst->client_id, src->client_id);
	ok &= dup_str(&dst->username, src->username);
	ok &= dup_str(&dst->password, src->password);
	ok &= dup_str(&dst->will_topic, src->will_topic);
	ok &= dup_str(&dst->will_payload, src->will_payload);
	ok &= dup_str(&dst->tls_opts.ca, src->tls_opts.ca);
	ok &= dup_str(&dst->tls_opts.cert, src->tls_opts.cert);
	ok &= dup_str(&dst->tls_opts.key, src->tls_opts.key);
	return ok;
}

static int
setup_will(struct mqtt_link *m)
{
	const struct mqtt_link_cfg *c = &m->cfg;
	if (c->will_topic == NULL)
		return MOSQ_ERR_SUCCESS;
	const char *payload = c->will_payload != NULL ? c->will_payload : "";
	int len = (int) strlen(payload);
	if (c->protocol != 5)
		return mosquitto_will_set(
		    m->mosq, c->will_topic, len, payload, 1, true);
	mosquitto_property *props = NULL;
	int rc = mosquitto_property_add_string(
	    &props, MQTT_PROP_CONTENT_TYPE, "text/plain");
	if (rc == MOSQ_ERR_SUCCESS)
		rc = mosquitto_property_add_byte(
		    &props, MQTT_PROP_PAYLOAD_FORMAT_INDICATOR, 1);
	if (rc == MOSQ_ERR_SUCCESS)
		rc = mosquitto_will_set_v5(
		    m->mosq, c->will_topic, len, payload, 1, true, props);
	/* on success the library owns props */
	if (rc != MOSQ_ERR_SUCCESS)
		mosquitto_property_free_all(&props);
	return rc;
}

static int
setup_tls(struct mqtt_link *m)
{
	const struct tls_opts *t = &m->cfg.tls_opts;
	if (!m->cfg.tls)
		return MOSQ_ERR_SUCCESS;
	int rc = MOSQ_ERR_SUCCESS;
	if (t->ca == NULL)
		rc = mosquitto_int_option(
		    m->mosq, MOSQ_OPT_TLS_USE_OS_CERTS, 1);
	if (rc == MOSQ_ERR_SUCCESS && (t->ca != NULL || t->cert != NULL))
		rc = mosquitto_tls_set(
		    m->mosq, t->ca, NULL, t->cert, t->key, NULL);
	if (rc == MOSQ_ERR_SUCCESS)
		rc = mosquitto_tls_opts_set(
		    m->mosq, t->insecure ? 0 : 1, NULL, NULL);
	if (rc == MOSQ_ERR_SUCCESS)
		rc = mosquitto_tls_insecure_set(m->mosq, t->insecure);
	return rc;
}

/* The session expiry interval must be on every CONNECT, and 2.0.11 has no
 * asynchronous connect taking properties. mosquitto_connect_bind_v5()
 * stores its properties for all later (re)connects *before* validating the
 * port, and mosquitto_connect_bind_async() keeps them; an invalid port
 * makes the blocking call store them and return without connecting. The
 * io test checks the effect (session present after a broker restart). */
static int
store_connect_properties(struct mqtt_link *m)
{
	mosquitto_property *props = NULL;
	int rc = mosquitto_property_add_int32(
	    &props, MQTT_PROP_SESSION_EXPIRY_INTERVAL, SESSION_EXPIRY_S);
	if (rc != MOSQ_ERR_SUCCESS)
		return rc;
	rc = mosquitto_connect_bind_v5(
	    m->mosq, m->cfg.host, -1, m->cfg.keepalive_s, NULL, props);
	mosquitto_property_free_all(&props);
	return rc == MOSQ_ERR_INVAL ? MOSQ_ERR_SUCCESS : rc;
}

static int
setup_mosquitto(struct mqtt_link *m)
{
	const struct mqtt_link_cfg *c = &m->cfg;
	bool v5 = c->protocol == 5;
	m->mosq = mosquitto_new(c->client_id, !v5, m);
	if (m->mosq == NULL)
		return MOSQ_ERR_NOMEM;
	int rc = mosquitto_int_option(m->mosq, MOSQ_OPT_PROTOCOL_VERSION,
	    v5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311);
	/* small messages one after another: Nagle would hold each for the
	 * previous one's ACK (measured: 21 ms median added latency) */
	if (rc == MOSQ_ERR_SUCCESS)
		rc = mosquitto_int_option(m->mosq, MOSQ_OPT_TCP_NODELAY, 1);
	if (rc == MOSQ_ERR_SUCCESS)
		rc = mosquitto_reconnect_delay_set(m->mosq, 1, 30, true);
	if (rc == MOSQ_ERR_SUCCESS)
		rc = mosquitto_max_inflight_messages_set(m->mosq, m->window);
	if (rc == MOSQ_ERR_SUCCESS && c->username != NULL)
		rc = mosquitto_username_pw_set(
		    m->mosq, c->username, c->password);
	if (rc == MOSQ_ERR_SUCCESS)
		rc = setup_will(m);
	if (rc == MOSQ_ERR_SUCCESS)
		rc = setup_tls(m);
	mosquitto_connect_v5_callback_set(m->mosq, on_connect);
	mosquitto_disconnect_v5_callback_set(m->mosq, on_disconnect);
	mosquitto_publish_v5_callback_set(m->mosq, on_publish);
	mosquitto_message_v5_callback_set(m->mosq, on_message);
	return rc;
}

struct mqtt_link *
mqtt_link_create(
    const struct mqtt_link_cfg *cfg, const struct mqtt_link_cb *cb, void *ud)
{
	if (cfg == NULL || cfg->host == NULL || cfg->client_id == NULL)
		return NULL;
	struct mqtt_link *m = calloc(1, sizeof(*m));
	if (m == NULL)
		return NULL;
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&m->changed, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&m->mu, NULL);
	if (cb != NULL)
		m->cb = *cb;
	m->ud = ud;
	bool ok = copy_cfg(&m->cfg, cfg);
	if (m->cfg.protocol != 4)
		m->cfg.protocol = 5;
	if (m->cfg.keepalive_s <= 0)
		m->cfg.keepalive_s = DEFAULT_KEEPALIVE;
	m->revive_delay_ms = REVIVE_MIN_MS;
	m->window = cfg->window == 0 ? DEFAULT_WINDOW : cfg->window;
	if (m->window > MAX_WINDOW)
		m->window = MAX_WINDOW;
	m->mid_state = calloc(MID_SPACE, 1);
	m->q = outq_create(cfg->queue_max_messages, cfg->queue_max_bytes);
	if (!ok || m->mid_state == NULL || m->q == NULL)
		goto fail;
	mosquitto_lib_init(); /* idempotent; no-op after the first */
	if (setup_mosquitto(m) != MOSQ_ERR_SUCCESS)
		goto fail;
	return m;
fail:
	mqtt_link_destroy(m);
	return NULL;
}

/* ---- owner thread ---------------------------------------------------- */

static int
start_connecting(struct mqtt_link *m)
{
	int rc = MOSQ_ERR_SUCCESS;
	if (m->cfg.protocol == 5)
		rc = store_connect_properties(m);
	if (rc == MOSQ_ERR_SUCCESS)
		rc = mosquitto_loop_start(m->mosq);
	if (rc != MOSQ_ERR_SUCCESS)
		return rc;
	/* Refused or unreachable is fine: the loop thread retries. */
	rc = mosquitto_connect_async(
	    m->mosq, m->cfg.host, m->cfg.port, m->cfg.keepalive_s);
	if (rc == MOSQ_ERR_INVAL || rc == MOSQ_ERR_NOMEM)
		return rc;
	return MOSQ_ERR_SUCCESS;
}

int
mqtt_link_start(struct mqtt_link *m)
{
	if (m == NULL || m->started)
		return BR_ESTATE;
	int rc = start_connecting(m);
	if (rc != MOSQ_ERR_SUCCESS) {
		log_error("mqtt", "cannot start the broker link to %s:%d: %s",
		    m->cfg.host, m->cfg.port, mosquitto_strerror(rc));
		return rc == MOSQ_ERR_NOMEM ? BR_ENOMEM : BR_EINVAL;
	}
	m->started = true;
	log_info("mqtt", "connecting to %s:%d as %s (MQTT %s%s)", m->cfg.host,
	    m->cfg.port, m->cfg.client_id,
	    m->cfg.protocol == 5 ? "5" : "3.1.1", m->cfg.tls ? ", TLS" : "");
	return BR_OK;
}

static mosquitto_property *
build_props(const struct out_msg *msg, int *rc)
{
	mosquitto_property *p = NULL;
	const struct out_props *o = &msg->props;
	*rc = MOSQ_ERR_SUCCESS;
	if (o->content_type != NULL)
		*rc = mosquitto_property_add_string(
		    &p, MQTT_PROP_CONTENT_TYPE, o->content_type);
	if (*rc == MOSQ_ERR_SUCCESS && o->utf8)
		*rc = mosquitto_property_add_byte(
		    &p, MQTT_PROP_PAYLOAD_FORMAT_INDICATOR, 1);
	if (*rc == MOSQ_ERR_SUCCESS && o->expiry_s != 0)
		*rc = mosquitto_property_add_int32(
		    &p, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, o->expiry_s);
	const char *names[] = { "instance", "type", "prompt_id" };
	const char *values[] = { o->instance, o->type, o->prompt_id };
	for (int i = 0; i < 3 && *rc == MOSQ_ERR_SUCCESS; i++)
		if (values[i] != NULL)
			*rc = mosquitto_property_add_string_pair(
			    &p, MQTT_PROP_USER_PROPERTY, names[i], values[i]);
	return p;
}

static bool
prop_str_eq(bool has, const char *cached, const char *s)
{
	return s == NULL ? !has : has && strcmp(cached, s) == 0;
}

static bool
prop_str_fits(const char *s)
{
	return s == NULL || strlen(s) < PROP_STR_MAX;
}

static void
prop_str_set(bool *has, char *dst, const char *s)
{
	*has = s != NULL;
	snprintf(dst, PROP_STR_MAX, "%s", s != NULL ? s : "");
}

/* The property list for msg: cached (borrowed, *owned = false) or freshly
 * built (the caller frees it, *owned = true). */
static mosquitto_property *
props_for(struct mqtt_link *m, const struct out_msg *msg, int *rc,
    bool *owned)
{
	const struct out_props *o = &msg->props;
	*owned = false;
	*rc = MOSQ_ERR_SUCCESS;
	struct prop_entry *victim = &m->prop_cache[0];
	for (int i = 0; i < PROP_CACHE_SIZE; i++) {
		struct prop_entry *e = &m->prop_cache[i];
		if (e->valid && e->content_type == o->content_type
		    && e->utf8 == o->utf8 && e->expiry_s == o->expiry_s
		    && prop_str_eq(e->has_type, e->type, o->type)
		    && prop_str_eq(e->has_prompt_id, e->prompt_id, o->prompt_id)
		    && prop_str_eq(e->has_instance, e->instance, o->instance)) {
			e->used = ++m->prop_clock;
			return e->props;
		}
		if (!e->valid || e->used < victim->used)
			victim = e;
	}
	mosquitto_property *p = build_props(msg, rc);
	if (*rc != MOSQ_ERR_SUCCESS || !prop_str_fits(o->instance)
	    || !prop_str_fits(o->type) || !prop_str_fits(o->prompt_id)) {
		*owned = true;
		return p;
	}
	if (victim->valid)
		mosquitto_property_free_all(&victim->props);
	victim->valid = true;
	victim->content_type = o->content_type;
	victim->utf8 = o->utf8;
	victim->expiry_s = o->expiry_s;
	prop_str_set(&victim->has_instance, victim->instance, o->instance);
	prop_str_set(&victim->has_type, victim->type, o->type);
	prop_str_set(&victim->has_prompt_id, victim->prompt_id, o->prompt_id);
	victim->props = p;
	victim->used = ++m->prop_clock;
	return p;
}

static void
count_reject(struct mqtt_link *m, const struct out_msg *msg, int rc)
{
	m->rejected[msg->cls]++;
	if (rc == MOSQ_ERR_NO_CONN)
		return; /* the race with a drop: expected, not worth a line */
	if (m->reject_logged++ < REJECT_LOG_MAX)
		log_warn("mqtt", "message on %s (%zu bytes) rejected: %s",
		    msg->topic, msg->len, mosquitto_strerror(rc));
}

/* Hands msg to libmosquitto (mu held). Returns its mid (0 when unknown),
 * or -1 when the message was rejected or dropped. */
static int
hand_over(struct mqtt_link *m, const struct out_msg *msg)
{
	int rc = MOSQ_ERR_SUCCESS;
	mosquitto_property *props = NULL;
	bool owned = false;
	if (m->cfg.protocol == 5)
		props = props_for(m, msg, &rc, &owned);
	int mid = 0;
	int qos = msg->qos < 0 ? 0 : msg->qos > 2 ? 2 : msg->qos;
	if (rc == MOSQ_ERR_SUCCESS && msg->len > INT_MAX)
		rc = MOSQ_ERR_PAYLOAD_SIZE;
	if (rc == MOSQ_ERR_SUCCESS)
		rc = mosquitto_publish_v5(m->mosq, &mid, msg->topic,
		    (int) msg->len, msg->payload, qos, msg->retain, props);
	if (owned)
		mosquitto_property_free_all(&props);
	/* QoS >= 1 with NO_CONN is queued inside libmosquitto and resent
	 * after the reconnect: resending it ourselves would duplicate it. */
	bool queued
	    = rc == MOSQ_ERR_SUCCESS || (rc == MOSQ_ERR_NO_CONN && qos > 0);
	if (!queued) {
		count_reject(m, msg, rc);
		return -1;
	}
	m->published[msg->cls]++;
	if (mid <= 0 || mid >= MID_SPACE)
		return 0;
	/* A mid still marked would mean the 16-bit space wrapped onto a
	 * message we never saw complete: retire it so counts stay exact. */
	if (m->mid_state[mid] == MID_QOS0)
		m->f.inflight0--;
	else if (m->mid_state[mid] == MID_QOS1)
		m->f.inflight1--;
	m->mid_state[mid] = qos > 0 ? MID_QOS1 : MID_QOS0;
	if (qos > 0)
		m->f.inflight1++;
	else
		m->f.inflight0++;
	return mid;
}

static bool
window_open(const struct mqtt_link *m)
{
	return !m->f.resend_pending
	    && m->f.inflight0 + m->f.inflight1 < m->window;
}

/* Feeds queued messages while the link is up and the window has room. */
static void
drain_queue(struct mqtt_link *m)
{
	pthread_mutex_lock(&m->mu);
	const struct out_msg *msg;
	while (m->f.up && window_open(m) && (msg = outq_peek(m->q)) != NULL) {
		hand_over(m, msg);
		outq_pop(m->q);
	}
	m->f.backlog = outq_count(m->q) > 0;
	pthread_mutex_unlock(&m->mu);
}

int
mqtt_link_publish(struct mqtt_link *m, const struct out_msg *msg)
{
	if (m == NULL || msg == NULL || msg->topic == NULL || msg->cls < 0
	    || msg->cls >= MSG_CLASS_COUNT)
		return BR_EINVAL;
	pthread_mutex_lock(&m->mu);
	/* Straight through only when nothing older waits (order). */
	bool direct = m->started && !m->stopped && m->connected && m->f.up
	    && window_open(m) && outq_count(m->q) == 0;
	if (direct)
		hand_over(m, msg);
	else
		m->f.backlog = true;
	pthread_mutex_unlock(&m->mu);
	if (direct)
		return BR_OK;
	return outq_push(m->q, msg);
}

static void
deliver_messages(struct mqtt_link *m)
{
	pthread_mutex_lock(&m->mu);
	struct rx_msg *rx = m->f.rx_head;
	m->f.rx_head = m->f.rx_tail = NULL;
	m->f.rx_len = 0;
	pthread_mutex_unlock(&m->mu);
	while (rx != NULL) {
		struct rx_msg *next = rx->next;
		if (m->cb.on_message != NULL)
			m->cb.on_message(
			    m->ud, rx->topic, rx->payload, rx->len);
		free(rx->topic);
		free(rx);
		rx = next;
	}
}

static void
report_connected(struct mqtt_link *m, bool session_present)
{
	m->connected = true;
	m->connects++;
	m->retry_logged = false;
	m->revive_delay_ms = REVIVE_MIN_MS;
	atomic_store(&m->connected_pub, true);
	log_info("mqtt", "connected to %s:%d (MQTT %s, session %s)",
	    m->cfg.host, m->cfg.port, m->cfg.protocol == 5 ? "5" : "3.1.1",
	    session_present ? "resumed" : "new");
	if (m->cfg.tls && m->cfg.tls_opts.insecure)
		log_warn("mqtt",
		    "TLS certificate verification is OFF "
		    "(--tls-insecure)");
	if (m->cb.on_connected != NULL)
		m->cb.on_connected(m->ud, session_present);
}

static void
report_lost(struct mqtt_link *m, const char *why)
{
	m->connected = false;
	m->disconnects++;
	atomic_store(&m->connected_pub, false);
	log_warn("mqtt", "connection to %s:%d lost (%s); retrying",
	    m->cfg.host, m->cfg.port, why);
	m->retry_logged = true;
	if (m->cb.on_disconnected != NULL)
		m->cb.on_disconnected(m->ud, why);
}

/* Turns the facts into callbacks, one per transition, in order. A whole
 * connect+loss cycle between two service calls is reported as both. */
static void
deliver_transitions(struct mqtt_link *m)
{
	for (;;) {
		pthread_mutex_lock(&m->mu);
		struct facts f = m->f;
		pthread_mutex_unlock(&m->mu);
		if (!m->connected && m->seen_connacks < f.connacks) {
			m->seen_connacks = f.connacks;
			report_connected(m, f.session_present);
			continue;
		}
		if (m->connected && m->seen_losses < f.losses) {
			m->seen_losses++;
			report_lost(m, rc_text(f.last_loss_rc));
			continue;
		}
		if (m->seen_failures < f.failures) {
			m->seen_failures = f.failures;
			if (!m->retry_logged) {
				m->retry_logged = true;
				const char *why = f.last_failure_refused
				    ? (m->cfg.protocol == 5
				            ? mosquitto_reason_string(
				                f.last_failure_rc)
				            : mosquitto_connack_string(
				                f.last_failure_rc))
				    : rc_text(f.last_failure_rc);
				log_warn("mqtt",
				    "cannot connect to %s:%d (%s); "
				    "retrying",
				    m->cfg.host, m->cfg.port, why);
			}
		}
		return;
	}
}

/* Restarts the loop thread after it gave up (loop_gave_up), with our own
 * backoff since libmosquitto's restarts from zero. The thread is exiting
 * or gone, so loop_stop(force) only joins it. A fresh loop thread with no
 * socket would sit in select() for a whole keepalive before retrying, so
 * the reconnect is started here, after loop_start (libraries.md Q2). */
static void
revive_loop(struct mqtt_link *m)
{
	pthread_mutex_lock(&m->mu);
	bool dead = m->f.loop_dead;
	int rc = m->f.loop_dead_rc;
	pthread_mutex_unlock(&m->mu);
	if (!dead)
		return;
	int64_t now = now_ms();
	if (m->revive_at == 0) {
		bool first = m->revive_delay_ms == REVIVE_MIN_MS;
		m->revive_at = now + m->revive_delay_ms;
		if (m->revive_delay_ms < REVIVE_MAX_MS)
			m->revive_delay_ms *= 2;
		if (first)
			log_warn("mqtt",
			    "libmosquitto stopped its network loop (%s); "
			    "restarting it",
			    rc_text(rc));
	}
	if (now < m->revive_at)
		return;
	m->revive_at = 0;
	pthread_mutex_lock(&m->mu);
	m->f.loop_dead = false;
	pthread_mutex_unlock(&m->mu);
	mosquitto_loop_stop(m->mosq, true);
	int src = mosquitto_loop_start(m->mosq);
	if (src == MOSQ_ERR_SUCCESS)
		mosquitto_reconnect_async(
		    m->mosq); /* failures: thread retries */
	if (src != MOSQ_ERR_SUCCESS) {
		log_error("mqtt", "cannot restart the network loop: %s",
		    mosquitto_strerror(src));
		pthread_mutex_lock(&m->mu);
		m->f.loop_dead = true; /* try again later */
		pthread_mutex_unlock(&m->mu);
	}
}

void
mqtt_link_service(struct mqtt_link *m)
{
	if (m == NULL || !m->started || m->stopped)
		return;
	deliver_transitions(m);
	revive_loop(m);
	deliver_messages(m);
	if (m->connected)
		drain_queue(m);
}

int
mqtt_link_subscribe(struct mqtt_link *m, const char *topic)
{
	if (m == NULL || topic == NULL)
		return BR_EINVAL;
	char *copy = strdup(topic);
	if (copy == NULL)
		return BR_ENOMEM;
	pthread_mutex_lock(&m->mu);
	char **grown = realloc(m->topics, (m->ntopics + 1) * sizeof(*grown));
	if (grown == NULL) {
		pthread_mutex_unlock(&m->mu);
		free(copy);
		return BR_ENOMEM;
	}
	m->topics = grown;
	m->topics[m->ntopics++] = copy;
	int rc = MOSQ_ERR_SUCCESS;
	if (m->f.up)
		rc = mosquitto_subscribe(m->mosq, NULL, copy, 1);
	pthread_mutex_unlock(&m->mu);
	/* NO_CONN: on_connect subscribes again after the reconnect */
	return rc == MOSQ_ERR_SUCCESS || rc == MOSQ_ERR_NO_CONN ? BR_OK
	                                                        : BR_EINVAL;
}

uint32_t
mqtt_link_max_packet(const struct mqtt_link *m)
{
	struct mqtt_link *mm = (struct mqtt_link *) m;
	pthread_mutex_lock(&mm->mu);
	uint32_t v = mm->f.up ? mm->f.max_packet : 0;
	pthread_mutex_unlock(&mm->mu);
	return v;
}

bool
mqtt_link_connected(const struct mqtt_link *m)
{
	return atomic_load(&((struct mqtt_link *) m)->connected_pub);
}

void
mqtt_link_get_stats(const struct mqtt_link *m, struct mqtt_link_stats *s)
{
	struct mqtt_link *mm = (struct mqtt_link *) m;
	memset(s, 0, sizeof(*s));
	s->connected = mm->connected;
	s->connects = mm->connects;
	s->disconnects = mm->disconnects;
	for (int c = 0; c < MSG_CLASS_COUNT; c++) {
		s->published[c] = mm->published[c];
		s->dropped[c] = outq_dropped(mm->q, c) + mm->rejected[c];
	}
	s->queued = outq_count(mm->q);
	s->queued_bytes = outq_bytes(mm->q);
	pthread_mutex_lock(&mm->mu);
	s->inflight = mm->f.inflight0 + mm->f.inflight1;
	s->connect_failures = mm->f.failures;
	pthread_mutex_unlock(&mm->mu);
}

/* ---- shutdown -------------------------------------------------------- */

/* Pumps the queue until it and the window are empty or the deadline. */
static void
flush_until(struct mqtt_link *m, int64_t deadline)
{
	pthread_mutex_lock(&m->mu);
	for (;;) {
		const struct out_msg *msg;
		while (m->f.up && window_open(m)
		    && (msg = outq_peek(m->q)) != NULL) {
			hand_over(m, msg);
			outq_pop(m->q);
		}
		bool idle = outq_count(m->q) == 0
		    && m->f.inflight0 + m->f.inflight1 == 0;
		if (idle || now_ms() >= deadline)
			break;
		wait_changed(m, deadline);
	}
	pthread_mutex_unlock(&m->mu);
}

/* Publishes last and waits for its completion until deadline. */
static void
publish_last(struct mqtt_link *m, const struct out_msg *last, int64_t deadline)
{
	pthread_mutex_lock(&m->mu);
	if (!m->f.up) {
		pthread_mutex_unlock(&m->mu);
		m->rejected[last->cls]++;
		return;
	}
	int mid = hand_over(m, last);
	while (mid > 0 && m->f.up && m->mid_state[mid] != MID_FREE
	    && now_ms() < deadline)
		wait_changed(m, deadline);
	pthread_mutex_unlock(&m->mu);
}

void
mqtt_link_shutdown(
    struct mqtt_link *m, const struct out_msg *last, int timeout_ms)
{
	if (m == NULL || !m->started || m->stopped)
		return;
	int64_t deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
	flush_until(m, deadline);
	if (last != NULL)
		publish_last(m, last, deadline + LAST_ACK_EXTRA_MS);
	m->stopped = true;

	pthread_mutex_lock(&m->mu);
	bool up = m->f.up;
	pthread_mutex_unlock(&m->mu);
	/* Reason 0 (normal disconnection): the broker discards the will,
	 * which is right because `last` already said we are going. */
	mosquitto_disconnect_v5(m->mosq, 0, NULL);
	bool clean = false;
	if (up) {
		int64_t until = now_ms() + DISCONNECT_WAIT_MS;
		pthread_mutex_lock(&m->mu);
		while (m->f.up && now_ms() < until)
			wait_changed(m, until);
		clean = !m->f.up;
		pthread_mutex_unlock(&m->mu);
	}
	/* Without a confirmed close the thread may sit in a blocking
	 * connect() or in a select() on a silent peer: cancel it. */
	mosquitto_loop_stop(m->mosq, !clean);
	if (m->connected) {
		m->connected = false;
		atomic_store(&m->connected_pub, false);
	}
	log_info("mqtt", "disconnected from %s:%d", m->cfg.host, m->cfg.port);
}

void
mqtt_link_destroy(struct mqtt_link *m)
{
	if (m == NULL)
		return;
	if (m->started && !m->stopped)
		mqtt_link_shutdown(m, NULL, 0);
	if (m->mosq != NULL)
		mosquitto_destroy(m->mosq);
	struct rx_msg *rx = m->f.rx_head;
	while (rx != NULL) {
		struct rx_msg *next = rx->next;
		free(rx->topic);
		free(rx);
		rx = next;
	}
	for (size_t i = 0; i < m->ntopics; i++)
		free(m->topics[i]);
	free(m->topics);
	outq_destroy(m->q);
	for (int i = 0; i < PROP_CACHE_SIZE; i++)
		if (m->prop_cache[i].valid)
			mosquitto_property_free_all(&m->prop_cache[i].props);
	free(m->mid_state);
	free_cfg_strings(&m->cfg);
	pthread_cond_destroy(&m->changed);
	pthread_mutex_destroy(&m->mu);
	free(m);
}
