#include "err.h"

const char *
br_strerror(int err)
{
	switch (err) {
	case BR_OK:
		return "success";
	case BR_ENOMEM:
		return "out of memory";
	case BR_EINVAL:
		return "invalid argument or malformed input";
	case BR_ETRUNC:
		return "output truncated";
	case BR_EFULL:
		return "bound reached";
	case BR_ENOTFOUND:
		return "not found";
	case BR_ERANGE:
		return "number out of range";
	case BR_EIO:
		return "I/O error";
	case BR_ESTATE:
		return "not valid in the current state";
	case BR_EUTF8:
		return "invalid UTF-8";
	case BR_EDEPTH:
		return "nesting too deep";
	case BR_ETOKENS:
		return "too many JSON tokens";
	case BR_ETYPE:
		return "wrong JSON type";
	case BR_EEMPTY:
		return "empty input";
	case BR_ESYNTAX:
		return "syntax error";
	case BR_ESHORT:
		return "input shorter than it declares";
	case BR_EUNSUPPORTED:
		return "unsupported kind of input";
	}
	return "unknown error";
}
