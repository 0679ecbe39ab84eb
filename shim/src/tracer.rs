//! The ptrace event loop: one tracer thread, every tracee SEIZEd, only
//! seccomp-trapped syscalls stop. Per-thread state tells a syscall's entry from
//! its exit (never the register contents alone), and a rewritten syscall always
//! takes its exit stop, where the original registers are put back so that a
//! restarted or interrupted syscall never sees a shim pointer.

use crate::event::{Action, Event, SyscallRecord};
use crate::fds::{FdFilters, FdTable, FdTableRef, Ofd};
use crate::mem::Mem;
use crate::policy::{Decision, HoldRequest, PathOp, PathRequest, Policy};
use crate::probe::Facts;
use crate::resolve::{self, Base, Lookup};
use crate::roots::{Root, Roots};
use crate::scratch::{AddrSpace, Area};
use crate::sysent::{self, OpKind};
use crate::{decode, Error, ExitStatus, FilterMode, Plan};
use libc::user_regs_struct as Regs;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

mod fdcalls;
mod inject;

const SYSCALL_INSN_LEN: u64 = 2;

type AreaRef = Rc<RefCell<Area>>;

/// Syscalls a stepped process may make before its emulated fds get a per-fd
/// filter instead (stepping stops every syscall twice; a filter stops only
/// the fd syscalls of those numbers, but for good).
const STEP_BUDGET: u32 = 256;

/// Per process (thread group).
struct Proc {
    /// The address space (shared with CLONE_VM relatives).
    mm: Rc<RefCell<AddrSpace>>,
    /// Emulated fds (shared with CLONE_FILES relatives: threads).
    fds: FdTableRef,
    /// Per-fd filters in this process's lineage (inherited, kept by exec).
    filters: Rc<RefCell<FdFilters>>,
    /// Seen before its parent's fork event: held at its first stop until the
    /// event tells what it inherited.
    awaiting_parent: bool,
    /// Stepped syscalls left before converting to a per-fd filter.
    step_left: u32,
    /// The budget ran out: convert at the next syscall-exit stop.
    convert: bool,
    /// Converting failed (no room for a filter): stay stepped.
    step_only: bool,
    /// An fd could not be covered here, and a warning said so.
    warned: bool,
    /// An open for writing that reached a real /proc/sys entry by a race was
    /// refused here, and a warning said so (once: a racing loop repeats it).
    raced: bool,
}

impl Proc {
    fn new() -> Proc {
        Proc {
            mm: Default::default(),
            fds: Default::default(),
            filters: Default::default(),
            awaiting_parent: false,
            step_left: STEP_BUDGET,
            convert: false,
            step_only: false,
            warned: false,
            raced: false,
        }
    }
}

/// An emulated fd an open makes, once the open succeeds.
#[derive(Debug, Clone)]
enum NewFd {
    Write { token: u64 },
    Dir { dir: PathBuf },
}

/// Work waiting for a syscall's exit stop.
struct ExitWork {
    /// Registers to put back (all but the result).
    saved: Option<Regs>,
    /// The result the syscall reports instead of its own.
    set_ret: Option<i64>,
    slot: Option<(AreaRef, u32)>,
    /// A syscall-enter stop comes first (gVisor's order); skip it.
    skip_enter: bool,
    /// The opened fd is an emulated entry (and was opened O_CLOEXEC).
    new_fd: Option<(NewFd, bool)>,
    /// A copy of this emulated fd is made (dup, dup2, dup3, F_DUPFD*).
    dup_of: Option<Rc<Ofd>>,
    /// dup and F_DUPFD were pointed at the fd range (multi-threaded process):
    /// the original (fd, command, lowest fd) to fall back to.
    dup_fallback: Option<(i32, i32, u64)>,
    /// The call was made to wait for a pipe (see emulated_splice): run the
    /// original again when it reports EFAULT (data came).
    rerun_on_efault: bool,
    /// sendfile into an emulated fd, made to ask in's position first (lseek):
    /// (out's description, its token, in, count) for the copy at the exit.
    sendfile: Option<(Rc<Ofd>, u64, i32, usize)>,
    /// dup2/dup3 onto this emulated fd: it ends if the call succeeds.
    replaces: Option<i32>,
    /// close_range(first, last, flags) that meets emulated fds.
    close_range: Option<(u32, u32, u32)>,
    rec: Option<SyscallRecord>,
    /// When the entry stop was seen (only when syscalls are reported: a clock
    /// read is a real syscall under gVisor's ptrace platform).
    t0: Option<Instant>,
    /// The registers the entry changed, with their original values: at the exit
    /// stop they are put back one by one (PTRACE_POKEUSER) with no register read,
    /// when nothing else is to be done there.
    pokes: Vec<(u64, u64)>,
    /// An unlink, rmdir or rename: at its exit, what the resolver remembers of
    /// the file system takes its changes in (fsnode.rs).
    sync_nodes: bool,
    /// A chroot, pivot_root or setns: at its exit, roots are looked up again.
    roots_changed: bool,
    /// An open turned into memfd_create (the thread's root cannot name the
    /// backing file): at the exit the new fd is filled with this file's content.
    fill: Option<PathBuf>,
    /// An open for writing let through: at its exit the new fd is checked not to
    /// be a real /proc/sys entry the policy would have served (a path swapped
    /// between the decision and the kernel's walk). The op and syscall name.
    verify_open: Option<(PathOp, &'static str)>,
}

impl ExitWork {
    fn new(skip_enter: bool, t0: Option<Instant>) -> ExitWork {
        ExitWork {
            saved: None,
            set_ret: None,
            slot: None,
            skip_enter,
            new_fd: None,
            dup_of: None,
            dup_fallback: None,
            replaces: None,
            close_range: None,
            rerun_on_efault: false,
            sendfile: None,
            rec: None,
            t0,
            pokes: Vec::new(),
            sync_nodes: false,
            roots_changed: false,
            fill: None,
            verify_open: None,
        }
    }

    /// Gives the scratch slot back, if one is held.
    fn release_slot(&mut self) {
        if let Some((a, s)) = self.slot.take() {
            a.borrow_mut().release(s);
        }
    }

    /// Something besides putting registers back is to be done at the exit.
    fn has_fd_work(&self) -> bool {
        self.new_fd.is_some()
            || self.dup_of.is_some()
            || self.replaces.is_some()
            || self.close_range.is_some()
            || self.rerun_on_efault
            || self.sendfile.is_some()
    }
}

enum Pending {
    None,
    Exit(Box<ExitWork>),
    /// Waiting in its seccomp stop for the gate; `work` resumes it (trace record).
    Held {
        since: Instant,
        what: String,
        comm: String,
        work: Option<Box<ExitWork>>,
    },
}

struct Thread {
    tgid: i32,
    started: bool,
    pending: Pending,
    /// Step mode: inside a syscall (between its enter and exit stops).
    in_syscall: bool,
    /// Cached /proc/TID/comm (trace lines and holds); cleared by exec.
    comm: Option<String>,
    /// Held at its first stop until its parent's fork event (the signal to
    /// deliver when it is resumed, and the parent it was made by).
    held_for_parent: Option<(i32, i32)>,
}

/// The tracer. Create with [`Tracer::start`], then [`Tracer::run`] on the same thread.
pub struct Tracer {
    root: i32,
    child: crate::spawn::Child,
    facts: Facts,
    mode: FilterMode,
    report: bool,
    trap_connect: bool,
    statx_fix: bool,
    mem: Mem,
    threads: HashMap<i32, Thread>,
    procs: HashMap<i32, Proc>,
    root_status: Option<ExitStatus>,
    next_area: u64,
    held: usize,
    fixes_logged: bool,
    /// PTRACE_GET_SYSCALL_INFO failed once (not supported here): step mode then
    /// takes every stop as x86_64 (gVisor runs no i386 code at all).
    no_syscall_info: bool,
    /// The mount /proc/sys is in ("/proc", or "/proc/sys" when mounted apart),
    /// for RESOLVE_NO_XDEV.
    proc_mount: Vec<u8>,
    /// Each thread's root directory (chroot, pivot_root).
    roots: Roots,
    /// What the file system holds along the paths resolved (symlinks or not).
    nodes: crate::fsnode::FsNodes,
    /// Wait statuses of other tracees collected while one was being stepped
    /// through an injection; the main loop handles them first.
    deferred: std::collections::VecDeque<(i32, i32)>,
    /// How other threads wake `wait` (gate open, a signal for k3shim).
    waker: crate::wake::Waker,
    /// Signals that arrived during an injection, re-sent with tgkill: their
    /// original siginfo, put back at their delivery stop (by thread).
    requeued: HashMap<i32, std::collections::VecDeque<libc::siginfo_t>>,
    /// Those signals, to send once their thread is resumed.
    resend: HashMap<i32, Vec<i32>>,
    /// A new emulated fd of this process could not be covered (fd_exit warns).
    uncoverable: Option<i32>,
}

fn ptrace_raw(req: libc::c_uint, tid: i32, addr: u64, data: u64) -> i64 {
    // SAFETY: ptrace requests used here take integer addr/data, or a pointer to a
    // buffer the caller owns (GETREGS/SETREGS/GETEVENTMSG pass &mut locals).
    unsafe { libc::ptrace(req, tid, addr, data) }
}

fn getregs(tid: i32) -> Option<Regs> {
    // SAFETY: zeroed is a valid user_regs_struct; GETREGS fills it.
    let mut r: Regs = unsafe { std::mem::zeroed() };
    (ptrace_raw(libc::PTRACE_GETREGS, tid, 0, &mut r as *mut Regs as u64) == 0).then_some(r)
}

/// "No wait status": what an injection returns when a ptrace call on the
/// tracee failed (it was killed under us), as opposed to a status from waitpid
/// (where 0 means "exited with 0"). -1 is no valid wait status.
const NO_STATUS: i32 = -1;

fn setregs(tid: i32, r: &Regs) -> bool {
    ptrace_raw(libc::PTRACE_SETREGS, tid, 0, r as *const Regs as u64) == 0
}

fn eventmsg(tid: i32) -> u64 {
    let mut m: libc::c_ulong = 0;
    ptrace_raw(
        libc::PTRACE_GETEVENTMSG,
        tid,
        0,
        &mut m as *mut libc::c_ulong as u64,
    );
    m
}

fn args_of(r: &Regs) -> [u64; 6] {
    [r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9]
}

fn set_arg(r: &mut Regs, i: usize, v: u64) {
    match i {
        0 => r.rdi = v,
        1 => r.rsi = v,
        2 => r.rdx = v,
        3 => r.r10 = v,
        4 => r.r8 = v,
        _ => r.r9 = v,
    }
}

fn readlink_bytes(p: &str) -> Option<Vec<u8>> {
    std::fs::read_link(p)
        .ok()
        .map(|p| p.into_os_string().into_vec())
}

use std::os::unix::ffi::OsStringExt;

/// cwd and fd lookups through /proc, mapped back through the policy's untranslate
/// so that a dirfd on a fake directory resolves as the program believes.
struct ProcLookup<'a> {
    policy: &'a dyn Policy,
    nodes: &'a crate::fsnode::FsNodes,
    /// The calling thread's root (chroot, pivot_root).
    root: Root,
    /// A cwd or fd on a path of the policy's was mapped back: the kernel would
    /// resolve the raw path against the backing file, not the guest one.
    translated: bool,
    /// What the walk went through, when openat2's RESOLVE_* rules are to be applied.
    walk: Option<crate::scope::WalkFacts>,
    /// A cwd or fd could not be named (ENAMETOOLONG: deeper than a page):
    /// the walk is not what the kernel's will be.
    too_long: bool,
    /// A cwd or fd outside the thread's root (chdir, then chroot elsewhere):
    /// the kernel walks from there in the host's tree, and so does the lookup.
    outside_root: bool,
}

impl ProcLookup<'_> {
    fn link(&mut self, p: &str) -> Option<Vec<u8>> {
        match std::fs::read_link(p) {
            // gVisor names a directory deeper than a page, but no path syscall
            // of k3shim's takes that name (ENAMETOOLONG): the same as no name.
            Ok(t) if t.as_os_str().len() >= libc::PATH_MAX as usize => {
                self.too_long = true;
                None
            }
            Ok(t) => {
                let t = t.into_os_string().into_vec();
                match self.root.guest_path(t.clone()) {
                    None if t.first() == Some(&b'/') && self.root.host_view(b"/").is_some() => {
                        self.outside_root = true;
                        Some(t)
                    }
                    g => g,
                }
            }
            Err(e) => {
                self.too_long |= e.raw_os_error() == Some(libc::ENAMETOOLONG);
                None
            }
        }
    }

    fn back(&mut self, b: Vec<u8>) -> Vec<u8> {
        match self.policy.untranslate(Path::new(OsStr::from_bytes(&b))) {
            Some(p) => {
                self.translated = true;
                p.into_os_string().into_vec()
            }
            None => b,
        }
    }
}

impl Lookup for ProcLookup<'_> {
    fn cwd(&mut self, pid: i32) -> Option<Vec<u8>> {
        self.link(&format!("/proc/{pid}/cwd")).map(|b| self.back(b))
    }
    fn fd_path(&mut self, pid: i32, fd: i32) -> Option<Vec<u8>> {
        self.link(&format!("/proc/{pid}/fd/{fd}"))
            .map(|b| self.back(b))
    }
    fn kind(&mut self, path: &[u8]) -> Option<resolve::PathKind> {
        self.policy.kind(Path::new(OsStr::from_bytes(path)))
    }
    fn lstat(&mut self, path: &[u8]) -> resolve::Node {
        match self.root {
            _ if self.outside_root => crate::fsnode::lstat(path),
            Root::Same => self.nodes.lstat(path),
            // Another root: looked at through /proc/TID/root, not remembered.
            Root::Other { .. } => crate::fsnode::lstat(&self.root.tracer_path(path)),
        }
    }
    fn left_served(&mut self) {
        self.translated = true;
    }
    fn wants_walk(&self) -> bool {
        self.walk.is_some()
    }
    fn walked(&mut self, ev: resolve::Walked<'_>) {
        if let Some(w) = self.walk.as_mut() {
            w.record(ev);
        }
    }
}

fn comm_of(tid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{tid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default()
}

/// The parent process of `tid` (field 4 of /proc/TID/stat), 0 if unknown.
fn ppid_of(tid: i32) -> i32 {
    std::fs::read_to_string(format!("/proc/{tid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(") ")
                .and_then(|(_, r)| r.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn tgid_of(tid: i32) -> i32 {
    std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Tgid:")
                    .map(|v| v.trim().parse().unwrap_or(tid))
            })
        })
        .unwrap_or(tid)
}

/// (offset in struct user, original value) of each syscall register `m` changed.
fn changed_regs(orig: &Regs, m: &Regs) -> Vec<(u64, u64)> {
    use std::mem::offset_of;
    let fields = [
        (offset_of!(Regs, rdi), orig.rdi, m.rdi),
        (offset_of!(Regs, rsi), orig.rsi, m.rsi),
        (offset_of!(Regs, rdx), orig.rdx, m.rdx),
        (offset_of!(Regs, r10), orig.r10, m.r10),
        (offset_of!(Regs, r8), orig.r8, m.r8),
        (offset_of!(Regs, r9), orig.r9, m.r9),
        (offset_of!(Regs, orig_rax), orig.orig_rax, m.orig_rax),
    ];
    fields
        .iter()
        .filter(|(_, a, b)| a != b)
        .map(|(off, a, _)| (*off as u64, *a))
        .collect()
}

/// Does an open with these flags write (or create, or truncate)? O_PATH opens nothing.
fn opens_for_writing(flags: i32) -> bool {
    flags & libc::O_PATH == 0
        && (flags & libc::O_ACCMODE != libc::O_RDONLY
            || flags & (libc::O_TRUNC | libc::O_CREAT) != 0)
}

fn statfs_type(p: &str) -> Option<i64> {
    let c = std::ffi::CString::new(p).ok()?;
    // SAFETY: zeroed is a valid statfs; statfs fills it from a NUL-terminated path.
    let mut sf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above: a valid path pointer and a buffer we own.
    (unsafe { libc::statfs(c.as_ptr(), &mut sf) } == 0).then_some(sf.f_type as i64)
}

const PROC_SUPER_MAGIC: i64 = 0x9fa0;

/// The /proc/sys path of fd `fd` of thread `tid` when the fd is a file of a
/// procfs mount's sys/ (on any procfs mount, seen from k3shim's root), else
/// None. One statfs for an fd that is not on procfs.
fn real_proc_sys_path(tid: i32, fd: i64) -> Option<PathBuf> {
    let link = format!("/proc/{tid}/fd/{fd}");
    // (This gVisor's statfs fails on procfs files and on /proc/PID/fd/N: the
    // name then tells.)
    if statfs_type(&link).is_some_and(|t| t != PROC_SUPER_MAGIC) {
        return None;
    }
    let target = readlink_bytes(&link)?;
    let comps: Vec<&[u8]> = target
        .split(|&c| c == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    // The mount point: the shortest prefix on procfs.
    for i in 0..comps.len() {
        let prefix = format!("/{}", String::from_utf8_lossy(&comps[..=i].join(&b'/')));
        if statfs_type(&prefix) == Some(PROC_SUPER_MAGIC) {
            let rest = &comps[i + 1..];
            if rest.first() != Some(&&b"sys"[..]) {
                return None;
            }
            let mut p = b"/proc/".to_vec();
            p.extend_from_slice(&rest.join(&b'/'));
            return Some(PathBuf::from(OsStr::from_bytes(&p)));
        }
    }
    target
        .starts_with(b"/proc/sys/")
        .then(|| PathBuf::from(OsStr::from_bytes(&target)))
}

/// A trace record for an i386 or x32 syscall: its own ABI's name, and its
/// argument registers (i386: ebx, ecx, edx, esi, edi, ebp) in hex.
fn abi_record(r: &mut SyscallRecord, i386: bool, regs: &Regs) {
    r.name = crate::compat::abi_name(i386, regs.orig_rax);
    let a = if i386 {
        [regs.rbx, regs.rcx, regs.rdx, regs.rsi, regs.rdi, regs.rbp].map(|v| v & 0xffff_ffff)
    } else {
        args_of(regs)
    };
    r.args = format!(
        "{:#x}, {:#x}, {:#x}, ... /* {} */",
        a[0],
        a[1],
        a[2],
        if i386 { "i386" } else { "x32" }
    );
}

fn is_stop_signal(sig: i32) -> bool {
    matches!(
        sig,
        libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
    )
}

impl Tracer {
    /// Spawns `plan` stopped under the tracer. The target has not run yet.
    pub fn start(mut plan: Plan, facts: Facts) -> Result<Tracer, Error> {
        let statx_fix = plan.fixes.statx_no_automount && facts.statx_no_automount_broken;
        let filter = match plan.filter {
            FilterMode::Paths => Some(crate::filter::build(&crate::filter::FilterSpec {
                paths: plan.paths,
                connect: plan.trap_connect,
                write_fds: true,
                statx_no_automount: statx_fix,
            })?),
            FilterMode::Everything => None,
        };
        // seccompiler's sock_filter has libc's layout; convert field by field.
        let filter = filter.map(|f| {
            f.iter()
                .map(|i| libc::sock_filter {
                    code: i.code,
                    jt: i.jt,
                    jf: i.jf,
                    k: i.k,
                })
                .collect()
        });
        let mut prep = crate::spawn::Prepared::new(&plan, filter)?;
        prep.stdio = std::mem::take(&mut plan.stdio);
        let mut opts = libc::PTRACE_O_TRACEFORK
            | libc::PTRACE_O_TRACEVFORK
            | libc::PTRACE_O_TRACECLONE
            | libc::PTRACE_O_TRACEEXEC
            | libc::PTRACE_O_TRACESYSGOOD
            | libc::PTRACE_O_EXITKILL;
        if plan.filter == FilterMode::Paths {
            opts |= libc::PTRACE_O_TRACESECCOMP;
        }
        let child = crate::spawn::spawn(&prep, opts as i64)?;
        drop(prep);
        let root = child.pid;
        let mut t = Tracer {
            root,
            child,
            mem: Mem::new(facts.read_mode),
            facts,
            mode: plan.filter,
            report: plan.report_syscalls,
            trap_connect: plan.trap_connect,
            statx_fix,
            threads: HashMap::new(),
            procs: HashMap::new(),
            root_status: None,
            next_area: 1,
            held: 0,
            fixes_logged: false,
            no_syscall_info: false,
            proc_mount: crate::scope::proc_sys_mount(),
            roots: Roots::new(),
            nodes: crate::fsnode::FsNodes::new(),
            deferred: Default::default(),
            waker: crate::wake::Waker::new(),
            requeued: HashMap::new(),
            resend: HashMap::new(),
            uncoverable: None,
        };
        t.threads.insert(
            root,
            Thread {
                tgid: root,
                started: false,
                pending: Pending::None,
                in_syscall: false,
                comm: None,
                held_for_parent: None,
            },
        );
        t.procs.insert(root, Proc::new());
        Ok(t)
    }

    /// The target's pid (to forward signals to).
    pub fn pid(&self) -> i32 {
        self.root
    }

    /// A handle other threads use to make the tracer look at
    /// [`Policy::gate_open`] now (held syscalls are released at once), or to
    /// signal the whole traced tree. The tracer never polls.
    pub fn waker(&self) -> crate::wake::Waker {
        self.waker.clone()
    }

    /// Runs until every traced process is gone. Returns the target's status.
    pub fn run(&mut self, policy: &mut dyn Policy) -> Result<ExitStatus, Error> {
        let span = tracing::debug_span!("tracer", root = self.root);
        let _entered = span.enter();
        loop {
            if self.threads.is_empty() {
                break;
            }
            let Some((tid, st)) = self.wait(policy) else {
                break;
            };
            tracing::trace!(tid, status = format_args!("{st:#x}"), "wait");
            self.dispatch(tid, st, policy);
        }
        self.waker.close();
        tracing::debug!("every traced process is gone");
        if let Some((stage, errno)) = crate::spawn::exec_error(&self.child) {
            return Ok(ExitStatus::ExecFailed {
                stage: stage as char,
                errno,
            });
        }
        Ok(self.root_status.clone().unwrap_or(ExitStatus::Code(0)))
    }

    /// The next wait status. Before sleeping, carries out what other threads
    /// asked for through the [`Waker`](crate::wake::Waker) (release held
    /// syscalls once the policy says so, signal the tree); their wake-up ends
    /// the sleep, so a hold costs the rest of the tree nothing.
    fn wait(&mut self, policy: &mut dyn Policy) -> Option<(i32, i32)> {
        if let Some(ev) = self.deferred.pop_front() {
            return Some(ev);
        }
        let mut st = 0;
        loop {
            if let Some(sig) = self.waker.take_signal() {
                self.signal_tree(sig, policy);
            }
            if self.waker.take_kick() {
                tracing::debug!(
                    threads = self.threads.len(),
                    "interrupting every tracee once"
                );
                for tid in self.threads.keys() {
                    // Each stops (PTRACE_EVENT_STOP) and is resumed by dispatch.
                    ptrace_raw(libc::PTRACE_INTERRUPT, *tid, 0, 0);
                }
            }
            if self.held > 0 && policy.gate_open() {
                self.release_all(policy);
            }
            // SAFETY: blocking wait for any child: a tracee, or a wake-up (see wake.rs).
            let r = unsafe { libc::waitpid(-1, &mut st, libc::__WALL) };
            if r > 0 {
                return Some((r, st));
            }
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                _ => return None,
            }
        }
    }

    /// Sends `sig` to every traced process (the launcher ends the tree this way).
    fn signal_tree(&mut self, sig: i32, policy: &mut dyn Policy) {
        let mut tgids: Vec<i32> = self.threads.values().map(|t| t.tgid).collect();
        tgids.sort_unstable();
        tgids.dedup();
        if tgids.is_empty() {
            return;
        }
        tracing::debug!(
            signal = sig,
            processes = tgids.len(),
            "signalling the traced tree"
        );
        for p in &tgids {
            // SAFETY: signalling a process we trace; ESRCH if it is already gone.
            unsafe { libc::kill(*p, sig) };
        }
        policy.on_event(&Event::SignalTree {
            signal: sig,
            pids: tgids,
        });
    }

    /// A held thread went away before its syscall continued (killed, or
    /// replaced by another thread's execve): the hold ends with it.
    fn hold_ended(&mut self, tid: i32, tgid: i32, pending: &Pending, policy: &mut dyn Policy) {
        if let Pending::Held {
            since, what, comm, ..
        } = pending
        {
            self.held = self.held.saturating_sub(1);
            tracing::debug!(tid, what = %what, "held thread gone");
            policy.on_event(&Event::Release {
                pid: tgid,
                tid,
                comm: comm.clone(),
                what: what.clone(),
                waited_ms: since.elapsed().as_millis() as u64,
                gone: true,
            });
        }
    }

    fn release_all(&mut self, policy: &mut dyn Policy) {
        let tids: Vec<i32> = self
            .threads
            .iter()
            .filter(|(_, t)| matches!(t.pending, Pending::Held { .. }))
            .map(|(k, _)| *k)
            .collect();
        for tid in tids {
            let th = self.threads.get_mut(&tid).expect("listed");
            if let Pending::Held {
                since,
                what,
                comm,
                work,
            } = std::mem::replace(&mut th.pending, Pending::None)
            {
                let tgid = th.tgid;
                if let Some(mut w) = work {
                    // Take the exit stop so the trace line shows the result.
                    if let Some(r) = w.rec.as_mut() {
                        r.action = Action::Held;
                    }
                    th.pending = Pending::Exit(w);
                }
                tracing::debug!(tid, what = %what, "released");
                policy.on_event(&Event::Release {
                    pid: tgid,
                    tid,
                    comm,
                    what,
                    waited_ms: since.elapsed().as_millis() as u64,
                    gone: false,
                });
            }
            if self.mode == FilterMode::Everything {
                self.threads.get_mut(&tid).expect("listed").in_syscall = true;
            }
            self.resume(tid, 0);
        }
        self.held = 0;
    }

    fn resume(&mut self, tid: i32, sig: i32) {
        let (exit_work, tgid) = self
            .threads
            .get(&tid)
            .map(|t| (matches!(t.pending, Pending::Exit(_)), t.tgid))
            .unwrap_or((false, tid));
        let step = self.mode == FilterMode::Everything || exit_work || self.stepped(tgid);
        if !step {
            // No exit stop is coming for the syscall it may be in.
            if let Some(t) = self.threads.get_mut(&tid) {
                t.in_syscall = false;
            }
        }
        let req = if step {
            libc::PTRACE_SYSCALL
        } else {
            libc::PTRACE_CONT
        };
        // ESRCH here means the thread was killed meanwhile: its exit status follows.
        ptrace_raw(req, tid, 0, sig as u64);
        if !self.resend.is_empty() {
            self.resend_signals(tid);
        }
    }

    fn comm(&mut self, tid: i32) -> String {
        let th = self.threads.get_mut(&tid).expect("known");
        th.comm.get_or_insert_with(|| comm_of(tid)).clone()
    }

    fn ensure_thread(&mut self, tid: i32) {
        if let std::collections::hash_map::Entry::Vacant(e) = self.threads.entry(tid) {
            let tgid = tgid_of(tid);
            e.insert(Thread {
                tgid,
                started: false,
                pending: Pending::None,
                in_syscall: false,
                comm: None,
                held_for_parent: None,
            });
            self.procs.entry(tgid).or_insert_with(|| Proc {
                awaiting_parent: true,
                ..Proc::new()
            });
        }
    }

    /// An injection into `tid` ended early: its pending work is dropped, and a
    /// real wait status is dispatched; NO_STATUS (a ptrace call failed: the
    /// tracee was killed under us) is not, and the real exit comes through
    /// waitpid later. Dispatching it as status 0 reported a SIGKILLed command
    /// as having exited 0.
    fn injection_failed(&mut self, tid: i32, st: i32, policy: &mut dyn Policy) {
        if let Some(t) = self.threads.get_mut(&tid) {
            t.pending = Pending::None;
        }
        if st != NO_STATUS {
            self.dispatch(tid, st, policy);
        } else {
            // Should it still be stopped after all, it must not stay so.
            self.resume(tid, 0);
        }
    }

    fn dispatch(&mut self, tid: i32, st: i32, policy: &mut dyn Policy) {
        if libc::WIFEXITED(st) || libc::WIFSIGNALED(st) {
            self.gone(tid, st, policy);
            return;
        }
        if !libc::WIFSTOPPED(st) {
            return;
        }
        self.ensure_thread(tid);
        let sig = libc::WSTOPSIG(st);
        match st >> 16 {
            libc::PTRACE_EVENT_SECCOMP => self.on_entry(tid, true, policy),
            libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK | libc::PTRACE_EVENT_CLONE => {
                self.on_new_child(tid, st >> 16, policy);
                self.resume(tid, 0);
            }
            libc::PTRACE_EVENT_EXEC => {
                self.on_exec(tid, policy);
                self.resume(tid, 0);
            }
            libc::PTRACE_EVENT_STOP => {
                let th = self.threads.get_mut(&tid).expect("ensured");
                if !th.started {
                    th.started = true;
                    if !self.hold_for_parent(tid, 0) {
                        self.resume(tid, 0);
                    }
                } else if is_stop_signal(sig) {
                    // Group-stop: stay stopped, but keep reporting (SIGCONT, SIGKILL).
                    ptrace_raw(libc::PTRACE_LISTEN, tid, 0, 0);
                } else {
                    self.resume(tid, 0);
                }
            }
            0 if sig == (libc::SIGTRAP | 0x80) => self.on_syscall_stop(tid, policy),
            0 => {
                // Signal-delivery stop: deliver it, as without the shim.
                let th = self.threads.get_mut(&tid).expect("ensured");
                let first = !th.started;
                th.started = true;
                let pid = th.tgid;
                policy.on_event(&Event::Signal {
                    pid,
                    tid,
                    signal: sig,
                });
                if first && self.hold_for_parent(tid, sig) {
                    return;
                }
                self.restore_siginfo(tid, sig);
                self.resume(tid, sig);
            }
            _ => self.resume(tid, 0),
        }
    }

    /// A process's first stop came before its parent's fork event: it stays
    /// stopped until the event says what it inherited (emulated fds, scratch
    /// memory, stepping), or until that parent is gone. Returns true if held.
    fn hold_for_parent(&mut self, tid: i32, sig: i32) -> bool {
        let tgid = self.threads[&tid].tgid;
        if !self
            .procs
            .get(&tgid)
            .map(|p| p.awaiting_parent)
            .unwrap_or(false)
        {
            return false;
        }
        let parent = ppid_of(tid);
        if parent <= 0 || (!self.procs.contains_key(&parent) && !self.threads.contains_key(&parent))
        {
            // No traced parent to wait for (reparented already): nothing is inherited.
            if let Some(p) = self.procs.get_mut(&tgid) {
                p.awaiting_parent = false;
            }
            return false;
        }
        if let Some(t) = self.threads.get_mut(&tid) {
            t.held_for_parent = Some((sig, parent));
        }
        true
    }

    fn gone(&mut self, tid: i32, st: i32, policy: &mut dyn Policy) {
        self.roots.forget(tid);
        self.requeued.remove(&tid);
        self.resend.remove(&tid);
        let Some(th) = self.threads.remove(&tid) else {
            return;
        };
        if let Pending::Exit(mut w) = th.pending {
            w.release_slot();
        } else {
            self.hold_ended(tid, th.tgid, &th.pending, policy);
        }
        if tid == th.tgid {
            let (code, signal) = if libc::WIFEXITED(st) {
                (Some(libc::WEXITSTATUS(st)), None)
            } else {
                (None, Some(libc::WTERMSIG(st)))
            };
            policy.on_event(&Event::ProcessExit {
                pid: tid,
                code,
                signal,
            });
            self.procs.remove(&tid);
            self.mem.forget(tid);
            self.release_orphans(tid);
            if tid == self.root {
                self.root_status = Some(match (code, signal) {
                    (Some(c), _) => ExitStatus::Code(c),
                    (_, Some(s)) => ExitStatus::Signal(s),
                    _ => ExitStatus::Code(0),
                });
            }
        }
    }

    fn on_new_child(&mut self, tid: i32, ev: i32, policy: &mut dyn Policy) {
        let child = eventmsg(tid) as i32;
        let parent_tgid = self.threads.get(&tid).map(|t| t.tgid).unwrap_or(tid);
        let flags = self.clone_flags(tid, parent_tgid, ev);
        let thread = flags & libc::CLONE_THREAD as u64 != 0;
        let tgid = if thread { parent_tgid } else { child };
        match self.threads.get_mut(&child) {
            Some(t) => t.tgid = tgid,
            None => {
                self.threads.insert(
                    child,
                    Thread {
                        tgid,
                        started: false,
                        pending: Pending::None,
                        in_syscall: false,
                        comm: None,
                        held_for_parent: None,
                    },
                );
            }
        }
        if !thread {
            let p = self.procs.entry(parent_tgid).or_insert_with(Proc::new);
            // CLONE_VM shares the address space (a scratch area mapped by a
            // vfork child is its parent's too); fork copies it, with the area
            // at the same address. CLONE_FILES shares the fd table; fork copies
            // it, each fd still pointing to the same open file description.
            let mm = if flags & libc::CLONE_VM as u64 != 0 {
                p.mm.clone()
            } else {
                Rc::new(RefCell::new(p.mm.borrow().clone()))
            };
            let fds = if flags & libc::CLONE_FILES as u64 != 0 {
                p.fds.clone()
            } else {
                Rc::new(RefCell::new(p.fds.borrow().clone()))
            };
            // Seccomp filters are inherited by every child.
            let filters = Rc::new(RefCell::new(p.filters.borrow().clone()));
            let (step_left, step_only) = (p.step_left, p.step_only);
            let c = self.procs.entry(child).or_insert_with(Proc::new);
            c.mm = mm;
            c.fds = fds;
            c.filters = filters;
            c.step_left = step_left;
            c.step_only = step_only;
            c.awaiting_parent = false;
        } else {
            self.procs.remove(&child);
        }
        policy.on_event(&Event::Spawn {
            parent: parent_tgid,
            child,
            thread,
        });
        // A child that stopped before this event waited for it: it may run now.
        if let Some((sig, _)) = self
            .threads
            .get_mut(&child)
            .and_then(|t| t.held_for_parent.take())
        {
            self.resume(child, sig);
        }
    }

    /// The clone flags of the fork/vfork/clone/clone3 `tid` is reporting.
    fn clone_flags(&mut self, tid: i32, tgid: i32, ev: i32) -> u64 {
        let vfork = (libc::CLONE_VM | libc::CLONE_VFORK) as u64;
        let Some(r) = getregs(tid) else {
            return if ev == libc::PTRACE_EVENT_VFORK {
                vfork
            } else {
                0
            };
        };
        match r.orig_rax as i64 {
            libc::SYS_clone => r.rdi,
            libc::SYS_clone3 => match self.mem.read_bytes::<8>(tgid, tid, r.rdi) {
                Some(b) => u64::from_ne_bytes(b),
                None => 0,
            },
            libc::SYS_vfork => vfork,
            _ if ev == libc::PTRACE_EVENT_VFORK => vfork,
            _ => 0,
        }
    }

    /// Releases children held for a parent that is gone (its fork event will
    /// never come: it was killed between the fork and the event).
    fn release_orphans(&mut self, parent: i32) {
        let held: Vec<(i32, i32)> = self
            .threads
            .iter()
            .filter_map(|(k, t)| match t.held_for_parent {
                Some((sig, p)) if p == parent => Some((*k, sig)),
                _ => None,
            })
            .collect();
        for (k, sig) in held {
            if let Some(t) = self.threads.get_mut(&k) {
                t.held_for_parent = None;
                let tgid = t.tgid;
                if let Some(p) = self.procs.get_mut(&tgid) {
                    p.awaiting_parent = false;
                }
            }
            self.resume(k, sig);
        }
    }

    fn on_exec(&mut self, tid: i32, policy: &mut dyn Policy) {
        // The thread that called execve; a non-leader takes the leader's tid.
        let former = eventmsg(tid) as i32;
        let tgid = tid;
        // Every other thread is gone. The exec'ing thread's own state (its
        // pending execve record) stays with its former tid until here.
        let old: Vec<i32> = self
            .threads
            .iter()
            .filter(|(k, t)| t.tgid == tgid && **k != tid)
            .map(|(k, _)| *k)
            .collect();
        let mut execer = None;
        for k in old {
            if let Some(t) = self.threads.remove(&k) {
                if k == former {
                    execer = Some(t.pending);
                } else if let Pending::Exit(mut w) = t.pending {
                    w.release_slot();
                } else {
                    // Its exit is not reported once it is forgotten here.
                    self.hold_ended(k, tgid, &t.pending, policy);
                }
            }
        }
        let th = self.threads.entry(tid).or_insert(Thread {
            tgid,
            started: true,
            pending: Pending::None,
            in_syscall: false,
            comm: None,
            held_for_parent: None,
        });
        th.started = true;
        th.comm = None;
        // The exec event comes from inside execve: in step mode its exit stop is next.
        th.in_syscall = self.mode == FilterMode::Everything;
        let leader = std::mem::replace(&mut th.pending, Pending::None);
        let pending = match execer {
            Some(p) => {
                // The leader was elsewhere (e.g. in a syscall, or held) when it was
                // replaced: its death is never reported.
                if let Pending::Exit(mut w) = leader {
                    w.release_slot();
                } else {
                    self.hold_ended(tgid, tgid, &leader, policy);
                }
                p
            }
            None => leader,
        };
        let finished = match pending {
            Pending::Exit(mut w) => {
                w.release_slot();
                // A successful execve has no exit stop here: its trace line ends now.
                w.rec.take().map(|mut r| {
                    r.ret = 0;
                    r.tid = former;
                    r.dur_us = w.t0.map(|t| t.elapsed().as_micros() as u64).unwrap_or(0);
                    r
                })
            }
            _ => None,
        };
        let p = self.procs.entry(tgid).or_insert_with(Proc::new);
        // A new address space; the fd table is unshared and its close-on-exec
        // fds are gone. Which of the emulated fds survived is asked of the
        // kernel (F_SETFD, FIOCLEX and close_range's CLOEXEC flag are not
        // followed one by one): an fd whose number now names another file, or
        // nothing, is dropped.
        p.mm = Default::default();
        p.awaiting_parent = false;
        p.step_left = STEP_BUDGET;
        p.convert = false;
        p.step_only = false;
        let kept: HashMap<i32, Rc<Ofd>> = p
            .fds
            .borrow()
            .fds
            .iter()
            .filter(|(fd, o)| crate::fds::ident(tgid, **fd) == Some(o.ident))
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        p.fds = Rc::new(RefCell::new(FdTable { fds: kept }));
        // The exec event comes from inside execve: when the thread is stepped,
        // its exit stop is next.
        let stepped = self.mode == FilterMode::Everything || self.stepped(tgid);
        if let Some(th) = self.threads.get_mut(&tid) {
            th.in_syscall = stepped;
        }
        self.mem.forget(tgid);
        let path = readlink_bytes(&format!("/proc/{tgid}/exe"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        if let Some(r) = finished {
            policy.on_event(&Event::Syscall(r));
        }
        if getregs(tid).is_some_and(|r| r.cs == crate::compat::USER32_CS) {
            policy.on_event(&Event::Warning {
                pid: tgid,
                message: format!("{path} is a 32-bit (i386) program: k3shim cannot follow its paths, so its path syscalls fail with EPERM"),
            });
        }
        policy.on_event(&Event::Exec { pid: tgid, path });
    }

    fn on_syscall_stop(&mut self, tid: i32, policy: &mut dyn Policy) {
        let th = self.threads.get_mut(&tid).expect("ensured");
        match &mut th.pending {
            Pending::Exit(w) if w.skip_enter => {
                w.skip_enter = false;
                self.resume(tid, 0);
            }
            Pending::Exit(_) => {
                let Pending::Exit(w) = std::mem::replace(&mut th.pending, Pending::None) else {
                    unreachable!()
                };
                th.in_syscall = false;
                self.on_exit(tid, *w, policy);
            }
            _ if self.mode == FilterMode::Everything => {
                if th.in_syscall {
                    th.in_syscall = false;
                    self.resume(tid, 0);
                } else {
                    th.in_syscall = true;
                    self.on_entry(tid, false, policy);
                }
            }
            _ => {
                // A stepped thread (its process holds emulated fds that no
                // filter stops): enter and exit stops of every syscall.
                let tgid = th.tgid;
                if th.in_syscall {
                    th.in_syscall = false;
                    self.on_step_exit(tid, tgid, policy);
                } else if self.stepped(tgid) {
                    if let Some(t) = self.threads.get_mut(&tid) {
                        t.in_syscall = true;
                    }
                    self.on_step_entry(tid, tgid, policy);
                } else {
                    self.resume(tid, 0);
                }
            }
        }
    }

    /// A syscall's entry: at its seccomp stop, or at its enter stop in step mode.
    fn on_entry(&mut self, tid: i32, from_seccomp: bool, policy: &mut dyn Policy) {
        let t0 = self.report.then(Instant::now);
        let Some(regs) = getregs(tid) else { return };
        let tgid = self.threads[&tid].tgid;
        let nr = regs.orig_rax as i64;
        let args = args_of(&regs);
        let skip_enter = from_seccomp && self.facts.enter_stop_after_seccomp;
        let mut work = ExitWork::new(skip_enter, t0);
        work.rec = self.record(tid, tgid, nr);

        if !from_seccomp {
            // Step mode: no filter refused i386/x32 syscalls; nr and arguments are
            // not x86_64 ones there, so they must not be decoded as such.
            match self.other_abi(tid, &regs) {
                None => {}
                Some((i386, None)) => {
                    if let Some(r) = work.rec.as_mut() {
                        abi_record(r, i386, &regs);
                    }
                    return self.finish_entry(tid, work, None, policy);
                }
                Some((i386, Some(errno))) => {
                    if let Some(r) = work.rec.as_mut() {
                        abi_record(r, i386, &regs);
                        r.action = Action::Emulated;
                    }
                    return self.refuse(tid, regs, work, errno, policy);
                }
            }
            if crate::filter::IO_URING.iter().any(|s| s.id() as i64 == nr) {
                // Step mode (--filter none, a stepped process): as the filter does.
                if let Some(r) = work.rec.as_mut() {
                    r.args = decode::raw_args(&args);
                    r.action = Action::Emulated;
                }
                return self.refuse(tid, regs, work, libc::ENOSYS, policy);
            }
        }
        if let Some(call) = crate::filter::fd_call(nr) {
            if self.on_fd_call(tid, tgid, call, &regs, &mut work, policy) {
                return;
            }
        }
        if nr == libc::SYS_connect && self.trap_connect {
            if let Some(req) = decode::connect_target(&mut self.mem, tgid, tid, args[1], args[2]) {
                if let Some(r) = work.rec.as_mut() {
                    r.args = format!("{}, {}", args[0] as i32, decode::hold_what(&req));
                }
                if !policy.gate_open() && policy.should_hold(&req) {
                    return self.hold(tid, tgid, decode::hold_what(&req), work, policy);
                }
            }
            return self.finish_entry(tid, work, None, policy);
        }
        if nr == libc::SYS_getcwd {
            return self.on_getcwd(tid, regs, work, policy);
        }
        if matches!(
            nr,
            libc::SYS_chroot | libc::SYS_pivot_root | libc::SYS_setns
        ) {
            // Roots change: every thread's is looked up again once this has run.
            self.roots.forget_all();
            work.roots_changed = true;
            if let Some(r) = work.rec.as_mut() {
                r.args = decode::raw_args(&args);
            }
            return self.finish_entry(tid, work, Some(()), policy);
        }
        let Some(entry) = sysent::lookup(nr) else {
            if let Some(r) = work.rec.as_mut() {
                r.args = decode::call_args(nr, &args);
            }
            return self.finish_entry(tid, work, None, policy);
        };

        let root = self.roots.of(tid);
        let mut decisions: [Option<(usize, Decision, PathBuf)>; 2] = [None, None];
        let mut first_ptr = (0u64, 0usize);
        let mut open_how: Option<[u8; 24]> = None;
        // Non-zero bytes past struct open_how (E2BIG on Linux).
        let mut how_tail = false;
        if entry.kind == OpKind::Openat2 {
            // The kernel checks the size before the path: below 24 is EINVAL, above a
            // page or with a non-zero byte past struct open_how E2BIG. Let it; a larger
            // struct whose extra bytes are zero is the same open_how.
            let size = args[3] as usize;
            if !(24..=4096).contains(&size) {
                return self.finish_entry(tid, work, None, policy);
            }
            let mut how = vec![0u8; size];
            if self.mem.read(tgid, tid, args[2], &mut how) < size {
                return self.finish_entry(tid, work, None, policy);
            }
            how_tail = how[24..].iter().any(|&b| b != 0);
            open_how = how[..24].try_into().ok();
        }
        let resolve_flags = open_how
            .map(|b| u64::from_ne_bytes(b[16..24].try_into().expect("8")))
            .unwrap_or(0);
        // An open_how the kernel refuses before it looks at the path: a path the
        // engine redirects or fails gets the same errno (the replacement's
        // open_how is the engine's own).
        let how_errno = if how_tail {
            Some(libc::E2BIG)
        } else {
            open_how.and_then(|b| {
                let word = |i: usize| u64::from_ne_bytes(b[i..i + 8].try_into().expect("8"));
                crate::scope::open_how_errno(word(0), word(8), word(16))
            })
        };
        if (resolve_flags != 0 || how_errno.is_some()) && !self.facts.openat2_resolve {
            // This kernel's openat2 knows no RESOLVE_* flags (this gVisor has no
            // openat2 at all): its own answer is the one to give.
            return self.finish_entry(tid, work, None, policy);
        }
        let how_fl = open_how.map(|b| {
            (
                u64::from_ne_bytes(b[0..8].try_into().expect("8")),
                u64::from_ne_bytes(b[8..16].try_into().expect("8")),
            )
        });
        let op = sysent::path_op(entry, &args, how_fl);
        for (i, pa) in entry.paths.iter().enumerate() {
            let ptr = args[pa.path as usize];
            if nr == libc::SYS_utimensat && ptr == 0 {
                break;
            }
            let Some(raw) = self.mem.read_cstr(tgid, tid, ptr) else {
                // Unreadable or over-long: the kernel gives EFAULT or ENAMETOOLONG itself.
                // (The compatibility fixes below still apply.)
                break;
            };
            if raw.is_empty() {
                // "" names the dirfd itself (AT_EMPTY_PATH) or fails with ENOENT: nothing to
                // redirect, but the compatibility fixes below still apply (`stat -` is
                // statx(0, "", AT_EMPTY_PATH|AT_NO_AUTOMOUNT)).
                if let Some(r) = work.rec.as_mut() {
                    r.args = decode::path_args(nr, &args, &raw, how_fl);
                    r.path = Some(String::new());
                }
                break;
            }
            if i == 0 {
                first_ptr = (ptr, raw.len());
            }
            let base = match pa.dirfd.map(|d| args[d as usize] as i32) {
                Some(fd) if fd != libc::AT_FDCWD => Base::Fd(fd),
                _ => Base::Cwd,
            };
            let last = sysent::last(entry, i, &args, op);
            let mut deep_refused = false;
            let mut outside_refused = false;
            let (resolved, translated, walk) = {
                let mut lk = ProcLookup {
                    policy: &*policy,
                    nodes: &self.nodes,
                    root: root.clone(),
                    translated: false,
                    walk: (resolve_flags != 0)
                        .then(|| crate::scope::WalkFacts::new(&self.proc_mount)),
                    too_long: false,
                    outside_root: false,
                };
                let in_root = resolve_flags & crate::scope::RESOLVE_IN_ROOT != 0;
                let mut r = resolve::resolve_in(&raw, base, tgid, tid, last, in_root, &mut lk);
                if lk.too_long {
                    // A cwd or dirfd (the base, or a /proc/PID/cwd on the way) deeper
                    // than a page has no name: where the path leads is asked of the
                    // kernel (deep.rs), and what that names is walked as any path.
                    r = match crate::deep::locate(tid, base, &raw, last, &root) {
                        crate::deep::Found::Path(abs) => {
                            lk.too_long = false;
                            resolve::resolve_in(&abs, Base::Cwd, tgid, tid, last, false, &mut lk)
                        }
                        crate::deep::Found::Kernel => None,
                        crate::deep::Found::Refuse => {
                            deep_refused = true;
                            Some(Err(libc::EACCES))
                        }
                    };
                }
                if lk.outside_root {
                    // The kernel walks this path in the host's tree from a base
                    // outside the thread's root, where no redirect target can be
                    // named: what leads into /proc/sys (or a fake directory) is refused.
                    // Anything else is the kernel's to answer, as before.
                    r = match r {
                        Some(Ok(p)) if lk.translated || p.starts_with("/proc/sys") => {
                            outside_refused = true;
                            Some(Err(libc::EACCES))
                        }
                        _ => None,
                    };
                }
                (r, lk.translated, lk.walk)
            };
            if outside_refused {
                policy.on_event(&Event::Warning {
                    pid: tgid,
                    message: format!(
                        "{} of {} from a directory outside the caller's root (chdir, then chroot elsewhere) leads into /proc/sys: refused with EACCES",
                        entry.sysno.name(),
                        String::from_utf8_lossy(&raw)
                    ),
                });
            }
            if deep_refused {
                policy.on_event(&Event::Warning {
                    pid: tgid,
                    message: format!(
                        "{} of {} from a directory deeper than PATH_MAX after chroot/pivot_root: k3shim cannot tell where it leads, refused with EACCES",
                        entry.sysno.name(),
                        String::from_utf8_lossy(&raw)
                    ),
                });
            }
            if let Some(r) = work.rec.as_mut() {
                if i == 0 {
                    r.args = decode::path_args(nr, &args, &raw, how_fl);
                    r.path = Some(String::from_utf8_lossy(&raw).into_owned());
                }
            }
            let path = match resolved {
                None => continue,
                Some(Ok(path)) => path,
                Some(Err(errno)) => {
                    // A file or missing name walked through with `.`/`..`/a trailing slash.
                    decisions[i] = Some((
                        pa.path as usize,
                        Decision::Fail(how_errno.unwrap_or(errno)),
                        PathBuf::from(OsStr::from_bytes(&raw)),
                    ));
                    continue;
                }
            };
            if op == PathOp::Readlink && crate::detranslate::is_magic_link(&path) {
                // /proc/PID/{cwd,fd/N,...} of a fake entry or directory: the program
                // reads the path it opened, not the state directory's.
                let target = readlink_bytes(&path.to_string_lossy());
                if let Some(guest) =
                    target.and_then(|t| policy.untranslate(Path::new(OsStr::from_bytes(&t))))
                {
                    let (buf, size) = if nr == libc::SYS_readlink {
                        (args[1], args[2])
                    } else {
                        (args[2], args[3])
                    };
                    let bytes = guest.as_os_str().as_bytes();
                    let ret = if size as i32 <= 0 {
                        -(libc::EINVAL as i64)
                    } else {
                        let n = bytes.len().min(size as i32 as usize);
                        if self.mem.write(tid, buf, &bytes[..n]) {
                            n as i64
                        } else {
                            -(libc::EFAULT as i64)
                        }
                    };
                    if let Some(r) = work.rec.as_mut() {
                        r.action = Action::Emulated;
                        r.backing = Some(guest.clone());
                    }
                    return self.emulate(tid, regs, work, ret, policy);
                }
            }
            if op == PathOp::Exec && !policy.gate_open() {
                // A rule names the program as resolved, or as written (k3s's kubectl
                // is a symlink to k3s).
                let written = {
                    let mut lk = ProcLookup {
                        policy: &*policy,
                        nodes: &self.nodes,
                        root: root.clone(),
                        translated: false,
                        walk: None,
                        too_long: false,
                        outside_root: false,
                    };
                    resolve::lexical(&raw, base, tgid, tid, &mut lk)
                };
                let held = std::iter::once(path.clone())
                    .chain(written)
                    .find(|p| policy.should_hold(&HoldRequest::Exec { path: p.clone() }));
                if let Some(p) = held {
                    return self.hold(tid, tgid, format!("exec:{}", p.display()), work, policy);
                }
            }
            let req = PathRequest {
                pid: tgid,
                tid,
                syscall: entry.sysno.name(),
                op,
                path: &path,
                raw: &raw,
            };
            let mut d = policy.on_path(&req);
            // A root inside /proc (chroot("/proc") or "/proc/sys"): the thread's
            // "/sys/vm/x" is the host's /proc/sys/vm/x, served as that.
            let host = (d == Decision::Pass)
                .then(|| root.host_view(path.as_os_str().as_bytes()))
                .flatten()
                .map(|h| PathBuf::from(OsStr::from_bytes(&h)))
                .filter(|h| h.starts_with("/proc/sys"));
            let path = match host {
                Some(host) => {
                    d = policy.on_path(&PathRequest { path: &host, ..req });
                    host
                }
                None => path,
            };
            if d == Decision::Pass && translated {
                // Relative to a fake directory (a view) or through a magic link to a
                // backing file, "pass" must still reach the real path it stands for.
                d = Decision::Redirect(crate::policy::Redirect::to(path.clone()));
            }
            if d != Decision::Pass {
                // The kernel will not see the program's open_how and path: its size
                // and RESOLVE_* rules are applied here, as Linux would.
                if let Some(errno) = how_errno {
                    d = Decision::Fail(errno);
                } else if let Some(errno) =
                    walk.and_then(|w| w.verdict(resolve_flags, raw.first() == Some(&b'/')))
                {
                    d = Decision::Fail(errno);
                }
            }
            decisions[i] = Some((pa.path as usize, d, path));
        }

        // A failure decided for either path wins.
        if let Some(errno) = decisions.iter().flatten().find_map(|(_, d, _)| {
            if let Decision::Fail(e) = d {
                Some(*e)
            } else {
                None
            }
        }) {
            if let Some(r) = work.rec.as_mut() {
                r.action = Action::Emulated;
            }
            return self.emulate(tid, regs, work, -(errno as i64), policy);
        }

        // A name removed or renamed may be one the resolver remembers as a
        // directory or file: it looks again once the syscall has run.
        work.sync_nodes = matches!(op, PathOp::Remove | PathOp::Rename);
        let mut m = regs;
        let mut changed = false;
        if self.statx_fix && nr == libc::SYS_statx && args[2] & libc::AT_NO_AUTOMOUNT as u64 != 0 {
            m.rdx &= !(libc::AT_NO_AUTOMOUNT as u64);
            changed = true;
            if !self.fixes_logged {
                self.fixes_logged = true;
                policy.on_event(&Event::Fix { name: "statx-no-automount", detail: "statx with AT_NO_AUTOMOUNT fails with EINVAL here; the flag is dropped (no automount points exist in the sandbox)".into() });
            }
        }
        let mut redirects: Vec<(usize, usize, crate::policy::Redirect, PathBuf)> = decisions
            .iter()
            .enumerate()
            .filter_map(|(i, d)| match d {
                Some((reg, Decision::Redirect(r), p)) => Some((i, *reg, r.clone(), p.clone())),
                _ => None,
            })
            .collect();
        if !redirects.is_empty() && root != Root::Same {
            // Another root: the state directory is named through the tracer's own
            // root where that can be seen from there; otherwise the tracer answers.
            let named: Option<Vec<Vec<u8>>> = redirects
                .iter()
                .map(|(_, _, r, _)| self.roots.target_for(&root, r.to.as_os_str().as_bytes()))
                .collect();
            match named {
                Some(t) => {
                    for ((_, _, r, _), to) in redirects.iter_mut().zip(t) {
                        r.to = PathBuf::from(OsStr::from_bytes(&to));
                    }
                }
                None => {
                    return self.elsewhere(tid, tgid, regs, work, entry, op, &redirects, policy)
                }
            }
        }
        if !redirects.is_empty() {
            let creates_fd = matches!(op, PathOp::Open { .. });
            let Some((base_addr, area)) = self.scratch_for(
                tid, tgid, &regs, first_ptr, skip_enter, creates_fd, &mut work, policy,
            ) else {
                // Rewound to run again once the area is mapped (it will stop
                // again), or failed with the errno of the missing resource.
                return;
            };
            let Some(slot) = area.borrow_mut().alloc() else {
                // Every slot is held by a syscall in flight: this one fails
                // (it never reaches the path it names).
                if let Some(r) = work.rec.as_mut() {
                    r.action = Action::Failed;
                }
                return self.emulate(tid, regs, work, -(libc::ENOMEM as i64), policy);
            };
            // Place every replacement, then read each back through the
            // tracee's memory: what the kernel will read is what was meant, or
            // the program unmapped, moved or mapped over the area, and it is
            // mapped again (the syscall is rewound and stops again).
            let mut placed: Vec<(u64, Vec<u8>)> = Vec::new();
            for (region, reg, r, _) in &redirects {
                let bytes = r.to.as_os_str().as_bytes();
                let off = area.borrow_mut().put(slot, *region, bytes);
                set_arg(&mut m, *reg, base_addr + off as u64);
                placed.push((
                    base_addr + off as u64,
                    bytes[..bytes.len().min(4095)].to_vec(),
                ));
            }
            let r0 = redirects[0].2.clone();
            let scoped = resolve_flags & !crate::scope::RESOLVE_CACHED != 0 || args[3] != 24;
            let how_changes = entry.kind == OpKind::Openat2 && scoped;
            if r0.add_flags != 0 || r0.clear_flags != 0 || r0.write_token.is_some() || how_changes {
                let fix = |f: u64| ((f as i32 | r0.add_flags) & !r0.clear_flags) as u64;
                match entry.kind {
                    OpKind::Open { flags, mode } if flags == u8::MAX => {
                        // creat(path, mode) -> open(path, O_CREAT|O_WRONLY|O_TRUNC + changes, mode)
                        m.orig_rax = libc::SYS_open as u64;
                        m.rsi = fix((libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC) as u64);
                        m.rdx = args[mode as usize];
                    }
                    OpKind::Open { flags, .. } => {
                        set_arg(&mut m, flags as usize, fix(args[flags as usize]))
                    }
                    OpKind::Openat2 => {
                        if let Some(mut how) = open_how {
                            let f = u64::from_ne_bytes(how[0..8].try_into().expect("8"));
                            how[0..8].copy_from_slice(&fix(f).to_ne_bytes());
                            // The RESOLVE_* rules were applied to the program's path;
                            // the replacement (absolute, no symlink) keeps only
                            // RESOLVE_CACHED, which the others would refuse.
                            let keep = resolve_flags & crate::scope::RESOLVE_CACHED;
                            how[16..24].copy_from_slice(&keep.to_ne_bytes());
                            let off = area.borrow_mut().put(slot, 2, &how);
                            m.rdx = base_addr + off as u64;
                            m.r10 = 24;
                            // put() ends it with a NUL; the kernel reads 24 bytes.
                            placed.push((base_addr + off as u64, how[..23].to_vec()));
                        }
                    }
                    _ => {}
                }
            }
            if !placed
                .iter()
                .all(|(addr, b)| self.reads_back(tgid, tid, *addr, b))
            {
                area.borrow_mut().release(slot);
                self.forget_scratch(tgid, base_addr);
                if self
                    .scratch_for(
                        tid, tgid, &regs, first_ptr, skip_enter, creates_fd, &mut work, policy,
                    )
                    .is_some()
                {
                    // Only a mapping already known can come back, and it was just forgotten.
                    self.resume(tid, 0);
                }
                return;
            }
            for (_, _, r, path) in &redirects {
                policy.on_event(&Event::Redirect {
                    pid: tgid,
                    tid,
                    syscall: entry.sysno.name(),
                    path: path.clone(),
                    backing: r.to.clone(),
                });
                if let Some(rec) = work.rec.as_mut() {
                    rec.action = Action::Redirected;
                    rec.backing = Some(r.to.clone());
                }
            }
            if let PathOp::Open { flags, .. } = op {
                let cloexec = flags & libc::O_CLOEXEC != 0;
                if let Some(token) = r0.write_token {
                    work.new_fd = Some((NewFd::Write { token }, cloexec));
                } else if r0.listing && flags & libc::O_PATH == 0 {
                    work.new_fd = Some((NewFd::Dir { dir: r0.to.clone() }, cloexec));
                }
            }
            work.slot = Some((area, slot));
            changed = true;
        }
        if changed {
            if !setregs(tid, &m) {
                work.release_slot();
                return;
            }
            work.saved = Some(regs);
            work.pokes = changed_regs(&regs, &m);
            return self.finish_entry(tid, work, Some(()), policy);
        }
        if let PathOp::Open { flags, .. } = op {
            if opens_for_writing(flags) {
                work.verify_open = Some((op, entry.sysno.name()));
            }
        }
        let needs_exit = (work.sync_nodes || work.verify_open.is_some()).then_some(());
        self.finish_entry(tid, work, needs_exit, policy)
    }

    /// At the exit of an open for writing that was let through: when the fd
    /// is a real /proc/sys entry the policy would not have let through (the
    /// path changed between the decision and the kernel's walk: a symlink
    /// swapped, a directory renamed), the fd is closed in the tracee and the
    /// open fails with EACCES, with a warning. Returns the result to give.
    #[allow(clippy::too_many_arguments)]
    fn verify_write_open(
        &mut self,
        tid: i32,
        tgid: i32,
        cur: &Regs,
        fd: i64,
        op: PathOp,
        name: &'static str,
        policy: &mut dyn Policy,
    ) -> Result<i64, i32> {
        let Some(path) = real_proc_sys_path(tid, fd) else {
            return Ok(fd);
        };
        let req = PathRequest {
            pid: tgid,
            tid,
            syscall: name,
            op,
            path: &path,
            raw: path.as_os_str().as_bytes(),
        };
        if policy.on_path(&req) == Decision::Pass {
            return Ok(fd);
        }
        let mut sigs = inject::Sigs::new();
        let r = self.inject(tid, cur, libc::SYS_close, &[fd as u64], &mut sigs);
        self.requeue(tid, &sigs);
        r?;
        let p = self.procs.entry(tgid).or_insert_with(Proc::new);
        if std::mem::replace(&mut p.raced, true) {
            return Ok(-(libc::EACCES as i64));
        }
        policy.on_event(&Event::Warning {
            pid: tgid,
            message: format!(
                "{name} for writing reached the real {} (its path changed while k3shim looked at it): the fd was closed and the open fails with EACCES (said once per process)",
                path.display()
            ),
        });
        Ok(-(libc::EACCES as i64))
    }

    /// Resumes after entry handling; `needs_exit`: registers changed, take the exit stop.
    fn finish_entry(
        &mut self,
        tid: i32,
        work: ExitWork,
        needs_exit: Option<()>,
        _policy: &mut dyn Policy,
    ) {
        let th = self.threads.get_mut(&tid).expect("known");
        if needs_exit.is_some() || work.rec.is_some() || work.dup_of.is_some() {
            th.pending = Pending::Exit(Box::new(work));
        }
        self.resume(tid, 0);
    }

    /// Step mode: None for an x86_64 syscall at this entry stop; for an i386 or
    /// x32 one, Some((is i386, Some(errno))) when the filter would have refused
    /// it (compat.rs), else Some((is i386, None)): it runs, and is not decoded
    /// as x86_64.
    fn other_abi(&mut self, tid: i32, regs: &Regs) -> Option<(bool, Option<i32>)> {
        use crate::compat;
        let args = [regs.rbx, regs.rcx, regs.rdx, regs.rsi, regs.rdi, regs.rbp];
        let range = (crate::filter::FD_TRAP_BASE, crate::filter::FD_TRAP_END);
        let i386 = if regs.cs == compat::USER32_CS {
            true
        } else if self.no_syscall_info {
            false
        } else {
            match compat::syscall_arch(tid) {
                Some(a) => a == compat::AUDIT_ARCH_I386,
                None => {
                    self.no_syscall_info = true;
                    false
                }
            }
        };
        if i386 {
            let refused = compat::refused(true, regs.orig_rax, &args, range);
            return Some((true, refused.then_some(compat::REFUSED_I386)));
        }
        let nr = regs.orig_rax;
        if nr & u64::from(compat::X32_BIT) == 0 || nr >> 32 != 0 {
            return None;
        }
        let refused = compat::refused(false, nr, &args_of(regs), range);
        Some((false, refused.then_some(compat::REFUSED_X32)))
    }

    /// Fails the syscall at this entry stop with `errno` without running it: its
    /// number becomes -1 (no syscall, whatever the ABI), and the exit stop puts
    /// the registers back with the result.
    fn refuse(
        &mut self,
        tid: i32,
        regs: Regs,
        mut work: ExitWork,
        errno: i32,
        policy: &mut dyn Policy,
    ) {
        let mut m = regs;
        m.orig_rax = u64::MAX;
        if !setregs(tid, &m) {
            return;
        }
        work.saved = Some(regs);
        work.set_ret = Some(-(errno as i64));
        self.finish_entry(tid, work, Some(()), policy);
    }

    /// A redirect for a thread whose root cannot name the state directory
    /// (elsewhere.rs): an open of a fake file becomes memfd_create, filled at the
    /// exit; stat and access are answered here; anything else fails with EACCES.
    #[allow(clippy::too_many_arguments)]
    fn elsewhere(
        &mut self,
        tid: i32,
        tgid: i32,
        regs: Regs,
        mut work: ExitWork,
        entry: &sysent::Entry,
        op: PathOp,
        redirects: &[(usize, usize, crate::policy::Redirect, PathBuf)],
        policy: &mut dyn Policy,
    ) {
        use crate::elsewhere;
        let args = args_of(&regs);
        let (_, reg, r, path) = &redirects[0];
        let backing = r.to.clone();
        let is_file = std::fs::metadata(&backing)
            .map(|m| m.is_file())
            .unwrap_or(false);
        let name_len = self
            .mem
            .read_cstr(tgid, tid, args[*reg])
            .map(|n| n.len())
            .unwrap_or(usize::MAX);
        if let Some(rec) = work.rec.as_mut() {
            rec.action = Action::Redirected;
            rec.backing = Some(backing.clone());
        }
        let ret = match (entry.kind, op) {
            (OpKind::Open { .. } | OpKind::Openat2, PathOp::Open { flags, .. })
                if redirects.len() == 1
                    && is_file
                    && flags & libc::O_DIRECTORY == 0
                    && name_len <= elsewhere::MAX_NAME =>
            {
                let mut m = regs;
                m.orig_rax = libc::SYS_memfd_create as u64;
                m.rdi = args[*reg];
                m.rsi = if flags & libc::O_CLOEXEC != 0 {
                    libc::MFD_CLOEXEC as u64
                } else {
                    0
                };
                if !setregs(tid, &m) {
                    return;
                }
                policy.on_event(&Event::Redirect {
                    pid: tgid,
                    tid,
                    syscall: entry.sysno.name(),
                    path: path.clone(),
                    backing: backing.clone(),
                });
                work.saved = Some(regs);
                work.pokes = changed_regs(&regs, &m);
                work.fill = Some(backing);
                if let Some(token) = r.write_token {
                    // Tracked like any emulated fd (copies, closes, writes).
                    work.new_fd = Some((NewFd::Write { token }, flags & libc::O_CLOEXEC != 0));
                }
                return self.finish_entry(tid, work, Some(()), policy);
            }
            (OpKind::Stat { .. }, _)
                if redirects.len() == 1 && entry.sysno != syscalls::Sysno::statfs =>
            {
                let (buf, bytes) = match entry.sysno {
                    syscalls::Sysno::statx => {
                        (args[4], elsewhere::statx_bytes(&backing, args[2], args[3]))
                    }
                    syscalls::Sysno::newfstatat => (args[2], elsewhere::stat_bytes(&backing)),
                    _ => (args[1], elsewhere::stat_bytes(&backing)),
                };
                match bytes {
                    Ok(b) if self.mem.write(tid, buf, &b) => 0,
                    Ok(_) => -(libc::EFAULT as i64),
                    Err(e) => -(e as i64),
                }
            }
            (OpKind::Access { .. }, PathOp::Access { mode }) if redirects.len() == 1 => {
                elsewhere::access(&backing, mode)
            }
            _ => {
                policy.on_event(&Event::Warning {
                    pid: tgid,
                    message: format!(
                        "{} of {} from a root (chroot/pivot_root) that cannot see k3shim's state directory: refused with EACCES",
                        entry.sysno.name(),
                        path.display()
                    ),
                });
                -(libc::EACCES as i64)
            }
        };
        if let Some(rec) = work.rec.as_mut() {
            rec.action = Action::Emulated;
        }
        self.emulate(tid, regs, work, ret, policy)
    }

    /// getcwd: a cwd inside the fake tree (a chdir was redirected) is reported as
    /// the path the program believes it is in, as PRoot does; any other passes.
    fn on_getcwd(&mut self, tid: i32, regs: Regs, mut work: ExitWork, policy: &mut dyn Policy) {
        let args = args_of(&regs);
        if let Some(r) = work.rec.as_mut() {
            r.args = format!("{:#x}, {}", args[0], args[1]);
        }
        let host = readlink_bytes(&format!("/proc/{tid}/cwd"));
        let Some(guest) = host.and_then(|h| policy.untranslate(Path::new(OsStr::from_bytes(&h))))
        else {
            return self.finish_entry(tid, work, None, policy);
        };
        let mut bytes = guest.as_os_str().as_bytes().to_vec();
        bytes.push(0);
        // As the kernel: ERANGE when the buffer is too small, else the length with its NUL.
        let ret = if (args[1] as usize) < bytes.len() {
            -(libc::ERANGE as i64)
        } else if self.mem.write(tid, args[0], &bytes) {
            bytes.len() as i64
        } else {
            -(libc::EFAULT as i64)
        };
        if let Some(r) = work.rec.as_mut() {
            r.action = Action::Emulated;
            r.backing = Some(guest);
        }
        self.emulate(tid, regs, work, ret, policy)
    }

    /// Makes the syscall return `ret` without running it (it becomes getpid).
    fn emulate(
        &mut self,
        tid: i32,
        regs: Regs,
        mut work: ExitWork,
        ret: i64,
        policy: &mut dyn Policy,
    ) {
        let mut m = regs;
        m.orig_rax = libc::SYS_getpid as u64;
        if !setregs(tid, &m) {
            return;
        }
        work.saved = Some(regs);
        work.set_ret = Some(ret);
        self.finish_entry(tid, work, Some(()), policy);
    }

    fn hold(&mut self, tid: i32, tgid: i32, what: String, work: ExitWork, policy: &mut dyn Policy) {
        let comm = self.comm(tid);
        tracing::debug!(tid, what = %what, "held until the policy releases it");
        policy.on_event(&Event::Hold {
            pid: tgid,
            tid,
            comm: comm.clone(),
            what: what.clone(),
        });
        let th = self.threads.get_mut(&tid).expect("known");
        let work = work.rec.is_some().then(|| Box::new(work));
        th.pending = Pending::Held {
            since: Instant::now(),
            what,
            comm,
            work,
        };
        self.held += 1;
    }

    fn on_exit(&mut self, tid: i32, mut w: ExitWork, policy: &mut dyn Policy) {
        if w.roots_changed {
            self.roots.forget_all();
        }
        if let Some(backing) = w.fill.take() {
            crate::elsewhere::fill(tid, &backing);
        }
        if w.sync_nodes || w.roots_changed {
            self.nodes.sync();
            if w.pokes.is_empty()
                && w.saved.is_none()
                && w.set_ret.is_none()
                && !w.has_fd_work()
                && w.verify_open.is_none()
                && w.rec.is_none()
            {
                w.release_slot();
                self.resume(tid, 0);
                return;
            }
        }
        if !w.pokes.is_empty()
            && w.set_ret.is_none()
            && !w.has_fd_work()
            && w.verify_open.is_none()
            && w.rec.is_none()
        {
            // The common redirect: put back the changed registers, keep the result.
            for (off, v) in &w.pokes {
                ptrace_raw(libc::PTRACE_POKEUSER, tid, *off, *v);
            }
            w.release_slot();
            self.resume(tid, 0);
            return;
        }
        let Some(cur) = getregs(tid) else {
            w.release_slot();
            return;
        };
        let mut ret = cur.rax as i64;
        let tgid = self.threads.get(&tid).map(|t| t.tgid).unwrap_or(tid);
        if w.has_fd_work() {
            match self.fd_exit(tid, tgid, &mut w, &cur, ret, policy) {
                Ok(r) => ret = r,
                Err(st) => {
                    w.release_slot();
                    self.injection_failed(tid, st, policy);
                    return;
                }
            }
            if w.saved.is_none() {
                // Injections changed registers: put the syscall's own back.
                w.saved = Some(cur);
            }
        }
        if let Some((op, name)) = w.verify_open.take() {
            if ret >= 0 {
                match self.verify_write_open(tid, tgid, &cur, ret, op, name, policy) {
                    Ok(r) if r != ret => {
                        ret = r;
                        // The injected close changed registers: the syscall's own go back.
                        w.saved.get_or_insert(cur);
                        if let Some(rec) = w.rec.as_mut() {
                            rec.action = Action::Failed;
                        }
                    }
                    Ok(_) => {}
                    Err(st) => {
                        w.release_slot();
                        self.injection_failed(tid, st, policy);
                        return;
                    }
                }
            }
        }
        let final_ret = w.set_ret.unwrap_or(ret);
        let mut r = w.saved.unwrap_or(cur);
        if w.saved.is_some() || w.set_ret.is_some() || final_ret != cur.rax as i64 {
            r.rax = final_ret as u64;
            setregs(tid, &r);
        }
        w.release_slot();
        if let Some(mut rec) = w.rec.take() {
            rec.ret = final_ret;
            rec.dur_us = w.t0.map(|t| t.elapsed().as_micros() as u64).unwrap_or(0);
            policy.on_event(&Event::Syscall(rec));
        }
        self.resume(tid, 0);
    }

    /// The scratch area of `tgid`, mapping it first if needed. Mapping happens
    /// inside the tracee at its current syscall entry: memfd_create (name: the NUL
    /// that ends the path), mmap, close; then the original syscall is rewound so it
    /// runs again and stops again. Returns None in that case, and when mapping
    /// failed: then the syscall fails with the errno of the missing resource
    /// (EMFILE/ENFILE for a call that makes an fd, else ENOMEM) and never
    /// reaches the path it names. Nothing is remembered of a failure: the next
    /// redirect tries again.
    #[allow(clippy::too_many_arguments)]
    fn scratch_for(
        &mut self,
        tid: i32,
        tgid: i32,
        r0: &Regs,
        first: (u64, usize),
        skip_enter: bool,
        creates_fd: bool,
        work: &mut ExitWork,
        policy: &mut dyn Policy,
    ) -> Option<(u64, AreaRef)> {
        let p = self.procs.entry(tgid).or_insert_with(Proc::new);
        if let Some((a, area)) = &p.mm.borrow().scratch {
            return Some((*a, area.clone()));
        }
        let mut sigs = inject::Sigs::new();
        let errno = match self.map_scratch(tid, r0, first, skip_enter, &mut sigs) {
            Ok(Ok((addr, area))) => {
                if let Some(p) = self.procs.get(&tgid) {
                    p.mm.borrow_mut().scratch = Some((addr, area));
                }
                None
            }
            Ok(Err(e)) => Some(if creates_fd && (e == libc::EMFILE || e == libc::ENFILE) {
                e
            } else {
                libc::ENOMEM
            }),
            Err(st) => {
                self.injection_failed(tid, st, policy);
                return None;
            }
        };
        let mut back = *r0;
        match errno {
            // Run the original syscall again from its instruction: it traps again
            // and is handled with the area in place.
            None => {
                back.rip = r0.rip - SYSCALL_INSN_LEN;
                back.rax = r0.orig_rax;
            }
            // At the exit stop of the last injected call: the original returns -errno.
            Some(e) => {
                back.rax = -(e as i64) as u64;
                if let Some(mut r) = work.rec.take() {
                    r.action = Action::Failed;
                    r.ret = -(e as i64);
                    r.dur_us = work.t0.map(|t| t.elapsed().as_micros() as u64).unwrap_or(0);
                    policy.on_event(&Event::Syscall(r));
                }
            }
        }
        setregs(tid, &back);
        self.requeue(tid, &sigs);
        if let Some(t) = self.threads.get_mut(&tid) {
            t.in_syscall = false;
        }
        self.resume(tid, 0);
        None
    }

    /// Forgets the scratch area at `base` of `tgid`'s address space (the
    /// program unmapped or replaced it); the next redirect maps another.
    fn forget_scratch(&mut self, tgid: i32, base: u64) {
        if let Some(p) = self.procs.get(&tgid) {
            let mut mm = p.mm.borrow_mut();
            if mm.scratch.as_ref().map(|(a, _)| *a) == Some(base) {
                mm.scratch = None;
            }
        }
    }

    /// Do the `bytes` (and a NUL) read back at `addr` of the tracee?
    fn reads_back(&mut self, tgid: i32, tid: i32, addr: u64, bytes: &[u8]) -> bool {
        let mut b = vec![0u8; bytes.len() + 1];
        self.mem.read(tgid, tid, addr, &mut b) == b.len()
            && &b[..bytes.len()] == bytes
            && b[bytes.len()] == 0
    }

    /// Maps a scratch area into `tid`'s process from a syscall's entry stop:
    /// the syscall becomes memfd_create("", MFD_CLOEXEC) (the name is the NUL
    /// ending its first path), then mmap and close are injected. Ok(Err(errno))
    /// when it could not be made (the thread is then at an exit stop).
    fn map_scratch(
        &mut self,
        tid: i32,
        r0: &Regs,
        first: (u64, usize),
        skip_enter: bool,
        sigs: &mut inject::Sigs,
    ) -> Result<Result<(u64, AreaRef), i32>, i32> {
        let mut m = *r0;
        m.orig_rax = libc::SYS_memfd_create as u64;
        m.rdi = first.0 + first.1 as u64;
        m.rsi = libc::MFD_CLOEXEC as u64;
        if !setregs(tid, &m) {
            return Err(NO_STATUS);
        }
        let stops = if skip_enter { 2 } else { 1 };
        for _ in 0..stops {
            if let inject::Step::Gone(st) = self.step(tid, sigs) {
                return Err(st);
            }
        }
        let Some(cur) = getregs(tid) else {
            return Err(NO_STATUS);
        };
        let fd = cur.rax as i64;
        if fd < 0 {
            return Ok(Err(-fd as i32));
        }
        self.map_memfd(tid, r0, fd, sigs)
    }
}
