/* io-internal: the ComfyUI WebSocket client's state, shared by the
 * lifecycle (ws_client.c, which also holds the libwebsockets WebSocket
 * transport used for wss://) and the RAW transport for ws:// (ws_raw.c,
 * bridge/README.md#lws-raw-tls). Never included outside bridge/io. */
#ifndef C2M_WS_CLIENT_INT_H
#define C2M_WS_CLIENT_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "lws_glue.h"
#include "ratelog.h"
#include "ws_client.h"

#define LOG_SRC "ws"
/* a series of failed attempts logs its first and every Nth at warn */
#define FAIL_LOG_EVERY 10
#define FAIL_LOG_INIT  RATELOG_INIT_EVERY(1, FAIL_LOG_EVERY)
/* Backpressure (bridge/README.md#backpressure): a pause ends by itself
 * after this long, far below the pong timeout (10 s) and lws's hang-up
 * (ping + pong, 30 s), so keepalive needs no special case */
#define WS_PAUSE_MAX_MS 2000
/* no pause for this long: the next one is logged at info again */
#define WS_PAUSE_CALM_MS 60000

struct ws_client {
	struct glue_user tag; /* first: the lws user pointer is the client */
	struct loop *loop;
	struct lws_context *ctx;
	struct lws_vhost *vhost;
	struct ws_client_cb cb;
	void *ud;

	char *address; /* host for connect() and SNI */
	char *host_hdr; /* host:port */
	char *path; /* <prefix>/ws?clientId=<urlencoded> */
	char *url_log; /* ws(s)://host:port<path> for log lines */
	int port;
	int ssl_flags;
	bool insecure;
	struct glue_header *headers;
	int n_headers;
	char *first_frame;
	/* lws_write() masks the payload in place: each connect sends a fresh
	 * copy from here (LWS_PRE bytes of headroom first) */
	unsigned char *first_buf;
	size_t first_len;

	lws_retry_bo_t retry;
	/* the raw link pings by itself (ws_raw.c): lws must not */
	lws_retry_bo_t raw_retry;
	int ping_s, pong_s; /* the one source of both transports' values */
	int handshake_timeout_s;
	int stable_s;

	lws_sorted_usec_list_t sul_connect;
	lws_sorted_usec_list_t sul_handshake;
	lws_sorted_usec_list_t sul_stable;
	uint16_t retry_count;

	struct lws *wsi;
	bool running; /* started and not stopped: keep reconnecting */
	bool wsi_alive; /* a wsi exists that WSI_DESTROY has not ended */
	bool up; /* upgrade done, on_up called, on_down not yet */
	bool was_up; /* the current attempt reached ESTABLISHED */
	int in_cb; /* depth of ws_client_lws_cb() calls for this client */
	bool destroy_pending; /* ws_client_destroy() ran inside one */
	bool send_first; /* first frame still to be written */
	bool send_close; /* close frame wanted at the next writable */
	bool closing; /* close_current ran on this link: read it to its end */
	uint64_t reconnects;
	bool ever_up; /* some attempt reached ESTABLISHED */
	uint64_t returns; /* links that came back after one dropped */
	struct ratelog fail_log; /* failed attempts since the last link */
	char why[256];
	struct ws_raw *raw; /* ws:// only: the RAW transport's state */

	/* backpressure (ws_client_pause) */
	bool paused; /* reading is off (on the current wsi, if any) */
	bool pause_expired; /* the guard ended a pause: no other until off */
	lws_sorted_usec_list_t sul_pause; /* the guard */
	int64_t paused_at, resumed_at; /* loop_mono_ms() */
	uint64_t pauses, paused_ms;
	struct ratelog pause_log; /* pauses, per calm period */
	struct ratelog guard_log; /* pauses the guard ended, per calm period */
};

/* Applies c->paused to wsi (a new link starts paused if it is on). */
void ws_apply_pause(struct ws_client *c, struct lws *wsi);

/* the lifecycle, for the transports */
void ws_set_why(struct ws_client *c, const char *why);
void ws_established(struct ws_client *c, struct lws *wsi);
void ws_link_down(struct ws_client *c);
void ws_schedule_retry(struct ws_client *c);
void ws_attempt_over(struct ws_client *c);

/* the RAW transport (ws_raw.c) */
struct ws_raw *ws_raw_create(struct ws_client *c);
void ws_raw_free(struct ws_raw *r);
/* fills the connect info's RAW fields for an attempt */
void ws_raw_connect_info(
    struct ws_client *c, struct lws_client_connect_info *i);
/* ends the link politely: a close frame, then wait for the peer's */
void ws_raw_close(struct ws_client *c);
int ws_raw_dispatch(struct ws_client *c, struct lws *wsi,
    enum lws_callback_reasons reason, void *in, size_t len);

#endif
