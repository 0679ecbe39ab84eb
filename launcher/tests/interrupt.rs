//! Ctrl-C, SIGTERM and SIGHUP for k3shim end the run as they would without
//! k3shim: held syscalls are released, the signal reaches CMD, k3shim ends by
//! the same signal (so a shell loop stops), and what is left of the traced
//! tree does not keep the terminal. Natively (shadow mode) through a real
//! pty; inside gVisor, whose pty has no signal characters, the signal goes to
//! the terminal's foreground process group as the terminal would send it.
//! (Issue 13, "Signals and hangs".)

mod sandbox;

use sandbox::*;
use serde_json::Value;

fn scripts() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("tests/scripts")
        .display()
        .to_string()
}

/// How interrupt.py saw CMD end, one JSON line per case, in order.
fn outcomes(o: &std::process::Output) -> Vec<Value> {
    let out = stdout(o);
    let v: Vec<Value> = out
        .split("==TL")
        .next()
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    for x in &v {
        assert!(
            x.get("error").is_none(),
            "{x}\n--- stdout\n{}\n--- stderr\n{}",
            stdout(o),
            stderr(o)
        );
    }
    v
}

/// Typed Ctrl-C natively; in gVisor, SIGINT to the foreground group.
fn ctrl_c(gvisor: bool) -> &'static str {
    if gvisor {
        "--via group --signal INT"
    } else {
        "--via pty --signal INT"
    }
}

#[track_caller]
fn died_by(x: &Value, sig: i64, what: &str) {
    assert_eq!(
        x["signaled"], true,
        "{what}: ends by a signal, not an exit status: {x}"
    );
    assert_eq!(x["signal"], sig, "{what}: {x}");
}

/// A hold in place and a gate that never opens: Ctrl-C, SIGTERM (kill) and
/// SIGHUP (hangup) each end the run at once, by that signal.
fn held_script(dir: &str, mode: &str, gv: bool) -> String {
    let mut s = String::new();
    for (name, how) in [
        ("int", ctrl_c(gv)),
        ("term", "--via kill --signal TERM"),
        ("hup", "--via group --signal HUP"),
    ] {
        s += &format!(
            "rm -f {dir}/{name}.jsonl; {py} {sc}/interrupt.py {how} --ready-file {dir}/{name}.jsonl --ready-text '\"kind\":\"hold\"' --limit 30 -- \
             {k} run {mode} --state {dir}/s --timeline {dir}/{name}.jsonl --gate-url http://127.0.0.1:9/ --hold exec:/usr/bin/true \
             -- sh -c '/usr/bin/true; echo after'; ",
            k = k3shim().display(),
            py = python(),
            sc = scripts(),
        );
    }
    s + &format!("echo ==TL; cat {dir}/int.jsonl")
}

fn check_held(o: &std::process::Output, env: &str) {
    let v = outcomes(o);
    assert_eq!(v.len(), 3, "{env}: {}", stdout(o));
    for (x, sig, name) in [
        (&v[0], 2, "Ctrl-C"),
        (&v[1], 15, "SIGTERM"),
        (&v[2], 1, "SIGHUP"),
    ] {
        died_by(
            x,
            sig,
            &format!("{env}: {name} with a hold and a closed gate"),
        );
        assert!(
            x["secs"].as_f64().unwrap() < 10.0,
            "{env}: {name} ends the run at once: {x}"
        );
        assert!(
            x["output"]
                .as_str()
                .unwrap()
                .contains("holds: releasing 1 held syscall (exec:/usr/bin/true)"),
            "{env}: {name}: {x}"
        );
    }
    let tl = stdout(o)
        .split_once("==TL\n")
        .map(|p| p.1.to_string())
        .unwrap_or_default();
    let ev: Vec<Value> = tl
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let rel = ev
        .iter()
        .find(|e| e["kind"] == "release")
        .unwrap_or_else(|| panic!("{env}: {tl}"));
    assert_eq!(rel["reason"], "k3shim got SIGINT", "{env}: {rel}");
    let exit = ev
        .iter()
        .find(|e| e["kind"] == "exit")
        .unwrap_or_else(|| panic!("{env}: {tl}"));
    assert_eq!(exit["code"], 130, "{env}: CMD's death is reported: {exit}");
    assert_eq!(exit["signal"], 2, "{env}: {exit}");
}

#[test]
fn ctrl_c_sigterm_and_sighup_end_a_run_held_at_a_closed_gate_natively() {
    let d = scratch("intheld");
    let o = native(&held_script(
        &d.display().to_string(),
        "--mode shadow",
        false,
    ));
    check_held(&o, "native");
}

#[test]
fn ctrl_c_sigterm_and_sighup_end_a_run_held_at_a_closed_gate_in_gvisor() {
    if !have_gvisor() {
        return;
    }
    let o = gvisor(&held_script("/tmp", "", true));
    check_held(&o, "gvisor");
}

/// `for ...; do k3shim run ...; done` stops at Ctrl-C, as the same loop
/// without k3shim does: bash ends a loop only when its child died of SIGINT.
fn loop_script(dir: &str, mode: &str, gv: bool) -> String {
    format!(
        "{py} {sc}/interrupt.py {how} --ready-text 'started 1' --limit 30 -- \
         bash -c 'for i in 1 2 3; do {k} run {mode} --state {dir}/s -- sh -c \"echo started $i; exec sleep 20\"; done; echo loop went on'",
        k = k3shim().display(),
        py = python(),
        sc = scripts(),
        how = ctrl_c(gv),
    )
}

fn check_loop(o: &std::process::Output, env: &str) {
    let v = outcomes(o);
    assert_eq!(v.len(), 1, "{env}: {}", stdout(o));
    let out = v[0]["output"].as_str().unwrap();
    assert!(
        out.contains("started 1") && !out.contains("started 2") && !out.contains("loop went on"),
        "{env}: the loop stopped at Ctrl-C: {}",
        v[0]
    );
    died_by(&v[0], 2, &format!("{env}: bash after Ctrl-C"));
}

#[test]
fn a_shell_loop_around_k3shim_stops_at_ctrl_c_natively() {
    let d = scratch("intloop");
    let o = native(&loop_script(
        &d.display().to_string(),
        "--mode shadow",
        false,
    ));
    check_loop(&o, "native");
}

#[test]
fn a_shell_loop_around_k3shim_stops_at_ctrl_c_in_gvisor() {
    if !have_gvisor() {
        return;
    }
    let o = gvisor(&loop_script("/tmp", "", true));
    check_loop(&o, "gvisor");
}

/// After Ctrl-C, a background process that ignores SIGINT and SIGTERM (and
/// would run 60 s more) does not keep k3shim in the foreground: it gets
/// SIGTERM, then SIGKILL after the 2 s grace. The same without anything left
/// over: no grace at all.
fn orphan_script(dir: &str, mode: &str, gv: bool) -> String {
    format!(
        "rm -f {dir}/o.jsonl; {py} {sc}/interrupt.py {how} --ready-text started --limit 40 -- \
         {k} run {mode} --state {dir}/s --timeline {dir}/o.jsonl -- \
         sh -c 'sh -c \"trap \\\"\\\" INT TERM; echo started; exec sleep 60\" & exec sleep 60'; \
         echo ==TL; cat {dir}/o.jsonl",
        k = k3shim().display(),
        py = python(),
        sc = scripts(),
        how = ctrl_c(gv),
    )
}

fn check_orphan(o: &std::process::Output, env: &str) {
    let v = outcomes(o);
    assert_eq!(v.len(), 1, "{env}: {}", stdout(o));
    died_by(&v[0], 2, &format!("{env}: k3shim after Ctrl-C"));
    let secs = v[0]["secs"].as_f64().unwrap();
    assert!(
        (1.5..15.0).contains(&secs),
        "{env}: SIGKILL after the grace, not after the orphan's 60 s: {}",
        v[0]
    );
    let out = v[0]["output"].as_str().unwrap();
    assert!(
        out.contains(
            "tree: the command has ended; 1 traced process left gets SIGTERM, SIGKILL in 2 s"
        ),
        "{env}: {out}"
    );
    let tl = stdout(o)
        .split_once("==TL\n")
        .map(|p| p.1.to_string())
        .unwrap_or_default();
    let ends: Vec<Value> = tl
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["kind"] == "end_tree")
        .collect();
    assert_eq!(ends.len(), 2, "{env}: SIGTERM, then SIGKILL: {tl}");
    assert_eq!(ends[0]["signal"], 15);
    assert_eq!(ends[1]["signal"], 9);
}

#[test]
fn after_ctrl_c_what_is_left_of_the_tree_is_ended_after_a_grace_natively() {
    let d = scratch("intorphan");
    let o = native(&orphan_script(
        &d.display().to_string(),
        "--mode shadow",
        false,
    ));
    check_orphan(&o, "native");
}

#[test]
fn after_ctrl_c_what_is_left_of_the_tree_is_ended_after_a_grace_in_gvisor() {
    if !have_gvisor() {
        return;
    }
    let o = gvisor(&orphan_script("/tmp", "", true));
    check_orphan(&o, "gvisor");
}

/// A signal k3shim did not get is reported as 128+N (k3shim itself exits),
/// and the rest of the tree is waited for, as before.
#[test]
fn a_command_killed_by_a_signal_k3shim_did_not_get_gives_128_plus_n() {
    let d = scratch("intown");
    let o = std::process::Command::new(k3shim())
        .args(["run", "--mode", "shadow", "--state"])
        .arg(d.join("s"))
        .args(["--", "sh", "-c", "kill -TERM $$"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(143), "{}", stderr(&o));
}

/// Ctrl-C reaches a program busy making trapped syscalls, every time. In
/// gVisor (runsc 20221219) a signal sent to a process while its thread sits
/// in a ptrace stop was lost (about every other run here): k3shim now
/// interrupts every tracee once when it gets the signal itself.
fn busy_script(dir: &str, mode: &str, gv: bool) -> String {
    let prog = "import os, signal; signal.signal(signal.SIGINT, signal.SIG_DFL); print(\"started\", flush=True)\nwhile True: os.stat(\"/\")";
    let mut s = format!("cat > {dir}/busy.py <<'EOF'\n{prog}\nEOF\n");
    for _ in 0..5 {
        s += &format!(
            "{py} {sc}/interrupt.py {how} --ready-text started --limit 20 -- {k} run {mode} --state {dir}/s -- {py} {dir}/busy.py; ",
            k = k3shim().display(),
            py = python(),
            sc = scripts(),
            how = ctrl_c(gv),
        );
    }
    s
}

fn check_busy(o: &std::process::Output, env: &str) {
    let v = outcomes(o);
    assert_eq!(v.len(), 5, "{env}: {}", stdout(o));
    for x in &v {
        died_by(x, 2, &format!("{env}: a busy program after Ctrl-C"));
    }
}

#[test]
fn ctrl_c_reaches_a_program_busy_in_trapped_syscalls_natively() {
    let d = scratch("intbusy");
    let o = native(&busy_script(
        &d.display().to_string(),
        "--mode shadow",
        false,
    ));
    check_busy(&o, "native");
}

#[test]
fn ctrl_c_reaches_a_program_busy_in_trapped_syscalls_in_gvisor() {
    if !have_gvisor() {
        return;
    }
    let o = gvisor(&busy_script("/tmp", "", true));
    check_busy(&o, "gvisor");
}
