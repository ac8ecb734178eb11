/* http_client against tests/io/ws_peer.py on the real loop (200 with a
 * 300 KB body, 404, refused, timeout, over max_body, headers, many at once,
 * destroy with requests in flight), plus the loop itself: signals through
 * the signalfd, loop_wake and loop_quit from another thread, timers. */
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
};

static struct result res[N_PARALLEL];
static int target_calls;

static void
on_done(void *ud, int status, const char *body, size_t len)
{
	struct result *r = ud;

	r->calls++;
	r->status = status;
	r->len = len;
	r->at_ms = loop_mono_ms();
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

/* ---- loop tests ---- */

static pthread_t loop_thread;
static int signals_seen[3];
static bool signal_in_loop_thread = true;
static int wakes;
static bool wake_in_loop_thread = true;

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

static void
on_wake(void *ud)
{
	if (!pthread_equal(pthread_self(), loop_thread))
		wake_in_loop_thread = false;
	wakes++;
}

static void *
waker(void *arg)
{
	struct timespec ts = { 0, 100 * 1000000 };

	nanosleep(&ts, NULL); /* let the loop block first */
	if (arg != NULL)
		loop_quit(L);
	else
		loop_wake(L);
	return NULL;
}

static bool
pred_woken(void *ud)
{
	return wakes >= 1;
}

static bool backstop_fired;

static void
backstop(void *ud)
{
	backstop_fired = true;
	loop_quit(L);
}

static void
test_wake_and_quit_from_another_thread(void)
{
	pthread_t t;
	struct loop_timer *bs;
	int64_t t0;

	loop_thread = pthread_self();
	loop_set_wake_cb(L, on_wake, NULL);
	CHECK_INT(pthread_create(&t, NULL, waker, NULL), 0);
	CHECK(helper_wait_for(L, pred_woken, NULL, 5000));
	pthread_join(t, NULL);
	CHECK_INT(wakes, 1);
	CHECK(wake_in_loop_thread);

	/* loop_quit from another thread ends a loop with nothing to do soon
	 * (the backstop is far away) */
	bs = loop_timer_create(L, backstop, NULL);
	loop_timer_arm(bs, 10000);
	t0 = loop_mono_ms();
	CHECK_INT(pthread_create(&t, NULL, waker, (void *) 1), 0);
	loop_run(L);
	pthread_join(t, NULL);
	CHECK(!backstop_fired);
	CHECK(loop_mono_ms() - t0 < 5000);
	CHECK_INT(wakes, 1); /* a quit is not a wake */
	loop_timer_destroy(bs);
	loop_set_wake_cb(L, NULL, NULL);
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
	RUN(test_signals_reach_the_loop);
	RUN(test_wake_and_quit_from_another_thread);
	RUN(test_timers);

	helper_peer_kill(&peer);
	helper_peer_close(&peer);
	loop_destroy(L);
	reset_results();
	TEST_MAIN_END();
}
