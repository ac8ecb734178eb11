/* Error codes shared by every module: 0 is success, negative is failure. */
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
	BR_ETYPE = -12, /* a field has the wrong JSON type */
};

/* Returns a static, human-readable sentence for an enum br_err value. */
const char *br_strerror(int err);

#endif
