/* See mqtt_mids.h. */
#include "mqtt_mids.h"

#include <stdlib.h>

struct mid_page {
	unsigned used; /* entries not MID_FREE */
	struct mid_info e[MIDS_PAGE];
};

struct mid_info *
mids_find(const struct mids *t, int mid)
{
	if (mid <= 0 || mid >= MID_SPACE)
		return NULL;
	struct mid_page *p = t->page[mid / MIDS_PAGE];
	if (p == NULL || p->e[mid % MIDS_PAGE].state == MID_FREE)
		return NULL;
	return &p->e[mid % MIDS_PAGE];
}

struct mid_info *
mids_claim(struct mids *t, int mid)
{
	if (mid <= 0 || mid >= MID_SPACE)
		return NULL;
	struct mid_page **slot = &t->page[mid / MIDS_PAGE];
	if (*slot == NULL && (*slot = calloc(1, sizeof(**slot))) == NULL)
		return NULL;
	struct mid_info *e = &(*slot)->e[mid % MIDS_PAGE];
	if (e->state == MID_FREE)
		(*slot)->used++;
	return e;
}

void
mids_release(struct mids *t, int mid)
{
	if (mid <= 0 || mid >= MID_SPACE)
		return;
	struct mid_page **slot = &t->page[mid / MIDS_PAGE];
	struct mid_page *p = *slot;
	if (p == NULL || p->e[mid % MIDS_PAGE].state == MID_FREE)
		return;
	p->e[mid % MIDS_PAGE].state = MID_FREE;
	if (--p->used == 0) {
		free(p);
		*slot = NULL;
	}
}

int
mids_next(const struct mids *t, int mid)
{
	for (int i = mid < 0 ? 1 : mid + 1; i < MID_SPACE;) {
		const struct mid_page *p = t->page[i / MIDS_PAGE];
		if (p == NULL) {
			i = (i / MIDS_PAGE + 1) * MIDS_PAGE;
			continue;
		}
		if (p->e[i % MIDS_PAGE].state != MID_FREE)
			return i;
		i++;
	}
	return 0;
}

void
mids_clear(struct mids *t)
{
	for (size_t i = 0; i < MID_SPACE / MIDS_PAGE; i++) {
		free(t->page[i]);
		t->page[i] = NULL;
	}
}
