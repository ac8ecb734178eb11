/* See render.h. */
#include "render.h"

#include <math.h>
#include <string.h>

#include "err.h"
#include "outq.h"

static void
w_tail(struct jsonw *w, const struct render_ctx *c, int64_t ts, uint64_t seq)
{
	jsonw_kint(w, "ts", ts);
	jsonw_kint(w, "seq", (int64_t) seq);
	jsonw_kint(w, "run", c->run);
}

/* The key render_state_reseq finds: the last one in every payload w_tail
 * ends (only "run" and the truncation mark follow it). */
static const char seq_key[] = ",\"seq\":";

static void
w_nullable_int(struct jsonw *w, const char *k, int64_t v)
{
	if (v > 0)
		jsonw_kint(w, k, v);
	else
		jsonw_knull(w, k);
}

/* v, or null when negative */
static void
w_nonneg_int(struct jsonw *w, const char *k, int64_t v)
{
	if (v >= 0)
		jsonw_kint(w, k, v);
	else
		jsonw_knull(w, k);
}

static int
finish(struct jsonw *w)
{
	jsonw_obj_end(w);
	return jsonw_finish(w) == 0 ? 0 : BR_ETRUNC;
}

/* What is left of the payload limit for data (at least 1). */
static size_t
data_budget(const struct render_ctx *c, const struct jsonw *w)
{
	size_t used = w->len + 64;
	return used < c->max_payload ? c->max_payload - used : 1;
}

double
render_percent(double value, double max)
{
	double pc = value * 100.0 / max;
	return pc < 0 ? 0 : pc > 100 ? 100 : pc;
}

void
envelope_init(
    struct envelope *ev, const char *type, int64_t ts, enum prompt_source src)
{
	memset(ev, 0, sizeof(*ev));
	ev->type = type;
	ev->ts = ts;
	ev->source = src;
	ev->data_tok = -1;
}

void
envelope_for(struct envelope *ev, const struct prompt *p)
{
	ev->prompt_id = p->id;
	ev->prompt_len = p->id_len;
	ev->tid = p->tid;
}

/* The members an event type adds (percent, node times, images, duration).
 */
static void
w_envelope_derived(struct jsonw *w, const struct envelope *ev)
{
	if (ev->has_percent) {
		jsonw_key(w, "percent");
		if (ev->percent_null)
			jsonw_null(w);
		else
			jsonw_fixed(w, ev->percent, 1);
	}
	if (ev->has_node_started)
		w_nullable_int(w, "node_started_at", ev->node_started_at);
	if (ev->has_node_ms)
		w_nonneg_int(w, "node_ms", ev->node_ms);
	if (ev->has_images)
		jsonw_kint(w, "images", ev->images);
	if (ev->has_duration)
		w_nonneg_int(w, "duration_ms", ev->duration_ms);
}

int
render_envelope(struct jsonw *w, const struct render_ctx *c,
    const struct envelope *ev, uint64_t seq)
{
	bool truncated = false;
	jsonw_obj_begin(w);
	jsonw_kint(w, "v", 1);
	jsonw_kstr(w, "type", ev->type);
	jsonw_kstr(w, "instance", c->instance);
	if (ev->prompt_id)
		jsonw_kstrn(w, "prompt_id", ev->prompt_id, ev->prompt_len);
	else
		jsonw_knull(w, "prompt_id");
	if (ev->node)
		jsonw_kstr(w, "node", ev->node);
	else
		jsonw_knull(w, "node");
	w_tail(w, c, ev->ts, seq);
	jsonw_kstr(w, "source", prompt_source_name(ev->source));
	w_envelope_derived(w, ev);
	jsonw_key(w, "data");
	if (ev->doc && ev->data_tok >= 0)
		json_emit(
		    ev->doc, ev->data_tok, w, data_budget(c, w), &truncated);
	else if (ev->data_raw)
		jsonw_raw(w, ev->data_raw, ev->data_raw_len);
	else
		jsonw_raw(w, "{}", 2);
	if (truncated)
		jsonw_kbool(w, "truncated", true);
	if (ev->derived)
		jsonw_kbool(w, "derived", true);
	return finish(w);
}

void
render_queued_data(struct jsonw *w, const struct prompt *p)
{
	jsonw_obj_begin(w);
	jsonw_kstrn(w, "prompt_id", p->id, p->id_len);
	if (p->has_number)
		jsonw_kint(w, "number", p->number);
	else
		jsonw_knull(w, "number");
	if (p->has_client_id)
		jsonw_kstr(w, "client_id", p->client_id);
	else
		jsonw_knull(w, "client_id");
	jsonw_obj_end(w);
}

void
render_start_data(struct jsonw *w, const struct prompt *p)
{
	jsonw_obj_begin(w);
	jsonw_kstrn(w, "prompt_id", p->id, p->id_len);
	jsonw_kint(w, "timestamp", p->started_at);
	jsonw_obj_end(w);
}

void
render_end_data(struct jsonw *w, const struct prompt *p, enum prompt_status st,
    bool derived, int64_t finished_at)
{
	jsonw_obj_begin(w);
	jsonw_kstrn(w, "prompt_id", p->id, p->id_len);
	if (st == PS_LOST)
		jsonw_kstr(w, "reason",
		    "not in queue or history after it left the queue or "
		    "after a reconnect");
	else if (st == PS_CANCELLED)
		jsonw_kstr(w, "reason",
		    "removed from the pending queue before it ran");
	else if (!derived)
		w_nullable_int(w, "timestamp", finished_at);
	jsonw_obj_end(w);
}

void
render_progress_text_data(struct jsonw *w, const char *node, size_t node_len,
    const char *text, size_t text_len)
{
	bool cut = false;
	jsonw_obj_begin(w);
	jsonw_key(w, "node");
	jsonw_strn_max(w, node, node_len, 256, &cut);
	jsonw_key(w, "text");
	jsonw_strn_max(w, text, text_len, 4096, &cut);
	jsonw_obj_end(w);
}

/* ------------------------------------------------------------------ */
/* state and completion */

static void
w_node_list(struct jsonw *w, const char *k, const struct node_list *l)
{
	jsonw_key(w, k);
	jsonw_arr_begin(w);
	for (unsigned i = 0; i < l->n; i++)
		jsonw_str(w, l->ids[i].id);
	jsonw_arr_end(w);
}

static void
w_node_ms(struct jsonw *w, const struct node_list *l)
{
	jsonw_key(w, "node_ms");
	jsonw_obj_begin(w);
	for (unsigned i = 0; i < l->n; i++)
		if (l->ids[i].ms >= 0)
			jsonw_kint(w, l->ids[i].id, l->ids[i].ms);
	jsonw_obj_end(w);
}

static bool
w_outputs(struct jsonw *w, const struct prompt *p, size_t budget)
{
	bool truncated = p->outputs_truncated;
	jsonw_key(w, "outputs");
	if (p->n_outputs == 0 && p->status != PS_SUCCESS) {
		jsonw_null(w);
		return truncated;
	}
	jsonw_obj_begin(w);
	size_t start = w->len;
	for (unsigned i = 0; i < p->n_outputs; i++) {
		const struct prompt_output *o = &p->outputs[i];
		if (w->len - start + o->json.len + 140 > budget) {
			truncated = true;
			break;
		}
		jsonw_key(w, o->node);
		jsonw_raw(w, o->json.p, o->json.len);
	}
	jsonw_obj_end(w);
	return truncated;
}

/* The members state and completion end with: error, source, ts/seq/run,
 * the truncation mark. */
static int
w_outcome_tail(struct jsonw *w, const struct render_ctx *c,
    const struct prompt *p, int64_t ts, uint64_t seq, bool truncated)
{
	if (p->error.len)
		jsonw_kraw(w, "error", p->error.p, p->error.len);
	else
		jsonw_knull(w, "error");
	jsonw_kstr(w, "source", prompt_source_name(p->source));
	w_tail(w, c, ts, seq);
	if (truncated)
		jsonw_kbool(w, "truncated", true);
	return finish(w);
}

static void
w_progress(struct jsonw *w, const struct prompt *p)
{
	jsonw_key(w, "progress");
	if (!p->has_progress || p->terminal_sent) {
		jsonw_null(w);
		return;
	}
	jsonw_obj_begin(w);
	jsonw_kstr(w, "node", p->pnode);
	jsonw_key(w, "value");
	jsonw_double(w, p->value);
	jsonw_key(w, "max");
	jsonw_double(w, p->max);
	jsonw_key(w, "percent");
	if (p->max > 0 && isfinite(p->value))
		jsonw_fixed(w, render_percent(p->value, p->max), 1);
	else
		jsonw_null(w);
	jsonw_obj_end(w);
}

int
render_state(struct jsonw *w, const struct render_ctx *c,
    const struct prompt *p, int64_t ts, uint64_t seq)
{
	bool truncated = false;
	jsonw_obj_begin(w);
	jsonw_kint(w, "v", 1);
	jsonw_kstrn(w, "prompt_id", p->id, p->id_len);
	jsonw_kstr(w, "instance", c->instance);
	jsonw_kstr(w, "status", prompt_status_name(p->status));
	w_nullable_int(w, "queued_at", p->queued_at);
	w_nullable_int(w, "started_at", p->started_at);
	w_nullable_int(w, "finished_at", p->finished_at);
	w_nonneg_int(
	    w, "duration_ms", p->terminal_sent ? prompt_duration(p) : -1);
	if (p->has_node && !p->terminal_sent)
		jsonw_kstr(w, "node", p->node);
	else
		jsonw_knull(w, "node");
	w_progress(w, p);
	w_node_list(w, "nodes_cached", &p->cached);
	w_node_list(w, "nodes_done", &p->done);
	w_node_ms(w, &p->done);
	if (p->terminal_sent)
		truncated |= w_outputs(w, p, data_budget(c, w) / 2);
	else
		jsonw_knull(w, "outputs");
	return w_outcome_tail(w, c, p, ts, seq, truncated);
}

int
render_state_reseq(char *dst, size_t cap, const char *state, size_t len,
    uint64_t seq, size_t *out_len)
{
	const size_t kn = sizeof(seq_key) - 1;
	size_t at = len;
	while (at >= kn && memcmp(state + at - kn, seq_key, kn) != 0)
		at--;
	if (at < kn)
		return BR_EINVAL;
	size_t end = at; /* after the old seq's digits */
	if (end < len && state[end] == '-')
		end++;
	while (end < len && state[end] >= '0' && state[end] <= '9')
		end++;
	/* as w_tail writes it: (int64_t) seq */
	int64_t v = (int64_t) seq;
	uint64_t mag = v < 0 ? 0 - (uint64_t) v : (uint64_t) v;
	char tmp[24];
	char *digits_end = tmp + sizeof(tmp), *d = digits_end;
	do {
		*--d = (char) ('0' + mag % 10);
		mag /= 10;
	} while (mag != 0);
	if (v < 0)
		*--d = '-';
	size_t dn = (size_t) (digits_end - d);
	size_t n = at + dn + (len - end);
	/* jsonw keeps one byte for the NUL */
	if (cap == 0 || n > cap - 1)
		return BR_ETRUNC;
	memcpy(dst, state, at);
	memcpy(dst + at, d, dn);
	memcpy(dst + at + dn, state + end, len - end);
	dst[n] = '\0';
	*out_len = n;
	return 0;
}

const char *
render_completion_type(enum prompt_status s)
{
	switch (s) {
	case PS_SUCCESS:
		return "success";
	case PS_ERROR:
		return "error";
	case PS_INTERRUPTED:
		return "interrupted";
	case PS_CANCELLED:
		return "cancelled";
	default:
		return "lost";
	}
}

int
render_completion(struct jsonw *w, const struct render_ctx *c,
    const struct prompt *p, int64_t ts, uint64_t seq)
{
	jsonw_obj_begin(w);
	jsonw_kint(w, "v", 1);
	jsonw_kstr(w, "event_type", render_completion_type(p->status));
	jsonw_kstrn(w, "prompt_id", p->id, p->id_len);
	jsonw_kstr(w, "instance", c->instance);
	w_nonneg_int(w, "duration_ms", prompt_duration(p));
	bool truncated = w_outputs(w, p, data_budget(c, w) / 2);
	return w_outcome_tail(w, c, p, ts, seq, truncated);
}

/* ------------------------------------------------------------------ */
/* queue, info, health */

int
render_queue(struct jsonw *w, const struct render_ctx *c,
    const struct queue_item *items, size_t n_run, size_t n, int64_t ts,
    uint64_t seq)
{
	jsonw_obj_begin(w);
	jsonw_kint(w, "v", 1);
	jsonw_kint(w, "queue_remaining", (int64_t) n);
	jsonw_key(w, "running");
	jsonw_arr_begin(w);
	for (size_t i = 0; i < n_run; i++)
		jsonw_strn(w, items[i].id, items[i].id_len);
	jsonw_arr_end(w);
	jsonw_key(w, "pending");
	jsonw_arr_begin(w);
	for (size_t i = n_run; i < n; i++)
		jsonw_strn(w, items[i].id, items[i].id_len);
	jsonw_arr_end(w);
	w_tail(w, c, ts, seq);
	return finish(w);
}

int
render_cursor(struct jsonw *w, const struct render_ctx *c, const char *id,
    int64_t finished_at, int64_t ts, uint64_t seq)
{
	jsonw_obj_begin(w);
	jsonw_kint(w, "v", 1);
	jsonw_kstr(w, "prompt_id", id);
	jsonw_kint(w, "finished_at", finished_at);
	w_tail(w, c, ts, seq);
	return finish(w);
}

int
render_info(struct jsonw *w, const struct render_ctx *c,
    const struct info_facts *f, int64_t ts, uint64_t seq)
{
	jsonw_obj_begin(w);
	jsonw_kint(w, "v", 1);
	jsonw_kstr(w, "version", f->version);
	jsonw_kstr(w, "instance", c->instance);
	jsonw_kstr(w, "prefix", f->prefix);
	jsonw_kstr(w, "comfyui_url", f->comfyui_url);
	if (f->comfyui_version[0])
		jsonw_kstr(w, "comfyui_version", f->comfyui_version);
	else
		jsonw_knull(w, "comfyui_version");
	jsonw_kstr(w, "client_id", f->client_id);
	jsonw_kstr(w, "mqtt_client_id", f->mqtt_client_id);
	jsonw_kstr(w, "mqtt_protocol", f->mqtt_protocol == 4 ? "3.1.1" : "5");
	jsonw_kint(w, "started_at", c->run);
	jsonw_key(w, "options");
	jsonw_obj_begin(w);
	if (f->write_options)
		f->write_options(f->write_options_ud, w);
	jsonw_obj_end(w);
	w_tail(w, c, ts, seq);
	return finish(w);
}

/* An object of one counter per message class. */
static void
w_per_class(struct jsonw *w, const char *k, const uint64_t *v)
{
	jsonw_key(w, k);
	jsonw_obj_begin(w);
	for (int i = 0; i < MSG_CLASS_COUNT; i++)
		jsonw_kint(w, msg_class_name(i), v ? (int64_t) v[i] : 0);
	jsonw_obj_end(w);
}

/* The adapters' part: published, queue, dropped, refused. */
static void
w_health_io(struct jsonw *w, const struct engine_health_io *h)
{
	w_per_class(w, "published", h ? h->published : NULL);
	jsonw_key(w, "queue");
	jsonw_obj_begin(w);
	jsonw_kint(w, "depth", h ? (int64_t) h->queue_depth : 0);
	jsonw_kint(w, "bytes", h ? (int64_t) h->queue_bytes : 0);
	jsonw_obj_end(w);
	w_per_class(w, "dropped", h ? h->dropped : NULL);
	jsonw_key(w, "refused");
	jsonw_obj_begin(w);
	for (int i = 0; i < PR_COUNT; i++)
		jsonw_kint(
		    w, pub_refusal_name(i), h ? (int64_t) h->refused[i] : 0);
	jsonw_obj_end(w);
}

int
render_health(struct jsonw *w, const struct render_ctx *c,
    const struct health_facts *f, int64_t ts, uint64_t seq)
{
	const struct engine_counters *n = f->counters;
	const struct engine_health_io *h = f->io;
	jsonw_obj_begin(w);
	jsonw_kint(w, "v", 1);
	jsonw_kint(w, "uptime_s", (ts - c->run) / 1000);
	jsonw_kbool(w, "comfyui_connected", f->upstream_up);
	jsonw_kbool(w, "mqtt_connected", h && h->mqtt_connected);
	jsonw_key(w, "frames");
	jsonw_obj_begin(w);
	jsonw_kint(w, "text", (int64_t) n->frames_text);
	jsonw_kint(w, "binary", (int64_t) n->frames_binary);
	jsonw_obj_end(w);
	w_health_io(w, h);
	jsonw_key(w, "rejected");
	jsonw_obj_begin(w);
	for (unsigned i = 0; i < f->n_reasons; i++)
		jsonw_kint(w, f->reject_names[i], (int64_t) f->rejected[i]);
	jsonw_obj_end(w);
	jsonw_key(w, "reconnects");
	jsonw_obj_begin(w);
	jsonw_kint(w, "comfyui", h ? (int64_t) h->comfyui_reconnects : 0);
	jsonw_kint(w, "mqtt", h ? (int64_t) h->mqtt_reconnects : 0);
	jsonw_obj_end(w);
	jsonw_key(w, "backpressure");
	jsonw_obj_begin(w);
	jsonw_kint(w, "pauses", h ? (int64_t) h->upstream_pauses : 0);
	jsonw_kint(w, "paused_ms", h ? (int64_t) h->upstream_paused_ms : 0);
	jsonw_obj_end(w);
	jsonw_kint(w, "resyncs", (int64_t) n->resyncs);
	jsonw_kint(w, "recovered_from_history", (int64_t) n->recovered);
	jsonw_kint(w, "lost", (int64_t) n->lost);
	jsonw_kint(w, "http_failures", (int64_t) n->http_failures);
	if (h && h->write_addons)
		h->write_addons(h->addons_ud, w);
	jsonw_key(w, "last_frame_age_s");
	if (f->last_frame_at)
		jsonw_double(w, (double) (ts - f->last_frame_at) / 1000.0);
	else
		jsonw_null(w);
	w_tail(w, c, ts, seq);
	return finish(w);
}
