//! The run timeline (DESIGN.md "Timeline", "Decisions"): truncated at
//! launch, `launch` first, one JSON object per line written as it happens,
//! t_ms non-decreasing across threads; and `k3shim timeline`'s tables.

mod common;
mod sandbox;

use std::sync::Arc;

use common::*;
use launcher::timeline::{read_events, read_timeline, Timeline};
use launcher::timeline_report;
use serde_json::json;

#[test]
fn create_truncates_and_writes_the_launch_event_first() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.jsonl");
    std::fs::write(&p, "old run\n".repeat(100)).unwrap();
    let argv: Vec<String> = ["k3shim", "run", "--", "k3s", "server"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let tl = Timeline::create(Some(&p), &argv, json!({"kernel": "4.4.0", "gvisor": true})).unwrap();
    tl.emit("exec", json!({"pid": 7, "path": "/usr/local/bin/k3s"}));
    let ev = read_events(&p).unwrap();
    assert_eq!(ev.len(), 2, "the old content is gone");
    let l = &ev[0];
    assert_eq!(l["kind"], "launch");
    assert_eq!(l["t_ms"], 0);
    assert_eq!(l["argv"], json!(argv));
    assert_eq!(l["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(l["kernel"], "4.4.0");
    assert_eq!(l["gvisor"], true);
    assert!(
        l["wall_clock"].as_str().unwrap().ends_with('Z'),
        "RFC3339 UTC: {}",
        l["wall_clock"]
    );
    assert!(l["unix_ms"].as_u64().unwrap() > 1_600_000_000_000);
    // The file reads as it was written: t_ms and kind first on every line.
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.lines().all(|l| l.starts_with("{\"t_ms\":")));
    assert!(
        text.lines()
            .nth(1)
            .unwrap()
            .starts_with("{\"t_ms\":0,\"kind\":\"exec\",\"pid\":7,")
            || text.lines().nth(1).unwrap().contains("\"kind\":\"exec\"")
    );
}

#[test]
fn each_event_is_on_disk_as_soon_as_emit_returns() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.jsonl");
    let tl = Timeline::create(Some(&p), &[], json!({})).unwrap();
    for n in 0..5 {
        tl.emit("probe", json!({"attempt": n}));
        // Another reader (or a post-mortem after a crash) sees every line so far.
        assert_eq!(read_events(&p).unwrap().len(), n + 2);
    }
}

#[test]
fn eight_threads_emitting_at_once_leave_whole_lines_with_non_decreasing_t_ms() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.jsonl");
    let tl = Timeline::create(Some(&p), &["k3shim".into()], json!({})).unwrap();
    let barrier = Arc::new(std::sync::Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|th| {
            let (tl, barrier) = (tl.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for n in 0..2000 {
                    tl.emit("write", json!({"pid": th, "comm": "kubelet", "path": "/proc/sys/vm/panic_on_oom", "old": "1\n", "new": format!("{n}\n"), "result": "ok"}));
                    if n % 500 == 0 {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let ev = read_events(&p).expect("every line parses");
    assert_eq!(ev.len(), 1 + 8 * 2000);
    let ts: Vec<u64> = ev.iter().map(|e| e["t_ms"].as_u64().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "t_ms never decreases");
    for th in 0..8 {
        // Per thread, events keep their order.
        let ns: Vec<String> = ev
            .iter()
            .filter(|e| e["pid"] == th)
            .map(|e| e["new"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ns.len(), 2000);
        assert!(ns.iter().enumerate().all(|(i, n)| *n == format!("{i}\n")));
    }
}

#[test]
fn a_disabled_timeline_counts_time_and_writes_nothing() {
    let tl = Timeline::disabled();
    tl.emit("exec", json!({}));
    std::thread::sleep(std::time::Duration::from_millis(3));
    assert!(tl.t_ms() >= 3);
    assert!(!tl.is_enabled());
}

#[test]
fn a_damaged_line_is_named_and_skipped_and_the_rest_of_the_file_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.jsonl");
    // A garbled line, an absurd t_ms, a line without kind, and the truncated
    // last line a killed run leaves behind.
    std::fs::write(
        &p,
        concat!(
            "{\"t_ms\":0,\"kind\":\"launch\"}\n",
            "\n",
            "x\u{1}garbage\n",
            "{\"t_ms\":18446744073709551615,\"kind\":\"exec\"}\n",
            "{\"t_ms\":5,\"kind\":\"exec\",\"path\":\"/bin/k3s\"}\n",
            "{\"t_ms\":6}\n",
            "[1]\n",
            "{\"t_ms\":9,\"kind\":\"ex"
        ),
    )
    .unwrap();
    let t = read_timeline(&p).unwrap();
    assert_eq!(
        t.events.len(),
        2,
        "launch and exec are kept: {:?}",
        t.events
    );
    assert_eq!(t.events[1]["path"], "/bin/k3s");
    let f = p.display().to_string();
    let want = [
        (3, "not a JSON line"),
        (
            4,
            "\"t_ms\" 18446744073709551615 is not a time in ms since launch",
        ),
        (6, "missing or non-string \"kind\""),
        (7, "not a JSON object"),
        (8, "truncated"),
    ];
    assert_eq!(t.skipped.len(), want.len(), "{:?}", t.skipped);
    for ((line, what), got) in want.iter().zip(&t.skipped) {
        assert!(
            got.starts_with(&format!("{f}:{line}: ")) && got.contains(what),
            "{got:?} should name line {line}: {what}"
        );
        assert!(!got.contains('\n'));
    }
    let w = t.warning().unwrap();
    assert!(
        w.starts_with("skipped 5 damaged timeline lines: ") && w.ends_with("and 2 more"),
        "{w}"
    );
    // read_events is the same, without the messages.
    assert_eq!(read_events(&p).unwrap().len(), 2);
}

#[test]
fn a_timeline_with_no_usable_event_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.jsonl");
    std::fs::write(&p, "{\"kind\":\"launch\"}\n").unwrap();
    let e = read_events(&p).unwrap_err().to_string();
    assert!(
        e.contains(&format!(
            "timeline {}: no usable event (1 damaged line, the first: {}:1: no \"t_ms\")",
            p.display(),
            p.display()
        )),
        "{e}"
    );
    std::fs::write(&p, "").unwrap();
    assert!(read_events(&p)
        .unwrap_err()
        .to_string()
        .contains("no events (an empty file)"));
    let e = format!(
        "{:#}",
        read_events(&dir.path().join("missing")).unwrap_err()
    );
    assert!(
        e.contains("missing: cannot open") && !e.contains('\n'),
        "{e}"
    );
}

#[test]
fn the_table_shows_milestones_periods_probes_holds_hooks_and_the_exit() {
    let t = timeline_report::table(&fixture_run(1.0));
    println!("{t}");
    // Milestones in order, with the period from the previous one.
    let order = [
        "| launch",
        "first exec /usr/local/bin/k3s",
        "log: apiserver-start",
        "log: kubelet-start",
        "gate open (attempt 13)",
        "hook 1 start",
        "hook 1 end (status 0)",
        "hook 2 start",
        "log: node-ready",
        "hook 2 end (status 0)",
        "exit 143 (SIGTERM)",
    ];
    let mut at = 0;
    for m in order {
        let pos = t[at..]
            .find(m)
            .unwrap_or_else(|| panic!("{m:?} after byte {at}:\n{t}"))
            + at;
        at = pos;
    }
    assert!(t.contains("|  4 | gate open (attempt 13)        |  9.051 |      5.051 | Period 4: log: kubelet-start → gate open (attempt 13)          |"), "{t}");
    assert!(t.contains("whole run") && t.contains("20.400"));
    // Probes summarized: errors, 503s, the first success.
    assert!(t.contains("| error: …t: client error (Connect): tcp connect error: Connection refused (os error 111) |     4 |"), "{t}");
    assert!(t.contains("| status 503"));
    assert!(t.contains("| status 200 (ready)"));
    assert!(t.contains("13 attempts; first success at 9.050 s (attempt 13)"));
    // Holds: per rule, with total and max wait.
    assert!(
        t.contains("| connect 127.0.0.1:6443 |     2 |        2 |         13.604 |        6.952 |"),
        "{t}"
    );
    assert!(t.contains("3 holds, total wait 19.356 s, max wait 6.952 s"));
    // Hooks, redirects, writes, signals.
    assert!(t.contains("kubectl apply -f /srv/manifests"));
    assert!(t.contains("redirects (first per path) |     8 |"));
    assert!(t.contains("writes (1 failed)"));
    assert!(t.contains("signal SIGTERM"));
    assert!(t.contains("exit code 143 (target died of SIGTERM)"));
}

#[test]
fn the_table_of_a_run_cut_short_says_so() {
    let mut ev = fixture_run(1.0);
    ev.retain(|e| e["t_ms"].as_u64().unwrap() < 5000);
    let t = timeline_report::table(&ev);
    assert!(t.contains("no exit event"), "{t}");
    assert!(t.contains("the gate never opened"));
    assert!(t.contains("never released"));
}

#[test]
fn compare_puts_two_runs_side_by_side_with_the_difference_per_period() {
    let a = fixture_run(1.0);
    let mut b = fixture_run(1.5);
    // Run B timed out instead of opening and has an extra milestone.
    for e in b.iter_mut() {
        if e["kind"] == "gate_open" {
            *e = json!({"t_ms": e["t_ms"], "kind": "gate_timeout", "attempts": 13, "action": "run-hooks"});
        }
    }
    b.push(
        json!({"t_ms": 1, "kind": "log_match", "name": "extra", "line": "x", "stream": "stdout"}),
    );
    b.sort_by_key(|e| e["t_ms"].as_u64().unwrap());
    let c = timeline_report::compare(&a, &b);
    println!("{c}");
    assert!(c.contains("A: command: k3shim run"));
    assert!(c.contains("B: command: k3shim run"));
    assert!(
        c.contains("gate open (attempt 13) / B: gate timeout"),
        "{c}"
    );
    assert!(c.contains("|  5 | gate open (attempt 13) / B: gate timeout |   9.051 |  13.577 |        5.051 |        7.577 |           +2.526 |"), "{c}");
    assert!(c.contains("|  1 | log: extra                               |       - |   0.001 |            - |        0.001 |                - |"), "{c}");
    assert!(c.contains("|  2 | first exec /usr/local/bin/k3s            |   0.014 |   0.021 |        0.014 |        0.021 |           +0.007 |"), "periods run from the last milestone both runs have:\n{c}");
    assert!(c.contains("| whole run"));
    assert!(
        c.contains("+10.200"),
        "whole run differs by 30.600 - 20.400:\n{c}"
    );
    assert!(c.contains("probes: A 13 attempts, B 13"));
}

/// `k3shim timeline FILE --html OUT` on a damaged file: a line with an
/// absurd t_ms used to make the chart's time axis billions of ticks long (the
/// command hung and grew past 1.6 GB). Now the line is named and skipped, the
/// command ends at once within 512 MiB of address space, and its output is small.
#[test]
fn timeline_html_of_a_damaged_file_ends_quickly_in_bounded_memory_and_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let tl = dir.path().join("t.jsonl");
    let mut ev = fixture_run(1.0);
    ev.push(json!({"t_ms": 18446744073709551615u64, "kind": "exit", "code": 0}));
    let mut text: String = ev.iter().map(|e| format!("{e}\n")).collect();
    text.push_str("{\"t_ms\":9007199254740992,\"kind\":\"write\",\"path\":\"/proc/sys/x\"}\n");
    text.push_str("{\"t_ms\":20500,\"kind\":\"sig");
    std::fs::write(&tl, text).unwrap();
    let html = dir.path().join("out.html");
    let o = sandbox::native(&format!(
        "ulimit -v 524288; exec timeout 30 {} timeline {} --html {}",
        sandbox::k3shim().display(),
        tl.display(),
        html.display()
    ));
    let err = sandbox::stderr(&o);
    assert!(o.status.success(), "exit {:?}\n{err}", o.status.code());
    assert!(
        err.contains(&format!(
            "k3shim: warning: skipped 2 damaged timeline lines: {}:",
            tl.display()
        )) && err.contains("\"t_ms\" 18446744073709551615 is not a time")
            && err.contains("truncated"),
        "{err}"
    );
    let len = std::fs::metadata(&html).unwrap().len();
    assert!(len < 2_000_000, "the page stays small: {len} bytes");
    // A t_ms at the limit (2^53 ms) is a valid, if odd, time: the axis stays short.
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.matches("class=\"tick\"").count() < 60,
        "a bounded number of ticks"
    );
}

mod any_timeline {
    //! Whatever a timeline holds (times in any order, up to 2^53 ms, holds
    //! released before they start, missing fields), the table, the comparison
    //! and the page are made without a panic, and the page stays small.
    use launcher::timeline::MAX_T_MS;
    use launcher::timeline_report;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn event() -> impl Strategy<Value = Value> {
        let t = prop_oneof![0u64..30_000, 0u64..=MAX_T_MS, Just(MAX_T_MS)];
        let kind = prop::sample::select(vec![
            "launch",
            "exec",
            "log_match",
            "gate_open",
            "gate_timeout",
            "hook_start",
            "hook_end",
            "hold",
            "release",
            "probe",
            "redirect",
            "write",
            "signal",
            "exit",
            "hooks_skipped",
            "other",
        ]);
        (
            t,
            kind,
            0i64..4,
            prop::option::of(0u64..5_000),
            any::<bool>(),
        )
            .prop_map(|(t, kind, n, w, ok)| {
                json!({"t_ms": t, "kind": kind, "name": format!("m{n}"), "index": n, "pid": n,
                       "tid": n, "what": "connect x", "waited_ms": w, "ok": ok, "status": n,
                       "code": n, "signal": n, "path": "/proc/sys/x", "cmd": "true"})
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn reports_of_any_events_never_panic_and_stay_bounded(
            a in prop::collection::vec(event(), 1..60),
            b in prop::collection::vec(event(), 1..60),
        ) {
            let _ = timeline_report::table(&a);
            let _ = timeline_report::compare(&a, &b);
            let page = timeline_report::html(&a, Some(&b));
            prop_assert!(page.len() < 400_000 + 8_000 * (a.len() + b.len()), "{} bytes", page.len());
        }
    }
}
