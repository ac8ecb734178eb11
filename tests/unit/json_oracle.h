/* A test oracle shared by unit.test_json and fuzz_json: finds unpaired
 * surrogate escapes in JSON text, written apart from json_parse.c and
 * json_read.c decoding so that it checks that code rather than shares its
 * mistakes. */
#ifndef C2M_TEST_JSON_ORACLE_H
#define C2M_TEST_JSON_ORACLE_H

#include <stdbool.h>
#include <string.h>

/* Value of the 4 hex digits at p, or -1. */
static long
hex4_at(const char *p)
{
	long v = 0;
	for (int k = 0; k < 4; k++) {
		char c = p[k];
		int h = c >= '0' && c <= '9' ? c - '0'
		    : c >= 'a' && c <= 'f'   ? c - 'a' + 10
		    : c >= 'A' && c <= 'F'   ? c - 'A' + 10
		                             : -1;
		if (h < 0)
			return -1;
		v = v << 4 | h;
	}
	return v;
}

/* true when the JSON text s holds a \uD800-\uDFFF escape that is not a
 * high half directly followed by a low half. Every backslash of JSON text
 * starts an escape, so a walk from one to the next stays aligned. */
static bool
has_lone_surrogate(const char *s)
{
	const char *p = s;
	while ((p = strchr(p, '\\')) != NULL) {
		if (p[1] != 'u') {
			p += p[1] ? 2 : 1;
			continue;
		}
		long v = hex4_at(p + 2);
		if (v >= 0xD800 && v <= 0xDBFF && p[6] == '\\' && p[7] == 'u'
		    && hex4_at(p + 8) >= 0xDC00 && hex4_at(p + 8) <= 0xDFFF) {
			p += 12;
			continue;
		}
		if (v >= 0xD800 && v <= 0xDFFF)
			return true;
		p += 6;
	}
	return false;
}

#endif
