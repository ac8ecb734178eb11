/* What the loop-driven io tests share: running the real loop until a
 * condition holds or a deadline passes, and tests/io/ws_peer.py as a child
 * process (pipes on its stdin/stdout, port from its LISTENING line). */
#ifndef C2M_HELPER_LOOP_H
#define C2M_HELPER_LOOP_H

#include <stdbool.h>
#include <sys/types.h>

#include "loop.h"
#include "url.h"

/* Runs l until pred(ud) holds (checked at once, then every 10 ms) or
 * timeout_ms passes; true if pred held. With pred NULL it only runs the
 * loop for timeout_ms. Borrows l, pred and ud for the call. */
bool helper_wait_for(
    struct loop *l, bool (*pred)(void *ud), void *ud, int timeout_ms);

/* Runs l in 20 ms slices until the expression cond holds or timeout_ms
 * passes, and gives cond's last value: for conditions on state that
 * helper_wait_for's predicate cannot reach. */
#define HELPER_LOOP_UNTIL(l, cond, timeout_ms)                                \
	({                                                                    \
		int64_t until_ = loop_mono_ms() + (timeout_ms);               \
		while (!(cond) && loop_mono_ms() < until_)                    \
			helper_wait_for((l), NULL, NULL, 20);                 \
		(cond);                                                       \
	})

/* Path of tests/io/ws_peer.py (under $C2M_SOURCE_DIR, else next to this
 * file's source); a static buffer the caller borrows. */
const char *helper_peer_script(void);

struct helper_peer {
	pid_t pid; /* 0 when not running */
	int in_fd; /* the peer's stdin (commands), -1 when closed */
	int out_fd; /* the peer's stdout (events), non-blocking, -1 closed */
	int port; /* from LISTENING */
	char line[1024]; /* the line helper_peer_read_lines is reading */
	size_t line_len;
};

/* Starts /usr/bin/python3 ws_peer.py on port (0: any free one), serving
 * https/wss when tls_cert is set, and waits up to 10 s for its LISTENING
 * line, reading no further. 0, or -1 with nothing left running. p owns the
 * child and both pipe ends; cert and key are borrowed for the call. */
int helper_peer_start(struct helper_peer *p, int port, const char *tls_cert,
    const char *tls_key);
/* Forks /usr/bin/python3 with argv (argv[0] is its name; NULL-terminated,
 * borrowed), its stdin and stdout on pipes and no signal blocked: p owns
 * the child and both pipe ends (stdout non-blocking, both close-on-exec);
 * p->port stays 0. 0, or -1 with nothing left running. */
int helper_peer_spawn(struct helper_peer *p, const char **argv);
/* SIGKILL and reap. The pipes stay open so the caller can still read what
 * the peer wrote before it died; helper_peer_close releases them. */
void helper_peer_kill(struct helper_peer *p);
/* Starts /usr/bin/python3 with the script name from ws_peer.py's folder
 * and no arguments, as helper_peer_spawn does. */
int helper_peer_spawn_named(struct helper_peer *p, const char *name);
/* Reads what the peer has written so far (its stdout is non-blocking) and
 * hands each whole line to on_line, without its newline. */
void helper_peer_read_lines(struct helper_peer *p,
    void (*on_line)(void *ud, const char *line), void *ud);
/* Reads lines as helper_peer_read_lines does until ready(ud) holds, the
 * peer hangs up or timeout_ms passes. True if ready; otherwise the peer is
 * killed and closed. */
bool helper_peer_await(struct helper_peer *p,
    void (*on_line)(void *ud, const char *line), bool (*ready)(void *ud),
    void *ud, int timeout_ms);
/* Writes the command line cmd to the peer's stdin; a short write is
 * reported on stderr. */
void helper_peer_cmd(struct helper_peer *p, const char *cmd);
/* Closes both pipe ends p owns (kill first). */
void helper_peer_close(struct helper_peer *p);

/* Fills u (caller-owned) with the peer's http://127.0.0.1:port/api. */
void helper_peer_base(struct url *u, int port);

#endif
