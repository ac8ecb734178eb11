/* Options: defaults < config file < COMFY2MQTT_* environment < flags.
 * One table describes every option; argv, environment and file share one
 * parser. The struct owns all its strings (config_free). */
#ifndef C2M_CONFIG_H
#define C2M_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "url.h"

#define CONFIG_MAX_HEADERS  8
#define CONFIG_MAX_EVENTS   64
#define CONFIG_MAX_WARNINGS 16
#define CONFIG_MAX_SERVERS  256

/* Exit codes (sysexits). */
#define EXIT_USAGE  64
#define EXIT_CONFIG 78

enum mqtt_protocol { MQTT_PROTO_5 = 5, MQTT_PROTO_311 = 4 };

/* One ComfyUI server (--comfyui [INSTANCE=]URL): what was given and what
 * is derived for it. Each becomes one instance, <prefix>/<instance>/. */
struct config_server {
	char *name; /* INSTANCE= as given; NULL: --instance or the host */
	struct url comfy; /* parsed; credentials moved into headers */
	/* --comfyui-header plus this URL's credentials (secret values) */
	char *headers[CONFIG_MAX_HEADERS];
	int n_headers;
	char *instance; /* sanitized */
	char *client_id; /* ComfyUI clientId */
	char *mqtt_client_id;
};

struct config {
	/* ComfyUI: one entry per --comfyui, in the order given */
	struct config_server *server;
	int n_servers;
	char *comfyui_header[CONFIG_MAX_HEADERS]; /* "Name: value" (secret
	                                             values: never logged) */
	int n_comfyui_headers;
	char *client_id; /* --client-id (one server only); see server[] */

	/* MQTT */
	char *mqtt; /* as given (may hold credentials) */
	struct url broker; /* parsed */
	char *mqtt_username;
	char *mqtt_password; /* secret */
	char *mqtt_client_id; /* --mqtt-client-id (one server only) */
	enum mqtt_protocol mqtt_protocol;
	int mqtt_keepalive; /* seconds, default 30 */
	size_t mqtt_max_packet; /* bytes; 0: unknown (the broker's, MQTT 5) */
	char *tls_ca, *tls_cert, *tls_key;
	bool tls_insecure;

	/* Topics and payloads */
	char *prefix; /* default "comfyui" */
	char *instance; /* --instance as given (one server only) */
	char *events[CONFIG_MAX_EVENTS]; /* allow-list; n_events == 0: all */
	int n_events;
	bool previews;
	size_t preview_max_bytes; /* default 1 MiB */
	double preview_rate; /* per second per prompt, default 2 */
	int64_t state_ttl; /* seconds, default 86400 */
	size_t queue_max_messages; /* default 100000 */
	size_t queue_max_bytes; /* default 64 MiB */
	bool commands; /* --commands: accept commands over MQTT */
	size_t command_max_bytes; /* default 4 MiB */
	bool ha_discovery;
	bool ha_remove; /* publish empty discovery and exit */
	char *ha_prefix; /* default "homeassistant" */
	int health_interval; /* seconds, default 30 */
	size_t max_frame_bytes; /* default 16 MiB */
	unsigned max_tokens; /* default 8192 */
	unsigned history_items; /* GET /history?max_items=N, default 20 */
	int upstream_watchdog; /* seconds of silence before a liveness check */

	/* Output */
	bool print;
	bool print_timestamps;
	int log_level; /* enum log_level */
	int log_format; /* enum log_format */

	char *config_file; /* --config, if any */

	/* Warnings about options that work but deserve a look, without
	 * secrets; config_log_warnings() logs them. */
	char warnings[CONFIG_MAX_WARNINGS][256];
	int n_warnings;
};

enum config_result {
	CONFIG_OK = 0, /* run */
	CONFIG_EXIT_OK = 1, /* --help / --version printed: exit 0 */
	CONFIG_USAGE = EXIT_USAGE,
	CONFIG_BAD_FILE = EXIT_CONFIG,
};

/* Fills c from defaults, the config file, envp (NULL: the process
 * environment) and argv, validates everything and derives defaults
 * (instance, client ids). On error writes a one-line message naming the
 * bad option and a hint into err. Help/version text goes to out.
 * Logs nothing and leaves logging alone: warnings wait in c->warnings.
 * Returns enum config_result. c must be config_free()d in every case. */
int config_load(struct config *c, int argc, char **argv, char *const *envp,
    char *err, size_t errlen, FILE *out);

/* Logs c's warnings (at WARN, source "config"). main calls it once, after
 * log_setup() with c's log level and format. */
void config_log_warnings(const struct config *c);

/* Frees every string c owns and zeroes it. */
void config_free(struct config *c);

/* true when type is on the --events allow-list (or the list is empty). */
bool config_event_allowed(
    const struct config *c, const char *type, size_t len);

/* Writes the options in effect for server (an index into c->server) as
 * JSON object members into w (struct jsonw *), without secrets (password,
 * header values, URL credentials): the per-server options (comfyui,
 * instance, client ids) are that server's own. */
struct jsonw;
void config_write_json(const struct config *c, int server, struct jsonw *w);

#endif
