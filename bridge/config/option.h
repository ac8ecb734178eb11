/* The option table: one entry per option drives the three sources (command
 * line, config file, environment), --help and the bridge/info writer.
 * Private to bridge/config. */
#ifndef C2M_CONFIG_OPTION_H
#define C2M_CONFIG_OPTION_H

#include <stdbool.h>
#include <stddef.h>

#define ENV_PREFIX "COMFY2MQTT_"
/* Room for every option in per-option arrays (checked in option.c). */
#define OPTIONS_MAX 48

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
	OPT_SERVER, /* struct config_server * + int count at off2, repeatable:
	               [INSTANCE=]URL; comma-separated in the environment */
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
	bool flag_nonempty; /* "" on the command line is an error, not
	                       "unset" (the file and environment unset) */
	bool per_server; /* the value in effect differs per server: the char *
	                    at soff in struct config_server */
	size_t soff;
};

/* The table, in --help order. */
extern const struct opt options[];
extern const size_t n_options;

/* The fields of struct config (c) that option o writes: off and off2. */
#define OPT_FIELD(c, o)   ((void *) ((char *) (c) + (o)->off))
#define OPT_FIELD2(c, o)  ((void *) ((char *) (c) + (o)->off2))
#define OPT_CFIELD(c, o)  ((const void *) ((const char *) (c) + (o)->off))
#define OPT_CFIELD2(c, o) ((const void *) ((const char *) (c) + (o)->off2))

/* true for options followed by a value ("--prefix P", not "--print"). */
bool option_takes_value(const struct opt *o);
/* true for --help and --version, which set nothing. */
bool option_is_action(const struct opt *o);
/* Index of the option called name (n bytes, '_' and '-' alike), or -1. */
int option_find(const char *name, size_t n);
/* Index of the option called name (a NUL-terminated table name). */
int option_index(const char *name);
/* The option name closest to name (n bytes), or NULL if none is close:
 * for "did you mean" hints. */
const char *option_closest(const char *name, size_t n);
/* "COMFY2MQTT_MQTT_PASSWORD" for mqtt-password, into dst (cap bytes). */
void option_env_name(const struct opt *o, char *dst, size_t cap);
/* An example of setting o correctly in source src: "--x 1", "x = 1",
 * "COMFY2MQTT_X=1". */
void option_hint(const struct opt *o, enum source src, char *dst, size_t cap);

#endif
