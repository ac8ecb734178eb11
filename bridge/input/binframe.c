/* ComfyUI binary frame parsing (bridge/README.md#binary-frames). Lengths
 * declared inside the frame are untrusted: each is compared with the bytes
 * that remain (a subtraction that cannot wrap), never added to an offset
 * first. */
#include "binframe.h"

#include <string.h>

#define BINFRAME_U32 4

enum image_format {
	IMAGE_FORMAT_JPEG = 1,
	IMAGE_FORMAT_PNG = 2,
};

static uint32_t
read_be32(const uint8_t *p)
{
	return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16
	    | (uint32_t) p[2] << 8 | (uint32_t) p[3];
}

/* A cursor over the unread part of the frame. */
struct reader {
	const uint8_t *pos;
	size_t left;
};

static int
take_u32(struct reader *rd, uint32_t *value)
{
	if (rd->left < BINFRAME_U32)
		return BR_ESHORT;
	*value = read_be32(rd->pos);
	rd->pos += BINFRAME_U32;
	rd->left -= BINFRAME_U32;
	return BR_OK;
}

/* Takes a u32 length n, then n bytes as a slice. */
static int
take_sized(struct reader *rd, const char **slice, size_t *slice_len)
{
	uint32_t n;
	int rc = take_u32(rd, &n);
	if (rc != BR_OK)
		return rc;
	if (n > rd->left)
		return BR_ESHORT;
	*slice = (const char *) rd->pos;
	*slice_len = n;
	rd->pos += n;
	rd->left -= n;
	return BR_OK;
}

static int
parse_preview(struct reader *rd, struct binframe *out)
{
	uint32_t format;
	int rc = take_u32(rd, &format);
	if (rc != BR_OK)
		return rc;
	if (format == IMAGE_FORMAT_JPEG)
		out->mime = "image/jpeg";
	else if (format == IMAGE_FORMAT_PNG)
		out->mime = "image/png";
	else
		return BR_EINVAL;
	out->image = rd->pos;
	out->image_len = rd->left;
	return BR_OK;
}

static int
parse_text(struct reader *rd, struct binframe *out)
{
	int rc = take_sized(rd, &out->node_id, &out->node_id_len);
	if (rc != BR_OK)
		return rc;
	out->text = (const char *) rd->pos;
	out->text_len = rd->left;
	return BR_OK;
}

static int
parse_preview_metadata(struct reader *rd, struct binframe *out)
{
	int rc = take_sized(rd, &out->metadata, &out->metadata_len);
	if (rc != BR_OK)
		return rc;
	out->image = rd->pos;
	out->image_len = rd->left;
	return BR_OK;
}

int
binframe_parse(const uint8_t *frame, size_t len, struct binframe *out)
{
	memset(out, 0, sizeof(*out));
	struct reader rd = { .pos = frame, .left = len };

	int rc = take_u32(&rd, &out->type);
	if (rc != BR_OK)
		return rc;

	switch (out->type) {
	case BINFRAME_PREVIEW:
		rc = parse_preview(&rd, out);
		break;
	case BINFRAME_TEXT:
		rc = parse_text(&rd, out);
		break;
	case BINFRAME_PREVIEW_METADATA:
		rc = parse_preview_metadata(&rd, out);
		break;
	default:
		return BR_EUNSUPPORTED;
	}
	if (rc != BR_OK) {
		/* Half-filled slices must not be mistaken for a result. */
		uint32_t type = out->type;
		memset(out, 0, sizeof(*out));
		out->type = type;
	}
	return rc;
}
