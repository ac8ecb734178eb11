/* The ComfyUI WebSocket client: /ws?clientId=..., reconnect with backoff
 * for ever (0.25 s doubling to 30 s, jitter, reset after a stable minute),
 * ping every 20 s and drop after 10 s without pong, handshake timeout, no
 * Origin header, no permessage-deflate. Hands raw chunks to the caller.
 * ws:// runs over a RAW connection (ws_raw.c), wss:// over the lws client
 * (bridge/README.md#lws-raw-tls). */
#ifndef C2M_WS_CLIENT_H
#define C2M_WS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loop.h"
#include "url.h"

struct ws_client;

struct ws_client_cfg {
	const struct url *base; /* http(s)://host:port/prefix (borrowed) */
	const char *client_id; /* borrowed */
	char *const *headers; /* "Name: value" extra headers */
	int n_headers;
	const char *first_frame; /* text sent first on every connect */
	struct tls_opts tls;
	int ping_interval_s; /* default 20 */
	int pong_timeout_s; /* default 10 */
	int handshake_timeout_s; /* default 10 */
	int stable_s; /* up this long resets backoff; 60 */
	size_t rx_buffer_size; /* unused: the loop fixes 65536 */
};

struct ws_client_cb {
	/* the link is up (upgrade done, first frame queued) */
	void (*on_up)(void *ud);
	/* the link went down; why is a short reason for the log */
	void (*on_down)(void *ud, const char *why);
	/* one received chunk (borrowed): first/final of the message, binary */
	void (*on_chunk)(void *ud, const void *buf, size_t len, bool first,
	    bool final, bool binary);
	/* reading paused or went on again (ws_client_pause, or its guard);
	 * may be NULL */
	void (*on_pause)(void *ud, bool paused);
};

/* Creates a client (copies cfg strings it keeps). Not connected yet. */
struct ws_client *ws_client_create(struct loop *l,
    const struct ws_client_cfg *cfg, const struct ws_client_cb *cb, void *ud);
/* Starts connecting (and reconnecting for ever). */
int ws_client_start(struct ws_client *c);
/* Sends a close frame, stops reconnecting. on_down is called once the
 * socket is gone. */
void ws_client_stop(struct ws_client *c);
/* Closes the current socket and reconnects after the old one is gone
 * (used after a detected orphaned socket). */
void ws_client_reconnect(struct ws_client *c);
void ws_client_destroy(struct ws_client *c);

/* Backpressure: on stops reading the link (lws_rx_flow_control), off
 * reads again. Kept across reconnects. A pause ends by itself after
 * WS_PAUSE_MAX_MS, and reading then stays on until the next off
 * (bridge/README.md#backpressure). */
void ws_client_pause(struct ws_client *c, bool on);
/* Pauses so far, and the milliseconds spent paused (ended pauses). */
uint64_t ws_client_pauses(const struct ws_client *c);
uint64_t ws_client_paused_ms(const struct ws_client *c);

bool ws_client_is_up(const struct ws_client *c);
/* Connection attempts that failed or links that dropped. */
uint64_t ws_client_reconnects(const struct ws_client *c);
/* Links that came back after an earlier one was up (what bridge/health
 * calls reconnects): failed first attempts are not counted. */
uint64_t ws_client_returns(const struct ws_client *c);

#endif
