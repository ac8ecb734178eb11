/* The broker link: libmosquitto, the bounded outgoing queue, reconnects.
 *
 * Threads: none of its own, and no locks. Everything runs in the event
 * loop's thread: the loop watches a duplicate of libmosquitto's socket,
 * and on its events and timers the link calls libmosquitto's read, write
 * and keepalive steps (mosquitto_loop() until the CONNACK) and reconnects;
 * every libmosquitto call and every callback below happens there.
 * libmosquitto runs in threaded mode only so that a publish queues its
 * packet instead of writing it: what one pass of the loop published is
 * written together, corked, when the loop next finds the socket writable.
 * The client has no wake-up socket pair
 * (bridge/README.md#mosquitto-socket-pair). A reconnect's name lookup blocks
 * the loop, as the WebSocket's connects do. Every function must be called from
 * the loop's thread. */
#ifndef C2M_MQTT_LINK_H
#define C2M_MQTT_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loop.h"
#include "outq.h"
#include "tlsopts.h"

struct mqtt_link;

struct mqtt_link_cfg {
	const char *host;
	int port;
	bool tls;
	struct tls_opts tls_opts;
	const char *client_id;
	const char *username; /* NULL: none */
	const char *password; /* secret; never logged */
	int protocol; /* 5 or 4 (3.1.1) */
	int keepalive_s; /* default 30 */
	const char *will_topic; /* retained QoS 1 will */
	const char *will_payload;
	unsigned window; /* max messages handed to libmosquitto and not
	                    yet acknowledged/written; default 1000 */
	size_t queue_max_messages;
	size_t queue_max_bytes;
	/* largest packet the broker takes (--mqtt-max-packet); 0: unknown.
	 * With MQTT 5 the broker's CONNACK limit applies when smaller. */
	uint32_t max_packet;
	/* MQTT 5: the largest packet this client takes, sent as the
	 * CONNECT's Maximum Packet Size (the broker drops larger messages
	 * instead of sending them); 0: none */
	uint32_t rx_max_packet;
};

struct mqtt_link_cb {
	/* CONNACK accepted. session_present as reported by the broker. */
	void (*on_connected)(void *ud, bool session_present);
	/* the link is gone (reason for the log) */
	void (*on_disconnected)(void *ud, const char *why);
	/* Backpressure, on edges only (bridge/README.md#backpressure): high
	 * when the link is up and the bytes queued for window room reach
	 * a high mark (see MQTT_BACKLOG_HIGH); low when they fall to a
	 * quarter of it or the link goes down (then the offline queue applies
	 * as ever). */
	void (*on_backlog)(void *ud, bool high);
};

/* The backlog's high mark in queued bytes (outq_bytes): what the queue
 * may hold of the bridge's peak RSS target while the broker is slower
 * than ComfyUI. A queue bound below twice that lowers it to half the
 * bound, and half the message bound is a second mark. The low mark is a
 * quarter of each, leaving room for three quarters to drain before
 * reading pauses again, so a pause is not one message long
 * (bridge/README.md#backpressure). */
#define MQTT_BACKLOG_HIGH (1024u * 1024u)

/* A message on a subscribed topic (topic and payload borrowed for the
 * call; the payload is followed by a NUL not counted in len). The
 * callbacks run from the loop, never from inside a call into the link. */
typedef void (*mqtt_link_msg_fn)(
    void *ud, const char *topic, const void *payload, size_t len);

/* What MQTT 5 says about a received message (3.1.1: all absent). */
struct mqtt_rx_meta {
	const char *response_topic; /* MQTT 5 Response Topic; NULL: none */
	const void *correlation; /* MQTT 5 Correlation Data; NULL: none */
	size_t correlation_len;
	/* the link's connection that delivered it: 1 after the first CONNACK,
	 * +1 per reconnect (a broker redelivers QoS 1 only on a new
	 * connection) */
	uint64_t connection;
	int qos;
	/* the broker kept it: with MQTT 5 a meta subscription asks for the
	 * flag as published (Retain As Published), so a retained message
	 * sent while subscribed carries it too; 3.1.1 sets it only for what
	 * the broker sends at subscribe */
	bool retain;
	/* it arrived on this connection before the SUBACK of the meta
	 * subscription it matched: what the broker kept for a resumed
	 * MQTT 5 session (queued while offline, or unacknowledged), which
	 * it sends right after the CONNACK, before it handles the new
	 * SUBSCRIBE (bridge/README.md#mqtt-resent-before-suback) */
	bool resent;
};
/* As mqtt_link_msg_fn, with meta (borrowed for the call, as topic). */
typedef void (*mqtt_link_meta_fn)(void *ud, const char *topic,
    const void *payload, size_t len, const struct mqtt_rx_meta *meta);

struct mqtt_link_stats {
	bool connected;
	uint64_t connects;
	uint64_t disconnects;
	uint64_t connect_failures; /* refused, or lost before CONNACK */
	uint64_t published[MSG_CLASS_COUNT]; /* handed to libmosquitto */
	/* queue bound, QoS 0 lost in a drop, rejected by libmosquitto,
	 * over the maximum packet */
	uint64_t dropped[MSG_CLASS_COUNT];
	uint64_t oversize[MSG_CLASS_COUNT]; /* over the maximum packet */
	/* MQTT 5 PUBACK reason >= 0x80: the broker did not take it (not
	 * counted in published) */
	uint64_t refused[MSG_CLASS_COUNT];
	uint64_t refused_by[PR_COUNT]; /* by enum pub_refusal */
	size_t queued; /* waiting in our queue */
	size_t queued_bytes;
	unsigned inflight; /* handed, not yet done */
	bool backlog_high; /* as last reported through on_backlog */
	uint64_t backlog_highs; /* high edges reported */
};

/* Creates the link (copies cfg and its strings) into *out (NULL on
 * failure). A TLS client certificate without a CA file is verified
 * against the system trust store. Returns 0, BR_ENOMEM, BR_EIO (a
 * --tls-ca/--tls-cert/--tls-key file cannot be read) or BR_EINVAL (cfg
 * incomplete, or libmosquitto refused a setting); a failure other than a
 * missing host or client id is logged with its cause. */
int mqtt_link_create(struct loop *l, const struct mqtt_link_cfg *cfg,
    const struct mqtt_link_cb *cb, void *ud, struct mqtt_link **out);
/* Starts the (re)connect cycle. Returns 0,
 * BR_ESTATE (already started), or BR_ENOMEM/BR_EINVAL/BR_EIO (logged). */
int mqtt_link_start(struct mqtt_link *m);

/* Publishes a copy of msg: straight to libmosquitto when connected, the
 * window allows and nothing older waits, else into the bounded queue (in
 * order). Never blocks. Returns 0, or BR_EFULL when the bound dropped msg
 * itself. */
int mqtt_link_publish(struct mqtt_link *m, const struct out_msg *msg);

/* Subscribes (QoS 1) to filter on every (re)connect; each received
 * message goes to the fn of every filter it matches, in the order they
 * were added. Filters that overlap get a message once per matching
 * subscription from the broker. Returns 0, BR_ENOMEM or BR_EINVAL (not a
 * valid filter). */
int mqtt_link_subscribe(
    struct mqtt_link *m, const char *filter, mqtt_link_msg_fn fn, void *ud);
/* As mqtt_link_subscribe; fn also gets the message's meta, and with
 * MQTT 5 the retain flag as published. */
int mqtt_link_subscribe_meta(
    struct mqtt_link *m, const char *filter, mqtt_link_meta_fn fn, void *ud);
/* The current connection number (0 before the first CONNACK). */
uint64_t mqtt_link_connection(const struct mqtt_link *m);

/* Ends the subscription mqtt_link_subscribe made with the same filter, fn
 * and ud: the route goes, and the broker is told now when the link is up
 * (a later connect does not subscribe it again). Returns 0 or
 * BR_EINVAL when there is no such route. */
int mqtt_link_unsubscribe(
    struct mqtt_link *m, const char *filter, mqtt_link_msg_fn fn, void *ud);

/* Largest packet the broker accepts: the smaller of cfg.max_packet and
 * the CONNACK maximum packet size (MQTT 5), or 0 when neither is known. */
uint32_t mqtt_link_max_packet(const struct mqtt_link *m);

bool mqtt_link_connected(const struct mqtt_link *m);
void mqtt_link_get_stats(const struct mqtt_link *m, struct mqtt_link_stats *s);

/* Shutdown: drains the queue for at most timeout_ms, publishes last (e.g.
 * bridge/state offline; may be NULL) and disconnects cleanly. Runs the
 * link itself, without the loop, and blocks the caller for at most about
 * timeout_ms + 200 ms. No callback runs from it. */
void mqtt_link_shutdown(
    struct mqtt_link *m, const struct out_msg *last, int timeout_ms);
/* Before the loop is destroyed. */
void mqtt_link_destroy(struct mqtt_link *m);

#endif
