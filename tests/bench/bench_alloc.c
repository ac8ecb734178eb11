/* LD_PRELOAD allocation counter for the bridge under benchmark. Counts
 * malloc/calloc/realloc/aligned allocations by the module that called
 * them (the bridge executable, libmosquitto, libwebsockets, libc itself
 * e.g. strdup, anything else) and by thread (the process's main thread,
 * which runs the bridge's event loop, or another thread such as
 * libmosquitto's). The counters live in a file mapping named by
 * C2M_BENCH_ALLOC_FILE so the driver reads them at the start and end of
 * its measured window; nothing is toggled inside the bridge. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <fcntl.h>
#include <link.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "bench_alloc.h"

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

struct range {
	uintptr_t lo, hi;
	int mod;
};

static struct range ranges[32];
static int n_ranges;
static struct bench_alloc_counts *counts;
static pid_t main_tid;

static int
classify_object(const char *name)
{
	if (name == NULL || name[0] == '\0')
		return BENCH_MOD_EXE;
	if (strstr(name, "libmosquitto") != NULL)
		return BENCH_MOD_MOSQ;
	if (strstr(name, "libwebsockets") != NULL)
		return BENCH_MOD_LWS;
	if (strstr(name, "/libc.so") != NULL)
		return BENCH_MOD_LIBC;
	return -1;
}

static int
add_object(struct dl_phdr_info *info, size_t size, void *ud)
{
	int mod = classify_object(info->dlpi_name);
	if (mod < 0)
		return 0;
	for (int i = 0; i < info->dlpi_phnum && n_ranges < 32; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
			continue;
		ranges[n_ranges].lo = info->dlpi_addr + ph->p_vaddr;
		ranges[n_ranges].hi
		    = info->dlpi_addr + ph->p_vaddr + ph->p_memsz;
		ranges[n_ranges].mod = mod;
		n_ranges++;
	}
	return 0;
}

__attribute__((constructor)) static void
bench_alloc_init(void)
{
	const char *path = getenv("C2M_BENCH_ALLOC_FILE");
	if (path == NULL)
		return;
	int fd = open(path, O_RDWR | O_CREAT, 0600);
	if (fd < 0)
		return;
	if (ftruncate(fd, sizeof(struct bench_alloc_counts)) != 0) {
		close(fd);
		return;
	}
	void *p = mmap(NULL, sizeof(struct bench_alloc_counts),
	    PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (p == MAP_FAILED)
		return;
	main_tid = getpid();
	dl_iterate_phdr(add_object, NULL);
	counts = p;
}

static void
count(const void *caller)
{
	struct bench_alloc_counts *c = counts;
	if (c == NULL)
		return;
	int mod = BENCH_MOD_OTHER;
	uintptr_t a = (uintptr_t) caller;
	for (int i = 0; i < n_ranges; i++)
		if (a >= ranges[i].lo && a < ranges[i].hi) {
			mod = ranges[i].mod;
			break;
		}
	/* gettid once per thread: a system call per allocation would add
	 * microseconds per event to the very CPU figure being measured */
	static __thread __attribute__((tls_model("initial-exec"))) int thr
	    = -1;
	if (thr < 0)
		thr = (pid_t) syscall(SYS_gettid) == main_tid ? 0 : 1;
	atomic_fetch_add_explicit(&c->n[thr][mod], 1, memory_order_relaxed);
}

void *
malloc(size_t n)
{
	count(__builtin_return_address(0));
	return __libc_malloc(n);
}

void *
calloc(size_t n, size_t size)
{
	count(__builtin_return_address(0));
	return __libc_calloc(n, size);
}

void *
realloc(void *p, size_t n)
{
	count(__builtin_return_address(0));
	return __libc_realloc(p, n);
}

void *
aligned_alloc(size_t align, size_t n)
{
	count(__builtin_return_address(0));
	return __libc_memalign(align, n);
}

void *
memalign(size_t align, size_t n)
{
	count(__builtin_return_address(0));
	return __libc_memalign(align, n);
}

int
posix_memalign(void **out, size_t align, size_t n)
{
	count(__builtin_return_address(0));
	void *p = __libc_memalign(align, n);
	if (p == NULL)
		return 12; /* ENOMEM */
	*out = p;
	return 0;
}

/* What-if experiment, off unless C2M_BENCH_NODELAY=1: every TCP socket
 * the bridge connects gets TCP_NODELAY, i.e. the bridge as if it set
 * MOSQ_OPT_TCP_NODELAY. Used to measure that recommendation (README);
 * never part of the normal figures. */
int
connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	static int (*real_connect)(int, const struct sockaddr *, socklen_t);
	if (real_connect == NULL)
		real_connect = (int (*)(int, const struct sockaddr *,
		    socklen_t)) dlsym(RTLD_NEXT, "connect");
	const char *on = getenv("C2M_BENCH_NODELAY");
	if (on != NULL && on[0] == '1' && addr != NULL
	    && (addr->sa_family == AF_INET || addr->sa_family == AF_INET6)) {
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	return real_connect(fd, addr, len);
}
