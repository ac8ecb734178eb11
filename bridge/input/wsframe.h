/* The client side of RFC 6455 as pure functions (bridge/README.md#rfc6455):
 * an incremental parser of server frames that hands data payload spans out
 * borrowed from its input, a builder of masked client frames, and the
 * upgrade handshake (request text, response head parser). No I/O, no
 * library types: the caller brings bytes, randomness and the expected
 * Sec-WebSocket-Accept value. */
#ifndef C2M_WSFRAME_H
#define C2M_WSFRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum wsf_opcode {
	WSF_CONT = 0x0,
	WSF_TEXT = 0x1,
	WSF_BINARY = 0x2,
	WSF_CLOSE = 0x8,
	WSF_PING = 0x9,
	WSF_PONG = 0xA,
};

/* the largest control payload (RFC 6455 5.5) */
#define WSF_CONTROL_MAX 125
/* a frame header is at most 2 + 8 (length) + 4 (mask) bytes */
#define WSF_HEADER_MAX 14
/* the close code of every protocol error */
#define WSF_CLOSE_PROTOCOL 1002

struct wsf_cb {
	/* A piece of a data message, borrowed from the fed bytes: first is
	 * the message's first piece, final its last one (across frames),
	 * binary the message's type. An empty message arrives as one empty
	 * piece with first and final set. */
	void (*on_data)(void *ud, const void *p, size_t n, bool first,
	    bool final, bool binary);
	/* A whole control frame (close, ping or pong) with its payload
	 * (borrowed, n <= WSF_CONTROL_MAX). */
	void (*on_control)(void *ud, int opcode, const uint8_t *p, size_t n);
	void *ud;
};

struct wsf_parser {
	uint8_t hdr[WSF_HEADER_MAX]; /* the header being collected */
	uint8_t hlen; /* bytes of it so far */
	uint8_t hneed; /* bytes it has in all (2 until the length is known) */
	uint8_t opcode; /* of the current frame */
	bool fin; /* of the current frame */
	bool in_payload; /* header done, remain bytes of payload to come */
	uint64_t remain;
	bool in_msg; /* a fragmented data message is open */
	bool msg_binary;
	bool msg_started; /* a piece of the open message has gone out */
	uint8_t ctl[WSF_CONTROL_MAX]; /* a control payload being collected */
	uint8_t ctl_len;
	const char *err; /* after an error: why (static text) */
};

void wsf_parser_init(struct wsf_parser *p);
/* Feeds len bytes (any split). Callbacks may run several times. Returns 0,
 * or -1 on a protocol error: p->err says why, and the parser refuses
 * every later feed (the caller closes with WSF_CLOSE_PROTOCOL). */
int wsf_feed(struct wsf_parser *p, const uint8_t *in, size_t len,
    const struct wsf_cb *cb);

/* Writes one masked client frame (FIN set) of opcode with payload[0..n)
 * masked by mask into out. Returns the bytes written, or 0 when out is
 * smaller than WSF_HEADER_MAX + n or a control payload exceeds
 * WSF_CONTROL_MAX. */
size_t wsf_build(uint8_t *out, size_t cap, int opcode, const void *payload,
    size_t n, const uint8_t mask[4]);
/* A close frame carrying code (no reason text). */
size_t wsf_build_close(
    uint8_t *out, size_t cap, unsigned code, const uint8_t mask[4]);

/* ---- the upgrade handshake ---- */

#define WSH_HEAD_MAX  16384 /* the most response head bytes accepted */
#define WSH_GUID      "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WSH_KEY_LEN   24 /* base64 of 16 random bytes */
#define WSH_ERROR_MAX 160

/* Writes the upgrade request for path on host (the Host header's value,
 * host[:port]) with key (base64, WSH_KEY_LEN) and the extra "Name: value"
 * headers, in the order and form libwebsockets 4.1.6 writes them. Returns
 * its length, or 0 when it does not fit cap. */
size_t wsh_request(char *out, size_t cap, const char *host, const char *path,
    const char *key, const char *const *headers, int n_headers);

enum { WSH_MORE = 0, WSH_DONE = 1, WSH_ERROR = -1 };

struct wsh_resp {
	char head[WSH_HEAD_MAX];
	size_t len;
	int status; /* once the status line is parsed */
	char error[WSH_ERROR_MAX]; /* after WSH_ERROR: why */
};

void wsh_resp_init(struct wsh_resp *r);
/* Feeds response bytes; accept is the expected Sec-WebSocket-Accept. On
 * WSH_DONE *used is the number of bytes of in that belonged to the head:
 * the rest are frames. WSH_MORE: all of in was taken. WSH_ERROR: r->error
 * says why (a refusal names the status code and reason phrase). */
int wsh_resp_feed(struct wsh_resp *r, const uint8_t *in, size_t len,
    const char *accept, size_t *used);

#endif
