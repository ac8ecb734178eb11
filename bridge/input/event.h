/* One ComfyUI text frame, parsed: the envelope's type, its data object and
 * the fields the bridge acts on, as borrowed token indexes or small copies.
 * No allocation. The frame must already be validated by json_parse(). */
#ifndef C2M_EVENT_H
#define C2M_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "json.h"

#define EVENT_TYPE_MAX 128
#define PROMPT_ID_MAX  256
#define NODE_ID_MAX    128

enum event_kind {
	EVK_OTHER = 0, /* custom-node or unknown type: passed through */
	EVK_STATUS,
	EVK_EXECUTION_START,
	EVK_EXECUTION_CACHED,
	EVK_EXECUTING,
	EVK_PROGRESS,
	EVK_PROGRESS_STATE,
	EVK_EXECUTED,
	EVK_EXECUTION_SUCCESS,
	EVK_EXECUTION_ERROR,
	EVK_EXECUTION_INTERRUPTED,
	EVK_FEATURE_FLAGS,
	EVK_LOGS,
};

struct comfy_event {
	enum event_kind kind;
	char type[EVENT_TYPE_MAX + 1]; /* unescaped */
	size_t type_len;
	int data; /* token of the data object; -1 when absent */

	bool has_prompt; /* data.prompt_id is a string */
	char prompt_id[PROMPT_ID_MAX + 1];
	size_t prompt_len;

	bool has_node; /* data.node (or node_id for errors) is a string */
	bool node_null; /* data.node is present and null */
	char node[NODE_ID_MAX + 1];
	size_t node_len;

	bool has_timestamp; /* data.timestamp is an integer */
	int64_t timestamp;

	/* progress */
	bool has_progress;
	double value, max; /* NaN when not finite */

	/* status */
	bool has_queue_remaining;
	int64_t queue_remaining;

	/* token indexes into the doc, -1 when absent */
	int nodes; /* execution_cached: data.nodes (array) */
	int output; /* executed: data.output (object or null) */
	int node_type, exception_type, exception_message, traceback;
	bool blocked; /* execution_error of type ExecutionBlocked */
};

/* Fills ev from a validated doc whose root is an object (borrowed; ev
 * keeps token indexes into it). Returns BR_OK,
 * BR_ENOTFOUND (no "type", or not a string, or empty) or BR_ETYPE (a field
 * the bridge uses has the wrong type or an unusable value, e.g. a NUL in an
 * id). */
int event_parse(const struct json_doc *doc, struct comfy_event *ev);

/* true for execution_success, execution_interrupted, and execution_error
 * unless it is an "Execution Blocked" error (which is not terminal). */
bool event_is_terminal(const struct comfy_event *ev);

#endif
