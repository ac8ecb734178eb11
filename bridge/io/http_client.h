/* Asynchronous HTTP GET and POST to ComfyUI inside the loop (never blocks
 * it). */
#ifndef C2M_HTTP_CLIENT_H
#define C2M_HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "loop.h"
#include "url.h"

/* Requests one client keeps on the wire at a time; the rest wait in FIFO
 * order. Each may buffer up to max_body, so this bounds the memory a burst
 * of /history/<id> reads can take. */
#define HTTP_MAX_INFLIGHT 2

struct http_client;

/* status: the HTTP status (200, 404, ...), or a negative enum br_err when
 * no response arrived (BR_EIO: connect/read failed, BR_EFULL: body over
 * the cap, BR_ESTATE: timed out). Redirects are never followed, because
 * they would carry the --comfyui headers and credentials to another URL: a
 * 3xx gives its status and, as body, an error text naming the status and
 * the Location (userinfo, query and fragment removed) and the fix. body is
 * borrowed for the call only and NUL-terminated. */
typedef void (*http_done_cb)(
    void *ud, int status, const char *body, size_t len);

/* base: http(s)://host:port/prefix (borrowed, must outlive the client);
 * headers: extra "Name: value" headers (copied). */
struct http_client *http_client_create(struct loop *l, const struct url *base,
    char *const *headers, int n_headers, const struct tls_opts *tls,
    size_t max_body);
/* Cancels outstanding requests, queued or on the wire (their callbacks are
 * not called); frees h. */
void http_client_destroy(struct http_client *h);

/* GET <prefix><path_query> (path_query starts with '/', copied); calls
 * done once, never from inside this call. At most HTTP_MAX_INFLIGHT
 * requests are on the wire; later ones queue and start, in call order, as
 * earlier ones complete. timeout_ms (<= 0: 30 s) counts from the start on
 * the wire: a queued request waits at most for the requests ahead of it,
 * each bounded by its own timeout. Returns 0 or a negative enum br_err
 * (done is then not called). */
int http_client_get(struct http_client *h, const char *path_query,
    int timeout_ms, http_done_cb done, void *ud);

/* POST <prefix><path> with body (len bytes, copied) as application/json;
 * otherwise as http_client_get: same FIFO, bound, timeout, headers, no
 * redirects. A 4xx/5xx answer's body is delivered as body. */
int http_client_post(struct http_client *h, const char *path, const char *body,
    size_t len, int timeout_ms, http_done_cb done, void *ud);

/* Requests whose callback is still to come: queued plus on the wire. */
int http_client_pending(const struct http_client *h);

#endif
