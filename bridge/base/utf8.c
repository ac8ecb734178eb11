/* Strict UTF-8 decoding: the second byte's allowed range depends on the lead
 * byte, which is what excludes overlongs, surrogates and > U+10FFFF. */
#include "utf8.h"

static bool
is_cont(unsigned char c)
{
	return (c & 0xC0) == 0x80;
}

size_t
utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
	if (n == 0)
		return 0;
	unsigned char c = s[0];
	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	size_t need;
	unsigned char lo = 0x80, hi = 0xBF;
	uint32_t v;
	if (c >= 0xC2 && c <= 0xDF) {
		need = 2;
		v = c & 0x1F;
	} else if (c >= 0xE0 && c <= 0xEF) {
		need = 3;
		v = c & 0x0F;
		if (c == 0xE0)
			lo = 0xA0; /* below is overlong */
		else if (c == 0xED)
			hi = 0x9F; /* above is a surrogate */
	} else if (c >= 0xF0 && c <= 0xF4) {
		need = 4;
		v = c & 0x07;
		if (c == 0xF0)
			lo = 0x90; /* below is overlong */
		else if (c == 0xF4)
			hi = 0x8F; /* above is > U+10FFFF */
	} else {
		return 0; /* continuation byte, C0/C1 overlong lead, F5..FF */
	}
	if (n < need || s[1] < lo || s[1] > hi)
		return 0;
	v = (v << 6) | (s[1] & 0x3F);
	for (size_t i = 2; i < need; i++) {
		if (!is_cont(s[i]))
			return 0;
		v = (v << 6) | (s[i] & 0x3F);
	}
	*cp = v;
	return need;
}

bool
utf8_valid(const char *buf, size_t len)
{
	const unsigned char *s = (const unsigned char *) buf;
	size_t i = 0;
	while (i < len) {
		if (s[i] < 0x80) {
			i++;
			continue;
		}
		uint32_t cp;
		size_t k = utf8_decode(s + i, len - i, &cp);
		if (k == 0)
			return false;
		i += k;
	}
	return true;
}

size_t
utf8_cut(const char *buf, size_t len, size_t max)
{
	if (max >= len)
		return len;
	const unsigned char *s = (const unsigned char *) buf;
	size_t k = max;
	/* A sequence is at most 4 bytes, so at most 3 steps back; beyond that
	 * the input is not UTF-8 and any cut is as good as another. */
	while (k > 0 && max - k < 3 && is_cont(s[k]))
		k--;
	return is_cont(s[k]) ? max : k;
}

size_t
utf8_encode(uint32_t cp, unsigned char out[4])
{
	if (cp < 0x80) {
		out[0] = (unsigned char) cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (unsigned char) (0xC0 | (cp >> 6));
		out[1] = (unsigned char) (0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp >= 0xD800 && cp <= 0xDFFF)
		return 0;
	if (cp < 0x10000) {
		out[0] = (unsigned char) (0xE0 | (cp >> 12));
		out[1] = (unsigned char) (0x80 | ((cp >> 6) & 0x3F));
		out[2] = (unsigned char) (0x80 | (cp & 0x3F));
		return 3;
	}
	if (cp > 0x10FFFF)
		return 0;
	out[0] = (unsigned char) (0xF0 | (cp >> 18));
	out[1] = (unsigned char) (0x80 | ((cp >> 12) & 0x3F));
	out[2] = (unsigned char) (0x80 | ((cp >> 6) & 0x3F));
	out[3] = (unsigned char) (0x80 | (cp & 0x3F));
	return 4;
}

bool
utf8_mqtt_allowed(uint32_t cp)
{
	if (cp <= 0x1F || (cp >= 0x7F && cp <= 0x9F))
		return false;
	if (cp >= 0xFDD0 && cp <= 0xFDEF)
		return false;
	return (cp & 0xFFFE) != 0xFFFE; /* U+xFFFE and U+xFFFF */
}

bool
utf8_mqtt_ok(const char *src)
{
	const unsigned char *s = (const unsigned char *) src;
	size_t n = strlen(src);
	while (n > 0) {
		if (*s >= 0x20 && *s < 0x7F) { /* the common case: ASCII */
			s++;
			n--;
			continue;
		}
		uint32_t cp;
		size_t k = utf8_decode(s, n, &cp);
		if (k == 0 || !utf8_mqtt_allowed(cp))
			return false;
		s += k;
		n -= k;
	}
	return true;
}

size_t
utf8_mqtt_clean(char *dst, size_t cap, const char *src)
{
	static const unsigned char replacement[3] = { 0xEF, 0xBF, 0xBD };
	const unsigned char *s = (const unsigned char *) src;
	size_t n = strlen(src), out = 0;
	if (cap == 0)
		return 0;
	while (n > 0) {
		uint32_t cp;
		size_t k = utf8_decode(s, n, &cp);
		const unsigned char *piece = s;
		size_t plen = k;
		if (k == 0 || !utf8_mqtt_allowed(cp)) {
			piece = replacement;
			plen = sizeof(replacement);
			if (k == 0)
				k = 1; /* one invalid byte */
		}
		if (out + plen + 1 > cap)
			break;
		memcpy(dst + out, piece, plen);
		out += plen;
		s += k;
		n -= k;
	}
	dst[out] = '\0';
	return out;
}
