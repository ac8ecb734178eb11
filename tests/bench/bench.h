/* comfy2mqtt benchmark: shared declarations of the driver's parts (the
 * ComfyUI load source, the MQTT subscriber, the baseline publisher and the
 * frame mix). See README.md for the method. */
#ifndef C2M_BENCH_H
#define C2M_BENCH_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define BENCH_ID_LEN 36 /* uuid4 text: every prompt id has this length */
#define BENCH_TS_LEN 19 /* CLOCK_REALTIME ns, zero padded */
#define BENCH_TS_KEY "\"bench_ts\":\"" /* as the bridge re-emits it */

int64_t bench_now_ns(void);
/* CPU time of clock clk (CLOCK_THREAD_CPUTIME_ID, a pthread_getcpuclockid
 * clock) in ns; -1 when it cannot be read. */
int64_t bench_cpu_ns(clockid_t clk); /* CLOCK_MONOTONIC */
/* CPU time of thread t so far in ns; -1 when it was not started or its
 * clock cannot be read. */
int64_t bench_thread_cpu_ns(pthread_t t, bool started);
int64_t bench_wall_ns(void); /* CLOCK_REALTIME (latency stamps) */
/* Writes all len bytes to fd (blocking, EINTR retried); false on error or
 * when the peer is gone. */
bool bench_write_all(int fd, const void *buf, size_t len);

/* What a closed-loop phase waits on: events seen so far and when the
 * last one was seen (monotonic ns). */
struct bench_counter {
	atomic_uint_fast64_t events;
	atomic_int_fast64_t last_ns;
};

void bench_sleep_us(long us);
/* Waits until c counts target events; false when the count stalls for
 * stall_s seconds first. */
bool bench_wait_events(
    const struct bench_counter *c, uint64_t target, int stall_s);

/* ---- the frame mix (bench_mix.c) ---------------------------------- */

struct bench_frame {
	size_t off; /* of the frame (header included) in the block */
	size_t len; /* header + payload */
	size_t ts_off; /* of the 19 timestamp digits in the block */
};

/* One prompt's worth of prebuilt WebSocket frames in one buffer; the
 * prompt id is patched in place for every prompt (same length). */
struct bench_mix {
	char *block;
	size_t block_len;
	struct bench_frame *frames;
	size_t n_frames;
	size_t *id_offs; /* every occurrence of the prompt id in block */
	size_t n_ids;
	char template_id[BENCH_ID_LEN + 1];
	char *hello; /* connect-time frames: first status, feature_flags */
	size_t hello_len;
};

/* Reads a trace (jsonl) and prebuilds the per-prompt block: status and
 * feature_flags lines go to hello, every other text line gets a
 * "bench_ts" slot as the last key of its data. Owns everything in mix. */
int bench_mix_load(struct bench_mix *mix, const char *trace_path);
void bench_mix_free(struct bench_mix *mix);
/* Writes the id of prompt k of run tag into out (37 bytes). */
void bench_prompt_id(char *out, unsigned tag, uint64_t k);
/* Patches id (BENCH_ID_LEN bytes) at every id_offs of buf. */
void bench_patch_ids(char *buf, const size_t *offs, size_t n, const char *id);
/* Writes wall-clock ns as 19 digits at p. */
void bench_put_ts(char *p, int64_t wall_ns);

/* ---- the load source (bench_ws.c) --------------------------------- */

struct bench_ws;

/* Listens on 127.0.0.1:port (0: any free port) and answers: the
 * WebSocket upgrade on /ws (then sends hello and reads/ignores the
 * client's frames, answering pings), GET /queue (empty queue), GET
 * /history... ({}), GET /system_stats, anything else {}. Borrows hello. */
struct bench_ws *bench_ws_start(const char *hello, size_t hello_len);
int bench_ws_port(const struct bench_ws *w);
/* Waits for the WebSocket client; false after timeout_ms. */
bool bench_ws_wait_client(struct bench_ws *w, int timeout_ms);
/* Writes len bytes to the client (blocking); false when it is gone. */
bool bench_ws_write(struct bench_ws *w, const void *buf, size_t len);
unsigned bench_ws_http_requests(const struct bench_ws *w);
void bench_ws_stop(struct bench_ws *w);

/* ---- the subscriber (bench_sub.c) --------------------------------- */

struct bench_capture_msg {
	char *topic;
	void *payload;
	int len;
	int qos;
	bool retain;
	void *props; /* mosquitto_property *, copied */
};

struct bench_sub {
	void *mosq;
	char filter[256];
	atomic_bool connected;
	/* messages on .../event/<type> relaying a ComfyUI frame (events
	 * the bridge makes up itself, queued and lost, are counted apart) */
	struct bench_counter count;
	atomic_uint_fast64_t made_up;
	/* every message, and the relayed lifecycle events (execution_start
	 * and the terminal types): the peer rows (bench_peers.c) wait on
	 * these, since progress may be coalesced */
	struct bench_counter all;
	struct bench_counter lifecycle;
	/* the last bridge/health payload (under cap_mu) and how many came */
	char health[4096];
	atomic_uint_fast64_t health_n;
	atomic_uint_fast64_t others; /* state, completion, queue, bridge/... */
	atomic_uint_fast64_t hello_seen; /* event/feature_flags messages */
	/* latency samples (µs x 1000 = ns), filled while lat_on */
	atomic_bool lat_on;
	int64_t *lat_ns;
	size_t lat_cap;
	atomic_size_t lat_n;
	/* capture of one prompt's messages (for the baseline) */
	pthread_mutex_t cap_mu;
	char cap_id[BENCH_ID_LEN + 1]; /* empty: off */
	struct bench_capture_msg *cap;
	size_t cap_n, cap_cap;
};

/* Connects (MQTT 5, own thread) and subscribes QoS 1 to filter. */
int bench_sub_start(
    struct bench_sub *s, int port, const char *filter, size_t lat_cap);
/* Records every message whose topic or payload carries id, from now. */
void bench_sub_capture(struct bench_sub *s, const char *id);
void bench_sub_stop(struct bench_sub *s);

/* ---- the baseline publisher (bench_pub.c) ------------------------- */

struct bench_pub;

/* Connects (MQTT 5, own thread, in-flight window 1000 like the bridge)
 * and takes the captured messages of one bridge prompt as the template
 * of every prompt it publishes (copies them). */
struct bench_pub *bench_pub_start(int port,
    const struct bench_capture_msg *cap, size_t n, const char *cap_id);
size_t bench_pub_events_per_prompt(const struct bench_pub *p);
size_t bench_pub_msgs_per_prompt(const struct bench_pub *p);
bool bench_pub_is_event(const struct bench_pub *p, size_t msg);
/* Publishes the whole template for prompt id; returns the number of
 * event messages published. */
size_t bench_pub_prompt(struct bench_pub *p, const char *id);
/* Publishes template message msg for prompt id; an event message gets
 * ts_wall as its "bench_ts" stamp (0: none). */
bool bench_pub_one(
    struct bench_pub *p, const char *id, size_t msg, int64_t ts_wall);
/* CPU time the publisher has used: returns the calling thread's time
 * inside bench_pub_prompt(); *net_ns = its network thread's time so far
 * (-1 when unknown). Both in ns. */
int64_t bench_pub_cpu_ns(const struct bench_pub *p, int64_t *net_ns);
void bench_pub_stop(struct bench_pub *p);

/* ---- the raw baseline (bench_rawpub.c) ---------------------------- */

/* The same captured messages through a minimal MQTT 5 writer of our own
 * on a plain socket: one write() per prompt, PUBACKs read in bulk by a
 * reader thread. Benchmark only (no reconnect, TLS or resending). */
struct bench_rawpub;
struct bench_rawpub *bench_rawpub_start(int port,
    const struct bench_capture_msg *cap, size_t n, const char *cap_id);
/* Publishes every message of the template for prompt id in one write;
 * returns the number of event messages (0 when the write failed). */
size_t bench_rawpub_prompt(struct bench_rawpub *r, const char *id);
uint64_t bench_rawpub_pubacks(const struct bench_rawpub *r);
size_t bench_rawpub_qos1_per_prompt(const struct bench_rawpub *r);
/* As bench_pub_cpu_ns: the caller's time in bench_rawpub_prompt(), and
 * *reader_ns the reader thread's. */
int64_t bench_rawpub_cpu_ns(const struct bench_rawpub *r, int64_t *reader_ns);
void bench_rawpub_stop(struct bench_rawpub *r);

/* ---- the libwebsockets floor (bench_wsfloor.c) -------------------- */

/* An lws client set up like the bridge's that only counts the messages
 * it receives from the load source on port (own thread); raw: the
 * bridge's ws:// path (an lws RAW connection and input/wsframe.c). */
struct bench_wsfloor;
struct bench_wsfloor *bench_wsfloor_start(int port, bool raw);
/* true once the WebSocket is established (and not closed since) */
bool bench_wsfloor_up(const struct bench_wsfloor *f);
/* Borrowed: valid until bench_wsfloor_stop(). */
struct bench_counter *bench_wsfloor_counter(struct bench_wsfloor *f);
/* CPU time of the client's thread so far (ns), -1 when unknown. */
int64_t bench_wsfloor_cpu_ns(const struct bench_wsfloor *f);
/* Stops the client; *user_ns / *sys_ns (may be NULL) = its thread's user
 * and system time over its whole life (-1: unknown). */
void bench_wsfloor_stop(
    struct bench_wsfloor *f, int64_t *user_ns, int64_t *sys_ns);

#endif
