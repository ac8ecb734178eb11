/* Health: input the bridge rejected (counted per reason, the first few of
 * each logged), fault counters logged when they change, and the
 * bridge/health message every health interval. */
#include <string.h>

#include "engine_int.h"
#include "log.h"

#define REJECT_LOG_MAX 5

static const char *const reject_names[RJ_COUNT] = {
	"empty",
	"invalid_json",
	"invalid_utf8",
	"too_deep",
	"too_many_tokens",
	"not_object",
	"missing_type",
	"bad_field",
	"too_large",
	"truncated_binary",
	"unknown_binary_type",
	"bad_image_format",
};

void
health_init(struct health *h)
{
	for (int i = 0; i < RJ_COUNT; i++)
		h->reject_log[i]
		    = (struct ratelog) RATELOG_INIT(REJECT_LOG_MAX);
	for (int i = 0; i < RJ_COUNT; i++)
		h->body_log[i] = (struct ratelog) RATELOG_INIT(1);
	h->unfit_log
	    = (struct ratelog) RATELOG_INIT_EVERY(REJECT_LOG_MAX, 100);
}

void
health_unfit(
    struct engine *e, enum msg_class cls, const char *what, const char *tid)
{
	struct health *h = &e->health;
	h->unfit[cls]++;
	ratelog_msg(&h->unfit_log, LOG_LVL_WARN, "bridge",
	    "%s%s%s does not fit in %zu bytes (the broker's maximum packet); "
	    "dropped (%llu %s messages so far)",
	    what, tid ? " of " : "", tid ? tid : "", e->rctx.max_payload,
	    (unsigned long long) h->unfit[cls], msg_class_name(cls));
}

/* The note on the last occurrence logged at full level. */
static const char *
last_loud(const struct ratelog *r, const char *note)
{
	return r->seen + 1 == r->first_n ? note : "";
}

void
health_reject(
    struct engine *e, enum reject_reason r, const void *buf, size_t len)
{
	struct health *h = &e->health;
	h->rejected[r]++;
	h->counters.rejected_total++;
	char ex[96];
	ratelog_msg(&h->reject_log[r], LOG_LVL_WARN, "ws",
	    "dropped a frame (%s, %zu bytes): %s%s", reject_names[r], len,
	    log_excerpt(ex, sizeof(ex), buf, len),
	    last_loud(&h->reject_log[r], " (further ones are only counted)"));
}

void
health_oversize(struct engine *e, size_t len_so_far, bool binary)
{
	struct health *h = &e->health;
	h->rejected[RJ_TOO_LARGE]++;
	h->counters.rejected_total++;
	ratelog_msg(&h->reject_log[RJ_TOO_LARGE], LOG_LVL_WARN, "ws",
	    "dropped a %s frame over the size cap (%zu bytes so far)",
	    binary ? "binary" : "text", len_so_far);
}

/* A 2xx body that cannot be used: counted as an HTTP failure (health) and
 * logged, at warn the first time for a reason, then at debug. */
enum reject_reason
health_json_reason(int err)
{
	switch (err) {
	case BR_EEMPTY:
		return RJ_EMPTY;
	case BR_EUTF8:
		return RJ_INVALID_UTF8;
	case BR_EDEPTH:
		return RJ_TOO_DEEP;
	case BR_ETOKENS:
		return RJ_TOO_MANY_TOKENS;
	case BR_ETYPE:
		return RJ_NOT_OBJECT;
	default:
		return RJ_INVALID_JSON;
	}
}

void
health_body_unusable(struct engine *e, const char *what, int err, size_t len)
{
	struct health *h = &e->health;
	h->counters.http_failures++;
	enum reject_reason r = health_json_reason(err);
	struct ratelog *rl = &h->body_log[r];
	ratelog_msg(rl, LOG_LVL_WARN, "http",
	    "GET %s: unusable body (%s, %zu bytes)%s", what, reject_names[r],
	    len, last_loud(rl, "; further ones are logged at debug"));
}

/* The health figures that say something went wrong (logged at info when
 * they change; traffic counters change all the time and are only
 * published). */
static struct fault_counts
fault_counts_of(const struct health *hl, const struct engine_health_io *h)
{
	struct fault_counts f;
	memset(&f, 0, sizeof(f));
	f.rejected = hl->counters.rejected_total;
	f.recovered = hl->counters.recovered;
	f.lost = hl->counters.lost;
	f.resyncs = hl->counters.resyncs;
	f.http_failures = hl->counters.http_failures;
	if (h != NULL) {
		for (int i = 0; i < MSG_CLASS_COUNT; i++)
			f.dropped[i] = h->dropped[i];
		f.reconnects_comfyui = h->comfyui_reconnects;
		f.reconnects_mqtt = h->mqtt_reconnects;
	}
	return f;
}

static void
log_faults_on_change(struct health *hl, const struct engine_health_io *h)
{
	struct fault_counts f = fault_counts_of(hl, h);
	if (memcmp(&f, &hl->last_logged, sizeof(f)) == 0)
		return;
	hl->last_logged = f;
	log_info("bridge",
	    "health: %llu frames rejected, dropped %llu critical / %llu "
	    "lifecycle / %llu progress / %llu preview, %llu prompts "
	    "recovered from history, %llu lost, %llu resyncs, %llu HTTP "
	    "failures, reconnects %llu ComfyUI / %llu MQTT",
	    (unsigned long long) f.rejected,
	    (unsigned long long) f.dropped[MSG_CRITICAL],
	    (unsigned long long) f.dropped[MSG_LIFECYCLE],
	    (unsigned long long) f.dropped[MSG_PROGRESS],
	    (unsigned long long) f.dropped[MSG_PREVIEW],
	    (unsigned long long) f.recovered, (unsigned long long) f.lost,
	    (unsigned long long) f.resyncs,
	    (unsigned long long) f.http_failures,
	    (unsigned long long) f.reconnects_comfyui,
	    (unsigned long long) f.reconnects_mqtt);
}

static void
publish_health(struct engine *e, int64_t now, const struct engine_health_io *h)
{
	/* what did not fit the broker's maximum packet is dropped too */
	struct engine_health_io io;
	if (h != NULL) {
		io = *h;
		for (int c = 0; c < MSG_CLASS_COUNT; c++)
			io.dropped[c] += e->health.unfit[c];
		h = &io;
	}
	struct health_facts f = {
		.counters = &e->health.counters,
		.rejected = e->health.rejected,
		.reject_names = reject_names,
		.n_reasons = RJ_COUNT,
		.upstream_up = e->upstream_up,
		.last_frame_at = e->last_frame_at,
		.io = h,
	};
	struct jsonw w;
	jsonw_init(&w, e->obuf, e->rctx.max_payload + 1024);
	if (render_health(&w, &e->rctx, &f, now, ++e->seq) != 0)
		return;
	emit_global(e, TK_HEALTH, NULL, w.buf, w.len, NULL);
	log_faults_on_change(&e->health, h);
}

int64_t
health_tick(struct engine *e, int64_t now, const struct engine_health_io *h)
{
	if (now >= e->health.next_at) {
		publish_health(e, now, h);
		e->health.next_at
		    = now + (int64_t) e->cfg.health_interval_s * 1000;
	}
	return e->health.next_at;
}
