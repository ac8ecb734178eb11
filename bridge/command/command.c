/* See command.h. A command either fails at once (answered from here) or
 * takes one of COMMAND_MAX_PENDING slots until ComfyUI answers; repeats of
 * a command in a slot wait there and are answered with it. */
#include "cmd_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "dedup.h"
#include "err.h"
#include "hash.h"
#include "json.h"
#include "log.h"
#include "ratelog.h"
#include "utf8.h"
#include "verbs.h"

const char *const cmd_error_names[CE_COUNT] = {
	[CE_BAD_JSON] = "bad_json",
	[CE_TOO_LARGE] = "too_large",
	[CE_BAD_FIELD] = "bad_field",
	[CE_UNKNOWN_VERB] = "unknown_verb",
	[CE_BAD_RESPONSE_TOPIC] = "bad_response_topic",
	[CE_COMFYUI_DOWN] = "comfyui_down",
	[CE_COMFYUI_ERROR] = "comfyui_error",
	[CE_BROKER_RECONNECTING] = "broker_reconnecting",
	[CE_BUSY] = "busy",
	[CE_RETAINED] = "retained",
	[CE_COMFYUI_REJECTED] = "comfyui_rejected",
	[CE_STALE] = "stale",
	[CE_BRIDGE_STOPPING] = "bridge_stopping",
};

const char *
command_error_name(int e)
{
	return e >= 0 && e < CE_COUNT ? cmd_error_names[e] : "unknown";
}

static char *
dup_str(const char *s)
{
	size_t n = strlen(s) + 1;
	char *d = malloc(n);
	return d ? memcpy(d, s, n) : NULL;
}

int
command_create(const struct command_cfg *cfg, const struct command_io *io,
    struct command **out)
{
	*out = NULL;
	struct command *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return BR_ENOMEM;
	c->io = *io;
	c->max_bytes = cfg->max_bytes;
	c->prefix = dup_str(cfg->prefix);
	c->instance = dup_str(cfg->instance);
	c->client_id = dup_str(cfg->client_id);
	c->comfyui_public = dup_str(cfg->comfyui_public);
	c->ha_prefix = cfg->ha_prefix ? dup_str(cfg->ha_prefix) : NULL;
	size_t n = strlen(cfg->prefix) + strlen(cfg->instance) + 16;
	c->cmd_prefix = malloc(n);
	c->parser = json_parser_create_growing(256, PARSER_TOKENS_MAX);
	c->dedup = dedup_create(DEDUP_ENTRIES, DEDUP_BYTES, COMMAND_DEDUP_MS);
	for (int i = 0; i < CE_COUNT; i++)
		c->log[i] = (struct ratelog) RATELOG_INIT(5);
	if (!c->prefix || !c->instance || !c->client_id || !c->comfyui_public
	    || (cfg->ha_prefix && !c->ha_prefix) || !c->cmd_prefix
	    || !c->parser || !c->dedup) {
		command_destroy(c);
		return BR_ENOMEM;
	}
	snprintf(
	    c->cmd_prefix, n, "%s/%s/command/", cfg->prefix, cfg->instance);
	c->cmd_prefix_len = strlen(c->cmd_prefix);
	*out = c;
	return 0;
}

static void
route_free(struct route *r)
{
	free(r->topic);
	free(r->prop);
	free(r->corr_json);
	memset(r, 0, sizeof(*r));
}

/* Copies r's borrowed strings into dst. */
static int
route_keep(struct route *dst, const struct route *r)
{
	memset(dst, 0, sizeof(*dst));
	dst->topic = r->topic ? dup_str(r->topic) : NULL;
	dst->corr_json = dup_str(r->corr_json);
	if (r->prop != NULL && (dst->prop = malloc(r->prop_len + 1)) != NULL)
		memcpy(dst->prop, r->prop, r->prop_len);
	dst->prop_len = r->prop_len;
	if ((r->topic && !dst->topic) || !dst->corr_json
	    || (r->prop && !dst->prop)) {
		route_free(dst);
		return BR_ENOMEM;
	}
	return 0;
}

void
cmd_slot_free(struct slot *s)
{
	route_free(&s->first);
	for (int i = 0; i < s->n_waiters; i++)
		route_free(&s->waiters[i]);
	memset(s, 0, sizeof(*s));
}

void
command_destroy(struct command *c)
{
	if (c == NULL)
		return;
	for (int i = 0; i < COMMAND_MAX_PENDING; i++)
		cmd_slot_free(&c->slot[i]);
	free(c->prefix);
	free(c->instance);
	free(c->client_id);
	free(c->comfyui_public);
	free(c->ha_prefix);
	free(c->cmd_prefix);
	json_parser_destroy(c->parser);
	dedup_destroy(c->dedup);
	buf_free(&c->body);
	buf_free(&c->out);
	buf_free(&c->frag);
	free(c);
}

/* true when topic[0..len) is tree or lies under "<tree>/". */
static bool
in_tree(const char *topic, size_t len, const char *tree)
{
	size_t n = tree ? strlen(tree) : 0;
	return n > 0 && len >= n && memcmp(topic, tree, n) == 0
	    && (len == n || topic[n] == '/');
}

const char *
command_topic_problem(
    const char *topic, size_t len, const char *prefix, const char *ha_prefix)
{
	if (len == 0)
		return "is empty";
	if (len > COMMAND_TOPIC_MAX)
		return "is longer than 1024 bytes";
	if (memchr(topic, '\0', len) != NULL || !utf8_mqtt_ok(topic))
		return "is not a valid MQTT string (invalid UTF-8 or a "
		       "control character)";
	if (memchr(topic, '+', len) || memchr(topic, '#', len))
		return "holds a wildcard (+ or #)";
	if (topic[0] == '$')
		return "starts with $ (the broker's own topics)";
	/* every instance's topics, not only ours: an answer there could
	 * loop or overwrite another instance's state */
	if (in_tree(topic, len, prefix))
		return "is inside the bridge's topics (an answer there could "
		       "loop or land in another instance's topics)";
	if (in_tree(topic, len, ha_prefix))
		return "is inside the Home Assistant discovery prefix (an "
		       "answer there would be read as a discovery config)";
	return NULL;
}

/* Writes the answer into c->out: the header, the result members
 * (members[0..len): the inside of an object, may be empty), the duplicate
 * flag. */
static int
compose(struct command *c, const char *verb, const struct route *r, bool ok,
    const char *members, size_t len, bool duplicate)
{
	size_t cap = strlen(verb) * 6 + strlen(r->corr_json) + 128;
	char *head = malloc(cap);
	if (head == NULL)
		return BR_ENOMEM;
	struct jsonw w;
	jsonw_init(&w, head, cap);
	jsonw_obj_begin(&w);
	jsonw_kint(&w, "v", 1);
	jsonw_kstr(&w, "command", verb);
	jsonw_kbool(&w, "ok", ok);
	jsonw_kraw(&w, "correlation", r->corr_json, strlen(r->corr_json));
	jsonw_obj_end(&w);
	int rc = jsonw_finish(&w);
	buf_reset(&c->out);
	if (rc == 0)
		rc = buf_append(&c->out, head, w.len - 1); /* without '}' */
	if (rc == 0 && len > 0 && (rc = buf_puts(&c->out, ",")) == 0)
		rc = buf_append(&c->out, members, len);
	if (rc == 0 && duplicate)
		rc = buf_puts(&c->out, ",\"duplicate\":true");
	if (rc == 0)
		rc = buf_puts(&c->out, "}");
	free(head);
	return rc;
}

void
cmd_send_answer(struct command *c, const char *verb, const struct route *r,
    bool ok, const char *members, size_t len, bool duplicate)
{
	if (compose(c, verb, r, ok, members, len, duplicate) != 0) {
		log_error(
		    "command", "%s: answer not sent (out of memory)", verb);
		return;
	}
	c->io.answer(
	    c->io.ud, r->topic, c->out.p, c->out.len, r->prop, r->prop_len);
}

/* The members of a failure of the bridge's own into c->frag. */
int
cmd_own_error(struct command *c, enum command_error e, const char *message,
    const char *details, size_t details_len)
{
	size_t cap = strlen(message) * 6 + details_len * 6 + 256;
	buf_reset(&c->frag);
	if (buf_reserve(&c->frag, cap) != 0)
		return BR_ENOMEM;
	struct jsonw w;
	jsonw_init(&w, c->frag.p, cap);
	jsonw_obj_begin(&w);
	jsonw_key(&w, "error");
	jsonw_obj_begin(&w);
	jsonw_kstr(&w, "type", cmd_error_names[e]);
	jsonw_kstr(&w, "message", message);
	if (details != NULL) {
		jsonw_key(&w, "details");
		jsonw_strn(&w, details, details_len);
	}
	jsonw_obj_end(&w);
	jsonw_key(&w, "node_errors");
	jsonw_obj_begin(&w);
	jsonw_obj_end(&w);
	jsonw_obj_end(&w);
	c->frag.len = w.len;
	return jsonw_finish(&w);
}

void
cmd_count_failure(struct command *c, const char *verb, enum command_error e,
    const char *message)
{
	c->stats.failed[e]++;
	ratelog_msg(&c->log[e], LOG_LVL_INFO, "command", "%s failed: %s", verb,
	    cmd_error_names[e]);
	log_debug("command", "%s: %s: %s", verb, cmd_error_names[e], message);
}

/* Answers r at once with a failure of the bridge's own. */
static void
fail(struct command *c, const char *verb, const struct route *r,
    enum command_error e, const char *message)
{
	cmd_count_failure(c, verb, e, message);
	if (cmd_own_error(c, e, message, NULL, 0) == 0)
		cmd_send_answer(
		    c, verb, r, false, c->frag.p + 1, c->frag.len - 2, false);
}

void
command_get_stats(const struct command *c, struct command_stats *s)
{
	*s = c->stats;
}

unsigned
command_pending(const struct command *c)
{
	unsigned n = 0;
	for (int i = 0; i < COMMAND_MAX_PENDING; i++)
		n += c->slot[i].used;
	return n;
}

void
command_write_health(const struct command *c, struct jsonw *w)
{
	jsonw_key(w, "commands");
	jsonw_obj_begin(w);
	jsonw_kint(w, "received", (int64_t) c->stats.received);
	jsonw_kint(w, "ok", (int64_t) c->stats.ok);
	jsonw_kint(w, "duplicates", (int64_t) c->stats.duplicates);
	jsonw_kint(w, "pending", (int64_t) command_pending(c));
	jsonw_key(w, "failed");
	jsonw_obj_begin(w);
	for (int i = 0; i < CE_COUNT; i++)
		jsonw_kint(
		    w, cmd_error_names[i], (int64_t) c->stats.failed[i]);
	jsonw_obj_end(w);
	jsonw_obj_end(w);
}

/* The answer's "correlation" from the Correlation Data: a JSON string
 * when it is valid UTF-8 without control characters, else null. */
static void
corr_from_prop(struct req *q, const void *data, size_t len)
{
	strcpy(q->corr_buf, "null");
	if (data == NULL || len > COMMAND_CORRELATION_MAX
	    || !utf8_valid(data, len))
		return;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = ((const unsigned char *) data)[i];
		if (ch < 0x20 || ch == 0x7f)
			return;
	}
	struct jsonw w;
	jsonw_init(&w, q->corr_buf, sizeof(q->corr_buf));
	jsonw_strn(&w, data, len);
	if (jsonw_finish(&w) != 0)
		strcpy(q->corr_buf, "null");
}

/* The payload's response_topic and correlation: route fields. Returns
 * CE_COUNT when fine, else the error (why says what). */
static enum command_error
route_fields(struct command *c, struct req *q, const struct json_doc *d,
    bool prop_topic, const char **why)
{
	int t = json_obj_get(d, 0, "response_topic");
	if (t >= 0 && !json_is_string(d, t))
		return *why = "field \"response_topic\" must be a string",
		       CE_BAD_FIELD;
	if (t >= 0 && !prop_topic) {
		int n = json_str_get(d, t, q->topic_buf, sizeof(q->topic_buf));
		if (n == BR_ETRUNC)
			return *why
			       = "response topic is longer than 1024 bytes",
			       CE_BAD_RESPONSE_TOPIC;
		const char *p = n < 0 ? "holds a NUL"
		                      : command_topic_problem(q->topic_buf,
		                          (size_t) n, c->prefix, c->ha_prefix);
		if (p != NULL) {
			snprintf(q->topic_buf, sizeof(q->topic_buf),
			    "response topic %s", p);
			return *why = q->topic_buf, CE_BAD_RESPONSE_TOPIC;
		}
		q->route.topic = q->topic_buf;
	}
	int k = json_obj_get(d, 0, "correlation");
	if (k < 0)
		return CE_COUNT;
	size_t n;
	const char *raw = json_raw(d, k, &n);
	if (!json_is_string(d, k))
		return *why = "field \"correlation\" must be a string",
		       CE_BAD_FIELD;
	if (n > COMMAND_CORRELATION_MAX)
		return *why = "field \"correlation\" is longer than 256 bytes",
		       CE_BAD_FIELD;
	const char *val = json_raw_value(d, k, &n);
	memcpy(q->corr_buf, val, n);
	q->corr_buf[n] = '\0';
	if (q->key_corr == NULL) {
		q->key_corr = raw;
		q->key_corr_len = n - 2;
	}
	return CE_COUNT;
}

static uint64_t
key_of(const struct req *q, const struct command_msg *m)
{
	static const char sep = '\0';
	uint64_t h = HASH64_INIT;
	if (q->key_corr != NULL) {
		/* the answer route too: two clients using the same
		 * correlation on their own topics are two commands (a response
		 * topic is never empty, so "" is the default route) */
		const char *rt = q->route.topic ? q->route.topic : "";
		h = hash64(h, "c", 1);
		h = hash64(h, q->verb, strlen(q->verb) + 1);
		h = hash64(h, rt, strlen(rt) + 1);
		return hash64(h, q->key_corr, q->key_corr_len);
	}
	h = hash64(h, "u", 1);
	h = hash64(h, m->topic, strlen(m->topic) + 1);
	h = hash64(h, m->payload, m->len);
	h = hash64(h, &sep, 1);
	const char *rt = m->response_topic ? m->response_topic : "";
	return hash64(h, rt, strlen(rt));
}

/* A repeat of a command still waiting for ComfyUI: answered with it.
 * Returns true when m was one. */
static bool
join_pending(struct command *c, struct req *q, uint64_t key, bool correlated,
    const struct command_msg *m)
{
	for (int i = 0; i < COMMAND_MAX_PENDING; i++) {
		struct slot *s = &c->slot[i];
		if (!s->used || s->key != key || s->correlated != correlated)
			continue;
		if (!correlated
		    && (!m->resent || m->connection <= s->connection))
			continue;
		if (s->n_waiters == MAX_WAITERS) {
			fail(c, q->verb, &q->route, CE_BUSY,
			    "too many repeats of one command wait for "
			    "ComfyUI");
			return true;
		}
		if (route_keep(&s->waiters[s->n_waiters], &q->route) != 0)
			return true;
		s->n_waiters++;
		c->stats.duplicates++;
		return true;
	}
	return false;
}

/* A free slot, or -1. */
static int
free_slot(const struct command *c)
{
	for (int i = 0; i < COMMAND_MAX_PENDING; i++)
		if (!c->slot[i].used)
			return i;
	return -1;
}

/* Posts the checked command; answered by command_on_http. Returns
 * CE_COUNT, or why it could not be posted (why set). */
static enum command_error
submit(struct command *c, struct req *q, const struct verb_def *v,
    const struct json_doc *d, uint64_t key, const struct command_msg *m,
    char *why, size_t cap)
{
	int n = free_slot(c);
	if (n < 0)
		return snprintf(why, cap,
		           "%d commands already wait for "
		           "ComfyUI; try again later",
		           COMMAND_MAX_PENDING),
		       CE_BUSY;
	struct slot *s = &c->slot[n];
	if (verb_body(v, d, c->client_id, &c->body) != 0
	    || route_keep(&s->first, &q->route) != 0)
		return snprintf(why, cap, "out of memory for the command"),
		       CE_BUSY;
	s->used = true;
	memcpy(s->verb, q->verb, sizeof(s->verb));
	s->key = key;
	s->correlated = q->key_corr != NULL;
	s->connection = m->connection;
	int rc = c->io.post(
	    c->io.ud, (unsigned) n, verb_path(v), c->body.p, c->body.len);
	if (rc == 0)
		return CE_COUNT;
	cmd_slot_free(s);
	snprintf(why, cap, "cannot send to ComfyUI at %s (%s)",
	    c->comfyui_public, br_strerror(rc));
	return CE_COMFYUI_DOWN;
}

/* The payload of m, parsed into d and checked: CE_COUNT, or why not
 * (why set or pointing at a static text). */
static enum command_error
check(struct command *c, struct req *q, const struct command_msg *m,
    const char *verb, size_t verb_len, struct json_doc *d,
    const struct verb_def **v, char *why, size_t cap)
{
	if (m->len > c->max_bytes)
		return snprintf(why, cap,
		           "payload of %zu bytes is over --command-max-bytes "
		           "(%zu)",
		           m->len, c->max_bytes),
		       CE_TOO_LARGE;
	int rc = json_parse(c->parser, m->payload, m->len, true, d);
	if (rc != 0)
		return snprintf(why, cap, "payload is not a JSON object: %s",
		           br_strerror(rc)),
		       CE_BAD_JSON;
	const char *w = NULL;
	enum command_error e
	    = route_fields(c, q, d, m->response_topic != NULL, &w);
	if (e != CE_COUNT)
		return snprintf(why, cap, "%s", w), e;
	if (q->problem[0] != '\0')
		return snprintf(why, cap, "%s", q->problem),
		       CE_BAD_RESPONSE_TOPIC;
	if (m->retained)
		return snprintf(why, cap,
		           "a retained command is not run (the broker would "
		           "deliver it again at every reconnect): publish "
		           "commands without the retain flag, and remove this "
		           "one with an empty retained message on %s",
		           m->topic),
		       CE_RETAINED;
	if ((*v = verb_find(verb, verb_len)) == NULL)
		return snprintf(why, cap,
		           "unknown verb \"%s\"; the verbs are prompt, "
		           "interrupt, cancel, clear, free",
		           q->verb),
		       CE_UNKNOWN_VERB;
	return verb_check(*v, d, why, cap) ? CE_COUNT : CE_BAD_FIELD;
}

/* Checks m and answers it, posts it or joins it to its first copy. */
static void
handle(struct command *c, struct req *q, const struct command_msg *m,
    const char *verb, size_t verb_len, int64_t now_ms)
{
	char why[COMMAND_TOPIC_MAX + 256];
	struct json_doc d;
	const struct verb_def *v = NULL;
	enum command_error e
	    = check(c, q, m, verb, verb_len, &d, &v, why, sizeof(why));
	if (e == CE_COUNT && !c->stopping) {
		bool correlated = q->key_corr != NULL;
		uint64_t key = key_of(q, m);
		struct dedup_hit hit;
		if (dedup_find(c->dedup, key, correlated, m->resent,
		        m->connection, now_ms, &hit)) {
			c->stats.duplicates++;
			cmd_send_answer(c, q->verb, &q->route, hit.ok,
			    hit.result, hit.len, true);
			return;
		}
		if (join_pending(c, q, key, correlated, m))
			return;
		if (m->resent) {
			snprintf(why, sizeof(why),
			    "sent while the bridge was offline (the broker "
			    "kept "
			    "it); not run: send it again if still wanted");
			e = CE_STALE;
		} else if (!m->connected) {
			snprintf(why, sizeof(why),
			    "the broker link is reconnecting; the command did "
			    "not run, send it again");
			e = CE_BROKER_RECONNECTING;
		} else
			e = submit(c, q, v, &d, key, m, why, sizeof(why));
	}
	if (c->stopping) {
		snprintf(why, sizeof(why), "%s", CMD_STOPPING_TEXT);
		e = CE_BRIDGE_STOPPING;
	}
	if (e != CE_COUNT)
		fail(c, q->verb, &q->route, e, why);
}

void
command_on_message(
    struct command *c, const struct command_msg *m, int64_t now_ms)
{
	size_t tl = strlen(m->topic);
	if (tl < c->cmd_prefix_len
	    || memcmp(m->topic, c->cmd_prefix, c->cmd_prefix_len) != 0)
		return;
	const char *verb = m->topic + c->cmd_prefix_len;
	size_t verb_len = tl - c->cmd_prefix_len;
	if (strcmp(verb, "response") == 0)
		return; /* our own answers */
	c->stats.received++;
	struct req q;
	memset(&q, 0, sizeof(q));
	size_t vn = utf8_cut(verb, verb_len, sizeof(q.verb) - 1);
	memcpy(q.verb, verb, vn);
	q.verb[vn] = '\0';
	q.route.corr_json = q.corr_buf;
	corr_from_prop(&q, m->correlation, m->correlation_len);
	q.key_corr = m->correlation;
	q.key_corr_len = m->correlation_len;
	if (m->correlation != NULL) {
		q.route.prop = (void *) m->correlation;
		q.route.prop_len = m->correlation_len;
	}
	if (m->response_topic != NULL) {
		const char *p = command_topic_problem(m->response_topic,
		    strlen(m->response_topic), c->prefix, c->ha_prefix);
		if (p != NULL) {
			/* refused once the payload's correlation is known; the
			 * property goes with the topic it belongs to */
			snprintf(q.problem, sizeof(q.problem),
			    "response topic %s", p);
			q.route.prop = NULL;
			q.route.prop_len = 0;
		} else
			q.route.topic = (char *) m->response_topic;
	}
	handle(c, &q, m, verb, verb_len, now_ms);
	cmd_trim(c);
}
