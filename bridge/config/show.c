/* What the option table shows: the --help text and the options in effect
 * as bridge/info JSON members. Both walk the table, so a new option
 * appears in both without code here. */
#include "loader.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "jsonw.h"
#include "url.h"

void
config_print_help(FILE *out)
{
	fputs("Usage: comfy2mqtt [OPTION]...\n"
	      "Publish a ComfyUI server's events to an MQTT broker.\n\n"
	      "Every option is also an environment variable COMFY2MQTT_<NAME> "
	      "and a key\n\"name = value\" in the --config file. Precedence: "
	      "defaults < file < environment\n< flags. Sizes accept K, M and "
	      "G suffixes (binary).\n\n",
	    out);
	for (size_t i = 0; i < n_options; i++) {
		const struct opt *o = &options[i];
		char env[64];
		const char *def = o->def ? o->def : o->shown;

		if (o->kind == OPT_HELP)
			fputs("  -h, --help\n", out);
		else if (o->kind == OPT_VERSION)
			fputs("  -V, --version\n", out);
		else if (o->metavar)
			fprintf(out, "  --%s %s\n", o->name, o->metavar);
		else
			fprintf(out, "  --%s\n", o->name);
		fprintf(out, "      %s\n", o->help);
		if (option_is_action(o))
			continue;
		option_env_name(o, env, sizeof env);
		if (o->kind == OPT_BOOL)
			def = "off";
		if (def)
			fprintf(out, "      env %s, default %s\n", env, def);
		else
			fprintf(out, "      env %s\n", env);
	}
	fflush(out);
}

static void
json_key_for(const struct opt *o, char *dst, size_t cap)
{
	size_t n = (size_t) snprintf(dst, cap, "%s", o->name);

	for (size_t i = 0; i < n && i < cap; i++) {
		if (dst[i] == '-')
			dst[i] = '_';
	}
}

static void
write_option_json(const struct config *c, const struct config_server *s,
    const struct opt *o, struct jsonw *w)
{
	char key[64], url[1024];
	const void *f = OPT_CFIELD(c, o);

	json_key_for(o, key, sizeof key);
	if (o->per_server && o->kind != OPT_SERVER)
		f = (const char *) s + o->soff;
	switch (o->kind) {
	case OPT_STR:
	case OPT_FILE:
	case OPT_PREFIX:
	case OPT_CONFIG:
		if (*(char *const *) f)
			jsonw_kstr(w, key, *(char *const *) f);
		else
			jsonw_knull(w, key);
		break;
	case OPT_SERVER:
		url_format_public(&s->comfy, url, sizeof url);
		jsonw_kstr(w, key, url);
		break;
	case OPT_MQTT_URL:
		url_format_public(OPT_CFIELD2(c, o), url, sizeof url);
		jsonw_kstr(w, key, url);
		break;
	case OPT_BOOL:
		jsonw_kbool(w, key, *(const bool *) f);
		break;
	case OPT_INT:
		jsonw_kint(w, key, *(const int *) f);
		break;
	case OPT_INT64:
		jsonw_kint(w, key, *(const int64_t *) f);
		break;
	case OPT_UINT:
		jsonw_kint(w, key, *(const unsigned *) f);
		break;
	case OPT_COUNT:
	case OPT_SIZE:
		jsonw_key(w, key);
		jsonw_uint(w, *(const size_t *) f);
		break;
	case OPT_DOUBLE:
		jsonw_key(w, key);
		jsonw_double(w, *(const double *) f);
		break;
	case OPT_ENUM:
		for (const struct choice *ch = o->choices; ch->text; ch++) {
			if (ch->value == *(const int *) f) {
				jsonw_kstr(w, key, ch->text);
				break;
			}
		}
		break;
	case OPT_HEADER:
	case OPT_LIST: {
		char *const *items = f;
		int n = *(const int *) OPT_CFIELD2(c, o);
		if (o->kind == OPT_LIST && n == 0) {
			jsonw_knull(w, key); /* all events */
			break;
		}
		jsonw_key(w, key);
		jsonw_arr_begin(w);
		for (int i = 0; i < n; i++) {
			/* a header's name only: its value may be a token */
			size_t len = o->kind == OPT_HEADER
			    ? strcspn(items[i], ":")
			    : strlen(items[i]);
			jsonw_strn(w, items[i], len);
		}
		jsonw_arr_end(w);
		break;
	}
	default: /* secrets, help, version */
		break;
	}
}

/* Copies values into w's buffer; passwords and header values are left
 * out, URLs are written without credentials. */
void
config_write_json(const struct config *c, int server, struct jsonw *w)
{
	for (size_t i = 0; i < n_options; i++)
		write_option_json(c, &c->server[server], &options[i], w);
	jsonw_kbool(w, "mqtt_password_set", c->mqtt_password != NULL);
}
