/* RFC 6455 frames for the client side (bridge/README.md#rfc6455). The
 * parser walks headers byte by byte (at most 14 bytes a frame) and hands
 * payload out in spans of the caller's buffer: a data byte is never copied
 * or looked at. Control payloads (at most 125 bytes) are collected, since
 * they may be split across reads, and reported whole. */
#include "wsframe.h"

#include <string.h>

static const uint8_t empty_span[1];

void
wsf_parser_init(struct wsf_parser *p)
{
	memset(p, 0, sizeof(*p));
	p->hneed = 2;
}

static int
fail(struct wsf_parser *p, const char *why)
{
	p->err = why;
	return -1;
}

/* What a close frame may carry (RFC 6455 7.4): 1004-1006 and 1015 are
 * reserved, 1016-2999 unassigned, 3000-4999 for applications. */
static bool
close_code_ok(unsigned code)
{
	return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014)
	    || (code >= 3000 && code <= 4999);
}

static bool
is_control(unsigned op)
{
	return (op & 0x8) != 0;
}

/* The rules that the first two header bytes decide. */
static int
check_start(struct wsf_parser *p)
{
	unsigned b0 = p->hdr[0], b1 = p->hdr[1], op = b0 & 0x0f;

	if (b0 & 0x70)
		return fail(p, "RSV bits set (no extension was negotiated)");
	if (b1 & 0x80)
		return fail(p, "masked frame from the server");
	if (is_control(op)) {
		if (op != WSF_CLOSE && op != WSF_PING && op != WSF_PONG)
			return fail(p, "unknown control opcode");
		if (!(b0 & 0x80))
			return fail(p, "fragmented control frame");
		if ((b1 & 0x7f) > WSF_CONTROL_MAX)
			return fail(p, "control frame longer than 125 bytes");
		return 0;
	}
	if (op != WSF_CONT && op != WSF_TEXT && op != WSF_BINARY)
		return fail(p, "unknown data opcode");
	if (op == WSF_CONT && !p->in_msg)
		return fail(p, "continuation frame without a message");
	if (op != WSF_CONT && p->in_msg)
		return fail(p, "new data frame inside a fragmented message");
	return 0;
}

static void
next_frame(struct wsf_parser *p)
{
	p->hlen = 0;
	p->hneed = 2;
	p->in_payload = false;
}

static void
deliver(struct wsf_parser *p, const uint8_t *s, size_t n, bool last,
    const struct wsf_cb *cb)
{
	bool first = !p->msg_started, final = last && p->fin;

	p->msg_started = true;
	if (final)
		p->in_msg = false;
	if (cb->on_data != NULL)
		cb->on_data(cb->ud, s, n, first, final, p->msg_binary);
}

/* The current frame's payload is complete. */
static int
frame_end(struct wsf_parser *p, const struct wsf_cb *cb)
{
	unsigned op = p->opcode;

	next_frame(p);
	if (!is_control(op)) {
		/* an empty final frame still ends the message */
		if (p->fin && p->in_msg)
			deliver(p, empty_span, 0, true, cb);
		return 0;
	}
	if (op == WSF_CLOSE && p->ctl_len == 1)
		return fail(p, "close frame with a 1-byte payload");
	if (op == WSF_CLOSE && p->ctl_len >= 2
	    && !close_code_ok((unsigned) (p->ctl[0] << 8 | p->ctl[1])))
		return fail(p, "close code not allowed on the wire");
	if (cb->on_control != NULL)
		cb->on_control(cb->ud, (int) op, p->ctl, p->ctl_len);
	return 0;
}

/* The whole header is in: length, frame state. */
static int
header_done(struct wsf_parser *p, const struct wsf_cb *cb)
{
	unsigned l7 = p->hdr[1] & 0x7f;
	uint64_t n = l7;

	if (l7 == 126) {
		n = (uint64_t) p->hdr[2] << 8 | p->hdr[3];
	} else if (l7 == 127) {
		n = 0;
		for (int i = 2; i < 10; i++)
			n = n << 8 | p->hdr[i];
		if (n >> 63)
			return fail(p, "64-bit length with the top bit set");
	}
	p->opcode = p->hdr[0] & 0x0f;
	p->fin = (p->hdr[0] & 0x80) != 0;
	p->remain = n;
	p->in_payload = true;
	p->ctl_len = 0;
	if (p->opcode == WSF_TEXT || p->opcode == WSF_BINARY) {
		p->in_msg = true;
		p->msg_binary = p->opcode == WSF_BINARY;
		p->msg_started = false;
	}
	if (n == 0)
		return frame_end(p, cb);
	return 0;
}

/* Takes header bytes from in; returns how many, or -1. */
static long
take_header(struct wsf_parser *p, const uint8_t *in, size_t len,
    const struct wsf_cb *cb)
{
	size_t i = 0;

	while (i < len && !p->in_payload) {
		while (p->hlen < p->hneed && i < len)
			p->hdr[p->hlen++] = in[i++];
		if (p->hlen < p->hneed)
			break;
		if (p->hneed == 2) {
			unsigned l7 = p->hdr[1] & 0x7f;
			if (check_start(p) < 0)
				return -1;
			p->hneed = l7 == 126 ? 4 : l7 == 127 ? 10 : 2;
			if (p->hneed > 2)
				continue;
		}
		/* an empty frame ends here: the loop reads the next header */
		if (header_done(p, cb) < 0)
			return -1;
	}
	return (long) i;
}

int
wsf_feed(struct wsf_parser *p, const uint8_t *in, size_t len,
    const struct wsf_cb *cb)
{
	size_t i = 0;

	if (p->err != NULL)
		return -1;
	while (i < len) {
		if (!p->in_payload) {
			long n = take_header(p, in + i, len - i, cb);
			if (n < 0)
				return -1;
			i += (size_t) n;
			continue;
		}
		size_t n = len - i;
		if ((uint64_t) n > p->remain)
			n = (size_t) p->remain;
		bool last = n == p->remain;
		if (is_control(p->opcode)) {
			memcpy(p->ctl + p->ctl_len, in + i, n);
			p->ctl_len = (uint8_t) (p->ctl_len + n);
		} else {
			deliver(p, in + i, n, last, cb);
		}
		i += n;
		p->remain -= n;
		if (last && frame_end(p, cb) < 0)
			return -1;
	}
	return 0;
}

size_t
wsf_build(uint8_t *out, size_t cap, int opcode, const void *payload, size_t n,
    const uint8_t mask[4])
{
	const uint8_t *src = payload;
	size_t h = 2;

	if (cap < WSF_HEADER_MAX || cap - WSF_HEADER_MAX < n)
		return 0;
	if (is_control((unsigned) opcode) && n > WSF_CONTROL_MAX)
		return 0;
	out[0] = (uint8_t) (0x80 | (opcode & 0x0f));
	if (n < 126) {
		out[1] = (uint8_t) (0x80 | n);
	} else if (n <= 0xffff) {
		out[1] = 0x80 | 126;
		out[2] = (uint8_t) (n >> 8);
		out[3] = (uint8_t) n;
		h = 4;
	} else {
		out[1] = 0x80 | 127;
		for (int i = 0; i < 8; i++)
			out[2 + i] = (uint8_t) ((uint64_t) n >> (56 - 8 * i));
		h = 10;
	}
	memcpy(out + h, mask, 4);
	h += 4;
	for (size_t i = 0; i < n; i++)
		out[h + i] = src[i] ^ mask[i & 3];
	return h + n;
}

size_t
wsf_build_close(uint8_t *out, size_t cap, unsigned code, const uint8_t mask[4])
{
	uint8_t pl[2] = { (uint8_t) (code >> 8), (uint8_t) code };

	return wsf_build(out, cap, WSF_CLOSE, pl, sizeof pl, mask);
}
