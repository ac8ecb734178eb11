/* A real mosquitto for io tests: a temp directory with its config, a free
 * 127.0.0.1 port, start/stop/restart, and readiness by polling the port. */
#ifndef C2M_HELPER_BROKER_H
#define C2M_HELPER_BROKER_H

#include <stdbool.h>
#include <stddef.h>

struct broker;

struct broker_opts {
	bool persistence; /* keep sessions across broker_stop/broker_start */
	const char *extra_conf; /* more config lines, or NULL */
	/* a TLS listener instead of plain TCP: broker_create makes a test
	 * CA, a server certificate for 127.0.0.1 and a client certificate,
	 * both signed by that CA (openssl CLI), in the broker's directory,
	 * and the broker requires a client certificate. broker_file names
	 * them: ca.pem, client.pem, client.key (also server.*, ca.key). */
	bool tls;
};

/* Creates the config on a fresh free port; does not start the broker. */
struct broker *broker_create(const struct broker_opts *opts);
/* Starts mosquitto and waits (up to 5 s) until the port accepts. 0 or -1. */
int broker_start(struct broker *b);
/* SIGTERM + waitpid (the broker saves its persistence file on the way). */
void broker_stop(struct broker *b);
/* Sends sig to the running broker (SIGSTOP / SIGCONT: it stops reading its
 * sockets, which stay open); SIGKILL is reaped, as broker_stop. */
void broker_signal(struct broker *b, int sig);
bool broker_running(const struct broker *b);
int broker_port(const struct broker *b);
/* Writes the path of file name in the broker's directory into dst and
 * returns dst. */
const char *broker_file(
    const struct broker *b, const char *name, char *dst, size_t cap);
/* Stops the broker if needed and removes the temp directory. */
void broker_destroy(struct broker *b);

/* Returns a free 127.0.0.1 TCP port (bound to 0, then released). */
int helper_free_port(void);
/* Polls until 127.0.0.1:port accepts a TCP connection; 0 or -1. */
int helper_wait_port(int port, int timeout_ms);

#endif
