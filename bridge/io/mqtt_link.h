/* The broker link: libmosquitto driven by a network thread of the link's
 * own (it reconnects with backoff whatever made mosquitto_loop() give up:
 * refused, TLS, protocol errors), publishing from the loop thread. Owns the
 * bounded outgoing queue: nothing is handed to libmosquitto while the
 * broker is away, so nothing is handed over and forgotten. Callbacks from
 * the mosquitto thread only set flags and call cfg->wake; every mqtt_link_cb
 * runs in the owner's thread from mqtt_link_service(). Independent of the
 * loop module: the owner wires wake to loop_wake(), calls
 * mqtt_link_service() after each wake and at least once a second, and
 * mqtt_link_flush() after each pass of its loop so that the network thread
 * sends what the pass produced in one corked write. */
#ifndef C2M_MQTT_LINK_H
#define C2M_MQTT_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
	/* Called from the mosquitto thread when there is news for
	 * mqtt_link_service(); must be thread-safe (e.g. loop_wake). */
	void (*wake)(void *wake_ud);
	void *wake_ud;
};

struct mqtt_link_cb {
	/* CONNACK accepted. session_present as reported by the broker. */
	void (*on_connected)(void *ud, bool session_present);
	/* the link is gone (reason for the log) */
	void (*on_disconnected)(void *ud, const char *why);
	/* a message on a subscribed topic (borrowed) */
	void (*on_message)(
	    void *ud, const char *topic, const void *payload, size_t len);
};

struct mqtt_link_stats {
	bool connected;
	uint64_t connects;
	uint64_t disconnects;
	uint64_t connect_failures; /* refused, or lost before CONNACK */
	uint64_t published[MSG_CLASS_COUNT]; /* handed to libmosquitto */
	/* queue bound, QoS 0 lost in a drop race, rejected by libmosquitto */
	uint64_t dropped[MSG_CLASS_COUNT];
	size_t queued; /* waiting in our queue */
	size_t queued_bytes;
	unsigned inflight; /* handed, not yet done */
	/* reads of the connected socket, and those of them that waited for
	 * acknowledgements to gather (at most one per millisecond) */
	uint64_t socket_reads;
	uint64_t gathered_reads;
	/* the connected broker announced no receive maximum below the
	 * window, so acknowledgements may gather */
	bool acks_gathered;
};

/* Creates the link (copies cfg and its strings) into *out (NULL on
 * failure). A TLS client certificate without a CA file is verified
 * against the system trust store. Returns 0, BR_ENOMEM, BR_EIO (a
 * --tls-ca/--tls-cert/--tls-key file cannot be read) or BR_EINVAL (cfg
 * incomplete, or libmosquitto refused a setting); a failure other than a
 * missing host or client id is logged with its cause. */
int mqtt_link_create(const struct mqtt_link_cfg *cfg,
    const struct mqtt_link_cb *cb, void *ud, struct mqtt_link **out);
/* Starts the mosquitto thread and the (re)connect cycle. Returns 0,
 * BR_ESTATE (already started), or BR_ENOMEM/BR_EINVAL/BR_EIO (logged). */
int mqtt_link_start(struct mqtt_link *m);

/* Publishes a copy of msg: straight to libmosquitto when connected and the
 * window allows, else into the bounded queue (in order). Never blocks.
 * Returns 0, or BR_EFULL when the bound dropped msg itself. */
int mqtt_link_publish(struct mqtt_link *m, const struct out_msg *msg);

/* Owner's thread: delivers pending callbacks, logs connection failures
 * (rate-limited) and drains the queue while the window allows. A broker
 * that accepts TCP but never sends CONNACK needs no watchdog here:
 * libmosquitto drops the attempt after keepalive_s and the network thread
 * retries (tested). Call after every wake and at least once a second. */
void mqtt_link_service(struct mqtt_link *m);

/* Owner's thread: sends what was published since the last call in one
 * go (one wakeup of the network thread, corked writes). Once called, the
 * link leaves every publish's sending to the next call, so call it after
 * each pass of the event loop (loop_set_idle_cb); a link on which it is
 * never called sends each message at once. */
void mqtt_link_flush(struct mqtt_link *m);

/* Subscribes (QoS 1) on every (re)connect. */
int mqtt_link_subscribe(struct mqtt_link *m, const char *topic);

/* Largest packet the broker accepts (CONNACK maximum packet size), or 0
 * when the broker did not say. */
uint32_t mqtt_link_max_packet(const struct mqtt_link *m);

bool mqtt_link_connected(const struct mqtt_link *m);
void mqtt_link_get_stats(const struct mqtt_link *m, struct mqtt_link_stats *s);

/* Shutdown: drains the queue for at most timeout_ms, publishes last (e.g.
 * bridge/state offline; may be NULL), disconnects cleanly and stops the
 * thread. Blocks the caller for at most about timeout_ms + 200 ms. */
void mqtt_link_shutdown(
    struct mqtt_link *m, const struct out_msg *last, int timeout_ms);
void mqtt_link_destroy(struct mqtt_link *m);

#endif
