/* Leveled logging to stderr, text or JSON lines. Secrets are never passed
 * here: callers log names, not values. */
#ifndef C2M_LOG_H
#define C2M_LOG_H

#include <stdbool.h>

enum log_level {
	LOG_LVL_ERROR = 0,
	LOG_LVL_WARN = 1,
	LOG_LVL_INFO = 2,
	LOG_LVL_DEBUG = 3,
};

enum log_format { LOG_FMT_TEXT = 0, LOG_FMT_JSON = 1 };

void log_setup(enum log_level level, enum log_format fmt);
enum log_level log_get_level(void);
/* Parses "error|warn|warning|info|debug"; returns -1 if unknown. */
int log_level_parse(const char *s);

/* src: a short component tag ("ws", "mqtt", "http", "bridge", "config"). */
void log_msg(enum log_level lvl, const char *src, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_error(src, ...) log_msg(LOG_LVL_ERROR, src, __VA_ARGS__)
#define log_warn(src, ...)  log_msg(LOG_LVL_WARN, src, __VA_ARGS__)
#define log_info(src, ...)  log_msg(LOG_LVL_INFO, src, __VA_ARGS__)
#define log_debug(src, ...)                                                   \
	do {                                                                  \
		if (log_get_level() >= LOG_LVL_DEBUG)                         \
			log_msg(LOG_LVL_DEBUG, src, __VA_ARGS__);             \
	} while (0)

/* Writes at most max bytes of s into dst as a printable one-line excerpt
 * (control and non-ASCII bytes as \xNN), with "..." when cut. For logging
 * rejected input. Returns dst. */
char *log_excerpt(char *dst, unsigned cap, const void *s, unsigned long len);

#endif
