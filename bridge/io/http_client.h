/* Asynchronous HTTP GET to ComfyUI inside the loop (never blocks it). */
#ifndef C2M_HTTP_CLIENT_H
#define C2M_HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "loop.h"
#include "url.h"

struct http_client;

/* status: the HTTP status (200, 404, ...), or a negative enum br_err when
 * no response arrived (BR_EIO: connect/read failed, BR_EFULL: body over
 * the cap, BR_ESTATE: timed out). body is borrowed for the call only and
 * NUL-terminated. */
typedef void (*http_done_cb)(
    void *ud, int status, const char *body, size_t len);

/* base: http(s)://host:port/prefix (borrowed, must outlive the client);
 * headers: extra "Name: value" headers (borrowed). */
struct http_client *http_client_create(struct loop *l, const struct url *base,
    char *const *headers, int n_headers, const struct tls_opts *tls,
    size_t max_body);
/* Cancels outstanding requests (their callbacks are not called). */
void http_client_destroy(struct http_client *h);

/* GET <prefix><path_query> (path_query starts with '/'), calls done once.
 * Returns 0 or a negative enum br_err (done is then not called). */
int http_client_get(struct http_client *h, const char *path_query,
    int timeout_ms, http_done_cb done, void *ud);

/* Requests currently in flight. */
int http_client_pending(const struct http_client *h);

#endif
