/* log: text and JSON lines on stderr (captured through a temp file),
 * level filtering, truncation, log_level_parse, log_excerpt. */
#include "test.h"

#include <ctype.h>
#include <stdbool.h>
#include <unistd.h>

#include "log.h"
#include "ratelog.h"

static FILE *capture_file;
static int saved_stderr = -1;

static void
capture_begin(void)
{
	fflush(stderr);
	capture_file = tmpfile();
	if (!capture_file) {
		perror("tmpfile");
		exit(2);
	}
	saved_stderr = dup(2);
	dup2(fileno(capture_file), 2);
}

/* Restores stderr and returns what was written (malloc'd). */
static char *
capture_end(size_t *len)
{
	long n;
	char *buf;

	fflush(stderr);
	dup2(saved_stderr, 2);
	close(saved_stderr);
	n = lseek(fileno(capture_file), 0, SEEK_END);
	buf = calloc(1, (size_t) n + 1);
	lseek(fileno(capture_file), 0, SEEK_SET);
	if (read(fileno(capture_file), buf, (size_t) n) != n)
		n = 0;
	buf[n] = '\0';
	fclose(capture_file);
	if (len)
		*len = (size_t) n;
	return buf;
}

/* "2026-11-29T03:51:56.123Z" */
static bool
is_timestamp(const char *s)
{
	const char *shape = "dddd-dd-ddTdd:dd:dd.dddZ";

	for (size_t i = 0; shape[i]; i++) {
		if (shape[i] == 'd' ? !isdigit((unsigned char) s[i])
		                    : s[i] != shape[i])
			return false;
	}
	return true;
}

static int
count_char(const char *s, char ch)
{
	int n = 0;

	for (; *s; s++)
		n += *s == ch;
	return n;
}

static void
test_text_line(void)
{
	size_t len;
	char *out;

	log_setup(LOG_LVL_INFO, LOG_FMT_TEXT);
	capture_begin();
	log_info("ws", "connected to %s port %d", "h", 8188);
	out = capture_end(&len);
	CHECK(is_timestamp(out));
	CHECK_STR(out + 24, " INFO  [ws] connected to h port 8188\n");
	free(out);
}

static void
test_level_filter(void)
{
	char *out;
	int evaluated = 0;

	log_setup(LOG_LVL_WARN, LOG_FMT_TEXT);
	CHECK_INT(log_get_level(), LOG_LVL_WARN);
	capture_begin();
	log_info("x", "hidden");
	log_debug("x", "hidden %d", ++evaluated);
	log_warn("mqtt", "shown");
	log_error("bridge", "also shown");
	out = capture_end(NULL);
	CHECK(strstr(out, "hidden") == NULL);
	CHECK(strstr(out, " WARN  [mqtt] shown\n") != NULL);
	CHECK(strstr(out, " ERROR [bridge] also shown\n") != NULL);
	CHECK_INT(count_char(out, '\n'), 2);
	/* the debug macro skips formatting its arguments entirely */
	CHECK_INT(evaluated, 0);
	free(out);

	log_setup(LOG_LVL_DEBUG, LOG_FMT_TEXT);
	capture_begin();
	log_debug("x", "now %d", ++evaluated);
	out = capture_end(NULL);
	CHECK(strstr(out, " DEBUG [x] now 1\n") != NULL);
	CHECK_INT(evaluated, 1);
	free(out);
}

static void
test_text_stays_one_line(void)
{
	char *out;

	log_setup(LOG_LVL_INFO, LOG_FMT_TEXT);
	capture_begin();
	log_info("ws",
	    "line1\nline2\r\x01"
	    "end");
	out = capture_end(NULL);
	CHECK_INT(count_char(out, '\n'), 1);
	CHECK(strstr(out, "line1\\nline2\\r\\x01end\n") != NULL);
	free(out);
}

/* Minimal JSON reader for one flat object of string members: checks the
 * syntax and returns the unescaped value of key (malloc'd) or NULL. */
static char *
json_flat_get(const char *s, const char *key, bool *valid)
{
	char *found = NULL, buf[8192];
	size_t n;

	*valid = false;
	if (*s++ != '{')
		return NULL;
	for (;;) {
		char name[64];
		for (int part = 0; part < 2; part++) {
			if (*s++ != '"')
				goto bad;
			n = 0;
			while (*s != '"') {
				unsigned char ch = (unsigned char) *s++;
				if (ch < 0x20 || n + 4 >= sizeof buf)
					goto bad;
				if (ch == '\\') {
					char e = *s++;
					const char *m
					    = strchr("\"\\/bfnrt", e);
					if (e == 'u') {
						unsigned v = 0;
						for (int i = 0; i < 4; i++) {
							if (!isxdigit((
							        unsigned char) *s))
								goto bad;
							v = v * 16
							    + (unsigned) (isdigit((
							                      unsigned char) *s)
							            ? *s - '0'
							            : (tolower((
							                   unsigned char) *s)
							                - 'a'
							                + 10));
							s++;
						}
						if (v >= 0x80)
							goto bad; /* not needed
							             here */
						ch = (unsigned char) v;
					} else if (m && *m) {
						ch = (unsigned char) "\"\\/"
						                     "\b\f\n\r"
						                     "\t"[m
						                         - "\""
						                           "\\"
						                           "/b"
						                           "fn"
						                           "r"
						                           "t"];
					} else {
						goto bad;
					}
				}
				buf[n++] = (char) ch;
			}
			s++;
			buf[n] = '\0';
			if (part == 0) {
				snprintf(name, sizeof name, "%.63s", buf);
				if (*s++ != ':')
					goto bad;
			} else if (strcmp(name, key) == 0) {
				free(found);
				found = strdup(buf);
			}
		}
		if (*s == ',') {
			s++;
			continue;
		}
		if (*s++ != '}')
			goto bad;
		break;
	}
	if (strcmp(s, "\n") != 0)
		goto bad;
	*valid = true;
	return found;
bad:
	free(found);
	return NULL;
}

static void
test_json_line(void)
{
	const char *msg = "say \"hi\" \\ back\nnext\x01 caf\xc3\xa9 {}";
	bool valid;
	char *out, *v;

	log_setup(LOG_LVL_INFO, LOG_FMT_JSON);
	capture_begin();
	log_warn("mqtt", "%s", msg);
	out = capture_end(NULL);
	CHECK_INT(count_char(out, '\n'), 1);
	CHECK(strncmp(out, "{\"ts\":\"", 7) == 0);
	CHECK(is_timestamp(out + 7));
	v = json_flat_get(out, "msg", &valid);
	CHECK(valid);
	CHECK_STR(v, msg);
	free(v);
	v = json_flat_get(out, "level", &valid);
	CHECK_STR(v, "warn");
	free(v);
	v = json_flat_get(out, "src", &valid);
	CHECK_STR(v, "mqtt");
	free(v);
	free(out);
	log_setup(LOG_LVL_INFO, LOG_FMT_TEXT);
}

static void
test_long_message_truncated(void)
{
	char big[5000], *out;
	bool valid;
	size_t len;
	char *v;

	memset(big, 'a', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	log_setup(LOG_LVL_INFO, LOG_FMT_TEXT);
	capture_begin();
	log_info("ws", "%s", big);
	out = capture_end(&len);
	CHECK(len < 2200);
	CHECK(len > 2000);
	CHECK(len >= 4 && memcmp(out + len - 4, "...\n", 4) == 0);
	free(out);

	/* the cut never splits a UTF-8 sequence: the JSON stays exact */
	for (size_t i = 0; i + 2 < sizeof big; i += 2) {
		big[i] = (char) 0xc3;
		big[i + 1] = (char) 0xa9;
	}
	big[sizeof big - 2] = '\0';
	log_setup(LOG_LVL_INFO, LOG_FMT_JSON);
	capture_begin();
	log_info("ws", "x%s", big);
	out = capture_end(&len);
	v = json_flat_get(out, "msg", &valid);
	CHECK(valid);
	CHECK(v != NULL && strlen(v) < 2048);
	CHECK(v != NULL && strcmp(v + strlen(v) - 3, "...") == 0);
	CHECK(strstr(out, "\\ufffd") == NULL);
	free(v);
	free(out);
	log_setup(LOG_LVL_INFO, LOG_FMT_TEXT);
}

static void
test_level_parse(void)
{
	CHECK_INT(log_level_parse("error"), LOG_LVL_ERROR);
	CHECK_INT(log_level_parse("warn"), LOG_LVL_WARN);
	CHECK_INT(log_level_parse("warning"), LOG_LVL_WARN);
	CHECK_INT(log_level_parse("info"), LOG_LVL_INFO);
	CHECK_INT(log_level_parse("debug"), LOG_LVL_DEBUG);
	CHECK_INT(log_level_parse("verbose"), -1);
	CHECK_INT(log_level_parse(""), -1);
	CHECK_INT(log_level_parse(NULL), -1);
}

static void
test_excerpt(void)
{
	char dst[64];

	CHECK_STR(log_excerpt(dst, sizeof dst, "ab\ncd\xff\\", 7),
	    "ab\\x0acd\\xff\\\\");
	CHECK_STR(log_excerpt(dst, sizeof dst, "a\0b", 3), "a\\x00b");
	CHECK_STR(log_excerpt(dst, 4, "abc", 3), "abc");
	CHECK_STR(log_excerpt(dst, 8, "abcdefghij", 10), "abcd...");
	/* an escape is never split by the cut */
	CHECK_STR(log_excerpt(dst, 8,
	              "ab\x01"
	              "cdefg",
	              8),
	    "ab...");
	CHECK_STR(log_excerpt(dst, 3, "abcdef", 6), "..");
	CHECK_STR(log_excerpt(dst, 1, "abcdef", 6), "");
	CHECK_STR(log_excerpt(dst, sizeof dst, "", 0), "");
	dst[0] = 'Q';
	log_excerpt(dst, 0, "abc", 3);
	CHECK_INT(dst[0], 'Q');
}

static int
count_lines(const char *s, const char *needle)
{
	int n = 0;
	for (const char *p = s; (p = strstr(p, needle)) != NULL; p++)
		n++;
	return n;
}

static void
test_ratelog_first_n_then_count(void)
{
	struct ratelog r = RATELOG_INIT(3);
	size_t len;

	log_setup(LOG_LVL_INFO, LOG_FMT_TEXT);
	capture_begin();
	for (int i = 0; i < 10; i++)
		CHECK(ratelog_msg(&r, LOG_LVL_WARN, "t", "refused %d", i)
		    == (i < 3));
	ratelog_reset(&r, "t", "refusals");
	ratelog_msg(&r, LOG_LVL_WARN, "t", "refused again");
	char *out = capture_end(&len);
	CHECK_INT(count_lines(out, "refused "), 4);
	CHECK(strstr(out, "refused 2") != NULL);
	CHECK(strstr(out, "refused 3") == NULL);
	CHECK(strstr(out, "7 more refusals") != NULL);
	CHECK(strstr(out, "refused again") != NULL);
	free(out);
}

static void
test_ratelog_every_nth(void)
{
	struct ratelog r = RATELOG_INIT_EVERY(1, 10);

	for (int i = 1; i <= 30; i++)
		CHECK(ratelog_msg(&r, LOG_LVL_DEBUG, "t", "failed %d", i)
		    == (i == 1 || i % 10 == 0));
	CHECK_INT((int) r.suppressed, 26);
}

static void
test_logchange(void)
{
	struct logchange c = { 0 };

	CHECK(logchange_changed(&c, 0));
	CHECK(!logchange_changed(&c, 0));
	CHECK(logchange_changed(&c, 2));
	CHECK(!logchange_changed(&c, 2));
	CHECK(logchange_changed(&c, 0));
}

int
main(void)
{
	RUN(test_text_line);
	RUN(test_level_filter);
	RUN(test_text_stays_one_line);
	RUN(test_json_line);
	RUN(test_long_message_truncated);
	RUN(test_level_parse);
	RUN(test_excerpt);
	RUN(test_ratelog_first_n_then_count);
	RUN(test_ratelog_every_nth);
	RUN(test_logchange);
	TEST_MAIN_END();
}
