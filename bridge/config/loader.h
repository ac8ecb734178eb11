/* The state of one config_load() call, shared by the sources (config.c),
 * the value parser (apply.c) and the derivation rules (derive.c). Private
 * to bridge/config. */
#ifndef C2M_CONFIG_LOADER_H
#define C2M_CONFIG_LOADER_H

#include <stddef.h>
#include <stdio.h>

#include "config.h"
#include "option.h"

struct loader {
	struct config *c;
	char *err;
	size_t errlen;
	enum source src; /* source being applied */
	const char *file;
	unsigned line;
	enum source set_at[OPTIONS_MAX];
	unsigned line_at[OPTIONS_MAX];
};

/* Applies the text value (NULL: bare bool flag) to option idx from the
 * source ld->src. Returns CONFIG_OK or the exit code, with ld->err set. */
int apply_value(struct loader *ld, int idx, const char *value);

/* Checks option pairs and derives what was not given: the instance from
 * the ComfyUI host, both client ids, credentials from URLs. */
int config_derive(struct loader *ld);

/* Writes the --help text, one entry per option, to out. */
void config_print_help(FILE *out);

/* Adds a warning to ld->c->warnings, for main to log (never a secret:
 * name options, not values). */
void loader_warn(struct loader *ld, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Writes "<where>: <problem> (hint: <example>)" into ld->err and returns
 * the exit code for src (78 for the file, 64 otherwise). */
int bad_at(struct loader *ld, const struct opt *o, enum source src,
    unsigned line, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#define bad(ld, o, ...) bad_at(ld, o, (ld)->src, (ld)->line, __VA_ARGS__)

/* The same, blaming wherever option idx was last set. */
#define bad_set(ld, idx, ...)                                                 \
	bad_at(ld, &options[idx], (ld)->set_at[idx], (ld)->line_at[idx],      \
	    __VA_ARGS__)

int out_of_memory(struct loader *ld);

/* Replaces *slot by a copy of value ("" or NULL: by NULL). Returns BR_OK
 * or BR_ENOMEM. */
int set_string(char **slot, const char *value);
/* Wipes and frees *slot. */
void free_secret(char **slot);
/* Wipes and frees the count items of a list option; *count becomes 0. */
void clear_list(char **items, int *count);
/* Wipes and frees every server of c (--comfyui); c->n_servers becomes 0. */
void clear_servers(struct config *c);
/* Printable, bounded copy of a user value for messages; returns dst. */
const char *shown_value(char *dst, unsigned cap, const char *value);

#endif
