/* The ComfyUI WebSocket client on the loop's lws context.
 *
 * One wsi at a time: a new connect is only started from the retry sul, and
 * that sul is only armed once the previous wsi has been destroyed
 * (LWS_CALLBACK_WSI_DESTROY). ComfyUI unregisters a clientId when *any*
 * socket with that id ends (bridge/README.md#comfyui-client-id), so
 * overlapping the old and the new socket would orphan the new one. */
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "buf.h"
#include "err.h"
#include "log.h"
#include "ws_client_int.h"

static void connect_now(lws_sorted_usec_list_t *sul);

static int
build_target(struct ws_client *c, const struct ws_client_cfg *cfg)
{
	const struct url *u = cfg->base;
	char authority[URL_AUTHORITY_MAX];
	struct buf id = { 0 };

	c->port = u->port;
	c->address = strdup(u->host);
	url_format_authority(u, authority, sizeof authority);
	c->host_hdr = strdup(authority);
	if (url_encode(&id, cfg->client_id) == 0)
		c->path = glue_asprintf("%s/ws?clientId=%s", u->path, id.p);
	buf_free(&id);
	if (c->host_hdr != NULL && c->path != NULL)
		c->url_log = glue_asprintf(
		    "%s://%s%s", u->tls ? "wss" : "ws", c->host_hdr, c->path);
	if (c->address == NULL || c->url_log == NULL)
		return BR_ENOMEM;
	return BR_OK;
}

static void
free_client(struct ws_client *c)
{
	free(c->address);
	free(c->host_hdr);
	free(c->path);
	free(c->url_log);
	free(c->first_frame);
	free(c->first_buf);
	glue_headers_free(c->headers, c->n_headers);
	ws_raw_free(c->raw);
	free(c);
}

/* Copies every string of cfg it keeps; cfg->base is read only here. */
struct ws_client *
ws_client_create(struct loop *l, const struct ws_client_cfg *cfg,
    const struct ws_client_cb *cb, void *ud)
{
	struct ws_client *c;
	int ping, pong;

	if (l == NULL || cfg == NULL || cfg->base == NULL
	    || cfg->client_id == NULL || cb == NULL)
		return NULL;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return NULL;
	c->tag.kind = GLUE_KIND_WS;
	c->fail_log = (struct ratelog) FAIL_LOG_INIT;
	c->pause_log = (struct ratelog) RATELOG_INIT(1);
	c->guard_log = (struct ratelog) RATELOG_INIT(1);
	c->loop = l;
	c->ctx = loop_lws_context(l);
	c->cb = *cb;
	c->ud = ud;
	if (build_target(c, cfg) != BR_OK)
		goto fail;
	if (glue_headers_copy(
	        cfg->headers, cfg->n_headers, &c->headers, LOG_SRC)
	    != BR_OK)
		goto fail;
	c->n_headers = cfg->n_headers > 0 ? cfg->n_headers : 0;
	if (cfg->first_frame != NULL && cfg->first_frame[0] != '\0') {
		c->first_len = strlen(cfg->first_frame);
		c->first_frame = strdup(cfg->first_frame);
		c->first_buf = malloc(LWS_PRE + c->first_len);
		if (c->first_frame == NULL || c->first_buf == NULL)
			goto fail;
	}
	if (cfg->base->tls) {
		c->ssl_flags = LCCSCF_USE_SSL;
		c->insecure = cfg->tls.insecure;
		if (c->insecure)
			c->ssl_flags |= LCCSCF_ALLOW_SELFSIGNED
			    | LCCSCF_SKIP_SERVER_CERT_HOSTNAME_CHECK
			    | LCCSCF_ALLOW_EXPIRED | LCCSCF_ALLOW_INSECURE;
	}
	c->vhost = loop_lws_client_vhost(l, cfg->base->tls ? &cfg->tls : NULL);
	if (c->vhost == NULL)
		goto fail;
	/* ws:// goes RAW; wss:// cannot (bridge/README.md#lws-raw-tls) */
	if (!cfg->base->tls && (c->raw = ws_raw_create(c)) == NULL)
		goto fail;

	ping = c->ping_s
	    = cfg->ping_interval_s > 0 ? cfg->ping_interval_s : 20;
	pong = c->pong_s = cfg->pong_timeout_s > 0 ? cfg->pong_timeout_s : 10;
	c->retry.retry_ms_table = backoff_upstream.steps_ms;
	c->retry.retry_ms_table_count = backoff_upstream.n_steps;
	c->retry.conceal_count = LWS_RETRY_CONCEAL_ALWAYS;
	/* lws pings after `ping` idle seconds and hangs up when no PONG has
	 * made the link valid again within ping + pong */
	c->retry.secs_since_valid_ping = (uint16_t) ping;
	c->retry.secs_since_valid_hangup = (uint16_t) (ping + pong);
	c->retry.jitter_percent = backoff_upstream.jitter_pct;
	c->raw_retry = c->retry;
	c->raw_retry.secs_since_valid_ping = 0;
	c->raw_retry.secs_since_valid_hangup = 0;
	c->handshake_timeout_s
	    = cfg->handshake_timeout_s > 0 ? cfg->handshake_timeout_s : 10;
	c->stable_s = cfg->stable_s > 0 ? cfg->stable_s : 60;
	return c;

fail:
	free_client(c);
	return NULL;
}

void
ws_set_why(struct ws_client *c, const char *why)
{
	if (c->why[0] == '\0')
		snprintf(c->why, sizeof(c->why), "%s", why);
}

/* Arms the next attempt unless one is armed, a wsi still exists (its
 * WSI_DESTROY calls us again) or we were stopped. */
void
ws_schedule_retry(struct ws_client *c)
{
	if (!c->running || c->wsi_alive
	    || !lws_dll2_is_detached(&c->sul_connect.list))
		return;
	lws_retry_sul_schedule(c->ctx, 0, &c->sul_connect, &c->retry,
	    connect_now, &c->retry_count);
}

/* The up->down edge: exactly one on_down per on_up. */
void
ws_link_down(struct ws_client *c)
{
	if (!c->up)
		return;
	c->up = false;
	c->send_first = false;
	lws_sul_cancel(&c->sul_stable);
	c->reconnects++;
	if (c->running)
		log_warn(LOG_SRC, "connection lost: %s",
		    c->why[0] ? c->why : "closed");
	else
		log_info(LOG_SRC, "closed");
	if (c->cb.on_down != NULL)
		c->cb.on_down(c->ud, c->why[0] ? c->why : "closed");
}

static void
log_failure(struct ws_client *c)
{
	const char *why = c->why[0] ? c->why : "failed";

	if (c->fail_log.seen == 0)
		ratelog_msg(&c->fail_log, LOG_LVL_WARN, LOG_SRC,
		    "cannot connect to %s: %s; retrying", c->url_log, why);
	else
		ratelog_msg(&c->fail_log, LOG_LVL_WARN, LOG_SRC,
		    "still cannot connect to %s after %u attempts: %s",
		    c->url_log, c->fail_log.seen + 1, why);
}

/* The wsi of the current attempt is gone for good. */
void
ws_attempt_over(struct ws_client *c)
{
	c->wsi = NULL;
	c->wsi_alive = false;
	c->send_close = false;
	lws_sul_cancel(&c->sul_handshake);
	if (c->was_up) {
		ws_link_down(c);
	} else if (c->running) {
		c->reconnects++;
		log_failure(c);
	}
	ws_schedule_retry(c);
}

static void
handshake_expired(lws_sorted_usec_list_t *sul)
{
	struct ws_client *c
	    = lws_container_of(sul, struct ws_client, sul_handshake);

	if (!c->wsi_alive || c->up || c->wsi == NULL)
		return;
	ws_set_why(c, "no answer to the upgrade request");
	lws_set_timeout(c->wsi, PENDING_TIMEOUT_AWAITING_SERVER_RESPONSE,
	    LWS_TO_KILL_ASYNC);
}

static void
link_stable(lws_sorted_usec_list_t *sul)
{
	struct ws_client *c
	    = lws_container_of(sul, struct ws_client, sul_stable);

	/* only a link that stayed up resets the backoff: a server that
	 * accepts and drops at once keeps backing off */
	c->retry_count = 0;
}

static void
connect_now(lws_sorted_usec_list_t *sul)
{
	struct ws_client *c
	    = lws_container_of(sul, struct ws_client, sul_connect);
	struct lws_client_connect_info i;
	struct lws *w;

	if (!c->running || c->wsi_alive)
		return;
	memset(&i, 0, sizeof(i));
	i.context = c->ctx;
	i.vhost = c->vhost;
	i.address = c->address;
	i.port = c->port;
	i.ssl_connection = c->ssl_flags;
	i.path = c->path;
	i.host = c->host_hdr;
	/* no origin: ComfyUI rejects a loopback Host with a different Origin
	 */
	i.origin = NULL;
	i.protocol = NULL;
	i.local_protocol_name = C2M_LWS_PROTO_WS;
	i.userdata = c;
	i.pwsi = &c->wsi;
	i.retry_and_idle_policy = &c->retry;
	if (c->raw != NULL)
		ws_raw_connect_info(c, &i);
	if (c->insecure)
		log_warn(
		    LOG_SRC, "TLS verification is off for %s", c->url_log);

	c->why[0] = '\0';
	c->was_up = false;
	c->wsi_alive = true;
	lws_sul_schedule(c->ctx, 0, &c->sul_handshake, handshake_expired,
	    (lws_usec_t) c->handshake_timeout_s * LWS_US_PER_SEC);
	w = lws_client_connect_via_info(&i);
	if (w == NULL && c->wsi_alive) {
		/* freed without WSI_DESTROY (e.g. failed before binding) */
		ws_set_why(c, "connect failed");
		ws_attempt_over(c);
	}
}

/* Starts the first attempt now; idempotent while running. */
int
ws_client_start(struct ws_client *c)
{
	if (c == NULL)
		return BR_EINVAL;
	if (c->running)
		return BR_OK;
	c->running = true;
	c->retry_count = 0;
	c->fail_log = (struct ratelog) FAIL_LOG_INIT;
	if (!c->wsi_alive)
		lws_sul_schedule(c->ctx, 0, &c->sul_connect, connect_now, 1);
	return BR_OK;
}

/* Ends the current wsi: politely with a close frame once up, else kill. */
static void
close_current(struct ws_client *c, const char *why)
{
	if (!c->wsi_alive || c->wsi == NULL)
		return;
	ws_set_why(c, why);
	/* a closing link is read to its end (the peer's close), even when a
	 * pause comes later; the next link starts paused again */
	c->closing = true;
	if (c->up)
		ws_apply_pause(c, c->wsi);
	if (c->up && c->raw != NULL) {
		ws_raw_close(c);
		return;
	}
	if (c->up) {
		c->send_close = true;
		lws_callback_on_writable(c->wsi);
		return;
	}
	lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

void
ws_client_stop(struct ws_client *c)
{
	if (c == NULL || !c->running)
		return;
	c->running = false;
	lws_sul_cancel(&c->sul_connect);
	lws_sul_cancel(&c->sul_stable);
	close_current(c, "stopped");
}

void
ws_client_reconnect(struct ws_client *c)
{
	if (c == NULL || !c->running)
		return;
	if (c->wsi_alive) {
		close_current(c, "reconnect requested");
		return;
	}
	lws_sul_schedule(c->ctx, 0, &c->sul_connect, connect_now, 1);
}

/* Frees c; a live wsi is detached (lws sees no user any more) and killed. */
void
ws_client_destroy(struct ws_client *c)
{
	if (c == NULL)
		return;
	c->running = false;
	lws_sul_cancel(&c->sul_connect);
	lws_sul_cancel(&c->sul_handshake);
	lws_sul_cancel(&c->sul_stable);
	lws_sul_cancel(&c->sul_pause);
	if (c->wsi_alive && c->wsi != NULL) {
		lws_set_wsi_user(c->wsi, NULL);
		lws_set_timeout(
		    c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
	}
	c->wsi_alive = false;
	if (c->in_cb > 0) {
		/* called from one of our callbacks: freed when it returns */
		c->destroy_pending = true;
		return;
	}
	free_client(c);
}

/* ---- backpressure (bridge/README.md#backpressure) ---- */

void
ws_apply_pause(struct ws_client *c, struct lws *wsi)
{
	if (wsi != NULL)
		lws_rx_flow_control(wsi, c->paused && !c->closing ? 0 : 1);
}

/* Reading goes on again; the pause's time is counted. */
static void
resume(struct ws_client *c)
{
	c->paused = false;
	lws_sul_cancel(&c->sul_pause);
	c->resumed_at = loop_mono_ms();
	c->paused_ms += (uint64_t) (c->resumed_at - c->paused_at);
	if (c->up)
		ws_apply_pause(c, c->wsi);
	if (c->cb.on_pause != NULL)
		c->cb.on_pause(c->ud, false);
}

static void
pause_expired(lws_sorted_usec_list_t *sul)
{
	struct ws_client *c
	    = lws_container_of(sul, struct ws_client, sul_pause);

	if (!c->paused)
		return;
	c->pause_expired = true;
	resume(c);
	ratelog_msg(&c->guard_log, LOG_LVL_INFO, LOG_SRC,
	    "the broker took too little for %d ms: reading ComfyUI again, "
	    "its messages queue",
	    WS_PAUSE_MAX_MS);
}

void
ws_client_pause(struct ws_client *c, bool on)
{
	if (c == NULL)
		return;
	if (!on)
		c->pause_expired = false;
	if (on == c->paused || (on && c->pause_expired))
		return;
	if (!on) {
		resume(c);
		return;
	}
	c->paused = true;
	c->paused_at = loop_mono_ms();
	c->pauses++;
	if (c->resumed_at == 0
	    || c->paused_at - c->resumed_at >= WS_PAUSE_CALM_MS) {
		ratelog_reset(&c->pause_log, LOG_SRC, "pauses of reading");
		ratelog_reset(
		    &c->guard_log, LOG_SRC, "pauses ended by the guard");
	}
	ratelog_msg(&c->pause_log, LOG_LVL_INFO, LOG_SRC,
	    "the broker is slower than ComfyUI: reading paused until it "
	    "catches up");
	lws_sul_schedule(c->ctx, 0, &c->sul_pause, pause_expired,
	    (lws_usec_t) WS_PAUSE_MAX_MS * 1000);
	if (c->up)
		ws_apply_pause(c, c->wsi);
	if (c->cb.on_pause != NULL)
		c->cb.on_pause(c->ud, true);
}

uint64_t
ws_client_pauses(const struct ws_client *c)
{
	return c != NULL ? c->pauses : 0;
}

uint64_t
ws_client_paused_ms(const struct ws_client *c)
{
	return c != NULL ? c->paused_ms : 0;
}

bool
ws_client_is_up(const struct ws_client *c)
{
	return c != NULL && c->up;
}

uint64_t
ws_client_reconnects(const struct ws_client *c)
{
	return c != NULL ? c->reconnects : 0;
}

uint64_t
ws_client_returns(const struct ws_client *c)
{
	return c != NULL ? c->returns : 0;
}

void
ws_established(struct ws_client *c, struct lws *wsi)
{
	lws_sul_cancel(&c->sul_handshake);
	c->up = true;
	c->closing = false;
	c->was_up = true;
	c->returns += c->ever_up;
	c->ever_up = true;
	c->why[0] = '\0';
	if (c->fail_log.seen > 0)
		log_info(LOG_SRC, "connected to %s (after %u failed attempts)",
		    c->url_log, c->fail_log.seen);
	else
		log_info(LOG_SRC, "connected to %s", c->url_log);
	/* the new series starts quietly: the line above gave the count */
	c->fail_log = (struct ratelog) FAIL_LOG_INIT;
	lws_sul_schedule(c->ctx, 0, &c->sul_stable, link_stable,
	    (lws_usec_t) c->stable_s * LWS_US_PER_SEC);
	ws_apply_pause(c, wsi);
	if (c->first_frame != NULL) {
		c->send_first = true;
		lws_callback_on_writable(wsi);
	}
	if (c->cb.on_up != NULL)
		c->cb.on_up(c->ud);
}

static int
writable(struct ws_client *c, struct lws *wsi)
{
	int n;

	if (c->send_close) {
		lws_close_reason(wsi, LWS_CLOSE_STATUS_NORMAL, NULL, 0);
		return -1;
	}
	if (!c->send_first)
		return 0;
	c->send_first = false;
	memcpy(c->first_buf + LWS_PRE, c->first_frame, c->first_len);
	n = lws_write(
	    wsi, c->first_buf + LWS_PRE, c->first_len, LWS_WRITE_TEXT);
	if (n < (int) c->first_len) {
		ws_set_why(c, "cannot send the first frame");
		return -1;
	}
	return 0;
}

static int
dispatch(struct ws_client *c, struct lws *wsi,
    enum lws_callback_reasons reason, void *in, size_t len)
{
	char msg[256];

	switch (reason) {
	case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER:
		return glue_headers_append(
		    wsi, c->headers, c->n_headers, in, len);
	case LWS_CALLBACK_CLIENT_ESTABLISHED:
		c->wsi = wsi;
		ws_established(c, wsi);
		return 0;
	case LWS_CALLBACK_CLIENT_WRITEABLE:
		return writable(c, wsi);
	case LWS_CALLBACK_CLIENT_RECEIVE:
		if (c->cb.on_chunk != NULL)
			c->cb.on_chunk(c->ud, in, len,
			    lws_is_first_fragment(wsi) != 0,
			    lws_is_final_fragment(wsi) != 0
			        && lws_remaining_packet_payload(wsi) == 0,
			    lws_frame_is_binary(wsi) != 0);
		return 0;
	case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
		if (len >= 2) {
			const unsigned char *p = in;
			snprintf(msg, sizeof(msg), "peer closed (code %d)",
			    (p[0] << 8) | p[1]);
			ws_set_why(c, msg);
		} else {
			ws_set_why(c, "peer closed");
		}
		return 0;
	case LWS_CALLBACK_CLIENT_CONNECTION_ERROR: {
		/* in is a NUL-terminated reason; len is not always set. For a
		 * refused certificate lws only says "SSL err 1": add OpenSSL's
		 * verification result, which names the actual problem. */
		SSL *ssl = c->ssl_flags ? (SSL *) lws_get_ssl(wsi) : NULL;
		long vr = ssl != NULL ? SSL_get_verify_result(ssl) : X509_V_OK;
		if (vr != X509_V_OK)
			snprintf(msg, sizeof(msg),
			    "TLS certificate verification failed: %s (check "
			    "--tls-ca, or --tls-insecure to skip)",
			    X509_verify_cert_error_string(vr));
		else
			snprintf(msg, sizeof(msg), "%s",
			    in != NULL ? (const char *) in : "");
		ws_set_why(c, msg[0] ? msg : "connection error");
		ws_schedule_retry(c);
		return 0;
	}
	case LWS_CALLBACK_CLIENT_CLOSED:
		ws_set_why(c, "connection closed");
		ws_link_down(c);
		ws_schedule_retry(c);
		return 0;
	case LWS_CALLBACK_CLOSED_CLIENT_HTTP:
		/* the only close callback a handshake timeout delivers */
		ws_set_why(c, "closed during the upgrade");
		ws_schedule_retry(c);
		return 0;
	case LWS_CALLBACK_WSI_DESTROY:
		ws_attempt_over(c);
		return 0;
	default:
		break;
	}
	return lws_callback_http_dummy(wsi, reason, NULL, in, len);
}

int
ws_client_lws_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user,
    void *in, size_t len)
{
	struct ws_client *c = user;
	int rc;

	if (c == NULL || c->tag.kind != GLUE_KIND_WS)
		return lws_callback_http_dummy(wsi, reason, NULL, in, len);
	if (loop_lws_destroying(c->loop)) {
		/* inside lws_context_destroy: no callbacks, no retry */
		c->running = false;
		if (reason == LWS_CALLBACK_WSI_DESTROY) {
			c->wsi = NULL;
			c->wsi_alive = false;
			c->up = false;
		}
		return 0;
	}
	c->in_cb++;
	if (c->raw != NULL)
		rc = ws_raw_dispatch(c, wsi, reason, in, len);
	else
		rc = dispatch(c, wsi, reason, in, len);
	c->in_cb--;
	if (c->in_cb == 0 && c->destroy_pending) {
		lws_sul_cancel(&c->sul_connect);
		lws_sul_cancel(&c->sul_handshake);
		lws_sul_cancel(&c->sul_stable);
		lws_sul_cancel(&c->sul_pause);
		free_client(c);
		return -1;
	}
	return rc;
}
