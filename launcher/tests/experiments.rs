//! `k3shim experiment`: every experiment in experiments/ runs inside gVisor
//! with short watch times (--quick) on the Go stand-in, and its report says
//! the outcome matched the expectation. Also: list, report, bad input.
//! The experiments run one after another (timing depends on a quiet machine).

mod sandbox;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The gVisor tests run one at a time: the timing experiment needs a quiet machine.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn experiment(args: &[&str]) -> Output {
    Command::new(sandbox::k3shim())
        .arg("experiment")
        .args(args)
        .current_dir(workspace())
        .env("K3SHIM_NO_PROGRESS", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run k3shim experiment")
}

fn run_dir(o: &Output) -> PathBuf {
    let err = sandbox::stderr(o);
    let line = err
        .lines()
        .find_map(|l| l.strip_prefix("run directory: "))
        .unwrap_or_else(|| panic!("no run directory in:\n{err}"));
    PathBuf::from(line.trim())
}

/// Runs one experiment in gVisor and checks its run directory and report.
fn check(name: &str, out: &Path, extra: &[&str]) -> PathBuf {
    let standin = sandbox::fixtures().join("standin");
    let mut args = vec![
        "run",
        name,
        "--k3s",
        standin.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quick",
        "0.25",
    ];
    args.extend_from_slice(extra);
    let o = experiment(&args);
    let dir = run_dir(&o);
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap_or_default();
    assert!(
        o.status.success(),
        "experiment {name}: exit {:?}\n--- report\n{report}\n--- stderr\n{}",
        o.status.code(),
        sandbox::stderr(&o)
    );
    assert!(
        report.contains("**Overall: every run as expected**"),
        "{name}: {report}"
    );
    for f in [
        "experiment.toml",
        "env.json",
        "report.md",
        "timeline.jsonl",
        "target.log",
        "bin/kube",
    ] {
        assert!(
            dir.join(f).exists(),
            "{name}: {f} missing in {}",
            dir.display()
        );
    }
    let env: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("env.json")).unwrap()).unwrap();
    assert!(
        env["runsc_version"]
            .as_str()
            .unwrap_or("")
            .contains("runsc"),
        "{name}: env.json: {env}"
    );
    assert!(env["uname"]["release"].is_string() && env["k3shim_version"].is_string());
    assert!(
        report.contains("| **Avg** |") && report.contains("| Period 1 |"),
        "{name}: no period table: {report}"
    );
    dir
}

#[test]
fn experiments_run_in_gvisor_as_expected() {
    if !sandbox::have_gvisor() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = sandbox::scratch("experiments");
    let start = std::time::Instant::now();
    for name in [
        "control-plane",
        "fakefs",
        "timing",
        "wait-and-monitor",
        "gated",
    ] {
        let t = std::time::Instant::now();
        let dir = check(name, &out, &[]);
        eprintln!(
            "experiment {name}: as expected in {:.1} s ({})",
            t.elapsed().as_secs_f64(),
            dir.display()
        );
        if name == "control-plane" {
            // Both steps' clocks start when the runner starts runsc on the
            // host; k3shim, started later inside the sandbox, says when.
            let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
            assert!(
                report.contains(": steps compared\n") && report.contains("Δ vs bare"),
                "{report}"
            );
            let tl = std::fs::read_to_string(dir.join("k3shim/1/timeline.jsonl")).unwrap();
            let launch: serde_json::Value =
                serde_json::from_str(tl.lines().next().unwrap()).unwrap();
            let offset = launch["clock"]["offset_ms"]
                .as_u64()
                .expect("launch names the clock origin");
            assert!(offset > 0 && offset < 60_000, "{launch}");
            let oc: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(dir.join("k3shim/1/outcome.json")).unwrap(),
            )
            .unwrap();
            let start = oc["milestones"]["k3shim_start"]
                .as_f64()
                .expect("k3shim_start");
            assert!((start - offset as f64 / 1000.0).abs() < 1e-9, "{oc}");
            assert!(oc["milestones"]["ready"].as_f64().unwrap() > start, "{oc}");
        }
        if name == "timing" {
            // Both filters are recorded, each with its own outcome.
            let none: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(dir.join("stop-every-syscall/1/outcome.json")).unwrap(),
            )
            .unwrap();
            let paths: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(dir.join("default-filter/1/outcome.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(none["exit_code"], 255, "{none}");
            assert_eq!(none["filter"], "none");
            assert!(paths["milestones"]["ready"].is_number(), "{paths}");
            let tl =
                std::fs::read_to_string(dir.join("stop-every-syscall/1/timeline.jsonl")).unwrap();
            assert!(
                tl.contains("\"filter\":\"none\""),
                "the timeline records the filter"
            );
        }
        if name == "gated" {
            let tl = std::fs::read_to_string(dir.join("gated/1/timeline.jsonl")).unwrap();
            for k in [
                "\"kind\":\"gate_open\"",
                "\"kind\":\"hold\"",
                "\"kind\":\"release\"",
                "\"kind\":\"hook_end\"",
            ] {
                assert!(tl.contains(k), "gated timeline lacks {k}");
            }
            let log = std::fs::read_to_string(dir.join("target.log")).unwrap();
            assert!(
                log.contains("kube: POST /api/v1/namespaces -> 201"),
                "hook output in target.log:\n{log}"
            );
        }
    }
    // The demo: two failures, then ready, then the timeline table on stdout.
    let standin = sandbox::fixtures().join("standin");
    let o = experiment(&[
        "run",
        "demo",
        "--k3s",
        standin.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quick",
        "0.25",
    ]);
    let so = sandbox::stdout(&o);
    assert!(o.status.success(), "demo: {so}\n{}", sandbox::stderr(&o));
    assert!(so.contains("ok   no-shim") && so.contains("exit 1"), "{so}");
    assert!(
        so.contains("/proc/sys/") && so.contains("no such file or directory"),
        "the demo shows kubelet's error: {so}"
    );
    assert!(
        so.contains("ok   stop-every-syscall") && so.contains("exit 255"),
        "{so}"
    );
    assert!(
        so.contains("ok   k3shim")
            && so.contains("Milestones and periods")
            && so.contains("gate open"),
        "{so}"
    );
    eprintln!("all experiments in {:.1} s", start.elapsed().as_secs_f64());

    // report over several run directories aggregates per experiment step.
    let dirs: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("control-plane-")
        })
        .collect();
    let mut args = vec!["report".to_string()];
    args.extend(dirs.iter().map(|d| d.display().to_string()));
    args.push(dirs[0].display().to_string());
    let o = experiment(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let md = sandbox::stdout(&o);
    assert!(o.status.success(), "{md}");
    assert!(
        md.contains("2 of 2 runs as expected"),
        "the same directory twice gives two runs per step: {md}"
    );
}

#[test]
fn runs_repeat_and_report_aggregates() {
    if !sandbox::have_gvisor() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let out = sandbox::scratch("experiments-runs");
    let dir = check("control-plane", &out, &["--runs", "2"]);
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("2 of 2 runs as expected"), "{report}");
    assert!(
        dir.join("bare/2/timeline.jsonl").is_file() && dir.join("k3shim/2/outcome.json").is_file()
    );
    // An expectation that does not hold makes report exit 1 and say so.
    let toml = dir.join("experiment.toml");
    let text = std::fs::read_to_string(&toml).unwrap().replace(
        "absent = [\"kubelet\", \"poststarthook_failed\"]",
        "absent = [\"ready\"]",
    );
    std::fs::write(&toml, text).unwrap();
    let o = experiment(&["report", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", sandbox::stdout(&o));
    assert!(
        sandbox::stdout(&o).contains("ready appeared"),
        "{}",
        sandbox::stdout(&o)
    );
}

#[test]
fn list_names_every_experiment() {
    let o = experiment(&["list"]);
    sandbox::assert_ok(&o, "experiment list");
    let so = sandbox::stdout(&o);
    for n in [
        "control-plane",
        "fakefs",
        "timing",
        "wait-and-monitor",
        "gated",
        "demo",
    ] {
        assert!(so.contains(n), "{n} not listed: {so}");
    }
}

#[test]
fn bad_input_is_one_clear_line() {
    let o = experiment(&["run", "no-such-experiment"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        sandbox::stderr(&o).contains("no experiment \"no-such-experiment\""),
        "{}",
        sandbox::stderr(&o)
    );
    let d = sandbox::scratch("experiments-bad");
    let f = d.join("x.toml");
    std::fs::write(
        &f,
        "description = \"x\"\n[[step]]\ncommand = [\"{k3s}\"]\nuntil = \"nope\"\n",
    )
    .unwrap();
    let o = experiment(&["run", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        sandbox::stderr(&o).contains("milestone \"nope\" is not defined"),
        "{}",
        sandbox::stderr(&o)
    );
    let o = experiment(&["report", d.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        sandbox::stderr(&o).contains("not a run directory"),
        "{}",
        sandbox::stderr(&o)
    );
    // Every shipped file parses, and the built-in copies match experiments/.
    for e in std::fs::read_dir(workspace().join("experiments")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().map(|x| x == "toml").unwrap_or(false) {
            let o = experiment(&["list", "--dir", p.parent().unwrap().to_str().unwrap()]);
            sandbox::assert_ok(&o, "list --dir");
        }
    }
}

/// A run directory as `experiment run` leaves it, made by hand: the bare
/// step's timeline is the runner's own (its clock starts when the runner
/// starts `runsc` on the host); the k3shim step's is k3shim's, which started
/// 0.620 s later inside the sandbox and says so in its launch event
/// (`clock`). Both reached ready 2.770 s after their launch on the host.
fn fake_run_dir(root: &Path) -> PathBuf {
    let dir = root.join("control-plane-20260101-000000");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        workspace().join("experiments/control-plane.toml"),
        dir.join("experiment.toml"),
    )
    .unwrap();
    let runs = [
        (
            "bare",
            false,
            vec![
                r#"{"t_ms":0,"kind":"launch","argv":["runsc","do","standin"],"runner":"k3shim experiment","shim":false}"#,
                r#"{"t_ms":900,"kind":"log_match","name":"apiserver","line":"msg=\"Running kube-apiserver \""}"#,
                r#"{"t_ms":2700,"kind":"log_match","name":"poststarthook_ok","line":"ok"}"#,
                r#"{"t_ms":2770,"kind":"log_match","name":"ready","line":"msg=\"k3s is up and running\""}"#,
                r#"{"t_ms":3900,"kind":"exit","code":143}"#,
            ],
        ),
        (
            "k3shim",
            true,
            vec![
                r#"{"t_ms":0,"kind":"launch","argv":["k3shim","run","--","standin"],"clock":{"origin_unix_us":1000000,"offset_ms":620}}"#,
                r#"{"t_ms":300,"kind":"log_match","name":"apiserver","line":"msg=\"Running kube-apiserver \""}"#,
                r#"{"t_ms":2100,"kind":"log_match","name":"poststarthook_ok","line":"ok"}"#,
                r#"{"t_ms":2150,"kind":"log_match","name":"ready","line":"msg=\"k3s is up and running\""}"#,
                r#"{"t_ms":3280,"kind":"exit","code":143}"#,
            ],
        ),
    ];
    for (step, shim, lines) in runs {
        let d = dir.join(step).join("1");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("timeline.jsonl"), lines.join("\n") + "\n").unwrap();
        let o = serde_json::json!({"experiment": "control-plane", "step": step, "attempt": 1,
            "title": step, "argv": [], "shim": shim, "gvisor": true, "filter": "paths",
            "exit_code": 143, "stopped": true, "stop_reason": "ready seen", "wall_s": 4.0,
            "milestones": {}, "lines": {}, "end_s": null, "expected": "", "mismatches": [],
            "k3shim_error": null});
        std::fs::write(d.join("outcome.json"), o.to_string()).unwrap();
    }
    dir
}

#[test]
fn the_report_measures_every_step_from_the_same_host_side_launch_and_compares_steps() {
    let root = sandbox::scratch("experiments-clock");
    let dir = fake_run_dir(&root);
    let o = experiment(&["report", dir.to_str().unwrap()]);
    let md = sandbox::stdout(&o);
    assert!(o.status.success(), "{md}\n{}", sandbox::stderr(&o));
    // k3shim's in-sandbox times are shifted by its start: ready at 2.770 in both steps.
    assert!(
        md.contains("| 1 | 0.000 | 0.620 | 0.920 | 2.720 | 2.770 | 3.900 |"),
        "the k3shim step's row, from the host-side launch:\n{md}"
    );
    assert!(
        md.contains("| launch | k3shim_start | apiserver | poststarthook_ok | ready | end |"),
        "{md}"
    );
    // The steps side by side, with the difference from the first step.
    assert!(md.contains(": steps compared\n"), "{md}");
    assert!(
        md.contains("| milestone | bare (1 run) | k3shim (1 run) | Δ vs bare |"),
        "{md}"
    );
    assert!(md.contains("| `ready` | 2.770 | 2.770 | +0.000 |"), "{md}");
    assert!(
        md.contains("| `apiserver` | 0.900 | 0.920 | +0.020 |"),
        "{md}"
    );
    assert!(md.contains("| `k3shim_start` | - | 0.620 | - |"), "{md}");
    // Where the clock starts, and what Diff is, are said.
    assert!(md.contains("Clock: every time is in seconds since **launch**, the moment the runner started the step's command on the host"), "{md}");
    assert!(
        md.contains("**Diff**: a column's Avg minus the Avg of the column before it"),
        "{md}"
    );
    // `k3shim timeline --compare` of the two timelines agrees.
    let o = std::process::Command::new(sandbox::k3shim())
        .args(["timeline"])
        .arg(dir.join("bare/1/timeline.jsonl"))
        .arg("--compare")
        .arg(dir.join("k3shim/1/timeline.jsonl"))
        .output()
        .unwrap();
    let c = sandbox::stdout(&o);
    assert!(c.contains("k3shim started"), "{c}");
    assert!(
        c.lines()
            .any(|l| l.contains("log: ready") && l.contains("|   2.770 |   2.770 |")),
        "ready at the same time in both:\n{c}"
    );
    assert!(
        c.lines().any(|l| l.contains("whole run")
            && l.matches(" 3.900 |").count() == 2
            && l.contains("+0.000")),
        "{c}"
    );
}
