/* http_client against tests/io/ws_peer.py on the real loop (200 with a
 * 300 KB body, 404, refused, timeout, over max_body, headers, many at once,
 * destroy with requests in flight), against tests/io/http_peer.py (3xx not
 * followed and no connection to the Location's host; at most
 * HTTP_MAX_INFLIGHT on the wire, FIFO; timeouts from the start on the wire;
 * destroy with queued requests), plus the loop itself: signals through the
 * signalfd, loop_quit from another thread, timers. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "helper_broker.h"
#include "helper_loop.h"
#include "http_client.h"
#include "log.h"
#include "loop.h"
#include "test.h"
#include "url.h"

#define N_PARALLEL 20

static struct loop *L;
static struct helper_peer peer;
static struct url base;

/* ---- request results ---- */

struct result {
	int calls;
	int status;
	size_t len;
	char *body;
	int64_t at_ms;
	int seq; /* 1 for the first callback since reset_results, ... */
};

static struct result res[N_PARALLEL];
static int target_calls;
static int done_seq;

static void
on_done(void *ud, int status, const char *body, size_t len)
{
	struct result *r = ud;

	r->calls++;
	r->status = status;
	r->len = len;
	r->at_ms = loop_mono_ms();
	r->seq = ++done_seq;
	free(r->body);
	r->body = malloc(len + 1);
	memcpy(r->body, body, len + 1); /* includes the promised NUL */
}

static bool
pred_first_done(void *ud)
{
	return res[0].calls >= 1;
}

static bool
pred_all_done(void *ud)
{
	int i;

	for (i = 0; i < target_calls; i++)
		if (res[i].calls < 1)
			return false;
	return true;
}

static void
reset_results(void)
{
	int i;

	for (i = 0; i < N_PARALLEL; i++) {
		free(res[i].body);
		memset(&res[i], 0, sizeof(res[i]));
	}
	done_seq = 0;
}

static bool
is_pattern(const char *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if ((unsigned char) p[i]
		    != (unsigned char) ('a' + (i * 7 + i / 13) % 26))
			return false;
	return true;
}

/* ---- http tests ---- */

static void
test_get_200_big_body(void)
{
	struct http_client *h;

	reset_results();
	h = http_client_create(L, &base, NULL, 0, NULL, 1 << 20);
	CHECK(h != NULL);
	CHECK_INT(
	    http_client_get(h, "/big?n=300000", 10000, on_done, &res[0]), 0);
	CHECK_INT(http_client_pending(h), 1);
	CHECK_INT(res[0].calls, 0); /* never from inside the call */
	CHECK(helper_wait_for(L, pred_first_done, NULL, 10000));
	CHECK_INT(res[0].status, 200);
	CHECK_INT(res[0].len, 300000);
	CHECK(res[0].body != NULL && is_pattern(res[0].body, res[0].len));
	CHECK_INT(http_client_pending(h), 0);
	/* exactly once */
	CHECK(!helper_wait_for(L, NULL, NULL, 300));
	CHECK_INT(res[0].calls, 1);
	http_client_destroy(h);
}

static void
test_get_404(void)
{
	struct http_client *h;

	reset_results();
	h = http_client_create(L, &base, NULL, 0, NULL, 1 << 20);
	CHECK_INT(
	    http_client_get(h, "/status/404", 10000, on_done, &res[0]), 0);
	CHECK(helper_wait_for(L, pred_first_done, NULL, 10000));
	CHECK_INT(res[0].status, 404);
	CHECK_STR(res[0].body, "status 404\n");
	http_client_destroy(h);
}

static void
test_connection_refused(void)
{
	struct http_client *h;
	struct url closed;
	int rc;

	/* a port that was free a moment ago and has no listener now */
	helper_peer_base(&closed, helper_free_port());

	reset_results();
	h = http_client_create(L, &closed, NULL, 0, NULL, 1 << 20);
	rc = http_client_get(h, "/big?n=10", 5000, on_done, &res[0]);
	if (rc == 0) {
		CHECK(helper_wait_for(L, pred_first_done, NULL, 5000));
		CHECK_INT(res[0].status, BR_EIO);
		CHECK_INT(res[0].len, 0);
	} else {
		/* reported synchronously instead: then never called */
		CHECK_INT(rc, BR_EIO);
		CHECK(!helper_wait_for(L, pred_first_done, NULL, 300));
	}
	CHECK_INT(http_client_pending(h), 0);
	http_client_destroy(h);
}

static void
test_timeout(void)
{
	struct http_client *h;
	int64_t t0;

	reset_results();
	h = http_client_create(L, &base, NULL, 0, NULL, 1 << 20);
	t0 = loop_mono_ms();
	CHECK_INT(http_client_get(h, "/slow", 500, on_done, &res[0]), 0);
	CHECK(helper_wait_for(L, pred_first_done, NULL, 5000));
	CHECK_INT(res[0].status, BR_ESTATE);
	CHECK(res[0].at_ms - t0 >= 450);
	CHECK(res[0].at_ms - t0 < 2000);
	CHECK(!helper_wait_for(L, NULL, NULL, 300));
	CHECK_INT(res[0].calls, 1);
	http_client_destroy(h);
}

static void
test_body_over_max(void)
{
	struct http_client *h;

	reset_results();
	h = http_client_create(L, &base, NULL, 0, NULL, 100000);
	CHECK_INT(
	    http_client_get(h, "/big?n=300000", 10000, on_done, &res[0]), 0);
	/* and one that fits exactly */
	CHECK_INT(
	    http_client_get(h, "/big?n=100000", 10000, on_done, &res[1]), 0);
	target_calls = 2;
	CHECK(helper_wait_for(L, pred_all_done, NULL, 10000));
	CHECK_INT(res[0].status, BR_EFULL);
	CHECK_INT(res[1].status, 200);
	CHECK_INT(res[1].len, 100000);
	CHECK(!helper_wait_for(L, NULL, NULL, 300));
	CHECK_INT(res[0].calls, 1);
	http_client_destroy(h);
}

static void
test_headers(void)
{
	char *hdrs[] = { "X-Test: abc 123", "Authorization: Bearer s3cret" };
	char *bad[] = { "no colon here" };
	struct http_client *h;
	char host[64];

	CHECK(http_client_create(L, &base, bad, 1, NULL, 1000) == NULL);
	reset_results();
	h = http_client_create(L, &base, hdrs, 2, NULL, 1 << 20);
	CHECK(h != NULL);
	CHECK_INT(http_client_get(h, "/headers", 5000, on_done, &res[0]), 0);
	CHECK(helper_wait_for(L, pred_first_done, NULL, 5000));
	CHECK_INT(res[0].status, 200);
	snprintf(host, sizeof(host), "host: 127.0.0.1:%d\n", peer.port);
	CHECK(res[0].body != NULL && strstr(res[0].body, host) != NULL);
	CHECK(res[0].body != NULL
	    && strstr(res[0].body, "x-test: abc 123\n") != NULL);
	CHECK(res[0].body != NULL
	    && strstr(res[0].body, "authorization: Bearer s3cret\n") != NULL);
	CHECK(res[0].body != NULL && strstr(res[0].body, "origin:") == NULL);
	http_client_destroy(h);
}

static void
test_many_at_once(void)
{
	struct http_client *h;
	char path[64];
	int i;

	reset_results();
	h = http_client_create(L, &base, NULL, 0, NULL, 1 << 20);
	for (i = 0; i < N_PARALLEL; i++) {
		snprintf(path, sizeof(path), "/big?n=%d", 1000 + i * 997);
		CHECK_INT(
		    http_client_get(h, path, 10000, on_done, &res[i]), 0);
	}
	CHECK_INT(http_client_pending(h), N_PARALLEL);
	target_calls = N_PARALLEL;
	CHECK(helper_wait_for(L, pred_all_done, NULL, 15000));
	for (i = 0; i < N_PARALLEL; i++) {
		CHECK_INT(res[i].status, 200);
		CHECK_INT(res[i].len, 1000 + i * 997);
		CHECK(res[i].body != NULL
		    && is_pattern(res[i].body, res[i].len));
		CHECK_INT(res[i].calls, 1);
	}
	CHECK_INT(http_client_pending(h), 0);
	http_client_destroy(h);
}

static void
test_destroy_cancels(void)
{
	struct http_client *h;

	reset_results();
	h = http_client_create(L, &base, NULL, 0, NULL, 1 << 20);
	CHECK_INT(http_client_get(h, "/slow", 300, on_done, &res[0]), 0);
	CHECK_INT(http_client_get(h, "/big?n=10", 300, on_done, &res[1]), 0);
	http_client_destroy(h);
	/* past both timeouts: neither callback ever runs */
	target_calls = 1;
	CHECK(!helper_wait_for(L, pred_first_done, NULL, 800));
	CHECK_INT(res[0].calls, 0);
	CHECK_INT(res[1].calls, 0);
}

/* ---- tests/io/http_peer.py: redirects and the in-flight bound ---- */

#define HP_MAX_REQS  16
#define HP_START_MS  10000
#define N_HELD       6
#define HP_QUIET_MS  300 /* how long "nothing more happens" is watched */
#define HOLD_TIMEOUT 400

static struct helper_peer hpeer;
static struct url hbase;

/* What http_peer.py reported, parsed from its stdout. */
struct hp_seen {
	int port; /* LISTENING */
	char steal_host[64];
	int steal_port;
	int accepts, max_active;
	char reqs[HP_MAX_REQS][16];
	int n_reqs;
	int steal_accepts, steal_hdrs;
};

static struct hp_seen seen;

static void
hp_line(void *ud, const char *l)
{
	int n;

	if (sscanf(l, "LISTENING %d", &n) == 1)
		seen.port = n;
	else if (sscanf(l, "STEAL %63s %d", seen.steal_host, &n) == 2)
		seen.steal_port = n;
	else if (sscanf(l, "ACCEPT active=%d", &n) == 1) {
		seen.accepts++;
		if (n > seen.max_active)
			seen.max_active = n;
	} else if (strncmp(l, "REQ ", 4) == 0) {
		if (seen.n_reqs < HP_MAX_REQS) {
			/* request names are short; a longer one is cut */
			char *to = seen.reqs[seen.n_reqs];
			size_t k = strnlen(l + 4, sizeof(seen.reqs[0]) - 1);
			memcpy(to, l + 4, k);
			to[k] = '\0';
		}
		seen.n_reqs++;
	} else if (strcmp(l, "STEAL_ACCEPT") == 0)
		seen.steal_accepts++;
	else if (strncmp(l, "STEAL_HDR ", 10) == 0) {
		seen.steal_hdrs++;
		fprintf(stderr, "second listener got: %s\n", l + 10);
	}
}

static void
hp_drain(void)
{
	helper_peer_read_lines(&hpeer, hp_line, NULL);
}

/* Forgets the counts, keeps the addresses. */
static void
hp_reset(void)
{
	hp_drain();
	seen.accepts = seen.max_active = seen.n_reqs = 0;
	seen.steal_accepts = seen.steal_hdrs = 0;
}

static void
hp_cmd(const char *cmd)
{
	helper_peer_cmd(&hpeer, cmd);
}

static bool
hp_listening(void *ud)
{
	return seen.port > 0 && seen.steal_port > 0;
}

/* Starts http_peer.py and reads up to its LISTENING lines. 0 or -1. */
static int
hp_start(void)
{
	if (helper_peer_spawn_named(&hpeer, "http_peer.py") != 0
	    || !helper_peer_await(
	        &hpeer, hp_line, hp_listening, NULL, HP_START_MS))
		return -1;
	hpeer.port = seen.port;
	helper_peer_base(&hbase, seen.port);
	return 0;
}

static bool
pred_stolen(void *ud)
{
	hp_drain();
	return seen.steal_accepts > 0 || seen.steal_hdrs > 0;
}

/* ud: the count of REQ lines to wait for. */
static bool
pred_reqs(void *ud)
{
	hp_drain();
	return seen.n_reqs >= *(const int *) ud;
}

/* ud: the count of connections to wait for. */
static bool
pred_accepts(void *ud)
{
	hp_drain();
	return seen.accepts >= *(const int *) ud;
}

/* ud: the result whose callback to wait for. */
static bool
pred_called(void *ud)
{
	return ((const struct result *) ud)->calls >= 1;
}

static bool
pred_any_called_or_accepted(void *ud)
{
	int i;

	hp_drain();
	for (i = 0; i < N_PARALLEL; i++)
		if (res[i].calls > 0)
			return true;
	return seen.accepts > *(const int *) ud;
}

static void
test_redirect_not_followed(void)
{
	char *hdrs[]
	    = { "Authorization: Basic dXNlcjpodW50ZXIy", "X-Test: abc" };
	/* the second with userinfo in the Location */
	static const int codes[] = { 302, 307 };
	static const char *const suffix[] = { "", "u" };
	struct http_client *h;
	char path[32], want[160];
	const char *b;
	size_t i;

	h = http_client_create(L, &hbase, hdrs, 2, NULL, 1 << 20);
	CHECK(h != NULL);
	hp_reset();
	for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		reset_results();
		snprintf(
		    path, sizeof(path), "/redirect/%d%s", codes[i], suffix[i]);
		CHECK_INT(http_client_get(h, path, 5000, on_done, &res[0]), 0);
		CHECK(helper_wait_for(L, pred_first_done, NULL, 5000));
		CHECK_INT(res[0].status, codes[i]);
		b = res[0].body != NULL ? res[0].body : "";
		snprintf(want, sizeof(want),
		    "HTTP %d redirect to http://%s:%d/steal (query omitted) "
		    "not followed",
		    codes[i], seen.steal_host, seen.steal_port);
		if (strstr(b, want) == NULL)
			fprintf(stderr, "got body: %s\n", b);
		CHECK(strstr(b, want) != NULL);
		CHECK(strstr(b, "point --comfyui at the final URL") != NULL);
		/* Location's userinfo, query and fragment are secrets */
		CHECK(strstr(b, "hunter2") == NULL);
		CHECK(strstr(b, "user:") == NULL);
		CHECK(strstr(b, "s3cr3t") == NULL);
		CHECK(strstr(b, "frag") == NULL);
		CHECK_INT(http_client_pending(h), 0);
	}
	/* a followed redirect reaches the second listener before the body
	 * comes back; also give a late one a chance to show */
	CHECK(!helper_wait_for(L, pred_stolen, NULL, HP_QUIET_MS));
	CHECK_INT(seen.steal_accepts, 0);
	CHECK_INT(seen.steal_hdrs, 0);
	CHECK_INT(res[0].calls, 1);
	http_client_destroy(h);
}

static void
test_at_most_two_on_the_wire(void)
{
	/* each release frees a slot while another request still holds one,
	 * so the next start shows whether the FIFO order holds */
	static const int release_order[N_HELD] = { 1, 0, 3, 2, 5, 4 };
	struct http_client *h;
	char path[32], cmd[32], want[32];
	int i, k, n;

	CHECK_INT(HTTP_MAX_INFLIGHT, 2);
	h = http_client_create(L, &hbase, NULL, 0, NULL, 1 << 20);
	hp_reset();
	reset_results();
	for (i = 0; i < N_HELD; i++) {
		snprintf(path, sizeof(path), "/hold/c%d", i);
		CHECK_INT(
		    http_client_get(h, path, 10000, on_done, &res[i]), 0);
	}
	CHECK_INT(http_client_pending(h), N_HELD);
	n = HTTP_MAX_INFLIGHT;
	CHECK(helper_wait_for(L, pred_reqs, &n, 5000));
	n = HTTP_MAX_INFLIGHT + 1;
	CHECK(!helper_wait_for(L, pred_accepts, &n, HP_QUIET_MS));
	for (k = 0; k < N_HELD; k++) {
		i = release_order[k];
		snprintf(cmd, sizeof(cmd), "release c%d\n", i);
		hp_cmd(cmd);
		CHECK(helper_wait_for(L, pred_called, &res[i], 5000));
		CHECK_INT(http_client_pending(h), N_HELD - k - 1);
		n = k + 1 + HTTP_MAX_INFLIGHT;
		if (n > N_HELD)
			n = N_HELD;
		CHECK(helper_wait_for(L, pred_reqs, &n, 5000));
	}
	CHECK(!helper_wait_for(L, NULL, NULL, HP_QUIET_MS));
	hp_drain();
	CHECK_INT(seen.accepts, N_HELD);
	CHECK(seen.max_active <= HTTP_MAX_INFLIGHT);
	CHECK_INT(seen.n_reqs, N_HELD);
	for (i = 0; i < N_HELD && i < seen.n_reqs; i++) {
		snprintf(want, sizeof(want), "c%d", i);
		CHECK_STR(seen.reqs[i], want);
	}
	for (i = 0; i < N_HELD; i++) {
		snprintf(want, sizeof(want), "held c%d\n", i);
		CHECK_INT(res[i].calls, 1);
		CHECK_INT(res[i].status, 200);
		CHECK_STR(res[i].body, want);
	}
	for (k = 0; k < N_HELD; k++)
		CHECK_INT(res[release_order[k]].seq, k + 1);
	CHECK_INT(http_client_pending(h), 0);
	http_client_destroy(h);
}

static void
test_timeout_counts_from_the_wire(void)
{
	struct http_client *h;
	int64_t t0;
	int i;

	h = http_client_create(L, &hbase, NULL, 0, NULL, 1 << 20);
	hp_reset();
	reset_results();
	t0 = loop_mono_ms();
	for (i = 0; i < 3; i++) {
		char path[32];

		snprintf(path, sizeof(path), "/hold/t%d", i);
		CHECK_INT(
		    http_client_get(h, path, HOLD_TIMEOUT, on_done, &res[i]),
		    0);
	}
	target_calls = 3;
	CHECK(helper_wait_for(L, pred_all_done, NULL, 5000));
	for (i = 0; i < 3; i++) {
		CHECK_INT(res[i].status, BR_ESTATE);
		CHECK_INT(res[i].calls, 1);
	}
	/* the first two time out together; the third started in the slot
	 * they freed and had its full timeout from there */
	CHECK(res[0].at_ms - t0 >= HOLD_TIMEOUT - 50);
	CHECK(res[1].at_ms - t0 < 2 * HOLD_TIMEOUT - 50);
	CHECK(res[2].at_ms - t0 >= 2 * HOLD_TIMEOUT - 50);
	CHECK(res[2].at_ms - res[1].at_ms >= HOLD_TIMEOUT - 50);
	hp_drain();
	CHECK_INT(seen.n_reqs, 3);
	CHECK_INT(http_client_pending(h), 0);
	hp_cmd("release-all\n");
	http_client_destroy(h);
}

static void
test_destroy_with_queued(void)
{
	struct http_client *h;
	char path[32];
	int i, n;

	h = http_client_create(L, &hbase, NULL, 0, NULL, 1 << 20);
	hp_reset();
	reset_results();
	for (i = 0; i < 4; i++) {
		snprintf(path, sizeof(path), "/hold/d%d", i);
		CHECK_INT(http_client_get(h, path, 300, on_done, &res[i]), 0);
	}
	n = HTTP_MAX_INFLIGHT;
	CHECK(helper_wait_for(L, pred_reqs, &n, 5000));
	http_client_destroy(h);
	hp_cmd("release-all\n");
	/* past every timeout: no callback, and the queued two never start */
	n = HTTP_MAX_INFLIGHT;
	CHECK(!helper_wait_for(L, pred_any_called_or_accepted, &n, 800));
	for (i = 0; i < 4; i++)
		CHECK_INT(res[i].calls, 0);
	CHECK_INT(seen.accepts, HTTP_MAX_INFLIGHT);
}

static struct http_client *destroy_me;

static void
on_done_destroy(void *ud, int status, const char *body, size_t len)
{
	on_done(ud, status, body, len);
	http_client_destroy(destroy_me);
	destroy_me = NULL;
}

static void
test_destroy_from_callback(void)
{
	char path[32];
	int i, n;

	destroy_me = http_client_create(L, &hbase, NULL, 0, NULL, 1 << 20);
	hp_reset();
	reset_results();
	for (i = 0; i < 3; i++) {
		snprintf(path, sizeof(path), "/hold/e%d", i);
		CHECK_INT(http_client_get(destroy_me, path, 300,
		              i == 0 ? on_done_destroy : on_done, &res[i]),
		    0);
	}
	n = HTTP_MAX_INFLIGHT;
	CHECK(helper_wait_for(L, pred_reqs, &n, 5000));
	hp_cmd("release e0\n");
	CHECK(helper_wait_for(L, pred_first_done, NULL, 5000));
	CHECK(destroy_me == NULL);
	hp_cmd("release-all\n");
	/* e2 took e0's slot before e0's callback destroyed the client */
	res[0].calls = 0;
	n = 3;
	CHECK(!helper_wait_for(L, pred_any_called_or_accepted, &n, 800));
	CHECK_INT(res[1].calls, 0);
	CHECK_INT(res[2].calls, 0);
}

/* ---- loop tests ---- */

static pthread_t loop_thread;
static int signals_seen[3];
static bool signal_in_loop_thread = true;

static void
on_signal(void *ud, int signo)
{
	if (!pthread_equal(pthread_self(), loop_thread))
		signal_in_loop_thread = false;
	if (signo == SIGTERM)
		signals_seen[0]++;
	else if (signo == SIGINT)
		signals_seen[1]++;
	else if (signo == SIGHUP)
		signals_seen[2]++;
}

static bool
pred_signals(void *ud)
{
	return signals_seen[0] >= 1 && signals_seen[1] >= 1
	    && signals_seen[2] >= 1;
}

static void
test_signals_reach_the_loop(void)
{
	loop_thread = pthread_self();
	loop_set_signal_cb(L, on_signal, NULL);
	raise(SIGTERM);
	raise(SIGINT);
	raise(SIGHUP);
	/* blocked: nothing happened yet, the process is alive */
	CHECK_INT(signals_seen[0], 0);
	CHECK(helper_wait_for(L, pred_signals, NULL, 5000));
	CHECK_INT(signals_seen[0], 1);
	CHECK_INT(signals_seen[1], 1);
	CHECK_INT(signals_seen[2], 1);
	CHECK(signal_in_loop_thread);
	loop_set_signal_cb(L, NULL, NULL);
}

static void *
quitter(void *arg)
{
	struct timespec ts = { 0, 100 * 1000000 };

	nanosleep(&ts, NULL); /* let the loop block first */
	loop_quit(L);
	return NULL;
}

static bool backstop_fired;

static void
backstop(void *ud)
{
	backstop_fired = true;
	loop_quit(L);
}

static void
test_quit_from_another_thread(void)
{
	pthread_t t;
	struct loop_timer *bs;
	int64_t t0;

	/* loop_quit from another thread ends a loop with nothing to do soon
	 * (the backstop is far away) */
	bs = loop_timer_create(L, backstop, NULL);
	loop_timer_arm(bs, 10000);
	t0 = loop_mono_ms();
	CHECK_INT(pthread_create(&t, NULL, quitter, NULL), 0);
	loop_run(L);
	pthread_join(t, NULL);
	CHECK(!backstop_fired);
	CHECK(loop_mono_ms() - t0 < 5000);
	loop_timer_destroy(bs);
}

static int fired_a, fired_b;
static int64_t fired_a_ms;

static void
timer_a(void *ud)
{
	fired_a++;
	fired_a_ms = loop_mono_ms();
}

static void
timer_b(void *ud)
{
	fired_b++;
}

static bool
pred_a_fired(void *ud)
{
	return fired_a >= 1;
}

static void
test_timers(void)
{
	struct loop_timer *a = loop_timer_create(L, timer_a, NULL);
	struct loop_timer *b = loop_timer_create(L, timer_b, NULL);
	int64_t t0;

	CHECK(!loop_timer_pending(a));
	loop_timer_arm(a, 5000);
	CHECK(loop_timer_pending(a));
	t0 = loop_mono_ms();
	loop_timer_arm(a, 100); /* replaces the 5 s arm */
	loop_timer_arm(b, 50);
	loop_timer_cancel(b);
	CHECK(!loop_timer_pending(b));
	CHECK(helper_wait_for(L, pred_a_fired, NULL, 3000));
	CHECK(fired_a_ms - t0 >= 95);
	CHECK(fired_a_ms - t0 < 1000);
	CHECK(!loop_timer_pending(a));
	CHECK(!helper_wait_for(L, NULL, NULL, 300));
	CHECK_INT(fired_a, 1);
	CHECK_INT(fired_b, 0);
	loop_timer_destroy(a);
	loop_timer_destroy(b);
	CHECK(loop_now_ms() > 1600000000000LL);
}

int
main(void)
{
	log_setup(LOG_LVL_INFO, LOG_FMT_TEXT);
	L = loop_create();
	if (L == NULL) {
		fprintf(stderr, "loop_create failed\n");
		return 1;
	}
	if (helper_peer_start(&peer, 0, NULL, NULL) != 0) {
		fprintf(stderr, "cannot start %s\n", helper_peer_script());
		return 1;
	}
	helper_peer_base(&base, peer.port);

	RUN(test_get_200_big_body);
	RUN(test_get_404);
	RUN(test_connection_refused);
	RUN(test_timeout);
	RUN(test_body_over_max);
	RUN(test_headers);
	RUN(test_many_at_once);
	RUN(test_destroy_cancels);
	if (hp_start() != 0) {
		fprintf(stderr, "cannot start http_peer.py\n");
		return 1;
	}
	RUN(test_redirect_not_followed);
	RUN(test_at_most_two_on_the_wire);
	RUN(test_timeout_counts_from_the_wire);
	RUN(test_destroy_with_queued);
	RUN(test_destroy_from_callback);
	helper_peer_kill(&hpeer);
	helper_peer_close(&hpeer);
	RUN(test_signals_reach_the_loop);
	RUN(test_quit_from_another_thread);
	RUN(test_timers);

	helper_peer_kill(&peer);
	helper_peer_close(&peer);
	loop_destroy(L);
	reset_results();
	TEST_MAIN_END();
}
