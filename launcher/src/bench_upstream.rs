//! `k3shim bench --upstream`: what k3shim costs on the real Kubernetes parts
//! (tests/fixtures/k8s) inside gVisor.
//!
//! 1. Control plane ready: bench/upstream/control-plane.toml, run by the
//!    experiment runner (bare, k3shim, k3shim --filter none, interleaved, N
//!    runs each); the time is started -> ready on the target's own log lines
//!    (`Starting k3s`, `k3s is up and running`), so every step is measured on
//!    the same clock. Target: k3shim / bare <= 1.10 (medians).
//! 2. Steady state: bench/upstream/steady.py inside gVisor, the full server
//!    under `k3shim run` (tracer CPU and RSS over a 60 s window once
//!    kube-proxy is past its sysctls) and under `k3shim trace` (stopped
//!    syscalls per second over the same kind of window; a separate run, so
//!    writing the trace does not count in the CPU figure).

use crate::cli::BenchArgs;
use crate::experiment::{runner, upstream};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const CONTROL_PLANE: &str = include_str!("../../bench/upstream/control-plane.toml");
const STEADY: &str = include_str!("../../bench/upstream/steady.py");
/// Target of issue 12: the control plane under k3shim within 10% of bare.
const READY_RATIO_TARGET: f64 = 1.10;

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// started -> ready of every run of every step in a run directory.
fn ready_times(run_dir: &Path, steps: &[&str]) -> Result<Vec<(String, Vec<f64>, usize)>> {
    let mut out = Vec::new();
    for s in steps {
        let mut times = Vec::new();
        let mut failed = 0;
        let mut k = 1;
        while let Ok(t) =
            std::fs::read_to_string(run_dir.join(s).join(k.to_string()).join("outcome.json"))
        {
            let o: Value = serde_json::from_str(&t)?;
            match (
                o["milestones"]["started"].as_f64(),
                o["milestones"]["ready"].as_f64(),
            ) {
                (Some(a), Some(b)) => times.push(b - a),
                _ => failed += 1,
            }
            k += 1;
        }
        out.push((s.to_string(), times, failed));
    }
    Ok(out)
}

fn steady(exe: &Path, server: &Path, work: &Path, mode: &str, window: f64) -> Result<Value> {
    let cfg = json!({"k3shim": exe, "server": server, "work": work, "mode": mode, "window": window, "startup_limit": 240});
    let cfg_path = work.join(format!("steady-{mode}.json"));
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg)?)?;
    let script = work.join("steady.py");
    std::fs::write(&script, STEADY)?;
    eprintln!("k3shim bench --upstream: steady state under `k3shim {mode}` ({window:.0} s window)");
    let o = Command::new("timeout")
        .args(["-k", "10", &format!("{}", 330.0 + window)])
        .args([
            "runsc",
            "--platform=ptrace",
            "--network=none",
            "--net-raw",
            "do",
            "-force-overlay=false",
            "/usr/bin/python3",
        ])
        .arg(&script)
        .arg(&cfg_path)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run timeout runsc ... python3 steady.py")?;
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text.lines().rev().find(|l| l.starts_with('{'));
    match line.map(serde_json::from_str::<Value>) {
        Some(Ok(v)) => Ok(v),
        _ => Ok(
            json!({"mode": mode, "ok": false, "error": format!("steady.py printed no result (exit {:?}): {}", o.status.code(), text.trim())}),
        ),
    }
}

pub fn run(a: &BenchArgs) -> Result<i32> {
    if Command::new("runsc").arg("--version").output().is_err() {
        bail!("k3shim bench --upstream runs inside gVisor: install runsc (apt-get install runsc)");
    }
    let exe = std::env::current_exe().context("cannot find the k3shim binary")?;
    let server = upstream::build()?;
    let components = upstream::components(&server);
    let runs = if a.quick { 1 } else { a.reps.clamp(1, 3) };
    let window = if a.quick { 10.0 } else { 60.0 };
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let out = std::fs::canonicalize(&a.out)?;
    // Run directories and data directories (sqlite, certificates) stay out of
    // the results directory, which is committed.
    let work = std::env::temp_dir().join(format!("k3shim-bench-upstream-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;

    // 1. Control plane ready, through the experiment runner (run directories kept).
    let toml = work.join("upstream-control-plane.toml");
    std::fs::write(&toml, CONTROL_PLANE)?;
    eprintln!("k3shim bench --upstream: control plane ready, {runs} run(s) of bare, k3shim, k3shim --filter none");
    let before: Vec<PathBuf> = dirs(&work);
    runner::run(&runner::Options {
        name: toml.display().to_string(),
        // The built k3s-like: the runner takes it as the upstream variant.
        k3s: Some(server.clone()),
        runs,
        out: Some(work.clone()),
        dir: None,
        quick: 1.0,
    })?;
    let run_dir = dirs(&work)
        .into_iter()
        .find(|d| !before.contains(d))
        .context("the control-plane runs left no run directory")?;
    let steps = ["bare", "k3shim", "k3shim-none"];
    let times = ready_times(&run_dir, &steps)?;
    let med = |s: &str| {
        times
            .iter()
            .find(|t| t.0 == s)
            .and_then(|t| median(t.1.clone()))
    };
    let ratio = |s: &str| Some(med(s)? / med("bare")?);

    // 2. Steady state with the node registered.
    let cpu = steady(&exe, &server, &work, "run", window)?;
    let stops = steady(&exe, &server, &work, "trace", window)?;

    let k3shim_ratio = ratio("k3shim");
    let doc = json!({
        "date": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        "components": components,
        "runs": runs,
        "control_plane_run_dir": run_dir,
        "ready_s": times.iter().map(|(s, v, f)| json!({"step": s, "started_to_ready_s": v, "failed": f, "median": median(v.clone())})).collect::<Vec<_>>(),
        "ratio_k3shim_to_bare": k3shim_ratio,
        "ratio_none_to_bare": ratio("k3shim-none"),
        "target_ratio": READY_RATIO_TARGET,
        "target_met": k3shim_ratio.map(|r| r <= READY_RATIO_TARGET),
        "steady_run": cpu,
        "steady_trace": stops,
    });
    let md = markdown(&doc);
    println!("{md}");
    let stamp: String = doc["date"]
        .as_str()
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_digit())
        .take(14)
        .collect();
    let base = out.join(format!(
        "bench-upstream-{stamp}{}",
        if a.quick { "-quick" } else { "" }
    ));
    std::fs::write(base.with_extension("md"), &md)?;
    std::fs::write(
        base.with_extension("json"),
        serde_json::to_vec_pretty(&doc)?,
    )?;
    eprintln!(
        "k3shim bench --upstream: wrote {}.md and .json (work directory {})",
        base.display(),
        work.display()
    );
    Ok(0)
}

fn dirs(d: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(d)
        .map(|r| {
            r.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

fn markdown(d: &Value) -> String {
    let f = |v: &Value| {
        v.as_f64()
            .map(|x| format!("{x:.2}"))
            .unwrap_or_else(|| "-".into())
    };
    let mut md =
        String::from("# k3shim bench --upstream: the real Kubernetes parts inside gVisor\n\n");
    for c in d["components"].as_array().into_iter().flatten() {
        md += &format!("- {}\n", c.as_str().unwrap_or(""));
    }
    md += &format!(
        "\n## Control plane ready (kine + kube-apiserver, `--disable-agent`), started -> ready, seconds\n\n{} run(s) each, interleaved; run directory `{}`.\n\n| step | median | runs | failed |\n| :-- | --: | :-- | --: |\n",
        d["runs"],
        d["control_plane_run_dir"].as_str().unwrap_or("")
    );
    for r in d["ready_s"].as_array().into_iter().flatten() {
        let runs: Vec<String> = r["started_to_ready_s"]
            .as_array()
            .into_iter()
            .flatten()
            .map(&f)
            .collect();
        md += &format!(
            "| {} | {} | {} | {} |\n",
            r["step"].as_str().unwrap_or(""),
            f(&r["median"]),
            runs.join(", "),
            r["failed"]
        );
    }
    md += &format!(
        "\nk3shim / bare: **{}** (target <= {}: {}); --filter none / bare: {}\n",
        f(&d["ratio_k3shim_to_bare"]),
        d["target_ratio"],
        match d["target_met"].as_bool() {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "not measured",
        },
        f(&d["ratio_none_to_bare"])
    );
    let (r, t) = (&d["steady_run"], &d["steady_trace"]);
    md += "\n## Steady state, full server (node registered, kube-proxy past its sysctls)\n\n| measure | value |\n| :-- | --: |\n";
    md += &format!("| window (s) | {} |\n", f(&r["measured_s"]));
    md += &format!(
        "| tracer CPU (s in the window) | {} |\n",
        f(&r["tracer_cpu_s"])
    );
    md += &format!(
        "| tracer CPU (% of one core) | {} |\n",
        f(&r["tracer_cpu_pct"])
    );
    md += &format!(
        "| tracer RSS at the end (MiB) | {} |\n",
        r["tracer_rss_kib_end"]
            .as_f64()
            .map(|k| format!("{:.1}", k / 1024.0))
            .unwrap_or("-".into())
    );
    md += &format!(
        "| tracer RSS, max sampled each second (MiB) | {} |\n",
        r["tracer_rss_kib_max_sampled"]
            .as_f64()
            .map(|k| format!("{:.1}", k / 1024.0))
            .unwrap_or("-".into())
    );
    md += &format!(
        "| syscalls stopped per second (`k3shim trace`, separate run) | {} |\n",
        f(&t["stopped_per_s"])
    );
    for (n, v) in [("run", r), ("trace", t)] {
        if v["ok"].as_bool() != Some(true) {
            md += &format!(
                "\n`k3shim {n}` window not measured: {}\n",
                v["error"].as_str().unwrap_or("see the JSON")
            );
        }
    }
    md
}
