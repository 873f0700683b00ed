/*
 * taza retain guard: a Mosquitto 2.0 plugin that refuses retained publications outside a
 * short list of topic filters (default: devices' presence `taza/v1/+/+/+/state` and
 * taza-ingest's alerts `taza/v1/alerts/#`).
 *
 * Why a plugin: Mosquitto 2.0's ACL file and its dynamic-security plugin both match on topic
 * and access only; neither sees the retain flag. Without this, a device allowed to publish
 * `taza/v1/+/+/{id}/fill` could leave a retained reading there that every new subscriber
 * (taza-ingest after a restart, crews, operators) receives as if it were new.
 *
 * It only ever denies: for everything else it defers to the next check (the ACL file), so
 * it can grant nothing. Retained messages the broker sends to subscribers are not touched
 * (access READ). Options (mosquitto.conf, after the `plugin` line):
 *   plugin_opt_retain_topics taza/v1/+/+/+/state taza/v1/alerts/#
 *
 * Build: make (needs gcc, mosquitto-dev and libmosquitto-dev); SPDX-License-Identifier: Apache-2.0
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define MAX_FILTERS 16
#define DEFAULT_TOPICS "taza/v1/+/+/+/state taza/v1/alerts/#"

/* One per `plugin` line: with per_listener_settings each listener loads its own instance. */
struct guard {
	mosquitto_plugin_id_t *id;
	char *buf;
	char *filters[MAX_FILTERS];
	int count;
};

static int acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	struct guard *g = userdata;
	bool match;
	int i;

	(void)event;
	if(ed->access != MOSQ_ACL_WRITE || !ed->retain){
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	for(i = 0; i < g->count; i++){
		match = false;
		if(mosquitto_topic_matches_sub(g->filters[i], ed->topic, &match) == MOSQ_ERR_SUCCESS && match){
			return MOSQ_ERR_PLUGIN_DEFER;
		}
	}
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "taza retain guard: denied retained publish to %s by %s",
			ed->topic, mosquitto_client_id(ed->client));
	return MOSQ_ERR_ACL_DENIED;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	int i;

	for(i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5){
			return 5;
		}
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **user_data,
		struct mosquitto_opt *opts, int opt_count)
{
	const char *topics = DEFAULT_TOPICS;
	struct guard *g;
	char *save = NULL;
	char *tok;
	int i;

	for(i = 0; i < opt_count; i++){
		if(!strcmp(opts[i].key, "retain_topics")){
			topics = opts[i].value;
		}
	}
	g = calloc(1, sizeof(*g));
	if(g == NULL || (g->buf = strdup(topics)) == NULL){
		free(g);
		return MOSQ_ERR_NOMEM;
	}
	for(tok = strtok_r(g->buf, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)){
		if(g->count == MAX_FILTERS || mosquitto_sub_topic_check(tok) != MOSQ_ERR_SUCCESS){
			mosquitto_log_printf(MOSQ_LOG_ERR, "taza retain guard: bad or too many retain_topics: %s", tok);
			free(g->buf);
			free(g);
			return MOSQ_ERR_INVAL;
		}
		g->filters[g->count++] = tok;
	}
	g->id = identifier;
	*user_data = g;
	mosquitto_log_printf(MOSQ_LOG_INFO, "taza retain guard: retained publications allowed on %d filter(s)", g->count);
	return mosquitto_callback_register(g->id, MOSQ_EVT_ACL_CHECK, acl_check, NULL, g);
}

int mosquitto_plugin_cleanup(void *user_data, struct mosquitto_opt *opts, int opt_count)
{
	struct guard *g = user_data;

	(void)opts;
	(void)opt_count;
	if(g){
		mosquitto_callback_unregister(g->id, MOSQ_EVT_ACL_CHECK, acl_check, NULL);
		free(g->buf);
		free(g);
	}
	return MOSQ_ERR_SUCCESS;
}
