/* The topic-kind table: topics, QoS, class, retain, expiry, content type,
 * user properties and coalescing keys of each kind of message. */
#include "test.h"

#include "pubkind.h"

static const struct pub_env env = { "gpu1", 3600, 30 };

static void
build(struct out_msg *m, struct pub_scratch *s, const struct pub_req *r)
{
	pub_build(&env, r, s, m);
}

static void
test_topics(void)
{
	char t[TOPIC_MAX];
	CHECK(pub_topic(t, sizeof(t), "c2m", "gpu1", TK_PROMPT_EVENT, "p/1",
	          "progress")
	    > 0);
	CHECK_STR(t, "c2m/gpu1/prompt/p_1/event/progress");
	pub_topic(t, sizeof(t), "c2m", "gpu1", TK_EVENT, NULL, "status");
	CHECK_STR(t, "c2m/gpu1/event/status");
	pub_topic(t, sizeof(t), "c2m", "gpu1", TK_STATE, "p1", NULL);
	CHECK_STR(t, "c2m/gpu1/prompt/p1/state");
	pub_topic(t, sizeof(t), "c2m", "gpu1", TK_PROMPT_PREVIEW, "p1", NULL);
	CHECK_STR(t, "c2m/gpu1/prompt/p1/preview");
	pub_topic(t, sizeof(t), "c2m", "gpu1", TK_HEALTH, NULL, NULL);
	CHECK_STR(t, "c2m/gpu1/bridge/health");
	pub_topic(t, sizeof(t), "c2m", "gpu1", TK_CURRENT, NULL, NULL);
	CHECK_STR(t, "c2m/gpu1/current");
}

static void
test_event_qos(void)
{
	static const char *const qos1[]
	    = { "queued", "execution_start", "execution_success",
		      "execution_error", "execution_interrupted", "lost" };
	static const char *const qos0[] = { "executing", "executed",
		"execution_cached", "progress", "progress_state", "my_type" };
	for (size_t i = 0; i < sizeof(qos1) / sizeof(qos1[0]); i++) {
		CHECK_INT(pub_event_policy(qos1[i], true, false).qos, 1);
		CHECK_INT(pub_event_policy(qos1[i], false, false).qos, 0);
	}
	for (size_t i = 0; i < sizeof(qos0) / sizeof(qos0[0]); i++)
		CHECK_INT(pub_event_policy(qos0[i], true, false).qos, 0);
	CHECK_INT(
	    pub_event_policy("execution_error", true, true).cls, MSG_CRITICAL);
	CHECK_INT(pub_event_policy("execution_error", true, false).cls,
	    MSG_LIFECYCLE);
	CHECK_INT(pub_event_policy("progress", true, false).cls, MSG_PROGRESS);
	CHECK(pub_event_policy("progress_state", true, false).progress);
	CHECK(!pub_event_policy("executing", true, false).progress);
}

static void
test_progress_event_message(void)
{
	struct out_msg m;
	struct pub_scratch s;
	const char *topic = "c2m/gpu1/prompt/p1/event/progress";
	build(&m, &s,
	    &(struct pub_req) { .kind = TK_PROMPT_EVENT,
	        .topic = topic,
	        .payload = "{}",
	        .len = 2,
	        .event_type = "progress",
	        .prompt_id = "p1",
	        .node = "3" });
	CHECK_INT(m.cls, MSG_PROGRESS);
	CHECK_INT(m.qos, 0);
	CHECK(!m.retain && !m.urgent);
	CHECK_INT(m.props.expiry_s, 60);
	CHECK_STR(m.props.content_type, "application/json");
	CHECK(m.props.utf8);
	CHECK_STR(m.props.type, "progress");
	CHECK_STR(m.props.prompt_id, "p1");
	CHECK_STR(m.props.instance, "gpu1");
	CHECK_STR(m.coalesce_key, "c2m/gpu1/prompt/p1/event/progress|3");
	/* the kind for the link's counting: a static string, the same
	 * address for every message of the kind */
	CHECK_STR(m.kind, "progress");
	CHECK(m.kind == pub_event_policy("progress", true, false).name);
	CHECK(m.kind != s.type);
}

static void
test_kind_names(void)
{
	struct out_msg m;
	struct pub_scratch s;
	build(&m, &s,
	    &(struct pub_req) { .kind = TK_PROMPT_EVENT,
	        .topic = "c2m/gpu1/prompt/p1/event/my_type",
	        .event_type = "my_type" });
	CHECK(m.kind == NULL); /* unlisted: the topic's last level */
	build(&m, &s,
	    &(struct pub_req) { .kind = TK_STATE, .topic = "t", .len = 0 });
	CHECK_STR(m.kind, "state");
	build(&m, &s,
	    &(struct pub_req) { .kind = TK_BRIDGE_STATE, .topic = "t" });
	CHECK_STR(m.kind, "bridge/state");
	CHECK_STR(pub_event_policy("executed", true, false).name, "executed");
}

static void
test_fixed_kinds(void)
{
	struct out_msg m;
	struct pub_scratch s;
	build(&m, &s,
	    &(struct pub_req) { .kind = TK_STATE, .topic = "t", .len = 0 });
	CHECK(m.qos == 1 && m.retain && m.cls == MSG_CRITICAL);
	CHECK_INT(m.props.expiry_s, 3600);
	CHECK_STR(m.coalesce_key, "t");
	build(&m, &s,
	    &(struct pub_req) { .kind = TK_STATE_CLEAR, .topic = "t" });
	CHECK(m.qos == 1 && m.retain && m.props.content_type == NULL);
	CHECK(!m.props.utf8 && m.props.expiry_s == 0);
	build(&m, &s, &(struct pub_req) { .kind = TK_HEALTH, .topic = "t" });
	CHECK(m.qos == 0 && m.retain && m.cls == MSG_LIFECYCLE);
	CHECK_INT(m.props.expiry_s, 90);
	build(
	    &m, &s, &(struct pub_req) { .kind = TK_COMPLETION, .topic = "t" });
	CHECK(m.qos == 1 && !m.retain && m.coalesce_key == NULL);
	build(&m, &s,
	    &(struct pub_req) { .kind = TK_BRIDGE_STATE, .topic = "t" });
	CHECK(m.urgent && m.retain);
	CHECK_STR(m.props.content_type, "text/plain");
	build(&m, &s,
	    &(struct pub_req) { .kind = TK_PREVIEW,
	        .topic = "t",
	        .content_type = "image/png" });
	CHECK(m.qos == 0 && m.retain && m.cls == MSG_PREVIEW);
	CHECK_STR(m.props.content_type, "image/png");
	CHECK(!m.props.utf8);
	/* a command's answer: on the request's own topic, QoS 1 but below
	 * the terminal events (a flood of bad commands cannot push them out
	 * of the queue) */
	build(&m, &s,
	    &(struct pub_req) {
	        .kind = TK_COMMAND_RESPONSE, .topic = "app/x" });
	CHECK(m.qos == 1 && !m.retain && m.cls == MSG_LIFECYCLE);
	CHECK(m.coalesce_key == NULL && m.props.utf8);
	CHECK_STR(m.topic, "app/x");
	CHECK_STR(m.props.content_type, "application/json");
	char t[128];
	CHECK(
	    pub_topic(t, sizeof(t), "p", "i", TK_COMMAND_RESPONSE, NULL, NULL)
	    > 0);
	CHECK_STR(t, "p/i/command/response");
}

static void
test_properties_cleaned(void)
{
	struct out_msg m;
	struct pub_scratch s;
	build(&m, &s,
	    &(struct pub_req) { .kind = TK_EVENT,
	        .topic = "t",
	        .event_type = "my\007type",
	        .prompt_id = "a\001b" });
	CHECK_STR(m.props.type, "my\xEF\xBF\xBDtype");
	CHECK_STR(m.props.prompt_id,
	    "a\xEF\xBF\xBD"
	    "b");
}

int
main(void)
{
	RUN(test_topics);
	RUN(test_event_qos);
	RUN(test_progress_event_message);
	RUN(test_kind_names);
	RUN(test_fixed_kinds);
	RUN(test_properties_cleaned);
	TEST_MAIN_END();
}
