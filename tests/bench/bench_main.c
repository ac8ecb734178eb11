/* c2m_bench: one side-by-side run of the benchmark. Starts the load
 * source and the subscriber, spawns the bridge (with the allocation
 * counter preloaded), pushes the mix through it (throughput, then paced
 * latency, optionally a soak), stops it, then pushes the same mix
 * straight to the broker with the baseline publishers, and last into an
 * lws client that only counts frames (the libwebsockets floor). Prints one
 * line of key=value results; exits non-zero when any event went missing. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "bench_alloc.h"

extern char **environ;

struct opts {
	const char *bridge;
	const char *shim;
	const char *trace;
	int broker_port;
	unsigned long prompts;
	unsigned long lat_events;
	unsigned long lat_rate;
	unsigned long window;
	unsigned long soak_events;
	unsigned tag;
	int stall_s; /* fail when no event arrives for this long */
	bool raw; /* run the raw baseline (no flow control: only when the
	           * broker announces no receive maximum) */
	bool verbose;
};

struct phase {
	uint64_t expected;
	uint64_t got;
	double secs;
	double eps;
};

static struct bench_sub sub;

static void
sleep_until(int64_t mono_ns)
{
	struct timespec t = { mono_ns / 1000000000, mono_ns % 1000000000 };
	while (
	    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL) == EINTR)
		;
}

static uint64_t
events_now(const struct bench_counter *c)
{
	return atomic_load(&c->events);
}

/* Waits until `sent` events may be outstanding within the window (c
 * counts the events that arrived). */
static bool
wait_window(const struct bench_counter *c, uint64_t ev0, uint64_t sent,
    uint64_t batch, uint64_t window, int stall_s)
{
	if (sent + batch <= window)
		return true;
	return bench_wait_events(c, ev0 + sent + batch - window, stall_s);
}

/* Waits for all expected events; fills got and the end time. */
static void
wait_all(const struct bench_counter *c, uint64_t ev0, struct phase *ph,
    int64_t t0, int stall_s)
{
	wait_window(c, ev0, ph->expected, 0, 0, stall_s);
	ph->got = events_now(c) - ev0;
	int64_t end = atomic_load(&c->last_ns);
	ph->secs = (double) (end - t0) / 1e9;
	ph->eps = ph->secs > 0 ? (double) ph->got / ph->secs : 0;
}

static int
cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
	return x < y ? -1 : x > y;
}

static void
latency_percentiles(double *p50_us, double *p99_us, double *max_us)
{
	size_t n = atomic_load(&sub.lat_n);
	if (n > sub.lat_cap)
		n = sub.lat_cap;
	*p50_us = *p99_us = *max_us = -1;
	if (n == 0)
		return;
	qsort(sub.lat_ns, n, sizeof(int64_t), cmp_i64);
	*p50_us = (double) sub.lat_ns[n / 2] / 1e3;
	*p99_us = (double) sub.lat_ns[(n * 99) / 100] / 1e3;
	*max_us = (double) sub.lat_ns[n - 1] / 1e3;
}

/* ---- the bridge process ------------------------------------------- */

struct proc_sample {
	double user_s, sys_s; /* all threads */
	double main_s; /* the main thread (lws loop): user + sys */
	unsigned long long ctxsw; /* context switches, all threads */
	long hwm_kib; /* VmHWM */
	long rss_kib; /* VmRSS */
};

static bool
read_stat(const char *path, unsigned long *ut, unsigned long *st)
{
	char buf[4096];
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return false;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	const char *p = strrchr(buf, ')');
	/* fields after comm: state(3) ... utime(14) stime(15) */
	return p != NULL
	    && sscanf(p + 2,
	           "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", ut,
	           st)
	    == 2;
}

static void
read_status(const char *path, struct proc_sample *s, bool memory)
{
	char buf[256];
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return;
	unsigned long long v;
	while (fgets(buf, sizeof(buf), f) != NULL) {
		if (memory) {
			sscanf(buf, "VmHWM: %ld", &s->hwm_kib);
			sscanf(buf, "VmRSS: %ld", &s->rss_kib);
		}
		if (sscanf(buf, "voluntary_ctxt_switches: %llu", &v) == 1
		    || sscanf(buf, "nonvoluntary_ctxt_switches: %llu", &v)
		        == 1)
			s->ctxsw += v;
	}
	fclose(f);
}

static bool
sample_proc(pid_t pid, struct proc_sample *s)
{
	char path[320];
	double hz = (double) sysconf(_SC_CLK_TCK);
	memset(s, 0, sizeof(*s));
	snprintf(path, sizeof(path), "/proc/%d/task", (int) pid);
	DIR *d = opendir(path);
	if (d == NULL)
		return false;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		unsigned long ut = 0, st = 0;
		snprintf(path, sizeof(path), "/proc/%d/task/%s/stat",
		    (int) pid, de->d_name);
		if (!read_stat(path, &ut, &st))
			continue;
		s->user_s += (double) ut / hz;
		s->sys_s += (double) st / hz;
		if (atoi(de->d_name) == (int) pid)
			s->main_s = (double) (ut + st) / hz;
		snprintf(path, sizeof(path), "/proc/%d/task/%s/status",
		    (int) pid, de->d_name);
		read_status(path, s, false);
	}
	closedir(d);
	snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);
	unsigned long long sw = s->ctxsw;
	read_status(path, s, true);
	s->ctxsw = sw;
	return true;
}

static pid_t
spawn_bridge(const struct opts *o, int ws_port, const char *alloc_file)
{
	char comfy[64], mqtt[64], inst[32];
	snprintf(comfy, sizeof(comfy), "http://127.0.0.1:%d", ws_port);
	snprintf(mqtt, sizeof(mqtt), "mqtt://127.0.0.1:%d", o->broker_port);
	snprintf(inst, sizeof(inst), "b%x", o->tag);
	char *argv[] = { (char *) o->bridge, "--comfyui", comfy, "--mqtt",
		mqtt, "--prefix", "bench", "--instance", inst, "--client-id",
		"bench-client", "--mqtt-client-id", "bench-bridge",
		"--log-level", "warn", NULL };
	size_t ne = 0;
	while (environ[ne] != NULL)
		ne++;
	char **env = calloc(ne + 3, sizeof(char *));
	char preload[4096], afile[4200];
	size_t k = 0;
	for (size_t i = 0; i < ne; i++)
		if (strncmp(environ[i], "LD_PRELOAD=", 11) != 0)
			env[k++] = environ[i];
	if (o->shim != NULL) {
		snprintf(preload, sizeof(preload), "LD_PRELOAD=%s", o->shim);
		snprintf(afile, sizeof(afile), "C2M_BENCH_ALLOC_FILE=%s",
		    alloc_file);
		env[k++] = preload;
		env[k++] = afile;
	}
	env[k] = NULL;
	/* C2M_BENCH_WRAP="valgrind --tool=callgrind ...": profiling only
	 * (the CPU and RSS figures then describe the wrapper) */
	char *wrap = getenv("C2M_BENCH_WRAP")
	    ? strdup(getenv("C2M_BENCH_WRAP"))
	    : NULL;
	char *full[64];
	size_t nf = 0;
	for (char *t = wrap ? strtok(wrap, " ") : NULL; t != NULL && nf < 40;
	     t = strtok(NULL, " "))
		full[nf++] = t;
	for (size_t i = 0; argv[i] != NULL; i++)
		full[nf++] = argv[i];
	full[nf] = NULL;
	pid_t pid;
	int rc = posix_spawnp(&pid, full[0], NULL, NULL, full, env);
	free(wrap);
	free(env);
	if (rc != 0) {
		fprintf(stderr, "bench: cannot start %s: %s\n", o->bridge,
		    strerror(rc));
		return -1;
	}
	return pid;
}

static void
stop_bridge(pid_t pid)
{
	kill(pid, SIGTERM);
	for (int i = 0; i < 100; i++) {
		if (waitpid(pid, NULL, WNOHANG) == pid)
			return;
		bench_sleep_us(50000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

static struct bench_alloc_counts *
map_alloc_counts(const char *path)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || ftruncate(fd, sizeof(struct bench_alloc_counts)) != 0)
		return NULL;
	void *p = mmap(NULL, sizeof(struct bench_alloc_counts),
	    PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	return p == MAP_FAILED ? NULL : p;
}

static void
read_allocs(const struct bench_alloc_counts *c,
    unsigned long long out[2][BENCH_MOD_COUNT])
{
	for (int t = 0; t < 2; t++)
		for (int m = 0; m < BENCH_MOD_COUNT; m++)
			out[t][m] = c ? atomic_load(&c->n[t][m]) : 0;
}

/* ---- phases --------------------------------------------------------- */

static bool
bridge_throughput(const struct opts *o, struct bench_ws *ws,
    struct bench_mix *mix, unsigned tag, uint64_t prompts, pid_t pid,
    struct phase *ph, long *rss_trace)
{
	uint64_t ev0 = events_now(&sub.count), sent = 0, f = mix->n_frames;
	char id[BENCH_ID_LEN + 1];
	ph->expected = prompts * f;
	int64_t t0 = bench_now_ns();
	for (uint64_t k = 0; k < prompts; k++) {
		if (!wait_window(
		        &sub.count, ev0, sent, f, o->window, o->stall_s))
			break;
		bench_prompt_id(id, tag, k);
		if (rss_trace == NULL && k == prompts / 2)
			bench_sub_capture(&sub, id);
		bench_patch_ids(mix->block, mix->id_offs, mix->n_ids, id);
		if (!bench_ws_write(ws, mix->block, mix->block_len))
			break;
		sent += f;
		if (rss_trace != NULL && sent % 100000 < f) {
			struct proc_sample s = { 0 };
			sample_proc(pid, &s);
			rss_trace[sent / 100000] = s.rss_kib;
		}
	}
	wait_all(&sub.count, ev0, ph, t0, o->stall_s);
	return ph->got == ph->expected;
}

static bool
bridge_latency(const struct opts *o, struct bench_ws *ws,
    struct bench_mix *mix, unsigned tag, struct phase *ph)
{
	uint64_t ev0 = events_now(&sub.count);
	char id[BENCH_ID_LEN + 1];
	ph->expected = o->lat_events;
	atomic_store(&sub.lat_n, 0);
	atomic_store(&sub.lat_on, true);
	int64_t t0 = bench_now_ns(), gap = 1000000000 / (int64_t) o->lat_rate;
	uint64_t sent = 0;
	for (uint64_t k = 0; sent < o->lat_events; k++) {
		bench_prompt_id(id, tag, k);
		bench_patch_ids(mix->block, mix->id_offs, mix->n_ids, id);
		for (size_t i = 0; i < mix->n_frames && sent < o->lat_events;
		     i++, sent++) {
			const struct bench_frame *fr = &mix->frames[i];
			sleep_until(t0 + (int64_t) sent * gap);
			bench_put_ts(mix->block + fr->ts_off, bench_wall_ns());
			if (!bench_ws_write(ws, mix->block + fr->off, fr->len))
				goto out;
		}
	}
out:
	wait_all(&sub.count, ev0, ph, t0, o->stall_s);
	atomic_store(&sub.lat_on, false);
	return ph->got == ph->expected;
}

/* Publishes one prompt for id through a baseline; returns the number of
 * event messages published. */
typedef size_t (*publish_prompt_fn)(void *pub, const char *id);

static size_t
pub_prompt(void *pub, const char *id)
{
	return bench_pub_prompt(pub, id);
}

static size_t
rawpub_prompt(void *pub, const char *id)
{
	return bench_rawpub_prompt(pub, id);
}

/* The load source of the libwebsockets floor and its frames. */
struct floor_source {
	struct bench_ws *ws;
	struct bench_mix *mix;
};

static size_t
floor_prompt(void *src, const char *id)
{
	struct floor_source *fs = src;
	bench_patch_ids(fs->mix->block, fs->mix->id_offs, fs->mix->n_ids, id);
	if (!bench_ws_write(fs->ws, fs->mix->block, fs->mix->block_len))
		return 0;
	return fs->mix->n_frames;
}

/* A baseline's throughput phase: whole prompts, closed-loop like the
 * bridge's (at most o->window events outstanding, as counted by c). */
static bool
baseline_throughput(const struct opts *o, publish_prompt_fn publish, void *pub,
    uint64_t per_prompt, unsigned tag, const struct bench_counter *c,
    struct phase *ph)
{
	uint64_t ev0 = events_now(c), sent = 0;
	char id[BENCH_ID_LEN + 1];
	ph->expected = o->prompts * per_prompt;
	int64_t t0 = bench_now_ns();
	for (uint64_t k = 0; k < o->prompts; k++) {
		if (!wait_window(
		        c, ev0, sent, per_prompt, o->window, o->stall_s))
			break;
		bench_prompt_id(id, tag, k);
		sent += publish(pub, id);
	}
	wait_all(c, ev0, ph, t0, o->stall_s);
	return ph->got == ph->expected;
}

/* The libwebsockets floor: the same frames, the same closed loop, into an
 * lws client that only counts them. *cpu_ns = its thread's CPU time over
 * the phase (-1: unknown). */
static bool
floor_throughput(const struct opts *o, struct bench_mix *mix, unsigned tag,
    bool raw, struct phase *ph, int64_t *cpu_ns, int64_t *user_ns,
    int64_t *sys_ns)
{
	*cpu_ns = -1;
	struct floor_source fs
	    = { bench_ws_start(mix->hello, mix->hello_len), mix };
	if (fs.ws == NULL)
		return false;
	struct bench_wsfloor *fl
	    = bench_wsfloor_start(bench_ws_port(fs.ws), raw);
	bool ok = fl != NULL && bench_ws_wait_client(fs.ws, 20000);
	/* the hello (status, feature_flags) must be in before counting */
	struct bench_counter *c = ok ? bench_wsfloor_counter(fl) : NULL;
	for (int i = 0; ok && i < 2000 && events_now(c) < 2; i++)
		bench_sleep_us(10000);
	ok = ok && events_now(c) >= 2 && bench_wsfloor_up(fl);
	if (ok) {
		int64_t cpu0 = bench_wsfloor_cpu_ns(fl);
		ok = baseline_throughput(
		    o, floor_prompt, &fs, mix->n_frames, tag, c, ph);
		int64_t cpu1 = bench_wsfloor_cpu_ns(fl);
		if (cpu0 >= 0 && cpu1 >= 0)
			*cpu_ns = cpu1 - cpu0;
	} else {
		fprintf(stderr, "bench: the floor client never connected\n");
	}
	bench_wsfloor_stop(fl, user_ns, sys_ns);
	bench_ws_stop(fs.ws);
	return ok;
}

static bool
baseline_latency(const struct opts *o, struct bench_pub *pub, unsigned tag,
    struct phase *ph)
{
	uint64_t ev0 = events_now(&sub.count), sent = 0;
	char id[BENCH_ID_LEN + 1];
	ph->expected = o->lat_events;
	atomic_store(&sub.lat_n, 0);
	atomic_store(&sub.lat_on, true);
	int64_t t0 = bench_now_ns(), gap = 1000000000 / (int64_t) o->lat_rate;
	size_t n = bench_pub_msgs_per_prompt(pub);
	for (uint64_t k = 0; sent < o->lat_events; k++) {
		bench_prompt_id(id, tag, k);
		for (size_t i = 0; i < n && sent < o->lat_events; i++) {
			/* the bridge's extra messages (state, completion)
			 * follow their event at once, as they do there */
			if (!bench_pub_is_event(pub, i)) {
				bench_pub_one(pub, id, i, 0);
				continue;
			}
			sleep_until(t0 + (int64_t) sent * gap);
			bench_pub_one(pub, id, i, bench_wall_ns());
			sent++;
		}
	}
	wait_all(&sub.count, ev0, ph, t0, o->stall_s);
	atomic_store(&sub.lat_on, false);
	return ph->got == ph->expected;
}

/* ---- main ----------------------------------------------------------- */

static void
usage(void)
{
	fprintf(stderr,
	    "usage: c2m_bench --bridge PATH --broker-port N --trace FILE\n"
	    "  [--shim PATH] [--prompts N] [--lat-events N] [--lat-rate N]\n"
	    "  [--window N] [--soak-events N] [--tag N] [--stall-s N]\n"
	    "  [--no-raw]\n");
}

static bool
parse_opts(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = { { "bridge", 1, NULL, 'b' },
		{ "shim", 1, NULL, 's' }, { "trace", 1, NULL, 't' },
		{ "broker-port", 1, NULL, 'p' }, { "prompts", 1, NULL, 'n' },
		{ "lat-events", 1, NULL, 'l' }, { "lat-rate", 1, NULL, 'r' },
		{ "window", 1, NULL, 'w' }, { "soak-events", 1, NULL, 'k' },
		{ "tag", 1, NULL, 'g' }, { "stall-s", 1, NULL, 'x' },
		{ "no-raw", 0, NULL, 'R' }, { NULL, 0, NULL, 0 } };
	*o = (struct opts) { .prompts = 5000,
		.lat_events = 5000,
		.lat_rate = 1000,
		.window = 200,
		.tag = (unsigned) getpid(),
		.stall_s = 15,
		.raw = true };
	int c;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		char *end = NULL;
		unsigned long v = optarg ? strtoul(optarg, &end, 10) : 0;
		bool num = optarg && end != optarg && *end == '\0';
		switch (c) {
		case 'b':
			o->bridge = optarg;
			continue;
		case 's':
			o->shim = optarg;
			continue;
		case 't':
			o->trace = optarg;
			continue;
		case 'R':
			o->raw = false;
			continue;
		default:
			break;
		}
		if (!num)
			return false;
		switch (c) {
		case 'p':
			o->broker_port = (int) v;
			break;
		case 'n':
			o->prompts = v;
			break;
		case 'l':
			o->lat_events = v;
			break;
		case 'r':
			o->lat_rate = v;
			break;
		case 'w':
			o->window = v;
			break;
		case 'k':
			o->soak_events = v;
			break;
		case 'g':
			o->tag = (unsigned) v;
			break;
		case 'x':
			o->stall_s = (int) v;
			break;
		default:
			return false;
		}
	}
	return o->bridge && o->trace && o->broker_port > 0 && o->prompts > 2
	    && o->lat_rate > 0 && o->window > 0;
}

int
main(int argc, char **argv)
{
	struct opts o;
	if (!parse_opts(argc, argv, &o)) {
		usage();
		return 64;
	}
	signal(SIGPIPE, SIG_IGN);
	struct bench_mix mix;
	if (bench_mix_load(&mix, o.trace) != 0)
		return 1;
	uint64_t f = mix.n_frames;
	if (mix.block_len > 65536)
		fprintf(stderr, "bench: note: prompt block %zu bytes\n",
		    mix.block_len);
	char filter[64];
	snprintf(filter, sizeof(filter), "bench/b%x/#", o.tag);
	if (bench_sub_start(&sub, o.broker_port, filter, o.lat_events) != 0) {
		fprintf(stderr, "bench: subscriber failed\n");
		bench_mix_free(&mix);
		return 1;
	}
	struct bench_ws *ws = bench_ws_start(mix.hello, mix.hello_len);
	if (ws == NULL) {
		bench_mix_free(&mix);
		return 1;
	}
	char alloc_file[64];
	snprintf(alloc_file, sizeof(alloc_file), "/dev/shm/c2m-bench-%d",
	    (int) getpid());
	struct bench_alloc_counts *ac = map_alloc_counts(alloc_file);
	pid_t pid = spawn_bridge(&o, bench_ws_port(ws), alloc_file);
	if (pid < 0) {
		bench_mix_free(&mix);
		return 1;
	}
	bool ok = bench_ws_wait_client(ws, 20000);
	for (int i = 0; ok && i < 2000 && atomic_load(&sub.hello_seen) == 0;
	     i++)
		bench_sleep_us(10000);
	if (!ok || atomic_load(&sub.hello_seen) == 0) {
		fprintf(stderr, "bench: the bridge never delivered hello\n");
		stop_bridge(pid);
		bench_mix_free(&mix);
		return 1;
	}

	/* bridge: throughput (CPU, allocations, capture), then latency */
	struct phase bt = { 0 }, bl = { 0 }, st = { 0 };
	struct proc_sample p0 = { 0 }, p1 = { 0 }, p2 = { 0 };
	unsigned long long a0[2][BENCH_MOD_COUNT], a1[2][BENCH_MOD_COUNT];
	uint64_t others0 = atomic_load(&sub.others);
	uint64_t made0 = atomic_load(&sub.made_up);
	sample_proc(pid, &p0);
	read_allocs(ac, a0);
	bool bt_ok = bridge_throughput(
	    &o, ws, &mix, o.tag, o.prompts, pid, &bt, NULL);
	read_allocs(ac, a1);
	sample_proc(pid, &p1);
	uint64_t others_b = atomic_load(&sub.others) - others0;
	uint64_t made_b = atomic_load(&sub.made_up) - made0;
	bool bl_ok = bridge_latency(&o, ws, &mix, o.tag + 1, &bl);
	double bl50, bl99, blmax;
	latency_percentiles(&bl50, &bl99, &blmax);
	long rss_trace[1024] = { 0 };
	bool st_ok = true;
	uint64_t soak_prompts = (o.soak_events + f - 1) / f;
	if (o.soak_events > 0 && o.soak_events / 100000 < 1023)
		st_ok = bridge_throughput(&o, ws, &mix, o.tag + 2,
		    soak_prompts, pid, &st, rss_trace);
	sample_proc(pid, &p2);
	stop_bridge(pid);
	unsigned http = bench_ws_http_requests(ws);
	bench_ws_stop(ws);

	/* baseline: the captured prompt, straight to the broker */
	pthread_mutex_lock(&sub.cap_mu);
	char cap_id[BENCH_ID_LEN + 1];
	snprintf(cap_id, sizeof(cap_id), "%s", sub.cap_id);
	sub.cap_id[0] = '\0';
	pthread_mutex_unlock(&sub.cap_mu);
	struct bench_pub *pub
	    = bench_pub_start(o.broker_port, sub.cap, sub.cap_n, cap_id);
	struct phase pt = { 0 }, pl = { 0 };
	bool pt_ok = false, pl_ok = false;
	double pl50 = -1, pl99 = -1, plmax = -1;
	uint64_t others1 = atomic_load(&sub.others);
	int64_t pub_cpu0 = 0, net_cpu0 = -1, pub_cpu1 = 0, net_cpu1 = -1;
	if (pub != NULL) {
		pub_cpu0 = bench_pub_cpu_ns(pub, &net_cpu0);
		pt_ok = baseline_throughput(&o, pub_prompt, pub,
		    bench_pub_events_per_prompt(pub), o.tag + 3, &sub.count,
		    &pt);
		pub_cpu1 = bench_pub_cpu_ns(pub, &net_cpu1);
		pl_ok = baseline_latency(&o, pub, o.tag + 4, &pl);
		latency_percentiles(&pl50, &pl99, &plmax);
	}
	uint64_t others_p = atomic_load(&sub.others) - others1;
	size_t base_events = pub ? bench_pub_events_per_prompt(pub) : 0;
	size_t base_msgs = pub ? bench_pub_msgs_per_prompt(pub) : 0;
	bench_pub_stop(pub);

	/* the raw baseline: same messages, batched writes, no libmosquitto */
	struct bench_rawpub *raw = o.raw
	    ? bench_rawpub_start(o.broker_port, sub.cap, sub.cap_n, cap_id)
	    : NULL;
	struct phase rt = { 0 };
	bool rt_ok = !o.raw;
	int64_t raw_cpu0 = 0, rd_cpu0 = -1, raw_cpu1 = 0, rd_cpu1 = -1;
	uint64_t raw_acks = 0, raw_qos1 = 0;
	if (raw != NULL) {
		raw_cpu0 = bench_rawpub_cpu_ns(raw, &rd_cpu0);
		rt_ok = baseline_throughput(&o, rawpub_prompt, raw,
		    base_events, o.tag + 5, &sub.count, &rt);
		raw_cpu1 = bench_rawpub_cpu_ns(raw, &rd_cpu1);
		raw_acks = bench_rawpub_pubacks(raw);
		raw_qos1 = o.prompts * bench_rawpub_qos1_per_prompt(raw);
	}
	bench_rawpub_stop(raw);

	/* the libwebsockets floor: no broker, no subscriber */
	struct phase ft = { 0 };
	int64_t floor_cpu = -1, floor_user = -1, floor_sys = -1;
	bool ft_ok = floor_throughput(&o, &mix, o.tag + 6, false, &ft,
	    &floor_cpu, &floor_user, &floor_sys);
	/* the ws:// path's floor: lws RAW and input/wsframe.c */
	struct phase rf = { 0 };
	int64_t rfloor_cpu = -1, rfloor_user = -1, rfloor_sys = -1;
	ft_ok = floor_throughput(&o, &mix, o.tag + 7, true, &rf, &rfloor_cpu,
	            &rfloor_user, &rfloor_sys)
	    && ft_ok;

	unsigned long long alloc_total = 0;
	printf("frames_per_prompt=%llu prompt_block_bytes=%zu "
	       "captured_msgs_per_prompt=%zu captured_events_per_prompt=%zu",
	    (unsigned long long) f, mix.block_len, base_msgs, base_events);
	printf(" bridge_events=%llu/%llu bridge_secs=%.3f bridge_eps=%.0f",
	    (unsigned long long) bt.got, (unsigned long long) bt.expected,
	    bt.secs, bt.eps);
	printf(
	    " base_events=%llu/%llu base_secs=%.3f base_eps=%.0f ratio=%.3f",
	    (unsigned long long) pt.got, (unsigned long long) pt.expected,
	    pt.secs, pt.eps, pt.eps > 0 ? bt.eps / pt.eps : 0);
	printf(" bridge_other_per_event=%.3f base_other_per_event=%.3f",
	    bt.got ? (double) others_b / (double) bt.got : 0,
	    pt.got ? (double) others_p / (double) pt.got : 0);
	printf(" bridge_made_up_events=%llu", (unsigned long long) made_b);
	double per = bt.got ? 1e6 / (double) bt.got : 0;
	double user = p1.user_s - p0.user_s, sys = p1.sys_s - p0.sys_s;
	printf(" cpu_us_per_event=%.3f user_us_per_event=%.3f "
	       "sys_us_per_event=%.3f main_thread_us_per_event=%.3f "
	       "other_threads_us_per_event=%.3f ctxsw_per_event=%.3f",
	    (user + sys) * per, user * per, sys * per,
	    (p1.main_s - p0.main_s) * per,
	    (user + sys - (p1.main_s - p0.main_s)) * per,
	    bt.got ? (double) (p1.ctxsw - p0.ctxsw) / (double) bt.got : 0);
	/* the baseline's CPU over its own throughput window: what a client
	 * that only publishes already-built messages with libmosquitto
	 * costs per event, measured next to the bridge in the same run */
	double base_per = pt.got ? 1e-3 / (double) pt.got : 0; /* ns -> us */
	double base_pub = (double) (pub_cpu1 - pub_cpu0) * base_per;
	double base_net = net_cpu0 >= 0 && net_cpu1 >= 0
	    ? (double) (net_cpu1 - net_cpu0) * base_per
	    : 0;
	double bridge_cpu = (user + sys) * per;
	printf(" base_cpu_us_per_event=%.3f base_publish_thread_us_per_event="
	       "%.3f base_net_thread_us_per_event=%.3f cpu_ratio=%.3f",
	    base_pub + base_net, base_pub, base_net,
	    base_pub + base_net > 0 ? bridge_cpu / (base_pub + base_net) : 0);
	double raw_per = rt.got ? 1e-3 / (double) rt.got : 0; /* ns -> us */
	double raw_pub = (double) (raw_cpu1 - raw_cpu0) * raw_per;
	double raw_rd = rd_cpu0 >= 0 && rd_cpu1 >= 0
	    ? (double) (rd_cpu1 - rd_cpu0) * raw_per
	    : 0;
	printf(" raw_events=%llu/%llu raw_eps=%.0f raw_ratio=%.3f "
	       "raw_cpu_us_per_event=%.3f raw_publish_us_per_event=%.3f "
	       "raw_reader_us_per_event=%.3f raw_pubacks=%llu/%llu",
	    (unsigned long long) rt.got, (unsigned long long) rt.expected,
	    rt.eps, rt.eps > 0 ? bt.eps / rt.eps : 0, raw_pub + raw_rd,
	    raw_pub, raw_rd, (unsigned long long) raw_acks,
	    (unsigned long long) raw_qos1);
	/* lws alone costs this much of the bridge's CPU per event */
	double ft_per = ft.got ? 1e-3 / (double) ft.got : 0; /* ns -> us */
	printf(" ws_floor_events=%llu/%llu ws_floor_eps=%.0f "
	       "ws_floor_cpu_us_per_event=%.3f",
	    (unsigned long long) ft.got, (unsigned long long) ft.expected,
	    ft.eps, floor_cpu >= 0 ? (double) floor_cpu * ft_per : -1.0);
	/* over the client's whole life (connect and hello included) */
	printf(
	    " ws_floor_user_us_per_event=%.3f ws_floor_sys_us_per_event=%.3f",
	    floor_user >= 0 ? (double) floor_user * ft_per : -1.0,
	    floor_sys >= 0 ? (double) floor_sys * ft_per : -1.0);
	double rf_per = rf.got ? 1e-3 / (double) rf.got : 0;
	printf(" ws_raw_floor_events=%llu/%llu ws_raw_floor_eps=%.0f "
	       "ws_raw_floor_cpu_us_per_event=%.3f "
	       "ws_raw_floor_user_us_per_event=%.3f "
	       "ws_raw_floor_sys_us_per_event=%.3f",
	    (unsigned long long) rf.got, (unsigned long long) rf.expected,
	    rf.eps, rfloor_cpu >= 0 ? (double) rfloor_cpu * rf_per : -1.0,
	    rfloor_user >= 0 ? (double) rfloor_user * rf_per : -1.0,
	    rfloor_sys >= 0 ? (double) rfloor_sys * rf_per : -1.0);
	printf(" rss_start_kib=%ld rss_peak_kib=%ld rss_end_kib=%ld",
	    p0.rss_kib, p2.hwm_kib, p2.rss_kib);
	static const char *mods[] = { "exe", "mosq", "lws", "libc", "other" };
	for (int t = 0; t < 2; t++)
		for (int m = 0; m < BENCH_MOD_COUNT; m++) {
			unsigned long long d = a1[t][m] - a0[t][m];
			alloc_total += d;
			printf(" allocs_%s_%s=%.3f", t ? "thr" : "main",
			    mods[m],
			    bt.got ? (double) d / (double) bt.got : 0);
		}
	printf(" allocs_per_event=%.3f",
	    bt.got ? (double) alloc_total / (double) bt.got : 0);
	printf(" lat_events=%llu/%llu base_lat_events=%llu/%llu",
	    (unsigned long long) bl.got, (unsigned long long) bl.expected,
	    (unsigned long long) pl.got, (unsigned long long) pl.expected);
	printf(" bridge_lat_p50_us=%.0f bridge_lat_p99_us=%.0f "
	       "bridge_lat_max_us=%.0f",
	    bl50, bl99, blmax);
	printf(" base_lat_p50_us=%.0f base_lat_p99_us=%.0f "
	       "base_lat_max_us=%.0f",
	    pl50, pl99, plmax);
	printf(" http_requests=%u", http);
	if (o.soak_events > 0) {
		printf(" soak_events=%llu/%llu soak_eps=%.0f soak_rss_kib=",
		    (unsigned long long) st.got,
		    (unsigned long long) st.expected, st.eps);
		for (uint64_t i = 0; i <= st.expected / 100000 && i < 1024;
		     i++)
			printf("%s%ld", i ? "," : "", rss_trace[i]);
	}
	printf("\n");
	fflush(stdout);
	bench_sub_stop(&sub);
	unlink(alloc_file);
	bench_mix_free(&mix);
	bool all = bt_ok && bl_ok && st_ok && pt_ok && pl_ok && rt_ok && ft_ok
	    && base_events == f;
	if (!all)
		fprintf(stderr,
		    "bench: FAILED: bridge %llu/%llu, latency %llu/%llu, "
		    "soak %llu/%llu, baseline %llu/%llu, baseline latency "
		    "%llu/%llu, raw baseline %llu/%llu, ws floor %llu/%llu, "
		    "captured %zu events per prompt (want %llu)\n",
		    (unsigned long long) bt.got,
		    (unsigned long long) bt.expected,
		    (unsigned long long) bl.got,
		    (unsigned long long) bl.expected,
		    (unsigned long long) st.got,
		    (unsigned long long) st.expected,
		    (unsigned long long) pt.got,
		    (unsigned long long) pt.expected,
		    (unsigned long long) pl.got,
		    (unsigned long long) pl.expected,
		    (unsigned long long) rt.got,
		    (unsigned long long) rt.expected,
		    (unsigned long long) ft.got,
		    (unsigned long long) ft.expected, base_events,
		    (unsigned long long) f);
	return all ? 0 : 1;
}
