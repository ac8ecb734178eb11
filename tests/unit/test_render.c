/* The pure payload writers: each payload from plain data, alone. */
#include "test.h"

#include "err.h"
#include "render.h"
#include "tracker.h"

static char out[65536];
static const struct render_ctx ctx = { "gpu1", 1000, 256 * 1024 };

static void
test_state_node_lists(void)
{
	struct tracker *t = tracker_create(4);
	bool created;
	struct prompt *p = tracker_get(t, "p1", 2, &created);
	p->status = PS_RUNNING;
	p->queued_at = 1500;
	p->started_at = 2000;
	CHECK_INT(node_list_add(&p->cached, "4", -1), 0);
	CHECK_INT(node_list_add(&p->cached, "4", -1), 0); /* once */
	CHECK_INT(node_list_add(&p->done, "6", 412), 0);
	CHECK_INT(node_list_add(&p->done, "a\"b", -1), 0); /* not timed */
	CHECK(node_list_has(&p->done, "6") && !node_list_has(&p->done, "7"));
	struct jsonw w;
	jsonw_init(&w, out, sizeof(out));
	CHECK_INT(render_state(&w, &ctx, p, 3000, 7), 0);
	out[w.len] = '\0';
	CHECK(strstr(out, "\"nodes_cached\":[\"4\"]") != NULL);
	CHECK(strstr(out, "\"nodes_done\":[\"6\",\"a\\\"b\"]") != NULL);
	CHECK(strstr(out, "\"node_ms\":{\"6\":412}") != NULL);
	CHECK(strstr(out, "\"status\":\"running\"") != NULL);
	CHECK(strstr(out, "\"duration_ms\":null") != NULL);
	CHECK(strstr(out, "\"ts\":3000,\"seq\":7,\"run\":1000") != NULL);
	tracker_destroy(t);
}

/* Renders p's state with seq into buf; returns its length. */
static size_t
state_with(char *buf, size_t cap, const struct prompt *p, uint64_t seq)
{
	struct jsonw w;
	jsonw_init(&w, buf, cap);
	CHECK_INT(render_state(&w, &ctx, p, 3000, seq), 0);
	return w.len;
}

/* render_state_reseq writes what render_state writes with the other seq,
 * also when the digits grow or shrink, when the error object holds a
 * "seq" member and after the truncation mark; it refuses what does not
 * fit, as the writer does. */
static void
test_state_reseq(void)
{
	static char a[4096], b[4096], c[4096];
	struct tracker *t = tracker_create(4);
	bool created;
	struct prompt *p = tracker_get(t, "p1", 2, &created);
	p->status = PS_ERROR;
	p->terminal_sent = true;
	p->started_at = 2000;
	p->finished_at = 2500;
	p->outputs_truncated = true;
	CHECK_INT(buf_set(&p->error, "{\"x\":1,\"seq\":5}", 15), 0);
	static const uint64_t pairs[][2] = { { 7, 8 }, { 9, 10 }, { 99, 100 },
		{ 1000, 999 }, { 0, UINT64_MAX }, { UINT64_MAX, 5 } };
	for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
		size_t na = state_with(a, sizeof(a), p, pairs[i][0]);
		size_t nb = state_with(b, sizeof(b), p, pairs[i][1]);
		size_t nc = 0;
		CHECK_INT(
		    render_state_reseq(c, sizeof(c), a, na, pairs[i][1], &nc),
		    0);
		CHECK_INT((long) nc, (long) nb);
		CHECK(memcmp(b, c, nb + 1) == 0);
	}
	CHECK(strstr(b, "\"truncated\":true}") != NULL);
	size_t na = state_with(a, sizeof(a), p, 9), nc = 0;
	/* 10 needs one byte more, plus the NUL */
	CHECK_INT(render_state_reseq(c, na + 2, a, na, 10, &nc), 0);
	CHECK_INT(render_state_reseq(c, na + 1, a, na, 10, &nc), BR_ETRUNC);
	struct jsonw w;
	jsonw_init(&w, b, na + 1);
	CHECK_INT(render_state(&w, &ctx, p, 3000, 10), BR_ETRUNC);
	CHECK_INT(
	    render_state_reseq(c, sizeof(c), "{}", 2, 1, &nc), BR_EINVAL);
	tracker_destroy(t);
}

static void
test_completion(void)
{
	struct tracker *t = tracker_create(4);
	bool created;
	struct prompt *p = tracker_get(t, "p1", 2, &created);
	p->status = PS_SUCCESS;
	p->terminal_sent = true;
	p->started_at = 2000;
	p->finished_at = 2500;
	struct jsonw w;
	jsonw_init(&w, out, sizeof(out));
	CHECK_INT(render_completion(&w, &ctx, p, 3000, 8), 0);
	out[w.len] = '\0';
	CHECK(strstr(out, "\"event_type\":\"success\"") != NULL);
	CHECK(strstr(out, "\"duration_ms\":500") != NULL);
	CHECK(strstr(out, "\"outputs\":{}") != NULL);
	CHECK(strstr(out, "\"error\":null") != NULL);
	CHECK_STR(render_completion_type(PS_LOST), "lost");
	CHECK_STR(render_completion_type(PS_CANCELLED), "cancelled");
	tracker_destroy(t);
}

static void
test_envelope_and_percent(void)
{
	struct envelope ev;
	envelope_init(&ev, "progress", 5000, SRC_LIVE);
	ev.has_percent = true;
	ev.percent = render_percent(30, 20); /* over max: kept at 100 */
	ev.data_raw = "{\"value\":30}";
	ev.data_raw_len = strlen(ev.data_raw);
	struct jsonw w;
	jsonw_init(&w, out, sizeof(out));
	CHECK_INT(render_envelope(&w, &ctx, &ev, 9), 0);
	out[w.len] = '\0';
	CHECK_STR(out,
	    "{\"v\":1,\"type\":\"progress\",\"instance\":\"gpu1\","
	    "\"prompt_id\":null,\"node\":null,\"ts\":5000,\"seq\":9,"
	    "\"run\":1000,\"source\":\"live\",\"percent\":100.0,"
	    "\"data\":{\"value\":30}}");
	jsonw_init(&w, out, 40);
	CHECK_INT(render_envelope(&w, &ctx, &ev, 9), BR_ETRUNC);
}

static void
test_queue(void)
{
	struct queue_item items[2]
	    = { { .id = "r", .id_len = 1 }, { .id = "w", .id_len = 1 } };
	struct jsonw w;
	jsonw_init(&w, out, sizeof(out));
	CHECK_INT(render_queue(&w, &ctx, items, 1, 2, 4000, 3), 0);
	out[w.len] = '\0';
	CHECK_STR(out,
	    "{\"v\":1,\"queue_remaining\":2,\"running\":[\"r\"],"
	    "\"pending\":[\"w\"],\"ts\":4000,\"seq\":3,\"run\":1000}");
}

static void
test_error_object(void)
{
	struct jsonw w;
	jsonw_init(&w, out, sizeof(out));
	render_error(&w, NULL, -1, false);
	CHECK_INT(jsonw_finish(&w), 0);
	out[w.len] = '\0';
	CHECK_STR(out,
	    "{\"node_id\":null,\"node_type\":null,\"exception_type\":\"\","
	    "\"exception_message\":\"\",\"traceback\":[]}");
}

static void
test_node_output_urls(void)
{
	struct json_parser *jp = json_parser_create(256);
	const char *o = "{\"images\":[{\"filename\":\"a b.png\","
	                "\"subfolder\":\"\",\"type\":\"output\"}],\"n\":1}";
	struct json_doc d;
	CHECK_INT(json_parse(jp, o, strlen(o), true, &d), BR_OK);
	CHECK_INT(render_count_files(&d, 0), 1);
	struct jsonw w;
	bool cut = false;
	jsonw_init(&w, out, sizeof(out));
	render_node_output(&w, "http://h:1", &d, 0, &cut);
	CHECK_INT(jsonw_finish(&w), 0);
	out[w.len] = '\0';
	CHECK(!cut);
	CHECK(strstr(out,
	          "\"url\":\"http://h:1/view?filename=a%20b.png&subfolder=&"
	          "type=output\"")
	    != NULL);
	json_parser_destroy(jp);
}

int
main(void)
{
	RUN(test_state_node_lists);
	RUN(test_state_reseq);
	RUN(test_completion);
	RUN(test_envelope_and_percent);
	RUN(test_queue);
	RUN(test_error_object);
	RUN(test_node_output_urls);
	TEST_MAIN_END();
}
