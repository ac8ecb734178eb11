/* The libwebsockets floor: an lws 4.1.6 client set up like the bridge's
 * (bridge/io/loop.c: 32 KiB reads, no extensions; ws_client: 64 KiB
 * receive buffer) that connects to the load source and only counts the
 * messages it receives. Its thread's CPU per event is what libwebsockets
 * costs before the bridge does any work of its own: the share of the
 * bridge's CPU no change to the bridge's code can remove while it receives
 * through libwebsockets (whose client frame parser takes the payload one
 * byte at a time: lib/roles/ws/client-ws.c, lws_ws_client_rx_sm).
 *
 * With raw set it is the floor of the bridge's ws:// path instead
 * (bridge/io/ws_raw.c): an lws RAW connection whose upgrade and frames go
 * through input/wsframe.c, counting the messages it parses. The wss://
 * path is still the lws client above. */
#include <libwebsockets.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "bench.h"
#include "wsframe.h"

#define FLOOR_READ_BUF (32 * 1024) /* = bridge/io/loop.c LOOP_READ_BUF */
#define FLOOR_RX_BUF   65536 /* = the bridge's ws protocol rx_buffer_size */

struct bench_wsfloor {
	struct lws_context *ctx;
	int port;
	pthread_t thr;
	bool thr_started;
	atomic_bool stop;
	atomic_int state; /* 0 connecting, 1 up, -1 failed or closed */
	struct bench_counter count;
	struct rusage ru; /* the thread's, taken when it ends */
	bool ru_ok;
	bool raw; /* the RAW connection and input/wsframe.c */
	bool upgraded;
	struct wsf_parser fp;
	struct wsh_resp hs;
};

/* RFC 6455's example key and its accept: the load source checks nothing */
#define RAW_KEY    "dGhlIHNhbXBsZSBub25jZQ=="
#define RAW_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

static int
floor_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user,
    void *in, size_t len)
{
	struct bench_wsfloor *f = lws_context_user(lws_get_context(wsi));
	(void) user;
	(void) in;
	(void) len;
	switch (reason) {
	case LWS_CALLBACK_CLIENT_ESTABLISHED:
		atomic_store(&f->state, 1);
		return 0;
	case LWS_CALLBACK_CLIENT_RECEIVE:
		/* a whole message: its last fragment, nothing left of it */
		if (lws_is_final_fragment(wsi)
		    && lws_remaining_packet_payload(wsi) == 0) {
			atomic_fetch_add(&f->count.events, 1);
			atomic_store(&f->count.last_ns, bench_now_ns());
		}
		return 0;
	case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
	case LWS_CALLBACK_CLIENT_CLOSED:
		atomic_store(&f->state, -1);
		return 0;
	default:
		return 0;
	}
}

static void
raw_data(void *ud, const void *p, size_t n, bool first, bool final, bool bin)
{
	struct bench_wsfloor *f = ud;
	(void) p;
	(void) n;
	(void) first;
	(void) bin;
	if (final) {
		atomic_fetch_add(&f->count.events, 1);
		atomic_store(&f->count.last_ns, bench_now_ns());
	}
}

static int
raw_rx(struct bench_wsfloor *f, const uint8_t *in, size_t len)
{
	struct wsf_cb cb = { raw_data, NULL, f };
	size_t used = 0;

	if (!f->upgraded) {
		int rc = wsh_resp_feed(&f->hs, in, len, RAW_ACCEPT, &used);
		if (rc == WSH_MORE)
			return 0;
		if (rc == WSH_ERROR) {
			fprintf(stderr, "bench: raw floor: %s\n", f->hs.error);
			return -1;
		}
		f->upgraded = true;
		atomic_store(&f->state, 1);
	}
	return wsf_feed(&f->fp, in + used, len - used, &cb);
}

static int
raw_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
    size_t len)
{
	struct bench_wsfloor *f = lws_context_user(lws_get_context(wsi));
	unsigned char req[LWS_PRE + 512];
	size_t n;
	(void) user;
	switch (reason) {
	case LWS_CALLBACK_RAW_CONNECTED:
		wsf_parser_init(&f->fp);
		wsh_resp_init(&f->hs);
		lws_callback_on_writable(wsi);
		return 0;
	case LWS_CALLBACK_RAW_WRITEABLE:
		n = wsh_request((char *) req + LWS_PRE, sizeof req - LWS_PRE,
		    "127.0.0.1", "/ws?clientId=bench-floor", RAW_KEY, NULL, 0);
		return lws_write(wsi, req + LWS_PRE, n, LWS_WRITE_RAW)
		        < (int) n
		    ? -1
		    : 0;
	case LWS_CALLBACK_RAW_RX:
		return raw_rx(f, in, len);
	case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
	case LWS_CALLBACK_RAW_CLOSE:
		atomic_store(&f->state, -1);
		return 0;
	default:
		return 0;
	}
}

static const struct lws_protocols floor_protocols[] = {
	{ "c2m-bench-floor", floor_cb, 0, FLOOR_RX_BUF, 0, NULL, 0 },
	{ "c2m-bench-rawfloor", raw_cb, 0, 0, 0, NULL, 0 },
	{ NULL, NULL, 0, 0, 0, NULL, 0 },
};

static void *
floor_main(void *arg)
{
	struct bench_wsfloor *f = arg;
	struct lws_client_connect_info ci;
	memset(&ci, 0, sizeof(ci));
	ci.context = f->ctx;
	ci.address = "127.0.0.1";
	ci.port = f->port;
	ci.path = "/ws?clientId=bench-floor";
	ci.host = "127.0.0.1";
	ci.local_protocol_name = floor_protocols[f->raw ? 1 : 0].name;
	if (f->raw)
		ci.method = "RAW";
	if (lws_client_connect_via_info(&ci) == NULL)
		atomic_store(&f->state, -1);
	while (!atomic_load(&f->stop) && atomic_load(&f->state) >= 0)
		lws_service(f->ctx, 0);
	f->ru_ok = getrusage(RUSAGE_THREAD, &f->ru) == 0;
	return NULL;
}

struct bench_wsfloor *
bench_wsfloor_start(int port, bool raw)
{
	struct bench_wsfloor *f = calloc(1, sizeof(*f));
	if (f == NULL)
		return NULL;
	f->port = port;
	f->raw = raw;
	lws_set_log_level(LLL_ERR, NULL);
	struct lws_context_creation_info info;
	memset(&info, 0, sizeof(info));
	info.port = CONTEXT_PORT_NO_LISTEN;
	info.protocols = floor_protocols;
	info.pt_serv_buf_size = FLOOR_READ_BUF;
	info.user = f;
	f->ctx = lws_create_context(&info);
	if (f->ctx == NULL)
		goto fail;
	if (pthread_create(&f->thr, NULL, floor_main, f) != 0)
		goto fail;
	f->thr_started = true;
	pthread_setname_np(f->thr, "ws floor"); /* perf report --comm */
	return f;
fail:
	bench_wsfloor_stop(f, NULL, NULL);
	return NULL;
}

struct bench_counter *
bench_wsfloor_counter(struct bench_wsfloor *f)
{
	return &f->count;
}

bool
bench_wsfloor_up(const struct bench_wsfloor *f)
{
	return atomic_load(&f->state) == 1;
}

int64_t
bench_wsfloor_cpu_ns(const struct bench_wsfloor *f)
{
	return bench_thread_cpu_ns(f->thr, f->thr_started);
}

static int64_t
tv_ns(const struct timeval *tv)
{
	return (int64_t) tv->tv_sec * 1000000000
	    + (int64_t) tv->tv_usec * 1000;
}

void
bench_wsfloor_stop(struct bench_wsfloor *f, int64_t *user_ns, int64_t *sys_ns)
{
	if (user_ns != NULL)
		*user_ns = -1;
	if (sys_ns != NULL)
		*sys_ns = -1;
	if (f == NULL)
		return;
	if (f->thr_started) {
		atomic_store(&f->stop, true);
		lws_cancel_service(f->ctx);
		pthread_join(f->thr, NULL);
	}
	if (f->ru_ok && user_ns != NULL && sys_ns != NULL) {
		*user_ns = tv_ns(&f->ru.ru_utime);
		*sys_ns = tv_ns(&f->ru.ru_stime);
	}
	if (f->ctx != NULL)
		lws_context_destroy(f->ctx);
	free(f);
}
