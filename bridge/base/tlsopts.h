/* TLS settings shared by the broker link and the ComfyUI connections. */
#ifndef C2M_TLSOPTS_H
#define C2M_TLSOPTS_H

#include <stdbool.h>

/* Borrowed strings; NULL means "not set" (system CAs, no client cert). */
struct tls_opts {
	const char *ca;
	const char *cert;
	const char *key;
	bool insecure; /* skip verification: warned about on every connect */
};

#endif
