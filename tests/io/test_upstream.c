/* upstream: two ComfyUI servers followed in one loop, as several servers in
 * one process will be. Each upstream connects with its own clientId,
 * publishes only under its own <prefix>/<instance>/, and one can stop and
 * be destroyed while the other stays up. Both follow tests/io/ws_peer.py
 * (a real aiohttp server) on the real loop. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* upstream.c is app code (the top level of bridge/), built into the
 * executable only */
#include "../../bridge/upstream.c"

#include "helper_loop.h"
#include "log.h"
#include "test.h"

/* What one upstream published. */
struct capture {
	const char *instance;
	int messages;
	int foreign; /* outside comfyui/<instance>/ */
	int online, offline; /* upstream/state */
	int health_calls;
};

static void
cap_publish(void *ud, const struct out_msg *m)
{
	struct capture *c = ud;
	char own[64];
	snprintf(own, sizeof(own), "comfyui/%s/", c->instance);
	c->messages++;
	if (strncmp(m->topic, own, strlen(own)) != 0) {
		c->foreign++;
		return;
	}
	if (strcmp(m->topic + strlen(own), "upstream/state") != 0)
		return;
	if (m->len == 6 && memcmp(m->payload, "online", 6) == 0)
		c->online++;
	else if (m->len == 7 && memcmp(m->payload, "offline", 7) == 0)
		c->offline++;
}

static void
cap_health(void *ud, struct engine_health_io *h)
{
	struct capture *c = ud;
	(void) h;
	c->health_calls++;
}

static struct capture cap_a = { .instance = "a" };
static struct capture cap_b = { .instance = "b" };

static bool
both_online(void *ud)
{
	(void) ud;
	return cap_a.online > 0 && cap_b.online > 0;
}

/* What the peer printed so far (its CONNECT lines name the clientId). */
static char peer_out[16384];
static size_t peer_len;

static bool
peer_saw_both(void *ud)
{
	struct helper_peer *p = ud;
	ssize_t n = read(
	    p->out_fd, peer_out + peer_len, sizeof(peer_out) - 1 - peer_len);
	if (n > 0)
		peer_len += (size_t) n;
	peer_out[peer_len] = '\0';
	return strstr(peer_out, "CONNECT id=client-a ") != NULL
	    && strstr(peer_out, "CONNECT id=client-b ") != NULL;
}

static bool
a_offline(void *ud)
{
	(void) ud;
	return cap_a.offline
	    > 0; /* no offline before the link state is known */
}

static void
test_two_upstreams_one_loop(void)
{
	struct helper_peer peer;
	struct config c;
	char err[256];
	char *argv[] = { "comfy2mqtt", "--comfyui", "http://127.0.0.1:1",
		"--mqtt", "mqtt://127.0.0.1:1", NULL };
	char *no_env[] = { NULL };
	struct url base;

	if (helper_peer_start(&peer, 0, NULL, NULL) != 0) {
		CHECK(!"ws_peer.py did not start");
		return;
	}
	helper_peer_base(&base, peer.port);
	CHECK_INT(config_load(&c, 5, argv, no_env, err, sizeof err, NULL),
	    CONFIG_OK);
	struct loop *l = loop_create_tls(false);
	CHECK(l != NULL);

	struct upstream_cfg ua, ub;
	upstream_cfg_from_config(&c, 0, &ua);
	ua.comfy = &base;
	ub = ua;
	ua.instance = "a";
	ua.client_id = "client-a";
	ub.instance = "b";
	ub.client_id = "client-b";
	struct upstream_out oa = { cap_publish, cap_health, &cap_a };
	struct upstream_out ob = { cap_publish, cap_health, &cap_b };
	struct upstream *a = NULL, *b = NULL;
	CHECK_INT(upstream_create(l, &ua, &oa, &a), 0);
	CHECK_INT(upstream_create(l, &ub, &ob, &b), 0);
	if (a == NULL || b == NULL)
		goto out;
	/* upstream/state waits until the link state is known */
	CHECK_INT(cap_a.offline, 0);
	CHECK_INT(cap_b.offline, 0);
	CHECK_INT(upstream_start(a), 0);
	CHECK_INT(upstream_start(b), 0);
	CHECK(helper_wait_for(l, both_online, NULL, 10000));
	CHECK(helper_wait_for(l, peer_saw_both, &peer, 5000));
	CHECK_STR(upstream_state_filter(a), "comfyui/a/prompt/+/state");
	CHECK_STR(upstream_state_filter(b), "comfyui/b/prompt/+/state");

	/* one stops and goes away; the other is not disturbed */
	upstream_stop(a, "Shutting down...");
	CHECK(helper_wait_for(l, a_offline, NULL, 5000));
	upstream_destroy(a);
	a = NULL;
	helper_wait_for(l, NULL, NULL, 300);
	CHECK_INT(cap_b.online, 1);
	CHECK_INT(cap_b.offline, 0);
	struct out_msg m;
	upstream_offline_msg(b, &m);
	CHECK_STR(m.topic, "comfyui/b/bridge/state");
	CHECK_INT(cap_a.foreign + cap_b.foreign, 0);
	CHECK(cap_a.messages >= 2 && cap_b.messages >= 2);
out:
	upstream_destroy(a);
	upstream_destroy(b);
	loop_destroy(l);
	config_free(&c);
	helper_peer_kill(&peer);
	helper_peer_close(&peer);
}

int
main(void)
{
	log_setup(LOG_LVL_WARN, LOG_FMT_TEXT);
	RUN(test_two_upstreams_one_loop);
	TEST_MAIN_END();
}
