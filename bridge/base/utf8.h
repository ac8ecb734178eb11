/* UTF-8 helpers (RFC 3629): strict decoding without overlongs, surrogates or
 * code points above U+10FFFF. Pure functions over borrowed bytes; no
 * allocation. */
#ifndef C2M_UTF8_H
#define C2M_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Length (1..4) of the valid sequence at s[0..n) and its code point in *cp,
 * or 0 when s does not start with a valid sequence (or n == 0). */
size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);

/* true when buf[0..len) is entirely valid UTF-8 (NUL bytes allowed). */
bool utf8_valid(const char *buf, size_t len);

/* Largest k <= min(len, max) such that buf[0..k) does not end inside a
 * multi-byte sequence (borrowed bytes; valid UTF-8 expected). */
size_t utf8_cut(const char *buf, size_t len, size_t max);

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
/* The high bit of every byte of x (loaded little-endian) that a JSON
 * string cannot hold as it is. A byte below 0x20, a '"' or a '\\' (then
 * x ^ c has a zero byte) sets it in the borrow terms; a byte from 0x80 has
 * it already. A borrow starts only at a byte that is itself special, so
 * the lowest flagged byte is the first special one and a word without
 * special bytes is never flagged. */
static inline uint64_t
utf8__json_special(uint64_t x)
{
	const uint64_t ones = 0x0101010101010101u;
	uint64_t q = x ^ (ones * '"'), b = x ^ (ones * '\\');
	return (((x - ones * 0x20) & ~x) | ((q - ones) & ~q)
	           | ((b - ones) & ~b) | x)
	    & (ones * 0x80);
}
#endif

/* Length of the leading run of s[0..n) that a JSON string holds as it
 * is: bytes 0x20..0x7F except '"' and '\\' (borrowed). Inline: it runs
 * for every string of every frame, most of them a few bytes long. */
static inline size_t
utf8_json_plain_run(const void *buf, size_t n)
{
	const unsigned char *s = (const unsigned char *) buf;
	size_t i = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	uint64_t x, special;
	for (; n - i >= 8; i += 8) {
		memcpy(&x, s + i, 8);
		if ((special = utf8__json_special(x)) != 0)
			return i + ((size_t) __builtin_ctzll(special) >> 3);
	}
	if (i == n)
		return n;
	/* the last bytes, padded with plain ones ('a') */
	x = 0x6161616161616161u;
	memcpy(&x, s + i, n - i);
	if ((special = utf8__json_special(x)) != 0)
		return i + ((size_t) __builtin_ctzll(special) >> 3);
	return n;
#else
	while (i < n && s[i] >= 0x20 && s[i] < 0x80 && s[i] != '"'
	    && s[i] != '\\')
		i++;
	return i;
#endif
}

/* Encodes cp (<= U+10FFFF, not a surrogate) into out (4 bytes room);
 * returns the length, or 0 for a value that has no UTF-8 form. */
size_t utf8_encode(uint32_t cp, unsigned char out[4]);

/* true when cp may appear in an MQTT UTF-8 string (topic, user property,
 * content type): MQTT forbids U+0000 in its strings and lets a receiver refuse
 * the control characters U+0001-U+001F and U+007F-U+009F and the
 * non-characters, and mosquitto does (it drops the connection). */
bool utf8_mqtt_allowed(uint32_t cp);

/* Copies the NUL-terminated src (borrowed) into dst (cap >= 1 bytes, NUL
 * terminated) with every code point utf8_mqtt_allowed() refuses, and every
 * byte that is not valid UTF-8, replaced by U+FFFD; never cuts a sequence.
 * Returns the length written. */
size_t utf8_mqtt_clean(char *dst, size_t cap, const char *src);

/* true when src needs no cleaning (then utf8_mqtt_clean copies it). */
bool utf8_mqtt_ok(const char *src);

#endif
