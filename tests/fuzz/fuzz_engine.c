/* libFuzzer: arbitrary frames through event parsing and normalization. The
 * input is split on 0xFF 0x00 markers into frames; a frame whose first byte
 * is 0x01 is fed as a binary frame (rest of the bytes), 0x02 as a /queue
 * body, 0x03 as a /history list body, 0x04 as a /history/<id> body for the
 * last prompt, anything else as a text frame. Every published payload must
 * be valid JSON (or the documented plain texts / raw images), every
 * topic must stay under comfyui/f/ with no wildcard, and the topic and every
 * user property must be a string mosquitto accepts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "json.h"
#include "utf8.h"

static struct json_parser *checker;

static void
check_publish(void *ud, const struct out_msg *m)
{
	(void) ud;
	if (strncmp(m->topic, "comfyui/f/", 10) != 0
	    || strpbrk(m->topic, "+#") != NULL || strlen(m->topic) > 600)
		abort();
	if (m->len > 300 * 1024)
		abort();
	if (!utf8_mqtt_ok(m->topic)
	    || (m->props.type && !utf8_mqtt_ok(m->props.type))
	    || (m->props.prompt_id && !utf8_mqtt_ok(m->props.prompt_id))
	    || (m->props.instance && !utf8_mqtt_ok(m->props.instance)))
		abort();
	if (m->len == 0
	    || (m->props.content_type
	        && strncmp(m->props.content_type, "image/", 6) == 0))
		return;
	if ((m->len == 6 && memcmp(m->payload, "online", 6) == 0)
	    || (m->len == 7 && memcmp(m->payload, "offline", 7) == 0))
		return;
	struct json_doc d;
	if (json_parse(checker, m->payload, m->len, true, &d) != BR_OK)
		abort();
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

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!checker)
		checker = json_parser_create(1u << 16);
	struct engine_cfg cfg = {
		.prefix = "comfyui",
		.instance = "f",
		.client_id = "fuzz",
		.mqtt_client_id = "c2m-f",
		.comfyui_public = "http://127.0.0.1:8188",
		.mqtt_protocol = 5,
		.state_ttl_s = 60,
		.max_tokens = 512,
		.http_max_tokens = 4096,
		.max_prompts = 8,
		.history_items = 5,
		.health_interval_s = 30,
		.previews = true,
		.preview_max_bytes = 1 << 20,
		.preview_rate = 1000,
	};
	struct engine_io io
	    = { .publish = check_publish, .http_get = ignore_http };
	int64_t now = 1800000000000LL;
	struct engine *e = engine_create(&cfg, &io, now);
	if (!e)
		return 0;
	engine_on_upstream(e, true, now);
	size_t start = 0;
	for (size_t i = 0; i <= size; i++) {
		bool end = i == size;
		if (!end
		    && !(data[i] == 0xFF && i + 1 < size
		        && data[i + 1] == 0x00))
			continue;
		const uint8_t *f = data + start;
		size_t n = i - start;
		now += 7;
		if (n > 0 && f[0] == 0x01)
			engine_on_binary(e, f + 1, n - 1, now);
		else if (n > 0 && f[0] == 0x02)
			engine_on_http(e, EHTTP_QUEUE, NULL, 200,
			    (const char *) f + 1, n - 1, now);
		else if (n > 0 && f[0] == 0x03)
			engine_on_http(e, EHTTP_HISTORY_LIST, NULL, 200,
			    (const char *) f + 1, n - 1, now);
		else if (n > 0 && f[0] == 0x04)
			engine_on_http(e, EHTTP_HISTORY_ID, "p", 200,
			    (const char *) f + 1, n - 1, now);
		else
			engine_on_text(e, (const char *) f, n, now);
		start = i + 2;
		i++;
	}
	engine_tick(e, now + 100000, NULL);
	engine_destroy(e);
	return 0;
}
