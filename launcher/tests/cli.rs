//! The command line a newcomer meets: the command forgotten after `--`, an
//! example in every `--help`, and error lines that say each thing once.

mod sandbox;

use sandbox::*;
use std::process::Command;

fn k3shim_cmd(args: &[&str]) -> std::process::Output {
    Command::new(k3shim()).args(args).output().unwrap()
}

#[test]
fn run_and_trace_without_dashdash_print_the_line_to_type() {
    let o = k3shim_cmd(&["run", "--mode", "shadow", "sleep", "1"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        "k3shim: run: put the command after `--` (so that its options are not taken for k3shim's): k3shim run --mode shadow -- sleep 1\n"
    );
    let o = k3shim_cmd(&["trace"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).starts_with(
            "k3shim: trace: no command given: k3shim trace [OPTIONS] -- CMD [ARGS...]"
        ) && stderr(&o).lines().count() == 1,
        "{}",
        stderr(&o)
    );
}

#[test]
fn every_help_ends_with_examples() {
    for cmd in [
        &["--help"][..],
        &["run", "--help"],
        &["trace", "--help"],
        &["fakefs", "--help"],
        &["fakefs", "set", "--help"],
        &["experiment", "run", "--help"],
        &["timeline", "--help"],
        &["doctor", "--help"],
        &["bench", "--help"],
    ] {
        let o = k3shim_cmd(cmd);
        assert_ok(&o, &format!("{cmd:?}"));
        assert!(stdout(&o).contains("Example"), "{cmd:?}:\n{}", stdout(&o));
    }
}

#[test]
fn an_error_names_what_failed_once_on_one_line() {
    let d = scratch("cli-errors");
    let o = Command::new(k3shim())
        .args(["run", "--mode", "shadow", "--state"])
        .arg(d.join("state"))
        .args(["--timeline", "/nonexistent-dir/t.jsonl", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        "k3shim: --timeline /nonexistent-dir/t.jsonl: cannot create: No such file or directory (os error 2)\n"
    );
    // An error type that embeds its cause said it twice: "(os error 13): Permission denied (os error 13)".
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let locked = d.join("locked");
        std::fs::create_dir(&locked).unwrap();
        let o = native(&format!(
            "chmod 755 {d}; chmod 555 {l}; setpriv --reuid=65534 --regid=65534 --clear-groups {k} fakefs init --state {l}/new",
            d = d.display(),
            l = locked.display(),
            k = k3shim().display()
        ));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert_eq!(err.matches("(os error 13)").count(), 1, "{err}");
        assert!(
            err.starts_with("k3shim: ") && err.contains("/locked/new"),
            "{err}"
        );
    }
}
