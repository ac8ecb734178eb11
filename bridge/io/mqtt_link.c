/* The broker link; how it runs is described in mqtt_link.h.
 *
 * Not mosquitto_loop_start(): its thread ends for good after a TLS
 * handshake failure, a protocol error or an unresolvable host, its backoff
 * has no jitter, and each publish wakes it to write that one packet. Here
 * a whole pass's packets leave together, corked.
 *
 * libmosquitto closes its own socket inside its loop calls on an error,
 * and that number may be reused at once: the loop watches a dup() of it,
 * which the link closes (through the loop) after every drop.
 *
 * In-flight bookkeeping: the mid table (mqtt_mids.h) says whether a
 * handed-over message is a QoS 0 one (completed by on_publish once written,
 * discarded by libmosquitto without a word if the link drops first) or a QoS
 * >= 1 one (completed by on_publish at PUBACK/PUBCOMP; kept and resent by
 * libmosquitto across reconnects). Every drop forgets the QoS 0 ones and
 * counts them as dropped, so neither count can leak or go negative. */
#include "mqtt_link.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "backoff.h"
#include "err.h"
#include "log.h"
#include "mqtt_guard.h"
#include "mqtt_link_int.h"
#include "mqtt_setup.h"
#include "ratelog.h"

#define DEFAULT_WINDOW     1000u
#define MAX_WINDOW         60000u /* stays well below the 16-bit mid space */
#define QOS1_WINDOW        256u /* of them awaiting an acknowledgement */
#define FAIL_LOG_FIRST     3 /* failed attempts logged per reason */
#define LAST_ACK_EXTRA_MS  100 /* how long `last` may wait past the bound */
#define DISCONNECT_WAIT_MS 80
#define TICK_MS            1000 /* keepalive; a CONNACK that never comes */
#define SHUTDOWN_SLICE_MS  50
#define BACKOFF_STABLE_MS  60000

/* ---- libmosquitto's callbacks ------------------------------------------ */

/* The link went down, reported or not: QoS 0 messages not yet
 * written are gone, QoS >= 1 ones will be resent first. */
static void
link_down(struct mqtt_link *m)
{
	for (int mid = mids_next(&m->mids, 0); m->f.inflight0 > 0 && mid;
	     mid = mids_next(&m->mids, mid)) {
		struct mid_info *e = mids_find(&m->mids, mid);
		if (e->state == MID_QOS0) {
			m->f.lost[e->cls]++;
			mids_release(&m->mids, mid);
		}
	}
	m->f.inflight0 = 0;
	if (m->f.inflight1 > 0)
		m->f.resend_pending = true;
	m->f.up = false;
	m->f.attempt_settled = true;
}

/* A drop after an accepted CONNACK. */
static void
record_loss(struct mqtt_link *m, const char *why)
{
	m->f.losses++;
	snprintf(m->f.loss_why, sizeof(m->f.loss_why), "%s", why);
	mqtt_poison_on_loss(m);
	link_down(m);
}

/* An attempt that ended before an accepted CONNACK, with what
 * libmosquitto logged about it. */
static void
record_failure(struct mqtt_link *m, int rc, bool refused, const char *why)
{
	m->f.failures++;
	m->f.failure_rc = rc;
	m->f.failure_refused = refused;
	/* libmosquitto's texts end with a period: not before the detail */
	int base = (int) strlen(why);
	if (base > 0 && why[base - 1] == '.' && m->detail[0] != '\0')
		base--;
	snprintf(m->f.failure_why, sizeof(m->f.failure_why), "%.*s%s%s", base,
	    why, m->detail[0] != '\0' ? ": " : "", m->detail);
	link_down(m);
}

static void
on_log(struct mosquitto *mosq, void *obj, int level, const char *str)
{
	struct mqtt_link *m = obj;
	if ((level & (MOSQ_LOG_ERR | MOSQ_LOG_WARNING)) == 0 || str == NULL)
		return;
	/* OpenSSL's queue comes line by line, sometimes twice */
	size_t used = strlen(m->detail);
	if (strstr(m->detail, str) == NULL && used + 3 < sizeof(m->detail))
		snprintf(m->detail + used, sizeof(m->detail) - used, "%s%s",
		    used > 0 ? "; " : "", str);
}

/* Records an accepted CONNACK and subscribes every route. */
static void
record_connack(struct mqtt_link *m, int flags, const mosquitto_property *p)
{
	uint32_t max_packet = 0;
	mosquitto_property_read_int32(
	    p, MQTT_PROP_MAXIMUM_PACKET_SIZE, &max_packet, false);
	m->f.up = true;
	m->f.attempt_connected = true;
	m->f.connacks++;
	m->f.session_present = (flags & 1) != 0;
	m->f.max_packet = max_packet;
	m->sent_at = loop_mono_ms(); /* libmosquitto resends now */
	mqtt_rx_resubscribe(m);
}

static void
on_connect(struct mosquitto *mosq, void *obj, int rc, int flags,
    const mosquitto_property *props)
{
	struct mqtt_link *m = obj;
	/* libmosquitto formats a line per packet for a log callback: keep
	 * it only while there is a failure to explain */
	if (rc == 0) {
		mosquitto_log_callback_set(mosq, NULL);
		record_connack(m, flags, props);
		return;
	}
	/* an MQTT 5 refusal is followed by on_disconnect(PROTOCOL), which
	 * must not replace this reason (attempt_settled) */
	record_failure(m, rc, true, mqtt_refusal_text(m->cfg.protocol, rc));
}

/* Runs inside libmosquitto's loop calls, so errno (for MOSQ_ERR_ERRNO's text)
 * is still the failing call's. */
static void
on_disconnect(
    struct mosquitto *mosq, void *obj, int rc, const mosquitto_property *props)
{
	struct mqtt_link *m = obj;
	const char *why = mqtt_rc_text(rc);
	if (m->f.up)
		record_loss(m, why);
	else if (!m->f.attempt_settled)
		record_failure(m, rc, false, why);
	link_down(m);
}

static void
on_publish(struct mosquitto *mosq, void *obj, int mid, int reason,
    const mosquitto_property *props)
{
	struct mqtt_link *m = obj;
	struct mid_info *e = mids_find(&m->mids, mid);
	if (e == NULL)
		return;
	if (e->state == MID_QOS1 && reason >= 0x80)
		mqtt_guard_refused(
		    &m->guard, reason, (enum msg_class) e->cls, e->kind);
	if (e->state == MID_QOS0)
		m->f.inflight0--;
	else
		m->f.inflight1--;
	mids_release(&m->mids, mid);
	if (m->f.inflight1 == 0)
		m->f.resend_pending = false;
}

/* ---- driving libmosquitto from the loop -------------------------------- */

static void deliver(struct mqtt_link *m);
static void on_fd(void *ud, int event);
static void on_backlog_timer(void *ud);

/* Starts a connection attempt with a clean slate. */
static void
begin_attempt(struct mqtt_link *m)
{
	m->detail[0] = '\0';
	mosquitto_log_callback_set(m->mosq, on_log);
	m->f.attempt_settled = false;
	m->f.attempt_connected = false;
	m->attempt_began = loop_mono_ms();
}

/* The attempt is over with rc: records it when no callback did (2.0.11
 * gives no on_disconnect for a failed TLS handshake). Returns whether it
 * reached an accepted CONNACK. */
static bool
end_attempt(struct mqtt_link *m, int rc, const char *why)
{
	if (!m->f.attempt_settled && m->f.up)
		record_loss(m, why);
	else if (!m->f.attempt_settled)
		record_failure(m, rc, false, why);
	return m->f.attempt_connected;
}

/* The attempt or connection is over (rc, why): stop watching the socket
 * and retry after backoff_broker's delay. A connection that lasted a
 * minute resets the delay; one that is dropped at once does not. */
static void
drop(struct mqtt_link *m, int rc, const char *why)
{
	loop_fd_close(m->watch);
	m->watch = NULL;
	m->fd = -1;
	if (end_attempt(m, rc, why)
	    && loop_mono_ms() - m->attempt_began >= BACKOFF_STABLE_MS)
		m->failures = 0;
	uint32_t delay
	    = backoff_delay_ms(&backoff_broker, m->failures, &m->seed);
	m->failures += m->failures < UINT_MAX;
	m->retry_at = loop_mono_ms() + delay;
	loop_timer_arm(m->timer, delay);
}

#define STEP_TICK   0 /* step()'s event for the timer */
#define READ_ROUNDS 64 /* mosquitto_loop_read() calls per step, at most */

/* Connected: reads when the socket is readable (or on the tick), writes
 * what is queued, keeps alive on the tick. No select() of libmosquitto's:
 * the loop's poll() already said which. errno is cleared before each call
 * (bridge/README.md#mosquitto-stale-eagain). */
static int
step_up(struct mqtt_link *m, int event)
{
	int rc = MOSQ_ERR_SUCCESS;
	/* a call reads as many packets as libmosquitto has QoS >= 1
	 * messages in flight (at least one), and more may wait behind the
	 * link's own messages coming back to it: read again until the socket
	 * is empty (a real EAGAIN) or READ_ROUNDS */
	for (int i = 0; event != LOOP_FD_OUT && i < READ_ROUNDS; i++) {
		errno = 0;
		rc = mosquitto_loop_read(m->mosq, 1);
		if (rc != MOSQ_ERR_SUCCESS || errno == EAGAIN
		    || errno == EWOULDBLOCK || mosquitto_socket(m->mosq) < 0)
			break;
	}
	if (rc == MOSQ_ERR_SUCCESS && mosquitto_socket(m->mosq) >= 0
	    && mosquitto_want_write(m->mosq)) {
		errno = 0;
		rc = mosquitto_loop_write(m->mosq, 1);
	}
	if (rc == MOSQ_ERR_SUCCESS && event == STEP_TICK)
		rc = mosquitto_loop_misc(m->mosq);
	/* closed without an error: a DISCONNECT from the broker */
	if (rc == MOSQ_ERR_SUCCESS && mosquitto_socket(m->mosq) < 0)
		rc = MOSQ_ERR_NO_CONN;
	return rc;
}

/* One round of libmosquitto's loop without waiting for event (a LOOP_FD_*
 * or STEP_TICK), then asks the loop to report the socket writable while
 * something waits to be written. Until the CONNACK, libmosquitto's own
 * round, whose select() sees what the TCP or TLS handshake waits for. */
static void
step(struct mqtt_link *m, int event)
{
	bool cork = m->handed > 1;
	if (cork)
		mqtt_set_cork(m->fd, 1);
	m->handed = 0;
	int rc;
	if (m->f.up) {
		rc = step_up(m, event);
	} else {
		errno = 0;
		rc = mosquitto_loop(m->mosq, 0, 1);
	}
	if (cork && m->watch != NULL)
		mqtt_set_cork(m->fd, 0);
	/* the text first: errno is still the failing call's */
	if (rc != MOSQ_ERR_SUCCESS)
		drop(m, rc, mqtt_rc_text(rc));
	else if (mosquitto_want_write(m->mosq))
		loop_fd_want_write(m->watch);
}

/* Watches a dup of the attempt's socket. Returns a MOSQ_ERR_* code. */
static int
watch_socket(struct mqtt_link *m)
{
	int sock = mosquitto_socket(m->mosq);
	int fd = sock >= 0 ? fcntl(sock, F_DUPFD_CLOEXEC, 0) : -1;
	if (fd < 0)
		return MOSQ_ERR_ERRNO;
	m->watch = loop_fd_watch(m->loop, fd, on_fd, m);
	if (m->watch == NULL)
		return MOSQ_ERR_NOMEM;
	m->fd = fd;
	loop_timer_arm(m->timer, TICK_MS);
	if (mosquitto_want_write(m->mosq)) /* CONNECT is queued */
		loop_fd_want_write(m->watch);
	return MOSQ_ERR_SUCCESS;
}

/* A connection attempt: asynchronous, so the TCP and TLS handshakes run
 * in step(). Returns a MOSQ_ERR_* code only for the first attempt's
 * configuration errors; every other failure is retried. */
static int
attempt(struct mqtt_link *m)
{
	if (m->poison_mid != 0 && m->poison_hits >= POISON_HITS)
		m->connecting_first |= mqtt_poison_reset(m);
	begin_attempt(m);
	int rc;
	if (m->connecting_first) {
		m->connecting_first = false;
		/* threaded mode: this only queues CONNECT (a direct write that
		 * fails would reset the client to a state it never leaves) */
		rc = mosquitto_connect_async(
		    m->mosq, m->cfg.host, m->cfg.port, m->cfg.keepalive_s);
		if (rc == MOSQ_ERR_INVAL || rc == MOSQ_ERR_NOMEM)
			return rc;
	} else {
		rc = mosquitto_reconnect_async(m->mosq);
	}
	if (rc == MOSQ_ERR_SUCCESS)
		rc = watch_socket(m);
	if (rc != MOSQ_ERR_SUCCESS)
		drop(m, rc, mqtt_rc_text(rc));
	return MOSQ_ERR_SUCCESS;
}

static void
on_fd(void *ud, int event)
{
	struct mqtt_link *m = ud;
	if (event == LOOP_FD_GONE) {
		m->watch = NULL; /* the loop freed it */
		drop(m, MOSQ_ERR_CONN_LOST, mqtt_rc_text(MOSQ_ERR_CONN_LOST));
	} else {
		step(m, event);
	}
	deliver(m);
}

static void
on_backlog_timer(void *ud)
{
	deliver(ud);
}

static void
on_timer(void *ud)
{
	struct mqtt_link *m = ud;
	if (m->watch == NULL) {
		attempt(m);
	} else {
		step(m, STEP_TICK);
		if (m->watch != NULL)
			loop_timer_arm(m->timer, TICK_MS);
	}
	deliver(m);
}

/* ---- creation ----------------------------------------------------------- */

int
mqtt_link_new_client(struct mqtt_link *m, struct mosquitto **out)
{
	int rc = mqtt_setup_client(&m->cfg, m->window, m, out);
	if (rc != BR_OK)
		return rc;
	mosquitto_connect_v5_callback_set(*out, on_connect);
	mosquitto_disconnect_v5_callback_set(*out, on_disconnect);
	mosquitto_publish_v5_callback_set(*out, on_publish);
	mosquitto_message_v5_callback_set(*out, mqtt_rx_on_message);
	mosquitto_subscribe_v5_callback_set(*out, mqtt_rx_on_subscribe);
	return BR_OK;
}

int
mqtt_link_create(struct loop *l, const struct mqtt_link_cfg *cfg,
    const struct mqtt_link_cb *cb, void *ud, struct mqtt_link **out)
{
	*out = NULL;
	if (l == NULL || cfg == NULL || cfg->host == NULL
	    || cfg->client_id == NULL)
		return BR_EINVAL;
	struct mqtt_link *m = calloc(1, sizeof(*m));
	if (m == NULL)
		return BR_ENOMEM;
	m->loop = l;
	m->fd = -1;
	m->connecting_first = true;
	m->seed = (uint32_t) loop_mono_ms() ^ (uint32_t) (uintptr_t) m;
	if (cb != NULL)
		m->cb = *cb;
	m->ud = ud;
	m->fail_log = (struct ratelog) RATELOG_INIT(FAIL_LOG_FIRST);
	bool ok = mqtt_setup_copy_cfg(&m->cfg, cfg);
	m->window = cfg->window == 0 ? DEFAULT_WINDOW : cfg->window;
	if (m->window > MAX_WINDOW)
		m->window = MAX_WINDOW;
	mqtt_guard_init(&m->guard);
	m->q = outq_create(cfg->queue_max_messages, cfg->queue_max_bytes);
	m->backlog_bytes = cfg->queue_max_bytes / 2 < MQTT_BACKLOG_HIGH
	    ? cfg->queue_max_bytes / 2
	    : MQTT_BACKLOG_HIGH;
	m->backlog_msgs = cfg->queue_max_messages / 2;
	m->timer = loop_timer_create(l, on_timer, m);
	m->backlog_timer = loop_timer_create(l, on_backlog_timer, m);
	int rc = BR_ENOMEM;
	if (ok && m->q != NULL && m->timer != NULL
	    && m->backlog_timer != NULL) {
		mosquitto_lib_init(); /* idempotent */
		rc = mqtt_link_new_client(m, &m->mosq);
	}
	if (rc != BR_OK) {
		mqtt_link_destroy(m);
		return rc;
	}
	*out = m;
	return BR_OK;
}

int
mqtt_link_start(struct mqtt_link *m)
{
	if (m == NULL || m->started)
		return BR_ESTATE;
	int rc = MOSQ_ERR_SUCCESS;
	if (m->cfg.protocol == 5)
		rc = mqtt_setup_connect_props(m->mosq, &m->cfg);
	/* refused or unreachable is fine: retried */
	if (rc == MOSQ_ERR_SUCCESS)
		rc = attempt(m);
	if (rc != MOSQ_ERR_SUCCESS) {
		log_error("mqtt", "cannot start the broker link to %s:%d: %s",
		    m->cfg.host, m->cfg.port, mosquitto_strerror(rc));
		return mqtt_setup_br_err(rc);
	}
	m->started = true;
	log_info("mqtt", "connecting to %s:%d as %s (MQTT %s%s)", m->cfg.host,
	    m->cfg.port, m->cfg.client_id,
	    m->cfg.protocol == 5 ? "5" : "3.1.1", m->cfg.tls ? ", TLS" : "");
	deliver(m);
	return BR_OK;
}

/* ---- publishing --------------------------------------------------------- */

/* Hands msg to libmosquitto. Returns its mid (0 when unknown),
 * or -1 when libmosquitto refused it. */
static int
hand_over(struct mqtt_link *m, const struct out_msg *msg)
{
	uint32_t limit = mqtt_link_max_packet(m);
	size_t size = mqtt_packet_size(m->cfg.protocol, msg);
	if (limit > 0 && size > limit) {
		mqtt_guard_oversize(&m->guard, msg, size, limit);
		return -1;
	}
	int rc = MOSQ_ERR_SUCCESS;
	mosquitto_property *props = NULL;
	bool owned = false;
	if (m->cfg.protocol == 5)
		props = mqtt_props_get(&m->props, &msg->props, &rc, &owned);
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
	if (rc != MOSQ_ERR_SUCCESS && (rc != MOSQ_ERR_NO_CONN || qos == 0)) {
		mqtt_guard_rejected(&m->guard, msg, rc);
		return -1;
	}
	m->published[msg->cls]++;
	mqtt_track_mid(m, mid, qos, msg, size);
	m->sent_at = loop_mono_ms();
	m->last_mid = mid;
	/* the first of a batch: written when the loop next finds the socket
	 * writable, after the rest of this pass */
	if (m->handed++ == 0)
		loop_fd_want_write(m->watch);
	return mid;
}

/* Whether msg may be handed over now. Acknowledged messages are at most
 * QOS1_WINDOW of the window: libmosquitto walks all of them for every
 * acknowledgement (bridge/README.md#mosquitto-inflight-walk). */
static bool
window_open(const struct mqtt_link *m, const struct out_msg *msg)
{
	return !m->f.resend_pending
	    && m->f.inflight0 + m->f.inflight1 < m->window
	    && (msg->qos <= 0 || m->f.inflight1 < QOS1_WINDOW);
}

/* The queue holds a high mark's worth. */
static bool
backlog_over(const struct mqtt_link *m)
{
	return outq_bytes(m->q) >= m->backlog_bytes
	    || outq_count(m->q) >= m->backlog_msgs;
}

/* Feeds queued messages while the link is up and the window has room. */
static void
feed_queue(struct mqtt_link *m)
{
	const struct out_msg *msg;
	while (m->f.up && (msg = outq_peek(m->q)) != NULL
	    && window_open(m, msg)) {
		hand_over(m, msg);
		outq_pop(m->q);
	}
}

int
mqtt_link_publish(struct mqtt_link *m, const struct out_msg *msg)
{
	if (m == NULL || msg == NULL || msg->topic == NULL || msg->cls < 0
	    || msg->cls >= MSG_CLASS_COUNT)
		return BR_EINVAL;
	/* straight through only when nothing older waits (order) */
	bool direct = m->started && !m->stopped && m->connected && m->f.up
	    && window_open(m, msg) && outq_count(m->q) == 0;
	if (direct) {
		hand_over(m, msg);
		return BR_OK;
	}
	int rc = outq_push(m->q, msg);
	mqtt_guard_queue_drops(&m->guard, m->q);
	/* the edge is reported from the loop, not from inside this call */
	if (m->connected && !m->backlog_high && backlog_over(m)
	    && !loop_timer_pending(m->backlog_timer))
		loop_timer_arm(m->backlog_timer, 0);
	return rc;
}

/* ---- news for the owner ------------------------------------------------- */

static void
report_connected(struct mqtt_link *m, bool session_present)
{
	m->connected = true;
	m->connects++;
	m->series_failures = 0;
	ratelog_reset(&m->fail_log, "mqtt", "failed connection attempts");
	m->fail_reason = (struct logchange) { 0 };
	log_info("mqtt", "connected to %s:%d (MQTT %s, session %s)",
	    m->cfg.host, m->cfg.port, m->cfg.protocol == 5 ? "5" : "3.1.1",
	    session_present ? "resumed" : "new");
	if (m->cfg.tls && m->cfg.tls_opts.insecure)
		log_warn("mqtt",
		    "TLS certificate verification is OFF (--tls-insecure)");
	if (m->cb.on_connected != NULL)
		m->cb.on_connected(m->ud, session_present);
}

static void
report_lost(struct mqtt_link *m, const char *why)
{
	m->connected = false;
	m->disconnects++;
	log_warn("mqtt", "connection to %s:%d lost (%s); retrying",
	    m->cfg.host, m->cfg.port, why);
	if (m->cb.on_disconnected != NULL)
		m->cb.on_disconnected(m->ud, why);
}

/* Logs n more failed attempts of this outage: the first FAIL_LOG_FIRST
 * of each reason (refusal or error code) at warn, the rest at debug
 * (counted), so that a broker refusing for hours does not write a line
 * per retry. */
static void
report_failure(struct mqtt_link *m, const struct facts *f, uint64_t n)
{
	m->series_failures += n;
	if (logchange_changed(&m->fail_reason,
	        f->failure_refused ? 1000 + f->failure_rc : f->failure_rc))
		ratelog_reset(
		    &m->fail_log, "mqtt", "failed connection attempts");
	char attempts[48] = "";
	if (m->series_failures > 1)
		snprintf(attempts, sizeof(attempts), " (%llu failed attempts)",
		    (unsigned long long) m->series_failures);
	if (f->failure_refused)
		ratelog_msg(&m->fail_log, LOG_LVL_WARN, "mqtt",
		    "broker %s:%d refused the connection: %s%s; retrying%s",
		    m->cfg.host, m->cfg.port, f->failure_why,
		    mqtt_refusal_hint(m->cfg.protocol, f->failure_rc),
		    attempts);
	else
		ratelog_msg(&m->fail_log, LOG_LVL_WARN, "mqtt",
		    "cannot connect to %s:%d (%s); retrying%s", m->cfg.host,
		    m->cfg.port, f->failure_why, attempts);
}

/* Turns the facts into callbacks, one per transition, in order. A whole
 * connect+loss cycle between two deliveries is reported as both. */
static void
deliver_transitions(struct mqtt_link *m)
{
	while (!m->stopping) {
		struct facts f = m->f;
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

/* The backlog's edges (bridge/README.md#backpressure): high when the
 * queue reaches a high mark (bytes or messages) while connected, low when
 * it is under a quarter of both or the link is down. */
static void
report_backlog(struct mqtt_link *m)
{
	bool high = m->backlog_high;
	if (!m->connected
	    || (outq_bytes(m->q) <= m->backlog_bytes / 4
	        && outq_count(m->q) <= m->backlog_msgs / 4))
		high = false;
	else if (backlog_over(m))
		high = true;
	if (high == m->backlog_high)
		return;
	m->backlog_high = high;
	m->backlog_highs += high;
	if (m->cb.on_backlog != NULL)
		m->cb.on_backlog(m->ud, high);
}

/* Turns what the callbacks recorded into the owner's callbacks and feeds
 * the queue. Runs after every round of libmosquitto's loop, never inside
 * one (so an owner's callback may publish), and never during shutdown. */
static void
deliver(struct mqtt_link *m)
{
	if (!m->started || m->stopping || m->delivering)
		return;
	m->delivering = true;
	deliver_transitions(m);
	mqtt_rx_deliver(m);
	if (m->connected && !m->stopping)
		feed_queue(m);
	report_backlog(m);
	m->delivering = false;
}

uint32_t
mqtt_link_max_packet(const struct mqtt_link *m)
{
	uint32_t limits[] = { m->f.up ? m->f.max_packet : 0, m->cfg.max_packet,
		m->learned_max };
	uint32_t least = 0;
	for (int i = 0; i < 3; i++)
		if (limits[i] > 0 && (least == 0 || limits[i] < least))
			least = limits[i];
	return least;
}

uint64_t
mqtt_link_connection(const struct mqtt_link *m)
{
	return m->f.connacks;
}

bool
mqtt_link_connected(const struct mqtt_link *m)
{
	return m->connected;
}

void
mqtt_link_get_stats(const struct mqtt_link *m, struct mqtt_link_stats *s)
{
	memset(s, 0, sizeof(*s));
	s->connected = m->connected;
	s->connects = m->connects;
	s->disconnects = m->disconnects;
	s->queued = outq_count(m->q);
	s->queued_bytes = outq_bytes(m->q);
	for (int c = 0; c < MSG_CLASS_COUNT; c++) {
		s->published[c] = m->published[c];
		s->oversize[c] = m->guard.oversize[c];
		s->refused[c] = m->guard.refused[c];
		s->published[c] -= s->refused[c];
		s->dropped[c] = outq_dropped(m->q, c) + m->guard.rejected[c]
		    + m->f.lost[c] + s->oversize[c] + m->guard.poison[c];
	}
	memcpy(s->refused_by, m->guard.refused_by, sizeof(s->refused_by));
	s->inflight = m->f.inflight0 + m->f.inflight1;
	s->connect_failures = m->f.failures;
	s->backlog_high = m->backlog_high;
	s->backlog_highs = m->backlog_highs;
}

/* ---- shutdown ----------------------------------------------------------- */

/* Runs the link for a slice of at most SHUTDOWN_SLICE_MS before
 * deadline, without the loop (it is stopping): a round of libmosquitto's
 * loop that may wait for the socket, or the wait for the next retry, or
 * the retry itself. */
static void
shutdown_round(struct mqtt_link *m, int64_t deadline)
{
	int64_t now = loop_mono_ms();
	int64_t slice = deadline - now;
	if (slice > SHUTDOWN_SLICE_MS)
		slice = SHUTDOWN_SLICE_MS;
	if (slice <= 0)
		return;
	if (m->watch != NULL) {
		errno = 0; /* bridge/README.md#mosquitto-stale-eagain */
		int rc = mosquitto_loop(m->mosq, (int) slice, 1);
		if (rc != MOSQ_ERR_SUCCESS)
			drop(m, rc, mqtt_rc_text(rc));
	} else if (now >= m->retry_at) {
		attempt(m);
	} else {
		poll(NULL, 0,
		    (int) (m->retry_at - now < slice ? m->retry_at - now
		                                     : slice));
	}
}

/* Feeds the queue until it and the window are empty or the deadline. */
static void
flush_until(struct mqtt_link *m, int64_t deadline)
{
	for (;;) {
		feed_queue(m);
		bool idle = outq_count(m->q) == 0
		    && m->f.inflight0 + m->f.inflight1 == 0;
		if (idle || loop_mono_ms() >= deadline)
			break;
		shutdown_round(m, deadline);
	}
}

/* Publishes last and waits for its completion until deadline. */
static void
publish_last(struct mqtt_link *m, const struct out_msg *last, int64_t deadline)
{
	if (!m->f.up) {
		m->guard.rejected[last->cls]++;
		return;
	}
	int mid = hand_over(m, last);
	while (mid > 0 && m->f.up && mids_find(&m->mids, mid) != NULL
	    && loop_mono_ms() < deadline)
		shutdown_round(m, deadline);
}

/* A clean DISCONNECT (reason 0, so the broker discards the will: `last`
 * already said we are going) when connected. */
static void
say_goodbye(struct mqtt_link *m)
{
	if (!m->f.up || mosquitto_disconnect_v5(m->mosq, 0, NULL) != 0)
		return;
	int64_t until = loop_mono_ms() + DISCONNECT_WAIT_MS;
	while (m->watch != NULL && mosquitto_socket(m->mosq) >= 0
	    && loop_mono_ms() < until)
		shutdown_round(m, until);
}

void
mqtt_link_shutdown(
    struct mqtt_link *m, const struct out_msg *last, int timeout_ms)
{
	if (m == NULL || !m->started || m->stopping)
		return;
	m->stopping = true;
	int64_t deadline = loop_mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
	flush_until(m, deadline);
	if (last != NULL)
		publish_last(m, last, deadline + LAST_ACK_EXTRA_MS);
	say_goodbye(m);
	loop_timer_cancel(m->timer);
	loop_timer_cancel(m->backlog_timer);
	loop_fd_close(m->watch);
	m->watch = NULL;
	m->fd = -1;
	m->stopped = true;
	m->connected = false;
	log_info("mqtt", "disconnected from %s:%d", m->cfg.host, m->cfg.port);
}

void
mqtt_link_destroy(struct mqtt_link *m)
{
	if (m == NULL)
		return;
	if (m->started && !m->stopped)
		mqtt_link_shutdown(m, NULL, 0);
	loop_timer_destroy(m->timer);
	loop_timer_destroy(m->backlog_timer);
	loop_fd_close(m->watch);
	if (m->mosq != NULL)
		mosquitto_destroy(m->mosq);
	mqtt_rx_free(m);
	outq_destroy(m->q);
	mqtt_props_clear(&m->props);
	mids_clear(&m->mids);
	mqtt_setup_free_cfg(&m->cfg);
	free(m);
}
