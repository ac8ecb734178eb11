/* Waiting on the real loop, and the ws_peer.py child process. */
#include "helper_loop.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define PEER_PYTHON        "/usr/bin/python3"
#define PEER_LISTENING     "LISTENING "
#define PEER_START_TIMEOUT 10000
#define WAIT_POLL_MS       10

/* ---- waiting ---- */

struct wait {
	struct loop *loop;
	struct loop_timer *timer;
	bool (*pred)(void *ud);
	void *ud;
	int64_t deadline;
	bool ok;
};

static void
wait_tick(void *arg)
{
	struct wait *w = arg;

	if (w->pred != NULL && w->pred(w->ud)) {
		w->ok = true;
		loop_quit(w->loop);
		return;
	}
	if (loop_mono_ms() >= w->deadline) {
		loop_quit(w->loop);
		return;
	}
	loop_timer_arm(w->timer, WAIT_POLL_MS);
}

bool
helper_wait_for(
    struct loop *l, bool (*pred)(void *ud), void *ud, int timeout_ms)
{
	struct wait w = { l, NULL, pred, ud, 0, false };

	w.timer = loop_timer_create(l, wait_tick, &w);
	if (w.timer == NULL) {
		/* a false result would pass every negative wait */
		fprintf(stderr, "helper_wait_for: no timer\n");
		abort();
	}
	w.deadline = loop_mono_ms() + timeout_ms;
	loop_timer_arm(w.timer, 0);
	loop_run(l);
	loop_timer_destroy(w.timer);
	return w.ok;
}

/* ---- the peer process ---- */

const char *
helper_peer_script(void)
{
	static char path[1024];
	const char *src = getenv("C2M_SOURCE_DIR");

	if (src != NULL) {
		snprintf(path, sizeof(path), "%s/tests/io/ws_peer.py", src);
		return path;
	}
	snprintf(path, sizeof(path), "%s", __FILE__);
	*strrchr(path, '/') = '\0';
	strncat(path, "/ws_peer.py", sizeof(path) - strlen(path) - 1);
	return path;
}

/* In the child. */
static _Noreturn void
exec_peer(const int in[2], const int out[2], const char **argv)
{
	sigset_t none;

	/* the loop blocks the signals it reads through its signalfd, and a
	 * blocked mask survives exec */
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	dup2(in[0], 0);
	dup2(out[1], 1);
	close(in[1]);
	close(out[0]);
	execv(PEER_PYTHON, (char *const *) argv);
	_exit(127);
}

/* Port of a "LISTENING <port>" line, or -1 for any other line. */
static int
listening_port(const char *line)
{
	const char *digits = line + strlen(PEER_LISTENING);
	char *end;
	long port;

	if (strncmp(line, PEER_LISTENING, strlen(PEER_LISTENING)) != 0)
		return -1;
	errno = 0;
	port = strtol(digits, &end, 10);
	if (errno != 0 || end == digits || *end != '\0' || port <= 0
	    || port > 65535)
		return -1;
	return (int) port;
}

/* One byte at a time, so that nothing after the LISTENING line is taken
 * from the pipe: the events that follow belong to the caller. */
static int
read_listening(int fd)
{
	char line[128];
	size_t len = 0;
	int64_t deadline = loop_mono_ms() + PEER_START_TIMEOUT;
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	ssize_t n;
	int port;

	while (loop_mono_ms() < deadline) {
		if (poll(&pfd, 1, 100) <= 0)
			continue;
		n = read(fd, line + len, 1);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n <= 0)
			return -1;
		if (line[len] != '\n') {
			if (++len == sizeof(line) - 1)
				return -1;
			continue;
		}
		line[len] = '\0';
		len = 0;
		port = listening_port(line);
		if (port > 0)
			return port;
	}
	return -1;
}

int
helper_peer_spawn(struct helper_peer *p, const char **argv)
{
	int in[2] = { -1, -1 }, out[2] = { -1, -1 };
	int i;
	pid_t pid;

	memset(p, 0, sizeof(*p));
	p->in_fd = p->out_fd = -1;
	if (pipe(in) != 0 || pipe(out) != 0)
		goto fail;
	pid = fork();
	if (pid == 0)
		exec_peer(in, out, argv);
	if (pid < 0)
		goto fail;
	close(in[0]);
	close(out[1]);
	p->pid = pid;
	p->in_fd = in[1];
	p->out_fd = out[0];
	fcntl(p->out_fd, F_SETFL, O_NONBLOCK);
	/* a later peer must not hold this one's pipes open */
	fcntl(p->in_fd, F_SETFD, FD_CLOEXEC);
	fcntl(p->out_fd, F_SETFD, FD_CLOEXEC);
	return 0;
fail:
	for (i = 0; i < 2; i++) {
		if (in[i] >= 0)
			close(in[i]);
		if (out[i] >= 0)
			close(out[i]);
	}
	return -1;
}

int
helper_peer_start(
    struct helper_peer *p, int port, const char *tls_cert, const char *tls_key)
{
	char portarg[16];
	const char *argv[8];
	int argc = 0;

	snprintf(portarg, sizeof(portarg), "%d", port);
	argv[argc++] = "python3";
	argv[argc++] = helper_peer_script();
	argv[argc++] = "--port";
	argv[argc++] = portarg;
	if (tls_cert != NULL) {
		argv[argc++] = "--tls";
		argv[argc++] = tls_cert;
		argv[argc++] = tls_key;
	}
	argv[argc] = NULL;
	if (helper_peer_spawn(p, argv) != 0)
		return -1;
	p->port = read_listening(p->out_fd);
	if (p->port > 0)
		return 0;
	helper_peer_kill(p);
	helper_peer_close(p);
	return -1;
}

void
helper_peer_kill(struct helper_peer *p)
{
	if (p->pid <= 0)
		return;
	kill(p->pid, SIGKILL);
	waitpid(p->pid, NULL, 0);
	p->pid = 0;
}

void
helper_peer_close(struct helper_peer *p)
{
	if (p->in_fd >= 0)
		close(p->in_fd);
	if (p->out_fd >= 0)
		close(p->out_fd);
	p->in_fd = p->out_fd = -1;
}

void
helper_peer_base(struct url *u, int port)
{
	memset(u, 0, sizeof(*u));
	snprintf(u->scheme, sizeof(u->scheme), "http");
	snprintf(u->host, sizeof(u->host), "127.0.0.1");
	u->port = port;
	snprintf(u->path, sizeof(u->path), "/api");
}

int
helper_peer_spawn_named(struct helper_peer *p, const char *name)
{
	char script[1024];
	snprintf(script, sizeof(script), "%s", helper_peer_script());
	*strrchr(script, '/') = '\0';
	strncat(script, "/", sizeof(script) - strlen(script) - 1);
	strncat(script, name, sizeof(script) - strlen(script) - 1);
	const char *argv[] = { "python3", script, NULL };
	return helper_peer_spawn(p, argv);
}

void
helper_peer_read_lines(struct helper_peer *p,
    void (*on_line)(void *ud, const char *line), void *ud)
{
	char buf[4096];
	ssize_t n;
	while ((n = read(p->out_fd, buf, sizeof(buf))) > 0)
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] != '\n') {
				if (p->line_len < sizeof(p->line) - 1)
					p->line[p->line_len++] = buf[i];
				continue;
			}
			p->line[p->line_len] = '\0';
			p->line_len = 0;
			on_line(ud, p->line);
		}
}

bool
helper_peer_await(struct helper_peer *p,
    void (*on_line)(void *ud, const char *line), bool (*ready)(void *ud),
    void *ud, int timeout_ms)
{
	struct pollfd pfd = { .fd = p->out_fd, .events = POLLIN };
	int64_t deadline = loop_mono_ms() + timeout_ms;
	while (!ready(ud) && loop_mono_ms() < deadline) {
		if (poll(&pfd, 1, 100) > 0)
			helper_peer_read_lines(p, on_line, ud);
		if (pfd.revents & POLLHUP)
			break;
	}
	if (ready(ud))
		return true;
	helper_peer_kill(p);
	helper_peer_close(p);
	return false;
}

void
helper_peer_cmd(struct helper_peer *p, const char *cmd)
{
	size_t len = strlen(cmd);
	if (write(p->in_fd, cmd, len) != (ssize_t) len)
		fprintf(stderr, "peer: short write of %s", cmd);
}
