/* c2m_bench_peers: the peer rows (README.md, "Peer rows"). One workload
 * (N frames of the mix, every replay under a fresh prompt id) carried by
 * comfy2mqtt, then by the Node.js peer (node_peer/peer.js), then
 * published straight to the broker by mosquitto_pub -l processes fed the
 * payloads comfy2mqtt itself published, one after another against one
 * broker and one subscriber. Prints one line of key=value results; exits
 * non-zero when a lifecycle event (or, for the direct row, any message)
 * went missing. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "bench_peers.h"

extern char **environ;

struct bench_sub peers_sub;
char peers_capture_id[BENCH_ID_LEN + 1];

static const char *const lifecycle_types[] = { "execution_start",
	"execution_success", "execution_error", "execution_interrupted" };

/* Waits until c has not moved for quiet_ms (the tail of a row). */
static void
wait_quiet(const struct bench_counter *c, int quiet_ms)
{
	uint64_t last = atomic_load(&c->events);
	for (;;) {
		bench_sleep_us((long) quiet_ms * 1000);
		uint64_t now = atomic_load(&c->events);
		if (now == last)
			return;
		last = now;
	}
}

bool
peers_proc_sample(pid_t pid, struct peers_proc *s)
{
	char path[64], buf[4096];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return false;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	const char *p = strrchr(buf, ')');
	unsigned long ut, st;
	/* utime and stime of the whole thread group: fields 14 and 15 */
	if (p == NULL
	    || sscanf(p + 2,
	           "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
	           &st)
	        != 2)
		return false;
	double hz = (double) sysconf(_SC_CLK_TCK);
	s->user_s = (double) ut / hz;
	s->sys_s = (double) st / hz;
	snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);
	f = fopen(path, "r");
	while (f != NULL && fgets(buf, sizeof(buf), f) != NULL)
		sscanf(buf, "VmHWM: %ld", &s->hwm_kib);
	if (f != NULL)
		fclose(f);
	return true;
}

pid_t
peers_spawn(char *const argv[], const posix_spawn_file_actions_t *fa)
{
	pid_t pid;
	int rc = posix_spawnp(&pid, argv[0], fa, NULL, argv, environ);
	if (rc != 0) {
		fprintf(stderr, "bench: cannot start %s: %s\n", argv[0],
		    strerror(rc));
		return -1;
	}
	return pid;
}

void
peers_stop(pid_t pid)
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

/* The lifecycle frames of one prompt of the mix (the payload of every
 * frame starts with its "type"). */
static size_t
mix_lifecycle(const struct bench_mix *mix)
{
	size_t n = 0;
	for (size_t i = 0; i < mix->n_frames; i++) {
		const struct bench_frame *fr = &mix->frames[i];
		const char *k
		    = memmem(mix->block + fr->off, fr->len, "\"type\": \"", 9);
		if (k == NULL)
			continue;
		for (size_t t = 0; t < 4; t++) {
			size_t l = strlen(lifecycle_types[t]);
			if (strncmp(k + 9, lifecycle_types[t], l) == 0
			    && k[9 + l] == '"')
				n++;
		}
	}
	return n;
}

/* ---- a bridge row (comfy2mqtt or the Node peer) --------------------- */

/* Sends n prompts (ids of tag) one at a time, each once the one before
 * is fully in (no coalescing: the capture sees a whole prompt). */
static bool
warm_up(struct bench_ws *ws, struct bench_mix *mix, unsigned tag, uint64_t n,
    bool capture, int stall_s)
{
	char id[BENCH_ID_LEN + 1];
	uint64_t ev0 = atomic_load(&peers_sub.count.events);
	for (uint64_t k = 0; k < n; k++) {
		bench_prompt_id(id, tag, k);
		if (capture && k == n / 2)
			bench_sub_capture(&peers_sub, id);
		bench_patch_ids(mix->block, mix->id_offs, mix->n_ids, id);
		if (!bench_ws_write(ws, mix->block, mix->block_len)
		    || !bench_wait_events(&peers_sub.count,
		        ev0 + (k + 1) * mix->n_frames, stall_s))
			return false;
	}
	wait_quiet(&peers_sub.all, 100);
	if (!capture)
		return true;
	pthread_mutex_lock(&peers_sub.cap_mu);
	snprintf(peers_capture_id, sizeof(peers_capture_id), "%s",
	    peers_sub.cap_id);
	peers_sub.cap_id[0] = '\0';
	pthread_mutex_unlock(&peers_sub.cap_mu);
	return true;
}

/* The timed part: every prompt back to back, as fast as the peer reads,
 * until every lifecycle event is in. */
static void
blast(const struct peers_opts *o, struct bench_ws *ws, struct bench_mix *mix,
    unsigned tag, pid_t pid, struct peers_row *r)
{
	char id[BENCH_ID_LEN + 1];
	uint64_t lc0 = atomic_load(&peers_sub.lifecycle.events);
	uint64_t ev0 = atomic_load(&peers_sub.count.events);
	uint64_t mu0 = atomic_load(&peers_sub.made_up);
	r->lifecycle_expected = o->prompts * mix_lifecycle(mix);
	r->frames = o->prompts * mix->n_frames;
	struct peers_proc p0 = { 0 }, p1 = { 0 };
	peers_proc_sample(pid, &p0);
	int64_t t0 = bench_now_ns();
	/* --window: at most that many frames' worth of whole prompts whose
	 * lifecycle events have not all arrived (those are never
	 * coalesced, so the loop cannot wait for what will not come) */
	uint64_t lpp = mix_lifecycle(mix), wp = o->window / mix->n_frames;
	for (uint64_t k = 0; k < o->prompts; k++) {
		if (o->window > 0 && k >= wp
		    && !bench_wait_events(&peers_sub.lifecycle,
		        lc0 + (k - wp) * lpp, o->stall_s))
			break;
		bench_prompt_id(id, tag, k);
		bench_patch_ids(mix->block, mix->id_offs, mix->n_ids, id);
		if (!bench_ws_write(ws, mix->block, mix->block_len))
			break;
	}
	bench_wait_events(
	    &peers_sub.lifecycle, lc0 + r->lifecycle_expected, o->stall_s);
	int64_t end = atomic_load(&peers_sub.lifecycle.last_ns);
	peers_proc_sample(pid, &p1);
	wait_quiet(&peers_sub.all, 200);
	r->lifecycle = atomic_load(&peers_sub.lifecycle.events) - lc0;
	r->events = atomic_load(&peers_sub.count.events) - ev0;
	r->made_up = atomic_load(&peers_sub.made_up) - mu0;
	r->secs = (double) (end - t0) / 1e9;
	r->user_s = p1.user_s - p0.user_s;
	r->sys_s = p1.sys_s - p0.sys_s;
	r->hwm_kib = p1.hwm_kib;
	r->ok = r->lifecycle == r->lifecycle_expected;
}

/* comfy2mqtt's own count of the messages it handed to libmosquitto
 * (every class), from its next bridge/health (-1: none came). The
 * subscriber's count of all its messages less this one tells what the
 * broker dropped on the way; the rest of the frames it did not relay it
 * coalesced. */
static long long
health_published(void)
{
	uint64_t n0 = atomic_load(&peers_sub.health_n);
	for (int i = 0; i < 300 && atomic_load(&peers_sub.health_n) == n0; i++)
		bench_sleep_us(10000);
	long long v = -1;
	pthread_mutex_lock(&peers_sub.cap_mu);
	const char *p = strstr(peers_sub.health, "\"published\":{");
	const char *e = p ? strchr(p, '}') : NULL;
	if (atomic_load(&peers_sub.health_n) != n0 && e != NULL) {
		v = 0;
		for (p = strchr(p + 12, ':'); p != NULL && p < e;
		     p = strchr(p + 1, ':'))
			v += strtoll(p + 1, NULL, 10);
	}
	if (getenv("C2M_BENCH_VERBOSE"))
		fprintf(stderr, "bench: last health: %s\n", peers_sub.health);
	pthread_mutex_unlock(&peers_sub.cap_mu);
	return v;
}

/* One bridge row: starts a load source and the bridge (tmpl, with "{ws}",
 * "{http}" and "{mqtt}" standing for the addresses), warms it up, runs
 * the workload under prompt ids of its own (tag), stops it. capture: the
 * comfy2mqtt row (its prompt is captured, its health read). */
static bool
peer_row(const struct peers_opts *o, struct bench_mix *mix, char *const tmpl[],
    bool capture, unsigned tag, struct peers_row *r)
{
	struct bench_ws *ws = bench_ws_start(mix->hello, mix->hello_len);
	if (ws == NULL)
		return false;
	char wsurl[96], http[64], mqtt[64], *argv[32];
	snprintf(wsurl, sizeof(wsurl), "ws://127.0.0.1:%d/ws?clientId=bench",
	    bench_ws_port(ws));
	snprintf(http, sizeof(http), "http://127.0.0.1:%d", bench_ws_port(ws));
	snprintf(mqtt, sizeof(mqtt), "mqtt://127.0.0.1:%d", o->broker_port);
	size_t n = 0;
	for (; tmpl[n] != NULL && n < 31; n++)
		argv[n] = strcmp(tmpl[n], "{ws}") == 0 ? wsurl
		    : strcmp(tmpl[n], "{http}") == 0   ? http
		    : strcmp(tmpl[n], "{mqtt}") == 0   ? mqtt
		                                       : tmpl[n];
	argv[n] = NULL;
	uint64_t hello0 = atomic_load(&peers_sub.hello_seen);
	uint64_t all0 = atomic_load(&peers_sub.all.events);
	pid_t pid = peers_spawn(argv, NULL);
	bool ok = pid > 0 && bench_ws_wait_client(ws, 20000);
	for (int i = 0;
	     ok && i < 2000 && atomic_load(&peers_sub.hello_seen) == hello0;
	     i++)
		bench_sleep_us(10000);
	ok = ok && atomic_load(&peers_sub.hello_seen) != hello0;
	if (!ok)
		fprintf(stderr, "bench: %s never relayed hello\n", argv[0]);
	ok = ok && warm_up(ws, mix, tag, o->warmup, capture, o->stall_s);
	if (ok)
		blast(o, ws, mix, tag + 1, pid, r);
	r->published = -1;
	if (ok && capture) {
		r->published = health_published();
		r->received = atomic_load(&peers_sub.all.events) - all0 - 1;
	}
	if (pid > 0)
		peers_stop(pid);
	bench_ws_stop(ws);
	r->ran = ok;
	return ok && r->ok;
}

/* ---- main ------------------------------------------------------------ */

static void
print_row(const char *k, const struct peers_row *r)
{
	double per = r->frames ? 1e6 / (double) r->frames : 0;
	if (!r->ran) {
		printf(" %s_ran=0", k);
		return;
	}
	printf(" %s_ran=1 %s_frames=%llu %s_secs=%.3f %s_eps=%.0f", k, k,
	    (unsigned long long) r->frames, k, r->secs, k, peers_eps(r));
	printf(" %s_cpu_us=%.2f %s_user_us=%.2f %s_sys_us=%.2f", k,
	    (r->user_s + r->sys_s) * per, k, r->user_s * per, k,
	    r->sys_s * per);
	printf(" %s_rss_kib=%ld %s_lifecycle=%llu/%llu %s_events=%llu", k,
	    r->hwm_kib, k, (unsigned long long) r->lifecycle,
	    (unsigned long long) r->lifecycle_expected, k,
	    (unsigned long long) r->events);
	printf(" %s_queued=%llu", k, (unsigned long long) r->made_up);
	/* progress the bridge coalesced (or the broker dropped on the way
	 * to the subscriber: published - received); the direct rows publish
	 * everything */
	if (r->procs > 0) {
		printf(" %s_procs=%d %s_msgs=%llu/%llu", k, r->procs, k,
		    (unsigned long long) r->msgs,
		    (unsigned long long) r->msgs_expected);
		return;
	}
	printf(" %s_coalesced=%lld", k,
	    (long long) r->frames - (long long) r->events);
	if (r->published >= 0)
		printf(" %s_published=%lld %s_received=%llu", k, r->published,
		    k, (unsigned long long) r->received);
}

static double
ratio(double a, double b)
{
	return b > 0 ? a / b : 0;
}

double
peers_eps(const struct peers_row *r)
{
	return r->secs > 0 ? (double) r->frames / r->secs : 0;
}

static void
print_ratios(const struct peers_row *c, const struct peers_row *n,
    const struct peers_row *d)
{
	double ccpu = c->user_s + c->sys_s, ncpu = n->user_s + n->sys_s;
	if (c->ran && n->ran)
		printf(" eps_c2m_node=%.3f cpu_c2m_node=%.3f",
		    ratio(peers_eps(c), peers_eps(n)),
		    ratio(
		        ccpu / (double) c->frames, ncpu / (double) n->frames));
	if (c->ran && d->ran)
		printf(" eps_c2m_direct=%.3f cpu_c2m_direct=%.3f",
		    ratio(peers_eps(c), peers_eps(d)),
		    ratio(ccpu / (double) c->frames,
		        (d->user_s + d->sys_s) / (double) d->frames));
}

static void
usage(void)
{
	fprintf(stderr,
	    "usage: c2m_bench_peers --broker-port N --trace FILE --bridge "
	    "PATH\n"
	    "  [--frames N] [--warmup N] [--node-peer FILE.js] [--node PATH]\n"
	    "  [--mosquitto-pub PATH] [--direct-one-topic]\n"
	    "  [--window N] [--workdir DIR]"
	    " [--tag N] [--stall-s N]\n");
}

static bool
parse_opts(int argc, char **argv, struct peers_opts *o)
{
	static const struct option lo[] = { { "bridge", 1, NULL, 'b' },
		{ "trace", 1, NULL, 't' }, { "broker-port", 1, NULL, 'p' },
		{ "frames", 1, NULL, 'f' }, { "warmup", 1, NULL, 'w' },
		{ "node-peer", 1, NULL, 'j' }, { "node", 1, NULL, 'n' },
		{ "mosquitto-pub", 1, NULL, 'm' }, { "workdir", 1, NULL, 'd' },
		{ "tag", 1, NULL, 'g' }, { "stall-s", 1, NULL, 'x' },
		{ "direct-one-topic", 0, NULL, 'O' },
		{ "window", 1, NULL, 'W' }, { NULL, 0, NULL, 0 } };
	*o = (struct peers_opts) { .frames = 100000,
		.warmup = 20,
		.node = "node",
		.workdir = "/tmp",
		.tag = (unsigned) getpid(),
		.stall_s = 15 };
	int c;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'b':
			o->bridge = optarg;
			break;
		case 't':
			o->trace = optarg;
			break;
		case 'p':
			o->broker_port = atoi(optarg);
			break;
		case 'f':
			o->frames = strtoull(optarg, NULL, 10);
			break;
		case 'w':
			o->warmup = strtoull(optarg, NULL, 10);
			break;
		case 'j':
			o->node_peer = optarg;
			break;
		case 'n':
			o->node = optarg;
			break;
		case 'm':
			o->mosquitto_pub = optarg;
			break;
		case 'd':
			o->workdir = optarg;
			break;
		case 'g':
			o->tag = (unsigned) strtoul(optarg, NULL, 10);
			break;
		case 'x':
			o->stall_s = atoi(optarg);
			break;
		case 'O':
			o->direct_one_topic = true;
			break;
		case 'W':
			o->window = strtoull(optarg, NULL, 10);
			break;
		default:
			return false;
		}
	}
	return o->bridge && o->trace && o->broker_port > 0 && o->frames > 0
	    && o->warmup > 1;
}

int
main(int argc, char **argv)
{
	struct peers_opts o;
	if (!parse_opts(argc, argv, &o)) {
		usage();
		return 64;
	}
	signal(SIGPIPE, SIG_IGN);
	struct bench_mix mix;
	if (bench_mix_load(&mix, o.trace) != 0)
		return 1;
	o.prompts = (o.frames + mix.n_frames - 1) / mix.n_frames;
	if (bench_sub_start(&peers_sub, o.broker_port, "bench/#", 1) != 0) {
		fprintf(stderr, "bench: subscriber failed\n");
		return 1;
	}
	char inst[32], cid[32];
	snprintf(inst, sizeof(inst), "c%x", o.tag);
	snprintf(cid, sizeof(cid), "bench-c2m-%x", o.tag);
	char *c2m[] = { (char *) o.bridge, "--comfyui", "{http}", "--mqtt",
		"{mqtt}", "--prefix", "bench", "--instance", inst,
		"--client-id", "bench-client", "--mqtt-client-id", cid,
		"--log-level", "warn", "--health-interval", "1", NULL };
	struct peers_row rc = { 0 }, rn = { 0 }, rd = { 0 }, r1 = { 0 };
	bool ok = peer_row(&o, &mix, c2m, true, o.tag, &rc);
	if (o.node_peer != NULL) {
		char ninst[32];
		snprintf(ninst, sizeof(ninst), "n%x", o.tag);
		char *node[] = { (char *) o.node, (char *) o.node_peer, "{ws}",
			"{mqtt}", "bench", ninst, NULL };
		ok = peer_row(&o, &mix, node, false, o.tag + 4, &rn) && ok;
	}
	if (o.mosquitto_pub != NULL)
		ok = peers_direct_row(&o, false, &rd) && ok;
	if (o.mosquitto_pub != NULL && o.direct_one_topic)
		ok = peers_direct_row(&o, true, &r1) && ok;
	printf("frames_per_prompt=%zu prompts=%llu lifecycle_per_prompt=%zu",
	    mix.n_frames, (unsigned long long) o.prompts, mix_lifecycle(&mix));
	print_row("c2m", &rc);
	print_row("node", &rn);
	print_row("direct", &rd);
	print_row("direct1", &r1);
	print_ratios(&rc, &rn, &rd);
	if (rc.ran && r1.ran)
		printf(" eps_c2m_direct1=%.3f",
		    ratio(peers_eps(&rc), peers_eps(&r1)));
	printf("\n");
	fflush(stdout);
	bench_sub_stop(&peers_sub);
	bench_mix_free(&mix);
	return ok ? 0 : 1;
}
