/* The CRI sandbox ("pause") image of the real-node tests: holds the pod's
 * namespaces and exits on SIGTERM or SIGINT. Test tooling, never shipped. */
#include <signal.h>
#include <unistd.h>

static void stop(int signal) {
    (void)signal;
    _exit(0);
}

int main(void) {
    signal(SIGTERM, stop);
    signal(SIGINT, stop);
    for (;;)
        pause();
}
