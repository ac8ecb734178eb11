#include "event.h"

#include <math.h>
#include <string.h>

#include "err.h"

static const struct {
	const char *name;
	enum event_kind kind;
} kinds[] = {
	{ "status", EVK_STATUS },
	{ "execution_start", EVK_EXECUTION_START },
	{ "execution_cached", EVK_EXECUTION_CACHED },
	{ "executing", EVK_EXECUTING },
	{ "progress", EVK_PROGRESS },
	{ "progress_state", EVK_PROGRESS_STATE },
	{ "executed", EVK_EXECUTED },
	{ "execution_success", EVK_EXECUTION_SUCCESS },
	{ "execution_error", EVK_EXECUTION_ERROR },
	{ "execution_interrupted", EVK_EXECUTION_INTERRUPTED },
	{ "feature_flags", EVK_FEATURE_FLAGS },
	{ "logs", EVK_LOGS },
};

static enum event_kind
kind_of(const char *type)
{
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if (strcmp(kinds[i].name, type) == 0)
			return kinds[i].kind;
	return EVK_OTHER;
}

/* Copies an optional string member. Returns 0 when absent, 1 when copied,
 * BR_ETYPE when present with another type (null allowed if
 * null_ok), too long, or holding a NUL. */
static int
get_id(const struct json_doc *d, int obj, const char *key, char *dst,
    size_t cap, size_t *len, bool null_ok, bool *is_null)
{
	int t = json_obj_get(d, obj, key);
	if (t < 0)
		return 0;
	if (json_is_null(d, t)) {
		if (is_null)
			*is_null = true;
		return null_ok ? 0 : BR_ETYPE;
	}
	int n = json_str_get(d, t, dst, cap);
	if (n < 0)
		return BR_ETYPE;
	*len = (size_t) n;
	return 1;
}

static double
number_or_nan(const struct json_doc *d, int t, bool *ok)
{
	double v;
	if (t < 0) {
		*ok = false;
		return NAN;
	}
	if (json_is_nonfinite(d, t))
		return NAN;
	if (json_get_double(d, t, &v) != 0) {
		*ok = false;
		return NAN;
	}
	return v;
}

static bool
str_has_prefix(const struct json_doc *d, int t, const char *prefix)
{
	size_t n;
	const char *raw = json_raw(d, t, &n);
	size_t pl = strlen(prefix);
	return json_is_string(d, t) && n >= pl && memcmp(raw, prefix, pl) == 0;
}

/* The members every kind may carry: prompt_id, the node (named node_id in
 * failures; only the kinds about a node have one) and timestamp. */
static int
parse_common(const struct json_doc *d, struct comfy_event *ev)
{
	int data = ev->data;
	int rc = get_id(d, data, "prompt_id", ev->prompt_id,
	    sizeof(ev->prompt_id), &ev->prompt_len, true, NULL);
	if (rc == BR_ETYPE)
		return BR_ETYPE;
	ev->has_prompt = rc == 1;

	const char *node_key = "node";
	if (ev->kind == EVK_EXECUTION_ERROR
	    || ev->kind == EVK_EXECUTION_INTERRUPTED)
		node_key = "node_id";
	if (ev->kind != EVK_OTHER && ev->kind != EVK_STATUS
	    && ev->kind != EVK_FEATURE_FLAGS && ev->kind != EVK_LOGS) {
		rc = get_id(d, data, node_key, ev->node, sizeof(ev->node),
		    &ev->node_len, true, &ev->node_null);
		if (rc == BR_ETYPE)
			return BR_ETYPE;
		ev->has_node = rc == 1;
	}

	int ts = json_obj_get(d, data, "timestamp");
	if (ts >= 0 && json_get_int64(d, ts, &ev->timestamp) == 0)
		ev->has_timestamp = true;
	return BR_OK;
}

/* status: data.status.exec_info.queue_remaining, a count when present. */
static int
parse_status(const struct json_doc *d, struct comfy_event *ev)
{
	int st = json_obj_get(d, ev->data, "status");
	int ei = st >= 0 ? json_obj_get(d, st, "exec_info") : -1;
	int qr = ei >= 0 ? json_obj_get(d, ei, "queue_remaining") : -1;
	if (st >= 0 && !json_is_object(d, st))
		return BR_ETYPE;
	if (qr >= 0) {
		if (json_get_int64(d, qr, &ev->queue_remaining) != 0
		    || ev->queue_remaining < 0)
			return BR_ETYPE;
		ev->has_queue_remaining = true;
	}
	return BR_OK;
}

static int
parse_progress(const struct json_doc *d, struct comfy_event *ev)
{
	bool ok = true;
	ev->value = number_or_nan(d, json_obj_get(d, ev->data, "value"), &ok);
	ev->max = number_or_nan(d, json_obj_get(d, ev->data, "max"), &ok);
	if (!ok)
		return BR_ETYPE;
	ev->has_progress = true;
	return BR_OK;
}

/* execution_error and execution_interrupted: the members the bridge
 * passes on, and whether an error is a blocked prompt (no timestamp, an
 * ExecutionBlocked exception), which does not end the prompt. */
static void
parse_failure(const struct json_doc *d, struct comfy_event *ev)
{
	int data = ev->data;
	ev->node_type = json_obj_get(d, data, "node_type");
	ev->exception_type = json_obj_get(d, data, "exception_type");
	ev->exception_message = json_obj_get(d, data, "exception_message");
	ev->traceback = json_obj_get(d, data, "traceback");
	if (ev->kind == EVK_EXECUTION_ERROR && !ev->has_timestamp
	    && ((ev->exception_type >= 0
	            && json_str_eq(d, ev->exception_type, "ExecutionBlocked"))
	        || (ev->exception_message >= 0
	            && str_has_prefix(
	                d, ev->exception_message, "Execution Blocked"))))
		ev->blocked = true;
}

static int
parse_data(const struct json_doc *d, struct comfy_event *ev)
{
	int rc = parse_common(d, ev);
	if (rc != BR_OK)
		return rc;
	switch (ev->kind) {
	case EVK_STATUS:
		return parse_status(d, ev);
	case EVK_PROGRESS:
		return parse_progress(d, ev);
	case EVK_EXECUTION_CACHED:
		ev->nodes = json_obj_get(d, ev->data, "nodes");
		if (ev->nodes >= 0 && !json_is_array(d, ev->nodes))
			return BR_ETYPE;
		return BR_OK;
	case EVK_EXECUTED:
		ev->output = json_obj_get(d, ev->data, "output");
		if (ev->output >= 0 && !json_is_object(d, ev->output)
		    && !json_is_null(d, ev->output))
			return BR_ETYPE;
		return BR_OK;
	case EVK_EXECUTION_ERROR:
	case EVK_EXECUTION_INTERRUPTED:
		parse_failure(d, ev);
		return BR_OK;
	default:
		return BR_OK;
	}
}

int
event_parse(const struct json_doc *d, struct comfy_event *ev)
{
	memset(ev, 0, sizeof(*ev));
	ev->data = ev->nodes = ev->output = -1;
	ev->node_type = ev->exception_type = ev->exception_message = -1;
	ev->traceback = -1;
	ev->value = ev->max = NAN;

	int t = json_obj_get(d, 0, "type");
	if (t < 0 || !json_is_string(d, t))
		return BR_ENOTFOUND;
	int n = json_str_get(d, t, ev->type, sizeof(ev->type));
	if (n == BR_ETRUNC)
		return BR_ETYPE;
	if (n <= 0)
		return BR_ENOTFOUND;
	ev->type_len = (size_t) n;
	ev->kind = kind_of(ev->type);

	ev->data = json_obj_get(d, 0, "data");
	if (ev->data < 0)
		return ev->kind == EVK_OTHER ? BR_OK : BR_ETYPE;
	if (!json_is_object(d, ev->data)) {
		/* custom nodes may send any JSON as data; core types never */
		if (ev->kind != EVK_OTHER)
			return BR_ETYPE;
		return BR_OK;
	}
	return parse_data(d, ev);
}

bool
event_is_terminal(const struct comfy_event *ev)
{
	switch (ev->kind) {
	case EVK_EXECUTION_SUCCESS:
	case EVK_EXECUTION_INTERRUPTED:
		return true;
	case EVK_EXECUTION_ERROR:
		return !ev->blocked;
	default:
		return false;
	}
}
