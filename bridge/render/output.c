/* See render.h: node outputs with file URLs, and error objects. */
#include <stdio.h>
#include <string.h>

#include "buf.h"
#include "render.h"
#include "url.h"

#define TRACEBACK_MAX 16384

/* Writes a file reference object with an added "url" (a "url" ComfyUI
 * sent is replaced). */
static void
w_file_ref(struct jsonw *w, const char *comfy_url, const struct json_doc *d,
    int obj, bool *truncated)
{
	char fn[1024], sub[1024], type[64];
	int fnt = json_obj_get(d, obj, "filename");
	int subt = json_obj_get(d, obj, "subfolder");
	int typet = json_obj_get(d, obj, "type");
	if (fnt < 0 || json_str_get(d, fnt, fn, sizeof(fn)) < 0
	    || (subt >= 0 && json_str_get(d, subt, sub, sizeof(sub)) < 0)
	    || (typet >= 0
	        && json_str_get(d, typet, type, sizeof(type)) < 0)) {
		json_emit(d, obj, w, 0, truncated);
		return;
	}
	if (subt < 0)
		sub[0] = '\0';
	if (typet < 0)
		snprintf(type, sizeof(type), "output");
	jsonw_obj_begin(w);
	int n = json_size(d, obj);
	int k = obj + 1;
	for (int i = 0; i < n; i++, k = json_skip(d, k + 1)) {
		char key[64];
		if (json_str_get(d, k, key, sizeof(key)) < 0
		    || strcmp(key, "url") == 0)
			continue;
		jsonw_key(w, key);
		json_emit(d, k + 1, w, 0, truncated);
	}
	struct buf url = { 0 };
	buf_puts(&url, comfy_url);
	buf_puts(&url, "/view?filename=");
	url_encode(&url, fn);
	buf_puts(&url, "&subfolder=");
	url_encode(&url, sub);
	buf_puts(&url, "&type=");
	url_encode(&url, type);
	jsonw_kstrn(w, "url", url.p ? url.p : "", url.len);
	buf_free(&url);
	jsonw_obj_end(w);
}

/* Writes a list of an output, file references with their url. */
static void
w_output_list(struct jsonw *w, const char *comfy_url, const struct json_doc *d,
    int v, bool *truncated)
{
	jsonw_arr_begin(w);
	int m = json_size(d, v);
	int el = v + 1;
	for (int j = 0; j < m; j++, el = json_skip(d, el)) {
		if (json_is_object(d, el)
		    && json_obj_get(d, el, "filename") >= 0)
			w_file_ref(w, comfy_url, d, el, truncated);
		else
			json_emit(d, el, w, 0, truncated);
	}
	jsonw_arr_end(w);
}

void
render_node_output(struct jsonw *w, const char *comfy_url,
    const struct json_doc *d, int out, bool *truncated)
{
	if (!json_is_object(d, out)) {
		json_emit(d, out, w, 0, truncated);
		return;
	}
	jsonw_obj_begin(w);
	int n = json_size(d, out);
	int k = out + 1;
	for (int i = 0; i < n; i++, k = json_skip(d, k + 1)) {
		char key[256];
		int v = k + 1;
		if (json_str_get(d, k, key, sizeof(key)) < 0) {
			*truncated = true;
			continue;
		}
		jsonw_key(w, key);
		if (json_is_array(d, v))
			w_output_list(w, comfy_url, d, v, truncated);
		else
			json_emit(d, v, w, 0, truncated);
	}
	jsonw_obj_end(w);
}

int
render_count_files(const struct json_doc *d, int out)
{
	if (out < 0 || !json_is_object(d, out))
		return 0;
	int files = 0, n = json_size(d, out), k = out + 1;
	for (int i = 0; i < n; i++) {
		int list = k + 1;
		if (json_is_array(d, list)) {
			int m = json_size(d, list), t = list + 1;
			for (int j = 0; j < m; j++, t = json_skip(d, t))
				files += json_is_object(d, t)
				    && json_obj_get(d, t, "filename") >= 0;
		}
		k = json_skip(d, list);
	}
	return files;
}

/* Writes key: the string at data.key (cut at 4 KiB), or when that is
 * absent or not a string, null (nullable) or "". */
static void
w_error_str(struct jsonw *w, const struct json_doc *d, int data,
    const char *key, bool nullable, bool *truncated)
{
	int t = d != NULL && data >= 0 ? json_obj_get(d, data, key) : -1;
	jsonw_key(w, key);
	if (t >= 0 && json_is_string(d, t))
		json_emit(d, t, w, 4096, truncated);
	else if (nullable)
		jsonw_null(w);
	else
		jsonw_str(w, "");
}

/* Writes "traceback": its strings, at most TRACEBACK_MAX bytes of them;
 * [] when ComfyUI sent none. */
static void
w_traceback(
    struct jsonw *w, const struct json_doc *d, int data, bool *truncated)
{
	int tb
	    = d != NULL && data >= 0 ? json_obj_get(d, data, "traceback") : -1;
	jsonw_key(w, "traceback");
	jsonw_arr_begin(w);
	if (tb >= 0 && json_is_array(d, tb)) {
		size_t start = w->len;
		int n = json_size(d, tb), t = tb + 1;
		for (int i = 0; i < n; i++, t = json_skip(d, t)) {
			if (!json_is_string(d, t))
				continue;
			size_t used = w->len - start;
			if (used + 2 >= TRACEBACK_MAX) {
				*truncated = true;
				break;
			}
			json_emit(d, t, w, TRACEBACK_MAX - used, truncated);
		}
	}
	jsonw_arr_end(w);
}

void
render_error(
    struct jsonw *w, const struct json_doc *d, int data, bool interrupted)
{
	bool truncated = false;
	jsonw_obj_begin(w);
	w_error_str(w, d, data, "node_id", true, &truncated);
	w_error_str(w, d, data, "node_type", true, &truncated);
	if (!interrupted) {
		w_error_str(w, d, data, "exception_type", false, &truncated);
		w_error_str(
		    w, d, data, "exception_message", false, &truncated);
		w_traceback(w, d, data, &truncated);
	}
	if (truncated)
		jsonw_kbool(w, "truncated", true);
	jsonw_obj_end(w);
}
