/* libFuzzer target: the input is one byte s, then a stream of server bytes.
 * The stream goes to the frame parser whole and again in pieces of
 * 1 + (s + i) % 37 bytes: both runs must report the same messages, control
 * frames and result; every piece must lie inside the bytes fed, first must
 * come exactly when no message is open. The stream also goes to the
 * handshake parser in the same pieces: on WSH_DONE the bytes it used must
 * end in CRLF CRLF within the input. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wsframe.h"

struct digest {
	uint64_t h; /* FNV-1a over everything delivered, with markers */
	bool open;
	const uint8_t *lo, *hi; /* the bytes being fed */
};

static void
mix(struct digest *d, const void *p, size_t n)
{
	const uint8_t *b = p;
	for (size_t i = 0; i < n; i++)
		d->h = (d->h ^ b[i]) * 1099511628211ULL;
}

static void
on_data(void *ud, const void *p, size_t n, bool first, bool final, bool bin)
{
	struct digest *d = ud;
	const uint8_t *s = p;
	uint8_t mark = (uint8_t) ('D' + bin);

	if (first == d->open)
		abort();
	if (n > 0 && (s < d->lo || n > (size_t) (d->hi - s)))
		abort();
	d->open = !final;
	/* piece boundaries differ between the runs: only the bytes count */
	if (first)
		mix(d, &mark, 1);
	mix(d, p, n);
	if (final)
		mix(d, "F", 1);
}

static void
on_control(void *ud, int op, const uint8_t *p, size_t n)
{
	struct digest *d = ud;
	uint8_t o = (uint8_t) op;

	if (n > WSF_CONTROL_MAX)
		abort();
	mix(d, "C", 1);
	mix(d, &o, 1);
	mix(d, p, n);
}

static int
parse(
    const uint8_t *data, size_t size, unsigned s, bool split, struct digest *d)
{
	struct wsf_parser p;
	struct wsf_cb cb = { on_data, on_control, d };
	size_t off = 0;
	int rc = 0;

	memset(d, 0, sizeof *d);
	d->h = 14695981039346656037ULL;
	wsf_parser_init(&p);
	for (unsigned i = 0; off < size && rc == 0; i++) {
		size_t k = split ? 1 + (s + i) % 37 : size - off;
		if (k > size - off)
			k = size - off;
		d->lo = data + off;
		d->hi = data + off + k;
		rc = wsf_feed(&p, data + off, k, &cb);
		off += k;
	}
	if (rc != 0 && (p.err == NULL || p.err[0] == '\0'))
		abort();
	return rc;
}

static void
handshake(const uint8_t *data, size_t size, unsigned s)
{
	static struct wsh_resp r;
	size_t off = 0, used;
	int rc = WSH_MORE;

	wsh_resp_init(&r);
	for (unsigned i = 0; off < size && rc == WSH_MORE; i++) {
		size_t k = 1 + (s * 131 + i) % 997;
		if (k > size - off)
			k = size - off;
		rc = wsh_resp_feed(&r, data + off, k, "x", &used);
		if (used > k || (rc == WSH_MORE && used != k))
			abort();
		off += used;
	}
	if (rc == WSH_DONE
	    && (off < 4 || memcmp(data + off - 4, "\r\n\r\n", 4) != 0))
		abort();
	if (rc == WSH_ERROR && r.error[0] == '\0')
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct digest a, b;

	if (size < 1)
		return 0;
	unsigned s = data[0];
	data++;
	size--;
	int ra = parse(data, size, s, false, &a);
	int rb = parse(data, size, s, true, &b);
	if (ra != rb || a.h != b.h || a.open != b.open)
		abort();
	handshake(data, size, s);
	return 0;
}
