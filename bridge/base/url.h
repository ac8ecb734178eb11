/* URL parsing for --comfyui (http/https) and --mqtt (mqtt/mqtts). Pure. */
#ifndef C2M_URL_H
#define C2M_URL_H

#include <stdbool.h>

struct url {
	char scheme[8]; /* "http", "https", "mqtt", "mqtts" */
	bool tls; /* https / mqtts */
	char host[256]; /* without brackets for IPv6 literals */
	int port; /* explicit or the scheme's default */
	char path[512]; /* path prefix without trailing '/', "" for none */
	char user[128]; /* userinfo user (mqtt URLs only), "" if none */
	char pass[128]; /* userinfo password: a secret, never log it */
};

/* Parses s into u. Accepted schemes are given in schemes, e.g.
 * "http,https". Returns 0 or BR_EINVAL; on error writes a one-line
 * explanation naming the problem into err (errlen bytes). */
int url_parse(const char *s, const char *schemes, struct url *u, char *err,
    unsigned errlen);

/* Room for url_format_authority's longest result: a 255-byte host in
 * brackets, ':', 5 digits and the NUL. */
#define URL_AUTHORITY_MAX 265

/* Writes "scheme://host:port/path" with no credentials (for logs and
 * bridge/info). Returns the length written (truncated to cap - 1). */
int url_format_public(const struct url *u, char *dst, unsigned cap);
/* Writes "host:port", an IPv6 literal in brackets: the form of an HTTP
 * Host header. Returns the length written (truncated to cap - 1). */
int url_format_authority(const struct url *u, char *dst, unsigned cap);

struct buf;
/* Appends s percent-encoded (RFC 3986: all but unreserved characters) to
 * out, for a query value or a path segment. Returns 0 or BR_ENOMEM. */
int url_encode(struct buf *out, const char *s);

#endif
