/* ComfyUI's answer to a command's POST (bridge/README.md#comfyui-post-api):
 * the answer's members, kept for repeats when definitive (a 2xx or a 4xx).
 * See command.h. */
#include <stdio.h>
#include <string.h>

#include "cmd_int.h"
#include "err.h"
#include "utf8.h"

/* A JSON value of ComfyUI's body copied into w (compact, valid). */
static void
emit_value(const struct json_doc *d, int i, struct jsonw *w)
{
	bool cut = false;
	json_emit(d, i, w, 0, &cut);
}

/* "node_errors": ComfyUI's value at ne (object or array), else {}. */
static void
node_errors_member(const struct json_doc *d, int ne, struct jsonw *w)
{
	jsonw_key(w, "node_errors");
	if (ne >= 0 && (json_is_object(d, ne) || json_is_array(d, ne)))
		emit_value(d, ne, w);
	else {
		jsonw_obj_begin(w);
		jsonw_obj_end(w);
	}
}

/* ComfyUI's 4xx: its error object (a plain string is wrapped) and its
 * node_errors, unchanged. */
static void
rejected_members(struct command *c, int status, const char *body, size_t len,
    struct jsonw *w)
{
	struct json_doc d;
	bool json = json_parse(c->parser, body, len, true, &d) == 0;
	int e = json ? json_obj_get(&d, 0, "error") : -1;
	int ne = json ? json_obj_get(&d, 0, "node_errors") : -1;
	jsonw_key(w, "error");
	if (e >= 0 && json_is_object(&d, e))
		emit_value(&d, e, w);
	else {
		char msg[64];
		snprintf(msg, sizeof(msg), "ComfyUI answered HTTP %d", status);
		jsonw_obj_begin(w);
		jsonw_kstr(w, "type", "comfyui");
		if (e >= 0 && json_is_string(&d, e)) {
			size_t n;
			const char *s = json_raw(&d, e, &n);
			jsonw_key(w, "message");
			jsonw_str_raw(w, s, n);
		} else {
			jsonw_kstr(w, "message", msg);
			bool cut = false;
			jsonw_key(w, "details");
			jsonw_strn_max(w, body, len, DETAILS_MAX, &cut);
		}
		jsonw_obj_end(w);
	}
	node_errors_member(&d, ne, w);
}

/* ComfyUI's 2xx to /prompt: its prompt id, number and node_errors.
 * Returns false when the body is not that. */
static bool
accepted_members(
    struct command *c, const char *body, size_t len, struct jsonw *w)
{
	struct json_doc d;
	if (json_parse(c->parser, body, len, true, &d) != 0)
		return false;
	int id = json_obj_get(&d, 0, "prompt_id");
	int num = json_obj_get(&d, 0, "number");
	int ne = json_obj_get(&d, 0, "node_errors");
	if (id < 0 || !json_is_string(&d, id))
		return false;
	int n = json_str_get(&d, id, c->accepted_id, sizeof(c->accepted_id));
	if (n > 0 && num >= 0
	    && json_get_int64(&d, num, &c->accepted_number) == 0)
		c->accepted_len = (size_t) n;
	jsonw_key(w, "prompt_id");
	emit_value(&d, id, w);
	jsonw_key(w, "number");
	if (num >= 0 && json_is_number(&d, num))
		emit_value(&d, num, w);
	else
		jsonw_null(w);
	node_errors_member(&d, ne, w);
	return true;
}

/* The failure when no usable answer came: comfyui_down or
 * comfyui_error, into c->frag. */
static enum command_error
unusable(struct command *c, int status, const char *body, size_t len)
{
	char msg[700];
	if (status == BR_EFULL)
		snprintf(msg, sizeof(msg),
		    "ComfyUI at %s answered more than "
		    "the bridge reads",
		    c->comfyui_public);
	else if (status == BR_ESTATE)
		/* the body may have gone out: running it again could run it
		 * twice */
		snprintf(msg, sizeof(msg),
		    "ComfyUI did not answer within %d s; the command may "
		    "have run: check %s/%s/queue before sending it again",
		    COMMAND_POST_TIMEOUT_MS / 1000, c->prefix, c->instance);
	else if (status < 0)
		snprintf(msg, sizeof(msg),
		    "ComfyUI at %s did not answer (connect failed or "
		    "connection lost)",
		    c->comfyui_public);
	else if (status >= 200 && status < 300)
		snprintf(msg, sizeof(msg),
		    "ComfyUI answered HTTP %d with a body that is not the "
		    "expected JSON",
		    status);
	else
		snprintf(msg, sizeof(msg), "ComfyUI answered HTTP %d", status);
	enum command_error e = status < 0 && status != BR_EFULL
	    ? CE_COMFYUI_DOWN
	    : CE_COMFYUI_ERROR;
	size_t dl = body != NULL && status > 0 ? utf8_cut(body, len, len) : 0;
	if (cmd_own_error(c, e, msg, dl ? body : NULL,
	        dl > DETAILS_MAX ? utf8_cut(body, dl, DETAILS_MAX) : dl)
	    != 0)
		c->frag.len = 0;
	return e;
}

/* The members of the answer to status into c->frag (the inside of an
 * object); *e: CE_COUNT for success, else the failure. Returns true when
 * the result is definitive (kept for repeats). */
static bool
result_of(struct command *c, const struct slot *s, int status,
    const char *body, size_t len, enum command_error *e)
{
	bool ok2xx = status >= 200 && status < 300;
	bool rejected = status >= 400 && status < 500;
	*e = CE_COUNT;
	c->accepted_len = 0;
	if (ok2xx || rejected) {
		size_t cap = len * 2 + 512;
		buf_reset(&c->frag);
		if (buf_reserve(&c->frag, cap) != 0) {
			c->frag.len = 0;
			return false;
		}
		struct jsonw w;
		jsonw_init(&w, c->frag.p, cap);
		jsonw_obj_begin(&w);
		bool fine = true;
		if (rejected)
			rejected_members(c, status, body, len, &w);
		else if (strcmp(s->verb, "prompt") == 0)
			fine = accepted_members(c, body, len, &w);
		jsonw_obj_end(&w);
		c->frag.len = w.len;
		if (fine && jsonw_finish(&w) == 0) {
			*e = rejected ? CE_COMFYUI_REJECTED : CE_COUNT;
			return true;
		}
	}
	*e = unusable(c, status, body, len);
	return false;
}

void
command_on_http(struct command *c, unsigned slot, int status, const char *body,
    size_t len, int64_t now_ms)
{
	if (slot >= COMMAND_MAX_PENDING || !c->slot[slot].used)
		return;
	struct slot *s = &c->slot[slot];
	enum command_error e;
	bool definitive = result_of(c, s, status, body, len, &e);
	bool ok = e == CE_COUNT;
	if (ok)
		c->stats.ok++;
	else
		cmd_count_failure(c, s->verb, e, "see the answer");
	/* the inside of the object: without its braces */
	const char *members = c->frag.len >= 2 ? c->frag.p + 1 : "";
	size_t mlen = c->frag.len >= 2 ? c->frag.len - 2 : 0;
	if (definitive)
		dedup_put(c->dedup, s->key, s->correlated, s->connection,
		    now_ms, ok, members, mlen);
	/* the prompt's queued event then carries its number and our client
	 * id, and comes before the answer */
	if (ok && c->accepted_len > 0 && c->io.accepted != NULL)
		c->io.accepted(c->io.ud, c->accepted_id, c->accepted_len,
		    c->accepted_number);
	cmd_send_answer(c, s->verb, &s->first, ok, members, mlen, false);
	for (int i = 0; i < s->n_waiters; i++)
		cmd_send_answer(
		    c, s->verb, &s->waiters[i], ok, members, mlen, true);
	cmd_slot_free(s);
	cmd_trim(c);
}

void
command_stop(struct command *c)
{
	c->stopping = true;
	if (cmd_own_error(c, CE_BRIDGE_STOPPING, CMD_STOPPING_TEXT, NULL, 0)
	    != 0)
		c->frag.len = 0;
	const char *members = c->frag.len >= 2 ? c->frag.p + 1 : "";
	size_t mlen = c->frag.len >= 2 ? c->frag.len - 2 : 0;
	for (int i = 0; i < COMMAND_MAX_PENDING; i++) {
		struct slot *s = &c->slot[i];
		if (!s->used)
			continue;
		cmd_count_failure(
		    c, s->verb, CE_BRIDGE_STOPPING, CMD_STOPPING_TEXT);
		cmd_send_answer(
		    c, s->verb, &s->first, false, members, mlen, false);
		for (int w = 0; w < s->n_waiters; w++)
			cmd_send_answer(c, s->verb, &s->waiters[w], false,
			    members, mlen, true);
		cmd_slot_free(s);
	}
	cmd_trim(c);
}

void
cmd_trim(struct command *c)
{
	buf_trim(&c->body, KEEP_BYTES);
	buf_trim(&c->out, KEEP_BYTES);
	buf_trim(&c->frag, KEEP_BYTES);
	json_parser_trim_over(c->parser, KEEP_BYTES);
}
