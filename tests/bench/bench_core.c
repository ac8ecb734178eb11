/* c2m_bench_core: the bridge's own work per event, without any socket.
 *
 * Feeds the benchmark mix (the frames c2m_bench sends, same prompt-id
 * patching) through what the bridge does between lws handing over a frame
 * and libmosquitto being called: reassembly, parsing, normalization, topic
 * and payload building (reasm + engine, the pure core, with the bridge's
 * default options). Published messages go to a sink that only counts them.
 * In the same run it times, on the same frames, json_parse() alone
 * (validation + jsmn) and jsmn_parse() alone, the tokenizer every frame
 * must go through. Prints one key=value line; CPU is this thread's time
 * (CLOCK_THREAD_CPUTIME_ID), so the ratios hold on a noisy machine.
 *
 * Time is simulated at --rate events/s (default 14000, about what the
 * bridge carries in c2m_bench), and engine_tick() runs whenever the
 * engine says something is due, as the bridge's loop does, so coalesced
 * state messages are built as often as in the real run.
 *
 *   c2m_bench_core --trace PATH [--prompts N] [--reps N] [--rate N]
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "config.h"
#include "engine.h"
#include "json.h"
#include "reasm.h"

struct sink {
	unsigned long long msgs, bytes;
};

static void
count_publish(void *ud, const struct out_msg *m)
{
	struct sink *s = ud;
	s->msgs++;
	s->bytes += m->len + strlen(m->topic);
}

static void
ignore_http(
    void *ud, enum engine_http_kind kind, const char *path, const char *tag)
{
	(void) ud;
	(void) kind;
	(void) path;
	(void) tag;
}

/* The payload of a server-to-client frame (unmasked, as bench_mix.c
 * builds them). */
static const char *
frame_payload(const struct bench_mix *mix, size_t i, size_t *len)
{
	const unsigned char *f
	    = (const unsigned char *) mix->block + mix->frames[i].off;
	size_t hdr = 2, n = f[1] & 0x7f;
	if (n == 126) {
		n = (size_t) f[2] << 8 | f[3];
		hdr = 4;
	} else if (n == 127) {
		n = 0;
		for (int k = 0; k < 8; k++)
			n = n << 8 | f[2 + k];
		hdr = 10;
	}
	*len = n;
	return (const char *) f + hdr;
}

static double
per_event_us(int64_t ns, unsigned long long events)
{
	return events ? (double) ns / 1e3 / (double) events : 0;
}

int
main(int argc, char **argv)
{
	const char *trace = NULL;
	unsigned long prompts = 20000, reps = 3, rate = 14000;
	static const struct option lo[] = {
		{ "trace", required_argument, NULL, 't' },
		{ "prompts", required_argument, NULL, 'p' },
		{ "reps", required_argument, NULL, 'r' },
		{ "rate", required_argument, NULL, 'R' },
		{ NULL, 0, NULL, 0 },
	};
	int c;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		char *end = NULL;
		switch (c) {
		case 't':
			trace = optarg;
			break;
		case 'p':
		case 'r':
		case 'R': {
			unsigned long v = strtoul(optarg, &end, 10);
			if (end == optarg || *end != '\0' || v == 0) {
				fprintf(stderr, "bench_core: bad number %s\n",
				    optarg);
				return 64;
			}
			*(c == 'p' ? &prompts : c == 'r' ? &reps : &rate) = v;
			break;
		}
		default:
			return 64;
		}
	}
	if (trace == NULL) {
		fprintf(stderr,
		    "usage: c2m_bench_core --trace PATH [--prompts N] "
		    "[--reps N] [--rate EVENTS_PER_S]\n");
		return 64;
	}
	struct bench_mix mix;
	if (bench_mix_load(&mix, trace) != 0)
		return 1;

	/* the bridge's defaults, through the bridge's own option parser */
	char *cargv[] = { "comfy2mqtt", "--comfyui", "http://127.0.0.1:8188",
		"--mqtt", "mqtt://127.0.0.1:1883", "--prefix", "bench",
		"--instance", "core", NULL };
	struct config cfg;
	char err[256];
	char *envp[] = { NULL };
	if (config_load(&cfg, 9, cargv, envp, err, sizeof(err), stderr)
	    != CONFIG_OK) {
		fprintf(stderr, "bench_core: %s\n", err);
		return 1;
	}
	struct sink sink = { 0 };
	struct engine_cfg ec = {
		.prefix = cfg.prefix,
		.instance = cfg.server[0].instance,
		.client_id = cfg.server[0].client_id,
		.mqtt_client_id = cfg.server[0].mqtt_client_id,
		.comfyui_public = "http://127.0.0.1:8188",
		.mqtt_protocol = cfg.mqtt_protocol,
		.state_ttl_s = cfg.state_ttl,
		.max_tokens = cfg.max_tokens,
		.history_items = cfg.history_items,
		.upstream_watchdog_s = cfg.upstream_watchdog,
		.health_interval_s = cfg.health_interval,
		.preview_max_bytes = cfg.preview_max_bytes,
		.preview_rate = cfg.preview_rate,
	};
	struct engine_io eio = {
		.publish = count_publish, .http_get = ignore_http, .ud = &sink
	};
	struct timespec wall;
	clock_gettime(CLOCK_REALTIME, &wall);
	int64_t now = (int64_t) wall.tv_sec * 1000;
	/* simulated time, in µs so that a frame can advance it */
	int64_t now_us = now * 1000, step_us = 1000000 / (int64_t) rate;
	struct engine_health_io health = { .mqtt_connected = true };
	struct engine *e = engine_create(&ec, &eio, now);
	struct reasm *r = reasm_create(64 * 1024, cfg.max_frame_bytes);
	struct json_parser *jp = json_parser_create(cfg.max_tokens);
	jsmntok_t *toks = calloc(cfg.max_tokens, sizeof(*toks));
	if (e == NULL || r == NULL || jp == NULL || toks == NULL) {
		fprintf(stderr, "bench_core: out of memory\n");
		return 1;
	}
	engine_on_upstream(e, true, now);
	engine_on_broker_connected(e, false, now);

	int64_t best_core = -1, best_parse = -1, best_jsmn = -1;
	unsigned long long events = 0, msgs = 0, bytes = 0, bad = 0;
	char id[BENCH_ID_LEN + 1];
	for (unsigned long rep = 0; rep < reps; rep++) {
		/* 1. the whole core: reasm + engine */
		unsigned long long m0 = sink.msgs, b0 = sink.bytes;
		int64_t t0 = bench_cpu_ns(CLOCK_THREAD_CPUTIME_ID);
		for (unsigned long k = 0; k < prompts; k++) {
			bench_prompt_id(id, (unsigned) rep * 7 + 1, k);
			bench_patch_ids(mix.block, mix.id_offs, mix.n_ids, id);
			for (size_t i = 0; i < mix.n_frames; i++) {
				size_t n;
				const char *p = frame_payload(&mix, i, &n);
				if (reasm_feed(r, p, n, true, true, false)
				    != REASM_DONE) {
					bad++;
					continue;
				}
				size_t got;
				bool bin;
				const uint8_t *msg = reasm_msg(r, &got, &bin);
				engine_on_text(
				    e, (const char *) msg, got, now);
				now_us += step_us;
				now = now_us / 1000;
				int64_t due = engine_due(e);
				if (due != 0 && due <= now)
					engine_tick(e, now, &health);
			}
		}
		int64_t core = bench_cpu_ns(CLOCK_THREAD_CPUTIME_ID) - t0;
		events = (unsigned long long) prompts * mix.n_frames;
		msgs = sink.msgs - m0;
		bytes = sink.bytes - b0;

		/* 2. json_parse() alone (what engine_on_text starts with) */
		t0 = bench_cpu_ns(CLOCK_THREAD_CPUTIME_ID);
		for (unsigned long k = 0; k < prompts; k++)
			for (size_t i = 0; i < mix.n_frames; i++) {
				size_t n;
				const char *p = frame_payload(&mix, i, &n);
				struct json_doc d;
				bad += json_parse(jp, p, n, true, &d) != BR_OK;
			}
		int64_t parse = bench_cpu_ns(CLOCK_THREAD_CPUTIME_ID) - t0;

		/* 3. jsmn_parse() alone: the tokenizer every frame needs */
		t0 = bench_cpu_ns(CLOCK_THREAD_CPUTIME_ID);
		for (unsigned long k = 0; k < prompts; k++)
			for (size_t i = 0; i < mix.n_frames; i++) {
				size_t n;
				const char *p = frame_payload(&mix, i, &n);
				jsmn_parser jsp;
				jsmn_init(&jsp);
				bad += jsmn_parse(
				           &jsp, p, n, toks, cfg.max_tokens)
				    <= 0;
			}
		int64_t jsmn = bench_cpu_ns(CLOCK_THREAD_CPUTIME_ID) - t0;
		/* the fastest repetition: least disturbed by other load */
		if (best_core < 0 || core < best_core)
			best_core = core;
		if (best_parse < 0 || parse < best_parse)
			best_parse = parse;
		if (best_jsmn < 0 || jsmn < best_jsmn)
			best_jsmn = jsmn;
	}
	struct engine_counters ctr;
	engine_get_counters(e, &ctr);
	printf("events=%llu frames_per_prompt=%zu msgs_per_event=%.3f "
	       "bytes_per_event=%.1f core_us_per_event=%.3f "
	       "json_parse_us_per_event=%.3f jsmn_us_per_event=%.3f "
	       "core_over_jsmn=%.2f rejected=%llu bad=%llu\n",
	    events, mix.n_frames, events ? (double) msgs / (double) events : 0,
	    events ? (double) bytes / (double) events : 0,
	    per_event_us(best_core, events), per_event_us(best_parse, events),
	    per_event_us(best_jsmn, events),
	    best_jsmn > 0 ? (double) best_core / (double) best_jsmn : 0,
	    (unsigned long long) ctr.rejected_total, bad);
	free(toks);
	json_parser_destroy(jp);
	reasm_destroy(r);
	engine_destroy(e);
	config_free(&cfg);
	bench_mix_free(&mix);
	/* a frame the bridge would reject is a broken mix, not a result */
	return bad == 0 && ctr.rejected_total == 0 && msgs > 0 ? 0 : 1;
}
