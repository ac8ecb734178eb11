/* The bridge's own bounded outgoing queue. Messages wait
 * here, in order, while the broker is away or the in-flight window is full.
 * Bounded by count and bytes; when a bound is hit the lowest class goes
 * first (previews, then progress, then lifecycle, then critical), oldest
 * first within a class, and every drop is counted by class. Pure: no
 * libmosquitto types. */
#ifndef C2M_OUTQ_H
#define C2M_OUTQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum msg_class {
	MSG_CRITICAL = 0, /* terminal events, completion, state, bridge/... */
	MSG_LIFECYCLE = 1, /* other prompt events, queue, event/<type> */
	MSG_PROGRESS = 2, /* progress, progress_state (coalesced) */
	MSG_PREVIEW = 3, /* preview images */
	MSG_CLASS_COUNT
};

/* "critical", "lifecycle", "progress", "preview" */
const char *msg_class_name(int cls);

/* Why a broker did not take a message (MQTT 5 PUBACK reason codes >=
 * 0x80), as counted in bridge/health. */
enum pub_refusal {
	PR_NOT_AUTHORIZED, /* 0x87 */
	PR_TOPIC_INVALID, /* 0x90 */
	PR_PACKET_TOO_LARGE, /* 0x95 */
	PR_QUOTA_EXCEEDED, /* 0x97 */
	PR_PAYLOAD_FORMAT, /* 0x99 */
	PR_OTHER, /* any other code >= 0x80 */
	PR_COUNT
};

/* "not_authorized", "topic_name_invalid", "packet_too_large",
 * "quota_exceeded", "payload_format_invalid", "other" */
const char *pub_refusal_name(int r);

/* MQTT 5 properties (dropped for 3.1.1). Strings are copied. */
struct out_props {
	const char *content_type; /* e.g. "application/json"; NULL: none */
	bool utf8; /* payload format indicator 1 */
	uint32_t expiry_s; /* message expiry interval; 0: none */
	const char *instance; /* user property "instance"; NULL: absent */
	const char *type; /* user property "type" */
	const char *prompt_id; /* user property "prompt_id" */
	/* correlation data (an answer to a request); NULL: none. Copied, and
	 * counted in max_bytes like the strings. */
	const void *correlation;
	size_t correlation_len;
};

struct out_msg {
	enum msg_class cls;
	const char *topic;
	const void *payload;
	size_t len;
	int qos;
	bool retain;
	struct out_props props;
	/* NULL: none. Pushing a message whose key equals a queued message's
	 * key removes the older one (the newer is appended at the tail), e.g.
	 * "progress/<prompt>/<node>". */
	const char *coalesce_key;
	/* A static string naming the topic's kind (pub_build: the event
	 * type or the kind's "type" property), for the link's per-kind
	 * counting and logs; NULL: the topic's last level is used. */
	const char *kind;
	/* Queued ahead of every older message (the bridge's own
	 * availability, which must not wait behind a backlog); it is still
	 * the last of its class to be dropped. */
	bool urgent;
};

struct outq;

/* Creates a queue bounded by max_msgs messages and max_bytes bytes (topic
 * + payload + property strings and correlation data; the coalesce key is
 * not counted). 0 means
 * no bound of that kind. */
struct outq *outq_create(size_t max_msgs, size_t max_bytes);
void outq_destroy(struct outq *q);

/* Appends a copy of m (m->urgent: puts it at the head). A queued message with
 * the same coalesce key is removed first (counted by outq_coalesced, not as a
 * drop). When a bound would be exceeded, drops queued messages of the lowest
 * class present (oldest first) as long as that class is lower than or equal to
 * m's class; if even that could not make room, m itself is dropped and nothing
 * else. Every drop is counted. Returns 0, or BR_EFULL when m was dropped, or
 * BR_ENOMEM. Entries are recycled, so steady-state pushing of small
 * messages does not allocate. */
int outq_push(struct outq *q, const struct out_msg *m);

/* The oldest message (borrowed, valid until pop/push/destroy), or NULL. */
const struct out_msg *outq_peek(const struct outq *q);
void outq_pop(struct outq *q);

size_t outq_count(const struct outq *q);
size_t outq_bytes(const struct outq *q);
uint64_t outq_dropped(const struct outq *q, enum msg_class cls);
/* Number of messages removed because a newer one had the same key. */
uint64_t outq_coalesced(const struct outq *q);
/* Entries allocated so far (recycled entries are not counted): lets tests
 * check that steady-state push/pop does not allocate. */
uint64_t outq_allocations(const struct outq *q);

#endif
