/* url_parse / url_format_public: schemes, default ports, IPv6 literals,
 * path prefixes, credentials and every rejection message. */
#include "test.h"

#include <stdbool.h>

#include "buf.h"
#include "err.h"
#include "url.h"

static char err[256];

static int
parse(const char *s, const char *schemes, struct url *u)
{
	memset(err, 'X', sizeof err);
	err[sizeof err - 1] = '\0';
	return url_parse(s, schemes, u, err, sizeof err);
}

static const char *
public_form(const struct url *u)
{
	static char buf[1024];
	url_format_public(u, buf, sizeof buf);
	return buf;
}

static const char *
authority(const struct url *u)
{
	static char buf[URL_AUTHORITY_MAX];
	url_format_authority(u, buf, sizeof buf);
	return buf;
}

static void
test_default_ports(void)
{
	struct url u;

	CHECK_INT(parse("http://host", "http,https", &u), BR_OK);
	CHECK_STR(u.scheme, "http");
	CHECK_STR(u.host, "host");
	CHECK_INT(u.port, 80);
	CHECK(!u.tls);
	CHECK_STR(u.path, "");

	CHECK_INT(parse("https://host", "http,https", &u), BR_OK);
	CHECK_INT(u.port, 443);
	CHECK(u.tls);

	CHECK_INT(parse("mqtt://broker", "mqtt,mqtts", &u), BR_OK);
	CHECK_INT(u.port, 1883);
	CHECK(!u.tls);

	CHECK_INT(parse("mqtts://broker", "mqtt,mqtts", &u), BR_OK);
	CHECK_INT(u.port, 8883);
	CHECK(u.tls);
	CHECK_STR(public_form(&u), "mqtts://broker:8883");
	CHECK_STR(authority(&u), "broker:8883");
}

static void
test_explicit_port_and_case(void)
{
	struct url u;

	CHECK_INT(parse("HTTP://127.0.0.1:8188", "http,https", &u), BR_OK);
	CHECK_STR(u.scheme, "http");
	CHECK_STR(u.host, "127.0.0.1");
	CHECK_INT(u.port, 8188);
	CHECK_INT(parse("mqtt://b:65535", "mqtt,mqtts", &u), BR_OK);
	CHECK_INT(u.port, 65535);
}

static void
test_path_prefix(void)
{
	struct url u;

	CHECK_INT(parse("http://h:8188/comfy/", "http,https", &u), BR_OK);
	CHECK_STR(u.path, "/comfy");
	CHECK_STR(public_form(&u), "http://h:8188/comfy");

	CHECK_INT(parse("http://h/", "http,https", &u), BR_OK);
	CHECK_STR(u.path, "");

	CHECK_INT(parse("https://h/a/b//", "http,https", &u), BR_OK);
	CHECK_STR(u.path, "/a/b");
	CHECK_STR(public_form(&u), "https://h:443/a/b");
}

static void
test_ipv6(void)
{
	struct url u;

	CHECK_INT(parse("http://[::1]:8188/x", "http,https", &u), BR_OK);
	CHECK_STR(u.host, "::1");
	CHECK_INT(u.port, 8188);
	CHECK_STR(u.path, "/x");
	CHECK_STR(public_form(&u), "http://[::1]:8188/x");
	CHECK_STR(authority(&u), "[::1]:8188");

	CHECK_INT(parse("mqtt://[fe80::1:2]", "mqtt,mqtts", &u), BR_OK);
	CHECK_STR(u.host, "fe80::1:2");
	CHECK_INT(u.port, 1883);
	CHECK_STR(authority(&u), "[fe80::1:2]:1883");

	CHECK_INT(parse("http://::1:80", "http,https", &u), BR_EINVAL);
	CHECK(strstr(err, "brackets") != NULL);
	CHECK_INT(parse("http://[::1", "http,https", &u), BR_EINVAL);
	CHECK(strstr(err, "']'") != NULL);
	CHECK_INT(parse("http://[::1]x", "http,https", &u), BR_EINVAL);
	CHECK_INT(parse("http://[host]", "http,https", &u), BR_EINVAL);
	CHECK_INT(parse("http://[]:80", "http,https", &u), BR_EINVAL);
	CHECK(strstr(err, "missing host") != NULL);
}

static void
test_credentials(void)
{
	struct url u;

	CHECK_INT(
	    parse("mqtt://alice:p%40ss%3Aw@broker:1884", "mqtt,mqtts", &u),
	    BR_OK);
	CHECK_STR(u.user, "alice");
	CHECK_STR(u.pass, "p@ss:w");
	CHECK_STR(u.host, "broker");
	CHECK_INT(u.port, 1884);
	CHECK_STR(public_form(&u), "mqtt://broker:1884");

	CHECK_INT(parse("mqtt://bob@broker", "mqtt,mqtts", &u), BR_OK);
	CHECK_STR(u.user, "bob");
	CHECK_STR(u.pass, "");

	CHECK_INT(parse("mqtt://a:b%zz@broker", "mqtt,mqtts", &u), BR_EINVAL);
	CHECK(strstr(err, "password") != NULL);
	CHECK_INT(parse("mqtt://a:b%00@broker", "mqtt,mqtts", &u), BR_EINVAL);
	CHECK_INT(parse("mqtt://a:b%4@broker", "mqtt,mqtts", &u), BR_EINVAL);
}

static void
test_errors_name_the_problem(void)
{
	struct url u;

	CHECK_INT(parse("ftp://h", "http,https", &u), BR_EINVAL);
	CHECK_STR(err, "unsupported scheme \"ftp\" (use http or https)");
	CHECK_INT(parse("mqtt://h", "http,https", &u), BR_EINVAL);
	CHECK(strstr(err, "\"mqtt\"") != NULL);
	CHECK_INT(parse("http://h:99999", "http,https", &u), BR_EINVAL);
	CHECK_STR(err, "port out of range (use 1-65535)");
	CHECK_INT(parse("http://h:0", "http,https", &u), BR_EINVAL);
	CHECK(strstr(err, "out of range") != NULL);
	CHECK_INT(parse("http://h:123456789012345678901", "http,https", &u),
	    BR_EINVAL);
	CHECK(strstr(err, "out of range") != NULL);
	CHECK_INT(parse("http://h:8x", "http,https", &u), BR_EINVAL);
	CHECK(strstr(err, "not a number") != NULL);
	CHECK_INT(parse("mqtt+tls://h", "mqtt,mqtts", &u), BR_EINVAL);
	CHECK_STR(err, "unsupported scheme \"mqtt+tls\" (use mqtt or mqtts)");
	CHECK_INT(parse("abcdefghijklmnopq://h", "mqtt,mqtts", &u), BR_EINVAL);
	CHECK_STR(err,
	    "unsupported scheme \"abcdefghijklmnop...\" (use mqtt or mqtts)");
	CHECK_INT(parse("http://h/a@b", "http,https", &u), BR_EINVAL);
	CHECK(strstr(err, "%2F") != NULL);
	CHECK(strstr(err, "%40") != NULL);
	CHECK_INT(parse("http://h:", "http,https", &u), BR_EINVAL);
	CHECK(strstr(err, "missing port") != NULL);
	CHECK_INT(parse("http://", "http,https", &u), BR_EINVAL);
	CHECK_STR(err, "missing host");
	CHECK_INT(parse("http://:8188/x", "http,https", &u), BR_EINVAL);
	CHECK_STR(err, "missing host");
	CHECK_INT(parse("127.0.0.1:8188", "http,https", &u), BR_EINVAL);
	CHECK(strstr(err, "missing scheme") != NULL);
	CHECK_INT(parse("", "http,https", &u), BR_EINVAL);
	CHECK_INT(parse("http://h/x?a=1", "http,https", &u), BR_EINVAL);
	CHECK(strstr(err, "query") != NULL);
	CHECK_INT(parse("http://h/#frag", "http,https", &u), BR_EINVAL);
	CHECK_INT(parse("http://h o/", "http,https", &u), BR_EINVAL);
	CHECK(strstr(err, "space") != NULL);
	CHECK_INT(parse("http://h!/", "http,https", &u), BR_EINVAL);
	CHECK(strstr(err, "invalid character") != NULL);
	CHECK(strchr(err, '\n') == NULL);
}

static void
test_three_schemes_listed(void)
{
	struct url u;

	CHECK_INT(parse("ws://h", "http,https,mqtt", &u), BR_EINVAL);
	CHECK_STR(err, "unsupported scheme \"ws\" (use http, https or mqtt)");
}

static void
test_long_parts(void)
{
	struct url u;
	char s[1400];

	memset(s, 0, sizeof s);
	strcpy(s, "http://");
	memset(s + 7, 'a', 300);
	CHECK_INT(parse(s, "http,https", &u), BR_EINVAL);
	CHECK(strstr(err, "too long") != NULL);

	strcpy(s, "http://h/");
	memset(s + 9, 'p', 600);
	CHECK_INT(parse(s, "http,https", &u), BR_EINVAL);
	CHECK(strstr(err, "path too long") != NULL);
}

/* true when any 3-byte window of secret occurs in text */
static bool
leaks(const char *text, const char *secret)
{
	size_t n = strlen(secret);

	for (size_t i = 0; i + 3 <= n; i++) {
		char window[4]
		    = { secret[i], secret[i + 1], secret[i + 2], 0 };
		if (strstr(text, window))
			return true;
	}
	return false;
}

/* Every malformed URL holding a password: not one 3-byte piece of it may
 * reach err. "%s" is the password; some templates put it where the
 * parser cannot know it is one (no '@', or a '/' before the '@'). Without
 * any '@', "mqtt://bob:1883/Qz9Wx" is a valid URL and may parse; with an
 * '@' the input must either parse the password into u.pass or fail. */
static void
test_secret_never_in_error_systematic(void)
{
	static const char *const secrets[] = {
		"Qz9-Wx7Vk", /* plain */
		"Qz9/Wx7Vk", /* a '/' ends the apparent authority */
		"4242424", /* digits: looks like an out-of-range port */
		"1883/Qz9Wx", /* a valid port, then a '/' */
	};
	static const char *const templates[] = {
		"mqtt://bob:%s@h:99999",
		"mqtt://bob:%s@h:8x",
		"mqtt://bob:%s@h:",
		"mqtt://bob:%s@h:123456789012345678901",
		"mqtt://bob:%s",
		"mqtt://bob:%s/",
		"mqtt://bob:%s@",
		"mqtt://bob:%s/x@h",
		"mqtt://bob:%s@h/x@y",
		"mqtt+tls://a:%s@h",
		"mqttxtlsverylongscheme://a:%s@h",
		"ftp://a:%s@h",
		"http://a:%s@h",
		"mqtt://a:%s@h/x?y",
		"mqtt://a:%s@h#f",
		"mqtt://a:%s@h o",
		"mqtt://a:%s@h\x01",
		"mqtt://a:%s@h!",
		"mqtt://a:%s@[::1",
		"mqtt://a:%s@[::1]x",
		"mqtt://a:%s@[::1]:x",
		"mqtt://a:%s@[h]",
		"mqtt://a:%s@::1",
		"mqtt://a:%s%%zz@h",
		"mqtt://a:%s%%00@h",
		"mqtt://%s@h:0",
		"mqtt://%s:x@h:0",
		"mqtt://a:%s@b:c@h:x",
		"mqtt://a:%s@h:1/p@q",
		"mqtt://a:%s@:1883",
		"mqtt:/a:%s@h",
		"mqtt:a:%s@h",
		"a:%s@h",
		"://a:%s@h",
		"m q://a:%s@h",
	};
	struct url u;
	char s[256];
	size_t rejected = 0;

	for (size_t i = 0; i < sizeof secrets / sizeof secrets[0]; i++) {
		for (size_t t = 0; t < sizeof templates / sizeof templates[0];
		     t++) {
			snprintf(s, sizeof s, templates[t], secrets[i]);
			test_current = s;
			if (parse(s, "mqtt,mqtts", &u) == BR_OK) {
				CHECK(strchr(s, '@') == NULL);
				continue;
			}
			rejected++;
			CHECK(err[0] != '\0');
			if (leaks(err, secrets[i]))
				TEST_FAIL("err \"%s\" shows part of \"%s\"",
				    err, secrets[i]);
		}
	}
	/* all but the two '@'-less templates for "1883/Qz9Wx" */
	CHECK_INT(rejected,
	    sizeof secrets / sizeof secrets[0]
	            * (sizeof templates / sizeof templates[0])
	        - 2);
	test_current = "test_secret_never_in_error_systematic";
}

static void
test_secret_never_in_error(void)
{
	struct url u;
	const char *secret = "Zebra-S3cr3t-77";
	char s[128];

	snprintf(s, sizeof s, "mqtt://user:%s@h:99999", secret);
	CHECK_INT(parse(s, "mqtt,mqtts", &u), BR_EINVAL);
	CHECK(strstr(err, secret) == NULL);
	snprintf(s, sizeof s, "mqtt://user:%s@h:1/x?y", secret);
	CHECK_INT(parse(s, "mqtt,mqtts", &u), BR_EINVAL);
	CHECK(strstr(err, secret) == NULL);
	snprintf(s, sizeof s, "mqtt://user:%s@h", secret);
	CHECK_INT(parse(s, "mqtt,mqtts", &u), BR_OK);
	CHECK(strstr(public_form(&u), secret) == NULL);

	/* the auditor's two cases */
	CHECK_INT(
	    parse("mqtt://bob:pa55/word@h", "mqtt,mqtts", &u), BR_EINVAL);
	CHECK(strstr(err, "pa55") == NULL);
	CHECK(strstr(err, "%2F") != NULL);
	CHECK_INT(
	    parse("http://bob:pa55/word@h", "http,https", &u), BR_EINVAL);
	CHECK(strstr(err, "pa55") == NULL);
	CHECK_INT(
	    parse("mqtt+tls://a:hunter2@h", "mqtt,mqtts", &u), BR_EINVAL);
	CHECK(strstr(err, "hun") == NULL);
	CHECK(strstr(err, "\"mqtt+tls\"") != NULL);

	/* a '/' in the password written as %2F parses, and the public form
	 * shows none of it */
	CHECK_INT(parse("mqtt://bob:1883%2Fword@h", "mqtt,mqtts", &u), BR_OK);
	CHECK_STR(u.pass, "1883/word");
	CHECK_STR(public_form(&u), "mqtt://h:1883");
}

static void
test_small_buffers(void)
{
	struct url u;
	char tiny[8];

	memset(tiny, 'Z', sizeof tiny);
	CHECK_INT(url_parse("ftp://h", "http,https", &u, tiny, sizeof tiny),
	    BR_EINVAL);
	CHECK_INT(strlen(tiny), sizeof tiny - 1);

	CHECK_INT(url_parse("http://example.com:8188/abc", "http,https", &u,
	              NULL, 0),
	    BR_OK);
	memset(tiny, 'Z', sizeof tiny);
	CHECK_INT(url_format_public(&u, tiny, sizeof tiny), 7);
	CHECK_STR(tiny, "http://");
	memset(tiny, 'Z', sizeof tiny);
	CHECK_INT(url_format_authority(&u, tiny, sizeof tiny), 7);
	CHECK_STR(tiny, "example");
	CHECK_INT(url_format_authority(&u, tiny, 0), 0);
	CHECK_INT(tiny[0], 'e');
}

static void
test_encode(void)
{
	struct buf b = { 0 };

	CHECK_INT(url_encode(&b, "a-Z_0.~"), 0);
	CHECK_STR(b.p, "a-Z_0.~");
	buf_reset(&b);
	CHECK_INT(url_encode(&b, "a b/c?d=\xc3\xa9"), 0);
	CHECK_STR(b.p, "a%20b%2Fc%3Fd%3D%C3%A9");
	CHECK_INT(url_encode(&b, ""), 0);
	CHECK_INT(b.len, strlen("a%20b%2Fc%3Fd%3D%C3%A9"));
	buf_free(&b);
}

int
main(void)
{
	RUN(test_default_ports);
	RUN(test_explicit_port_and_case);
	RUN(test_path_prefix);
	RUN(test_ipv6);
	RUN(test_credentials);
	RUN(test_errors_name_the_problem);
	RUN(test_three_schemes_listed);
	RUN(test_long_parts);
	RUN(test_secret_never_in_error);
	RUN(test_secret_never_in_error_systematic);
	RUN(test_small_buffers);
	RUN(test_encode);
	TEST_MAIN_END();
}
