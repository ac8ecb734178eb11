/* See console.h. */
#include "console.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>

void
console_line(const struct console *c, const char *fmt, ...)
{
	if (!c->f)
		return;
	if (c->timestamps) {
		time_t now = time(NULL);
		struct tm tm;
		localtime_r(&now, &tm);
		fprintf(c->f, "[%02d:%02d:%02d] ", tm.tm_hour, tm.tm_min,
		    tm.tm_sec);
	}
	if (c->prefix)
		fputs(c->prefix, c->f);
	va_list ap;
	va_start(ap, fmt);
	vfprintf(c->f, fmt, ap);
	va_end(ap);
	fputc('\n', c->f);
	fflush(c->f);
}

void
console_queued(const struct console *c, const char *id)
{
	console_line(c, "[QUEUED] Prompt %s", id);
}

void
console_cached(const struct console *c, const char *id,
    const struct json_doc *d, int nodes)
{
	if (!c->f || nodes < 0)
		return;
	char line[1024] = "";
	size_t ll = 0;
	int n = json_size(d, nodes), t = nodes + 1;
	for (int i = 0; i < n && ll + 140 < sizeof(line); i++) {
		char node[NODE_ID_MAX + 1];
		if (json_str_get(d, t, node, sizeof(node)) >= 0)
			ll += (size_t) snprintf(line + ll, sizeof(line) - ll,
			    "%s%s", i ? ", " : "", node);
		t = json_skip(d, t);
	}
	if (n > 0)
		console_line(c, "[CACHED] Prompt %s, Nodes %s", id, line);
}

void
console_executing(const struct console *c, const char *id, const char *node)
{
	if (node)
		console_line(c, "[EXECUTING] Prompt %s, Node %s", id, node);
	else
		console_line(c, "[EXECUTING] Prompt %s completed", id);
}

void
console_progress(const struct console *c, double value, double max)
{
	if (isfinite(value) && isfinite(max))
		console_line(c, "[PROGRESS] %g/%g (%.1f%%)", value, max,
		    max > 0 ? value * 100.0 / max : 0.0);
}

void
console_executed(
    const struct console *c, const char *id, const char *node, int64_t files)
{
	console_line(c, "[EXECUTED] Node %s in prompt %s", node, id);
	if (files > 0)
		console_line(
		    c, "  → Produced %lld image(s)", (long long) files);
}

/* Prints the lines of s verbatim (leading blanks kept: a traceback's
 * ^^^^ markers point at a column), the first after first_prefix, the
 * others after prefix; an empty s prints first_prefix alone when
 * always. */
static void
print_lines(const struct console *c, char *s, const char *first_prefix,
    const char *prefix, bool always)
{
	char *save = NULL;
	bool first = true;
	for (char *l = strtok_r(s, "\n", &save); l;
	     l = strtok_r(NULL, "\n", &save)) {
		console_line(c, "%s%s", first ? first_prefix : prefix, l);
		first = false;
	}
	if (first && always)
		console_line(c, "%s", first_prefix);
}

/* ComfyUI's entries are Python's formatted frames, which indent
 * themselves ("  File ...", "    code"): under "  Traceback:" they get two
 * more spaces and nothing else. */
static void
print_traceback(const struct console *c, const struct json_doc *d, int tb)
{
	console_line(c, "  Traceback:");
	int n = json_size(d, tb);
	int t = tb + 1;
	for (int i = 0; i < n; i++, t = json_skip(d, t)) {
		char line[4096];
		if (json_str_get(d, t, line, sizeof(line)) >= 0)
			print_lines(c, line, "  ", "  ", false);
	}
}

/* The string member key of the object at obj into out ("" if none). */
static void
member_str(
    const struct json_doc *d, int obj, const char *key, char *out, size_t cap)
{
	out[0] = '\0';
	int t = obj >= 0 && json_is_object(d, obj) ? json_obj_get(d, obj, key)
	                                           : -1;
	if (t >= 0 && json_str_get(d, t, out, cap) < 0)
		out[0] = '\0';
}

void
console_error(const struct console *c, const char *id,
    const struct json_doc *d, int data, bool interrupted)
{
	if (!c->f)
		return;
	char node[NODE_ID_MAX + 1], ntype[128], etype[256], msg[2048];
	if (!d)
		data = -1;
	member_str(d, data, "node_id", node, sizeof(node));
	member_str(d, data, "node_type", ntype, sizeof(ntype));
	console_line(c, "[%s] Prompt %s, Node %s (%s)",
	    interrupted ? "INTERRUPTED" : "ERROR", id, node[0] ? node : "?",
	    ntype);
	if (interrupted)
		return;
	member_str(d, data, "exception_type", etype, sizeof(etype));
	member_str(d, data, "exception_message", msg, sizeof(msg));
	console_line(c, "  Type: %s", etype);
	/* ComfyUI appends hints after a newline: indent them under Message */
	print_lines(c, msg, "  Message: ", "           ", true);
	int tb = data >= 0 ? json_obj_get(d, data, "traceback") : -1;
	if (tb >= 0 && json_is_array(d, tb))
		print_traceback(c, d, tb);
}

void
console_finished(const struct console *c, const struct prompt *p)
{
	if (p->status == PS_SUCCESS)
		console_line(c, "[SUCCESS] Prompt %s (%lld ms)", p->id,
		    (long long) prompt_duration(p));
	else if (p->status == PS_LOST)
		console_line(c, "[LOST] Prompt %s", p->id);
	else if (p->status == PS_CANCELLED)
		console_line(c, "[CANCELLED] Prompt %s", p->id);
}

void
console_status(const struct console *c, int64_t queue_remaining)
{
	console_line(
	    c, "[STATUS] Queue remaining: %lld", (long long) queue_remaining);
}

void
console_upstream(const struct console *c, bool up)
{
	console_line(
	    c, up ? "Connected! Listening for events..." : "WebSocket closed");
}
