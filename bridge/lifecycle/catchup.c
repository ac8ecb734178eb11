/* Restart catch-up: what ComfyUI finished after an earlier run's cursor,
 * read from history in bounded pages and published once each in finishing
 * order; see bridge/README.md#restart-catch-up */
#include <stdio.h>
#include <string.h>

#include "engine_int.h"
#include "err.h"
#include "log.h"

/* Entries per history page read after a restart: one page holds what
 * usually finished while the bridge was down, and bounds the memory of a
 * read whatever the history's length. */
#define PAGE_ITEMS 256

bool
recon_catching_up(const struct engine *e)
{
	return e->retained.old_at && !e->recon.after_done;
}

static void
request_page(struct engine *e)
{
	struct recon *r = &e->recon;
	char path[96];
	if (r->after_offset < 0)
		snprintf(
		    path, sizeof(path), "/history?max_items=%u", PAGE_ITEMS);
	else
		snprintf(path, sizeof(path),
		    "/history?max_items=%u&offset=%lld", PAGE_ITEMS,
		    (long long) r->after_offset);
	r->after_inflight = true;
	e->io.http_get(e->io.ud, EHTTP_HISTORY_LIST, path, CATCHUP_TAG);
}

void
recon_after_cursor(struct engine *e)
{
	if (!recon_catching_up(e) || e->recon.after_inflight
	    || !e->upstream_up)
		return; /* asked again when the link comes up, or at a poll */
	request_page(e);
}

/* Whether an entry (in finishing order) comes after the earlier run's
 * cursor: after its id when the list holds it, else by time. */
static bool
after_cursor(struct engine *e, const char *id, int64_t end)
{
	struct recon *r = &e->recon;
	if (r->after_passed)
		return true;
	if (strcmp(id, e->retained.old_id) == 0) {
		r->after_passed = true;
		return false;
	}
	return end > e->retained.old_at;
}

static void
publish_entry(struct engine *e, const char *id, size_t il,
    const struct json_doc *d, int entry, int64_t now)
{
	struct prompt *p = tracker_find(e->tracker, id, il);
	if (p && (p->terminal_sent || p->history_inflight))
		return;
	if (!p && recon_finished_here(e, id, il))
		return; /* a server that ignores max_items lists it again */
	if (!p) {
		bool created;
		p = tracker_get(e->tracker, id, il, &created);
		if (!p)
			return;
		p->source = SRC_HISTORY;
		p->queued_at = 0;
	}
	recon_apply_entry(e, p, d, entry, now);
}

static void
publish_page(struct engine *e, const struct json_doc *d, int64_t now)
{
	int n = json_size(d, 0), k = 1;
	for (int i = 0; i < n; i++, k = json_skip(d, k + 1)) {
		char id[PROMPT_ID_MAX + 1];
		int il = json_str_get(d, k, id, sizeof(id));
		if (il > 0 && json_is_object(d, k + 1)
		    && after_cursor(e, id, recon_entry_end(d, k + 1)))
			publish_entry(e, id, (size_t) il, d, k + 1, now);
	}
}

/* Whether the newest page reaches back to the cursor: it is the whole
 * history (shorter than a page, or longer: max_items ignored), holds the
 * cursor's id, or its oldest entry finished no later. */
static bool
newest_page_covers(const struct engine *e, const struct json_doc *d, int n)
{
	if (n != PAGE_ITEMS || json_obj_get(d, 0, e->retained.old_id) >= 0)
		return true;
	int64_t end = recon_entry_end(d, 2);
	return end > 0 && end <= e->retained.old_at;
}

static void
done(struct engine *e)
{
	e->recon.after_done = true;
}

/* A page read after a restart. The newest page first; when more finished
 * while the bridge was down than it holds, pages from the oldest entry
 * on, so the publishing stays in finishing order. */
void
recon_on_catch_up_page(
    struct engine *e, bool ok, const char *body, size_t len, int64_t now)
{
	struct recon *r = &e->recon;
	r->after_inflight = false;
	if (!ok)
		return; /* asked again at the next poll */
	struct json_doc d;
	int rc = json_parse(e->http_parser, body, len, true, &d);
	if (rc != BR_OK) {
		health_body_unusable(e, "/history", rc, len);
		return done(e);
	}
	int n = json_size(&d, 0);
	char first[PROMPT_ID_MAX + 1] = "";
	if (n > 0)
		json_str_get(&d, 1, first, sizeof(first));
	if (r->after_offset < 0 && !newest_page_covers(e, &d, n)) {
		memcpy(r->after_newest, first, sizeof(first));
		r->after_offset = 0;
		return request_page(e);
	}
	if (r->after_offset >= 0 && strcmp(first, r->after_newest) == 0) {
		/* the page before again: a server without offset */
		log_warn("bridge",
		    "/history ignores offset: prompts finished "
		    "before the newest %d are not published",
		    PAGE_ITEMS);
		r->after_offset = -1;
	}
	memcpy(r->after_newest, first, sizeof(first));
	publish_page(e, &d, now);
	if (r->after_offset < 0 || n < PAGE_ITEMS)
		return done(e);
	r->after_offset += n;
	request_page(e);
}
