/* A second baseline, for the benchmark only: the same captured messages
 * published over a plain TCP socket by a minimal MQTT 5 writer of our
 * own, without libmosquitto. A whole prompt's PUBLISH packets (QoS,
 * retain flag, MQTT 5 properties as captured) go out in one write(); a
 * reader thread takes PUBACKs in bulk. It answers one question: what do
 * this broker and this machine allow a publisher that batches, i.e. how
 * far below libmosquitto the CPU floor and how far above it the
 * throughput ceiling lie. It is not a client (no reconnects, no TLS, no
 * resending) and never runs outside the benchmark. */
#include <errno.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

struct raw_tmpl {
	unsigned char *pkt; /* the whole PUBLISH packet */
	size_t len;
	size_t pid_off; /* packet identifier (QoS 1), else 0 */
	size_t *ids; /* prompt id offsets in pkt */
	size_t n_ids;
	bool event;
};

struct bench_rawpub {
	int fd;
	struct raw_tmpl *msgs;
	size_t n, events;
	unsigned char *out; /* one prompt's packets */
	size_t out_cap;
	uint16_t next_pid;
	pthread_t reader;
	bool reader_started;
	atomic_uint_fast64_t pubacks;
	atomic_bool reader_failed;
	int64_t publish_cpu_ns;
};

/* A growable byte buffer for building packets. */
struct bytes {
	unsigned char *p;
	size_t len, cap;
	bool oom;
};

static void
put_bytes(struct bytes *b, const void *src, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n > b->cap) {
		size_t cap = (b->len + n) * 2 + 64;
		unsigned char *p = realloc(b->p, cap);
		if (p == NULL) {
			b->oom = true;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, src, n);
	b->len += n;
}

static void
put_u8(struct bytes *b, unsigned v)
{
	unsigned char c = (unsigned char) v;
	put_bytes(b, &c, 1);
}

static void
put_u16(struct bytes *b, unsigned v)
{
	unsigned char c[2] = { (unsigned char) (v >> 8), (unsigned char) v };
	put_bytes(b, c, 2);
}

static void
put_u32(struct bytes *b, uint32_t v)
{
	unsigned char c[4]
	    = { (unsigned char) (v >> 24), (unsigned char) (v >> 16),
		      (unsigned char) (v >> 8), (unsigned char) v };
	put_bytes(b, c, 4);
}

static void
put_varint(struct bytes *b, size_t v)
{
	do {
		unsigned char c = v & 0x7f;
		v >>= 7;
		put_u8(b, c | (v ? 0x80 : 0));
	} while (v);
}

static void
put_str(struct bytes *b, const char *s, size_t n)
{
	put_u16(b, (unsigned) n);
	put_bytes(b, s, n);
}

/* MQTT 5 properties of a captured message, in the order received. */
static bool
encode_props(struct bytes *b, const mosquitto_property *props)
{
	for (const mosquitto_property *p = props; p != NULL;
	     p = mosquitto_property_next(p)) {
		int id = mosquitto_property_identifier(p);
		uint8_t u8;
		uint32_t u32;
		char *name = NULL, *value = NULL;
		switch (id) {
		case MQTT_PROP_PAYLOAD_FORMAT_INDICATOR:
			mosquitto_property_read_byte(p, id, &u8, false);
			put_u8(b, (unsigned) id);
			put_u8(b, u8);
			break;
		case MQTT_PROP_MESSAGE_EXPIRY_INTERVAL:
			mosquitto_property_read_int32(p, id, &u32, false);
			put_u8(b, (unsigned) id);
			put_u32(b, u32);
			break;
		case MQTT_PROP_CONTENT_TYPE:
			mosquitto_property_read_string(p, id, &value, false);
			put_u8(b, (unsigned) id);
			put_str(b, value, value ? strlen(value) : 0);
			break;
		case MQTT_PROP_USER_PROPERTY:
			mosquitto_property_read_string_pair(
			    p, id, &name, &value, false);
			put_u8(b, (unsigned) id);
			put_str(b, name, name ? strlen(name) : 0);
			put_str(b, value, value ? strlen(value) : 0);
			break;
		default:
			/* a subscription identifier and the like: not ours */
			break;
		}
		free(name);
		free(value);
	}
	return !b->oom;
}

static int
build_template(struct raw_tmpl *t, const struct bench_capture_msg *cap,
    const char *cap_id)
{
	struct bytes props = { 0 }, body = { 0 }, pkt = { 0 };
	int rc = -1;
	if (!encode_props(&props, cap->props))
		goto out;
	size_t topic_len = strlen(cap->topic);
	put_str(&body, cap->topic, topic_len);
	size_t pid_at = 0;
	if (cap->qos > 0) {
		pid_at = body.len;
		put_u16(&body, 0);
	}
	put_varint(&body, props.len);
	put_bytes(&body, props.p, props.len);
	put_bytes(&body, cap->payload, (size_t) cap->len);
	put_u8(
	    &pkt, 0x30 | (unsigned) (cap->qos << 1) | (cap->retain ? 1u : 0u));
	put_varint(&pkt, body.len);
	size_t hdr = pkt.len;
	put_bytes(&pkt, body.p, body.len);
	if (pkt.oom)
		goto out;
	t->pkt = pkt.p;
	t->len = pkt.len;
	t->pid_off = cap->qos > 0 ? hdr + pid_at : 0;
	pkt.p = NULL;
	const char *ev = strstr(cap->topic, "/event/");
	t->event = ev != NULL && strcmp(ev, "/event/queued") != 0
	    && strcmp(ev, "/event/lost") != 0;
	size_t cap_n = 0;
	const unsigned char *s = t->pkt;
	while ((s = memmem(
	            s, t->len - (size_t) (s - t->pkt), cap_id, BENCH_ID_LEN))
	    != NULL) {
		if (t->n_ids == cap_n) {
			cap_n = cap_n ? cap_n * 2 : 16;
			size_t *n = realloc(t->ids, cap_n * sizeof(size_t));
			if (n == NULL)
				goto out;
			t->ids = n;
		}
		t->ids[t->n_ids++] = (size_t) (s - t->pkt);
		s += BENCH_ID_LEN;
	}
	rc = 0;
out:
	free(props.p);
	free(body.p);
	free(pkt.p);
	return rc;
}

/* Reads packets in bulk; counts PUBACKs, ignores anything else. */
static void *
reader_main(void *arg)
{
	struct bench_rawpub *r = arg;
	unsigned char buf[65536];
	size_t have = 0;
	for (;;) {
		ssize_t n = read(r->fd, buf + have, sizeof(buf) - have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		have += (size_t) n;
		size_t at = 0;
		for (;;) {
			/* fixed header: type byte, 1..4 length bytes */
			size_t len = 0, i = at + 1;
			int shift = 0;
			bool whole = false;
			while (i < have && shift < 28) {
				len |= (size_t) (buf[i] & 0x7f) << shift;
				shift += 7;
				if (!(buf[i++] & 0x80)) {
					whole = true;
					break;
				}
			}
			if (!whole || have - i < len)
				break;
			if ((buf[at] & 0xf0) == 0x40)
				atomic_fetch_add(&r->pubacks, 1);
			at = i + len;
		}
		if (at == 0 && have == sizeof(buf)) {
			atomic_store(&r->reader_failed, true);
			break;
		}
		memmove(buf, buf + at, have - at);
		have -= at;
		/* let PUBACKs gather: one wake-up per millisecond, not per
		 * acknowledgement (as the bridge's link does) */
		struct timespec nap = { 0, 1000000 };
		nanosleep(&nap, NULL);
	}
	return NULL;
}

static int
connect_mqtt(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return -1;
	struct sockaddr_in a = { .sin_family = AF_INET,
		.sin_port = htons((uint16_t) port),
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *) &a, sizeof(a)) != 0)
		goto fail;
	/* CONNECT: MQTT 5, clean start, keepalive 0 (no pings needed) */
	struct bytes body = { 0 }, pkt = { 0 };
	put_str(&body, "MQTT", 4);
	put_u8(&body, 5);
	put_u8(&body, 0x02);
	put_u16(&body, 0);
	put_varint(&body, 0);
	put_str(&body, "bench-raw", 9);
	put_u8(&pkt, 0x10);
	put_varint(&pkt, body.len);
	put_bytes(&pkt, body.p, body.len);
	bool ok = !pkt.oom && bench_write_all(fd, pkt.p, pkt.len);
	free(body.p);
	free(pkt.p);
	unsigned char ack[64];
	ssize_t n = ok ? read(fd, ack, sizeof(ack)) : -1;
	/* CONNACK with reason code 0 */
	if (n >= 4 && ack[0] == 0x20 && ack[3] == 0)
		return fd;
fail:
	close(fd);
	return -1;
}

struct bench_rawpub *
bench_rawpub_start(int port, const struct bench_capture_msg *cap, size_t n,
    const char *cap_id)
{
	struct bench_rawpub *r = calloc(1, sizeof(*r));
	if (r == NULL)
		return NULL;
	r->fd = -1;
	r->msgs = calloc(n, sizeof(*r->msgs));
	if (r->msgs == NULL || n == 0)
		goto fail;
	for (size_t i = 0; i < n; i++) {
		r->n = i + 1; /* stop() frees what a failed build left */
		if (build_template(&r->msgs[i], &cap[i], cap_id) != 0)
			goto fail;
		r->events += r->msgs[i].event;
		r->out_cap += r->msgs[i].len;
	}
	r->out = malloc(r->out_cap);
	r->fd = connect_mqtt(port);
	if (r->out == NULL || r->fd < 0)
		goto fail;
	if (pthread_create(&r->reader, NULL, reader_main, r) != 0)
		goto fail;
	r->reader_started = true;
	r->next_pid = 1;
	return r;
fail:
	fprintf(stderr, "bench: raw publisher failed to start\n");
	bench_rawpub_stop(r);
	return NULL;
}

size_t
bench_rawpub_prompt(struct bench_rawpub *r, const char *id)
{
	int64_t c0 = bench_cpu_ns(CLOCK_THREAD_CPUTIME_ID);
	size_t len = 0;
	for (size_t i = 0; i < r->n; i++) {
		struct raw_tmpl *t = &r->msgs[i];
		for (size_t k = 0; k < t->n_ids; k++)
			memcpy(t->pkt + t->ids[k], id, BENCH_ID_LEN);
		if (t->pid_off) {
			t->pkt[t->pid_off]
			    = (unsigned char) (r->next_pid >> 8);
			t->pkt[t->pid_off + 1] = (unsigned char) r->next_pid;
			r->next_pid
			    = r->next_pid == 65535 ? 1 : r->next_pid + 1;
		}
		memcpy(r->out + len, t->pkt, t->len);
		len += t->len;
	}
	bool ok = bench_write_all(r->fd, r->out, len);
	r->publish_cpu_ns += bench_cpu_ns(CLOCK_THREAD_CPUTIME_ID) - c0;
	return ok ? r->events : 0;
}

uint64_t
bench_rawpub_pubacks(const struct bench_rawpub *r)
{
	return atomic_load(&r->pubacks);
}

size_t
bench_rawpub_qos1_per_prompt(const struct bench_rawpub *r)
{
	size_t n = 0;
	for (size_t i = 0; i < r->n; i++)
		n += r->msgs[i].pid_off != 0;
	return n;
}

int64_t
bench_rawpub_cpu_ns(const struct bench_rawpub *r, int64_t *reader_ns)
{
	*reader_ns = bench_thread_cpu_ns(r->reader, r->reader_started);
	return r->publish_cpu_ns;
}

void
bench_rawpub_stop(struct bench_rawpub *r)
{
	if (r == NULL)
		return;
	if (r->fd >= 0) {
		static const unsigned char disconnect[] = { 0xe0, 0x00 };
		bench_write_all(r->fd, disconnect, sizeof(disconnect));
		shutdown(r->fd, SHUT_RDWR);
	}
	if (r->reader_started)
		pthread_join(r->reader, NULL);
	if (r->fd >= 0)
		close(r->fd);
	for (size_t i = 0; i < r->n; i++) {
		free(r->msgs[i].pkt);
		free(r->msgs[i].ids);
	}
	free(r->msgs);
	free(r->out);
	free(r);
}
