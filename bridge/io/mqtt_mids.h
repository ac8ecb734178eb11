/* io-internal: the messages handed to libmosquitto and not yet complete,
 * by message id (1..MID_SPACE-1). The table is paged: a page of MIDS_PAGE
 * ids is allocated when an id in it is handed over and freed when none in
 * it is in flight, so its memory follows the in-flight window (at most
 * cfg.window messages), not the 16-bit id space, however long the link
 * runs. Used by mqtt_link.c and mqtt_poison.c only. */
#ifndef C2M_MQTT_MIDS_H
#define C2M_MQTT_MIDS_H

#include <stdint.h>

#define MID_SPACE 65536
#define MIDS_PAGE 256
enum mid_kind { MID_FREE = 0, MID_QOS0 = 1, MID_QOS1 = 2 };

struct mid_info {
	uint8_t state; /* enum mid_kind */
	uint8_t cls; /* the msg_class of the handed-over message */
	uint8_t kind; /* its topic kind (mqtt_guard_kind) */
	uint32_t size; /* its packet's bytes */
	uint32_t sig; /* a hash of its payload's first bytes */
};

struct mid_page;

struct mids {
	struct mid_page *page[MID_SPACE / MIDS_PAGE];
};

/* The entry of mid, or NULL when it holds nothing (MID_FREE, or mid out
 * of range). */
struct mid_info *mids_find(const struct mids *t, int mid);
/* The entry of mid, for a message handed over under it: its page is
 * allocated if needed. NULL when mid is out of range or memory ran out.
 * The caller sets state to MID_QOS0 or MID_QOS1. */
struct mid_info *mids_claim(struct mids *t, int mid);
/* mid holds nothing any more; its page goes when it was the last. */
void mids_release(struct mids *t, int mid);
/* The first mid after mid (ascending, no wrap) that holds something, or
 * 0. mids_release() of the mid returned is allowed before the next call. */
int mids_next(const struct mids *t, int mid);
/* Frees every page. */
void mids_clear(struct mids *t);

#endif
