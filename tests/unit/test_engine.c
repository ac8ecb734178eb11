/* The engine end to end without sockets: trace frames and HTTP sample
 * bodies in, MQTT messages and HTTP requests out. */
#include <math.h>
#include <unistd.h>

#include "engine.h"
#include "json.h"
#include "test.h"
#include "utf8.h"

#define MAX_MSGS 4096
#define MAX_REQS 256

struct msg {
	char topic[600];
	char *payload;
	size_t len;
	int qos;
	bool retain;
	bool urgent;
	int cls;
	char type_prop[400];
	char prompt_prop[800];
	bool props_mqtt_ok; /* every user property a valid MQTT string */
};

struct req {
	enum engine_http_kind kind;
	char path[600];
	char tag[300];
	bool has_tag;
};

static struct msg msgs[MAX_MSGS];
static int n_msgs;
static struct req reqs[MAX_REQS];
static int n_reqs;
static struct json_parser *check_parser;
/* counted past MAX_MSGS too */
static int total_queued, total_completions, total_clears, total_states;

static void
reset_capture(void)
{
	for (int i = 0; i < n_msgs; i++)
		free(msgs[i].payload);
	n_msgs = 0;
	n_reqs = 0;
	total_queued = total_completions = total_clears = total_states = 0;
}

static void
cap_publish(void *ud, const struct out_msg *m)
{
	(void) ud;
	size_t tl = strlen(m->topic);
	total_queued
	    += tl > 13 && strcmp(m->topic + tl - 13, "/event/queued") == 0;
	total_completions
	    += tl > 11 && strcmp(m->topic + tl - 11, "/completion") == 0;
	total_clears += m->len == 0 && m->retain && tl > 6
	    && strcmp(m->topic + tl - 6, "/state") == 0;
	total_states += m->len > 0 && tl > 6
	    && strcmp(m->topic + tl - 6, "/state") == 0;
	if (n_msgs >= MAX_MSGS)
		return;
	struct msg *c = &msgs[n_msgs++];
	snprintf(c->topic, sizeof(c->topic), "%s", m->topic);
	c->payload = malloc(m->len + 1);
	memcpy(c->payload, m->payload, m->len);
	c->payload[m->len] = '\0';
	c->len = m->len;
	c->qos = m->qos;
	c->retain = m->retain;
	c->urgent = m->urgent;
	c->cls = m->cls;
	snprintf(c->type_prop, sizeof(c->type_prop), "%s",
	    m->props.type ? m->props.type : "");
	snprintf(c->prompt_prop, sizeof(c->prompt_prop), "%s",
	    m->props.prompt_id ? m->props.prompt_id : "");
	c->props_mqtt_ok = (!m->props.type || utf8_mqtt_ok(m->props.type))
	    && (!m->props.prompt_id || utf8_mqtt_ok(m->props.prompt_id))
	    && (!m->props.instance || utf8_mqtt_ok(m->props.instance))
	    && utf8_mqtt_ok(m->topic);
}

static void
cap_http(
    void *ud, enum engine_http_kind kind, const char *path, const char *tag)
{
	(void) ud;
	if (n_reqs >= MAX_REQS)
		return;
	struct req *r = &reqs[n_reqs++];
	r->kind = kind;
	snprintf(r->path, sizeof(r->path), "%s", path);
	r->has_tag = tag != NULL;
	snprintf(r->tag, sizeof(r->tag), "%s", tag ? tag : "");
}

static int64_t clock_ms = 1800000000000LL;

static struct engine *
make_engine(const char *client_id)
{
	struct engine_cfg cfg = {
		.prefix = "comfyui",
		.instance = "t",
		.client_id = client_id,
		.mqtt_client_id = "c2m-t",
		.comfyui_public = "http://127.0.0.1:8188",
		.mqtt_protocol = 5,
		.state_ttl_s = 3600,
		.max_tokens = 8192,
		.history_items = 20,
		.health_interval_s = 30,
	};
	struct engine_io io = { .publish = cap_publish, .http_get = cap_http };
	reset_capture();
	return engine_create(&cfg, &io, clock_ms);
}

static int
count_topic(const char *suffix)
{
	int n = 0;
	size_t sl = strlen(suffix);
	for (int i = 0; i < n_msgs; i++) {
		size_t tl = strlen(msgs[i].topic);
		if (tl >= sl && strcmp(msgs[i].topic + tl - sl, suffix) == 0)
			n++;
	}
	return n;
}

/* Last message whose topic ends with suffix. */
static const struct msg *
last_topic(const char *suffix)
{
	size_t sl = strlen(suffix);
	for (int i = n_msgs - 1; i >= 0; i--) {
		size_t tl = strlen(msgs[i].topic);
		if (tl >= sl && strcmp(msgs[i].topic + tl - sl, suffix) == 0)
			return &msgs[i];
	}
	return NULL;
}

/* Messages on prompt state topics. */
static int
count_states(void)
{
	int n = 0;
	for (int i = 0; i < n_msgs; i++) {
		size_t tl = strlen(msgs[i].topic);
		n += strncmp(msgs[i].topic, "comfyui/t/prompt/", 17) == 0
		    && tl > 6 && strcmp(msgs[i].topic + tl - 6, "/state") == 0;
	}
	return n;
}

/* Messages whose topic ends with suffix and whose payload has needle. */
static int
count_with(const char *suffix, const char *needle)
{
	int n = 0;
	size_t sl = strlen(suffix);
	for (int i = 0; i < n_msgs; i++) {
		size_t tl = strlen(msgs[i].topic);
		n += tl >= sl && strcmp(msgs[i].topic + tl - sl, suffix) == 0
		    && strstr(msgs[i].payload, needle) != NULL;
	}
	return n;
}

static int
count_terminals(void)
{
	return count_topic("/event/execution_success")
	    + count_topic("/event/execution_error")
	    + count_topic("/event/execution_interrupted")
	    + count_topic("/event/lost") + count_topic("/event/cancelled");
}

/* A state's times: one clock, in order, and duration_ms their
 * difference. */
static void
check_state_clock(const struct json_doc *d, const char *topic)
{
	static const char *const keys[]
	    = { "queued_at", "started_at", "finished_at", "duration_ms" };
	int64_t v[4];
	for (int k = 0; k < 4; k++) {
		int t = json_obj_get(d, 0, keys[k]);
		if (t < 0 || json_get_int64(d, t, &v[k]) != 0)
			v[k] = -1;
	}
	int64_t last = -1;
	for (int k = 0; k < 3; k++) {
		if (v[k] < 0)
			continue;
		if (v[k] < last)
			TEST_FAIL("%s out of order on %s", keys[k], topic);
		last = v[k];
	}
	if (v[1] >= 0 && v[2] >= 0 ? v[3] != v[2] - v[1] : v[3] != -1)
		TEST_FAIL(
		    "duration_ms %lld is not finished_at - started_at on %s",
		    (long long) v[3], topic);
}

/* Every payload is valid JSON (or the plain texts), every topic stays
 * under comfyui/t/, seq strictly increases, every state's times are in
 * order. */
static void
check_invariants(void)
{
	int64_t last_seq = 0;
	for (int i = 0; i < n_msgs; i++) {
		const struct msg *m = &msgs[i];
		CHECK(strncmp(m->topic, "comfyui/t/", 10) == 0);
		CHECK(strchr(m->topic, '+') == NULL
		    && strchr(m->topic, '#') == NULL);
		if (!m->props_mqtt_ok)
			TEST_FAIL("a property mosquitto would refuse on %s",
			    m->topic);
		if (m->len == 0 || strcmp(m->payload, "online") == 0
		    || strcmp(m->payload, "offline") == 0)
			continue;
		struct json_doc d;
		int rc
		    = json_parse(check_parser, m->payload, m->len, true, &d);
		if (rc != BR_OK) {
			TEST_FAIL("invalid JSON on %s: %.200s", m->topic,
			    m->payload);
			continue;
		}
		int s = json_obj_get(&d, 0, "seq");
		int64_t seq = 0;
		CHECK(s >= 0 && json_get_int64(&d, s, &seq) == 0);
		if (seq <= last_seq)
			TEST_FAIL("seq %lld after %lld on %s", (long long) seq,
			    (long long) last_seq, m->topic);
		last_seq = seq;
		size_t tl = strlen(m->topic);
		if (tl > 6 && strcmp(m->topic + tl - 6, "/state") == 0
		    && strncmp(m->topic, "comfyui/t/prompt/", 17) == 0)
			check_state_clock(&d, m->topic);
	}
}

static bool
payload_has(const struct msg *m, const char *needle)
{
	return m && strstr(m->payload, needle) != NULL;
}

/* Feeds every line of a trace: text lines as text frames, binary
 * descriptors as binary frames built from their header only (enough for
 * the engine, which does not look at image bytes without --previews). */
static void
feed_trace(struct engine *e, const char *name)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s.jsonl", test_traces_dir(), name);
	size_t len;
	char *buf = test_read_file(path, &len);
	char *save = NULL;
	for (char *line = strtok_r(buf, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		clock_ms += 5;
		char *hex = strstr(line, "\"binary_hex_header\": \"");
		if (!hex) {
			engine_on_text(e, line, strlen(line), clock_ms);
			continue;
		}
		hex += strlen("\"binary_hex_header\": \"");
		uint8_t frame[4096];
		size_t n = 0;
		while (hex[0] != '"' && n < sizeof(frame)) {
			unsigned v;
			sscanf(hex, "%2x", &v);
			frame[n++] = (uint8_t) v;
			hex += 2;
		}
		engine_on_binary(e, frame, n, clock_ms);
	}
	free(buf);
}

static void
test_trace_success(void)
{
	struct engine *e = make_engine("5f0c2a8e-3b1d-4c7e-9a62-1d4e8b7f0c35");
	feed_trace(e, "a_normal_txt2img");
	CHECK_INT(count_terminals(), 1);
	CHECK_INT(count_topic("/event/execution_success"), 1);
	CHECK_INT(count_topic("/event/progress"), 11);
	CHECK_INT(count_topic("/event/progress_state"), 25);
	CHECK_INT(count_topic("/event/executing"), 8);
	CHECK_INT(count_topic("/event/queued"), 1);
	CHECK_INT(count_topic("/completion"), 1);
	const struct msg *c = last_topic("/completion");
	CHECK(payload_has(c, "\"event_type\":\"success\""));
	CHECK(payload_has(c,
	    "\"url\":\"http://127.0.0.1:8188/view?filename="
	    "ComfyUI_00001_.png&subfolder=&type=output\""));
	const struct msg *s = last_topic("/state");
	CHECK(s && s->retain && s->qos == 1);
	CHECK(payload_has(s, "\"status\":\"success\""));
	CHECK(payload_has(s,
	    "\"nodes_done\":[\"4\",\"6\",\"7\",\"5\",\"3\","
	    "\"8\",\"9\"]"));
	const struct msg *p = last_topic("/event/progress");
	CHECK(payload_has(p, "\"percent\":100.0"));
	CHECK(p && p->qos == 0 && !p->retain);
	/* QoS 1 only for queued, execution_start and the terminal event */
	static const char *const qos1[] = { "/event/queued",
		"/event/execution_start", "/event/execution_success" };
	static const char *const qos0[]
	    = { "/event/executing", "/event/executed",
		      "/event/execution_cached", "/event/progress_state" };
	for (size_t i = 0; i < sizeof(qos1) / sizeof(qos1[0]); i++) {
		const struct msg *m = last_topic(qos1[i]);
		CHECK(m != NULL && m->qos == 1);
	}
	for (size_t i = 0; i < sizeof(qos0) / sizeof(qos0[0]); i++) {
		const struct msg *m = last_topic(qos0[i]);
		CHECK(m != NULL && m->qos == 0);
	}
	check_invariants();
	engine_destroy(e);
}

static void
test_trace_old_protocol(void)
{
	struct engine *e = make_engine("5f0c2a8e-3b1d-4c7e-9a62-1d4e8b7f0c35");
	feed_trace(e, "g_old_protocol_v0.0.2");
	CHECK_INT(count_terminals(), 1);
	const struct msg *t = last_topic("/event/execution_success");
	CHECK(payload_has(t, "\"derived\":true"));
	CHECK(payload_has(last_topic("/completion"), "\"success\""));
	check_invariants();
	engine_destroy(e);
}

static void
test_trace_error_and_interrupt(void)
{
	struct engine *e = make_engine("5f0c2a8e-3b1d-4c7e-9a62-1d4e8b7f0c35");
	feed_trace(e, "c_execution_error");
	CHECK_INT(count_terminals(), 1);
	CHECK_INT(count_topic("/event/execution_error"), 1);
	const struct msg *s = last_topic("/state");
	CHECK(payload_has(s, "\"status\":\"error\""));
	CHECK(payload_has(s, "\"exception_type\":\"torch.OutOfMemoryError\""));
	CHECK(payload_has(
	    last_topic("/completion"), "\"event_type\":\"error\""));
	check_invariants();
	engine_destroy(e);

	e = make_engine("5f0c2a8e-3b1d-4c7e-9a62-1d4e8b7f0c35");
	feed_trace(e, "d_interrupted");
	CHECK_INT(count_terminals(), 1);
	CHECK(payload_has(
	    last_topic("/completion"), "\"event_type\":\"interrupted\""));
	check_invariants();
	engine_destroy(e);
}

static void
test_trace_back_to_back_and_cached(void)
{
	struct engine *e = make_engine("5f0c2a8e-3b1d-4c7e-9a62-1d4e8b7f0c35");
	feed_trace(e, "e_back_to_back");
	CHECK_INT(count_terminals(), 2);
	CHECK_INT(count_topic("/completion"), 2);
	check_invariants();
	engine_destroy(e);

	e = make_engine("5f0c2a8e-3b1d-4c7e-9a62-1d4e8b7f0c35");
	feed_trace(e, "b_cached_reruns");
	CHECK_INT(count_terminals(), 2);
	CHECK_INT(count_topic("/completion"), 2);
	check_invariants();
	engine_destroy(e);
}

static void
test_trace_custom_events(void)
{
	struct engine *e = make_engine("5f0c2a8e-3b1d-4c7e-9a62-1d4e8b7f0c35");
	feed_trace(e, "h_custom_and_unknown_events");
	CHECK(count_topic("/event/crystools.monitor") > 0);
	CHECK_INT(count_topic("/event/progress_text"), 1);
	CHECK(count_topic("/event/cm-queue-status") >= 2);
	struct engine_counters c;
	engine_get_counters(e, &c);
	CHECK_INT(c.rejected_total, 1); /* the synthetic binary type 7 */
	check_invariants();
	engine_destroy(e);
}

static char *
sample(const char *name, size_t *len)
{
	char path[512];
	const char *dir = getenv("C2M_SAMPLES_DIR");
	snprintf(path, sizeof(path), "%s/%s",
	    dir ? dir : "tests/data/http-samples", name);
	return test_read_file(path, len);
}

static int
find_req(enum engine_http_kind kind)
{
	for (int i = n_reqs - 1; i >= 0; i--)
		if (reqs[i].kind == kind)
			return i;
	return -1;
}

static const char status1[]
    = "{\"type\": \"status\", \"data\": {\"status\": {\"exec_info\": "
      "{\"queue_remaining\": 4}}}}";

/* A foreign prompt: seen only through /queue and /history. */
static void
test_foreign_prompt_from_poll_and_history(void)
{
	struct engine *e = make_engine("bridge-x");
	size_t len;
	engine_on_upstream(e, true, clock_ms);
	CHECK(find_req(EHTTP_SYSTEM_STATS) >= 0);
	CHECK(find_req(EHTTP_HISTORY_LIST) >= 0);
	CHECK(find_req(EHTTP_QUEUE) >= 0);
	char *hist = sample("history_list.json", &len);
	engine_on_http(e, EHTTP_HISTORY_LIST, NULL, 200, hist, len, clock_ms);
	free(hist);
	/* the baseline: finished before we started, never reported */
	CHECK_INT(count_topic("/completion"), 0);

	char *q = sample("queue.json", &len);
	engine_on_http(e, EHTTP_QUEUE, NULL, 200, q, len, clock_ms);
	free(q);
	CHECK_INT(count_topic("/event/queued"), 4);
	CHECK_INT(count_topic("/event/execution_start"), 1);
	const struct msg *st = last_topic("/event/execution_start");
	CHECK(payload_has(st, "\"source\":\"poll\""));
	const struct msg *qm = last_topic("/queue");
	CHECK(qm && qm->retain);
	CHECK(payload_has(qm,
	    "\"running\":[\"e8d1c6b4-3a7f-4f2e-9b05-"
	    "1c6a8e3d7f92\"]"));
	/* pending sorted by number (heap order in the sample: 6, 8, 7) */
	CHECK(payload_has(qm, "\"queue_remaining\":4"));

	/* a status frame triggers one poll; a second one while it is in
	 * flight only marks one more as pending */
	n_reqs = 0;
	engine_on_text(e, status1, strlen(status1), clock_ms);
	engine_on_text(e, status1, strlen(status1), clock_ms);
	engine_on_text(e, status1, strlen(status1), clock_ms);
	int polls = 0;
	for (int i = 0; i < n_reqs; i++)
		polls += reqs[i].kind == EHTTP_QUEUE;
	CHECK_INT(polls, 1);

	/* the queue empties: the running prompt finished, the pending ones
	 * were deleted */
	q = sample("queue_idle.json", &len);
	n_reqs = 0;
	engine_on_http(e, EHTTP_QUEUE, NULL, 200, q, len, clock_ms);
	CHECK(find_req(EHTTP_QUEUE) >= 0); /* the pending poll */
	engine_on_http(e, EHTTP_QUEUE, NULL, 200, q, len, clock_ms);
	free(q);
	engine_tick(e, clock_ms + 10, NULL);
	int lookups = 0;
	for (int i = 0; i < n_reqs; i++)
		lookups += reqs[i].kind == EHTTP_HISTORY_ID;
	CHECK_INT(lookups, 4);

	/* answer: the running one is in history, the others are not */
	char *h = sample("history_by_id_success.json", &len);
	char *at = strstr(h, "8c2f6e1a-4b7d-4e3a-9f05-6d1c2b8a7e94");
	memcpy(at, "e8d1c6b4-3a7f-4f2e-9b05-1c6a8e3d7f92", 36);
	for (int i = 0; i < n_reqs; i++) {
		if (reqs[i].kind != EHTTP_HISTORY_ID)
			continue;
		if (strcmp(reqs[i].tag,
		        "e8d1c6b4-3a7f-4f2e-9b05-"
		        "1c6a8e3d7f92")
		    == 0)
			engine_on_http(e, EHTTP_HISTORY_ID, reqs[i].tag, 200,
			    h, len, clock_ms + 20);
		else
			engine_on_http(e, EHTTP_HISTORY_ID, reqs[i].tag, 200,
			    "{}", 2, clock_ms + 20);
	}
	free(h);
	/* the pending ones never ran and ComfyUI stayed up: removed from
	 * the queue, so cancelled, not lost */
	CHECK_INT(count_topic("/event/execution_success"), 1);
	CHECK_INT(count_topic("/event/lost"), 0);
	CHECK_INT(count_topic("/event/cancelled"), 3);
	CHECK_INT(count_topic("/completion"), 4);
	CHECK(payload_has(last_topic("/event/cancelled"), "\"reason\":"));
	CHECK_INT(
	    count_with("/completion", "\"event_type\":\"cancelled\""), 3);
	CHECK_INT(count_with("/state", "\"status\":\"cancelled\""), 3);
	const struct msg *ok = last_topic("/event/execution_success");
	CHECK(payload_has(ok, "\"source\":\"history\""));
	/* started by the poll on the bridge's clock, finished in history on
	 * ComfyUI's: history's start wins, and with it history's duration */
	CHECK(payload_has(ok, "\"duration_ms\":5168"));
	CHECK_INT(count_with("/state", "\"duration_ms\":5168"), 1);
	struct engine_counters c;
	engine_get_counters(e, &c);
	CHECK_INT(c.lost, 0);
	CHECK_INT(c.recovered, 1);
	check_invariants();
	engine_destroy(e);
}

/* A live prompt whose terminal frame was missed during a disconnect. */
static void
test_resync_after_reconnect(void)
{
	struct engine *e = make_engine("5f0c2a8e-3b1d-4c7e-9a62-1d4e8b7f0c35");
	engine_on_upstream(e, true, clock_ms);
	static const char start[]
	    = "{\"type\": \"execution_start\", \"data\": {\"prompt_id\": "
	      "\"8c2f6e1a-4b7d-4e3a-9f05-6d1c2b8a7e94\", \"timestamp\": "
	      "1778578200000}}";
	engine_on_text(e, start, strlen(start), clock_ms);
	engine_on_upstream(e, false, clock_ms + 100);
	n_reqs = 0;
	engine_on_upstream(e, true, clock_ms + 5000);
	int qi = find_req(EHTTP_QUEUE);
	CHECK(qi >= 0);
	engine_on_http(e, EHTTP_QUEUE, NULL, 200,
	    "{\"queue_running\": [], \"queue_pending\": []}", 42,
	    clock_ms + 5010);
	engine_tick(e, clock_ms + 5020, NULL);
	int hi = find_req(EHTTP_HISTORY_ID);
	CHECK(hi >= 0);
	if (hi >= 0) {
		size_t len;
		char *h = sample("history_by_id_success.json", &len);
		engine_on_http(e, EHTTP_HISTORY_ID, reqs[hi].tag, 200, h, len,
		    clock_ms + 5030);
		free(h);
	}
	CHECK_INT(count_terminals(), 1);
	CHECK(payload_has(
	    last_topic("/event/execution_success"), "\"source\":\"history\""));
	/* a late live terminal for the same prompt is not published again */
	static const char late[]
	    = "{\"type\": \"execution_success\", \"data\": {\"prompt_id\": "
	      "\"8c2f6e1a-4b7d-4e3a-9f05-6d1c2b8a7e94\", \"timestamp\": "
	      "1778578205000}}";
	engine_on_text(e, late, strlen(late), clock_ms + 6000);
	CHECK_INT(count_terminals(), 1);
	struct engine_counters c;
	engine_get_counters(e, &c);
	CHECK_INT(c.resyncs, 1);
	check_invariants();
	engine_destroy(e);
}

/* The event types published for a prompt, in order, joined by ','. */
static void
event_order(const char *prompt, char *out, size_t cap)
{
	char pre[128];
	int pl
	    = snprintf(pre, sizeof(pre), "comfyui/t/prompt/%s/event/", prompt);
	size_t n = 0;
	out[0] = '\0';
	for (int i = 0; i < n_msgs; i++)
		if (strncmp(msgs[i].topic, pre, (size_t) pl) == 0)
			n += (size_t) snprintf(out + n, cap - n, "%s%s",
			    n ? "," : "", msgs[i].topic + pl);
}

/* A prompt submitted with no client id: ComfyUI broadcasts its
 * progress_state first and never sends it execution_start; queued and a
 * start still come first, then its frames, and its state runs. */
static void
test_clientless_prompt_starts_first(void)
{
	struct engine *e = make_engine("bridge-x");
	engine_on_upstream(e, true, clock_ms);
	static const char ps[]
	    = "{\"type\": \"progress_state\", \"data\": {\"prompt_id\": "
	      "\"nc-1\", \"nodes\": {}}}";
	static const char pr[]
	    = "{\"type\": \"progress\", \"data\": {\"value\": 1, \"max\": "
	      "2, \"prompt_id\": \"nc-1\", \"node\": \"3\"}}";
	engine_on_text(e, ps, strlen(ps), clock_ms + 10);
	engine_on_text(e, pr, strlen(pr), clock_ms + 20);
	char order[512];
	event_order("nc-1", order, sizeof(order));
	CHECK_STR(order, "queued,execution_start,progress_state,progress");
	CHECK(payload_has(
	    last_topic("/prompt/nc-1/state"), "\"status\":\"running\""));
	/* the poll that lists it running adds no second start */
	static const char q[]
	    = "{\"queue_running\": [[5, \"nc-1\", {}, {}, []]], "
	      "\"queue_pending\": []}";
	engine_on_http(e, EHTTP_QUEUE, NULL, 200, q, strlen(q), clock_ms + 30);
	CHECK_INT(count_topic("/prompt/nc-1/event/execution_start"), 1);
	check_invariants();
	engine_destroy(e);
}

/* Feeds the history sample of name for id as a history-list answer (a
 * prompt of another client that came and went between two polls). */
static void
feed_history_list(struct engine *e, const char *name, int64_t now)
{
	size_t len;
	char *h = sample(name, &len);
	engine_on_http(e, EHTTP_HISTORY_LIST, NULL, 200, h, len, now);
	free(h);
}

/* --print tells every outcome, those learned from history too, with the
 * traceback verbatim. */
static void
test_print_outcomes_from_history(void)
{
	char *out = NULL;
	size_t out_len = 0;
	FILE *f = open_memstream(&out, &out_len);
	struct engine_cfg cfg = {
		.prefix = "comfyui",
		.instance = "t",
		.client_id = "bridge-x",
		.mqtt_client_id = "c2m-t",
		.comfyui_public = "http://127.0.0.1:8188",
		.mqtt_protocol = 5,
		.state_ttl_s = 3600,
		.max_tokens = 8192,
		.history_items = 20,
		.health_interval_s = 30,
		.print = f,
	};
	struct engine_io io = { .publish = cap_publish, .http_get = cap_http };
	reset_capture();
	struct engine *e = engine_create(&cfg, &io, clock_ms);
	engine_on_upstream(e, true, clock_ms);
	engine_on_http(e, EHTTP_HISTORY_LIST, NULL, 200, "{}", 2, clock_ms);
	feed_history_list(e, "history_by_id_error.json", clock_ms + 10);
	feed_history_list(e, "history_by_id_interrupted.json", clock_ms + 20);
	fflush(f);
	CHECK(out
	    && strstr(out,
	        "[ERROR] Prompt f7a3c9e1-5d2b-4a6f-8e0c-3b9d1f5a7c62, Node "
	        "3 (KSampler)\n  Type: torch.OutOfMemoryError\n"));
	CHECK(out
	    && strstr(out,
	        "  Traceback:\n    File \"/opt/ComfyUI/execution.py\", line "
	        "535, in execute\n      output_data, output_ui"));
	CHECK(out
	    && strstr(out,
	        "[INTERRUPTED] Prompt "
	        "2b8e5f1c-9a3d-4e7b-b6f0-4c1a8d2e9f53, Node "));
	check_invariants();
	engine_destroy(e);
	fclose(f);
	free(out);
}

/* A type 4 preview frame for prompt pv-1 whose image is the text img. */
static void
send_preview(struct engine *e, const char *img, int64_t now)
{
	static const char meta[] = "{\"node_id\": \"3\", \"prompt_id\": "
	                           "\"pv-1\", \"image_type\": \"image/png\"}";
	uint8_t frame[256];
	size_t ml = strlen(meta), il = strlen(img);
	uint8_t head[8]
	    = { 0, 0, 0, 4, 0, 0, (uint8_t) (ml >> 8), (uint8_t) ml };
	memcpy(frame, head, 8);
	memcpy(frame + 8, meta, ml);
	memcpy(frame + 8 + ml, img, il);
	engine_on_binary(e, frame, 8 + ml + il, now);
}

/* The preview limit (2/s here) keeps the latest: a burst ends with its
 * last preview published, when the window opens, on both topics. */
static void
test_preview_burst_keeps_the_last(void)
{
	struct engine_cfg cfg = {
		.prefix = "comfyui",
		.instance = "t",
		.client_id = "bridge-x",
		.mqtt_client_id = "c2m-t",
		.comfyui_public = "http://127.0.0.1:8188",
		.mqtt_protocol = 5,
		.state_ttl_s = 3600,
		.max_tokens = 8192,
		.health_interval_s = 30,
		.previews = true,
		.preview_max_bytes = 1 << 20,
		.preview_rate = 2.0,
	};
	struct engine_io io = { .publish = cap_publish, .http_get = cap_http };
	reset_capture();
	int64_t t0 = clock_ms;
	struct engine *e = engine_create(&cfg, &io, t0);
	engine_on_upstream(e, true, t0);
	send_preview(e, "step-1", t0);
	send_preview(e, "step-2", t0 + 10);
	send_preview(e, "step-3", t0 + 20);
	CHECK_INT(count_topic("/prompt/pv-1/preview"), 1);
	CHECK_STR(last_topic("/prompt/pv-1/preview")->payload, "step-1");
	CHECK(engine_due(e) > 0 && engine_due(e) <= t0 + 500);
	engine_tick(e, t0 + 499, NULL);
	CHECK_INT(count_topic("/prompt/pv-1/preview"), 1);
	engine_tick(e, t0 + 500, NULL);
	CHECK_INT(count_topic("/prompt/pv-1/preview"), 2);
	CHECK_STR(last_topic("/prompt/pv-1/preview")->payload, "step-3");
	const struct msg *ret = last_topic("comfyui/t/preview");
	CHECK(ret && ret->retain && strcmp(ret->payload, "step-3") == 0);
	engine_tick(e, t0 + 2000, NULL);
	CHECK_INT(count_topic("/prompt/pv-1/preview"), 2);
	engine_destroy(e);
}

/* upstream/state follows the link: a start with ComfyUI up publishes
 * online and never offline first; a first connect that does not answer
 * makes it offline. */
static void
test_upstream_state_only_when_known(void)
{
	struct engine *e = make_engine("bridge-x");
	engine_on_broker_connected(e, false, clock_ms);
	CHECK_INT(count_topic("/upstream/state"), 0);
	engine_tick(e, clock_ms + 100, NULL);
	CHECK_INT(count_topic("/upstream/state"), 0);
	engine_on_upstream(e, true, clock_ms + 150);
	CHECK_INT(count_topic("/upstream/state"), 1);
	CHECK_STR(last_topic("/upstream/state")->payload, "online");
	engine_tick(e, clock_ms + 5000, NULL);
	CHECK_INT(count_topic("/upstream/state"), 1);
	engine_destroy(e);

	e = make_engine("bridge-x");
	engine_on_broker_connected(e, false, clock_ms);
	engine_on_broker_connected(e, false, clock_ms + 10); /* republish */
	CHECK_INT(count_topic("/upstream/state"), 0);
	CHECK(engine_due(e) > 0 && engine_due(e) <= clock_ms + 2000);
	engine_tick(e, clock_ms + 2000, NULL);
	CHECK_INT(count_topic("/upstream/state"), 1);
	CHECK_STR(last_topic("/upstream/state")->payload, "offline");
	engine_on_upstream(e, true, clock_ms + 3000);
	CHECK_STR(last_topic("/upstream/state")->payload, "online");
	engine_destroy(e);
}

/* A pending prompt that is gone after a reconnect may have died with a
 * ComfyUI restart: lost, not cancelled. */
static void
test_pending_gone_after_reconnect_is_lost(void)
{
	struct engine *e = make_engine("bridge-x");
	engine_on_upstream(e, true, clock_ms);
	static const char q[]
	    = "{\"queue_running\": [], \"queue_pending\": [[3, \"p-1\", "
	      "{}, {\"client_id\": \"other\"}, []]]}";
	engine_on_http(e, EHTTP_QUEUE, NULL, 200, q, strlen(q), clock_ms);
	CHECK_INT(count_topic("/event/queued"), 1);
	engine_on_upstream(e, false, clock_ms + 100);
	engine_on_upstream(e, true, clock_ms + 3000);
	n_reqs = 0;
	static const char empty[]
	    = "{\"queue_running\": [], \"queue_pending\": []}";
	engine_on_http(
	    e, EHTTP_QUEUE, NULL, 200, empty, strlen(empty), clock_ms + 3010);
	engine_tick(e, clock_ms + 3020, NULL);
	int hi = find_req(EHTTP_HISTORY_ID);
	CHECK(hi >= 0);
	if (hi >= 0)
		engine_on_http(e, EHTTP_HISTORY_ID, reqs[hi].tag, 200, "{}", 2,
		    clock_ms + 3030);
	CHECK_INT(count_topic("/event/lost"), 1);
	CHECK_INT(count_topic("/event/cancelled"), 0);
	check_invariants();
	engine_destroy(e);
}

/* A /queue number a double cannot hold as an exact integer (1e300, a
 * hostile or broken server) is left out instead of converted. */
static void
test_queue_number_out_of_range(void)
{
	struct engine *e = make_engine("bridge-x");
	engine_on_upstream(e, true, clock_ms);
	static const char q[]
	    = "{\"queue_running\": [], \"queue_pending\": [[1e300, \"big-1\", "
	      "{}, {\"client_id\": \"other\"}, []], [-7, \"neg-1\", {}, "
	      "{\"client_id\": \"other\"}, []]]}";
	engine_on_http(e, EHTTP_QUEUE, NULL, 200, q, strlen(q), clock_ms);
	CHECK(payload_has(
	    last_topic("/prompt/big-1/event/queued"), "\"number\":null"));
	CHECK(payload_has(
	    last_topic("/prompt/neg-1/event/queued"), "\"number\":-7"));
	check_invariants();
	engine_destroy(e);
}

static void
test_hostile_frames(void)
{
	struct engine *e = make_engine("x");
	int before = n_msgs;
	static const char *const bad[] = {
		"",
		"   ",
		"not json",
		"{\"type\": \"status\", \"data\": {}",
		"[1, 2]",
		"{\"data\": {}}",
		"{\"type\": 5, \"data\": {}}",
		"{\"type\": \"progress\", \"data\": {\"value\": \"x\", "
		"\"max\": 2, \"prompt_id\": \"p\"}}",
		"{\"type\": \"executing\", \"data\": {\"node\": 5, "
		"\"prompt_id\": \"p\"}}",
		"{\"type\": \"status\", \"data\": \"x\"}",
		"{\"type\": \"x\", \"data\": {\"a\": \"\xff\xfe\"}}",
		"{\"type\": \"x\", \"data\": {}} trailing",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		engine_on_text(e, bad[i], strlen(bad[i]), clock_ms);
	CHECK_INT(n_msgs, before);
	struct engine_counters c;
	engine_get_counters(e, &c);
	CHECK_INT(c.rejected_total, sizeof(bad) / sizeof(bad[0]));

	/* an id full of topic metacharacters stays inside comfyui/t/ */
	static const char evil[]
	    = "{\"type\": \"execution_start\", \"data\": {\"prompt_id\": "
	      "\"../#/+/$SYS/a\\u0000b\", \"timestamp\": 1}}";
	static const char evil2[]
	    = "{\"type\": \"exec/../#\", \"data\": {\"prompt_id\": "
	      "\"$SYS/+/#\", \"timestamp\": 1}}";
	engine_on_text(e, evil, strlen(evil), clock_ms);
	engine_on_text(e, evil2, strlen(evil2), clock_ms);
	CHECK(n_msgs > before);
	CHECK_INT(count_topic("/prompt/_SYS____/event/exec_..__"), 1);
	CHECK_INT(count_states(), 1);
	check_invariants();

	/* NaN / Infinity become null, nothing invalid goes out */
	static const char nan_frame[]
	    = "{\"type\": \"progress\", \"data\": {\"value\": NaN, \"max\": "
	      "Infinity, \"prompt_id\": \"p1\", \"node\": \"3\"}}";
	engine_on_text(e, nan_frame, strlen(nan_frame), clock_ms);
	const struct msg *pm = last_topic("/event/progress");
	CHECK(payload_has(pm, "\"percent\":null"));
	CHECK(payload_has(pm, "\"value\":null,\"max\":null"));
	check_invariants();
	engine_destroy(e);
}

static void
test_execution_blocked_not_terminal(void)
{
	struct engine *e = make_engine("x");
	static const char blocked[]
	    = "{\"type\": \"execution_error\", \"data\": {\"prompt_id\": "
	      "\"p1\", \"node_id\": \"5\", \"node_type\": \"X\", "
	      "\"executed\": [], \"exception_message\": \"Execution "
	      "Blocked: no\", \"exception_type\": \"ExecutionBlocked\", "
	      "\"traceback\": [], \"current_inputs\": [], "
	      "\"current_outputs\": []}}";
	static const char success[]
	    = "{\"type\": \"execution_success\", \"data\": {\"prompt_id\": "
	      "\"p1\", \"timestamp\": 5}}";
	engine_on_text(e, blocked, strlen(blocked), clock_ms);
	CHECK_INT(count_topic("/completion"), 0);
	CHECK_INT(count_topic("/event/execution_error"), 1);
	CHECK(payload_has(last_topic("/state"), "\"status\":\"running\"")
	    || payload_has(last_topic("/state"), "\"status\":\"queued\""));
	engine_on_text(e, success, strlen(success), clock_ms);
	CHECK_INT(count_topic("/completion"), 1);
	CHECK_INT(count_topic("/event/execution_success"), 1);
	CHECK(payload_has(last_topic("/completion"), "\"success\""));
	engine_destroy(e);
}

static void
test_state_ttl_clears(void)
{
	struct engine *e = make_engine("5f0c2a8e-3b1d-4c7e-9a62-1d4e8b7f0c35");
	feed_trace(e, "a_normal_txt2img");
	int before = count_states();
	engine_tick(e, clock_ms + 3600 * 1000 + 10, NULL);
	CHECK_INT(count_states(), before + 1);
	const struct msg *s = last_topic("/state");
	CHECK(s && s->len == 0 && s->retain);
	engine_destroy(e);
}

#define ERR_ID "f7a3c9e1-5d2b-4a6f-8e0c-3b9d1f5a7c62"

/* The prompt's execution_error frame was dropped (here: cut short, so
 * invalid JSON); `executing` null must not turn that into a success: the
 * terminal comes from history instead. Without a dropped frame, the same
 * end is a success (servers older than execution_success). */
static void
test_dropped_terminal_resolved_by_history(void)
{
	static const char start[]
	    = "{\"type\": \"execution_start\", \"data\": {\"prompt_id\": "
	      "\"" ERR_ID "\", \"timestamp\": 1778578200000}}";
	static const char broken_error[]
	    = "{\"type\": \"execution_error\", \"data\": {\"prompt_id\": "
	      "\"" ERR_ID "\", \"node_id\": \"3\", \"exception_message";
	static const char end[] = "{\"type\": \"executing\", \"data\": "
	                          "{\"node\": null, \"prompt_id\": "
	                          "\"" ERR_ID "\"}}";
	for (int dropped = 0; dropped <= 1; dropped++) {
		struct engine *e = make_engine("5f0c2a8e-3b1d-4c7e-9a62-");
		engine_on_upstream(e, true, clock_ms);
		engine_on_text(e, start, strlen(start), clock_ms);
		if (dropped)
			engine_on_text(e, broken_error, strlen(broken_error),
			    clock_ms + 1);
		n_reqs = 0;
		engine_on_text(e, end, strlen(end), clock_ms + 2);
		engine_tick(e, clock_ms + 3, NULL);
		int hi = find_req(EHTTP_HISTORY_ID);
		if (!dropped) {
			CHECK_INT(count_topic("/event/execution_success"), 1);
			CHECK_INT(hi, -1);
			engine_destroy(e);
			continue;
		}
		CHECK_INT(count_terminals(), 0);
		CHECK(hi >= 0 && strcmp(reqs[hi].tag, ERR_ID) == 0);
		if (hi >= 0) {
			size_t len;
			char *h = sample("history_by_id_error.json", &len);
			engine_on_http(e, EHTTP_HISTORY_ID, reqs[hi].tag, 200,
			    h, len, clock_ms + 10);
			free(h);
		}
		CHECK_INT(count_terminals(), 1);
		CHECK(payload_has(last_topic("/event/execution_error"),
		    "\"source\":\"history\""));
		CHECK(payload_has(
		    last_topic("/completion"), "\"event_type\":\"error\""));
		check_invariants();
		engine_destroy(e);
	}
}

/* Our prompt left the queue with its terminal frame still unread: the
 * history lookup waits the grace (1.5 s), and while reading the WebSocket
 * is paused (backpressure) it waits on, the grace running again from the
 * resume. */
static void
test_history_lookup_waits_while_paused(void)
{
	static const char start[]
	    = "{\"type\": \"execution_start\", \"data\": {\"prompt_id\": "
	      "\"" ERR_ID "\", \"timestamp\": 1778578200000}}";
	static const char idle[]
	    = "{\"queue_running\": [], \"queue_pending\": []}";
	for (int paused = 0; paused <= 1; paused++) {
		struct engine *e = make_engine("5f0c2a8e-3b1d-4c7e-9a62-");
		int64_t t = clock_ms;
		engine_on_upstream(e, true, t);
		engine_on_text(e, start, strlen(start), t);
		if (paused)
			engine_on_upstream_paused(e, true, t + 1);
		n_reqs = 0;
		engine_on_http(
		    e, EHTTP_QUEUE, NULL, 200, idle, strlen(idle), t + 2);
		engine_tick(e, t + 1000, NULL);
		CHECK_INT(find_req(EHTTP_HISTORY_ID), -1);
		engine_tick(e, t + 1600, NULL);
		if (!paused) {
			CHECK(find_req(EHTTP_HISTORY_ID) >= 0);
			engine_destroy(e);
			continue;
		}
		CHECK_INT(find_req(EHTTP_HISTORY_ID), -1);
		engine_tick(e, t + 2500, NULL);
		CHECK_INT(find_req(EHTTP_HISTORY_ID), -1);
		engine_on_upstream_paused(e, false, t + 2600);
		engine_tick(e, t + 3500, NULL);
		CHECK_INT(find_req(EHTTP_HISTORY_ID), -1);
		CHECK(engine_due(e) >= t + 4100);
		engine_tick(e, t + 4100, NULL);
		CHECK(find_req(EHTTP_HISTORY_ID) >= 0);
		engine_destroy(e);
	}
}

/* Pauses back to back (1 s paused, 1 s reading) keep restarting the
 * grace, but hold the lookup back 30 s past its due time at the most. */
static void
test_history_lookup_not_deferred_for_ever(void)
{
	static const char start[]
	    = "{\"type\": \"execution_start\", \"data\": {\"prompt_id\": "
	      "\"" ERR_ID "\", \"timestamp\": 1778578200000}}";
	static const char idle[]
	    = "{\"queue_running\": [], \"queue_pending\": []}";
	struct engine *e = make_engine("5f0c2a8e-3b1d-4c7e-9a62-");
	int64_t t = clock_ms, asked = -1;
	engine_on_upstream(e, true, t);
	engine_on_text(e, start, strlen(start), t);
	n_reqs = 0;
	engine_on_http(e, EHTTP_QUEUE, NULL, 200, idle, strlen(idle), t + 2);
	for (int64_t now = t + 100; now < t + 60000 && asked < 0; now += 100) {
		engine_on_upstream_paused(e, (now / 1000) % 2 == 0, now);
		engine_tick(e, now, NULL);
		if (find_req(EHTTP_HISTORY_ID) >= 0)
			asked = now - t;
	}
	fprintf(stderr, "  history lookup after %lld ms\n", (long long) asked);
	CHECK(asked >= 30000);
	CHECK(asked <= 32000);
	engine_destroy(e);
}

/* A prompt queued, run and finished between two polls of an idle queue:
 * the status frame that says the queue shrank asks for the history list
 * (once: the poll it also triggers does not ask again). */
static void
test_queue_shrink_reads_history_list(void)
{
	static const char status_one[]
	    = "{\"type\": \"status\", \"data\": {\"status\": {\"exec_info\": "
	      "{\"queue_remaining\": 1}}}}";
	static const char status_zero[]
	    = "{\"type\": \"status\", \"data\": {\"status\": {\"exec_info\": "
	      "{\"queue_remaining\": 0}}}}";
	static const char idle[]
	    = "{\"queue_running\": [], \"queue_pending\": []}";
	struct engine *e = make_engine("bridge-x");
	engine_on_upstream(e, true, clock_ms);
	engine_on_http(e, EHTTP_HISTORY_LIST, NULL, 200, "{}", 2, clock_ms);
	engine_on_http(
	    e, EHTTP_QUEUE, NULL, 200, idle, strlen(idle), clock_ms);
	engine_on_text(e, status_one, strlen(status_one), clock_ms + 1);
	n_reqs = 0;
	engine_on_text(e, status_zero, strlen(status_zero), clock_ms + 2);
	int lists = 0;
	for (int i = 0; i < n_reqs; i++)
		lists += reqs[i].kind == EHTTP_HISTORY_LIST;
	CHECK_INT(lists, 1);
	/* both polls answer "idle", as if the prompt had never been seen */
	engine_on_http(
	    e, EHTTP_QUEUE, NULL, 200, idle, strlen(idle), clock_ms + 3);
	engine_on_http(
	    e, EHTTP_QUEUE, NULL, 200, idle, strlen(idle), clock_ms + 4);
	lists = 0;
	for (int i = 0; i < n_reqs; i++)
		lists += reqs[i].kind == EHTTP_HISTORY_LIST;
	CHECK_INT(lists, 1);
	size_t len;
	char *h = sample("history_by_id_error.json", &len);
	engine_on_http(e, EHTTP_HISTORY_LIST, NULL, 200, h, len, clock_ms + 5);
	free(h);
	CHECK_INT(count_topic("/event/execution_error"), 1);
	CHECK_INT(count_topic("/completion"), 1);
	check_invariants();
	engine_destroy(e);
}

/* Contract 4.3: retained topics go out again on every reconnect, also
 * when the broker resumed the session (it may have restarted from an
 * older database). */
static void
test_retained_republished_on_every_reconnect(void)
{
	struct engine *e = make_engine("bridge-x");
	engine_on_broker_connected(e, false, clock_ms);
	engine_on_upstream(e, true, clock_ms);
	int up = count_topic("/upstream/state");
	CHECK(up >= 1);
	engine_on_broker_connected(e, true, clock_ms + 1000);
	CHECK_INT(count_topic("/upstream/state"), up + 1);
	CHECK(payload_has(last_topic("/upstream/state"), "online"));
	engine_on_broker_connected(e, false, clock_ms + 2000);
	CHECK_INT(count_topic("/upstream/state"), up + 2);
	/* the bridge's own "online" goes ahead of any backlog, nothing else */
	const struct msg *online = last_topic("/bridge/state");
	CHECK(online != NULL && online->urgent);
	for (int i = 0; i < n_msgs; i++)
		if (strstr(msgs[i].topic, "/bridge/state") == NULL)
			CHECK(!msgs[i].urgent);
	/* no check_invariants(): a republished copy keeps its seq */
	engine_destroy(e);
}

/* Lines of stderr that contain needle, from the capture file cap. */
static int
count_lines_with(FILE *cap, const char *needle)
{
	char line[1024];
	int n = 0;
	rewind(cap);
	while (fgets(line, sizeof(line), cap) != NULL)
		n += strstr(line, needle) != NULL;
	return n;
}

/* Contract 4.5: the health figures that report faults are logged at info
 * when they change, and only then. */
static void
test_faults_logged_on_change(void)
{
	struct engine *e = make_engine("bridge-x");
	int64_t t0 = clock_ms;
	FILE *cap = tmpfile();
	CHECK(cap != NULL);
	if (cap == NULL)
		return;
	fflush(stderr);
	int saved = dup(2);
	dup2(fileno(cap), 2);
	struct engine_health_io h;
	memset(&h, 0, sizeof(h));
	h.published[MSG_PROGRESS] = 10;
	engine_tick(e, t0 + 1000, &h); /* nothing went wrong */
	h.published[MSG_PROGRESS] = 20;
	engine_tick(e, t0 + 31000, &h); /* traffic only */
	h.dropped[MSG_PROGRESS] = 5;
	engine_tick(e, t0 + 61000, &h); /* drops: logged */
	engine_tick(e, t0 + 91000, &h); /* unchanged */
	h.mqtt_reconnects = 1;
	engine_tick(e, t0 + 121000, &h); /* a reconnect: logged */
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	CHECK_INT(count_topic("/bridge/health"), 5);
	CHECK_INT(count_lines_with(cap, "health:"), 2);
	CHECK_INT(count_lines_with(cap, "5 progress"), 2);
	CHECK_INT(count_lines_with(cap, "1 MQTT"), 1);
	fclose(cap);
	engine_destroy(e);
}

/* Control characters and non-characters in a prompt id or an event type
 * never reach an MQTT user property (mosquitto drops the connection for
 * them); events of no prompt go out at QoS 0 (contract 2). */
static void
test_hostile_strings_in_properties(void)
{
	static const char start[]
	    = "{\"type\": \"execution_start\", \"data\": {\"prompt_id\": "
	      "\"evil\\u0007id\\u0085\\uffff\", \"timestamp\": 1}}";
	static const char custom[]
	    = "{\"type\": \"my\\u0002type\", \"data\": {\"x\": 1}}";
	static const char status[]
	    = "{\"type\": \"status\", \"data\": {\"status\": {\"exec_info\": "
	      "{\"queue_remaining\": 0}}}}";
	struct engine *e = make_engine("bridge-x");
	engine_on_text(e, start, strlen(start), clock_ms);
	engine_on_text(e, custom, strlen(custom), clock_ms + 1);
	engine_on_text(e, status, strlen(status), clock_ms + 2);
	const struct msg *st = last_topic("/event/execution_start");
	CHECK(st != NULL);
	if (st != NULL)
		CHECK_STR(st->prompt_prop,
		    "evil\xEF\xBF\xBDid\xEF\xBF\xBD\xEF\xBF\xBD");
	CHECK(payload_has(st, "evil\\u0007id")); /* the raw id stays */
	const struct msg *cu = last_topic("/event/my_type");
	CHECK(cu != NULL && cu->qos == 0);
	if (cu != NULL)
		CHECK_STR(cu->type_prop, "my\xEF\xBF\xBDtype");
	const struct msg *sm = last_topic("/event/status");
	CHECK(sm != NULL && sm->qos == 0 && !sm->retain);
	CHECK(st != NULL && st->qos == 1);
	check_invariants();
	engine_destroy(e);
}

/* percent stays within 0..100 (the schemas' range) whatever a node
 * reports; files of every kind count in "images". */
static void
test_progress_and_outputs_in_range(void)
{
	static const char start[]
	    = "{\"type\": \"execution_start\", \"data\": {\"prompt_id\": "
	      "\"p1\", \"timestamp\": 1}}";
	static const char over[] = "{\"type\": \"progress\", \"data\": "
	                           "{\"value\": 25, \"max\": 20, "
	                           "\"prompt_id\": \"p1\", \"node\": \"3\"}}";
	static const char under[] = "{\"type\": \"progress\", \"data\": "
	                            "{\"value\": -5, \"max\": 20, "
	                            "\"prompt_id\": \"p1\", \"node\": \"3\"}}";
	static const char executed[]
	    = "{\"type\": \"executed\", \"data\": {\"node\": \"9\", "
	      "\"output\": {\"gifs\": [{\"filename\": \"a.webp\"}, "
	      "{\"filename\": \"b.webp\"}], \"audio\": [{\"filename\": "
	      "\"c.flac\", \"type\": \"output\"}], \"text\": [\"hello\"], "
	      "\"animated\": [true]}, \"prompt_id\": \"p1\"}}";
	struct engine *e = make_engine("bridge-x");
	engine_on_text(e, start, strlen(start), clock_ms);
	engine_on_text(e, over, strlen(over), clock_ms + 1);
	CHECK(payload_has(last_topic("/event/progress"), "\"percent\":100.0"));
	engine_tick(e, clock_ms + 150, NULL); /* the coalesced state */
	CHECK(payload_has(last_topic("/state"), "\"percent\":100.0"));
	engine_on_text(e, under, strlen(under), clock_ms + 200);
	CHECK(payload_has(last_topic("/event/progress"), "\"percent\":0.0"));
	engine_on_text(e, executed, strlen(executed), clock_ms + 400);
	CHECK(payload_has(last_topic("/event/executed"), "\"images\":3"));
	check_invariants();
	engine_destroy(e);
}

/* An error carries every member the schema requires, with its type, even
 * when ComfyUI left some out or history gave no details. */
static void
test_error_payload_complete(void)
{
	static const char start[]
	    = "{\"type\": \"execution_start\", \"data\": {\"prompt_id\": "
	      "\"p2\", \"timestamp\": 1}}";
	static const char error[]
	    = "{\"type\": \"execution_error\", \"data\": {\"prompt_id\": "
	      "\"p2\", \"timestamp\": 2}}";
	struct engine *e = make_engine("bridge-x");
	engine_on_text(e, start, strlen(start), clock_ms);
	engine_on_text(e, error, strlen(error), clock_ms + 1);
	const struct msg *c = last_topic("/completion");
	CHECK(payload_has(c,
	    "\"error\":{\"node_id\":null,\"node_type\":null,"
	    "\"exception_type\":\"\",\"exception_message\":\"\","
	    "\"traceback\":[]}"));
	engine_destroy(e);

	/* history says "error" and nothing more */
	static const char entry[]
	    = "{\"p3\": {\"prompt\": [0, \"p3\", {}, {}, []], \"outputs\": "
	      "{}, "
	      "\"status\": {\"status_str\": \"error\", \"completed\": false, "
	      "\"messages\": []}}}";
	e = make_engine("bridge-x");
	engine_on_upstream(e, true, clock_ms);
	engine_on_http(e, EHTTP_HISTORY_LIST, NULL, 200, "{}", 2, clock_ms);
	engine_on_http(
	    e, EHTTP_HISTORY_LIST, NULL, 200, entry, strlen(entry), clock_ms);
	c = last_topic("/completion");
	CHECK(payload_has(c, "\"event_type\":\"error\""));
	CHECK(payload_has(c, "\"exception_type\":\"\""));
	CHECK(payload_has(c, "\"traceback\":[]"));
	check_invariants();
	engine_destroy(e);
}

/* A long queue of big workflows (here 40 prompts of 10,000 numbers each:
 * about 400k tokens, over the old fixed budget) is read whole; a body
 * that cannot be used is counted as an HTTP failure. */
static void
test_big_queue_body(void)
{
	size_t cap = 8u << 20, len = 0;
	char *body = malloc(cap);
	CHECK(body != NULL);
	if (body == NULL)
		return;
	len += (size_t) snprintf(body + len, cap - len,
	    "{\"queue_running\": [], \"queue_pending\": [");
	for (int i = 0; i < 40; i++) {
		len += (size_t) snprintf(body + len, cap - len,
		    "%s[%d, \"big-%02d\", {\"3\": {\"inputs\": {\"v\": [",
		    i ? ", " : "", i, i);
		for (int k = 0; k < 10000; k++)
			len += (size_t) snprintf(
			    body + len, cap - len, "%s%d", k ? "," : "", k);
		len += (size_t) snprintf(body + len, cap - len,
		    "]}, \"class_type\": \"X\"}}, {\"client_id\": \"o\"}, "
		    "[\"9\"]]");
	}
	len += (size_t) snprintf(body + len, cap - len, "]}");
	struct engine *e = make_engine("bridge-x");
	engine_on_upstream(e, true, clock_ms);
	engine_on_http(e, EHTTP_QUEUE, NULL, 200, body, len, clock_ms);
	CHECK_INT(count_topic("/event/queued"), 40);
	CHECK(payload_has(last_topic("/queue"), "\"queue_remaining\":40"));
	struct engine_counters c;
	engine_get_counters(e, &c);
	CHECK_INT(c.http_failures, 0);
	/* cut short: unusable, counted */
	engine_on_http(e, EHTTP_QUEUE, NULL, 200, body, len / 2, clock_ms + 1);
	engine_get_counters(e, &c);
	CHECK_INT(c.http_failures, 1);
	/* and the parser works again for a small one after the trim */
	static const char idle[]
	    = "{\"queue_running\": [], \"queue_pending\": []}";
	engine_on_http(
	    e, EHTTP_QUEUE, NULL, 200, idle, strlen(idle), clock_ms + 2);
	CHECK(payload_has(last_topic("/queue"), "\"queue_remaining\":0"));
	/* a lone surrogate (Python's escape of a non-UTF-8 file name, a
	 * browser's half emoji) no longer makes the whole queue unusable */
	static const char lone[]
	    = "{\"queue_running\": [[1, \"half-\\udcff\", {\"3\": "
	      "{\"inputs\": {\"text\": \"\\ud83d\"}}}, {}, []]], "
	      "\"queue_pending\": []}";
	engine_on_http(
	    e, EHTTP_QUEUE, NULL, 200, lone, strlen(lone), clock_ms + 3);
	CHECK(payload_has(
	    last_topic("/queue"), "\"running\":[\"half-\xEF\xBF\xBD\"]"));
	engine_get_counters(e, &c);
	CHECK_INT(c.http_failures, 1);
	check_invariants();
	free(body);
	engine_destroy(e);
}

/* A retained state of `id` with the given status and finished_at. */
static void
feed_retained_state(struct engine *e, const char *topic, const char *id,
    const char *status, int64_t finished_at, int64_t now)
{
	char payload[512];
	char fin[32] = "null";
	if (finished_at > 0)
		snprintf(fin, sizeof(fin), "%lld", (long long) finished_at);
	snprintf(payload, sizeof(payload),
	    "{\"v\":1,\"prompt_id\":\"%s\",\"instance\":\"t\",\"status\":\"%"
	    "s\","
	    "\"finished_at\":%s,\"outputs\":null,\"error\":null}",
	    id, status, fin);
	engine_on_retained_state(e, topic, payload, strlen(payload), now);
}

static int
count_clears(const char *topic)
{
	int n = 0;
	for (int i = 0; i < n_msgs; i++)
		n += strcmp(msgs[i].topic, topic) == 0 && msgs[i].len == 0
		    && msgs[i].retain;
	return n;
}

/* Finished states an earlier run left retained (MQTT 3.1.1: no expiry)
 * are cleared once their TTL (3600 s here) has passed, at once or later;
 * nothing else is touched. */
static void
test_stale_retained_states_cleared(void)
{
	struct engine *e = make_engine("bridge-x");
	int64_t now = clock_ms;
	CHECK_STR(engine_state_filter(e), "comfyui/t/prompt/+/state");
	static const char start[]
	    = "{\"type\": \"execution_start\", \"data\": {\"prompt_id\": "
	      "\"live-1\", \"timestamp\": 1}}";
	engine_on_text(e, start, strlen(start), now);
	reset_capture();
	feed_retained_state(e, "comfyui/t/prompt/old-1/state", "old-1",
	    "success", now - 7200 * 1000, now);
	CHECK_INT(count_clears("comfyui/t/prompt/old-1/state"), 1);
	feed_retained_state(e, "comfyui/t/prompt/old-2/state", "old-2",
	    "error", now - 600 * 1000, now);
	feed_retained_state(e, "comfyui/t/prompt/old-2/state", "old-2",
	    "error", now - 600 * 1000, now + 1); /* again, after a reconnect */
	/* not to be touched */
	feed_retained_state(
	    e, "comfyui/t/prompt/run-1/state", "run-1", "running", 0, now);
	feed_retained_state(e, "comfyui/t/prompt/live-1/state", "live-1",
	    "success", now - 7200 * 1000, now);
	feed_retained_state(e, "comfyui/other/prompt/x/state", "x", "success",
	    now - 7200 * 1000, now);
	feed_retained_state(e, "comfyui/t/prompt/a/b/state", "a", "success",
	    now - 7200 * 1000, now);
	engine_on_retained_state(
	    e, "comfyui/t/prompt/old-3/state", "{\"v\":", 5, now);
	engine_on_retained_state(
	    e, "comfyui/t/prompt/old-4/state", "", 0, now);
	CHECK_INT(n_msgs, 1);
	engine_tick(e, now + 3000 * 1000 - 1, NULL);
	CHECK_INT(count_clears("comfyui/t/prompt/old-2/state"), 0);
	engine_tick(e, now + 3000 * 1000, NULL);
	CHECK_INT(count_clears("comfyui/t/prompt/old-2/state"), 1);
	engine_tick(e, now + 4000 * 1000, NULL);
	CHECK_INT(count_clears("comfyui/t/prompt/old-2/state"), 1);
	CHECK_INT(count_clears("comfyui/t/prompt/run-1/state"), 0);
	CHECK_INT(count_clears("comfyui/t/prompt/live-1/state"), 0);
	CHECK_INT(count_clears("comfyui/other/prompt/x/state"), 0);
	CHECK_INT(count_clears("comfyui/t/prompt/a/b/state"), 0);
	check_invariants();
	engine_destroy(e);
}

/* Prompts an earlier run left queued or running (kill -9, an upgrade) are
 * resolved from history after a restart: their end is published once, and
 * what that run published is not published again. */
static void
test_unfinished_states_of_an_earlier_run_resolved(void)
{
	static const char pid_run[] = "8c2f6e1a-4b7d-4e3a-9f05-6d1c2b8a7e94";
	struct engine *e = make_engine("bridge-x");
	int64_t now = clock_ms;
	char payload[512];
	snprintf(payload, sizeof(payload),
	    "{\"v\":1,\"prompt_id\":\"%s\",\"instance\":\"t\","
	    "\"status\":\"running\",\"queued_at\":1778578199990,"
	    "\"started_at\":1778578200000,\"finished_at\":null}",
	    pid_run);
	engine_on_retained_state(e,
	    "comfyui/t/prompt/8c2f6e1a-4b7d-4e3a-9f05-"
	    "6d1c2b8a7e94/state",
	    payload, strlen(payload), now);
	static const char queued[]
	    = "{\"v\":1,\"prompt_id\":\"old-q\",\"instance\":\"t\","
	      "\"status\":\"queued\",\"queued_at\":1778578100000,"
	      "\"started_at\":null,\"finished_at\":null}";
	engine_on_retained_state(
	    e, "comfyui/t/prompt/old-q/state", queued, strlen(queued), now);
	engine_on_upstream(e, true, now);
	engine_on_http(e, EHTTP_HISTORY_LIST, NULL, 200, "{}", 2, now);
	static const char empty[]
	    = "{\"queue_running\": [], \"queue_pending\": []}";
	engine_on_http(e, EHTTP_QUEUE, NULL, 200, empty, strlen(empty), now);
	engine_tick(e, now + 10, NULL);
	for (int i = 0; i < n_reqs; i++) {
		if (reqs[i].kind != EHTTP_HISTORY_ID)
			continue;
		if (strcmp(reqs[i].tag, pid_run) == 0) {
			size_t len;
			char *h = sample("history_by_id_success.json", &len);
			engine_on_http(e, EHTTP_HISTORY_ID, reqs[i].tag, 200,
			    h, len, now + 20);
			free(h);
		} else {
			engine_on_http(e, EHTTP_HISTORY_ID, reqs[i].tag, 200,
			    "{}", 2, now + 20);
		}
	}
	CHECK_INT(count_topic("/event/queued"), 0);
	CHECK_INT(count_topic("/event/execution_start"), 0);
	CHECK_INT(count_topic("/event/execution_success"), 1);
	CHECK(payload_has(
	    last_topic("/event/execution_success"), "\"source\":\"history\""));
	CHECK(payload_has(
	    last_topic("/event/execution_success"), "\"duration_ms\":5168"));
	CHECK_INT(count_topic("/prompt/old-q/event/lost"), 1);
	CHECK_INT(count_topic("/completion"), 2);
	check_invariants();
	engine_destroy(e);
}

/* A /history list of n finished prompts hist-<first>.. (what a server
 * that ignores max_items answers). */
static char *
history_body(int first, int n, size_t *len)
{
	size_t cap = (size_t) n * 160 + 16;
	char *b = malloc(cap);
	size_t l = 0;
	b[l++] = '{';
	for (int i = first; i < first + n; i++)
		l += (size_t) snprintf(b + l, cap - l,
		    "%s\"hist-%d\": {\"outputs\": {}, \"status\": "
		    "{\"status_str\": \"success\", \"completed\": true, "
		    "\"messages\": []}}",
		    i > first ? ", " : "", i);
	b[l++] = '}';
	*len = l;
	return b;
}

/* A history list of 10,000 entries, read again and again, never makes a
 * prompt finish twice: the baseline's are never reported, new ones once. */
static void
test_history_ignoring_max_items(void)
{
	struct engine *e = make_engine("bridge-x");
	engine_on_upstream(e, true, clock_ms);
	size_t len;
	char *old = history_body(0, 10000, &len);
	for (int i = 0; i < 4; i++)
		engine_on_http(
		    e, EHTTP_HISTORY_LIST, NULL, 200, old, len, clock_ms + i);
	CHECK_INT(total_completions, 0);
	free(old);
	char *fresh = history_body(10000, 10000, &len);
	for (int i = 0; i < 4; i++)
		engine_on_http(e, EHTTP_HISTORY_LIST, NULL, 200, fresh, len,
		    clock_ms + 10 + i);
	CHECK_INT(total_completions, 10000);
	free(fresh);
	/* a late terminal frame of one long evicted from the table: refused */
	static const char again[]
	    = "{\"type\": \"execution_success\", \"data\": {\"prompt_id\": "
	      "\"hist-10000\", \"timestamp\": 1}}";
	engine_on_text(e, again, strlen(again), clock_ms + 20);
	CHECK_INT(total_completions, 10000);
	/* a baseline prompt's own terminal frame, read after the list that
	 * already held it, still goes out (once) */
	static const char late[]
	    = "{\"type\": \"execution_success\", \"data\": {\"prompt_id\": "
	      "\"hist-5\", \"timestamp\": 1}}";
	engine_on_text(e, late, strlen(late), clock_ms + 21);
	engine_on_text(e, late, strlen(late), clock_ms + 22);
	CHECK_INT(total_completions, 10001);
	engine_destroy(e);
}

/* Prompt p-<i> starts and succeeds (live frames) at now. */
static void
run_named(struct engine *e, const char *id, int64_t now)
{
	char f[512];
	snprintf(f, sizeof(f),
	    "{\"type\": \"execution_start\", \"data\": {\"prompt_id\": "
	    "\"%s\", \"timestamp\": %lld}}",
	    id, (long long) now);
	engine_on_text(e, f, strlen(f), now);
	snprintf(f, sizeof(f),
	    "{\"type\": \"execution_success\", \"data\": {\"prompt_id\": "
	    "\"%s\", \"timestamp\": %lld}}",
	    id, (long long) now);
	engine_on_text(e, f, strlen(f), now);
}

static void
run_prompt(struct engine *e, int i, int64_t now)
{
	char id[32];
	snprintf(id, sizeof(id), "p-%d", i);
	run_named(e, id, now);
}

/* The id of prompt i of kind k: a lowercase UUID (kept packed while its
 * clear waits), an uppercase one, one 17 bytes long, a long other one. */
static void
odd_id(char *id, size_t size, int i, int k)
{
	static const char *const fmt[] = {
		"%08x-0c1d-4e2f-8a3b-%012x",
		"%08X-0C1D-4E2F-8A3B-%012X",
		"seventeen-b%06x",
		"a-prompt-id-longer-than-a-uuid-%08x-%012x",
	};
	if (k == 2)
		snprintf(id, size, fmt[k], (unsigned) i);
	else
		snprintf(id, size, fmt[k], (unsigned) i * 2654435761u,
		    (unsigned) i);
}

/* States of prompts evicted from the table wait for their TTL, however
 * their ids are kept: each is cleared once, at its time, on its own
 * exact topic. */
static void
test_ttl_clears_keep_every_id(void)
{
	struct engine *e = make_engine("bridge-x");
	int64_t now = clock_ms;
	char id[128], topic[256];
	for (int i = 0; i < 800; i++) {
		odd_id(id, sizeof(id), i, i % 4);
		run_named(e, id, now + i);
	}
	CHECK_INT(total_completions, 800);
	reset_capture();
	engine_tick(e, now + 3600 * 1000 + 399, NULL);
	CHECK_INT(total_clears, 400);
	engine_tick(e, now + 3600 * 1000 + 799, NULL);
	CHECK_INT(total_clears, 800);
	for (int i = 0; i < 800; i++) {
		odd_id(id, sizeof(id), i, i % 4);
		snprintf(
		    topic, sizeof(topic), "comfyui/t/prompt/%s/state", id);
		CHECK_INT(count_clears(topic), 1);
	}
	for (int i = 1; i < n_msgs; i++)
		CHECK(strcmp(msgs[i - 1].topic, msgs[i].topic) != 0);
	engine_destroy(e);
}

/* Every retained state is cleared when its TTL (3600 s) passes, however
 * many finished within one TTL (more than the prompt table holds), and a
 * restart clears every state the earlier run left. */
static void
test_ttl_clears_beyond_the_table(void)
{
	struct engine *e = make_engine("bridge-x");
	int64_t now = clock_ms;
	for (int i = 0; i < 3000; i++)
		run_prompt(e, i, now + i);
	CHECK_INT(total_completions, 3000);
	CHECK_INT(total_clears, 0);
	engine_tick(e, now + 3600 * 1000 + 1000, NULL);
	CHECK_INT(total_clears, 1001); /* p-0 .. p-1000 */
	engine_tick(e, now + 3600 * 1000 + 3000, NULL);
	CHECK_INT(total_clears, 3000);
	engine_destroy(e);

	e = make_engine("bridge-x");
	for (int i = 0; i < 3000; i++) {
		char topic[64], id[16];
		snprintf(id, sizeof(id), "old-%d", i);
		snprintf(
		    topic, sizeof(topic), "comfyui/t/prompt/%s/state", id);
		feed_retained_state(
		    e, topic, id, "success", now - 10 * 1000 + i, now);
		/* read again after a reconnect: still one clear */
		feed_retained_state(
		    e, topic, id, "success", now - 10 * 1000 + i, now + 1);
	}
	CHECK_INT(total_clears, 0);
	engine_tick(e, now + 3600 * 1000, NULL);
	CHECK_INT(total_clears, 3000);
	engine_tick(e, now + 7200 * 1000, NULL);
	CHECK_INT(total_clears, 3000);
	engine_destroy(e);

	/* past the bound (32,768 waiting), the state due first goes early */
	e = make_engine("bridge-x");
	for (int i = 0; i < 32768 + 2; i++) {
		char topic[64], id[16];
		snprintf(id, sizeof(id), "many-%d", i);
		snprintf(
		    topic, sizeof(topic), "comfyui/t/prompt/%s/state", id);
		feed_retained_state(e, topic, id, "success", now - i, now);
	}
	CHECK_INT(total_clears, 2);
	/* a later one finished earlier: due first */
	CHECK_INT(count_clears("comfyui/t/prompt/many-32767/state"), 1);
	CHECK_INT(count_clears("comfyui/t/prompt/many-32768/state"), 1);
	engine_tick(e, now + 3600 * 1000, NULL);
	CHECK_INT(total_clears, 32768 + 2);
	engine_destroy(e);
}

/* A batch of 1,100 pending prompts (more than the table's first size) and
 * a running one: each gets one queued event and one state, however many
 * polls list them, and none is forgotten. */
static void
test_big_batch_queued_once(void)
{
	size_t cap = 1200 * 64, len = 0;
	char *body = malloc(cap);
	len += (size_t) snprintf(body + len, cap - len,
	    "{\"queue_running\": [[0, \"run-0\", {}, {\"client_id\": "
	    "\"o\"}, []]], \"queue_pending\": [");
	for (int i = 1; i <= 1100; i++)
		len += (size_t) snprintf(body + len, cap - len,
		    "%s[%d, \"pend-%d\", {}, {\"client_id\": \"o\"}, []]",
		    i > 1 ? ", " : "", i, i);
	len += (size_t) snprintf(body + len, cap - len, "]}");
	struct engine *e = make_engine("bridge-x");
	engine_on_upstream(e, true, clock_ms);
	engine_on_http(e, EHTTP_HISTORY_LIST, NULL, 200, "{}", 2, clock_ms);
	engine_on_http(e, EHTTP_QUEUE, NULL, 200, body, len, clock_ms);
	CHECK_INT(total_queued, 1101);
	int states = total_states;
	CHECK(states >= 1101);
	for (int i = 1; i < 4; i++)
		engine_on_http(
		    e, EHTTP_QUEUE, NULL, 200, body, len, clock_ms + i);
	CHECK_INT(total_queued, 1101);
	CHECK_INT(total_states, states);
	/* the running prompt is still tracked: its end is its one terminal,
	 * with no second queued */
	static const char done[]
	    = "{\"type\": \"execution_success\", \"data\": {\"prompt_id\": "
	      "\"run-0\", \"timestamp\": 1}}";
	engine_on_text(e, done, strlen(done), clock_ms + 11);
	CHECK_INT(total_completions, 1);
	CHECK_INT(total_queued, 1101);
	free(body);
	engine_destroy(e);
}

/* The frames of our own prompt id, run from start to success. */
static void
run_own_prompt(struct engine *e, const char *id, int64_t at)
{
	char f[3][256];
	snprintf(f[0], sizeof(f[0]),
	    "{\"type\": \"execution_start\", \"data\": {\"prompt_id\": "
	    "\"%s\", "
	    "\"timestamp\": %lld}}",
	    id, (long long) at);
	snprintf(f[1], sizeof(f[1]),
	    "{\"type\": \"executing\", \"data\": {\"node\": \"3\", "
	    "\"prompt_id\": \"%s\"}}",
	    id);
	snprintf(f[2], sizeof(f[2]),
	    "{\"type\": \"execution_success\", \"data\": {\"prompt_id\": "
	    "\"%s\", \"timestamp\": %lld}}",
	    id, (long long) at + 20);
	for (int i = 0; i < 3; i++)
		engine_on_text(e, f[i], strlen(f[i]), at + i * 10);
}

/* A prompt command ComfyUI accepted: its queued event carries the number
 * and our client id, whether the answer comes before the start frame or
 * after it, and never a second queued event or terminal; a /queue answer
 * read before ComfyUI took it does not make it vanish. */
static void
test_submitted_prompt(void)
{
	struct engine *e = make_engine("bridge-x");
	engine_on_upstream(e, true, clock_ms); /* a /queue poll in flight */
	int64_t t = clock_ms + 100;
	n_reqs = 0;
	engine_on_submitted(e, "sub-1", 5, 7, t);
	const struct msg *q = last_topic("/prompt/sub-1/event/queued");
	CHECK(payload_has(q, "\"number\":7"));
	CHECK(payload_has(q, "\"client_id\":\"bridge-x\""));
	CHECK(payload_has(q, "\"source\":\"poll\""));
	CHECK(payload_has(
	    last_topic("/prompt/sub-1/state"), "\"status\":\"queued\""));
	/* the poll in flight was read before: it does not list sub-1 */
	static const char empty[]
	    = "{\"queue_running\": [], \"queue_pending\": []}";
	engine_on_http(
	    e, EHTTP_QUEUE, NULL, 200, empty, strlen(empty), t + 10);
	CHECK(find_req(EHTTP_QUEUE) >= 0); /* asked again after it */
	engine_tick(e, t + 5000, NULL);
	CHECK(find_req(EHTTP_HISTORY_ID) < 0);
	static const char listed[]
	    = "{\"queue_running\": [], \"queue_pending\": [[7, \"sub-1\", "
	      "{}, {\"client_id\": \"bridge-x\"}, []]]}";
	engine_on_http(
	    e, EHTTP_QUEUE, NULL, 200, listed, strlen(listed), t + 5010);
	run_own_prompt(e, "sub-1", t + 5100);
	char order[512];
	event_order("sub-1", order, sizeof(order));
	CHECK_STR(order, "queued,execution_start,executing,execution_success");
	CHECK(payload_has(
	    last_topic("/prompt/sub-1/state"), "\"status\":\"success\""));

	/* the start frame first: queued names our client id already; the
	 * late answer adds no second queued event */
	t += 6000;
	static const char st[]
	    = "{\"type\": \"execution_start\", \"data\": {\"prompt_id\": "
	      "\"sub-2\", \"timestamp\": 1800000006000}}";
	engine_on_text(e, st, strlen(st), t);
	q = last_topic("/prompt/sub-2/event/queued");
	CHECK(payload_has(q, "\"client_id\":\"bridge-x\""));
	engine_on_submitted(e, "sub-2", 5, 8, t + 5);
	CHECK_INT(count_topic("/prompt/sub-2/event/queued"), 1);
	CHECK(payload_has(
	    last_topic("/prompt/sub-2/state"), "\"status\":\"running\""));
	static const char ok2[]
	    = "{\"type\": \"execution_success\", \"data\": {\"prompt_id\": "
	      "\"sub-2\", \"timestamp\": 1800000006100}}";
	engine_on_text(e, ok2, strlen(ok2), t + 100);
	event_order("sub-2", order, sizeof(order));
	CHECK_STR(order, "queued,execution_start,execution_success");
	/* an answer after the prompt finished changes nothing */
	int before = n_msgs;
	engine_on_submitted(e, "sub-2", 5, 8, t + 200);
	engine_on_submitted(e, "sub-1", 5, 7, t + 200);
	CHECK_INT(n_msgs, before);
	/* ids are sanitized as any other; an over-long one is dropped */
	engine_on_submitted(e, "a/b+#c", 6, 9, t + 300);
	CHECK_INT(total_queued, 3);
	/* a number a double does not hold exactly is left out */
	engine_on_submitted(e, "big", 3, INT64_MAX, t + 350);
	CHECK(payload_has(last_topic("/prompt/big/event/queued"),
	    "\"number\":null,\"client_id\":\"bridge-x\""));
	char longid[300];
	memset(longid, 'x', sizeof(longid));
	engine_on_submitted(e, longid, sizeof(longid), 10, t + 400);
	CHECK_INT(total_queued, 4);
	CHECK_INT(count_terminals(), 2);
	check_invariants();
	engine_destroy(e);
}

int
main(void)
{
	check_parser = json_parser_create(65536);
	RUN(test_trace_success);
	RUN(test_trace_old_protocol);
	RUN(test_trace_error_and_interrupt);
	RUN(test_trace_back_to_back_and_cached);
	RUN(test_trace_custom_events);
	RUN(test_foreign_prompt_from_poll_and_history);
	RUN(test_resync_after_reconnect);
	RUN(test_pending_gone_after_reconnect_is_lost);
	RUN(test_queue_number_out_of_range);
	RUN(test_clientless_prompt_starts_first);
	RUN(test_print_outcomes_from_history);
	RUN(test_preview_burst_keeps_the_last);
	RUN(test_upstream_state_only_when_known);
	RUN(test_hostile_frames);
	RUN(test_execution_blocked_not_terminal);
	RUN(test_state_ttl_clears);
	RUN(test_dropped_terminal_resolved_by_history);
	RUN(test_history_lookup_waits_while_paused);
	RUN(test_history_lookup_not_deferred_for_ever);
	RUN(test_queue_shrink_reads_history_list);
	RUN(test_retained_republished_on_every_reconnect);
	RUN(test_faults_logged_on_change);
	RUN(test_hostile_strings_in_properties);
	RUN(test_progress_and_outputs_in_range);
	RUN(test_error_payload_complete);
	RUN(test_big_queue_body);
	RUN(test_stale_retained_states_cleared);
	RUN(test_unfinished_states_of_an_earlier_run_resolved);
	RUN(test_history_ignoring_max_items);
	RUN(test_ttl_clears_beyond_the_table);
	RUN(test_ttl_clears_keep_every_id);
	RUN(test_big_batch_queued_once);
	RUN(test_submitted_prompt);
	reset_capture();
	json_parser_destroy(check_parser);
	TEST_MAIN_END();
}
