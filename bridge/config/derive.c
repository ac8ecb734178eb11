/* Derivation rules: what is computed from other options once every source
 * is applied, per ComfyUI server. The instance comes from INSTANCE=, from
 * --instance (one server only) or from the ComfyUI host; the ComfyUI
 * client id from the instance, the MQTT client id from the instance and
 * the host name; credentials in URLs move to their options. Two servers
 * whose instances would share a topic level, a Home Assistant device or a
 * broker session are refused. */
#include "loader.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "discovery.h"
#include "hash.h"
#include "topic.h"

/* MQTT 3.1.1 servers need only accept client ids of 1..23 bytes. */
#define MQTT311_CLIENT_ID_MAX 23
#define CLIENT_ID_MAX         128

static bool
header_named(const struct config_server *s, const char *name)
{
	size_t n = strlen(name);

	for (int i = 0; i < s->n_headers; i++) {
		if (strncasecmp(s->headers[i], name, n) == 0
		    && s->headers[i][n] == ':')
			return true;
	}
	return false;
}

/* Each server gets its own copy of the --comfyui-header list, to which its
 * URL's credentials may add one. */
static int
copy_headers(struct loader *ld, struct config_server *s)
{
	const struct config *c = ld->c;

	for (int i = 0; i < c->n_comfyui_headers; i++) {
		if (!(s->headers[i] = strdup(c->comfyui_header[i])))
			return out_of_memory(ld);
		s->n_headers = i + 1;
	}
	return CONFIG_OK;
}

static void
base64(const unsigned char *in, size_t len, char *out)
{
	static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnop"
	                          "qrstuvwxyz0123456789+/";
	size_t i;

	for (i = 0; i + 2 < len; i += 3) {
		*out++ = tbl[in[i] >> 2];
		*out++ = tbl[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
		*out++ = tbl[((in[i + 1] & 15) << 2) | (in[i + 2] >> 6)];
		*out++ = tbl[in[i + 2] & 63];
	}
	if (i < len) {
		*out++ = tbl[in[i] >> 2];
		if (i + 1 < len) {
			*out++ = tbl[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
			*out++ = tbl[(in[i + 1] & 15) << 2];
		} else {
			*out++ = tbl[(in[i] & 3) << 4];
			*out++ = '=';
		}
		*out++ = '=';
	}
	*out = '\0';
}

/* Credentials in the ComfyUI URL become an HTTP Basic header, because the
 * ComfyUI connections only send headers. */
static int
comfy_credentials(struct loader *ld, struct config_server *s)
{
	int idx = option_index("comfyui");
	char plain[256], *header;
	size_t plain_len;

	if (!s->comfy.user[0] && !s->comfy.pass[0])
		return CONFIG_OK;
	if (header_named(s, "Authorization")) {
		loader_warn(ld,
		    "ignoring the credentials in --comfyui: an "
		    "Authorization header is given");
		goto done;
	}
	if (s->n_headers >= CONFIG_MAX_HEADERS)
		return bad_set(ld, idx,
		    "no room for the URL credentials' header (at most "
		    "%d headers)",
		    CONFIG_MAX_HEADERS);
	plain_len = (size_t) snprintf(
	    plain, sizeof plain, "%s:%s", s->comfy.user, s->comfy.pass);
	header
	    = malloc(sizeof "Authorization: Basic " + plain_len * 4 / 3 + 4);
	if (!header) {
		explicit_bzero(plain, sizeof plain);
		return out_of_memory(ld);
	}
	strcpy(header, "Authorization: Basic ");
	base64(
	    (const unsigned char *) plain, plain_len, header + strlen(header));
	explicit_bzero(plain, sizeof plain);
	s->headers[s->n_headers++] = header;
	loader_warn(ld,
	    "credentials in --comfyui are sent as HTTP Basic auth; "
	    "prefer --comfyui-header in the environment or config file");
done:
	explicit_bzero(s->comfy.user, sizeof s->comfy.user);
	explicit_bzero(s->comfy.pass, sizeof s->comfy.pass);
	return CONFIG_OK;
}

static int
mqtt_credentials(struct loader *ld)
{
	struct config *c = ld->c;

	if (c->broker.user[0] && !c->mqtt_username) {
		c->mqtt_username = strdup(c->broker.user);
		if (!c->mqtt_username)
			return out_of_memory(ld);
	}
	if (c->broker.pass[0]) {
		loader_warn(ld,
		    "the --mqtt URL holds a password: prefer "
		    "--mqtt-password-file or COMFY2MQTT_MQTT_PASSWORD");
		if (!c->mqtt_password) {
			c->mqtt_password = strdup(c->broker.pass);
			if (!c->mqtt_password)
				return out_of_memory(ld);
		}
	}
	return CONFIG_OK;
}

static int
check_tls_pair(struct loader *ld)
{
	int cert = option_index("tls-cert"), key = option_index("tls-key");

	if (ld->c->tls_cert && !ld->c->tls_key)
		return bad_set(ld, cert, "needs --tls-key as well");
	if (ld->c->tls_key && !ld->c->tls_cert)
		return bad_set(ld, key, "needs --tls-cert as well");
	return CONFIG_OK;
}

/* --instance, --client-id and --mqtt-client-id name one server: with
 * several, each is named by its INSTANCE= and derives its ids. */
static int
check_one_server_options(struct loader *ld)
{
	static const char *const single[]
	    = { "instance", "client-id", "mqtt-client-id" };
	const struct config *c = ld->c;
	const char *given[] = { c->instance, c->client_id, c->mqtt_client_id };

	if (c->n_servers == 0)
		return bad_set(ld, option_index("comfyui"),
		    "no ComfyUI server is left; give at least one");
	for (size_t i = 0; i < 3 && c->n_servers > 1; i++) {
		if (given[i])
			return bad_set(ld, option_index(single[i]),
			    "names one server, and %d are given; name each "
			    "with --comfyui INSTANCE=URL and leave --%s out",
			    c->n_servers, single[i]);
	}
	if (c->n_servers == 1 && c->server[0].name && c->instance)
		return bad_set(ld, option_index("instance"),
		    "is given twice, also as INSTANCE= in --comfyui; give "
		    "one");
	return CONFIG_OK;
}

static int
derive_instance(struct loader *ld, struct config_server *s)
{
	struct config *c = ld->c;
	char clean[TOPIC_ID_MAX + 16], shown[48];
	const char *given = s->name ? s->name : c->instance;
	const char *raw = given ? given : s->comfy.host;

	topic_sanitize(clean, sizeof clean, raw, strlen(raw));
	if (given && strcmp(clean, given) != 0)
		loader_warn(ld, "instance \"%s\" is used as \"%s\" in topics",
		    shown_value(shown, sizeof shown, given), clean);
	if (set_string(&s->instance, clean))
		return out_of_memory(ld);
	return CONFIG_OK;
}

/* The ComfyUI clientId goes into a URL query: unreserved characters only. */
static int
derive_client_id(struct loader *ld, struct config_server *s)
{
	struct config *c = ld->c;
	int idx = option_index("client-id");
	char buf[CLIENT_ID_MAX + 32];

	if (!c->client_id) {
		snprintf(buf, sizeof buf, "comfy2mqtt-%s", s->instance);
		return set_string(&s->client_id, buf) ? out_of_memory(ld)
		                                      : CONFIG_OK;
	}
	if (strlen(c->client_id) > CLIENT_ID_MAX)
		return bad_set(ld, idx, "longer than %d bytes", CLIENT_ID_MAX);
	for (const char *p = c->client_id; *p; p++) {
		if (!isalnum((unsigned char) *p) && !strchr("-._~:", *p))
			return bad_set(ld, idx,
			    "may hold only letters, digits and -._~:");
	}
	return set_string(&s->client_id, c->client_id) ? out_of_memory(ld)
	                                               : CONFIG_OK;
}

/* A given MQTT client id: MQTT strings hold no control characters, and
 * MQTT 3.1.1 servers need only accept 23 bytes. */
static int
check_mqtt_client_id(struct loader *ld)
{
	const char *id = ld->c->mqtt_client_id;
	int idx = option_index("mqtt-client-id");
	size_t len = strlen(id);

	for (const char *p = id; *p; p++) {
		if ((unsigned char) *p < 0x20 || *p == 0x7f)
			return bad_set(ld, idx, "holds a control character");
	}
	if (ld->c->mqtt_protocol == MQTT_PROTO_311
	    && len > MQTT311_CLIENT_ID_MAX)
		return bad_set(ld, idx,
		    "%zu bytes is longer than the %d that MQTT 3.1.1 brokers "
		    "must accept",
		    len, MQTT311_CLIENT_ID_MAX);
	if (len > 65535)
		return bad_set(ld, idx, "too long");
	return CONFIG_OK;
}

/* "comfy2mqtt-<instance, 5 chars>-<6 hex>": at most 23 bytes of
 * [A-Za-z0-9_-], which every MQTT 3.1.1 broker accepts; the hash of host
 * and whole instance keeps two bridges from taking each other's session. */
static int
derive_mqtt_client_id(struct loader *ld, struct config_server *s)
{
	struct config *c = ld->c;
	char host[256] = "", id[32], part[6];
	size_t n = 0;
	uint32_t h;
	int rc;

	if (c->mqtt_client_id) {
		rc = check_mqtt_client_id(ld);
		if (!rc && set_string(&s->mqtt_client_id, c->mqtt_client_id))
			rc = out_of_memory(ld);
		return rc;
	}
	if (gethostname(host, sizeof host - 1) != 0)
		host[0] = '\0';
	h = hash32(HASH32_INIT, host, strlen(host));
	h = hash32(h, "", 1);
	h = hash32(h, s->instance, strlen(s->instance));
	for (const char *p = s->instance; *p && n < sizeof part - 1; p++) {
		unsigned char ch = (unsigned char) *p;
		part[n++] = (isalnum(ch) || ch == '_' || ch == '-') ? (char) ch
		                                                    : '-';
	}
	part[n] = '\0';
	snprintf(id, sizeof id, "comfy2mqtt-%s-%06x", part,
	    (unsigned) ((h ^ (h >> 24)) & 0xffffffu));
	return set_string(&s->mqtt_client_id, id) ? out_of_memory(ld)
	                                          : CONFIG_OK;
}

/* What two instances must never share, in the order the user sees them:
 * the topic level, the Home Assistant device, the broker session. */
static const char *
shared_identity(const struct config *c, const struct config_server *a,
    const struct config_server *b, char *what, size_t cap)
{
	char ida[TOPIC_ID_MAX + 300], idb[TOPIC_ID_MAX + 300];

	if (strcmp(a->instance, b->instance) == 0) {
		snprintf(
		    what, cap, "the same topic level \"%s\"", a->instance);
		return what;
	}
	if (discovery_device_id(c->prefix, a->instance, ida, sizeof ida) > 0
	    && discovery_device_id(c->prefix, b->instance, idb, sizeof idb) > 0
	    && strcmp(ida, idb) == 0) {
		snprintf(what, cap,
		    "the same Home Assistant device id \"%.64s\"", ida);
		return what;
	}
	if (strcmp(a->mqtt_client_id, b->mqtt_client_id) == 0) {
		snprintf(what, cap, "the same MQTT client id \"%s\"",
		    a->mqtt_client_id);
		return what;
	}
	return NULL;
}

/* How the user named server s: its INSTANCE=, or its host. */
static const char *
given_name(const struct config *c, const struct config_server *s, char *dst,
    unsigned cap)
{
	const char *raw = s->name ? s->name : c->instance;
	return shown_value(dst, cap, raw ? raw : s->comfy.host);
}

static int
check_collisions(struct loader *ld)
{
	const struct config *c = ld->c;
	char what[160], na[48], nb[48];

	for (int i = 0; i < c->n_servers; i++) {
		for (int j = i + 1; j < c->n_servers; j++) {
			const struct config_server *a = &c->server[i];
			const struct config_server *b = &c->server[j];
			if (!shared_identity(c, a, b, what, sizeof what))
				continue;
			return bad_set(ld, option_index("comfyui"),
			    "servers %d (\"%s\") and %d (\"%s\") would have "
			    "%s; "
			    "name them apart with INSTANCE= (letters and "
			    "digits; '.', ':' and '_' are alike for Home "
			    "Assistant)",
			    i + 1, given_name(c, a, na, sizeof na), j + 1,
			    given_name(c, b, nb, sizeof nb), what);
		}
	}
	return CONFIG_OK;
}

static int
derive_server(struct loader *ld, struct config_server *s)
{
	int rc = copy_headers(ld, s);

	if (!rc)
		rc = comfy_credentials(ld, s);
	if (!rc)
		rc = derive_instance(ld, s);
	if (!rc)
		rc = derive_client_id(ld, s);
	if (!rc)
		rc = derive_mqtt_client_id(ld, s);
	return rc;
}

int
config_derive(struct loader *ld)
{
	int rc;

	rc = mqtt_credentials(ld);
	if (!rc)
		rc = check_tls_pair(ld);
	if (!rc)
		rc = check_one_server_options(ld);
	for (int i = 0; i < ld->c->n_servers && !rc; i++)
		rc = derive_server(ld, &ld->c->server[i]);
	if (!rc)
		rc = check_collisions(ld);
	return rc;
}
