//! `k3shim bench`: overhead of k3shim against native, `--filter none`, proot
//! and strace, inside gVisor (`runsc --platform=ptrace --network=none do`) and
//! natively.
//!
//! The driver (bench/driver.py, embedded here with the workloads and the floor
//! programs) runs every workload under every tool, interleaved, and prints one
//! JSON object per measurement; inside gVisor one runsc runs the driver, so
//! times are taken inside the sandbox and runsc's start-up is not counted.
//! This module builds the helpers, runs the driver in both environments,
//! computes medians with min and max, writes Markdown and JSON to the results
//! directory and checks the targets of issue 7.

use crate::cli::BenchArgs;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const DRIVER: &str = include_str!("../../bench/driver.py");
const WORKLOADS: &[(&str, &str)] = &[
    (
        "sqlite_kine.py",
        include_str!("../../bench/workloads/sqlite_kine.py"),
    ),
    (
        "statwalk.py",
        include_str!("../../bench/workloads/statwalk.py"),
    ),
    (
        "procsys.py",
        include_str!("../../bench/workloads/procsys.py"),
    ),
    (
        "copytree.py",
        include_str!("../../bench/workloads/copytree.py"),
    ),
];
const FLOOR_C: &str = include_str!("../../bench/floor/floor.c");
const SYSLOOP_C: &str = include_str!("../../bench/floor/sysloop.c");

/// Columns: `k3shim` is the ptrace backend, `k3shim-mount` the mount backend
/// (inside gVisor `--backend mount`, sandbox-wide).
const TOOLS: &[&str] = &[
    "native",
    "k3shim",
    "k3shim-mount",
    "k3shim-none",
    "proot",
    "strace",
];
const WORKLOAD_ORDER: &[&str] = &[
    "sqlite",
    "statwalk",
    "procsys-real",
    "procsys-fake",
    "standin",
    "standin-agent",
    "sysstress",
    "dd-after-fake-write",
];

/// Target: tracer RSS while tracing the 64-thread workload.
const RSS_TARGET_KIB: f64 = 16.0 * 1024.0;

pub fn run(a: &BenchArgs) -> Result<i32> {
    if a.upstream {
        return crate::bench_upstream::run(a);
    }
    // K3SHIM_BENCH_FROM=RESULT.json: render an earlier run's measurements again (Markdown next to it)
    if let Some(p) = std::env::var_os("K3SHIM_BENCH_FROM").map(PathBuf::from) {
        let doc: Value = serde_json::from_slice(
            &std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?,
        )?;
        let records = doc["measurements"].as_array().cloned().unwrap_or_default();
        let summary = summarize(&records);
        let floor = floor_summary(&records);
        let targets = check_targets(&summary, &floor, &records);
        let table = markdown(
            &summary,
            &floor,
            &targets,
            &doc["meta"],
            doc["reps"].as_u64().unwrap_or(0) as u32,
            doc["quick"].as_bool().unwrap_or(false),
        );
        println!("{table}");
        std::fs::write(p.with_extension("md"), &table)?;
        return Ok(0);
    }
    let t_start = std::time::Instant::now();
    let exe = std::env::current_exe().context("cannot find the k3shim binary")?;
    let reps = if a.quick { 1 } else { a.reps.max(1) };
    let sizes = if a.quick {
        json!({"sqlite": 150, "statwalk_limit": 800, "procsys": 300, "standin_ops": 300, "sysstress_iters": 5, "floor": 2000, "dd_bytes": 5000})
    } else {
        json!({"sqlite": 1500, "statwalk_limit": 0, "procsys": 3000, "standin_ops": 3000, "sysstress_iters": 50, "floor": 5000, "dd_bytes": 100000})
    };
    let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .or_else(|| which("python3"))
        .context("python3 not found (the bench driver needs it)")?;

    let work = std::env::temp_dir().join(format!("k3shim-bench-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(work.clone());
    std::fs::create_dir_all(work.join("workloads"))?;
    std::fs::write(work.join("driver.py"), DRIVER)?;
    for (name, text) in WORKLOADS {
        std::fs::write(work.join("workloads").join(name), text)?;
    }
    for (name, text) in [("floor", FLOOR_C), ("sysloop", SYSLOOP_C)] {
        let src = work.join(format!("{name}.c"));
        std::fs::write(&src, text)?;
        let st = Command::new("cc")
            .args(["-O2", "-o"])
            .arg(work.join(name))
            .arg(&src)
            .status()
            .context("cannot run cc")?;
        if !st.success() {
            bail!("cc failed to build {name}.c");
        }
    }
    let fixtures = go_fixtures(&exe);
    if fixtures.is_none() {
        eprintln!(
            "k3shim bench: Go fixtures unavailable: skipping standin and sysstress workloads"
        );
    }

    let mut records: Vec<Value> = Vec::new();
    let mut envs_meta = BTreeMap::new();
    let runsc = which("runsc");
    let mut envs = vec!["native"];
    if !a.native_only {
        if runsc.is_some() {
            envs.insert(0, "gvisor");
        } else {
            eprintln!("k3shim bench: runsc not found: measuring natively only");
        }
    }
    for env in &envs {
        let cfg = json!({
            "env": env,
            "work": work,
            "scratch": work.join(format!("scratch-{env}")),
            "k3shim": exe,
            "python": python,
            "sizes": sizes,
            "reps": reps,
            "only": a.only,
            "fixtures": fixtures,
            "tools": a.tools,
        });
        let cfg_path = work.join(format!("config-{env}.json"));
        std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg)?)?;
        let mut cmd = if *env == "gvisor" {
            let mut c = Command::new(runsc.as_ref().unwrap());
            c.args(["--platform=ptrace", "--network=none", "do"]);
            c.arg(&python);
            c
        } else {
            Command::new(&python)
        };
        cmd.arg(work.join("driver.py")).arg(&cfg_path);
        eprintln!("k3shim bench: {env}: {reps} rep(s)");
        let (recs, ok) = run_driver(cmd)?;
        if !ok {
            eprintln!(
                "k3shim bench: the {env} driver did not finish cleanly; reporting what it measured"
            );
        }
        for r in recs {
            if r.get("kind").and_then(Value::as_str) == Some("env") {
                envs_meta.insert(env.to_string(), r);
            } else {
                records.push(r);
            }
        }
    }

    let meta = machine_meta();
    let summary = summarize(&records);
    let floor = floor_summary(&records);
    let targets = check_targets(&summary, &floor, &records);
    let table = markdown(&summary, &floor, &targets, &meta, reps, a.quick);
    println!("{table}");

    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let stamp = meta["date_stamp"].as_str().unwrap_or("undated").to_string();
    let base = a.out.join(format!(
        "bench-{stamp}{}",
        if a.quick { "-quick" } else { "" }
    ));
    let md = base.with_extension("md");
    let js = base.with_extension("json");
    std::fs::write(&md, &table)?;
    let doc = json!({
        "meta": meta,
        "reps": reps,
        "quick": a.quick,
        "sizes": sizes,
        "environments": envs_meta,
        "summary": summary,
        "floor": floor,
        "targets": targets,
        "measurements": records,
        "elapsed_s": t_start.elapsed().as_secs_f64(),
    });
    std::fs::write(&js, serde_json::to_vec_pretty(&doc)?)?;
    eprintln!(
        "k3shim bench: wrote {} and {} in {:.0}s",
        md.display(),
        js.display(),
        t_start.elapsed().as_secs_f64()
    );
    Ok(0)
}

struct RemoveOnDrop(PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if std::env::var_os("K3SHIM_BENCH_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(prog))
        .find(|p| p.is_file())
}

/// standin and sysstress: $K3SHIM_BENCH_FIXTURES if set, else built (once,
/// cached next to the binary) from tests/fixtures/go of the source tree that
/// holds the binary or the current directory.
fn go_fixtures(exe: &Path) -> Option<PathBuf> {
    let has = |d: &Path| d.join("standin").is_file() && d.join("sysstress").is_file();
    if let Some(d) = std::env::var_os("K3SHIM_BENCH_FIXTURES").map(PathBuf::from) {
        if has(&d) {
            return Some(d);
        }
    }
    let cache = exe.parent()?.join("bench-fixtures");
    let mut roots: Vec<PathBuf> = exe.ancestors().map(Path::to_path_buf).collect();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    let script = roots
        .iter()
        .map(|r| r.join("tests/fixtures/go/build.sh"))
        .find(|p| p.is_file())?;
    eprintln!(
        "k3shim bench: building Go fixtures into {}",
        cache.display()
    );
    let st = Command::new("bash")
        .arg(&script)
        .arg(&cache)
        .stdout(Stdio::null())
        .status()
        .ok()?;
    if st.success() && has(&cache) {
        Some(cache)
    } else {
        None
    }
}

/// Runs the driver, forwarding its stderr (progress) and collecting the JSON
/// lines of its stdout. Output is read through pipes: runsc garbles output
/// when stdout and stderr are the same regular file.
fn run_driver(mut cmd: Command) -> Result<(Vec<Value>, bool)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start the bench driver")?;
    let err = child.stderr.take().unwrap();
    let fwd = std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            eprintln!("{line}");
        }
    });
    let mut recs = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        if let Ok(v) = serde_json::from_str::<Value>(line.trim()) {
            recs.push(v);
        }
    }
    let st = child.wait()?;
    let _ = fwd.join();
    Ok((recs, st.success()))
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn machine_meta() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("")
        .trim()
        .to_string();
    let ncpu = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    let runsc = sh("runsc", &["--version"])
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    json!({
        "date": sh("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        "date_stamp": sh("date", &["-u", "+%Y%m%d-%H%M%S"]),
        "host": sh("uname", &["-n"]),
        "kernel": sh("uname", &["-srvm"]),
        "cpu": cpu,
        "cpus": ncpu,
        "memory": mem.split_whitespace().skip(1).collect::<Vec<_>>().join(" "),
        "gvisor": runsc,
        "python": sh("/usr/bin/python3", &["--version"]),
        "proot": format!("proot {}", sh("dpkg-query", &["-W", "-f", "${Version}", "proot"])),
        "strace": format!("strace {}", sh("dpkg-query", &["-W", "-f", "${Version}", "strace"])),
        "sqlite": sh("/usr/bin/python3", &["-c", "import sqlite3; print('sqlite', sqlite3.sqlite_version)"]),
        "k3shim": env!("CARGO_PKG_VERSION"),
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Per (env, workload, tool): times, inner times, failures, last note, in-process times.
type Samples = (Vec<f64>, Vec<f64>, usize, Option<String>, Vec<f64>);

/// env -> workload -> tool -> {median, min, max, n, failed, ratio, inner_median, note}
fn summarize(records: &[Value]) -> Value {
    let mut groups: BTreeMap<(String, String, String), Samples> = BTreeMap::new();
    for r in records {
        let (Some(env), Some(w), Some(t)) = (
            r["env"].as_str(),
            r["workload"].as_str(),
            r["tool"].as_str(),
        ) else {
            continue;
        };
        if w == "floor" {
            continue;
        }
        let g = groups.entry((env.into(), w.into(), t.into())).or_default();
        if r["ok"].as_bool() == Some(true) {
            let v = if w.starts_with("sysloop-") {
                r["ns_per_iter"].as_f64()
            } else {
                r["wall"].as_f64()
            };
            if let Some(v) = v {
                g.0.push(v);
            }
            if let Some(i) = r["inner"].as_f64() {
                g.1.push(i);
            }
        } else {
            g.2 += 1;
        }
        if let Some(n) = r["note"].as_str() {
            g.3 = Some(n.to_string());
        }
        if let Some(rss) = r["rss_kib"].as_f64() {
            g.4.push(rss);
        }
    }
    let mut out = serde_json::Map::new();
    for ((env, w, t), (mut vals, mut inner, failed, note, mut rss)) in groups {
        let mut o = json!({"n": vals.len(), "failed": failed});
        if !vals.is_empty() {
            o["median"] = json!(median(&mut vals));
            o["min"] = json!(vals.iter().cloned().fold(f64::INFINITY, f64::min));
            o["max"] = json!(vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max));
        }
        if !inner.is_empty() {
            o["inner_median"] = json!(median(&mut inner));
        }
        if !rss.is_empty() {
            o["rss_kib_max"] = json!(rss.iter().cloned().fold(0.0, f64::max));
            o["rss_kib_median"] = json!(median(&mut rss));
        }
        if let Some(n) = note {
            o["note"] = json!(n);
        }
        let e = out
            .entry(env)
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .unwrap()
            .entry(w)
            .or_insert_with(|| json!({}));
        e[t.as_str()] = o;
    }
    // ratios to native (for standin-agent, to native standin without the agent)
    let mut v = Value::Object(out);
    let envs: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    for env in envs {
        let ws: Vec<String> = v[&env].as_object().unwrap().keys().cloned().collect();
        for w in ws {
            let base_w = if w == "standin-agent" {
                "standin"
            } else {
                w.as_str()
            };
            let native = v[&env][base_w]["native"]["median"].as_f64();
            let native_inner = v[&env][base_w]["native"]["inner_median"].as_f64();
            let tools: Vec<String> = v[&env][&w].as_object().unwrap().keys().cloned().collect();
            for t in tools {
                if let (Some(n), Some(m)) = (native, v[&env][&w][&t]["median"].as_f64()) {
                    v[&env][&w][&t]["ratio"] = json!(m / n);
                }
                if let (Some(n), Some(m)) = (native_inner, v[&env][&w][&t]["inner_median"].as_f64())
                {
                    v[&env][&w][&t]["inner_ratio"] = json!(m / n);
                }
            }
        }
    }
    v
}

/// env -> {round_trip_ns (regs), round_trip_mem_ns, per-intercepted costs}
fn floor_summary(records: &[Value]) -> Value {
    let mut out = serde_json::Map::new();
    let mut by: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for r in records {
        if r["workload"].as_str() == Some("floor") && r["ok"].as_bool() == Some(true) {
            // the floor program prints round_trip_ns; measure() keeps only known keys, so recompute from the record
            if let (Some(env), Some(t)) = (r["env"].as_str(), r["tool"].as_str()) {
                if let Some(x) = r["round_trip_ns"].as_f64() {
                    by.entry((env.into(), t.into())).or_default().push(x);
                }
            }
        }
    }
    for ((env, mode), mut v) in by {
        let e = out.entry(env).or_insert_with(|| json!({}));
        e[format!("round_trip_{mode}_ns")] = json!(median(&mut v));
    }
    Value::Object(out)
}

struct Target {
    name: String,
    value: String,
    limit: String,
    pass: Option<bool>,
}

fn check_targets(summary: &Value, floor: &Value, _records: &[Value]) -> Value {
    let env = if summary.get("gvisor").is_some() {
        "gvisor"
    } else {
        "native"
    };
    let s = &summary[env];
    let mut t: Vec<Target> = Vec::new();
    let ratio = |w: &str, tool: &str| s[w][tool]["ratio"].as_f64();
    let fmt = |x: Option<f64>| x.map(|x| format!("{x:.2}")).unwrap_or_else(|| "n/a".into());
    let mut push = |name: &str, value: Option<f64>, limit: f64, shown_limit: String| {
        t.push(Target {
            name: name.into(),
            value: fmt(value),
            limit: shown_limit,
            pass: value.map(|v| v <= limit),
        });
    };
    push(
        "sqlite k3shim/native",
        ratio("sqlite", "k3shim"),
        1.05,
        "<= 1.05".into(),
    );
    push(
        "stat walk k3shim/native",
        ratio("statwalk", "k3shim"),
        2.0,
        "<= 2.0".into(),
    );
    let sw = s["statwalk"]["k3shim"]["median"]
        .as_f64()
        .zip(s["statwalk"]["proot"]["median"].as_f64())
        .map(|(k, p)| k / p);
    push("stat walk k3shim/proot", sw, 0.5, "< 0.5".into());
    push(
        "/proc/sys fake entry k3shim / native real entry",
        ratio("procsys-fake", "k3shim"),
        1.5,
        "<= 1.5".into(),
    );
    push(
        "stand-in time to ready k3shim/native",
        ratio("standin", "k3shim"),
        1.2,
        "<= 1.2".into(),
    );
    // Issue 14 (the mount backend's targets), for both backends side by side.
    for (tool, b) in [("k3shim-mount", "mount"), ("k3shim", "ptrace")] {
        push(
            &format!("issue 14, {b}: stat walk {tool}/native"),
            ratio("statwalk", tool),
            1.15,
            "<= 1.15".into(),
        );
        push(
            &format!("issue 14, {b}: /proc/sys fake entry {tool} / native real entry"),
            ratio("procsys-fake", tool),
            1.15,
            "<= 1.15".into(),
        );
        push(
            &format!("issue 14, {b}: sqlite {tool}/native"),
            ratio("sqlite", tool),
            1.05,
            "<= 1.05".into(),
        );
        push(
            &format!("issue 14, {b}: stand-in time to ready {tool}/native"),
            ratio("standin", tool),
            1.05,
            "<= 1.05".into(),
        );
    }
    // Issue 11 item 9: nothing of a shell's write to a fake entry stays behind.
    push(
        "dd in a shell after it wrote a fake entry, k3shim/native",
        ratio("dd-after-fake-write", "k3shim"),
        1.5,
        "<= 1.5".into(),
    );
    // per intercepted syscall against the bare round trip
    let rt = floor[env]["round_trip_regs_ns"].as_f64();
    let per = |w: &str| {
        s[w]["k3shim"]["median"]
            .as_f64()
            .zip(s[w]["native"]["median"].as_f64())
            .map(|(k, n)| k - n)
    };
    for (w, label) in [
        ("sysloop-stat", "stat (passed through)"),
        ("sysloop-open-real", "open real entry (passed through)"),
    ] {
        let v = per(w).zip(rt).map(|(p, r)| p / r);
        push(
            &format!("per intercepted syscall, {label} / round trip"),
            v,
            1.5,
            "<= 1.5".into(),
        );
    }
    // a hold elsewhere in the tree must not slow the rest (issue 11, item 7)
    let v = per("sysloop-stat-held")
        .zip(per("sysloop-stat"))
        .map(|(h, u)| h / u);
    push(
        "per intercepted stat while another process is held / without a hold",
        v,
        1.5,
        "<= 1.5".into(),
    );
    let rss = s["sysstress"]["k3shim"]["rss_kib_max"]
        .as_f64()
        .map(|k| k / 1024.0);
    let label = if env == "gvisor" {
        "k3shim peak RSS, 64-thread workload (MiB; max sampled VmRSS)"
    } else {
        "k3shim peak RSS, 64-thread workload (MiB; VmHWM)"
    };
    push(label, rss, RSS_TARGET_KIB / 1024.0, "<= 16".into());
    if env == "gvisor" {
        // gVisor has no VmHWM and faults file pages in large chunks: give the native VmHWM too
        let rss = summary["native"]["sysstress"]["k3shim"]["rss_kib_max"]
            .as_f64()
            .map(|k| k / 1024.0);
        push(
            "k3shim peak RSS, 64-thread workload (MiB; VmHWM)",
            rss,
            RSS_TARGET_KIB / 1024.0,
            "<= 16".into(),
        );
    }
    let mut envs: Vec<&str> = vec![env; t.len()];
    if env == "gvisor" {
        *envs.last_mut().unwrap() = "native";
    }
    let mut arr = Vec::new();
    for (x, env) in t.into_iter().zip(envs) {
        arr.push(
            json!({"env": env, "target": x.name, "value": x.value, "limit": x.limit,
            "result": match x.pass { Some(true) => "PASS", Some(false) => "MISS", None => "N/A" }}),
        );
    }
    Value::Array(arr)
}

fn cell(o: &Value, unit_ns: bool) -> String {
    let Some(m) = o["median"].as_f64() else {
        return if o["failed"].as_u64().unwrap_or(0) > 0 {
            format!("FAILED ({})", o["failed"])
        } else {
            "-".into()
        };
    };
    let (mn, mx) = (
        o["min"].as_f64().unwrap_or(m),
        o["max"].as_f64().unwrap_or(m),
    );
    let mut s = if unit_ns {
        format!(
            "{:.1} us [{:.1}-{:.1}]",
            m / 1000.0,
            mn / 1000.0,
            mx / 1000.0
        )
    } else {
        format!("{m:.3} s [{mn:.3}-{mx:.3}]")
    };
    if let Some(r) = o["ratio"].as_f64() {
        s += &format!(" x{r:.2}");
    }
    let f = o["failed"].as_u64().unwrap_or(0);
    if f > 0 {
        s += &format!(" ({f} failed)");
    }
    if o.get("note").is_some() {
        s += " *";
    }
    s
}

fn markdown(
    summary: &Value,
    floor: &Value,
    targets: &Value,
    meta: &Value,
    reps: u32,
    quick: bool,
) -> String {
    let mut md = String::new();
    md += &format!(
        "# k3shim bench{}\n\n",
        if quick {
            " (quick mode: small sizes, not comparable)"
        } else {
            ""
        }
    );
    md += &format!(
        "- date: {}\n- machine: {} ({} CPUs: {}, {})\n- kernel: {}\n- gVisor: {} (`runsc --platform=ptrace --network=none do`)\n- tools: {}, {}, {}, {}\n- repetitions: {reps}, interleaved; cells: median [min-max] xratio to native\n\n",
        meta["date"].as_str().unwrap_or(""),
        meta["host"].as_str().unwrap_or(""),
        meta["cpus"],
        meta["cpu"].as_str().unwrap_or(""),
        meta["memory"].as_str().unwrap_or(""),
        meta["kernel"].as_str().unwrap_or(""),
        meta["gvisor"].as_str().unwrap_or(""),
        meta["python"].as_str().unwrap_or(""),
        meta["sqlite"].as_str().unwrap_or(""),
        meta["proot"].as_str().unwrap_or(""),
        meta["strace"].as_str().unwrap_or(""),
    );
    let Some(envs) = summary.as_object() else {
        return md;
    };
    for (env, ws) in envs {
        md += &format!(
            "## {}\n\n",
            if env == "gvisor" {
                "Inside gVisor"
            } else {
                "Natively"
            }
        );
        // the columns measured here (`--tools` may leave some out)
        let tools: Vec<&str> = TOOLS
            .iter()
            .copied()
            .filter(|t| {
                ws.as_object()
                    .unwrap()
                    .values()
                    .any(|w| w.get(*t).is_some())
            })
            .collect();
        md += "| workload | ";
        md += &tools.join(" | ");
        md += " |\n|---|";
        md += &"---|".repeat(tools.len());
        md += "\n";
        let mut names: Vec<&String> = ws.as_object().unwrap().keys().collect();
        names.sort_by_key(|n| {
            WORKLOAD_ORDER
                .iter()
                .position(|w| w == n)
                .unwrap_or(usize::MAX - if n.starts_with("sysloop") { 1 } else { 0 })
        });
        let mut notes = Vec::new();
        for w in names {
            let row = &ws[w];
            let unit_ns = w.starts_with("sysloop-");
            md += &format!("| {w}{} |", if unit_ns { " (per iteration)" } else { "" });
            for t in &tools {
                md += &format!(" {} |", cell(&row[*t], unit_ns));
                if let Some(n) = row[*t]["note"].as_str() {
                    notes.push(format!("{w}/{t}: {n}"));
                }
            }
            md += "\n";
        }
        // the workloads' own timers: without interpreter and tool start-up
        let inner_rows: Vec<&String> = ws
            .as_object()
            .unwrap()
            .keys()
            .filter(|w| ws[w.as_str()]["native"]["inner_median"].is_number())
            .collect();
        if !inner_rows.is_empty() {
            md += "\nIn-process time (the workload's own timer: without interpreter and tool start-up), median and ratio to native:\n\n| workload | ";
            md += &tools.join(" | ");
            md += " |\n|---|";
            md += &"---|".repeat(tools.len());
            md += "\n";
            for w in inner_rows {
                md += &format!("| {w} |");
                for t in &tools {
                    let o = &ws[w.as_str()][*t];
                    md += &match (o["inner_median"].as_f64(), o["inner_ratio"].as_f64()) {
                        (Some(m), Some(r)) => format!(" {m:.3} s x{r:.2} |"),
                        (Some(m), None) => format!(" {m:.3} s |"),
                        _ => " - |".to_string(),
                    };
                }
                md += "\n";
            }
        }
        md += "\n";
        for n in notes {
            md += &format!("\\* {n}\n");
        }
        if let Some(f) = floor.get(env.as_str()) {
            let rt = f["round_trip_regs_ns"].as_f64();
            let rtm = f["round_trip_mem_ns"].as_f64();
            md += &format!(
                "\nFloor (bare seccomp-trace round trip: stop, waitpid, GETREGS, CONT): {}; with one 8-byte read of /proc/PID/mem: {}.\n",
                rt.map(|x| format!("{:.1} us", x / 1000.0)).unwrap_or("n/a".into()),
                rtm.map(|x| format!("{:.1} us", x / 1000.0)).unwrap_or("n/a".into())
            );
            for (w, label) in [
                ("sysloop-stat", "stat, passed through"),
                (
                    "sysloop-open-real",
                    "open of a real /proc/sys entry, passed through",
                ),
                (
                    "sysloop-open-fake",
                    "open of a fake entry, redirected (entry + exit stop)",
                ),
                (
                    "sysloop-stat-held",
                    "stat, passed through, while another process is held",
                ),
            ] {
                let k = ws[w]["k3shim"]["median"].as_f64();
                let n = ws[w]["native"]["median"].as_f64();
                if let (Some(k), Some(n)) = (k, n) {
                    md += &format!(
                        "k3shim cost per intercepted syscall, {label}: {:.1} us{}\n",
                        (k - n) / 1000.0,
                        rt.map(|r| format!(" = {:.2} x the round trip", (k - n) / r))
                            .unwrap_or_default()
                    );
                }
            }
        }
        if let Some(r) = ws
            .get("sysstress")
            .and_then(|s| s["k3shim"]["rss_kib_max"].as_f64())
        {
            md += &format!(
                "k3shim peak RSS while tracing the 64-thread workload: {:.1} MiB ({})\n",
                r / 1024.0,
                if env == "gvisor" {
                    "max of VmRSS sampled every 50 ms: gVisor has no VmHWM"
                } else {
                    "VmHWM"
                }
            );
        }
        md += "\n";
    }
    md += "## Targets\n\n| target | value | limit | result |\n|---|---|---|---|\n";
    for t in targets.as_array().into_iter().flatten() {
        md += &format!(
            "| {} ({}) | {} | {} | {} |\n",
            t["target"].as_str().unwrap_or(""),
            t["env"].as_str().unwrap_or(""),
            t["value"].as_str().unwrap_or(""),
            t["limit"].as_str().unwrap_or(""),
            t["result"].as_str().unwrap_or("")
        );
    }
    md
}
