/* Options from defaults, a config file, COMFY2MQTT_* variables and flags.
 *
 * One table drives everything: the three sources only find an option by
 * name and hand its text to apply_value(), so a value means the same
 * whether it came from a flag, the environment or the file. Sources are
 * applied in precedence order and later ones overwrite earlier ones.
 *
 * Secrets (the MQTT password, header values, URL passwords) are never
 * echoed: errors about them name the option only. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "jsonw.h"
#include "log.h"
#include "topic.h"

#ifndef C2M_VERSION
#define C2M_VERSION "0.0.0"
#endif

#define ENV_PREFIX "COMFY2MQTT_"
/* MQTT 3.1.1 servers need only accept client ids of 1..23 bytes. */
#define MQTT311_CLIENT_ID_MAX 23
#define MAX_WARNINGS          16
#define CLIENT_ID_MAX         128

_Static_assert(sizeof(enum mqtt_protocol) == sizeof(int),
    "enum options are stored as int");

enum opt_kind {
	OPT_STR, /* char *; "" unsets */
	OPT_SECRET, /* char *, never echoed */
	OPT_SECRET_FILE, /* first line of a file into a secret's field */
	OPT_FILE, /* char *, a path that must be readable */
	OPT_PREFIX, /* char *, a topic prefix */
	OPT_BOOL, /* bool */
	OPT_INT, /* int */
	OPT_INT64, /* int64_t */
	OPT_UINT, /* unsigned */
	OPT_COUNT, /* size_t, plain number */
	OPT_SIZE, /* size_t, bytes with K/M/G suffixes */
	OPT_DOUBLE, /* double, lo exclusive */
	OPT_ENUM, /* int from choices */
	OPT_HEADER, /* char *[hi] + int count at off2, repeatable */
	OPT_LIST, /* char *[hi] + int count at off2, comma-separated */
	OPT_HTTP_URL, /* char * + struct url at off2 */
	OPT_MQTT_URL, /* char * + struct url at off2 */
	OPT_CONFIG, /* the config file itself: flag or environment */
	OPT_HELP,
	OPT_VERSION,
};

/* Where a value came from, in precedence order. */
enum source { SRC_NONE, SRC_DEFAULT, SRC_FILE, SRC_ENV, SRC_FLAG };

struct choice {
	const char *text;
	int value;
};

struct opt {
	const char *name;
	enum opt_kind kind;
	size_t off, off2;
	const char *def; /* default as option text; NULL: none/derived */
	const char *shown; /* default as shown in --help when def is NULL */
	const char *metavar; /* NULL for options without a value */
	const char *example; /* used in hints when there is no default */
	const char *unit; /* "seconds", "bytes": for messages */
	long long lo, hi; /* integer range; item limit for lists */
	double dlo, dhi; /* OPT_DOUBLE: lo < value <= hi */
	const struct choice *choices;
	const char *help;
};

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
#define KIB      1024LL
#define MIB      (1024LL * 1024)
#define GIB      (1024LL * 1024 * 1024)

static const struct opt options[] = {
	{ .name = "config",
	    .kind = OPT_CONFIG,
	    .off = F(config_file),
	    .metavar = "FILE",
	    .example = "/etc/comfy2mqtt.conf",
	    .help
	    = "read options from FILE: lines \"key = value\", # comments" },
	{ .name = "comfyui",
	    .kind = OPT_HTTP_URL,
	    .off = F(comfyui),
	    .off2 = F(comfy),
	    .def = "http://127.0.0.1:8188",
	    .metavar = "URL",
	    .help = "ComfyUI base URL, http or https; a path prefix is kept" },
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
	      "it stream in full" },
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
	            "(at most 23 bytes with MQTT 3.1.1)" },
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
	    .help = "second topic level: names this ComfyUI server" },
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

#define N_OPTIONS (sizeof options / sizeof options[0])

struct flag_value {
	int opt;
	const char *value; /* NULL for a bool flag without value */
};

/* State of one config_load() call. */
struct loader {
	struct config *c;
	char *err;
	size_t errlen;
	enum source src; /* source being applied */
	const char *file;
	unsigned line;
	enum source set_at[N_OPTIONS];
	unsigned line_at[N_OPTIONS];
	char warnings[MAX_WARNINGS][256];
	int n_warnings;
};

static void *
field(struct config *c, const struct opt *o)
{
	return (char *) c + o->off;
}

static const void *
cfield(const struct config *c, const struct opt *o)
{
	return (const char *) c + o->off;
}

static bool
takes_value(const struct opt *o)
{
	return o->kind != OPT_BOOL && o->kind != OPT_HELP
	    && o->kind != OPT_VERSION;
}

static void
env_name(const struct opt *o, char *dst, size_t cap)
{
	size_t n = (size_t) snprintf(dst, cap, ENV_PREFIX "%s", o->name);

	for (size_t i = 0; i < n && i < cap; i++) {
		dst[i] = (char) toupper((unsigned char) dst[i]);
		if (dst[i] == '-')
			dst[i] = '_';
	}
}

/* Option index by name (n bytes), '_' and '-' alike, or -1. */
static int
find_option(const char *name, size_t n)
{
	for (size_t i = 0; i < N_OPTIONS; i++) {
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
static const char *
closest_option(const char *name, size_t n)
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
	for (size_t i = 0; i < N_OPTIONS; i++) {
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

/* Printable, bounded copy of a user value for messages. */
static const char *
shown_value(char *dst, unsigned cap, const char *value)
{
	return log_excerpt(dst, cap, value, strlen(value));
}

static void warn(struct loader *ld, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
warn(struct loader *ld, const char *fmt, ...)
{
	va_list ap;

	if (ld->n_warnings >= MAX_WARNINGS)
		return;
	va_start(ap, fmt);
	vsnprintf(
	    ld->warnings[ld->n_warnings++], sizeof ld->warnings[0], fmt, ap);
	va_end(ap);
}

/* How the user names option o in source src: "--x", "COMFY2MQTT_X",
 * "file:line: x". */
static void
describe(const struct loader *ld, const struct opt *o, enum source src,
    unsigned line, char *dst, size_t cap)
{
	switch (src) {
	case SRC_ENV:
		env_name(o, dst, cap);
		break;
	case SRC_FILE:
		snprintf(dst, cap, "%s:%u: %s", ld->file ? ld->file : "?",
		    line, o->name);
		break;
	case SRC_DEFAULT:
		snprintf(dst, cap, "default of --%s", o->name);
		break;
	default:
		snprintf(dst, cap, "--%s", o->name);
		break;
	}
}

/* An example of setting o correctly in source src. */
static void
hint(const struct opt *o, enum source src, char *dst, size_t cap)
{
	char env[64];
	const char *example = o->def ? o->def : o->example;

	if (o->kind == OPT_BOOL)
		example = "true";
	if (!example)
		example = o->metavar ? o->metavar : "";
	switch (src) {
	case SRC_ENV:
		env_name(o, env, sizeof env);
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

static int
result_for(enum source src)
{
	return src == SRC_FILE ? CONFIG_BAD_FILE : CONFIG_USAGE;
}

static int bad_at(struct loader *ld, const struct opt *o, enum source src,
    unsigned line, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Writes "<where>: <problem> (hint: <example>)" into err. */
static int
bad_at(struct loader *ld, const struct opt *o, enum source src, unsigned line,
    const char *fmt, ...)
{
	char where[320], problem[512], example[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(problem, sizeof problem, fmt, ap);
	va_end(ap);
	describe(ld, o, src, line, where, sizeof where);
	hint(o, src, example, sizeof example);
	snprintf(
	    ld->err, ld->errlen, "%s: %s (hint: %s)", where, problem, example);
	return result_for(src);
}

#define bad(ld, o, ...) bad_at(ld, o, (ld)->src, (ld)->line, __VA_ARGS__)

static int
set_string(char **slot, const char *value)
{
	char *copy = NULL;

	if (value && *value) {
		copy = strdup(value);
		if (!copy)
			return BR_ENOMEM;
	}
	free(*slot);
	*slot = copy;
	return BR_OK;
}

static void
free_secret(char **slot)
{
	if (*slot) {
		explicit_bzero(*slot, strlen(*slot));
		free(*slot);
		*slot = NULL;
	}
}

static int
out_of_memory(struct loader *ld)
{
	snprintf(ld->err, ld->errlen, "out of memory");
	return CONFIG_USAGE;
}

static int
parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "true", "1", "yes", "on" };
	static const char *const no[] = { "false", "0", "no", "off" };

	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return BR_OK;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return BR_OK;
		}
	}
	return BR_EINVAL;
}

/* Decimal integer with nothing after it. */
static int
parse_ll(const char *s, long long *out)
{
	char *end;

	if (!*s || isspace((unsigned char) *s))
		return BR_EINVAL;
	errno = 0;
	*out = strtoll(s, &end, 10);
	if (end == s || *end)
		return BR_EINVAL;
	return errno == ERANGE ? BR_ERANGE : BR_OK;
}

/* Bytes with an optional binary suffix: 65536, 64K, 64M, 1G, 1GiB. */
static int
parse_size(const char *s, unsigned long long *out)
{
	unsigned long long v, mult = 1;
	char *end;

	if (!isdigit((unsigned char) *s))
		return BR_EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (end == s)
		return BR_EINVAL;
	if (errno == ERANGE)
		return BR_ERANGE;
	switch (toupper((unsigned char) *end)) {
	case '\0':
		break;
	case 'K':
		mult = 1ULL << 10;
		break;
	case 'M':
		mult = 1ULL << 20;
		break;
	case 'G':
		mult = 1ULL << 30;
		break;
	default:
		return BR_EINVAL;
	}
	if (*end) {
		end++;
		if (strcasecmp(end, "") != 0 && strcasecmp(end, "B") != 0
		    && strcasecmp(end, "iB") != 0)
			return BR_EINVAL;
	}
	if (v > ULLONG_MAX / mult)
		return BR_ERANGE;
	*out = v * mult;
	return BR_OK;
}

static const char *
number_noun(const struct opt *o)
{
	if (o->kind == OPT_SIZE)
		return "a size in bytes (K, M, G suffixes allowed)";
	if (o->unit && strcmp(o->unit, "seconds") == 0)
		return "a number of seconds";
	return o->kind == OPT_DOUBLE ? "a number" : "a whole number";
}

static int
apply_integer(struct loader *ld, const struct opt *o, const char *value)
{
	char shown[48];
	long long v;
	unsigned long long uv = 0;
	int rc;

	if (o->kind == OPT_SIZE) {
		rc = parse_size(value, &uv);
		v = rc == BR_OK && uv > (unsigned long long) o->hi
		    ? o->hi + 1
		    : (long long) uv;
	} else {
		rc = parse_ll(value, &v);
	}
	shown_value(shown, sizeof shown, value);
	if (rc == BR_EINVAL)
		return bad(ld, o, "\"%s\" is not %s", shown, number_noun(o));
	if (rc == BR_ERANGE || v < o->lo || v > o->hi)
		return bad(ld, o, "%s is out of range %lld..%lld %s", shown,
		    o->lo, o->hi, o->unit ? o->unit : "");
	switch (o->kind) {
	case OPT_INT:
		*(int *) field(ld->c, o) = (int) v;
		break;
	case OPT_INT64:
		*(int64_t *) field(ld->c, o) = (int64_t) v;
		break;
	case OPT_UINT:
		*(unsigned *) field(ld->c, o) = (unsigned) v;
		break;
	default:
		*(size_t *) field(ld->c, o) = (size_t) v;
		break;
	}
	return CONFIG_OK;
}

static int
apply_double(struct loader *ld, const struct opt *o, const char *value)
{
	char shown[48], *end;
	double v;

	shown_value(shown, sizeof shown, value);
	errno = 0;
	v = strtod(value, &end);
	if (end == value || *end || isspace((unsigned char) *value)
	    || !isfinite(v))
		return bad(ld, o, "\"%s\" is not %s", shown, number_noun(o));
	if (!(v > o->dlo) || v > o->dhi)
		return bad(ld, o,
		    "%s is out of range: must be more than %g and at most %g",
		    shown, o->dlo, o->dhi);
	*(double *) field(ld->c, o) = v;
	return CONFIG_OK;
}

static int
apply_enum(struct loader *ld, const struct opt *o, const char *value)
{
	char shown[48];

	for (const struct choice *ch = o->choices; ch->text; ch++) {
		if (strcasecmp(ch->text, value) == 0) {
			*(int *) field(ld->c, o) = ch->value;
			return CONFIG_OK;
		}
	}
	return bad(ld, o, "\"%s\" is not one of %s",
	    shown_value(shown, sizeof shown, value), o->metavar);
}

/* Checks that path names a readable regular file; on failure writes why
 * into why. */
static bool
readable_file(const char *path, char *why, size_t cap)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		snprintf(why, cap, "%s", strerror(errno));
		return false;
	}
	if (fstat(fd, &st) != 0) {
		snprintf(why, cap, "%s", strerror(errno));
		close(fd);
		return false;
	}
	if (S_ISDIR(st.st_mode)) {
		snprintf(why, cap, "is a directory");
		close(fd);
		return false;
	}
	close(fd);
	return true;
}

static int
apply_file(struct loader *ld, const struct opt *o, const char *value)
{
	char why[128], shown[256];

	if (*value && !readable_file(value, why, sizeof why))
		return bad(ld, o, "cannot read \"%s\": %s",
		    shown_value(shown, sizeof shown, value), why);
	if (set_string(field(ld->c, o), value))
		return out_of_memory(ld);
	return CONFIG_OK;
}

/* Reads the first line of the file named by value into the secret. */
static int
apply_secret_file(struct loader *ld, const struct opt *o, const char *value)
{
	char why[128], shown[256];
	char *line = NULL, **slot = field(ld->c, o);
	size_t cap = 0;
	ssize_t n;
	FILE *f;

	if (!*value) {
		free_secret(slot);
		return CONFIG_OK;
	}
	shown_value(shown, sizeof shown, value);
	if (!readable_file(value, why, sizeof why))
		return bad(ld, o, "cannot read \"%s\": %s", shown, why);
	f = fopen(value, "r");
	if (!f)
		return bad(
		    ld, o, "cannot read \"%s\": %s", shown, strerror(errno));
	n = getline(&line, &cap, f);
	fclose(f);
	if (n <= 0) {
		free(line);
		return bad(ld, o, "\"%s\" is empty", shown);
	}
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = '\0';
	free_secret(slot);
	*slot = line;
	return CONFIG_OK;
}

static bool
is_tchar(int ch)
{
	return isalnum(ch) || (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static void
clear_list(char **items, int *count)
{
	for (int i = 0; i < *count; i++) {
		free_secret(&items[i]);
	}
	*count = 0;
}

/* Appends one "Name: value" header; the value is never echoed. */
static int
add_header(
    struct loader *ld, const struct opt *o, const char *text, size_t len)
{
	char **items = field(ld->c, o);
	int *count = (int *) ((char *) ld->c + o->off2);
	const char *colon = memchr(text, ':', len), *val;
	size_t name_len;
	char *copy;

	while (len > 0 && isspace((unsigned char) *text)) {
		text++;
		len--;
	}
	while (len > 0 && isspace((unsigned char) text[len - 1]))
		len--;
	if (len == 0)
		return CONFIG_OK;
	if (!colon)
		return bad(ld, o, "a header must look like \"Name: value\"");
	name_len = (size_t) (colon - text);
	if (name_len == 0)
		return bad(ld, o, "the header name is empty");
	for (size_t i = 0; i < name_len; i++) {
		if (!is_tchar((unsigned char) text[i]))
			return bad(ld, o,
			    "the header name may hold only letters, "
			    "digits and !#$%%&'*+-.^_`|~");
	}
	val = colon + 1;
	while (val < text + len && (*val == ' ' || *val == '\t'))
		val++;
	for (const char *p = val; p < text + len; p++) {
		unsigned char ch = (unsigned char) *p;
		if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
			return bad(ld, o,
			    "the header value holds a control "
			    "character");
	}
	if (*count >= o->hi)
		return bad(ld, o, "too many headers (at most %lld)", o->hi);
	copy = malloc(name_len + 2 + (size_t) (text + len - val) + 1);
	if (!copy)
		return out_of_memory(ld);
	sprintf(copy, "%.*s: %.*s", (int) name_len, text,
	    (int) (text + len - val), val);
	items[(*count)++] = copy;
	return CONFIG_OK;
}

/* Appends one event type name; empty items ("a,,b") are skipped. */
static int
add_list_item(
    struct loader *ld, const struct opt *o, const char *text, size_t len)
{
	char **items = field(ld->c, o);
	int *count = (int *) ((char *) ld->c + o->off2);
	char shown[48];

	while (len > 0 && isspace((unsigned char) *text)) {
		text++;
		len--;
	}
	while (len > 0 && isspace((unsigned char) text[len - 1]))
		len--;
	if (len == 0)
		return CONFIG_OK;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char) text[i];
		if (ch <= 0x20 || ch >= 0x7f)
			return bad(ld, o, "\"%s\" is not an event type name",
			    log_excerpt(shown, sizeof shown, text, len));
	}
	if (*count >= o->hi)
		return bad(
		    ld, o, "too many event types (at most %lld)", o->hi);
	items[*count] = strndup(text, len);
	if (!items[*count])
		return out_of_memory(ld);
	(*count)++;
	return CONFIG_OK;
}

/* Headers are split per line (the environment has one variable for all),
 * event lists per comma. A source replaces the list of a lower source. */
static int
apply_list(struct loader *ld, int idx, const char *value)
{
	const struct opt *o = &options[idx];
	char sep = o->kind == OPT_HEADER ? '\n' : ',';
	int rc;

	if (ld->set_at[idx] < ld->src)
		clear_list(
		    field(ld->c, o), (int *) ((char *) ld->c + o->off2));
	for (const char *p = value;;) {
		size_t n = strcspn(p, (char[]) { sep, '\0' });
		rc = o->kind == OPT_HEADER ? add_header(ld, o, p, n)
		                           : add_list_item(ld, o, p, n);
		if (rc)
			return rc;
		if (!p[n])
			break;
		p += n + 1;
	}
	return CONFIG_OK;
}

static int
apply_url(struct loader *ld, const struct opt *o, const char *value)
{
	struct url *u = (struct url *) ((char *) ld->c + o->off2);
	struct url parsed;
	char why[160];
	int rc;

	rc = url_parse(value,
	    o->kind == OPT_HTTP_URL ? "http,https" : "mqtt,mqtts", &parsed,
	    why, sizeof why);
	if (rc) {
		explicit_bzero(&parsed, sizeof parsed);
		return bad(ld, o, "%s", why);
	}
	if (set_string(field(ld->c, o), value)) {
		explicit_bzero(&parsed, sizeof parsed);
		return out_of_memory(ld);
	}
	*u = parsed;
	explicit_bzero(&parsed, sizeof parsed);
	return CONFIG_OK;
}

/* Another option writing the same field already set in this source. */
static int
conflict(const struct loader *ld, int idx)
{
	for (size_t i = 0; i < N_OPTIONS; i++) {
		if ((int) i != idx && options[i].off == options[idx].off
		    && options[i].kind != OPT_HELP
		    && options[i].kind != OPT_VERSION
		    && ld->set_at[i] == ld->src && ld->src > SRC_DEFAULT)
			return (int) i;
	}
	return -1;
}

/* Applies the text value (NULL: bare bool flag) to option idx. */
static int
apply_value(struct loader *ld, int idx, const char *value)
{
	const struct opt *o = &options[idx];
	char shown[48];
	int other = conflict(ld, idx), rc = CONFIG_OK;
	bool b;

	if (other >= 0)
		return bad(ld, o, "give only one of --%s and --%s",
		    options[other].name, o->name);
	if (!value)
		value = "true";
	switch (o->kind) {
	case OPT_STR:
	case OPT_CONFIG:
		if (set_string(field(ld->c, o), value))
			return out_of_memory(ld);
		break;
	case OPT_SECRET:
		free_secret(field(ld->c, o));
		if (set_string(field(ld->c, o), value))
			return out_of_memory(ld);
		if (ld->src == SRC_FLAG)
			warn(ld,
			    "--%s on the command line is visible to other "
			    "users; prefer --%s-file or the environment",
			    o->name, o->name);
		break;
	case OPT_SECRET_FILE:
		rc = apply_secret_file(ld, o, value);
		break;
	case OPT_FILE:
		rc = apply_file(ld, o, value);
		break;
	case OPT_PREFIX:
		if (!topic_prefix_valid(value))
			return bad(ld, o,
			    "\"%s\" is not a valid topic prefix (no '+', "
			    "'#', empty level or leading '$')",
			    shown_value(shown, sizeof shown, value));
		if (set_string(field(ld->c, o), value))
			return out_of_memory(ld);
		break;
	case OPT_BOOL:
		if (parse_bool(value, &b))
			return bad(ld, o,
			    "\"%s\" is not a boolean (use true or false)",
			    shown_value(shown, sizeof shown, value));
		*(bool *) field(ld->c, o) = b;
		break;
	case OPT_INT:
	case OPT_INT64:
	case OPT_UINT:
	case OPT_COUNT:
	case OPT_SIZE:
		rc = apply_integer(ld, o, value);
		break;
	case OPT_DOUBLE:
		rc = apply_double(ld, o, value);
		break;
	case OPT_ENUM:
		rc = apply_enum(ld, o, value);
		break;
	case OPT_HEADER:
	case OPT_LIST:
		rc = apply_list(ld, idx, value);
		break;
	case OPT_HTTP_URL:
	case OPT_MQTT_URL:
		rc = apply_url(ld, o, value);
		break;
	case OPT_HELP:
	case OPT_VERSION:
		break;
	}
	if (rc == CONFIG_OK) {
		ld->set_at[idx] = ld->src;
		ld->line_at[idx] = ld->line;
	}
	return rc;
}

static int
apply_defaults(struct loader *ld)
{
	ld->src = SRC_DEFAULT;
	for (size_t i = 0; i < N_OPTIONS; i++) {
		int rc;
		if (!options[i].def)
			continue;
		rc = apply_value(ld, (int) i, options[i].def);
		if (rc)
			return rc;
	}
	return CONFIG_OK;
}

static char *
trim(char *s)
{
	char *end;

	while (isspace((unsigned char) *s))
		s++;
	end = s + strlen(s);
	while (end > s && isspace((unsigned char) end[-1]))
		*--end = '\0';
	return s;
}

static int file_error(struct loader *ld, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
file_error(struct loader *ld, const char *fmt, ...)
{
	char problem[384];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(problem, sizeof problem, fmt, ap);
	va_end(ap);
	snprintf(
	    ld->err, ld->errlen, "%s:%u: %s", ld->file, ld->line, problem);
	return CONFIG_BAD_FILE;
}

/* Strips optional double quotes; a quoted value may be followed by a
 * comment. Unquoted values run to the end of the line, so a password may
 * hold '#'. Returns NULL on a syntax error. */
static char *
unquote(char *value)
{
	char *close, *rest;

	if (*value != '"')
		return value;
	close = strchr(value + 1, '"');
	if (!close)
		return NULL;
	rest = close + 1;
	while (isspace((unsigned char) *rest))
		rest++;
	if (*rest && *rest != '#')
		return NULL;
	*close = '\0';
	return value + 1;
}

static int
apply_file_line(struct loader *ld, char *line)
{
	char shown[48], *key, *value, *eq;
	const char *near;
	int idx;

	key = trim(line);
	if (!*key || *key == '#')
		return CONFIG_OK;
	eq = strchr(key, '=');
	if (!eq)
		return file_error(ld, "expected \"key = value\"");
	*eq = '\0';
	value = unquote(trim(eq + 1));
	key = trim(key);
	for (char *p = key; *p; p++)
		*p = (char) tolower((unsigned char) *p);
	idx = find_option(key, strlen(key));
	if (idx < 0 || options[idx].kind == OPT_CONFIG
	    || options[idx].kind == OPT_HELP
	    || options[idx].kind == OPT_VERSION) {
		shown_value(shown, sizeof shown, key);
		near = closest_option(key, strlen(key));
		if (idx < 0 && near)
			return file_error(ld,
			    "unknown key \"%s\" (hint: did you "
			    "mean \"%s\"?)",
			    shown, near);
		return file_error(
		    ld, "unknown key \"%s\" (hint: see --help)", shown);
	}
	if (!value)
		return file_error(ld, "%s: unterminated or misplaced '\"'",
		    options[idx].name);
	return apply_value(ld, idx, value);
}

static int
apply_config_file(struct loader *ld, const char *path, enum source from)
{
	char *line = NULL, shown[256];
	size_t cap = 0;
	ssize_t n;
	FILE *f;
	int rc = CONFIG_OK;

	ld->src = SRC_FILE;
	ld->file = path;
	ld->line = 0;
	f = fopen(path, "r");
	if (!f) {
		int idx = find_option("config", 6);
		bad_at(ld, &options[idx], from, 0, "cannot read \"%s\": %s",
		    shown_value(shown, sizeof shown, path), strerror(errno));
		return CONFIG_BAD_FILE;
	}
	while ((n = getline(&line, &cap, f)) >= 0) {
		ld->line++;
		if (strlen(line) != (size_t) n) {
			rc = file_error(ld, "NUL byte in line");
			break;
		}
		rc = apply_file_line(ld, line);
		if (rc)
			break;
	}
	if (rc == CONFIG_OK && ferror(f))
		rc = file_error(ld, "read error: %s", strerror(errno));
	if (line) {
		explicit_bzero(line, cap);
		free(line);
	}
	fclose(f);
	/* the file result is CONFIG_BAD_FILE whatever the option said */
	return rc ? CONFIG_BAD_FILE : CONFIG_OK;
}

static const char *
env_lookup(char *const *envp, const char *name)
{
	size_t n = strlen(name);

	for (char *const *e = envp; *e; e++) {
		if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
			return *e + n + 1;
	}
	return NULL;
}

static int
apply_environment(struct loader *ld, char *const *envp)
{
	const size_t plen = strlen(ENV_PREFIX);

	ld->src = SRC_ENV;
	ld->line = 0;
	for (char *const *e = envp; *e; e++) {
		const char *name, *eq;
		int idx = -1;
		if (strncmp(*e, ENV_PREFIX, plen) != 0)
			continue;
		name = *e + plen;
		eq = strchr(name, '=');
		if (!eq)
			continue;
		for (size_t i = 0; i < N_OPTIONS; i++) {
			char env[64];
			env_name(&options[i], env, sizeof env);
			if (strlen(env) == (size_t) (eq - *e)
			    && strncmp(env, *e, (size_t) (eq - *e)) == 0)
				idx = (int) i;
		}
		if (idx >= 0 && options[idx].kind == OPT_CONFIG)
			continue; /* read before the file */
		if (idx < 0 || options[idx].kind == OPT_HELP
		    || options[idx].kind == OPT_VERSION) {
			/* a stray variable must not stop a container */
			warn(ld, "ignoring unknown environment variable %.*s",
			    (int) (eq - *e > 64 ? 64 : eq - *e), *e);
			continue;
		}
		int rc = apply_value(ld, idx, eq + 1);
		if (rc)
			return rc;
	}
	return CONFIG_OK;
}

static int usage_error(struct loader *ld, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
usage_error(struct loader *ld, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(ld->err, ld->errlen, fmt, ap);
	va_end(ap);
	return CONFIG_USAGE;
}

/* Checks argv's shape and collects (option, value) pairs in order;
 * *help / *version are set when asked for. */
static int
scan_argv(struct loader *ld, int argc, char **argv, struct flag_value *out,
    int *n_out, bool *help, bool *version)
{
	char shown[48];

	*n_out = 0;
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i], *name, *eq, *value = NULL;
		const char *near;
		size_t name_len;
		int idx;

		if (strcmp(arg, "-h") == 0)
			arg = "--help";
		else if (strcmp(arg, "-V") == 0)
			arg = "--version";
		/* a stray word may be half of a secret: say where, not what */
		if (strncmp(arg, "--", 2) != 0 || !arg[2])
			return usage_error(ld,
			    "unexpected argument %d%s%s%s (hint: "
			    "options start with --, see --help)",
			    i, arg[0] == '-' ? " \"" : "",
			    arg[0] == '-'
			        ? shown_value(shown, sizeof shown, arg)
			        : "",
			    arg[0] == '-' ? "\"" : "");
		name = arg + 2;
		eq = strchr(name, '=');
		name_len = eq ? (size_t) (eq - name) : strlen(name);
		idx = find_option(name, name_len);
		if (idx < 0) {
			log_excerpt(shown, sizeof shown, name, name_len);
			near = closest_option(name, name_len);
			if (near)
				return usage_error(ld,
				    "unknown option --%s (hint: did "
				    "you mean --%s?)",
				    shown, near);
			return usage_error(ld,
			    "unknown option --%s (hint: see "
			    "--help)",
			    shown);
		}
		const struct opt *o = &options[idx];
		if (eq) {
			value = eq + 1;
			if (o->kind == OPT_HELP || o->kind == OPT_VERSION)
				return usage_error(
				    ld, "--%s takes no value", o->name);
		} else if (takes_value(o)) {
			if (i + 1 >= argc
			    || strncmp(argv[i + 1], "--", 2) == 0) {
				char example[256];
				hint(o, SRC_FLAG, example, sizeof example);
				return usage_error(ld,
				    "--%s: missing value (hint: %s)", o->name,
				    example);
			}
			value = argv[++i];
		}
		if (o->kind == OPT_HELP)
			*help = true;
		if (o->kind == OPT_VERSION)
			*version = true;
		out[*n_out].opt = idx;
		out[*n_out].value = value;
		(*n_out)++;
	}
	return CONFIG_OK;
}

static void
print_help(FILE *out)
{
	fputs("Usage: comfy2mqtt [OPTION]...\n"
	      "Publish a ComfyUI server's events to an MQTT broker.\n\n"
	      "Every option is also an environment variable COMFY2MQTT_<NAME> "
	      "and a key\n\"name = value\" in the --config file. Precedence: "
	      "defaults < file < environment\n< flags. Sizes accept K, M and "
	      "G suffixes (binary).\n\n",
	    out);
	for (size_t i = 0; i < N_OPTIONS; i++) {
		const struct opt *o = &options[i];
		char env[64];
		const char *def = o->def ? o->def : o->shown;

		if (o->kind == OPT_HELP)
			fputs("  -h, --help\n", out);
		else if (o->kind == OPT_VERSION)
			fputs("  -V, --version\n", out);
		else if (o->metavar)
			fprintf(out, "  --%s %s\n", o->name, o->metavar);
		else
			fprintf(out, "  --%s\n", o->name);
		fprintf(out, "      %s\n", o->help);
		if (o->kind == OPT_HELP || o->kind == OPT_VERSION)
			continue;
		env_name(o, env, sizeof env);
		if (o->kind == OPT_BOOL)
			def = "off";
		if (def)
			fprintf(out, "      env %s, default %s\n", env, def);
		else
			fprintf(out, "      env %s\n", env);
	}
	fflush(out);
}

static bool
header_named(const struct config *c, const char *name)
{
	size_t n = strlen(name);

	for (int i = 0; i < c->n_comfyui_headers; i++) {
		if (strncasecmp(c->comfyui_header[i], name, n) == 0
		    && c->comfyui_header[i][n] == ':')
			return true;
	}
	return false;
}

static void
base64(const unsigned char *in, size_t len, char *out)
{
	static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnop"
	                          "qrstuvwxyz0123456789+/";
	size_t i;

	for (i = 0; i + 2 < len; i += 3) {
		*out++ = tbl[in[i] >> 2];
		*out++ = tbl[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
		*out++ = tbl[((in[i + 1] & 15) << 2) | (in[i + 2] >> 6)];
		*out++ = tbl[in[i + 2] & 63];
	}
	if (i < len) {
		*out++ = tbl[in[i] >> 2];
		if (i + 1 < len) {
			*out++ = tbl[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
			*out++ = tbl[(in[i + 1] & 15) << 2];
		} else {
			*out++ = tbl[(in[i] & 3) << 4];
			*out++ = '=';
		}
		*out++ = '=';
	}
	*out = '\0';
}

/* Credentials in the ComfyUI URL become an HTTP Basic header, because the
 * ComfyUI connections only send headers. */
static int
comfy_credentials(struct loader *ld)
{
	struct config *c = ld->c;
	int idx = find_option("comfyui", 7);
	char plain[256], *header;
	size_t plain_len;

	if (!c->comfy.user[0] && !c->comfy.pass[0])
		return CONFIG_OK;
	if (header_named(c, "Authorization")) {
		warn(ld,
		    "ignoring the credentials in --comfyui: an "
		    "Authorization header is given");
		goto done;
	}
	if (c->n_comfyui_headers >= CONFIG_MAX_HEADERS)
		return bad_at(ld, &options[idx], ld->set_at[idx],
		    ld->line_at[idx],
		    "no room for the URL credentials' header (at most "
		    "%d headers)",
		    CONFIG_MAX_HEADERS);
	plain_len = (size_t) snprintf(
	    plain, sizeof plain, "%s:%s", c->comfy.user, c->comfy.pass);
	header
	    = malloc(sizeof "Authorization: Basic " + plain_len * 4 / 3 + 4);
	if (!header) {
		explicit_bzero(plain, sizeof plain);
		return out_of_memory(ld);
	}
	strcpy(header, "Authorization: Basic ");
	base64(
	    (const unsigned char *) plain, plain_len, header + strlen(header));
	explicit_bzero(plain, sizeof plain);
	c->comfyui_header[c->n_comfyui_headers++] = header;
	warn(ld,
	    "credentials in --comfyui are sent as HTTP Basic auth; "
	    "prefer --comfyui-header in the environment or config file");
done:
	explicit_bzero(c->comfy.user, sizeof c->comfy.user);
	explicit_bzero(c->comfy.pass, sizeof c->comfy.pass);
	return CONFIG_OK;
}

static int
mqtt_credentials(struct loader *ld)
{
	struct config *c = ld->c;

	if (c->broker.user[0] && !c->mqtt_username) {
		c->mqtt_username = strdup(c->broker.user);
		if (!c->mqtt_username)
			return out_of_memory(ld);
	}
	if (c->broker.pass[0]) {
		warn(ld,
		    "the --mqtt URL holds a password: prefer "
		    "--mqtt-password-file or COMFY2MQTT_MQTT_PASSWORD");
		if (!c->mqtt_password) {
			c->mqtt_password = strdup(c->broker.pass);
			if (!c->mqtt_password)
				return out_of_memory(ld);
		}
	}
	return CONFIG_OK;
}

static int
check_tls_pair(struct loader *ld)
{
	int cert = find_option("tls-cert", 8), key = find_option("tls-key", 7);

	if (ld->c->tls_cert && !ld->c->tls_key)
		return bad_at(ld, &options[cert], ld->set_at[cert],
		    ld->line_at[cert], "needs --tls-key as well");
	if (ld->c->tls_key && !ld->c->tls_cert)
		return bad_at(ld, &options[key], ld->set_at[key],
		    ld->line_at[key], "needs --tls-cert as well");
	return CONFIG_OK;
}

static int
derive_instance(struct loader *ld)
{
	struct config *c = ld->c;
	char clean[TOPIC_ID_MAX + 16], shown[48];
	const char *raw = c->instance ? c->instance : c->comfy.host;

	topic_sanitize(clean, sizeof clean, raw, strlen(raw));
	if (c->instance && strcmp(clean, c->instance) != 0)
		warn(ld, "--instance \"%s\" is used as \"%s\" in topics",
		    shown_value(shown, sizeof shown, c->instance), clean);
	if (set_string(&c->instance, clean))
		return out_of_memory(ld);
	return CONFIG_OK;
}

/* The ComfyUI clientId goes into a URL query: unreserved characters only. */
static int
derive_client_id(struct loader *ld)
{
	struct config *c = ld->c;
	int idx = find_option("client-id", 9);
	char buf[CLIENT_ID_MAX + 32];

	if (!c->client_id) {
		snprintf(buf, sizeof buf, "comfy2mqtt-%s", c->instance);
		return set_string(&c->client_id, buf) ? out_of_memory(ld)
		                                      : CONFIG_OK;
	}
	if (strlen(c->client_id) > CLIENT_ID_MAX)
		return bad_at(ld, &options[idx], ld->set_at[idx],
		    ld->line_at[idx], "longer than %d bytes", CLIENT_ID_MAX);
	for (const char *p = c->client_id; *p; p++) {
		if (!isalnum((unsigned char) *p) && !strchr("-._~:", *p))
			return bad_at(ld, &options[idx], ld->set_at[idx],
			    ld->line_at[idx],
			    "may hold only letters, digits and -._~:");
	}
	return CONFIG_OK;
}

static uint32_t
fnv1a(uint32_t h, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char) s[i];
		h *= 16777619u;
	}
	return h;
}

/* "comfy2mqtt-<instance, 5 chars>-<6 hex>" (contract 1): at most 23 bytes
 * of [A-Za-z0-9_-], which every MQTT 3.1.1 broker accepts; the hash of host
 * and whole instance keeps two bridges from taking each other's session. */
static int
derive_mqtt_client_id(struct loader *ld)
{
	struct config *c = ld->c;
	int idx = find_option("mqtt-client-id", 14);
	char host[256] = "", id[32], part[6];
	size_t n = 0;
	uint32_t h;

	if (c->mqtt_client_id) {
		size_t len = strlen(c->mqtt_client_id);
		for (const char *p = c->mqtt_client_id; *p; p++) {
			if ((unsigned char) *p < 0x20 || *p == 0x7f)
				return bad_at(ld, &options[idx],
				    ld->set_at[idx], ld->line_at[idx],
				    "holds a control character");
		}
		if (c->mqtt_protocol == MQTT_PROTO_311
		    && len > MQTT311_CLIENT_ID_MAX)
			return bad_at(ld, &options[idx], ld->set_at[idx],
			    ld->line_at[idx],
			    "%zu bytes is longer than the %d that MQTT "
			    "3.1.1 brokers must accept",
			    len, MQTT311_CLIENT_ID_MAX);
		if (len > 65535)
			return bad_at(ld, &options[idx], ld->set_at[idx],
			    ld->line_at[idx], "too long");
		return CONFIG_OK;
	}
	if (gethostname(host, sizeof host - 1) != 0)
		host[0] = '\0';
	h = fnv1a(2166136261u, host, strlen(host));
	h = fnv1a(h, "", 1);
	h = fnv1a(h, c->instance, strlen(c->instance));
	for (const char *p = c->instance; *p && n < sizeof part - 1; p++) {
		unsigned char ch = (unsigned char) *p;
		part[n++] = (isalnum(ch) || ch == '_' || ch == '-') ? (char) ch
		                                                    : '-';
	}
	part[n] = '\0';
	snprintf(id, sizeof id, "comfy2mqtt-%s-%06x", part,
	    (unsigned) ((h ^ (h >> 24)) & 0xffffffu));
	return set_string(&c->mqtt_client_id, id) ? out_of_memory(ld)
	                                          : CONFIG_OK;
}

static int
finish(struct loader *ld)
{
	int rc;

	rc = comfy_credentials(ld);
	if (!rc)
		rc = mqtt_credentials(ld);
	if (!rc)
		rc = check_tls_pair(ld);
	if (!rc)
		rc = derive_instance(ld);
	if (!rc)
		rc = derive_client_id(ld);
	if (!rc)
		rc = derive_mqtt_client_id(ld);
	return rc;
}

/* c owns copies of every string it keeps; argv, envp and the files are
 * only read. Queued warnings are logged once the log options are known. */
int
config_load(struct config *c, int argc, char **argv, char *const *envp,
    char *err, size_t errlen, FILE *out)
{
	static char errbuf_unused[1];
	struct loader *ld;
	struct flag_value *flags = NULL;
	const char *config_path = NULL;
	enum source config_from = SRC_NONE;
	bool help = false, version = false;
	int n_flags = 0, rc;

	memset(c, 0, sizeof *c);
	if (!err || errlen == 0) {
		err = errbuf_unused;
		errlen = sizeof errbuf_unused;
	}
	err[0] = '\0';
	if (!envp)
		envp = environ;
	if (!out)
		out = stdout;
	ld = calloc(1, sizeof *ld);
	flags = calloc((size_t) (argc > 0 ? argc : 1), sizeof *flags);
	if (!ld || !flags) {
		snprintf(err, errlen, "out of memory");
		rc = CONFIG_USAGE;
		goto done;
	}
	ld->c = c;
	ld->err = err;
	ld->errlen = errlen;

	rc = scan_argv(ld, argc, argv, flags, &n_flags, &help, &version);
	if (rc)
		goto done;
	if (help || version) {
		if (help)
			print_help(out);
		else
			fprintf(out, "comfy2mqtt %s\n", C2M_VERSION);
		fflush(out);
		rc = CONFIG_EXIT_OK;
		goto done;
	}

	rc = apply_defaults(ld);
	if (rc)
		goto done;

	/* the file comes first in precedence but is named by env or flag */
	config_path = env_lookup(envp, ENV_PREFIX "CONFIG");
	if (config_path && *config_path)
		config_from = SRC_ENV;
	for (int i = 0; i < n_flags; i++) {
		if (options[flags[i].opt].kind == OPT_CONFIG) {
			config_path = flags[i].value;
			config_from = SRC_FLAG;
		}
	}
	if (config_from != SRC_NONE) {
		int idx = find_option("config", 6);
		ld->src = config_from;
		rc = apply_value(ld, idx, config_path);
		if (!rc)
			rc = apply_config_file(ld, config_path, config_from);
		if (rc)
			goto done;
	}

	rc = apply_environment(ld, envp);
	if (rc)
		goto done;

	ld->src = SRC_FLAG;
	ld->line = 0;
	for (int i = 0; i < n_flags; i++) {
		if (options[flags[i].opt].kind == OPT_CONFIG)
			continue;
		rc = apply_value(ld, flags[i].opt, flags[i].value);
		if (rc)
			goto done;
	}

	rc = finish(ld);
	if (rc)
		goto done;
	/* warnings collected so far use the configured log format */
	log_setup(
	    (enum log_level) c->log_level, (enum log_format) c->log_format);
	for (int i = 0; i < ld->n_warnings; i++)
		log_warn("config", "%s", ld->warnings[i]);

done:
	if (ld)
		explicit_bzero(ld, sizeof *ld);
	free(ld);
	free(flags);
	return rc;
}

/* Frees and wipes (secrets included) everything c owns. */
void
config_free(struct config *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < N_OPTIONS; i++) {
		const struct opt *o = &options[i];
		switch (o->kind) {
		case OPT_STR:
		case OPT_SECRET:
		case OPT_FILE:
		case OPT_PREFIX:
		case OPT_CONFIG:
		case OPT_HTTP_URL:
		case OPT_MQTT_URL:
			free_secret(field(c, o));
			break;
		case OPT_HEADER:
		case OPT_LIST:
			clear_list(
			    field(c, o), (int *) ((char *) c + o->off2));
			break;
		default:
			break;
		}
	}
	explicit_bzero(c, sizeof *c);
}

/* Reads type[0..len) only. */
bool
config_event_allowed(const struct config *c, const char *type, size_t len)
{
	if (c->n_events == 0)
		return true;
	for (int i = 0; i < c->n_events; i++) {
		if (strlen(c->events[i]) == len
		    && memcmp(c->events[i], type, len) == 0)
			return true;
	}
	return false;
}

static void
json_key_for(const struct opt *o, char *dst, size_t cap)
{
	size_t n = (size_t) snprintf(dst, cap, "%s", o->name);

	for (size_t i = 0; i < n && i < cap; i++) {
		if (dst[i] == '-')
			dst[i] = '_';
	}
}

static void
write_option_json(const struct config *c, const struct opt *o, struct jsonw *w)
{
	char key[64], url[1024];
	const void *f = cfield(c, o);

	json_key_for(o, key, sizeof key);
	switch (o->kind) {
	case OPT_STR:
	case OPT_FILE:
	case OPT_PREFIX:
	case OPT_CONFIG:
		if (*(char *const *) f)
			jsonw_kstr(w, key, *(char *const *) f);
		else
			jsonw_knull(w, key);
		break;
	case OPT_HTTP_URL:
	case OPT_MQTT_URL:
		url_format_public(
		    (const struct url *) ((const char *) c + o->off2), url,
		    sizeof url);
		jsonw_kstr(w, key, url);
		break;
	case OPT_BOOL:
		jsonw_kbool(w, key, *(const bool *) f);
		break;
	case OPT_INT:
		jsonw_kint(w, key, *(const int *) f);
		break;
	case OPT_INT64:
		jsonw_kint(w, key, *(const int64_t *) f);
		break;
	case OPT_UINT:
		jsonw_kint(w, key, *(const unsigned *) f);
		break;
	case OPT_COUNT:
	case OPT_SIZE:
		jsonw_key(w, key);
		jsonw_uint(w, *(const size_t *) f);
		break;
	case OPT_DOUBLE:
		jsonw_key(w, key);
		jsonw_double(w, *(const double *) f);
		break;
	case OPT_ENUM:
		for (const struct choice *ch = o->choices; ch->text; ch++) {
			if (ch->value == *(const int *) f) {
				jsonw_kstr(w, key, ch->text);
				break;
			}
		}
		break;
	case OPT_HEADER:
	case OPT_LIST: {
		char *const *items = f;
		int n = *(const int *) ((const char *) c + o->off2);
		if (o->kind == OPT_LIST && n == 0) {
			jsonw_knull(w, key); /* all events */
			break;
		}
		jsonw_key(w, key);
		jsonw_arr_begin(w);
		for (int i = 0; i < n; i++) {
			/* a header's name only: its value may be a token */
			size_t len = o->kind == OPT_HEADER
			    ? strcspn(items[i], ":")
			    : strlen(items[i]);
			jsonw_strn(w, items[i], len);
		}
		jsonw_arr_end(w);
		break;
	}
	default: /* secrets, help, version */
		break;
	}
}

/* Copies values into w's buffer; passwords and header values are left
 * out, URLs are written without credentials. */
void
config_write_json(const struct config *c, struct jsonw *w)
{
	for (size_t i = 0; i < N_OPTIONS; i++)
		write_option_json(c, &options[i], w);
	jsonw_kbool(w, "mqtt_password_set", c->mqtt_password != NULL);
}
