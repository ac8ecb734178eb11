/* Commands over MQTT on the loop, the broker link and an HTTP client of
 * their own: the feature of bridge/command/command.h wired to the world.
 * The own HTTP client keeps a large /prompt upload from delaying the
 * upstream's /queue and /history polls. Loop thread only; one per
 * instance (--commands). */
#ifndef C2M_COMMAND_LINK_H
#define C2M_COMMAND_LINK_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "loop.h"
#include "mqtt_link.h"

struct command_link;

/* Creates the commands of server number server of c on link m (both
 * borrowed, must outlive it); comfyui_public is its ComfyUI base URL
 * without credentials (copied). Returns 0 or an enum br_err (logged). */
int command_link_create(struct loop *l, struct mqtt_link *m,
    const struct config *c, int server, const char *comfyui_public,
    struct command_link **out);
void command_link_destroy(struct command_link *cl);
/* At shutdown: every pending command is answered bridge_stopping, new
 * ones are refused, and a POST's late answer is ignored. */
void command_link_stop(struct command_link *cl);

/* A prompt command ComfyUI took: its prompt id (len bytes, borrowed) and
 * queue number (upstream_on_submitted takes them to the engine). */
typedef void command_accepted_fn(
    void *ud, const char *prompt_id, size_t len, int64_t number);
/* Who is told of each accepted prompt (before its answer goes out). */
void command_link_on_accepted(
    struct command_link *cl, command_accepted_fn *fn, void *ud);

/* <p>/<i>/command/+ (borrowed from cl): the owner subscribes to it with
 * command_link_on_message as the callback. */
const char *command_link_filter(const struct command_link *cl);
void command_link_on_message(void *ud, const char *topic, const void *payload,
    size_t len, const struct mqtt_rx_meta *meta);
/* Writes the "commands" member of bridge/health (w: a struct jsonw *);
 * ud is the command_link. */
void command_link_write_health(void *ud, void *w);

#endif
