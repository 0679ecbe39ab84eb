//! `k3shim run` and `k3shim trace`: validate everything that can be wrong
//! before launching anything, then launch CMD under the engine with the gate,
//! holds, hooks, log matching and the timeline wired in.

use crate::cli::{FilterArg, HookFailureArg, ReleaseArg, RunArgs, TimeoutActionArg, TraceArgs};
use crate::gate::{self, GateConfig, GateHandle, GateOutcome, TimeoutAction};
use crate::holds::{describe_held, HoldRule, Release, ReleaseAt};
use crate::hooks::{HookConfig, HookFailure, HookRunner};
use crate::interrupt::Interrupt;
use crate::policy::ShimPolicy;
use crate::timeline::Timeline;
use crate::trace::{TraceOpts, TraceSink};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;
use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A failure with the exit status k3shim must return.
#[derive(Debug, thiserror::Error)]
#[error("{msg}")]
pub struct Fail {
    pub code: i32,
    pub msg: String,
}

fn fail(code: i32, msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Fail {
        code,
        msg: msg.into(),
    })
}

/// Finds CMD as the shell would: a name with a slash as is, else on PATH.
pub fn resolve_command(cmd: &OsString) -> Result<PathBuf> {
    let c = Path::new(cmd);
    let shown = c.display().to_string();
    let check = |p: &Path| -> Result<Option<PathBuf>> {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => Err(fail(
                126,
                format!("{}: is a directory, not a program", p.display()),
            )),
            Ok(m) => {
                use std::os::unix::fs::PermissionsExt;
                if m.permissions().mode() & 0o111 == 0 {
                    Err(fail(
                        126,
                        format!("{}: not executable (chmod +x it)", p.display()),
                    ))
                } else {
                    Ok(Some(p.to_path_buf()))
                }
            }
            Err(_) => Ok(None),
        }
    };
    if cmd.as_bytes().contains(&b'/') {
        let abs = if c.is_absolute() {
            c.to_path_buf()
        } else {
            std::env::current_dir()?.join(c)
        };
        return check(&abs)?.ok_or_else(|| fail(127, format!("{shown}: no such file")));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    for dir in std::env::split_paths(&path) {
        if let Some(p) = check(&dir.join(c))? {
            return Ok(p);
        }
    }
    Err(fail(127, format!("{shown}: command not found in PATH")))
}

/// NAME=REGEX
fn parse_log_matches(v: &[String]) -> Result<Vec<(String, regex::Regex)>> {
    v.iter()
        .map(|s| {
            let (n, r) = s
                .split_once('=')
                .ok_or_else(|| anyhow!("--log-match {s:?}: expected NAME=REGEX"))?;
            if n.is_empty() {
                bail!("--log-match {s:?}: empty NAME");
            }
            let re = regex::Regex::new(r).map_err(|e| {
                anyhow!(
                    "--log-match {n}: bad regex: {}",
                    e.to_string().lines().last().unwrap_or("")
                )
            })?;
            Ok((n.to_string(), re))
        })
        .collect()
}

fn gate_config(a: &RunArgs) -> Result<Option<GateConfig>> {
    if a.gate_url.is_none() && a.gate_kubeconfig.is_none() {
        if a.gate_timeout.is_some() {
            bail!("--gate-timeout needs --gate-url or --gate-kubeconfig");
        }
        return Ok(None);
    }
    let timeout = match a.gate_timeout {
        Some(t) if !(t >= 0.0 && t.is_finite() && t < 1e9) => {
            bail!("--gate-timeout {t}: expected a number of seconds (0 waits for ever)")
        }
        Some(0.0) => None,
        Some(t) => Some(Duration::from_secs_f64(t)),
        None => Some(gate::DEFAULT_TIMEOUT),
    };
    if a.gate_successes == 0 {
        bail!("--gate-successes 0: at least 1 successful probe is needed");
    }
    if a.gate_interval_ms == 0 {
        bail!("--gate-interval-ms 0: the interval between probes must be at least 10");
    }
    if a.gate_attempt_timeout_ms == 0 {
        bail!("--gate-attempt-timeout-ms 0: an attempt needs more than 0 ms");
    }
    Ok(Some(GateConfig {
        url: a.gate_url.clone().unwrap_or_default(),
        kubeconfig: a.gate_kubeconfig.clone(),
        insecure: a.gate_insecure,
        expect_status: a.gate_status,
        successes: a.gate_successes,
        interval: Duration::from_millis(a.gate_interval_ms.max(10)),
        attempt_timeout: Duration::from_millis(a.gate_attempt_timeout_ms.max(10)),
        timeout,
        timeout_action: match a.gate_timeout_action {
            TimeoutActionArg::RunHooks => TimeoutAction::RunHooks,
            TimeoutActionArg::SkipHooks => TimeoutAction::SkipHooks,
        },
    }))
}

/// Where `path` really is: symlinks (and magic links such as /dev/fd/N) of
/// its longest existing prefix resolved, the rest appended as given.
fn real_location(path: &Path) -> PathBuf {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(path)
    };
    if let Ok(p) = std::fs::canonicalize(&abs) {
        return p;
    }
    match (abs.parent(), abs.file_name()) {
        (Some(dir), Some(name)) if dir != abs => real_location(dir).join(name),
        // "..", "/" or a name that is no file (pipe:[123]): as it is.
        _ => abs,
    }
}

/// k3shim opens its own output files itself, untraced: one under /proc/sys
/// would write the machine's real entry. Refused before anything is launched.
pub(crate) fn refuse_proc_sys(flag: &str, path: &Path) -> Result<()> {
    let real = real_location(path);
    if real.starts_with("/proc/sys") {
        let via = if real.as_path() != path {
            format!(" (it is {})", real.display())
        } else {
            String::new()
        };
        bail!(
            "{flag} {}{via}: k3shim does not write its own output under /proc/sys (that would change the machine); choose another file",
            path.display()
        );
    }
    Ok(())
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-int array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe2: {}", std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Copies one of CMD's output streams through, line by line, to our own stream
/// and the log file, and marks lines that match a pattern.
fn pump(
    read: OwnedFd,
    stream: &'static str,
    matches: Arc<Vec<(String, regex::Regex)>>,
    log: Option<Arc<Mutex<std::fs::File>>>,
    timeline: Timeline,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let pumper = std::thread::Builder::new()
        .name(format!("k3shim-{stream}"))
        .stack_size(128 * 1024);
    pumper.spawn(move || {
        let mut r = std::io::BufReader::new(std::fs::File::from(read));
        let mut line = Vec::new();
        let mut seen: std::collections::HashSet<String> = Default::default();
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if stream == "stdout" {
                let mut o = std::io::stdout().lock();
                let _ = o.write_all(&line);
                let _ = o.flush();
            } else {
                let _ = std::io::stderr().lock().write_all(&line);
            }
            if let Some(f) = &log {
                if let Ok(mut f) = f.lock() {
                    let _ = f.write_all(&line);
                }
            }
            if matches.is_empty() {
                continue;
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\n', '\r']);
            for (name, re) in matches.iter() {
                if re.is_match(text) {
                    let first = seen.insert(name.clone());
                    timeline.emit(
                        "log_match",
                        json!({"name": name, "line": text, "stream": stream, "first": first}),
                    );
                }
            }
        }
    })
}

/// The backend for this run: `--backend`, else K3SHIM_BACKEND, else auto.
fn choose_backend(a: &RunArgs, trace: bool) -> Result<crate::mount_backend::Choice> {
    use crate::cli::BackendArg;
    let mut asked =
        crate::mount_backend::requested(a.backend).map_err(|e| fail(2, e.to_string()))?;
    let blocker = if trace {
        Some("k3shim trace stops every path syscall (seeing everything is its job): it uses ptrace")
    } else if a.filter == FilterArg::None {
        Some("--filter none stops every syscall: that is the ptrace backend")
    } else if !a.binds.is_empty() {
        Some("--bind is served by the ptrace backend only")
    } else {
        None
    };
    // K3SHIM_BACKEND=mount (test scripts) does not make trace or --bind fail.
    if a.backend.is_none() && asked == BackendArg::Mount && blocker.is_some() {
        asked = BackendArg::Auto;
    }
    crate::mount_backend::choose(asked, blocker).map_err(|e| fail(2, e))
}

/// Runs `k3shim run` (trace = None) or `k3shim trace`.
pub fn run(a: &RunArgs, trace: Option<&TraceArgs>) -> Result<i32> {
    // 1. Everything that can be wrong, before anything is launched.
    let program = resolve_command(&a.cmd[0])?;
    let target = shim::inspect::inspect(&program).map_err(|e| fail(126, e))?;
    let holds = a
        .holds
        .iter()
        .map(|h| HoldRule::parse(h))
        .collect::<Result<Vec<_>>>()?;
    let gate_cfg = gate_config(a)?;
    if !holds.is_empty() && gate_cfg.is_none() {
        bail!("--hold needs a gate: give --gate-url or --gate-kubeconfig");
    }
    let prepared = match &gate_cfg {
        Some(c) => Some(c.validate()?),
        None => None,
    };
    let matches = Arc::new(parse_log_matches(&a.log_matches)?);
    if a.state.write_through && a.state.mode == Some(crate::cli::ModeArg::Shadow) {
        bail!("--write-through needs --mode overlay: in shadow mode no /proc/sys access reaches the kernel");
    }
    for (flag, p) in [
        ("--timeline", a.timeline.as_deref()),
        ("--log", a.log.as_deref()),
        ("-o", trace.and_then(|t| t.output.as_deref())),
    ] {
        if let Some(p) = p {
            refuse_proc_sys(flag, p)?;
        }
    }
    let release_at = match a.release {
        ReleaseArg::AfterHooks => ReleaseAt::AfterHooks,
        ReleaseArg::AtGate => ReleaseAt::AtGate,
    };
    let mut fo = crate::config::fakefs_options(&a.state)?;
    fo.binds = a
        .binds
        .iter()
        .map(|b| fakefs::parse_bind(b))
        .collect::<Result<Vec<_>, _>>()?;
    let mut fs = crate::config::open_fakefs(fo)?;
    if let Some(w) = fs.damage_warning() {
        eprintln!("k3shim: warning: {w}");
    }
    let trace_opts = match trace {
        Some(t) => Some(TraceOpts::from_args(t)?),
        None => None,
    };
    let trace_out: Option<Box<dyn Write + Send>> = match trace.and_then(|t| t.output.as_ref()) {
        Some(p) => Some(Box::new(std::io::BufWriter::new(
            std::fs::File::create(p)
                .with_context(|| format!("-o {}: cannot create", p.display()))?,
        ))),
        None if trace.is_some() => Some(Box::new(std::io::stderr())),
        None => None,
    };
    let log = match &a.log {
        Some(p) => Some(Arc::new(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("--log {}: cannot open", p.display()))?,
        ))),
        None => None,
    };
    // What a killed run left (mounts where they are not private, run directories).
    for line in crate::mount_backend::rundir::sweep() {
        eprintln!("k3shim: {line}");
    }
    let choice = choose_backend(a, trace.is_some())?;
    let mut mount_run = None;
    let mut namespace = None;
    let choice = match choice {
        crate::mount_backend::Choice::Mount { isolated, reason } => {
            match crate::mount_backend::MountRun::prepare(&mut fs, isolated) {
                Ok((m, ns)) => {
                    if !isolated {
                        eprintln!("{}", crate::mount_backend::SANDBOX_WIDE);
                    }
                    mount_run = Some(m);
                    namespace = Some(ns);
                    crate::mount_backend::Choice::Mount { isolated, reason }
                }
                Err(e) if reason.starts_with("auto") => {
                    eprintln!("k3shim: mount backend unavailable ({e:#}); using ptrace");
                    crate::mount_backend::Choice::Ptrace {
                        reason: format!(
                            "auto: the mount backend's view could not be written: {e:#}"
                        ),
                    }
                }
                Err(e) => return Err(fail(2, format!("--backend mount: {e:#}"))),
            }
        }
        c => c,
    };
    let facts = shim::probe().map_err(|e| match e {
        shim::Error::AlreadyTraced(_) => fail(3, format!("cannot trace here: {e}")),
        _ => fail(3, format!("cannot trace here: {e}; run `k3shim doctor`")),
    })?;

    // 2. The timeline, then the threads (signals are blocked first so every thread inherits the mask).
    let argv: Vec<String> = std::env::args().collect();
    let timeline = Timeline::create(
        a.timeline.as_deref(),
        &argv,
        json!({
            "facts": facts,
            "target": {"path": program, "machine": target.machine, "static": target.is_static, "go": target.is_go},
            "state": fs.state_dir(),
            "mode": format!("{:?}", fs.mode()).to_lowercase(),
            "filter": format!("{:?}", a.filter).to_lowercase(),
        }),
    )
    .with_context(|| format!("--timeline {}: cannot create", a.timeline.as_deref().unwrap_or(Path::new("")).display()))?;
    timeline.emit(
        "backend",
        json!({"backend": choice.name(), "reason": choice.reason()}),
    );
    // Without a gate nothing is held.
    let release = if prepared.is_some() {
        Release::new()
    } else {
        Release::already_open()
    };
    let interrupt = Interrupt::install(timeline.clone(), release.clone());
    // One worker is plenty for the gate's probes and the hooks; small stacks
    // keep the tracer's footprint down (gVisor counts a whole stack as resident).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(4)
        .thread_stack_size(256 * 1024)
        .enable_all()
        .thread_name("k3shim-gate")
        .build()?;

    // 3. The target's output goes through us only when we need to see it.
    let mut stdio: [Option<OwnedFd>; 3] = Default::default();
    let mut pumps = Vec::new();
    if !matches.is_empty() || log.is_some() {
        for (i, name) in [(1usize, "stdout"), (2, "stderr")] {
            let (r, w) = pipe()?;
            stdio[i] = Some(w);
            pumps.push(
                pump(r, name, matches.clone(), log.clone(), timeline.clone()).context(
                    "cannot start a thread to copy CMD's output (out of memory or threads?)",
                )?,
            );
        }
    }

    // Hook output takes the same path (matched, logged, then to our stderr), so a
    // hook's answer (`kubectl get nodes`) can be a milestone. Not joined at exit:
    // the write end lives as long as the hook runner.
    let hook_output = if !a.hooks.is_empty() && (!matches.is_empty() || log.is_some()) {
        let (r, w) = pipe()?;
        pump(r, "hook", matches.clone(), log.clone(), timeline.clone()).context(
            "cannot start a thread to copy the hooks' output (out of memory or threads?)",
        )?;
        Some(Arc::new(w))
    } else {
        None
    };

    // 4. Launch.
    let mut fixes = shim::Fixes::default();
    for f in &a.no_fix {
        match f.as_str() {
            "statx-no-automount" => fixes.statx_no_automount = false,
            other => bail!("--no-fix {other:?}: unknown fix (known: statx-no-automount)"),
        }
    }
    let trap_connect = holds.iter().any(HoldRule::needs_connect);
    let mut all = trace.map(|t| t.all).unwrap_or(false);
    if let (Some(o), Some(t)) = (&trace_opts, trace) {
        // -e trace=SET names syscalls the path filter may not stop: stop
        // every syscall when it stops none of them, else say what is missed.
        let unseen = o.unseen_with_path_filter(trap_connect);
        let expr = t.expr.as_deref().unwrap_or("");
        if !all && o.needs_every_syscall(trap_connect) {
            eprintln!("k3shim: trace: -e {expr}: the path filter stops none of these syscalls, so every syscall is stopped (as with --all; slower)");
            all = true;
        } else if !all && !unseen.is_empty() {
            let shown: Vec<&str> = unseen.iter().take(6).map(String::as_str).collect();
            eprintln!(
                "k3shim: trace: -e {expr}: {} of these syscalls ({}{}) do not stop under the path filter and are not shown: add --all to see them",
                unseen.len(),
                shown.join(", "),
                if unseen.len() > shown.len() { ", ..." } else { "" }
            );
        }
    }
    let filter = if all || a.filter == FilterArg::None {
        shim::FilterMode::Everything
    } else {
        shim::FilterMode::Paths
    };
    let no_new_privs = !caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_ADMIN,
    )
    .unwrap_or(false);
    let make_plan = |stdio, namespace: Option<shim::spawn::Namespace>| shim::Plan {
        program: program.clone(),
        argv: a.cmd.clone(),
        env: None,
        cwd: None,
        filter,
        trap_connect,
        report_syscalls: trace.is_some(),
        no_new_privs,
        stdio,
        fixes,
        paths: if namespace.is_some() {
            shim::filter::PathTraps::Mutations
        } else {
            shim::filter::PathTraps::All
        },
        namespace,
    };
    // A copy of CMD's stdio in case the mount backend's setup fails and CMD
    // is started again under ptrace.
    let spare: [Option<OwnedFd>; 3] = if namespace.is_some() {
        [0, 1, 2].map(|i| stdio[i].as_ref().and_then(|f| f.try_clone().ok()))
    } else {
        Default::default()
    };
    let auto = choice.reason().starts_with("auto");
    let started = shim::Tracer::start(make_plan(stdio, namespace), facts.clone());
    let mut tracer = match started {
        // The copies must go: CMD's output pumps end when every write end is closed.
        Ok(t) => {
            drop(spare);
            t
        }
        Err(shim::Error::Namespace(f)) => {
            let why = shim::Error::Namespace(f).to_string();
            if let Some(m) = mount_run.take() {
                crate::mount_backend::undo(m, &timeline);
            }
            if !auto {
                return Err(fail(
                    2,
                    format!("--backend mount: setting up the mount namespace failed: {why}"),
                ));
            }
            eprintln!("k3shim: mount backend setup failed ({why}); using ptrace");
            timeline.emit("backend", json!({"backend": "ptrace", "reason": format!("auto: the mount namespace setup failed: {why}")}));
            shim::Tracer::start(make_plan(spare, None), facts)
                .map_err(|e| fail(3, format!("{e}")))?
        }
        Err(e) => {
            if let Some(m) = mount_run.take() {
                crate::mount_backend::undo(m, &timeline);
            }
            return Err(fail(3, format!("{e}")));
        }
    };
    if let Some(m) = mount_run.as_mut() {
        m.watch_reads(timeline.clone());
    }
    interrupt.launched(tracer.pid(), tracer.waker());
    release.set_waker(tracer.waker());
    timeline.emit("spawned", json!({"pid": tracer.pid(), "path": program}));

    let _enter = rt.enter();
    let gate: Option<GateHandle> = prepared.map(|p| gate::start(p, timeline.clone()));
    let hook_gate = gate.clone().unwrap_or_else(GateHandle::already_open);
    let runner = HookRunner::start(
        HookConfig {
            hooks: a.hooks.clone(),
            failure: match a.hook_failure {
                HookFailureArg::Continue => HookFailure::Continue,
                HookFailureArg::Stop => HookFailure::Stop,
            },
            kubeconfig: a.gate_kubeconfig.clone(),
            log: a.log.clone(),
            output: hook_output,
        },
        hook_gate,
        timeline.clone(),
    );
    let stopped = Arc::new(AtomicBool::new(false));
    let watcher = {
        let r = runner.clone();
        let stopped = stopped.clone();
        let pid = tracer.pid();
        let release = release.clone();
        rt.spawn(async move {
            let s = r.stop_requested().await;
            stopped.store(true, Ordering::SeqCst);
            // A held thread would not see the SIGTERM.
            release.open(&format!("hook {} failed (--hook-failure stop)", s.index));
            // SAFETY: sending SIGTERM to our own traced child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        })
    };
    // Held syscalls continue once the gate has resolved and, with after-hooks, the hooks have ended.
    let has_hooks = !a.hooks.is_empty();
    let releaser = gate.clone().map(|g| {
        let r = runner.clone();
        let release = release.clone();
        rt.spawn(async move {
            let outcome = g.wait().await;
            let (why, hooks_run) = match outcome {
                GateOutcome::Opened { .. } => ("the gate opened", has_hooks),
                GateOutcome::TimedOut { .. } => (
                    "the gate timed out",
                    has_hooks && g.timeout_action() == TimeoutAction::RunHooks,
                ),
            };
            if release_at == ReleaseAt::AfterHooks && hooks_run {
                r.done().await;
                release.open(&format!(
                    "{why} and the hooks have ended (--release after-hooks)"
                ));
            } else {
                release.open(why);
            }
        })
    });
    let reminder = gate.clone().map(|g| {
        let release = release.clone();
        rt.spawn(gate::remind(g, move || {
            let held = release.held();
            (!held.is_empty()).then(|| describe_held(&held))
        }))
    });

    let trace_sink = trace_opts.map(|o| TraceSink::new(o, trace_out.expect("set with trace")));
    let mut policy = ShimPolicy::new(fs, holds, release.clone(), timeline.clone(), trace_sink);
    policy.interrupt = Some(interrupt.clone());
    policy.mount = mount_run.as_ref().map(|m| crate::policy::MountView {
        tree: m.tree(),
        real: m.real(),
    });
    let result = tracer.run(&mut policy);
    drop(tracer);
    if let Some(m) = mount_run.take() {
        for f in m.finish(&timeline) {
            eprintln!("k3shim: warning: could not remove a mount of this run: {f}; `k3shim doctor` retries");
        }
    }

    // 5. CMD is gone: collect output, stop hooks and the probe, and say how it ended.
    for p in pumps {
        let _ = p.join();
    }
    watcher.abort();
    let _ = rt.block_on(watcher);
    for t in [releaser, reminder].into_iter().flatten() {
        t.abort();
    }
    // Interrupted: hooks get the same short grace as what was left of the tree.
    match interrupt.received() {
        Some(_) => rt.block_on(runner.shutdown_with_grace(crate::interrupt::GRACE)),
        None => rt.block_on(runner.shutdown()),
    }
    if let Some(g) = &gate {
        g.stop();
    }
    if let Some(t) = policy.trace.as_mut() {
        t.finish();
    }
    let status = result.map_err(|e| fail(3, format!("tracer failed: {e}")))?;
    let (code, signal, msg) = match status {
        shim::ExitStatus::Code(c) => (c, None, None),
        shim::ExitStatus::Signal(s) => (128 + s, Some(s), None),
        shim::ExitStatus::ExecFailed { stage, errno } => {
            let e = std::io::Error::from_raw_os_error(errno);
            let what = match stage {
                'X' => "exec",
                'S' => "installing the seccomp filter",
                'C' => "chdir",
                _ => "setting no_new_privs",
            };
            let code = if stage == 'X' && errno == libc::ENOENT {
                127
            } else {
                126
            };
            (
                code,
                None,
                Some(format!("{}: {what} failed: {e}", program.display())),
            )
        }
    };
    let code = if stopped.load(Ordering::SeqCst) && code == 0 {
        1
    } else {
        code
    };
    let mut ev = json!({"code": code, "redirects": policy.redirects, "writes": policy.writes});
    if let Some(s) = signal {
        ev["signal"] = json!(s);
    }
    if stopped.load(Ordering::SeqCst) {
        ev["reason"] = json!("hook failed (--hook-failure stop)");
    }
    timeline.emit("exit", ev);
    if let Some(m) = msg {
        return Err(fail(code, m));
    }
    if signal.is_some() && signal == interrupt.received() {
        // CMD died of the signal k3shim got and passed on: so does k3shim.
        crate::interrupt::die_by(signal.unwrap_or(0));
    }
    Ok(code)
}
