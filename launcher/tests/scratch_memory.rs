//! k3shim's scratch memory in a tracee (issue 11 items 1, 5, 13, 14): a
//! redirect that cannot be placed fails that one syscall and never reaches
//! the real entry; a mapping the program unmapped, moved or mapped over is
//! noticed and made again; CLONE_VM children share their parent's; signals
//! that arrive while k3shim runs syscalls inside a thread keep their siginfo.
//!
//! The state directory holds kernel/panic = 4242, a value no host has, so a
//! read that reached the real entry shows.

mod sandbox;

use sandbox::*;
use std::path::Path;
use std::process::Command;

const ENTRY: &str = "/proc/sys/kernel/panic";
const FAKE: &str = "4242";

fn state_with_fake_value(st: &Path) {
    let o = Command::new(k3shim())
        .args(["fakefs", "init", "--state"])
        .arg(st)
        .output()
        .unwrap();
    assert_ok(&o, "fakefs init");
    let o = Command::new(k3shim())
        .args(["fakefs", "set", "--state"])
        .arg(st)
        .args(["kernel/panic", FAKE])
        .output()
        .unwrap();
    assert_ok(&o, "fakefs set kernel/panic");
}

fn scratch_case(case: &str, extra: &str) -> String {
    let before = host_sysctls();
    let st = scratch(&format!("scratch-{case}")).join("s");
    state_with_fake_value(&st);
    let o = native(&format!(
        "{} run --mode shadow --state {} -- {} {case} {ENTRY} {extra}",
        k3shim().display(),
        st.display(),
        c_fixture("scratch").display()
    ));
    assert_ok(&o, &format!("scratch {case}"));
    assert_eq!(host_sysctls(), before, "the host's sysctls changed");
    stdout(&o)
}

#[test]
fn a_redirect_without_free_fds_fails_with_emfile_then_works_once_one_is_free_natively() {
    assert_eq!(
        scratch_case("emfile", ""),
        format!("emfile: full=EMFILE one-free={FAKE} all-free={FAKE}\n")
    );
}

#[test]
fn a_program_whose_own_filter_refuses_memfd_create_gets_enomem_never_the_host_value_natively() {
    assert_eq!(
        scratch_case("seccomp", ""),
        "seccomp: first=ENOMEM again=ENOMEM\n"
    );
}

#[test]
fn an_unmapped_moved_or_mapped_over_scratch_area_is_mapped_again_natively() {
    for case in ["munmap", "mremap", "mapfixed"] {
        assert_eq!(
            scratch_case(case, ""),
            format!("{case}: mappings=1 before={FAKE} after={FAKE}\n")
        );
    }
}

#[test]
fn posix_spawn_children_share_their_parents_scratch_area_natively() {
    assert_eq!(
        scratch_case("spawn", "20"),
        format!("spawn: children=20 mappings=1 value={FAKE} mappings-after-read=1\n")
    );
}

#[test]
fn scratch_failures_and_tampering_in_gvisor() {
    if !have_gvisor() {
        return;
    }
    let f = c_fixture("scratch");
    let k = k3shim();
    let run = |case: &str| {
        format!(
            "{} run --state /tmp/sc -- {} {case} {ENTRY}",
            k.display(),
            f.display()
        )
    };
    let o = gvisor(&format!(
        "{k} fakefs init --state /tmp/sc >/dev/null && {k} fakefs set --state /tmp/sc kernel/panic {FAKE} >/dev/null && {} && {} && {} && {} && {} && {} 20",
        run("emfile"),
        run("seccomp"),
        run("munmap"),
        run("mremap"),
        run("mapfixed"),
        run("spawn"),
        k = k.display(),
    ));
    assert_ok(&o, "scratch cases in gVisor");
    // gVisor does not run a program's own filter again on the syscall the
    // tracer changed at a seccomp stop (Linux >= 4.8 does): there memfd_create
    // is allowed and the value is read.
    let out = stdout(&o).replace(
        &format!("seccomp: first={FAKE} again={FAKE}"),
        "seccomp: first=ENOMEM again=ENOMEM",
    );
    assert_eq!(
        out,
        format!(
            "emfile: full=EMFILE one-free={FAKE} all-free={FAKE}\nseccomp: first=ENOMEM again=ENOMEM\nmunmap: mappings=1 before={FAKE} after={FAKE}\nmremap: mappings=1 before={FAKE} after={FAKE}\nmapfixed: mappings=1 before={FAKE} after={FAKE}\nspawn: children=20 mappings=1 value={FAKE} mappings-after-read=1\n"
        ),
        "{}",
        stderr(&o)
    );
}

const SIGNALS: usize = 3000;

fn sigq_ok() -> String {
    format!("sigq: sent={SIGNALS} received={SIGNALS} si_code_queue={SIGNALS} si_pid_sender={SIGNALS} values_distinct=1\n")
}

#[test]
fn queued_signals_arriving_during_injected_syscalls_keep_their_siginfo_natively() {
    let before = host_sysctls();
    let st = scratch("sigq").join("s");
    let cmd = format!("{} {ENTRY} {SIGNALS}", c_fixture("sigq").display());
    let plain = native(&cmd);
    assert_eq!(stdout(&plain), sigq_ok(), "natively: {}", stderr(&plain));
    let o = native(&format!(
        "{} run --mode shadow --state {} -- {cmd}",
        k3shim().display(),
        st.display()
    ));
    assert_ok(&o, "sigq under k3shim");
    eprintln!("{}", stderr(&o).trim());
    assert_eq!(stdout(&o), sigq_ok());
    assert_eq!(host_sysctls(), before);
}

/// gVisor itself can leave signals sent to a thread in a ptrace stop pending
/// unnoticed (any tracer, the baseline too: about 30 of 1000 arrive before
/// the RT queue fills), so not all arrive there; every one that does must
/// carry its sender's siginfo.
#[test]
fn queued_signals_arriving_during_injected_syscalls_keep_their_siginfo_in_gvisor() {
    if !have_gvisor() {
        return;
    }
    let o = gvisor(&format!(
        "{} run --state /tmp/sq -- {} {ENTRY} {SIGNALS}",
        k3shim().display(),
        c_fixture("sigq").display()
    ));
    assert_ok(&o, "sigq under k3shim in gVisor");
    eprintln!("{}{}", stdout(&o), stderr(&o).trim());
    let out = stdout(&o);
    let field = |k: &str| -> usize {
        out.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{k} in {out}"))
    };
    let got = field("received");
    assert!(got >= 10, "{out}");
    assert_eq!(field("si_code_queue"), got, "{out}");
    assert_eq!(field("si_pid_sender"), got, "{out}");
    assert_eq!(field("values_distinct"), 1, "{out}");
}
