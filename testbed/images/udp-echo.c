/* The stand-in agent of the real-node tests: listens on UDP 8125 (both
 * families: one IPv6 socket that also takes IPv4) like a statsd agent and answers every datagram with "<hostname> <datagram>", so
 * that a client outside the node sees which pod (its hostname) received it.
 * Test tooling, never shipped. */
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void stop(int signal) {
    (void)signal;
    _exit(0);
}

int main(void) {
    char host[128] = "unknown";
    char in[512], out[768];
    struct sockaddr_in6 addr = {.sin6_family = AF_INET6, .sin6_port = htons(8125)};
    int fd = socket(AF_INET6, SOCK_DGRAM, 0);
    int v6only = 0;

    signal(SIGTERM, stop);
    signal(SIGINT, stop);
    gethostname(host, sizeof host - 1);
    if (fd >= 0)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        perror("udp-echo: bind :8125");
        return 1;
    }
    /* When it listens, by its own clock: the container log's time is when
     * containerd copied the line, which a busy containerd delays. */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    printf("udp-echo %s listening on :8125/udp at %lld.%09ld\n", host, (long long)now.tv_sec, now.tv_nsec);
    fflush(stdout);
    for (;;) {
        struct sockaddr_in6 from;
        socklen_t len = sizeof from;
        ssize_t n = recvfrom(fd, in, sizeof in - 1, 0, (struct sockaddr *)&from, &len);
        if (n < 0)
            continue;
        int m = snprintf(out, sizeof out, "%s %.*s", host, (int)n, in);
        sendto(fd, out, (size_t)m, 0, (struct sockaddr *)&from, len);
    }
}
