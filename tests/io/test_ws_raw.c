/* The ws:// (RAW) transport of ws_client against tests/io/ws_peer.py (a real
 * aiohttp server) on the real loop: server pings answered, a fragmented
 * message with pings between its frames, a bad Sec-WebSocket-Accept, a
 * refused upgrade, a masked server frame and RSV bits (each a logged reason
 * and a reconnect, nothing delivered), the close handshake on stop, a peer
 * that never answers pings, pausing reading (backpressure: nothing is
 * delivered while paused, everything in order after; kept across a
 * reconnect; the guard ends a pause by itself). Log lines are read back from
 * stderr, which runs into a file while a test watches it. */
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helper_loop.h"
#include "log.h"
#include "loop.h"
#include "test.h"
#include "url.h"
#include "ws_client.h"

static struct loop *L;
static struct helper_peer P;
static struct url base;

/* ---- the peer's event lines ---- */

static char pbuf[1 << 16];
static size_t plen;

static void
peer_poll(void)
{
	ssize_t n;

	while (plen < sizeof pbuf - 1
	    && (n = read(P.out_fd, pbuf + plen, sizeof pbuf - 1 - plen)) > 0)
		plen += (size_t) n;
	pbuf[plen] = '\0';
}

static void
peer_cmd(const char *fmt, ...)
{
	char b[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(b, sizeof b - 1, fmt, ap);
	va_end(ap);
	b[n++] = '\n';
	b[n] = '\0';
	helper_peer_cmd(&P, b);
}

/* ---- stderr (the log) into a file, read back ---- */

static char logpath[64];
static int logfd = -1, saved_err = -1;

static void
log_capture(void)
{
	fflush(stderr);
	snprintf(logpath, sizeof logpath, "/tmp/c2m-wsraw-log-XXXXXX");
	logfd = mkstemp(logpath);
	saved_err = dup(2);
	dup2(logfd, 2);
}

/* The log so far (a static buffer). */
static const char *
log_text(void)
{
	static char b[1 << 16];
	ssize_t n;

	fflush(stderr);
	n = pread(logfd, b, sizeof b - 1, 0);
	b[n > 0 ? n : 0] = '\0';
	return b;
}

static void
log_release(void)
{
	const char *t = log_text();

	fflush(stderr);
	dup2(saved_err, 2);
	close(saved_err);
	close(logfd);
	unlink(logpath);
	fputs(t, stderr); /* what the test saw, for a failure's reader */
}

/* ---- the client's callbacks ---- */

static int ups, downs, chunks, msgs;
/* "seq:<i>" messages: the next i expected, and those out of order */
static int seq_next, seq_bad;
static char why[160];
static char msg[1 << 16];
static size_t msg_len, done_len;

static void
on_up(void *ud)
{
	ups++;
}

static void
on_down(void *ud, const char *w)
{
	downs++;
	snprintf(why, sizeof why, "%s", w);
}

/* set: on_chunk stops this client (as an engine callback may) */
static struct ws_client *stop_in_chunk;

static void
on_chunk(void *ud, const void *b, size_t n, bool first, bool final, bool bin)
{
	chunks++;
	if (stop_in_chunk != NULL) {
		ws_client_stop(stop_in_chunk);
		stop_in_chunk = NULL;
	}
	if (first)
		msg_len = 0;
	if (msg_len + n <= sizeof msg)
		memcpy(msg + msg_len, b, n);
	msg_len += n;
	if (final) {
		done_len = msg_len;
		msgs++;
		if (msg_len > 4 && msg_len < 32
		    && memcmp(msg, "seq:", 4) == 0) {
			char num[32];
			memcpy(num, msg + 4, msg_len - 4);
			num[msg_len - 4] = '\0';
			if (atoi(num) == seq_next)
				seq_next++;
			else
				seq_bad++;
		}
	}
}

static const struct ws_client_cb cbs = { on_up, on_down, on_chunk, NULL };

/* ---- waiting ---- */

static const char *want_text;
static struct ws_client *want_client;
static int want_n;

static bool
pred_peer(void *ud)
{
	peer_poll();
	return strstr(pbuf, want_text) != NULL;
}

static bool
pred_log(void *ud)
{
	peer_poll();
	return strstr(log_text(), want_text) != NULL;
}

static bool
pred_int(void *ud)
{
	peer_poll();
	return *(int *) ud >= want_n;
}

static bool
pred_reconnects(void *ud)
{
	peer_poll();
	return ws_client_reconnects(want_client) >= (uint64_t) want_n;
}

static bool
wait_peer(const char *text, int ms)
{
	want_text = text;
	return helper_wait_for(L, pred_peer, NULL, ms);
}

static bool
wait_log(const char *text, int ms)
{
	want_text = text;
	return helper_wait_for(L, pred_log, NULL, ms);
}

static bool
wait_int(int *v, int n, int ms)
{
	want_n = n;
	return helper_wait_for(L, pred_int, v, ms);
}

static bool
wait_reconnects(struct ws_client *c, int n, int ms)
{
	want_client = c;
	want_n = n;
	return helper_wait_for(L, pred_reconnects, NULL, ms);
}

static struct ws_client *
start(int ping_s, int pong_s)
{
	struct ws_client_cfg cfg;
	struct ws_client *c;

	memset(&cfg, 0, sizeof cfg);
	cfg.base = &base;
	cfg.client_id = "raw-test";
	cfg.ping_interval_s = ping_s;
	cfg.pong_timeout_s = pong_s;
	ups = downs = chunks = msgs = seq_next = seq_bad = 0;
	why[0] = '\0';
	plen = 0;
	c = ws_client_create(L, &cfg, &cbs, NULL);
	CHECK(c != NULL);
	CHECK_INT(ws_client_start(c), 0);
	return c;
}

/* stop: our close (1000) reaches the peer, on_down once */
static void
stop(struct ws_client *c, bool expect_close)
{
	ws_client_stop(c);
	if (expect_close) {
		CHECK(wait_int(&downs, ups, 5000));
		CHECK(wait_peer("DISCONNECT code=1000", 5000));
	}
	ws_client_destroy(c);
	peer_cmd("mode normal");
	CHECK(wait_peer("SENT mode", 5000));
}

/* ---- tests ---- */

static void
test_server_ping_answered(void)
{
	struct ws_client *c = start(0, 0);

	CHECK(wait_int(&ups, 1, 10000));
	peer_cmd("ping hello");
	CHECK(wait_peer("PONG hello\n", 5000));
	peer_cmd("ping x");
	CHECK(wait_peer("PONG x\n", 5000));
	CHECK_INT(downs, 0);
	stop(c, true);
}

static void
test_fragments_with_pings(void)
{
	struct ws_client *c = start(0, 0);
	bool same = true;

	CHECK(wait_int(&ups, 1, 10000));
	peer_cmd("fragping 1000 100");
	CHECK(wait_int(&msgs, 1, 5000));
	CHECK_INT(done_len, 1000);
	for (size_t i = 0; i < 1000 && same; i++)
		same = msg[i] == (char) ('a' + (i * 7 + i / 13) % 26);
	CHECK(same);
	CHECK(chunks >= 10); /* one piece per frame at least */
	/* the nine pings between the ten frames, each answered */
	CHECK(wait_peer("PONG p900\n", 5000));
	CHECK(strstr(pbuf, "PONG p100\n") != NULL);
	CHECK_INT(downs, 0);
	stop(c, true);
}

/* A bad upgrade answer: the reason in the log, attempts go on, nothing is
 * delivered. */
static void
check_bad_upgrade(const char *mode, const char *reason)
{
	struct ws_client *c;

	peer_cmd("mode %s", mode);
	CHECK(wait_peer("SENT mode", 5000));
	log_capture();
	c = start(0, 0);
	CHECK(wait_reconnects(c, 2, 10000));
	CHECK(wait_log(reason, 1000));
	CHECK(strstr(log_text(), "cannot connect to ws://127.0.0.1") != NULL);
	CHECK_INT(ups, 0);
	CHECK_INT(chunks, 0);
	log_release();
	stop(c, false);
}

static void
test_bad_accept(void)
{
	check_bad_upgrade("badaccept",
	    "Sec-WebSocket-Accept 'AAAAAAAAAAAAAAAAAAAAAAAAAAA=' does not "
	    "match the key; retrying");
}

static void
test_refused_upgrade(void)
{
	check_bad_upgrade(
	    "refuse", "upgrade refused: HTTP 403 Forbidden; retrying");
}

/* A bad frame after a good one: the good one is delivered, then close
 * 1002, the reason, a new link; the bad frame's payload never is. */
static void
check_bad_frame(const char *hex, const char *reason)
{
	struct ws_client *c = start(0, 0);

	CHECK(wait_int(&ups, 1, 10000));
	log_capture();
	peer_cmd("raw 81026f6b%s", hex);
	CHECK(wait_int(&downs, 1, 5000));
	CHECK_STR(why, reason);
	CHECK(wait_peer("DISCONNECT code=1002", 5000));
	CHECK(wait_log(reason, 1000));
	CHECK_INT(msgs, 1);
	CHECK_INT(done_len, 2);
	CHECK(memcmp(msg, "ok", 2) == 0);
	CHECK(wait_int(&ups, 2, 10000)); /* and it comes back */
	CHECK_INT(msgs, 1);
	log_release();
	stop(c, true);
}

static void
test_masked_frame(void)
{
	check_bad_frame("8182000000006869",
	    "protocol error: masked frame from the server");
}

static void
test_rsv_bits(void)
{
	check_bad_frame("c1026869",
	    "protocol error: RSV bits set (no extension was "
	    "negotiated)");
}

/* A peer that leaves pings unanswered is dropped after pong_s. */
static void
test_pong_timeout(void)
{
	struct ws_client *c;
	int64_t t0;

	peer_cmd("mode nopong");
	CHECK(wait_peer("SENT mode", 5000));
	c = start(1, 1);
	CHECK(wait_int(&ups, 1, 10000));
	t0 = loop_mono_ms();
	CHECK(wait_peer("PING 0", 5000));
	CHECK(wait_int(&downs, 1, 5000));
	CHECK_STR(why, "no pong within 1 s");
	CHECK(loop_mono_ms() - t0 >= 1500);
	CHECK(wait_int(&ups, 2, 10000));
	stop(c, false);
}

/* The server closes: its code is echoed, then the link is down and comes
 * back. */
static void
test_server_close(void)
{
	struct ws_client *c = start(0, 0);

	CHECK(wait_int(&ups, 1, 10000));
	/* a raw close 1001: the peer reports the code our echo carries */
	peer_cmd("raw 880203e9");
	CHECK(wait_int(&downs, 1, 5000));
	CHECK_STR(why, "peer closed (code 1001)");
	CHECK(wait_peer("DISCONNECT code=1001", 5000));
	CHECK(wait_int(&ups, 2, 10000));
	stop(c, true);
}

/* A stop from inside on_chunk while the same read holds the peer's close:
 * our close, queued by the stop, still goes out before the socket does
 * (the peer reports the code it carries, not an abnormal end). */
static void
test_stop_in_callback_with_peer_close(void)
{
	struct ws_client *c = start(0, 0);

	CHECK(wait_int(&ups, 1, 10000));
	stop_in_chunk = c;
	peer_cmd("raw 810161880203e8"); /* text "a", then close 1000 */
	CHECK(wait_int(&downs, 1, 5000));
	CHECK(stop_in_chunk == NULL);
	CHECK(wait_peer("DISCONNECT code=1000", 5000));
	CHECK_INT(ups, 1);
	stop(c, false);
}

/* Paused: the peer's messages wait in the socket; resumed: all arrive,
 * in order. A pause survives a reconnect. */
static void
test_pause_resume(void)
{
	struct ws_client *c = start(0, 0);

	CHECK(wait_int(&ups, 1, 10000));
	ws_client_pause(c, true);
	peer_cmd("seq 0 20000");
	CHECK(wait_peer("SENT seq", 5000));
	helper_wait_for(L, NULL, NULL, 500);
	CHECK_INT(msgs, 0);
	ws_client_pause(c, false);
	CHECK(wait_int(&seq_next, 20000, 5000));
	CHECK_INT(seq_bad, 0);
	CHECK_INT(ws_client_pauses(c), 1);
	CHECK(ws_client_paused_ms(c) >= 500);

	/* kept across a reconnect: the old link is read to its end, the new
	 * one starts paused */
	ws_client_pause(c, true);
	ws_client_reconnect(c);
	CHECK(wait_int(&ups, 2, 10000));
	peer_cmd("seq 20000 100");
	CHECK(wait_peer("SENT seq 100", 5000));
	helper_wait_for(L, NULL, NULL, 300);
	CHECK_INT(seq_next, 20000);
	ws_client_pause(c, false);
	CHECK(wait_int(&seq_next, 20100, 5000));
	CHECK_INT(seq_bad, 0);
	stop(c, true);
}

/* A pause that nobody ends ends after WS_PAUSE_MAX_MS (2 s); reading then
 * stays on until the next resume, after which a pause holds again. */
static void
test_pause_guard(void)
{
	struct ws_client *c = start(0, 0);
	int64_t t0;

	CHECK(wait_int(&ups, 1, 10000));
	log_capture();
	t0 = loop_mono_ms();
	ws_client_pause(c, true);
	peer_cmd("seq 0 1000");
	CHECK(wait_peer("SENT seq", 5000));
	CHECK(wait_int(&seq_next, 1000, 5000));
	CHECK(loop_mono_ms() - t0 >= 1900);
	CHECK(loop_mono_ms() - t0 < 4000);
	CHECK(wait_log("reading ComfyUI again", 1000));
	CHECK(strstr(log_text(), "reading paused") != NULL);
	/* after the guard: another pause is ignored until a resume */
	ws_client_pause(c, true);
	peer_cmd("seq 1000 100");
	CHECK(wait_int(&seq_next, 1100, 1000));
	ws_client_pause(c, false);
	ws_client_pause(c, true);
	peer_cmd("seq 1100 100");
	CHECK(wait_peer("SENT seq 100\nSENT seq 100", 5000));
	helper_wait_for(L, NULL, NULL, 300);
	CHECK_INT(seq_next, 1100);
	ws_client_pause(c, false);
	CHECK(wait_int(&seq_next, 1200, 5000));
	CHECK_INT(seq_bad, 0);
	CHECK_INT(ws_client_pauses(c), 2);
	log_release();
	stop(c, true);
}

/* A pause that comes after a stop does not hold up the close: the peer's
 * answer is still read, so the link ends well before the 2 s guard. */
static void
test_pause_after_stop(void)
{
	struct ws_client *c = start(0, 0);

	CHECK(wait_int(&ups, 1, 10000));
	int64_t t0 = loop_mono_ms();
	ws_client_stop(c);
	ws_client_pause(c, true);
	CHECK(wait_int(&downs, 1, 5000));
	CHECK(loop_mono_ms() - t0 < 1500);
	CHECK(wait_peer("DISCONNECT code=1000", 5000));
	ws_client_pause(c, false);
	stop(c, false);
}

int
main(void)
{
	log_setup(LOG_LVL_INFO, LOG_FMT_TEXT);
	L = loop_create();
	if (L == NULL || helper_peer_start(&P, 0, NULL, NULL) != 0) {
		fprintf(stderr, "cannot start the loop or the peer\n");
		return 1;
	}
	helper_peer_base(&base, P.port);

	RUN(test_server_ping_answered);
	RUN(test_fragments_with_pings);
	RUN(test_bad_accept);
	RUN(test_refused_upgrade);
	RUN(test_masked_frame);
	RUN(test_rsv_bits);
	RUN(test_pong_timeout);
	RUN(test_server_close);
	RUN(test_stop_in_callback_with_peer_close);
	RUN(test_pause_resume);
	RUN(test_pause_guard);
	RUN(test_pause_after_stop);

	helper_peer_kill(&P);
	helper_peer_close(&P);
	loop_destroy(L);
	TEST_MAIN_END();
}
