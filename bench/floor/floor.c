/* floor: the cost of one bare seccomp-trace round trip on this machine.
 *
 * The child times N getppid() calls untraced, then installs a seccomp
 * filter returning SECCOMP_RET_TRACE for getppid and times N more. The
 * parent is a minimal tracer: waitpid -> PTRACE_GETREGS -> PTRACE_CONT
 * (mode "regs"), plus one 8-byte pread of /proc/PID/mem (mode "mem"), the
 * engine's common path. Prints one JSON object: ns per untraced call,
 * ns per traced call, and the difference (the round trip).
 *   usage: floor N [regs|mem]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 20000;
    int mem = argc > 2 && strcmp(argv[2], "mem") == 0;
    int p[2];
    if (pipe(p)) return 1;
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        if (ptrace(PTRACE_TRACEME, 0, 0, 0)) _exit(10);
        raise(SIGSTOP);
        double t0 = now();
        for (long i = 0; i < n; i++) syscall(SYS_getppid);
        double t1 = now();
        struct sock_filter f[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getppid, 0, 1),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRACE),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        struct sock_fprog prog = {sizeof f / sizeof f[0], f};
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) _exit(11);
        if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)) _exit(12);
        double t2 = now();
        for (long i = 0; i < n; i++) syscall(SYS_getppid);
        double t3 = now();
        double r[2] = {(t1 - t0) / n, (t3 - t2) / n};
        if (write(p[1], r, sizeof r) != sizeof r) _exit(13);
        _exit(0);
    }
    close(p[1]);
    int st;
    if (waitpid(pid, &st, 0) < 0 || !WIFSTOPPED(st)) { fprintf(stderr, "floor: child did not stop\n"); return 1; }
    if (ptrace(PTRACE_SETOPTIONS, pid, 0, PTRACE_O_TRACESECCOMP | PTRACE_O_EXITKILL)) { perror("floor: PTRACE_SETOPTIONS"); return 1; }
    char mp[64];
    snprintf(mp, sizeof mp, "/proc/%d/mem", pid);
    int mfd = mem ? open(mp, O_RDONLY) : -1;
    if (mem && mfd < 0) { perror("floor: open mem"); return 1; }
    long stops = 0;
    int sig = 0;
    for (;;) {
        if (ptrace(PTRACE_CONT, pid, 0, sig)) { perror("floor: PTRACE_CONT"); return 1; }
        sig = 0;
        if (waitpid(pid, &st, 0) < 0) { perror("floor: waitpid"); return 1; }
        if (WIFEXITED(st) || WIFSIGNALED(st)) break;
        if (st >> 8 == (SIGTRAP | (PTRACE_EVENT_SECCOMP << 8))) {
            struct user_regs_struct regs;
            if (ptrace(PTRACE_GETREGS, pid, 0, &regs)) { perror("floor: GETREGS"); return 1; }
            if (mem) {
                uint64_t w;
                if (pread(mfd, &w, 8, (off_t)regs.rsp) != 8) { perror("floor: pread mem"); return 1; }
            }
            stops++;
        } else if (WIFSTOPPED(st)) {
            sig = WSTOPSIG(st) == SIGTRAP ? 0 : WSTOPSIG(st);
        }
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) { fprintf(stderr, "floor: child failed (status %d)\n", st); return 1; }
    double r[2];
    if (read(p[0], r, sizeof r) != sizeof r) { fprintf(stderr, "floor: no result\n"); return 1; }
    printf("{\"mode\":\"%s\",\"n\":%ld,\"stops\":%ld,\"untraced_ns\":%.1f,\"traced_ns\":%.1f,\"round_trip_ns\":%.1f}\n",
           mem ? "mem" : "regs", n, stops, r[0], r[1], r[1] - r[0]);
    return 0;
}
