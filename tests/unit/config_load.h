/* The unit tests' way of calling config_load: argv as a NULL-terminated
 * list, the message of the last load in err. Included by test_config.c and
 * test_config_servers.c. */
#ifndef C2M_TEST_CONFIG_LOAD_H
#define C2M_TEST_CONFIG_LOAD_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "config.h"

static char err[512];
static char *no_env[] = { NULL };

/* config_load with argv given as a NULL-terminated list after envp. */
static int
load_v(struct config *c, char **envp, FILE *out, va_list ap)
{
	char *argv[64];
	int argc = 0;
	const char *a;

	argv[argc++] = "comfy2mqtt";
	while ((a = va_arg(ap, const char *)) != NULL && argc < 63)
		argv[argc++] = (char *) a;
	argv[argc] = NULL;
	memset(err, 0, sizeof err);
	return config_load(c, argc, argv, envp, err, sizeof err, out);
}

static int
load(struct config *c, char **envp, ...)
{
	va_list ap;
	int rc;

	va_start(ap, envp);
	rc = load_v(c, envp ? envp : no_env, NULL, ap);
	va_end(ap);
	return rc;
}

/* Loads, expects failure with code, frees; err keeps the message. */
static int
load_fail(char **envp, ...)
{
	struct config c;
	va_list ap;
	int rc;

	va_start(ap, envp);
	rc = load_v(&c, envp ? envp : no_env, NULL, ap);
	va_end(ap);
	config_free(&c);
	return rc;
}

static bool
contains(const char *hay, const char *needle)
{
	bool found = hay && strstr(hay, needle) != NULL;

	if (!found)
		fprintf(stderr, "  (\"%s\" not in \"%s\")\n", needle,
		    hay ? hay : "(null)");
	return found;
}

#endif
