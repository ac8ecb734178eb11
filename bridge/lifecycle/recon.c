/* Reconciliation: what the WebSocket did not tell, ComfyUI's /queue and
 * /history do. The queue is read after every status frame and on
 * connect; a prompt that left the queue without a terminal event is looked
 * up in /history/<id> (after a grace for our own, whose frames may still
 * be on their way) and reported cancelled (a pending prompt removed while
 * ComfyUI stayed up) or lost when it is in neither; the history
 * list finds prompts that came and went between two polls. After a
 * reconnect a resync reads both. The watchdog asks the same questions
 * after a silence and reconnects a WebSocket that stopped hearing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "engine_int.h"
#include "err.h"
#include "log.h"
#include "url.h"

#define HISTORY_GRACE_MS 1500
/* pauses never hold a lookup back longer than this past its due time:
 * each pause ends within 2 s, but back-to-back pauses restart the grace */
#define HISTORY_DEFER_MAX_MS 30000

/* The delay before the next try after failures failures in a row. */
static int64_t
retry_in(unsigned failures)
{
	return backoff_step_ms(&backoff_http, failures ? failures - 1 : 0);
}

void
recon_init(struct recon *r)
{
	idset_init(&r->finished, FINISHED_IDS_MAX);
	r->after_offset = -1;
}

/* The set holds finished ids with the low bit of the hash set, ids of the
 * history baseline with it clear: a baseline id may still see its live
 * terminal frame (read from the socket after the list that holds it). */
void
recon_seen_add(struct engine *e, const char *id, size_t len)
{
	/* out of memory: the history list may report it once more, and
	 * lc_finish still refuses a second terminal of a tracked prompt */
	(void) idset_add(&e->recon.finished, tracker_hash(id, len) | 1);
}

static void
baseline_add(struct engine *e, const char *id, size_t len)
{
	(void) idset_add(&e->recon.finished, tracker_hash(id, len) & ~1ull);
}

bool
recon_finished_here(const struct engine *e, const char *id, size_t len)
{
	return idset_has(&e->recon.finished, tracker_hash(id, len) | 1);
}

/* Whether the prompt finished or was in the history baseline. */
static bool
seen_has(const struct engine *e, const char *id, size_t len)
{
	uint64_t h = tracker_hash(id, len);
	return idset_has(&e->recon.finished, h | 1)
	    || idset_has(&e->recon.finished, h & ~1ull);
}

static void
request_poll(struct engine *e)
{
	struct recon *r = &e->recon;
	if (!e->upstream_up)
		return;
	if (r->poll_inflight) {
		r->poll_pending = true;
		return;
	}
	r->poll_inflight = true;
	r->poll_pending = false;
	e->io.http_get(e->io.ud, EHTTP_QUEUE, "/queue", NULL);
}

static void
request_history_list(struct engine *e)
{
	struct recon *r = &e->recon;
	if (!e->upstream_up)
		return;
	if (r->list_inflight) {
		r->list_pending = true;
		return;
	}
	char path[64];
	snprintf(path, sizeof(path), "/history?max_items=%u",
	    e->cfg.history_items ? e->cfg.history_items : 20);
	r->list_inflight = true;
	r->list_pending = false;
	e->io.http_get(e->io.ud, EHTTP_HISTORY_LIST, path, NULL);
}

static void
request_history(struct engine *e, struct prompt *p)
{
	struct buf path = { 0 };
	buf_puts(&path, "/history/");
	url_encode(&path, p->id);
	p->history_inflight = true;
	p->history_tries++;
	e->io.http_get(
	    e->io.ud, EHTTP_HISTORY_ID, path.p ? path.p : "/history/", p->id);
	buf_free(&path);
}

void
recon_on_status(struct engine *e, const struct comfy_event *ev)
{
	struct recon *r = &e->recon;
	if (ev->has_queue_remaining) {
		/* the queue shrank: a prompt finished (its history entry is
		 * written before this frame), maybe one that was queued and
		 * done between two polls */
		if (ev->queue_remaining < r->last_status_count) {
			request_history_list(e);
			r->list_asked_by_status = true;
		}
		r->last_status_count = ev->queue_remaining;
	}
	request_poll(e);
}

void
recon_on_upstream(struct engine *e, bool up, int64_t now)
{
	struct recon *r = &e->recon;
	if (!up) {
		r->poll_inflight = r->poll_pending = false;
		r->list_inflight = r->list_pending = false;
		return;
	}
	r->watchdog_asked_at = 0;
	r->watchdog_mismatches = 0;
	r->poll_failures = 0;
	r->poll_retry_at = 0;
	if (e->upstream_ever_up) {
		/* anything may have finished while we were away */
		e->health.counters.resyncs++;
		r->resyncing = true;
		log_info("bridge",
		    "resync after reconnect: reading the queue and history");
	}
	(void) now;
}

void
recon_poll_soon(struct engine *e)
{
	request_poll(e);
}

void
recon_catch_up(struct engine *e)
{
	recon_after_cursor(e);
	request_history_list(e);
	request_poll(e);
}

/* ------------------------------------------------------------------ */
/* /queue */

static int
parse_queue_item(const struct json_doc *d, int item, struct queue_item *qi)
{
	memset(qi, 0, sizeof(*qi));
	if (!json_is_array(d, item) || json_size(d, item) < 2)
		return BR_EINVAL;
	int num = item + 1;
	int id = json_skip(d, num);
	int n = json_str_get(d, id, qi->id, sizeof(qi->id));
	if (n <= 0)
		return BR_EINVAL;
	qi->id_len = (size_t) n;
	/* a number a double cannot hold as an exact integer (or NaN) is
	 * left out: converting it to int64_t would be undefined */
	if (json_get_double(d, num, &qi->number) == 0
	    && qi->number > -9007199254740992.0
	    && qi->number < 9007199254740992.0)
		qi->has_number = true;
	if (json_size(d, item) < 4)
		return 0;
	int extra = json_skip(d, json_skip(d, id));
	if (!json_is_object(d, extra))
		return 0;
	int c = json_obj_get(d, extra, "client_id");
	if (c >= 0
	    && json_str_get(d, c, qi->client_id, sizeof(qi->client_id)) >= 0)
		qi->has_client_id = true;
	c = json_obj_get(d, extra, "create_time");
	if (c >= 0)
		json_get_int64(d, c, &qi->create_time);
	return 0;
}

static int
cmp_items(const void *a, const void *b)
{
	const struct queue_item *x = a, *y = b;
	if (x->number != y->number)
		return x->number < y->number ? -1 : 1;
	return strcmp(x->id, y->id);
}

/* gen: the /queue answer that lists it (see recon_on_submitted). */
static void
apply_queue_item(struct engine *e, const struct queue_item *qi, bool running,
    uint64_t gen, int64_t now)
{
	bool created;
	struct prompt *p
	    = tracker_get(e->tracker, qi->id, qi->id_len, &created);
	if (created) {
		p->source = SRC_POLL;
		p->queued_at = qi->create_time > 0 ? qi->create_time : now;
	}
	p->queue_generation = gen;
	if (running)
		p->listed_running = true;
	if (qi->has_number) {
		p->has_number = true;
		p->number = (int64_t) qi->number;
	}
	if (qi->has_client_id) {
		p->has_client_id = true;
		copy_str(p->client_id, sizeof(p->client_id), qi->client_id);
		if (strcmp(qi->client_id, e->client_id) == 0)
			p->ours = true;
	}
	if (p->terminal_sent)
		return;
	bool changed = !p->queued_sent;
	lc_ensure_queued(e, p, SRC_POLL, now);
	if (running && !p->start_sent && (!p->ours || e->recon.resyncing)) {
		lc_derive_start(e, p, SRC_POLL, now, now);
		changed = true;
	}
	if (running && p->status == PS_QUEUED && p->start_sent) {
		p->status = PS_RUNNING;
		changed = true;
	}
	if (changed)
		emit_state(e, p, now);
}

void
recon_on_submitted(
    struct engine *e, const char *id, size_t len, int64_t number, int64_t now)
{
	struct recon *r = &e->recon;
	if (len == 0 || len > PROMPT_ID_MAX || memchr(id, 0, len) != NULL)
		return;
	/* finished here and evicted since: nothing left to tell */
	if (tracker_find(e->tracker, id, len) == NULL
	    && recon_finished_here(e, id, len))
		return;
	/* the number goes through a double, as a /queue entry's does */
	bool exact
	    = number > -(INT64_C(1) << 53) && number < (INT64_C(1) << 53);
	struct queue_item qi = { .id_len = len,
		.number = exact ? (double) number : 0,
		.has_number = exact,
		.has_client_id = true };
	memcpy(qi.id, id, len);
	copy_str(qi.client_id, sizeof(qi.client_id), e->client_id);
	/* a /queue answer on its way was read before ComfyUI took the
	 * prompt: the one after it decides whether the prompt left the
	 * queue (request_poll asks for it) */
	apply_queue_item(e, &qi, false,
	    r->queue_generation + (r->poll_inflight ? 1 : 0), now);
	request_poll(e);
}

/* Publishes the queue when its ids changed. */
static void
queue_changed(struct engine *e, const struct queue_item *items, size_t n_run,
    size_t n, int64_t now)
{
	struct buf ids = { 0 };
	char tmp[32];
	int tl = snprintf(tmp, sizeof(tmp), "%zu|%zu|", n, n_run);
	buf_append(&ids, tmp, (size_t) tl);
	for (size_t i = 0; i < n; i++) {
		buf_append(&ids, items[i].id, items[i].id_len);
		buf_append(&ids, "\n", 1);
	}
	struct buf *last = &e->recon.queue_ids;
	bool same = ids.len == last->len
	    && (ids.len == 0 || memcmp(ids.p, last->p, ids.len) == 0);
	if (same) {
		buf_free(&ids);
		return;
	}
	buf_free(last);
	*last = ids;
	emit_queue(e, items, n_run, n, now);
}

/* True while a watchdog check is in flight and no frame came since it was
 * asked: then a queue change or a newly finished prompt (both of which
 * ComfyUI announces with a broadcast status frame) means we are deaf. */
static bool
watchdog_silent(const struct engine *e)
{
	return e->recon.watchdog_asked_at != 0
	    && e->last_frame_at < e->recon.watchdog_asked_at;
}

static void
orphaned(struct engine *e, const char *evidence)
{
	struct recon *r = &e->recon;
	int64_t last = e->last_frame_at > e->upstream_up_at
	    ? e->last_frame_at
	    : e->upstream_up_at;
	log_warn("ws",
	    "no frame for %lld s although %s: the WebSocket looks orphaned; "
	    "reconnecting",
	    (long long) (r->watchdog_asked_at - last) / 1000, evidence);
	r->watchdog_asked_at = 0;
	r->watchdog_mismatches = 0;
	if (e->io.reconnect_upstream)
		e->io.reconnect_upstream(e->io.ud);
}

/* Reads /queue's running and pending lists into a new array (running
 * first, pending in run order); NULL when out of memory. */
static struct queue_item *
read_queue(const struct json_doc *d, size_t *n_run, size_t *n)
{
	int run = json_obj_get(d, 0, "queue_running");
	int pend = json_obj_get(d, 0, "queue_pending");
	size_t nr = run >= 0 && json_is_array(d, run)
	    ? (size_t) json_size(d, run)
	    : 0;
	size_t np = pend >= 0 && json_is_array(d, pend)
	    ? (size_t) json_size(d, pend)
	    : 0;
	struct queue_item *items = calloc(nr + np + 1, sizeof(*items));
	if (!items)
		return NULL;
	size_t k = 0;
	int t = run + 1;
	for (size_t i = 0; i < nr; i++, t = json_skip(d, t))
		if (parse_queue_item(d, t, &items[k]) == 0)
			k++;
	*n_run = k;
	t = pend + 1;
	for (size_t i = 0; i < np; i++, t = json_skip(d, t))
		if (parse_queue_item(d, t, &items[k]) == 0)
			k++;
	qsort(items + *n_run, k - *n_run, sizeof(*items), cmp_items);
	*n = k;
	return items;
}

/* Tracked prompts that left the queue without a terminal event are
 * looked up in history; returns whether there was one. */
static bool
find_vanished(struct engine *e, int64_t now)
{
	struct recon *r = &e->recon;
	bool vanished = false;
	unsigned it = 0;
	struct prompt *p;
	while ((p = tracker_next(e->tracker, &it)) != NULL) {
		if (p->terminal_sent || p->history_due || p->history_inflight
		    || p->queue_generation == r->queue_generation)
			continue;
		if (!p->queued_sent && !p->start_sent)
			continue;
		vanished = true;
		p->left_pending = !r->resyncing && !p->inherited
		    && !p->start_sent && !p->listed_running
		    && p->status == PS_QUEUED;
		p->history_due
		    = now + (p->ours && !r->resyncing ? HISTORY_GRACE_MS : 0);
		engine_schedule(e, p->history_due);
	}
	return vanished;
}

/* Two checks in a row, in case a status frame is in flight. */
static void
watchdog_check_queue(struct engine *e, size_t n)
{
	struct recon *r = &e->recon;
	if (!watchdog_silent(e))
		return;
	if ((int64_t) n != r->last_status_count) {
		if (++r->watchdog_mismatches >= 2)
			orphaned(e, "the queue changed");
	} else {
		r->watchdog_mismatches = 0;
	}
}

static void
on_queue(struct engine *e, const char *body, size_t len, int64_t now)
{
	struct recon *r = &e->recon;
	struct json_doc d;
	int rc = json_parse(e->http_parser, body, len, true, &d);
	if (rc != BR_OK) {
		health_body_unusable(e, "/queue", rc, len);
		return;
	}
	size_t nr = 0, n = 0;
	struct queue_item *items = read_queue(&d, &nr, &n);
	if (!items)
		return;
	r->queue_generation++;
	for (size_t i = 0; i < n; i++)
		apply_queue_item(
		    e, &items[i], i < nr, r->queue_generation, now);
	bool vanished = find_vanished(e, now);
	if (vanished || (n < r->last_queue_total && !r->list_asked_by_status))
		request_history_list(e);
	r->list_asked_by_status = false;
	r->last_queue_total = n;
	queue_changed(e, items, nr, n, now);
	free(items);
	r->resyncing = false;
	watchdog_check_queue(e, n);
}

/* ------------------------------------------------------------------ */
/* /history */

/* The terminal event in a history entry's status.messages. */
struct history_end {
	const char *term; /* NULL: none listed */
	int data;
	int64_t start_ts, end_ts;
};

static void
read_history_messages(
    const struct json_doc *d, int msgs, struct history_end *h)
{
	static const char *const terms[] = { "execution_success",
		"execution_error", "execution_interrupted" };
	int n = json_size(d, msgs), m = msgs + 1;
	for (int i = 0; i < n; i++, m = json_skip(d, m)) {
		if (!json_is_array(d, m) || json_size(d, m) < 2)
			continue;
		int name = m + 1, data = json_skip(d, name);
		int64_t ts = 0;
		int tt = json_is_object(d, data)
		    ? json_obj_get(d, data, "timestamp")
		    : -1;
		if (tt >= 0)
			json_get_int64(d, tt, &ts);
		if (json_str_eq(d, name, "execution_start"))
			h->start_ts = ts;
		for (int k = 0; k < 3; k++)
			if (json_str_eq(d, name, terms[k])) {
				h->term = terms[k];
				h->data = data;
				h->end_ts = ts;
			}
	}
}

/* The entry's final status and its terminal event's type. */
static enum prompt_status
history_status(const struct json_doc *d, int status, struct history_end *h)
{
	char status_str[32] = "";
	if (status >= 0) {
		int ss = json_obj_get(d, status, "status_str");
		if (ss >= 0)
			json_str_get(d, ss, status_str, sizeof(status_str));
	}
	enum prompt_status st = PS_SUCCESS;
	if (h->term && strcmp(h->term, "execution_error") == 0)
		st = PS_ERROR;
	else if (h->term && strcmp(h->term, "execution_interrupted") == 0)
		st = PS_INTERRUPTED;
	else if (!h->term && strcmp(status_str, "error") == 0)
		st = PS_ERROR;
	if (!h->term)
		h->term
		    = st == PS_ERROR ? "execution_error" : "execution_success";
	return st;
}

static void
history_outputs(
    struct engine *e, struct prompt *p, const struct json_doc *d, int outputs)
{
	if (outputs < 0 || !json_is_object(d, outputs))
		return;
	int n = json_size(d, outputs), k = outputs + 1;
	for (int i = 0; i < n; i++, k = json_skip(d, k + 1)) {
		char node[NODE_ID_MAX + 1];
		if (json_str_get(d, k, node, sizeof(node)) > 0)
			lc_set_output(e, p, node, d, k + 1);
	}
}

/* Reports a finished prompt read from a history entry. */
void
recon_apply_entry(struct engine *e, struct prompt *p, const struct json_doc *d,
    int entry, int64_t now)
{
	int status = json_obj_get(d, entry, "status");
	int msgs = status >= 0 ? json_obj_get(d, status, "messages") : -1;
	struct history_end h = { NULL, -1, 0, 0 };
	if (msgs >= 0 && json_is_array(d, msgs))
		read_history_messages(d, msgs, &h);
	enum prompt_status st = history_status(d, status, &h);
	lc_ensure_queued(e, p, SRC_HISTORY, now);
	if (!p->start_sent)
		lc_derive_start(e, p, SRC_HISTORY, h.start_ts, now);
	/* history's start and end share ComfyUI's clock: its duration */
	lc_clock_start(p, h.start_ts);
	history_outputs(e, p, d, json_obj_get(d, entry, "outputs"));
	char node[NODE_ID_MAX + 1];
	const char *nodep = NULL;
	if (h.data >= 0 && json_is_object(d, h.data)) {
		int nt = json_obj_get(d, h.data, "node_id");
		if (nt >= 0 && json_str_get(d, nt, node, sizeof(node)) > 0)
			nodep = node;
	}
	e->health.counters.recovered++;
	lc_finish(e, p,
	    &(struct lc_end) { st, SRC_HISTORY, h.term, h.data >= 0 ? d : NULL,
	        h.data, h.end_ts, nodep, false },
	    now);
}

static void
history_retry(struct engine *e, struct prompt *p, int64_t now)
{
	p->history_due = now + retry_in(p->history_tries);
	engine_schedule(e, p->history_due);
}

static void
on_history_id(struct engine *e, const char *id, const char *body, size_t len,
    int64_t now)
{
	struct prompt *p = tracker_find(e->tracker, id, strlen(id));
	if (!p)
		return;
	p->history_inflight = false;
	if (p->terminal_sent)
		return;
	struct json_doc d;
	int rc = json_parse(e->http_parser, body, len, true, &d);
	if (rc != BR_OK) {
		health_body_unusable(e, "/history/<id>", rc, len);
		history_retry(e, p, now);
		return;
	}
	int entry = json_obj_get(&d, 0, id);
	if (entry >= 0 && json_is_object(&d, entry)) {
		recon_apply_entry(e, p, &d, entry, now);
		return;
	}
	if (p->queue_generation == e->recon.queue_generation
	    && e->recon.queue_generation != 0) {
		/* listed by the latest poll: still queued or running */
		return;
	}
	/* a pending prompt that never ran and has no entry, gone while
	 * ComfyUI stayed up, was removed from the queue (delete, clear) */
	bool cancelled = p->left_pending;
	lc_finish(e, p,
	    &(struct lc_end) { cancelled ? PS_CANCELLED : PS_LOST, SRC_HISTORY,
	        cancelled ? "cancelled" : "lost", NULL, -1, now, NULL, false },
	    now);
}

/* The prompt a history list entry is about, or NULL to skip it; *deaf:
 * a prompt we never heard of finished while the watchdog checked. */
static struct prompt *
history_list_prompt(struct engine *e, const char *id, size_t il, bool *deaf)
{
	struct prompt *p = tracker_find(e->tracker, id, il);
	if (p && (p->terminal_sent || p->history_inflight))
		return NULL;
	if (!p && seen_has(e, id, il))
		return NULL;
	if (!p) {
		bool created;
		if (watchdog_silent(e))
			*deaf = true;
		p = tracker_get(e->tracker, id, il, &created);
		p->source = SRC_HISTORY;
		p->queued_at = 0;
		return p;
	}
	/* our own prompt's frames decide, which may still be on their way:
	 * the list can be read (a status frame of the prompt before) while
	 * they wait in the socket; a terminal frame that never comes is
	 * looked up after the grace once it left the queue (on_queue) */
	if (p->ours && !e->recon.resyncing)
		return NULL;
	return p;
}

/* The finish time of a history entry, 0 when it lists none. */
int64_t
recon_entry_end(const struct json_doc *d, int entry)
{
	int status = json_obj_get(d, entry, "status");
	int msgs = status >= 0 ? json_obj_get(d, status, "messages") : -1;
	struct history_end h = { NULL, -1, 0, 0 };
	if (msgs >= 0 && json_is_array(d, msgs))
		read_history_messages(d, msgs, &h);
	return h.end_ts;
}

static void
on_history_list(struct engine *e, const char *body, size_t len, int64_t now)
{
	struct json_doc d;
	int rc = json_parse(e->http_parser, body, len, true, &d);
	if (rc != BR_OK) {
		health_body_unusable(e, "/history", rc, len);
		return;
	}
	int n = json_size(&d, 0), k = 1;
	bool deaf = false;
	bool baseline = !e->recon.baseline_taken;
	e->recon.baseline_taken = true;
	for (int i = 0; i < n; i++, k = json_skip(&d, k + 1)) {
		char id[PROMPT_ID_MAX + 1];
		int il = json_str_get(&d, k, id, sizeof(id));
		if (il <= 0 || !json_is_object(&d, k + 1))
			continue;
		if (baseline) {
			baseline_add(e, id, (size_t) il);
			/* the newest is accounted for: a restart replays what
			 * finishes after it (an earlier run's cursor stays
			 * until what followed it is published, so a crash
			 * meanwhile loses nothing) */
			if (i == n - 1 && !recon_catching_up(e))
				retained_cursor(
				    e, id, recon_entry_end(&d, k + 1), now);
			continue;
		}
		struct prompt *p
		    = history_list_prompt(e, id, (size_t) il, &deaf);
		if (p)
			recon_apply_entry(e, p, &d, k + 1, now);
	}
	if (deaf)
		orphaned(e, "a prompt finished");
}

static void
on_system_stats(struct engine *e, const char *body, size_t len, int64_t now)
{
	struct json_doc d;
	if (json_parse(e->http_parser, body, len, true, &d) != BR_OK)
		return;
	int sys = json_obj_get(&d, 0, "system");
	int v = sys >= 0 ? json_obj_get(&d, sys, "comfyui_version") : -1;
	char ver[64];
	if (v >= 0 && json_str_get(&d, v, ver, sizeof(ver)) > 0
	    && strcmp(ver, e->comfyui_version) != 0) {
		copy_str(e->comfyui_version, sizeof(e->comfyui_version), ver);
		log_info("bridge", "ComfyUI version %s", ver);
		emit_info(e, now);
	}
}

/* ------------------------------------------------------------------ */
/* answers and time */

static void
on_queue_answer(struct engine *e, bool ok, int status, const char *body,
    size_t len, int64_t now)
{
	struct recon *r = &e->recon;
	r->poll_inflight = false;
	if (!ok) {
		r->poll_failures++;
		r->poll_retry_at = now + retry_in(r->poll_failures);
		engine_schedule(e, r->poll_retry_at);
		log_debug("http", "GET /queue failed (%d); retry in %lld ms",
		    status, (long long) (r->poll_retry_at - now));
		return;
	}
	r->poll_failures = 0;
	on_queue(e, body, len, now);
	recon_after_cursor(e); /* a failed catch-up page is asked again */
	if (r->poll_pending)
		request_poll(e);
}

static void
on_history_id_answer(struct engine *e, const char *tag, bool ok, int status,
    const char *body, size_t len, int64_t now)
{
	struct prompt *p
	    = tag ? tracker_find(e->tracker, tag, strlen(tag)) : NULL;
	if (!ok && status != 404) {
		if (p) {
			p->history_inflight = false;
			history_retry(e, p, now);
		}
		return;
	}
	on_history_id(e, tag ? tag : "", ok ? body : "{}", ok ? len : 2, now);
}

void
recon_on_http(struct engine *e, enum engine_http_kind kind, const char *tag,
    int status, const char *body, size_t len, int64_t now)
{
	bool ok = status >= 200 && status < 300;
	if (!ok && !(kind == EHTTP_HISTORY_ID && status == 404))
		e->health.counters.http_failures++;
	switch (kind) {
	case EHTTP_QUEUE:
		on_queue_answer(e, ok, status, body, len, now);
		break;
	case EHTTP_HISTORY_ID:
		on_history_id_answer(e, tag, ok, status, body, len, now);
		break;
	case EHTTP_HISTORY_LIST:
		if (tag && strcmp(tag, CATCHUP_TAG) == 0) {
			recon_on_catch_up_page(e, ok, body, len, now);
			break;
		}
		e->recon.list_inflight = false;
		if (ok)
			on_history_list(e, body, len, now);
		if (e->recon.list_pending)
			request_history_list(e);
		break;
	case EHTTP_SYSTEM_STATS:
		if (ok)
			on_system_stats(e, body, len, now);
		break;
	}
	/* give back what a big body made the token array grow to */
	json_parser_trim(e->http_parser);
}

/* After a silence, ask /queue and /history whether anything happened that
 * we should have heard about. */
int64_t
recon_watchdog_tick(struct engine *e, int64_t now)
{
	struct recon *r = &e->recon;
	int64_t period = (int64_t) (e->cfg.upstream_watchdog_s > 0
	                         ? e->cfg.upstream_watchdog_s
	                         : 60)
	    * 1000;
	if (!e->upstream_up)
		return 0;
	int64_t last = e->last_frame_at > e->upstream_up_at
	    ? e->last_frame_at
	    : e->upstream_up_at;
	int64_t due = last + period;
	if (r->next_watchdog_at > due)
		due = r->next_watchdog_at;
	if (now < due)
		return due;
	if (!r->poll_inflight && !r->list_inflight) {
		r->watchdog_asked_at = now;
		request_poll(e);
		request_history_list(e);
	}
	r->next_watchdog_at = now + period;
	return r->next_watchdog_at;
}

int64_t
recon_retry_tick(struct engine *e, int64_t now)
{
	struct recon *r = &e->recon;
	if (r->poll_retry_at && now >= r->poll_retry_at) {
		r->poll_retry_at = 0;
		request_poll(e);
	}
	return r->poll_retry_at;
}

int64_t
recon_prompt_tick(struct engine *e, struct prompt *p, int64_t now)
{
	if (!p->history_due || p->terminal_sent || p->history_inflight
	    || !e->upstream_up)
		return 0;
	if (now < p->history_due)
		return p->history_due;
	/* our prompt's frames may wait unread while reading is paused: the
	 * grace runs again from the resume, up to a limit */
	bool defer = p->ours && now < p->history_due + HISTORY_DEFER_MAX_MS;
	if (defer && e->upstream_paused)
		return now + HISTORY_GRACE_MS;
	if (defer && now < e->upstream_resumed_at + HISTORY_GRACE_MS)
		return e->upstream_resumed_at + HISTORY_GRACE_MS;
	p->history_due = 0;
	request_history(e, p);
	return 0;
}

void
recon_destroy(struct recon *r)
{
	idset_free(&r->finished);
	buf_free(&r->queue_ids);
}
