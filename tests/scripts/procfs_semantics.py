"""Checks that /proc/sys paths behave as on a real procfs, through every
spelling and syscall family. Prints one line per check: "ok NAME" or
"FAIL NAME: detail". Run it under k3shim (inside gVisor or in shadow mode)."""
import errno
import os
import stat
import sys

fails = 0


def check(name, cond, detail=""):
    global fails
    if cond:
        print("ok", name)
    else:
        fails += 1
        print("FAIL", name + ":", detail)


def read(p, **kw):
    fd = os.open(p, os.O_RDONLY, **kw)
    try:
        return os.read(fd, 4096).decode()
    finally:
        os.close(fd)


def err(f):
    try:
        f()
        return 0
    except OSError as e:
        return e.errno


P = "/proc/sys/vm/panic_on_oom"
v = read(P)
check("absolute read ends with a newline", v.endswith("\n") and v.strip().isdigit(), repr(v))
for spelling in ["/proc//sys/vm/./panic_on_oom", "/proc/sys/kernel/../vm/panic_on_oom", "/proc/self/root/proc/sys/vm/panic_on_oom", "/proc/thread-self/root/proc/sys/vm/panic_on_oom"]:
    check("spelling " + spelling, read(spelling) == v, spelling)
os.chdir("/proc/sys")
check("cwd-relative read", read("vm/panic_on_oom") == v)
check("cwd-relative via /proc/self/cwd", read("/proc/self/cwd/vm/panic_on_oom") == v)
os.chdir("/")
d = os.open("/proc/sys", os.O_RDONLY | os.O_DIRECTORY)
check("dirfd-relative read", read("vm/panic_on_oom", dir_fd=d) == v)
dv = os.open("vm", os.O_RDONLY | os.O_DIRECTORY, dir_fd=d)
check("dirfd of a subdirectory", read("panic_on_oom", dir_fd=dv) == v)
check("dirfd with ..", read("../vm/panic_on_oom", dir_fd=dv) == v)
check("/proc/self/fd/N/ path", read("/proc/self/fd/%d/panic_on_oom" % dv) == v)

st = os.stat(P)
check("stat: regular file", stat.S_ISREG(st.st_mode), oct(st.st_mode))
check("stat: mode 0644", stat.S_IMODE(st.st_mode) == 0o644, oct(st.st_mode))
lst = os.lstat(P)
check("lstat: regular file", stat.S_ISREG(lst.st_mode))
check("fstatat via dirfd", stat.S_ISREG(os.stat("vm/panic_on_oom", dir_fd=d).st_mode))
check("stat of a directory: 0555 dir", stat.S_ISDIR(os.stat("/proc/sys/vm").st_mode))
check("access F_OK", os.access(P, os.F_OK))
check("access R_OK|W_OK", os.access(P, os.R_OK | os.W_OK))
check("faccessat via dirfd", os.access("vm/panic_on_oom", os.R_OK, dir_fd=d))
check("access X_OK is denied", not os.access(P, os.X_OK))
check("readlink of an entry is EINVAL", err(lambda: os.readlink(P)) == errno.EINVAL)
check("missing entry is ENOENT", err(lambda: read("/proc/sys/vm/no_such_entry")) == errno.ENOENT)
check("missing dir is ENOENT", err(lambda: os.stat("/proc/sys/no_such_dir/x")) == errno.ENOENT)

# Writes: procfs semantics.
K = "/proc/sys/kernel/panic"
with open(K, "w") as f:
    f.write("65536")
check("write replaces the value", read(K) == "65536\n", repr(read(K)))
fd = os.open(K, os.O_WRONLY)  # no O_TRUNC
os.write(fd, b"1")
os.close(fd)
check("writing 1 over 65536 gives 1 without O_TRUNC", read(K) == "1\n", repr(read(K)))
check("invalid value is EINVAL", err(lambda: open(K, "w").write("abc") and None) == errno.EINVAL or read(K) == "1\n")
def bad_write():
    fd = os.open(K, os.O_WRONLY)
    try:
        os.write(fd, b"abc")
    finally:
        os.close(fd)
check("invalid write(2) fails with EINVAL", err(bad_write) == errno.EINVAL)
check("invalid write keeps the old value", read(K) == "1\n", repr(read(K)))
check("creat of a new entry fails", err(lambda: os.close(os.open("/proc/sys/kernel/new_entry", os.O_CREAT | os.O_WRONLY, 0o644))) in (errno.EPERM, errno.EACCES, errno.ENOENT))
check("no new entry appeared", err(lambda: os.stat("/proc/sys/kernel/new_entry")) == errno.ENOENT)
check("mkdir fails", err(lambda: os.mkdir("/proc/sys/kernel/newdir")) in (errno.EPERM, errno.EACCES, errno.ENOENT))
check("unlink fails", err(lambda: os.unlink(K)) in (errno.EPERM, errno.EACCES))
# Linux: ENOENT (procfs's lookup refuses the missing new name); gVisor: EPERM.
e = err(lambda: os.rename(K, "/proc/sys/kernel/x"))
check("rename fails", e in (errno.EPERM, errno.EACCES, errno.EXDEV, errno.ENOENT), errno.errorcode.get(e, e))
check("symlink fails", err(lambda: os.symlink("/tmp", "/proc/sys/kernel/lnk")) in (errno.EPERM, errno.EACCES, errno.ENOENT))
check("truncate is refused or a no-op", err(lambda: os.truncate(K, 0)) in (0, errno.EPERM, errno.EACCES) and read(K) == "1\n")
RO = "/proc/sys/kernel/osrelease"
check("read-only entry: write is EACCES", err(lambda: os.open(RO, os.O_WRONLY)) in (errno.EACCES, errno.EPERM))

# Listing shows fake and real entries.
names = os.listdir("/proc/sys/vm")
check("listing has the fake panic_on_oom", "panic_on_oom" in names, names)
check("listing has overcommit_memory", "overcommit_memory" in names, names)
check("kernel/keys listed", "root_maxkeys" in os.listdir("/proc/sys/kernel/keys"))

# Paths that normalize outside /proc/sys are never redirected.
check("/proc/sys/../version is the real /proc/version", read("/proc/sys/../version") == read("/proc/version"))
check("/proc/sys/../../etc/hostname is the real file", read("/proc/sys/../../etc/hostname") == open("/etc/hostname").read())

# openat2, if the sandbox has it (glibc has no wrapper: use the raw syscall).
try:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    class How(ctypes.Structure):
        _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]
    how = How(os.O_RDONLY, 0, 0)
    r = libc.syscall(437, -100, P.encode(), ctypes.byref(how), ctypes.sizeof(how))
    if r < 0 and ctypes.get_errno() == errno.ENOSYS:
        print("ok openat2 (not in this kernel)")
    else:
        check("openat2 read", r >= 0 and os.read(r, 100).decode() == v, ctypes.get_errno())
except Exception as e:  # noqa
    check("openat2", False, e)

print("summary: %d failed" % fails)
sys.exit(1 if fails else 0)
