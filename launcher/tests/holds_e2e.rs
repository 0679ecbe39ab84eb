//! Holds end to end: what a hold costs the rest of the traced tree, a held
//! thread replaced by another thread's execve, and when held syscalls
//! continue (`--release`). Natively in shadow mode and inside gVisor.
//! (Issue 11 items 7 and 8, issue 13 "Found with real programs".)

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

fn events(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn split(out: &str, marker: &str) -> (String, String) {
    let (a, b) = out.split_once(marker).unwrap_or((out, ""));
    (a.to_string(), b.to_string())
}

/// A never-ready gate: nothing listens on the discard port, so every probe is refused.
const NEVER: &str = "--gate-url http://127.0.0.1:9/";

/// The median cost of a trapped stat in one process, first with nothing
/// held, then while another process of the same tree is held; the held one
/// is then killed. Prints "unheld held" in microseconds.
fn hold_cost_script(dir: &str, mode: &str) -> String {
    format!(
        "rm -f {dir}/t.jsonl; {k} run {mode} --state {dir}/s --timeline {dir}/t.jsonl {NEVER} --hold exec:/usr/bin/true -- \
         sh -c '{py} {s}/statloop.py 1000 /etc/passwd > {dir}/unheld; /usr/bin/true & \
                while ! grep -q \"\\\"kind\\\":\\\"hold\\\"\" {dir}/t.jsonl; do sleep 0.01; done; \
                {py} {s}/statloop.py 1000 /etc/passwd > {dir}/held; kill -9 $!'; \
         echo rc=$?; echo \"costs $(cat {dir}/unheld) $(cat {dir}/held)\"",
        k = k3shim().display(),
        py = python(),
        s = scripts(),
    )
}

fn check_hold_cost(o: &std::process::Output, env: &str) {
    let out = stdout(o);
    assert!(out.contains("rc=0"), "{env}: {out}\n{}", stderr(o));
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("costs "))
        .unwrap_or_else(|| panic!("{env}: {out}"));
    let v: Vec<f64> = line
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(v.len(), 2, "{env}: {line}");
    let (unheld, held) = (v[0], v[1]);
    // Polling every 5 ms while anything was held made each trapped syscall
    // wait 2.5 ms on average (x100 natively, x10 in gVisor).
    assert!(
        held <= 3.0 * unheld,
        "{env}: a trapped stat costs {held} us while another process is held, {unheld} us without"
    );
}

#[test]
fn a_hold_costs_the_rest_of_the_tree_nothing_natively() {
    let d = scratch("holdcost");
    let o = native(&hold_cost_script(&d.display().to_string(), "--mode shadow"));
    check_hold_cost(&o, "native");
}

#[test]
fn a_hold_costs_the_rest_of_the_tree_nothing_in_gvisor() {
    if !have_gvisor() {
        return;
    }
    let o = gvisor(&hold_cost_script("/tmp", ""));
    check_hold_cost(&o, "gvisor");
}

/// A thread held in execve is replaced by another thread's execve: the hold
/// ends with it (a release event saying the thread is gone), whichever of
/// leader and other thread was held.
fn exec_over_held_script(dir: &str, mode: &str) -> String {
    let mut s = String::new();
    for who in ["leader", "thread"] {
        s += &format!(
            "rm -f {dir}/t.jsonl; {k} run {mode} --state {dir}/s --timeline {dir}/t.jsonl {NEVER} --hold exec:/usr/bin/true -- \
             {py} {sc}/exec_over_held.py {who} /usr/bin/true; echo rc=$?; echo ==TL {who}; cat {dir}/t.jsonl; echo ==END; ",
            k = k3shim().display(),
            py = python(),
            sc = scripts(),
        );
    }
    s
}

fn check_exec_over_held(o: &std::process::Output, env: &str) {
    let out = stdout(o);
    assert!(
        out.contains("a thread exec'd over the held leader")
            && out.contains("the leader exec'd over a held thread"),
        "{env}: {out}\n{}",
        stderr(o)
    );
    for who in ["leader", "thread"] {
        let (_, rest) = split(&out, &format!("==TL {who}\n"));
        let (tl, _) = split(&rest, "==END");
        let ev = events(&tl);
        let hold = ev
            .iter()
            .find(|e| e["kind"] == "hold")
            .unwrap_or_else(|| panic!("{env} {who}: no hold: {tl}"));
        let release = ev
            .iter()
            .find(|e| e["kind"] == "release" && e["tid"] == hold["tid"])
            .unwrap_or_else(|| panic!("{env} {who}: the hold never ended: {tl}"));
        assert_eq!(release["gone"], true, "{env} {who}: {release}");
        assert_eq!(release["what"], "exec:/usr/bin/true");
        let exit = ev.iter().find(|e| e["kind"] == "exit");
        assert_eq!(
            exit.map(|e| e["code"].clone()),
            Some(Value::from(0)),
            "{env} {who}: {tl}"
        );
    }
}

#[test]
fn a_thread_that_execs_over_a_held_thread_ends_the_hold_natively() {
    let d = scratch("execheld");
    let o = native(&exec_over_held_script(
        &d.display().to_string(),
        "--mode shadow",
    ));
    check_exec_over_held(&o, "native");
}

#[test]
fn a_thread_that_execs_over_a_held_thread_ends_the_hold_in_gvisor() {
    if !have_gvisor() {
        return;
    }
    let o = gvisor(&exec_over_held_script("/tmp", ""));
    check_exec_over_held(&o, "gvisor");
}

/// A hook writes a file in two steps, a held `cat` (exec hold) prints it: with
/// `--release after-hooks` (the default) cat runs once the hook has ended and
/// sees the whole file; with `at-gate` it runs while the hook is still
/// writing. The gate opens at once (the test's own tiny HTTP server).
fn release_script(dir: &str, mode: &str, port: u16) -> String {
    let mut s = format!(
        "{py} {sc}/gate_server.py {port} --not-ready 0 > {dir}/srv.out & SRV=$!; \
         while ! grep -q ready {dir}/srv.out 2>/dev/null; do sleep 0.05; done; ",
        py = python(),
        sc = scripts(),
    );
    for (name, flag) in [("default", ""), ("at-gate", "--release at-gate")] {
        s += &format!(
            "rm -f {dir}/data; {k} run {mode} --state {dir}/s --gate-url http://127.0.0.1:{port}/readyz {flag} \
               --hold exec:/bin/cat --hook 'echo first > {dir}/data.tmp; sleep 1; echo second >> {dir}/data.tmp; mv {dir}/data.tmp {dir}/data' \
               -- sh -c '/bin/cat {dir}/data 2>/dev/null || echo missing'; echo ==END {name}; ",
            k = k3shim().display(),
        );
    }
    s + "kill $SRV"
}

fn check_release(o: &std::process::Output, env: &str) {
    let out = stdout(o);
    let (default, rest) = split(&out, "==END default\n");
    let (at_gate, _) = split(&rest, "==END at-gate");
    assert_eq!(
        default.trim(),
        "first\nsecond",
        "{env}: after-hooks (default): the held cat sees what the hook wrote\n{}",
        stderr(o)
    );
    assert_eq!(
        at_gate.trim(),
        "missing",
        "{env}: at-gate: the held cat runs while the hook still writes\n{}",
        stderr(o)
    );
}

#[test]
fn held_syscalls_continue_after_the_hooks_by_default_or_at_the_gate_natively() {
    let d = scratch("release");
    let o = native(&release_script(
        &d.display().to_string(),
        "--mode shadow",
        18310,
    ));
    check_release(&o, "native");
}

#[test]
fn held_syscalls_continue_after_the_hooks_by_default_or_at_the_gate_in_gvisor() {
    if !have_gvisor() {
        return;
    }
    let o = gvisor(&release_script("/tmp", "", 18311));
    check_release(&o, "gvisor");
}

/// The same with etcd, as a user found it: a hook writes a key, a held
/// `etcdctl get` in the traced tree reads it. With the default (after-hooks)
/// the client sees the hook's value; with at-gate it read the key while the
/// hook was still on its way (empty). The gate is etcd's own /health.
fn etcd_script(dir: &str, mode: &str, port: u16) -> String {
    let peer = port + 1;
    let ep = format!("--endpoints http://127.0.0.1:{port}");
    let mut s = String::new();
    for (name, flag) in [("default", ""), ("at-gate", "--release at-gate")] {
        s += &format!(
            "rm -rf {dir}/etcd-{name}; {k} run {mode} --state {dir}/s --gate-url http://127.0.0.1:{port}/health {flag} \
               --hold exec:/usr/bin/etcdctl --hook 'sleep 1; etcdctl {ep} put k3shim/key written-by-hook >/dev/null' -- \
               sh -c 'etcd --data-dir {dir}/etcd-{name} --listen-client-urls http://127.0.0.1:{port} --advertise-client-urls http://127.0.0.1:{port} \
                        --listen-peer-urls http://127.0.0.1:{peer} --initial-advertise-peer-urls http://127.0.0.1:{peer} \
                        --initial-cluster default=http://127.0.0.1:{peer} > {dir}/etcd-{name}.log 2>&1 & E=$!; \
                      echo \"got [$(etcdctl {ep} get k3shim/key --print-value-only)]\"; kill $E; wait $E'; echo ==END {name}; ",
            k = k3shim().display(),
        );
    }
    s
}

fn check_etcd(o: &std::process::Output, env: &str) {
    let out = stdout(o);
    let (default, rest) = split(&out, "==END default\n");
    let (at_gate, _) = split(&rest, "==END at-gate");
    assert_eq!(
        default.trim(),
        "got [written-by-hook]",
        "{env}: {out}\n{}",
        stderr(o)
    );
    assert_eq!(at_gate.trim(), "got []", "{env}: {out}\n{}", stderr(o));
}

fn have_etcd() -> bool {
    let ok = std::process::Command::new("etcd")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var("CI")
                .map(|v| v.is_empty() || v == "0" || v == "false")
                .unwrap_or(true),
            "etcd is missing: CI must install it (apt-get install -y etcd-server etcd-client)"
        );
        eprintln!("NOTICE: etcd not found; skipping the etcd hold test");
    }
    ok
}

#[test]
fn a_held_etcd_client_sees_what_a_hook_wrote_natively() {
    if !have_etcd() {
        return;
    }
    let d = scratch("etcdrel");
    let o = native(&etcd_script(
        &d.display().to_string(),
        "--mode shadow",
        18320,
    ));
    check_etcd(&o, "native");
}

#[test]
fn a_held_etcd_client_sees_what_a_hook_wrote_in_gvisor() {
    if !have_gvisor() || !have_etcd() {
        return;
    }
    let o = gvisor(&etcd_script("/tmp", "", 18322));
    check_etcd(&o, "gvisor");
}
