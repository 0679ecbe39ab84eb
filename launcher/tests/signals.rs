//! The traced command starts with the signal state k3shim itself was started
//! with (issue 11, item 10): the same ignored, blocked and caught signals as
//! without k3shim, not the Rust runtime's ignored SIGPIPE nor the mask of the
//! signals k3shim forwards. Checked with /proc/self/status, natively and in
//! gVisor, under parents that ignore or block signals of their own.

mod sandbox;

use sandbox::*;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The signal lines of `grep`'s own /proc/self/status.
const GREP_STATUS: &str = "grep -e SigBlk -e SigIgn -e SigCgt /proc/self/status";

/// tests/fixtures/c/sigstate.c (the same lines from rt_sigaction and
/// rt_sigprocmask: gVisor's /proc/self/status has no Sig* lines), built once.
fn sigstate() -> String {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let ws = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let out = ws.join("target/fixtures/c-signals");
        std::fs::create_dir_all(&out).unwrap();
        let tmp = out.join(format!("sigstate.{}", std::process::id()));
        let o = Command::new("cc")
            .args(["-O2", "-Wall", "-o"])
            .arg(&tmp)
            .arg(ws.join("tests/fixtures/c/sigstate.c"))
            .output()
            .expect("run cc");
        assert_ok(&o, "cc tests/fixtures/c/sigstate.c");
        let bin = out.join("sigstate");
        std::fs::rename(&tmp, &bin).unwrap();
        bin
    })
    .display()
    .to_string()
}

/// Each parent runs WRAP with CMD replaced by the command (with or without
/// k3shim): a plain one, a shell's background job (SIGINT and SIGQUIT
/// ignored), nohup (SIGHUP ignored), and one that blocks SIGUSR1 and ignores
/// SIGTERM before exec.
fn parents() -> Vec<(&'static str, String)> {
    vec![
        ("plain", "CMD".into()),
        ("background job", "sh -c 'CMD & wait'".into()),
        ("nohup", "nohup CMD".into()),
        (
            "blocked SIGUSR1, ignored SIGTERM",
            format!(
                "{} -c 'import os, signal, sys; signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1]); \
                 signal.signal(signal.SIGTERM, signal.SIG_IGN); os.execvp(\"sh\", [\"sh\", \"-c\", sys.argv[1]])' \"CMD\"",
                python()
            ),
        ),
    ]
}

/// One script printing, for each parent and each way of showing the state
/// (`shows`), the command's signal lines without and with k3shim, separated so
/// that they can be compared.
fn script(state: &str, mode: &str, shows: &[String]) -> String {
    let mut s = String::new();
    for (name, wrap) in parents() {
        for (i, show) in shows.iter().enumerate() {
            let plain = wrap.replace("CMD", show);
            let shim = wrap.replace(
                "CMD",
                &format!(
                    "{} run {mode} --state {state} -- {show}",
                    k3shim().display()
                ),
            );
            s.push_str(&format!(
                "echo '== {name} ({i})'; {plain}; echo '-- k3shim'; {shim}; "
            ));
        }
    }
    s
}

#[track_caller]
fn assert_same_signal_state(out: &str) {
    assert!(out.contains("SigIgn"), "{out}");
    for block in out.split("== ").skip(1) {
        let (name, rest) = block.split_once('\n').unwrap();
        let (plain, shim) = rest
            .split_once("-- k3shim\n")
            .unwrap_or_else(|| panic!("{name}: {out}"));
        assert_eq!(
            shim, plain,
            "{name}: the command's signal state under k3shim (left) differs from without it (right)"
        );
    }
}

#[test]
fn the_command_starts_with_the_signal_state_k3shim_was_started_with_natively() {
    let st = scratch("signals");
    let o = native(&script(
        &st.join("s").display().to_string(),
        "--mode shadow",
        &[GREP_STATUS.to_string(), sigstate()],
    ));
    assert_ok(&o, "signal states");
    assert_same_signal_state(&stdout(&o));
    // The parents did change something (the comparison is not between defaults only).
    let out = stdout(&o);
    let mut states: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("SigIgn") || l.starts_with("SigBlk"))
        .collect::<Vec<_>>();
    states.sort();
    states.dedup();
    assert!(states.len() >= 4, "{out}");
}

#[test]
fn the_command_starts_with_the_signal_state_k3shim_was_started_with_in_gvisor() {
    if !have_gvisor() {
        return;
    }
    let o = gvisor(&script("/tmp/k3shim-signals", "", &[sigstate()]));
    assert_ok(&o, "signal states in gVisor");
    assert_same_signal_state(&stdout(&o));
}

/// `yes | head -1`: yes dies of SIGPIPE silently (status 141), as without
/// k3shim; with SIGPIPE ignored it printed "yes: standard output: Broken pipe"
/// and exited 1.
#[test]
fn a_writer_to_a_closed_pipe_dies_of_sigpipe_as_without_the_shim() {
    let st = scratch("sigpipe");
    let cmd = r#"sh -c '(yes; echo "yes exited $?" >&2) | head -1'"#;
    let plain = native(cmd);
    let shim = native(&format!(
        "{} run --mode shadow --state {} -- {cmd}",
        k3shim().display(),
        st.join("s").display()
    ));
    assert_eq!(stdout(&plain), "y\n");
    assert_eq!(stderr(&plain), "yes exited 141\n");
    assert_eq!(stdout(&shim), stdout(&plain));
    assert_eq!(
        stderr(&shim),
        stderr(&plain),
        "the command inherited an ignored SIGPIPE"
    );
}
