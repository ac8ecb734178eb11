/* The broker link. libmosquitto runs in a network thread of our own
 * (net_main) that alone drives the socket and calls mosquitto_reconnect():
 * libmosquitto 2.0.11's own loop_start thread ends for good after a TLS
 * handshake failure, a protocol error or an EPROTO, sometimes without
 * on_disconnect, and restarting it from another thread raced on mosq->ssl
 * (double SSL_free). Our thread notices every return, backs off (0.25 s
 * doubling to 30 s with jitter, reset once a connection stayed up for a
 * minute, cut short by shutdown) and reconnects, for ever.
 * mosquitto_threaded_set(true) makes publishes from the owner only queue
 * the packet (lib/packet_mosq.c packet__queue); the network thread writes
 * it once kicked (see "Batching").
 *
 * Batching. mosquitto_loop() wakes once per queued packet (each publish
 * writes a byte to the sockpair and each loop iteration reads one) and
 * sends each packet on its own: with TCP_NODELAY that is a segment, a
 * broker wakeup and about eight system calls per message. So once the
 * CONNACK is in, net_main runs pump() instead: its own poll() on the
 * socket and a kick eventfd, mosquitto_loop_read/write/misc (the
 * external-loop API), and TCP_CORK around a write of several packets,
 * which leave as full segments. The owner kicks once per batch
 * (mqtt_link_flush after each pass of its event loop), not per message,
 * and libmosquitto's sockpair is not even created
 * (new_mosquitto_without_sockpair). Should it exist all the same, pump()
 * never reads it: it fills up and the writes to it fail with EAGAIN,
 * which packet__queue ignores. Connecting, the TLS
 * handshake (want_connect is not visible through the API) and the CONNACK
 * still run in mosquitto_loop().
 *
 * Reads are gathered too, while acknowledgements stream: the broker
 * answers every QoS 1 message with its own PUBACK, and waking the thread
 * for each one cost more than everything else the link does (a thread
 * wake-up is several µs in a VM). When a read took in GATHER_MIN_ACKS or
 * more PUBACKs, pump() leaves the socket alone for READ_GATHER_NS and
 * then takes everything that arrived in one mosquitto_loop_read (which
 * reads as many packets as are in flight); the rule is struct read_gate
 * (core/readgate.h). Kicks are still served at once, so sending is not
 * delayed. Not gathered:
 *  - a sparse stream (a read found at most one PUBACK): at 1000 events a
 *    second a deferred read lands next to the next send and delays it
 *    (measured: +50 µs median latency when every read was deferred);
 *  - a broker that announces a receive maximum below our window
 *    (mosquitto's default is 20): libmosquitto then holds back messages
 *    until acknowledgements are read, so deferring them throttles
 *    sending (measured: 14 % less throughput at 20);
 *  - a hang-up or an error.
 *
 * Callbacks only record facts under link->mu and call cfg->wake;
 * mqtt_link_service() turns the facts into mqtt_link_cb calls and log
 * lines in the owner's thread and feeds the bounded outq into libmosquitto
 * while the link is up and the in-flight window has room.
 *
 * Locking. link->mu is held across mosquitto_publish_v5/subscribe calls
 * and taken inside on_publish/on_connect/on_disconnect/on_message. That is
 * deadlock-free with libmosquitto 2.0.11 because (lib/actions.c,
 * lib/messages_mosq.c, lib/packet_mosq.c, lib/handle_pubackcomp.c):
 *  - publish/subscribe from a thread other than the loop only take
 *    mid_mutex, msgs_out.mutex, out_packet_mutex and log_callback_mutex,
 *    each released before returning; in threaded mode packet__queue()
 *    only queues (and pokes the sockpair, if any), never writes, so they
 *    never take callback_mutex or current_out_packet_mutex;
 *  - the loop thread runs every callback holding callback_mutex (plus
 *    current_out_packet_mutex for the QoS 0 on_publish fired from
 *    packet__write), but never mid_mutex, msgs_out.mutex or out_packet_mutex:
 *    handle__pubackcomp() releases msgs_out.mutex before on_publish;
 *  - on_log runs under log_callback_mutex and takes only detail_mu, a leaf
 *    lock nobody holds while calling libmosquitto.
 * So the two threads never wait for each other's locks in opposite order.
 * Holding mu across publish is what makes the in-flight bookkeeping exact:
 * the mid is registered before its on_publish can look for it, and a
 * disconnect cannot slip between "publish accepted" and "registered".
 *
 * In-flight bookkeeping: mid_state[mid] says whether a handed-over message
 * is a QoS 0 one (completed by on_publish once written, silently discarded
 * by libmosquitto if the link drops first) or a QoS >= 1 one (completed by
 * on_publish at PUBACK/PUBCOMP; kept and resent by libmosquitto across
 * reconnects). Every drop forgets the QoS 0 ones, so neither count can
 * leak or go negative. */
#include "mqtt_link.h"

#include <errno.h>
#include <limits.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "log.h"
#include "readgate.h"

#define MID_SPACE 65536
enum mid_kind { MID_FREE = 0, MID_QOS0 = 1, MID_QOS1 = 2 };

#define DEFAULT_WINDOW    1000u
#define MAX_WINDOW        60000u /* stays well below the 16-bit mid space */
#define DEFAULT_KEEPALIVE 30
#define SESSION_EXPIRY_S  86400u
#define RX_QUEUE_MAX      1024 /* received messages waiting for service() */
/* a full queue holds the network thread up to this long before a drop: a
 * burst of retained states at subscribe (thousands of them after a restart)
 * then waits for service() instead of being lost */
#define RX_WAIT_MS     2000
#define REJECT_LOG_MAX 5
#define LAST_ACK_EXTRA_MS                                                     \
	100 /* how long `last` may wait past the deadline                     \
	     */
#define DISCONNECT_WAIT_MS 80
#define JOIN_WAIT_MS       100 /* then the network thread is cancelled */
/* contract §4.4: 0.25 s doubling to 30 s, +-20 % jitter, reset once a
 * connection stayed up for a minute */
#define BACKOFF_MIN_MS     250
#define BACKOFF_MAX_MS     30000
#define BACKOFF_JITTER_PCT 20
#define BACKOFF_STABLE_MS  60000
#define WHY_MAX            160
#define DETAIL_MAX         320 /* libmosquitto's error lines (OpenSSL's) */
/* pump()'s longest sleep: keepalive (mosquitto_loop_misc) and a kick
 * that a caller forgot are served at least this often */
#define PUMP_TICK_MS 1000
/* pump() reads the socket at most this often while the broker keeps
 * sending (PUBACKs): see "Batching" */
#define READ_GATHER_NS  1000000
#define GATHER_MIN_ACKS 2
#define FAILURE_LOG_EVERY                                                     \
	10 /* an unchanged reason is repeated this seldom                     \
	    */

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
	char loss_why[WHY_MAX];
	int last_failure_rc; /* refused CONNACK code or disconnect rc */
	bool last_failure_refused;
	char failure_why[WHY_MAX];
	char failure_detail[DETAIL_MAX]; /* what libmosquitto logged */
	/* the current connection attempt's outcome is recorded (refusal,
	 * loss or failure): a later report of the same drop is not news */
	bool attempt_settled;
	bool attempt_connected; /* CONNACK accepted in this attempt */
	bool stopping; /* shutdown: the network thread must end */
	bool in_loop; /* the network thread owns a socket (not connecting) */
	unsigned inflight0, inflight1;
	/* QoS >= 1 messages from before the latest drop are still with
	 * libmosquitto, which resends them only after on_connect returns:
	 * anything handed over before they complete would overtake them. */
	bool resend_pending;
	/* the owner has messages waiting for window room: only then must a
	 * completion wake it (a wake per message costs two syscalls and a
	 * thread switch) */
	bool backlog;
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
	char instance[PROP_STR_MAX], type[PROP_STR_MAX],
	    prompt_id[PROP_STR_MAX];
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
	pthread_t net_thread;
	int kick_fd; /* eventfd: wakes pump() */
	/* owner thread: messages handed over since the last kick, and
	 * whether the owner batches kicks through mqtt_link_flush() */
	unsigned handed_since_kick;
	bool batching;
	atomic_uint handed; /* handed over, not yet seen by pump() */
	/* network thread only (pump, on_connect, on_publish) */
	struct read_gate gate;
	uint64_t acks_read; /* QoS 1 completions */
	/* for the stats: all reads, and the deferred ones */
	atomic_uint_fast64_t socket_reads, gathered_reads;
	atomic_bool
	    gather_allowed; /* gate.allowed, readable by other threads */
	int first_rc; /* of the connect_async in mqtt_link_start */
	char first_why[WHY_MAX];

	/* libmosquitto's error log lines of the current attempt (on_log) */
	pthread_mutex_t detail_mu;
	char detail[DETAIL_MAX];

	pthread_mutex_t mu;
	pthread_cond_t changed; /* completions and state changes */
	struct facts f;
	uint8_t *mid_state; /* MID_SPACE entries */
	uint8_t *mid_class; /* the msg_class of each handed-over mid */
	char **topics; /* subscriptions, replayed on every CONNACK */
	size_t ntopics;

	/* owner thread view */
	bool connected; /* as reported through cb */
	uint64_t seen_connacks, seen_losses, seen_failures;
	uint64_t connects, disconnects;
	uint64_t published[MSG_CLASS_COUNT];
	/* NO_CONN QoS 0, QoS 0 unwritten at a drop, invalid, ... */
	uint64_t rejected[MSG_CLASS_COUNT];
	uint64_t reject_logged;
	bool retry_logged; /* a failure of this outage was logged */
	uint64_t series_failures; /* failed attempts in this outage */
	char logged_why[WHY_MAX + DETAIL_MAX + 2]; /* the reason last logged */
	atomic_bool connected_pub; /* for mqtt_link_connected() */
};

static int64_t
now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

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

/* Wakes pump() (any thread; an eventfd write never blocks). */
static void
kick(struct mqtt_link *m)
{
	uint64_t one = 1;
	if (m->kick_fd >= 0 && write(m->kick_fd, &one, sizeof(one)) < 0) {
		/* EAGAIN: the counter is saturated, pump() wakes anyway */
	}
}

/* Owner thread: kicks when messages were handed over since the last kick. */
static void
kick_if_handed(struct mqtt_link *m)
{
	if (m->handed_since_kick == 0)
		return;
	m->handed_since_kick = 0;
	kick(m);
}

/* Owner thread: a kick per hand-over unless the owner batches them. */
static void
kick_unless_batching(struct mqtt_link *m)
{
	if (!m->batching)
		kick_if_handed(m);
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

/* Shutdown may cancel the network thread inside mosquitto_loop() or
 * mosquitto_reconnect(); a cancellation inside our callbacks would leave
 * libmosquitto's callback_mutex or our mu locked for ever, so callbacks
 * are not cancellable. */
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

/* What a refused CONNACK code means, in the protocol's own words. */
static const char *
refusal_text(const struct mqtt_link *m, int rc)
{
	return m->cfg.protocol == 5 ? mosquitto_reason_string(rc)
	                            : mosquitto_connack_string(rc);
}

/* QoS 0 messages not yet written when the link drops are discarded by
 * libmosquitto without on_publish (lib/packet_mosq.c packet__cleanup_all):
 * forget them, and count them as dropped, by class (mu held). */
static void
forget_qos0(struct mqtt_link *m)
{
	if (m->f.inflight0 == 0)
		return;
	for (size_t mid = 0; mid < MID_SPACE; mid++)
		if (m->mid_state[mid] == MID_QOS0) {
			m->mid_state[mid] = MID_FREE;
			m->rejected[m->mid_class[mid]]++;
		}
	m->f.inflight0 = 0;
}

/* The link went down, reported or not (mu held). */
static void
link_down(struct mqtt_link *m)
{
	forget_qos0(m);
	if (m->f.inflight1 > 0)
		m->f.resend_pending = true;
	m->f.attempt_settled = true;
}

/* A drop after an accepted CONNACK (mu held). */
static void
record_loss(struct mqtt_link *m, int rc, const char *why)
{
	m->f.up = false;
	m->f.losses++;
	m->f.last_loss_rc = rc;
	snprintf(m->f.loss_why, sizeof(m->f.loss_why), "%s", why);
	link_down(m);
}

/* An attempt that ended before an accepted CONNACK (mu held); takes what
 * libmosquitto logged about it along. */
static void
record_failure(struct mqtt_link *m, int rc, bool refused, const char *why)
{
	m->f.failures++;
	m->f.last_failure_rc = rc;
	m->f.last_failure_refused = refused;
	snprintf(m->f.failure_why, sizeof(m->f.failure_why), "%s", why);
	pthread_mutex_lock(&m->detail_mu);
	snprintf(
	    m->f.failure_detail, sizeof(m->f.failure_detail), "%s", m->detail);
	pthread_mutex_unlock(&m->detail_mu);
	link_down(m);
}

static void
on_log(struct mosquitto *mosq, void *obj, int level, const char *str)
{
	struct mqtt_link *m = obj;
	if ((level & (MOSQ_LOG_ERR | MOSQ_LOG_WARNING)) == 0 || str == NULL)
		return;
	int cs = callback_enter();
	pthread_mutex_lock(&m->detail_mu);
	/* OpenSSL's queue comes line by line, sometimes twice */
	size_t used = strlen(m->detail);
	if (strstr(m->detail, str) == NULL && used + 3 < sizeof(m->detail))
		snprintf(m->detail + used, sizeof(m->detail) - used, "%s%s",
		    used > 0 ? "; " : "", str);
	pthread_mutex_unlock(&m->detail_mu);
	callback_leave(cs);
}

static void
on_connect(struct mosquitto *mosq, void *obj, int rc, int flags,
    const mosquitto_property *props)
{
	struct mqtt_link *m = obj;
	int cs = callback_enter();
	/* libmosquitto formats a line per packet for a log callback: keep
	 * it only while there is a failure to explain */
	if (rc == 0)
		mosquitto_log_callback_set(mosq, NULL);
	pthread_mutex_lock(&m->mu);
	if (rc == 0) {
		uint32_t max_packet = 0;
		mosquitto_property_read_int32(
		    props, MQTT_PROP_MAXIMUM_PACKET_SIZE, &max_packet, false);
		m->f.up = true;
		m->f.attempt_connected = true;
		m->f.connacks++;
		m->f.session_present = (flags & 1) != 0;
		m->f.max_packet = max_packet;
		uint16_t receive_max = 0; /* 0: none announced */
		mosquitto_property_read_int16(
		    props, MQTT_PROP_RECEIVE_MAXIMUM, &receive_max, false);
		bool gather = receive_max == 0 || receive_max >= m->window;
		read_gate_allow(&m->gate, gather);
		atomic_store(&m->gather_allowed, gather);
		for (size_t i = 0; i < m->ntopics; i++)
			mosquitto_subscribe(mosq, NULL, m->topics[i], 1);
	} else {
		/* an MQTT 5 refusal is followed by on_disconnect(PROTOCOL),
		 * which must not replace this reason (attempt_settled) */
		record_failure(m, rc, true, refusal_text(m, rc));
	}
	pthread_cond_broadcast(&m->changed);
	pthread_mutex_unlock(&m->mu);
	wake(m);
	callback_leave(cs);
}

/* Runs in the network thread inside mosquitto_loop(), so errno (for
 * MOSQ_ERR_ERRNO's text) is still the failing call's. */
static void
on_disconnect(
    struct mosquitto *mosq, void *obj, int rc, const mosquitto_property *props)
{
	struct mqtt_link *m = obj;
	int cs = callback_enter();
	const char *why = rc_text(rc);
	pthread_mutex_lock(&m->mu);
	if (m->f.up)
		record_loss(m, rc, why);
	else if (!m->f.attempt_settled)
		record_failure(m, rc, false, why);
	link_down(m);
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
		else if (m->mid_state[mid] == MID_QOS1) {
			m->f.inflight1--;
			m->acks_read++;
		}
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
	int64_t until = now_ms() + RX_WAIT_MS;
	while (m->f.rx_len >= RX_QUEUE_MAX && !m->f.stopping
	    && now_ms() < until) {
		pthread_mutex_unlock(&m->mu);
		wake(m);
		pthread_mutex_lock(&m->mu);
		wait_changed(m, now_ms() + 50);
	}
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

/* libmosquitto 2.0.11's mosquitto_tls_set() refuses a client certificate
 * without a cafile or capath (MOSQ_ERR_INVAL, nothing logged), so without
 * --tls-ca the system trust store is passed as capath: Debian 12's OpenSSL
 * default directory (/usr/lib/ssl/certs) is a link to it and it holds the
 * c_rehash links OpenSSL looks CAs up by. MOSQ_OPT_TLS_USE_OS_CERTS still
 * loads OpenSSL's defaults (ca-certificates.crt, SSL_CERT_FILE/DIR) too,
 * so the trust is the same as without a client certificate. */
#define SYSTEM_CA_DIR "/etc/ssl/certs"

/* mosquitto_tls_set() opens each file and says only MOSQ_ERR_INVAL when
 * one does not open; checking first lets the log name option and file. */
static int
check_readable(const char *path, const char *option)
{
	if (path == NULL)
		return BR_OK;
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		log_error("mqtt", "%s %s: cannot read it: %s", option, path,
		    strerror(errno));
		return BR_EIO;
	}
	fclose(f);
	return BR_OK;
}

static int
mosq_to_br(int rc)
{
	switch (rc) {
	case MOSQ_ERR_SUCCESS:
		return BR_OK;
	case MOSQ_ERR_NOMEM:
		return BR_ENOMEM;
	case MOSQ_ERR_ERRNO:
		return BR_EIO;
	default:
		return BR_EINVAL;
	}
}

/* Returns a br_err and logs the cause of a failure. */
static int
setup_tls(struct mqtt_link *m)
{
	const struct tls_opts *t = &m->cfg.tls_opts;
	if (!m->cfg.tls)
		return BR_OK;
	int err = check_readable(t->ca, "--tls-ca");
	if (err == BR_OK)
		err = check_readable(t->cert, "--tls-cert");
	if (err == BR_OK)
		err = check_readable(t->key, "--tls-key");
	if (err != BR_OK)
		return err;
	int rc = MOSQ_ERR_SUCCESS;
	if (t->ca == NULL)
		rc = mosquitto_int_option(
		    m->mosq, MOSQ_OPT_TLS_USE_OS_CERTS, 1);
	/* 2.0.11 rejects every reconnect (MOSQ_ERR_INVAL, "SSL_CTX_WITH_
	 * DEFAULTS used without specifying cafile") once its SSL_CTX exists
	 * and only the OS certificates are used; without the defaults flag it
	 * builds the context once, fully, and reuses it (net__init_ssl_ctx) */
	if (rc == MOSQ_ERR_SUCCESS && t->ca == NULL)
		rc = mosquitto_int_option(
		    m->mosq, MOSQ_OPT_SSL_CTX_WITH_DEFAULTS, 0);
	if (rc == MOSQ_ERR_SUCCESS && (t->ca != NULL || t->cert != NULL))
		rc = mosquitto_tls_set(m->mosq, t->ca,
		    t->ca == NULL ? SYSTEM_CA_DIR : NULL, t->cert, t->key,
		    NULL);
	if (rc == MOSQ_ERR_SUCCESS)
		rc = mosquitto_tls_opts_set(
		    m->mosq, t->insecure ? 0 : 1, NULL, NULL);
	if (rc == MOSQ_ERR_SUCCESS)
		rc = mosquitto_tls_insecure_set(m->mosq, t->insecure);
	if (rc != MOSQ_ERR_SUCCESS)
		log_error("mqtt",
		    "cannot set up TLS to the broker (--tls-ca %s, "
		    "--tls-cert %s, --tls-key %s): %s",
		    t->ca ? t->ca : "not set", t->cert ? t->cert : "not set",
		    t->key ? t->key : "not set", mosquitto_strerror(rc));
	return mosq_to_br(rc);
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

/* mosquitto_new() without the wake-up sockpair. libmosquitto 2.0.11
 * writes a byte to it on every publish (a system call per message, about
 * 1 us here) just to wake its own select(); our network thread is woken by
 * kick() instead, and libmosquitto supports running without the pair (it
 * only warns that a publish then waits for the next loop iteration, which
 * pump() runs on every kick). The pair is created in mosquitto_new() and
 * nowhere else, so that call runs with the descriptor limit lowered to the
 * lowest free descriptor: socketpair() fails with EMFILE, nothing else in
 * mosquitto_new() opens a descriptor, and the limit is restored at once.
 * Only the owner's thread runs here (the network thread starts later). */
static struct mosquitto *
new_mosquitto_without_sockpair(const char *id, bool clean, void *ud)
{
	struct rlimit saved;
	int lowest_free = fcntl(0, F_DUPFD_CLOEXEC, 0);
	bool lowered = false;
	if (lowest_free >= 0) {
		close(lowest_free);
		struct rlimit lim;
		if (getrlimit(RLIMIT_NOFILE, &saved) == 0) {
			lim = saved;
			lim.rlim_cur = (rlim_t) lowest_free;
			lowered = setrlimit(RLIMIT_NOFILE, &lim) == 0;
		}
	}
	struct mosquitto *mosq = mosquitto_new(id, clean, ud);
	int new_errno = errno; /* ENOMEM or EINVAL, for the caller's log */
	if (lowered)
		setrlimit(RLIMIT_NOFILE, &saved);
	errno = new_errno;
	return mosq;
}

/* Returns a br_err and logs the cause of a failure. */
static int
setup_mosquitto(struct mqtt_link *m)
{
	const struct mqtt_link_cfg *c = &m->cfg;
	bool v5 = c->protocol == 5;
	m->mosq = new_mosquitto_without_sockpair(c->client_id, !v5, m);
	if (m->mosq == NULL) {
		int e = errno;
		log_error("mqtt",
		    "cannot create the broker client (client id "
		    "%s): %s",
		    c->client_id, strerror(e));
		return e == ENOMEM ? BR_ENOMEM : BR_EINVAL;
	}
	int rc = mosquitto_int_option(m->mosq, MOSQ_OPT_PROTOCOL_VERSION,
	    v5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311);
	/* small messages one after another: Nagle would hold each for the
	 * previous one's ACK (measured: 21 ms median added latency) */
	if (rc == MOSQ_ERR_SUCCESS)
		rc = mosquitto_int_option(m->mosq, MOSQ_OPT_TCP_NODELAY, 1);
	/* publishes from the owner only queue and wake net_main */
	if (rc == MOSQ_ERR_SUCCESS)
		rc = mosquitto_threaded_set(m->mosq, true);
	if (rc == MOSQ_ERR_SUCCESS)
		rc = mosquitto_max_inflight_messages_set(m->mosq, m->window);
	if (rc == MOSQ_ERR_SUCCESS && c->username != NULL)
		rc = mosquitto_username_pw_set(
		    m->mosq, c->username, c->password);
	if (rc == MOSQ_ERR_SUCCESS)
		rc = setup_will(m);
	if (rc != MOSQ_ERR_SUCCESS) {
		log_error("mqtt", "cannot set up the broker client: %s",
		    mosquitto_strerror(rc));
		return mosq_to_br(rc);
	}
	mosquitto_connect_v5_callback_set(m->mosq, on_connect);
	mosquitto_disconnect_v5_callback_set(m->mosq, on_disconnect);
	mosquitto_publish_v5_callback_set(m->mosq, on_publish);
	mosquitto_message_v5_callback_set(m->mosq, on_message);
	return setup_tls(m);
}

int
mqtt_link_create(const struct mqtt_link_cfg *cfg,
    const struct mqtt_link_cb *cb, void *ud, struct mqtt_link **out)
{
	*out = NULL;
	if (cfg == NULL || cfg->host == NULL || cfg->client_id == NULL)
		return BR_EINVAL;
	struct mqtt_link *m = calloc(1, sizeof(*m));
	if (m == NULL)
		return BR_ENOMEM;
	int rc = BR_ENOMEM;
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&m->changed, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&m->mu, NULL);
	pthread_mutex_init(&m->detail_mu, NULL);
	if (cb != NULL)
		m->cb = *cb;
	m->ud = ud;
	bool ok = copy_cfg(&m->cfg, cfg);
	if (m->cfg.protocol != 4)
		m->cfg.protocol = 5;
	if (m->cfg.keepalive_s <= 0)
		m->cfg.keepalive_s = DEFAULT_KEEPALIVE;
	m->window = cfg->window == 0 ? DEFAULT_WINDOW : cfg->window;
	if (m->window > MAX_WINDOW)
		m->window = MAX_WINDOW;
	m->mid_state = calloc(MID_SPACE, 1);
	m->mid_class = calloc(MID_SPACE, 1);
	m->q = outq_create(cfg->queue_max_messages, cfg->queue_max_bytes);
	m->kick_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	read_gate_init(&m->gate, READ_GATHER_NS, GATHER_MIN_ACKS);
	if (!ok || m->mid_state == NULL || m->mid_class == NULL || m->q == NULL
	    || m->kick_fd < 0)
		goto fail;
	mosquitto_lib_init(); /* idempotent; no-op after the first */
	rc = setup_mosquitto(m);
	if (rc != BR_OK)
		goto fail;
	*out = m;
	return BR_OK;
fail:
	mqtt_link_destroy(m);
	return rc;
}

/* ---- network thread -------------------------------------------------- */

/* Starts a connection attempt with a clean slate; false once shutdown
 * began (checked under mu, so no reconnect can start after it). */
static bool
begin_attempt(struct mqtt_link *m)
{
	pthread_mutex_lock(&m->detail_mu);
	m->detail[0] = '\0';
	pthread_mutex_unlock(&m->detail_mu);
	mosquitto_log_callback_set(m->mosq, on_log);
	pthread_mutex_lock(&m->mu);
	bool go = !m->f.stopping;
	if (go) {
		m->f.attempt_settled = false;
		m->f.attempt_connected = false;
		m->f.in_loop = false;
	}
	pthread_mutex_unlock(&m->mu);
	return go;
}

/* The attempt has its socket; returns whether shutdown began while it was
 * connecting, too early for shutdown's mosquitto_disconnect to reach it. */
static bool
enter_loop(struct mqtt_link *m)
{
	pthread_mutex_lock(&m->mu);
	m->f.in_loop = true;
	bool stopping = m->f.stopping;
	pthread_mutex_unlock(&m->mu);
	return stopping;
}

/* The attempt is over with rc: records it when no callback did (2.0.11
 * gives no on_disconnect for a failed TLS handshake). Returns whether it
 * reached an accepted CONNACK. */
static bool
end_attempt(struct mqtt_link *m, int rc, const char *why)
{
	pthread_mutex_lock(&m->mu);
	bool news = !m->f.attempt_settled;
	if (news && m->f.up)
		record_loss(m, rc, why);
	else if (news)
		record_failure(m, rc, false, why);
	bool reached = m->f.attempt_connected;
	m->f.in_loop = false;
	pthread_cond_broadcast(&m->changed);
	pthread_mutex_unlock(&m->mu);
	if (news)
		wake(m);
	return reached;
}

/* delay_ms +- BACKOFF_JITTER_PCT, so that many bridges restarted together
 * do not reconnect in lockstep (net thread only: the state is its own). */
static int64_t
jittered(int64_t delay_ms, uint32_t *state)
{
	*state ^= *state << 13;
	*state ^= *state >> 17;
	*state ^= *state << 5;
	int64_t span = delay_ms * BACKOFF_JITTER_PCT / 100;
	return delay_ms - span
	    + (int64_t) (*state % (uint32_t) (2 * span + 1));
}

/* Sleeps delay_ms, cut short by shutdown; false once shutdown began. */
static bool
backoff_wait(struct mqtt_link *m, int64_t delay_ms)
{
	int64_t until = now_ms() + delay_ms;
	pthread_mutex_lock(&m->mu);
	while (!m->f.stopping && now_ms() < until)
		wait_changed(m, until);
	bool go = !m->f.stopping;
	pthread_mutex_unlock(&m->mu);
	return go;
}

/* One libmosquitto call that may block (getaddrinfo(), select()) with
 * cancellation allowed: shutdown's last resort. None of our locks is held
 * there, and our callbacks turn it off again. The reconnect is the
 * asynchronous one, like the first connect: the TCP and TLS handshakes
 * then run in mosquitto_loop(), whose select() shutdown can wake, instead
 * of a blocking connect() only a cancellation ends. */
static int
cancellable(struct mqtt_link *m, bool reconnect, char *why, size_t cap)
{
	int old;
	pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, &old);
	int rc = reconnect
	    ? mosquitto_reconnect_async(m->mosq)
	    : mosquitto_loop(m->mosq, m->cfg.keepalive_s * 1000, 1);
	int saved_errno = errno;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
	errno = saved_errno; /* MOSQ_ERR_ERRNO's text is strerror(errno) */
	if (rc != MOSQ_ERR_SUCCESS)
		snprintf(why, cap, "%s", rc_text(rc));
	return rc;
}

static bool
link_up(struct mqtt_link *m)
{
	pthread_mutex_lock(&m->mu);
	bool up = m->f.up && !m->f.stopping;
	pthread_mutex_unlock(&m->mu);
	return up;
}

static void
set_cork(int sock, int on)
{
	/* not TCP (a unix socket, say): the packets just leave one by one */
	(void) setsockopt(sock, IPPROTO_TCP, TCP_CORK, &on, sizeof(on));
}

/* One iteration of the connected link (see "Batching" above): what
 * mosquitto_loop() does, minus the sockpair, plus the kick eventfd and
 * corked writes. Returns like mosquitto_loop(). */
static int
pump(struct mqtt_link *m, char *why, size_t cap)
{
	int sock = mosquitto_socket(m->mosq);
	if (sock < 0) {
		snprintf(why, cap, "%s", rc_text(MOSQ_ERR_NO_CONN));
		return MOSQ_ERR_NO_CONN;
	}
	int64_t gate_ns = read_gate_wait_ns(&m->gate, now_ns());
	bool read_due = gate_ns == 0;
	struct pollfd pfd[2] = {
		{ .fd = sock, .events = read_due ? POLLIN : 0 },
		{ .fd = m->kick_fd, .events = POLLIN },
	};
	/* want_write reads libmosquitto's queue pointers without its lock
	 * while the owner may be queueing: a stale "yes" costs one empty
	 * loop_write, a stale "no" nothing, because every packet the owner
	 * queues comes with a kick */
	if (mosquitto_want_write(m->mosq))
		pfd[0].events |= POLLOUT;
	int64_t wait_ns
	    = read_due ? (int64_t) PUMP_TICK_MS * 1000000 : gate_ns;
	struct timespec timeout
	    = { wait_ns / 1000000000, wait_ns % 1000000000 };
	int old;
	pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, &old);
	int n = ppoll(pfd, 2, &timeout, NULL);
	int saved_errno = errno;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
	if (n < 0 && saved_errno != EINTR) {
		errno = saved_errno;
		snprintf(why, cap, "%s", rc_text(MOSQ_ERR_ERRNO));
		return MOSQ_ERR_ERRNO;
	}
	if (n > 0 && (pfd[1].revents & POLLIN) != 0) {
		uint64_t count;
		if (read(m->kick_fd, &count, sizeof(count)) < 0) {
			/* EAGAIN: another read took it */
		}
	}
	int rc = MOSQ_ERR_SUCCESS;
	if (n > 0 && (pfd[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
		uint64_t acks0 = m->acks_read;
		rc = mosquitto_loop_read(m->mosq, 1);
		unsigned acks = (unsigned) (m->acks_read - acks0);
		if (read_gate_read(&m->gate, now_ns(), acks))
			atomic_fetch_add_explicit(
			    &m->gathered_reads, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(
		    &m->socket_reads, 1, memory_order_relaxed);
	}
	sock = mosquitto_socket(m->mosq);
	if (rc == MOSQ_ERR_SUCCESS && sock >= 0
	    && mosquitto_want_write(m->mosq)) {
		unsigned batch = atomic_exchange_explicit(
		    &m->handed, 0, memory_order_relaxed);
		if (batch > 1)
			set_cork(sock, 1);
		rc = mosquitto_loop_write(m->mosq, 1);
		sock = mosquitto_socket(m->mosq);
		if (batch > 1 && sock >= 0)
			set_cork(sock, 0);
	}
	if (rc == MOSQ_ERR_SUCCESS && mosquitto_socket(m->mosq) >= 0)
		rc = mosquitto_loop_misc(m->mosq);
	if (rc != MOSQ_ERR_SUCCESS)
		snprintf(why, cap, "%s", rc_text(rc));
	return rc;
}

/* The only thread that drives libmosquitto after mqtt_link_start: runs
 * the loop until it returns, whatever the reason, then backs off and
 * reconnects, until shutdown. */
static void *
net_main(void *arg)
{
	struct mqtt_link *m = arg;
	int old;
	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
	int rc = m->first_rc;
	char why[WHY_MAX];
	snprintf(why, sizeof(why), "%s", m->first_why);
	int64_t delay_ms = BACKOFF_MIN_MS;
	uint32_t seed = (uint32_t) now_ms() ^ (uint32_t) (uintptr_t) m;
	seed = seed ? seed : 1;
	for (;;) {
		/* reason 0: the broker discards the will */
		if (rc == MOSQ_ERR_SUCCESS && enter_loop(m))
			mosquitto_disconnect_v5(m->mosq, 0, NULL);
		int64_t began = now_ms();
		while (rc == MOSQ_ERR_SUCCESS)
			rc = link_up(m)
			    ? pump(m, why, sizeof(why))
			    : cancellable(m, false, why, sizeof(why));
		/* a broker that accepts and drops at once must not reset it */
		if (end_attempt(m, rc, why)
		    && now_ms() - began >= BACKOFF_STABLE_MS)
			delay_ms = BACKOFF_MIN_MS;
		if (!backoff_wait(m, jittered(delay_ms, &seed))
		    || !begin_attempt(m))
			break;
		delay_ms = delay_ms * 2 < BACKOFF_MAX_MS ? delay_ms * 2
		                                         : BACKOFF_MAX_MS;
		rc = cancellable(m, true, why, sizeof(why));
	}
	return NULL;
}

/* ---- owner thread ---------------------------------------------------- */

static int
start_connecting(struct mqtt_link *m)
{
	int rc = MOSQ_ERR_SUCCESS;
	if (m->cfg.protocol == 5)
		rc = store_connect_properties(m);
	if (rc != MOSQ_ERR_SUCCESS)
		return rc;
	begin_attempt(m);
	/* Refused or unreachable is fine: net_main retries. In threaded
	 * mode this only queues CONNECT (no write that could fail and reset
	 * the state, libraries.md Q2), and no other thread runs yet. */
	rc = mosquitto_connect_async(
	    m->mosq, m->cfg.host, m->cfg.port, m->cfg.keepalive_s);
	if (rc == MOSQ_ERR_INVAL || rc == MOSQ_ERR_NOMEM)
		return rc;
	m->first_rc = rc;
	snprintf(m->first_why, sizeof(m->first_why), "%s", rc_text(rc));
	int err = pthread_create(&m->net_thread, NULL, net_main, m);
	if (err != 0) {
		errno = err;
		return MOSQ_ERR_ERRNO;
	}
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
		return mosq_to_br(rc);
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
props_for(struct mqtt_link *m, const struct out_msg *msg, int *rc, bool *owned)
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
		    && prop_str_eq(
		        e->has_prompt_id, e->prompt_id, o->prompt_id)
		    && prop_str_eq(
		        e->has_instance, e->instance, o->instance)) {
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
	m->handed_since_kick++;
	atomic_fetch_add_explicit(&m->handed, 1, memory_order_relaxed);
	if (mid <= 0 || mid >= MID_SPACE)
		return 0;
	/* A mid still marked would mean the 16-bit space wrapped onto a
	 * message we never saw complete: retire it so counts stay exact. */
	if (m->mid_state[mid] == MID_QOS0)
		m->f.inflight0--;
	else if (m->mid_state[mid] == MID_QOS1)
		m->f.inflight1--;
	m->mid_state[mid] = qos > 0 ? MID_QOS1 : MID_QOS0;
	m->mid_class[mid] = (uint8_t) msg->cls;
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
	kick_unless_batching(m);
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
	if (direct) {
		kick_unless_batching(m);
		return BR_OK;
	}
	return outq_push(m->q, msg);
}

static void
deliver_messages(struct mqtt_link *m)
{
	pthread_mutex_lock(&m->mu);
	struct rx_msg *rx = m->f.rx_head;
	m->f.rx_head = m->f.rx_tail = NULL;
	m->f.rx_len = 0;
	pthread_cond_broadcast(&m->changed); /* room for on_message */
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
	m->series_failures = 0;
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
	m->series_failures = 0;
	snprintf(m->logged_why, sizeof(m->logged_why), "%s", why);
	if (m->cb.on_disconnected != NULL)
		m->cb.on_disconnected(m->ud, why);
}

/* Hints for the refusals a user can fix with an option. */
static const char *
refusal_hint(const struct mqtt_link *m, int rc)
{
	bool credentials = m->cfg.protocol == 5
	    ? rc == MQTT_RC_BAD_USERNAME_OR_PASSWORD
	        || rc == MQTT_RC_NOT_AUTHORIZED
	    : rc == CONNACK_REFUSED_BAD_USERNAME_PASSWORD
	        || rc == CONNACK_REFUSED_NOT_AUTHORIZED;
	return credentials ? " (check --mqtt-username / --mqtt-password-file)"
	                   : "";
}

/* Logs n more failed attempts of this outage: the first, then whenever
 * the reason changes, and every FAILURE_LOG_EVERY-th, so that a broker
 * refusing for hours does not write a line per retry. */
static void
report_failure(struct mqtt_link *m, const struct facts *f, uint64_t n)
{
	char why[sizeof(m->logged_why)];
	/* libmosquitto's texts end with a period: not before the detail */
	int base = (int) strlen(f->failure_why);
	if (base > 0 && f->failure_why[base - 1] == '.')
		base--;
	if (f->failure_detail[0] != '\0')
		snprintf(why, sizeof(why), "%.*s: %s", base, f->failure_why,
		    f->failure_detail);
	else
		snprintf(why, sizeof(why), "%s", f->failure_why);
	uint64_t before = m->series_failures;
	m->series_failures += n;
	bool changed = strcmp(why, m->logged_why) != 0;
	bool nth = before / FAILURE_LOG_EVERY
	    != m->series_failures / FAILURE_LOG_EVERY;
	if (m->retry_logged && !changed && !nth)
		return;
	m->retry_logged = true;
	snprintf(m->logged_why, sizeof(m->logged_why), "%s", why);
	char attempts[48] = "";
	if (m->series_failures > 1)
		snprintf(attempts, sizeof(attempts), " (%llu failed attempts)",
		    (unsigned long long) m->series_failures);
	if (f->last_failure_refused)
		log_warn("mqtt",
		    "broker %s:%d refused the connection: %s%s; retrying%s",
		    m->cfg.host, m->cfg.port, why,
		    refusal_hint(m, f->last_failure_rc), attempts);
	else
		log_warn("mqtt", "cannot connect to %s:%d (%s); retrying%s",
		    m->cfg.host, m->cfg.port, why, attempts);
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
			report_lost(m, f.loss_why);
			continue;
		}
		if (m->seen_failures < f.failures) {
			uint64_t n = f.failures - m->seen_failures;
			m->seen_failures = f.failures;
			report_failure(m, &f, n);
		}
		return;
	}
}

void
mqtt_link_service(struct mqtt_link *m)
{
	if (m == NULL || !m->started || m->stopped)
		return;
	deliver_transitions(m);
	deliver_messages(m);
	if (m->connected)
		drain_queue(m);
}

void
mqtt_link_flush(struct mqtt_link *m)
{
	if (m == NULL)
		return;
	m->batching = true;
	kick_if_handed(m);
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
	kick(m);
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
	s->socket_reads = atomic_load(&mm->socket_reads);
	s->gathered_reads = atomic_load(&mm->gathered_reads);
	s->acks_gathered = atomic_load(&mm->gather_allowed);
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
		kick_if_handed(m);
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
	kick_if_handed(m);
	while (mid > 0 && m->f.up && m->mid_state[mid] != MID_FREE
	    && now_ms() < deadline)
		wait_changed(m, deadline);
	pthread_mutex_unlock(&m->mu);
}

/* Joins the network thread, which ends by itself once it sees stopping
 * unless it sits in a blocking connect() or in a select() on a socket the
 * DISCONNECT cannot reach: then it is cancelled, as libmosquitto's own
 * loop_stop(force) does. */
static void
stop_net_thread(struct mqtt_link *m)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts); /* pthread_timedjoin_np's clock */
	int64_t ns = ts.tv_nsec + (int64_t) JOIN_WAIT_MS * 1000000;
	ts.tv_sec += ns / 1000000000;
	ts.tv_nsec = ns % 1000000000;
	if (pthread_timedjoin_np(m->net_thread, NULL, &ts) == 0)
		return;
	log_debug("mqtt", "network thread did not stop in time: cancelling");
	pthread_cancel(m->net_thread);
	pthread_join(m->net_thread, NULL);
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
	bool in_loop = m->f.in_loop;
	m->f.stopping = true;
	pthread_cond_broadcast(&m->changed); /* ends a backoff wait */
	pthread_mutex_unlock(&m->mu);
	/* Reason 0 (normal disconnection): the broker discards the will,
	 * which is right because `last` already said we are going; the kick
	 * makes pump() send it. A thread still connecting is left
	 * alone (the socket is being replaced): it sends its own DISCONNECT
	 * once connected (net_main). */
	if (in_loop) {
		mosquitto_disconnect_v5(m->mosq, 0, NULL);
		kick(m);
	}
	if (up) {
		int64_t until = now_ms() + DISCONNECT_WAIT_MS;
		pthread_mutex_lock(&m->mu);
		while (m->f.up && now_ms() < until)
			wait_changed(m, until);
		pthread_mutex_unlock(&m->mu);
	}
	stop_net_thread(m);
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
	free(m->mid_class);
	if (m->kick_fd >= 0)
		close(m->kick_fd);
	free_cfg_strings(&m->cfg);
	pthread_cond_destroy(&m->changed);
	pthread_mutex_destroy(&m->detail_mu);
	pthread_mutex_destroy(&m->mu);
	free(m);
}
