/* The ws:// transport: a libwebsockets RAW client connection carrying the
 * WebSocket upgrade and frames of input/wsframe.c (bridge/README.md#rfc6455).
 * libwebsockets' own WebSocket client parses payload one byte at a time
 * (bridge/README.md#lws-client-rx); here payload goes from the read buffer
 * to on_chunk as spans of it, uncopied. wss:// cannot take this path
 * (bridge/README.md#lws-raw-tls).
 *
 * The lifecycle (one wsi at a time, retries, counters, log lines) stays in
 * ws_client.c; this file writes the request, checks the answer, answers
 * pings and closes, pings every ping_s and drops the link when no pong
 * comes within pong_s, and writes its few small frames from a queue on
 * RAW_WRITEABLE. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "ws_client_int.h"
#include "wsframe.h"

/* how long a sent close waits for the peer's before the socket goes */
#define CLOSE_ACK_S 5

struct ws_raw {
	struct ws_client *c;
	struct wsf_parser fp;
	struct wsh_resp hs;
	char accept[32]; /* the Sec-WebSocket-Accept the server must send */
	char **hdr_lines; /* "Name: value" */
	bool upgraded;
	bool close_sent; /* a close frame is queued or written */
	bool close_got; /* the peer's close arrived: deliver nothing more */
	bool hangup; /* close the socket once the queue is written */
	bool hangup_now; /* close it when the current callback returns */
	bool pong_due; /* a ping is out */
	struct buf out; /* LWS_PRE bytes of headroom, then bytes to write */
	lws_sorted_usec_list_t sul_ping, sul_pong;
};

struct ws_raw *
ws_raw_create(struct ws_client *c)
{
	struct ws_raw *r = calloc(1, sizeof(*r));

	if (r == NULL)
		return NULL;
	r->c = c;
	r->hdr_lines = calloc((size_t) c->n_headers + 1, sizeof(char *));
	if (r->hdr_lines == NULL) {
		free(r);
		return NULL;
	}
	for (int i = 0; i < c->n_headers; i++) {
		/* glue_header's name keeps its ':' */
		r->hdr_lines[i] = glue_asprintf(
		    "%s %s", c->headers[i].name, c->headers[i].value);
		if (r->hdr_lines[i] == NULL) {
			ws_raw_free(r);
			return NULL;
		}
	}
	return r;
}

void
ws_raw_free(struct ws_raw *r)
{
	if (r == NULL)
		return;
	lws_sul_cancel(&r->sul_ping);
	lws_sul_cancel(&r->sul_pong);
	for (int i = 0; r->hdr_lines != NULL && i < r->c->n_headers; i++)
		free(r->hdr_lines[i]);
	free(r->hdr_lines);
	buf_free(&r->out);
	free(r);
}

void
ws_raw_connect_info(struct ws_client *c, struct lws_client_connect_info *i)
{
	i->method = "RAW";
	i->local_protocol_name = C2M_LWS_PROTO_RAW;
	i->retry_and_idle_policy = &c->raw_retry;
}

/* A fresh attempt: nothing of the last one survives. */
static void
reset(struct ws_raw *r)
{
	lws_sul_cancel(&r->sul_ping);
	lws_sul_cancel(&r->sul_pong);
	wsf_parser_init(&r->fp);
	wsh_resp_init(&r->hs);
	r->upgraded = r->close_sent = r->close_got = false;
	r->hangup = r->hangup_now = r->pong_due = false;
	buf_reset(&r->out);
}

/* Appends raw bytes to the queue (after the headroom) and asks to write. */
static int
queue(struct ws_raw *r, const void *p, size_t n)
{
	if (r->out.len == 0 && buf_reserve(&r->out, LWS_PRE) == 0) {
		memset(r->out.p, 0, LWS_PRE);
		r->out.len = LWS_PRE;
	}
	if (r->out.len < LWS_PRE || buf_append(&r->out, p, n) != 0)
		return -1;
	if (r->c->wsi != NULL)
		lws_callback_on_writable(r->c->wsi);
	return 0;
}

/* Builds a masked frame (fresh mask from lws_get_random) into the queue. */
static int
queue_frame(struct ws_raw *r, int opcode, const void *p, size_t n)
{
	uint8_t mask[4];
	uint8_t small[WSF_HEADER_MAX + WSF_CONTROL_MAX];
	uint8_t *f = small;
	size_t len;
	int rc;

	if (lws_get_random(r->c->ctx, mask, sizeof mask) != sizeof mask)
		return -1;
	if (n > WSF_CONTROL_MAX && (f = malloc(WSF_HEADER_MAX + n)) == NULL)
		return -1;
	len = wsf_build(f,
	    n > WSF_CONTROL_MAX ? WSF_HEADER_MAX + n : sizeof small, opcode, p,
	    n, mask);
	rc = len > 0 ? queue(r, f, len) : -1;
	if (f != small)
		free(f);
	return rc;
}

static int
queue_close(struct ws_raw *r, const uint8_t *payload, size_t n)
{
	r->close_sent = true;
	return queue_frame(r, WSF_CLOSE, payload, n);
}

static void
close_code(struct ws_raw *r, unsigned code)
{
	uint8_t pl[2] = { (uint8_t) (code >> 8), (uint8_t) code };

	if (!r->close_sent)
		queue_close(r, pl, sizeof pl);
}

void
ws_raw_close(struct ws_client *c)
{
	struct ws_raw *r = c->raw;

	if (c->wsi == NULL)
		return;
	if (r->close_sent || queue_close(r, (const uint8_t *) "\x03\xe8", 2))
		lws_set_timeout(
		    c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
	else /* the peer answers the close and hangs up; or the timeout */
		lws_set_timeout(
		    c->wsi, PENDING_TIMEOUT_CLOSE_ACK, CLOSE_ACK_S);
}

/* ---- keepalive: ping every ping_s, no pong within pong_s drops ---- */

static void
pong_late(lws_sorted_usec_list_t *sul)
{
	struct ws_raw *r = lws_container_of(sul, struct ws_raw, sul_pong);
	struct ws_client *c = r->c;
	char why[64];

	if (!r->pong_due || c->wsi == NULL)
		return;
	snprintf(why, sizeof why, "no pong within %d s", c->pong_s);
	ws_set_why(c, why);
	lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

static void
ping_due(lws_sorted_usec_list_t *sul)
{
	struct ws_raw *r = lws_container_of(sul, struct ws_raw, sul_ping);
	struct ws_client *c = r->c;

	if (!c->up || c->wsi == NULL || r->close_sent)
		return;
	if (queue_frame(r, WSF_PING, NULL, 0) != 0)
		return;
	r->pong_due = true;
	lws_sul_schedule(c->ctx, 0, &r->sul_pong, pong_late,
	    (lws_usec_t) c->pong_s * LWS_US_PER_SEC);
}

static void
arm_ping(struct ws_raw *r)
{
	lws_sul_schedule(r->c->ctx, 0, &r->sul_ping, ping_due,
	    (lws_usec_t) r->c->ping_s * LWS_US_PER_SEC);
}

/* ---- frames in ---- */

static void
on_data(void *ud, const void *p, size_t n, bool first, bool final, bool bin)
{
	struct ws_raw *r = ud;
	struct ws_client *c = r->c;

	/* destroy_pending: ws_client_destroy() ran in an earlier piece's
	 * on_chunk, and what on_chunk would reach may be gone */
	if (r->close_got || r->hangup || !c->up || c->destroy_pending
	    || c->cb.on_chunk == NULL)
		return;
	c->cb.on_chunk(c->ud, p, n, first, final, bin);
}

static void
on_control(void *ud, int op, const uint8_t *p, size_t n)
{
	struct ws_raw *r = ud;
	char why[64];

	if (r->close_got)
		return;
	if (op == WSF_PING) {
		if (!r->close_sent)
			queue_frame(r, WSF_PONG, p, n);
	} else if (op == WSF_PONG) {
		if (r->pong_due) {
			r->pong_due = false;
			lws_sul_cancel(&r->sul_pong);
			arm_ping(r);
		}
	} else if (op == WSF_CLOSE) {
		r->close_got = true;
		if (n >= 2)
			snprintf(why, sizeof why, "peer closed (code %d)",
			    (p[0] << 8) | p[1]);
		else
			snprintf(why, sizeof why, "peer closed");
		ws_set_why(r->c, why);
		if (r->close_sent) {
			/* it answered ours: the link is done once ours is out
			 * too (a stop from a callback may have queued it in
			 * this read) */
			if (r->out.len > LWS_PRE)
				r->hangup = true;
			else
				r->hangup_now = true;
			return;
		}
		/* echo its code, then hang up */
		queue_close(r, p, n >= 2 ? 2 : 0);
		r->hangup = true;
	}
}

static int
feed_frames(struct ws_raw *r, const uint8_t *in, size_t len)
{
	struct wsf_cb cb = { on_data, on_control, r };
	char why[128];

	if (len == 0 || r->hangup)
		return 0;
	if (wsf_feed(&r->fp, in, len, &cb) != 0) {
		snprintf(why, sizeof why, "protocol error: %s", r->fp.err);
		ws_set_why(r->c, why);
		close_code(r, WSF_CLOSE_PROTOCOL);
		r->hangup = true;
	}
	return r->hangup_now ? -1 : 0;
}

static int
received(struct ws_raw *r, struct lws *wsi, const uint8_t *in, size_t len)
{
	struct ws_client *c = r->c;
	size_t used;
	int rc;

	if (r->upgraded)
		return feed_frames(r, in, len);
	rc = wsh_resp_feed(&r->hs, in, len, r->accept, &used);
	if (rc == WSH_MORE)
		return 0;
	if (rc == WSH_ERROR) {
		ws_set_why(c, r->hs.error);
		return -1;
	}
	r->upgraded = true;
	c->wsi = wsi;
	ws_established(c, wsi);
	if (c->up)
		arm_ping(r);
	return feed_frames(r, in + used, len - used);
}

/* ---- frames out ---- */

/* RAW_CONNECTED: a fresh key, its expected accept, the request. */
static int
send_request(struct ws_raw *r)
{
	struct ws_client *c = r->c;
	unsigned char rnd[16], sha[20];
	char key[WSH_KEY_LEN + 8], both[WSH_KEY_LEN + sizeof WSH_GUID + 8];
	size_t cap = 512 + strlen(c->path) + strlen(c->host_hdr), n;
	char *req;

	for (int i = 0; i < c->n_headers; i++)
		cap += strlen(r->hdr_lines[i]) + 2;
	if (lws_get_random(c->ctx, rnd, sizeof rnd) != sizeof rnd)
		return -1;
	lws_b64_encode_string((const char *) rnd, sizeof rnd, key, sizeof key);
	n = (size_t) snprintf(both, sizeof both, "%s%s", key, WSH_GUID);
	lws_SHA1((const unsigned char *) both, n, sha);
	lws_b64_encode_string(
	    (const char *) sha, sizeof sha, r->accept, sizeof r->accept);
	req = malloc(cap);
	if (req == NULL)
		return -1;
	n = wsh_request(req, cap, c->host_hdr, c->path, key,
	    (const char *const *) r->hdr_lines, c->n_headers);
	int rc = n > 0 ? queue(r, req, n) : -1;
	free(req);
	return rc;
}

static int
writable(struct ws_raw *r, struct lws *wsi)
{
	struct ws_client *c = r->c;
	size_t n;

	if (c->send_first && !r->close_sent) {
		c->send_first = false;
		if (queue_frame(r, WSF_TEXT, c->first_frame, c->first_len)
		    != 0) {
			ws_set_why(c, "cannot send the first frame");
			return -1;
		}
	}
	if (r->out.len > LWS_PRE) {
		n = r->out.len - LWS_PRE;
		if (lws_write(wsi, (unsigned char *) r->out.p + LWS_PRE, n,
		        LWS_WRITE_RAW)
		    < (int) n) {
			ws_set_why(c, "write failed");
			return -1;
		}
		r->out.len = LWS_PRE;
	}
	return r->hangup ? -1 : 0;
}

int
ws_raw_dispatch(struct ws_client *c, struct lws *wsi,
    enum lws_callback_reasons reason, void *in, size_t len)
{
	struct ws_raw *r = c->raw;

	switch (reason) {
	case LWS_CALLBACK_RAW_CONNECTED:
		reset(r);
		c->wsi = wsi;
		if (send_request(r) != 0) {
			ws_set_why(c, "cannot build the upgrade request");
			return -1;
		}
		return 0;
	case LWS_CALLBACK_RAW_RX:
		return received(r, wsi, in, len);
	case LWS_CALLBACK_RAW_WRITEABLE:
		return writable(r, wsi);
	case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
		ws_set_why(c,
		    in != NULL && *(const char *) in ? (const char *) in
		                                     : "connection error");
		ws_schedule_retry(c);
		return 0;
	case LWS_CALLBACK_RAW_CLOSE:
		ws_set_why(c,
		    r->upgraded ? "connection closed"
		                : "closed during the upgrade");
		lws_sul_cancel(&r->sul_ping);
		lws_sul_cancel(&r->sul_pong);
		ws_link_down(c);
		ws_schedule_retry(c);
		return 0;
	case LWS_CALLBACK_WSI_DESTROY:
		lws_sul_cancel(&r->sul_ping);
		lws_sul_cancel(&r->sul_pong);
		ws_attempt_over(c);
		return 0;
	default:
		return 0;
	}
}
