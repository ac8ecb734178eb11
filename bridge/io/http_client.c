/* Asynchronous HTTP GETs to ComfyUI on the loop's lws context.
 *
 * Each request owns one wsi and lives until that wsi's WSI_DESTROY, even
 * after its callback ran, because lws may still call back with the request
 * as user pointer. The callback runs exactly once, never from inside
 * http_client_get() (a synchronous connect failure is delivered from a
 * zero-delay sul) and never after http_client_destroy(). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "http_client.h"
#include "log.h"
#include "lws_glue.h"

#define LOG_SRC                 "http"
#define HTTP_DEFAULT_TIMEOUT_MS 30000

struct http_req {
	struct glue_user tag; /* first: the lws user pointer is the request */
	struct http_client *h; /* NULL once orphaned by http_client_destroy */
	struct lws_context *ctx;
	struct loop *loop;
	struct http_req *prev, *next;
	struct lws *wsi;
	lws_sorted_usec_list_t sul; /* timeout, later the deferred delivery */
	http_done_cb done;
	void *ud;
	char *path;
	char *body;
	size_t len, cap;
	int status;
	int result;
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
	struct glue_header *headers;
	int n_headers;
	size_t max_body;
	struct http_req *reqs;
	int pending;
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
	url_format_authority(base, authority, sizeof authority);
	h->address = strdup(base->host);
	h->host_hdr = strdup(authority);
	if (h->address == NULL || h->host_hdr == NULL)
		goto fail;
	if (glue_headers_copy(headers, n_headers, &h->headers, LOG_SRC)
	    != BR_OK)
		goto fail;
	h->n_headers = n_headers > 0 ? n_headers : 0;
	if (base->tls) {
		h->ssl_flags = LCCSCF_USE_SSL;
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
	free(r->body);
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

static void
deliver(struct http_req *r)
{
	struct http_client *h = r->h;

	if (r->delivered)
		return;
	r->delivered = true;
	if (h != NULL)
		h->pending--;
	/* none inside lws_context_destroy: the owner may be half gone */
	if (h != NULL && !loop_lws_destroying(r->loop)) {
		r->in_callback = true;
		if (r->result < 0)
			r->done(r->ud, r->result, "", 0);
		else
			r->done(
			    r->ud, r->result, r->body ? r->body : "", r->len);
		r->in_callback = false;
	}
	free(r->body);
	r->body = NULL;
	r->len = r->cap = 0;
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
		log_debug(LOG_SRC, "GET %s timed out", r->path);
	}
	deliver(r);
}

/* Records the outcome once; delivers now, or soon if still inside
 * http_client_get(). */
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

/* Starts the request; copies path_query. done runs once, later. */
int
http_client_get(struct http_client *h, const char *path_query, int timeout_ms,
    http_done_cb done, void *ud)
{
	struct lws_client_connect_info i;
	struct http_req *r;
	struct lws *w;

	if (h == NULL || path_query == NULL || path_query[0] != '/'
	    || done == NULL)
		return BR_EINVAL;
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return BR_ENOMEM;
	r->tag.kind = GLUE_KIND_HTTP;
	r->path = glue_asprintf("%s%s", h->base->path, path_query);
	if (r->path == NULL) {
		free(r);
		return BR_ENOMEM;
	}
	r->h = h;
	r->ctx = h->ctx;
	r->loop = h->loop;
	r->done = done;
	r->ud = ud;
	r->next = h->reqs;
	if (h->reqs != NULL)
		h->reqs->prev = r;
	h->reqs = r;
	h->pending++;

	memset(&i, 0, sizeof(i));
	i.context = h->ctx;
	i.vhost = h->vhost;
	i.address = h->address;
	i.port = h->base->port;
	i.ssl_connection = h->ssl_flags;
	i.path = r->path;
	i.host = h->host_hdr;
	i.origin = NULL;
	i.method = "GET";
	i.protocol = C2M_LWS_PROTO_HTTP;
	i.local_protocol_name = C2M_LWS_PROTO_HTTP;
	i.userdata = r;
	if (h->insecure)
		log_warn(
		    LOG_SRC, "TLS verification is off for %s", h->host_hdr);

	if (timeout_ms <= 0)
		timeout_ms = HTTP_DEFAULT_TIMEOUT_MS;
	lws_sul_schedule(h->ctx, 0, &r->sul, req_sul,
	    (lws_usec_t) timeout_ms * LWS_US_PER_MS);
	r->wsi_alive = true;
	r->in_connect = true;
	w = lws_client_connect_via_info(&i);
	r->in_connect = false;
	if (w != NULL) {
		if (r->wsi_alive)
			r->wsi = w;
		return BR_OK;
	}
	/* lws gave up at once: report it here instead of calling done */
	h->pending--;
	r->delivered = true;
	r->finished = true;
	lws_sul_cancel(&r->sul);
	if (r->wsi_alive && r->closing) {
		/* WSI_DESTROY still to come: it frees the orphan */
		unlink_req(r);
		r->h = NULL;
		return BR_EIO;
	}
	r->wsi_alive = false;
	free_req(r);
	return BR_EIO;
}

int
http_client_pending(const struct http_client *h)
{
	return h != NULL ? h->pending : 0;
}

/* Cancels every request without calling back; frees h. */
void
http_client_destroy(struct http_client *h)
{
	struct http_req *r, *next;

	if (h == NULL)
		return;
	for (r = h->reqs; r != NULL; r = next) {
		next = r->next;
		r->prev = r->next = NULL;
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
		/* else: lws is closing it and WSI_DESTROY frees r */
		maybe_free(r);
	}
	h->reqs = NULL;
	glue_headers_free(h->headers, h->n_headers);
	free(h->address);
	free(h->host_hdr);
	free(h);
}

static int
append_body(struct http_req *r, const void *in, size_t len)
{
	size_t max = r->h != NULL ? r->h->max_body : 0;
	size_t cap;
	char *nb;

	if (len > max || r->len > max - len)
		return BR_EFULL;
	if (r->len + len + 1 > r->cap) {
		cap = r->cap ? r->cap : 4096;
		while (cap < r->len + len + 1)
			cap *= 2;
		if (cap > max + 1)
			cap = max + 1;
		nb = realloc(r->body, cap);
		if (nb == NULL)
			return BR_ENOMEM;
		r->body = nb;
		r->cap = cap;
	}
	memcpy(r->body + r->len, in, len);
	r->len += len;
	r->body[r->len] = '\0';
	return BR_OK;
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
		return glue_headers_append(
		    wsi, r->h->headers, r->h->n_headers, in, len);
	case LWS_CALLBACK_ESTABLISHED_CLIENT_HTTP:
		r->wsi = wsi;
		r->status = (int) lws_http_client_http_response(wsi);
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
