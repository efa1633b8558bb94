/* Runs a program without CAP_NET_ADMIN, as a pod without NET_ADMIN would:
 * drops it from the bounding set, so that root's exec does not regain it.
 * The VM tests use it inside the guest. Test tooling, never shipped. */
#include <stdio.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2 || prctl(PR_CAPBSET_DROP, 12, 0, 0, 0) != 0) {
        perror("nocap");
        return 126;
    }
    execv(argv[1], argv + 1);
    perror("nocap: exec");
    return 127;
}
