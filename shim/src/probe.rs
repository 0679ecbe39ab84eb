//! Kernel facts the engine depends on, measured at start-up rather than read
//! from the version string (gVisor reports 4.4.0 but behaves unlike Linux 4.4).

use crate::mem::ReadMode;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Facts {
    /// Resuming a seccomp stop with PTRACE_SYSCALL gives a syscall-enter stop
    /// before the exit stop (Linux < 4.8 order, and gVisor's); false on Linux >= 4.8.
    pub enter_stop_after_seccomp: bool,
    /// How tracee memory can be read.
    pub read_mode: ReadMode,
    /// statx(..., AT_NO_AUTOMOUNT) fails with EINVAL on every path (gVisor 2022).
    pub statx_no_automount_broken: bool,
    /// openat2 applies RESOLVE_* flags (Linux >= 5.6; this gVisor has no openat2).
    pub openat2_resolve: bool,
    /// uname release, for the record.
    pub kernel_release: String,
}

fn openat2_resolve() -> bool {
    // struct open_how { flags, mode, resolve }: O_PATH of "/" with RESOLVE_NO_MAGICLINKS.
    let how: [u64; 3] = [libc::O_PATH as u64, 0, 0x02];
    // SAFETY: openat2 reads 24 bytes of `how`; a returned fd is closed at once.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            c"/".as_ptr(),
            how.as_ptr(),
            24usize,
        )
    };
    if fd >= 0 {
        // SAFETY: closing the fd we just got.
        unsafe { libc::close(fd as i32) };
    }
    fd >= 0
}

fn uname_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn statx_broken() -> bool {
    let mut buf = [0u8; 256];
    // SAFETY: statx writes at most sizeof(struct statx) (256) bytes into buf.
    let r = unsafe {
        libc::syscall(
            libc::SYS_statx,
            libc::AT_FDCWD,
            c"/".as_ptr(),
            libc::AT_NO_AUTOMOUNT,
            libc::STATX_BASIC_STATS,
            buf.as_mut_ptr(),
        )
    };
    r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL)
}

fn tracer_of(pid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .and_then(|v| v.trim().parse().ok())
        .filter(|t: &i32| *t != 0)
}

/// When PTRACE_SEIZE of our own child fails: is it because a tracer already
/// follows it (k3shim under `strace -f`, gdb, or another k3shim, which
/// attach to every child)? A process has one tracer only. Says so, naming
/// the tracer, or None when something else refused (capabilities, yama).
pub fn already_traced(child: i32) -> Option<String> {
    let me = std::process::id() as i32;
    let (whom, tracer) = match (tracer_of(me), tracer_of(child)) {
        (Some(t), _) => ("k3shim itself is", t),
        (None, Some(t)) if t != me => ("k3shim's children are", t),
        _ => return None,
    };
    let comm = std::fs::read_to_string(format!("/proc/{tracer}/comm"))
        .map(|c| format!(" ({})", c.trim()))
        .unwrap_or_default();
    Some(format!(
        "{whom} already being traced, by pid {tracer}{comm}, and a process can have only one tracer: run k3shim outside strace -f, gdb or another k3shim"
    ))
}

/// Forks a child that makes one traced getppid, and watches the stop order.
pub fn probe() -> Result<Facts, crate::Error> {
    use seccompiler::{SeccompAction, SeccompFilter, TargetArch};
    let mut rules = std::collections::BTreeMap::new();
    rules.insert(libc::SYS_getppid, vec![]);
    #[cfg(target_arch = "x86_64")]
    let arch = TargetArch::x86_64;
    #[cfg(target_arch = "aarch64")]
    let arch = TargetArch::aarch64;
    let prog: seccompiler::BpfProgram =
        SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Trace(0), arch)?
            .try_into()?;
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut _,
    };
    // SAFETY: the child only makes raw syscalls on data prepared before fork, then _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(crate::Error::os("fork", "probing ptrace behaviour"));
    }
    if pid == 0 {
        // SAFETY: child side: raw syscalls only.
        unsafe {
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            libc::kill(libc::getpid(), libc::SIGSTOP);
            if libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &fprog as *const _,
            ) != 0
            {
                libc::_exit(3);
            }
            libc::syscall(libc::SYS_getppid);
            libc::_exit(0);
        }
    }
    let result = watch(pid);
    // SAFETY: reap our probe child whatever happened.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        while libc::waitpid(pid, std::ptr::null_mut(), libc::__WALL) == pid {}
    }
    let (enter_after, read_mode) = result?;
    Ok(Facts {
        enter_stop_after_seccomp: enter_after,
        read_mode,
        statx_no_automount_broken: statx_broken(),
        openat2_resolve: openat2_resolve(),
        kernel_release: uname_release(),
    })
}

fn watch(pid: i32) -> Result<(bool, ReadMode), crate::Error> {
    let mut st = 0;
    // SAFETY: plain waitpid/ptrace calls on our own child.
    unsafe {
        if libc::waitpid(pid, &mut st, libc::WUNTRACED | libc::__WALL) != pid {
            return Err(crate::Error::os("waitpid", "probing ptrace behaviour"));
        }
        let opts =
            libc::PTRACE_O_TRACESECCOMP | libc::PTRACE_O_TRACESYSGOOD | libc::PTRACE_O_EXITKILL;
        if libc::ptrace(libc::PTRACE_SEIZE, pid, 0, opts) != 0 {
            if let Some(why) = already_traced(pid) {
                return Err(crate::Error::AlreadyTraced(why));
            }
            return Err(crate::Error::os("ptrace(PTRACE_SEIZE)", "probing: ptrace is not allowed here (needs CAP_SYS_PTRACE or a permissive yama ptrace_scope)"));
        }
        libc::kill(pid, libc::SIGCONT);
        let mut read_mode = ReadMode::ProcessVmReadv;
        loop {
            if libc::waitpid(pid, &mut st, libc::__WALL) != pid {
                return Err(crate::Error::os("waitpid", "probing ptrace behaviour"));
            }
            if libc::WIFEXITED(st) || libc::WIFSIGNALED(st) {
                let code = if libc::WIFEXITED(st) {
                    libc::WEXITSTATUS(st)
                } else {
                    -1
                };
                return Err(crate::Error::Unsupported(format!(
                    "probe child exited ({code}) before its traced syscall: seccomp filters are not allowed here"
                )));
            }
            let ev = st >> 16;
            if ev == libc::PTRACE_EVENT_SECCOMP {
                let mut regs: libc::user_regs_struct = std::mem::zeroed();
                libc::ptrace(libc::PTRACE_GETREGS, pid, 0, &mut regs);
                let mut b = [0u8; 8];
                let local = libc::iovec {
                    iov_base: b.as_mut_ptr().cast(),
                    iov_len: 8,
                };
                let remote = libc::iovec {
                    iov_base: regs.rsp as *mut _,
                    iov_len: 8,
                };
                if libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) != 8 {
                    read_mode = ReadMode::ProcMem;
                }
                libc::ptrace(libc::PTRACE_SYSCALL, pid, 0, 0);
                if libc::waitpid(pid, &mut st, libc::__WALL) != pid {
                    return Err(crate::Error::os("waitpid", "probing ptrace behaviour"));
                }
                libc::ptrace(libc::PTRACE_GETREGS, pid, 0, &mut regs);
                let enter_after = regs.rax as i64 == -(libc::ENOSYS as i64);
                return Ok((enter_after, read_mode));
            }
            let sig = if ev != 0 { 0 } else { libc::WSTOPSIG(st) };
            libc::ptrace(libc::PTRACE_CONT, pid, 0, sig);
        }
    }
}
