/* MQTT topic building. Ids come from ComfyUI clients and are hostile by
 * default: after topic_sanitize() only [A-Za-z0-9._:-] remain, so no id
 * can add a level ('/'), a wildcard ('+', '#'), a NUL, a '$' system topic
 * or invalid UTF-8 to a topic. */
#include "topic.h"

#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "err.h"
#include "utf8.h"
#include "hash.h"

/* Longest prefix accepted, in bytes. */
#define TOPIC_PREFIX_MAX 128
/* '_' + 8 hex digits appended to cut ids. */
#define TOPIC_HASH_SUFFIX_LEN 9

/* Each byte as an id keeps it in a topic: itself when allowed, else '_'
 * (one load per byte of every id of every topic). */
static const char id_byte[256] = "________________" /* 0x00 */
                                 "________________" /* 0x10 */
                                 "_____________-._" /* 0x20 */
                                 "0123456789:_____" /* 0x30 */
                                 "_ABCDEFGHIJKLMNO" /* 0x40 */
                                 "PQRSTUVWXYZ_____" /* 0x50 */
                                 "_abcdefghijklmno" /* 0x60 */
                                 "pqrstuvwxyz_____" /* 0x70 */
                                 /* 0x80..0xff: never allowed */
                                 "________________________________"
                                 "________________________________"
                                 "________________________________"
                                 "________________________________";

size_t
topic_sanitize(char *dst, size_t cap, const char *id, size_t len)
{
	if (cap == 0)
		return 0;
	size_t limit = cap - 1 < TOPIC_ID_MAX ? cap - 1 : TOPIC_ID_MAX;
	if (limit == 0) {
		dst[0] = '\0';
		return 0;
	}
	if (len == 0) {
		dst[0] = '_';
		dst[1] = '\0';
		return 1;
	}

	size_t keep = len;
	bool hashed = false;
	if (len > limit) {
		/* A buffer too small even for the suffix just cuts. */
		hashed = limit > TOPIC_HASH_SUFFIX_LEN;
		keep = hashed ? limit - TOPIC_HASH_SUFFIX_LEN : limit;
	}
	for (size_t i = 0; i < keep; i++) {
		dst[i] = id_byte[(unsigned char) id[i]];
	}
	/* Explicit although '$' is already outside the allowed set: a
	 * leading '$' would put the topic in the broker's system tree. */
	if (dst[0] == '$')
		dst[0] = '_';
	if (!hashed) {
		dst[keep] = '\0';
		return keep;
	}
	static const char hex[] = "0123456789abcdef";
	uint32_t hash = hash32(HASH32_INIT, id, len);
	dst[keep] = '_';
	for (size_t i = 0; i < 8; i++)
		dst[keep + 1 + i] = hex[(hash >> (28 - 4 * i)) & 0xfu];
	dst[limit] = '\0';
	return limit;
}

/* Code points libmosquitto's topic check (mosquitto_validate_utf8)
 * refuses although they are valid UTF-8: controls and non-characters.
 * Refusing them here turns a runtime publish failure into a config
 * error. */
static bool
mosquitto_refuses(uint32_t cp)
{
	if (cp <= 0x1f || (cp >= 0x7f && cp <= 0x9f))
		return true;
	if (cp >= 0xfdd0 && cp <= 0xfdef)
		return true;
	return (cp & 0xfffeu) == 0xfffeu;
}

bool
topic_prefix_valid(const char *prefix)
{
	if (prefix == NULL || prefix[0] == '\0' || prefix[0] == '$')
		return false;
	size_t len = strnlen(prefix, TOPIC_PREFIX_MAX + 1);
	if (len > TOPIC_PREFIX_MAX)
		return false;
	if (prefix[0] == '/' || prefix[len - 1] == '/')
		return false;

	const unsigned char *s = (const unsigned char *) prefix;
	for (size_t i = 0; i < len;) {
		if (s[i] == '+' || s[i] == '#')
			return false;
		if (s[i] == '/' && s[i + 1] == '/')
			return false;
		uint32_t cp;
		size_t n = utf8_decode(s + i, len - i, &cp);
		if (n == 0 || mosquitto_refuses(cp))
			return false;
		i += n;
	}
	return true;
}

/* Bounded appender: records overflow instead of writing past cap. */
struct topic_buf {
	char *dst;
	size_t cap;
	size_t len;
	bool overflow;
};

static void
put(struct topic_buf *tb, const char *s, size_t n)
{
	if (tb->overflow)
		return;
	/* len < cap holds while not overflowed; keep one byte for NUL. */
	if (n > tb->cap - tb->len - 1) {
		tb->overflow = true;
		return;
	}
	memcpy(tb->dst + tb->len, s, n);
	tb->len += n;
}

static void
put_str(struct topic_buf *tb, const char *s)
{
	put(tb, s, strlen(s));
}

static void
put_id(struct topic_buf *tb, const char *id, size_t len)
{
	if (id == NULL) {
		id = "";
		len = 0;
	}
	/* with room for the longest id (and the NUL) it is sanitized in
	 * place: the same bytes as through a TOPIC_ID_MAX + 1 buffer */
	if (!tb->overflow && tb->cap - tb->len > TOPIC_ID_MAX) {
		tb->len += topic_sanitize(
		    tb->dst + tb->len, TOPIC_ID_MAX + 1, id, len);
		return;
	}
	char clean[TOPIC_ID_MAX + 1];
	size_t n = topic_sanitize(clean, sizeof(clean), id, len);
	put(tb, clean, n);
}

static void
put_base(struct topic_buf *tb, const char *prefix, const char *instance)
{
	put_str(tb, prefix);
	put(tb, "/", 1);
	put_str(tb, instance);
}

/* Terminates the topic; on overflow leaves an empty string so that a
 * caller ignoring the error never publishes to a cut-off topic. */
static int
finish(struct topic_buf *tb)
{
	if (tb->cap == 0)
		return BR_ETRUNC;
	if (tb->overflow || tb->len > INT_MAX) {
		tb->dst[0] = '\0';
		return BR_ETRUNC;
	}
	tb->dst[tb->len] = '\0';
	return (int) tb->len;
}

int
topic_join(char *dst, size_t cap, const char *prefix, const char *instance,
    const char *rest)
{
	struct topic_buf tb = { dst, cap, 0, cap == 0 };
	put_base(&tb, prefix, instance);
	if (rest != NULL) {
		put(&tb, "/", 1);
		put_str(&tb, rest);
	}
	return finish(&tb);
}

int
topic_prompt(char *dst, size_t cap, const char *prefix, const char *instance,
    const char *prompt_id, size_t id_len, const char *leaf, const char *type,
    size_t type_len)
{
	struct topic_buf tb = { dst, cap, 0, cap == 0 };
	put_base(&tb, prefix, instance);
	put(&tb, "/prompt/", 8);
	put_id(&tb, prompt_id, id_len);
	put(&tb, "/", 1);
	put_str(&tb, leaf);
	if (type != NULL) {
		put(&tb, "/", 1);
		put_id(&tb, type, type_len);
	}
	return finish(&tb);
}

int
topic_event(char *dst, size_t cap, const char *prefix, const char *instance,
    const char *type, size_t type_len)
{
	struct topic_buf tb = { dst, cap, 0, cap == 0 };
	put_base(&tb, prefix, instance);
	put(&tb, "/event/", 7);
	put_id(&tb, type, type_len);
	return finish(&tb);
}
