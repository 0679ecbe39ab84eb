//! The seccomp filter installed in the tracee before exec: SECCOMP_RET_TRACE
//! for path-taking syscalls and getcwd (and connect when a hold rule needs
//! it), ALLOW for everything else, so that untouched syscalls never stop.

use crate::compat::{self, FdArgs as AbiFdArgs};
use crate::sysent::PATH_SYSCALLS;
use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op,
    SeccompCondition as Cond, SeccompFilter, SeccompRule, TargetArch,
};
use std::collections::BTreeMap;
use syscalls::Sysno;

/// Syscalls without a path the path filter stops too: getcwd (a cwd inside
/// the fake tree is reported as the path the program chdir'ed to,
/// detranslate.rs), and chroot, pivot_root and setns (a thread's root
/// changes, roots.rs).
pub const ALSO_STOPPED: [Sysno; 4] = [
    Sysno::getcwd,
    Sysno::chroot,
    Sysno::pivot_root,
    Sysno::setns,
];

/// fds at or above this number (and below FD_TRAP_END) are the shim's: writes on
/// them are trapped, so that writes to emulated entries can be checked. Only
/// multi-threaded processes get their emulated fds moved here (see
/// `FdSet`); single-threaded ones keep the number the kernel gave.
pub const FD_TRAP_BASE: u64 = 1000;
pub const FD_TRAP_END: u64 = 1024;

/// The fd numbers one filter stops fd syscalls for.
#[derive(Debug, Clone, Copy)]
pub enum FdSet<'a> {
    /// FD_TRAP_BASE..FD_TRAP_END, in the filter installed before exec.
    Range,
    /// These numbers, in a filter added at run time.
    List(&'a [i32]),
}

impl FdSet<'_> {
    pub fn contains(&self, fd: u64) -> bool {
        let fd = fd as u32 as u64;
        match self {
            FdSet::Range => (FD_TRAP_BASE..FD_TRAP_END).contains(&fd),
            FdSet::List(l) => l.iter().any(|&f| f as u32 as u64 == fd),
        }
    }

    /// Does [lo, hi] (close_range's bounds) meet the set?
    pub fn meets(&self, lo: u64, hi: u64) -> bool {
        let (lo, hi) = (lo as u32 as u64, hi as u32 as u64);
        match self {
            FdSet::Range => lo < FD_TRAP_END && hi >= FD_TRAP_BASE,
            FdSet::List(l) => l.iter().any(|&f| (lo..=hi).contains(&(f as u32 as u64))),
        }
    }

    /// Alternatives (ORed) of conditions (ANDed) for "argument `arg` is in the set".
    fn conds(&self, arg: u8) -> Vec<Vec<Cond>> {
        match self {
            FdSet::Range => vec![vec![
                c(arg, Op::Ge, FD_TRAP_BASE),
                c(arg, Op::Lt, FD_TRAP_END),
            ]],
            FdSet::List(l) => l
                .iter()
                .map(|&f| vec![c(arg, Op::Eq, f as u32 as u64)])
                .collect(),
        }
    }

    /// Alternatives for "[arg0, arg1] meets the set".
    fn range_conds(&self) -> Vec<Vec<Cond>> {
        match self {
            FdSet::Range => vec![vec![c(0, Op::Lt, FD_TRAP_END), c(1, Op::Ge, FD_TRAP_BASE)]],
            FdSet::List(l) => l
                .iter()
                .map(|&f| vec![c(0, Op::Le, f as u32 as u64), c(1, Op::Ge, f as u32 as u64)])
                .collect(),
        }
    }
}

/// Which arguments of an fd syscall name the fds a filter looks at.
#[derive(Debug, Clone, Copy)]
pub enum FdArgs {
    One(u8),
    /// Either argument (dup2/dup3: a copy from the fd, or the fd replaced).
    Either(u8, u8),
    /// close_range(first, last, flags).
    Bounds,
}

/// One fd syscall the engine must see for emulated fds: writes (answered by
/// the policy), directory listings and seeks (answered from the listing),
/// the ways an fd is copied or ends (tracked), and the copies into an fd
/// (sendfile, splice, copy_file_range: answered as procfs does).
#[derive(Debug)]
pub struct FdCall {
    pub sysno: Sysno,
    pub fds: FdArgs,
    /// When not empty, argument 1 must be one of these (fcntl commands).
    pub cmds: &'static [u64],
}

const fn one(sysno: Sysno, arg: u8) -> FdCall {
    FdCall {
        sysno,
        fds: FdArgs::One(arg),
        cmds: &[],
    }
}

/// The fd syscalls every filter stops for its fd numbers (F_SETFD, FIOCLEX and
/// exec are not among them: which fds survived an exec is checked at the exec).
pub static FD_CALLS: &[FdCall] = &[
    one(Sysno::write, 0),
    one(Sysno::pwrite64, 0),
    one(Sysno::writev, 0),
    one(Sysno::pwritev, 0),
    one(Sysno::pwritev2, 0),
    one(Sysno::ftruncate, 0),
    one(Sysno::close, 0),
    one(Sysno::dup, 0),
    one(Sysno::getdents, 0),
    one(Sysno::getdents64, 0),
    one(Sysno::lseek, 0),
    one(Sysno::sendfile, 0),
    one(Sysno::splice, 2),
    one(Sysno::copy_file_range, 2),
    FdCall {
        sysno: Sysno::dup2,
        fds: FdArgs::Either(0, 1),
        cmds: &[],
    },
    FdCall {
        sysno: Sysno::dup3,
        fds: FdArgs::Either(0, 1),
        cmds: &[],
    },
    FdCall {
        sysno: Sysno::fcntl,
        fds: FdArgs::One(0),
        cmds: &[libc::F_DUPFD as u64, libc::F_DUPFD_CLOEXEC as u64],
    },
    FdCall {
        sysno: Sysno::close_range,
        fds: FdArgs::Bounds,
        cmds: &[],
    },
];

/// The entry of FD_CALLS for syscall `nr`.
pub fn fd_call(nr: i64) -> Option<&'static FdCall> {
    FD_CALLS.iter().find(|f| f.sysno.id() as i64 == nr)
}

/// Would a filter for `set` stop this call? (The same test as its BPF.)
pub fn traps(call: &FdCall, args: &[u64; 6], set: FdSet<'_>) -> bool {
    if !call.cmds.is_empty() && !call.cmds.contains(&(args[1] as u32 as u64)) {
        return false;
    }
    match call.fds {
        FdArgs::One(a) => set.contains(args[a as usize]),
        FdArgs::Either(a, b) => set.contains(args[a as usize]) || set.contains(args[b as usize]),
        FdArgs::Bounds => set.meets(args[0], args[1]),
    }
}

/// Which path-taking syscalls stop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathTraps {
    /// Every one (the policy serves reads too).
    #[default]
    All,
    /// Only those that may change something at the path: opens with write
    /// intent (the flag argument has O_WRONLY, O_RDWR, O_CREAT or O_TRUNC;
    /// openat2 and creat always, as their flags are not in a register) or
    /// with O_DIRECT (the policy may refuse what the mounted file allows),
    /// creates, removes, renames, links, truncate, metadata changes, exec,
    /// and access checks for W_OK (a read-only mount would answer EROFS).
    /// Reads, stat, other access checks, readlink, chdir and getcwd run untouched: for a
    /// policy whose files are already where the program looks (a mount).
    Mutations,
}

/// Does `kind` stop under `traps`?
pub fn stops(kind: crate::sysent::OpKind, traps: PathTraps) -> bool {
    use crate::sysent::OpKind as K;
    traps == PathTraps::All
        || !matches!(kind, K::Stat { .. } | K::Readlink | K::Chdir | K::StatLike)
}

/// The open flags that make an open stop under `PathTraps::Mutations`: those
/// of a possible mutation, and O_DIRECT, which procfs refuses (EINVAL) while
/// a plain file mounted in its place may accept it.
pub const TRAPPED_OPEN_FLAGS: [i32; 5] = [
    libc::O_WRONLY,
    libc::O_RDWR,
    libc::O_CREAT,
    libc::O_TRUNC,
    libc::O_DIRECT,
];

/// What the filter traps besides path syscalls.
#[derive(Debug, Clone, Default)]
pub struct FilterSpec {
    pub paths: PathTraps,
    pub connect: bool,
    /// Trap write-family syscalls, dup2/dup3/close and fcntl(F_DUPFD*) on the shim's fd range.
    pub write_fds: bool,
    /// Trap statx calls that carry AT_NO_AUTOMOUNT even with AT_EMPTY_PATH (gVisor fix).
    pub statx_no_automount: bool,
}

fn c(arg: u8, op: Op, v: u64) -> Cond {
    Cond::new(arg, Len::Dword, op, v).expect("static condition")
}

/// Builds the BPF program.
pub fn build(spec: &FilterSpec) -> Result<BpfProgram, seccompiler::BackendError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let at_empty = libc::AT_EMPTY_PATH as u64;
    for e in PATH_SYSCALLS {
        let nr = e.sysno.id() as i64;
        if !stops(e.kind, spec.paths) {
            // The statx fix must reach statx even where stat calls run untouched
            // (gVisor refuses AT_NO_AUTOMOUNT on every path, mounted or not).
            if e.sysno == Sysno::statx && spec.statx_no_automount {
                let m = libc::AT_NO_AUTOMOUNT as u64;
                rules.insert(nr, vec![SeccompRule::new(vec![c(2, Op::MaskedEq(m), m)])?]);
            }
            continue;
        }
        if spec.paths == PathTraps::Mutations {
            if let crate::sysent::OpKind::Access { mode } = e.kind {
                let w = libc::W_OK as u64;
                rules.insert(
                    nr,
                    vec![SeccompRule::new(vec![c(mode, Op::MaskedEq(w), w)])?],
                );
                continue;
            }
            if let crate::sysent::OpKind::Open { flags, .. } = e.kind {
                if flags != u8::MAX {
                    let mut r = Vec::new();
                    for bit in TRAPPED_OPEN_FLAGS {
                        let bit = bit as u64;
                        r.push(SeccompRule::new(vec![c(flags, Op::MaskedEq(bit), bit)])?);
                    }
                    rules.insert(nr, r);
                    continue;
                }
            }
        }
        let r = match e.sysno {
            // fstat-by-fd (glibc fstat, Python's open) passes "" with AT_EMPTY_PATH: do not
            // stop for it. A non-empty path with AT_EMPTY_PATH is not looked at (documented).
            Sysno::newfstatat => vec![SeccompRule::new(vec![c(3, Op::MaskedEq(at_empty), 0)])?],
            Sysno::statx => {
                let mut v = vec![SeccompRule::new(vec![c(2, Op::MaskedEq(at_empty), 0)])?];
                if spec.statx_no_automount {
                    let m = libc::AT_NO_AUTOMOUNT as u64;
                    v.push(SeccompRule::new(vec![c(2, Op::MaskedEq(m), m)])?);
                }
                v
            }
            _ => vec![],
        };
        rules.insert(nr, r);
    }
    if spec.connect {
        rules.insert(Sysno::connect.id() as i64, vec![]);
    }
    // Under a mount (PathTraps::Mutations) the kernel reports the cwd itself.
    for s in ALSO_STOPPED {
        if s == Sysno::getcwd && spec.paths != PathTraps::All {
            continue;
        }
        rules.insert(s.id() as i64, vec![]);
    }
    if spec.write_fds {
        fd_rules(&mut rules, FdSet::Range)?;
    }
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Trace(0), arch())?;
    Ok(guard_other_abis(
        refuse_io_uring(filter.try_into()?),
        true,
        (FD_TRAP_BASE, FD_TRAP_END),
    ))
}

/// The io_uring syscalls: their operations open, read and write files with
/// no syscall a filter sees, so a ring could reach the real /proc/sys. They
/// fail with ENOSYS, as on a kernel built without io_uring (Go's runtime,
/// libuv and liburing users fall back to plain syscalls on it).
pub const IO_URING: [Sysno; 3] = [
    Sysno::io_uring_setup,
    Sysno::io_uring_enter,
    Sysno::io_uring_register,
];

/// Puts the io_uring refusal (SECCOMP_RET_ERRNO, no stop) in front of an
/// x86_64 program: seccompiler gives one action to every matched rule.
fn refuse_io_uring(x86_64: BpfProgram) -> BpfProgram {
    let n = IO_URING.len();
    let mut v = vec![stmt(LD_W_ABS, OFF_NR)];
    for (k, s) in IO_URING.iter().enumerate() {
        // Comparison k sits at k + 1; the refusal at n + 2.
        v.push(jump(JEQ_K, s.id() as u32, (n - k) as u8, 0));
    }
    v.push(stmt(JA, 1));
    v.push(stmt(RET_K, RET_ERRNO | libc::ENOSYS as u32));
    v.extend(x86_64);
    v
}

/// fd numbers one per-fd filter covers when a multi-threaded process has no
/// room left in the fd range: as many as keep its program (with the other
/// ABIs' guards) within the two pages of scratch memory it is placed in.
pub const FD_FILTER_BLOCK: i32 = 7;

/// A filter the engine adds at run time to a process (with an injected
/// seccomp(2)) for emulated fds outside the range, when stepping the process
/// is not possible or has gone on too long: it stops the fd syscalls of
/// `fds` only.
pub fn build_for_fds(fds: &[i32]) -> Result<BpfProgram, seccompiler::BackendError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    fd_rules(&mut rules, FdSet::List(fds))?;
    let prog = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Trace(0), arch())?
        .try_into()?;
    // Other ABIs' fd syscalls are refused on the span of the listed numbers
    // (i386 and x32 code in an x86_64 process is rare; a wider span only
    // refuses their fd calls on a few more numbers).
    let lo = fds.iter().map(|&f| f as u32 as u64).min().unwrap_or(0);
    let hi = fds.iter().map(|&f| f as u32 as u64 + 1).max().unwrap_or(0);
    Ok(guard_other_abis(prog, false, (lo, hi)))
}

// Classic BPF, as seccomp runs it (linux/filter.h, linux/seccomp.h).
const LD_W_ABS: u16 = 0x20;
const JA: u16 = 0x05;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;
// struct seccomp_data: nr, arch, instruction_pointer, args[6] (low words first).
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
fn off_arg(i: u32) -> u32 {
    16 + 8 * i
}

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}
fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// Wraps an x86_64 program so that the syscalls of the other ABIs an x86_64
/// process can make are checked too (seccompiler's program checks the arch
/// and kills on i386, and never looks at x32's bit 30, so an x32 open passed
/// unfiltered): their path syscalls (when `paths`) and fd syscalls on fds in
/// `fds` fail (EPERM for i386, ENOSYS for x32: see compat.rs), everything
/// else of theirs runs.
fn guard_other_abis(x86_64: BpfProgram, paths: bool, fds: (u64, u64)) -> BpfProgram {
    if cfg!(not(target_arch = "x86_64")) {
        return x86_64;
    }
    let fds = (fds.0 as u32, fds.1 as u32);
    let section = |path_nrs: Vec<u32>, fd_nrs: Vec<(u32, AbiFdArgs)>, errno: i32| {
        // One comparison per syscall number jumping to a shared block (the
        // refusal, or the check of its fd arguments), so that a per-fd filter
        // stays small: its program must fit two pages of scratch memory.
        #[derive(Clone, Copy)]
        enum To {
            Refuse,
            First,
            Either,
            Dupfd,
        }
        let refuse = stmt(RET_K, RET_ERRNO | errno as u32);
        let allow = stmt(RET_K, RET_ALLOW);
        // One fd argument: refused when fds.0 <= arg < fds.1 (low 32 bits).
        let check = |i: u32| {
            vec![
                stmt(LD_W_ABS, off_arg(i)),
                jump(JGE_K, fds.0, 0, 2),
                jump(JGE_K, fds.1, 1, 0),
                refuse.clone(),
            ]
        };
        let first = [check(0), vec![allow.clone()]].concat();
        let either = [check(0), check(1), vec![allow.clone()]].concat();
        let dupfd = [
            vec![
                stmt(LD_W_ABS, off_arg(1)),
                jump(JEQ_K, libc::F_DUPFD as u32, 1, 0),
                jump(JEQ_K, libc::F_DUPFD_CLOEXEC as u32, 0, 4),
            ],
            check(0),
            vec![allow.clone()],
        ]
        .concat();
        let mut to: Vec<(u32, To)> = Vec::new();
        if paths {
            to.extend(path_nrs.into_iter().map(|nr| (nr, To::Refuse)));
        }
        to.extend(fd_nrs.into_iter().map(|(nr, how)| {
            let t = match how {
                AbiFdArgs::First => To::First,
                AbiFdArgs::FirstOrSecond => To::Either,
                AbiFdArgs::Dupfd => To::Dupfd,
            };
            (nr, t)
        }));
        // Layout: load nr, the comparisons, allow, refuse, first, either, dupfd.
        let n = to.len();
        let at = |t: To| match t {
            To::Refuse => n + 2,
            To::First => n + 3,
            To::Either => n + 3 + first.len(),
            To::Dupfd => n + 3 + first.len() + either.len(),
        };
        let mut v = vec![stmt(LD_W_ABS, OFF_NR)];
        for (k, (nr, t)) in to.into_iter().enumerate() {
            // Comparison k sits at k + 1; a jump counts from the next one.
            let off = u8::try_from(at(t) - (k + 2)).expect("an ABI section under 256 entries");
            v.push(jump(JEQ_K, nr, off, 0));
        }
        v.push(allow);
        v.push(refuse);
        v.extend(first);
        v.extend(either);
        v.extend(dupfd);
        v
    };
    let mut i386 = vec![
        stmt(LD_W_ABS, OFF_ARCH),
        jump(JEQ_K, compat::AUDIT_ARCH_I386, 1, 0),
        stmt(RET_K, RET_KILL_PROCESS),
    ];
    i386.extend(section(
        compat::i386_path_nrs(),
        compat::i386_fd_nrs(),
        compat::REFUSED_I386,
    ));
    let x32 = section(
        compat::x32_path_nrs(),
        compat::x32_fd_nrs(),
        compat::REFUSED_X32,
    );
    let p = x86_64.len() as u32;
    let mut out = vec![
        stmt(LD_W_ABS, OFF_ARCH),
        jump(JEQ_K, compat::AUDIT_ARCH_X86_64, 0, 3),
        stmt(LD_W_ABS, OFF_NR),
        jump(JSET_K, compat::X32_BIT, 0, 2),
        // x32: past the x86_64 program and the i386 section.
        stmt(JA, 1 + p + i386.len() as u32),
        // Not x86_64: past the x86_64 program.
        stmt(JA, p),
    ];
    out.extend(x86_64);
    out.extend(i386);
    out.extend(x32);
    out
}

/// The rules of FD_CALLS for `set`.
fn fd_rules(
    rules: &mut BTreeMap<i64, Vec<SeccompRule>>,
    set: FdSet<'_>,
) -> Result<(), seccompiler::BackendError> {
    for call in FD_CALLS {
        let alts: Vec<Vec<Cond>> = match call.fds {
            FdArgs::One(a) => set.conds(a),
            FdArgs::Either(a, b) => set.conds(a).into_iter().chain(set.conds(b)).collect(),
            FdArgs::Bounds => set.range_conds(),
        };
        let mut r = Vec::new();
        for alt in alts {
            if call.cmds.is_empty() {
                r.push(SeccompRule::new(alt)?);
            } else {
                for &cmd in call.cmds {
                    let mut conds = alt.clone();
                    conds.push(c(1, Op::Eq, cmd));
                    r.push(SeccompRule::new(conds)?);
                }
            }
        }
        rules.insert(call.sysno.id() as i64, r);
    }
    Ok(())
}

fn arch() -> TargetArch {
    #[cfg(target_arch = "x86_64")]
    return TargetArch::x86_64;
    #[cfg(target_arch = "aarch64")]
    return TargetArch::aarch64;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_builds_with_and_without_extras() {
        let plain = build(&FilterSpec::default()).unwrap();
        let full = build(&FilterSpec {
            paths: PathTraps::All,
            connect: true,
            write_fds: true,
            statx_no_automount: true,
        })
        .unwrap();
        assert!(full.len() > plain.len());
        let mutations = build(&FilterSpec {
            paths: PathTraps::Mutations,
            write_fds: true,
            ..Default::default()
        })
        .unwrap();
        assert!(mutations.len() < full.len());
        assert!(
            plain.len() < 4096,
            "BPF programs are limited to 4096 instructions"
        );
        // A block of FD_FILTER_BLOCK fds, the widest span, must fit the two
        // pages the engine gives it.
        let block: Vec<i32> = (0..FD_FILTER_BLOCK).map(|i| i * 100_000).collect();
        let b = build_for_fds(&block).unwrap();
        assert!(b.len() * 8 <= 2 * 4096, "{} instructions", b.len());
    }

    #[test]
    fn the_trap_test_agrees_with_the_rules_for_each_fd_call() {
        let l = [1, 7];
        let sets = [FdSet::Range, FdSet::List(&l)];
        let a = |v: &[u64]| {
            let mut x = [0u64; 6];
            x[..v.len()].copy_from_slice(v);
            x
        };
        let w = fd_call(libc::SYS_write).unwrap();
        assert!(traps(w, &a(&[1000]), sets[0]) && !traps(w, &a(&[999]), sets[0]));
        assert!(traps(w, &a(&[7]), sets[1]) && !traps(w, &a(&[1000]), sets[1]));
        let d2 = fd_call(libc::SYS_dup2).unwrap();
        assert!(traps(d2, &a(&[3, 1]), sets[1]) && traps(d2, &a(&[1, 3]), sets[1]));
        let f = fd_call(libc::SYS_fcntl).unwrap();
        assert!(traps(f, &a(&[7, libc::F_DUPFD as u64]), sets[1]));
        assert!(!traps(f, &a(&[7, libc::F_GETFL as u64]), sets[1]));
        let cr = fd_call(libc::SYS_close_range).unwrap();
        assert!(
            traps(cr, &a(&[3, u32::MAX as u64]), sets[0])
                && traps(cr, &a(&[3, 5]), FdSet::List(&[4]))
        );
        assert!(
            !traps(cr, &a(&[8, u32::MAX as u64]), sets[1]) && !traps(cr, &a(&[3, 999]), sets[0])
        );
        let sp = fd_call(libc::SYS_splice).unwrap();
        assert!(traps(sp, &a(&[0, 0, 7]), sets[1]) && !traps(sp, &a(&[7, 0, 0]), sets[1]));
        // A negative fd (as an int) is no member of the range.
        assert!(!traps(w, &a(&[(-1i64) as u64]), sets[0]));
    }
}
