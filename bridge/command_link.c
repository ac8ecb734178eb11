/* See command_link.h. */
#include "command_link.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "command.h"
#include "err.h"
#include "http_client.h"
#include "log.h"
#include "pubkind.h"
#include "topic.h"

/* ComfyUI's answers are small; a 400 with node_errors stays far below */
#define POST_MAX_BODY (4u * 1024 * 1024)

struct command_link;

/* The ud of one POST: which slot its answer belongs to. */
struct post_ud {
	struct command_link *cl;
	unsigned slot;
};

struct command_link {
	struct mqtt_link *mqtt;
	struct http_client *http;
	struct command *cmd;
	struct pub_env env;
	char filter[TOPIC_MAX];
	char default_topic[TOPIC_MAX];
	struct post_ud uds[COMMAND_MAX_PENDING];
	command_accepted_fn *accepted; /* NULL: nobody to tell */
	void *accepted_ud;
};

static void
post_done(void *ud, int status, const char *body, size_t len)
{
	struct post_ud *p = ud;
	log_debug("command", "ComfyUI answered %d (%zu bytes)", status, len);
	/* after command_stop the core ignores it: its slot was answered
	 * bridge_stopping and freed, and no new command takes a slot */
	command_on_http(
	    p->cl->cmd, p->slot, status, body, len, loop_mono_ms());
}

static int
do_post(
    void *ud, unsigned slot, const char *path, const char *body, size_t len)
{
	struct command_link *cl = ud;
	log_debug("command", "POST %s (%zu bytes)", path, len);
	return http_client_post(cl->http, path, body, len,
	    COMMAND_POST_TIMEOUT_MS, post_done, &cl->uds[slot]);
}

static void
do_accepted(void *ud, const char *prompt_id, size_t len, int64_t number)
{
	struct command_link *cl = ud;
	if (cl->accepted != NULL)
		cl->accepted(cl->accepted_ud, prompt_id, len, number);
}

static void
do_answer(void *ud, const char *topic, const char *payload, size_t len,
    const void *corr, size_t corr_len)
{
	struct command_link *cl = ud;
	struct pub_req r = {
		.kind = TK_COMMAND_RESPONSE,
		.topic = topic ? topic : cl->default_topic,
		.payload = payload,
		.len = len,
	};
	struct pub_scratch s;
	struct out_msg m;
	pub_build(&cl->env, &r, &s, &m);
	m.props.correlation = corr;
	m.props.correlation_len = corr_len;
	log_debug("command", "answer on %s (%zu bytes)", r.topic, len);
	mqtt_link_publish(cl->mqtt, &m);
}

int
command_link_create(struct loop *l, struct mqtt_link *m,
    const struct config *c, int server, const char *comfyui_public,
    struct command_link **out)
{
	*out = NULL;
	const struct config_server *s = &c->server[server];
	struct command_link *cl = calloc(1, sizeof(*cl));
	if (cl == NULL)
		return BR_ENOMEM;
	cl->mqtt = m;
	cl->env = (struct pub_env) { s->instance, (uint32_t) c->state_ttl,
		(uint32_t) c->health_interval };
	for (unsigned i = 0; i < COMMAND_MAX_PENDING; i++)
		cl->uds[i] = (struct post_ud) { cl, i };
	int rc = topic_join(cl->filter, sizeof(cl->filter), c->prefix,
	    s->instance, "command/+");
	if (rc >= 0)
		rc = pub_topic(cl->default_topic, sizeof(cl->default_topic),
		    c->prefix, s->instance, TK_COMMAND_RESPONSE, NULL, NULL);
	struct tls_opts tls
	    = { c->tls_ca, c->tls_cert, c->tls_key, c->tls_insecure };
	cl->http = rc >= 0 ? http_client_create(l, &s->comfy, s->headers,
	               s->n_headers, &tls, POST_MAX_BODY)
	                   : NULL;
	struct command_cfg cc = { c->prefix, s->instance, s->client_id,
		comfyui_public, c->command_max_bytes, c->ha_prefix };
	struct command_io io = { do_post, do_answer, do_accepted, cl };
	rc = cl->http != NULL ? command_create(&cc, &io, &cl->cmd) : BR_ENOMEM;
	if (rc != 0) {
		log_error(
		    "command", "cannot start commands: %s", br_strerror(rc));
		command_link_destroy(cl);
		return rc;
	}
	log_info("command",
	    "commands on %s (answers on %s unless the "
	    "request names a response topic)",
	    cl->filter, cl->default_topic);
	*out = cl;
	return 0;
}

void
command_link_destroy(struct command_link *cl)
{
	if (cl == NULL)
		return;
	/* cancels the POSTs on the wire: their callbacks never come */
	if (cl->http != NULL)
		http_client_destroy(cl->http);
	command_destroy(cl->cmd);
	free(cl);
}

void
command_link_stop(struct command_link *cl)
{
	command_stop(cl->cmd);
}

void
command_link_on_accepted(
    struct command_link *cl, command_accepted_fn *fn, void *ud)
{
	cl->accepted = fn;
	cl->accepted_ud = ud;
}

const char *
command_link_filter(const struct command_link *cl)
{
	return cl->filter;
}

void
command_link_on_message(void *ud, const char *topic, const void *payload,
    size_t len, const struct mqtt_rx_meta *meta)
{
	struct command_link *cl = ud;
	struct command_msg m = {
		.topic = topic,
		.payload = payload,
		.len = len,
		.response_topic = meta->response_topic,
		.correlation = meta->correlation,
		.correlation_len = meta->correlation_len,
		.connection = meta->connection,
		.connected = mqtt_link_connected(cl->mqtt),
		.retained = meta->retain,
		.resent = meta->resent,
	};
	command_on_message(cl->cmd, &m, loop_mono_ms());
}

void
command_link_write_health(void *ud, void *w)
{
	command_write_health(((struct command_link *) ud)->cmd, w);
}
