/* The event loop: owns the libwebsockets context (the only poll), timers,
 * the signal fd and descriptor watches (the broker link's socket). */
#ifndef C2M_LOOP_H
#define C2M_LOOP_H

#include <stdbool.h>
#include <stdint.h>

#include "tlsopts.h"

struct loop;
struct loop_timer;

/* Creates the lws context (no listening socket, no extensions, OpenSSL
 * initialised), blocks SIGINT/SIGTERM/SIGHUP into a signalfd watched by the
 * loop, ignores SIGPIPE. */
struct loop *loop_create(void);
/* Like loop_create(); tls false skips OpenSSL's initialisation (no https or
 * wss peer will be used), which keeps RSS small. */
struct loop *loop_create_tls(bool tls);
/* Like loop_create_tls(), with room for the sockets of peers ComfyUI
 * servers (each: a WebSocket, its HTTP reads, a broker link); raises the
 * process's soft descriptor limit towards the hard one when it is lower. */
struct loop *loop_create_for(bool tls, unsigned peers);
void loop_destroy(struct loop *l);

/* Services until loop_quit(). Returns 0. */
int loop_run(struct loop *l);
/* Makes loop_run() return after the current iteration; safe to call from
 * any thread. */
void loop_quit(struct loop *l);

/* Called in the loop thread for each SIGINT/SIGTERM/SIGHUP received. */
void loop_set_signal_cb(
    struct loop *l, void (*cb)(void *ud, int signo), void *ud);

/* From now on SIGINT and SIGTERM end the process at once (exit status 1)
 * instead of reaching the signal callback: for a shutdown that blocks the
 * loop thread, so that a second signal still stops it. */
void loop_exit_on_signal(struct loop *l);

/* One-shot timers owned by the caller's object. */
struct loop_timer *loop_timer_create(
    struct loop *l, void (*cb)(void *ud), void *ud);
/* (Re)arms the timer to fire once after delay_ms; replaces a pending arm. */
void loop_timer_arm(struct loop_timer *t, int64_t delay_ms);
void loop_timer_cancel(struct loop_timer *t);
bool loop_timer_pending(const struct loop_timer *t);
void loop_timer_destroy(struct loop_timer *t);

/* A descriptor watched by the loop (e.g. a duplicate of a library's
 * socket). Events for cb: */
struct loop_fd;
enum { LOOP_FD_IN = 1, LOOP_FD_OUT = 2, LOOP_FD_GONE = 4 };
/* Watches fd for reading, and for writing once after each
 * loop_fd_want_write(); the watch owns fd and closes it. cb(ud, event)
 * runs in the loop thread; after LOOP_FD_GONE (the loop dropped the fd: a
 * hang-up or an error) the watch is freed and must not be used. Returns
 * NULL (fd closed) on failure. */
struct loop_fd *loop_fd_watch(
    struct loop *l, int fd, void (*cb)(void *ud, int event), void *ud);
void loop_fd_want_write(struct loop_fd *w);
/* Stops the watch: cb is never called again, fd is closed soon. */
void loop_fd_close(struct loop_fd *w);

/* Wall clock, ms since the epoch. */
int64_t loop_now_ms(void);
/* Monotonic clock, ms. */
int64_t loop_mono_ms(void);

#endif
