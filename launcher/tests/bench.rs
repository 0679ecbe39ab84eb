//! `k3shim bench --quick` runs end to end and leaves Markdown and JSON in the
//! results directory (benchmarks are not tests: this only proves the bench
//! runs; its numbers are not checked). Inside gVisor when runsc is usable
//! (root), else natively only.

use serde_json::Value;
use std::process::{Command, Stdio};

fn runsc_usable() -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    root && Command::new("runsc")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn quick_bench_runs_and_writes_results() {
    let out = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_k3shim"));
    cmd.args(["bench", "--quick", "--out"]).arg(out.path());
    let gvisor = runsc_usable();
    if !gvisor {
        eprintln!("runsc unusable here (needs root): native half only");
        cmd.arg("--native-only");
    }
    let o = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("spawn k3shim bench");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "k3shim bench --quick failed: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        o.status
    );
    assert!(
        stdout.contains("| workload |"),
        "no table printed:\n{stdout}"
    );
    assert!(
        stdout.contains("## Targets"),
        "no targets printed:\n{stdout}"
    );

    let files: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let md = files
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "md"))
        .expect("a .md result");
    let js = files
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("a .json result");
    assert!(
        md.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("bench-2"),
        "result named with the date: {md:?}"
    );
    let doc: Value = serde_json::from_slice(&std::fs::read(js).unwrap()).unwrap();
    for k in ["date", "kernel", "gvisor", "cpu"] {
        assert!(doc["meta"].get(k).is_some(), "meta.{k} missing");
    }
    let envs: Vec<&str> = if gvisor {
        vec!["native", "gvisor"]
    } else {
        vec!["native"]
    };
    for env in envs {
        let s = &doc["summary"][env];
        // the Python workloads always run; each has a native median
        for w in ["sqlite", "statwalk", "procsys-real", "procsys-fake"] {
            assert!(
                s[w]["native"]["median"].as_f64().is_some(),
                "{env}/{w}/native has no median: {}",
                s[w]
            );
            assert!(
                s[w]["k3shim"]["median"].as_f64().is_some(),
                "{env}/{w}/k3shim has no median: {}",
                s[w]
            );
        }
        assert!(
            doc["floor"][env]["round_trip_regs_ns"].as_f64().is_some(),
            "{env}: no floor"
        );
    }
    assert!(doc["targets"].as_array().is_some_and(|t| !t.is_empty()));
}
