#include "expiry.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"

enum expiry_kind { EK_INLINE = 0, EK_UUID, EK_APART };

#define UUID_LEN 36

static const char hexdig[] = "0123456789abcdef";

static bool
is_dash_at(size_t i)
{
	return i == 8 || i == 13 || i == 18 || i == 23;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Packs a lowercase 8-4-4-4-12 UUID into its 16 bytes; false for any
 * other level (which unpacking would not give back byte for byte). */
static bool
uuid_pack(const char *s, size_t len, unsigned char out[16])
{
	if (len != UUID_LEN)
		return false;
	unsigned k = 0;
	for (size_t i = 0; i < UUID_LEN; i++) {
		if (is_dash_at(i)) {
			if (s[i] != '-')
				return false;
			continue;
		}
		int hi = hexval(s[i]), lo = hexval(s[++i]);
		if (hi < 0 || lo < 0 || is_dash_at(i))
			return false;
		out[k++] = (unsigned char) (hi << 4 | lo);
	}
	return k == 16;
}

static void
uuid_unpack(const unsigned char in[16], char out[UUID_LEN])
{
	unsigned k = 0;
	for (size_t i = 0; i < UUID_LEN; i++) {
		if (is_dash_at(i)) {
			out[i] = '-';
			continue;
		}
		out[i] = hexdig[in[k] >> 4];
		out[++i] = hexdig[in[k++] & 15];
	}
}

static int64_t
due_of(const struct expiry *r)
{
	return (int64_t) r->due_hi << 32 | r->due_lo;
}

void
expiry_init(struct expiry_heap *x, size_t max)
{
	memset(x, 0, sizeof(*x));
	x->max = max ? max : 1;
}

bool
expiry_full(const struct expiry_heap *x)
{
	return x->n >= x->max;
}

bool
expiry_next(const struct expiry_heap *x, int64_t *due)
{
	if (x->n == 0)
		return false;
	*due = due_of(&x->h[0]);
	return true;
}

static void
swap(struct expiry *h, size_t i, size_t j)
{
	struct expiry t = h[i];
	h[i] = h[j];
	h[j] = t;
}

/* Room for one more record: the array doubles from 256 up to max. */
static int
room(struct expiry_heap *x)
{
	if (x->n >= x->max)
		return BR_EFULL;
	if (x->n < x->cap)
		return 0;
	size_t cap = x->cap ? x->cap * 2 : 256;
	if (cap > x->max)
		cap = x->max;
	struct expiry *h = realloc(x->h, cap * sizeof(*h));
	if (!h)
		return BR_ENOMEM;
	x->h = h;
	x->cap = cap;
	return 0;
}

/* The record for level: in place when it fits, else a copy apart. */
static int
make_record(struct expiry *r, const char *level, size_t len, int64_t due)
{
	memset(r, 0, sizeof(*r));
	if (due < 0)
		due = 0;
	if (due > EXPIRY_DUE_MAX)
		due = EXPIRY_DUE_MAX;
	r->due_lo = (uint32_t) due;
	r->due_hi = (uint16_t) (due >> 32);
	if (len <= sizeof(r->level.b)) {
		r->kind = EK_INLINE;
		r->len = (uint8_t) len;
		memcpy(r->level.b, level, len);
		return 0;
	}
	if (uuid_pack(level, len, r->level.b)) {
		r->kind = EK_UUID;
		return 0;
	}
	char *copy = malloc(len + 1);
	if (!copy)
		return BR_ENOMEM;
	memcpy(copy, level, len);
	copy[len] = '\0';
	r->kind = EK_APART;
	r->level.s = copy;
	return 0;
}

int
expiry_push(struct expiry_heap *x, const char *level, size_t len, int64_t due)
{
	int rc = room(x);
	if (rc != 0)
		return rc;
	struct expiry *h = x->h;
	size_t i = x->n;
	rc = make_record(&h[i], level, len, due);
	if (rc != 0)
		return rc;
	x->n++;
	while (i > 0 && due_of(&h[(i - 1) / 2]) > due_of(&h[i])) {
		swap(h, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
	return 0;
}

/* Writes r's level to out (cut to size - 1 bytes); returns its length. */
static int
level_of(struct expiry *r, char *out, size_t size)
{
	char uuid[UUID_LEN];
	const char *p = (const char *) r->level.b;
	size_t len = r->len;
	if (r->kind == EK_UUID) {
		uuid_unpack(r->level.b, uuid);
		p = uuid;
		len = UUID_LEN;
	} else if (r->kind == EK_APART) {
		p = r->level.s;
		len = strlen(p);
	}
	if (size > 0) {
		size_t n = len < size - 1 ? len : size - 1;
		memcpy(out, p, n);
		out[n] = '\0';
	}
	if (r->kind == EK_APART)
		free(r->level.s);
	return (int) len;
}

int
expiry_pop(struct expiry_heap *x, char *out, size_t size)
{
	if (x->n == 0)
		return -1;
	struct expiry *h = x->h;
	int len = level_of(&h[0], out, size);
	h[0] = h[--x->n];
	for (size_t i = 0;;) {
		size_t l = 2 * i + 1, m = i;
		if (l < x->n && due_of(&h[l]) < due_of(&h[m]))
			m = l;
		if (l + 1 < x->n && due_of(&h[l + 1]) < due_of(&h[m]))
			m = l + 1;
		if (m == i)
			break;
		swap(h, i, m);
		i = m;
	}
	return len;
}

size_t
expiry_bytes(const struct expiry_heap *x)
{
	size_t b = x->cap * sizeof(*x->h);
	for (size_t i = 0; i < x->n; i++)
		if (x->h[i].kind == EK_APART)
			b += strlen(x->h[i].level.s) + 1;
	return b;
}

void
expiry_free(struct expiry_heap *x)
{
	for (size_t i = 0; i < x->n; i++)
		if (x->h[i].kind == EK_APART)
			free(x->h[i].level.s);
	free(x->h);
	expiry_init(x, x->max);
}
