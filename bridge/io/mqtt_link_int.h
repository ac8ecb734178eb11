/* io-internal: the broker link's state, shared by mqtt_link.c,
 * mqtt_rx.c and mqtt_poison.c. Never included outside bridge/io. */
#ifndef C2M_MQTT_LINK_INT_H
#define C2M_MQTT_LINK_INT_H

#include <mosquitto.h>
#include <stdbool.h>
#include <stdint.h>

#include "mqtt_guard.h"
#include "mqtt_link.h"
#include "mqtt_mids.h"
#include "mqtt_setup.h"
#include "ratelog.h"

#define WHY_MAX    160
#define DETAIL_MAX 320 /* libmosquitto's error lines (OpenSSL's) */

/* A received message and what MQTT 5 said about it, in one allocation:
 * data[] holds the payload (NUL-terminated), the topic, the response topic
 * and the correlation data. */
struct rx_msg {
	struct rx_msg *next;
	const char *topic;
	size_t len;
	struct mqtt_rx_meta meta;
	char payload[];
};

/* A subscription: exactly one of fn and meta_fn is set. */
struct route {
	char *filter;
	mqtt_link_msg_fn fn;
	mqtt_link_meta_fn meta_fn;
	void *ud;
	/* this connection's SUBSCRIBE for it: its mid (0: none sent) and
	 * whether its SUBACK came (reset at each accepted CONNACK) */
	int sub_mid;
	bool subacked;
};

/* What libmosquitto's callbacks report, taken in by deliver(). */
struct facts {
	bool up; /* CONNACK accepted and not lost since */
	uint64_t connacks; /* accepted CONNACKs so far */
	uint64_t losses; /* disconnects after an accepted CONNACK */
	uint64_t failures; /* refused CONNACKs, drops before CONNACK */
	bool session_present; /* of the latest CONNACK */
	uint32_t max_packet; /* of the latest CONNACK; 0: not said */
	char loss_why[WHY_MAX];
	int failure_rc; /* refused CONNACK code or disconnect rc */
	bool failure_refused;
	char failure_why[WHY_MAX + DETAIL_MAX + 2];
	/* the current attempt's outcome is recorded: a later report of the
	 * same drop is not news */
	bool attempt_settled;
	bool attempt_connected; /* CONNACK accepted in this attempt */
	unsigned inflight0, inflight1;
	/* QoS >= 1 messages from before the latest drop are still with
	 * libmosquitto, which resends them only after on_connect returns:
	 * anything handed over before they complete would overtake them. */
	bool resend_pending;
	uint64_t lost[MSG_CLASS_COUNT]; /* QoS 0 discarded at a drop */
	struct rx_msg *rx_head, *rx_tail;
	size_t rx_len;
};

struct mqtt_link {
	struct mqtt_link_cfg cfg; /* strings point at owned copies */
	struct mqtt_link_cb cb;
	void *ud;
	struct loop *loop;
	struct mosquitto *mosq;
	unsigned window;
	bool started, stopping, stopped;
	struct loop_fd *watch; /* of fd, a dup of libmosquitto's socket */
	int fd;
	/* the retry after a backoff, or the tick while a socket exists */
	struct loop_timer *timer;
	int64_t retry_at; /* monotonic ms; while waiting for the retry */
	unsigned failures; /* attempts in a row that did not last */
	uint32_t seed; /* backoff jitter */
	int64_t attempt_began;
	bool connecting_first; /* mosquitto_connect_async not yet called */
	unsigned handed; /* published since the last write */
	bool delivering; /* deliver() runs: it must not recurse */
	struct facts f;
	struct mids mids; /* the messages in flight, by mid */
	struct mqtt_guard guard;
	struct route *routes;
	size_t nroutes;
	char detail[DETAIL_MAX]; /* libmosquitto's error lines (attempt) */
	struct outq *q;
	struct mqtt_prop_cache props;
	bool connected; /* as reported through cb */
	bool backlog_high; /* as reported through cb.on_backlog */
	/* the high marks: MQTT_BACKLOG_HIGH bytes, or half the queue's own
	 * bounds when they are smaller, so a lowered bound still pauses
	 * reading before it drops */
	size_t backlog_bytes, backlog_msgs;
	uint64_t backlog_highs;
	/* a publish crossed a high mark: deliver() reports it soon,
	 * from the loop */
	struct loop_timer *backlog_timer;
	uint64_t seen_connacks, seen_losses, seen_failures;
	uint64_t connects, disconnects;
	uint64_t published[MSG_CLASS_COUNT];
	struct ratelog fail_log; /* per reason, see report_failure */
	struct logchange fail_reason;
	uint64_t series_failures; /* failed attempts in this outage */
	/* A poison message: the broker dropped the link right after it was
	 * (re)sent, POISON_HITS times in a row (mqtt_poison.c). */
	int64_t sent_at; /* latest hand-over or resend (CONNACK), mono ms */
	int last_mid; /* latest handed-over mid */
	int poison_mid; /* the suspect at the latest quick loss */
	/* that message's kind, size and signature: a retained topic
	 * republished after a reconnect is the same message under a new mid */
	uint8_t poison_kind;
	uint32_t poison_size, poison_sig;
	unsigned poison_hits;
	/* a poison message's packet size minus one: larger ones are dropped
	 * before they leave (0: nothing learned) */
	uint32_t learned_max;
};

#define POISON_HITS      3 /* quick losses with the same suspect */
#define POISON_QUICK_MS  2000 /* a loss this soon after sending is quick */
#define POISON_SIG_BYTES 128 /* of the payload, in its signature */
/* a poison smaller than this says nothing about the broker's limit */
#define POISON_LEARN_MIN 1024

/* Receiving (mqtt_rx.c). libmosquitto's message callback: keeps the
 * message for mqtt_rx_deliver. */
void mqtt_rx_on_message(struct mosquitto *mosq, void *obj,
    const struct mosquitto_message *msg, const mosquitto_property *props);
/* libmosquitto's subscribe callback: the SUBACK of mid came. */
void mqtt_rx_on_subscribe(struct mosquitto *mosq, void *obj, int mid,
    int qos_count, const int *granted_qos, const mosquitto_property *props);
/* After an accepted CONNACK: subscribes every route. */
void mqtt_rx_resubscribe(struct mqtt_link *m);
/* Hands the kept messages to the routes that match, in order. */
void mqtt_rx_deliver(struct mqtt_link *m);
/* Frees the kept messages and the routes. */
void mqtt_rx_free(struct mqtt_link *m);

/* Creates a libmosquitto client for m with the link's callbacks. Returns
 * a br_err. */
int mqtt_link_new_client(struct mqtt_link *m, struct mosquitto **out);

/* At a loss after an accepted CONNACK (inside libmosquitto's loop):
 * counts a quick loss with the same suspect in flight. */
void mqtt_poison_on_loss(struct mqtt_link *m);
/* Records a handed-over message's mid: in flight (QoS 0 until written,
 * else until acknowledged), with the class, kind, size and signature the
 * poison check compares (mqtt_poison.c). */
void mqtt_track_mid(struct mqtt_link *m, int mid, int qos,
    const struct out_msg *msg, size_t size);
/* Between attempts, once poison_hits reached POISON_HITS: replaces the
 * libmosquitto client (the only way to make it forget a message it
 * resends), dropping the poison message and counting the ones in flight
 * after it as lost. Returns true when replaced (connect anew). */
bool mqtt_poison_reset(struct mqtt_link *m);

#endif
