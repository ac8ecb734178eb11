/* The peer rows (c2m_bench_peers): shared declarations of bench_peers.c
 * (the workload, the comfy2mqtt and Node.js rows) and bench_direct.c (the
 * mosquitto_pub -l row). See README.md, "Peer rows". */
#ifndef C2M_BENCH_PEERS_H
#define C2M_BENCH_PEERS_H

#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "bench.h"

struct peers_opts {
	const char *bridge;
	const char *trace;
	const char *node; /* the node binary */
	const char *node_peer; /* peer.js; NULL: no Node row */
	const char *mosquitto_pub; /* NULL: no direct row */
	const char *workdir; /* the direct row's input files */
	bool direct_one_topic; /* also the one-process, one-topic row */
	int broker_port;
	uint64_t frames; /* the workload, rounded up to whole prompts */
	uint64_t prompts;
	uint64_t warmup; /* prompts sent one at a time before timing */
	uint64_t window; /* frames outstanding (0: as fast as read) */
	unsigned tag;
	int stall_s; /* give up when nothing arrives for this long */
};

/* One row of the table: what one bridge (or publisher) did with the
 * workload. */
struct peers_row {
	bool ran, ok;
	uint64_t frames; /* of the workload (events/s = frames / secs) */
	double secs; /* first write -> last lifecycle event (direct row:
	              * last message) at the subscriber */
	double user_s, sys_s; /* the process(es) over that time */
	long hwm_kib; /* peak RSS (direct row: sum over its processes) */
	uint64_t lifecycle, lifecycle_expected;
	uint64_t events; /* event messages that arrived (frames relayed) */
	uint64_t made_up; /* queued / lost events (comfy2mqtt's own) */
	/* comfy2mqtt over its whole life: messages it published (its own
	 * bridge/health count, -1: unknown) and that reached the subscriber */
	long long published;
	uint64_t received;
	int procs; /* direct row: mosquitto_pub processes */
	uint64_t msgs, msgs_expected; /* direct row: every message */
};

struct peers_proc {
	double user_s, sys_s;
	long hwm_kib;
};

extern struct bench_sub peers_sub;
/* the prompt captured from comfy2mqtt during its warm-up ("" if none) */
extern char peers_capture_id[BENCH_ID_LEN + 1];

bool peers_proc_sample(pid_t pid, struct peers_proc *s);
/* posix_spawnp with this environment; -1 on failure (logged). */
pid_t peers_spawn(char *const argv[], const posix_spawn_file_actions_t *fa);
/* SIGTERM, then SIGKILL after 5 s; reaps. */
void peers_stop(pid_t pid);
double peers_eps(const struct peers_row *r);

/* The direct row: the captured prompt's messages for o->prompts fresh
 * ids, through one mosquitto_pub -l per topic, or (one_topic) through a
 * single one, to the topic that has the most of them. */
bool peers_direct_row(
    const struct peers_opts *o, bool one_topic, struct peers_row *r);

#endif
