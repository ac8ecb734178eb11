/* Derivation rules: what is computed from other options once every source
 * is applied. The instance comes from the ComfyUI host, the ComfyUI client
 * id from the instance, the MQTT client id from the instance and the host
 * name; credentials in URLs move to their options. */
#include "loader.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "topic.h"
#include "hash.h"

/* MQTT 3.1.1 servers need only accept client ids of 1..23 bytes. */
#define MQTT311_CLIENT_ID_MAX 23
#define CLIENT_ID_MAX         128

static bool
header_named(const struct config *c, const char *name)
{
	size_t n = strlen(name);

	for (int i = 0; i < c->n_comfyui_headers; i++) {
		if (strncasecmp(c->comfyui_header[i], name, n) == 0
		    && c->comfyui_header[i][n] == ':')
			return true;
	}
	return false;
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
comfy_credentials(struct loader *ld)
{
	struct config *c = ld->c;
	int idx = option_index("comfyui");
	char plain[256], *header;
	size_t plain_len;

	if (!c->comfy.user[0] && !c->comfy.pass[0])
		return CONFIG_OK;
	if (header_named(c, "Authorization")) {
		loader_warn(ld,
		    "ignoring the credentials in --comfyui: an "
		    "Authorization header is given");
		goto done;
	}
	if (c->n_comfyui_headers >= CONFIG_MAX_HEADERS)
		return bad_set(ld, idx,
		    "no room for the URL credentials' header (at most "
		    "%d headers)",
		    CONFIG_MAX_HEADERS);
	plain_len = (size_t) snprintf(
	    plain, sizeof plain, "%s:%s", c->comfy.user, c->comfy.pass);
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
	c->comfyui_header[c->n_comfyui_headers++] = header;
	loader_warn(ld,
	    "credentials in --comfyui are sent as HTTP Basic auth; "
	    "prefer --comfyui-header in the environment or config file");
done:
	explicit_bzero(c->comfy.user, sizeof c->comfy.user);
	explicit_bzero(c->comfy.pass, sizeof c->comfy.pass);
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

static int
derive_instance(struct loader *ld)
{
	struct config *c = ld->c;
	char clean[TOPIC_ID_MAX + 16], shown[48];
	const char *raw = c->instance ? c->instance : c->comfy.host;

	topic_sanitize(clean, sizeof clean, raw, strlen(raw));
	if (c->instance && strcmp(clean, c->instance) != 0)
		loader_warn(ld,
		    "--instance \"%s\" is used as \"%s\" in topics",
		    shown_value(shown, sizeof shown, c->instance), clean);
	if (set_string(&c->instance, clean))
		return out_of_memory(ld);
	return CONFIG_OK;
}

/* The ComfyUI clientId goes into a URL query: unreserved characters only. */
static int
derive_client_id(struct loader *ld)
{
	struct config *c = ld->c;
	int idx = option_index("client-id");
	char buf[CLIENT_ID_MAX + 32];

	if (!c->client_id) {
		snprintf(buf, sizeof buf, "comfy2mqtt-%s", c->instance);
		return set_string(&c->client_id, buf) ? out_of_memory(ld)
		                                      : CONFIG_OK;
	}
	if (strlen(c->client_id) > CLIENT_ID_MAX)
		return bad_set(ld, idx, "longer than %d bytes", CLIENT_ID_MAX);
	for (const char *p = c->client_id; *p; p++) {
		if (!isalnum((unsigned char) *p) && !strchr("-._~:", *p))
			return bad_set(ld, idx,
			    "may hold only letters, digits and -._~:");
	}
	return CONFIG_OK;
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
derive_mqtt_client_id(struct loader *ld)
{
	struct config *c = ld->c;
	char host[256] = "", id[32], part[6];
	size_t n = 0;
	uint32_t h;

	if (c->mqtt_client_id)
		return check_mqtt_client_id(ld);
	if (gethostname(host, sizeof host - 1) != 0)
		host[0] = '\0';
	h = hash32(HASH32_INIT, host, strlen(host));
	h = hash32(h, "", 1);
	h = hash32(h, c->instance, strlen(c->instance));
	for (const char *p = c->instance; *p && n < sizeof part - 1; p++) {
		unsigned char ch = (unsigned char) *p;
		part[n++] = (isalnum(ch) || ch == '_' || ch == '-') ? (char) ch
		                                                    : '-';
	}
	part[n] = '\0';
	snprintf(id, sizeof id, "comfy2mqtt-%s-%06x", part,
	    (unsigned) ((h ^ (h >> 24)) & 0xffffffu));
	return set_string(&c->mqtt_client_id, id) ? out_of_memory(ld)
	                                          : CONFIG_OK;
}

int
config_derive(struct loader *ld)
{
	int rc;

	rc = comfy_credentials(ld);
	if (!rc)
		rc = mqtt_credentials(ld);
	if (!rc)
		rc = check_tls_pair(ld);
	if (!rc)
		rc = derive_instance(ld);
	if (!rc)
		rc = derive_client_id(ld);
	if (!rc)
		rc = derive_mqtt_client_id(ld);
	return rc;
}
