/* event_parse over every text frame of every trace, plus shape variants. */
#include <dirent.h>
#include <math.h>

#include "event.h"
#include "json.h"
#include "test.h"

static struct json_parser *parser;

static int
parse(const char *s, struct comfy_event *ev)
{
	struct json_doc d;
	int rc = json_parse(parser, s, strlen(s), true, &d);
	if (rc != BR_OK)
		return -100 - rc;
	return event_parse(&d, ev);
}

static void
test_every_trace_line(void)
{
	DIR *dir = opendir(test_traces_dir());
	CHECK(dir != NULL);
	if (!dir)
		return;
	int lines = 0, terminals = 0, with_prompt = 0;
	struct dirent *de;
	while ((de = readdir(dir)) != NULL) {
		size_t nl = strlen(de->d_name);
		if (nl < 6 || strcmp(de->d_name + nl - 6, ".jsonl") != 0)
			continue;
		char path[1024];
		snprintf(path, sizeof(path), "%s/%s", test_traces_dir(),
		    de->d_name);
		char *buf = test_read_file(path, NULL);
		char *save = NULL;
		for (char *l = strtok_r(buf, "\n", &save); l;
		     l = strtok_r(NULL, "\n", &save)) {
			if (strstr(l, "\"binary_hex_header\""))
				continue;
			struct comfy_event ev;
			int rc = parse(l, &ev);
			if (rc != BR_OK)
				TEST_FAIL(
				    "%s: rc %d for %.120s", de->d_name, rc, l);
			lines++;
			terminals += event_is_terminal(&ev);
			with_prompt += ev.has_prompt;
			/* the type is a known kind unless it is a custom one
			 */
			if (strchr(ev.type, '.') == NULL
			    && strchr(ev.type, '-') == NULL)
				CHECK(ev.kind != EVK_OTHER);
		}
		free(buf);
	}
	closedir(dir);
	CHECK(lines > 500);
	/* a, b (2), c, d, e (2), e2, f1, f2, f3, h: g has no terminal frame */
	CHECK_INT(terminals, 12);
	CHECK(with_prompt > 400);
}

static void
test_fields(void)
{
	struct comfy_event ev;
	CHECK_INT(parse("{\"type\": \"progress\", \"data\": {\"value\": 5, "
	                "\"max\": 20, \"prompt_id\": \"p\", \"node\": "
	                "\"3\"}}",
	              &ev),
	    BR_OK);
	CHECK_INT(ev.kind, EVK_PROGRESS);
	CHECK(ev.value == 5 && ev.max == 20);
	CHECK_STR(ev.prompt_id, "p");
	CHECK_STR(ev.node, "3");

	CHECK_INT(parse("{\"type\": \"executing\", \"data\": {\"node\": null, "
	                "\"prompt_id\": \"p\"}}",
	              &ev),
	    BR_OK);
	CHECK(ev.node_null && !ev.has_node);

	CHECK_INT(parse("{\"type\": \"executing\", \"data\": {\"node\": "
	                "\"12:5\"}}",
	              &ev),
	    BR_OK);
	CHECK(!ev.has_prompt && ev.has_node);

	CHECK_INT(parse("{\"type\": \"status\", \"data\": {\"status\": "
	                "{\"exec_info\": {\"queue_remaining\": 3}}, \"sid\": "
	                "\"x\"}}",
	              &ev),
	    BR_OK);
	CHECK(ev.has_queue_remaining && ev.queue_remaining == 3);

	CHECK_INT(parse("{\"type\": \"progress\", \"data\": {\"value\": NaN, "
	                "\"max\": 1, \"prompt_id\": \"p\"}}",
	              &ev),
	    BR_OK);
	CHECK(isnan(ev.value));

	/* old-server errors have no timestamp and are terminal */
	CHECK_INT(parse("{\"type\": \"execution_error\", \"data\": "
	                "{\"prompt_id\": \"p\", \"node_id\": \"3\", "
	                "\"exception_type\": \"RuntimeError\"}}",
	              &ev),
	    BR_OK);
	CHECK(event_is_terminal(&ev));
	CHECK_INT(parse("{\"type\": \"execution_error\", \"data\": "
	                "{\"prompt_id\": \"p\", \"exception_type\": "
	                "\"ExecutionBlocked\", \"exception_message\": "
	                "\"Execution Blocked: x\"}}",
	              &ev),
	    BR_OK);
	CHECK(!event_is_terminal(&ev));

	CHECK_INT(
	    parse("{\"type\": \"crystools.monitor\", \"data\": [1]}", &ev),
	    BR_OK);
	CHECK_INT(ev.kind, EVK_OTHER);
}

static void
test_rejects(void)
{
	struct comfy_event ev;
	CHECK_INT(parse("{\"data\": {}}", &ev), BR_ENOTFOUND);
	CHECK_INT(parse("{\"type\": \"\", \"data\": {}}", &ev), BR_ENOTFOUND);
	CHECK_INT(parse("{\"type\": null, \"data\": {}}", &ev), BR_ENOTFOUND);
	CHECK_INT(parse("{\"type\": \"status\"}", &ev), BR_ETYPE);
	CHECK_INT(parse("{\"type\": \"status\", \"data\": 1}", &ev), BR_ETYPE);
	CHECK_INT(parse("{\"type\": \"progress\", \"data\": {\"value\": "
	                "true, \"max\": 1}}",
	              &ev),
	    BR_ETYPE);
	CHECK_INT(parse("{\"type\": \"executed\", \"data\": {\"node\": [], "
	                "\"prompt_id\": \"p\"}}",
	              &ev),
	    BR_ETYPE);
	CHECK_INT(
	    parse("{\"type\": \"x\", \"data\": {\"prompt_id\": 5}}", &ev),
	    BR_ETYPE);
	CHECK_INT(parse("{\"type\": \"x\", \"data\": {\"prompt_id\": "
	                "\"a\\u0000b\"}}",
	              &ev),
	    BR_ETYPE);
	CHECK_INT(parse("{\"type\": \"status\", \"data\": {\"status\": "
	                "{\"exec_info\": {\"queue_remaining\": -1}}}}",
	              &ev),
	    BR_ETYPE);
	char big[600];
	memset(big, 'a', sizeof(big));
	char frame[800];
	snprintf(frame, sizeof(frame),
	    "{\"type\": \"x\", \"data\": {\"prompt_id\": \"%.*s\"}}",
	    (int) sizeof(big), big);
	CHECK_INT(parse(frame, &ev), BR_ETYPE);
}

int
main(void)
{
	parser = json_parser_create(16384);
	RUN(test_every_trace_line);
	RUN(test_fields);
	RUN(test_rejects);
	json_parser_destroy(parser);
	TEST_MAIN_END();
}
