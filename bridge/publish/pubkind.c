/* See pubkind.h. */
#include "pubkind.h"

#include <string.h>

#include "err.h"
#include "utf8.h"

#define PROGRESS_EXPIRY_S 60

#define JSON "application/json"

static const struct topic_kind_def kinds[TK_COUNT] = {
	/* suffix, per prompt, class, QoS, retain, expiry, content type,
	 * type property, coalescing, urgent */
	[TK_PROMPT_EVENT] = { "event", true, MSG_LIFECYCLE, 0, false,
	    TKX_PROGRESS, JSON, NULL, TKC_PROGRESS_NODE, false },
	[TK_EVENT] = { "event", false, MSG_LIFECYCLE, 0, false, TKX_PROGRESS,
	    JSON, NULL, TKC_PROGRESS_NODE, false },
	[TK_STATE] = { "state", true, MSG_CRITICAL, 1, true, TKX_STATE_TTL,
	    JSON, "state", TKC_TOPIC, false },
	[TK_STATE_CLEAR] = { "state", true, MSG_CRITICAL, 1, true, TKX_NONE,
	    NULL, "state", TKC_TOPIC, false },
	[TK_CURRENT] = { "current", false, MSG_CRITICAL, 1, true, TKX_NONE,
	    JSON, "current", TKC_TOPIC, false },
	[TK_COMPLETION] = { "completion", false, MSG_CRITICAL, 1, false,
	    TKX_NONE, JSON, "completion", TKC_NONE, false },
	[TK_QUEUE] = { "queue", false, MSG_LIFECYCLE, 1, true, TKX_NONE, JSON,
	    "queue", TKC_TOPIC, false },
	[TK_INFO] = { "bridge/info", false, MSG_CRITICAL, 1, true, TKX_NONE,
	    JSON, "info", TKC_TOPIC, false },
	[TK_HEALTH] = { "bridge/health", false, MSG_LIFECYCLE, 0, true,
	    TKX_HEALTH, JSON, "health", TKC_TOPIC, false },
	[TK_BRIDGE_STATE] = { "bridge/state", false, MSG_CRITICAL, 1, true,
	    TKX_NONE, "text/plain", "bridge/state", TKC_TOPIC, true },
	[TK_UPSTREAM_STATE] = { "upstream/state", false, MSG_CRITICAL, 1, true,
	    TKX_NONE, "text/plain", "upstream/state", TKC_TOPIC, false },
	[TK_PROMPT_PREVIEW] = { "preview", true, MSG_PREVIEW, 0, false,
	    TKX_NONE, NULL, "preview", TKC_TOPIC, false },
	[TK_PREVIEW] = { "preview", false, MSG_PREVIEW, 0, true, TKX_NONE,
	    NULL, "preview", TKC_TOPIC, false },
	[TK_CURSOR] = { "bridge/cursor", false, MSG_CRITICAL, 1, true,
	    TKX_NONE, JSON, "cursor", TKC_TOPIC, false },
	[TK_COMMAND_RESPONSE] = { "command/response", false, MSG_LIFECYCLE, 1,
	    false, TKX_NONE, JSON, "command", TKC_NONE, false },
};

/* Event types by policy; an unlisted type is a plain lifecycle event at
 * QoS 0. */
static const struct event_policy event_types[] = {
	{ MSG_LIFECYCLE, 1, false, "queued" },
	{ MSG_LIFECYCLE, 1, false, "execution_start" },
	{ MSG_LIFECYCLE, 1, false, "execution_success" },
	{ MSG_LIFECYCLE, 1, false, "execution_error" },
	{ MSG_LIFECYCLE, 1, false, "execution_interrupted" },
	{ MSG_LIFECYCLE, 1, false, "cancelled" },
	{ MSG_LIFECYCLE, 1, false, "lost" },
	{ MSG_LIFECYCLE, 0, false, "executing" },
	{ MSG_LIFECYCLE, 0, false, "executed" },
	{ MSG_LIFECYCLE, 0, false, "execution_cached" },
	{ MSG_PROGRESS, 0, true, "progress" },
	{ MSG_PROGRESS, 0, true, "progress_state" },
	{ MSG_PROGRESS, 0, true, "progress_text" },
	{ MSG_PROGRESS, 0, true, "crystools.monitor" },
	{ MSG_PROGRESS, 0, true, "logs" },
};

const struct topic_kind_def *
topic_kind(enum topic_kind k)
{
	return (unsigned) k < TK_COUNT ? &kinds[k] : &kinds[TK_EVENT];
}

struct event_policy
pub_event_policy(const char *type, bool per_prompt, bool terminal)
{
	struct event_policy p = { MSG_LIFECYCLE, 0, false, NULL };
	for (size_t i = 0; i < sizeof(event_types) / sizeof(event_types[0]);
	     i++)
		/* the first byte first: most names differ there */
		if (type[0] == event_types[i].name[0]
		    && strcmp(type, event_types[i].name) == 0) {
			p = event_types[i];
			break;
		}
	if (terminal)
		p.cls = MSG_CRITICAL;
	if (!per_prompt)
		p.qos = 0;
	return p;
}

int
pub_topic(char *dst, size_t cap, const char *prefix, const char *instance,
    enum topic_kind k, const char *tid, const char *type)
{
	const struct topic_kind_def *d = topic_kind(k);
	bool event = k == TK_PROMPT_EVENT || k == TK_EVENT;
	if (d->per_prompt)
		return topic_prompt(dst, cap, prefix, instance, tid,
		    strlen(tid), d->suffix, event ? type : NULL,
		    event ? strlen(type) : 0);
	if (event)
		return topic_event(
		    dst, cap, prefix, instance, type, strlen(type));
	return topic_join(dst, cap, prefix, instance, d->suffix);
}

/* s itself when it is a valid MQTT string, else a cleaned copy in dst. */
static const char *
mqtt_str(char *dst, size_t cap, const char *s)
{
	if (s == NULL || utf8_mqtt_ok(s))
		return s;
	utf8_mqtt_clean(dst, cap, s);
	return dst;
}

static uint32_t
expiry_of(
    const struct topic_kind_def *d, const struct pub_env *env, bool progress)
{
	switch (d->expiry) {
	case TKX_STATE_TTL:
		return env->state_ttl_s;
	case TKX_HEALTH:
		return env->health_interval_s * 3;
	case TKX_PROGRESS:
		return progress ? PROGRESS_EXPIRY_S : 0;
	default:
		return 0;
	}
}

/* The coalescing key: the topic, or topic|node for progress events. */
static const char *
key_of(const struct topic_kind_def *d, const struct pub_req *r, bool progress,
    struct pub_scratch *s)
{
	if (d->coalesce == TKC_TOPIC)
		return r->topic;
	if (d->coalesce != TKC_PROGRESS_NODE || !progress)
		return NULL;
	size_t tl = strnlen(r->topic, sizeof(s->key) - 1);
	memcpy(s->key, r->topic, tl);
	s->key[tl] = '\0';
	if (tl + 1 < sizeof(s->key)) {
		const char *node = r->node ? r->node : "";
		size_t room = sizeof(s->key) - tl - 2;
		size_t nl = strnlen(node, room);
		s->key[tl] = '|';
		memcpy(s->key + tl + 1, node, nl);
		s->key[tl + 1 + nl] = '\0';
	}
	return s->key;
}

void
pub_build(const struct pub_env *env, const struct pub_req *r,
    struct pub_scratch *s, struct out_msg *m)
{
	const struct topic_kind_def *d = topic_kind(r->kind);
	bool event = r->kind == TK_PROMPT_EVENT || r->kind == TK_EVENT;
	struct event_policy ep = { d->cls, d->qos, false, d->type_prop };
	if (event)
		ep = pub_event_policy(
		    r->event_type, d->per_prompt, r->terminal);
	const char *ct = d->content_type ? d->content_type : r->content_type;
	memset(m, 0, sizeof(*m));
	m->cls = ep.cls;
	m->topic = r->topic;
	m->payload = r->payload;
	m->len = r->len;
	m->qos = ep.qos;
	m->retain = d->retain;
	m->props.content_type = ct;
	m->props.utf8 = ct != NULL && strncmp(ct, "image/", 6) != 0;
	m->props.expiry_s = expiry_of(d, env, ep.progress);
	m->props.instance = env->instance;
	m->props.type = mqtt_str(s->type, sizeof(s->type),
	    d->type_prop ? d->type_prop : r->event_type);
	m->props.prompt_id
	    = mqtt_str(s->prompt, sizeof(s->prompt), r->prompt_id);
	m->coalesce_key = key_of(d, r, ep.progress, s);
	m->kind = ep.name;
	m->urgent = d->urgent;
}
