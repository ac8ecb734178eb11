/* Retained topics: the copies republished after a broker reconnect (a
 * broker restarted from an older database holds retained copies from
 * before the outage), the clear of a prompt's state when its TTL passed
 * (where message expiry is not honoured: MQTT 3.1.1, some brokers), and
 * the clear of finished states an earlier run left behind. */
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "log.h"

/* retained states of an earlier run waiting for their TTL to pass */
#define STALE_STATES_MAX 1024

static void
republish(struct engine *e)
{
	struct retained *r = &e->retained;
	if (e->upstream_known)
		emit_text(e, TK_UPSTREAM_STATE,
		    e->upstream_up ? "online" : "offline");
	if (r->info.len)
		emit_global(e, TK_INFO, NULL, r->info.p, r->info.len, NULL);
	if (r->queue.len)
		emit_global(e, TK_QUEUE, NULL, r->queue.p, r->queue.len, NULL);
	if (r->current.len)
		emit_global(e, TK_CURRENT, r->current_id, r->current.p,
		    r->current.len, NULL);
	unsigned i = 0;
	struct prompt *p;
	while ((p = tracker_next(e->tracker, &i)) != NULL)
		if (p->state.len)
			emit_state_again(e, p);
}

void
retained_on_connected(struct engine *e, bool session_present)
{
	/* on every reconnect, a resumed session included: a broker
	 * restarted from an older database resumes the session but holds
	 * retained copies from before the outage */
	bool again = e->retained.broker_ever_connected;
	e->retained.broker_ever_connected = true;
	/* ahead of the backlog of the outage: until it is out, subscribers
	 * see the will's "offline" */
	emit_text(e, TK_BRIDGE_STATE, "online");
	if (again) {
		log_info("mqtt",
		    "reconnected (%s session): republishing retained topics",
		    session_present ? "resumed" : "new");
		republish(e);
	}
}

/* The empty retained message that removes a state; prompt_id: for the
 * user property, NULL when unknown. */
static void
clear_state(struct engine *e, const char *topic, const char *prompt_id)
{
	emit_msg(e,
	    &(struct pub_req) { .kind = TK_STATE_CLEAR,
	        .topic = topic,
	        .payload = "",
	        .len = 0,
	        .prompt_id = prompt_id });
}

bool
retained_prompt_tick(
    struct engine *e, struct prompt *p, int64_t now, int64_t *next)
{
	if (!p->terminal_sent || !p->expire_at)
		return false;
	if (now < p->expire_at) {
		*next = min_due(*next, p->expire_at);
		return false;
	}
	if (pub_topic(e->topic, sizeof(e->topic), e->prefix, e->instance,
	        TK_STATE_CLEAR, p->tid, NULL)
	    >= 0)
		clear_state(e, e->topic, p->id);
	tracker_remove(e->tracker, p);
	return true;
}

int64_t
retained_tick(struct engine *e, int64_t now)
{
	struct retained *r = &e->retained;
	int64_t next = 0;
	size_t kept = 0;
	for (size_t i = 0; i < r->n_stale; i++) {
		struct stale_state *s = &r->stale[i];
		if (now >= s->due) {
			clear_state(e, s->topic, NULL);
			free(s->topic);
			continue;
		}
		next = min_due(next, s->due);
		r->stale[kept++] = *s;
	}
	r->n_stale = kept;
	return next;
}

/* Whether topic is <prefix>/<instance>/prompt/<one level>/state. */
static bool
is_state_topic(const struct retained *r, const char *topic)
{
	size_t base = strlen(r->state_filter) - strlen("+/state");
	size_t tl = strlen(topic);
	return tl < TOPIC_MAX && tl > base + strlen("/state")
	    && strncmp(topic, r->state_filter, base) == 0
	    && strcmp(topic + tl - strlen("/state"), "/state") == 0
	    && memchr(topic + base, '/', tl - base - strlen("/state")) == NULL;
}

/* Reads a finished state: its prompt id and finished_at; returns the id's
 * length, 0 when the payload is no finished state. */
static size_t
read_finished_state(struct engine *e, const void *payload, size_t len,
    char *id, size_t id_cap, int64_t *finished_at)
{
	struct json_doc d;
	char status[16] = "";
	int rc = json_parse(e->http_parser, payload, len, true, &d);
	int t_id = rc == BR_OK ? json_obj_get(&d, 0, "prompt_id") : -1;
	int t_st = rc == BR_OK ? json_obj_get(&d, 0, "status") : -1;
	int t_fin = rc == BR_OK ? json_obj_get(&d, 0, "finished_at") : -1;
	int il = t_id >= 0 ? json_str_get(&d, t_id, id, id_cap) : -1;
	if (t_st >= 0)
		json_str_get(&d, t_st, status, sizeof(status));
	*finished_at = 0;
	bool finished = t_fin >= 0
	    && json_get_int64(&d, t_fin, finished_at) == 0 && *finished_at > 0;
	json_parser_trim(e->http_parser);
	bool ok = il > 0 && finished
	    && (strcmp(status, "success") == 0 || strcmp(status, "error") == 0
	        || strcmp(status, "interrupted") == 0
	        || strcmp(status, "lost") == 0
	        || strcmp(status, "cancelled") == 0);
	return ok ? (size_t) il : 0;
}

/* Remembers a stale state to clear at due. */
static void
keep_stale(struct engine *e, const char *topic, int64_t due)
{
	struct retained *r = &e->retained;
	for (size_t i = 0; i < r->n_stale; i++)
		if (strcmp(r->stale[i].topic, topic) == 0)
			return; /* read again after a reconnect */
	if (r->n_stale == 0 && r->stale == NULL)
		r->stale = calloc(STALE_STATES_MAX, sizeof(*r->stale));
	char *copy = r->stale != NULL && r->n_stale < STALE_STATES_MAX
	    ? strdup(topic)
	    : NULL;
	if (copy == NULL)
		return; /* read again at the next connect */
	r->stale[r->n_stale++] = (struct stale_state) { copy, due };
	engine_schedule(e, due);
}

void
retained_on_state(struct engine *e, const char *topic, const void *payload,
    size_t len, int64_t now)
{
	if (len == 0 || !is_state_topic(&e->retained, topic))
		return;
	char id[PROMPT_ID_MAX + 1];
	int64_t finished_at;
	size_t il = read_finished_state(
	    e, payload, len, id, sizeof(id), &finished_at);
	if (il == 0)
		return;
	if (tracker_find(e->tracker, id, il) != NULL)
		return; /* this run's own: its timer runs */
	int64_t due = finished_at + (int64_t) e->cfg.state_ttl_s * 1000;
	if (now >= due) {
		clear_state(e, topic, id);
		return;
	}
	keep_stale(e, topic, due);
}

void
retained_destroy(struct retained *r)
{
	for (size_t i = 0; i < r->n_stale; i++)
		free(r->stale[i].topic);
	free(r->stale);
	buf_free(&r->info);
	buf_free(&r->queue);
	buf_free(&r->current);
}
