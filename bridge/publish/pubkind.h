/* The topic kinds: one table says, for every kind of message the bridge
 * publishes, its topic suffix, message class, QoS, retain flag, expiry,
 * content type and how a newer message replaces a queued older one. Event
 * topics refine class, QoS and expiry by the event type (one more table).
 * pub_build turns a request into the struct out_msg the publisher takes.
 * Pure. */
#ifndef C2M_PUBKIND_H
#define C2M_PUBKIND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "event.h"
#include "outq.h"
#include "topic.h"

enum topic_kind {
	TK_PROMPT_EVENT = 0, /* prompt/<id>/event/<type> */
	TK_EVENT, /* event/<type>: events of no prompt */
	TK_STATE, /* prompt/<id>/state */
	TK_STATE_CLEAR, /* prompt/<id>/state, empty: removes the retained one
	                 */
	TK_CURRENT, /* current */
	TK_COMPLETION, /* completion */
	TK_QUEUE, /* queue */
	TK_INFO, /* bridge/info */
	TK_HEALTH, /* bridge/health */
	TK_BRIDGE_STATE, /* bridge/state */
	TK_UPSTREAM_STATE, /* upstream/state */
	TK_PROMPT_PREVIEW, /* prompt/<id>/preview */
	TK_PREVIEW, /* preview */
	TK_CURSOR, /* bridge/cursor */
	/* command/response, or the request's own response topic in
	 * pub_req.topic */
	TK_COMMAND_RESPONSE,
	TK_COUNT
};

enum tk_expiry {
	TKX_NONE = 0,
	TKX_STATE_TTL, /* the configured state TTL */
	TKX_HEALTH, /* three health intervals */
	TKX_PROGRESS, /* 60 s for progress-like events, else none */
};

enum tk_coalesce {
	TKC_NONE = 0,
	TKC_TOPIC, /* a newer message on the same topic replaces it */
	TKC_PROGRESS_NODE, /* progress-like events: per topic and node */
};

struct topic_kind_def {
	const char *suffix; /* after <p>/<i>/, or after prompt/<id>/ */
	bool per_prompt;
	enum msg_class cls; /* events: refined by type */
	int qos; /* events: refined by type */
	bool retain;
	enum tk_expiry expiry;
	const char *content_type; /* NULL: the request's (previews) or none */
	const char *type_prop; /* user property "type"; NULL: the event type */
	enum tk_coalesce coalesce;
	bool urgent; /* ahead of any backlog */
};

/* The row of kind k. */
const struct topic_kind_def *topic_kind(enum topic_kind k);

/* Class and QoS of an event of this type on its prompt's topic (terminal:
 * the prompt's terminal event, which is critical); events of no prompt
 * are QoS 0. progress: progress-like (expires, coalesced per node). */
struct event_policy {
	enum msg_class cls;
	int qos;
	bool progress;
	const char *name; /* the type as a static string; NULL: unlisted */
};
struct event_policy pub_event_policy(
    const char *type, bool per_prompt, bool terminal);

/* Writes the topic of kind k: "<prefix>/<instance>/<suffix>", for a
 * prompt's kinds with "prompt/<tid>/" before the suffix, for events with
 * "/<type>" after it (sanitized). Returns the length or BR_ETRUNC. */
int pub_topic(char *dst, size_t cap, const char *prefix, const char *instance,
    enum topic_kind k, const char *tid, const char *type);

/* What the table does not fix. */
struct pub_req {
	enum topic_kind kind;
	const char *topic; /* from pub_topic */
	const void *payload;
	size_t len;
	const char *event_type; /* events: the raw type */
	bool terminal; /* events: the prompt's terminal event */
	const char *prompt_id; /* user property "prompt_id"; NULL: none */
	const char *node; /* progress events: coalesced per node */
	const char *content_type; /* previews: the image type */
};

/* Settings of one bridge the table refers to. */
struct pub_env {
	const char *instance; /* user property "instance" */
	uint32_t state_ttl_s;
	uint32_t health_interval_s;
};

/* Room for what pub_build derives (cleaned user properties, the key). */
struct pub_scratch {
	char type[EVENT_TYPE_MAX * 3 + 1];
	char prompt[PROMPT_ID_MAX * 3 + 1];
	char key[TOPIC_MAX + NODE_ID_MAX + 2];
};

/* Fills m for r; m borrows from r, env and s. User properties are made
 * valid MQTT strings: a control character in a prompt id or an event
 * type makes mosquitto drop the connection, and the resent message would
 * do it again for ever. */
void pub_build(const struct pub_env *env, const struct pub_req *r,
    struct pub_scratch *s, struct out_msg *m);

#endif
