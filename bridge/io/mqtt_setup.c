/* See mqtt_setup.h. */
#include "mqtt_setup.h"

#include <errno.h>
#include <fcntl.h>
#include <mqtt_protocol.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "err.h"
#include "log.h"

/* a session (subscriptions, QoS 1 messages to us) outlives an outage of
 * up to a day */
#define SESSION_EXPIRY_S  86400u
#define DEFAULT_KEEPALIVE 30

static int
setup_will(struct mosquitto *mosq, const struct mqtt_link_cfg *c)
{
	if (c->will_topic == NULL)
		return MOSQ_ERR_SUCCESS;
	const char *payload = c->will_payload != NULL ? c->will_payload : "";
	int len = (int) strlen(payload);
	if (c->protocol != 5)
		return mosquitto_will_set(
		    mosq, c->will_topic, len, payload, 1, true);
	mosquitto_property *props = NULL;
	int rc = mosquitto_property_add_string(
	    &props, MQTT_PROP_CONTENT_TYPE, "text/plain");
	if (rc == MOSQ_ERR_SUCCESS)
		rc = mosquitto_property_add_byte(
		    &props, MQTT_PROP_PAYLOAD_FORMAT_INDICATOR, 1);
	if (rc == MOSQ_ERR_SUCCESS)
		rc = mosquitto_will_set_v5(
		    mosq, c->will_topic, len, payload, 1, true, props);
	/* on success the library owns props */
	if (rc != MOSQ_ERR_SUCCESS)
		mosquitto_property_free_all(&props);
	return rc;
}

/* libmosquitto 2.0.11's mosquitto_tls_set() refuses a client certificate
 * without a cafile or capath (MOSQ_ERR_INVAL, nothing logged), so without
 * --tls-ca the system trust store is passed as capath: Debian 12's OpenSSL
 * default directory (/usr/lib/ssl/certs) is a link to it and it holds the
 * c_rehash links OpenSSL looks CAs up by. MOSQ_OPT_TLS_USE_OS_CERTS still
 * loads OpenSSL's defaults (ca-certificates.crt, SSL_CERT_FILE/DIR) too,
 * so the trust is the same as without a client certificate. */
#define SYSTEM_CA_DIR "/etc/ssl/certs"

/* mosquitto_tls_set() opens each file and says only MOSQ_ERR_INVAL when
 * one does not open; checking first lets the log name option and file. */
static int
check_readable(const char *path, const char *option)
{
	if (path == NULL)
		return BR_OK;
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		log_error("mqtt", "%s %s: cannot read it: %s", option, path,
		    strerror(errno));
		return BR_EIO;
	}
	fclose(f);
	return BR_OK;
}

int
mqtt_setup_br_err(int rc)
{
	switch (rc) {
	case MOSQ_ERR_SUCCESS:
		return BR_OK;
	case MOSQ_ERR_NOMEM:
		return BR_ENOMEM;
	case MOSQ_ERR_ERRNO:
		return BR_EIO;
	default:
		return BR_EINVAL;
	}
}

/* Returns a br_err and logs the cause of a failure. */
static int
setup_tls(struct mosquitto *mosq, const struct mqtt_link_cfg *c)
{
	const struct tls_opts *t = &c->tls_opts;
	if (!c->tls)
		return BR_OK;
	int err = check_readable(t->ca, "--tls-ca");
	if (err == BR_OK)
		err = check_readable(t->cert, "--tls-cert");
	if (err == BR_OK)
		err = check_readable(t->key, "--tls-key");
	if (err != BR_OK)
		return err;
	int rc = MOSQ_ERR_SUCCESS;
	if (t->ca == NULL)
		rc = mosquitto_int_option(mosq, MOSQ_OPT_TLS_USE_OS_CERTS, 1);
	/* 2.0.11 rejects every reconnect (MOSQ_ERR_INVAL, "SSL_CTX_WITH_
	 * DEFAULTS used without specifying cafile") once its SSL_CTX exists
	 * and only the OS certificates are used; without the defaults flag it
	 * builds the context once, fully, and reuses it (net__init_ssl_ctx) */
	if (rc == MOSQ_ERR_SUCCESS && t->ca == NULL)
		rc = mosquitto_int_option(
		    mosq, MOSQ_OPT_SSL_CTX_WITH_DEFAULTS, 0);
	if (rc == MOSQ_ERR_SUCCESS && (t->ca != NULL || t->cert != NULL))
		rc = mosquitto_tls_set(mosq, t->ca,
		    t->ca == NULL ? SYSTEM_CA_DIR : NULL, t->cert, t->key,
		    NULL);
	if (rc == MOSQ_ERR_SUCCESS)
		rc = mosquitto_tls_opts_set(
		    mosq, t->insecure ? 0 : 1, NULL, NULL);
	if (rc == MOSQ_ERR_SUCCESS)
		rc = mosquitto_tls_insecure_set(mosq, t->insecure);
	if (rc != MOSQ_ERR_SUCCESS)
		log_error("mqtt",
		    "cannot set up TLS to the broker (--tls-ca %s, "
		    "--tls-cert %s, --tls-key %s): %s",
		    t->ca ? t->ca : "not set", t->cert ? t->cert : "not set",
		    t->key ? t->key : "not set", mosquitto_strerror(rc));
	return mqtt_setup_br_err(rc);
}

/* The session expiry interval must be on every CONNECT, and 2.0.11 has no
 * asynchronous connect taking properties. mosquitto_connect_bind_v5()
 * stores its properties for all later (re)connects *before* validating the
 * port, and mosquitto_connect_bind_async() keeps them; an invalid port
 * makes the blocking call store them and return without connecting. The
 * io test checks the effect (session present after a broker restart). */
int
mqtt_setup_connect_props(struct mosquitto *mosq, const struct mqtt_link_cfg *c)
{
	mosquitto_property *props = NULL;
	int rc = mosquitto_property_add_int32(
	    &props, MQTT_PROP_SESSION_EXPIRY_INTERVAL, SESSION_EXPIRY_S);
	/* the broker drops what is larger instead of sending it */
	if (rc == MOSQ_ERR_SUCCESS && c->rx_max_packet > 0)
		rc = mosquitto_property_add_int32(
		    &props, MQTT_PROP_MAXIMUM_PACKET_SIZE, c->rx_max_packet);
	if (rc != MOSQ_ERR_SUCCESS) {
		mosquitto_property_free_all(&props);
		return rc;
	}
	rc = mosquitto_connect_bind_v5(
	    mosq, c->host, -1, c->keepalive_s, NULL, props);
	mosquitto_property_free_all(&props);
	return rc == MOSQ_ERR_INVAL ? MOSQ_ERR_SUCCESS : rc;
}

/* mosquitto_new() without its wake-up socket pair
 * (bridge/README.md#mosquitto-socket-pair). The pair is made there and
 * nowhere else, so that call runs with the descriptor limit at the lowest
 * free descriptor: socketpair() fails with EMFILE (libmosquitto goes on
 * without it), nothing else in mosquitto_new() opens a descriptor, and the
 * limit is restored at once. The loop's thread is the only one. */
static struct mosquitto *
new_without_pair(const char *id, bool clean, void *obj)
{
	struct rlimit saved, lim;
	int lowest_free = open("/dev/null", O_RDONLY | O_CLOEXEC);
	bool lowered = false;
	if (lowest_free >= 0) {
		close(lowest_free);
		if (getrlimit(RLIMIT_NOFILE, &saved) == 0) {
			lim = saved;
			lim.rlim_cur = (rlim_t) lowest_free;
			lowered = setrlimit(RLIMIT_NOFILE, &lim) == 0;
		}
	}
	struct mosquitto *mosq = mosquitto_new(id, clean, obj);
	int e = errno;
	if (lowered)
		setrlimit(RLIMIT_NOFILE, &saved);
	errno = e;
	return mosq;
}

int
mqtt_setup_client(const struct mqtt_link_cfg *c, unsigned window, void *obj,
    struct mosquitto **out)
{
	bool v5 = c->protocol == 5;
	struct mosquitto *mosq = new_without_pair(c->client_id, !v5, obj);
	*out = mosq;
	if (mosq == NULL) {
		int e = errno;
		log_error("mqtt",
		    "cannot create the broker client (client id %s): %s",
		    c->client_id, strerror(e));
		return e == ENOMEM ? BR_ENOMEM : BR_EINVAL;
	}
	int rc = mosquitto_int_option(mosq, MOSQ_OPT_PROTOCOL_VERSION,
	    v5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311);
	/* small messages one after another: Nagle would hold each for the
	 * previous one's acknowledgement */
	if (rc == MOSQ_ERR_SUCCESS)
		rc = mosquitto_int_option(mosq, MOSQ_OPT_TCP_NODELAY, 1);
	/* a publish only queues its packet: the link writes a whole batch
	 * at once (mqtt_link.c) */
	if (rc == MOSQ_ERR_SUCCESS)
		rc = mosquitto_threaded_set(mosq, true);
	if (rc == MOSQ_ERR_SUCCESS)
		rc = mosquitto_max_inflight_messages_set(mosq, window);
	if (rc == MOSQ_ERR_SUCCESS && c->username != NULL)
		rc = mosquitto_username_pw_set(mosq, c->username, c->password);
	if (rc == MOSQ_ERR_SUCCESS)
		rc = setup_will(mosq, c);
	if (rc != MOSQ_ERR_SUCCESS) {
		log_error("mqtt", "cannot set up the broker client: %s",
		    mosquitto_strerror(rc));
		return mqtt_setup_br_err(rc);
	}
	return setup_tls(mosq, c);
}

static mosquitto_property *
build_props(const struct out_props *o, int *rc)
{
	mosquitto_property *p = NULL;
	*rc = MOSQ_ERR_SUCCESS;
	if (o->content_type != NULL)
		*rc = mosquitto_property_add_string(
		    &p, MQTT_PROP_CONTENT_TYPE, o->content_type);
	if (*rc == MOSQ_ERR_SUCCESS && o->utf8)
		*rc = mosquitto_property_add_byte(
		    &p, MQTT_PROP_PAYLOAD_FORMAT_INDICATOR, 1);
	if (*rc == MOSQ_ERR_SUCCESS && o->expiry_s != 0)
		*rc = mosquitto_property_add_int32(
		    &p, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, o->expiry_s);
	const char *names[] = { "instance", "type", "prompt_id" };
	const char *values[] = { o->instance, o->type, o->prompt_id };
	for (int i = 0; i < 3 && *rc == MOSQ_ERR_SUCCESS; i++)
		if (values[i] != NULL)
			*rc = mosquitto_property_add_string_pair(
			    &p, MQTT_PROP_USER_PROPERTY, names[i], values[i]);
	if (*rc == MOSQ_ERR_SUCCESS && o->correlation != NULL)
		*rc = o->correlation_len > UINT16_MAX
		    ? MOSQ_ERR_INVAL
		    : mosquitto_property_add_binary(&p,
		        MQTT_PROP_CORRELATION_DATA, o->correlation,
		        (uint16_t) o->correlation_len);
	return p;
}

static bool
prop_str_eq(bool has, const char *cached, const char *s)
{
	return s == NULL ? !has : has && strcmp(cached, s) == 0;
}

static bool
prop_str_fits(const char *s)
{
	return s == NULL || strlen(s) < MQTT_PROP_STR_MAX;
}

static void
prop_str_set(bool *has, char *dst, const char *s)
{
	*has = s != NULL;
	snprintf(dst, MQTT_PROP_STR_MAX, "%s", s != NULL ? s : "");
}

mosquitto_property *
mqtt_props_get(
    struct mqtt_prop_cache *c, const struct out_props *o, int *rc, bool *owned)
{
	*owned = false;
	*rc = MOSQ_ERR_SUCCESS;
	/* correlation data is an answer's own: never worth caching */
	if (o->correlation != NULL) {
		*owned = true;
		return build_props(o, rc);
	}
	struct mqtt_prop_entry *victim = &c->e[0];
	for (int i = 0; i < MQTT_PROP_CACHE_SIZE; i++) {
		struct mqtt_prop_entry *e = &c->e[i];
		if (e->valid && e->utf8 == o->utf8
		    && e->expiry_s == o->expiry_s
		    && prop_str_eq(e->has_type, e->type, o->type)
		    && prop_str_eq(
		        e->has_prompt_id, e->prompt_id, o->prompt_id)
		    && prop_str_eq(e->has_instance, e->instance, o->instance)
		    && prop_str_eq(e->has_content_type, e->content_type,
		        o->content_type)) {
			e->used = ++c->clock;
			return e->props;
		}
		if (!e->valid || e->used < victim->used)
			victim = e;
	}
	mosquitto_property *p = build_props(o, rc);
	if (*rc != MOSQ_ERR_SUCCESS || !prop_str_fits(o->instance)
	    || !prop_str_fits(o->type) || !prop_str_fits(o->prompt_id)
	    || !prop_str_fits(o->content_type)) {
		*owned = true;
		return p;
	}
	if (victim->valid)
		mosquitto_property_free_all(&victim->props);
	victim->valid = true;
	prop_str_set(
	    &victim->has_content_type, victim->content_type, o->content_type);
	victim->utf8 = o->utf8;
	victim->expiry_s = o->expiry_s;
	prop_str_set(&victim->has_instance, victim->instance, o->instance);
	prop_str_set(&victim->has_type, victim->type, o->type);
	prop_str_set(&victim->has_prompt_id, victim->prompt_id, o->prompt_id);
	victim->props = p;
	victim->used = ++c->clock;
	return p;
}

void
mqtt_props_clear(struct mqtt_prop_cache *c)
{
	for (int i = 0; i < MQTT_PROP_CACHE_SIZE; i++)
		if (c->e[i].valid)
			mosquitto_property_free_all(&c->e[i].props);
	memset(c, 0, sizeof(*c));
}

static bool
dup_str(const char **dst, const char *src)
{
	if (src == NULL) {
		*dst = NULL;
		return true;
	}
	*dst = strdup(src);
	return *dst != NULL;
}

void
mqtt_setup_free_cfg(struct mqtt_link_cfg *c)
{
	free((char *) c->host);
	free((char *) c->client_id);
	free((char *) c->username);
	free((char *) c->password);
	free((char *) c->will_topic);
	free((char *) c->will_payload);
	free((char *) c->tls_opts.ca);
	free((char *) c->tls_opts.cert);
	free((char *) c->tls_opts.key);
}

bool
mqtt_setup_copy_cfg(struct mqtt_link_cfg *dst, const struct mqtt_link_cfg *src)
{
	*dst = *src;
	bool ok = dup_str(&dst->host, src->host);
	ok &= dup_str(&dst->client_id, src->client_id);
	ok &= dup_str(&dst->username, src->username);
	ok &= dup_str(&dst->password, src->password);
	ok &= dup_str(&dst->will_topic, src->will_topic);
	ok &= dup_str(&dst->will_payload, src->will_payload);
	ok &= dup_str(&dst->tls_opts.ca, src->tls_opts.ca);
	ok &= dup_str(&dst->tls_opts.cert, src->tls_opts.cert);
	ok &= dup_str(&dst->tls_opts.key, src->tls_opts.key);
	if (dst->protocol != 4)
		dst->protocol = 5;
	if (dst->keepalive_s <= 0)
		dst->keepalive_s = DEFAULT_KEEPALIVE;
	return ok;
}

const char *
mqtt_rc_text(int rc)
{
	/* v5 reason codes from a broker DISCONNECT are >= 0x80; smaller
	 * values are libmosquitto's own MOSQ_ERR_* codes */
	return rc >= 0x80 ? mosquitto_reason_string(rc)
	                  : mosquitto_strerror(rc);
}

/* What a refused CONNACK code means, in the protocol's own words. */
const char *
mqtt_refusal_text(int protocol, int rc)
{
	/* MQTT 3.1.1's CONNACK return codes */
	static const char *const v311[] = {
		"accepted",
		"unacceptable protocol version (CONNACK code 1)",
		"identifier rejected (CONNACK code 2)",
		"server unavailable (CONNACK code 3)",
		"bad user name or password (CONNACK code 4)",
		"not authorized (CONNACK code 5)",
	};
	if (protocol == 5)
		return mosquitto_reason_string(rc);
	return rc > 0 && rc <= 5
	    ? v311[rc]
	    : "unknown reason (CONNACK code out of range)";
}

/* Hints for the refusals a user can fix with an option. */
const char *
mqtt_refusal_hint(int protocol, int rc)
{
	bool credentials = protocol == 5
	    ? rc == MQTT_RC_BAD_USERNAME_OR_PASSWORD
	        || rc == MQTT_RC_NOT_AUTHORIZED
	    : rc == CONNACK_REFUSED_BAD_USERNAME_PASSWORD
	        || rc == CONNACK_REFUSED_NOT_AUTHORIZED;
	return credentials ? " (check --mqtt-username / --mqtt-password-file)"
	                   : "";
}

void
mqtt_set_cork(int fd, int on)
{
	/* not TCP (a unix socket, say): the packets just leave one by one */
	(void) setsockopt(fd, IPPROTO_TCP, TCP_CORK, &on, sizeof(on));
}
