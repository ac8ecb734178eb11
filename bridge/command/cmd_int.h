/* What command.c and result.c share: the command object and its answer
 * helpers. Internal to bridge/command/. */
#ifndef C2M_CMD_INT_H
#define C2M_CMD_INT_H

#include "buf.h"
#include "command.h"
#include "dedup.h"
#include "json.h"
#include "ratelog.h"

#define DEDUP_ENTRIES 1024
#define DEDUP_BYTES   (8u << 20)
/* repeats of one in-flight command answered with it; more are busy */
#define MAX_WAITERS 4
#define VERB_MAX    64
/* a parser token array or buffer grown past this is trimmed after each
 * command, so one big command does not keep its memory */
#define KEEP_BYTES (64u << 10)
/* start of a 5xx body quoted in the answer's details */
#define DETAILS_MAX       256
#define PARSER_TOKENS_MAX (1u << 22)
/* longest prompt id told to io.accepted, bytes */
#define ACCEPTED_ID_MAX 1024

/* Where and how one answer goes. */
struct route {
	char *topic; /* NULL: <p>/<i>/command/response */
	void *prop; /* MQTT 5 Correlation Data to set; NULL: none */
	size_t prop_len;
	char *corr_json; /* the answer's "correlation" value */
};

struct slot {
	bool used;
	char verb[VERB_MAX];
	uint64_t key;
	bool correlated;
	uint64_t connection;
	struct route first;
	struct route waiters[MAX_WAITERS];
	int n_waiters;
};

struct command {
	char *prefix, *instance, *client_id, *comfyui_public;
	char *ha_prefix; /* NULL: none */
	char *cmd_prefix; /* "<p>/<i>/command/" */
	size_t cmd_prefix_len, max_bytes;
	struct command_io io;
	struct json_parser *parser;
	struct dedup *dedup;
	struct buf body, out, frag;
	struct slot slot[COMMAND_MAX_PENDING];
	struct command_stats stats;
	bool stopping; /* command_stop was called */
	struct ratelog log[CE_COUNT];
	/* the prompt id and number of the 2xx being answered (result.c) */
	char accepted_id[ACCEPTED_ID_MAX + 1];
	size_t accepted_len; /* 0: none to tell */
	int64_t accepted_number;
};

/* One command being handled. */
struct req {
	char verb[VERB_MAX];
	struct route route; /* borrowed strings until stored */
	char corr_buf[COMMAND_CORRELATION_MAX * 6 + 3];
	char topic_buf[COMMAND_TOPIC_MAX + 1];
	char problem[200]; /* a refused Response Topic property: why */
	const void *key_corr; /* the correlation the key uses */
	size_t key_corr_len;
};

/* The answer of verb with members[0..len) (the inside of an object) to r. */
void cmd_send_answer(struct command *c, const char *verb,
    const struct route *r, bool ok, const char *members, size_t len,
    bool duplicate);
/* The members of a failure of the bridge's own into c->frag (an object
 * with its braces). Returns 0 or an enum br_err. */
int cmd_own_error(struct command *c, enum command_error e, const char *message,
    const char *details, size_t details_len);
/* Counts and logs (rate-limited) a failure. */
void cmd_count_failure(struct command *c, const char *verb,
    enum command_error e, const char *message);
#define CMD_STOPPING_TEXT                                                     \
	"the bridge stopped before ComfyUI answered; the command may have "   \
	"run"

/* Trims the parser and buffers that grew past KEEP_BYTES. */
void cmd_trim(struct command *c);
/* Frees a slot's routes; the slot is free again. */
void cmd_slot_free(struct slot *s);

#endif
