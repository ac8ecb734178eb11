/* io-internal: what loop.c, ws_client.c and http_client.c share about the
 * one libwebsockets context. Never included outside bridge/io. */
#ifndef C2M_LWS_GLUE_H
#define C2M_LWS_GLUE_H

#include <stdbool.h>
#include <stdint.h>

#include <libwebsockets.h>

#include "loop.h"
#include "tlsopts.h"

#define C2M_LWS_PROTO_WS   "comfy-ws"
#define C2M_LWS_PROTO_HTTP "comfy-http"
#define C2M_LWS_PROTO_RAW  "comfy-ws-raw"

/* Every user pointer handed to lws (connect info .userdata) starts with this
 * tag. lws 4.1 delivers LWS_CALLBACK_WSI_DESTROY to protocols[0] of the
 * vhost, not to the wsi's own protocol, so loop.c routes it by tag. */
enum glue_kind {
	GLUE_KIND_WS = 0x63327731,
	GLUE_KIND_HTTP = 0x63326831,
};

struct glue_user {
	uint32_t kind;
};

/* The loop's lws context (borrowed; lives until loop_destroy). */
struct lws_context *loop_lws_context(struct loop *l);

/* True while loop_destroy() runs lws_context_destroy(): callbacks then
 * arrive for every remaining wsi and must neither retry nor call out. */
bool loop_lws_destroying(const struct loop *l);

/* A vhost whose client TLS context uses tls->ca/cert/key: the default vhost
 * when none is set, else one created on first use and cached by those paths
 * until loop_destroy. Returns NULL if lws could not load them. */
struct lws_vhost *loop_lws_client_vhost(
    struct loop *l, const struct tls_opts *tls);

/* An extra request header split at the colon; name keeps the ':' as
 * lws_add_http_header_by_name() wants it. */
struct glue_header {
	char *name;
	char *value;
};

/* Validates "Name: value" strings (token name, no CR/LF in the value) and
 * copies them into *out (freed with glue_headers_free). Logs the index of a
 * bad header, never its value. Returns 0, BR_EINVAL or BR_ENOMEM. */
int glue_headers_copy(
    char *const *src, int n, struct glue_header **out, const char *log_src);
void glue_headers_free(struct glue_header *h, int n);
/* Appends them in LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER; in/len are
 * that callback's. Returns 0, or -1 when they do not fit. */
int glue_headers_append(
    struct lws *wsi, const struct glue_header *h, int n, void *in, size_t len);

/* vasprintf into a new string (the caller frees it); NULL when out of
 * memory. */
char *glue_asprintf(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* Protocol callbacks listed in loop.c's protocols table. */
int ws_client_lws_cb(struct lws *wsi, enum lws_callback_reasons reason,
    void *user, void *in, size_t len);
int http_client_lws_cb(struct lws *wsi, enum lws_callback_reasons reason,
    void *user, void *in, size_t len);

#endif
