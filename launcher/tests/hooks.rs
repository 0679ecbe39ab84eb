//! Post-start hooks (DESIGN.md "Readiness gate and hooks", "Decisions"):
//! a hook never starts before the gate opens; hooks run in order with
//! KUBECONFIG set; a failure stops the run with --hook-failure stop; when
//! the target exits, hooks not started never start and running ones are
//! terminated.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use launcher::gate::{self, GateConfig, GateHandle, TimeoutAction};
use launcher::hooks::{HookConfig, HookFailure, HookRunner};
use launcher::timeline::Timeline;
use serde_json::json;

fn timeline(dir: &Path) -> (Timeline, std::path::PathBuf) {
    let p = dir.join("timeline.jsonl");
    (
        Timeline::create(Some(&p), &["k3shim".into()], json!({})).unwrap(),
        p,
    )
}

fn gate_for(
    url: &str,
    timeout: Option<Duration>,
    action: TimeoutAction,
    tl: &Timeline,
) -> GateHandle {
    let c = GateConfig {
        url: url.into(),
        interval: Duration::from_millis(50),
        timeout,
        timeout_action: action,
        ..Default::default()
    };
    gate::start(c.validate().unwrap(), tl.clone())
}

async fn until_finished(r: &HookRunner) {
    let t0 = Instant::now();
    while !r.is_finished() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "hooks did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn hooks_start_only_after_the_gate_opens_in_order_with_kubeconfig_set() {
    let dir = tempfile::tempdir().unwrap();
    let (tl, path) = timeline(dir.path());
    let srv = http_server(Duration::from_millis(500), false).await;
    let gate = gate_for(&srv.url, None, TimeoutAction::RunHooks, &tl);
    let out = dir.path().join("out");
    let log = dir.path().join("hooks.log");
    let kc = dir.path().join("k3s.yaml");
    let cfg = HookConfig {
        hooks: vec![
            format!("echo \"first $KUBECONFIG\" >> {}", out.display()),
            format!(
                "echo second >> {}; echo 'to the log'; echo 'err too' >&2",
                out.display()
            ),
        ],
        failure: HookFailure::Continue,
        kubeconfig: Some(kc.clone()),
        log: Some(log.clone()),
        output: None,
    };
    let runner = HookRunner::start(cfg, gate.clone(), tl.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!out.exists(), "no hook before the gate opens");
    until_finished(&runner).await;
    runner.shutdown().await;

    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        format!("first {}\nsecond\n", kc.display())
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("to the log") && logged.contains("err too"),
        "hook output kept in the log: {logged:?}"
    );

    let ev = events(&path);
    let open = t_of(&ev, "gate_open");
    let starts = of_kind(&ev, "hook_start");
    let ends = of_kind(&ev, "hook_end");
    assert_eq!(starts.len(), 2);
    assert_eq!(ends.len(), 2);
    assert!(starts[0]["t_ms"].as_u64().unwrap() >= open);
    assert_eq!(starts[0]["index"], 1);
    assert_eq!(starts[1]["index"], 2);
    assert!(
        starts[1]["t_ms"].as_u64() >= ends[0]["t_ms"].as_u64(),
        "in order, one at a time"
    );
    for e in &ends {
        assert_eq!(e["status"], 0);
        assert_eq!(e["ok"], true);
        assert!(e["duration_ms"].is_u64());
    }
    let k = kinds(&ev);
    let gi = k.iter().position(|k| k == "gate_open").unwrap();
    assert!(k.iter().position(|k| k == "hook_start").unwrap() > gi);
}

#[tokio::test]
async fn a_gate_timeout_runs_hooks_or_skips_them_as_asked() {
    for (action, runs) in [
        (TimeoutAction::RunHooks, true),
        (TimeoutAction::SkipHooks, false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (tl, path) = timeline(dir.path());
        let srv = http_server(Duration::ZERO, true).await; // never ready
        let gate = gate_for(&srv.url, Some(Duration::from_millis(400)), action, &tl);
        let marker = dir.path().join("ran");
        let cfg = HookConfig {
            hooks: vec![format!("touch {}", marker.display())],
            ..Default::default()
        };
        let runner = HookRunner::start(cfg, gate, tl);
        until_finished(&runner).await;
        runner.shutdown().await;
        let ev = events(&path);
        assert_eq!(of_kind(&ev, "gate_timeout").len(), 1);
        assert_eq!(marker.exists(), runs, "{action:?}");
        assert_eq!(of_kind(&ev, "hook_start").len(), usize::from(runs));
        let skipped = of_kind(&ev, "hooks_skipped");
        assert_eq!(
            skipped.len(),
            usize::from(!runs),
            "{action:?}: {:?}",
            kinds(&ev)
        );
        if !runs {
            assert!(t_of(&ev, "hooks_skipped") >= t_of(&ev, "gate_timeout"));
            assert_eq!(
                skipped[0]["hooks"],
                json!([format!("touch {}", marker.display())])
            );
        }
    }
}

#[tokio::test]
async fn a_failing_hook_with_stop_requests_the_stop_and_later_hooks_never_run() {
    let dir = tempfile::tempdir().unwrap();
    let (tl, path) = timeline(dir.path());
    let never = dir.path().join("never");
    let cfg = HookConfig {
        hooks: vec![
            "true".into(),
            "exit 3".into(),
            format!("touch {}", never.display()),
        ],
        failure: HookFailure::Stop,
        ..Default::default()
    };
    let runner = HookRunner::start(cfg, GateHandle::already_open(), tl);
    let stop = tokio::time::timeout(Duration::from_secs(10), runner.stop_requested())
        .await
        .expect("stop requested");
    assert_eq!(stop.index, 2);
    assert_eq!(stop.cmd, "exit 3");
    assert!(runner.stop_fired().is_some());
    until_finished(&runner).await;
    runner.shutdown().await;
    assert!(!never.exists());
    let ev = events(&path);
    let ends = of_kind(&ev, "hook_end");
    assert_eq!(ends.len(), 2);
    assert_eq!(ends[1]["status"], 3);
    assert_eq!(ends[1]["ok"], false);
    assert_eq!(of_kind(&ev, "hook_stop")[0]["index"], 2);
    assert_eq!(
        of_kind(&ev, "hooks_not_run")[0]["hooks"],
        json!([format!("touch {}", never.display())])
    );
}

#[tokio::test]
async fn a_failing_hook_with_continue_lets_the_next_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let (tl, path) = timeline(dir.path());
    let cfg = HookConfig {
        hooks: vec!["exit 1".into(), "true".into()],
        ..Default::default()
    };
    let runner = HookRunner::start(cfg, GateHandle::already_open(), tl);
    until_finished(&runner).await;
    let stop = tokio::time::timeout(Duration::from_millis(100), runner.stop_requested()).await;
    assert!(stop.is_err(), "continue never requests a stop");
    runner.shutdown().await;
    let ends: Vec<_> = of_kind(&events(&path), "hook_end")
        .iter()
        .map(|e| e["status"].clone())
        .collect();
    assert_eq!(ends, [json!(1), json!(0)]);
}

#[tokio::test]
async fn shutdown_terminates_a_running_hook_and_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let (tl, path) = timeline(dir.path());
    let pidfile = dir.path().join("pid");
    let cfg = HookConfig {
        hooks: vec![
            format!("sleep 60 & echo $! > {}; wait", pidfile.display()),
            "touch never".into(),
        ],
        ..Default::default()
    };
    let runner = HookRunner::start(cfg, GateHandle::already_open(), tl);
    let t0 = Instant::now();
    while !pidfile.exists() || std::fs::read_to_string(&pidfile).unwrap().trim().is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sleeper: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let t1 = Instant::now();
    runner.shutdown().await;
    assert!(
        t1.elapsed() < Duration::from_secs(3),
        "SIGTERM was enough: {:?}",
        t1.elapsed()
    );
    // The hook's background child was in its process group and got the signal too.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !Path::new(&format!("/proc/{sleeper}")).exists()
            || std::fs::read_to_string(format!("/proc/{sleeper}/stat"))
                .unwrap()
                .contains(") Z")
    );
    let ev = events(&path);
    let end = of_kind(&ev, "hook_end")[0].clone();
    assert_eq!(end["killed"], "SIGTERM");
    assert_eq!(end["ok"], false);
    assert_eq!(of_kind(&ev, "hooks_not_run")[0]["reason"], "target exited");
    assert_eq!(of_kind(&ev, "hook_start").len(), 1);
}

#[tokio::test]
async fn a_hook_that_ignores_sigterm_gets_sigkill_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let (tl, path) = timeline(dir.path());
    let started = dir.path().join("started");
    let cfg = HookConfig {
        hooks: vec![format!(
            "trap '' TERM; touch {}; sleep 60",
            started.display()
        )],
        ..Default::default()
    };
    let runner = HookRunner::start(cfg, GateHandle::already_open(), tl);
    let t0 = Instant::now();
    while !started.exists() {
        assert!(t0.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t1 = Instant::now();
    runner.shutdown_with_grace(Duration::from_millis(300)).await;
    let took = t1.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let end = of_kind(&events(&path), "hook_end")[0].clone();
    assert_eq!(end["killed"], "SIGKILL");
    assert_eq!(end["signal"], 9);
}

#[tokio::test]
async fn when_the_target_exits_before_the_gate_opens_no_hook_runs_and_the_timeline_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (tl, path) = timeline(dir.path());
    let url = format!("http://127.0.0.1:{}/readyz", dead_port());
    let gate = gate_for(&url, None, TimeoutAction::RunHooks, &tl);
    let marker = dir.path().join("ran");
    let cfg = HookConfig {
        hooks: vec![format!("touch {}", marker.display()), "true".into()],
        ..Default::default()
    };
    let runner = HookRunner::start(cfg, gate.clone(), tl);
    tokio::time::sleep(Duration::from_millis(200)).await;
    runner.shutdown().await;
    gate.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!marker.exists());
    let ev = events(&path);
    let nr = of_kind(&ev, "hooks_not_run");
    assert_eq!(nr.len(), 1);
    assert_eq!(nr[0]["reason"], "target exited before the gate opened");
    assert_eq!(nr[0]["hooks"].as_array().unwrap().len(), 2);
    assert!(of_kind(&ev, "hook_start").is_empty());
}

#[tokio::test]
async fn no_hooks_means_nothing_runs_and_nothing_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let (tl, path) = timeline(dir.path());
    let runner = HookRunner::start(HookConfig::default(), GateHandle::already_open(), tl);
    assert!(runner.is_finished());
    runner.shutdown().await;
    assert_eq!(kinds(&events(&path)), ["launch"]);
}

#[tokio::test]
async fn one_clone_can_wait_for_a_stop_while_another_shuts_the_hooks_down() {
    let dir = tempfile::tempdir().unwrap();
    let (tl, path) = timeline(dir.path());
    let cfg = HookConfig {
        hooks: vec!["sleep 60".into()],
        failure: HookFailure::Stop,
        ..Default::default()
    };
    let runner = HookRunner::start(cfg, GateHandle::already_open(), tl);
    let waiter = runner.clone();
    let watching = tokio::spawn(async move { waiter.stop_requested().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    tokio::time::timeout(Duration::from_secs(5), runner.shutdown())
        .await
        .expect("shutdown does not wait for the other clone");
    assert!(
        !watching.is_finished(),
        "a hook killed at shutdown is not a --hook-failure stop"
    );
    watching.abort();
    assert_eq!(of_kind(&events(&path), "hook_end")[0]["killed"], "SIGTERM");
}
