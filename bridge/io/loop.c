/* The event loop: one libwebsockets context serviced by one thread. Signals
 * arrive through a signalfd adopted as a raw file, cross-thread wake-ups
 * through lws_cancel_service(), timers are lws suls embedded in the caller's
 * objects. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "log.h"
#include "loop.h"
#include "lws_glue.h"

#define LOOP_READ_BUF     (32 * 1024)
#define LOOP_FD_LIMIT     128
#define LOOP_FDS_PER_PEER 8
#define LOOP_MAX_VHOSTS   4
#define PROTO_BASE        "c2m-base"
#define PROTO_SIGNAL      "c2m-signal"
#define PROTO_FD          "c2m-fd"

struct tls_vhost {
	char *ca, *cert, *key;
	struct lws_vhost *vh;
};

struct loop {
	struct lws_context *ctx;
	atomic_bool quit;
	void (*signal_cb)(void *ud, int signo);
	void *signal_ud;
	int sigfd;
	bool destroying;
	sigset_t old_mask;
	struct tls_vhost vhosts[LOOP_MAX_VHOSTS];
	int n_vhosts;
};

struct loop_timer {
	lws_sorted_usec_list_t sul; /* first: lws_container_of needs it */
	struct loop *l;
	void (*cb)(void *ud);
	void *ud;
};

static int base_cb(struct lws *wsi, enum lws_callback_reasons reason,
    void *user, void *in, size_t len);
static int signal_cb(struct lws *wsi, enum lws_callback_reasons reason,
    void *user, void *in, size_t len);
static int fd_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user,
    void *in, size_t len);

struct loop_fd {
	struct lws *wsi;
	void (*cb)(void *ud, int event); /* NULL once closed */
	void *ud;
};

/* protocols[0] is the router for WSI_DESTROY and the wake-up; the raw-file
 * signal protocol only ever lives on the default vhost. */
static const struct lws_protocols protocols[] = {
	{ PROTO_BASE, base_cb, 0, 0, 0, NULL, 0 },
	{ C2M_LWS_PROTO_WS, ws_client_lws_cb, 0, 65536, 0, NULL, 0 },
	{ C2M_LWS_PROTO_HTTP, http_client_lws_cb, 0, 0, 0, NULL, 0 },
	/* ws:// (bridge/README.md#lws-raw-tls): reads are LOOP_READ_BUF */
	{ C2M_LWS_PROTO_RAW, ws_client_lws_cb, 0, 0, 0, NULL, 0 },
	{ PROTO_SIGNAL, signal_cb, 0, 0, 0, NULL, 0 },
	{ PROTO_FD, fd_cb, 0, 0, 0, NULL, 0 },
	{ NULL, NULL, 0, 0, 0, NULL, 0 },
};

static struct loop *
loop_of(struct lws *wsi)
{
	return lws_context_user(lws_get_context(wsi));
}

static int
base_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user,
    void *in, size_t len)
{
	const struct glue_user *g = user;

	switch (reason) {
	case LWS_CALLBACK_WSI_DESTROY:
		if (g == NULL)
			return 0;
		if (g->kind == GLUE_KIND_WS)
			return ws_client_lws_cb(wsi, reason, user, in, len);
		if (g->kind == GLUE_KIND_HTTP)
			return http_client_lws_cb(wsi, reason, user, in, len);
		return 0;
	default:
		break;
	}
	return lws_callback_http_dummy(wsi, reason, NULL, in, len);
}

static void
drain_signals(struct loop *l)
{
	struct signalfd_siginfo si[8];
	ssize_t n;
	size_t i;

	for (;;) {
		n = read(l->sigfd, si, sizeof(si));
		if (n <= 0)
			return;
		for (i = 0; i < (size_t) n / sizeof(si[0]); i++) {
			int signo = (int) si[i].ssi_signo;
			if (l->signal_cb != NULL)
				l->signal_cb(l->signal_ud, signo);
			else if (signo != SIGHUP)
				loop_quit(l);
		}
	}
}

static int
signal_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user,
    void *in, size_t len)
{
	struct loop *l;

	switch (reason) {
	case LWS_CALLBACK_RAW_RX_FILE:
		l = loop_of(wsi);
		if (l != NULL && l->sigfd >= 0)
			drain_signals(l);
		return 0;
	case LWS_CALLBACK_RAW_CLOSE_FILE:
		/* lws closes the adopted fd itself */
		l = loop_of(wsi);
		if (l != NULL)
			l->sigfd = -1;
		return 0;
	default:
		break;
	}
	return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static int
fd_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
    size_t len)
{
	struct loop_fd *w = lws_get_opaque_user_data(wsi);

	switch (reason) {
	case LWS_CALLBACK_RAW_RX_FILE:
		if (w != NULL && w->cb != NULL)
			w->cb(w->ud, LOOP_FD_IN);
		return 0;
	case LWS_CALLBACK_RAW_WRITEABLE_FILE:
		if (w != NULL && w->cb != NULL)
			w->cb(w->ud, LOOP_FD_OUT);
		return 0;
	case LWS_CALLBACK_RAW_CLOSE_FILE:
		/* lws closes the fd itself */
		if (w == NULL)
			return 0;
		lws_set_opaque_user_data(wsi, NULL);
		if (w->cb != NULL && !loop_lws_destroying(loop_of(wsi)))
			w->cb(w->ud, LOOP_FD_GONE);
		free(w);
		return 0;
	default:
		break;
	}
	return lws_callback_http_dummy(wsi, reason, user, in, len);
}

struct loop_fd *
loop_fd_watch(
    struct loop *l, int fd, void (*cb)(void *ud, int event), void *ud)
{
	lws_sock_file_fd_type f;
	struct loop_fd *w = calloc(1, sizeof(*w));

	if (w == NULL) {
		close(fd);
		return NULL;
	}
	f.filefd = fd;
	w->wsi = lws_adopt_descriptor_vhost(
	    lws_get_vhost_by_name(l->ctx, "default"), LWS_ADOPT_RAW_FILE_DESC,
	    f, PROTO_FD, NULL);
	if (w->wsi == NULL) { /* lws closed the fd already */
		free(w);
		return NULL;
	}
	w->cb = cb;
	w->ud = ud;
	lws_set_opaque_user_data(w->wsi, w);
	return w;
}

void
loop_fd_want_write(struct loop_fd *w)
{
	if (w != NULL && w->cb != NULL)
		lws_callback_on_writable(w->wsi);
}

void
loop_fd_close(struct loop_fd *w)
{
	if (w == NULL || w->cb == NULL)
		return;
	w->cb = NULL;
	/* closed (and w freed) by the loop, outside any callback of it */
	lws_set_timeout(
	    w->wsi, PENDING_TIMEOUT_KILLED_BY_PARENT, LWS_TO_KILL_ASYNC);
}

/* lws' own log lines: errors and warnings always, notices at debug only. */
static void
lws_log_emit(int level, const char *line)
{
	size_t n = strlen(line);
	enum log_level lvl = LOG_LVL_DEBUG;

	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		n--;
	if (level & LLL_ERR)
		lvl = LOG_LVL_ERROR;
	else if (level & LLL_WARN)
		lvl = LOG_LVL_WARN;
	log_msg(lvl, "lws", "%.*s", (int) n, line);
}

static int
setup_signals(struct loop *l)
{
	sigset_t set;

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	/* blocked before anything else runs, so no handler ever fires and
	 * threads created later (libmosquitto's) inherit the mask */
	if (pthread_sigmask(SIG_BLOCK, &set, &l->old_mask) != 0)
		return BR_EIO;
	l->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (l->sigfd < 0) {
		log_error("loop", "signalfd: %s", strerror(errno));
		pthread_sigmask(SIG_SETMASK, &l->old_mask, NULL);
		return BR_EIO;
	}
	return BR_OK;
}

static void
restore_signals(struct loop *l)
{
	sigset_t set;
	struct timespec zero = { 0, 0 };

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	/* consume what is still pending so unblocking does not kill us */
	while (sigtimedwait(&set, NULL, &zero) > 0)
		;
	pthread_sigmask(SIG_SETMASK, &l->old_mask, NULL);
}

static void
exit_at_once(int signo)
{
	(void) signo;
	_exit(1);
}

/* A handler that only calls _exit (async-signal-safe), and the two
 * signals unblocked in the calling thread: the other threads keep them
 * blocked, so they arrive here. */
void
loop_exit_on_signal(struct loop *l)
{
	struct sigaction sa = { 0 };
	sigset_t set;

	(void) l;
	sa.sa_handler = exit_at_once;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

struct loop *
loop_create(void)
{
	return loop_create_tls(true);
}

struct loop *
loop_create_tls(bool tls)
{
	return loop_create_for(tls, 0);
}

/* lws refuses a descriptor past its table ("Too many fds"), and so does the
 * kernel past RLIMIT_NOFILE. */
static unsigned
fd_room(unsigned peers)
{
	unsigned want = LOOP_FD_LIMIT + LOOP_FDS_PER_PEER * peers;
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < want
	    && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			log_warn("loop", "cannot raise the descriptor limit");
	}
	return want;
}

struct loop *
loop_create_for(bool tls, unsigned peers)
{
	struct lws_context_creation_info info;
	struct loop *l;
	lws_sock_file_fd_type fd;
	int mask = LLL_ERR | LLL_WARN;

	l = calloc(1, sizeof(*l));
	if (l == NULL)
		return NULL;
	l->sigfd = -1;
	atomic_init(&l->quit, false);
	if (setup_signals(l) != BR_OK) {
		free(l);
		return NULL;
	}

	if (log_get_level() >= LOG_LVL_DEBUG)
		mask |= LLL_NOTICE;
	lws_set_log_level(mask, lws_log_emit);

	memset(&info, 0, sizeof(info));
	info.port = CONTEXT_PORT_NO_LISTEN;
	info.protocols = protocols;
	/* info.extensions stays NULL: permessage-deflate corrupts memory in
	 * 4.1.6 when the peer sends uncompressed frames */
	/* OpenSSL's initialisation and the system CA bundle cost about 4 MiB
	 * of RSS: only pay for them when ComfyUI is reached over TLS */
	info.options = tls ? LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT : 0;
	info.fd_limit_per_thread = fd_room(peers);
	/* the read size for WebSocket frames (default 4 KiB): under load one
	 * read then takes a whole burst of events, so a pass of the loop (and
	 * the broker write it ends with) carries dozens of events */
	info.pt_serv_buf_size = LOOP_READ_BUF;
	info.user = l;
	l->ctx = lws_create_context(&info);
	if (l->ctx == NULL) {
		log_error("loop", "lws_create_context failed");
		goto fail;
	}

	fd.filefd = l->sigfd;
	if (lws_adopt_descriptor_vhost(
	        lws_get_vhost_by_name(l->ctx, "default"),
	        LWS_ADOPT_RAW_FILE_DESC, fd, PROTO_SIGNAL, NULL)
	    == NULL) {
		/* lws closed the fd already */
		l->sigfd = -1;
		log_error("loop", "cannot watch the signal fd");
		goto fail;
	}
	return l;

fail:
	if (l->ctx != NULL)
		lws_context_destroy(l->ctx);
	if (l->sigfd >= 0)
		close(l->sigfd);
	restore_signals(l);
	free(l);
	return NULL;
}

/* Destroys the context (lws closes every wsi, then the signal fd) and
 * restores the signal mask. Timers must be destroyed before. */
void
loop_destroy(struct loop *l)
{
	int i;

	if (l == NULL)
		return;
	l->destroying = true;
	lws_context_destroy(l->ctx);
	for (i = 0; i < l->n_vhosts; i++) {
		free(l->vhosts[i].ca);
		free(l->vhosts[i].cert);
		free(l->vhosts[i].key);
	}
	restore_signals(l);
	free(l);
}

/* lws_service() ignores its timeout and may block until the next sul or fd
 * event: loop_quit() from another thread cancels that wait. */
int
loop_run(struct loop *l)
{
	while (!atomic_exchange(&l->quit, false)) {
		lws_service(l->ctx, 0);
	}
	return 0;
}

void
loop_quit(struct loop *l)
{
	atomic_store(&l->quit, true);
	lws_cancel_service(l->ctx);
}

void
loop_set_signal_cb(struct loop *l, void (*cb)(void *ud, int signo), void *ud)
{
	l->signal_cb = cb;
	l->signal_ud = ud;
}

static void
timer_fire(lws_sorted_usec_list_t *sul)
{
	struct loop_timer *t = lws_container_of(sul, struct loop_timer, sul);

	/* lws unlinked the sul before calling: cb may re-arm or destroy t */
	t->cb(t->ud);
}

/* Allocates a disarmed timer; cb is called from the loop thread. */
struct loop_timer *
loop_timer_create(struct loop *l, void (*cb)(void *ud), void *ud)
{
	struct loop_timer *t;

	if (l == NULL || cb == NULL)
		return NULL;
	t = calloc(1, sizeof(*t));
	if (t == NULL)
		return NULL;
	t->l = l;
	t->cb = cb;
	t->ud = ud;
	return t;
}

void
loop_timer_arm(struct loop_timer *t, int64_t delay_ms)
{
	if (delay_ms < 0)
		delay_ms = 0;
	lws_sul_schedule(t->l->ctx, 0, &t->sul, timer_fire,
	    (lws_usec_t) delay_ms * LWS_US_PER_MS);
}

void
loop_timer_cancel(struct loop_timer *t)
{
	if (t != NULL)
		lws_sul_cancel(&t->sul);
}

bool
loop_timer_pending(const struct loop_timer *t)
{
	return t != NULL && !lws_dll2_is_detached(&t->sul.list);
}

/* Cancels and frees t (also allowed from inside its own callback). */
void
loop_timer_destroy(struct loop_timer *t)
{
	if (t == NULL)
		return;
	lws_sul_cancel(&t->sul);
	free(t);
}

int64_t
loop_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
loop_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool
loop_lws_destroying(const struct loop *l)
{
	return l->destroying;
}

struct lws_context *
loop_lws_context(struct loop *l)
{
	return l->ctx;
}

static bool
same_path(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

static char *
dup_or_null(const char *s, bool *failed)
{
	char *d;

	if (s == NULL)
		return NULL;
	d = strdup(s);
	if (d == NULL)
		*failed = true;
	return d;
}

struct lws_vhost *
loop_lws_client_vhost(struct loop *l, const struct tls_opts *tls)
{
	struct lws_context_creation_info info;
	struct tls_vhost *tv;
	char name[32];
	bool failed = false;
	int i;

	if (tls == NULL
	    || (tls->ca == NULL && tls->cert == NULL && tls->key == NULL))
		return lws_get_vhost_by_name(l->ctx, "default");
	for (i = 0; i < l->n_vhosts; i++) {
		tv = &l->vhosts[i];
		if (same_path(tv->ca, tls->ca)
		    && same_path(tv->cert, tls->cert)
		    && same_path(tv->key, tls->key))
			return tv->vh;
	}
	if (l->n_vhosts == LOOP_MAX_VHOSTS) {
		log_error("loop", "too many distinct TLS settings");
		return NULL;
	}

	tv = &l->vhosts[l->n_vhosts];
	memset(&info, 0, sizeof(info));
	snprintf(name, sizeof(name), "c2m-tls-%d", l->n_vhosts);
	info.vhost_name = name;
	info.port = CONTEXT_PORT_NO_LISTEN;
	info.protocols = protocols;
	info.options = LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
	info.client_ssl_ca_filepath = tls->ca;
	info.client_ssl_cert_filepath = tls->cert;
	info.client_ssl_private_key_filepath = tls->key;
	tv->vh = lws_create_vhost(l->ctx, &info);
	if (tv->vh == NULL) {
		log_error(
		    "loop", "cannot load the TLS CA/certificate/key files");
		return NULL;
	}
	tv->ca = dup_or_null(tls->ca, &failed);
	tv->cert = dup_or_null(tls->cert, &failed);
	tv->key = dup_or_null(tls->key, &failed);
	l->n_vhosts++;
	if (failed)
		log_warn("loop", "out of memory caching TLS settings");
	return tv->vh;
}

static bool
is_tchar(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
	    || (c >= '0' && c <= '9') || strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int
split_header(const char *s, struct glue_header *h)
{
	const char *colon = s, *v;
	size_t nlen;

	while (*colon != '\0' && is_tchar((unsigned char) *colon))
		colon++;
	if (colon == s || *colon != ':')
		return BR_EINVAL;
	for (v = colon + 1; *v != '\0'; v++)
		if (*v == '\r' || *v == '\n')
			return BR_EINVAL;
	v = colon + 1;
	while (*v == ' ' || *v == '\t')
		v++;
	nlen = (size_t) (colon - s) + 1;
	h->name = strndup(s, nlen);
	h->value = strdup(v);
	if (h->name == NULL || h->value == NULL)
		return BR_ENOMEM;
	return BR_OK;
}

/* Returns a new string (owned by the caller). */
char *
glue_asprintf(const char *fmt, ...)
{
	va_list ap;
	char *d;

	va_start(ap, fmt);
	if (vasprintf(&d, fmt, ap) < 0)
		d = NULL;
	va_end(ap);
	return d;
}

int
glue_headers_copy(
    char *const *src, int n, struct glue_header **out, const char *log_src)
{
	struct glue_header *h;
	int i, rc;

	*out = NULL;
	if (n <= 0)
		return BR_OK;
	h = calloc((size_t) n, sizeof(*h));
	if (h == NULL)
		return BR_ENOMEM;
	for (i = 0; i < n; i++) {
		rc = src[i] == NULL ? BR_EINVAL : split_header(src[i], &h[i]);
		if (rc != BR_OK) {
			if (rc == BR_EINVAL)
				log_error(log_src,
				    "extra header #%d is not \"Name: "
				    "value\"",
				    i + 1);
			glue_headers_free(h, n);
			return rc;
		}
	}
	*out = h;
	return BR_OK;
}

void
glue_headers_free(struct glue_header *h, int n)
{
	int i;

	if (h == NULL)
		return;
	for (i = 0; i < n; i++) {
		free(h[i].name);
		free(h[i].value);
	}
	free(h);
}

int
glue_headers_append(
    struct lws *wsi, const struct glue_header *h, int n, void *in, size_t len)
{
	unsigned char **p = in, *end = *p + len;
	int i;

	for (i = 0; i < n; i++)
		if (lws_add_http_header_by_name(wsi,
		        (const unsigned char *) h[i].name,
		        (const unsigned char *) h[i].value,
		        (int) strlen(h[i].value), p, end)
		    != 0)
			return -1;
	return 0;
}
