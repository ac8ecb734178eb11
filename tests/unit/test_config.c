/* config: precedence defaults < file < environment < flags, every error
 * path and its exit code, secrets kept out of errors, --help and JSON,
 * derived ids, sizes, lists. */
#include "test.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdbool.h>
#include <unistd.h>

#include "config.h"
#include "jsonw.h"
#include "log.h"

#include "config_load.h"

#define SECRET "Zebra-S3cr3t-91x"

static char tmpdir[] = "/tmp/c2m-test-config-XXXXXX";
static int tmp_serial;

/* Writes text into a fresh file in tmpdir; returns its path (static). */
static const char *
write_temp(const char *text)
{
	static char paths[64][256];
	char *path = paths[tmp_serial % 64];
	FILE *f;

	snprintf(path, 256, "%s/f%d", tmpdir, tmp_serial++);
	f = fopen(path, "w");
	if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
		perror(path);
		exit(2);
	}
	return path;
}

static FILE *capture_file;
static int saved_stderr = -1;

static void
capture_begin(void)
{
	fflush(stderr);
	capture_file = tmpfile();
	saved_stderr = dup(2);
	dup2(fileno(capture_file), 2);
}

static char *
capture_end(void)
{
	off_t n;
	char *buf;

	fflush(stderr);
	dup2(saved_stderr, 2);
	close(saved_stderr);
	n = lseek(fileno(capture_file), 0, SEEK_END);
	buf = calloc(1, (size_t) n + 1);
	lseek(fileno(capture_file), 0, SEEK_SET);
	if (read(fileno(capture_file), buf, (size_t) n) != n)
		buf[0] = '\0';
	fclose(capture_file);
	return buf;
}

static char *
read_stream(FILE *f)
{
	long n;
	char *buf;

	fflush(f);
	n = ftell(f);
	buf = calloc(1, (size_t) n + 1);
	rewind(f);
	if (fread(buf, 1, (size_t) n, f) != (size_t) n)
		buf[0] = '\0';
	return buf;
}

static void
test_defaults(void)
{
	struct config c;

	CHECK_INT(load(&c, NULL, NULL), CONFIG_OK);
	CHECK_INT(c.n_servers, 1);
	CHECK_STR(c.server[0].comfy.host, "127.0.0.1");
	CHECK_INT(c.server[0].comfy.port, 8188);
	CHECK_STR(c.broker.host, "127.0.0.1");
	CHECK_INT(c.broker.port, 1883);
	CHECK_STR(c.prefix, "comfyui");
	CHECK_STR(c.server[0].instance, "127.0.0.1");
	CHECK_STR(c.server[0].client_id, "comfy2mqtt-127.0.0.1");
	CHECK_STR(c.ha_prefix, "homeassistant");
	CHECK_INT(c.mqtt_protocol, MQTT_PROTO_5);
	CHECK_INT(c.mqtt_keepalive, 30);
	CHECK_INT(c.state_ttl, 86400);
	CHECK_INT(c.queue_max_messages, 100000);
	CHECK_INT(c.queue_max_bytes, 64 * 1024 * 1024);
	CHECK(!c.commands);
	CHECK_INT(c.command_max_bytes, 4 * 1024 * 1024);
	CHECK_INT(c.preview_max_bytes, 1024 * 1024);
	CHECK_INT(c.max_frame_bytes, 16 * 1024 * 1024);
	CHECK_INT(c.max_tokens, 8192);
	CHECK_INT(c.history_items, 20);
	CHECK_INT(c.health_interval, 30);
	CHECK(c.preview_rate == 2.0);
	CHECK(!c.previews && !c.ha_discovery && !c.print && !c.tls_insecure);
	CHECK_INT(c.log_level, LOG_LVL_INFO);
	CHECK_INT(c.log_format, LOG_FMT_TEXT);
	CHECK_INT(c.n_events, 0);
	CHECK_INT(c.n_comfyui_headers, 0);
	CHECK(c.mqtt_password == NULL && c.mqtt_username == NULL);
	CHECK(c.config_file == NULL);
	config_free(&c);
	CHECK(c.prefix == NULL);
}

static void
test_precedence(void)
{
	struct config c;
	char env_prefix[] = "COMFY2MQTT_PREFIX=envp";
	char env_keep[] = "COMFY2MQTT_MQTT_KEEPALIVE=50";
	char env_prev[] = "COMFY2MQTT_PREVIEWS=off";
	char env_events[] = "COMFY2MQTT_EVENTS=x,y,z";
	char unrelated[] = "HOME=/root";
	char *envp[]
	    = { unrelated, env_prefix, env_keep, env_prev, env_events, NULL };
	const char *file = write_temp("prefix = filep\n"
	                              "mqtt_keepalive = 40\n"
	                              "previews = yes\n"
	                              "ha-discovery = on\n"
	                              "queue-max-bytes = 1M\n"
	                              "preview-rate = 0.5\n"
	                              "events = a,b\n");

	/* file only */
	CHECK_INT(load(&c, NULL, "--config", file, NULL), CONFIG_OK);
	CHECK_STR(c.prefix, "filep");
	CHECK_INT(c.mqtt_keepalive, 40);
	CHECK(c.previews);
	CHECK(c.ha_discovery);
	CHECK_INT(c.queue_max_bytes, 1024 * 1024);
	CHECK(c.preview_rate == 0.5);
	CHECK_INT(c.n_events, 2);
	CHECK_STR(c.config_file, file);
	config_free(&c);

	/* environment beats the file, for strings, ints, bools and lists */
	CHECK_INT(load(&c, envp, "--config", file, NULL), CONFIG_OK);
	CHECK_STR(c.prefix, "envp");
	CHECK_INT(c.mqtt_keepalive, 50);
	CHECK(!c.previews);
	CHECK(c.ha_discovery);
	CHECK_INT(c.n_events, 3);
	CHECK_STR(c.events[0], "x");
	config_free(&c);

	/* flags beat both */
	CHECK_INT(load(&c, envp, "--config", file, "--prefix", "flagp",
	              "--mqtt-keepalive=60", "--previews", "--events", "only",
	              "--preview-rate", "3", NULL),
	    CONFIG_OK);
	CHECK_STR(c.prefix, "flagp");
	CHECK_INT(c.mqtt_keepalive, 60);
	CHECK(c.previews);
	CHECK_INT(c.n_events, 1);
	CHECK_STR(c.events[0], "only");
	CHECK(c.preview_rate == 3.0);
	CHECK_INT(c.queue_max_bytes, 1024 * 1024);
	config_free(&c);

	/* an explicit false flag beats a true below it */
	CHECK_INT(
	    load(&c, NULL, "--config", file, "--ha-discovery=false", NULL),
	    CONFIG_OK);
	CHECK(!c.ha_discovery);
	config_free(&c);
}

static void
test_config_from_environment(void)
{
	struct config c;
	const char *file_a = write_temp("instance = from-a\n");
	const char *file_b = write_temp("instance = from-b\n");
	char env_cfg[300];
	char *envp[] = { env_cfg, NULL };

	snprintf(env_cfg, sizeof env_cfg, "COMFY2MQTT_CONFIG=%s", file_a);
	CHECK_INT(load(&c, envp, NULL), CONFIG_OK);
	CHECK_STR(c.server[0].instance, "from-a");
	config_free(&c);
	CHECK_INT(load(&c, envp, "--config", file_b, NULL), CONFIG_OK);
	CHECK_STR(c.server[0].instance, "from-b");
	config_free(&c);
}

static void
test_process_environment(void)
{
	struct config c;

	setenv("COMFY2MQTT_PREFIX", "procenv", 1);
	CHECK_INT(config_load(&c, 1, (char *[]) { "comfy2mqtt", NULL }, NULL,
	              err, sizeof err, NULL),
	    CONFIG_OK);
	CHECK_STR(c.prefix, "procenv");
	config_free(&c);
	unsetenv("COMFY2MQTT_PREFIX");
}

static void
test_file_syntax(void)
{
	struct config c;
	const char *file
	    = write_temp("# a comment\n"
	                 "\n"
	                 "   \t\n"
	                 "  MQTT_USERNAME   =   bridge  \n"
	                 "mqtt-password = pa#ss word\n"
	                 "prefix = \"quoted/prefix\"   # trailing comment\n"
	                 "comfyui-header = \"X-One: 1\"\n"
	                 "comfyui_header = X-Two:2\n"
	                 "instance=\"\"\n");

	CHECK_INT(load(&c, NULL, "--config", file, NULL), CONFIG_OK);
	CHECK_STR(c.mqtt_username, "bridge");
	CHECK_STR(c.mqtt_password, "pa#ss word");
	CHECK_STR(c.prefix, "quoted/prefix");
	CHECK_INT(c.n_comfyui_headers, 2);
	CHECK_STR(c.comfyui_header[0], "X-One: 1");
	CHECK_STR(c.comfyui_header[1], "X-Two: 2");
	CHECK_STR(
	    c.server[0].instance, "127.0.0.1"); /* "" means unset: derived */
	config_free(&c);
}

static void
test_number_errors(void)
{
	char bad_env[] = "COMFY2MQTT_STATE_TTL=abc";
	char *envp[] = { bad_env, NULL };

	CHECK_INT(load_fail(NULL, "--state-ttl", "abc", NULL), CONFIG_USAGE);
	CHECK_STR(err,
	    "--state-ttl: \"abc\" is not a number of seconds "
	    "(hint: --state-ttl 86400)");
	CHECK_INT(load_fail(NULL, "--state-ttl", "10x", NULL), CONFIG_USAGE);
	CHECK_INT(load_fail(NULL, "--state-ttl", "0", NULL), CONFIG_USAGE);
	CHECK(contains(err, "out of range"));
	CHECK_INT(
	    load_fail(NULL, "--mqtt-keepalive", "2", NULL), CONFIG_USAGE);
	CHECK(contains(err, "--mqtt-keepalive: 2 is out of range 5..3600"));
	CHECK_INT(load_fail(NULL, "--mqtt-keepalive",
	              "99999999999999999999999", NULL),
	    CONFIG_USAGE);
	CHECK(contains(err, "out of range"));
	CHECK_INT(
	    load_fail(NULL, "--history-items", "1001", NULL), CONFIG_USAGE);
	CHECK_INT(load_fail(NULL, "--max-tokens", "63", NULL), CONFIG_USAGE);
	CHECK_INT(
	    load_fail(NULL, "--health-interval", "", NULL), CONFIG_USAGE);
	CHECK_INT(
	    load_fail(NULL, "--queue-max-messages", "9", NULL), CONFIG_USAGE);
	CHECK_INT(load_fail(NULL, "--preview-rate", "0", NULL), CONFIG_USAGE);
	CHECK_INT(
	    load_fail(NULL, "--preview-rate", "nan", NULL), CONFIG_USAGE);
	CHECK_INT(load_fail(NULL, "--preview-rate", "-1", NULL), CONFIG_USAGE);
	CHECK_INT(load_fail(envp, NULL), CONFIG_USAGE);
	CHECK(contains(err, "COMFY2MQTT_STATE_TTL: \"abc\""));
	CHECK(contains(err, "hint: COMFY2MQTT_STATE_TTL=86400"));
}

static void
test_sizes(void)
{
	struct config c;

	CHECK_INT(
	    load(&c, NULL, "--queue-max-bytes", "64K", "--max-frame-bytes",
	        "2M", "--preview-max-bytes", "100000", NULL),
	    CONFIG_OK);
	CHECK_INT(c.queue_max_bytes, 65536);
	CHECK_INT(c.max_frame_bytes, 2 * 1024 * 1024);
	CHECK_INT(c.preview_max_bytes, 100000);
	config_free(&c);
	CHECK_INT(load(&c, NULL, "--queue-max-bytes", "1G",
	              "--max-frame-bytes", "3MiB", NULL),
	    CONFIG_OK);
	CHECK_INT(c.queue_max_bytes, 1024LL * 1024 * 1024);
	CHECK_INT(c.max_frame_bytes, 3 * 1024 * 1024);
	config_free(&c);
	CHECK_INT(
	    load(&c, NULL, "--queue-max-bytes", "128kb", NULL), CONFIG_OK);
	CHECK_INT(c.queue_max_bytes, 128 * 1024);
	config_free(&c);
	CHECK_INT(
	    load(&c, NULL, "--commands", "--command-max-bytes", "1K", NULL),
	    CONFIG_OK);
	CHECK(c.commands);
	CHECK_INT(c.command_max_bytes, 1024);
	config_free(&c);
	CHECK_INT(load_fail(NULL, "--command-max-bytes", "1023", NULL),
	    CONFIG_USAGE);
	CHECK_INT(
	    load_fail(NULL, "--command-max-bytes", "65M", NULL), CONFIG_USAGE);

	CHECK_INT(
	    load_fail(NULL, "--queue-max-bytes", "63K", NULL), CONFIG_USAGE);
	CHECK(contains(err, "out of range"));
	CHECK_INT(
	    load_fail(NULL, "--queue-max-bytes", "10X", NULL), CONFIG_USAGE);
	CHECK(contains(err, "not a size in bytes"));
	CHECK_INT(
	    load_fail(NULL, "--queue-max-bytes", "-1", NULL), CONFIG_USAGE);
	CHECK_INT(load_fail(NULL, "--preview-max-bytes",
	              "99999999999999999999G", NULL),
	    CONFIG_USAGE);
	CHECK_INT(
	    load_fail(NULL, "--max-frame-bytes", "16777216000000G", NULL),
	    CONFIG_USAGE);
}

static void
test_flag_errors(void)
{
	CHECK_INT(load_fail(NULL, "--prefx", "x", NULL), CONFIG_USAGE);
	CHECK(contains(err, "unknown option --prefx"));
	CHECK(contains(err, "did you mean --prefix?"));
	CHECK_INT(load_fail(NULL, "--zzzzzzzzzzzz", NULL), CONFIG_USAGE);
	CHECK(contains(err, "unknown option --zzzzzzzzzzzz"));
	CHECK_INT(load_fail(NULL, "--prefix", NULL), CONFIG_USAGE);
	CHECK_STR(err, "--prefix: missing value (hint: --prefix comfyui)");
	CHECK_INT(
	    load_fail(NULL, "--prefix", "--previews", NULL), CONFIG_USAGE);
	CHECK(contains(err, "missing value"));
	CHECK_INT(load_fail(NULL, "stray", NULL), CONFIG_USAGE);
	CHECK(contains(err, "unexpected argument"));
	CHECK_INT(load_fail(NULL, "-x", NULL), CONFIG_USAGE);
	CHECK_INT(load_fail(NULL, "--help=yes", NULL), CONFIG_USAGE);
	CHECK_INT(load_fail(NULL, "--previews=maybe", NULL), CONFIG_USAGE);
	CHECK(contains(err, "--previews: \"maybe\" is not a boolean"));
	CHECK_INT(load_fail(NULL, "--comfyui", "ftp://h", NULL), CONFIG_USAGE);
	CHECK(contains(err,
	    "--comfyui: unsupported scheme \"ftp\" (use http "
	    "or https)"));
	CHECK_INT(load_fail(NULL, "--mqtt", "http://h", NULL), CONFIG_USAGE);
	CHECK(contains(err, "(use mqtt or mqtts)"));
	CHECK_INT(load_fail(NULL, "--mqtt-protocol", "4", NULL), CONFIG_USAGE);
	CHECK(contains(err, "is not one of 5|3.1.1"));
	CHECK_INT(load_fail(NULL, "--log-level", "loud", NULL), CONFIG_USAGE);
	CHECK_INT(load_fail(NULL, "--log-format", "xml", NULL), CONFIG_USAGE);
	CHECK_INT(load_fail(NULL, "--prefix", "a/#", NULL), CONFIG_USAGE);
	CHECK(contains(err, "not a valid topic prefix"));
	CHECK_INT(load_fail(NULL, "--ha-prefix", "$SYS", NULL), CONFIG_USAGE);
	CHECK_INT(load_fail(NULL, "--client-id", "a b", NULL), CONFIG_USAGE);
	CHECK(contains(err, "--client-id:"));
	CHECK_INT(load_fail(NULL, "--events", "a,b c", NULL), CONFIG_USAGE);
}

static void
test_bool_env(void)
{
	struct config c;
	char yes[] = "COMFY2MQTT_PRINT=1";
	char bad[] = "COMFY2MQTT_PRINT=sure";
	char stray[] = "COMFY2MQTT_NOT_AN_OPTION=1";
	char *envp_ok[] = { yes, stray, NULL };
	char *envp_bad[] = { bad, NULL };

	CHECK_INT(load(&c, envp_ok, NULL), CONFIG_OK);
	CHECK(c.print);
	config_free(&c);
	CHECK_INT(load_fail(envp_bad, NULL), CONFIG_USAGE);
	CHECK(contains(err, "COMFY2MQTT_PRINT: \"sure\" is not a boolean"));
}

static void
test_file_errors(void)
{
	const char *unknown = write_temp("# c\nprefix = x\nprefixx = y\n");
	const char *badbool = write_temp("previews = perhaps\n");
	const char *syntax = write_temp("previews\n");
	const char *quote = write_temp("prefix = \"abc\n");
	const char *number = write_temp("\n\nstate_ttl = soon\n");
	const char *cfgkey = write_temp("config = other\n");
	char missing[300];

	CHECK_INT(load_fail(NULL, "--config", unknown, NULL), CONFIG_BAD_FILE);
	CHECK(contains(err, unknown));
	CHECK(contains(err, ":3: unknown key \"prefixx\""));
	CHECK(contains(err, "did you mean \"prefix\""));

	CHECK_INT(load_fail(NULL, "--config", badbool, NULL), CONFIG_BAD_FILE);
	CHECK(contains(err, ":1: previews: \"perhaps\" is not a boolean"));
	CHECK(contains(err, "hint: previews = true"));

	CHECK_INT(load_fail(NULL, "--config", syntax, NULL), CONFIG_BAD_FILE);
	CHECK(contains(err, ":1: expected \"key = value\""));
	CHECK_INT(load_fail(NULL, "--config", quote, NULL), CONFIG_BAD_FILE);
	CHECK_INT(load_fail(NULL, "--config", number, NULL), CONFIG_BAD_FILE);
	CHECK(contains(err, ":3: state-ttl: \"soon\" is not a number"));
	CHECK_INT(load_fail(NULL, "--config", cfgkey, NULL), CONFIG_BAD_FILE);

	snprintf(missing, sizeof missing, "%s/does-not-exist.conf", tmpdir);
	CHECK_INT(load_fail(NULL, "--config", missing, NULL), CONFIG_BAD_FILE);
	CHECK(contains(err, "does-not-exist.conf"));
	CHECK_INT(load_fail(NULL, "--config", tmpdir, NULL), CONFIG_BAD_FILE);
}

static void
test_password_file(void)
{
	struct config c;
	const char *pw = write_temp(SECRET "\r\nsecond line\n");
	const char *empty = write_temp("");
	char missing[300], env_pw[300];
	char *envp[] = { env_pw, NULL };

	CHECK_INT(load(&c, NULL, "--mqtt-password-file", pw, NULL), CONFIG_OK);
	CHECK_STR(c.mqtt_password, SECRET);
	config_free(&c);

	snprintf(
	    env_pw, sizeof env_pw, "COMFY2MQTT_MQTT_PASSWORD_FILE=%s", pw);
	CHECK_INT(load(&c, envp, NULL), CONFIG_OK);
	CHECK_STR(c.mqtt_password, SECRET);
	config_free(&c);

	/* a password flag overrides a password file from the environment */
	CHECK_INT(load(&c, envp, "--mqtt-password", "other", NULL), CONFIG_OK);
	CHECK_STR(c.mqtt_password, "other");
	config_free(&c);

	snprintf(missing, sizeof missing, "%s/no-such-password", tmpdir);
	CHECK_INT(load_fail(NULL, "--mqtt-password-file", missing, NULL),
	    CONFIG_USAGE);
	CHECK(contains(err, "--mqtt-password-file: cannot read"));
	CHECK(contains(err, "no-such-password"));
	CHECK_INT(load_fail(NULL, "--mqtt-password-file", empty, NULL),
	    CONFIG_USAGE);
	CHECK(contains(err, "is empty"));
	CHECK_INT(load_fail(NULL, "--mqtt-password", "x",
	              "--mqtt-password-file", pw, NULL),
	    CONFIG_USAGE);
	CHECK(contains(err, "only one of"));
}

static void
test_tls_files(void)
{
	struct config c;
	const char *pem = write_temp("-----BEGIN CERTIFICATE-----\n");
	const char *file;
	char missing[300], line[400];

	CHECK_INT(load(&c, NULL, "--tls-ca", pem, "--tls-cert", pem,
	              "--tls-key", pem, "--tls-insecure", NULL),
	    CONFIG_OK);
	CHECK_STR(c.tls_ca, pem);
	CHECK_STR(c.tls_key, pem);
	CHECK(c.tls_insecure);
	config_free(&c);

	snprintf(missing, sizeof missing, "%s/ca-missing.pem", tmpdir);
	CHECK_INT(load_fail(NULL, "--tls-ca", missing, NULL), CONFIG_USAGE);
	CHECK(contains(err, "--tls-ca: cannot read"));
	CHECK(contains(err, "ca-missing.pem"));
	CHECK_INT(load_fail(NULL, "--tls-cert", pem, NULL), CONFIG_USAGE);
	CHECK(contains(err, "--tls-cert: needs --tls-key"));
	CHECK_INT(load_fail(NULL, "--tls-key", tmpdir, NULL), CONFIG_USAGE);
	CHECK(contains(err, "is a directory"));

	/* a check made after all sources still blames the file's line */
	snprintf(line, sizeof line, "# tls\n\ntls-cert = %s\n", pem);
	file = write_temp(line);
	CHECK_INT(load_fail(NULL, "--config", file, NULL), CONFIG_BAD_FILE);
	CHECK(contains(err, ":3: tls-cert: needs --tls-key"));
	CHECK(contains(err, "hint: tls-cert = client.pem"));
}

static void
test_headers(void)
{
	struct config c;
	char env_h[] = "COMFY2MQTT_COMFYUI_HEADER=X-Env-A: 1\nX-Env-B: 2";
	char *envp[] = { env_h, NULL };
	char *argv[2 + 2 * (CONFIG_MAX_HEADERS + 1)];
	char names[CONFIG_MAX_HEADERS + 1][32];
	int argc = 0;

	CHECK_INT(load(&c, NULL, "--comfyui-header", "Authorization: Bearer t",
	              "--comfyui-header=X-Proxy:  on  ", NULL),
	    CONFIG_OK);
	CHECK_INT(c.n_comfyui_headers, 2);
	CHECK_STR(c.comfyui_header[0], "Authorization: Bearer t");
	CHECK_STR(c.comfyui_header[1], "X-Proxy: on");
	config_free(&c);

	CHECK_INT(load(&c, envp, NULL), CONFIG_OK);
	CHECK_INT(c.n_comfyui_headers, 2);
	CHECK_STR(c.comfyui_header[1], "X-Env-B: 2");
	config_free(&c);
	/* flags replace the environment's list instead of adding to it */
	CHECK_INT(
	    load(&c, envp, "--comfyui-header", "X-Flag: 1", NULL), CONFIG_OK);
	CHECK_INT(c.n_comfyui_headers, 1);
	CHECK_STR(c.comfyui_header[0], "X-Flag: 1");
	config_free(&c);

	/* the limit: CONFIG_MAX_HEADERS pass, one more fails */
	argv[argc++] = "comfy2mqtt";
	for (int i = 0; i <= CONFIG_MAX_HEADERS; i++) {
		snprintf(names[i], sizeof names[i], "X-H%d: v", i);
		argv[argc++] = "--comfyui-header";
		argv[argc++] = names[i];
	}
	CHECK_INT(
	    config_load(&c, argc - 2, argv, no_env, err, sizeof err, NULL),
	    CONFIG_OK);
	CHECK_INT(c.n_comfyui_headers, CONFIG_MAX_HEADERS);
	config_free(&c);
	CHECK_INT(config_load(&c, argc, argv, no_env, err, sizeof err, NULL),
	    CONFIG_USAGE);
	CHECK(contains(err, "too many headers"));
	config_free(&c);

	CHECK_INT(load_fail(NULL, "--comfyui-header", "NoColon", NULL),
	    CONFIG_USAGE);
	CHECK(contains(err, "Name: value"));
	CHECK_INT(
	    load_fail(NULL, "--comfyui-header", ": v", NULL), CONFIG_USAGE);
	CHECK_INT(load_fail(NULL, "--comfyui-header", "Bad Name: v", NULL),
	    CONFIG_USAGE);
	CHECK_INT(load_fail(NULL, "--comfyui-header", "X: a\rb", NULL),
	    CONFIG_USAGE);
}

static void
test_events_allow_list(void)
{
	struct config c;

	CHECK_INT(load(&c, NULL, NULL), CONFIG_OK);
	CHECK(config_event_allowed(&c, "anything", 8));
	config_free(&c);

	CHECK_INT(load(&c, NULL, "--events", " execution_success , progress,,",
	              NULL),
	    CONFIG_OK);
	CHECK_INT(c.n_events, 2);
	CHECK(config_event_allowed(&c, "progress", 8));
	CHECK(config_event_allowed(&c, "execution_success", 17));
	CHECK(!config_event_allowed(&c, "executing", 9));
	CHECK(!config_event_allowed(&c, "progress_state", 14));
	CHECK(!config_event_allowed(&c, "progres", 7));
	config_free(&c);
}

static bool
client_id_chars_ok(const char *id)
{
	for (; *id; id++) {
		if (!isalnum((unsigned char) *id) && *id != '-' && *id != '_')
			return false;
	}
	return true;
}

static void
test_derived_ids(void)
{
	struct config a, b, other;
	const char *hosts[] = {
		"http://gpu-box.example.com:8188",
		"http://[fe80::1]:8188",
		("https://"
		 "a-very-long-host-name-that-goes-on-and-on.example.org"),
		"http://x",
	};

	for (size_t i = 0; i < sizeof hosts / sizeof hosts[0]; i++) {
		CHECK_INT(
		    load(&a, NULL, "--comfyui", hosts[i], NULL), CONFIG_OK);
		CHECK(strlen(a.server[0].mqtt_client_id) <= 23);
		CHECK(strncmp(a.server[0].mqtt_client_id, "comfy2mqtt-", 11)
		    == 0);
		CHECK(client_id_chars_ok(a.server[0].mqtt_client_id));
		CHECK(strncmp(a.server[0].client_id, "comfy2mqtt-", 11) == 0);
		CHECK_STR(a.server[0].client_id + 11, a.server[0].instance);
		config_free(&a);
	}

	CHECK_INT(load(&a, NULL, "--comfyui", hosts[0], NULL), CONFIG_OK);
	CHECK_STR(a.server[0].instance, "gpu-box.example.com");
	CHECK(
	    strncmp(a.server[0].mqtt_client_id, "comfy2mqtt-gpu-b-", 17) == 0);
	CHECK_INT(strlen(a.server[0].mqtt_client_id), 23);
	/* stable across runs, different per instance */
	CHECK_INT(load(&b, NULL, "--comfyui", hosts[0], NULL), CONFIG_OK);
	CHECK_STR(a.server[0].mqtt_client_id, b.server[0].mqtt_client_id);
	CHECK_INT(load(&other, NULL, "--comfyui", hosts[0], "--instance",
	              "gpu-box.example.co", NULL),
	    CONFIG_OK);
	CHECK(strcmp(a.server[0].mqtt_client_id + 17,
	          other.server[0].mqtt_client_id + 17)
	    != 0);
	config_free(&a);
	config_free(&b);
	config_free(&other);

	CHECK_INT(load(&a, NULL, "--comfyui", "http://[fe80::1]:8188", NULL),
	    CONFIG_OK);
	CHECK_STR(a.server[0].instance, "fe80::1");
	config_free(&a);

	/* given ids are kept */
	CHECK_INT(load(&a, NULL, "--client-id", "mine", "--mqtt-client-id",
	              "broker-id", NULL),
	    CONFIG_OK);
	CHECK_STR(a.server[0].client_id, "mine");
	CHECK_STR(a.server[0].mqtt_client_id, "broker-id");
	config_free(&a);
}

static void
test_instance_sanitized(void)
{
	struct config c;
	char *logged;

	capture_begin();
	CHECK_INT(load(&c, NULL, "--instance", "gpu/1+#", NULL), CONFIG_OK);
	config_log_warnings(&c);
	logged = capture_end();
	CHECK_STR(c.server[0].instance, "gpu_1__");
	CHECK_STR(c.server[0].client_id, "comfy2mqtt-gpu_1__");
	CHECK(contains(logged, "WARN"));
	CHECK(contains(logged, "gpu_1__"));
	free(logged);
	config_free(&c);
}

static void
test_mqtt_protocol_and_client_id_length(void)
{
	struct config c;
	const char *long_id = "this-client-id-is-24-by";

	CHECK_INT(load(&c, NULL, "--mqtt-protocol", "311", NULL), CONFIG_OK);
	CHECK_INT(c.mqtt_protocol, MQTT_PROTO_311);
	CHECK(strlen(c.server[0].mqtt_client_id) <= 23);
	config_free(&c);
	CHECK_INT(load(&c, NULL, "--mqtt-protocol", "3.1.1",
	              "--mqtt-client-id", long_id, NULL),
	    CONFIG_OK);
	CHECK_INT(strlen(long_id), 23);
	config_free(&c);
	CHECK_INT(load_fail(NULL, "--mqtt-protocol", "3.1.1",
	              "--mqtt-client-id", "this-client-id-is-24-byt", NULL),
	    CONFIG_USAGE);
	CHECK(contains(err, "--mqtt-client-id:"));
	CHECK(contains(err, "3.1.1"));
	CHECK_INT(load(&c, NULL, "--mqtt-client-id",
	              "this-client-id-is-24-byt", NULL),
	    CONFIG_OK);
	CHECK_INT(c.mqtt_protocol, MQTT_PROTO_5);
	config_free(&c);
}

static void
test_url_credentials(void)
{
	struct config c;
	char *logged;

	capture_begin();
	CHECK_INT(
	    load(&c, NULL, "--mqtt", "mqtt://alice:" SECRET "@broker", NULL),
	    CONFIG_OK);
	config_log_warnings(&c);
	logged = capture_end();
	CHECK_STR(c.mqtt_username, "alice");
	CHECK_STR(c.mqtt_password, SECRET);
	CHECK(contains(logged, "--mqtt URL holds a password"));
	CHECK(strstr(logged, SECRET) == NULL);
	free(logged);
	config_free(&c);

	CHECK_INT(load(&c, NULL, "--mqtt", "mqtt://alice:pw@broker",
	              "--mqtt-username", "bob", NULL),
	    CONFIG_OK);
	CHECK_STR(c.mqtt_username, "bob");
	config_free(&c);

	/* ComfyUI URL credentials become HTTP Basic auth */
	CHECK_INT(load(&c, NULL, "--comfyui", "http://user:pass@h:8188", NULL),
	    CONFIG_OK);
	CHECK_INT(c.server[0].n_headers, 1);
	CHECK_STR(c.server[0].headers[0], "Authorization: Basic dXNlcjpwYXNz");
	CHECK_STR(c.server[0].comfy.user, "");
	CHECK_STR(c.server[0].comfy.pass, "");
	config_free(&c);
	CHECK_INT(load(&c, NULL, "--comfyui", "http://user:pass@h:8188",
	              "--comfyui-header", "authorization: Bearer x", NULL),
	    CONFIG_OK);
	CHECK_INT(c.server[0].n_headers, 1);
	CHECK_STR(c.server[0].headers[0], "authorization: Bearer x");
	config_free(&c);
}

static void
test_secrets_never_leak(void)
{
	struct config c;
	struct jsonw w;
	char json[8192], *logged, *help;
	const char *pw_file = write_temp(SECRET "\n");
	FILE *out;

	/* errors */
	CHECK_INT(
	    load_fail(NULL, "--comfyui-header", "Authorization " SECRET, NULL),
	    CONFIG_USAGE);
	CHECK(strstr(err, SECRET) == NULL);
	CHECK_INT(
	    load_fail(NULL, "--comfyui-header", "X: " SECRET "\x01", NULL),
	    CONFIG_USAGE);
	CHECK(strstr(err, SECRET) == NULL);
	CHECK_INT(
	    load_fail(NULL, "--mqtt", "mqtt://u:" SECRET "@h:99999", NULL),
	    CONFIG_USAGE);
	CHECK(strstr(err, SECRET) == NULL);
	CHECK_INT(
	    load_fail(NULL, "--comfyui", "http://u:" SECRET "@h/?q", NULL),
	    CONFIG_USAGE);
	CHECK(strstr(err, SECRET) == NULL);
	CHECK_INT(
	    load_fail(NULL, "--mqtt-pasword=" SECRET, NULL), CONFIG_USAGE);
	CHECK(strstr(err, SECRET) == NULL);
	CHECK(contains(err, "did you mean --mqtt-password?"));
	CHECK_INT(load_fail(NULL, "--mqtt-password", "x", SECRET, NULL),
	    CONFIG_USAGE);
	CHECK(strstr(err, SECRET) == NULL);
	CHECK_INT(load_fail(NULL, "--mqtt-password", SECRET, "--state-ttl",
	              "x", NULL),
	    CONFIG_USAGE);
	CHECK(strstr(err, SECRET) == NULL);

	/* warnings and the JSON of the options in effect */
	capture_begin();
	CHECK_INT(load(&c, NULL, "--mqtt-password", SECRET, "--comfyui-header",
	              "Authorization: Bearer " SECRET, "--mqtt",
	              "mqtt://u:" SECRET "@broker:1884", "--comfyui",
	              "http://u:" SECRET "@comfy:8188/p", NULL),
	    CONFIG_OK);
	config_log_warnings(&c);
	logged = capture_end();
	CHECK(contains(logged, "--mqtt-password on the command line"));
	CHECK(strstr(logged, SECRET) == NULL);
	free(logged);

	jsonw_init(&w, json, sizeof json);
	jsonw_obj_begin(&w);
	config_write_json(&c, 0, &w);
	jsonw_obj_end(&w);
	CHECK_INT(jsonw_finish(&w), 0);
	CHECK(strstr(json, SECRET) == NULL);
	CHECK(contains(json, "\"comfyui\":\"http://comfy:8188/p\""));
	CHECK(contains(json, "\"mqtt\":\"mqtt://broker:1884\""));
	CHECK(contains(json, "\"comfyui_header\":[\"Authorization\"]"));
	CHECK(contains(json, "\"mqtt_protocol\":\"5\""));
	CHECK(contains(json, "\"queue_max_bytes\":67108864"));
	CHECK(contains(json, "\"commands\":false"));
	CHECK(contains(json, "\"command_max_bytes\":4194304"));
	CHECK(contains(json, "\"events\":null"));
	CHECK(contains(json, "\"mqtt_password_set\":true"));
	config_free(&c);

	/* --help with secrets given alongside */
	out = tmpfile();
	{
		char *argv[]
		    = { "comfy2mqtt", "--mqtt-password-file", (char *) pw_file,
			      "--mqtt-password", SECRET, "--help", NULL };
		CHECK_INT(
		    config_load(&c, 6, argv, no_env, err, sizeof err, out),
		    CONFIG_EXIT_OK);
	}
	help = read_stream(out);
	fclose(out);
	CHECK(strstr(help, SECRET) == NULL);
	CHECK(contains(help, "--mqtt-password"));
	free(help);
	config_free(&c);
}

/* Every option of the contract, with its environment variable. */
static void
test_help_lists_everything(void)
{
	static const char *const names[] = {
		"config",
		"comfyui",
		"comfyui-header",
		"client-id",
		"mqtt",
		"mqtt-username",
		"mqtt-password",
		"mqtt-password-file",
		"mqtt-client-id",
		"mqtt-protocol",
		"mqtt-keepalive",
		"mqtt-max-packet",
		"tls-ca",
		"tls-cert",
		"tls-key",
		"tls-insecure",
		"prefix",
		"instance",
		"events",
		"previews",
		"preview-max-bytes",
		"preview-rate",
		"state-ttl",
		"queue-max-messages",
		"queue-max-bytes",
		"commands",
		"command-max-bytes",
		"ha-discovery",
		"ha-remove",
		"ha-prefix",
		"health-interval",
		"max-frame-bytes",
		"max-tokens",
		"history-items",
		"upstream-watchdog",
		"print",
		"print-timestamps",
		"log-level",
		"log-format",
	};
	const size_t n = sizeof names / sizeof names[0];
	struct config c;
	FILE *out = tmpfile();
	char *help, flag[64], env[64];
	int listed = 0;

	{
		char *argv[] = { "comfy2mqtt", "-h", NULL };
		CHECK_INT(
		    config_load(&c, 2, argv, no_env, err, sizeof err, out),
		    CONFIG_EXIT_OK);
	}
	config_free(&c);
	help = read_stream(out);
	fclose(out);
	for (size_t i = 0; i < n; i++) {
		snprintf(flag, sizeof flag, "  --%s", names[i]);
		snprintf(env, sizeof env, "env COMFY2MQTT_%s", names[i]);
		for (char *p = env + 15; *p; p++)
			*p = *p == '-' ? '_'
			               : (char) toupper((unsigned char) *p);
		/* the flag starts a line followed by space or newline */
		const char *at = help;
		bool found = false;
		while ((at = strstr(at, flag)) != NULL) {
			char next = at[strlen(flag)];
			if (next == ' ' || next == '\n')
				found = true;
			at++;
		}
		CHECK(found);
		CHECK(contains(help, env));
	}
	CHECK(contains(help, "-h, --help"));
	CHECK(contains(help, "-V, --version"));
	CHECK(contains(help, "default http://127.0.0.1:8188"));
	/* nothing listed that the contract list above does not know */
	for (const char *p = help; (p = strstr(p, "\n  --")) != NULL; p++)
		listed++;
	CHECK_INT(listed, (int) n);
	free(help);

	out = tmpfile();
	{
		char *argv[] = { "comfy2mqtt", "--version", NULL };
		CHECK_INT(
		    config_load(&c, 2, argv, no_env, err, sizeof err, out),
		    CONFIG_EXIT_OK);
	}
	config_free(&c);
	help = read_stream(out);
	fclose(out);
	CHECK(strncmp(help, "comfy2mqtt ", 11) == 0);
	free(help);
}

static void
test_json_reflects_values(void)
{
	struct config c;
	struct jsonw w;
	char json[8192];

	CHECK_INT(load(&c, NULL, "--events", "a,b", "--log-level", "warning",
	              "--log-format", "json", "--mqtt-protocol", "311",
	              "--instance", "gpu1", "--preview-rate", "0.25", NULL),
	    CONFIG_OK);
	jsonw_init(&w, json, sizeof json);
	jsonw_obj_begin(&w);
	config_write_json(&c, 0, &w);
	jsonw_obj_end(&w);
	CHECK_INT(jsonw_finish(&w), 0);
	CHECK(contains(json, "\"events\":[\"a\",\"b\"]"));
	CHECK(contains(json, "\"log_level\":\"warn\""));
	CHECK(contains(json, "\"log_format\":\"json\""));
	CHECK(contains(json, "\"mqtt_protocol\":\"3.1.1\""));
	CHECK(contains(json, "\"instance\":\"gpu1\""));
	CHECK(contains(json, "\"preview_rate\":0.25"));
	CHECK(contains(json, "\"mqtt_password_set\":false"));
	CHECK(strstr(json, "\"mqtt_password\":") == NULL);
	config_free(&c);
}

/* A config file is read up to 1 MiB: a wrong path (/dev/zero, a log file)
 * must fail fast with 78 instead of filling the memory. */
static void
test_file_size_cap(void)
{
	struct config c;
	size_t cap = 1024 * 1024;
	char *text = malloc(cap + 2);
	const char *at_cap, *over_cap;

	/* "prefix = p", then one comment line up to the cap */
	memset(text, '#', cap + 1);
	memcpy(text, "prefix = p\n", 11);
	text[cap - 1] = '\n';
	text[cap] = '\0';
	at_cap = write_temp(text);
	text[cap - 1] = '#';
	text[cap] = '\n';
	text[cap + 1] = '\0';
	over_cap = write_temp(text);
	free(text);

	CHECK_INT(load(&c, NULL, "--config", at_cap, NULL), CONFIG_OK);
	CHECK_STR(c.prefix, "p");
	config_free(&c);
	CHECK_INT(
	    load_fail(NULL, "--config", over_cap, NULL), CONFIG_BAD_FILE);
	CHECK(contains(err, over_cap));
	CHECK(contains(err, "larger than 1 MiB"));
	if (access("/dev/zero", R_OK) == 0) {
		CHECK_INT(load_fail(NULL, "--config", "/dev/zero", NULL),
		    CONFIG_BAD_FILE);
		CHECK(contains(err, "\"/dev/zero\" is larger than 1 MiB"));
	}
}

/* A CR or LF in a header would end it and start another one on the wire;
 * the value may be a secret, so the error names the option only. */
static void
test_header_line_breaks(void)
{
	struct config c;
	char env_crlf[] = "COMFY2MQTT_COMFYUI_HEADER=X-A: 1\r\nX-B: 2";
	char env_lf[] = "COMFY2MQTT_COMFYUI_HEADER=X-A: 1\nX-B: 2\n";
	char *envp_crlf[] = { env_crlf, NULL }, *envp_lf[] = { env_lf, NULL };
	const char *in_file = write_temp(
	    "comfyui-header = \"X-A: " SECRET "\rInjected: 1\"\n");
	const char *bad[] = {
		"X-A: " SECRET "\r\nInjected: 1",
		"X-A: " SECRET "\nInjected: 1",
		"X-A: " SECRET "\r",
		"X-A: " SECRET "\n",
		"\r\nX-A: " SECRET,
		"X-A\r: " SECRET,
	};

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		CHECK_INT(load_fail(NULL, "--comfyui-header", bad[i], NULL),
		    CONFIG_USAGE);
		CHECK(contains(err, "--comfyui-header:"));
		CHECK(strstr(err, SECRET) == NULL);
	}
	CHECK_INT(load_fail(envp_crlf, NULL), CONFIG_USAGE);
	CHECK(contains(err, "COMFY2MQTT_COMFYUI_HEADER:"));
	CHECK(contains(err, "CR"));
	CHECK_INT(load_fail(NULL, "--config", in_file, NULL), CONFIG_BAD_FILE);
	CHECK(contains(err, ":1: comfyui-header:"));
	CHECK(strstr(err, SECRET) == NULL);

	/* the environment's one-header-per-line form still works */
	CHECK_INT(load(&c, envp_lf, NULL), CONFIG_OK);
	CHECK_INT(c.n_comfyui_headers, 2);
	CHECK_STR(c.comfyui_header[1], "X-B: 2");
	config_free(&c);
}

static void
test_file_bom_and_duplicates(void)
{
	struct config c;
	const char *bom = write_temp("\xEF\xBB\xBFprefix = bom\n");
	const char *dup = write_temp("prefix = first\n"
	                             "# c\n"
	                             "mqtt-password = " SECRET "1\n"
	                             "comfyui-header = X-A: 1\n"
	                             "PREFIX = second\n"
	                             "comfyui-header = X-B: 2\n"
	                             "mqtt_password = " SECRET "2\n");

	CHECK_INT(load(&c, NULL, "--config", bom, NULL), CONFIG_OK);
	CHECK_STR(c.prefix, "bom");
	CHECK_INT(c.n_warnings, 0);
	config_free(&c);

	/* the last value wins, as before, with a warning naming both lines;
	 * repeating a list key adds to the list and is not a duplicate */
	CHECK_INT(load(&c, NULL, "--config", dup, NULL), CONFIG_OK);
	CHECK_STR(c.prefix, "second");
	CHECK_STR(c.mqtt_password, SECRET "2");
	CHECK_INT(c.n_comfyui_headers, 2);
	CHECK_INT(c.n_warnings, 2);
	CHECK(contains(c.warnings[0], dup));
	CHECK(contains(c.warnings[0], ":5: prefix"));
	CHECK(contains(c.warnings[0], "line 1"));
	CHECK(contains(c.warnings[1], ":7: mqtt-password"));
	CHECK(contains(c.warnings[1], "line 3"));
	for (int i = 0; i < c.n_warnings; i++)
		CHECK(strstr(c.warnings[i], SECRET) == NULL);
	config_free(&c);
}

/* An empty --instance is a mistake (an unset shell variable), not a wish
 * for the host name; the file and environment keep "" as "unset". */
static void
test_empty_instance(void)
{
	struct config c;
	char env_empty[] = "COMFY2MQTT_INSTANCE=";
	char *envp[] = { env_empty, NULL };

	CHECK_INT(load_fail(NULL, "--instance", "", NULL), CONFIG_USAGE);
	CHECK(contains(err, "--instance:"));
	CHECK(contains(err, "empty"));
	CHECK(contains(err, "hint: --instance gpu1"));
	CHECK_INT(load_fail(NULL, "--instance=", NULL), CONFIG_USAGE);
	CHECK_INT(load(&c, envp, NULL), CONFIG_OK);
	CHECK_STR(c.server[0].instance, "127.0.0.1");
	config_free(&c);
}

/* main owns logging: config_load logs nothing and leaves the level and
 * format alone; its warnings wait in the struct for config_log_warnings. */
static void
test_logging_left_to_main(void)
{
	struct config c;
	char *logged;

	log_setup(LOG_LVL_INFO, LOG_FMT_TEXT);
	capture_begin();
	CHECK_INT(load(&c, NULL, "--log-level", "error", "--log-format",
	              "json", "--instance", "a/b", NULL),
	    CONFIG_OK);
	logged = capture_end();
	CHECK_STR(logged, "");
	free(logged);
	CHECK_INT(log_get_level(), LOG_LVL_INFO);
	CHECK_INT(c.n_warnings, 1);
	CHECK(contains(c.warnings[0], "\"a_b\""));

	/* the caller's format applies to the warnings */
	log_setup(LOG_LVL_WARN, LOG_FMT_JSON);
	capture_begin();
	config_log_warnings(&c);
	logged = capture_end();
	log_setup(LOG_LVL_INFO, LOG_FMT_TEXT);
	CHECK(contains(logged, "{\""));
	CHECK(contains(logged, "a_b"));
	free(logged);
	config_free(&c);
	CHECK_INT(c.n_warnings, 0);
}

int
main(void)
{
	char cmd[128];

	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 2;
	}
	RUN(test_defaults);
	RUN(test_precedence);
	RUN(test_config_from_environment);
	RUN(test_process_environment);
	RUN(test_file_syntax);
	RUN(test_number_errors);
	RUN(test_sizes);
	RUN(test_flag_errors);
	RUN(test_bool_env);
	RUN(test_file_errors);
	RUN(test_password_file);
	RUN(test_tls_files);
	RUN(test_headers);
	RUN(test_events_allow_list);
	RUN(test_derived_ids);
	RUN(test_instance_sanitized);
	RUN(test_mqtt_protocol_and_client_id_length);
	RUN(test_url_credentials);
	RUN(test_secrets_never_leak);
	RUN(test_help_lists_everything);
	RUN(test_json_reflects_values);
	RUN(test_logging_left_to_main);
	RUN(test_file_size_cap);
	RUN(test_header_line_breaks);
	RUN(test_file_bom_and_duplicates);
	RUN(test_empty_instance);
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
	TEST_MAIN_END();
}
