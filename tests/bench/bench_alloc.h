/* Counters shared between the LD_PRELOAD allocation counter (in the
 * bridge) and the benchmark driver, through a file mapping. */
#ifndef C2M_BENCH_ALLOC_H
#define C2M_BENCH_ALLOC_H

#include <stdatomic.h>

enum bench_mod {
	BENCH_MOD_EXE, /* comfy2mqtt itself */
	BENCH_MOD_MOSQ, /* libmosquitto */
	BENCH_MOD_LWS, /* libwebsockets */
	BENCH_MOD_LIBC, /* libc (strdup, stdio, ...) */
	BENCH_MOD_OTHER,
	BENCH_MOD_COUNT
};

/* n[0][*]: the main thread (the bridge's loop); n[1][*]: other threads */
struct bench_alloc_counts {
	atomic_ullong n[2][BENCH_MOD_COUNT];
};

#endif
