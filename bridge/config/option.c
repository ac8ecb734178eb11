/* The option table and the lookups over it. Adding an option means adding
 * its entry here and its field in struct config: the parser, --help and
 * the bridge/info writer follow from the entry. */
#include "option.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "log.h"

_Static_assert(sizeof(enum mqtt_protocol) == sizeof(int),
    "enum options are stored as int");

static const struct choice protocol_choices[] = {
	{ "5", MQTT_PROTO_5 },
	{ "3.1.1", MQTT_PROTO_311 },
	{ "5.0", MQTT_PROTO_5 },
	{ "311", MQTT_PROTO_311 },
	{ NULL, 0 },
};
static const struct choice level_choices[] = {
	{ "info", LOG_LVL_INFO },
	{ "error", LOG_LVL_ERROR },
	{ "warn", LOG_LVL_WARN },
	{ "debug", LOG_LVL_DEBUG },
	{ "warning", LOG_LVL_WARN },
	{ NULL, 0 },
};
static const struct choice format_choices[] = {
	{ "text", LOG_FMT_TEXT },
	{ "json", LOG_FMT_JSON },
	{ NULL, 0 },
};

#define F(field) offsetof(struct config, field)
#define S(field) offsetof(struct config_server, field)
#define KIB      1024LL
#define MIB      (1024LL * 1024)
#define GIB      (1024LL * 1024 * 1024)

const struct opt options[] = {
	{ .name = "config",
	    .kind = OPT_CONFIG,
	    .off = F(config_file),
	    .metavar = "FILE",
	    .example = "/etc/comfy2mqtt.conf",
	    .help
	    = "read options from FILE: lines \"key = value\", # comments" },
	{ .name = "comfyui",
	    .kind = OPT_SERVER,
	    .off = F(server),
	    .off2 = F(n_servers),
	    .hi = CONFIG_MAX_SERVERS,
	    .def = "http://127.0.0.1:8188",
	    .metavar = "[INSTANCE=]URL",
	    .example = "gpu1=http://gpu1:8188",
	    .help = "ComfyUI base URL, http or https; a path prefix is kept. "
	            "Repeatable: one instance per server (comma-separated in "
	            "the environment)",
	    .per_server = true },
	{ .name = "comfyui-header",
	    .kind = OPT_HEADER,
	    .off = F(comfyui_header),
	    .off2 = F(n_comfyui_headers),
	    .hi = CONFIG_MAX_HEADERS,
	    .metavar = "\"NAME: VALUE\"",
	    .example = "\"Authorization: Bearer TOKEN\"",
	    .help
	    = "extra header on every ComfyUI request (repeatable; one per "
	      "line in the environment)" },
	{ .name = "client-id",
	    .kind = OPT_STR,
	    .off = F(client_id),
	    .shown = "comfy2mqtt-<instance>",
	    .metavar = "ID",
	    .example = "comfy2mqtt-gpu1",
	    .help
	    = "ComfyUI clientId; keep it stable so prompts submitted with "
	      "it stream in full (one server only)",
	    .per_server = true,
	    .soff = S(client_id) },
	{ .name = "mqtt",
	    .kind = OPT_MQTT_URL,
	    .off = F(mqtt),
	    .off2 = F(broker),
	    .def = "mqtt://127.0.0.1:1883",
	    .metavar = "URL",
	    .help
	    = "MQTT broker, mqtt or mqtts (TLS); default port 1883 / 8883" },
	{ .name = "mqtt-username",
	    .kind = OPT_STR,
	    .off = F(mqtt_username),
	    .metavar = "USER",
	    .example = "bridge",
	    .help = "MQTT user name" },
	{ .name = "mqtt-password",
	    .kind = OPT_SECRET,
	    .off = F(mqtt_password),
	    .metavar = "PASSWORD",
	    .example = "PASSWORD",
	    .help = "MQTT password; prefer --mqtt-password-file or the "
	            "environment (flags show in the process list)" },
	{ .name = "mqtt-password-file",
	    .kind = OPT_SECRET_FILE,
	    .off = F(mqtt_password),
	    .metavar = "FILE",
	    .example = "/run/secrets/mqtt_password",
	    .help = "read the MQTT password from the first line of FILE" },
	{ .name = "mqtt-client-id",
	    .kind = OPT_STR,
	    .off = F(mqtt_client_id),
	    .shown = "comfy2mqtt-<instance>-<host hash>",
	    .metavar = "ID",
	    .example = "c2m-gpu1",
	    .help = "MQTT client id, unique per bridge "
	            "(at most 23 bytes with MQTT 3.1.1; one server only)",
	    .per_server = true,
	    .soff = S(mqtt_client_id) },
	{ .name = "mqtt-protocol",
	    .kind = OPT_ENUM,
	    .off = F(mqtt_protocol),
	    .def = "5",
	    .metavar = "5|3.1.1",
	    .choices = protocol_choices,
	    .help = "MQTT protocol version" },
	{ .name = "mqtt-keepalive",
	    .kind = OPT_INT,
	    .off = F(mqtt_keepalive),
	    .def = "30",
	    .metavar = "SECONDS",
	    .unit = "seconds",
	    .lo = 5,
	    .hi = 3600,
	    .help = "MQTT keepalive interval" },
	{ .name = "mqtt-max-packet",
	    .kind = OPT_SIZE,
	    .off = F(mqtt_max_packet),
	    .def = "0",
	    .metavar = "BYTES",
	    .unit = "bytes",
	    .lo = 0,
	    .hi = 268435455,
	    .help = "largest MQTT packet the broker accepts (0: unknown; "
	            "MQTT 5 also takes the broker's own smaller limit); a "
	            "larger message is dropped and counted" },
	{ .name = "tls-ca",
	    .kind = OPT_FILE,
	    .off = F(tls_ca),
	    .shown = "system CAs",
	    .metavar = "FILE",
	    .example = "ca.pem",
	    .help = "CA certificates (PEM) to verify the broker and an https "
	            "ComfyUI" },
	{ .name = "tls-cert",
	    .kind = OPT_FILE,
	    .off = F(tls_cert),
	    .metavar = "FILE",
	    .example = "client.pem",
	    .help = "client certificate (PEM), together with --tls-key" },
	{ .name = "tls-key",
	    .kind = OPT_FILE,
	    .off = F(tls_key),
	    .metavar = "FILE",
	    .example = "client.key",
	    .help = "client private key (PEM), together with --tls-cert" },
	{ .name = "tls-insecure",
	    .kind = OPT_BOOL,
	    .off = F(tls_insecure),
	    .def = "false",
	    .help = "skip TLS certificate verification (warned on every "
	            "connect)" },
	{ .name = "prefix",
	    .kind = OPT_PREFIX,
	    .off = F(prefix),
	    .def = "comfyui",
	    .metavar = "P",
	    .help = "first topic level" },
	{ .name = "instance",
	    .kind = OPT_STR,
	    .off = F(instance),
	    .shown = "ComfyUI host, sanitized",
	    .metavar = "I",
	    .example = "gpu1",
	    .help = "second topic level: names this ComfyUI server (one "
	            "server only; with several, --comfyui INSTANCE=URL)",
	    .flag_nonempty = true,
	    .per_server = true,
	    .soff = S(instance) },
	{ .name = "events",
	    .kind = OPT_LIST,
	    .off = F(events),
	    .off2 = F(n_events),
	    .hi = CONFIG_MAX_EVENTS,
	    .shown = "all",
	    .metavar = "LIST",
	    .example = "execution_success,execution_error",
	    .help = "comma-separated allow-list of event types to publish" },
	{ .name = "previews",
	    .kind = OPT_BOOL,
	    .off = F(previews),
	    .def = "false",
	    .help = "publish preview images" },
	{ .name = "preview-max-bytes",
	    .kind = OPT_SIZE,
	    .off = F(preview_max_bytes),
	    .def = "1M",
	    .metavar = "BYTES",
	    .unit = "bytes",
	    .lo = 1,
	    .hi = 256 * MIB - 1,
	    .help = "drop larger previews (K, M, G suffixes)" },
	{ .name = "preview-rate",
	    .kind = OPT_DOUBLE,
	    .off = F(preview_rate),
	    .def = "2",
	    .metavar = "N",
	    .unit = "per second",
	    .dlo = 0,
	    .dhi = 1000,
	    .help = "most previews per second per prompt" },
	{ .name = "state-ttl",
	    .kind = OPT_INT64,
	    .off = F(state_ttl),
	    .def = "86400",
	    .metavar = "SECONDS",
	    .unit = "seconds",
	    .lo = 1,
	    .hi = 4294967295LL,
	    .help = "lifetime of retained per-prompt state topics" },
	{ .name = "queue-max-messages",
	    .kind = OPT_COUNT,
	    .off = F(queue_max_messages),
	    .def = "100000",
	    .metavar = "N",
	    .unit = "messages",
	    .lo = 10,
	    .hi = 100000000,
	    .help = "most messages held while the broker is away" },
	{ .name = "queue-max-bytes",
	    .kind = OPT_SIZE,
	    .off = F(queue_max_bytes),
	    .def = "64M",
	    .metavar = "BYTES",
	    .unit = "bytes",
	    .lo = 64 * KIB,
	    .hi = 1024 * GIB,
	    .help = "most bytes held while the broker is away (K, M, G "
	            "suffixes)" },
	{ .name = "commands",
	    .kind = OPT_BOOL,
	    .off = F(commands),
	    .def = "false",
	    .help = "accept commands on <prefix>/<instance>/command/<verb>: "
	            "prompt, interrupt, cancel, clear, free" },
	{ .name = "command-max-bytes",
	    .kind = OPT_SIZE,
	    .off = F(command_max_bytes),
	    .def = "4M",
	    .metavar = "BYTES",
	    .unit = "bytes",
	    .lo = KIB,
	    .hi = 64 * MIB,
	    .help = "largest command payload accepted (K, M suffixes)" },
	{ .name = "ha-discovery",
	    .kind = OPT_BOOL,
	    .off = F(ha_discovery),
	    .def = "false",
	    .help = "publish Home Assistant discovery" },
	{ .name = "ha-remove",
	    .kind = OPT_BOOL,
	    .off = F(ha_remove),
	    .def = "false",
	    .help = "remove the Home Assistant discovery message and exit" },
	{ .name = "ha-prefix",
	    .kind = OPT_PREFIX,
	    .off = F(ha_prefix),
	    .def = "homeassistant",
	    .metavar = "P",
	    .help = "Home Assistant discovery prefix" },
	{ .name = "health-interval",
	    .kind = OPT_INT,
	    .off = F(health_interval),
	    .def = "30",
	    .metavar = "SECONDS",
	    .unit = "seconds",
	    .lo = 1,
	    .hi = 3600,
	    .help = "interval of bridge/health messages" },
	{ .name = "max-frame-bytes",
	    .kind = OPT_SIZE,
	    .off = F(max_frame_bytes),
	    .def = "16M",
	    .metavar = "BYTES",
	    .unit = "bytes",
	    .lo = 4 * KIB,
	    .hi = 1 * GIB,
	    .help = "largest ComfyUI WebSocket message accepted" },
	{ .name = "max-tokens",
	    .kind = OPT_UINT,
	    .off = F(max_tokens),
	    .def = "8192",
	    .metavar = "N",
	    .unit = "tokens",
	    .lo = 64,
	    .hi = 1048576,
	    .help = "most JSON tokens parsed in one message" },
	{ .name = "history-items",
	    .kind = OPT_UINT,
	    .off = F(history_items),
	    .def = "20",
	    .metavar = "N",
	    .unit = "items",
	    .lo = 1,
	    .hi = 1000,
	    .help = "newest history entries read when the queue shrinks" },
	{ .name = "upstream-watchdog",
	    .kind = OPT_INT,
	    .off = F(upstream_watchdog),
	    .def = "60",
	    .metavar = "SECONDS",
	    .unit = "seconds",
	    .lo = 1,
	    .hi = 3600,
	    .help
	    = "after this long without a frame, check through GET /queue "
	      "that the WebSocket still receives (reconnect if not)" },
	{ .name = "print",
	    .kind = OPT_BOOL,
	    .off = F(print),
	    .def = "false",
	    .help = "also print every event to stdout, one line each" },
	{ .name = "print-timestamps",
	    .kind = OPT_BOOL,
	    .off = F(print_timestamps),
	    .def = "false",
	    .help = "prefix --print lines with [HH:MM:SS]" },
	{ .name = "log-level",
	    .kind = OPT_ENUM,
	    .off = F(log_level),
	    .def = "info",
	    .metavar = "error|warn|info|debug",
	    .choices = level_choices,
	    .help = "least severe level logged" },
	{ .name = "log-format",
	    .kind = OPT_ENUM,
	    .off = F(log_format),
	    .def = "text",
	    .metavar = "text|json",
	    .choices = format_choices,
	    .help = "log line format on stderr" },
	{ .name = "help",
	    .kind = OPT_HELP,
	    .help = "show this help and exit" },
	{ .name = "version",
	    .kind = OPT_VERSION,
	    .help = "show the version and exit" },
};

const size_t n_options = sizeof options / sizeof options[0];
_Static_assert(
    sizeof options / sizeof options[0] <= OPTIONS_MAX, "raise OPTIONS_MAX");

bool
option_takes_value(const struct opt *o)
{
	return o->kind != OPT_BOOL && !option_is_action(o);
}

bool
option_is_action(const struct opt *o)
{
	return o->kind == OPT_HELP || o->kind == OPT_VERSION;
}

void
option_env_name(const struct opt *o, char *dst, size_t cap)
{
	size_t n = (size_t) snprintf(dst, cap, ENV_PREFIX "%s", o->name);

	for (size_t i = 0; i < n && i < cap; i++) {
		dst[i] = (char) toupper((unsigned char) dst[i]);
		if (dst[i] == '-')
			dst[i] = '_';
	}
}

int
option_find(const char *name, size_t n)
{
	for (size_t i = 0; i < n_options; i++) {
		const char *o = options[i].name;
		size_t j = 0;
		if (strlen(o) != n)
			continue;
		while (j < n
		    && (name[j] == o[j] || (name[j] == '_' && o[j] == '-')))
			j++;
		if (j == n)
			return (int) i;
	}
	return -1;
}

int
option_index(const char *name)
{
	return option_find(name, strlen(name));
}

/* Levenshtein distance, capped for the short names used here. */
static size_t
edit_distance(const char *a, size_t na, const char *b)
{
	size_t nb = strlen(b), row[64];

	if (na >= 63 || nb >= 63)
		return 99;
	for (size_t j = 0; j <= nb; j++)
		row[j] = j;
	for (size_t i = 1; i <= na; i++) {
		size_t diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= nb; j++) {
			size_t up = row[j];
			size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
			size_t best = diag + cost;
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[nb];
}

/* The option name closest to name (n bytes), or NULL if none is close. */
const char *
option_closest(const char *name, size_t n)
{
	const char *best = NULL;
	size_t best_d = 3;
	char norm[64];

	if (n >= sizeof norm)
		return NULL;
	for (size_t i = 0; i < n; i++)
		norm[i] = name[i] == '_'
		    ? '-'
		    : (char) tolower((unsigned char) name[i]);
	norm[n] = '\0';
	for (size_t i = 0; i < n_options; i++) {
		size_t d = edit_distance(norm, n, options[i].name);
		if (n >= 3 && strncmp(options[i].name, norm, n) == 0)
			d = 1;
		if (d < best_d) {
			best_d = d;
			best = options[i].name;
		}
	}
	return best;
}

/* An example of setting o correctly in source src. */
void
option_hint(const struct opt *o, enum source src, char *dst, size_t cap)
{
	char env[64];
	const char *example = o->def ? o->def : o->example;

	if (o->kind == OPT_BOOL)
		example = "true";
	if (!example)
		example = o->metavar ? o->metavar : "";
	switch (src) {
	case SRC_ENV:
		option_env_name(o, env, sizeof env);
		snprintf(dst, cap, "%s=%s", env, example);
		break;
	case SRC_FILE:
		snprintf(dst, cap, "%s = %s", o->name, example);
		break;
	default:
		if (o->kind == OPT_BOOL)
			snprintf(dst, cap, "--%s", o->name);
		else
			snprintf(dst, cap, "--%s %s", o->name, example);
		break;
	}
}
