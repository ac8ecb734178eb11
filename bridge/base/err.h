/* The one error vocabulary: every fallible function returns 0 for success
 * or one of these. Why an input was refused is counted by the caller (the
 * health payload's rejected-by-reason counters), not returned as a type of
 * its own. */
#ifndef C2M_ERR_H
#define C2M_ERR_H

enum br_err {
	BR_OK = 0,
	BR_ENOMEM = -1, /* allocation failed */
	BR_EINVAL = -2, /* bad argument or malformed input */
	BR_ETRUNC = -3, /* output did not fit; result truncated */
	BR_EFULL = -4, /* a bound was reached */
	BR_ENOTFOUND = -5, /* no such key / item */
	BR_ERANGE = -6, /* number out of range */
	BR_EIO = -7, /* I/O or system call failed (see errno) */
	BR_ESTATE = -8, /* call not valid in the current state */
	BR_EUTF8 = -9, /* invalid UTF-8 */
	BR_EDEPTH = -10, /* nesting too deep */
	BR_ETOKENS = -11, /* more JSON tokens than the configured bound */
	BR_ETYPE = -12, /* a field or document has the wrong JSON type */
	BR_EEMPTY = -13, /* input empty (or whitespace only) */
	BR_ESYNTAX = -14, /* input does not follow its grammar (not JSON) */
	BR_ESHORT = -15, /* input ends before a length it declares */
	BR_EUNSUPPORTED = -16, /* a kind of input the bridge does not know */
};

/* Returns a static, human-readable sentence for an enum br_err value. */
const char *br_strerror(int err);

#endif
