/* Retained topics: the copies republished after a broker reconnect (a
 * broker restarted from an older database holds retained copies from
 * before the outage), the clear of a prompt's state when its TTL passed
 * (where message expiry is not honoured: MQTT 3.1.1, some brokers), and
 * the clear of finished states an earlier run left behind. */
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "err.h"
#include "log.h"

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
	if (r->cursor.len)
		emit_global(
		    e, TK_CURSOR, NULL, r->cursor.p, r->cursor.len, NULL);
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

/* The length of <prefix>/<instance>/prompt/, where the level starts. */
static size_t
level_at(const struct retained *r)
{
	return strlen(r->state_filter) - strlen("+/state");
}

/* Removes the entry due first (the heap's root) after clearing it. */
static void
pop_expiry(struct engine *e)
{
	struct retained *r = &e->retained;
	size_t base = level_at(r);
	char *level = e->topic + base;
	int len = expiry_pop(&r->exp, level, sizeof(e->topic) - base);
	if (len < 0
	    || base + (size_t) len + strlen("/state") >= sizeof(e->topic))
		return;
	memcpy(e->topic, r->state_filter, base);
	memcpy(level + len, "/state", sizeof("/state"));
	clear_state(e, e->topic, NULL);
}

/* Remembers to clear the state at level (len bytes) at due. Once
 * EXPIRY_MAX wait, the state due first is cleared ahead of its time.
 * read_back: a state read from the broker, which a reconnect brings again
 * (queued once: its hash goes into exp_levels); a prompt evicted from the
 * table leaves it once (lc_finish publishes one terminal per id), and the
 * broker's copy of its state is this run's, which retained_on_state
 * leaves to this run. */
static void
push_expiry(struct engine *e, const char *level, size_t len, int64_t due,
    bool read_back)
{
	struct retained *r = &e->retained;
	uint64_t hash = tracker_hash(level, len);
	if (read_back && idset_has(&r->exp_levels, hash))
		return; /* read again after a reconnect */
	if (expiry_full(&r->exp)) {
		r->early_clears++;
		ratelog_msg(&r->full_log, LOG_LVL_WARN, "mqtt",
		    "more than %u retained states wait for their TTL: "
		    "clearing the one due first now (%llu so far)",
		    EXPIRY_MAX, (unsigned long long) r->early_clears);
		pop_expiry(e);
	}
	if (expiry_push(&r->exp, level, len, due) != BR_OK)
		return; /* out of memory: read again at the next connect */
	/* out of memory here: a second read queues a second clear */
	if (read_back)
		(void) idset_add(&r->exp_levels, hash);
	engine_schedule(e, due);
}

/* A finished prompt leaves the table before its TTL: its clear is kept. */
static void
on_evict(void *ud, const struct prompt *p)
{
	struct engine *e = ud;
	char topic[TOPIC_MAX];
	if (!p->terminal_sent || !p->expire_at)
		return;
	int n = pub_topic(topic, sizeof(topic), e->prefix, e->instance,
	    TK_STATE_CLEAR, p->tid, NULL);
	size_t base = level_at(&e->retained);
	if (n < 0 || (size_t) n <= base + strlen("/state"))
		return;
	push_expiry(e, topic + base, (size_t) n - base - strlen("/state"),
	    p->expire_at, false);
}

void
retained_init(struct engine *e)
{
	idset_init(&e->retained.exp_levels, EXPIRY_MAX);
	expiry_init(&e->retained.exp, EXPIRY_MAX);
	e->retained.full_log = (struct ratelog) RATELOG_INIT(1);
	tracker_on_evict(e->tracker, on_evict, e);
}

int64_t
retained_tick(struct engine *e, int64_t now)
{
	struct retained *r = &e->retained;
	int64_t due;
	while (expiry_next(&r->exp, &due) && now >= due)
		pop_expiry(e);
	return expiry_next(&r->exp, &due) ? due : 0;
}

/* Whether topic is <prefix>/<instance>/prompt/<one level>/state. */
static bool
is_state_topic(const struct retained *r, const char *topic)
{
	size_t base = level_at(r);
	size_t tl = strlen(topic);
	return tl < TOPIC_MAX && tl > base + strlen("/state")
	    && strncmp(topic, r->state_filter, base) == 0
	    && strcmp(topic + tl - strlen("/state"), "/state") == 0
	    && memchr(topic + base, '/', tl - base - strlen("/state")) == NULL;
}

/* A retained prompt state read back from the broker. */
struct old_state {
	char id[PROMPT_ID_MAX + 1];
	size_t id_len;
	char status[16];
	int64_t queued_at, started_at, finished_at; /* 0: none */
	int64_t run; /* the run that published it; 0: none */
};

static int64_t
member_time(const struct json_doc *d, const char *key)
{
	int64_t v = 0;
	int t = json_obj_get(d, 0, key);
	if (t < 0 || json_get_int64(d, t, &v) != 0 || v < 0)
		return 0;
	return v;
}

/* Reads a state payload; false when it is none. */
static bool
read_state(
    struct engine *e, const void *payload, size_t len, struct old_state *s)
{
	struct json_doc d;
	memset(s, 0, sizeof(*s));
	if (json_parse(e->http_parser, payload, len, true, &d) != BR_OK
	    || !json_is_object(&d, 0))
		return false;
	int t_id = json_obj_get(&d, 0, "prompt_id");
	int t_st = json_obj_get(&d, 0, "status");
	int il = t_id >= 0 ? json_str_get(&d, t_id, s->id, sizeof(s->id)) : -1;
	if (t_st < 0
	    || json_str_get(&d, t_st, s->status, sizeof(s->status)) < 0)
		s->status[0] = '\0';
	s->queued_at = member_time(&d, "queued_at");
	s->started_at = member_time(&d, "started_at");
	s->finished_at = member_time(&d, "finished_at");
	s->run = member_time(&d, "run");
	json_parser_trim(e->http_parser);
	s->id_len = il > 0 ? (size_t) il : 0;
	return il > 0;
}

static bool
is_finished(const struct old_state *s)
{
	static const char *const done[]
	    = { "success", "error", "interrupted", "lost", "cancelled" };
	for (size_t i = 0; i < sizeof(done) / sizeof(done[0]); i++)
		if (strcmp(s->status, done[i]) == 0)
			return s->finished_at > 0;
	return false;
}

/* A prompt an earlier run left queued or running: followed again, so the
 * next /queue answer either lists it or sends it to history, which
 * publishes its end (lost when history has no record: whether it was
 * removed or died with a ComfyUI restart cannot be told). What that run
 * published (queued, a start) is not published again. */
static void
adopt_unfinished(struct engine *e, const struct old_state *s, int64_t now)
{
	bool running = strcmp(s->status, "running") == 0;
	if (!running && strcmp(s->status, "queued") != 0)
		return;
	bool created;
	struct prompt *p = tracker_get(e->tracker, s->id, s->id_len, &created);
	if (!created)
		return;
	p->source = SRC_HISTORY;
	p->inherited = true;
	p->queued_sent = true;
	p->queued_at = s->queued_at ? s->queued_at : now;
	p->rejected_mark = e->health.counters.rejected_total;
	if (running) {
		p->start_sent = true;
		p->status = PS_RUNNING;
		p->started_at = s->started_at ? s->started_at : p->queued_at;
	}
	log_info("bridge", "following %s again: left %s by an earlier run",
	    p->tid, s->status);
	recon_poll_soon(e);
}

void
retained_cursor(
    struct engine *e, const char *id, int64_t finished_at, int64_t now)
{
	struct retained *r = &e->retained;
	if (finished_at <= 0 || finished_at < r->mine_at)
		return;
	r->mine_at = finished_at;
	emit_cursor(e, id, finished_at, now);
}

/* An earlier run's cursor: what finished after it is read from history
 * (this run's own comes back through the subscription and is skipped). */
static void
on_cursor(struct engine *e, const void *payload, size_t len)
{
	struct retained *r = &e->retained;
	struct old_state s;
	if (!read_state(e, payload, len, &s) || s.run == e->rctx.run
	    || s.finished_at <= 0 || r->old_at)
		return;
	memcpy(r->old_id, s.id, s.id_len + 1);
	r->old_at = s.finished_at;
	log_info("bridge", "history after %lld was accounted for by run %lld",
	    (long long) s.finished_at, (long long) s.run);
	recon_after_cursor(e);
}

void
retained_on_state(struct engine *e, const char *topic, const void *payload,
    size_t len, int64_t now)
{
	if (len > 0 && strcmp(topic, e->retained.cursor_topic) == 0) {
		on_cursor(e, payload, len);
		return;
	}
	if (len == 0 || !is_state_topic(&e->retained, topic))
		return;
	struct old_state s;
	if (!read_state(e, payload, len, &s))
		return;
	/* this run's own (the subscription also brings back what this run
	 * publishes): its own timers and transitions take care of it */
	if (s.run == e->rctx.run
	    || tracker_find(e->tracker, s.id, s.id_len) != NULL)
		return;
	if (!is_finished(&s)) {
		adopt_unfinished(e, &s, now);
		return;
	}
	int64_t due = s.finished_at + (int64_t) e->cfg.state_ttl_s * 1000;
	if (now >= due) {
		clear_state(e, topic, s.id);
		return;
	}
	size_t base = level_at(&e->retained);
	push_expiry(e, topic + base, strlen(topic) - base - strlen("/state"),
	    due, true);
}

void
retained_destroy(struct retained *r)
{
	expiry_free(&r->exp);
	idset_free(&r->exp_levels);
	buf_free(&r->info);
	buf_free(&r->cursor);
	buf_free(&r->queue);
	buf_free(&r->current);
}
