/* ws_client against tests/io/ws_peer.py (a real aiohttp server) on the real
 * loop: first frame, headers, fragmented 5 MiB text, binary, reconnect
 * backoff after a kill, accept-then-drop, hung peer (pings), a listener that
 * never answers the upgrade, stop. Every wait runs the loop until a
 * predicate holds or a deadline passes. */
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "err.h"
#include "helper_loop.h"
#include "log.h"
#include "loop.h"
#include "test.h"
#include "url.h"
#include "ws_client.h"

#define BIG_LEN    (5 * 1024 * 1024)
#define MAX_LINES  4096
#define MAX_STAMPS 64
/* the request's header names in order, with one extra header X-Test */
#define WS_REQUEST_HEADERS                                                    \
	"REQUEST Pragma,Cache-Control,Host,Upgrade,Connection,"               \
	"Sec-WebSocket-Key,Sec-WebSocket-Version,X-Test"

/* ---- the peer process ---- */

/* the process, plus the partial line its events are split from */
struct peer {
	struct helper_peer proc;
	char buf[8192];
	size_t blen;
};

static char *lines[MAX_LINES];
static int n_lines;

static void
peer_poll(struct peer *p)
{
	ssize_t n;
	char *nl;

	if (p->proc.out_fd < 0)
		return;
	for (;;) {
		n = read(p->proc.out_fd, p->buf + p->blen,
		    sizeof(p->buf) - 1 - p->blen);
		if (n <= 0)
			break;
		p->blen += (size_t) n;
		p->buf[p->blen] = '\0';
		while ((nl = strchr(p->buf, '\n')) != NULL) {
			*nl = '\0';
			if (n_lines < MAX_LINES)
				lines[n_lines++] = strdup(p->buf);
			p->blen -= (size_t) (nl + 1 - p->buf);
			memmove(p->buf, nl + 1, p->blen + 1);
		}
		if (p->blen == sizeof(p->buf) - 1)
			p->blen = 0; /* an absurd line: drop it */
	}
}

static int
count_lines(const char *prefix)
{
	int i, n = 0;

	for (i = 0; i < n_lines; i++)
		if (strncmp(lines[i], prefix, strlen(prefix)) == 0)
			n++;
	return n;
}

static const char *
last_line(const char *prefix)
{
	int i;

	for (i = n_lines - 1; i >= 0; i--)
		if (strncmp(lines[i], prefix, strlen(prefix)) == 0)
			return lines[i];
	return NULL;
}

/* Starts the peer on port (0: any), serving TLS when cert is set, and
 * waits for LISTENING (10 s). */
static int
peer_spawn(struct peer *p, int port, const char *cert, const char *key)
{
	memset(p, 0, sizeof(*p));
	return helper_peer_start(&p->proc, port, cert, key);
}

static int
peer_start(struct peer *p, int port)
{
	return peer_spawn(p, port, NULL, NULL);
}

static void
peer_cmd(struct peer *p, const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	buf[n++] = '\n';
	if (write(p->proc.in_fd, buf, (size_t) n) != n)
		fprintf(stderr, "peer_cmd: short write\n");
}

static void
peer_kill(struct peer *p)
{
	if (p->proc.pid <= 0)
		return;
	helper_peer_kill(&p->proc);
	peer_poll(p); /* what it wrote before it died still counts */
	helper_peer_close(&p->proc);
}

/* ---- the client under test ---- */

static struct loop *L;
static struct peer P;
static struct url base;

static int ups, downs;
static char last_why[128];
static int64_t up_ms[MAX_STAMPS];
static int64_t down_ms[MAX_STAMPS];

/* reassembly of the last complete message */
static unsigned char *msg;
static size_t msg_len, msg_cap;
static int msg_chunks, msgs_done, first_flags;
static bool msg_binary, msg_broken;
static size_t done_len;
static uint64_t done_fnv;
static bool done_binary;
static int done_chunks;

static void
on_up(void *ud)
{
	if (ups < MAX_STAMPS)
		up_ms[ups] = loop_mono_ms();
	ups++;
}

static struct ws_client *destroy_in_down;

static void
on_down(void *ud, const char *why)
{
	if (destroy_in_down != NULL) {
		ws_client_destroy(destroy_in_down);
		destroy_in_down = NULL;
	}
	if (downs < MAX_STAMPS)
		down_ms[downs] = loop_mono_ms();
	downs++;
	snprintf(last_why, sizeof(last_why), "%s", why);
}

static uint64_t
fnv1a64(const unsigned char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	size_t i;

	for (i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

static uint64_t
pattern_fnv(size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	size_t i;

	for (i = 0; i < n; i++) {
		h ^= (unsigned char) ('a' + (i * 7 + i / 13) % 26);
		h *= 0x100000001b3ULL;
	}
	return h;
}

static void
on_chunk(
    void *ud, const void *buf, size_t len, bool first, bool final, bool binary)
{
	if (first) {
		first_flags++;
		msg_len = 0;
		msg_chunks = 0;
		msg_binary = binary;
		msg_broken = false;
	}
	if (msg_len + len > msg_cap) {
		msg_cap = (msg_len + len) * 2;
		msg = realloc(msg, msg_cap);
	}
	memcpy(msg + msg_len, buf, len);
	msg_len += len;
	msg_chunks++;
	if (binary != msg_binary)
		msg_broken = true;
	if (final) {
		done_len = msg_len;
		done_fnv = fnv1a64(msg, msg_len);
		done_binary = msg_binary && !msg_broken;
		done_chunks = msg_chunks;
		msgs_done++;
	}
}

static const struct ws_client_cb cbs = { on_up, on_down, on_chunk, NULL };

/* ---- waiting: the loop runs until pred() or the deadline ---- */

static bool (*wait_pred)(void *ud);
static struct ws_client *watched;
static uint64_t last_reconnects;
static int64_t recon_ms[MAX_STAMPS];
static int n_recon;

/* Every poll of a wait also collects the peer's events and stamps each
 * change of the watched client's reconnect count. */
static bool
poll_then_check(void *ud)
{
	uint64_t r;

	peer_poll(&P);
	if (watched != NULL) {
		r = ws_client_reconnects(watched);
		if (r != last_reconnects && n_recon < MAX_STAMPS)
			recon_ms[n_recon++] = loop_mono_ms();
		last_reconnects = r;
	}
	return wait_pred != NULL && wait_pred(ud);
}

static bool
wait_for(bool (*pred)(void *ud), int timeout_ms)
{
	wait_pred = pred;
	return helper_wait_for(L, poll_then_check, NULL, timeout_ms);
}

static void
watch(struct ws_client *c)
{
	watched = c;
	last_reconnects = c != NULL ? ws_client_reconnects(c) : 0;
	n_recon = 0;
}

static int target_ups, target_downs, target_msgs, target_lines;
static const char *target_prefix;
static uint64_t target_reconnects;

static bool
pred_ups(void *ud)
{
	return ups >= target_ups;
}

static bool
pred_downs(void *ud)
{
	return downs >= target_downs;
}

static bool
pred_msgs(void *ud)
{
	return msgs_done >= target_msgs;
}

static bool
pred_lines(void *ud)
{
	return count_lines(target_prefix) >= target_lines;
}

static bool
pred_reconnects(void *ud)
{
	return watched != NULL
	    && ws_client_reconnects(watched) >= target_reconnects;
}

static bool
wait_ups(int n, int ms)
{
	target_ups = n;
	return wait_for(pred_ups, ms);
}

static bool
wait_downs(int n, int ms)
{
	target_downs = n;
	return wait_for(pred_downs, ms);
}

static bool
wait_lines(const char *prefix, int n, int ms)
{
	target_prefix = prefix;
	target_lines = n;
	return wait_for(pred_lines, ms);
}

static bool
wait_reconnects(uint64_t n, int ms)
{
	target_reconnects = n;
	return wait_for(pred_reconnects, ms);
}

static void
reset_counters(void)
{
	ups = downs = 0;
	msgs_done = first_flags = 0;
	last_why[0] = '\0';
}

static struct ws_client_cfg
default_cfg(void)
{
	struct ws_client_cfg cfg;

	memset(&cfg, 0, sizeof(cfg));
	cfg.base = &base;
	cfg.client_id = "bridge-test";
	return cfg;
}

/* ---- tests ---- */

static void
test_connect_first_frame_and_headers(void)
{
	char *hdrs[] = { "X-Test: hello-1" };
	struct ws_client_cfg cfg = default_cfg();
	struct ws_client *c;
	char expect[256];
	int connects = count_lines("CONNECT ");

	reset_counters();
	cfg.client_id = "bridge test/1";
	cfg.headers = hdrs;
	cfg.n_headers = 1;
	cfg.first_frame = "{\"type\":\"feature_flags\",\"data\":{}}";
	c = ws_client_create(L, &cfg, &cbs, NULL);
	CHECK(c != NULL);
	CHECK(!ws_client_is_up(c));
	CHECK_INT(ws_client_start(c), 0);
	CHECK(wait_ups(1, 10000));
	CHECK(ws_client_is_up(c));
	CHECK(wait_lines("RECV ", 1, 5000));
	CHECK_STR(last_line("RECV "),
	    "RECV 34 {\"type\":\"feature_flags\",\"data\":{}}");
	CHECK_INT(count_lines("CONNECT "), connects + 1);
	snprintf(expect, sizeof(expect),
	    "CONNECT id=bridge test/1 origin=- xtest=hello-1 "
	    "host=127.0.0.1:%d",
	    P.proc.port);
	CHECK_STR(last_line("CONNECT "), expect);
	/* ws:// writes the request as lws does for wss:// (test_wss) */
	CHECK_STR(last_line("REQUEST "), WS_REQUEST_HEADERS);
	CHECK_INT(ws_client_reconnects(c), 0);

	/* stop: a close frame, on_down once, no reconnect afterwards */
	ws_client_stop(c);
	CHECK(wait_downs(1, 5000));
	CHECK(wait_lines("DISCONNECT", 1, 5000));
	CHECK(!ws_client_is_up(c));
	CHECK(!wait_ups(2, 1000));
	CHECK_INT(downs, 1);
	CHECK_INT(count_lines("CONNECT "), connects + 1);
	ws_client_destroy(c);
}

static void
test_bad_header_rejected(void)
{
	char *hdrs[] = { "X-Bad header value" };
	char *hdrs2[] = { "X-Ok: fine\r\nInjected: 1" };
	struct ws_client_cfg cfg = default_cfg();

	cfg.headers = hdrs;
	cfg.n_headers = 1;
	CHECK(ws_client_create(L, &cfg, &cbs, NULL) == NULL);
	cfg.headers = hdrs2;
	CHECK(ws_client_create(L, &cfg, &cbs, NULL) == NULL);
}

static void
test_fragmented_text_and_binary(void)
{
	struct ws_client_cfg cfg = default_cfg();
	struct ws_client *c;

	reset_counters();
	c = ws_client_create(L, &cfg, &cbs, NULL);
	CHECK_INT(ws_client_start(c), 0);
	CHECK(wait_ups(1, 10000));

	/* 5 MiB text as 80 raw 64 KiB frames */
	peer_cmd(&P, "big %d %d", BIG_LEN, 65536);
	target_msgs = 1;
	CHECK(wait_for(pred_msgs, 30000));
	CHECK_INT(done_len, BIG_LEN);
	CHECK(done_fnv == pattern_fnv(BIG_LEN));
	CHECK(!done_binary);
	CHECK(done_chunks >= 80);
	CHECK_INT(first_flags, 1);

	/* a 100,008-byte binary message in one frame */
	peer_cmd(&P, "bin %d", 100008);
	target_msgs = 2;
	CHECK(wait_for(pred_msgs, 10000));
	CHECK_INT(done_len, 100008);
	CHECK(done_fnv == pattern_fnv(100008));
	CHECK(done_binary);
	CHECK_INT(first_flags, 2);
	CHECK(ws_client_is_up(c));
	CHECK_INT(downs, 0);

	ws_client_stop(c);
	CHECK(wait_downs(1, 5000));
	ws_client_destroy(c);
}

/* Gaps between consecutive stamps follow the 250 ms doubling table (lws
 * adds 0..20% jitter). A loaded machine only adds delay, so the upper
 * bound has room for it and the lower bound none. */
static void
check_growing(const int64_t *t, int n)
{
	int i;
	int64_t gap, step = 250;

	for (i = 1; i < n; i++, step *= 2) {
		gap = t[i] - t[i - 1];
		fprintf(stderr, "  gap %d: %lld ms (step %lld)\n", i,
		    (long long) gap, (long long) step);
		CHECK(gap >= step * 9 / 10);
		CHECK(gap <= step * 12 / 10 + 400);
	}
}

static void
test_reconnect_after_kill(void)
{
	struct ws_client_cfg cfg = default_cfg();
	struct ws_client *c;
	int64_t stamps[8];
	int port = P.proc.port, i, recv_before;

	reset_counters();
	cfg.first_frame = "{\"hello\":1}";
	c = ws_client_create(L, &cfg, &cbs, NULL);
	CHECK_INT(ws_client_start(c), 0);
	CHECK(wait_ups(1, 10000));
	watch(c);

	peer_kill(&P);
	CHECK(wait_downs(1, 5000));
	CHECK(!ws_client_is_up(c));
	/* the drop plus four refused attempts */
	CHECK(wait_reconnects(5, 15000));
	CHECK(n_recon >= 5);
	for (i = 0; i < 5 && i < n_recon; i++)
		stamps[i] = recon_ms[i];
	if (n_recon >= 5)
		check_growing(stamps, 5);
	CHECK_INT(ups, 1);
	CHECK_INT(downs, 1);

	recv_before = count_lines("RECV 11 ");
	CHECK_INT(peer_start(&P, port), 0);
	CHECK(wait_ups(2, 15000));
	CHECK(wait_lines("RECV 11 ", recv_before + 1, 5000));
	CHECK_INT(downs, 1);
	CHECK_INT(ws_client_returns(c), 1);
	watch(NULL);
	ws_client_stop(c);
	CHECK(wait_downs(2, 5000));
	ws_client_destroy(c);
}

static void
test_accept_then_drop_keeps_backing_off(void)
{
	struct ws_client_cfg cfg = default_cfg();
	struct ws_client *c;
	int n;

	reset_counters();
	cfg.stable_s = 2;
	c = ws_client_create(L, &cfg, &cbs, NULL);
	CHECK_INT(ws_client_start(c), 0);
	CHECK(wait_ups(1, 10000));

	peer_cmd(&P, "mode drop");
	CHECK(wait_lines("SENT mode", 1, 5000));
	ws_client_reconnect(c);
	/* the first link plus four that were accepted and dropped at once */
	CHECK(wait_downs(5, 15000));
	CHECK(ups >= 5);
	CHECK_INT(ws_client_reconnects(c), downs);
	check_growing(down_ms, 5);

	/* normal again: it comes up and stays; after stable_s the backoff
	 * starts again at 250 ms */
	peer_cmd(&P, "mode normal");
	n = ups;
	CHECK(wait_ups(n + 1, 15000));
	CHECK(!wait_downs(downs + 1, 2600));
	CHECK(ws_client_is_up(c));
	n = ups;
	ws_client_reconnect(c);
	CHECK(wait_ups(n + 1, 5000));
	if (ups > n && ups <= MAX_STAMPS) {
		int64_t gap = up_ms[ups - 1] - down_ms[downs - 1];
		fprintf(stderr, "  gap after a stable link: %lld ms\n",
		    (long long) gap);
		CHECK(gap < 500);
	}
	ws_client_stop(c);
	CHECK(wait_downs(downs + 1, 5000));
	ws_client_destroy(c);
}

static void
test_hung_peer_dropped_by_ping(void)
{
	struct ws_client_cfg cfg = default_cfg();
	struct ws_client *c;
	int64_t stopped;
	uint64_t r;

	reset_counters();
	cfg.ping_interval_s = 2;
	cfg.pong_timeout_s = 2;
	cfg.handshake_timeout_s = 2;
	c = ws_client_create(L, &cfg, &cbs, NULL);
	CHECK_INT(ws_client_start(c), 0);
	CHECK(wait_ups(1, 10000));
	/* pings answered: the link survives several ping intervals */
	CHECK(!wait_downs(1, 5000));
	CHECK(ws_client_is_up(c));

	kill(P.proc.pid, SIGSTOP);
	stopped = loop_mono_ms();
	CHECK(wait_downs(1, 9000));
	fprintf(stderr, "  dropped %lld ms after SIGSTOP (%s)\n",
	    (long long) (loop_mono_ms() - stopped), last_why);
	CHECK(loop_mono_ms() - stopped <= 6500);
	/* the kernel still accepts TCP for the stopped peer: every attempt
	 * must end by the handshake timeout and be retried */
	r = ws_client_reconnects(c);
	watch(c);
	CHECK(wait_reconnects(r + 2, 15000));
	CHECK_INT(ups, 1);
	kill(P.proc.pid, SIGCONT);
	CHECK(wait_ups(2, 20000));
	watch(NULL);
	ws_client_stop(c);
	CHECK(wait_downs(2, 5000));
	ws_client_destroy(c);
}

static void
test_upgrade_never_answered(void)
{
	struct ws_client_cfg cfg = default_cfg();
	struct ws_client *c;
	struct sockaddr_in sa;
	socklen_t slen = sizeof(sa);
	int lfd, one = 1, port;
	struct url saved = base;

	reset_counters();
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK_INT(bind(lfd, (struct sockaddr *) &sa, sizeof(sa)), 0);
	CHECK_INT(listen(lfd, 64), 0);
	getsockname(lfd, (struct sockaddr *) &sa, &slen);
	port = ntohs(sa.sin_port);
	helper_peer_base(&base, port);

	cfg.handshake_timeout_s = 1;
	c = ws_client_create(L, &cfg, &cbs, NULL);
	CHECK_INT(ws_client_start(c), 0);
	watch(c);
	/* never accepted, never answered: attempts time out and go on */
	CHECK(wait_reconnects(3, 15000));
	CHECK_INT(ups, 0);
	CHECK_INT(ws_client_returns(c), 0);
	CHECK(!ws_client_is_up(c));

	/* a real server appears on that port: the client gets there */
	close(lfd);
	peer_kill(&P);
	CHECK_INT(peer_start(&P, port), 0);
	CHECK(wait_ups(1, 20000));
	/* failed first attempts are no reconnect */
	CHECK_INT(ws_client_returns(c), 0);
	watch(NULL);
	ws_client_stop(c);
	CHECK(wait_downs(1, 5000));
	ws_client_destroy(c);
	base = saved;
	base.port = P.proc.port;
}

static void
test_destroy_while_connected(void)
{
	struct ws_client_cfg cfg = default_cfg();
	struct ws_client *c;
	int disc = count_lines("DISCONNECT");

	reset_counters();
	c = ws_client_create(L, &cfg, &cbs, NULL);
	CHECK_INT(ws_client_start(c), 0);
	CHECK(wait_ups(1, 10000));
	/* no callback after destroy; the socket goes away */
	ws_client_destroy(c);
	CHECK(wait_lines("DISCONNECT", disc + 1, 5000));
	CHECK_INT(downs, 0);
}

static void
test_destroy_from_on_down(void)
{
	struct ws_client_cfg cfg = default_cfg();
	struct ws_client *c;
	int connects;

	reset_counters();
	c = ws_client_create(L, &cfg, &cbs, NULL);
	CHECK_INT(ws_client_start(c), 0);
	CHECK(wait_ups(1, 10000));
	connects = count_lines("CONNECT ");
	destroy_in_down = c;
	peer_cmd(&P, "close");
	CHECK(wait_downs(1, 5000));
	CHECK(destroy_in_down == NULL);
	/* gone for good: no reconnect, no second on_down */
	CHECK(!wait_ups(2, 1500));
	CHECK_INT(downs, 1);
	CHECK_INT(count_lines("CONNECT "), connects);
}

/* wss:// against a self-signed certificate: trusted through tls.ca,
 * refused without it, accepted with tls.insecure. */
static void
test_wss(void)
{
	char dir[] = "/tmp/c2m-wss-XXXXXX", cmd[1024], cert[256], key[256];
	char *hdrs[] = { "X-Test: hello-1" };
	struct ws_client_cfg cfg = default_cfg();
	struct ws_client *c;
	struct peer tp;
	struct url tbase;

	CHECK(mkdtemp(dir) != NULL);
	snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
	snprintf(key, sizeof(key), "%s/key.pem", dir);
	snprintf(cmd, sizeof(cmd),
	    "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "
	    "/CN=127.0.0.1 -addext "
	    "subjectAltName=DNS:127.0.0.1,IP:127.0.0.1 -keyout %s -out %s "
	    ">/dev/null 2>&1",
	    key, cert);
	CHECK_INT(system(cmd), 0);
	CHECK_INT(peer_spawn(&tp, 0, cert, key), 0);
	tbase = base;
	snprintf(tbase.scheme, sizeof(tbase.scheme), "https");
	tbase.tls = true;
	tbase.port = tp.proc.port;
	cfg.base = &tbase;

	/* trusted through the CA file */
	reset_counters();
	cfg.tls.ca = cert;
	cfg.headers = hdrs;
	cfg.n_headers = 1;
	c = ws_client_create(L, &cfg, &cbs, NULL);
	CHECK(c != NULL);
	CHECK_INT(ws_client_start(c), 0);
	CHECK(wait_ups(1, 10000));
	peer_poll(&tp); /* the lws client's request, as the raw one's */
	CHECK_STR(last_line("REQUEST "), WS_REQUEST_HEADERS);
	ws_client_stop(c);
	CHECK(wait_downs(1, 5000));
	ws_client_destroy(c);

	/* system CAs only: verification fails, attempts go on */
	reset_counters();
	cfg.tls.ca = NULL;
	c = ws_client_create(L, &cfg, &cbs, NULL);
	CHECK_INT(ws_client_start(c), 0);
	watch(c);
	CHECK(wait_reconnects(2, 10000));
	CHECK_INT(ups, 0);
	watch(NULL);
	ws_client_destroy(c);

	/* verification off */
	reset_counters();
	cfg.tls.insecure = true;
	c = ws_client_create(L, &cfg, &cbs, NULL);
	CHECK_INT(ws_client_start(c), 0);
	CHECK(wait_ups(1, 10000));
	ws_client_stop(c);
	CHECK(wait_downs(1, 5000));
	ws_client_destroy(c);

	peer_kill(&tp);
	unlink(cert);
	unlink(key);
	rmdir(dir);
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
	if (peer_start(&P, 0) != 0) {
		fprintf(stderr, "cannot start %s\n", helper_peer_script());
		return 1;
	}
	helper_peer_base(&base, P.proc.port);

	RUN(test_connect_first_frame_and_headers);
	RUN(test_bad_header_rejected);
	RUN(test_fragmented_text_and_binary);
	RUN(test_reconnect_after_kill);
	RUN(test_accept_then_drop_keeps_backing_off);
	RUN(test_hung_peer_dropped_by_ping);
	RUN(test_upgrade_never_answered);
	RUN(test_destroy_while_connected);
	RUN(test_destroy_from_on_down);
	RUN(test_wss);

	peer_kill(&P);
	loop_destroy(L);
	free(msg);
	for (int i = 0; i < n_lines; i++)
		free(lines[i]);
	TEST_MAIN_END();
}
