/* wsframe: the server-frame parser (every rule, every split of each valid
 * stream, pieces borrowed from the input), the masked builder and the
 * upgrade handshake. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "wsframe.h"

/* ---- a recorder: deliveries as one canonical text ---- */

struct rec {
	char log[1 << 18];
	size_t loglen;
	uint8_t *msg; /* the open message */
	size_t msglen, msgcap;
	bool open, binary;
	const uint8_t *chunk; /* the bytes being fed: pieces must lie inside */
	size_t chunklen;
	int bad; /* contract violations seen */
};

static void
rec_add(struct rec *r, const char *s, size_t n)
{
	if (n > sizeof(r->log) - r->loglen)
		n = sizeof(r->log) - r->loglen;
	if (n == 0)
		return;
	memcpy(r->log + r->loglen, s, n);
	r->loglen += n;
}

static void
rec_data(void *ud, const void *p, size_t n, bool first, bool final, bool bin)
{
	struct rec *r = ud;
	const uint8_t *b = p;
	char line[64];

	if (first == r->open)
		r->bad++; /* first exactly when no message is open */
	if (n > 0 && (b < r->chunk || b + n > r->chunk + r->chunklen))
		r->bad++; /* not borrowed from the fed bytes */
	if (first)
		r->binary = bin;
	else if (bin != r->binary)
		r->bad++;
	r->open = !final;
	if (r->msglen + n > r->msgcap) {
		r->msgcap = (r->msglen + n) * 2;
		r->msg = realloc(r->msg, r->msgcap);
	}
	if (n > 0)
		memcpy(r->msg + r->msglen, p, n);
	r->msglen += n;
	if (!final)
		return;
	snprintf(line, sizeof line, "M%c%zu:", bin ? 'b' : 't', r->msglen);
	rec_add(r, line, strlen(line));
	rec_add(r, (const char *) r->msg, r->msglen > 64 ? 64 : r->msglen);
	rec_add(r, ";", 1);
	r->msglen = 0;
}

static void
rec_ctl(void *ud, int op, const uint8_t *p, size_t n)
{
	struct rec *r = ud;
	char line[32];

	snprintf(line, sizeof line, "C%d:%zu:", op, n);
	rec_add(r, line, strlen(line));
	rec_add(r, (const char *) p, n);
	rec_add(r, ";", 1);
}

/* Feeds s in pieces of the given sizes (0 ends the list; the rest goes
 * last); returns the recorder's log as a new string, with "E:<why>" when
 * the parser failed. */
static char *
run(const uint8_t *s, size_t n, const size_t *cuts)
{
	static struct rec r;
	struct wsf_parser p;
	struct wsf_cb cb = { rec_data, rec_ctl, &r };
	size_t off = 0;
	int rc = 0;
	char *out;

	free(r.msg);
	memset(&r, 0, sizeof r);
	wsf_parser_init(&p);
	while (off < n && rc == 0) {
		size_t k = cuts != NULL && *cuts ? *cuts++ : n - off;
		if (k > n - off)
			k = n - off;
		/* a private copy: pieces pointing elsewhere fail the check */
		uint8_t *piece = malloc(k);
		memcpy(piece, s + off, k);
		r.chunk = piece;
		r.chunklen = k;
		rc = wsf_feed(&p, piece, k, &cb);
		free(piece);
		off += k;
	}
	if (rc != 0)
		rec_add(&r, "E:", 2), rec_add(&r, p.err, strlen(p.err));
	if (r.bad)
		rec_add(&r, "!BAD", 4);
	out = malloc(r.loglen + 1);
	memcpy(out, r.log, r.loglen);
	out[r.loglen] = '\0';
	return out;
}

/* The stream whole, split in two at every boundary, and byte by byte:
 * all give the same log, which must equal want. */
static void
check_splits(const uint8_t *s, size_t n, const char *want)
{
	char *whole = run(s, n, NULL);
	size_t ones[1 << 12];
	int bad = 0;

	CHECK_STR(whole, want);
	for (size_t k = 1; k < n && bad < 3; k++) {
		size_t cut[2] = { k, 0 };
		char *got = run(s, n, cut);
		if (strcmp(got, whole) != 0) {
			TEST_FAIL("split at %zu: %s", k, got);
			bad++;
		}
		free(got);
	}
	if (n < sizeof ones / sizeof ones[0]) {
		for (size_t i = 0; i < n; i++)
			ones[i] = 1;
		ones[n] = 0;
		char *got = run(s, n, ones);
		CHECK_STR(got, whole);
		free(got);
	}
	free(whole);
}

/* ---- frames written by hand ---- */

struct stream {
	uint8_t b[1 << 17];
	size_t n;
};

static void
frame(struct stream *s, unsigned b0, const void *pl, size_t n)
{
	s->b[s->n++] = (uint8_t) b0;
	if (n < 126) {
		s->b[s->n++] = (uint8_t) n;
	} else if (n < 65536) {
		s->b[s->n++] = 126;
		s->b[s->n++] = (uint8_t) (n >> 8);
		s->b[s->n++] = (uint8_t) n;
	} else {
		s->b[s->n++] = 127;
		for (int i = 0; i < 8; i++)
			s->b[s->n++]
			    = (uint8_t) ((uint64_t) n >> (56 - 8 * i));
	}
	memcpy(s->b + s->n, pl, n);
	s->n += n;
}

static struct stream S;

static void
test_simple_messages(void)
{
	S.n = 0;
	frame(&S, 0x81, "hello", 5);
	frame(&S, 0x82, "\x01\x02", 2);
	frame(&S, 0x81, "", 0);
	check_splits(S.b, S.n, "Mt5:hello;Mb2:\x01\x02;Mt0:;");
}

static void
test_fragments_with_controls(void)
{
	S.n = 0;
	frame(&S, 0x01, "abc", 3);
	frame(&S, 0x89, "pi", 2); /* ping inside the message */
	frame(&S, 0x00, "", 0);
	frame(&S, 0x00, "def", 3);
	frame(&S, 0x8A, "", 0); /* empty pong */
	frame(&S, 0x80, "g", 1);
	frame(&S, 0x02, "", 0); /* binary: empty start, data at the end */
	frame(&S, 0x80, "xy", 2);
	frame(&S, 0x01, "q", 1); /* text ending in an empty final frame */
	frame(&S, 0x80, "", 0);
	frame(&S, 0x88, "\x03\xe8zz", 4);
	check_splits(S.b, S.n,
	    "C9:2:pi;C10:0:;Mt7:abcdefg;Mb2:xy;Mt1:q;C8:4:\x03\xe8zz;");
}

static void
test_lengths(void)
{
	static uint8_t big[65536];
	static const size_t sizes[] = { 0, 125, 126, 65535, 65536 };

	for (size_t i = 0; i < sizeof big; i++)
		big[i] = (uint8_t) ('a' + i % 26);
	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		char want[128];
		S.n = 0;
		frame(&S, 0x81, big, sizes[i]);
		/* header bytes: 2, 4 or 10 */
		CHECK_INT(S.n - sizes[i],
		    sizes[i] < 126         ? 2
		        : sizes[i] < 65536 ? 4
		                           : 10);
		snprintf(want, sizeof want, "Mt%zu:%.*s;", sizes[i],
		    (int) (sizes[i] > 64 ? 64 : sizes[i]), (const char *) big);
		char *got = run(S.b, S.n, NULL);
		CHECK_STR(got, want);
		free(got);
		if (sizes[i] <= 126) /* small ones: every split too */
			check_splits(S.b, S.n, want);
	}
}

static void
test_huge_length_header(void)
{
	/* 2^32 + 5 bytes announced: the parser only counts them down */
	uint8_t h[14] = { 0x82, 127, 0, 0, 0, 1, 0, 0, 0, 5, 'a', 'b', 'c' };
	struct wsf_parser p;
	struct rec *r = calloc(1, sizeof *r);
	struct wsf_cb cb = { rec_data, rec_ctl, r };

	wsf_parser_init(&p);
	r->chunk = h;
	r->chunklen = sizeof h;
	CHECK_INT(wsf_feed(&p, h, 13, &cb), 0);
	CHECK(p.in_payload);
	CHECK(p.remain == (1ULL << 32) + 5 - 3);
	CHECK(r->open); /* a first piece, not final */
	CHECK_INT(r->msglen, 3);
	CHECK_INT(r->bad, 0);
	free(r->msg);
	free(r);

	/* the top bit set: refused */
	uint8_t t[10] = { 0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1 };
	char *got = run(t, sizeof t, NULL);
	CHECK_STR(got, "E:64-bit length with the top bit set");
	free(got);
}

/* Each bad stream fails with the reason whole and at every split. */
static void
check_error(
    unsigned b0, unsigned b1, const char *pre, size_t pre_n, const char *why)
{
	char want[160];

	S.n = 0;
	memcpy(S.b, pre, pre_n);
	S.n = pre_n;
	S.b[S.n++] = (uint8_t) b0;
	S.b[S.n++] = (uint8_t) b1;
	memset(S.b + S.n, 'x', 130);
	S.n += 130;
	/* a log given whole starts with what was delivered first */
	snprintf(want, sizeof want, "%s%s", why[0] == 'M' ? "" : "E:", why);
	check_splits(S.b, S.n, want);
}

static void
test_protocol_errors(void)
{
	check_error(0x81, 0x81, "", 0, "masked frame from the server");
	check_error(
	    0xC1, 0x01, "", 0, "RSV bits set (no extension was negotiated)");
	check_error(
	    0x91, 0x01, "", 0, "RSV bits set (no extension was negotiated)");
	check_error(
	    0xA1, 0x01, "", 0, "RSV bits set (no extension was negotiated)");
	check_error(0x83, 0x01, "", 0, "unknown data opcode");
	check_error(0x8B, 0x01, "", 0, "unknown control opcode");
	check_error(0x80, 0x01, "", 0, "continuation frame without a message");
	check_error(0x81, 0x01, "\x01\x01y", 3,
	    "new data frame inside a fragmented message");
	check_error(0x89, 126, "", 0, "control frame longer than 125 bytes");
	check_error(0x09, 0x01, "", 0, "fragmented control frame");
	check_error(0x88, 0x01, "", 0, "close frame with a 1-byte payload");
	/* the payload "xx" is code 30840 */
	check_error(0x88, 0x02, "", 0, "close code not allowed on the wire");
	check_error(0x88, 0x02, "\x88\x02\x03\xed", 4,
	    "close code not allowed on the wire"); /* 1005 */
	/* what came before the error was delivered */
	check_error(0x81, 0x81, "\x81\x02ok", 4,
	    "Mt2:ok;E:masked frame from the server");
}

static void
test_error_sticks(void)
{
	struct wsf_parser p;
	struct wsf_cb cb = { NULL, NULL, NULL };
	uint8_t bad[2] = { 0x81, 0x80 }, good[3] = { 0x81, 1, 'a' };

	wsf_parser_init(&p);
	CHECK_INT(wsf_feed(&p, bad, 2, &cb), -1);
	CHECK_INT(wsf_feed(&p, good, 3, &cb), -1);
	CHECK(p.err != NULL);
}

/* Unmasks a client frame as a server would; returns the payload length. */
static size_t
unmask(const uint8_t *f, size_t n, int *op, uint8_t *out)
{
	size_t h = 2, len = f[1] & 0x7f;

	CHECK(f[0] & 0x80);
	CHECK(f[1] & 0x80); /* client frames are always masked */
	*op = f[0] & 0x0f;
	if (len == 126) {
		len = (size_t) f[2] << 8 | f[3];
		h = 4;
	} else if (len == 127) {
		len = 0;
		for (int i = 2; i < 10; i++)
			len = len << 8 | f[i];
		h = 10;
	}
	CHECK_INT(h + 4 + len, n);
	for (size_t i = 0; i < len; i++)
		out[i] = f[h + 4 + i] ^ f[h + (i & 3)];
	return len;
}

static void
test_builder(void)
{
	static uint8_t pl[70000], f[70100], back[70000];
	static const size_t sizes[] = { 0, 5, 125, 126, 65535, 65536, 70000 };
	uint8_t mask[4] = { 0x12, 0x34, 0x56, 0x78 };
	int op;

	for (size_t i = 0; i < sizeof pl; i++)
		pl[i] = (uint8_t) (i * 31);
	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		size_t n
		    = wsf_build(f, sizeof f, WSF_TEXT, pl, sizes[i], mask);
		CHECK(n > sizes[i]);
		CHECK_INT(unmask(f, n, &op, back), sizes[i]);
		CHECK_INT(op, WSF_TEXT);
		CHECK(memcmp(back, pl, sizes[i]) == 0);
		/* the masked bytes differ from the payload */
		if (sizes[i] >= 4)
			CHECK(memcmp(f + n - sizes[i], pl, sizes[i]) != 0);
	}
	size_t n = wsf_build(f, sizeof f, WSF_PING, "abc", 3, mask);
	CHECK_INT(unmask(f, n, &op, back), 3);
	CHECK_INT(op, WSF_PING);
	CHECK_MEM(back, 3, "abc", 3);
	n = wsf_build(f, sizeof f, WSF_PONG, "abc", 3, mask);
	CHECK_INT(unmask(f, n, &op, back), 3);
	CHECK_INT(op, WSF_PONG);
	n = wsf_build_close(f, sizeof f, 1002, mask);
	CHECK_INT(unmask(f, n, &op, back), 2);
	CHECK_INT(op, WSF_CLOSE);
	CHECK_INT(back[0] << 8 | back[1], 1002);
	/* too small a buffer, too long a control payload */
	CHECK_INT(wsf_build(f, 10, WSF_TEXT, pl, 1, mask), 0);
	CHECK_INT(wsf_build(f, sizeof f, WSF_PING, pl, 126, mask), 0);
}

/* ---- handshake ---- */

static void
test_request(void)
{
	char out[1024];
	const char *hdrs[] = { "X-Test: 1", "Authorization: Bearer t" };
	size_t n = wsh_request(out, sizeof out, "h:8188", "/ws?clientId=abc",
	    "dGhlIHNhbXBsZSBub25jZQ==", hdrs, 2);
	const char *want = "GET /ws?clientId=abc HTTP/1.1\r\n"
	                   "Pragma: no-cache\r\n"
	                   "Cache-Control: no-cache\r\n"
	                   "Host: h:8188\r\n"
	                   "Upgrade: websocket\r\n"
	                   "Connection: Upgrade\r\n"
	                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	                   "Sec-WebSocket-Version: 13\r\n"
	                   "X-Test: 1\r\n"
	                   "Authorization: Bearer t\r\n"
	                   "\r\n";

	CHECK_MEM(out, n, want, strlen(want));
	CHECK(strstr(out, "Origin") == NULL);
	CHECK(strstr(out, "Extensions") == NULL);
	CHECK_INT(wsh_request(out, 100, "h", "/", "k", hdrs, 2), 0);
	CHECK_INT(wsh_request(out, n, "h:8188", "/ws?clientId=abc",
	              "dGhlIHNhbXBsZSBub25jZQ==", hdrs, 2),
	    0);
}

/* RFC 6455 1.3's example key and accept */
#define ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

static const char good_head[] = "HTTP/1.1 101 Switching Protocols\r\n"
                                "Upgrade: WebSocket\r\n"
                                "Connection: keep-alive, UPGRADE\r\n"
                                "Sec-WebSocket-Accept: " ACCEPT "\r\n"
                                "Date: x\r\n"
                                "\r\n";

/* Feeds head (+ frames) in pieces of step bytes; returns the result, the
 * error text in err and the bytes after the head in *tail. */
static int
feed_head(const char *s, size_t n, size_t step, char *err, size_t *tail)
{
	static struct wsh_resp r;
	size_t off = 0, used = 0;
	int rc = WSH_MORE;

	wsh_resp_init(&r);
	while (off < n && rc == WSH_MORE) {
		size_t k = n - off < step ? n - off : step;
		rc = wsh_resp_feed(
		    &r, (const uint8_t *) s + off, k, ACCEPT, &used);
		if (rc == WSH_MORE)
			CHECK_INT(used, k);
		off += used;
	}
	snprintf(err, WSH_ERROR_MAX, "%s", r.error);
	*tail = n - off;
	return rc;
}

static void
check_head(const char *s, int want, const char *want_err)
{
	char err[WSH_ERROR_MAX];
	size_t tail, n = strlen(s);

	for (size_t step = 1; step <= n; step++) {
		int rc = feed_head(s, n, step, err, &tail);
		if (rc != want || (want_err && strcmp(err, want_err) != 0)) {
			TEST_FAIL("step %zu: rc %d err '%s'", step, rc, err);
			return;
		}
		if (want == WSH_DONE)
			CHECK_INT(tail, 0);
	}
}

static void
test_response(void)
{
	char buf[WSH_HEAD_MAX + 64], err[WSH_ERROR_MAX];
	size_t tail;

	check_head(good_head, WSH_DONE, "");
	check_head(
	    "HTTP/1.1 101 Switching Protocols\r\n"
	    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
	    "Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n",
	    WSH_ERROR,
	    "Sec-WebSocket-Accept 'AAAAAAAAAAAAAAAAAAAAAAAAAAA=' does not "
	    "match the key");
	check_head("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
	    WSH_ERROR, "upgrade refused: HTTP 403 Forbidden");
	check_head("HTTP/1.1 101 Switching Protocols\r\n"
	           "Connection: Upgrade\r\n"
	           "Sec-WebSocket-Accept: " ACCEPT "\r\n\r\n",
	    WSH_ERROR, "no 'Upgrade: websocket' in the response");
	check_head("HTTP/1.1 101 Switching Protocols\r\n"
	           "Upgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
	    WSH_ERROR, "Upgrade header is 'h2c'");
	check_head("HTTP/1.1 101 Switching Protocols\r\n"
	           "Upgrade: websocket\r\n"
	           "Sec-WebSocket-Accept: " ACCEPT "\r\n\r\n",
	    WSH_ERROR, "no 'Connection: upgrade' in the response");
	check_head("HTTP/1.1 101 Switching Protocols\r\n"
	           "Upgrade: websocket\r\n"
	           "Connection: keep-alive\r\n"
	           "Sec-WebSocket-Accept: " ACCEPT "\r\n\r\n",
	    WSH_ERROR, "no 'Connection: upgrade' in the response");
	check_head("HTTP/1.1 101 Switching Protocols\r\n"
	           "Upgrade: websocket\r\n"
	           "Connection: keep-alive\r\nConnection: Upgrade\r\n"
	           "Sec-WebSocket-Accept: " ACCEPT "\r\n\r\n",
	    WSH_DONE, "");
	check_head("HTTP/1.1 101 Switching Protocols\r\n"
	           "Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
	    WSH_ERROR, "no Sec-WebSocket-Accept in the response");
	check_head("HTTP/1.1 101 Switching Protocols\r\n"
	           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
	           "Sec-WebSocket-Extensions: permessage-deflate\r\n"
	           "Sec-WebSocket-Accept: " ACCEPT "\r\n\r\n",
	    WSH_ERROR,
	    "the server chose extension 'permessage-deflate', none was "
	    "offered");
	check_head(
	    "SSH-2.0-OpenSSH\r\n\r\n", WSH_ERROR, "not an HTTP response");

	/* frames right behind the head in the same read */
	size_t hn = strlen(good_head);
	memcpy(buf, good_head, hn);
	memcpy(buf + hn, "\x81\x02hi", 4);
	for (size_t step = hn - 3; step <= hn + 4; step++) {
		CHECK_INT(feed_head(buf, hn + 4, step, err, &tail), WSH_DONE);
		CHECK_INT(tail, 4);
	}

	/* a head that never ends */
	memcpy(buf, "HTTP/1.1 101 OK\r\n", 17);
	memset(buf + 17, 'a', sizeof buf - 17);
	CHECK_INT(feed_head(buf, sizeof buf, 4096, err, &tail), WSH_ERROR);
	CHECK_STR(err, "response head over 16384 bytes");
	/* one that ends exactly at the limit is fine */
	size_t pad = WSH_HEAD_MAX - hn;
	memcpy(buf, good_head, hn - 2);
	memcpy(buf + hn - 2, "X: ", 3);
	memset(buf + hn + 1, 'b', pad - 5);
	memcpy(buf + WSH_HEAD_MAX - 4, "\r\n\r\n", 4);
	CHECK_INT(feed_head(buf, WSH_HEAD_MAX, 1000, err, &tail), WSH_DONE);
}

int
main(void)
{
	RUN(test_simple_messages);
	RUN(test_fragments_with_controls);
	RUN(test_lengths);
	RUN(test_huge_length_header);
	RUN(test_protocol_errors);
	RUN(test_error_sticks);
	RUN(test_builder);
	RUN(test_request);
	RUN(test_response);
	TEST_MAIN_END();
}
