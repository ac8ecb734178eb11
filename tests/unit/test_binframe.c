/* binframe: every binary frame described in the traces, then hostile
 * frames (truncated, lengths past the end, unknown types, bad formats). */
#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>

/* A private jsmn copy (static) to read the trace descriptors; the
 * bridge's own json module is not what is under test here. */
#define JSMN_STATIC
#include <jsmn.h>

#include "binframe.h"
#include "test.h"

#define MAX_TOKENS 128
#define MAX_FRAME  (16u << 20)

struct descriptor {
	const char *line;
	jsmntok_t tok[MAX_TOKENS];
	int ntok;
};

/* Index of the value of top-level key name, or -1. */
static int
desc_find(const struct descriptor *d, const char *name)
{
	size_t name_len = strlen(name);
	for (int i = 1; i + 1 < d->ntok; i++) {
		const jsmntok_t *k = &d->tok[i];
		if (k->parent != 0 || k->type != JSMN_STRING)
			continue;
		if ((size_t) (k->end - k->start) == name_len
		    && memcmp(d->line + k->start, name, name_len) == 0)
			return i + 1;
	}
	return -1;
}

static long long
desc_int(const struct descriptor *d, const char *name)
{
	int i = desc_find(d, name);
	if (i < 0 || d->tok[i].type != JSMN_PRIMITIVE)
		return -1;
	char *end;
	long long v = strtoll(d->line + d->tok[i].start, &end, 10);
	if (end != d->line + d->tok[i].end)
		return -1;
	return v;
}

static int
hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static size_t
put_utf8(uint8_t *out, uint32_t cp)
{
	if (cp < 0x80) {
		out[0] = (uint8_t) cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (uint8_t) (0xc0 | cp >> 6);
		out[1] = (uint8_t) (0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (uint8_t) (0xe0 | cp >> 12);
		out[1] = (uint8_t) (0x80 | (cp >> 6 & 0x3f));
		out[2] = (uint8_t) (0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (uint8_t) (0xf0 | cp >> 18);
	out[1] = (uint8_t) (0x80 | (cp >> 12 & 0x3f));
	out[2] = (uint8_t) (0x80 | (cp >> 6 & 0x3f));
	out[3] = (uint8_t) (0x80 | (cp & 0x3f));
	return 4;
}

static uint32_t
hex4(const char *s)
{
	uint32_t v = 0;
	for (int i = 0; i < 4; i++) {
		int d = hex_digit(s[i]);
		if (d < 0)
			abort();
		v = v << 4 | (uint32_t) d;
	}
	return v;
}

/* Appends the unescaped JSON string value of key name to out; returns
 * the byte count, or -1 when the key is missing. */
static long
desc_str(const struct descriptor *d, const char *name, uint8_t *out)
{
	int i = desc_find(d, name);
	if (i < 0 || d->tok[i].type != JSMN_STRING)
		return -1;
	const char *s = d->line + d->tok[i].start;
	const char *end = d->line + d->tok[i].end;
	size_t n = 0;
	while (s < end) {
		if (*s != '\\') {
			out[n++] = (uint8_t) *s++;
			continue;
		}
		s++;
		char e = *s++;
		switch (e) {
		case 'b':
			out[n++] = '\b';
			break;
		case 'f':
			out[n++] = '\f';
			break;
		case 'n':
			out[n++] = '\n';
			break;
		case 'r':
			out[n++] = '\r';
			break;
		case 't':
			out[n++] = '\t';
			break;
		case 'u': {
			uint32_t cp = hex4(s);
			s += 4;
			if (cp >= 0xd800 && cp < 0xdc00 && s[0] == '\\'
			    && s[1] == 'u') {
				uint32_t lo = hex4(s + 2);
				s += 6;
				cp = 0x10000 + ((cp - 0xd800) << 10)
				    + (lo - 0xdc00);
			}
			n += put_utf8(out + n, cp);
			break;
		}
		default: /* '"', '\\', '/' */
			out[n++] = (uint8_t) e;
		}
	}
	return (long) n;
}

/* Appends hex-decoded bytes of key name; returns the count or -1. */
static long
desc_hex(const struct descriptor *d, const char *name, uint8_t *out)
{
	uint8_t text[256];
	long n = desc_str(d, name, text);
	if (n < 0 || n % 2 != 0)
		return -1;
	for (long i = 0; i < n; i += 2) {
		int hi = hex_digit((char) text[i]);
		int lo = hex_digit((char) text[i + 1]);
		if (hi < 0 || lo < 0)
			return -1;
		out[i / 2] = (uint8_t) (hi << 4 | lo);
	}
	return n / 2;
}

struct trace_stats {
	int seen[8]; /* descriptors by event type (7 = anything else) */
};

/* Builds the frame as tests/data/traces/README.md says and checks the
 * parsed fields against the descriptor. */
static void
check_descriptor(const char *where, struct descriptor *d, uint8_t *frame,
    struct trace_stats *st)
{
	uint8_t magic[64], meta[4096], text[4096], node[256];
	long long type = desc_int(d, "event_type");
	long long frame_len = desc_int(d, "frame_len");
	CHECK(type >= 0 && frame_len >= 4 && frame_len <= MAX_FRAME);
	if (type < 0 || frame_len < 4 || frame_len > MAX_FRAME)
		return;
	st->seen[type >= 1 && type <= 6 ? type : 7]++;

	long head = desc_hex(d, "binary_hex_header", frame);
	CHECK(head >= 4);
	if (head < 4)
		return;
	size_t len = (size_t) head;
	long meta_len = type == 4 ? desc_str(d, "metadata_json", meta) : 0;
	long text_len = type == 3 ? desc_str(d, "text", text) : 0;
	CHECK(meta_len >= 0 && text_len >= 0);
	if (meta_len < 0 || text_len < 0)
		return;
	memcpy(frame + len, meta, (size_t) meta_len);
	len += (size_t) meta_len;
	memcpy(frame + len, text, (size_t) text_len);
	len += (size_t) text_len;
	long long image_len = -1;
	long magic_len = 0;
	if (type == 1 || type == 4) {
		image_len = desc_int(d, "image_len");
		magic_len = desc_hex(d, "image_magic_hex", magic);
		CHECK(image_len >= magic_len && magic_len > 0);
		if (image_len < magic_len || magic_len <= 0
		    || len + (size_t) image_len > MAX_FRAME)
			return;
		memcpy(frame + len, magic, (size_t) magic_len);
		/* Filler: anything but the magic; 0xA5 is easy to spot. */
		memset(frame + len + magic_len, 0xa5,
		    (size_t) (image_len - magic_len));
		len += (size_t) image_len;
	} else if (type != 3) {
		/* Unknown types: the payload is opaque filler. */
		memset(frame + len, 0x5a, (size_t) frame_len - len);
		len = (size_t) frame_len;
	}
	CHECK_INT(len, frame_len);
	if (len != (size_t) frame_len) {
		fprintf(stderr, "  in %s\n", where);
		return;
	}

	int failures_before = test_failures;
	struct binframe out;
	int rc = binframe_parse(frame, len, &out);
	CHECK_INT(out.type, type);
	if (type == 1) {
		char mime[64];
		long mime_len = desc_str(d, "image_mime", (uint8_t *) mime);
		CHECK(mime_len > 0);
		mime[mime_len > 0 ? mime_len : 0] = '\0';
		CHECK_INT(rc, BR_OK);
		CHECK_STR(out.mime, mime);
		CHECK_INT(out.image_len, image_len);
		CHECK(out.image == frame + 8);
		CHECK_MEM(
		    out.image, (size_t) magic_len, magic, (size_t) magic_len);
	} else if (type == 3) {
		long node_len = desc_str(d, "node_id", node);
		CHECK_INT(rc, BR_OK);
		CHECK_MEM(
		    out.node_id, out.node_id_len, node, (size_t) node_len);
		CHECK_MEM(out.text, out.text_len, text, (size_t) text_len);
		CHECK_INT(out.text_len, desc_int(d, "text_len"));
		CHECK(out.image == NULL && out.metadata == NULL);
	} else if (type == 4) {
		CHECK_INT(rc, BR_OK);
		CHECK_INT(out.metadata_len, desc_int(d, "metadata_len"));
		CHECK_MEM(
		    out.metadata, out.metadata_len, meta, (size_t) meta_len);
		CHECK_INT(out.image_len, image_len);
		CHECK(out.image == frame + (len - (size_t) image_len));
		CHECK_MEM(
		    out.image, (size_t) magic_len, magic, (size_t) magic_len);
		CHECK(out.mime == NULL);
	} else {
		CHECK_INT(rc, BR_EUNSUPPORTED);
	}
	if (test_failures != failures_before)
		fprintf(stderr, "  in %s\n", where);
}

static void
test_trace_descriptors(void)
{
	const char *dir = test_traces_dir();
	DIR *dp = opendir(dir);
	CHECK(dp != NULL);
	if (dp == NULL)
		return;
	uint8_t *frame = malloc(MAX_FRAME);
	struct descriptor *d = malloc(sizeof(*d));
	struct trace_stats st = { { 0 } };
	int files = 0;
	struct dirent *de;
	while ((de = readdir(dp)) != NULL) {
		size_t nl = strlen(de->d_name);
		if (nl < 6 || strcmp(de->d_name + nl - 6, ".jsonl") != 0)
			continue;
		char path[4096];
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		char *text = test_read_file(path, NULL);
		files++;
		int lineno = 0;
		for (char *line = strtok(text, "\n"); line != NULL;
		     line = strtok(NULL, "\n")) {
			lineno++;
			if (strstr(line, "\"binary_hex_header\"") == NULL)
				continue;
			jsmn_parser p;
			jsmn_init(&p);
			d->line = line;
			d->ntok = jsmn_parse(
			    &p, line, strlen(line), d->tok, MAX_TOKENS);
			CHECK(d->ntok > 0 && d->tok[0].type == JSMN_OBJECT);
			if (d->ntok <= 0)
				continue;
			char where[4200];
			snprintf(where, sizeof(where), "%s:%d", path, lineno);
			check_descriptor(where, d, frame, &st);
		}
		free(text);
	}
	closedir(dp);
	CHECK(files > 0);
	/* The traces cover the three known types and one unknown. */
	CHECK(st.seen[1] > 0);
	CHECK(st.seen[3] > 0);
	CHECK(st.seen[4] > 0);
	CHECK(st.seen[7] > 0);
	fprintf(stderr,
	    "trace descriptors: type1 %d, type3 %d, type4 %d, "
	    "other %d\n",
	    st.seen[1], st.seen[3], st.seen[4], st.seen[7]);
	free(d);
	free(frame);
}

static void
put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t) (v >> 24);
	p[1] = (uint8_t) (v >> 16);
	p[2] = (uint8_t) (v >> 8);
	p[3] = (uint8_t) v;
}

/* Every cut of a frame shorter than its fixed header is truncated; the
 * header alone is a valid frame with an empty tail. */
static void
test_truncated_headers(void)
{
	uint8_t f[32];
	struct binframe out;

	/* type 3, 4-byte node id, text "hi": header is 12 bytes. */
	put_be32(f, 3);
	put_be32(f + 4, 4);
	memcpy(f + 8, "nodehi", 6);
	for (size_t len = 0; len < 12; len++) {
		CHECK_INT(binframe_parse(f, len, &out), BR_ESHORT);
		CHECK(out.node_id == NULL && out.text == NULL);
	}
	CHECK_INT(binframe_parse(f, 12, &out), BR_OK);
	CHECK_MEM(out.node_id, out.node_id_len, "node", 4);
	CHECK_INT(out.text_len, 0);
	CHECK_INT(binframe_parse(f, 14, &out), BR_OK);
	CHECK_MEM(out.text, out.text_len, "hi", 2);

	/* type 4, 4 bytes of metadata. */
	put_be32(f, 4);
	put_be32(f + 4, 4);
	memcpy(f + 8, "{}  \xff\xd8", 6);
	for (size_t len = 0; len < 12; len++) {
		CHECK_INT(binframe_parse(f, len, &out), BR_ESHORT);
		CHECK(out.metadata == NULL && out.image == NULL);
	}
	CHECK_INT(binframe_parse(f, 12, &out), BR_OK);
	CHECK_MEM(out.metadata, out.metadata_len, "{}  ", 4);
	CHECK_INT(out.image_len, 0);
	CHECK_INT(binframe_parse(f, 14, &out), BR_OK);
	CHECK_MEM(out.image, out.image_len, "\xff\xd8", 2);

	/* type 1: 8-byte header. */
	put_be32(f, 1);
	put_be32(f + 4, 2);
	for (size_t len = 0; len < 8; len++)
		CHECK_INT(binframe_parse(f, len, &out), BR_ESHORT);
	CHECK_INT(binframe_parse(f, 8, &out), BR_OK);
	CHECK_STR(out.mime, "image/png");
	CHECK_INT(out.image_len, 0);

	/* No dereference of an empty frame. */
	CHECK_INT(binframe_parse(NULL, 0, &out), BR_ESHORT);
}

static void
test_declared_length_past_end(void)
{
	static const uint32_t bad[]
	    = { 3, 4, 100, 0x7fffffff, 0x80000000, 0xfffffff8, 0xffffffff };
	uint8_t f[16];
	struct binframe out;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		/* 10 bytes, so 2 remain after the length field. */
		put_be32(f, 3);
		put_be32(f + 4, bad[i]);
		memcpy(f + 8, "ab", 2);
		CHECK_INT(binframe_parse(f, 10, &out), BR_ESHORT);
		CHECK(out.node_id == NULL && out.text == NULL);
		put_be32(f, 4);
		CHECK_INT(binframe_parse(f, 10, &out), BR_ESHORT);
		CHECK(out.metadata == NULL && out.image == NULL);
	}
	/* Exactly the remaining length is fine. */
	put_be32(f, 3);
	put_be32(f + 4, 2);
	CHECK_INT(binframe_parse(f, 10, &out), BR_OK);
	CHECK_MEM(out.node_id, out.node_id_len, "ab", 2);
	CHECK_INT(out.text_len, 0);
	CHECK(out.text == (const char *) f + 10);
	put_be32(f, 4);
	CHECK_INT(binframe_parse(f, 10, &out), BR_OK);
	CHECK_MEM(out.metadata, out.metadata_len, "ab", 2);
	CHECK_INT(out.image_len, 0);
}

static void
test_unknown_types(void)
{
	static const uint32_t types[] = { 0, 2, 5, 7, 0x01000000, 0xffffffff };
	uint8_t f[20];
	struct binframe out;
	memset(f, 0x5a, sizeof(f));
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		put_be32(f, types[i]);
		CHECK_INT(binframe_parse(f, sizeof(f), &out), BR_EUNSUPPORTED);
		CHECK_INT(out.type, types[i]);
		CHECK(out.image == NULL && out.text == NULL);
		/* A bare type is enough to know it is unknown. */
		CHECK_INT(binframe_parse(f, 4, &out), BR_EUNSUPPORTED);
		CHECK_INT(out.type, types[i]);
	}
}

static void
test_bad_image_format(void)
{
	/* 0x01000000 is JPEG written little-endian. */
	static const uint32_t formats[] = { 0, 3, 4, 0x01000000, 0xffffffff };
	uint8_t f[12] = { 0, 0, 0, 1 };
	struct binframe out;
	for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++) {
		put_be32(f + 4, formats[i]);
		CHECK_INT(binframe_parse(f, sizeof(f), &out), BR_EINVAL);
		CHECK_INT(out.type, 1);
		CHECK(out.mime == NULL && out.image == NULL);
	}
	put_be32(f + 4, 1);
	CHECK_INT(binframe_parse(f, sizeof(f), &out), BR_OK);
	CHECK_STR(out.mime, "image/jpeg");
	CHECK(out.image == f + 8);
	CHECK_INT(out.image_len, 4);
}

int
main(void)
{
	RUN(test_trace_descriptors);
	RUN(test_truncated_headers);
	RUN(test_declared_length_past_end);
	RUN(test_unknown_types);
	RUN(test_bad_image_format);
	TEST_MAIN_END();
}
