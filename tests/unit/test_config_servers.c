/* config: several ComfyUI servers (--comfyui [INSTANCE=]URL, repeatable):
 * flags, file lines and the comma list of the environment; per-server
 * instances, client ids, headers and bridge/info options; the options that
 * name one server; instances that would share a topic level, a Home
 * Assistant device or a broker session are refused, naming both. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "jsonw.h"
#include "test.h"

#include "config_load.h"

static const char *
write_temp(const char *text)
{
	static char path[64];
	snprintf(path, sizeof path, "/tmp/c2m-test-servers-XXXXXX");
	int fd = mkstemp(path);
	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t) strlen(text)
	    || close(fd) != 0) {
		perror(path);
		exit(2);
	}
	return path;
}

static void
test_named_servers(void)
{
	struct config c;

	CHECK_INT(load(&c, NULL, "--comfyui", "gpu1=http://a:8188",
	              "--comfyui", "gpu2=https://b/comfy", NULL),
	    CONFIG_OK);
	CHECK_INT(c.n_servers, 2);
	CHECK_STR(c.server[0].instance, "gpu1");
	CHECK_STR(c.server[1].instance, "gpu2");
	CHECK_STR(c.server[0].comfy.host, "a");
	CHECK_STR(c.server[1].comfy.path, "/comfy");
	CHECK(c.server[1].comfy.tls);
	CHECK_STR(c.server[0].client_id, "comfy2mqtt-gpu1");
	CHECK_STR(c.server[1].client_id, "comfy2mqtt-gpu2");
	CHECK(strcmp(c.server[0].mqtt_client_id, c.server[1].mqtt_client_id)
	    != 0);
	CHECK(
	    strncmp(c.server[1].mqtt_client_id, "comfy2mqtt-gpu2-", 16) == 0);
	config_free(&c);

	/* unnamed: each from its host, as one server is */
	CHECK_INT(load(&c, NULL, "--comfyui", "http://box-a:8188", "--comfyui",
	              "http://box-b:8188", NULL),
	    CONFIG_OK);
	CHECK_STR(c.server[0].instance, "box-a");
	CHECK_STR(c.server[1].instance, "box-b");
	config_free(&c);

	/* one named server, sanitized as --instance is */
	CHECK_INT(
	    load(&c, NULL, "--comfyui", "gpu/1=http://a", NULL), CONFIG_OK);
	CHECK_STR(c.server[0].instance, "gpu_1");
	CHECK_INT(c.n_warnings, 1);
	config_free(&c);

	CHECK_INT(
	    load_fail(NULL, "--comfyui", "=http://a", NULL), CONFIG_USAGE);
	CHECK(
	    contains(err, "--comfyui: the instance name before '=' is empty"));
	CHECK_INT(
	    load_fail(NULL, "--comfyui", "gpu1=ftp://a", NULL), CONFIG_USAGE);
	CHECK(contains(err, "--comfyui:"));
}

static void
test_sources(void)
{
	struct config c;
	char env[] = "COMFY2MQTT_COMFYUI= a=http://h1:1 ,b=http://h2:2,";
	char *envp[] = { env, NULL };
	const char *file = write_temp("comfyui = f1=http://f1\n"
	                              "comfyui = f2=http://f2\n"
	                              "comfyui = http://f3\n");

	/* the environment: a comma list */
	CHECK_INT(load(&c, envp, NULL), CONFIG_OK);
	CHECK_INT(c.n_servers, 2);
	CHECK_STR(c.server[0].instance, "a");
	CHECK_INT(c.server[1].comfy.port, 2);
	config_free(&c);

	/* the file: one line each; no duplicate-key warning */
	CHECK_INT(load(&c, NULL, "--config", file, NULL), CONFIG_OK);
	CHECK_INT(c.n_servers, 3);
	CHECK_STR(c.server[2].instance, "f3");
	CHECK_INT(c.n_warnings, 0);
	config_free(&c);

	/* a higher source replaces the list */
	CHECK_INT(load(&c, envp, "--config", file, NULL), CONFIG_OK);
	CHECK_INT(c.n_servers, 2);
	config_free(&c);
	CHECK_INT(
	    load(&c, envp, "--config", file, "--comfyui", "x=http://x", NULL),
	    CONFIG_OK);
	CHECK_INT(c.n_servers, 1);
	CHECK_STR(c.server[0].instance, "x");
	config_free(&c);

	/* nothing left */
	char none[] = "COMFY2MQTT_COMFYUI=";
	char *envn[] = { none, NULL };
	CHECK_INT(load_fail(envn, NULL), CONFIG_USAGE);
	CHECK(contains(err, "COMFY2MQTT_COMFYUI: no ComfyUI server"));
	unlink(file);
}

static void
test_one_server_options(void)
{
	static const char *const single[]
	    = { "--instance", "--client-id", "--mqtt-client-id" };

	for (size_t i = 0; i < 3; i++) {
		CHECK_INT(load_fail(NULL, "--comfyui", "a=http://a",
		              "--comfyui", "b=http://b", single[i], "x", NULL),
		    CONFIG_USAGE);
		CHECK(contains(err, single[i]));
		CHECK(contains(err, "names one server, and 2 are given"));
	}
	CHECK_INT(load_fail(NULL, "--comfyui", "a=http://a", "--instance", "b",
	              NULL),
	    CONFIG_USAGE);
	CHECK(contains(err, "--instance: is given twice"));

	/* one server keeps them */
	struct config c;
	CHECK_INT(load(&c, NULL, "--comfyui", "a=http://a", "--client-id",
	              "mine", "--mqtt-client-id", "sess", NULL),
	    CONFIG_OK);
	CHECK_STR(c.server[0].client_id, "mine");
	CHECK_STR(c.server[0].mqtt_client_id, "sess");
	config_free(&c);
}

/* Each pair that must be refused, and what the message names. */
static void
test_collisions(void)
{
	/* one host, two ports: one topic level */
	CHECK_INT(load_fail(NULL, "--comfyui", "http://h:1", "--comfyui",
	              "http://h:2", NULL),
	    CONFIG_USAGE);
	CHECK(contains(err, "--comfyui: servers 1 (\"h\") and 2 (\"h\")"));
	CHECK(contains(err, "the same topic level \"h\""));
	CHECK(contains(err, "hint:"));

	/* names that sanitize alike */
	CHECK_INT(load_fail(NULL, "--comfyui", "gpu/1=http://a", "--comfyui",
	              "gpu+1=http://b", NULL),
	    CONFIG_USAGE);
	CHECK(contains(err, "the same topic level \"gpu_1\""));

	/* distinct topic levels, one Home Assistant device id (issue 16) */
	CHECK_INT(load_fail(NULL, "--comfyui", "gpu.1=http://a", "--comfyui",
	              "gpu_1=http://b", NULL),
	    CONFIG_USAGE);
	CHECK(contains(err, "servers 1 (\"gpu.1\") and 2 (\"gpu_1\")"));
	CHECK(contains(err,
	    "the same Home Assistant device id "
	    "\"comfyui_gpu_1\""));
	CHECK_INT(load_fail(NULL, "--comfyui", "a=http://a", "--comfyui",
	              "gpu:1=http://b", "--comfyui", "gpu.1=http://c", NULL),
	    CONFIG_USAGE);
	CHECK(contains(err, "servers 2 (\"gpu:1\") and 3 (\"gpu.1\")"));

	/* in the file: the file's exit code */
	const char *file = write_temp("comfyui = gpu.1=http://a\n"
	                              "comfyui = gpu_1=http://b\n");
	CHECK_INT(load_fail(NULL, "--config", file, NULL), CONFIG_BAD_FILE);
	CHECK(contains(err, "Home Assistant device id"));
	unlink(file);

	/* case differs: distinct for topics and for Home Assistant */
	struct config c;
	CHECK_INT(load(&c, NULL, "--comfyui", "GPU=http://a", "--comfyui",
	              "gpu=http://b", NULL),
	    CONFIG_OK);
	config_free(&c);
}

static void
test_per_server_headers_and_info(void)
{
	struct config c;
	struct jsonw w;
	char json[8192];

	CHECK_INT(
	    load(&c, NULL, "--comfyui", "a=http://u:pw@ha:1", "--comfyui",
	        "b=http://hb:2/p", "--comfyui-header", "X-All: 1", NULL),
	    CONFIG_OK);
	CHECK_INT(c.server[0].n_headers, 2);
	CHECK_STR(c.server[0].headers[0], "X-All: 1");
	CHECK_STR(c.server[0].headers[1], "Authorization: Basic dTpwdw==");
	CHECK_INT(c.server[1].n_headers, 1);
	CHECK_STR(c.server[1].headers[0], "X-All: 1");
	CHECK_INT(c.n_comfyui_headers, 1);

	jsonw_init(&w, json, sizeof json);
	jsonw_obj_begin(&w);
	config_write_json(&c, 1, &w);
	jsonw_obj_end(&w);
	CHECK_INT(jsonw_finish(&w), 0);
	CHECK(contains(json, "\"comfyui\":\"http://hb:2/p\""));
	CHECK(contains(json, "\"instance\":\"b\""));
	CHECK(contains(json, "\"client_id\":\"comfy2mqtt-b\""));
	CHECK(contains(json, "\"mqtt_client_id\":\"comfy2mqtt-b-"));
	CHECK(strstr(json, "pw") == NULL);
	config_free(&c);
}

int
main(void)
{
	RUN(test_named_servers);
	RUN(test_sources);
	RUN(test_one_server_options);
	RUN(test_collisions);
	RUN(test_per_server_headers_and_info);
	TEST_MAIN_END();
}
