/* Options from defaults, a config file, COMFY2MQTT_* variables and flags.
 *
 * This file holds the sources and their precedence. Each source only finds
 * an option by name and hands its text to apply_value() (apply.c), so a
 * value means the same wherever it came from. Sources are applied in
 * precedence order and later ones overwrite earlier ones; the derivation
 * rules (derive.c) run last. The table is in option.c, --help and the
 * bridge/info writer in show.c. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "loader.h"
#include "log.h"

#ifndef C2M_VERSION
#define C2M_VERSION "0.0.0"
#endif

struct flag_value {
	int opt;
	const char *value; /* NULL for a bool flag without value */
};

static int
apply_defaults(struct loader *ld)
{
	ld->src = SRC_DEFAULT;
	for (size_t i = 0; i < n_options; i++) {
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

/* A key given twice is likely a forgotten line: the last one wins, as
 * flags do, but say so. A list key adds to its list instead. */
static void
warn_duplicate(struct loader *ld, int idx)
{
	const struct opt *o = &options[idx];

	if (ld->set_at[idx] != SRC_FILE || o->kind == OPT_HEADER
	    || o->kind == OPT_LIST || o->kind == OPT_SERVER)
		return;
	loader_warn(ld,
	    "%s:%u: %s is also set on line %u; the value on line %u is used",
	    ld->file, ld->line, o->name, ld->line_at[idx], ld->line);
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
	idx = option_find(key, strlen(key));
	if (idx < 0 || options[idx].kind == OPT_CONFIG
	    || option_is_action(&options[idx])) {
		shown_value(shown, sizeof shown, key);
		near = option_closest(key, strlen(key));
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
	warn_duplicate(ld, idx);
	return apply_value(ld, idx, value);
}

/* A config file holds a few dozen lines; the cap keeps a wrong path
 * (/dev/zero, a log file) from taking the memory. */
#define CONFIG_FILE_MAX (1024 * 1024)
#define READ_CHUNK      (64 * 1024)

/* Reads all of the file at path into b, failing with 78 past the cap.
 * Sized from fstat up front, so the buffer holding secrets is not
 * reallocated (and its old copies left unwiped) for a regular file. */
static int
read_config_file(
    struct loader *ld, const char *path, enum source from, struct buf *b)
{
	const struct opt *o = &options[option_index("config")];
	char shown[256];
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC), rc = CONFIG_OK;

	shown_value(shown, sizeof shown, path);
	if (fd < 0)
		return bad_at(ld, o, from, 0, "cannot read \"%s\": %s", shown,
		    strerror(errno));
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0
	    && buf_reserve(b,
	        (size_t) st.st_size < CONFIG_FILE_MAX ? (size_t) st.st_size + 1
	                                              : CONFIG_FILE_MAX + 1))
		rc = out_of_memory(ld);
	while (rc == CONFIG_OK) {
		size_t room = CONFIG_FILE_MAX + 1 - b->len;
		ssize_t n;
		if (b->cap - b->len <= 1 && buf_reserve(b, READ_CHUNK)) {
			rc = out_of_memory(ld);
			break;
		}
		if (room > b->cap - b->len - 1)
			room = b->cap - b->len - 1;
		n = read(fd, b->p + b->len, room);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			rc = bad_at(ld, o, from, 0, "cannot read \"%s\": %s",
			    shown, strerror(errno));
		if (n <= 0)
			break;
		b->len += (size_t) n;
		b->p[b->len] = '\0';
		if (b->len > CONFIG_FILE_MAX)
			rc = bad_at(ld, o, from, 0,
			    "\"%s\" is larger than 1 MiB, the most a config "
			    "file may hold",
			    shown);
	}
	close(fd);
	return rc;
}

/* Applies the lines of text (len bytes, NUL-terminated) in order. */
static int
apply_file_text(struct loader *ld, char *text, size_t len)
{
	char *p = text, *end = text + len;
	int rc = CONFIG_OK;

	/* editors on Windows start UTF-8 files with a byte order mark */
	if (len >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0)
		p += 3;
	while (p < end && rc == CONFIG_OK) {
		char *eol = memchr(p, '\n', (size_t) (end - p));
		if (!eol)
			eol = end;
		ld->line++;
		if (memchr(p, '\0', (size_t) (eol - p)))
			return file_error(ld, "NUL byte in line");
		*eol = '\0';
		rc = apply_file_line(ld, p);
		p = eol + 1;
	}
	return rc;
}

static int
apply_config_file(struct loader *ld, const char *path, enum source from)
{
	struct buf text = { 0 };
	int rc;

	ld->src = SRC_FILE;
	ld->file = path;
	ld->line = 0;
	rc = read_config_file(ld, path, from, &text);
	if (rc == CONFIG_OK && text.len > 0)
		rc = apply_file_text(ld, text.p, text.len);
	if (text.p)
		explicit_bzero(text.p, text.cap);
	buf_free(&text);
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
		for (size_t i = 0; i < n_options; i++) {
			char env[64];
			option_env_name(&options[i], env, sizeof env);
			if (strlen(env) == (size_t) (eq - *e)
			    && strncmp(env, *e, (size_t) (eq - *e)) == 0)
				idx = (int) i;
		}
		if (idx >= 0 && options[idx].kind == OPT_CONFIG)
			continue; /* read before the file */
		if (idx < 0 || option_is_action(&options[idx])) {
			/* a stray variable must not stop a container */
			loader_warn(ld,
			    "ignoring unknown environment variable %.*s",
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
		idx = option_find(name, name_len);
		if (idx < 0) {
			log_excerpt(shown, sizeof shown, name, name_len);
			near = option_closest(name, name_len);
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
			if (option_is_action(o))
				return usage_error(
				    ld, "--%s takes no value", o->name);
		} else if (option_takes_value(o)) {
			if (i + 1 >= argc
			    || strncmp(argv[i + 1], "--", 2) == 0) {
				char example[256];
				option_hint(
				    o, SRC_FLAG, example, sizeof example);
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

/* The config file comes first in precedence but is named by the
 * environment or a flag (the last --config wins). */
static int
apply_config_source(struct loader *ld, char *const *envp,
    const struct flag_value *flags, int n_flags)
{
	const char *path = env_lookup(envp, ENV_PREFIX "CONFIG");
	enum source from = path && *path ? SRC_ENV : SRC_NONE;
	int idx = option_index("config"), rc;

	for (int i = 0; i < n_flags; i++) {
		if (flags[i].opt == idx) {
			path = flags[i].value;
			from = SRC_FLAG;
		}
	}
	if (from == SRC_NONE)
		return CONFIG_OK;
	ld->src = from;
	rc = apply_value(ld, idx, path);
	if (!rc)
		rc = apply_config_file(ld, path, from);
	return rc;
}

/* Defaults < file < environment < flags, then the derivation rules. */
static int
apply_sources(struct loader *ld, char *const *envp,
    const struct flag_value *flags, int n_flags)
{
	int rc = apply_defaults(ld);

	if (!rc)
		rc = apply_config_source(ld, envp, flags, n_flags);
	if (!rc)
		rc = apply_environment(ld, envp);
	ld->src = SRC_FLAG;
	ld->line = 0;
	for (int i = 0; i < n_flags && !rc; i++) {
		if (options[flags[i].opt].kind != OPT_CONFIG)
			rc = apply_value(ld, flags[i].opt, flags[i].value);
	}
	if (!rc)
		rc = config_derive(ld);
	return rc;
}

/* Parses argv, prints --help or --version, or applies every source. */
static int
run_loader(
    struct loader *ld, int argc, char **argv, char *const *envp, FILE *out)
{
	struct flag_value *flags;
	bool help = false, version = false;
	int n_flags = 0, rc;

	flags = calloc((size_t) (argc > 0 ? argc : 1), sizeof *flags);
	if (!flags)
		return out_of_memory(ld);
	rc = scan_argv(ld, argc, argv, flags, &n_flags, &help, &version);
	if (!rc && (help || version)) {
		if (help)
			config_print_help(out);
		else
			fprintf(out, "comfy2mqtt %s\n", C2M_VERSION);
		fflush(out);
		rc = CONFIG_EXIT_OK;
	} else if (!rc) {
		rc = apply_sources(ld, envp, flags, n_flags);
	}
	free(flags);
	return rc;
}

/* c owns copies of every string it keeps; argv, envp and the files are
 * only read. Warnings wait in c until main has set up logging. */
int
config_load(struct config *c, int argc, char **argv, char *const *envp,
    char *err, size_t errlen, FILE *out)
{
	static char errbuf_unused[1];
	struct loader *ld;
	int rc;

	memset(c, 0, sizeof *c);
	if (!err || errlen == 0) {
		err = errbuf_unused;
		errlen = sizeof errbuf_unused;
	}
	err[0] = '\0';
	ld = calloc(1, sizeof *ld);
	if (!ld) {
		snprintf(err, errlen, "out of memory");
		return CONFIG_USAGE;
	}
	ld->c = c;
	ld->err = err;
	ld->errlen = errlen;
	rc = run_loader(
	    ld, argc, argv, envp ? envp : environ, out ? out : stdout);
	explicit_bzero(ld, sizeof *ld);
	free(ld);
	return rc;
}

/* Logging is main's: it knows the level and format only after this load,
 * and a warning must come out in the format asked for. */
void
config_log_warnings(const struct config *c)
{
	for (int i = 0; i < c->n_warnings; i++)
		log_warn("config", "%s", c->warnings[i]);
}

/* Frees and wipes (secrets included) everything c owns. */
void
config_free(struct config *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < n_options; i++) {
		const struct opt *o = &options[i];
		switch (o->kind) {
		case OPT_STR:
		case OPT_SECRET:
		case OPT_FILE:
		case OPT_PREFIX:
		case OPT_CONFIG:
		case OPT_MQTT_URL:
			free_secret(OPT_FIELD(c, o));
			break;
		case OPT_SERVER:
			clear_servers(c);
			break;
		case OPT_HEADER:
		case OPT_LIST:
			clear_list(OPT_FIELD(c, o), OPT_FIELD2(c, o));
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
