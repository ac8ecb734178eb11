/* The one path from a transition to a message: render the payload into
 * the engine's scratch buffer (bridge/render), build the topic and hand it
 * to the publisher through the topic-kind table (pubkind.h). */
#include <string.h>

#include "engine_int.h"
#include "log.h"

void
emit_msg(struct engine *e, const struct pub_req *r)
{
	struct out_msg m;
	pub_build(&e->pub_env, r, &e->scratch, &m);
	e->io.publish(e->io.ud, &m);
}

static void
writer(struct engine *e, struct jsonw *w)
{
	jsonw_init(w, e->obuf, e->rctx.max_payload + 1024);
}

static bool
event_allowed(struct engine *e, const char *type)
{
	if (!e->cfg.event_allowed)
		return true;
	return e->cfg.event_allowed(
	    e->cfg.event_allowed_ud, type, strlen(type));
}

void
emit_envelope(struct engine *e, const struct envelope *ev)
{
	if (!event_allowed(e, ev->type))
		return;
	struct jsonw w;
	writer(e, &w);
	if (render_envelope(&w, &e->rctx, ev, ++e->seq) != 0) {
		health_unfit(e, ev->terminal ? MSG_CRITICAL : MSG_LIFECYCLE,
		    ev->type, ev->tid);
		return;
	}
	enum topic_kind k = ev->tid ? TK_PROMPT_EVENT : TK_EVENT;
	if (pub_topic(e->topic, sizeof(e->topic), e->prefix, e->instance, k,
	        ev->tid, ev->type)
	    < 0)
		return;
	emit_msg(e,
	    &(struct pub_req) { .kind = k,
	        .topic = e->topic,
	        .payload = w.buf,
	        .len = w.len,
	        .event_type = ev->type,
	        .terminal = ev->terminal,
	        .prompt_id = ev->prompt_id,
	        .node = ev->node });
	e->health.counters.published_events++;
}

/* Renders p's state into e->obuf; returns its length or -1. */
static long
render_state_of(struct engine *e, const struct prompt *p, int64_t now)
{
	struct jsonw w;
	writer(e, &w);
	if (render_state(&w, &e->rctx, p, now, ++e->seq) != 0) {
		health_unfit(e, MSG_CRITICAL, "state", p->tid);
		return -1;
	}
	return (long) w.len;
}

/* The state just rendered (kept in p->state) with current's own seq, in
 * e->obuf: what rendering it again writes, without rendering it again.
 * Returns its length or -1. */
static long
current_of(struct engine *e, const struct prompt *p, int64_t now)
{
	size_t n;
	if (p->state.p == NULL)
		return render_state_of(e, p, now);
	int rc = render_state_reseq(e->obuf, e->rctx.max_payload + 1024,
	    p->state.p, p->state.len, ++e->seq, &n);
	if (rc == BR_EINVAL) {
		e->seq--;
		return render_state_of(e, p, now);
	}
	if (rc != 0) {
		health_unfit(e, MSG_CRITICAL, "state", p->tid);
		return -1;
	}
	return (long) n;
}

static void
emit_prompt_msg(struct engine *e, enum topic_kind k, const struct prompt *p,
    const void *payload, size_t len)
{
	if (pub_topic(e->topic, sizeof(e->topic), e->prefix, e->instance, k,
	        p->tid, NULL)
	    < 0)
		return;
	emit_msg(e,
	    &(struct pub_req) { .kind = k,
	        .topic = e->topic,
	        .payload = payload,
	        .len = len,
	        .prompt_id = p->id });
}

void
emit_state(struct engine *e, struct prompt *p, int64_t now)
{
	long len = render_state_of(e, p, now);
	if (len < 0)
		return;
	buf_set(&p->state, e->obuf, (size_t) len);
	emit_prompt_msg(e, TK_STATE, p, e->obuf, (size_t) len);
	p->state_dirty = false;
	p->state_published_at = now;
	if (p->terminal_sent) {
		/* kept until its TTL, up to the table's capacity of them */
		buf_fit(&p->state);
		p->expire_at = now + e->cfg.state_ttl_s * 1000;
		engine_schedule(e, p->expire_at);
	}
	/* current mirrors the prompt running now (or the last one to
	 * finish): a fixed topic for dashboards and Home Assistant. Its own
	 * seq, so consumers never see one seq twice. */
	if (strcmp(e->running_id, p->id) == 0 || p->terminal_sent) {
		len = current_of(e, p, now);
		if (len < 0)
			return;
		copy_str(e->retained.current_id,
		    sizeof(e->retained.current_id), p->id);
		emit_global(e, TK_CURRENT, p->id, e->obuf, (size_t) len,
		    &e->retained.current);
	}
}

/* Republishes a prompt's last state (after a broker reconnect). */
void
emit_state_again(struct engine *e, const struct prompt *p)
{
	emit_prompt_msg(e, TK_STATE, p, p->state.p, p->state.len);
}

void
emit_completion(struct engine *e, struct prompt *p, int64_t now)
{
	struct jsonw w;
	writer(e, &w);
	if (render_completion(&w, &e->rctx, p, now, ++e->seq) != 0) {
		health_unfit(e, MSG_CRITICAL, "completion", p->tid);
		return;
	}
	emit_global(e, TK_COMPLETION, p->id, w.buf, w.len, NULL);
}

void
emit_text(struct engine *e, enum topic_kind k, const char *text)
{
	emit_global(e, k, NULL, text, strlen(text), NULL);
}

void
emit_global(struct engine *e, enum topic_kind k, const char *prompt_id,
    const char *json, size_t len, struct buf *keep)
{
	if (keep != NULL && keep->p != json)
		buf_set(keep, json, len);
	if (pub_topic(e->topic, sizeof(e->topic), e->prefix, e->instance, k,
	        NULL, NULL)
	    < 0)
		return;
	emit_msg(e,
	    &(struct pub_req) { .kind = k,
	        .topic = e->topic,
	        .payload = json,
	        .len = len,
	        .prompt_id = prompt_id });
}

void
emit_info(struct engine *e, int64_t now)
{
	struct info_facts f = {
		.version = C2M_VERSION,
		.prefix = e->prefix,
		.comfyui_url = e->comfy_url,
		.comfyui_version = e->comfyui_version,
		.client_id = e->client_id,
		.mqtt_client_id = e->mqtt_client_id,
		.mqtt_protocol = e->cfg.mqtt_protocol,
		.write_options = e->cfg.write_options,
		.write_options_ud = e->cfg.write_options_ud,
	};
	struct jsonw w;
	writer(e, &w);
	if (render_info(&w, &e->rctx, &f, now, ++e->seq) != 0)
		return;
	emit_global(e, TK_INFO, NULL, w.buf, w.len, &e->retained.info);
}

void
emit_queue(struct engine *e, const struct queue_item *items, size_t n_run,
    size_t n, int64_t now)
{
	struct jsonw w;
	writer(e, &w);
	if (render_queue(&w, &e->rctx, items, n_run, n, now, ++e->seq) != 0)
		return;
	emit_global(e, TK_QUEUE, NULL, w.buf, w.len, &e->retained.queue);
}

void
emit_cursor(struct engine *e, const char *id, int64_t finished_at, int64_t now)
{
	struct jsonw w;
	writer(e, &w);
	if (render_cursor(&w, &e->rctx, id, finished_at, now, ++e->seq) != 0)
		return;
	emit_global(e, TK_CURSOR, NULL, w.buf, w.len, &e->retained.cursor);
}

static int64_t
preview_gap_ms(const struct engine *e)
{
	double rate = e->cfg.preview_rate > 0 ? e->cfg.preview_rate : 2.0;
	return (int64_t) (1000.0 / rate);
}

/* Publishes a preview on the prompt's topic (p: when known) and the
 * retained one. */
static void
send_preview(struct engine *e, struct prompt *p, const char *mime,
    const uint8_t *img, size_t len)
{
	struct pub_req r
	    = { .payload = img, .len = len, .content_type = mime };
	if (p) {
		pub_topic(e->topic, sizeof(e->topic), e->prefix, e->instance,
		    TK_PROMPT_PREVIEW, p->tid, NULL);
		r.kind = TK_PROMPT_PREVIEW;
		r.topic = e->topic;
		r.prompt_id = p->id;
		emit_msg(e, &r);
	}
	pub_topic(e->topic, sizeof(e->topic), e->prefix, e->instance,
	    TK_PREVIEW, NULL, NULL);
	r.kind = TK_PREVIEW;
	r.topic = e->topic;
	r.prompt_id = p ? p->id : NULL;
	emit_msg(e, &r);
}

/* The rate limit keeps the latest: a preview inside the window waits,
 * replaced by any newer one, and goes out when the window opens, so a
 * burst (a sampler's last steps) ends with its last preview retained. */
void
emit_preview(struct engine *e, struct prompt *p, const char *mime,
    const uint8_t *img, size_t len, int64_t now)
{
	if (len > e->cfg.preview_max_bytes || len > e->rctx.max_payload * 4) {
		e->health.rejected[RJ_TOO_LARGE]++;
		return;
	}
	if (!p) {
		send_preview(e, NULL, mime, img, len);
		return;
	}
	int64_t gap = preview_gap_ms(e);
	if (p->last_preview_at && now - p->last_preview_at < gap) {
		buf_set(&p->preview_held, (const char *) img, len);
		p->preview_mime = mime;
		engine_schedule(e, p->last_preview_at + gap);
		return;
	}
	buf_free(&p->preview_held);
	p->last_preview_at = now;
	send_preview(e, p, mime, img, len);
}

int64_t
emit_preview_tick(struct engine *e, struct prompt *p, int64_t now)
{
	if (p->preview_held.len == 0)
		return 0;
	int64_t due = p->last_preview_at + preview_gap_ms(e);
	if (now < due)
		return due;
	p->last_preview_at = now;
	send_preview(e, p, p->preview_mime,
	    (const uint8_t *) p->preview_held.p, p->preview_held.len);
	buf_free(&p->preview_held);
	return 0;
}
