/* Each request's own latency at one connection: sends one pre-built HTTP/1.1 request, reads the
 * whole response, and times that, over and over for the given seconds. wrk's percentiles are not
 * this: wrk adds, for every slow request, the ones a steady client would have sent meanwhile, so one
 * stall of 0.5 s weighs as hundreds of slow requests (bench/wrk_latency_check.py). A Python client
 * measures its own pauses instead. bench/common.py builds this with gcc and runs it:
 *
 *   latency PORT SECONDS REQUEST_FILE [NEEDLE COUNT]
 *
 * With NEEDLE and COUNT, a 200 response whose body holds NEEDLE fewer than COUNT times counts as
 * short (a ReceiveMessage that found fewer messages than asked for). Prints one line:
 *   requests N errors N short N p50_us X p99_us X p999_us X max_us X */
#define _GNU_SOURCE /* memmem */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static size_t occurrences(const char *haystack, size_t len, const char *needle) {
    size_t found = 0, n = strlen(needle);
    for (const char *at = haystack; (at = memmem(at, len - (at - haystack), needle, n)); at += n) found++;
    return found;
}

int main(int argc, char **argv) {
    if (argc != 4 && argc != 6) {
        fprintf(stderr, "usage: latency PORT SECONDS REQUEST_FILE [NEEDLE COUNT]\n");
        return 2;
    }
    int port = atoi(argv[1]), one = 1;
    double seconds = atof(argv[2]);
    const char *needle = argc == 6 ? argv[4] : NULL;
    size_t wanted = argc == 6 ? (size_t)atoi(argv[5]) : 0;

    static char request[1 << 20], buffer[1 << 22];
    FILE *file = fopen(argv[3], "rb");
    if (!file) return perror("request file"), 2;
    size_t request_len = fread(request, 1, sizeof request, file);
    fclose(file);

    int connection = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(connection, (struct sockaddr *)&address, sizeof address)) return perror("connect"), 1;
    setsockopt(connection, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* A peer that stops answering fails the run instead of hanging it. */
    struct timeval patience = {.tv_sec = 10};
    setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &patience, sizeof patience);

    size_t count = 0, capacity = 1 << 16, errors = 0, short_ = 0;
    double *latencies = malloc(capacity * sizeof *latencies);
    double end = now_us() + seconds * 1e6;
    while (now_us() < end) {
        double started = now_us();
        for (size_t sent = 0; sent < request_len;) {
            ssize_t n = write(connection, request + sent, request_len - sent);
            if (n <= 0) return perror("write"), 1;
            sent += n;
        }
        /* Read the head, then as much body as its Content-Length says. */
        size_t got = 0, total = 0;
        char *body = NULL;
        while (!body || got < total) {
            if (got == sizeof buffer) return fprintf(stderr, "response too large\n"), 1;
            ssize_t n = read(connection, buffer + got, sizeof buffer - got);
            if (n < 0) return perror("read"), 1;
            if (n == 0) return fprintf(stderr, "connection closed\n"), 1;
            got += n;
            if (!body && (body = memmem(buffer, got, "\r\n\r\n", 4))) {
                body += 4;
                size_t length = 0;
                for (char *line = buffer; line < body - 4; line = (char *)memmem(line, body - line, "\r\n", 2) + 2)
                    if (!strncasecmp(line, "content-length:", 15)) length = strtoul(line + 15, NULL, 10);
                total = (body - buffer) + length;
            }
        }
        if (got != total) return fprintf(stderr, "more than one response\n"), 1;
        double latency = now_us() - started;
        if (count == capacity) latencies = realloc(latencies, (capacity *= 2) * sizeof *latencies);
        latencies[count++] = latency;
        if (strncmp(buffer, "HTTP/1.1 200", 12)) errors++;
        else if (needle && occurrences(body, total - (body - buffer), needle) < wanted) short_++;
    }
    if (!count) return fprintf(stderr, "no request completed\n"), 1;
    qsort(latencies, count, sizeof *latencies, compare);
#define AT(q) latencies[(size_t)((count - 1) * (q))]
    printf("requests %zu errors %zu short %zu p50_us %.1f p99_us %.1f p999_us %.1f max_us %.1f\n", count, errors, short_,
           AT(0.5), AT(0.99), AT(0.999), latencies[count - 1]);
    return 0;
}
