/* MQTT topic building. Every id placed in a topic goes through
 * topic_sanitize(), so nothing a ComfyUI client sends can leave <p>/<i>/. */
#ifndef C2M_TOPIC_H
#define C2M_TOPIC_H

#include <stdbool.h>
#include <stddef.h>

/* Longest sanitized id (bytes). Longer ids are cut and given a hash suffix
 * so that two long ids sharing a prefix still get distinct topics. */
#define TOPIC_ID_MAX 96
/* Longest topic the bridge builds. */
#define TOPIC_MAX 512

/* Copies id[0..len) into dst (cap bytes incl. NUL) sanitized: every byte
 * outside [A-Za-z0-9._:-] becomes '_', an empty id becomes "_", a leading
 * '$' becomes '_'; ids longer than TOPIC_ID_MAX are cut and suffixed with
 * '_' and 8 hex digits of a hash of the whole id. Returns the length. */
size_t topic_sanitize(char *dst, size_t cap, const char *id, size_t len);

/* Checks a user-given prefix: non-empty, valid UTF-8, no '+', '#', NUL,
 * no empty level, no leading '$'. Returns true when usable. */
bool topic_prefix_valid(const char *prefix);

/* Writes "<prefix>/<instance>/<rest>" into dst (cap incl. NUL); prefix and
 * instance must already be valid (instance sanitized). rest is a literal
 * suffix such as "bridge/state". Returns the length or BR_ETRUNC. */
int topic_join(char *dst, size_t cap, const char *prefix, const char *instance,
    const char *rest);

/* Writes "<prefix>/<instance>/prompt/<sanitized id>/<leaf>" where leaf is
 * e.g. "state" or "event/<sanitized type>" (the type is sanitized here:
 * pass the raw event type in type, or NULL for a plain leaf).
 * Returns the length or BR_ETRUNC. */
int topic_prompt(char *dst, size_t cap, const char *prefix,
    const char *instance, const char *prompt_id, size_t id_len,
    const char *leaf, const char *type, size_t type_len);

/* Writes "<prefix>/<instance>/event/<sanitized type>". */
int topic_event(char *dst, size_t cap, const char *prefix,
    const char *instance, const char *type, size_t type_len);

#endif
