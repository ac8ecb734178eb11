/* The console: --print, the prompt transitions as human lines, a second
 * sink beside MQTT. Every function does nothing when the console is off
 * (f NULL). */
#ifndef C2M_CONSOLE_H
#define C2M_CONSOLE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "event.h"
#include "json.h"
#include "tracker.h"

struct console {
	FILE *f; /* NULL: off */
	bool timestamps; /* each line starts with [HH:MM:SS] local time */
	const char *prefix; /* then this (e.g. "gpu1: ", one per instance
	                       when several share stdout); NULL: none */
};

void console_line(const struct console *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void console_queued(const struct console *c, const char *id);
/* The nodes of an execution_cached frame (nodes: the array token). */
void console_cached(const struct console *c, const char *id,
    const struct json_doc *d, int nodes);
/* node NULL: the prompt's run completed (executing with a null node). */
void console_executing(
    const struct console *c, const char *id, const char *node);
void console_progress(const struct console *c, double value, double max);
void console_executed(
    const struct console *c, const char *id, const char *node, int64_t files);
/* An execution_error / execution_interrupted, live or from history: its
 * data object (d NULL or data < 0: none) with its details. */
void console_error(const struct console *c, const char *id,
    const struct json_doc *d, int data, bool interrupted);
/* A prompt's end (success, lost and cancelled; errors are told by
 * console_error). */
void console_finished(const struct console *c, const struct prompt *p);
void console_status(const struct console *c, int64_t queue_remaining);
void console_upstream(const struct console *c, bool up);

#endif
