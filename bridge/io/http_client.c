/* Asynchronous HTTP GETs and POSTs to ComfyUI on the loop's lws context.
 *
 * Each request owns one wsi and lives until that wsi's WSI_DESTROY, even
 * after its callback ran, because lws may still call back with the request
 * as user pointer. The callback runs exactly once, never from inside
 * http_client_get() (a failure to start is delivered from a zero-delay
 * sul) and never after http_client_destroy().
 *
 * At most HTTP_MAX_INFLIGHT requests hold a wsi; the others wait in a FIFO
 * without one. A slot frees when a request's outcome is delivered, and the
 * next queued request starts before that callback runs, so a GET issued
 * from inside a callback queues behind those already waiting.
 *
 * Redirects are never followed: lws would re-run the handshake, and with it
 * CLIENT_APPEND_HANDSHAKE_HEADER, against whatever host the Location names,
 * handing it the --comfyui headers and Basic credentials.
 *
 * A POST's body goes out in POST_CHUNK pieces, one per writable callback
 * (bridge/README.md#lws-client-post), so a body of several MiB never holds
 * the loop. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "err.h"
#include "http_client.h"
#include "log.h"
#include "lws_glue.h"
#include "ratelog.h"

#define LOG_SRC                 "http"
#define HTTP_DEFAULT_TIMEOUT_MS 30000
#define LOCATION_SHOWN_MAX      256 /* of a redirect's Location, escaped */
#define BODY_INITIAL            4096 /* first allocation of a body */
#define POST_CHUNK              16384 /* body bytes per writable callback */

struct http_req {
	struct glue_user tag; /* first: the lws user pointer is the request */
	struct http_client *h; /* NULL once orphaned by http_client_destroy */
	struct lws_context *ctx;
	struct loop *loop;
	struct http_req *prev, *next; /* every live request of h */
	struct http_req *qnext; /* FIFO of requests waiting for a slot */
	struct lws *wsi;
	lws_sorted_usec_list_t sul; /* timeout, later the deferred delivery */
	http_done_cb done;
	void *ud;
	char *path;
	const char *method; /* "GET" or "POST" */
	char *tx; /* a POST's body (owned); NULL for a GET */
	size_t tx_len, tx_sent;
	struct buf body; /* the response body, or a redirect's error text */
	int timeout_ms;
	int status;
	int result;
	int handshakes; /* header blocks lws asked us for */
	bool on_wire; /* started: holds one of h's HTTP_MAX_INFLIGHT slots */
	bool wsi_alive; /* WSI_DESTROY not seen yet */
	bool closing; /* lws is closing the wsi: do not kill it again */
	bool in_connect; /* inside lws_client_connect_via_info() */
	bool in_callback; /* inside done() */
	bool finished; /* result known */
	bool delivered; /* done() called, or never to be called */
};

struct http_client {
	struct loop *loop;
	struct lws_context *ctx;
	struct lws_vhost *vhost;
	const struct url *base;
	char *address;
	char *host_hdr;
	int ssl_flags;
	bool insecure;
	struct ratelog redirect_log; /* warns once: ComfyUI repeats it */
	struct glue_header *headers;
	int n_headers;
	size_t max_body;
	struct http_req *reqs;
	struct http_req *q_head, *q_tail;
	int pending; /* callbacks still to come */
	int inflight; /* requests holding a slot */
};

/* Borrows base (it must outlive the client); copies headers. */
struct http_client *
http_client_create(struct loop *l, const struct url *base,
    char *const *headers, int n_headers, const struct tls_opts *tls,
    size_t max_body)
{
	struct http_client *h;
	char authority[URL_AUTHORITY_MAX];

	if (l == NULL || base == NULL)
		return NULL;
	h = calloc(1, sizeof(*h));
	if (h == NULL)
		return NULL;
	h->loop = l;
	h->ctx = loop_lws_context(l);
	h->base = base;
	h->max_body = max_body;
	h->redirect_log = (struct ratelog) RATELOG_INIT(1);
	url_format_authority(base, authority, sizeof authority);
	h->address = strdup(base->host);
	h->host_hdr = strdup(authority);
	if (h->address == NULL || h->host_hdr == NULL)
		goto fail;
	if (glue_headers_copy(headers, n_headers, &h->headers, LOG_SRC)
	    != BR_OK)
		goto fail;
	h->n_headers = n_headers > 0 ? n_headers : 0;
	/* a redirect would re-send the headers to the Location's host */
	h->ssl_flags = LCCSCF_HTTP_NO_FOLLOW_REDIRECT;
	if (base->tls) {
		h->ssl_flags |= LCCSCF_USE_SSL;
		h->insecure = tls != NULL && tls->insecure;
		if (h->insecure)
			h->ssl_flags |= LCCSCF_ALLOW_SELFSIGNED
			    | LCCSCF_SKIP_SERVER_CERT_HOSTNAME_CHECK
			    | LCCSCF_ALLOW_EXPIRED | LCCSCF_ALLOW_INSECURE;
	}
	h->vhost = loop_lws_client_vhost(l, base->tls ? tls : NULL);
	if (h->vhost == NULL)
		goto fail;
	return h;

fail:
	glue_headers_free(h->headers, h->n_headers);
	free(h->address);
	free(h->host_hdr);
	free(h);
	return NULL;
}

static void
unlink_req(struct http_req *r)
{
	if (r->h == NULL)
		return;
	if (r->prev != NULL)
		r->prev->next = r->next;
	else
		r->h->reqs = r->next;
	if (r->next != NULL)
		r->next->prev = r->prev;
	r->prev = r->next = NULL;
}

static void
free_req(struct http_req *r)
{
	lws_sul_cancel(&r->sul);
	unlink_req(r);
	free(r->path);
	free(r->tx);
	buf_free(&r->body);
	free(r);
}

static void
maybe_free(struct http_req *r)
{
	if (!r->wsi_alive && r->delivered && !r->in_callback && !r->in_connect)
		free_req(r);
}

/* Kills the wsi unless lws is already closing it. */
static void
kill_wsi(struct http_req *r)
{
	if (!r->wsi_alive || r->closing || r->wsi == NULL)
		return;
	r->closing = true;
	lws_set_timeout(r->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

static void req_sul(lws_sorted_usec_list_t *sul);

/* Puts r on the wire in a slot of r->h; a failure to start is delivered
 * later from r->sul, never from here. */
static void
start_req(struct http_req *r)
{
	struct http_client *h = r->h;
	struct lws_client_connect_info i;
	struct lws *w;

	r->on_wire = true;
	h->inflight++;
	memset(&i, 0, sizeof(i));
	i.context = h->ctx;
	i.vhost = h->vhost;
	i.address = h->address;
	i.port = h->base->port;
	i.ssl_connection = h->ssl_flags;
	i.path = r->path;
	i.host = h->host_hdr;
	i.origin = NULL;
	i.method = r->method;
	i.protocol = C2M_LWS_PROTO_HTTP;
	i.local_protocol_name = C2M_LWS_PROTO_HTTP;
	i.userdata = r;
	if (h->insecure)
		log_warn(
		    LOG_SRC, "TLS verification is off for %s", h->host_hdr);

	lws_sul_schedule(h->ctx, 0, &r->sul, req_sul,
	    (lws_usec_t) r->timeout_ms * LWS_US_PER_MS);
	r->wsi_alive = true;
	r->in_connect = true;
	w = lws_client_connect_via_info(&i);
	r->in_connect = false;
	if (w != NULL) {
		if (r->wsi_alive)
			r->wsi = w;
		return;
	}
	/* lws gave up at once; unless it is still closing a wsi (then
	 * WSI_DESTROY comes later), there is none */
	if (!r->closing)
		r->wsi_alive = false;
	if (!r->finished) {
		r->finished = true;
		r->result = BR_EIO;
	}
	lws_sul_schedule(r->ctx, 0, &r->sul, req_sul, 1);
}

/* Starts queued requests while a slot is free. */
static void
pump(struct http_client *h)
{
	struct http_req *r;

	while (h->inflight < HTTP_MAX_INFLIGHT && h->q_head != NULL) {
		r = h->q_head;
		h->q_head = r->qnext;
		if (h->q_head == NULL)
			h->q_tail = NULL;
		r->qnext = NULL;
		start_req(r);
	}
}

static void
deliver(struct http_req *r)
{
	struct http_client *h = r->h;

	if (r->delivered)
		return;
	r->delivered = true;
	if (h != NULL) {
		h->pending--;
		if (r->on_wire)
			h->inflight--;
	}
	/* none inside lws_context_destroy: the owner may be half gone, and
	 * no connection may start */
	if (h != NULL && !loop_lws_destroying(r->loop)) {
		pump(h);
		r->in_callback = true;
		if (r->result < 0)
			r->done(r->ud, r->result, "", 0);
		else
			r->done(r->ud, r->result, r->body.p ? r->body.p : "",
			    r->body.len);
		r->in_callback = false;
	}
	buf_free(&r->body);
	free(r->tx);
	r->tx = NULL;
	kill_wsi(r);
	maybe_free(r);
}

static void
req_sul(lws_sorted_usec_list_t *sul)
{
	struct http_req *r = lws_container_of(sul, struct http_req, sul);

	if (!r->finished) {
		r->finished = true;
		r->result = BR_ESTATE;
		log_debug(LOG_SRC, "%s %s timed out", r->method, r->path);
	}
	deliver(r);
}

/* Records the outcome once; delivers now, or soon if still inside
 * lws_client_connect_via_info(). */
static void
finish(struct http_req *r, int result)
{
	if (r->finished)
		return;
	r->finished = true;
	r->result = result;
	if (r->in_connect) {
		lws_sul_schedule(r->ctx, 0, &r->sul, req_sul, 1);
		return;
	}
	lws_sul_cancel(&r->sul);
	deliver(r);
}

/* Queues or starts a request (tx: a POST body, taken over; NULL for a
 * GET); copies path_query. done runs once, later. */
static int
submit(struct http_client *h, const char *method, const char *path_query,
    char *tx, size_t tx_len, int timeout_ms, http_done_cb done, void *ud)
{
	struct http_req *r;

	r = calloc(1, sizeof(*r));
	if (r == NULL) {
		free(tx);
		return BR_ENOMEM;
	}
	r->tag.kind = GLUE_KIND_HTTP;
	r->path = glue_asprintf("%s%s", h->base->path, path_query);
	if (r->path == NULL) {
		free(tx);
		free(r);
		return BR_ENOMEM;
	}
	r->method = method;
	r->tx = tx;
	r->tx_len = tx_len;
	r->h = h;
	r->ctx = h->ctx;
	r->loop = h->loop;
	r->done = done;
	r->ud = ud;
	r->timeout_ms = timeout_ms > 0 ? timeout_ms : HTTP_DEFAULT_TIMEOUT_MS;
	r->next = h->reqs;
	if (h->reqs != NULL)
		h->reqs->prev = r;
	h->reqs = r;
	h->pending++;

	if (h->q_tail != NULL)
		h->q_tail->qnext = r;
	else
		h->q_head = r;
	h->q_tail = r;
	pump(h);
	return BR_OK;
}

int
http_client_get(struct http_client *h, const char *path_query, int timeout_ms,
    http_done_cb done, void *ud)
{
	if (h == NULL || path_query == NULL || path_query[0] != '/'
	    || done == NULL)
		return BR_EINVAL;
	return submit(h, "GET", path_query, NULL, 0, timeout_ms, done, ud);
}

int
http_client_post(struct http_client *h, const char *path, const char *body,
    size_t len, int timeout_ms, http_done_cb done, void *ud)
{
	char *tx;

	if (h == NULL || path == NULL || path[0] != '/' || done == NULL
	    || (body == NULL && len > 0))
		return BR_EINVAL;
	/* one byte more: never a zero-size allocation */
	tx = malloc(len + 1);
	if (tx == NULL)
		return BR_ENOMEM;
	if (len > 0)
		memcpy(tx, body, len);
	return submit(h, "POST", path, tx, len, timeout_ms, done, ud);
}

int
http_client_pending(const struct http_client *h)
{
	return h != NULL ? h->pending : 0;
}

/* Cancels every request, queued or started, without calling back; frees
 * h. */
void
http_client_destroy(struct http_client *h)
{
	struct http_req *r, *next;

	if (h == NULL)
		return;
	for (r = h->reqs; r != NULL; r = next) {
		next = r->next;
		r->prev = r->next = r->qnext = NULL;
		r->h = NULL;
		r->delivered = true;
		r->finished = true;
		lws_sul_cancel(&r->sul);
		if (r->wsi_alive && !r->closing && r->wsi != NULL) {
			/* detach so lws never calls back with r again */
			lws_set_wsi_user(r->wsi, NULL);
			lws_set_timeout(r->wsi, PENDING_TIMEOUT_USER_OK,
			    LWS_TO_KILL_ASYNC);
			r->wsi_alive = false;
		}
		/* else: lws is closing it and WSI_DESTROY frees r, or it
		 * was still queued and has no wsi */
		maybe_free(r);
	}
	h->reqs = h->q_head = h->q_tail = NULL;
	glue_headers_free(h->headers, h->n_headers);
	free(h->address);
	free(h->host_hdr);
	free(h);
}

/* Writes loc to out (cap bytes) fit for a log line: userinfo, query and
 * fragment dropped because they may carry secrets, control bytes escaped,
 * length capped. */
static void
safe_location(const char *loc, char *out, unsigned cap)
{
	size_t keep = strcspn(loc, "?#");
	const char *auth = NULL, *auth_end, *at = NULL, *p;
	char *tmp;
	size_t n;

	p = strstr(loc, "://");
	if (p != NULL && (size_t) (p - loc) < strcspn(loc, "/?#"))
		auth = p + 3;
	else if (strncmp(loc, "//", 2) == 0)
		auth = loc + 2;
	if (auth != NULL && (size_t) (auth - loc) <= keep) {
		auth_end = auth + strcspn(auth, "/?#");
		for (p = auth; p < auth_end; p++)
			if (*p == '@')
				at = p;
	}
	tmp = malloc(keep + sizeof " (query omitted)");
	if (tmp == NULL) {
		snprintf(out, cap, "(unknown)");
		return;
	}
	if (at != NULL) {
		n = (size_t) (auth - loc);
		memcpy(tmp, loc, n);
		memcpy(tmp + n, at + 1, keep - (size_t) (at + 1 - loc));
		n += keep - (size_t) (at + 1 - loc);
	} else {
		memcpy(tmp, loc, keep);
		n = keep;
	}
	if (loc[keep] != '\0') {
		memcpy(tmp + n, " (query omitted)", sizeof " (query omitted)");
		n += sizeof " (query omitted)" - 1;
	}
	log_excerpt(out, cap, tmp, n);
	free(tmp);
}

/* Ends r as a failure that names the 3xx status and its Location: the
 * error text becomes the body done() gets. */
static void
redirect_refused(struct http_req *r, int status, const char *loc)
{
	char shown[LOCATION_SHOWN_MAX];
	struct http_client *h = r->h;

	safe_location(loc != NULL ? loc : "(none)", shown, sizeof shown);
	char *text = glue_asprintf("HTTP %d redirect to %s not followed (it "
	                           "would carry the --comfyui headers and "
	                           "credentials there); point --comfyui at "
	                           "the final URL",
	    status, shown);
	buf_reset(&r->body);
	if (text == NULL || buf_puts(&r->body, text) != BR_OK)
		buf_free(&r->body);
	free(text);
	if (h != NULL)
		ratelog_msg(&h->redirect_log, LOG_LVL_WARN, LOG_SRC,
		    "%s %s: %s", r->method, r->path,
		    r->body.p != NULL ? r->body.p : "redirect not followed");
	r->closing = true;
	finish(r, status);
}

/* In ESTABLISHED_CLIENT_HTTP of a 3xx: reads Location, refuses it. */
static void
refuse_redirect(struct http_req *r, struct lws *wsi)
{
	int n = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_LOCATION);
	char *loc = NULL;

	if (n > 0) {
		loc = malloc((size_t) n + 1);
		if (loc != NULL
		    && lws_hdr_copy(wsi, loc, n + 1, WSI_TOKEN_HTTP_LOCATION)
		        < 0) {
			free(loc);
			loc = NULL;
		}
	}
	redirect_refused(r, r->status, loc);
	free(loc);
}

static int
append_body(struct http_req *r, const void *in, size_t len)
{
	size_t max = r->h != NULL ? r->h->max_body : 0;
	int rc;

	/* most bodies fit the first allocation */
	if (r->body.cap == 0 && len <= max
	    && buf_reserve_max(
	           &r->body, max < BODY_INITIAL ? max : BODY_INITIAL, max)
	        != BR_OK)
		return BR_ENOMEM;
	if ((rc = buf_reserve_max(&r->body, len, max)) != BR_OK)
		return rc;
	return buf_append(&r->body, in, len);
}

static int
read_body(struct lws *wsi)
{
	char buf[LWS_PRE + 4096];
	char *p = buf + LWS_PRE;
	int n = (int) sizeof(buf) - LWS_PRE;

	/* calls us back with RECEIVE_CLIENT_HTTP_READ for each piece */
	return lws_http_client_read(wsi, &p, &n) < 0 ? -1 : 0;
}

/* In CLIENT_APPEND_HANDSHAKE_HEADER of a POST (in, len: that callback's):
 * the body's type and length, and the body to follow. */
static int
post_headers(struct http_req *r, struct lws *wsi, void *in, size_t len)
{
	unsigned char **p = in, *end = *p + len;
	char n[24];
	int nlen = snprintf(n, sizeof n, "%zu", r->tx_len);

	if (lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CONTENT_TYPE,
	        (const unsigned char *) "application/json", 16, p, end)
	        != 0
	    || lws_add_http_header_by_token(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH,
	           (const unsigned char *) n, nlen, p, end)
	        != 0)
		return -1;
	if (r->tx_len > 0) {
		lws_client_http_body_pending(wsi, 1);
		lws_callback_on_writable(wsi);
	}
	return 0;
}

/* In CLIENT_HTTP_WRITEABLE of a POST: the next piece of the body, the
 * last one marked final. lws keeps what the socket did not take and calls
 * back only once it is written. */
static int
post_chunk(struct http_req *r, struct lws *wsi)
{
	unsigned char buf[LWS_PRE + POST_CHUNK];
	size_t n = r->tx_len - r->tx_sent;
	enum lws_write_protocol wp = LWS_WRITE_HTTP;

	if (n == 0) /* lws may call back once more after the last piece */
		return 0;
	if (n > POST_CHUNK)
		n = POST_CHUNK;
	else
		wp = LWS_WRITE_HTTP_FINAL;
	memcpy(buf + LWS_PRE, r->tx + r->tx_sent, n);
	if (lws_write(wsi, buf + LWS_PRE, n, wp) != (int) n) {
		r->closing = true;
		finish(r, BR_EIO);
		return -1;
	}
	r->tx_sent += n;
	if (wp == LWS_WRITE_HTTP_FINAL)
		lws_client_http_body_pending(wsi, 0);
	else
		lws_callback_on_writable(wsi);
	return 0;
}

int
http_client_lws_cb(struct lws *wsi, enum lws_callback_reasons reason,
    void *user, void *in, size_t len)
{
	struct http_req *r = user;
	int rc;

	if (r == NULL || r->tag.kind != GLUE_KIND_HTTP)
		return lws_callback_http_dummy(wsi, reason, NULL, in, len);

	switch (reason) {
	case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER:
		if (r->h == NULL)
			return 0;
		/* a second handshake means lws went to another URL:
		 * the credentials stay home even if redirects ever get
		 * followed */
		if (++r->handshakes > 1) {
			log_warn(LOG_SRC, "%s %s: second handshake refused",
			    r->method, r->path);
			r->closing = true;
			finish(r, BR_EIO);
			return -1;
		}
		if (glue_headers_append(
		        wsi, r->h->headers, r->h->n_headers, in, len)
		    != 0)
			return -1;
		return r->tx != NULL ? post_headers(r, wsi, in, len) : 0;
	case LWS_CALLBACK_CLIENT_HTTP_WRITEABLE:
		return r->tx != NULL && !r->finished ? post_chunk(r, wsi) : 0;
	case LWS_CALLBACK_CLIENT_HTTP_REDIRECT:
		/* not reached with LCCSCF_HTTP_NO_FOLLOW_REDIRECT; refuse
		 * anyway rather than follow */
		redirect_refused(r, (int) len, in);
		return -1;
	case LWS_CALLBACK_ESTABLISHED_CLIENT_HTTP:
		r->wsi = wsi;
		r->status = (int) lws_http_client_http_response(wsi);
		if (r->status >= 300 && r->status < 400) {
			refuse_redirect(r, wsi);
			return -1;
		}
		return 0;
	case LWS_CALLBACK_RECEIVE_CLIENT_HTTP:
		return r->finished ? -1 : read_body(wsi);
	case LWS_CALLBACK_RECEIVE_CLIENT_HTTP_READ:
		if (r->finished)
			return -1;
		rc = append_body(r, in, len);
		if (rc != BR_OK) {
			r->closing = true;
			finish(r, rc == BR_EFULL ? BR_EFULL : BR_EIO);
			return -1;
		}
		return 0;
	case LWS_CALLBACK_COMPLETED_CLIENT_HTTP:
		if (r->status == 0)
			r->status = (int) lws_http_client_http_response(wsi);
		finish(r, r->status);
		return 0;
	case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
	case LWS_CALLBACK_CLOSED_CLIENT_HTTP:
		r->closing = true;
		finish(r, BR_EIO);
		return 0;
	case LWS_CALLBACK_WSI_DESTROY:
		r->wsi_alive = false;
		r->wsi = NULL;
		r->closing = true;
		if (!r->finished)
			finish(r, BR_EIO); /* frees r once delivered */
		else
			maybe_free(r);
		return 0;
	default:
		break;
	}
	return lws_callback_http_dummy(wsi, reason, NULL, in, len);
}
