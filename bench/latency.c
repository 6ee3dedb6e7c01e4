/* A load generator that times each request on its own: CONNECTIONS keep-alive connections each
 * send one pre-built HTTP/1.1 request, read the whole response, and send it again, for the given
 * seconds. Every request's latency, from its first byte written to its response's last byte read,
 * goes into the percentiles. wrk's percentiles are not this: wrk adds, for every slow request, the
 * ones a steady client would have sent meanwhile, so one stall of 0.5 s weighs as hundreds of slow
 * requests (bench/wrk_latency_check.py). A Python client measures its own pauses instead.
 * bench/common.py builds this with gcc and runs it:
 *
 *   latency PORT SECONDS CONNECTIONS REQUEST_FILE [NEEDLE COUNT]
 *
 * The connections are shared by two threads (one for a single connection), each waiting on its
 * own epoll, as `wrk -t2` does. With NEEDLE and COUNT, a 200 response whose body holds NEEDLE fewer
 * than COUNT times counts as short (a ReceiveMessage that found fewer messages than asked for).
 * Responses must carry a Content-Length. Prints one line:
 *   requests N errors N short N seconds X p50_us X p99_us X p999_us X max_us X
 * where seconds runs from the first request to the last response. */
#define _GNU_SOURCE /* memmem */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUFFER (1 << 22) /* the largest response: 10 messages of 256 KiB would not fit, ours do */
#define PATIENCE_MS 10000 /* a peer that stops answering fails the run instead of hanging it */

static char request[1 << 20];
static size_t request_len, wanted;
static const char *needle;
static int port;
static double end_us;

struct connection {
    int fd;
    size_t got, total;
    char *body, *buffer;
    double started;
};

struct worker {
    pthread_t thread;
    struct connection *connections;
    int count;
    double *latencies;
    size_t done, capacity, errors, short_;
};

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static void fail(const char *what) {
    if (errno) perror(what);
    else fprintf(stderr, "%s\n", what);
    exit(1);
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static size_t occurrences(const char *haystack, size_t len, const char *pattern) {
    size_t found = 0, n = strlen(pattern);
    for (const char *at = haystack; (at = memmem(at, len - (at - haystack), pattern, n)); at += n) found++;
    return found;
}

static void send_request(struct connection *c) {
    c->got = c->total = 0;
    c->body = NULL;
    c->started = now_us();
    for (size_t sent = 0; sent < request_len;) {
        ssize_t n = write(c->fd, request + sent, request_len - sent);
        if (n <= 0) fail("write");
        sent += n;
    }
}

/* Reads what has arrived; returns 1 once the whole response is in. */
static int receive(struct connection *c) {
    if (c->got == BUFFER) errno = 0, fail("response too large");
    ssize_t n = recv(c->fd, c->buffer + c->got, BUFFER - c->got, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
    if (n < 0) fail("read");
    if (n == 0) errno = 0, fail("connection closed");
    c->got += n;
    if (!c->body && (c->body = memmem(c->buffer, c->got, "\r\n\r\n", 4))) {
        c->body += 4;
        size_t length = 0;
        for (char *line = c->buffer; line < c->body - 4; line = (char *)memmem(line, c->body - line, "\r\n", 2) + 2)
            if (!strncasecmp(line, "content-length:", 15)) length = strtoul(line + 15, NULL, 10);
        c->total = (c->body - c->buffer) + length;
    }
    if (!c->body || c->got < c->total) return 0;
    if (c->got != c->total) errno = 0, fail("more than one response");
    return 1;
}

static void *run(void *argument) {
    struct worker *w = argument;
    int poll = epoll_create1(0), one = 1, active = w->count;
    if (poll < 0) fail("epoll_create1");
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    for (int i = 0; i < w->count; i++) {
        struct connection *c = &w->connections[i];
        if ((c->fd = socket(AF_INET, SOCK_STREAM, 0)) < 0) fail("socket");
        if (connect(c->fd, (struct sockaddr *)&address, sizeof address)) fail("connect");
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (!(c->buffer = malloc(BUFFER))) fail("malloc");
        struct epoll_event event = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(poll, EPOLL_CTL_ADD, c->fd, &event)) fail("epoll_ctl");
        send_request(c);
    }
    struct epoll_event events[64];
    while (active > 0) {
        int ready = epoll_wait(poll, events, 64, PATIENCE_MS);
        if (ready < 0 && errno == EINTR) continue;
        if (ready < 0) fail("epoll_wait");
        if (ready == 0) errno = 0, fail("no answer for 10 s");
        for (int i = 0; i < ready; i++) {
            struct connection *c = events[i].data.ptr;
            if (!receive(c)) continue;
            double finished = now_us();
            if (w->done == w->capacity) {
                w->capacity = w->capacity ? 2 * w->capacity : 1 << 16;
                if (!(w->latencies = realloc(w->latencies, w->capacity * sizeof *w->latencies))) fail("realloc");
            }
            w->latencies[w->done++] = finished - c->started;
            if (strncmp(c->buffer, "HTTP/1.1 200", 12)) w->errors++;
            else if (needle && occurrences(c->body, c->total - (c->body - c->buffer), needle) < wanted) w->short_++;
            if (finished < end_us) send_request(c);
            else close(c->fd), active--;
        }
    }
    close(poll);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 5 && argc != 7) {
        fprintf(stderr, "usage: latency PORT SECONDS CONNECTIONS REQUEST_FILE [NEEDLE COUNT]\n");
        return 2;
    }
    port = atoi(argv[1]);
    double seconds = atof(argv[2]);
    int connections = atoi(argv[3]), threads = connections > 1 ? 2 : 1;
    needle = argc == 7 ? argv[5] : NULL;
    wanted = argc == 7 ? (size_t)atoi(argv[6]) : 0;
    if (connections < 1) return fprintf(stderr, "CONNECTIONS must be at least 1\n"), 2;

    FILE *file = fopen(argv[4], "rb");
    if (!file) return perror("request file"), 2;
    request_len = fread(request, 1, sizeof request, file);
    fclose(file);

    struct worker workers[2] = {0};
    struct connection *all = calloc(connections, sizeof *all);
    double started = now_us();
    end_us = started + seconds * 1e6;
    for (int t = 0, first = 0; t < threads; t++) {
        workers[t].connections = all + first;
        workers[t].count = connections / threads + (t < connections % threads);
        first += workers[t].count;
        if (pthread_create(&workers[t].thread, NULL, run, &workers[t])) return perror("pthread_create"), 1;
    }
    size_t count = 0, errors = 0, short_ = 0;
    for (int t = 0; t < threads; t++) {
        pthread_join(workers[t].thread, NULL);
        count += workers[t].done, errors += workers[t].errors, short_ += workers[t].short_;
    }
    double elapsed = (now_us() - started) / 1e6;
    if (!count) return fprintf(stderr, "no request completed\n"), 1;
    double *latencies = malloc(count * sizeof *latencies);
    for (int t = 0, at = 0; t < threads; at += workers[t].done, t++)
        memcpy(latencies + at, workers[t].latencies, workers[t].done * sizeof *latencies);
    qsort(latencies, count, sizeof *latencies, compare);
#define AT(q) latencies[(size_t)((count - 1) * (q))]
    printf("requests %zu errors %zu short %zu seconds %.3f p50_us %.1f p99_us %.1f p999_us %.1f max_us %.1f\n", count,
           errors, short_, elapsed, AT(0.5), AT(0.99), AT(0.999), latencies[count - 1]);
    return 0;
}
