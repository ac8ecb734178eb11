/* The verb table: for each verb its ComfyUI path, the fields its payload
 * may hold, and the body it posts. Pure; used by command.c. */
#ifndef C2M_VERBS_H
#define C2M_VERBS_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "json.h"

struct verb_def;

/* The verb named name[0..len), or NULL. */
const struct verb_def *verb_find(const char *name, size_t len);
const char *verb_name(const struct verb_def *v);
const char *verb_path(const struct verb_def *v);

/* Checks the fields of the payload object d (root token 0) for v: every
 * field known and of its type (response_topic and correlation are checked
 * by the caller), the required ones present. Returns true when fine, else
 * writes why into why (cap bytes). */
bool verb_check(
    const struct verb_def *v, const struct json_doc *d, char *why, size_t cap);
/* Writes the POST body for the checked payload d into out (values copied
 * verbatim; client_id is the bridge's). Returns 0 or BR_ENOMEM. */
int verb_body(const struct verb_def *v, const struct json_doc *d,
    const char *client_id, struct buf *out);

#endif
