/* The load source: just enough of a ComfyUI server on one port. The
 * WebSocket side writes prebuilt frames with plain blocking write()s (no
 * per-frame work), a reader thread drains and ignores what the bridge
 * sends (answering pings), and the few HTTP GETs the bridge makes on
 * connect get minimal bodies. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

struct bench_ws {
	int lfd;
	int port;
	const char *hello;
	size_t hello_len;
	pthread_t acceptor;
	pthread_mutex_t mu; /* client fd, writes */
	pthread_cond_t cv;
	int client; /* -1: none */
	atomic_uint http_requests;
	atomic_bool stopping;
	int active; /* connection threads still running (under mu) */
};

struct conn {
	struct bench_ws *w;
	int fd;
};

static void
base64(const unsigned char *in, size_t n, char *out)
{
	static const char tbl[]
	    = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	      "0123456789+/";
	size_t o = 0;
	for (size_t i = 0; i < n; i += 3) {
		unsigned v = (unsigned) in[i] << 16;
		if (i + 1 < n)
			v |= (unsigned) in[i + 1] << 8;
		if (i + 2 < n)
			v |= in[i + 2];
		out[o++] = tbl[(v >> 18) & 63];
		out[o++] = tbl[(v >> 12) & 63];
		out[o++] = i + 1 < n ? tbl[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < n ? tbl[v & 63] : '=';
	}
	out[o] = '\0';
}

/* Value of header name in req (NUL-terminated head), copied to out. */
static bool
header(const char *req, const char *name, char *out, size_t cap)
{
	size_t nl = strlen(name);
	for (const char *l = strstr(req, "\r\n"); l != NULL;
	     l = strstr(l + 2, "\r\n")) {
		const char *h = l + 2;
		if (strncasecmp(h, name, nl) != 0 || h[nl] != ':')
			continue;
		h += nl + 1;
		while (*h == ' ')
			h++;
		const char *e = strstr(h, "\r\n");
		size_t n = e ? (size_t) (e - h) : strlen(h);
		if (n >= cap)
			return false;
		memcpy(out, h, n);
		out[n] = '\0';
		return true;
	}
	return false;
}

static void
answer_http(struct bench_ws *w, int fd, const char *path)
{
	const char *body = "{}";
	if (strncmp(path, "/queue", 6) == 0)
		body = "{\"queue_running\": [], \"queue_pending\": []}";
	else if (strncmp(path, "/system_stats", 13) == 0)
		body = "{\"system\": {\"comfyui_version\": \"0.21.0\"}, "
		       "\"devices\": []}";
	char head[256];
	int hl = snprintf(head, sizeof(head),
	    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
	    "Content-Length: %zu\r\nConnection: close\r\n\r\n",
	    strlen(body));
	atomic_fetch_add(&w->http_requests, 1);
	if (bench_write_all(fd, head, (size_t) hl))
		bench_write_all(fd, body, strlen(body));
	shutdown(fd, SHUT_WR);
}

/* Reads the bridge's frames until it goes: pings get a pong, the rest
 * (feature_flags, pongs) is ignored. */
static void
read_client_frames(struct bench_ws *w, int fd, char *buf, size_t have)
{
	size_t cap = 1 << 16;
	for (;;) {
		/* parse as many complete frames as buf holds */
		size_t used = 0;
		for (;;) {
			unsigned char *p = (unsigned char *) buf + used;
			size_t left = have - used;
			if (left < 2)
				break;
			uint64_t len = p[1] & 0x7f;
			size_t hl = 2;
			if (len == 126) {
				if (left < 4)
					break;
				len = (uint64_t) p[2] << 8 | p[3];
				hl = 4;
			} else if (len == 127) {
				if (left < 10)
					break;
				len = 0;
				for (int i = 0; i < 8; i++)
					len = len << 8 | p[2 + i];
				hl = 10;
			}
			if (p[1] & 0x80)
				hl += 4;
			if (len > cap - hl)
				return; /* nothing the bridge sends is this big
				         */
			if (left < hl + len)
				break;
			int op = p[0] & 0x0f;
			if (op == 0x8)
				return;
			if (op == 0x9 && len <= 125) {
				unsigned char pong[2 + 125];
				pong[0] = 0x8a;
				pong[1] = (unsigned char) len;
				for (uint64_t i = 0; i < len; i++)
					pong[2 + i] = p[hl + i]
					    ^ ((p[1] & 0x80)
					            ? p[hl - 4 + i % 4]
					            : 0);
				pthread_mutex_lock(&w->mu);
				bench_write_all(fd, pong, 2 + len);
				pthread_mutex_unlock(&w->mu);
			}
			used += hl + len;
		}
		memmove(buf, buf + used, have - used);
		have -= used;
		ssize_t n = read(fd, buf + have, cap - have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		have += (size_t) n;
	}
}

static void
serve_websocket(
    struct bench_ws *w, int fd, const char *req, char *buf, size_t have)
{
	char key[128], accept_key[64];
	if (!header(req, "Sec-WebSocket-Key", key, sizeof(key) - 40))
		return;
	strcat(key, WS_GUID);
	unsigned char sha[SHA_DIGEST_LENGTH];
	SHA1((const unsigned char *) key, strlen(key), sha);
	base64(sha, sizeof(sha), accept_key);
	char resp[256];
	int rl = snprintf(resp, sizeof(resp),
	    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
	    "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
	    accept_key);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	pthread_mutex_lock(&w->mu);
	bool ok = bench_write_all(fd, resp, (size_t) rl)
	    && bench_write_all(fd, w->hello, w->hello_len);
	if (ok) {
		w->client = fd;
		pthread_cond_broadcast(&w->cv);
	}
	pthread_mutex_unlock(&w->mu);
	if (ok)
		read_client_frames(w, fd, buf, have);
	pthread_mutex_lock(&w->mu);
	if (w->client == fd)
		w->client = -1;
	pthread_mutex_unlock(&w->mu);
}

static void *
conn_main(void *arg)
{
	struct conn c = *(struct conn *) arg;
	free(arg);
	size_t cap = 1 << 16;
	char *buf = malloc(cap);
	size_t have = 0;
	char *end = NULL;
	while (buf != NULL && end == NULL && have < 8192) {
		ssize_t n = read(c.fd, buf + have, 8192 - have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		have += (size_t) n;
		buf[have] = '\0';
		end = strstr(buf, "\r\n\r\n");
	}
	if (end != NULL) {
		size_t head = (size_t) (end + 4 - buf);
		char req[8193];
		memcpy(req, buf, head);
		req[head] = '\0';
		memmove(buf, buf + head, have - head);
		have -= head;
		char method[8], path[1024];
		char upgrade[64] = "";
		header(req, "Upgrade", upgrade, sizeof(upgrade));
		if (sscanf(req, "%7s %1023s", method, path) == 2) {
			if (strncmp(path, "/ws", 3) == 0
			    && strcasecmp(upgrade, "websocket") == 0)
				serve_websocket(c.w, c.fd, req, buf, have);
			else
				answer_http(c.w, c.fd, path);
		}
	}
	free(buf);
	close(c.fd);
	pthread_mutex_lock(&c.w->mu);
	c.w->active--;
	pthread_cond_broadcast(&c.w->cv);
	pthread_mutex_unlock(&c.w->mu);
	return NULL;
}

static void *
accept_main(void *arg)
{
	struct bench_ws *w = arg;
	while (!atomic_load(&w->stopping)) {
		int fd = accept(w->lfd, NULL, NULL);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			break;
		}
		struct conn *c = malloc(sizeof(*c));
		pthread_t t;
		if (c == NULL) {
			close(fd);
			continue;
		}
		c->w = w;
		c->fd = fd;
		pthread_mutex_lock(&w->mu);
		w->active++;
		pthread_mutex_unlock(&w->mu);
		if (pthread_create(&t, NULL, conn_main, c) != 0) {
			pthread_mutex_lock(&w->mu);
			w->active--;
			pthread_mutex_unlock(&w->mu);
			free(c);
			close(fd);
			continue;
		}
		pthread_detach(t);
	}
	return NULL;
}

struct bench_ws *
bench_ws_start(const char *hello, size_t hello_len)
{
	struct bench_ws *w = calloc(1, sizeof(*w));
	if (w == NULL)
		return NULL;
	w->hello = hello;
	w->hello_len = hello_len;
	w->client = -1;
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	w->lfd = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;
	setsockopt(w->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in a = { .sin_family = AF_INET,
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);
	if (w->lfd < 0 || bind(w->lfd, (struct sockaddr *) &a, sizeof(a)) != 0
	    || listen(w->lfd, 64) != 0
	    || getsockname(w->lfd, (struct sockaddr *) &a, &al) != 0) {
		perror("bench: listen");
		goto fail;
	}
	w->port = ntohs(a.sin_port);
	if (pthread_create(&w->acceptor, NULL, accept_main, w) != 0)
		goto fail;
	return w;
fail:
	if (w->lfd >= 0)
		close(w->lfd);
	free(w);
	return NULL;
}

int
bench_ws_port(const struct bench_ws *w)
{
	return w->port;
}

bool
bench_ws_wait_client(struct bench_ws *w, int timeout_ms)
{
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += timeout_ms / 1000;
	dl.tv_nsec += (long) (timeout_ms % 1000) * 1000000;
	if (dl.tv_nsec >= 1000000000) {
		dl.tv_sec++;
		dl.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&w->mu);
	int rc = 0;
	while (w->client < 0 && rc == 0)
		rc = pthread_cond_timedwait(&w->cv, &w->mu, &dl);
	bool ok = w->client >= 0;
	pthread_mutex_unlock(&w->mu);
	return ok;
}

bool
bench_ws_write(struct bench_ws *w, const void *buf, size_t len)
{
	pthread_mutex_lock(&w->mu);
	bool ok = w->client >= 0 && bench_write_all(w->client, buf, len);
	pthread_mutex_unlock(&w->mu);
	return ok;
}

unsigned
bench_ws_http_requests(const struct bench_ws *w)
{
	return atomic_load(&((struct bench_ws *) w)->http_requests);
}

void
bench_ws_stop(struct bench_ws *w)
{
	if (w == NULL)
		return;
	atomic_store(&w->stopping, true);
	shutdown(w->lfd, SHUT_RDWR);
	pthread_join(w->acceptor, NULL);
	close(w->lfd);
	pthread_mutex_lock(&w->mu);
	if (w->client >= 0)
		shutdown(w->client, SHUT_RDWR);
	/* the connection threads end once their socket is shut down */
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += 5;
	int rc = 0;
	while (w->active > 0 && rc == 0)
		rc = pthread_cond_timedwait(&w->cv, &w->mu, &dl);
	bool idle = w->active == 0;
	pthread_mutex_unlock(&w->mu);
	if (!idle)
		return; /* a thread still holds w: leak it rather than race */
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
	free(w);
}
