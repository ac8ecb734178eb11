/* The WebSocket upgrade (bridge/README.md#rfc6455): the request as
 * libwebsockets 4.1.6 writes it, so ComfyUI sees the same request on
 * either path, and an incremental, bounded parser of the response head. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "wsframe.h"

size_t
wsh_request(char *out, size_t cap, const char *host, const char *path,
    const char *key, const char *const *headers, int n_headers)
{
	size_t len;
	int n;

	n = snprintf(out, cap,
	    "GET %s HTTP/1.1\r\n"
	    "Pragma: no-cache\r\n"
	    "Cache-Control: no-cache\r\n"
	    "Host: %s\r\n"
	    "Upgrade: websocket\r\n"
	    "Connection: Upgrade\r\n"
	    "Sec-WebSocket-Key: %s\r\n"
	    "Sec-WebSocket-Version: 13\r\n",
	    path, host, key);
	if (n < 0 || (size_t) n >= cap)
		return 0;
	len = (size_t) n;
	for (int i = 0; i < n_headers; i++) {
		n = snprintf(out + len, cap - len, "%s\r\n", headers[i]);
		if (n < 0 || (size_t) n >= cap - len)
			return 0;
		len += (size_t) n;
	}
	if (cap - len < 3)
		return 0;
	memcpy(out + len, "\r\n", 3);
	return len + 2;
}

void
wsh_resp_init(struct wsh_resp *r)
{
	r->len = 0;
	r->status = 0;
	r->error[0] = '\0';
}

__attribute__((format(printf, 2, 3))) static int
refuse(struct wsh_resp *r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->error, sizeof(r->error), fmt, ap);
	va_end(ap);
	return WSH_ERROR;
}

static bool
span_eq(const char *s, size_t n, const char *lit)
{
	return strlen(lit) == n && strncasecmp(s, lit, n) == 0;
}

/* "Connection" is a comma-separated token list. */
static bool
has_token(const char *s, size_t n, const char *tok)
{
	size_t i = 0;

	while (i < n) {
		size_t b, e;
		while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == ','))
			i++;
		b = i;
		while (i < n && s[i] != ',')
			i++;
		e = i;
		while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t'))
			e--;
		if (e > b && span_eq(s + b, e - b, tok))
			return true;
	}
	return false;
}

/* "HTTP/1.x NNN reason" */
static int
status_line(struct wsh_resp *r, const char *s, size_t n)
{
	char reason[64];

	if (n < 12 || strncmp(s, "HTTP/1.", 7) != 0 || s[8] != ' '
	    || s[9] < '1' || s[9] > '5' || s[10] < '0' || s[10] > '9'
	    || s[11] < '0' || s[11] > '9')
		return refuse(r, "not an HTTP response");
	r->status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
	if (r->status == 101)
		return 0;
	log_excerpt(
	    reason, sizeof reason, s + 12 + (n > 12), n - 12 - (n > 12));
	return refuse(r, "upgrade refused: HTTP %d%s%s", r->status,
	    reason[0] ? " " : "", reason);
}

struct seen {
	bool upgrade, connection, accept;
};

/* One "Name: value" line of the head. */
static int
header_line(struct wsh_resp *r, const char *s, size_t n, const char *accept,
    struct seen *seen)
{
	const char *colon = memchr(s, ':', n);
	const char *v;
	size_t nl, vl;
	char text[64];

	if (colon == NULL)
		return refuse(r, "malformed header line in the response");
	nl = (size_t) (colon - s);
	v = colon + 1;
	vl = n - nl - 1;
	while (vl > 0 && (*v == ' ' || *v == '\t'))
		v++, vl--;
	while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
		vl--;
	log_excerpt(text, sizeof text, v, vl);
	if (span_eq(s, nl, "Upgrade")) {
		if (!span_eq(v, vl, "websocket"))
			return refuse(r, "Upgrade header is '%s'", text);
		seen->upgrade = true;
	} else if (span_eq(s, nl, "Connection")) {
		/* repeated, it is one comma-separated list (RFC 7230
		 * 3.2.2): "upgrade" may be in any of them */
		if (has_token(v, vl, "upgrade"))
			seen->connection = true;
	} else if (span_eq(s, nl, "Sec-WebSocket-Accept")) {
		if (vl != strlen(accept) || memcmp(v, accept, vl) != 0)
			return refuse(r,
			    "Sec-WebSocket-Accept '%s' does not "
			    "match the key",
			    text);
		seen->accept = true;
	} else if (span_eq(s, nl, "Sec-WebSocket-Extensions")) {
		return refuse(r,
		    "the server chose extension '%s', none was "
		    "offered",
		    text);
	} else if (span_eq(s, nl, "Sec-WebSocket-Protocol")) {
		return refuse(r,
		    "the server chose subprotocol '%s', none was "
		    "offered",
		    text);
	}
	return 0;
}

/* The complete head, head[0..n) ending in CRLF CRLF. */
static int
parse_head(struct wsh_resp *r, size_t n, const char *accept)
{
	const char *s = r->head, *end = r->head + n - 2;
	struct seen seen = { false, false, false };
	bool first = true;

	while (s < end) {
		const char *eol = memchr(s, '\r', (size_t) (end - s));
		size_t ln
		    = eol != NULL ? (size_t) (eol - s) : (size_t) (end - s);
		int rc = first ? status_line(r, s, ln)
		               : header_line(r, s, ln, accept, &seen);
		if (rc != 0)
			return rc;
		first = false;
		s += ln + 2;
	}
	if (!seen.upgrade)
		return refuse(r, "no 'Upgrade: websocket' in the response");
	if (!seen.connection)
		return refuse(r, "no 'Connection: upgrade' in the response");
	if (!seen.accept)
		return refuse(r, "no Sec-WebSocket-Accept in the response");
	return WSH_DONE;
}

int
wsh_resp_feed(struct wsh_resp *r, const uint8_t *in, size_t len,
    const char *accept, size_t *used)
{
	size_t old = r->len, from, take;

	*used = 0;
	if (r->error[0] != '\0')
		return WSH_ERROR;
	take = len < sizeof(r->head) - old ? len : sizeof(r->head) - old;
	memcpy(r->head + old, in, take);
	r->len = old + take;
	from = old > 3 ? old - 3 : 0;
	for (size_t i = from; i + 4 <= r->len; i++) {
		if (memcmp(r->head + i, "\r\n\r\n", 4) != 0)
			continue;
		*used = i + 4 - old;
		r->len = i + 4;
		return parse_head(r, r->len, accept);
	}
	if (r->len == sizeof(r->head))
		return refuse(r, "response head over %d bytes", WSH_HEAD_MAX);
	*used = len;
	return WSH_MORE;
}
