/* Commands over MQTT (--commands): the pure core. A message on
 * <p>/<i>/command/<verb> is checked, turned into one ComfyUI POST through
 * struct command_io, and answered once on its answer route (the MQTT 5
 * Response Topic, the payload's response_topic, else
 * <p>/<i>/command/response). Repeats are answered from the first result
 * (dedup.h). No library types; time is passed in. */
#ifndef C2M_COMMAND_H
#define C2M_COMMAND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jsonw.h"

/* Commands waiting for their ComfyUI answer at once; more get "busy". */
#define COMMAND_MAX_PENDING 16
/* Longest correlation (payload field or Correlation Data), bytes. */
#define COMMAND_CORRELATION_MAX 256
/* Longest response topic, bytes. */
#define COMMAND_TOPIC_MAX 1024
/* How long a finished command's answer is kept for repeats. */
#define COMMAND_DEDUP_MS (10 * 60 * 1000)
/* How long the glue waits for ComfyUI's answer to a command's POST. */
#define COMMAND_POST_TIMEOUT_MS 30000

/* Why a command failed: the answer's error.type (the bridge's own
 * errors) and the health counters, one table (command_error_name). */
enum command_error {
	CE_BAD_JSON = 0,
	CE_TOO_LARGE,
	CE_BAD_FIELD,
	CE_UNKNOWN_VERB,
	CE_BAD_RESPONSE_TOPIC,
	CE_COMFYUI_DOWN, /* no HTTP answer */
	CE_COMFYUI_ERROR, /* 3xx or 5xx, or a 2xx that cannot be read */
	CE_BROKER_RECONNECTING,
	CE_BUSY,
	CE_RETAINED, /* a retained message: it would run at every subscribe */
	/* ComfyUI answered 4xx: health only, the answer carries ComfyUI's
	 * own error object */
	CE_COMFYUI_REJECTED,
	/* a resent command that is no repeat: the broker kept it while the
	 * bridge was offline */
	CE_STALE,
	CE_BRIDGE_STOPPING, /* command_stop */
	CE_COUNT
};

const char *command_error_name(int e);

struct command_stats {
	uint64_t received; /* every command message (not answers) */
	uint64_t ok;
	uint64_t failed[CE_COUNT];
	uint64_t duplicates; /* answered from an earlier result */
};

struct command_io {
	/* POST path (starting with '/') with the JSON body to ComfyUI;
	 * the answer comes back through command_on_http with slot. Returns
	 * 0, or an enum br_err when the request cannot start (the command
	 * then fails as comfyui_down). */
	int (*post)(void *ud, unsigned slot, const char *path,
	    const char *body, size_t len);
	/* Publishes an answer. topic NULL: <p>/<i>/command/response.
	 * correlation: the request's MQTT 5 Correlation Data to set as the
	 * property (NULL: none). All borrowed for the call. */
	void (*answer)(void *ud, const char *topic, const char *payload,
	    size_t len, const void *correlation, size_t correlation_len);
	/* ComfyUI took a prompt command: its prompt id (unescaped, no NUL,
	 * len bytes, borrowed) and queue number, told before the answer
	 * goes out. NULL: not wanted. */
	void (*accepted)(
	    void *ud, const char *prompt_id, size_t len, int64_t number);
	void *ud;
};

struct command_cfg {
	const char *prefix;
	const char *instance; /* sanitized */
	const char *client_id; /* the bridge's ComfyUI client id */
	const char *comfyui_public; /* base URL without credentials */
	size_t max_bytes; /* --command-max-bytes */
	const char
	    *ha_prefix; /* Home Assistant discovery prefix; NULL: none */
};

/* One received command message (all borrowed for the call). */
struct command_msg {
	const char *topic;
	const void *payload;
	size_t len;
	const char *response_topic; /* MQTT 5 property; NULL: none */
	const void *correlation; /* MQTT 5 Correlation Data; NULL: none */
	size_t correlation_len;
	uint64_t connection; /* the link connection that delivered it */
	bool connected; /* the broker link is up now */
	bool retained; /* the broker kept it (delivered at subscribe) */
	/* delivered before the SUBACK of the command subscription on this
	 * connection: queued while the bridge was offline, or a resend from
	 * an earlier connection */
	bool resent;
};

struct command;

/* Copies cfg's strings. Returns 0 or BR_ENOMEM. */
int command_create(const struct command_cfg *cfg, const struct command_io *io,
    struct command **out);
void command_destroy(struct command *c);

/* A message on <p>/<i>/command/+: answered at once, or posted to
 * ComfyUI and answered by command_on_http. The bridge's own answers on
 * <p>/<i>/command/response are ignored. */
void command_on_message(
    struct command *c, const struct command_msg *m, int64_t now_ms);
/* ComfyUI's answer to the POST of slot: status as http_done_cb gives it
 * (negative: no answer, an enum br_err: BR_ESTATE timed out). */
void command_on_http(struct command *c, unsigned slot, int status,
    const char *body, size_t len, int64_t now_ms);

/* The bridge stops: every command still waiting for ComfyUI (and its
 * repeats) is answered bridge_stopping and its slot freed (a later
 * command_on_http for it is ignored); every later command is answered
 * bridge_stopping without being posted. */
void command_stop(struct command *c);

void command_get_stats(const struct command *c, struct command_stats *s);
/* Commands posted and not answered yet. */
unsigned command_pending(const struct command *c);
/* Writes the "commands" member of bridge/health (key and object). */
void command_write_health(const struct command *c, struct jsonw *w);

/* Checks a response topic: a valid MQTT topic name (non-empty, UTF-8, no
 * wildcard, at most COMMAND_TOPIC_MAX bytes), not starting with '$', not
 * prefix nor under "<prefix>/" (every instance's topics), not ha_prefix
 * nor under it (NULL: none). Returns NULL when usable, else why not. */
const char *command_topic_problem(
    const char *topic, size_t len, const char *prefix, const char *ha_prefix);

#endif
