/* The one rate-limited logger, for conditions that may repeat per event or
 * per connection attempt: "first N, then count" (the first first_n
 * occurrences are logged at their level, the rest at debug and counted;
 * with every > 0 each every-th occurrence of the series is logged at its
 * level too, so a lasting condition stays visible; ratelog_reset logs the
 * count and starts over), and "log on change" (a
 * value is logged only when it differs from the last one logged). Pure
 * data; logs through log.h. */
#ifndef C2M_RATELOG_H
#define C2M_RATELOG_H

#include <stdbool.h>
#include <stdint.h>

#include "log.h"

struct ratelog {
	unsigned first_n; /* occurrences logged at full level per series */
	unsigned every; /* 0, or: the every-th, 2*every-th... at full level */
	unsigned seen; /* in this series */
	uint64_t suppressed; /* in this series, past first_n */
};

#define RATELOG_INIT(n)                                                       \
	{                                                                     \
		.first_n = (n)                                                \
	}
#define RATELOG_INIT_EVERY(n, every_nth)                                      \
	{                                                                     \
		.first_n = (n), .every = (every_nth)                          \
	}

/* One occurrence: logged at lvl while the series is within first_n (or
 * it is an every-th one), at debug otherwise (and counted). Returns true
 * when logged at lvl. */
bool ratelog_msg(struct ratelog *r, enum log_level lvl, const char *src,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Ends a series (the condition cleared): logs at info how many were
 * suppressed, if any, naming what; the next occurrence logs again. */
void ratelog_reset(struct ratelog *r, const char *src, const char *what);

struct logchange {
	bool set;
	int last;
};

/* True when value differs from the last value passed (or is the first):
 * the caller logs then. */
bool logchange_changed(struct logchange *c, int value);

#endif
