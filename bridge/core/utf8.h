/* UTF-8 helpers (RFC 3629): strict decoding without overlongs, surrogates or
 * code points above U+10FFFF. Pure functions over borrowed bytes; no
 * allocation. */
#ifndef C2M_UTF8_H
#define C2M_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Length (1..4) of the valid sequence at s[0..n) and its code point in *cp,
 * or 0 when s does not start with a valid sequence (or n == 0). */
size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);

/* true when buf[0..len) is entirely valid UTF-8 (NUL bytes allowed). */
bool utf8_valid(const char *buf, size_t len);

/* Largest k <= min(len, max) such that buf[0..k) does not end inside a
 * multi-byte sequence (borrowed bytes; valid UTF-8 expected). */
size_t utf8_cut(const char *buf, size_t len, size_t max);

/* Encodes cp (<= U+10FFFF, not a surrogate) into out (4 bytes room);
 * returns the length, or 0 for a value that has no UTF-8 form. */
size_t utf8_encode(uint32_t cp, unsigned char out[4]);

#endif
