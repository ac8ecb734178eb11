/* The frame mix: one prompt of a recorded 20-step run, prebuilt once as
 * WebSocket frames; only the prompt id (and in latency mode a timestamp)
 * is patched per prompt, so writing costs the load source a memcpy. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define TS_SLOT ", \"bench_ts\": \"0000000000000000000\""

int64_t
bench_now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t) t.tv_sec * 1000000000 + t.tv_nsec;
}

void
bench_sleep_us(long us)
{
	struct timespec t = { us / 1000000, (us % 1000000) * 1000 };
	nanosleep(&t, NULL);
}

bool
bench_wait_events(const struct bench_counter *c, uint64_t target, int stall_s)
{
	uint64_t last = atomic_load(&c->events);
	int64_t last_change = bench_now_ns();
	for (;;) {
		uint64_t got = atomic_load(&c->events);
		if (got >= target)
			return true;
		if (got != last) {
			last = got;
			last_change = bench_now_ns();
		} else if (bench_now_ns() - last_change
		    > (int64_t) stall_s * 1000000000) {
			return false;
		}
		bench_sleep_us(100);
	}
}

int64_t
bench_cpu_ns(clockid_t clk)
{
	struct timespec t;
	if (clock_gettime(clk, &t) != 0)
		return -1;
	return (int64_t) t.tv_sec * 1000000000 + t.tv_nsec;
}

int64_t
bench_thread_cpu_ns(pthread_t t, bool started)
{
	clockid_t clk;
	if (!started || pthread_getcpuclockid(t, &clk) != 0)
		return -1;
	return bench_cpu_ns(clk);
}

bool
bench_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		p += n;
		len -= (size_t) n;
	}
	return true;
}

int64_t
bench_wall_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	return (int64_t) t.tv_sec * 1000000000 + t.tv_nsec;
}

void
bench_prompt_id(char *out, unsigned tag, uint64_t k)
{
	snprintf(out, BENCH_ID_LEN + 1, "%08x-0000-4000-8000-%012llx", tag,
	    (unsigned long long) (k & 0xffffffffffffULL));
}

void
bench_patch_ids(char *buf, const size_t *offs, size_t n, const char *id)
{
	for (size_t i = 0; i < n; i++)
		memcpy(buf + offs[i], id, BENCH_ID_LEN);
}

void
bench_put_ts(char *p, int64_t wall_ns)
{
	unsigned long long v = (unsigned long long) wall_ns;
	for (int i = BENCH_TS_LEN - 1; i >= 0; i--) {
		p[i] = (char) ('0' + v % 10);
		v /= 10;
	}
}

/* Appends a server-to-client (unmasked, FIN) text frame header. */
static size_t
ws_header(unsigned char *h, size_t len)
{
	h[0] = 0x81;
	if (len < 126) {
		h[1] = (unsigned char) len;
		return 2;
	}
	if (len <= 0xffff) {
		h[1] = 126;
		h[2] = (unsigned char) (len >> 8);
		h[3] = (unsigned char) len;
		return 4;
	}
	h[1] = 127;
	for (int i = 0; i < 8; i++)
		h[2 + i] = (unsigned char) ((uint64_t) len >> (56 - 8 * i));
	return 10;
}

static int
append(char **buf, size_t *len, size_t *cap, const void *p, size_t n)
{
	if (*len + n > *cap) {
		size_t c = *cap ? *cap * 2 : 4096;
		while (c < *len + n)
			c *= 2;
		char *nb = realloc(*buf, c);
		if (nb == NULL)
			return -1;
		*buf = nb;
		*cap = c;
	}
	memcpy(*buf + *len, p, n);
	*len += n;
	return 0;
}

static bool
line_is(const char *line, const char *type)
{
	char want[64];
	snprintf(want, sizeof(want), "{\"type\": \"%s\"", type);
	return strncmp(line, want, strlen(want)) == 0;
}

/* Finds the template prompt id: data.prompt_id of the first frame. */
static int
find_template_id(const char *line, char *out)
{
	const char *k = strstr(line, "\"prompt_id\": \"");
	if (k == NULL)
		return -1;
	k += strlen("\"prompt_id\": \"");
	const char *e = strchr(k, '"');
	if (e == NULL || e - k != BENCH_ID_LEN)
		return -1;
	memcpy(out, k, BENCH_ID_LEN);
	out[BENCH_ID_LEN] = '\0';
	return 0;
}

static int
add_frame(
    struct bench_mix *mix, size_t *cap, size_t *fcap, char *line, size_t n)
{
	/* "data" is the last key: the slot goes before the final "}}" */
	if (n < 2 || line[n - 1] != '}' || line[n - 2] != '}')
		return -1;
	char payload[65536];
	size_t slot = strlen(TS_SLOT);
	if (n + slot > sizeof(payload))
		return -1;
	memcpy(payload, line, n - 2);
	memcpy(payload + n - 2, TS_SLOT, slot);
	memcpy(payload + n - 2 + slot, "}}", 2);
	size_t plen = n + slot;
	unsigned char h[10];
	size_t hl = ws_header(h, plen);
	if (mix->n_frames == *fcap) {
		*fcap = *fcap ? *fcap * 2 : 64;
		void *nf = realloc(mix->frames, *fcap * sizeof(*mix->frames));
		if (nf == NULL)
			return -1;
		mix->frames = nf;
	}
	struct bench_frame *f = &mix->frames[mix->n_frames++];
	f->off = mix->block_len;
	f->len = hl + plen;
	f->ts_off = mix->block_len + hl + n - 2 + slot - BENCH_TS_LEN - 1;
	if (append(&mix->block, &mix->block_len, cap, h, hl) != 0)
		return -1;
	return append(&mix->block, &mix->block_len, cap, payload, plen);
}

static int
index_ids(struct bench_mix *mix)
{
	size_t cap = 0;
	const char *p = mix->block, *end = mix->block + mix->block_len;
	while (
	    (p = memmem(p, (size_t) (end - p), mix->template_id, BENCH_ID_LEN))
	    != NULL) {
		if (mix->n_ids == cap) {
			cap = cap ? cap * 2 : 128;
			void *n = realloc(mix->id_offs, cap * sizeof(size_t));
			if (n == NULL)
				return -1;
			mix->id_offs = n;
		}
		mix->id_offs[mix->n_ids++] = (size_t) (p - mix->block);
		p += BENCH_ID_LEN;
	}
	return mix->n_ids > 0 ? 0 : -1;
}

int
bench_mix_load(struct bench_mix *mix, const char *trace_path)
{
	memset(mix, 0, sizeof(*mix));
	FILE *f = fopen(trace_path, "r");
	if (f == NULL) {
		fprintf(
		    stderr, "bench: %s: %s\n", trace_path, strerror(errno));
		return -1;
	}
	char *line = NULL;
	size_t lcap = 0, bcap = 0, fcap = 0, hcap = 0;
	ssize_t n;
	int rc = 0;
	bool hello_status = false, hello_flags = false;
	while (rc == 0 && (n = getline(&line, &lcap, f)) > 0) {
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = '\0';
		if (n == 0 || strstr(line, "\"binary_hex_header\"") != NULL)
			continue;
		bool status = line_is(line, "status");
		bool flags = line_is(line, "feature_flags");
		if (status || flags) {
			/* the first of each is what a server sends on
			 * connect; the later status frames are left out
			 * (README: they would make the bridge poll) */
			bool *seen = status ? &hello_status : &hello_flags;
			if (*seen)
				continue;
			*seen = true;
			unsigned char h[10];
			size_t hl = ws_header(h, (size_t) n);
			rc = append(
			    &mix->hello, &mix->hello_len, &hcap, h, hl);
			if (rc == 0)
				rc = append(&mix->hello, &mix->hello_len,
				    &hcap, line, (size_t) n);
			continue;
		}
		if (mix->template_id[0] == '\0'
		    && find_template_id(line, mix->template_id) != 0)
			rc = -1;
		if (rc == 0)
			rc = add_frame(mix, &bcap, &fcap, line, (size_t) n);
	}
	free(line);
	fclose(f);
	if (rc == 0 && mix->n_frames == 0)
		rc = -1;
	if (rc == 0)
		rc = index_ids(mix);
	if (rc != 0) {
		fprintf(stderr, "bench: %s: unusable trace\n", trace_path);
		bench_mix_free(mix);
	}
	return rc;
}

void
bench_mix_free(struct bench_mix *mix)
{
	free(mix->block);
	free(mix->frames);
	free(mix->id_offs);
	free(mix->hello);
	memset(mix, 0, sizeof(*mix));
}
