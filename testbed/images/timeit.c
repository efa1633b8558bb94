/* Runs a command and prints "ELAPSED <seconds>" to stderr: a timer for the
 * VM benchmark, whose busybox has no sub-second `time`. Test tooling. */
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    struct timespec start, end;
    int status = 0;
    if (argc < 2)
        return 126;
    clock_gettime(CLOCK_MONOTONIC, &start);
    pid_t child = fork();
    if (child == 0) {
        execv(argv[1], argv + 1);
        perror("timeit: exec");
        _exit(127);
    }
    waitpid(child, &status, 0);
    clock_gettime(CLOCK_MONOTONIC, &end);
    fprintf(stderr, "ELAPSED %.6f\n",
            (double)(end.tv_sec - start.tv_sec) + (double)(end.tv_nsec - start.tv_nsec) / 1e9);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}
