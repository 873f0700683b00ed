/*
 * bench/cpub: the benchmarks' C publisher — mosquitto_pub -l with a topic on every line.
 *
 * mosquitto_pub publishes every line of its input on one topic, so four of them are four
 * "devices" at ~10k msg/s each: a stream no fleet sends (each reading another bin's, the
 * alert stage firing on one message in six) that the per-device rate limit exists to refuse.
 * This reads "topic<TAB>payload" lines from stdin, publishes each at QoS 1 (libmosquitto's own
 * loop thread, at most -M unacknowledged), and after end of input waits for every PUBACK,
 * then prints how many it sent and exits 0.
 *
 *   cpub -h 127.0.0.1 -p 1883 -i client-id [-M 1000]
 *
 * Built by bench/compare.py (gcc, libmosquitto-dev: the Makefile's apt packages).
 */
#include <mosquitto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static long acked;
static int connected = -1;

static void on_connect(struct mosquitto *m, void *obj, int rc)
{
    (void)m;
    (void)obj;
    pthread_mutex_lock(&lock);
    connected = rc;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
}

static void on_publish(struct mosquitto *m, void *obj, int mid)
{
    (void)m;
    (void)obj;
    (void)mid;
    pthread_mutex_lock(&lock);
    acked++;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *id = NULL;
    int port = 1883, inflight = 1000, opt;
    while ((opt = getopt(argc, argv, "h:p:i:M:")) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'i': id = optarg; break;
        case 'M': inflight = atoi(optarg); break;
        default:
            fprintf(stderr, "usage: cpub -h host -p port -i client-id [-M inflight]\n");
            return 2;
        }
    }
    mosquitto_lib_init();
    struct mosquitto *m = mosquitto_new(id, true, NULL);
    if (m == NULL) {
        perror("cpub: mosquitto_new");
        return 1;
    }
    mosquitto_max_inflight_messages_set(m, (unsigned int)inflight);
    mosquitto_connect_callback_set(m, on_connect);
    mosquitto_publish_callback_set(m, on_publish);
    int rc = mosquitto_connect(m, host, port, 60);
    if (rc == MOSQ_ERR_SUCCESS)
        rc = mosquitto_loop_start(m);
    if (rc != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "cpub: %s:%d: %s\n", host, port, mosquitto_strerror(rc));
        return 1;
    }
    pthread_mutex_lock(&lock);
    while (connected < 0)
        pthread_cond_wait(&changed, &lock);
    rc = connected;
    pthread_mutex_unlock(&lock);
    if (rc != 0) {
        fprintf(stderr, "cpub: CONNACK %d\n", rc);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long sent = 0;
    while ((len = getline(&line, &cap, stdin)) > 0) {
        if (line[len - 1] == '\n')
            line[--len] = '\0';
        char *tab = memchr(line, '\t', (size_t)len);
        if (tab == NULL) {
            fprintf(stderr, "cpub: line %ld has no tab\n", sent + 1);
            return 2;
        }
        *tab = '\0';
        const char *payload = tab + 1;
        rc = mosquitto_publish(m, NULL, line, (int)(line + len - payload), payload, 1, false);
        if (rc != MOSQ_ERR_SUCCESS) {
            fprintf(stderr, "cpub: publish %ld: %s\n", sent + 1, mosquitto_strerror(rc));
            return 1;
        }
        sent++;
    }
    pthread_mutex_lock(&lock);
    while (acked < sent)
        pthread_cond_wait(&changed, &lock);
    pthread_mutex_unlock(&lock);
    mosquitto_disconnect(m);
    mosquitto_loop_stop(m, false);
    mosquitto_destroy(m);
    mosquitto_lib_cleanup();
    free(line);
    printf("%ld\n", sent);
    return 0;
}
