/* URL parsing for the two URLs the bridge is given. Error messages never
 * echo any byte after "://": a user name or password may sit anywhere in
 * there (a '/' in a password moves the apparent end of the authority, a
 * forgotten host makes the password look like a port), so only the scheme,
 * lengths and fixed text may appear. */
#include "url.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "err.h"

static const struct {
	const char *scheme;
	int port;
	bool tls;
} known_schemes[] = {
	{ "http", 80, false },
	{ "https", 443, true },
	{ "mqtt", 1883, false },
	{ "mqtts", 8883, true },
};

static int fail(char *err, unsigned errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
fail(char *err, unsigned errlen, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return BR_EINVAL;
}

/* true when name (len bytes) is one of the comma-separated schemes */
static bool
scheme_in_list(const char *name, size_t len, const char *schemes)
{
	const char *p = schemes;

	while (*p) {
		size_t n = strcspn(p, ",");
		if (n == len && strncmp(p, name, len) == 0)
			return true;
		p += n;
		if (*p == ',')
			p++;
	}
	return false;
}

/* "http or https", "http, https or mqtt" from "http,https[,mqtt]" */
static void
describe_schemes(const char *schemes, char *dst, size_t cap)
{
	size_t used = 0;
	const char *p = schemes;
	int total = 1, i = 0;

	for (const char *q = schemes; *q; q++)
		total += *q == ',';
	dst[0] = '\0';
	while (*p && used < cap) {
		size_t n = strcspn(p, ",");
		const char *sep = i == 0 ? "" : i == total - 1 ? " or " : ", ";
		int w = snprintf(
		    dst + used, cap - used, "%s%.*s", sep, (int) n, p);
		if (w < 0)
			break;
		used += (size_t) w;
		p += n;
		if (*p == ',')
			p++;
		i++;
	}
}

static int
hexval(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	ch = tolower(ch);
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	return -1;
}

/* Percent-decodes s[0..len) into dst (cap incl. NUL). */
static int
pct_decode(char *dst, size_t cap, const char *s, size_t len)
{
	size_t out = 0;

	for (size_t i = 0; i < len; i++) {
		int ch = (unsigned char) s[i];
		if (ch == '%') {
			int hi = i + 2 < len ? hexval(s[i + 1]) : -1;
			int lo = i + 2 < len ? hexval(s[i + 2]) : -1;
			if (hi < 0 || lo < 0)
				return BR_EINVAL;
			ch = hi * 16 + lo;
			i += 2;
		}
		if (ch == 0 || out + 1 >= cap)
			return ch == 0 ? BR_EINVAL : BR_ETRUNC;
		dst[out++] = (char) ch;
	}
	dst[out] = '\0';
	return BR_OK;
}

static bool
valid_reg_host_char(int ch)
{
	return isalnum(ch) || ch == '.' || ch == '-' || ch == '_';
}

static bool
valid_ipv6_char(int ch)
{
	return isxdigit(ch) || ch == ':' || ch == '.';
}

/* Parses the port digits p[0..len) into *port. The text is not echoed:
 * in "mqtt://bob:hunter2" (host forgotten) the "port" is the password. */
static int
parse_port(const char *p, size_t len, int *port, char *err, unsigned errlen)
{
	char digits[16];
	char *end;
	long v;

	if (len == 0)
		return fail(err, errlen, "missing port number after ':'");
	for (size_t i = 0; i < len; i++) {
		if (!isdigit((unsigned char) p[i]))
			return fail(err, errlen,
			    "port after ':' is not a number (use host:port, "
			    "port 1-65535)");
	}
	if (len >= sizeof digits)
		return fail(err, errlen, "port out of range (use 1-65535)");
	memcpy(digits, p, len);
	digits[len] = '\0';
	errno = 0;
	v = strtol(digits, &end, 10);
	if (errno || *end || v < 1 || v > 65535)
		return fail(err, errlen, "port out of range (use 1-65535)");
	*port = (int) v;
	return BR_OK;
}

/* Parses the authority's host[:port] part h[0..len). */
static int
parse_hostport(
    const char *h, size_t len, struct url *u, char *err, unsigned errlen)
{
	const char *host = h, *port = NULL;
	size_t host_len = len, port_len = 0;
	bool ipv6 = false;

	if (len > 0 && h[0] == '[') {
		const char *close = memchr(h, ']', len);
		if (!close)
			return fail(
			    err, errlen, "missing ']' after IPv6 address");
		host = h + 1;
		host_len = (size_t) (close - host);
		ipv6 = true;
		if (close + 1 < h + len) {
			if (close[1] != ':')
				return fail(err, errlen,
				    "unexpected text after ']' (expected "
				    "':port' or '/')");
			port = close + 2;
			port_len = (size_t) (h + len - port);
		}
	} else {
		const char *colon = memchr(h, ':', len);
		if (colon) {
			if (memchr(colon + 1, ':',
			        (size_t) (h + len - colon - 1)))
				return fail(err, errlen,
				    "IPv6 address must be in brackets, "
				    "e.g. [::1]:8188");
			host_len = (size_t) (colon - h);
			port = colon + 1;
			port_len = (size_t) (h + len - port);
		}
	}
	if (host_len == 0)
		return fail(err, errlen, "missing host");
	if (host_len >= sizeof u->host)
		return fail(
		    err, errlen, "host name too long (%zu bytes)", host_len);
	for (size_t i = 0; i < host_len; i++) {
		int ch = (unsigned char) host[i];
		if (ipv6 ? !valid_ipv6_char(ch) : !valid_reg_host_char(ch))
			return fail(err, errlen,
			    ipv6 ? "invalid character in IPv6 address"
			         : "invalid character in host name");
	}
	if (ipv6 && !memchr(host, ':', host_len))
		return fail(err, errlen, "invalid IPv6 address in brackets");
	memcpy(u->host, host, host_len);
	u->host[host_len] = '\0';
	if (port)
		return parse_port(port, port_len, &u->port, err, errlen);
	return BR_OK;
}

static int
parse_userinfo(
    const char *ui, size_t len, struct url *u, char *err, unsigned errlen)
{
	const char *colon = memchr(ui, ':', len);
	size_t user_len = colon ? (size_t) (colon - ui) : len;
	int rc;

	rc = pct_decode(u->user, sizeof u->user, ui, user_len);
	if (rc == BR_ETRUNC)
		return fail(err, errlen, "user name too long");
	if (rc)
		return fail(err, errlen, "bad %%-escape in user name");
	if (!colon)
		return BR_OK;
	rc = pct_decode(
	    u->pass, sizeof u->pass, colon + 1, len - user_len - 1);
	if (rc == BR_ETRUNC)
		return fail(err, errlen, "password too long");
	if (rc)
		return fail(err, errlen, "bad %%-escape in password");
	return BR_OK;
}

/* Checks and lower-cases the scheme s[0..sep) into u, with the port and TLS
 * its name implies. allowed: the accepted schemes, as messages show them. */
static int
parse_scheme(const char *s, const char *sep, const char *schemes,
    const char *allowed, struct url *u, char *err, unsigned errlen)
{
	size_t scheme_len = (size_t) (sep - s);
	for (size_t i = 0; i < scheme_len; i++) {
		int ch = (unsigned char) s[i];
		if (!isalnum(ch) && ch != '+' && ch != '-' && ch != '.')
			return fail(
			    err, errlen, "malformed scheme (use %s)", allowed);
	}
	/* Only the scheme's own bytes (checked above: no ':' or '@', so no
	 * userinfo) are echoed, never the text after "://". */
	if (scheme_len >= sizeof u->scheme)
		return fail(err, errlen,
		    "unsupported scheme \"%.*s%s\" (use %s)",
		    (int) (scheme_len < 16 ? scheme_len : 16), s,
		    scheme_len > 16 ? "..." : "", allowed);
	for (size_t i = 0; i < scheme_len; i++)
		u->scheme[i] = (char) tolower((unsigned char) s[i]);
	u->scheme[scheme_len] = '\0';
	if (!scheme_in_list(u->scheme, scheme_len, schemes))
		return fail(err, errlen, "unsupported scheme \"%s\" (use %s)",
		    u->scheme, allowed);
	for (size_t i = 0; i < sizeof known_schemes / sizeof known_schemes[0];
	     i++) {
		if (strcmp(known_schemes[i].scheme, u->scheme) == 0) {
			u->port = known_schemes[i].port;
			u->tls = known_schemes[i].tls;
		}
	}
	return BR_OK;
}

/* Refuses, in the text after "://", the bytes no part of it may hold. */
static int
check_rest_chars(const char *rest, char *err, unsigned errlen)
{
	for (const char *p = rest; *p; p++) {
		unsigned char ch = (unsigned char) *p;
		if (ch <= 0x20 || ch == 0x7f)
			return fail(err, errlen,
			    "URL contains a space or control character");
		if (ch == '?' || ch == '#')
			return fail(err, errlen,
			    "a query ('?') or fragment ('#') is not "
			    "supported here (in a user name or password "
			    "write them as %%3F and %%23)");
	}
	return BR_OK;
}

/* Parses the authority rest[0..auth_end): [userinfo@]host[:port]. */
static int
parse_authority(const char *rest, const char *auth_end, struct url *u,
    char *err, unsigned errlen)
{
	/* "mqtt://bob:1883/pw@h" is ambiguous: a '/' in the password, or a
	 * path "/pw@h"? Taking it as a path would put the password's tail
	 * into every log line showing the URL, so refuse it. */
	if (strchr(auth_end, '@'))
		return fail(err, errlen,
		    "'@' after a '/': write a '/' in the user name or "
		    "password as %%2F (and an '@' in the path as %%40)");
	const char *at = NULL;
	for (const char *p = rest; p < auth_end; p++) {
		if (*p == '@')
			at = p;
	}
	if (at) {
		int rc = parse_userinfo(
		    rest, (size_t) (at - rest), u, err, errlen);
		if (rc)
			return rc;
		rest = at + 1;
	}
	return parse_hostport(
	    rest, (size_t) (auth_end - rest), u, err, errlen);
}

/* Keeps the path without its trailing '/'s. */
static int
parse_path(const char *path, struct url *u, char *err, unsigned errlen)
{
	size_t path_len = strlen(path);
	while (path_len > 0 && path[path_len - 1] == '/')
		path_len--;
	if (path_len >= sizeof u->path)
		return fail(
		    err, errlen, "path too long (%zu bytes)", path_len);
	memcpy(u->path, path, path_len);
	u->path[path_len] = '\0';
	return BR_OK;
}

/* Copies everything it keeps into u; s and schemes are only read. */
int
url_parse(const char *s, const char *schemes, struct url *u, char *err,
    unsigned errlen)
{
	char allowed[64];
	int rc;

	memset(u, 0, sizeof *u);
	if (err && errlen)
		err[0] = '\0';
	describe_schemes(schemes, allowed, sizeof allowed);
	if (!s || !*s)
		return fail(err, errlen, "empty URL (use %s)", allowed);
	const char *sep = strstr(s, "://");
	if (!sep || sep == s)
		return fail(err, errlen,
		    "missing scheme, e.g. \"%.*s://host:port\" (use %s)",
		    (int) strcspn(schemes, ","), schemes, allowed);
	rc = parse_scheme(s, sep, schemes, allowed, u, err, errlen);
	if (rc)
		return rc;
	const char *rest = sep + 3;
	rc = check_rest_chars(rest, err, errlen);
	if (rc)
		return rc;
	const char *auth_end = rest + strcspn(rest, "/");
	rc = parse_authority(rest, auth_end, u, err, errlen);
	if (rc)
		return rc;
	return parse_path(auth_end, u, err, errlen);
}

/* snprintf's result n into dst (cap > 0) as the length actually written. */
static int
written(int n, char *dst, unsigned cap)
{
	if (n < 0) {
		dst[0] = '\0';
		return 0;
	}
	return (unsigned) n < cap ? n : (int) cap - 1;
}

/* Writes into dst (caller-owned); never writes user or pass. */
int
url_format_public(const struct url *u, char *dst, unsigned cap)
{
	char authority[URL_AUTHORITY_MAX];

	if (cap == 0)
		return 0;
	url_format_authority(u, authority, sizeof authority);
	return written(
	    snprintf(dst, cap, "%s://%s%s", u->scheme, authority, u->path),
	    dst, cap);
}

/* Writes into dst (caller-owned). */
int
url_format_authority(const struct url *u, char *dst, unsigned cap)
{
	bool brackets = strchr(u->host, ':') != NULL;

	if (cap == 0)
		return 0;
	return written(snprintf(dst, cap, "%s%s%s:%d", brackets ? "[" : "",
	                   u->host, brackets ? "]" : "", u->port),
	    dst, cap);
}

int
url_encode(struct buf *out, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	if (buf_reserve(out, strlen(s) * 3) != 0)
		return BR_ENOMEM;
	for (; *s; s++) {
		unsigned char c = (unsigned char) *s;
		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
		    || (c >= '0' && c <= '9') || c == '-' || c == '_'
		    || c == '.' || c == '~') {
			out->p[out->len++] = (char) c;
		} else {
			out->p[out->len++] = '%';
			out->p[out->len++] = hex[c >> 4];
			out->p[out->len++] = hex[c & 15];
		}
	}
	out->p[out->len] = '\0';
	return 0;
}
