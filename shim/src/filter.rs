//! The seccomp filter installed in the tracee before exec: SECCOMP_RET_TRACE
//! for path-taking syscalls (and connect when a hold rule needs it), ALLOW for
//! everything else, so that untouched syscalls never stop.

use crate::sysent::PATH_SYSCALLS;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op,
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
    if spec.write_fds {
        fd_rules(&mut rules, &fd_range)?;
    }
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Trace(0), arch())?;
    filter.try_into()
}

/// A filter the engine adds at run time to a process (with an injected
/// seccomp(2)) when an emulated entry's fd is copied to `fd` outside the
/// trapped range, e.g. by a shell's `dup2(fd, 1)` for `echo 1 > /proc/sys/x`.
/// It traps writes on `fd`, and close/dup2 that replace it.
pub fn build_for_fd(fd: u32) -> Result<BpfProgram, seccompiler::BackendError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let v = u64::from(fd);
    fd_rules(&mut rules, &|arg| vec![c(arg, Op::Eq, v)])?;
    SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Trace(0), arch())?.try_into()
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
