/* The prompt lifecycle: each ComfyUI event (or what reconciliation found)
 * moves a struct prompt along queued -> running -> a final status, and
 * every transition is published (emit.c) and told to the console. The
 * terminal step runs exactly once per prompt. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "log.h"

#define STATE_MIN_INTERVAL_MS 100

struct prompt *
lc_prompt_for(struct engine *e, const char *id, size_t len, int64_t now)
{
	bool created;
	struct prompt *p = tracker_get(e->tracker, id, len, &created);
	if (created) {
		p->source = SRC_LIVE;
		p->queued_at = now;
		p->rejected_mark = e->health.counters.rejected_total;
	}
	return p;
}

static int64_t
node_started(const struct prompt *p, const char *node)
{
	uint64_t h = tracker_hash(node, strlen(node));
	for (unsigned i = 0; i < PROMPT_RECENT_NODES; i++)
		if (p->recent[i].node_hash == h && p->recent[i].started_at)
			return p->recent[i].started_at;
	return 0;
}

/* The node finished: into done, with its run time when its start is
 * known. */
static void
node_done(struct prompt *p, const char *node, int64_t now)
{
	int64_t t0 = node_started(p, node);
	node_list_add(&p->done, node, t0 > 0 && now >= t0 ? now - t0 : -1);
}

/* One clock: ComfyUI's timestamps where it gives them, the bridge's
 * otherwise; the bridge learns of a prompt a little after ComfyUI stamps
 * its start, so the order queued <= started <= finished is restored by
 * moving the later-learned bound. */
static void
order_times(struct prompt *p)
{
	if (p->started_at && p->queued_at > p->started_at)
		p->queued_at = p->started_at;
	if (p->finished_at && p->finished_at < p->started_at)
		p->finished_at = p->started_at;
	if (p->finished_at && p->queued_at > p->finished_at)
		p->queued_at = p->finished_at;
}

void
lc_clock_start(struct prompt *p, int64_t ts)
{
	if (ts > 0 && !p->start_exact) {
		p->started_at = ts;
		p->start_exact = true;
	}
	order_times(p);
}

static void
set_running(struct engine *e, struct prompt *p, enum prompt_source src)
{
	p->status = PS_RUNNING;
	p->source = src;
	copy_str(e->running_id, sizeof(e->running_id), p->id);
}

/* Publishes an event the bridge makes itself (no frame carried it), its
 * data written by render. */
static void
emit_made(struct engine *e, const struct prompt *p, const char *type,
    void (*render)(struct jsonw *, const struct prompt *),
    enum prompt_source src, int64_t now)
{
	char data[PROMPT_ID_MAX * 12 + RENDER_DATA_MAX];
	struct jsonw w;
	jsonw_init(&w, data, sizeof(data));
	render(&w, p);
	struct envelope ev;
	envelope_init(&ev, type, now, src);
	envelope_for(&ev, p);
	ev.data_raw = w.buf;
	ev.data_raw_len = w.len;
	emit_envelope(e, &ev);
}

void
lc_ensure_queued(
    struct engine *e, struct prompt *p, enum prompt_source src, int64_t now)
{
	if (p->queued_sent)
		return;
	p->queued_sent = true;
	if (!p->queued_at)
		p->queued_at = now;
	emit_made(e, p, "queued", render_queued_data, src, now);
	console_queued(&e->console, p->id);
}

/* A start we did not see live: from /queue or history. */
void
lc_derive_start(struct engine *e, struct prompt *p, enum prompt_source src,
    int64_t started_at, int64_t now)
{
	if (p->start_sent)
		return;
	p->start_sent = true;
	p->started_at = started_at > 0 ? started_at : now;
	order_times(p);
	emit_made(e, p, "execution_start", render_start_data, src, now);
	if (!p->terminal_sent)
		set_running(e, p, src);
}

void
lc_set_output(struct engine *e, struct prompt *p, const char *node,
    const struct json_doc *d, int out)
{
	struct prompt_output *o = NULL;
	for (unsigned i = 0; i < p->n_outputs; i++)
		if (strcmp(p->outputs[i].node, node) == 0)
			o = &p->outputs[i];
	if (!o) {
		if (p->n_outputs >= PROMPT_MAX_OUTPUT_NODES) {
			p->outputs_truncated = true;
			return;
		}
		if (p->n_outputs == p->cap_outputs) {
			unsigned cap = p->cap_outputs ? p->cap_outputs * 2 : 4;
			struct prompt_output *no
			    = realloc(p->outputs, cap * sizeof(*no));
			if (!no)
				return;
			p->outputs = no;
			p->cap_outputs = cap;
		}
		o = &p->outputs[p->n_outputs++];
		memset(o, 0, sizeof(*o));
		copy_str(o->node, sizeof(o->node), node);
	}
	struct jsonw w;
	bool truncated = false;
	jsonw_init(&w, e->obuf, e->rctx.max_payload / 2);
	render_node_output(&w, e->comfy_url, d, out, &truncated);
	if (jsonw_finish(&w) != 0) {
		/* too big: keep a valid placeholder and say so */
		buf_set(&o->json, "{}", 2);
		p->outputs_truncated = true;
		return;
	}
	if (truncated)
		p->outputs_truncated = true;
	buf_set(&o->json, w.buf, w.len);
}

static void
set_error(
    struct prompt *p, const struct json_doc *d, int data, bool interrupted)
{
	char *mem = malloc(RENDER_ERROR_MAX);
	if (!mem)
		return;
	struct jsonw w;
	jsonw_init(&w, mem, RENDER_ERROR_MAX);
	render_error(&w, d, data, interrupted);
	if (jsonw_finish(&w) == 0)
		buf_set(&p->error, w.buf, w.len);
	free(mem);
}

/* The terminal event: ComfyUI's data, or one the bridge writes. */
static void
emit_terminal(struct engine *e, const struct prompt *p,
    const struct lc_end *end, int64_t now)
{
	char synth[PROMPT_ID_MAX * 12 + RENDER_DATA_MAX];
	struct envelope ev;
	envelope_init(&ev, end->type, now, end->source);
	envelope_for(&ev, p);
	ev.terminal = true;
	ev.node = end->node;
	ev.derived = end->derived;
	ev.has_duration = true;
	ev.duration_ms = prompt_duration(p);
	if (end->doc && end->data >= 0) {
		ev.doc = end->doc;
		ev.data_tok = end->data;
	} else {
		struct jsonw w;
		jsonw_init(&w, synth, sizeof(synth));
		render_end_data(
		    &w, p, end->status, end->derived, end->finished_at);
		ev.data_raw = w.buf;
		ev.data_raw_len = w.len;
	}
	emit_envelope(e, &ev);
}

/* A finished prompt is kept until its state expires (dedupe, TTL clear,
 * republish from p->state); the parts the state was built from are not
 * needed any more: memory stays flat with many prompts. */
static void
drop_details(struct prompt *p)
{
	node_list_free(&p->cached);
	node_list_free(&p->done);
	buf_free(&p->error);
	for (unsigned i = 0; i < p->n_outputs; i++)
		buf_free(&p->outputs[i].json);
	free(p->outputs);
	p->outputs = NULL;
	p->n_outputs = p->cap_outputs = 0;
}

/* The terminal step: event, state, completion; exactly once. */
void
lc_finish(
    struct engine *e, struct prompt *p, const struct lc_end *end, int64_t now)
{
	if (p->terminal_sent)
		return;
	if (recon_finished_here(e, p->id, p->id_len)) {
		/* finished before and evicted since: never a second
		 * terminal event, whatever the server sends */
		p->terminal_sent = true;
		return;
	}
	lc_ensure_queued(e, p, end->source, now);
	if (!p->start_sent && end->status != PS_LOST
	    && end->status != PS_CANCELLED)
		lc_derive_start(e, p, end->source, p->started_at, now);
	p->terminal_sent = true;
	p->status = end->status;
	p->source = end->source;
	p->finished_at = end->finished_at > 0 ? end->finished_at : now;
	order_times(p);
	if (end->status == PS_SUCCESS && p->has_node)
		node_done(p, p->node, now);
	if (end->status == PS_ERROR || end->status == PS_INTERRUPTED)
		set_error(
		    p, end->doc, end->data, end->status == PS_INTERRUPTED);
	emit_terminal(e, p, end, now);
	e->health.counters.terminals++;
	if (strcmp(e->running_id, p->id) == 0)
		e->running_id[0] = '\0';
	if (end->status == PS_LOST)
		e->health.counters.lost++;
	if (end->status == PS_ERROR || end->status == PS_INTERRUPTED)
		console_error(&e->console, p->id, end->doc, end->data,
		    end->status == PS_INTERRUPTED);
	else
		console_finished(&e->console, p);
	emit_state(e, p, now);
	emit_completion(e, p, now);
	recon_seen_add(e, p->id, p->id_len);
	retained_cursor(e, p->id, p->finished_at, now);
	drop_details(p);
}

/* ------------------------------------------------------------------ */
/* live events of a prompt */

static void
on_execution_start(struct engine *e, const struct comfy_event *ev,
    struct prompt *p, const struct envelope *env, int64_t now)
{
	emit_envelope(e, env);
	if (!p->start_sent) {
		p->start_sent = true;
		p->started_at = now;
	}
	lc_clock_start(p, ev->has_timestamp ? ev->timestamp : 0);
	if (!p->terminal_sent) {
		set_running(e, p, SRC_LIVE);
		emit_state(e, p, now);
	}
}

static void
on_cached(struct engine *e, const struct json_doc *d,
    const struct comfy_event *ev, struct prompt *p, const struct envelope *env,
    int64_t now)
{
	emit_envelope(e, env);
	console_cached(&e->console, p->id, d, ev->nodes);
	if (ev->nodes >= 0) {
		int n = json_size(d, ev->nodes), t = ev->nodes + 1;
		for (int i = 0; i < n; i++, t = json_skip(d, t)) {
			char node[NODE_ID_MAX + 1];
			if (json_str_get(d, t, node, sizeof(node)) >= 0)
				node_list_add(&p->cached, node, -1);
		}
	}
	if (!p->terminal_sent)
		emit_state(e, p, now);
}

/* executing with a null node: the prompt's run is over. */
static void
on_run_over(struct engine *e, struct prompt *p, const struct envelope *env,
    int64_t now)
{
	emit_envelope(e, env);
	console_executing(&e->console, p->id, NULL);
	if (p->terminal_sent || p->history_inflight)
		return;
	/* No terminal frame came. Servers older than execution_success end a
	 * good run like this; but a frame dropped meanwhile may have been its
	 * execution_error: ask history, which is written before this frame
	 * is sent (bridge/README.md#history-before-idle). */
	if (e->health.counters.rejected_total != p->rejected_mark) {
		p->history_due = now;
		engine_schedule(e, now);
		return;
	}
	lc_finish(e, p,
	    &(struct lc_end) { PS_SUCCESS, SRC_LIVE, "execution_success", NULL,
	        -1, 0, NULL, true },
	    now);
}

static void
on_executing(struct engine *e, const struct comfy_event *ev, struct prompt *p,
    struct envelope *env, int64_t now)
{
	env->has_node_started = true;
	if (ev->node_null || !ev->has_node) {
		on_run_over(e, p, env, now);
		return;
	}
	env->node_started_at = now;
	emit_envelope(e, env);
	console_executing(&e->console, p->id, ev->node);
	if (p->has_node && strcmp(p->node, ev->node) != 0)
		node_done(p, p->node, now);
	copy_str(p->node, sizeof(p->node), ev->node);
	p->has_node = true;
	p->recent[p->recent_next++ % PROMPT_RECENT_NODES]
	    = (struct prompt_node_time) { tracker_hash(ev->node, ev->node_len),
		      now };
	copy_str(e->running_id, sizeof(e->running_id), p->id);
	if (p->terminal_sent)
		return;
	if (p->status == PS_QUEUED) {
		p->status = PS_RUNNING;
		if (!p->start_sent) {
			p->start_sent = true;
			p->started_at = now;
			order_times(p);
		}
	}
	emit_state(e, p, now);
}

static void
on_progress(struct engine *e, const struct comfy_event *ev, struct prompt *p,
    struct envelope *env, int64_t now)
{
	env->has_percent = true;
	if (ev->max > 0 && isfinite(ev->value) && isfinite(ev->max))
		env->percent = render_percent(ev->value, ev->max);
	else
		env->percent_null = true;
	emit_envelope(e, env);
	console_progress(&e->console, ev->value, ev->max);
	if (p->terminal_sent)
		return;
	p->has_progress = true;
	p->value = ev->value;
	p->max = ev->max;
	copy_str(p->pnode, sizeof(p->pnode), ev->has_node ? ev->node : "");
	if (p->status == PS_QUEUED)
		p->status = PS_RUNNING;
	/* progress comes fast: the state follows at most every 100 ms */
	if (now - p->state_published_at >= STATE_MIN_INTERVAL_MS) {
		emit_state(e, p, now);
	} else {
		p->state_dirty = true;
		engine_schedule(
		    e, p->state_published_at + STATE_MIN_INTERVAL_MS);
	}
}

static void
on_executed(struct engine *e, const struct json_doc *d,
    const struct comfy_event *ev, struct prompt *p, struct envelope *env,
    int64_t now)
{
	int64_t t0 = ev->has_node ? node_started(p, ev->node) : 0;
	env->has_node_ms = true;
	env->node_ms = t0 > 0 && now >= t0 ? now - t0 : -1;
	env->has_images = true;
	env->images = render_count_files(d, ev->output);
	emit_envelope(e, env);
	if (ev->has_node) {
		console_executed(&e->console, p->id, ev->node, env->images);
		if (ev->output >= 0 && json_is_object(d, ev->output))
			lc_set_output(e, p, ev->node, d, ev->output);
		if (!p->terminal_sent && t0 > 0)
			node_done(p, ev->node, now);
	}
	if (!p->terminal_sent)
		emit_state(e, p, now);
}

/* execution_success, execution_error, execution_interrupted. */
static void
on_terminal(struct engine *e, const struct json_doc *d,
    const struct comfy_event *ev, struct prompt *p, enum prompt_status st,
    int64_t now)
{
	lc_finish(e, p,
	    &(struct lc_end) { st, SRC_LIVE, ev->type, d, ev->data,
	        ev->has_timestamp ? ev->timestamp : now,
	        st != PS_SUCCESS && ev->has_node ? ev->node : NULL, false },
	    now);
}

/* Whether only the prompt's own client receives this kind of event. */
static bool
only_to_owner(enum event_kind k)
{
	switch (k) {
	case EVK_EXECUTION_START:
	case EVK_EXECUTION_CACHED:
	case EVK_EXECUTING:
	case EVK_EXECUTED:
	case EVK_EXECUTION_SUCCESS:
	case EVK_EXECUTION_ERROR:
		return true;
	default:
		return false;
	}
}

static void
dispatch(struct engine *e, const struct json_doc *d,
    const struct comfy_event *ev, struct prompt *p, struct envelope *env,
    int64_t now)
{
	switch (ev->kind) {
	case EVK_EXECUTION_START:
		on_execution_start(e, ev, p, env, now);
		break;
	case EVK_EXECUTION_CACHED:
		on_cached(e, d, ev, p, env, now);
		break;
	case EVK_EXECUTING:
		on_executing(e, ev, p, env, now);
		break;
	case EVK_PROGRESS:
		on_progress(e, ev, p, env, now);
		break;
	case EVK_EXECUTED:
		on_executed(e, d, ev, p, env, now);
		break;
	case EVK_EXECUTION_SUCCESS:
		on_terminal(e, d, ev, p, PS_SUCCESS, now);
		break;
	case EVK_EXECUTION_ERROR:
		if (ev->blocked) /* "Execution Blocked": the prompt goes on */
			emit_envelope(e, env);
		else
			on_terminal(e, d, ev, p, PS_ERROR, now);
		break;
	case EVK_EXECUTION_INTERRUPTED:
		on_terminal(e, d, ev, p, PS_INTERRUPTED, now);
		break;
	default:
		emit_envelope(e, env);
		break;
	}
}

int64_t
lc_prompt_tick(struct engine *e, struct prompt *p, int64_t now)
{
	if (!p->state_dirty)
		return 0;
	int64_t due = p->state_published_at + STATE_MIN_INTERVAL_MS;
	if (now < due)
		return due;
	emit_state(e, p, now);
	return 0;
}

void
lc_on_event(struct engine *e, const struct json_doc *d,
    const struct comfy_event *ev, struct prompt *p, int64_t now)
{
	struct envelope env;
	envelope_init(&env, ev->type, now, SRC_LIVE);
	envelope_for(&env, p);
	env.doc = d;
	env.data_tok = ev->data;
	if (ev->has_node)
		env.node = ev->node;
	if (only_to_owner(ev->kind)) {
		/* sent to the submitting client's socket alone: ours, so its
		 * queued event (when this comes first) names our client id */
		p->ours = true;
		if (!p->has_client_id) {
			copy_str(
			    p->client_id, sizeof(p->client_id), e->client_id);
			p->has_client_id = true;
		}
	}
	if (p->terminal_sent && event_is_terminal(ev)) {
		log_debug("bridge", "duplicate terminal %s for %s ignored",
		    ev->type, p->tid);
		return;
	}
	if (!p->terminal_sent)
		lc_ensure_queued(e, p, SRC_LIVE, now);
	/* queued and then a start come before any other event of the
	 * prompt: a client-less prompt's first frame is a progress_state,
	 * and its execution_start goes to nobody */
	if (!p->terminal_sent && !p->start_sent
	    && ev->kind != EVK_EXECUTION_START && !event_is_terminal(ev)) {
		lc_derive_start(e, p, SRC_LIVE, now, now);
		emit_state(e, p, now);
	}
	dispatch(e, d, ev, p, &env, now);
	/* a prompt first learned from a frame that changes nothing else */
	if (!p->terminal_sent && p->state.len == 0)
		emit_state(e, p, now);
}
