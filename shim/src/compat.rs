//! The other syscall ABIs an x86_64 process can use: i386 (`int $0x80`, or a
//! 32-bit program exec'd by the target) and x32 (x86_64 numbers with bit 30
//! set). The engine decodes only x86_64 syscalls, so path-taking syscalls of
//! those ABIs, and writes/copies of the fds whose writes it emulates, are
//! refused (by the filter, or in step mode by the tracer): i386 ones with
//! EPERM, x32 ones with ENOSYS (as on a kernel without x32). They are never
//! passed through, where they would reach the real /proc/sys unseen.

use crate::sysent::PATH_SYSCALLS;
use std::str::FromStr;

/// AUDIT_ARCH_X86_64 and AUDIT_ARCH_I386, as seccomp reports them.
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
pub const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// The x32 ABI's bit in x86_64 syscall numbers.
pub const X32_BIT: u32 = 0x4000_0000;
/// The errno a refused i386 syscall fails with.
pub const REFUSED_I386: i32 = libc::EPERM;
/// The errno a refused x32 syscall fails with: what a kernel without x32
/// support (most, this one included) answers for every x32 syscall.
pub const REFUSED_X32: i32 = libc::ENOSYS;
/// cs of a task in 32-bit mode (a 32-bit program), on x86_64 Linux.
pub const USER32_CS: u64 = 0x23;

/// How a refused fd syscall names the fd(s) to check (argument indexes), and
/// for fcntl, the commands that copy it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdArgs {
    /// Refused when argument 0 is one of the shim's fds.
    First,
    /// dup2/dup3: argument 0 or 1.
    FirstOrSecond,
    /// fcntl F_DUPFD/F_DUPFD_CLOEXEC (argument 1) of argument 0.
    Dupfd,
}

/// i386 path syscalls that have no x86_64 twin of the same name.
const I386_ONLY_PATHS: &[&str] = &[
    "oldstat",
    "oldlstat",
    "stat64",
    "lstat64",
    "fstatat64",
    "truncate64",
    "statfs64",
    "chown32",
    "lchown32",
    "uselib",
];

/// Syscalls refused in every ABI besides the path syscalls: io_uring's
/// operations open and write files with no syscall the engine sees.
const NOT_PATHS: &[&str] = &["io_uring_setup", "io_uring_enter", "io_uring_register"];

/// Numbers of the i386 syscalls that take a path (refused).
pub fn i386_path_nrs() -> Vec<u32> {
    let mut v: Vec<u32> = PATH_SYSCALLS
        .iter()
        .filter_map(|e| syscalls::x86::Sysno::from_str(e.sysno.name()).ok())
        .chain(
            I386_ONLY_PATHS
                .iter()
                .chain(NOT_PATHS)
                .map(|n| syscalls::x86::Sysno::from_str(n).expect("an i386 syscall name")),
        )
        .map(|s| s.id() as u32)
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The write-family and fd-copying syscalls of an ABI, by name, with how their
/// fd is named: refused on the fds whose writes the engine emulates.
const FD_CALLS: &[(&str, FdArgs)] = &[
    ("write", FdArgs::First),
    ("pwrite64", FdArgs::First),
    ("writev", FdArgs::First),
    ("pwritev", FdArgs::First),
    ("pwritev2", FdArgs::First),
    ("close", FdArgs::First),
    ("ftruncate", FdArgs::First),
    ("ftruncate64", FdArgs::First),
    ("dup2", FdArgs::FirstOrSecond),
    ("dup3", FdArgs::FirstOrSecond),
    ("fcntl", FdArgs::Dupfd),
    ("fcntl64", FdArgs::Dupfd),
    ("dup", FdArgs::First),
    ("getdents", FdArgs::First),
    ("getdents64", FdArgs::First),
    ("lseek", FdArgs::First),
    ("_llseek", FdArgs::First),
    ("sendfile", FdArgs::First),
    ("sendfile64", FdArgs::First),
];

/// i386 numbers of the fd syscalls (refused on the shim's fds).
pub fn i386_fd_nrs() -> Vec<(u32, FdArgs)> {
    FD_CALLS
        .iter()
        .filter_map(|(n, a)| {
            syscalls::x86::Sysno::from_str(n)
                .ok()
                .map(|s| (s.id() as u32, *a))
        })
        .collect()
}

/// x32 numbers (bit 30 included) of the path syscalls: the x86_64 ones, plus
/// x32's own execve (520) and execveat (545).
pub fn x32_path_nrs() -> Vec<u32> {
    let mut v: Vec<u32> = PATH_SYSCALLS
        .iter()
        .map(|e| e.sysno.id() as u32 | X32_BIT)
        .chain(NOT_PATHS.iter().map(|n| {
            syscalls::Sysno::from_str(n)
                .expect("an x86_64 syscall name")
                .id() as u32
                | X32_BIT
        }))
        .chain([520 | X32_BIT, 545 | X32_BIT])
        .collect();
    v.sort_unstable();
    v
}

/// x32 numbers of the fd syscalls (x32 has its own writev (516), pwritev
/// (535) and pwritev2 (547)).
pub fn x32_fd_nrs() -> Vec<(u32, FdArgs)> {
    let mut v: Vec<(u32, FdArgs)> = FD_CALLS
        .iter()
        .filter_map(|(n, a)| {
            syscalls::Sysno::from_str(n)
                .ok()
                .map(|s| (s.id() as u32 | X32_BIT, *a))
        })
        .collect();
    for n in [516, 535, 547] {
        v.push((n | X32_BIT, FdArgs::First));
    }
    v
}

/// x32's own syscalls (512..=547), by number.
const X32_OWN: [&str; 36] = [
    "rt_sigaction",
    "rt_sigreturn",
    "ioctl",
    "readv",
    "writev",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "execve",
    "ptrace",
    "rt_sigpending",
    "rt_sigtimedwait",
    "rt_sigqueueinfo",
    "sigaltstack",
    "timer_create",
    "mq_notify",
    "kexec_load",
    "waitid",
    "set_robust_list",
    "get_robust_list",
    "vmsplice",
    "move_pages",
    "preadv",
    "pwritev",
    "rt_tgsigqueueinfo",
    "recvmmsg",
    "sendmmsg",
    "process_vm_readv",
    "process_vm_writev",
    "setsockopt",
    "getsockopt",
    "io_setup",
    "io_submit",
    "execveat",
    "preadv2",
    "pwritev2",
];

/// The name of syscall `nr` of an ABI (i386 when `i386`, else x32, bit 30
/// included), from that ABI's own table (x32 shares x86_64's numbers below
/// 512 and has its own above): never an x86_64 name for an i386 number.
pub fn abi_name(i386: bool, nr: u64) -> &'static str {
    if i386 {
        return usize::try_from(nr)
            .ok()
            .and_then(syscalls::x86::Sysno::new)
            .map(|s| s.name())
            .unwrap_or("unknown");
    }
    let n = nr & !u64::from(X32_BIT);
    match n {
        512..=547 => X32_OWN[(n - 512) as usize],
        _ => usize::try_from(n)
            .ok()
            .and_then(syscalls::Sysno::new)
            .map(|s| s.name())
            .unwrap_or("unknown"),
    }
}

/// Is syscall `nr` of an ABI (i386 when `i386`, else x32) refused with these
/// arguments? Used in step mode, where no filter runs.
pub fn refused(i386: bool, nr: u64, args: &[u64; 6], fd_range: (u64, u64)) -> bool {
    let nr = nr as u32;
    let (paths, fds) = if i386 {
        (i386_path_nrs(), i386_fd_nrs())
    } else {
        (x32_path_nrs(), x32_fd_nrs())
    };
    if paths.contains(&nr) {
        return true;
    }
    let ours = |a: u64| (fd_range.0..fd_range.1).contains(&(a & 0xffff_ffff));
    fds.iter().any(|(n, how)| {
        *n == nr
            && match how {
                FdArgs::First => ours(args[0]),
                FdArgs::FirstOrSecond => ours(args[0]) || ours(args[1]),
                FdArgs::Dupfd => {
                    ours(args[0]) && matches!(args[1] as i32, libc::F_DUPFD | libc::F_DUPFD_CLOEXEC)
                }
            }
    })
}

/// PTRACE_GET_SYSCALL_INFO's arch field for `tid`, at a syscall stop: None
/// where the request is not supported (then the stop is taken as x86_64).
pub fn syscall_arch(tid: i32) -> Option<u32> {
    const PTRACE_GET_SYSCALL_INFO: libc::c_uint = 0x420e;
    let mut info = [0u8; 88];
    // SAFETY: the kernel writes at most `info.len()` bytes (the size passed) into our buffer.
    let n = unsafe { libc::ptrace(PTRACE_GET_SYSCALL_INFO, tid, info.len(), info.as_mut_ptr()) };
    (n >= 8).then(|| u32::from_ne_bytes(info[4..8].try_into().expect("4")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i386_open_and_execve_are_refused_and_getpid_is_not() {
        let nrs = i386_path_nrs();
        assert!(nrs.contains(&5), "open");
        assert!(nrs.contains(&11), "execve");
        assert!(nrs.contains(&295), "openat");
        assert!(nrs.contains(&195), "stat64");
        assert!(!nrs.contains(&20), "getpid");
        assert!(
            nrs.len() >= PATH_SYSCALLS.len(),
            "every path syscall has an i386 twin"
        );
    }

    #[test]
    fn other_abis_syscalls_are_named_from_their_own_tables() {
        assert_eq!(abi_name(true, 5), "open");
        assert_eq!(abi_name(true, 20), "getpid");
        assert_eq!(abi_name(false, 2 | u64::from(X32_BIT)), "open");
        assert_eq!(abi_name(false, 516 | u64::from(X32_BIT)), "writev");
        assert_eq!(abi_name(false, 535 | u64::from(X32_BIT)), "pwritev");
    }

    #[test]
    fn x32_numbers_carry_bit_30() {
        assert!(x32_path_nrs().contains(&(2 | X32_BIT)));
        assert!(x32_path_nrs().iter().all(|n| n & X32_BIT != 0));
    }

    #[test]
    fn fd_syscalls_are_refused_only_on_the_shims_fds() {
        let w = syscalls::x86::Sysno::write.id() as u64;
        let mut a = [1000, 0, 0, 0, 0, 0];
        assert!(refused(true, w, &a, (1000, 1024)));
        a[0] = 1;
        assert!(!refused(true, w, &a, (1000, 1024)));
        // Only the low 32 bits name the fd.
        a[0] = 0xffff_ffff_0000_03e8;
        assert!(refused(true, w, &a, (1000, 1024)));
    }
}
