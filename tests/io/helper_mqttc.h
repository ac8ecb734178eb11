/* The other side of the broker in the MQTT io tests: a plain libmosquitto
 * client on its own thread that subscribes to one filter (or only
 * publishes) and records what arrives, properties included. Readers take
 * c->mu around c->msgs and c->n, or use the accessors. */
#ifndef C2M_HELPER_MQTTC_H
#define C2M_HELPER_MQTTC_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define MQTTC_MAX 4096

struct mqttc_msg {
	char topic[64];
	char payload[64];
	bool retained;
	char content_type[64];
	int pfi; /* -1: absent */
	long expiry; /* -1: absent */
	char user[160]; /* "k=v;k=v;" */
	bool has_corr;
	char corr[16];
	int corr_len;
};

struct mqttc {
	struct mosquitto *mosq;
	const char *filter; /* NULL: publishes only */
	pthread_mutex_t mu;
	bool ready; /* connected, and subscribed when filter is set */
	int acked_mid;
	struct mqttc_msg msgs[MQTTC_MAX];
	int n;
};

/* Connects to 127.0.0.1:port with protocol 4 (3.1.1) or 5; id NULL means
 * a clean session, otherwise a persistent one. filter is borrowed. */
struct mqttc *mqttc_start(
    int port, const char *id, int protocol, const char *filter);
bool mqttc_ready(struct mqttc *c);
int mqttc_count(struct mqttc *c);
/* Publishes at QoS 1, with a Response Topic (rt) and Correlation Data
 * (corr, clen) when given (MQTT 5 only). */
int mqttc_publish(struct mqttc *c, const char *topic, const char *payload,
    const char *rt, const void *corr, uint16_t clen);
/* Round trip through the broker: once this client's own QoS 1 publish is
 * acknowledged, the broker has also processed the PUBACKs it sent before
 * (one connection is handled in order). */
bool mqttc_sync(struct mqttc *c);
void mqttc_stop(struct mqttc *c);

#endif
