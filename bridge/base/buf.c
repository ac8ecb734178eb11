/* See buf.h. */
#include "buf.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"

int
buf_reserve_max(struct buf *b, size_t n, size_t max)
{
	if (n > max || b->len > max - n)
		return BR_EFULL;
	if (b->len + n + 1 <= b->cap)
		return 0;
	/* at least double (appends in a loop stay O(n)), at least what is
	 * needed (a first reservation allocates exactly that), never past
	 * the bound (a body near its limit does not take twice the limit) */
	size_t need = b->len + n + 1;
	size_t cap = b->cap > (size_t) -1 / 2 ? need : b->cap * 2;
	if (cap < need)
		cap = need;
	if (cap < 128)
		cap = 128;
	if (cap > max + 1)
		cap = max + 1 > need ? max + 1 : need;
	char *p = realloc(b->p, cap);
	if (p == NULL)
		return BR_ENOMEM;
	b->p = p;
	b->cap = cap;
	return 0;
}

int
buf_reserve(struct buf *b, size_t n)
{
	if (n >= (size_t) -1 - b->len - 1)
		return BR_ENOMEM;
	return buf_reserve_max(b, n, (size_t) -1 - 1);
}

int
buf_append(struct buf *b, const void *s, size_t n)
{
	if (buf_reserve(b, n) != 0)
		return BR_ENOMEM;
	if (n > 0)
		memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

int
buf_puts(struct buf *b, const char *s)
{
	return buf_append(b, s, strlen(s));
}

int
buf_set(struct buf *b, const void *s, size_t n)
{
	b->len = 0;
	return buf_append(b, s, n);
}

void
buf_reset(struct buf *b)
{
	b->len = 0;
	if (b->p != NULL)
		b->p[0] = '\0';
}

void
buf_free(struct buf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

void
buf_trim(struct buf *b, size_t max)
{
	if (b->cap > max)
		buf_free(b);
}

void
buf_fit(struct buf *b)
{
	if (b->p == NULL || b->len + 1 >= b->cap)
		return;
	char *p = realloc(b->p, b->len + 1);
	if (p == NULL)
		return;
	b->p = p;
	b->cap = b->len + 1;
}
