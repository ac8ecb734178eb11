/* libFuzzer target: arbitrary bytes as a binary WebSocket frame. Every
 * slice binframe_parse returns must lie inside the input, the slices
 * must tile the frame as protocol.md §3 lays it out, and errors must
 * leave no slice behind. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "binframe.h"

static void
check_slice(const uint8_t *base, size_t size, const void *p, size_t len)
{
	if (p == NULL) {
		if (len != 0)
			abort();
		return;
	}
	const uint8_t *s = p;
	/* Compared as offsets so that nothing is computed outside the
	 * input object. */
	if (s < base || (size_t) (s - base) > size)
		abort();
	if (len > size - (size_t) (s - base))
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exact-size copy, so ASan catches any read past the end. */
	uint8_t *frame = malloc(size ? size : 1);
	if (frame == NULL)
		return 0;
	memcpy(frame, data, size);

	struct binframe out;
	int rc = binframe_parse(frame, size, &out);

	check_slice(frame, size, out.image, out.image_len);
	check_slice(frame, size, out.node_id, out.node_id_len);
	check_slice(frame, size, out.text, out.text_len);
	check_slice(frame, size, out.metadata, out.metadata_len);

	if (rc != BR_OK) {
		if (out.image || out.node_id || out.text || out.metadata)
			abort();
		if (rc != BR_ESHORT && rc != BR_EUNSUPPORTED
		    && rc != BR_EINVAL)
			abort();
		if (rc == BR_ESHORT && size >= 8 && out.type == 1)
			abort();
		goto out;
	}

	switch (out.type) {
	case BINFRAME_PREVIEW:
		if (out.image != frame + 8 || out.image_len != size - 8)
			abort();
		if (out.mime == NULL)
			abort();
		break;
	case BINFRAME_TEXT:
		if ((const uint8_t *) out.node_id != frame + 8)
			abort();
		if (8 + out.node_id_len + out.text_len != size)
			abort();
		if ((const uint8_t *) out.text != frame + 8 + out.node_id_len)
			abort();
		break;
	case BINFRAME_PREVIEW_METADATA:
		if ((const uint8_t *) out.metadata != frame + 8)
			abort();
		if (8 + out.metadata_len + out.image_len != size)
			abort();
		if (out.image != frame + 8 + out.metadata_len || out.mime)
			abort();
		break;
	default:
		abort(); /* OK for a type the parser does not know */
	}
out:
	free(frame);
	return 0;
}
