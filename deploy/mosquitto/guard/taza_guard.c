/*
 * taza guard: a Mosquitto 2.0 plugin for the two checks the ACL file cannot make.
 *
 * 1. Retained publications only under a short list of topic filters (default: devices'
 *    presence `taza/v1/+/+/+/state` and taza-ingest's alerts `taza/v1/alerts/#`). The ACL
 *    file and the dynamic-security plugin match on topic and access only; neither sees the
 *    retain flag. Without this, a device allowed to publish `taza/v1/+/+/{id}/fill` could
 *    leave a retained reading there that every new subscriber receives as if it were new.
 * 2. SUBSCRIBE refused outside what the account may read. Mosquitto 2.0's ACL file checks
 *    reads only at delivery, so a device's SUBSCRIBE to `#` is granted (and then delivers
 *    nothing); with this the broker answers it with "not authorized" in the SUBACK, which
 *    firmware and audits can see. A device (a user name without a dot: taza's device ids
 *    have none, its other accounts are `ingest.*`, `crew.*`, `operator.*`) may subscribe
 *    only to its own feedback topic; a crew account `crew.REGION[.NAME]` only within its
 *    region's alerts. Other accounts (and anonymous clients) are left to the ACL file.
 *
 * It only ever denies: for everything else it defers to the next check (the ACL file), so
 * it can grant nothing. Retained messages the broker sends to subscribers are not touched
 * (access READ). Options (mosquitto.conf, after the `plugin` line; %u is the user name,
 * %r a crew account's region):
 *   plugin_opt_retain_topics taza/v1/+/+/+/state taza/v1/alerts/#
 *   plugin_opt_device_subscribe taza/v1/_feedback/%u
 *   plugin_opt_crew_subscribe taza/v1/alerts/%r/#
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
#define DEFAULT_DEVICE_SUBSCRIBE "taza/v1/_feedback/%u"
#define DEFAULT_CREW_SUBSCRIBE "taza/v1/alerts/%r/#"
#define MAX_TOPIC 1024
#define CREW_PREFIX "crew."

/* One per `plugin` line: with per_listener_settings each listener loads its own instance. */
struct guard {
	mosquitto_plugin_id_t *id;
	char *buf;
	char *filters[MAX_FILTERS];
	int count;
	char *device_subscribe;
	char *crew_subscribe;
};

/* `template` with %u and %r replaced; false if it does not fit. */
static bool expand(const char *template, const char *user, const char *region, char *out, size_t size)
{
	size_t n = 0;
	const char *p, *with;

	for(p = template; *p; p++){
		with = NULL;
		if(p[0] == '%' && p[1] == 'u'){
			with = user;
		}else if(p[0] == '%' && p[1] == 'r'){
			with = region;
		}
		if(with){
			if(n + strlen(with) >= size){
				return false;
			}
			memcpy(out + n, with, strlen(with));
			n += strlen(with);
			p++;
		}else{
			if(n + 1 >= size){
				return false;
			}
			out[n++] = *p;
		}
	}
	out[n] = '\0';
	return true;
}

/* Whether every topic `requested` can match is also matched by `allowed` (which may end in
 * `/#`; no other wildcard). */
static bool covered(const char *allowed, const char *requested)
{
	size_t len = strlen(allowed);

	if(!strcmp(allowed, requested)){
		return true;
	}
	if(len >= 2 && !strcmp(allowed + len - 2, "/#")){
		if(!strncmp(allowed, requested, len - 1)){
			return true; /* within the subtree: `a/b/` + anything */
		}
		return strlen(requested) == len - 2 && !strncmp(allowed, requested, len - 2);
	}
	return false;
}

static int subscribe_check(struct guard *g, struct mosquitto_evt_acl_check *ed)
{
	const char *user = mosquitto_client_username(ed->client);
	char region[128], allowed[MAX_TOPIC];
	const char *template, *start, *end;

	if(user == NULL){
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	region[0] = '\0';
	if(strchr(user, '.') == NULL){
		template = g->device_subscribe;
	}else if(!strncmp(user, CREW_PREFIX, strlen(CREW_PREFIX))){
		start = user + strlen(CREW_PREFIX);
		end = strchr(start, '.');
		if(end == NULL){
			end = start + strlen(start);
		}
		if(end == start || (size_t)(end - start) >= sizeof(region)){
			return MOSQ_ERR_ACL_DENIED;
		}
		memcpy(region, start, (size_t)(end - start));
		region[end - start] = '\0';
		template = g->crew_subscribe;
	}else{
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	if(expand(template, user, region, allowed, sizeof(allowed)) && covered(allowed, ed->topic)){
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "taza guard: denied subscription to %s by user %s",
			ed->topic, user);
	return MOSQ_ERR_ACL_DENIED;
}

static int acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	struct guard *g = userdata;
	bool match;
	int i;

	(void)event;
	if(ed->access == MOSQ_ACL_SUBSCRIBE){
		return subscribe_check(g, ed);
	}
	if(ed->access != MOSQ_ACL_WRITE || !ed->retain){
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	for(i = 0; i < g->count; i++){
		match = false;
		if(mosquitto_topic_matches_sub(g->filters[i], ed->topic, &match) == MOSQ_ERR_SUCCESS && match){
			return MOSQ_ERR_PLUGIN_DEFER;
		}
	}
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "taza guard: denied retained publish to %s by %s",
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
	const char *device_subscribe = DEFAULT_DEVICE_SUBSCRIBE;
	const char *crew_subscribe = DEFAULT_CREW_SUBSCRIBE;
	struct guard *g;
	char *save = NULL;
	char *tok;
	int i;

	for(i = 0; i < opt_count; i++){
		if(!strcmp(opts[i].key, "retain_topics")){
			topics = opts[i].value;
		}else if(!strcmp(opts[i].key, "device_subscribe")){
			device_subscribe = opts[i].value;
		}else if(!strcmp(opts[i].key, "crew_subscribe")){
			crew_subscribe = opts[i].value;
		}
	}
	g = calloc(1, sizeof(*g));
	if(g == NULL || (g->buf = strdup(topics)) == NULL
			|| (g->device_subscribe = strdup(device_subscribe)) == NULL
			|| (g->crew_subscribe = strdup(crew_subscribe)) == NULL){
		if(g){
			free(g->buf);
			free(g->device_subscribe);
		}
		free(g);
		return MOSQ_ERR_NOMEM;
	}
	for(tok = strtok_r(g->buf, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)){
		if(g->count == MAX_FILTERS || mosquitto_sub_topic_check(tok) != MOSQ_ERR_SUCCESS){
			mosquitto_log_printf(MOSQ_LOG_ERR, "taza guard: bad or too many retain_topics: %s", tok);
			free(g->buf);
			free(g->device_subscribe);
			free(g->crew_subscribe);
			free(g);
			return MOSQ_ERR_INVAL;
		}
		g->filters[g->count++] = tok;
	}
	g->id = identifier;
	*user_data = g;
	mosquitto_log_printf(MOSQ_LOG_INFO, "taza guard: retained publications allowed on %d filter(s); "
			"devices subscribe to %s, crews to %s", g->count, g->device_subscribe, g->crew_subscribe);
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
		free(g->device_subscribe);
		free(g->crew_subscribe);
		free(g);
	}
	return MOSQ_ERR_SUCCESS;
}
