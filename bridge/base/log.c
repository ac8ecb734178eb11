/* Leveled logging to stderr. Each message is formatted into one buffer and
 * written with one call, then flushed, so lines from a crash or from a pipe
 * reader never interleave half-way. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "jsonw.h"

/* Longest message text kept (bytes); longer messages end in "...". */
#define LOG_MSG_MAX 2048

static enum log_level current_level = LOG_LVL_INFO;
static enum log_format current_format = LOG_FMT_TEXT;

static const char *const level_upper[] = { "ERROR", "WARN", "INFO", "DEBUG" };
static const char *const level_lower[] = { "error", "warn", "info", "debug" };

/* Sets the process-wide level and format; nothing is kept from callers. */
void
log_setup(enum log_level level, enum log_format fmt)
{
	current_level = level;
	current_format = fmt;
}

/* The level set by log_setup (info until then). */
enum log_level
log_get_level(void)
{
	return current_level;
}

/* Reads s (borrowed) only. */
int
log_level_parse(const char *s)
{
	static const struct {
		const char *name;
		enum log_level level;
	} names[] = {
		{ "error", LOG_LVL_ERROR },
		{ "warn", LOG_LVL_WARN },
		{ "warning", LOG_LVL_WARN },
		{ "info", LOG_LVL_INFO },
		{ "debug", LOG_LVL_DEBUG },
	};

	if (!s)
		return -1;
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		if (strcmp(s, names[i].name) == 0)
			return (int) names[i].level;
	}
	return -1;
}

/* "2026-11-29T03:51:56.123Z" (UTC, milliseconds) into dst (>= 25 bytes) */
static void
format_timestamp(char *dst, size_t cap)
{
	struct timespec ts;
	struct tm tm;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	snprintf(dst, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	    tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L);
}

/* Marks a message that did not fit its cap bytes with "...", cutting on a
 * UTF-8 boundary so the JSON writer has nothing to replace. */
static void
mark_truncated(char *msg, size_t cap)
{
	size_t end = cap - 4;

	/* back off over continuation bytes so no sequence is split */
	while (end > 0 && ((unsigned char) msg[end] & 0xC0) == 0x80)
		end--;
	memcpy(msg + end, "...", 4);
}

/* Copies msg into dst for the text format: control bytes become visible
 * escapes so one message is always one line. */
static size_t
text_escape(char *dst, size_t cap, const char *msg)
{
	size_t out = 0;

	for (const unsigned char *p = (const unsigned char *) msg; *p; p++) {
		char tmp[5];
		size_t n;
		if (*p == '\n')
			n = (size_t) snprintf(tmp, sizeof tmp, "\\n");
		else if (*p == '\r')
			n = (size_t) snprintf(tmp, sizeof tmp, "\\r");
		else if (*p < 0x20 && *p != '\t')
			n = (size_t) snprintf(tmp, sizeof tmp, "\\x%02x", *p);
		else if (*p == 0x7f)
			n = (size_t) snprintf(tmp, sizeof tmp, "\\x7f");
		else {
			tmp[0] = (char) *p;
			n = 1;
		}
		if (out + n >= cap)
			break;
		memcpy(dst + out, tmp, n);
		out += n;
	}
	dst[out] = '\0';
	return out;
}

/* Formats into stack buffers and writes one line at once: no allocation,
 * src and the arguments are only read during the call. */
void
log_msg(enum log_level lvl, const char *src, const char *fmt, ...)
{
	char msg[LOG_MSG_MAX];
	/* worst case: every byte escaped as \u00XX in JSON, plus the frame */
	char line[LOG_MSG_MAX * 6 + 256];
	char ts[64];
	va_list ap;
	int wanted;
	size_t len;

	if ((int) lvl > (int) current_level || (int) lvl < 0)
		return;
	va_start(ap, fmt);
	wanted = vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (wanted < 0)
		snprintf(msg, sizeof msg, "(log format error)");
	else if ((size_t) wanted >= sizeof msg)
		mark_truncated(msg, sizeof msg);
	if (!src)
		src = "-";
	format_timestamp(ts, sizeof ts);

	if (current_format == LOG_FMT_JSON) {
		struct jsonw w;
		jsonw_init(&w, line, sizeof line - 1);
		jsonw_obj_begin(&w);
		jsonw_kstr(&w, "ts", ts);
		jsonw_kstr(&w, "level", level_lower[lvl]);
		jsonw_kstrn(&w, "src", src, strnlen(src, 32));
		jsonw_kstr(&w, "msg", msg);
		jsonw_obj_end(&w);
		len = w.len;
	} else {
		int head = snprintf(line, sizeof line, "%s %-5s [%.32s] ", ts,
		    level_upper[lvl], src);
		if (head < 0 || (size_t) head >= sizeof line / 2)
			head = 0;
		len = (size_t) head
		    + text_escape(
		        line + head, sizeof line - 1 - (size_t) head, msg);
	}
	line[len++] = '\n';
	fwrite(line, 1, len, stderr);
	fflush(stderr);
}

/* Reads len bytes of s (borrowed), writes into dst (caller-owned). */
char *
log_excerpt(char *dst, unsigned cap, const void *s, unsigned long len)
{
	const unsigned char *p = s;
	size_t need = 0, out = 0, room;

	if (cap == 0)
		return dst;
	/* how long the full escaped text is decides whether "..." is due */
	for (unsigned long i = 0; i < len; i++) {
		unsigned char ch = p[i];
		need += (ch < 0x20 || ch >= 0x7f) ? 4 : ch == '\\' ? 2 : 1;
	}
	room = need <= (size_t) cap - 1 ? need
	                                : (cap > 4 ? (size_t) cap - 4 : 0);
	for (unsigned long i = 0; i < len; i++) {
		unsigned char ch = p[i];
		char tmp[5];
		size_t n = 1;
		if (ch < 0x20 || ch >= 0x7f)
			n = (size_t) snprintf(tmp, sizeof tmp, "\\x%02x", ch);
		else if (ch == '\\')
			n = (size_t) snprintf(tmp, sizeof tmp, "\\\\");
		else
			tmp[0] = (char) ch;
		if (out + n > room)
			break;
		memcpy(dst + out, tmp, n);
		out += n;
	}
	if (need > (size_t) cap - 1) {
		size_t dots = (size_t) cap - 1 - out;
		if (dots > 3)
			dots = 3;
		memcpy(dst + out, "...", dots);
		out += dots;
	}
	dst[out] = '\0';
	return dst;
}
