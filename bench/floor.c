/* The floor of a request over loopback TCP on this machine: a server that does no work, answering
 * every read with the same fixed reply from one thread. Driven by the same wrk script as a real
 * peer, it shows how much of a one-connection round trip is the kernel's and the load generator's.
 *
 *   gcc -O2 -o /tmp/floor bench/floor.c && /tmp/floor 4778 &
 *   QUEUE_URL=http://localhost:4778/000000000000/q wrk -t1 -c1 -d4s -s bench/wrk/sqs_send.lua http://127.0.0.1:4778
 *
 * One request per read: right for wrk at one connection, which sends the next only after a reply. */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 4778, one = 1;
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(listener, (struct sockaddr *)&address, sizeof address) || listen(listener, 16)) return 1;
    const char *reply = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/x-amz-json-1.0\r\n\r\n{}";
    static char buffer[65536];
    for (;;) {
        int connection = accept(listener, NULL, NULL);
        if (connection < 0) continue;
        setsockopt(connection, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        while (read(connection, buffer, sizeof buffer) > 0)
            if (write(connection, reply, strlen(reply)) < 0) break;
        close(connection);
    }
}
