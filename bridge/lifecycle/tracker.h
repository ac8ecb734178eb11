/* The prompt table: every prompt the bridge follows, found by id in O(1),
 * bounded in size (finished prompts are evicted first, oldest first), with
 * the per-prompt facts the state snapshot is built from, as plain data
 * (node ids in arrays, times as wall-clock ms, enums). Pure. */
#ifndef C2M_TRACKER_H
#define C2M_TRACKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "event.h"
#include "topic.h"

/* A node id, with how long the node ran (ms; -1: not timed). */
struct node_entry {
	char id[NODE_ID_MAX + 1];
	int64_t ms;
};

/* A set of node ids in the order they were added. A zeroed struct is an
 * empty list. */
struct node_list {
	struct node_entry *ids;
	unsigned n, cap;
};

bool node_list_has(const struct node_list *l, const char *id);
/* Appends id (with ms, -1: not timed) unless it is there; returns 0 or
 * BR_ENOMEM. */
int node_list_add(struct node_list *l, const char *id, int64_t ms);
void node_list_free(struct node_list *l);

enum prompt_status {
	PS_QUEUED = 0,
	PS_RUNNING,
	PS_SUCCESS,
	PS_ERROR,
	PS_INTERRUPTED,
	PS_LOST,
	PS_CANCELLED,
};

enum prompt_source { SRC_LIVE = 0, SRC_POLL, SRC_HISTORY };

const char *prompt_status_name(enum prompt_status s);
const char *prompt_source_name(enum prompt_source s);

#define PROMPT_RECENT_NODES     8
#define PROMPT_MAX_OUTPUT_NODES 64

struct prompt_node_time {
	uint64_t node_hash;
	int64_t started_at;
};

struct prompt_output {
	char node[NODE_ID_MAX + 1];
	struct buf json; /* the node's output object, with file urls */
};

struct prompt {
	char id[PROMPT_ID_MAX + 1];
	size_t id_len;
	char tid[TOPIC_ID_MAX + 1]; /* sanitized for topics */
	uint64_t hash;

	enum prompt_status status;
	enum prompt_source source; /* of the latest change */
	bool queued_sent, start_sent, terminal_sent;
	bool ours; /* submitted with our client id: live events come */
	bool has_number;
	int64_t number;
	char client_id[PROMPT_ID_MAX + 1];
	bool has_client_id;

	int64_t queued_at, started_at, finished_at; /* 0: unknown */
	bool start_exact; /* started_at is ComfyUI's own timestamp */
	char node[NODE_ID_MAX + 1];
	bool has_node;
	char pnode[NODE_ID_MAX + 1];
	bool has_progress;
	double value, max;

	struct prompt_node_time recent[PROMPT_RECENT_NODES];
	unsigned recent_next;

	struct node_list cached; /* reported cached by ComfyUI */
	struct node_list done; /* finished, with their run time when known */
	struct prompt_output *outputs; /* allocated on the first output */
	unsigned n_outputs, cap_outputs;
	bool outputs_truncated;
	struct buf error; /* the rendered error object, empty when none */
	struct buf state; /* the last published state payload */

	bool state_dirty;
	int64_t state_published_at;
	int64_t expire_at; /* retained state expires (terminal only) */
	int64_t history_due; /* 0: no lookup scheduled */
	unsigned history_tries;
	bool history_inflight;
	/* left the pending queue (never started) while the link stayed up:
	 * no history entry then means it was removed, not lost */
	bool left_pending;
	bool listed_running; /* a /queue answer listed it running */
	bool inherited; /* left queued or running by an earlier run */
	uint64_t queue_generation; /* last /queue poll that listed it */
	/* frames rejected in total when it was first seen: a rejection
	 * after that may have been its terminal event */
	uint64_t rejected_mark;
	int64_t last_preview_at;
	/* the newest preview that came too early: out when the rate window
	 * opens (empty: none) */
	struct buf preview_held;
	const char *preview_mime; /* a static string */

	/* table links */
	int next_in_bucket;
	bool used;
};

struct tracker;

/* Creates a table for capacity prompts: finished ones are kept while
 * there is room among them, live ones grow it up to four times that. */
struct tracker *tracker_create(unsigned capacity);
/* The same with the limit for live prompts (rounded up to whole chunks of
 * capacity, at least capacity) apart from how many finished ones are kept:
 * finished prompts cost memory until they leave, live ones are owed
 * their events. */
struct tracker *tracker_create_max(unsigned capacity, unsigned max_live);
void tracker_destroy(struct tracker *t);

/* The prompt with this raw id, or NULL. */
struct prompt *tracker_find(struct tracker *t, const char *id, size_t len);
/* Finds or creates (zeroed, status queued) the prompt; *created tells which.
 * When full, evicts the finished prompt that finished first, else the
 * oldest queued one. Never returns NULL for a valid id. */
struct prompt *tracker_get(
    struct tracker *t, const char *id, size_t len, bool *created);
/* Called with the prompt about to be evicted to make room (not for
 * tracker_remove), so that what it still owes (a retained state to clear)
 * is kept elsewhere. */
typedef void tracker_evict_fn(void *ud, const struct prompt *p);
void tracker_on_evict(struct tracker *t, tracker_evict_fn *fn, void *ud);
/* Frees the prompt's buffers and its slot. */
void tracker_remove(struct tracker *t, struct prompt *p);

/* Iteration over used slots: start with i = 0, returns NULL at the end. */
struct prompt *tracker_next(struct tracker *t, unsigned *i);
unsigned tracker_count(const struct tracker *t);

/* finished_at - started_at, or -1 when either is unknown. */
int64_t prompt_duration(const struct prompt *p);

/* 64-bit FNV-1a of an id. */
uint64_t tracker_hash(const char *id, size_t len);

#endif
