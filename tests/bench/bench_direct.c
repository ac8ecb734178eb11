/* The direct-publish row: what comfy2mqtt published for one prompt of its
 * warm-up (captured by the subscriber: topics, payload bytes, QoS, retain
 * flags, MQTT 5 properties), replayed for every prompt of the workload
 * with the prompt id patched in the payloads, by stock `mosquitto_pub -l`
 * processes. mosquitto_pub publishes every line of its stdin to one
 * topic, so there is one process per topic of the captured prompt (the
 * topic keeps the captured prompt's id), each with that topic's QoS,
 * retain flag and properties, all running at once. Their input is written
 * to files first and fed through pipes once every process is connected,
 * so process start-up and connecting are not timed. */
#include <fcntl.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_peers.h"

#define MAX_TOPICS 64
#define MAX_ARGS   96

struct group {
	const struct bench_capture_msg *first; /* topic, QoS, retain, props */
	size_t msgs[256]; /* indexes into the capture, in order */
	size_t n;
	int file; /* the lines for every prompt */
	int pipe_w;
	pid_t pid;
	pthread_t feeder;
	bool feeding;
	bool reaped;
	struct rusage ru; /* once reaped */
	char *argv[MAX_ARGS];
	size_t argc;
	char *owned[MAX_ARGS]; /* strings argv borrows, freed at the end */
	size_t n_owned;
};

struct direct {
	struct group g[MAX_TOPICS];
	size_t n;
};

static void
arg(struct group *g, const char *s)
{
	if (g->argc < MAX_ARGS - 1)
		g->argv[g->argc++] = (char *) s;
}

static void
arg_own(struct group *g, const char *s)
{
	char *c = strdup(s);
	if (c == NULL || g->n_owned == MAX_ARGS) {
		free(c);
		return;
	}
	g->owned[g->n_owned++] = c;
	arg(g, c);
}

/* -D publish <name> <value>[ <value>] for each property comfy2mqtt set. */
static void
property_args(struct group *g)
{
	char num[24], *s = NULL, *v = NULL;
	const mosquitto_property *p = g->first->props;
	for (; p != NULL; p = mosquitto_property_next(p)) {
		int id = mosquitto_property_identifier(p);
		uint8_t b;
		uint32_t i;
		arg(g, "-D");
		arg(g, "publish");
		if (id == MQTT_PROP_CONTENT_TYPE
		    && mosquitto_property_read_string(p, id, &s, false)) {
			arg(g, "content-type");
			arg_own(g, s);
		} else if (id == MQTT_PROP_PAYLOAD_FORMAT_INDICATOR
		    && mosquitto_property_read_byte(p, id, &b, false)) {
			snprintf(num, sizeof(num), "%u", b);
			arg(g, "payload-format-indicator");
			arg_own(g, num);
		} else if (id == MQTT_PROP_MESSAGE_EXPIRY_INTERVAL
		    && mosquitto_property_read_int32(p, id, &i, false)) {
			snprintf(num, sizeof(num), "%u", i);
			arg(g, "message-expiry-interval");
			arg_own(g, num);
		} else if (id == MQTT_PROP_USER_PROPERTY
		    && mosquitto_property_read_string_pair(
		        p, id, &s, &v, false)) {
			arg(g, "user-property");
			arg_own(g, s);
			arg_own(g, v);
		} else {
			g->argc -= 2; /* not one the bridge sets */
		}
		free(s);
		free(v);
		s = v = NULL;
	}
}

static void
build_argv(const struct peers_opts *o, struct group *g, size_t k)
{
	char buf[64];
	arg(g, o->mosquitto_pub);
	arg(g, "-h");
	arg(g, "127.0.0.1");
	arg(g, "-p");
	snprintf(buf, sizeof(buf), "%d", o->broker_port);
	arg_own(g, buf);
	arg(g, "-V");
	arg(g, "mqttv5");
	arg(g, "-i");
	snprintf(buf, sizeof(buf), "bench-direct-%x-%zu", o->tag, k);
	arg_own(g, buf);
	arg(g, "-q");
	arg(g, g->first->qos ? "1" : "0");
	if (g->first->retain)
		arg(g, "-r");
	arg(g, "-t");
	arg(g, g->first->topic);
	arg(g, "-l");
	property_args(g);
	g->argv[g->argc] = NULL;
}

/* Groups the captured messages by topic; false when a payload holds a
 * newline (mosquitto_pub -l would split it) or there are too many. */
static bool
group_capture(const struct bench_capture_msg *cap, size_t n, struct direct *d)
{
	for (size_t i = 0; i < n; i++) {
		if (memchr(cap[i].payload, '\n', (size_t) cap[i].len) != NULL)
			return false;
		size_t j = 0;
		while (j < d->n && strcmp(d->g[j].first->topic, cap[i].topic))
			j++;
		if (j == d->n) {
			if (d->n == MAX_TOPICS)
				return false;
			d->g[d->n++] = (struct group) { .first = &cap[i],
				.file = -1,
				.pipe_w = -1,
				.pid = -1 };
		}
		struct group *g = &d->g[j];
		if (g->n == sizeof(g->msgs) / sizeof(g->msgs[0]))
			return false;
		g->msgs[g->n++] = i;
	}
	return true;
}

/* One process for everything: every captured message in order, to the
 * topic (QoS, retain flag, properties) that has the most of them. */
static void
merge_groups(struct direct *d, size_t n)
{
	size_t big = 0;
	for (size_t k = 1; k < d->n; k++)
		if (d->g[k].n > d->g[big].n)
			big = k;
	d->g[0].first = d->g[big].first;
	d->g[0].n = n;
	for (size_t i = 0; i < n; i++)
		d->g[0].msgs[i] = i;
	d->n = 1;
}

/* Writes one group's lines: its messages for every prompt, ids patched. */
static bool
write_lines(const struct peers_opts *o, const struct bench_capture_msg *cap,
    struct group *g, size_t k)
{
	char path[512], id[BENCH_ID_LEN + 1], *buf = NULL;
	snprintf(
	    path, sizeof(path), "%s/direct-%x-%zu", o->workdir, o->tag, k);
	g->file = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	unlink(path);
	FILE *f = g->file >= 0 ? fdopen(dup(g->file), "w") : NULL;
	if (f == NULL)
		return false;
	for (uint64_t p = 0; p < o->prompts; p++) {
		bench_prompt_id(id, o->tag + 2, p);
		for (size_t m = 0; m < g->n; m++) {
			const struct bench_capture_msg *c = &cap[g->msgs[m]];
			char *nb = realloc(buf, (size_t) c->len + 1);
			if (nb == NULL)
				break;
			buf = nb;
			memcpy(buf, c->payload, (size_t) c->len);
			for (char *q = buf;
			     (q = memmem(q, (size_t) (buf + c->len - q),
			          peers_capture_id, BENCH_ID_LEN))
			     != NULL;
			     q += BENCH_ID_LEN)
				memcpy(q, id, BENCH_ID_LEN);
			buf[c->len] = '\n';
			fwrite(buf, 1, (size_t) c->len + 1, f);
		}
	}
	free(buf);
	return fclose(f) == 0;
}

static bool
spawn_group(struct group *g)
{
	int fds[2];
	if (pipe2(fds, O_CLOEXEC) != 0)
		return false;
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, fds[0], 0);
	g->pid = peers_spawn(g->argv, &fa);
	posix_spawn_file_actions_destroy(&fa);
	close(fds[0]);
	g->pipe_w = fds[1];
	return g->pid > 0;
}

static void *
feed(void *arg)
{
	struct group *g = arg;
	off_t off = 0, size = lseek(g->file, 0, SEEK_END);
	while (off < size) {
		ssize_t n = sendfile(
		    g->pipe_w, g->file, &off, (size_t) (size - off));
		if (n <= 0)
			break;
	}
	close(g->pipe_w);
	g->pipe_w = -1;
	return NULL;
}

/* Reaps one process, killing it when it has not ended by deadline. */
static void
reap_one(struct group *g, int64_t deadline)
{
	if (g->feeding)
		pthread_join(g->feeder, NULL);
	g->feeding = false;
	if (g->pipe_w >= 0)
		close(g->pipe_w);
	g->pipe_w = -1;
	if (g->pid <= 0 || g->reaped)
		return;
	int st;
	pid_t w;
	while ((w = wait4(g->pid, &st, WNOHANG, &g->ru)) == 0
	    && bench_now_ns() < deadline)
		bench_sleep_us(2000);
	if (w == 0) {
		kill(g->pid, SIGKILL);
		w = wait4(g->pid, &st, 0, &g->ru);
	}
	g->reaped = w == g->pid;
}

/* Reaps every process and sums their CPU time and peak RSS. */
static void
reap(struct direct *d, int stall_s, struct peers_row *r)
{
	int64_t deadline = bench_now_ns() + (int64_t) stall_s * 1000000000;
	for (size_t k = 0; k < d->n; k++) {
		struct group *g = &d->g[k];
		reap_one(g, deadline);
		if (!g->reaped)
			continue;
		r->user_s += (double) g->ru.ru_utime.tv_sec
		    + (double) g->ru.ru_utime.tv_usec / 1e6;
		r->sys_s += (double) g->ru.ru_stime.tv_sec
		    + (double) g->ru.ru_stime.tv_usec / 1e6;
		r->hwm_kib += g->ru.ru_maxrss;
	}
}

static bool
prepare(const struct peers_opts *o, bool one_topic, struct direct *d,
    struct peers_row *r)
{
	const struct bench_capture_msg *cap = peers_sub.cap;
	if (peers_sub.cap_n == 0 || peers_capture_id[0] == '\0'
	    || !group_capture(cap, peers_sub.cap_n, d)
	    || (one_topic && peers_sub.cap_n > 256)) {
		fprintf(stderr,
		    "bench: direct row: no usable capture (%zu messages of "
		    "prompt %s)\n",
		    peers_sub.cap_n, peers_capture_id);
		return false;
	}
	for (size_t i = 0; i < peers_sub.cap_n; i++) {
		const char *ev = strstr(cap[i].topic, "/event/");
		bool made_up = ev != NULL
		    && (!strcmp(ev, "/event/queued")
		        || !strcmp(ev, "/event/lost"));
		r->frames += ev != NULL && !made_up;
		r->lifecycle_expected += ev != NULL
		    && (!strcmp(ev, "/event/execution_start")
		        || !strcmp(ev, "/event/execution_success")
		        || !strcmp(ev, "/event/execution_error")
		        || !strcmp(ev, "/event/execution_interrupted"));
	}
	if (one_topic) {
		merge_groups(d, peers_sub.cap_n);
		r->lifecycle_expected = 0; /* no lifecycle topic */
	}
	r->frames *= o->prompts;
	r->lifecycle_expected *= o->prompts;
	r->msgs_expected = peers_sub.cap_n * o->prompts;
	r->procs = (int) d->n;
	fprintf(stderr, "bench: direct row: %zu mosquitto_pub -l:", d->n);
	for (size_t k = 0; k < d->n; k++) {
		const char *t = d->g[k].first->topic;
		const char *id = strstr(t, peers_capture_id);
		fprintf(stderr, " %s%s x%zu q%d%s", id ? "<id>" : "",
		    id ? id + BENCH_ID_LEN : t, d->g[k].n, d->g[k].first->qos,
		    d->g[k].first->retain ? "r" : "");
	}
	fprintf(stderr, "\n");
	for (size_t k = 0; k < d->n; k++) {
		build_argv(o, &d->g[k], k);
		if (!write_lines(o, cap, &d->g[k], k))
			return false;
	}
	return true;
}

/* Starts every process, lets them connect (mosquitto_pub -l polls for its
 * CONNACK every 100 ms before it reads stdin), then feeds them all at
 * once. */
static int64_t
start(struct direct *d)
{
	for (size_t k = 0; k < d->n; k++)
		if (!spawn_group(&d->g[k]))
			return -1;
	bench_sleep_us(1000000);
	for (size_t k = 0; k < d->n; k++)
		if (waitpid(d->g[k].pid, NULL, WNOHANG) != 0) {
			fprintf(stderr,
			    "bench: mosquitto_pub %zu ended early\n", k);
			return -1;
		}
	int64_t t0 = bench_now_ns();
	for (size_t k = 0; k < d->n; k++)
		d->g[k].feeding
		    = pthread_create(&d->g[k].feeder, NULL, feed, &d->g[k])
		    == 0;
	return t0;
}

bool
peers_direct_row(
    const struct peers_opts *o, bool one_topic, struct peers_row *r)
{
	static struct direct d;
	memset(&d, 0, sizeof(d));
	uint64_t all0 = atomic_load(&peers_sub.all.events);
	uint64_t lc0 = atomic_load(&peers_sub.lifecycle.events);
	uint64_t ev0 = atomic_load(&peers_sub.count.events);
	uint64_t mu0 = atomic_load(&peers_sub.made_up);
	bool ok = prepare(o, one_topic, &d, r);
	int64_t t0 = ok ? start(&d) : -1;
	if (t0 >= 0) {
		ok = bench_wait_events(
		    &peers_sub.all, all0 + r->msgs_expected, o->stall_s);
		r->secs = (double) (atomic_load(&peers_sub.all.last_ns) - t0)
		    / 1e9;
	}
	reap(&d, o->stall_s, r);
	r->msgs = atomic_load(&peers_sub.all.events) - all0;
	r->lifecycle = atomic_load(&peers_sub.lifecycle.events) - lc0;
	r->events = atomic_load(&peers_sub.count.events) - ev0;
	r->made_up = atomic_load(&peers_sub.made_up) - mu0;
	for (size_t k = 0; k < d.n; k++) {
		if (d.g[k].file >= 0)
			close(d.g[k].file);
		for (size_t i = 0; i < d.g[k].n_owned; i++)
			free(d.g[k].owned[i]);
	}
	r->ran = t0 >= 0;
	r->ok = ok && t0 >= 0 && r->msgs == r->msgs_expected
	    && r->lifecycle == r->lifecycle_expected;
	return r->ok;
}
