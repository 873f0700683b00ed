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

static mosquitto_plugin_id_t *plugin_id = NULL;
static char *topics_buf = NULL;
static char *filters[MAX_FILTERS];
static int filter_count = 0;

static int acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	bool match;
	int i;

	(void)event;
	(void)userdata;
	if(ed->access != MOSQ_ACL_WRITE || !ed->retain){
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	for(i = 0; i < filter_count; i++){
		match = false;
		if(mosquitto_topic_matches_sub(filters[i], ed->topic, &match) == MOSQ_ERR_SUCCESS && match){
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
	char *save = NULL;
	char *tok;
	int i;

	(void)user_data;
	for(i = 0; i < opt_count; i++){
		if(!strcmp(opts[i].key, "retain_topics")){
			topics = opts[i].value;
		}
	}
	topics_buf = strdup(topics);
	if(topics_buf == NULL){
		return MOSQ_ERR_NOMEM;
	}
	for(tok = strtok_r(topics_buf, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)){
		if(filter_count == MAX_FILTERS || mosquitto_sub_topic_check(tok) != MOSQ_ERR_SUCCESS){
			mosquitto_log_printf(MOSQ_LOG_ERR, "taza retain guard: bad or too many retain_topics: %s", tok);
			return MOSQ_ERR_INVAL;
		}
		filters[filter_count++] = tok;
	}
	plugin_id = identifier;
	mosquitto_log_printf(MOSQ_LOG_INFO, "taza retain guard: retained publications allowed on %d filter(s)", filter_count);
	return mosquitto_callback_register(plugin_id, MOSQ_EVT_ACL_CHECK, acl_check, NULL, NULL);
}

int mosquitto_plugin_cleanup(void *user_data, struct mosquitto_opt *opts, int opt_count)
{
	(void)user_data;
	(void)opts;
	(void)opt_count;
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_ACL_CHECK, acl_check, NULL);
	free(topics_buf);
	topics_buf = NULL;
	filter_count = 0;
	return MOSQ_ERR_SUCCESS;
}
