//! The readiness gate, holds and hooks, end to end through `k3shim run` inside
//! gVisor (and natively for what needs no sandbox). (Issue 4.)

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

/// Every line parses and t_ms never decreases; returns the events.
fn check_timeline(text: &str) -> Vec<Value> {
    let mut last = 0;
    let mut ev = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let v: Value = serde_json::from_str(l)
            .unwrap_or_else(|e| panic!("timeline line {}: {e}: {l:?}", i + 1));
        let t = v["t_ms"].as_u64().expect("t_ms");
        assert!(t >= last, "t_ms went back at line {}: {l}", i + 1);
        last = t;
        ev.push(v);
    }
    assert_eq!(ev.first().map(|v| v["kind"].clone()), Some("launch".into()));
    assert_eq!(ev.last().map(|v| v["kind"].clone()), Some("exit".into()));
    ev
}

fn first<'a>(ev: &'a [Value], kind: &str) -> Option<&'a Value> {
    ev.iter().find(|v| v["kind"] == kind)
}

fn split(out: &str, marker: &str) -> (String, String) {
    let (a, b) = out.split_once(marker).unwrap_or((out, ""));
    (a.to_string(), b.to_string())
}

#[test]
fn a_held_connect_waits_for_the_gate_while_an_unheld_one_does_not_and_hooks_run_after() {
    if !have_gvisor() {
        return;
    }
    let s = scripts();
    let script = format!(
        "{py} {s}/gate_server.py 18080 --not-ready 4 --accept 18081 --accept 18082 > /tmp/srv.out & \
         while ! grep -q ready /tmp/srv.out 2>/dev/null; do sleep 0.05; done; \
         {k} run --state /tmp/gs --timeline /tmp/t.jsonl --gate-url http://127.0.0.1:18080/readyz --gate-interval-ms 100 \
           --hold connect:127.0.0.1:18082 --hook 'echo hook-one-ran' --hook 'echo hook-two-ran' \
           -- sh -c '{py} {s}/connect_client.py 18081 18082 && sleep 1'; echo rc=$?; echo ==TL==; cat /tmp/t.jsonl",
        k = k3shim().display(),
        py = python()
    );
    let o = gvisor(&script);
    let (out, tl) = split(&stdout(&o), "==TL==\n");
    assert!(out.contains("rc=0"), "{out}\n{}", stderr(&o));
    let times: Vec<f64> = out
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(p, _)| p.starts_with("1808"))
        .map(|(_, t)| t.parse().unwrap())
        .collect();
    assert_eq!(times.len(), 2, "{out}");
    assert!(
        times[0] < 0.5,
        "the unheld connect completes at once: {out}"
    );
    assert!(
        times[1] - times[0] >= 0.5,
        "the held connect waits for readiness: {out}"
    );
    let ev = check_timeline(&tl);
    let hold = first(&ev, "hold").expect("hold event");
    assert_eq!(hold["what"], "connect:127.0.0.1:18082");
    let release = first(&ev, "release").expect("release event");
    assert!(release["waited_ms"].as_u64().unwrap() >= 500, "{release}");
    let open = first(&ev, "gate_open").expect("gate_open").clone();
    let probes: Vec<&Value> = ev.iter().filter(|v| v["kind"] == "probe").collect();
    assert!(
        probes.len() >= 2 && probes[0]["status"] == 503,
        "probes recorded with their status: {probes:?}"
    );
    let hook1 = first(&ev, "hook_start").expect("hook_start");
    assert!(
        hook1["t_ms"].as_u64() >= open["t_ms"].as_u64(),
        "hooks start only after the gate opens"
    );
    assert!(release["t_ms"].as_u64() >= open["t_ms"].as_u64());
    let starts: Vec<&Value> = ev.iter().filter(|v| v["kind"] == "hook_start").collect();
    assert_eq!(starts.len(), 2);
    assert_eq!(starts[0]["index"], 1, "hooks run in order");
    let ends: Vec<&Value> = ev.iter().filter(|v| v["kind"] == "hook_end").collect();
    assert_eq!(ends.len(), 2, "{tl}");
    assert!(
        ends.iter().all(|e| e["ok"] == true && e["status"] == 0),
        "hooks end well even though the tracer waits for any child: {ends:?}"
    );
    assert!(stderr(&o).contains("hook-one-ran") || out.contains("hook-one-ran"));
}

#[test]
fn a_never_ready_server_times_the_gate_out_releases_holds_and_skips_hooks_when_asked() {
    if !have_gvisor() {
        return;
    }
    let s = scripts();
    let script = format!(
        "{py} {s}/gate_server.py 18090 --never --accept 18091 > /tmp/srv.out & \
         while ! grep -q ready /tmp/srv.out 2>/dev/null; do sleep 0.05; done; \
         {k} run --state /tmp/gs2 --timeline /tmp/t.jsonl --gate-url http://127.0.0.1:18090/readyz --gate-timeout 1.5 \
           --gate-timeout-action skip-hooks --hold connect:127.0.0.1:18091 --hook 'echo SHOULD-NOT-RUN' \
           -- {py} {s}/connect_client.py 18091; echo rc=$?; echo ==TL==; cat /tmp/t.jsonl",
        k = k3shim().display(),
        py = python()
    );
    let o = gvisor(&script);
    let (out, tl) = split(&stdout(&o), "==TL==\n");
    assert!(out.contains("rc=0"), "{out}\n{}", stderr(&o));
    assert!(!out.contains("SHOULD-NOT-RUN") && !stderr(&o).contains("SHOULD-NOT-RUN"));
    let ev = check_timeline(&tl);
    assert!(first(&ev, "gate_timeout").is_some(), "{tl}");
    assert!(first(&ev, "gate_open").is_none());
    assert!(
        first(&ev, "release").is_some(),
        "held syscalls are released at the timeout"
    );
    assert!(first(&ev, "hooks_skipped").is_some(), "{tl}");
}

#[test]
fn an_unreachable_gate_url_keeps_probing_with_errors_in_the_timeline() {
    let st = scratch("unreach");
    let tl = st.join("t.jsonl");
    let o = std::process::Command::new(k3shim())
        .args(["run", "--state"])
        .arg(st.join("s"))
        .arg("--timeline")
        .arg(&tl)
        .args([
            "--gate-url",
            "http://127.0.0.1:1/readyz",
            "--gate-timeout",
            "1",
            "--gate-interval-ms",
            "100",
            "--",
            "sleep",
            "1.5",
        ])
        .output()
        .unwrap();
    assert_ok(&o, "run with an unreachable gate");
    let ev = check_timeline(&std::fs::read_to_string(&tl).unwrap());
    let errs: Vec<&Value> = ev
        .iter()
        .filter(|v| v["kind"] == "probe" && v["error"].is_string())
        .collect();
    assert!(errs.len() >= 2, "every failed attempt is recorded with why");
    assert!(
        errs[0]["error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("refused"),
        "{}",
        errs[0]
    );
    assert!(first(&ev, "gate_timeout").is_some());
}

#[test]
fn a_kubeconfig_with_client_certificates_over_https_opens_the_gate_in_gvisor() {
    if !have_gvisor() {
        return;
    }
    let s = scripts();
    let script = format!(
        "set -e; sh {s}/make_certs.sh /tmp/pki 18443; \
         {py} {s}/gate_server.py 18443 --not-ready 0.5 --tls /tmp/pki > /tmp/srv.out & \
         while ! grep -q ready /tmp/srv.out 2>/dev/null; do sleep 0.05; done; \
         {k} run --state /tmp/gs3 --timeline /tmp/t.jsonl --gate-kubeconfig /tmp/pki/k3s.yaml --gate-timeout 20 \
           --hook 'echo KUBECONFIG=$KUBECONFIG' -- sleep 2; echo ==TL==; cat /tmp/t.jsonl",
        k = k3shim().display(),
        py = python()
    );
    let o = gvisor(&script);
    let (out, tl) = split(&stdout(&o), "==TL==\n");
    let ev = check_timeline(&tl);
    let open = first(&ev, "gate_open")
        .unwrap_or_else(|| panic!("gate did not open: {tl}\n{}", stderr(&o)));
    assert_eq!(open["url"], "https://127.0.0.1:18443/readyz");
    assert!(
        stderr(&o).contains("KUBECONFIG=/tmp/pki/k3s.yaml")
            || out.contains("KUBECONFIG=/tmp/pki/k3s.yaml"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_gate_input_exits_2_before_launching_anything() {
    let st = scratch("badgate");
    let marker = st.join("launched");
    let cases: Vec<Vec<String>> = vec![
        vec!["--gate-url".into(), "htp://x".into()],
        vec![
            "--gate-kubeconfig".into(),
            st.join("bad.yaml").display().to_string(),
        ],
        vec![
            "--gate-url".into(),
            "http://127.0.0.1:1/".into(),
            "--hold".into(),
            "connect:nonsense".into(),
        ],
        vec!["--hold".into(), "connect:127.0.0.1:80".into()],
    ];
    std::fs::write(
        st.join("bad.yaml"),
        "apiVersion: v1\nclusters: [ {cluster: {server: 42}} ]\n",
    )
    .unwrap();
    for args in cases {
        let o = std::process::Command::new(k3shim())
            .args(["run", "--state"])
            .arg(st.join("s"))
            .args(&args)
            .arg("--")
            .args(["touch", marker.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert_eq!(
            stderr(&o).trim().lines().count(),
            1,
            "{args:?}: one line: {}",
            stderr(&o)
        );
        assert!(!marker.exists(), "{args:?}: nothing was launched");
    }
    let o = std::process::Command::new(k3shim())
        .args(["run", "--state"])
        .arg(st.join("s"))
        .args([
            "--gate-url",
            "http://127.0.0.1:1/",
            "--hold",
            "bogus",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert!(
        stderr(&o).contains("accepted forms"),
        "a bad hold rule shows the accepted forms: {}",
        stderr(&o)
    );
}

#[test]
fn a_hooks_output_is_matched_like_the_targets_and_still_reaches_stderr() {
    // `kubectl get nodes` run as a hook must be able to prove the node is listed.
    let st = scratch("hookmatch");
    let tl = st.join("t.jsonl");
    let o = std::process::Command::new(k3shim())
        .args(["run", "--state"])
        .arg(st.join("s"))
        .arg("--timeline")
        .arg(&tl)
        .args(["--log-match", "listed=^vm +Ready "])
        .args([
            "--hook",
            "echo 'NAME STATUS'; echo 'vm   Ready   <none>' >&2",
        ])
        .args(["--", "sh", "-c", "sleep 2"])
        .output()
        .unwrap();
    assert_ok(&o, "hook output run");
    assert!(
        stderr(&o).contains("NAME STATUS\n") && stderr(&o).contains("vm   Ready   <none>\n"),
        "hook output must still reach k3shim's stderr: {}",
        stderr(&o)
    );
    let ev = check_timeline(&std::fs::read_to_string(&tl).unwrap());
    let m: Vec<&Value> = ev
        .iter()
        .filter(|v| v["kind"] == "log_match" && v["name"] == "listed")
        .collect();
    assert_eq!(m.len(), 1, "one match of the hook's line: {ev:?}");
    assert_eq!(m[0]["stream"], "hook");
    assert_eq!(m[0]["line"], "vm   Ready   <none>");
}

#[test]
fn log_matches_become_milestones_and_output_passes_through_unchanged() {
    let st = scratch("logmatch");
    let tl = st.join("t.jsonl");
    let o = std::process::Command::new(k3shim())
        .args(["run", "--state"])
        .arg(st.join("s"))
        .arg("--timeline")
        .arg(&tl)
        .args([
            "--log-match",
            "apiserver=Running kube-apiserver",
            "--log-match",
            "ready=up and running",
        ])
        .args([
            "--",
            "sh",
            "-c",
            "echo 'Running kube-apiserver --x'; echo 'k3s is up and running' >&2; echo tail",
        ])
        .output()
        .unwrap();
    assert_ok(&o, "log match run");
    assert_eq!(stdout(&o), "Running kube-apiserver --x\ntail\n");
    assert_eq!(stderr(&o), "k3s is up and running\n");
    let ev = check_timeline(&std::fs::read_to_string(&tl).unwrap());
    let mut names: Vec<&str> = ev
        .iter()
        .filter(|v| v["kind"] == "log_match")
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    // stdout and stderr are read by two threads: their relative order is not defined.
    names.sort();
    assert_eq!(names, ["apiserver", "ready"]);
    let table = std::process::Command::new(k3shim())
        .arg("timeline")
        .arg(&tl)
        .output()
        .unwrap();
    assert_ok(&table, "timeline table");
    assert!(
        stdout(&table).contains("apiserver") && stdout(&table).contains("ready"),
        "{}",
        stdout(&table)
    );
}

#[test]
fn an_exec_hold_keeps_the_program_from_starting_until_the_gate_opens_in_gvisor() {
    if !have_gvisor() {
        return;
    }
    let s = scripts();
    let script = format!(
        "{py} {s}/gate_server.py 18095 --not-ready 3 > /tmp/srv.out & \
         while ! grep -q ready /tmp/srv.out 2>/dev/null; do sleep 0.05; done; \
         {k} run --state /tmp/gs4 --timeline /tmp/t.jsonl --gate-url http://127.0.0.1:18095/readyz --gate-interval-ms 100 \
           --hold exec:/usr/bin/true -- sh -c '/usr/bin/true; echo after-true'; echo rc=$?; echo ==TL==; cat /tmp/t.jsonl",
        k = k3shim().display(),
        py = python()
    );
    let o = gvisor(&script);
    let (out, tl) = split(&stdout(&o), "==TL==\n");
    assert!(
        out.contains("after-true") && out.contains("rc=0"),
        "{out}\n{}",
        stderr(&o)
    );
    let ev = check_timeline(&tl);
    let hold = first(&ev, "hold").expect("hold");
    assert_eq!(hold["what"], "exec:/usr/bin/true");
    let open = first(&ev, "gate_open").expect("gate_open");
    let release = first(&ev, "release").expect("release");
    assert!(release["t_ms"].as_u64() >= open["t_ms"].as_u64());
    let exec_true = ev
        .iter()
        .find(|v| v["kind"] == "exec" && v["path"] == "/usr/bin/true")
        .expect("exec of true");
    assert!(
        exec_true["t_ms"].as_u64() >= open["t_ms"].as_u64(),
        "the program starts only after the gate opens"
    );
}
