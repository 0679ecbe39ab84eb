//! `k3shim experiment run NAME`: one run directory, N repetitions of every
//! step, a report at the end.

use super::progress::Progress;
use super::report;
use super::spec::{self, Loaded, Step};
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Options {
    pub name: String,
    pub k3s: Option<PathBuf>,
    pub runs: u32,
    pub out: Option<PathBuf>,
    pub dir: Option<PathBuf>,
    pub quick: f64,
}

/// What one attempt of one step did (outcome.json).
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct Outcome {
    pub experiment: String,
    pub step: String,
    pub attempt: u32,
    pub title: String,
    pub argv: Vec<String>,
    pub shim: bool,
    pub gvisor: bool,
    pub filter: String,
    /// The exit status (128+N for signal N); None if it could not be had.
    pub exit_code: Option<i32>,
    /// The runner ended it (the `until` milestone appeared, or the watch elapsed).
    pub stopped: bool,
    pub stop_reason: Option<String>,
    pub wall_s: f64,
    /// Milestone -> seconds since launch (from the timeline).
    pub milestones: BTreeMap<String, f64>,
    /// Milestone -> the first line that matched it.
    pub lines: BTreeMap<String, String>,
    /// When the run ended, seconds since launch (the timeline's exit event).
    pub end_s: Option<f64>,
    /// The expectation, and what did not match it (empty: as expected).
    pub expected: String,
    pub mismatches: Vec<String>,
    /// k3shim's own one-line error, if it printed one.
    pub k3shim_error: Option<String>,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The source tree's tests/fixtures/go/build.sh, if k3shim runs from (or was built in) one.
fn find_build_sh() -> Option<PathBuf> {
    let rel = Path::new("tests/fixtures/go/build.sh");
    if let Ok(cwd) = std::env::current_dir() {
        for a in cwd.ancestors() {
            if a.join(rel).is_file() {
                return Some(a.join(rel));
            }
        }
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?.join(rel);
    p.is_file().then_some(p)
}

/// The default --k3s: the Go stand-in, built on demand (target/fixtures of the
/// source tree, else $XDG_CACHE_HOME/k3shim/fixtures).
pub fn standin() -> Result<PathBuf> {
    let build = find_build_sh().ok_or_else(|| anyhow!("the default --k3s is the Go stand-in, built from tests/fixtures/go in k3shim's source tree, which is not here: run from the source tree or give --k3s PATH"))?;
    let root = build
        .ancestors()
        .nth(4)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut out = root.join("target/fixtures");
    if std::fs::create_dir_all(&out).is_err() || !writable(&out) {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        out = cache.join("k3shim/fixtures");
        std::fs::create_dir_all(&out)
            .with_context(|| format!("{}: cannot create", out.display()))?;
    }
    let bin = out.join("standin");
    if which("go").is_none() {
        if bin.is_file() {
            return Ok(bin);
        }
        bail!("the default --k3s is the Go stand-in and building it needs Go: install it from https://go.dev/dl (or give --k3s PATH)");
    }
    eprintln!(
        "k3shim experiment: building the Go stand-in into {}",
        out.display()
    );
    let mut cmd = if which("flock").is_some() {
        let mut c = Command::new("flock");
        c.arg(out.join(".lock")).arg("bash");
        c
    } else {
        Command::new("bash")
    };
    let o = cmd
        .arg(&build)
        .arg(&out)
        .stdin(Stdio::null())
        .output()
        .context("running bash tests/fixtures/go/build.sh")?;
    if !o.status.success() || !bin.is_file() {
        let err = String::from_utf8_lossy(&o.stderr);
        bail!(
            "building the Go stand-in failed ({}): {}",
            build.display(),
            err.trim().lines().last().unwrap_or("")
        );
    }
    Ok(bin)
}

fn writable(d: &Path) -> bool {
    let p = d.join(format!(".w{}", std::process::id()));
    let ok = std::fs::write(&p, b"").is_ok();
    let _ = std::fs::remove_file(&p);
    ok
}

fn stamp() -> String {
    let s = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let d: String = s.chars().filter(|c| c.is_ascii_digit()).collect();
    if d.len() >= 14 {
        format!("{}-{}", &d[..8], &d[8..14])
    } else {
        d
    }
}

fn quote(a: &str) -> String {
    if !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}

pub fn shell_line(argv: &[String]) -> String {
    argv.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
}

pub fn run(o: &Options) -> Result<i32> {
    if !(o.quick > 0.0 && o.quick.is_finite()) {
        bail!("--quick {}: expected a factor > 0 (e.g. 0.2)", o.quick);
    }
    // `--k3s upstream` (or a k3s-like binary): the real parts, with the files' [upstream] overlays.
    let upstream = o.k3s.as_deref().is_some_and(|p| {
        p.as_os_str() == super::upstream::KEYWORD
            || p.file_name().is_some_and(|n| n == super::upstream::SERVER)
    });
    let variant = if upstream {
        spec::Variant::Upstream
    } else {
        spec::Variant::Default
    };
    let exp = spec::load_variant(&o.name, o.dir.as_deref(), variant)?;
    if exp.steps.iter().any(|s| s.gvisor) {
        if which("runsc").is_none() {
            bail!("runsc (gVisor) is not installed: apt-get install runsc");
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("`runsc do` needs root: run k3shim experiment as root (sudo)");
        }
    }
    let (k3s, is_standin) = match &o.k3s {
        Some(p) if p.as_os_str() == super::upstream::KEYWORD => (super::upstream::build()?, false),
        Some(p) => {
            let p = std::fs::canonicalize(p).map_err(|e| anyhow!("--k3s {}: {e}", p.display()))?;
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().contains("standin"))
                .unwrap_or(false);
            (p, name)
        }
        None => (standin()?, true),
    };
    let exe = std::env::current_exe().context("where is k3shim?")?;
    let out = o.out.clone().unwrap_or_else(|| PathBuf::from("runs"));
    std::fs::create_dir_all(&out)
        .with_context(|| format!("--out {}: cannot create", out.display()))?;
    let out = std::fs::canonicalize(&out)?;
    let base = format!("{}-{}", exp.name, stamp());
    let mut dir = out.join(&base);
    let mut n = 2;
    while dir.exists() {
        dir = out.join(format!("{base}-{n}"));
        n += 1;
    }
    std::fs::create_dir_all(dir.join("bin"))?;
    let header = format!(
        "# experiment file as used by k3shim {} ({})\n# k3s: {} ({})\n{}# runs: {}, quick: {}\n",
        env!("CARGO_PKG_VERSION"),
        exp.path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "built-in".into()),
        k3s.display(),
        if is_standin {
            "the Go stand-in: standin_args apply"
        } else {
            "not the stand-in: standin_args dropped"
        },
        if upstream {
            format!("{}: the [upstream] overlays apply\n", spec::UPSTREAM_MARK)
        } else {
            String::new()
        },
        o.runs,
        o.quick
    );
    std::fs::write(dir.join("experiment.toml"), header + &exp.source)?;
    let kube = dir.join("bin/kube");
    std::fs::write(&kube, spec::KUBE_HELPER)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&kube, std::fs::Permissions::from_mode(0o755))?;
    std::fs::write(
        dir.join("env.json"),
        serde_json::to_string_pretty(&super::env::collect(
            &k3s, is_standin, upstream, o.quick, o.runs,
        ))? + "\n",
    )?;

    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as usize);
        libc::signal(libc::SIGTERM, on_signal as *const () as usize);
    }
    eprintln!("experiment {}: {}", exp.name, exp.exp.description.trim());
    eprintln!(
        "  k3s: {}{}",
        k3s.display(),
        if is_standin { " (Go stand-in)" } else { "" }
    );
    if upstream {
        for c in super::upstream::components(&k3s) {
            eprintln!("    {c}");
        }
    }
    eprintln!("  run directory: {}", dir.display());
    let mut outcomes = Vec::new();
    'runs: for k in 1..=o.runs {
        for step in &exp.steps {
            if INTERRUPTED.load(Ordering::SeqCst) {
                break 'runs;
            }
            let label = if o.runs > 1 {
                format!("{} #{k}", step.name)
            } else {
                step.name.clone()
            };
            eprintln!("\n  [{label}] {}", step.title);
            let oc = run_step(&exp, step, k, &dir, &k3s, is_standin, &exe, o.quick, &label)?;
            let verdict = if oc.mismatches.is_empty() {
                "as expected".to_string()
            } else {
                format!("NOT as expected: {}", oc.mismatches.join("; "))
            };
            eprintln!("    => {} ({}), {verdict}", describe(&oc), oc.expected);
            if let Some(e) = &oc.k3shim_error {
                eprintln!("    k3shim: {e}");
            }
            outcomes.push(oc);
        }
    }
    if let Some(last) = outcomes.last() {
        let a = dir.join(&last.step).join(last.attempt.to_string());
        for f in ["timeline.jsonl", "target.log"] {
            let _ = std::os::unix::fs::symlink(
                a.join(f).strip_prefix(&dir).unwrap_or(&a.join(f)),
                dir.join(f),
            );
        }
    }
    let r = report::aggregate(&[dir.clone()])?;
    std::fs::write(dir.join("report.md"), &r.markdown)?;
    if exp.exp.print_timeline {
        println!("\n# {}: what happened\n", exp.name);
        for oc in &outcomes {
            let mark = if oc.mismatches.is_empty() {
                "ok  "
            } else {
                "FAIL"
            };
            println!("{mark} {:<20} {:<24} {}", oc.step, describe(oc), oc.title);
            if let Some(l) = key_line(&exp, oc) {
                println!("       {}", l);
            }
        }
        if let Some(last) = outcomes.last() {
            let tl = dir
                .join(&last.step)
                .join(last.attempt.to_string())
                .join("timeline.jsonl");
            if let Ok(ev) = crate::timeline::read_events(&tl) {
                println!(
                    "\n# timeline of the last step ({}): k3shim timeline {}\n",
                    last.step,
                    tl.display()
                );
                print!("{}", crate::timeline_report::table(&ev));
            }
        }
    } else {
        print!("{}", r.markdown);
    }
    if INTERRUPTED.load(Ordering::SeqCst) {
        eprintln!("\ninterrupted: {} step runs done", outcomes.len());
        return Ok(130);
    }
    eprintln!(
        "\nrun directory: {}\nreport: {}",
        dir.display(),
        dir.join("report.md").display()
    );
    eprintln!(
        "{}",
        if r.all_match {
            "outcome: as expected"
        } else {
            "outcome: NOT as expected (see the report)"
        }
    );
    Ok(if r.all_match { 0 } else { 1 })
}

pub fn describe(o: &Outcome) -> String {
    if o.stopped {
        format!(
            "stopped ({})",
            o.stop_reason.as_deref().unwrap_or("watch ended")
        )
    } else {
        match o.exit_code {
            Some(c) => format!("exit {c}"),
            None => "no exit status".into(),
        }
    }
}

/// The line of the latest expected log milestone: what a reader wants to see.
fn key_line(exp: &Loaded, o: &Outcome) -> Option<String> {
    let step = exp.steps.iter().find(|s| s.name == o.step)?;
    let best = step
        .expect
        .milestones
        .iter()
        .filter_map(|m| Some((o.milestones.get(m)?, o.lines.get(m)?)))
        .max_by(|a, b| a.0.total_cmp(b.0))?;
    let l = best.1;
    Some(if l.chars().count() > 600 {
        format!("{}…", l.chars().take(599).collect::<String>())
    } else {
        l.clone()
    })
}

#[allow(clippy::too_many_arguments)]
fn run_step(
    exp: &Loaded,
    step: &Step,
    attempt: u32,
    dir: &Path,
    k3s: &Path,
    is_standin: bool,
    exe: &Path,
    quick: f64,
    label: &str,
) -> Result<Outcome> {
    let run = dir.join(&step.name).join(attempt.to_string());
    std::fs::create_dir_all(&run)?;
    let vars = [
        ("k3s", k3s.display().to_string()),
        ("run", run.display().to_string()),
        ("data", run.join("data").display().to_string()),
        ("kubeconfig", run.join("k3s.yaml").display().to_string()),
        ("bin", dir.join("bin").display().to_string()),
    ];
    let ex = |v: &[String]| {
        v.iter()
            .map(|s| spec::expand(s, &vars))
            .collect::<Result<Vec<_>>>()
    };
    let mut target = ex(&step.command)?;
    if is_standin {
        target.extend(ex(&step.standin_args)?);
    }
    let timeline = run.join("timeline.jsonl");
    let mut argv: Vec<String> = Vec::new();
    if step.gvisor {
        argv.extend(["runsc", "--platform=ptrace", "--network=none"].map(String::from));
        argv.extend(step.runsc_args.iter().cloned());
        argv.extend(["do", "-force-overlay=false"].map(String::from));
    }
    if step.shim {
        argv.push(exe.display().to_string());
        argv.extend(["run", "--state"].map(String::from));
        argv.push(run.join("state").display().to_string());
        argv.extend([
            "--profile".into(),
            step.profile.clone(),
            "--mode".into(),
            step.mode.clone(),
            "--filter".into(),
            step.filter.clone(),
        ]);
        argv.extend(["--timeline".into(), timeline.display().to_string()]);
        for (n, re) in &exp.milestones {
            argv.extend(["--log-match".into(), format!("{n}={re}")]);
        }
        if let Some(g) = &step.gate {
            if let Some(u) = &g.url {
                argv.extend(["--gate-url".into(), spec::expand(u, &vars)?]);
            }
            if let Some(k) = &g.kubeconfig {
                argv.extend(["--gate-kubeconfig".into(), spec::expand(k, &vars)?]);
            }
            if g.insecure {
                argv.push("--gate-insecure".into());
            }
            if let Some(t) = g.timeout {
                argv.extend(["--gate-timeout".into(), format!("{t}")]);
            }
        }
        for h in &step.holds {
            argv.extend(["--hold".into(), spec::expand(h, &vars)?]);
        }
        if !step.holds.is_empty() {
            argv.extend(["--release".into(), step.release.clone()]);
        }
        for h in &step.hooks {
            argv.extend(["--hook".into(), spec::expand(h, &vars)?]);
        }
        argv.extend([
            "--hook-failure".into(),
            step.hook_failure.clone(),
            "--".into(),
        ]);
    }
    argv.extend(target);
    std::fs::write(run.join("command.txt"), shell_line(&argv) + "\n")?;

    // Without k3shim the runner writes the timeline itself (launch, log_match, exit).
    let own = if step.shim {
        None
    } else {
        Some(
            crate::timeline::Timeline::create(
                Some(&timeline),
                &argv,
                json!({"runner": "k3shim experiment", "shim": false}),
            )
            .with_context(|| {
                format!("{}: cannot create the step's timeline", timeline.display())
            })?,
        )
    };
    let log = Arc::new(Mutex::new(std::fs::File::create(run.join("target.log"))?));
    // Every step's clock starts here, when the runner starts its command on
    // the host: the runner's own timeline (bare steps) was created just now,
    // and k3shim (which starts later, inside the sandbox) is told this instant.
    let origin_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .env(crate::timeline::CLOCK_ORIGIN_ENV, origin_us.to_string())
        .current_dir(&run)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", argv[0]))?;
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel::<(&'static str, String)>();
    let mut readers = Vec::new();
    for (name, r) in [
        (
            "stdout",
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ),
        (
            "stderr",
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ),
    ] {
        let Some(r) = r else { continue };
        let tx = tx.clone();
        let log = log.clone();
        readers.push(std::thread::spawn(move || {
            let mut r = std::io::BufReader::new(r);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                if let Ok(mut f) = log.lock() {
                    let _ = f.write_all(&buf);
                }
                let _ = tx.send((
                    name,
                    String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\n', '\r'])
                        .to_string(),
                ));
            }
        }));
    }
    drop(tx);

    let watch = step.watch * quick;
    let linger = Duration::from_secs_f64(step.linger * quick);
    let mut pg = Progress::new(label, watch);
    let start = Instant::now();
    let watch_end = start + Duration::from_secs_f64(watch);
    let mut stop_at: Option<(Instant, String)> = None;
    let mut term_sent: Option<Instant> = None;
    let mut killed = false;
    let mut stop_reason = None;
    let mut status = None;
    let mut readers_done = false;
    let mut exited_at: Option<Instant> = None;
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut own_seen: BTreeSet<String> = BTreeSet::new();
    let mut tail = Tail {
        path: timeline.clone(),
        offset: 0,
        partial: Vec::new(),
        events: Vec::new(),
    };
    let mut k3shim_error = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok((stream, line)) => {
                pg.line();
                if let Some(rest) = line.strip_prefix("k3shim: ") {
                    if !crate::log::is_notice(rest) {
                        k3shim_error = Some(rest.to_string());
                    }
                }
                if let Some(tl) = &own {
                    for (n, re) in &exp.milestones {
                        if re.is_match(&line) && own_seen.insert(n.clone()) {
                            tl.emit(
                                "log_match",
                                json!({"name": n, "line": line, "stream": stream, "first": true}),
                            );
                        }
                    }
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                readers_done = true;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        // Milestones come from the timeline as it is written (k3shim's, or ours without it).
        if tail.poll() {
            let (m, _, _) = report::milestones(&tail.events);
            let mut new: Vec<(&String, &f64)> =
                m.iter().filter(|(k, _)| !seen.contains(*k)).collect();
            new.sort_by(|a, b| a.1.total_cmp(b.1));
            for (n, t) in new {
                seen.insert(n.clone());
                pg.milestone(n, *t);
                if step.until.as_deref() == Some(n.as_str()) && stop_at.is_none() {
                    stop_at = Some((Instant::now() + linger, format!("{n} seen")));
                }
            }
        }
        if status.is_none() {
            if let Some(st) = child.try_wait()? {
                status = Some(st);
                exited_at = Some(Instant::now());
            }
        }
        if status.is_some()
            && (readers_done
                || exited_at
                    .map(|t| t.elapsed() > Duration::from_secs(5))
                    .unwrap_or(false))
        {
            break;
        }
        let now = Instant::now();
        if status.is_none() && term_sent.is_none() {
            let why = if INTERRUPTED.load(Ordering::SeqCst) {
                Some("interrupted".to_string())
            } else if let Some((t, w)) = &stop_at {
                (now >= *t).then(|| w.clone())
            } else if now >= watch_end {
                Some(format!("watched {watch:.0} s"))
            } else {
                None
            };
            if let Some(w) = why {
                pg.note(&format!("stopping ({w}): SIGTERM"));
                // SAFETY: signalling our own child.
                unsafe { libc::kill(pid, libc::SIGTERM) };
                term_sent = Some(now);
                stop_reason = Some(w);
            }
        }
        if let Some(t) = term_sent {
            if status.is_none() && !killed && t.elapsed() > Duration::from_secs(20) {
                pg.note("still running 20 s after SIGTERM: SIGKILL");
                // SAFETY: killing the process group we created for the child.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
                killed = true;
            }
        }
        pg.draw();
    }
    pg.finish();
    for r in readers {
        if r.is_finished() {
            let _ = r.join();
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let code = status.map(|s| s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)));
    if let Some(tl) = &own {
        tl.emit("exit", json!({"code": code}));
    }
    let events = crate::timeline::read_events(&timeline).unwrap_or_default();
    let (milestones, lines, end_s) = report::milestones(&events);
    let mut oc = Outcome {
        experiment: exp.name.clone(),
        step: step.name.clone(),
        attempt,
        title: step.title.clone(),
        argv,
        shim: step.shim,
        gvisor: step.gvisor,
        filter: step.filter.clone(),
        exit_code: code,
        stopped: term_sent.is_some(),
        stop_reason,
        wall_s: (wall * 1000.0).round() / 1000.0,
        milestones,
        lines,
        end_s,
        expected: report::expectation(&step.expect),
        mismatches: Vec::new(),
        k3shim_error,
    };
    if events.is_empty() {
        oc.mismatches.push("no timeline was written".into());
    }
    oc.mismatches.extend(report::evaluate(&step.expect, &oc));
    std::fs::write(
        run.join("outcome.json"),
        serde_json::to_string_pretty(&oc)? + "\n",
    )?;
    Ok(oc)
}

/// Follows a JSON-lines file as it grows.
struct Tail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    events: Vec<serde_json::Value>,
}

impl Tail {
    /// Reads what was appended; true when new events arrived.
    fn poll(&mut self) -> bool {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return false;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return false;
        }
        let mut buf = Vec::new();
        let Ok(n) = f.read_to_end(&mut buf) else {
            return false;
        };
        if n == 0 {
            return false;
        }
        self.offset += n as u64;
        self.partial.extend_from_slice(&buf);
        let mut got = false;
        while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line) {
                self.events.push(v);
                got = true;
            }
        }
        got
    }
}
