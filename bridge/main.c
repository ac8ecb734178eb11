/* comfy2mqtt: wiring. Parses the options, sets up logging, and builds the
 * loop and one instance per ComfyUI server (bridge/instance.h: its
 * upstream, its broker link, its Home Assistant); handles the signals,
 * runs the loop, and tears everything down. */
#include <stdio.h>
#include <stdlib.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "err.h"
#include "ha_link.h"
#include "instance.h"
#include "log.h"
#include "loop.h"
#include "topic.h"

#define SHUTDOWN_FLUSH_MS 1500

struct app {
	struct config cfg;
	struct loop *loop;
	struct instance **inst; /* cfg.n_servers */
	char (*print_prefix)[TOPIC_ID_MAX + 8];
	struct loop_timer *shutdown_timer;
	bool stopping;
};

/* --- shutdown --- */

/* One deadline for every instance's flush (see instance_shutdown). */
static void
finish_shutdown(void *ud)
{
	struct app *a = ud;
	int64_t deadline = loop_mono_ms() + SHUTDOWN_FLUSH_MS;
	for (int i = 0; i < a->cfg.n_servers; i++)
		instance_shutdown(a->inst[i], deadline);
	loop_quit(a->loop);
}

static void
on_signal(void *ud, int signo)
{
	struct app *a = ud;
	if (a->stopping)
		_exit(1);
	a->stopping = true;
	log_info("bridge", "signal %d: shutting down", signo);
	/* a second signal during the (blocking) flush exits at once */
	loop_exit_on_signal(a->loop);
	for (int i = 0; i < a->cfg.n_servers; i++)
		instance_stop(a->inst[i], "Shutting down...");
	/* let the loop send the close frames, then flush and leave */
	loop_timer_arm(a->shutdown_timer, 50);
}

/* --- set-up --- */

/* Each instance's large tables (the prompt table, the JSON token arrays,
 * the output buffer, the link's message-id tables) are calloc'd whole and
 * touched as they fill. glibc raises its mmap threshold after the first
 * large free, and then serves such blocks from the heap, clearing every
 * page: a fixed threshold keeps them mapped and their untouched pages out
 * of RSS (tests/bench/README.md "A farm in one process"). */
static void
keep_large_blocks_mapped(void)
{
#ifdef __GLIBC__
	mallopt(M_MMAP_THRESHOLD, 64 * 1024);
#endif
}

static bool
any_tls_server(const struct config *c)
{
	for (int i = 0; i < c->n_servers; i++)
		if (c->server[i].comfy.tls)
			return true;
	return false;
}

/* With several servers on one stdout, each --print line names its
 * instance. */
static const char *
print_prefix(struct app *a, int i)
{
	if (a->cfg.n_servers < 2)
		return NULL;
	snprintf(a->print_prefix[i], sizeof(a->print_prefix[i]),
	    "%s: ", a->cfg.server[i].instance);
	return a->print_prefix[i];
}

static int
setup(struct app *a)
{
	const struct config *c = &a->cfg;
	size_t n = (size_t) c->n_servers;
	a->loop = loop_create_for(any_tls_server(c), (unsigned) c->n_servers);
	if (!a->loop)
		return BR_EIO;
	loop_set_signal_cb(a->loop, on_signal, a);
	a->shutdown_timer = loop_timer_create(a->loop, finish_shutdown, a);
	a->inst = calloc(n, sizeof(*a->inst));
	a->print_prefix = calloc(n, sizeof(*a->print_prefix));
	if (!a->shutdown_timer || !a->inst || !a->print_prefix)
		return BR_ENOMEM;
	int rc = 0;
	for (int i = 0; i < c->n_servers && rc == 0; i++)
		rc = instance_create(
		    a->loop, c, i, print_prefix(a, i), &a->inst[i]);
	for (int i = 0; i < c->n_servers && rc == 0; i++)
		rc = instance_start(a->inst[i]);
	return rc;
}

static void
teardown(struct app *a)
{
	for (int i = 0; a->inst && i < a->cfg.n_servers; i++)
		instance_destroy(a->inst[i]);
	free(a->inst);
	free(a->print_prefix);
	if (a->shutdown_timer)
		loop_timer_destroy(a->shutdown_timer);
	if (a->loop)
		loop_destroy(a->loop);
	config_free(&a->cfg);
}

/* --ha-remove: the broker only, never ComfyUI; every instance's discovery
 * message. */
static int
ha_remove_all(const struct config *c)
{
	int code = 0;
	for (int i = 0; i < c->n_servers; i++) {
		char url[600];
		struct discovery_cfg dc;
		struct mqtt_link_cfg mc;
		url_format_public(&c->server[i].comfy, url, sizeof(url));
		ha_link_cfg(c, c->server[i].instance, url, &dc);
		instance_broker_cfg(c, i, &mc);
		if (ha_link_remove(&mc, &dc) != 0)
			code = 1;
	}
	return code;
}

int
main(int argc, char **argv)
{
	static struct app app;
	char err[512] = "";
	int exit_code = 0;

	int rc = config_load(
	    &app.cfg, argc, argv, NULL, err, sizeof(err), stdout);
	if (rc != CONFIG_OK) { /* or --help / --version printed */
		if (rc != CONFIG_EXIT_OK)
			fprintf(stderr, "comfy2mqtt: %s\n", err);
		config_free(&app.cfg);
		return rc == CONFIG_EXIT_OK ? 0 : rc;
	}
	keep_large_blocks_mapped();
	log_setup(app.cfg.log_level, app.cfg.log_format);
	config_log_warnings(&app.cfg);
	log_info("bridge", "comfy2mqtt %s: %d ComfyUI server%s", C2M_VERSION,
	    app.cfg.n_servers, app.cfg.n_servers == 1 ? "" : "s");

	if (app.cfg.ha_remove) {
		exit_code = ha_remove_all(&app.cfg);
	} else if ((rc = setup(&app)) != 0) {
		log_error("bridge", "start-up failed: %s", br_strerror(rc));
		exit_code = 1;
	} else {
		loop_run(app.loop);
	}
	teardown(&app);
	return exit_code;
}
