/* One parser for every source: a value means the same whether it came
 * from a flag, the environment or the config file. Each option kind has
 * its apply function; apply_value() dispatches on the table entry.
 *
 * Secrets (the MQTT password, header values, URL passwords) are never
 * echoed: errors about them name the option only. */
#include "loader.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "err.h"
#include "log.h"
#include "topic.h"

const char *
shown_value(char *dst, unsigned cap, const char *value)
{
	return log_excerpt(dst, cap, value, strlen(value));
}

void
loader_warn(struct loader *ld, const char *fmt, ...)
{
	struct config *c = ld->c;
	va_list ap;

	if (c->n_warnings >= CONFIG_MAX_WARNINGS)
		return;
	va_start(ap, fmt);
	vsnprintf(
	    c->warnings[c->n_warnings++], sizeof c->warnings[0], fmt, ap);
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
		option_env_name(o, dst, cap);
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

static int
result_for(enum source src)
{
	return src == SRC_FILE ? CONFIG_BAD_FILE : CONFIG_USAGE;
}

int
bad_at(struct loader *ld, const struct opt *o, enum source src, unsigned line,
    const char *fmt, ...)
{
	char where[320], problem[512], example[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(problem, sizeof problem, fmt, ap);
	va_end(ap);
	describe(ld, o, src, line, where, sizeof where);
	option_hint(o, src, example, sizeof example);
	snprintf(
	    ld->err, ld->errlen, "%s: %s (hint: %s)", where, problem, example);
	return result_for(src);
}

int
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

void
free_secret(char **slot)
{
	if (*slot) {
		explicit_bzero(*slot, strlen(*slot));
		free(*slot);
		*slot = NULL;
	}
}

int
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
		*(int *) OPT_FIELD(ld->c, o) = (int) v;
		break;
	case OPT_INT64:
		*(int64_t *) OPT_FIELD(ld->c, o) = (int64_t) v;
		break;
	case OPT_UINT:
		*(unsigned *) OPT_FIELD(ld->c, o) = (unsigned) v;
		break;
	default:
		*(size_t *) OPT_FIELD(ld->c, o) = (size_t) v;
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
	*(double *) OPT_FIELD(ld->c, o) = v;
	return CONFIG_OK;
}

static int
apply_enum(struct loader *ld, const struct opt *o, const char *value)
{
	char shown[48];

	for (const struct choice *ch = o->choices; ch->text; ch++) {
		if (strcasecmp(ch->text, value) == 0) {
			*(int *) OPT_FIELD(ld->c, o) = ch->value;
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
	if (set_string(OPT_FIELD(ld->c, o), value))
		return out_of_memory(ld);
	return CONFIG_OK;
}

/* Reads the first line of the file named by value into the secret. */
static int
apply_secret_file(struct loader *ld, const struct opt *o, const char *value)
{
	char why[128], shown[256];
	char *line = NULL, **slot = OPT_FIELD(ld->c, o);
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

/* Leaves out the white space around *text (*len bytes). */
static void
trim_span(const char **text, size_t *len)
{
	while (*len > 0 && isspace((unsigned char) **text)) {
		(*text)++;
		(*len)--;
	}
	while (*len > 0 && isspace((unsigned char) (*text)[*len - 1]))
		(*len)--;
}

void
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
	char **items = OPT_FIELD(ld->c, o);
	int *count = OPT_FIELD2(ld->c, o);
	const char *colon = memchr(text, ':', len), *val;
	size_t name_len;
	char *copy;

	/* checked before trimming: a line break would end the header and
	 * start another one on the wire */
	if (memchr(text, '\r', len) || memchr(text, '\n', len))
		return bad(ld, o,
		    "a header may not hold a line break (CR or LF); give "
		    "each header on its own: one per --%s, one per line "
		    "(LF only) in the environment",
		    o->name);
	trim_span(&text, &len);
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
	char **items = OPT_FIELD(ld->c, o);
	int *count = OPT_FIELD2(ld->c, o);
	char shown[48];

	trim_span(&text, &len);
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

void
clear_servers(struct config *c)
{
	for (int i = 0; i < c->n_servers; i++) {
		struct config_server *s = &c->server[i];
		free_secret(&s->name);
		clear_list(s->headers, &s->n_headers);
		free_secret(&s->instance);
		free_secret(&s->client_id);
		free_secret(&s->mqtt_client_id);
	}
	if (c->server)
		explicit_bzero(
		    c->server, CONFIG_MAX_SERVERS * sizeof *c->server);
	free(c->server);
	c->server = NULL;
	c->n_servers = 0;
}

/* Appends one "[INSTANCE=]URL": an '=' before the "://" ends the instance
 * name. The array has room for every server from the start, so URL
 * credentials are never left behind in a reallocated block. */
static int
add_server(
    struct loader *ld, const struct opt *o, const char *text, size_t len)
{
	struct config *c = ld->c;
	char why[160], *copy, *url, *eq, *scheme;
	struct config_server *s;

	trim_span(&text, &len);
	if (len == 0)
		return CONFIG_OK;
	if (c->n_servers >= o->hi)
		return bad(ld, o, "too many servers (at most %lld)", o->hi);
	if (!c->server && !(c->server = calloc(CONFIG_MAX_SERVERS, sizeof *s)))
		return out_of_memory(ld);
	if (!(copy = strndup(text, len)))
		return out_of_memory(ld);
	url = copy;
	scheme = strstr(copy, "://");
	eq = strchr(copy, '=');
	s = &c->server[c->n_servers];
	if (eq && scheme && eq < scheme) {
		*eq = '\0';
		url = eq + 1;
		if (!*copy) {
			free_secret(&copy);
			return bad(
			    ld, o, "the instance name before '=' is empty");
		}
		if (set_string(&s->name, copy)) {
			free_secret(&copy);
			return out_of_memory(ld);
		}
	}
	int rc = url_parse(url, "http,https", &s->comfy, why, sizeof why);
	free_secret(&copy);
	if (rc) {
		free_secret(&s->name);
		explicit_bzero(&s->comfy, sizeof s->comfy);
		return bad(ld, o, "%s", why);
	}
	c->n_servers++;
	return CONFIG_OK;
}

/* Event lists are split per comma. Headers are split per line and servers
 * per comma in the environment only, which has one variable for all; a
 * flag or a file line holds one header or server. A source replaces the
 * list of a lower source. */
static int
apply_list(struct loader *ld, int idx, const char *value)
{
	const struct opt *o = &options[idx];
	char sep = o->kind == OPT_LIST ? ','
	    : ld->src != SRC_ENV       ? '\0'
	    : o->kind == OPT_SERVER    ? ','
	                               : '\n';
	int rc;

	if (ld->set_at[idx] < ld->src) {
		if (o->kind == OPT_SERVER)
			clear_servers(ld->c);
		else
			clear_list(OPT_FIELD(ld->c, o), OPT_FIELD2(ld->c, o));
	}
	for (const char *p = value;;) {
		size_t n = strcspn(p, (char[]) { sep, '\0' });
		rc = o->kind == OPT_HEADER  ? add_header(ld, o, p, n)
		    : o->kind == OPT_SERVER ? add_server(ld, o, p, n)
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
	struct url *u = OPT_FIELD2(ld->c, o);
	struct url parsed;
	char why[160];
	int rc;

	rc = url_parse(value, "mqtt,mqtts", &parsed, why, sizeof why);
	if (rc) {
		explicit_bzero(&parsed, sizeof parsed);
		return bad(ld, o, "%s", why);
	}
	if (set_string(OPT_FIELD(ld->c, o), value)) {
		explicit_bzero(&parsed, sizeof parsed);
		return out_of_memory(ld);
	}
	*u = parsed;
	explicit_bzero(&parsed, sizeof parsed);
	return CONFIG_OK;
}

static int
apply_secret(struct loader *ld, const struct opt *o, const char *value)
{
	free_secret(OPT_FIELD(ld->c, o));
	if (set_string(OPT_FIELD(ld->c, o), value))
		return out_of_memory(ld);
	if (ld->src == SRC_FLAG)
		loader_warn(ld,
		    "--%s on the command line is visible to other "
		    "users; prefer --%s-file or the environment",
		    o->name, o->name);
	return CONFIG_OK;
}

static int
apply_prefix(struct loader *ld, const struct opt *o, const char *value)
{
	char shown[48];

	if (!topic_prefix_valid(value))
		return bad(ld, o,
		    "\"%s\" is not a valid topic prefix (no '+', "
		    "'#', empty level or leading '$')",
		    shown_value(shown, sizeof shown, value));
	if (set_string(OPT_FIELD(ld->c, o), value))
		return out_of_memory(ld);
	return CONFIG_OK;
}

static int
apply_bool(struct loader *ld, const struct opt *o, const char *value)
{
	char shown[48];
	bool b;

	if (parse_bool(value, &b))
		return bad(ld, o,
		    "\"%s\" is not a boolean (use true or false)",
		    shown_value(shown, sizeof shown, value));
	*(bool *) OPT_FIELD(ld->c, o) = b;
	return CONFIG_OK;
}

/* Another option writing the same field already set in this source. */
static int
conflict(const struct loader *ld, int idx)
{
	for (size_t i = 0; i < n_options; i++) {
		if ((int) i != idx && options[i].off == options[idx].off
		    && !option_is_action(&options[i])
		    && ld->set_at[i] == ld->src && ld->src > SRC_DEFAULT)
			return (int) i;
	}
	return -1;
}

int
apply_value(struct loader *ld, int idx, const char *value)
{
	const struct opt *o = &options[idx];
	int other = conflict(ld, idx), rc = CONFIG_OK;

	if (other >= 0)
		return bad(ld, o, "give only one of --%s and --%s",
		    options[other].name, o->name);
	if (!value)
		value = "true";
	/* an empty flag is usually an unset shell variable */
	if (o->flag_nonempty && ld->src == SRC_FLAG && !*value)
		return bad(ld, o,
		    "is empty; give a value, or leave --%s out for the "
		    "default (%s)",
		    o->name, o->shown);
	switch (o->kind) {
	case OPT_STR:
	case OPT_CONFIG:
		if (set_string(OPT_FIELD(ld->c, o), value))
			return out_of_memory(ld);
		break;
	case OPT_SECRET:
		rc = apply_secret(ld, o, value);
		break;
	case OPT_SECRET_FILE:
		rc = apply_secret_file(ld, o, value);
		break;
	case OPT_FILE:
		rc = apply_file(ld, o, value);
		break;
	case OPT_PREFIX:
		rc = apply_prefix(ld, o, value);
		break;
	case OPT_BOOL:
		rc = apply_bool(ld, o, value);
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
	case OPT_SERVER:
		rc = apply_list(ld, idx, value);
		break;
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
