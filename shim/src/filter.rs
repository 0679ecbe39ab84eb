//! The seccomp filter installed in the tracee before exec: SECCOMP_RET_TRACE
//! for path-taking syscalls and getcwd (and connect when a hold rule needs
//! it), ALLOW for everything else, so that untouched syscalls never stop.

use crate::compat::{self, FdArgs};
use crate::sysent::PATH_SYSCALLS;
use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op,
    SeccompCondition as Cond, SeccompFilter, SeccompRule, TargetArch,
};
use std::collections::BTreeMap;
use syscalls::Sysno;

/// fds at or above this number (and below FD_TRAP_END) are the shim's: writes on
/// them are trapped, so that writes to emulated entries can be checked.
pub const FD_TRAP_BASE: u64 = 1000;
pub const FD_TRAP_END: u64 = 1024;

/// What the filter traps besides path syscalls.
#[derive(Debug, Clone, Default)]
pub struct FilterSpec {
    pub connect: bool,
    /// Trap write-family syscalls, dup2/dup3/close and fcntl(F_DUPFD*) on the shim's fd range.
    pub write_fds: bool,
    /// Trap statx calls that carry AT_NO_AUTOMOUNT even with AT_EMPTY_PATH (gVisor fix).
    pub statx_no_automount: bool,
}

fn c(arg: u8, op: Op, v: u64) -> Cond {
    Cond::new(arg, Len::Dword, op, v).expect("static condition")
}

fn fd_range(arg: u8) -> Vec<Cond> {
    vec![c(arg, Op::Ge, FD_TRAP_BASE), c(arg, Op::Lt, FD_TRAP_END)]
}

/// Builds the BPF program.
pub fn build(spec: &FilterSpec) -> Result<BpfProgram, seccompiler::BackendError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let at_empty = libc::AT_EMPTY_PATH as u64;
    for e in PATH_SYSCALLS {
        let nr = e.sysno.id() as i64;
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
    // A cwd inside the fake tree is reported as the path the program chdir'ed to
    // (detranslate.rs).
    rules.insert(Sysno::getcwd.id() as i64, vec![]);
    // A thread's root changes (roots.rs).
    for s in [Sysno::chroot, Sysno::pivot_root, Sysno::setns] {
        rules.insert(s.id() as i64, vec![]);
    }
    if spec.write_fds {
        fd_rules(&mut rules, &fd_range)?;
    }
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Trace(0), arch())?;
    Ok(guard_other_abis(
        filter.try_into()?,
        true,
        (FD_TRAP_BASE, FD_TRAP_END),
    ))
}

/// A filter the engine adds at run time to a process (with an injected
/// seccomp(2)) when an emulated entry's fd is copied to `fd` outside the
/// trapped range, e.g. by a shell's `dup2(fd, 1)` for `echo 1 > /proc/sys/x`.
/// It traps writes on `fd`, and close/dup2 that replace it.
pub fn build_for_fd(fd: u32) -> Result<BpfProgram, seccompiler::BackendError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let v = u64::from(fd);
    fd_rules(&mut rules, &|arg| vec![c(arg, Op::Eq, v)])?;
    let prog = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Trace(0), arch())?
        .try_into()?;
    Ok(guard_other_abis(prog, false, (v, v + 1)))
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
    let section = |path_nrs: Vec<u32>, fd_nrs: Vec<(u32, FdArgs)>, errno: i32| {
        let refuse = stmt(RET_K, RET_ERRNO | errno as u32);
        let mut v = Vec::new();
        v.push(stmt(LD_W_ABS, OFF_NR));
        if paths {
            for nr in path_nrs {
                v.push(jump(JEQ_K, nr, 0, 1));
                v.push(refuse.clone());
            }
        }
        // One fd argument: refused when fds.0 <= arg < fds.1 (low 32 bits).
        let check = |i: u32| {
            vec![
                stmt(LD_W_ABS, off_arg(i)),
                jump(JGE_K, fds.0, 0, 2),
                jump(JGE_K, fds.1, 1, 0),
                refuse.clone(),
            ]
        };
        for (nr, how) in fd_nrs {
            let block: Vec<sock_filter> = match how {
                FdArgs::First => check(0),
                FdArgs::FirstOrSecond => [check(0), check(1)].concat(),
                FdArgs::Dupfd => [
                    vec![
                        stmt(LD_W_ABS, off_arg(1)),
                        jump(JEQ_K, libc::F_DUPFD as u32, 1, 0),
                        jump(JEQ_K, libc::F_DUPFD_CLOEXEC as u32, 0, 4),
                    ],
                    check(0),
                ]
                .concat(),
            };
            v.push(stmt(LD_W_ABS, OFF_NR));
            v.push(jump(JEQ_K, nr, 0, block.len() as u8));
            v.extend(block);
        }
        v.push(stmt(RET_K, RET_ALLOW));
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

/// The syscalls that write through, close, truncate or copy an fd, each trapped
/// when `fd_is(arg)` holds for its fd argument(s): the same set for the shim's
/// fd range and for one fd outside it.
fn fd_rules(
    rules: &mut BTreeMap<i64, Vec<SeccompRule>>,
    fd_is: &dyn Fn(u8) -> Vec<Cond>,
) -> Result<(), seccompiler::BackendError> {
    for s in [
        Sysno::write,
        Sysno::pwrite64,
        Sysno::writev,
        Sysno::pwritev,
        Sysno::pwritev2,
        Sysno::close,
        Sysno::ftruncate,
    ] {
        rules.insert(s.id() as i64, vec![SeccompRule::new(fd_is(0))?]);
    }
    // dup2/dup3 from the fd (a copy to follow) or onto it (an entry replaced).
    for s in [Sysno::dup2, Sysno::dup3] {
        rules.insert(
            s.id() as i64,
            vec![SeccompRule::new(fd_is(0))?, SeccompRule::new(fd_is(1))?],
        );
    }
    let mut f = Vec::new();
    for cmd in [libc::F_DUPFD, libc::F_DUPFD_CLOEXEC] {
        let mut conds = fd_is(0);
        conds.push(c(1, Op::Eq, cmd as u64));
        f.push(SeccompRule::new(conds)?);
    }
    rules.insert(Sysno::fcntl.id() as i64, f);
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
            connect: true,
            write_fds: true,
            statx_no_automount: true,
        })
        .unwrap();
        assert!(full.len() > plain.len());
        assert!(
            plain.len() < 4096,
            "BPF programs are limited to 4096 instructions"
        );
    }
}
