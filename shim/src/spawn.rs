//! Starting the target: fork, a stop so the tracer can PTRACE_SEIZE it, the
//! seccomp filter, then exec. Everything the child touches between fork and
//! exec is prepared beforehand: the parent may have other threads, so the child
//! only makes raw syscalls.

use crate::error::Error;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The signal state this process inherited from its parent (bit N-1: signal N),
/// recorded by [`record_inherited_signals`] before anything changed it.
static INHERITED_IGNORED: AtomicU64 = AtomicU64::new(0);
static INHERITED_BLOCKED: AtomicU64 = AtomicU64::new(0);
static INHERITED_RECORDED: AtomicBool = AtomicBool::new(false);

/// Highest signal number the kernel has on x86_64 and aarch64 (its sigset is 64 bits).
const NSIG: i32 = 64;

/// The kernel's struct sigaction (x86_64 and aarch64). The raw syscall is used
/// because the C library's sigaction refuses the signals it reserves (32, 33),
/// and a parent may have those ignored too.
#[repr(C)]
struct KSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// rt_sigaction(sig, act, old): 0 or -1.
///
/// # Safety
/// `act` and `old` are null or point to valid KSigaction values.
unsafe fn rt_sigaction(sig: i32, act: *const KSigaction, old: *mut KSigaction) -> i64 {
    libc::syscall(libc::SYS_rt_sigaction, sig, act, old, 8usize)
}

/// Records which signals are ignored and blocked right now, as the state the
/// target is to inherit. Call it before anything changes them: the Rust
/// runtime ignores SIGPIPE before `main`, so a program's `.init_array` is the
/// place (see the k3shim binary's main.rs). Without a record the target gets
/// every signal at its default and none blocked.
pub extern "C" fn record_inherited_signals() {
    let (mut ign, mut blk) = (0u64, 0u64);
    // SAFETY: querying (not changing) dispositions and the mask into locals.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_BLOCK,
            std::ptr::null::<u64>(),
            &mut blk as *mut u64,
            8usize,
        );
        for sig in 1..=NSIG {
            let mut old = KSigaction {
                handler: 0,
                flags: 0,
                restorer: 0,
                mask: 0,
            };
            if rt_sigaction(sig, std::ptr::null(), &mut old) == 0 && old.handler == libc::SIG_IGN {
                ign |= 1 << (sig - 1);
            }
        }
    }
    INHERITED_IGNORED.store(ign, Ordering::Relaxed);
    INHERITED_BLOCKED.store(blk, Ordering::Relaxed);
    INHERITED_RECORDED.store(true, Ordering::Release);
}

/// (ignored, blocked) for the target: what this process inherited, or nothing.
fn inherited_signals() -> (u64, u64) {
    if INHERITED_RECORDED.load(Ordering::Acquire) {
        (
            INHERITED_IGNORED.load(Ordering::Relaxed),
            INHERITED_BLOCKED.load(Ordering::Relaxed),
        )
    } else {
        (0, 0)
    }
}

/// One bind mount the child makes in its new mount namespace before exec.
#[derive(Debug, Clone)]
pub struct Bind {
    pub src: std::path::PathBuf,
    pub dst: std::path::PathBuf,
    /// Remount it read-only afterwards.
    pub readonly: bool,
}

/// A private mount namespace for the target: the child unshares its mount
/// namespace, makes every mount private (so nothing it mounts propagates
/// back), then makes the binds in order, before it stops for the tracer.
/// What the binds are is the caller's business.
#[derive(Debug, Clone, Default)]
pub struct Namespace {
    pub binds: Vec<Bind>,
    /// Fail when propagation cannot be made private or a read-only remount
    /// fails (where namespaces isolate, both work; a sandbox where they do
    /// not isolate refuses them, and the caller has chosen to accept that).
    pub strict: bool,
}

/// Why the child's namespace setup failed: stage ('U' unshare, 'P'
/// propagation, 'B' bind, 'R' read-only remount), errno, and the bind's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetupFailure {
    pub stage: u8,
    pub errno: i32,
    pub step: u32,
}

struct PreparedBind {
    src: CString,
    dst: CString,
    readonly: bool,
}

/// What to run, prepared for the child.
pub struct Prepared {
    namespace: Option<(Vec<PreparedBind>, bool)>,
    program: CString,
    argv: Vec<CString>,
    envp: Option<Vec<CString>>,
    pub filter: Option<Vec<libc::sock_filter>>,
    pub no_new_privs: bool,
    pub stdio: [Option<OwnedFd>; 3],
    pub cwd: Option<CString>,
}

fn cstr(b: &[u8], what: &str) -> Result<CString, Error> {
    CString::new(b).map_err(|_| Error::Config(format!("{what} contains a NUL byte")))
}

impl Prepared {
    pub fn new(
        plan: &crate::Plan,
        filter: Option<Vec<libc::sock_filter>>,
    ) -> Result<Prepared, Error> {
        let program = cstr(plan.program.as_os_str().as_bytes(), "program path")?;
        let argv = plan
            .argv
            .iter()
            .map(|a| cstr(a.as_bytes(), "argument"))
            .collect::<Result<_, _>>()?;
        let envp = match &plan.env {
            Some(e) => Some(
                e.iter()
                    .map(|a| cstr(a.as_bytes(), "environment entry"))
                    .collect::<Result<_, _>>()?,
            ),
            None => None,
        };
        let cwd = match &plan.cwd {
            Some(c) => Some(cstr(c.as_os_str().as_bytes(), "working directory")?),
            None => None,
        };
        let namespace = match &plan.namespace {
            Some(ns) => Some((
                ns.binds
                    .iter()
                    .map(|b| {
                        Ok(PreparedBind {
                            src: cstr(b.src.as_os_str().as_bytes(), "bind source")?,
                            dst: cstr(b.dst.as_os_str().as_bytes(), "bind destination")?,
                            readonly: b.readonly,
                        })
                    })
                    .collect::<Result<Vec<_>, Error>>()?,
                ns.strict,
            )),
            None => None,
        };
        Ok(Prepared {
            namespace,
            program,
            argv,
            envp,
            filter,
            no_new_privs: plan.no_new_privs,
            stdio: Default::default(),
            cwd,
        })
    }
}

/// The started child, stopped and seized.
pub struct Child {
    pub pid: i32,
    /// Read end of the exec-error pipe: holds 4 bytes of errno if exec failed.
    pub exec_err: OwnedFd,
}

/// Forks, seizes and releases the child; it then installs the filter and execs.
pub fn spawn(p: &Prepared, options: i64) -> Result<Child, Error> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two fds into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::os("pipe2", "creating the exec-error pipe"));
    }
    let mut argv: Vec<*const libc::c_char> = p.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let envp_vec: Option<Vec<*const libc::c_char>> = p.envp.as_ref().map(|e| {
        e.iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    });
    extern "C" {
        static environ: *const *const libc::c_char;
    }
    let prog = p.filter.as_ref().map(|f| libc::sock_fprog {
        len: f.len() as u16,
        filter: f.as_ptr() as *mut _,
    });
    let stdio: [i32; 3] =
        [0, 1, 2].map(|i| p.stdio[i].as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1));
    // The target starts with the signal state k3shim was started with, as a shell
    // passes on what it inherited: not the Rust runtime's ignored SIGPIPE (`yes |
    // head -1` would print "Broken pipe"), nor the mask of the signals k3shim forwards.
    let (ignored, blocked) = inherited_signals();

    // SAFETY: fork; the child below only calls async-signal-safe functions on memory
    // prepared before the fork, then execs or _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Error::os("fork", "starting the target"));
    }
    if pid == 0 {
        // SAFETY: child side of fork: raw syscalls only, on pre-built data.
        unsafe {
            libc::close(fds[0]);
            // Every disposition back to what k3shim inherited (exec resets handlers to
            // the default and keeps ignored signals ignored), then the mask. SIGKILL
            // and SIGSTOP refuse (EINVAL) and need nothing.
            for sig in 1..=NSIG {
                let act = KSigaction {
                    handler: if ignored & (1 << (sig - 1)) != 0 {
                        libc::SIG_IGN
                    } else {
                        libc::SIG_DFL
                    },
                    flags: 0,
                    restorer: 0,
                    mask: 0,
                };
                rt_sigaction(sig, &act, std::ptr::null_mut());
            }
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &blocked as *const u64,
                std::ptr::null_mut::<u64>(),
                8usize,
            );
            for (i, fd) in stdio.iter().enumerate() {
                if *fd >= 0 {
                    libc::dup2(*fd, i as i32);
                }
            }
            let fail_at = |stage: u8, step: u32| -> ! {
                let e = *libc::__errno_location();
                let s = step.to_le_bytes();
                let msg = [
                    stage,
                    (e & 0xff) as u8,
                    ((e >> 8) & 0xff) as u8,
                    0,
                    s[0],
                    s[1],
                    s[2],
                    s[3],
                ];
                libc::write(fds[1], msg.as_ptr().cast(), msg.len());
                libc::_exit(if stage == b'X' && e == libc::ENOENT {
                    127
                } else {
                    126
                });
            };
            let fail = |stage: u8| -> ! { fail_at(stage, 0) };
            if let Some((binds, strict)) = &p.namespace {
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    fail(b'U');
                }
                let none = std::ptr::null::<libc::c_char>();
                let root = c"/".as_ptr();
                if libc::mount(
                    none,
                    root,
                    none,
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                    && *strict
                {
                    fail(b'P');
                }
                for (i, b) in binds.iter().enumerate() {
                    if libc::mount(
                        b.src.as_ptr(),
                        b.dst.as_ptr(),
                        none,
                        libc::MS_BIND,
                        std::ptr::null(),
                    ) != 0
                    {
                        fail_at(b'B', i as u32);
                    }
                    if b.readonly
                        && libc::mount(
                            none,
                            b.dst.as_ptr(),
                            none,
                            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
                            std::ptr::null(),
                        ) != 0
                        && *strict
                    {
                        fail_at(b'R', i as u32);
                    }
                }
            }
            if let Some(c) = &p.cwd {
                if libc::chdir(c.as_ptr()) != 0 {
                    fail(b'C');
                }
            }
            if p.no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                fail(b'N');
            }
            // Wait here until the tracer has seized us.
            libc::kill(libc::getpid(), libc::SIGSTOP);
            if let Some(prog) = &prog {
                if libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    prog as *const libc::sock_fprog,
                ) != 0
                {
                    fail(b'S');
                }
            }
            let envp = envp_vec.as_ref().map(|v| v.as_ptr()).unwrap_or(environ);
            libc::execve(p.program.as_ptr(), argv.as_ptr(), envp);
            fail(b'X');
        }
    }
    // SAFETY: closing the write end we no longer need; fds[0] becomes an OwnedFd.
    let exec_err = unsafe {
        libc::close(fds[1]);
        <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fds[0])
    };
    let mut st = 0;
    // SAFETY: waiting for our own child's stop.
    let r = unsafe { libc::waitpid(pid, &mut st, libc::WUNTRACED | libc::__WALL) };
    if r != pid || !libc::WIFSTOPPED(st) {
        let c = Child { pid, exec_err };
        if let Some(f) = setup_failure(&c) {
            return Err(Error::Namespace(f));
        }
        return Err(Error::Spawn(format!(
            "child {pid} did not stop before exec (status {st:#x}); see the exec-error pipe"
        )));
    }
    // SAFETY: PTRACE_SEIZE on our stopped child with a valid options word.
    if unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0, options) } != 0 {
        let e = match crate::probe::already_traced(pid) {
            Some(why) => Error::AlreadyTraced(why),
            None => Error::os("ptrace(PTRACE_SEIZE)", &format!("pid {pid}: is ptrace allowed here (CAP_SYS_PTRACE, yama ptrace_scope, seccomp of the container)?")),
        };
        // SAFETY: kill our own child so it does not linger stopped.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        return Err(e);
    }
    // SAFETY: resume our child from its self-inflicted stop.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    Ok(Child { pid, exec_err })
}

/// Reads the exec-error pipe: Some((stage, errno)) if the child failed before exec.
pub fn exec_error(c: &Child) -> Option<(u8, i32)> {
    read_failure(c).map(|f| (f.stage, f.errno))
}

fn read_failure(c: &Child) -> Option<SetupFailure> {
    let mut b = [0u8; 8];
    // SAFETY: reading into our own buffer from our own fd (the write end is closed by
    // exec or by _exit, so this never blocks once the child is gone).
    let n = unsafe { libc::read(c.exec_err.as_raw_fd(), b.as_mut_ptr().cast(), b.len()) };
    (n == 8).then(|| SetupFailure {
        stage: b[0],
        errno: i32::from(b[1]) | (i32::from(b[2]) << 8),
        step: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
    })
}

/// The namespace setup's failure, if that is why the child ended before exec.
fn setup_failure(c: &Child) -> Option<SetupFailure> {
    read_failure(c).filter(|f| matches!(f.stage, b'U' | b'P' | b'B' | b'R'))
}
