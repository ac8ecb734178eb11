/* Fuzzes the commands core: arbitrary payloads, verbs, response topics,
 * Correlation Data and ComfyUI answers. Every answer must be one valid
 * JSON object on a topic the checks allow, every POST body valid JSON, and
 * every posted command answered exactly once (plus its repeats). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "command.h"
#include "err.h"
#include "json.h"

#define REQUIRE(cond)                                                         \
	do {                                                                  \
		if (!(cond)) {                                                \
			fprintf(stderr,                                       \
			    "fuzz_command: %s failed at line %d\n", #cond,    \
			    __LINE__);                                        \
			abort();                                              \
		}                                                             \
	} while (0)

static struct json_parser *parser;
static int posted[COMMAND_MAX_PENDING];

static int
do_post(
    void *ud, unsigned slot, const char *path, const char *body, size_t len)
{
	struct json_doc d;
	REQUIRE(slot < COMMAND_MAX_PENDING && posted[slot] == 0);
	REQUIRE(json_parse(parser, body, len, true, &d) == 0);
	posted[slot] = 1;
	return 0;
}

static void
do_answer(void *ud, const char *topic, const char *payload, size_t len,
    const void *corr, size_t corr_len)
{
	struct json_doc d;
	REQUIRE(json_parse(parser, payload, len, true, &d) == 0);
	REQUIRE(topic == NULL
	    || command_topic_problem(topic, strlen(topic), "c", "ha") == NULL);
	(*(int *) ud)++;
}

/* An accepted prompt's id: non-empty, no NUL, within the bound. */
static void
do_accepted(void *ud, const char *id, size_t len, int64_t number)
{
	(void) number;
	REQUIRE(len > 0 && len <= 1024 && memchr(id, 0, len) == NULL);
	REQUIRE(*(int *) ud >= 0);
}

/* The next part of the input, up to a 0xff byte, NUL-terminated. */
static char *
part(const uint8_t **p, const uint8_t *end, size_t *len)
{
	const uint8_t *s = *p;
	const uint8_t *e = memchr(s, 0xff, (size_t) (end - s));
	if (e == NULL)
		e = end;
	*len = (size_t) (e - s);
	char *out = malloc(*len + 1);
	memcpy(out, s, *len);
	out[*len] = '\0';
	*p = e < end ? e + 1 : end;
	return out;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const verbs[] = { "prompt", "interrupt", "cancel",
		"clear", "free", "response", "x" };
	static const int statuses[]
	    = { 200, 400, 404, 500, 503, 302, BR_EIO, BR_ESTATE, BR_EFULL };
	if (parser == NULL)
		parser = json_parser_create_growing(64, 1u << 20);
	if (size < 4)
		return 0;
	int answers = 0;
	struct command_cfg cfg = { "c", "i", "cid", "http://h:1", 4096, "ha" };
	struct command_io io = { do_post, do_answer, do_accepted, &answers };
	struct command *c = NULL;
	REQUIRE(command_create(&cfg, &io, &c) == 0);
	memset(posted, 0, sizeof(posted));
	const uint8_t *p = data + 4, *end = data + size;
	size_t pl, tl, cl, bl;
	char *payload = part(&p, end, &pl);
	char *rt = part(&p, end, &tl);
	char *corr = part(&p, end, &cl);
	char *body = part(&p, end, &bl);
	char topic[64];
	snprintf(topic, sizeof(topic), "c/i/command/%s",
	    verbs[data[0] % (sizeof(verbs) / sizeof(verbs[0]))]);
	/* the same message twice, on one or two connections, and answers
	 * (or a stop between) */
	for (int round = 0; round < 2; round++) {
		struct command_msg m = { topic, payload, pl,
			data[1] & 1 ? rt : NULL, data[1] & 2 ? corr : NULL, cl,
			1 + (uint64_t) (round & (data[1] >> 2)),
			!(data[1] & 16), (data[1] & 32) != 0,
			(data[1] & 64) != 0 };
		/* a stop between the rounds: the slots still posted are
		 * answered, their late HTTP answers ignored */
		if (round == 1 && (data[2] & 2))
			command_stop(c);
		command_on_message(c, &m, 1000 + round);
		for (unsigned s = 0; s < COMMAND_MAX_PENDING; s++)
			if (posted[s] && (round == 1 || (data[2] & 1))) {
				posted[s] = 0;
				command_on_http(c, s,
				    statuses[data[3]
				        % (sizeof(statuses)
				            / sizeof(statuses[0]))],
				    body, bl, 1002);
			}
	}
	REQUIRE(command_pending(c) == 0);
	struct command_stats st;
	command_get_stats(c, &st);
	REQUIRE(st.received == 0 || answers >= 1);
	command_destroy(c);
	free(payload);
	free(rt);
	free(corr);
	free(body);
	return 0;
}
