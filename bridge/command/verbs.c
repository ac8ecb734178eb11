/* See verbs.h. The bodies are ComfyUI's own API calls
 * (bridge/README.md#comfyui-post-api). */
#include "verbs.h"

#include <stdio.h>
#include <string.h>

#include "err.h"

enum ftype { FT_OBJECT, FT_BOOL, FT_STRING, FT_STRING_LIST, FT_END };

struct field {
	const char *name;
	enum ftype type;
	bool required;
};

typedef int (*body_fn)(
    const struct json_doc *d, const char *client_id, struct jsonw *w);

struct verb_def {
	const char *name;
	const char *path;
	struct field fields[5]; /* up to FT_END */
	body_fn body;
};

/* Writes "key": <the payload's value of key, verbatim> when present. */
static void
copy_field(const struct json_doc *d, const char *key, struct jsonw *w)
{
	int i = json_obj_get(d, 0, key);
	if (i < 0)
		return;
	size_t n;
	const char *raw = json_raw_value(d, i, &n);
	jsonw_kraw(w, key, raw, n);
}

static int
body_prompt(const struct json_doc *d, const char *client_id, struct jsonw *w)
{
	copy_field(d, "prompt", w);
	jsonw_kstr(w, "client_id", client_id);
	copy_field(d, "extra_data", w);
	copy_field(d, "front", w);
	copy_field(d, "prompt_id", w);
	return 0;
}

static int
body_interrupt(
    const struct json_doc *d, const char *client_id, struct jsonw *w)
{
	copy_field(d, "prompt_id", w);
	return 0;
}

static int
body_cancel(const struct json_doc *d, const char *client_id, struct jsonw *w)
{
	int i = json_obj_get(d, 0, "prompt_ids");
	size_t n;
	const char *raw = json_raw_value(d, i, &n);
	jsonw_kraw(w, "delete", raw, n);
	return 0;
}

static int
body_clear(const struct json_doc *d, const char *client_id, struct jsonw *w)
{
	jsonw_kbool(w, "clear", true);
	return 0;
}

/* ComfyUI does nothing for a /free with neither flag
 * (bridge/README.md#comfyui-post-api): {} means both. */
static int
body_free(const struct json_doc *d, const char *client_id, struct jsonw *w)
{
	if (json_obj_get(d, 0, "unload_models") < 0
	    && json_obj_get(d, 0, "free_memory") < 0) {
		jsonw_kbool(w, "unload_models", true);
		jsonw_kbool(w, "free_memory", true);
		return 0;
	}
	copy_field(d, "unload_models", w);
	copy_field(d, "free_memory", w);
	return 0;
}

static const struct verb_def verbs[] = {
	{ "prompt", "/prompt",
	    { { "prompt", FT_OBJECT, true },
	        { "extra_data", FT_OBJECT, false },
	        { "front", FT_BOOL, false }, { "prompt_id", FT_STRING, false },
	        { NULL, FT_END, false } },
	    body_prompt },
	{ "interrupt", "/interrupt",
	    { { "prompt_id", FT_STRING, false }, { NULL, FT_END, false } },
	    body_interrupt },
	{ "cancel", "/queue",
	    { { "prompt_ids", FT_STRING_LIST, true },
	        { NULL, FT_END, false } },
	    body_cancel },
	{ "clear", "/queue", { { NULL, FT_END, false } }, body_clear },
	{ "free", "/free",
	    { { "unload_models", FT_BOOL, false },
	        { "free_memory", FT_BOOL, false }, { NULL, FT_END, false } },
	    body_free },
};

/* Fields every verb takes: the answer route. */
static const char *const route_fields[] = { "response_topic", "correlation" };

static const char *const type_names[] = {
	[FT_OBJECT] = "an object",
	[FT_BOOL] = "true or false",
	[FT_STRING] = "a string",
	[FT_STRING_LIST] = "a non-empty array of strings",
};

const struct verb_def *
verb_find(const char *name, size_t len)
{
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		if (strlen(verbs[i].name) == len
		    && memcmp(verbs[i].name, name, len) == 0)
			return &verbs[i];
	return NULL;
}

const char *
verb_name(const struct verb_def *v)
{
	return v->name;
}

const char *
verb_path(const struct verb_def *v)
{
	return v->path;
}

static bool
typed(const struct json_doc *d, int i, enum ftype t)
{
	bool b;
	switch (t) {
	case FT_OBJECT:
		return json_is_object(d, i);
	case FT_BOOL:
		return json_get_bool(d, i, &b) == 0;
	case FT_STRING:
		return json_is_string(d, i);
	case FT_STRING_LIST: {
		if (!json_is_array(d, i) || json_size(d, i) == 0)
			return false;
		/* one pass: json_child walks from the start each time */
		int j = i + 1;
		for (int n = json_size(d, i); n > 0; n--, j = json_skip(d, j))
			if (!json_is_string(d, j))
				return false;
		return true;
	}
	default:
		return false;
	}
}

static const struct field *
field_of(const struct verb_def *v, const struct json_doc *d, int key)
{
	for (const struct field *f = v->fields; f->name != NULL; f++)
		if (json_str_eq(d, key, f->name))
			return f;
	return NULL;
}

static bool
is_route_field(const struct json_doc *d, int key)
{
	for (size_t i = 0; i < 2; i++)
		if (json_str_eq(d, key, route_fields[i]))
			return true;
	return false;
}

bool
verb_check(
    const struct verb_def *v, const struct json_doc *d, char *why, size_t cap)
{
	/* one pass over the keys: key, value key + 1 */
	int key = 1;
	for (int k = json_size(d, 0); k > 0;
	     k--, key = json_skip(d, key + 1)) {
		if (is_route_field(d, key))
			continue;
		const struct field *f = field_of(v, d, key);
		if (f == NULL) {
			char name[64];
			int rc = json_str_get(d, key, name, sizeof(name));
			snprintf(why, cap, "unknown field \"%s%s\" for %s",
			    rc >= 0 || rc == BR_ETRUNC ? name : "?",
			    rc == BR_ETRUNC ? "..." : "", v->name);
			return false;
		}
		if (!typed(d, key + 1, f->type)) {
			snprintf(why, cap, "field \"%s\" must be %s", f->name,
			    type_names[f->type]);
			return false;
		}
	}
	for (const struct field *f = v->fields; f->name != NULL; f++)
		if (f->required && json_obj_get(d, 0, f->name) < 0) {
			snprintf(why, cap, "field \"%s\" is missing (%s)",
			    f->name, type_names[f->type]);
			return false;
		}
	return true;
}

int
verb_body(const struct verb_def *v, const struct json_doc *d,
    const char *client_id, struct buf *out)
{
	/* verbatim copies: the body is never longer than the payload plus
	 * the client id (escaped) and a few keys */
	size_t cap = d->len + strlen(client_id) * 6 + 256;
	buf_reset(out);
	if (buf_reserve(out, cap) != 0)
		return BR_ENOMEM;
	struct jsonw w;
	jsonw_init(&w, out->p, cap);
	jsonw_obj_begin(&w);
	v->body(d, client_id, &w);
	jsonw_obj_end(&w);
	if (jsonw_finish(&w) != 0)
		return BR_ETRUNC;
	out->len = w.len;
	return 0;
}
