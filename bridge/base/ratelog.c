/* See ratelog.h. */
#include "ratelog.h"

#include <stdarg.h>
#include <stdio.h>

bool
ratelog_msg(struct ratelog *r, enum log_level lvl, const char *src,
    const char *fmt, ...)
{
	bool loud = r->seen < r->first_n
	    || (r->every > 0 && (r->seen + 1) % r->every == 0);
	if (r->seen < UINT32_MAX)
		r->seen++;
	if (!loud)
		r->suppressed++;
	enum log_level at = loud ? lvl : LOG_LVL_DEBUG;
	if (log_get_level() < at)
		return loud;
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	log_msg(at, src, "%s", line);
	return loud;
}

void
ratelog_reset(struct ratelog *r, const char *src, const char *what)
{
	if (r->suppressed > 0)
		log_info(src, "%llu more %s not logged at full level",
		    (unsigned long long) r->suppressed, what);
	r->seen = 0;
	r->suppressed = 0;
}

bool
logchange_changed(struct logchange *c, int value)
{
	if (c->set && c->last == value)
		return false;
	c->set = true;
	c->last = value;
	return true;
}
