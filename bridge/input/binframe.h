/* ComfyUI binary WebSocket frames (bridge/README.md#binary-frames): a 4-byte
 * big-endian event type, then a type-specific payload. Pure parsing into
 * borrowed slices; every length is checked against the frame length. */
#ifndef C2M_BINFRAME_H
#define C2M_BINFRAME_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

enum binframe_type {
	BINFRAME_PREVIEW = 1, /* u32 image format, image bytes */
	BINFRAME_TEXT = 3, /* u32 node-id length, node id, text */
	BINFRAME_PREVIEW_METADATA = 4, /* u32 metadata length, JSON, image */
};

struct binframe {
	uint32_t type;
	/* types 1 and 4 */
	const uint8_t *image;
	size_t image_len;
	const char *mime; /* "image/jpeg" or "image/png" for type 1; NULL for
	                     type 4 (take it from the metadata's image_type) */
	/* type 3 */
	const char *node_id;
	size_t node_id_len;
	const char *text;
	size_t text_len;
	/* type 4 */
	const char *metadata; /* JSON bytes, not validated here */
	size_t metadata_len;
};

/* Parses frame[0..len) (borrowed) into out. Returns BR_OK, BR_ESHORT (the
 * header or a declared length runs past the end of the frame),
 * BR_EUNSUPPORTED (an unknown type; out->type is set) or BR_EINVAL (type 1
 * with an image format other than 1, JPEG, or 2, PNG). */
int binframe_parse(const uint8_t *frame, size_t len, struct binframe *out);

#endif
