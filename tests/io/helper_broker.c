/* Starts and stops a real mosquitto for the io tests. */
#include "helper_broker.h"
#include "loop.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MOSQUITTO_BIN "/usr/sbin/mosquitto"

/* what make_pki leaves in the broker's directory, for broker_destroy */
static const char *const pki_files[]
    = { "ca.pem", "ca.key", "server.pem", "server.key", "server.csr",
	      "client.pem", "client.key", "client.csr", "san.cnf" };

/* P-256 keys: much faster to make than RSA, and both sides accept them.
 * The server certificate names 127.0.0.1 as a DNS name too: libmosquitto
 * checks the host it was given with X509_VERIFY_PARAM_set1_host, which
 * looks at DNS names only. */
static const char make_pki_script[]
    = "cd '%s' && exec >pki.log 2>&1 && "
      "printf 'subjectAltName=DNS:127.0.0.1,IP:127.0.0.1\\n' >san.cnf && "
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
      "-nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=c2m-test-ca && "
      "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
      "-keyout server.key -out server.csr -subj /CN=127.0.0.1 && "
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key "
      "-set_serial 2 -days 2 -extfile san.cnf -out server.pem && "
      "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
      "-keyout client.key -out client.csr -subj /CN=c2m-test-client && "
      "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key "
      "-set_serial 3 -days 2 -out client.pem && rm pki.log";

struct broker {
	char dir[64];
	char conf[96];
	char log[96];
	char db[96];
	int port;
	pid_t pid;
};

int
helper_free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return -1;
	struct sockaddr_in sa = { .sin_family = AF_INET };
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t len = sizeof(sa);
	int port = -1;
	if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0
	    && getsockname(fd, (struct sockaddr *) &sa, &len) == 0)
		port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

static bool
port_accepts(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return false;
	struct sockaddr_in sa
	    = { .sin_family = AF_INET, .sin_port = htons((uint16_t) port) };
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	bool ok = connect(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0;
	close(fd);
	return ok;
}

int
helper_wait_port(int port, int timeout_ms)
{
	int64_t deadline = loop_mono_ms() + timeout_ms;
	while (loop_mono_ms() < deadline) {
		if (port_accepts(port))
			return 0;
		struct timespec ts = { 0, 10 * 1000000L };
		nanosleep(&ts, NULL); /* poll interval, not a wait for state */
	}
	return -1;
}

static int
make_pki(const char *dir)
{
	char cmd[sizeof(make_pki_script) + 64];
	snprintf(cmd, sizeof(cmd), make_pki_script, dir);
	int rc = system(cmd);
	if (rc != 0)
		fprintf(stderr,
		    "making the test certificates failed; see %s/pki.log\n",
		    dir);
	return rc == 0 ? 0 : -1;
}

struct broker *
broker_create(const struct broker_opts *opts)
{
	struct broker *b = calloc(1, sizeof(*b));
	if (b == NULL)
		return NULL;
	snprintf(b->dir, sizeof(b->dir), "/tmp/c2m-broker-XXXXXX");
	if (mkdtemp(b->dir) == NULL) {
		free(b);
		return NULL;
	}
	snprintf(b->conf, sizeof(b->conf), "%s/mosquitto.conf", b->dir);
	snprintf(b->log, sizeof(b->log), "%s/mosquitto.log", b->dir);
	snprintf(b->db, sizeof(b->db), "%s/mosquitto.db", b->dir);
	b->port = helper_free_port();
	FILE *f = fopen(b->conf, "w");
	if (f == NULL || b->port < 0) {
		if (f != NULL)
			fclose(f);
		broker_destroy(b);
		return NULL;
	}
	/* user root: a root-started broker otherwise drops to the mosquitto
	 * user and cannot write into our 0700 temp dir */
	fprintf(f,
	    "listener %d 127.0.0.1\nallow_anonymous true\nuser root\n"
	    "max_queued_messages 0\nmax_inflight_messages 0\n",
	    b->port);
	if (opts != NULL && opts->tls) {
		fprintf(f,
		    "cafile %s/ca.pem\ncertfile %s/server.pem\n"
		    "keyfile %s/server.key\nrequire_certificate true\n",
		    b->dir, b->dir, b->dir);
		if (make_pki(b->dir) != 0) {
			fclose(f);
			broker_destroy(b);
			return NULL;
		}
	}
	if (opts != NULL && opts->persistence)
		fprintf(
		    f, "persistence true\npersistence_location %s/\n", b->dir);
	if (opts != NULL && opts->extra_conf != NULL)
		fprintf(f, "%s\n", opts->extra_conf);
	fclose(f);
	return b;
}

const char *
broker_file(const struct broker *b, const char *name, char *dst, size_t cap)
{
	snprintf(dst, cap, "%s/%s", b->dir, name);
	return dst;
}

int
broker_start(struct broker *b)
{
	if (b->pid > 0)
		return 0;
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		/* the event loop blocks SIGTERM for its signalfd: unblocked,
		 * or broker_stop could not stop the broker */
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		int fd = open(b->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
			close(fd);
		}
		execl(
		    MOSQUITTO_BIN, "mosquitto", "-c", b->conf, (char *) NULL);
		_exit(127);
	}
	b->pid = pid;
	int64_t deadline = loop_mono_ms() + 5000;
	while (loop_mono_ms() < deadline) {
		int status;
		if (waitpid(pid, &status, WNOHANG) == pid) {
			b->pid = 0;
			fprintf(stderr, "mosquitto exited early; see %s\n",
			    b->log);
			return -1;
		}
		if (port_accepts(b->port))
			return 0;
		struct timespec ts = { 0, 10 * 1000000L };
		nanosleep(&ts, NULL);
	}
	broker_stop(b);
	return -1;
}

void
broker_stop(struct broker *b)
{
	if (b->pid <= 0)
		return;
	kill(b->pid, SIGTERM);
	int status;
	while (waitpid(b->pid, &status, 0) < 0 && errno == EINTR)
		;
	b->pid = 0;
}

void
broker_signal(struct broker *b, int sig)
{
	if (b->pid <= 0)
		return;
	kill(b->pid, sig);
	if (sig != SIGKILL)
		return;
	int status;
	while (waitpid(b->pid, &status, 0) < 0 && errno == EINTR)
		;
	b->pid = 0;
}

bool
broker_running(const struct broker *b)
{
	return b->pid > 0;
}

int
broker_port(const struct broker *b)
{
	return b->port;
}

void
broker_destroy(struct broker *b)
{
	if (b == NULL)
		return;
	broker_stop(b);
	if (getenv("C2M_KEEP_BROKER_DIR") == NULL) {
		unlink(b->conf);
		unlink(b->log);
		unlink(b->db);
		char path[160];
		for (size_t i = 0;
		     i < sizeof(pki_files) / sizeof(pki_files[0]); i++)
			unlink(
			    broker_file(b, pki_files[i], path, sizeof(path)));
		rmdir(b->dir);
	} else {
		fprintf(stderr, "broker dir kept: %s\n", b->dir);
	}
	free(b);
}
