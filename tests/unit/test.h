/* Minimal test harness: one executable per module, each TEST is a function,
 * failures print both values and the line, the exit code is the failure count.
 */
#ifndef C2M_TEST_H
#define C2M_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_failures;
static int test_checks;
static const char *test_current;

#define TEST_FAIL(...)                                                        \
	do {                                                                  \
		test_failures++;                                              \
		fprintf(                                                      \
		    stderr, "%s:%d: %s: ", __FILE__, __LINE__, test_current); \
		fprintf(stderr, __VA_ARGS__);                                 \
		fputc('\n', stderr);                                          \
	} while (0)

#define CHECK(cond)                                                           \
	do {                                                                  \
		test_checks++;                                                \
		if (!(cond))                                                  \
			TEST_FAIL("CHECK(%s) failed", #cond);                 \
	} while (0)

#define CHECK_INT(a, b)                                                       \
	do {                                                                  \
		long long va_ = (long long) (a), vb_ = (long long) (b);       \
		test_checks++;                                                \
		if (va_ != vb_)                                               \
			TEST_FAIL("%s == %lld, expected %s == %lld", #a, va_, \
			    #b, vb_);                                         \
	} while (0)

#define CHECK_STR(a, b)                                                       \
	do {                                                                  \
		const char *sa_ = (a), *sb_ = (b);                            \
		test_checks++;                                                \
		if (sa_ == NULL || sb_ == NULL || strcmp(sa_, sb_) != 0)      \
			TEST_FAIL("%s == \"%s\", expected \"%s\"", #a,        \
			    sa_ ? sa_ : "(null)", sb_ ? sb_ : "(null)");      \
	} while (0)

#define CHECK_MEM(a, alen, b, blen)                                           \
	do {                                                                  \
		size_t la_ = (alen), lb_ = (blen);                            \
		test_checks++;                                                \
		if (la_ != lb_ || memcmp((a), (b), la_) != 0)                 \
			TEST_FAIL(                                            \
			    "%s (%zu bytes: %.*s) != %s (%zu bytes: %.*s)",   \
			    #a, la_, (int) la_, (const char *) (a), #b, lb_,  \
			    (int) lb_, (const char *) (b));                   \
	} while (0)

#define RUN(fn)                                                               \
	do {                                                                  \
		test_current = #fn;                                           \
		fn();                                                         \
	} while (0)

#define TEST_MAIN_END()                                                       \
	do {                                                                  \
		if (test_checks == 0) {                                       \
			fprintf(stderr, "no checks ran\n");                   \
			return 1;                                             \
		}                                                             \
		fprintf(stderr, "%d checks, %d failures\n", test_checks,      \
		    test_failures);                                           \
		return test_failures ? 1 : 0;                                 \
	} while (0)

/* Reads a whole file into a NUL-terminated malloc'd buffer; aborts on error.
 */
static inline char *
test_read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "cannot open %s\n", path);
		exit(2);
	}
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *buf = malloc((size_t) n + 1);
	if (!buf || fread(buf, 1, (size_t) n, f) != (size_t) n) {
		fprintf(stderr, "cannot read %s\n", path);
		exit(2);
	}
	buf[n] = '\0';
	fclose(f);
	if (len)
		*len = (size_t) n;
	return buf;
}

/* Directory of the shared traces (env C2M_TRACES_DIR, set by ctest). */
static inline const char *
test_traces_dir(void)
{
	const char *d = getenv("C2M_TRACES_DIR");
	return d ? d : "tests/data/traces";
}

#endif
