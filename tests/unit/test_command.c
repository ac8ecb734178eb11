/* The commands core: every verb's body, every bad input, the answer shapes
 * (ComfyUI's 400 passed through), the answer routes, the response-topic
 * refusals, and the repeat rules (correlation, connection, expiry). */
#include "test.h"

#include "buf.h"
#include "command.h"
#include "json.h"
#include "dedup.h"
#include "err.h"

#define P "comfyui/gpu/command/"

struct rec {
	int posts;
	unsigned slot;
	char path[64];
	char body[8192];
	int post_rc;
	int answers;
	char topic[1100]; /* "" for the default topic */
	char answer[8192];
	char corr[300];
	size_t corr_len;
	bool has_corr;
	int accepted; /* io.accepted calls */
	char accepted_id[300];
	int64_t accepted_number;
	int answers_at_accept; /* answers sent before it */
};

static struct rec R;

static int
do_post(
    void *ud, unsigned slot, const char *path, const char *body, size_t len)
{
	R.posts++;
	R.slot = slot;
	snprintf(R.path, sizeof(R.path), "%s", path);
	snprintf(R.body, sizeof(R.body), "%.*s", (int) len, body);
	return R.post_rc;
}

static void
do_answer(void *ud, const char *topic, const char *payload, size_t len,
    const void *corr, size_t corr_len)
{
	R.answers++;
	snprintf(R.topic, sizeof(R.topic), "%s", topic ? topic : "");
	snprintf(R.answer, sizeof(R.answer), "%.*s", (int) len, payload);
	R.has_corr = corr != NULL;
	R.corr_len = corr_len;
	if (corr)
		memcpy(R.corr, corr, corr_len);
}

static void
do_accepted(void *ud, const char *id, size_t len, int64_t number)
{
	R.accepted++;
	snprintf(R.accepted_id, sizeof(R.accepted_id), "%.*s", (int) len, id);
	R.accepted_number = number;
	R.answers_at_accept = R.answers;
}

static struct command *
make(size_t max_bytes)
{
	struct command_cfg cfg = { "comfyui", "gpu", "comfy2mqtt-gpu",
		"http://gpu:8188", max_bytes, "homeassistant" };
	struct command_io io = { do_post, do_answer, do_accepted, NULL };
	struct command *c = NULL;
	CHECK_INT(command_create(&cfg, &io, &c), 0);
	memset(&R, 0, sizeof(R));
	return c;
}

/* A command on topic P<verb>, connected, connection 1. */
static void
send(struct command *c, const char *verb, const char *payload, int64_t now)
{
	char topic[256];
	snprintf(topic, sizeof(topic), P "%s", verb);
	struct command_msg m = { topic, payload, strlen(payload), NULL, NULL,
		0, 1, true, false, false };
	command_on_message(c, &m, now);
}

static void
test_bodies(void)
{
	static const struct {
		const char *verb, *payload, *path, *body;
	} cases[] = {
		{ "prompt", "{\"prompt\": {\"1\": {\"class_type\": \"X\"}}}",
		    "/prompt",
		    "{\"prompt\":{\"1\": {\"class_type\": \"X\"}},"
		    "\"client_id\":\"comfy2mqtt-gpu\"}" },
		{ "prompt",
		    "{\"prompt\":{},\"extra_data\":{\"a\":1},\"front\":true,"
		    "\"prompt_id\":\"p1\",\"correlation\":\"c\"}",
		    "/prompt",
		    "{\"prompt\":{},\"client_id\":\"comfy2mqtt-gpu\","
		    "\"extra_data\":{\"a\":1},\"front\":true,"
		    "\"prompt_id\":\"p1\"}" },
		{ "interrupt", "{}", "/interrupt", "{}" },
		{ "interrupt", "{\"prompt_id\":\"p1\"}", "/interrupt",
		    "{\"prompt_id\":\"p1\"}" },
		{ "cancel", "{\"prompt_ids\":[\"a\",\"b\"]}", "/queue",
		    "{\"delete\":[\"a\",\"b\"]}" },
		{ "clear", "{}", "/queue", "{\"clear\":true}" },
		{ "free", "{}", "/free",
		    "{\"unload_models\":true,\"free_memory\":true}" },
		{ "free", "{\"free_memory\":false}", "/free",
		    "{\"free_memory\":false}" },
		{ "free", "{\"unload_models\":true,\"free_memory\":false}",
		    "/free",
		    "{\"unload_models\":true,\"free_memory\":false}" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct command *c = make(1 << 20);
		send(c, cases[i].verb, cases[i].payload, 1000);
		CHECK_INT(R.posts, 1);
		CHECK_STR(R.path, cases[i].path);
		CHECK_STR(R.body, cases[i].body);
		CHECK_INT(R.answers, 0);
		CHECK_INT(command_pending(c), 1);
		command_on_http(c, R.slot, 200, "", 0, 1001);
		CHECK_INT(R.answers, 1);
		CHECK_INT(command_pending(c), 0);
		command_destroy(c);
	}
}

static void
test_bad_input(void)
{
	static const struct {
		const char *verb, *payload, *type, *message_part;
	} cases[] = {
		{ "prompt", "{\"prompt\":", "bad_json", "not a JSON object" },
		{ "prompt", "[1]", "bad_json", "not a JSON object" },
		{ "prompt", "", "bad_json", "not a JSON object" },
		{ "prompt", "{}", "bad_field", "\\\"prompt\\\" is missing" },
		{ "prompt", "{\"prompt\":[]}", "bad_field",
		    "\\\"prompt\\\" must be an object" },
		{ "prompt", "{\"prompt\":{},\"front\":1}", "bad_field",
		    "\\\"front\\\" must be true or false" },
		{ "prompt", "{\"promt\":{}}", "bad_field",
		    "unknown field \\\"promt\\\"" },
		{ "cancel", "{\"prompt_ids\":[]}", "bad_field",
		    "non-empty array of strings" },
		{ "cancel", "{\"prompt_ids\":[\"a\",2]}", "bad_field",
		    "non-empty array of strings" },
		{ "cancel", "{}", "bad_field",
		    "\\\"prompt_ids\\\" is missing" },
		{ "interrupt", "{\"prompt_id\":5}", "bad_field",
		    "must be a string" },
		{ "clear", "{\"all\":true}", "bad_field",
		    "unknown field \\\"all\\\"" },
		{ "free", "{\"unload_models\":\"yes\"}", "bad_field",
		    "true or false" },
		{ "free", "{\"correlation\":7}", "bad_field",
		    "\\\"correlation\\\" must be a string" },
		{ "free", "{\"response_topic\":7}", "bad_field",
		    "\\\"response_topic\\\" must be a string" },
		{ "reboot", "{}", "unknown_verb",
		    "unknown verb \\\"reboot\\\"" },
		{ "prompt",
		    "{\"prompt\":{},\"x\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}",
		    "too_large", "over --command-max-bytes (40)" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct command *c = make(40);
		send(c, cases[i].verb, cases[i].payload, 1000);
		CHECK_INT(R.posts, 0);
		CHECK_INT(R.answers, 1);
		CHECK_STR(R.topic, "");
		char want[128];
		snprintf(want, sizeof(want),
		    "\"ok\":false,\"correlation\":null,"
		    "\"error\":{\"type\":\"%s\"",
		    cases[i].type);
		if (strstr(R.answer, want) == NULL
		    || strstr(R.answer, cases[i].message_part) == NULL)
			TEST_FAIL("case %zu: %s", i, R.answer);
		struct command_stats s;
		command_get_stats(c, &s);
		CHECK_INT(s.received, 1);
		int failed = 0;
		for (int e = 0; e < CE_COUNT; e++)
			if (strcmp(command_error_name(e), cases[i].type) == 0)
				failed = (int) s.failed[e];
		CHECK_INT(failed, 1);
		command_destroy(c);
	}
}

static void
test_own_answers_ignored(void)
{
	struct command *c = make(1024);
	send(c, "response", "{\"v\":1}", 1000);
	CHECK_INT(R.answers, 0);
	struct command_stats s;
	command_get_stats(c, &s);
	CHECK_INT(s.received, 0);
	command_destroy(c);
}

static void
test_prompt_answers(void)
{
	struct command *c = make(1024);
	send(c, "prompt", "{\"prompt\":{},\"correlation\":\"r1\"}", 1000);
	const char *ok = "{\"prompt_id\": \"abc\", \"number\": 3, "
	                 "\"node_errors\": {}}";
	int answers = R.answers;
	command_on_http(c, R.slot, 200, ok, strlen(ok), 1001);
	CHECK_STR(R.answer,
	    "{\"v\":1,\"command\":\"prompt\",\"ok\":true,\"correlation\":"
	    "\"r1\",\"prompt_id\":\"abc\",\"number\":3,\"node_errors\":{}}");
	/* the engine hears of it, unescaped, before the answer goes out */
	CHECK_INT(R.accepted, 1);
	CHECK_STR(R.accepted_id, "abc");
	CHECK_INT(R.accepted_number, 3);
	CHECK_INT(R.answers_at_accept, answers);
	/* an escaped id arrives unescaped; a 2xx without a number, with a
	 * NUL in the id, or to another verb tells nothing */
	const char *esc = "{\"prompt_id\": \"a\\/b\", \"number\": -2}";
	send(c, "prompt", "{\"prompt\":{\"9\":{}}}", 1001);
	command_on_http(c, R.slot, 200, esc, strlen(esc), 1001);
	CHECK_INT(R.accepted, 2);
	CHECK_STR(R.accepted_id, "a/b");
	CHECK_INT(R.accepted_number, -2);
	static const char *const silent[]
	    = { "{\"prompt_id\": \"x\", \"number\": null}",
		      "{\"prompt_id\": \"x\\u0000y\", \"number\": 1}",
		      "{\"prompt_id\": \"\", \"number\": 1}" };
	for (int i = 0; i < 3; i++) {
		char p[64];
		snprintf(p, sizeof(p), "{\"prompt\":{\"%d\":{}}}", 20 + i);
		send(c, "prompt", p, 1001);
		command_on_http(
		    c, R.slot, 200, silent[i], strlen(silent[i]), 1001);
		CHECK(strstr(R.answer, "\"ok\":true") != NULL);
	}
	send(c, "interrupt", "{}", 1001);
	command_on_http(c, R.slot, 200, ok, strlen(ok), 1001);
	CHECK_INT(R.accepted, 2);
	/* 0.3.64's two 400 shapes, copied unchanged */
	const char *invalid
	    = "{\"error\": {\"type\": \"invalid_prompt\", \"message\": "
	      "\"Cannot execute because node Nope does not exist.\", "
	      "\"details\": \"Node ID '#1'\", \"extra_info\": {}}, "
	      "\"node_errors\": {}}";
	send(c, "prompt", "{\"prompt\":{\"1\":{}}}", 1002);
	command_on_http(c, R.slot, 400, invalid, strlen(invalid), 1003);
	CHECK_STR(R.answer,
	    "{\"v\":1,\"command\":\"prompt\",\"ok\":false,\"correlation\":"
	    "null,\"error\":{\"type\":\"invalid_prompt\",\"message\":"
	    "\"Cannot execute because node Nope does not exist.\","
	    "\"details\":\"Node ID '#1'\",\"extra_info\":{}},"
	    "\"node_errors\":{}}");
	const char *failed
	    = "{\"error\":{\"type\":\"prompt_outputs_failed_validation\","
	      "\"message\":\"Prompt outputs failed validation\",\"details\":"
	      "\"Value 0 smaller than min of 1: steps\",\"extra_info\":{}},"
	      "\"node_errors\":{\"3\":{\"errors\":[{\"type\":"
	      "\"value_smaller_than_min\"}],\"dependent_outputs\":[\"9\"],"
	      "\"class_type\":\"KSampler\"}}}";
	send(c, "prompt", "{\"prompt\":{\"3\":{}}}", 1004);
	command_on_http(c, R.slot, 400, failed, strlen(failed), 1005);
	CHECK(strstr(R.answer, failed + 1) != NULL);
	/* a plain string error is wrapped */
	const char *plain = "{\"error\": \"no prompt\", \"node_errors\": []}";
	send(c, "prompt", "{\"prompt\":{\"4\":{}}}", 1006);
	command_on_http(c, R.slot, 400, plain, strlen(plain), 1007);
	CHECK(strstr(R.answer,
	          "\"error\":{\"type\":\"comfyui\",\"message\":\"no "
	          "prompt\"},\"node_errors\":[]")
	    != NULL);
	struct command_stats s;
	command_get_stats(c, &s);
	CHECK_INT(s.ok, 6);
	CHECK_INT(s.failed[CE_COMFYUI_REJECTED], 3);
	CHECK_INT(R.accepted, 2);
	command_destroy(c);
}

static void
test_comfyui_failures(void)
{
	struct command *c = make(1024);
	send(c, "clear", "{}", 1000);
	command_on_http(c, R.slot, BR_EIO, NULL, 0, 1001);
	CHECK(strstr(R.answer,
	          "\"type\":\"comfyui_down\",\"message\":\"ComfyUI at "
	          "http://gpu:8188 did not answer (connect failed")
	    != NULL);
	send(c, "clear", "{}", 1002);
	command_on_http(c, R.slot, BR_ESTATE, NULL, 0, 1003);
	/* the body may have gone out: the message says so */
	CHECK(strstr(R.answer,
	          "\"type\":\"comfyui_down\",\"message\":\"ComfyUI did not "
	          "answer within 30 s; the command may have run: check "
	          "comfyui/gpu/queue before sending it again\"")
	    != NULL);
	const char *body = "500 Internal Server Error\n\nServer got itself";
	send(c, "clear", "{}", 1004);
	command_on_http(c, R.slot, 503, body, strlen(body), 1005);
	CHECK(strstr(R.answer,
	          "\"type\":\"comfyui_error\",\"message\":\"ComfyUI answered "
	          "HTTP 503\",\"details\":\"500 Internal Server "
	          "Error\\n\\nServer got itself\"")
	    != NULL);
	/* none of these is kept: the same command runs again */
	CHECK_INT(R.posts, 3);
	/* a POST that cannot start */
	R.post_rc = BR_ENOMEM;
	send(c, "free", "{}", 1006);
	CHECK(strstr(R.answer, "\"type\":\"comfyui_down\"") != NULL);
	CHECK_INT(command_pending(c), 0);
	R.post_rc = 0;
	/* a 2xx to /prompt that is not ComfyUI's answer */
	send(c, "prompt", "{\"prompt\":{}}", 1007);
	command_on_http(c, R.slot, 200, "{}", 2, 1008);
	CHECK(strstr(R.answer, "\"type\":\"comfyui_error\"") != NULL);
	struct command_stats s;
	command_get_stats(c, &s);
	CHECK_INT(s.failed[CE_COMFYUI_DOWN], 3);
	CHECK_INT(s.failed[CE_COMFYUI_ERROR], 2);
	command_destroy(c);
}

static void
test_busy_and_reconnecting(void)
{
	struct command *c = make(1024);
	char p[64];
	for (int i = 0; i < COMMAND_MAX_PENDING; i++) {
		snprintf(p, sizeof(p), "{\"prompt_id\":\"%d\"}", i);
		send(c, "interrupt", p, 1000);
	}
	CHECK_INT(R.posts, COMMAND_MAX_PENDING);
	CHECK_INT(R.answers, 0);
	send(c, "interrupt", "{}", 1000);
	CHECK_INT(R.posts, COMMAND_MAX_PENDING);
	CHECK(strstr(R.answer, "\"type\":\"busy\"") != NULL);
	command_destroy(c);

	c = make(1024);
	struct command_msg m
	    = { P "clear", "{}", 2, NULL, NULL, 0, 1, false, false, false };
	command_on_message(c, &m, 1000);
	CHECK_INT(R.posts, 0);
	CHECK(strstr(R.answer, "\"type\":\"broker_reconnecting\"") != NULL);
	/* not kept: once connected it runs */
	m.connected = true;
	command_on_message(c, &m, 1001);
	CHECK_INT(R.posts, 1);
	/* retained: refused, never posted, whatever the verb */
	m.retained = true;
	m.payload = "{\"correlation\":\"r1\"}";
	m.len = strlen(m.payload);
	command_on_message(c, &m, 1002);
	CHECK_INT(R.posts, 1);
	CHECK(strstr(R.answer, "\"type\":\"retained\"") != NULL);
	CHECK(strstr(R.answer, "\"correlation\":\"r1\"") != NULL);
	struct command_stats st;
	command_get_stats(c, &st);
	CHECK_INT(st.failed[CE_RETAINED], 1);
	command_destroy(c);
}

static void
test_routes(void)
{
	struct command *c = make(1024);
	/* 1: the MQTT 5 Response Topic with its Correlation Data */
	struct command_msg m = { P "clear",
		"{\"response_topic\":\"app/x\",\"correlation\":\"pc\"}", 0,
		"app/answers", "\x01\x02", 2, 1, true, false, false };
	m.len = strlen(m.payload);
	command_on_message(c, &m, 1000);
	command_on_http(c, R.slot, 200, "", 0, 1001);
	CHECK_STR(R.topic, "app/answers");
	CHECK(R.has_corr && R.corr_len == 2 && R.corr[0] == 1);
	/* the payload's correlation wins the answer's field */
	CHECK(strstr(R.answer, "\"correlation\":\"pc\"") != NULL);
	/* the Correlation Data as a string when it is text */
	struct command_msg m2 = { P "clear", "{}", 2, "app/answers", "job-7",
		5, 1, true, false, false };
	command_on_message(c, &m2, 1002);
	command_on_http(c, R.slot, 200, "", 0, 1003);
	CHECK(strstr(R.answer, "\"correlation\":\"job-7\"") != NULL);
	CHECK_INT(R.corr_len, 5);
	/* 2: the payload's */
	send(c, "clear",
	    "{\"response_topic\":\"app/y\",\"correlation\":\"q\"}", 1004);
	command_on_http(c, R.slot, 200, "", 0, 1005);
	CHECK_STR(R.topic, "app/y");
	CHECK(!R.has_corr);
	CHECK_STR(R.answer,
	    "{\"v\":1,\"command\":\"clear\",\"ok\":true,\"correlation\":"
	    "\"q\"}");
	/* 3: the default */
	send(c, "clear", "{}", 1006);
	command_on_http(c, R.slot, 200, "", 0, 1007);
	CHECK_STR(R.topic, "");
	command_destroy(c);
}

static void
test_topic_refusals(void)
{
	static const char *const bad[] = { "", "a/+/b", "a/#", "$SYS/x",
		"comfyui/gpu/command/response", "comfyui/gpu", "comfyui/gpu/x",
		"a\x01"
		"b",
		/* another instance's topics, the prefix, Home Assistant's */
		"comfyui/other/state", "comfyui",
		"homeassistant/sensor/x/config", "homeassistant" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct command *c = make(1024);
		struct command_msg m = { P "clear", "{}", 2, bad[i], "k", 1, 1,
			true, false, false };
		command_on_message(c, &m, 1000);
		CHECK_INT(R.posts, 0);
		CHECK_STR(R.topic, "");
		CHECK(!R.has_corr);
		CHECK(strstr(R.answer, "\"type\":\"bad_response_topic\"")
		    != NULL);
		/* the same in the payload */
		char p[200];
		snprintf(p, sizeof(p), "{\"response_topic\":\"%s\"}",
		    strcmp(bad[i],
		        "a\x01"
		        "b") == 0
		        ? "a\\u0001b"
		        : bad[i]);
		send(c, "clear", p, 1001);
		CHECK_INT(R.posts, 0);
		CHECK_STR(R.topic, "");
		CHECK(strstr(R.answer, "\"type\":\"bad_response_topic\"")
		    != NULL);
		command_destroy(c);
	}
	CHECK(
	    command_topic_problem("comfyuiX/a", 10, "comfyui", "ha") == NULL);
	CHECK(command_topic_problem("hab/a", 5, "comfyui", "ha") == NULL);
	CHECK(command_topic_problem("ha/a", 4, "comfyui", NULL) == NULL);
	const char *why = command_topic_problem("ha/a", 4, "comfyui", "ha");
	CHECK(why != NULL && strstr(why, "Home Assistant") != NULL);
	why = command_topic_problem("comfyui/x", 9, "comfyui", "ha");
	CHECK(why != NULL && strstr(why, "another instance") != NULL);
	char big[1100];
	memset(big, 'a', sizeof(big));
	big[1025] = '\0';
	CHECK(command_topic_problem(big, 1025, "p", NULL) != NULL);
	big[1024] = '\0';
	CHECK(command_topic_problem(big, 1024, "p", NULL) == NULL);
}

static void
test_dedup_correlated(void)
{
	struct command *c = make(1024);
	const char *ok = "{\"prompt_id\":\"abc\",\"number\":1,"
	                 "\"node_errors\":{}}";
	send(c, "prompt", "{\"prompt\":{},\"correlation\":\"j1\"}", 1000);
	/* a repeat while the first is in flight waits for it */
	send(c, "prompt", "{\"prompt\":{\"x\":{}},\"correlation\":\"j1\"}",
	    1001);
	CHECK_INT(R.posts, 1);
	CHECK_INT(R.answers, 0);
	command_on_http(c, R.slot, 200, ok, strlen(ok), 1002);
	CHECK_INT(R.answers, 2);
	CHECK(strstr(R.answer, "\"prompt_id\":\"abc\"") != NULL);
	CHECK(strstr(R.answer, "\"duplicate\":true}") != NULL);
	/* later, on the same connection: answered from the first result */
	send(c, "prompt", "{\"prompt\":{},\"correlation\":\"j1\"}", 5000);
	CHECK_INT(R.posts, 1);
	CHECK_INT(R.answers, 3);
	CHECK(strstr(R.answer, "\"prompt_id\":\"abc\",\"number\":1") != NULL);
	CHECK(strstr(R.answer, "\"duplicate\":true") != NULL);
	/* another verb with the same correlation is another command */
	send(c, "clear", "{\"correlation\":\"j1\"}", 5001);
	CHECK_INT(R.posts, 2);
	command_on_http(c, R.slot, 200, "", 0, 5002);
	/* after ten minutes it runs again */
	send(c, "prompt", "{\"prompt\":{},\"correlation\":\"j1\"}",
	    1002 + COMMAND_DEDUP_MS);
	CHECK_INT(R.posts, 3);
	struct command_stats s;
	command_get_stats(c, &s);
	CHECK_INT(s.duplicates, 2);
	command_destroy(c);
}

static void
test_dedup_uncorrelated(void)
{
	struct command *c = make(1024);
	struct command_msg m
	    = { P "interrupt", "{}", 2, NULL, NULL, 0, 1, true, false, false };
	command_on_message(c, &m, 1000);
	command_on_http(c, R.slot, 200, "", 0, 1001);
	/* the same again on the same connection: a button pressed twice */
	command_on_message(c, &m, 1002);
	CHECK_INT(R.posts, 2);
	command_on_http(c, R.slot, 200, "", 0, 1003);
	CHECK(strstr(R.answer, "duplicate") == NULL);
	/* pressed again after a reconnect (not resent): it runs again */
	m.connection = 2;
	command_on_message(c, &m, 1004);
	CHECK_INT(R.posts, 3);
	command_on_http(c, R.slot, 200, "", 0, 1005);
	CHECK(strstr(R.answer, "duplicate") == NULL);
	/* resent on a later connection: the broker's redelivery */
	m.connection = 3;
	m.resent = true;
	command_on_message(c, &m, 1006);
	CHECK_INT(R.posts, 3);
	CHECK(strstr(R.answer, "\"ok\":true") != NULL);
	CHECK(strstr(R.answer, "\"duplicate\":true") != NULL);
	/* an in-flight one resent after a reconnect waits for it; not
	 * resent, it runs again */
	struct command_msg f
	    = { P "free", "{}", 2, NULL, NULL, 0, 3, true, false, false };
	command_on_message(c, &f, 2000);
	CHECK_INT(R.posts, 4);
	unsigned first = R.slot;
	int answers = R.answers;
	f.connection = 4;
	f.resent = true;
	command_on_message(c, &f, 2001);
	CHECK_INT(R.posts, 4);
	CHECK_INT(R.answers, answers);
	f.resent = false;
	command_on_message(c, &f, 2002);
	CHECK_INT(R.posts, 5);
	command_on_http(c, R.slot, 200, "", 0, 2003);
	command_on_http(c, first, 200, "", 0, 2003);
	CHECK_INT(R.answers, answers + 3);
	CHECK(strstr(R.answer, "\"duplicate\":true") != NULL);
	command_destroy(c);
}

/* A resent command that repeats nothing: answered stale, never posted,
 * never kept (a second resent copy is stale again, not a duplicate). */
static void
test_stale(void)
{
	struct command *c = make(1024);
	struct command_msg k
	    = { P "clear", "{}", 2, NULL, NULL, 0, 3, true, false, false };
	/* a failure that may pass is not kept: the resent copy is stale */
	command_on_message(c, &k, 3000);
	command_on_http(c, R.slot, BR_EIO, NULL, 0, 3001);
	CHECK_INT(R.posts, 1);
	k.connection = 4;
	k.resent = true;
	for (int i = 0; i < 2; i++) {
		command_on_message(c, &k, 3002 + i);
		CHECK_INT(R.posts, 1);
		CHECK(strstr(R.answer,
		          "\"ok\":false,\"correlation\":null,\"error\":{"
		          "\"type\":\"stale\",\"message\":\"sent while the "
		          "bridge was offline (the broker kept it); not run: "
		          "send it again if still wanted\"")
		    != NULL);
		CHECK(strstr(R.answer, "duplicate") == NULL);
	}
	/* resent on the connection of the first copy: no repeat either */
	struct command_msg u
	    = { P "interrupt", "{}", 2, NULL, NULL, 0, 5, true, false, false };
	command_on_message(c, &u, 3010);
	command_on_http(c, R.slot, 200, "", 0, 3011);
	u.resent = true;
	command_on_message(c, &u, 3012);
	CHECK_INT(R.posts, 2);
	CHECK(strstr(R.answer, "\"type\":\"stale\"") != NULL);
	/* correlated: a resent repeat of one that ran is its duplicate, a
	 * resent new one is stale */
	send(c, "clear", "{\"correlation\":\"c1\"}", 3020);
	command_on_http(c, R.slot, 200, "", 0, 3021);
	struct command_msg r = { P "clear", "{\"correlation\":\"c1\"}", 0,
		NULL, NULL, 0, 6, true, false, true };
	r.len = strlen(r.payload);
	command_on_message(c, &r, 3022);
	CHECK(strstr(R.answer, "\"ok\":true") != NULL);
	CHECK(strstr(R.answer, "\"duplicate\":true") != NULL);
	r.payload = "{\"correlation\":\"c2\"}";
	command_on_message(c, &r, 3023);
	CHECK(strstr(R.answer, "\"type\":\"stale\"") != NULL);
	CHECK(strstr(R.answer, "\"correlation\":\"c2\"") != NULL);
	CHECK_INT(R.posts, 3);
	struct command_stats s;
	command_get_stats(c, &s);
	CHECK_INT(s.failed[CE_STALE], 4);
	CHECK_INT(s.duplicates, 1);
	command_destroy(c);
}

/* Two clients using the same correlation with their own response topics
 * are two commands: B never gets A's result. */
static void
test_dedup_key_route(void)
{
	struct command *c = make(1024);
	const char *a = "{\"prompt_id\":\"for-a\",\"number\":1}";
	const char *b = "{\"prompt_id\":\"for-b\",\"number\":2}";
	send(c, "prompt",
	    "{\"prompt\":{},\"correlation\":\"1\",\"response_topic\":\"a/r\"}",
	    1000);
	command_on_http(c, R.slot, 200, a, strlen(a), 1001);
	send(c, "prompt",
	    "{\"prompt\":{},\"correlation\":\"1\",\"response_topic\":\"b/r\"}",
	    1002);
	CHECK_INT(R.posts, 2);
	command_on_http(c, R.slot, 200, b, strlen(b), 1003);
	CHECK_STR(R.topic, "b/r");
	CHECK(strstr(R.answer, "for-b") != NULL);
	/* the property route counts the same as the payload's */
	struct command_msg m = { P "prompt", "{\"prompt\":{}}", 0, "a/r", "1",
		1, 1, true, false, false };
	m.len = strlen(m.payload);
	command_on_message(c, &m, 1004);
	CHECK_INT(R.posts, 2);
	CHECK(strstr(R.answer, "for-a") != NULL);
	/* the default route is a route of its own */
	send(c, "prompt", "{\"prompt\":{},\"correlation\":\"1\"}", 1005);
	CHECK_INT(R.posts, 3);
	command_destroy(c);
}

/* command_stop: the waiting commands and their repeats are answered
 * bridge_stopping, late HTTP answers ignored, new commands refused. */
static void
test_stop(void)
{
	struct command *c = make(1024);
	send(c, "clear", "{\"correlation\":\"s1\"}", 1000);
	unsigned s1 = R.slot;
	send(c, "clear", "{\"correlation\":\"s1\"}", 1001); /* joins */
	send(c, "free", "{}", 1002);
	unsigned s2 = R.slot;
	CHECK_INT(R.posts, 2);
	CHECK_INT(R.answers, 0);
	command_stop(c);
	CHECK_INT(R.answers, 3);
	CHECK_INT(command_pending(c), 0);
	CHECK(strstr(R.answer,
	          "\"ok\":false,\"correlation\":null,\"error\":{\"type\":"
	          "\"bridge_stopping\",\"message\":\"the bridge stopped "
	          "before ComfyUI answered; the command may have run\"")
	    != NULL);
	command_on_http(c, s1, 200, "", 0, 1003);
	command_on_http(c, s2, 200, "", 0, 1003);
	CHECK_INT(R.answers, 3);
	/* a new one, even a repeat of a kept result, is not posted */
	send(c, "interrupt", "{\"correlation\":\"n\"}", 1004);
	CHECK_INT(R.posts, 2);
	CHECK_INT(R.answers, 4);
	CHECK(strstr(R.answer, "\"type\":\"bridge_stopping\"") != NULL);
	CHECK(strstr(R.answer, "\"correlation\":\"n\"") != NULL);
	struct command_stats st;
	command_get_stats(c, &st);
	CHECK_INT(st.failed[CE_BRIDGE_STOPPING], 3);
	CHECK_INT(st.ok, 0);
	command_destroy(c);
}

/* The one-pass walks: a long prompt_ids list (a bad entry first, in the
 * middle, last) and many top-level keys. */
static void
test_long_lists(void)
{
	enum { N = 80000 };
	size_t cap = N * 4 + 64;
	char *p = malloc(cap);
	CHECK(p != NULL);
	struct command *c = make(cap);
	for (int bad = -1; bad < 3; bad++) {
		int at = bad == 0 ? 0 : bad == 1 ? N / 2 : N - 1;
		size_t n = (size_t) snprintf(p, cap, "{\"prompt_ids\":[");
		for (int i = 0; i < N; i++)
			n += (size_t) snprintf(p + n, cap - n, "%s%s",
			    i ? "," : "", bad >= 0 && i == at ? "1" : "\"\"");
		n += (size_t) snprintf(p + n, cap - n, "]}");
		int posts = R.posts;
		send(c, "cancel", p, 1000 + bad);
		if (bad < 0) {
			CHECK_INT(R.posts, posts + 1);
			CHECK_STR(R.path, "/queue");
			CHECK(strncmp(R.body, "{\"delete\":[\"\",\"\",", 16)
			    == 0);
			command_on_http(c, R.slot, 200, "", 0, 1000);
		} else {
			CHECK_INT(R.posts, posts);
			CHECK(strstr(R.answer, "non-empty array of strings")
			    != NULL);
		}
	}
	/* many repeated route keys, then an unknown one last */
	size_t n = (size_t) snprintf(p, cap, "{");
	for (int i = 0; i < N / 8; i++)
		n += (size_t) snprintf(
		    p + n, cap - n, "\"correlation\":\"x\",");
	snprintf(p + n, cap - n, "\"last\":1}");
	send(c, "clear", p, 2000);
	CHECK(
	    strstr(R.answer, "unknown field \\\"last\\\" for clear") != NULL);
	command_destroy(c);
	free(p);
}

/* The trims after a big command: a grown buffer or token array is given
 * back, a small one kept. */
static void
test_trim(void)
{
	struct buf b = { 0 };
	CHECK_INT(buf_reserve(&b, 100), 0);
	buf_trim(&b, 1000);
	CHECK(b.p != NULL);
	CHECK_INT(buf_reserve(&b, 5000), 0);
	buf_trim(&b, 1000);
	CHECK(b.p == NULL && b.cap == 0 && b.len == 0);
	struct json_parser *jp = json_parser_create_growing(4, 1u << 20);
	struct json_doc d;
	CHECK_INT(json_parse(jp, "[1,2,3,4,5,6,7,8,9]", 19, false, &d), 0);
	unsigned grown = json_parser_capacity(jp);
	CHECK(grown > 4);
	json_parser_trim_over(jp, 100000);
	CHECK_INT(json_parser_capacity(jp), grown);
	json_parser_trim_over(jp, 16);
	CHECK_INT(json_parser_capacity(jp), 4);
	json_parser_destroy(jp);
}

static void
test_dedup_table(void)
{
	struct dedup *d = dedup_create(4, 100, 1000);
	struct dedup_hit h;
	for (uint64_t k = 1; k <= 5; k++)
		CHECK_INT(dedup_put(d, k, true, 1, 10, true, "\"a\":1", 5), 0);
	CHECK_INT(dedup_count(d), 4);
	CHECK(!dedup_find(d, 1, true, false, 1, 11, &h)); /* the oldest went */
	CHECK(dedup_find(d, 5, true, false, 1, 11, &h) && h.ok && h.len == 5);
	CHECK(!dedup_find(d, 5, false, true, 2, 11, &h)); /* kind must match */
	/* the byte bound */
	char big[60];
	memset(big, 'x', sizeof(big));
	CHECK_INT(dedup_put(d, 9, true, 1, 12, false, big, 60), 0);
	CHECK_INT(dedup_put(d, 10, true, 1, 12, false, big, 60), 0);
	CHECK(!dedup_find(d, 9, true, false, 1, 13, &h));
	CHECK(dedup_find(d, 10, true, false, 1, 13, &h) && !h.ok);
	CHECK_INT(dedup_put(d, 11, true, 1, 12, false, big, 101), BR_EFULL);
	/* expiry */
	CHECK(!dedup_find(d, 10, true, false, 1, 1012, &h));
	CHECK_INT(dedup_count(d), 0);
	dedup_destroy(d);
}

static void
test_health(void)
{
	struct command *c = make(1024);
	send(c, "nope", "{}", 1000);
	char buf[1024];
	struct jsonw w;
	jsonw_init(&w, buf, sizeof(buf));
	jsonw_obj_begin(&w);
	command_write_health(c, &w);
	jsonw_obj_end(&w);
	CHECK_INT(jsonw_finish(&w), 0);
	CHECK(strstr(buf,
	          "\"commands\":{\"received\":1,\"ok\":0,"
	          "\"duplicates\":0,\"pending\":0,\"failed\":{"
	          "\"bad_json\":0,")
	    != NULL);
	CHECK(strstr(buf, "\"unknown_verb\":1") != NULL);
	command_destroy(c);
}

int
main(void)
{
	RUN(test_bodies);
	RUN(test_bad_input);
	RUN(test_own_answers_ignored);
	RUN(test_prompt_answers);
	RUN(test_comfyui_failures);
	RUN(test_busy_and_reconnecting);
	RUN(test_routes);
	RUN(test_topic_refusals);
	RUN(test_dedup_correlated);
	RUN(test_dedup_uncorrelated);
	RUN(test_stale);
	RUN(test_dedup_key_route);
	RUN(test_stop);
	RUN(test_long_lists);
	RUN(test_trim);
	RUN(test_dedup_table);
	RUN(test_health);
	TEST_MAIN_END();
}
