/* io-internal: what the broker link refuses to send or the broker refused
 * to take. A message larger than the broker's maximum packet makes the
 * broker drop the connection (MQTT 3.1.1 cannot even learn the limit), and
 * libmosquitto resends an unacknowledged message after every reconnect:
 * one such message would loop for ever, so it is dropped before it leaves.
 * MQTT 5 PUBACK reason codes >= 0x80 (an ACL denial, say) mean the broker
 * did not take a message. Both are counted by class and reason and logged
 * once per topic kind (the topic's last level), then only counted. Never
 * included outside bridge/io. */
#ifndef C2M_MQTT_GUARD_H
#define C2M_MQTT_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mqtt_link.h"
#include "outq.h"
#include "ratelog.h"

#define GUARD_KINDS    32 /* topic kinds remembered; the rest share one */
#define GUARD_KIND_MAX 48

struct mqtt_guard {
	uint64_t oversize[MSG_CLASS_COUNT]; /* dropped before sending */
	uint64_t poison[MSG_CLASS_COUNT]; /* the broker kept dropping us */
	uint64_t rejected[MSG_CLASS_COUNT]; /* by libmosquitto */
	uint64_t refused[MSG_CLASS_COUNT]; /* by class */
	uint64_t refused_by[PR_COUNT]; /* by reason */
	char kinds[GUARD_KINDS][GUARD_KIND_MAX];
	const char *kind_ptr[GUARD_KINDS]; /* out_msg.kind it came from */
	unsigned nkinds;
	struct ratelog reject_log;
	struct ratelog critical_log; /* critical drops by the queue bound */
	uint64_t critical_seen; /* of outq_dropped(MSG_CRITICAL) */
	struct ratelog over_log[GUARD_KINDS], refused_log[GUARD_KINDS];
};

void mqtt_guard_init(struct mqtt_guard *g);

/* libmosquitto refused msg with rc (a MOSQ_ERR_* code): counts and
 * logs it. */
void mqtt_guard_rejected(
    struct mqtt_guard *g, const struct out_msg *msg, int rc);

/* After a push into q: logs the critical messages (state, completion)
 * the queue bound dropped since the last call, at warn (rate-limited). */
void mqtt_guard_queue_drops(struct mqtt_guard *g, const struct outq *q);

/* The bytes of msg's PUBLISH packet for protocol (5 or 4). */
size_t mqtt_packet_size(int protocol, const struct out_msg *msg);

/* The index of msg's kind (msg->kind, found by address, else its topic's
 * last level), added when new. */
uint8_t mqtt_guard_kind(struct mqtt_guard *g, const struct out_msg *msg);

/* msg (size bytes) exceeds limit: counts and logs it. */
void mqtt_guard_oversize(struct mqtt_guard *g, const struct out_msg *msg,
    size_t size, uint32_t limit);

/* A message of class cls and kind (size bytes) was dropped as poison (the
 * broker dropped the link right after it hits times in a row), with after
 * more messages that were in flight behind it: counts and logs it. */
void mqtt_guard_poison(struct mqtt_guard *g, enum msg_class cls, uint8_t kind,
    unsigned hits, uint32_t size, uint64_t after, bool learned);

/* The broker answered a message of class cls and kind with reason
 * (>= 0x80): counts and logs it. */
void mqtt_guard_refused(
    struct mqtt_guard *g, int reason, enum msg_class cls, uint8_t kind);

#endif
