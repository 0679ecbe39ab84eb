/* sysloop: N iterations of one path-taking syscall pattern, timed inside.
 *   sysloop N open PATH   open(O_RDONLY) + read + close   (1 path syscall / iteration)
 *   sysloop N stat PATH   stat                            (1 path syscall / iteration)
 * Prints {"n":N,"ns_per_iter":X}. Used for k3shim's cost per intercepted syscall. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: sysloop N open|stat PATH\n"); return 2; }
    long n = atol(argv[1]);
    int op = strcmp(argv[2], "stat") == 0;
    const char *path = argv[3];
    char buf[256];
    struct stat sb;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) {
        if (op) {
            if (stat(path, &sb)) { perror(path); return 1; }
        } else {
            int fd = open(path, O_RDONLY);
            if (fd < 0) { perror(path); return 1; }
            if (read(fd, buf, sizeof buf) < 0) { perror("read"); return 1; }
            close(fd);
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n;
    printf("{\"n\":%ld,\"ns_per_iter\":%.1f}\n", n, ns);
    return 0;
}
