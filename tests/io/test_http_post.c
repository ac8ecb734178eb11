/* http_client_post against tests/io/http_peer.py on the real loop: small,
 * empty and 3 MiB bodies arrive intact with their Content-Type and
 * Content-Length and the configured headers; a 400's body is delivered
 * with its status; a POST waits in the same FIFO as GETs and has the same
 * timeout; a refused connection, bad arguments, destroy mid-upload. */
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "helper_broker.h"
#include "helper_loop.h"
#include "http_client.h"
#include "log.h"
#include "loop.h"
#include "test.h"
#include "url.h"

#define N_RES    4
#define BIG_BODY (3u << 20)
/* more than loopback's socket buffers take while nobody reads */
#define STALL_BODY (32u << 20)

static struct loop *L;
static struct helper_peer hpeer;
static struct url base;

struct result {
	int calls;
	int status;
	size_t len;
	char *body;
};

static struct result res[N_RES];

static void
on_done(void *ud, int status, const char *body, size_t len)
{
	struct result *r = ud;

	r->calls++;
	r->status = status;
	r->len = len;
	free(r->body);
	r->body = malloc(len + 1);
	memcpy(r->body, body, len + 1); /* includes the promised NUL */
}

static bool
pred_called(void *ud)
{
	return ((const struct result *) ud)->calls >= 1;
}

static void
reset_results(void)
{
	for (int i = 0; i < N_RES; i++) {
		free(res[i].body);
		memset(&res[i], 0, sizeof(res[i]));
	}
}

/* ---- http_peer.py: its port, and its REQ/BODY lines in order ---- */

static int seen_port;
static char seen_log[4096]; /* "REQ a;REQ b;BODY POST /hold/p 2;" */

static void
hp_line(void *ud, const char *line)
{
	sscanf(line, "LISTENING %d", &seen_port);
	size_t used = strlen(seen_log);
	if (strncmp(line, "REQ ", 4) == 0 || strncmp(line, "BODY ", 5) == 0
	    || strncmp(line, "STALL ", 6) == 0)
		snprintf(
		    seen_log + used, sizeof(seen_log) - used, "%s;", line);
}

static void
hp_drain(void)
{
	helper_peer_read_lines(&hpeer, hp_line, NULL);
}

static void
hp_cmd(const char *cmd)
{
	helper_peer_cmd(&hpeer, cmd);
}

static bool
hp_listening(void *ud)
{
	return seen_port > 0;
}

static int
hp_start(void)
{
	if (helper_peer_spawn_named(&hpeer, "http_peer.py") != 0
	    || !helper_peer_await(&hpeer, hp_line, hp_listening, NULL, 10000))
		return -1;
	helper_peer_base(&base, seen_port);
	return 0;
}

static bool
pred_log_has(void *ud)
{
	hp_drain();
	return strstr(seen_log, ud) != NULL;
}

/* ---- tests ---- */

/* A small JSON body goes out as a POST with application/json and its
 * length, beside the --comfyui headers, and comes back byte for byte. */
static void
test_post_small_with_headers(void)
{
	static const char body[]
	    = "{\"prompt\":{\"1\":{\"class_type\":\"X\"}},"
	      "\"client_id\":\"c2m-gpu1\"}";
	char *hdrs[] = { "X-Test: abc 123", "Authorization: Bearer s3cret" };
	struct http_client *h;
	char want[64];

	reset_results();
	h = http_client_create(L, &base, hdrs, 2, NULL, 1 << 20);
	CHECK(h != NULL);
	CHECK_INT(http_client_post(h, "/post/headers", body, strlen(body),
	              5000, on_done, &res[0]),
	    0);
	CHECK_INT(http_client_post(h, "/post/echo", body, strlen(body), 5000,
	              on_done, &res[1]),
	    0);
	CHECK_INT(res[0].calls, 0); /* never from inside the call */
	CHECK(helper_wait_for(L, pred_called, &res[1], 5000));
	CHECK(helper_wait_for(L, pred_called, &res[0], 5000));
	CHECK_INT(res[0].status, 200);
	CHECK(strstr(res[0].body, "method POST\n") != NULL);
	snprintf(want, sizeof(want), "len %zu\n", strlen(body));
	CHECK(strstr(res[0].body, want) != NULL);
	snprintf(want, sizeof(want), "content-length: %zu\n", strlen(body));
	CHECK(strstr(res[0].body, want) != NULL);
	CHECK(strstr(res[0].body, "content-type: application/json\n") != NULL);
	CHECK(strstr(res[0].body, "x-test: abc 123\n") != NULL);
	CHECK(strstr(res[0].body, "authorization: Bearer s3cret\n") != NULL);
	CHECK_INT(res[1].status, 200);
	CHECK_INT(res[1].len, strlen(body));
	CHECK_STR(res[1].body, body);
	CHECK_INT(http_client_pending(h), 0);
	http_client_destroy(h);
}

/* A 3 MiB body (bytes of every value) goes out in pieces and arrives
 * intact; so does an empty one. */
static void
test_post_big_and_empty(void)
{
	struct http_client *h;
	char *big = malloc(BIG_BODY);

	for (size_t i = 0; i < BIG_BODY; i++)
		big[i] = (char) ((i * 131 + i / 4099) & 0xff);
	reset_results();
	h = http_client_create(L, &base, NULL, 0, NULL, 8u << 20);
	CHECK(h != NULL);
	CHECK_INT(http_client_post(
	              h, "/post/echo", big, BIG_BODY, 20000, on_done, &res[0]),
	    0);
	big[0] ^= 1; /* the body was copied */
	CHECK_INT(http_client_post(
	              h, "/post/headers", "", 0, 5000, on_done, &res[1]),
	    0);
	CHECK(helper_wait_for(L, pred_called, &res[0], 20000));
	CHECK(helper_wait_for(L, pred_called, &res[1], 5000));
	big[0] ^= 1;
	CHECK_INT(res[0].status, 200);
	CHECK_INT(res[0].len, BIG_BODY);
	CHECK(
	    res[0].len == BIG_BODY && memcmp(res[0].body, big, BIG_BODY) == 0);
	CHECK_INT(res[1].status, 200);
	CHECK(strstr(res[1].body, "len 0\n") != NULL);
	CHECK(strstr(res[1].body, "content-length: 0\n") != NULL);
	http_client_destroy(h);
	free(big);
}

/* ComfyUI refuses a workflow with a 400 and a JSON body: both reach the
 * callback, as do a 500's. */
static void
test_post_error_body_delivered(void)
{
	struct http_client *h;

	reset_results();
	h = http_client_create(L, &base, NULL, 0, NULL, 1 << 20);
	CHECK(h != NULL);
	CHECK_INT(http_client_post(
	              h, "/post/status/400", "{}", 2, 5000, on_done, &res[0]),
	    0);
	CHECK_INT(http_client_post(
	              h, "/post/status/500", "{}", 2, 5000, on_done, &res[1]),
	    0);
	CHECK(helper_wait_for(L, pred_called, &res[0], 5000));
	CHECK(helper_wait_for(L, pred_called, &res[1], 5000));
	CHECK_INT(res[0].status, 400);
	CHECK(strncmp(
	          res[0].body, "{\"error\": {\"type\": \"invalid_prompt\"", 35)
	    == 0);
	CHECK(strstr(res[0].body, "\"node_errors\": {}") != NULL);
	CHECK_INT(res[1].status, 500);
	CHECK(strstr(res[1].body, "invalid_prompt") != NULL);
	http_client_destroy(h);
}

/* A POST waits behind the GETs on the wire, in the same FIFO, and times
 * out like them. */
static void
test_post_same_fifo_and_timeout(void)
{
	struct http_client *h;

	reset_results();
	hp_drain();
	seen_log[0] = '\0';
	h = http_client_create(L, &base, NULL, 0, NULL, 1 << 20);
	CHECK(h != NULL);
	CHECK_INT(http_client_get(h, "/hold/a", 5000, on_done, &res[0]), 0);
	CHECK_INT(http_client_get(h, "/hold/b", 5000, on_done, &res[1]), 0);
	CHECK_INT(
	    http_client_post(h, "/hold/p", "{}", 2, 5000, on_done, &res[2]),
	    0);
	CHECK(helper_wait_for(L, pred_log_has, "REQ b;", 5000));
	CHECK(!helper_wait_for(L, pred_log_has, "REQ p;", 300));
	CHECK_INT(http_client_pending(h), 3);
	hp_cmd("release a\n");
	CHECK(helper_wait_for(L, pred_log_has, "REQ p;", 5000));
	CHECK(strstr(seen_log, "BODY POST /hold/p 2;REQ p;") != NULL);
	hp_cmd("release-all\n");
	CHECK(helper_wait_for(L, pred_called, &res[2], 5000));
	CHECK_INT(res[2].status, 200);
	CHECK_STR(res[2].body, "held p\n");
	/* never answered: times out */
	CHECK_INT(
	    http_client_post(h, "/hold/never", "{}", 2, 400, on_done, &res[3]),
	    0);
	CHECK(helper_wait_for(L, pred_called, &res[3], 5000));
	CHECK_INT(res[3].status, BR_ESTATE);
	http_client_destroy(h);
}

/* Bad arguments are refused at once; a refused connection is BR_EIO;
 * destroying the client in the middle of an upload calls nobody back. */
static void
test_post_refused_bad_args_destroy(void)
{
	struct http_client *h;
	struct url dead;
	char *big = calloc(1, STALL_BODY);

	reset_results();
	h = http_client_create(L, &base, NULL, 0, NULL, 1 << 20);
	CHECK(h != NULL);
	CHECK_INT(http_client_post(h, "nopath", "{}", 2, 0, on_done, NULL),
	    BR_EINVAL);
	CHECK_INT(
	    http_client_post(h, "/x", NULL, 2, 0, on_done, NULL), BR_EINVAL);
	CHECK_INT(
	    http_client_post(h, "/x", "{}", 2, 0, NULL, NULL), BR_EINVAL);
	seen_log[0] = '\0';
	CHECK_INT(http_client_post(h, "/post/stall", big, STALL_BODY, 20000,
	              on_done, &res[0]),
	    0);
	/* the peer has the headers and reads no further: mid-upload */
	CHECK(helper_wait_for(L, pred_log_has, "STALL /post/stall;", 5000));
	helper_wait_for(L, NULL, NULL, 50);
	CHECK_INT(res[0].calls, 0);
	http_client_destroy(h);
	CHECK(!helper_wait_for(L, pred_called, &res[0], 300));
	CHECK_INT(res[0].calls, 0);

	helper_peer_base(&dead, helper_free_port());
	h = http_client_create(L, &dead, NULL, 0, NULL, 1 << 20);
	CHECK(h != NULL);
	CHECK_INT(
	    http_client_post(h, "/prompt", "{}", 2, 5000, on_done, &res[1]),
	    0);
	CHECK(helper_wait_for(L, pred_called, &res[1], 5000));
	CHECK_INT(res[1].status, BR_EIO);
	http_client_destroy(h);
	free(big);
}

int
main(void)
{
	signal(SIGPIPE, SIG_IGN);
	log_setup(LOG_LVL_INFO, LOG_FMT_TEXT);
	L = loop_create();
	if (L == NULL || hp_start() != 0) {
		fprintf(stderr, "cannot start the loop or http_peer.py\n");
		return 1;
	}
	RUN(test_post_small_with_headers);
	RUN(test_post_big_and_empty);
	RUN(test_post_error_body_delivered);
	RUN(test_post_same_fifo_and_timeout);
	RUN(test_post_refused_bad_args_destroy);
	helper_peer_kill(&hpeer);
	helper_peer_close(&hpeer);
	loop_destroy(L);
	reset_results();
	TEST_MAIN_END();
}
