//! Post-start hooks: commands run with `sh -c`, in order, once the gate is
//! open. A hook never starts before the gate opens (or times out with
//! `run-hooks`). Each hook runs in its own process group so that shutdown
//! reaches whatever it started.

use std::fs::OpenOptions;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::gate::{GateHandle, GateOutcome, TimeoutAction};
use crate::timeline::Timeline;

/// What a failing hook (non-zero exit or signal) does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum HookFailure {
    /// Log it and run the next hook.
    #[default]
    Continue,
    /// Run no further hook and resolve [`HookRunner::stop_requested`]: the
    /// caller ends the traced tree with SIGTERM and exits non-zero.
    Stop,
}

impl std::str::FromStr for HookFailure {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "continue" => Ok(HookFailure::Continue),
            "stop" => Ok(HookFailure::Stop),
            _ => anyhow::bail!("--hook-failure {s:?}: expected continue or stop"),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct HookConfig {
    /// `--hook CMD`, in order.
    pub hooks: Vec<String>,
    pub failure: HookFailure,
    /// Exported as KUBECONFIG to every hook when given.
    pub kubeconfig: Option<PathBuf>,
    /// Hook stdout and stderr are appended here; else they go to k3shim's stderr.
    pub log: Option<PathBuf>,
    /// Hook stdout and stderr go to this pipe instead (k3shim copies it to the log
    /// and its stderr, and matches --log-match patterns in it).
    pub output: Option<std::sync::Arc<std::os::fd::OwnedFd>>,
}

/// Grace between SIGTERM and SIGKILL for hooks still running at shutdown.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// Why the runner ended a hook early or gave up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookStop {
    /// 1-based index of the hook that failed.
    pub index: usize,
    pub cmd: String,
}

/// Clones share the same hooks: e.g. one clone awaits `stop_requested`
/// while another calls `shutdown` when the target exits.
#[derive(Clone)]
pub struct HookRunner {
    task: std::sync::Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
    /// Set by shutdown: Some(grace) once the target exited.
    shutdown_tx: std::sync::Arc<watch::Sender<Option<Duration>>>,
    stop_rx: watch::Receiver<Option<HookStop>>,
    _stop_tx: std::sync::Arc<watch::Sender<Option<HookStop>>>,
    /// True once no hook runs or will run (all ended, skipped, or not run).
    done_rx: watch::Receiver<bool>,
}

impl HookRunner {
    /// Waits for the gate, then runs each hook with `sh -c` in order
    /// (KUBECONFIG set when given), emitting hook_start / hook_end. On
    /// GateOutcome::TimedOut with SkipHooks, emits hooks_skipped. With Stop,
    /// a failing hook resolves `stop_requested()`. Must be called inside a
    /// tokio runtime. With no hooks configured it does nothing and emits
    /// nothing.
    pub fn start(cfg: HookConfig, gate: GateHandle, timeline: Timeline) -> HookRunner {
        let (shutdown_tx, shutdown_rx) = watch::channel(None);
        let (stop_tx, stop_rx) = watch::channel(None);
        let (done_tx, done_rx) = watch::channel(cfg.hooks.is_empty());
        let stop_tx = std::sync::Arc::new(stop_tx);
        let st = stop_tx.clone();
        let task = if cfg.hooks.is_empty() {
            None
        } else {
            use tracing::Instrument as _;
            let span = tracing::debug_span!("hooks", count = cfg.hooks.len());
            Some(tokio::spawn(
                async move {
                    run(cfg, gate, timeline, shutdown_rx, st).await;
                    done_tx.send_replace(true);
                }
                .instrument(span),
            ))
        };
        HookRunner {
            task: std::sync::Arc::new(std::sync::Mutex::new(task)),
            shutdown_tx: std::sync::Arc::new(shutdown_tx),
            stop_rx,
            _stop_tx: stop_tx,
            done_rx,
        }
    }

    /// Resolves once no hook runs or will run: every hook has ended, or they
    /// were skipped or not run (at once when there are none). With
    /// `--release after-hooks`, held syscalls continue then.
    pub async fn done(&self) {
        let mut rx = self.done_rx.clone();
        if rx.wait_for(|d| *d).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Resolves when `--hook-failure stop` fired (never otherwise), with the
    /// hook that failed.
    pub async fn stop_requested(&self) -> HookStop {
        let mut rx = self.stop_rx.clone();
        let r = rx
            .wait_for(Option::is_some)
            .await
            .map(|v| v.clone().expect("Some"));
        match r {
            Ok(v) => v,
            Err(_) => std::future::pending().await,
        }
    }

    /// Whether `--hook-failure stop` fired.
    pub fn stop_fired(&self) -> Option<HookStop> {
        self.stop_rx.borrow().clone()
    }

    /// Whether every hook has finished (or none will run).
    pub fn is_finished(&self) -> bool {
        self.task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_none_or(|t| t.is_finished())
    }

    /// CMD exited: hooks not yet started never start (hooks_not_run, with
    /// reason "target exited before the gate opened" if the gate never
    /// opened); running hooks get SIGTERM, then SIGKILL after 5 s.
    pub async fn shutdown(self) {
        self.shutdown_with_grace(KILL_GRACE).await
    }

    /// As [`HookRunner::shutdown`] with another SIGTERM-to-SIGKILL grace.
    pub async fn shutdown_with_grace(self, grace: Duration) {
        self.shutdown_tx.send_replace(Some(grace));
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}

async fn shutdown_signalled(rx: &mut watch::Receiver<Option<Duration>>) -> Duration {
    let r = rx.wait_for(Option::is_some).await.map(|v| v.expect("Some"));
    match r {
        Ok(v) => v,
        Err(_) => std::future::pending().await,
    }
}

/// Runs the hook ($1) as its child, writes its exit status to $2, and ends the
/// way the hook ended (same code, or the same signal re-raised). The wrapper
/// ignores SIGTERM itself so that a hook that ignores it keeps running until
/// the SIGKILL after the grace period, as it would without the wrapper.
const HOOK_WRAPPER: &str = r#"sh -c "$1" & p=$!
trap '' TERM
wait "$p"; s=$?
echo "$s" > "$2"
if [ "$s" -gt 128 ]; then trap - TERM; kill -"$((s - 128))" $$; fi
exit "$s""#;

async fn run(
    cfg: HookConfig,
    gate: GateHandle,
    tl: Timeline,
    mut shutdown_rx: watch::Receiver<Option<Duration>>,
    stop_tx: std::sync::Arc<watch::Sender<Option<HookStop>>>,
) {
    let all: Vec<serde_json::Value> = cfg.hooks.iter().map(|h| json!(h)).collect();
    let outcome = tokio::select! {
        biased;
        o = gate.wait() => o,
        _ = shutdown_signalled(&mut shutdown_rx) => {
            // The gate may have resolved in the same instant; it did not let any hook start.
            let reason = if gate.is_open() { "target exited" } else { "target exited before the gate opened" };
            tl.emit("hooks_not_run", json!({"reason": reason, "hooks": all}));
            return;
        }
    };
    if matches!(outcome, GateOutcome::TimedOut { .. })
        && gate.timeout_action() == TimeoutAction::SkipHooks
    {
        tl.emit(
            "hooks_skipped",
            json!({"reason": "gate timed out (--gate-timeout-action skip-hooks)", "hooks": all}),
        );
        return;
    }
    for (i, cmd) in cfg.hooks.iter().enumerate() {
        let index = i + 1;
        if shutdown_rx.borrow().is_some() {
            tl.emit(
                "hooks_not_run",
                json!({"reason": "target exited", "hooks": &all[i..]}),
            );
            return;
        }
        // The hook runs under a wrapper shell that also writes its exit status to a
        // file: k3shim's tracer waits for any child (waitpid(-1) is how it hears from
        // every tracee), so it may reap the wrapper before tokio does. The file says
        // how the hook ended either way.
        let status_file =
            std::env::temp_dir().join(format!("k3shim-hook-{}-{index}.status", std::process::id()));
        let _ = std::fs::remove_file(&status_file);
        let mut command = tokio::process::Command::new("sh");
        command
            .arg("-c")
            .arg(HOOK_WRAPPER)
            .arg("k3shim-hook")
            .arg(cmd)
            .arg(&status_file)
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(k) = &cfg.kubeconfig {
            command.env("KUBECONFIG", k);
        }
        let piped = cfg
            .output
            .as_ref()
            .and_then(|fd| Some((fd.try_clone().ok()?, fd.try_clone().ok()?)));
        if let Some((o, e)) = piped {
            command.stdout(Stdio::from(o));
            command.stderr(Stdio::from(e));
        } else if let Some(log) = &cfg.log {
            match OpenOptions::new().create(true).append(true).open(log) {
                Ok(f) => {
                    let f2 = f.try_clone();
                    command.stdout(Stdio::from(f));
                    if let Ok(f2) = f2 {
                        command.stderr(Stdio::from(f2));
                    }
                }
                Err(e) => eprintln!(
                    "k3shim: hook log {}: {e}; hook output goes to stderr",
                    log.display()
                ),
            }
        } else {
            // Hook output goes to k3shim's stderr, not into the target's stdout stream.
            use std::os::fd::AsFd;
            if let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() {
                command.stdout(Stdio::from(fd));
            }
        }
        let t0 = Instant::now();
        let mut child = match command.spawn() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(
                    target: crate::log::NOTICE,
                    "hooks: hook {index} (`{cmd}`) failed: cannot start sh: {e}"
                );
                tl.emit("hook_start", json!({"index": index, "cmd": cmd}));
                tl.emit("hook_end", json!({"index": index, "cmd": cmd, "ok": false, "error": format!("cannot start sh: {e}"), "duration_ms": 0}));
                if cfg.failure == HookFailure::Stop {
                    request_stop(&tl, &stop_tx, index, cmd, &all[index..]);
                    return;
                }
                continue;
            }
        };
        let pid = child.id();
        tracing::debug!(index, cmd = %cmd, pid, "hook started");
        tl.emit(
            "hook_start",
            json!({"index": index, "cmd": cmd, "pid": pid}),
        );
        let (status, killed) = tokio::select! {
            s = child.wait() => (s, None),
            grace = shutdown_signalled(&mut shutdown_rx) => {
                let how = terminate(&mut child, pid, grace).await;
                (child.wait().await, Some(how))
            }
        };
        let duration_ms = t0.elapsed().as_millis() as u64;
        let mut f = json!({"index": index, "cmd": cmd, "duration_ms": duration_ms});
        let from_file = std::fs::read_to_string(&status_file)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok());
        let _ = std::fs::remove_file(&status_file);
        let ok = match (&status, from_file) {
            (Ok(s), _) => {
                describe_status(&mut f, s);
                s.success()
            }
            // Reaped by the tracer: the wrapper's file has the status.
            (Err(_), Some(code)) if code > 128 => {
                f["status"] = serde_json::Value::Null;
                f["signal"] = json!(code - 128);
                false
            }
            (Err(_), Some(code)) => {
                f["status"] = json!(code);
                code == 0
            }
            (Err(e), None) => {
                f["error"] = json!(e.to_string());
                false
            }
        };
        f["ok"] = json!(ok);
        if let Some(how) = killed {
            f["killed"] = json!(how);
        }
        if !ok && killed.is_none() {
            tracing::warn!(
                target: crate::log::NOTICE,
                "hooks: hook {index} (`{cmd}`) failed: {}",
                how_it_ended(&f)
            );
        } else {
            tracing::debug!(index, ok, duration_ms, "hook ended");
        }
        tl.emit("hook_end", f);
        if killed.is_some() {
            if index < all.len() {
                tl.emit(
                    "hooks_not_run",
                    json!({"reason": "target exited", "hooks": &all[index..]}),
                );
            }
            return;
        }
        if !ok && cfg.failure == HookFailure::Stop {
            request_stop(&tl, &stop_tx, index, cmd, &all[index..]);
            return;
        }
    }
}

fn request_stop(
    tl: &Timeline,
    stop_tx: &watch::Sender<Option<HookStop>>,
    index: usize,
    cmd: &str,
    rest: &[serde_json::Value],
) {
    tracing::warn!(
        target: crate::log::NOTICE,
        "hooks: hook {index} failed and --hook-failure stop: ending the run (SIGTERM to the command)"
    );
    tl.emit(
        "hook_stop",
        json!({"index": index, "cmd": cmd, "reason": "hook failed and --hook-failure stop"}),
    );
    if !rest.is_empty() {
        tl.emit(
            "hooks_not_run",
            json!({"reason": format!("hook {index} failed (--hook-failure stop)"), "hooks": rest}),
        );
    }
    stop_tx.send_replace(Some(HookStop {
        index,
        cmd: cmd.to_string(),
    }));
}

/// "exit status 1", "killed by SIGKILL", or the error, from a hook_end record.
fn how_it_ended(f: &serde_json::Value) -> String {
    if let Some(sig) = f["signal"].as_i64() {
        return format!("killed by {}", crate::interrupt::signal_name(sig as i32));
    }
    if let Some(c) = f["status"].as_i64() {
        return format!("exit status {c}");
    }
    f["error"].as_str().unwrap_or("unknown status").to_string()
}

fn describe_status(f: &mut serde_json::Value, s: &ExitStatus) {
    match (s.code(), s.signal()) {
        (Some(c), _) => f["status"] = json!(c),
        (None, Some(sig)) => {
            f["status"] = serde_json::Value::Null;
            f["signal"] = json!(sig);
        }
        _ => f["status"] = serde_json::Value::Null,
    }
}

/// SIGTERM to the hook's process group, SIGKILL after `grace`. Returns
/// "SIGTERM" or "SIGKILL": the signal that ended it.
async fn terminate(
    child: &mut tokio::process::Child,
    pid: Option<u32>,
    grace: Duration,
) -> &'static str {
    let Some(pid) = pid else { return "SIGTERM" };
    let pgid = nix::unistd::Pid::from_raw(pid as i32);
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_ok() {
        // The group may still hold children of the hook that ignored SIGTERM.
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        return "SIGTERM";
    }
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    "SIGKILL"
}
