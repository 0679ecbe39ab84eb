//! `k3shim timeline FILE [--compare FILE2] [--html OUT]`: milestones and the
//! periods between them (like the tables in the seeds' experiment notes),
//! holds, probes, hooks, redirects and the exit; two runs side by side; and
//! one self-contained HTML page with an SVG chart.
//!
//! Milestones: launch, the first exec, each log_match name (first
//! occurrence), gate_open or gate_timeout, each hook's start and end, exit.
//! A period is the time from one milestone to the next.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde_json::Value;

// ---------------------------------------------------------------- analysis

#[derive(Clone, Debug)]
struct Milestone {
    /// Stable across runs, for --compare: "launch", "exec", "log:NAME", "gate", "hook:1:start", "exit".
    key: String,
    label: String,
    t: u64,
}

#[derive(Clone, Debug)]
struct Hold {
    pid: i64,
    tid: i64,
    comm: String,
    what: String,
    t: u64,
    /// Release time; None while still held at the end of the timeline.
    end: Option<u64>,
    waited_ms: Option<u64>,
}

#[derive(Clone, Debug)]
struct Probe {
    t: u64,
    attempt: u64,
    status: Option<u64>,
    error: Option<String>,
    ok: bool,
    latency_ms: u64,
}

#[derive(Clone, Debug, Default)]
struct Hook {
    index: u64,
    cmd: String,
    start: Option<u64>,
    end: Option<u64>,
    status: Option<i64>,
    signal: Option<i64>,
    killed: Option<String>,
    error: Option<String>,
    ok: Option<bool>,
}

#[derive(Debug, Default)]
struct Analysis {
    argv: String,
    wall_clock: String,
    version: String,
    end_t: u64,
    milestones: Vec<Milestone>,
    holds: Vec<Hold>,
    probes: Vec<Probe>,
    gate: Option<(String, u64)>,
    hooks: Vec<Hook>,
    hook_notes: Vec<(u64, String)>,
    redirects: Vec<(u64, String)>,
    writes: Vec<(u64, String, bool)>,
    signals: Vec<(u64, String)>,
    exit: Option<(u64, Option<i64>, Option<String>)>,
}

fn u(v: &Value, k: &str) -> Option<u64> {
    v.get(k).and_then(Value::as_u64)
}
fn i(v: &Value, k: &str) -> Option<i64> {
    v.get(k).and_then(Value::as_i64)
}
fn s(v: &Value, k: &str) -> Option<String> {
    match v.get(k)? {
        Value::String(x) => Some(x.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(n.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// The end of a long error chain: its root cause is the informative part.
fn tail(s: &str, n: usize) -> String {
    let len = s.chars().count();
    if len <= n {
        s.to_string()
    } else {
        format!("…{}", s.chars().skip(len - n + 1).collect::<String>())
    }
}

fn signal_name(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => n.as_i64().map(|n| match n {
            1 => "SIGHUP".into(),
            2 => "SIGINT".into(),
            6 => "SIGABRT".into(),
            9 => "SIGKILL".into(),
            11 => "SIGSEGV".into(),
            13 => "SIGPIPE".into(),
            15 => "SIGTERM".into(),
            n => format!("signal {n}"),
        }),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn analyze(events: &[Value]) -> Analysis {
    let mut a = Analysis::default();
    let mut seen: HashMap<String, ()> = HashMap::new();
    let mut open_holds: HashMap<(i64, i64, String), usize> = HashMap::new();
    let mut hooks: BTreeMap<u64, Hook> = BTreeMap::new();
    let mut push = |a: &mut Analysis, key: String, label: String, t: u64| {
        if seen.insert(key.clone(), ()).is_none() {
            a.milestones.push(Milestone { key, label, t });
        }
    };
    for e in events {
        let t = u(e, "t_ms").unwrap_or(0);
        a.end_t = a.end_t.max(t);
        let kind = e.get("kind").and_then(Value::as_str).unwrap_or("");
        match kind {
            "launch" => {
                if let Some(argv) = e.get("argv").and_then(Value::as_array) {
                    a.argv = argv
                        .iter()
                        .map(|x| {
                            x.as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| x.to_string())
                        })
                        .collect::<Vec<_>>()
                        .join(" ");
                }
                a.wall_clock = s(e, "wall_clock").unwrap_or_default();
                a.version = s(e, "version").unwrap_or_default();
                push(&mut a, "launch".into(), "launch".into(), t);
            }
            "exec" => {
                let path = s(e, "path").unwrap_or_default();
                push(&mut a, "exec".into(), format!("first exec {path}"), t);
            }
            "log_match" => {
                let name = s(e, "name").unwrap_or_else(|| "?".into());
                push(&mut a, format!("log:{name}"), format!("log: {name}"), t);
            }
            "gate_open" => {
                let n = u(e, "attempts")
                    .map(|n| format!(" (attempt {n})"))
                    .unwrap_or_default();
                push(&mut a, "gate".into(), format!("gate open{n}"), t);
                a.gate.get_or_insert(("open".into(), t));
            }
            "gate_timeout" => {
                push(&mut a, "gate".into(), "gate timeout".into(), t);
                a.gate.get_or_insert(("timeout".into(), t));
            }
            "hook_start" | "hook_end" => {
                let idx = u(e, "index").unwrap_or(hooks.len() as u64 + 1);
                let h = hooks.entry(idx).or_insert_with(|| Hook {
                    index: idx,
                    ..Default::default()
                });
                h.cmd = s(e, "cmd").unwrap_or_default();
                if kind == "hook_start" {
                    h.start = Some(t);
                    push(
                        &mut a,
                        format!("hook:{idx}:start"),
                        format!("hook {idx} start"),
                        t,
                    );
                } else {
                    h.end = Some(t);
                    h.status = i(e, "status");
                    h.signal = i(e, "signal");
                    h.killed = s(e, "killed");
                    h.error = s(e, "error");
                    h.ok = e
                        .get("ok")
                        .and_then(Value::as_bool)
                        .or(Some(h.status == Some(0)));
                    let how = hook_result(h);
                    push(
                        &mut a,
                        format!("hook:{idx}:end"),
                        format!("hook {idx} end ({how})"),
                        t,
                    );
                }
            }
            "hooks_skipped" | "hooks_not_run" | "hook_stop" => {
                let reason = s(e, "reason").unwrap_or_default();
                let what = match kind {
                    "hooks_skipped" => "hooks skipped",
                    "hooks_not_run" => "hooks not run",
                    _ => "hook failure stops the run",
                };
                a.hook_notes.push((t, format!("{what}: {reason}")));
            }
            "hold" => {
                let h = Hold {
                    pid: i(e, "pid").unwrap_or(0),
                    tid: i(e, "tid").unwrap_or(0),
                    comm: s(e, "comm").unwrap_or_default(),
                    what: s(e, "what").unwrap_or_default(),
                    t,
                    end: None,
                    waited_ms: None,
                };
                open_holds.insert((h.pid, h.tid, h.what.clone()), a.holds.len());
                a.holds.push(h);
            }
            "release" => {
                let key = (
                    i(e, "pid").unwrap_or(0),
                    i(e, "tid").unwrap_or(0),
                    s(e, "what").unwrap_or_default(),
                );
                let waited = u(e, "waited_ms");
                if let Some(ix) = open_holds.remove(&key) {
                    let h = &mut a.holds[ix];
                    h.end = Some(t);
                    h.waited_ms = Some(waited.unwrap_or(t.saturating_sub(h.t)));
                } else {
                    // A release without its hold line (e.g. filtered): reconstruct it.
                    let w = waited.unwrap_or(0);
                    a.holds.push(Hold {
                        pid: key.0,
                        tid: key.1,
                        comm: s(e, "comm").unwrap_or_default(),
                        what: key.2,
                        t: t.saturating_sub(w),
                        end: Some(t),
                        waited_ms: Some(w),
                    });
                }
            }
            "probe" => a.probes.push(Probe {
                t,
                attempt: u(e, "attempt").unwrap_or(a.probes.len() as u64 + 1),
                status: u(e, "status"),
                error: s(e, "error"),
                ok: e.get("ok").and_then(Value::as_bool).unwrap_or(false),
                latency_ms: u(e, "latency_ms").unwrap_or(0),
            }),
            "redirect" => a.redirects.push((t, s(e, "path").unwrap_or_default())),
            "write" => {
                let result = s(e, "result").unwrap_or_default();
                let ok = result.is_empty() || result == "ok" || result == "0";
                a.writes.push((t, s(e, "path").unwrap_or_default(), ok));
            }
            "signal" => {
                let sig = e.get("signal").and_then(signal_name).unwrap_or_default();
                a.signals.push((t, sig));
            }
            "exit" => {
                let code = i(e, "code");
                let sig = e.get("signal").and_then(signal_name);
                let label = match (&code, &sig) {
                    (Some(c), Some(sg)) => format!("exit {c} ({sg})"),
                    (Some(c), None) => format!("exit {c}"),
                    (None, Some(sg)) => format!("exit ({sg})"),
                    _ => "exit".into(),
                };
                a.exit = Some((t, code, sig));
                push(&mut a, "exit".into(), label, t);
            }
            _ => {}
        }
    }
    a.hooks = hooks.into_values().collect();
    // Milestones in time order; ties keep the order of the file.
    a.milestones.sort_by_key(|m| m.t);
    a
}

fn hook_result(h: &Hook) -> String {
    if let Some(k) = &h.killed {
        return format!("killed, {k}");
    }
    if let Some(e) = &h.error {
        return short(e, 40);
    }
    match (h.status, h.signal) {
        (Some(c), _) => format!("status {c}"),
        (None, Some(sig)) => signal_name(&Value::from(sig)).unwrap_or_default(),
        _ => "?".into(),
    }
}

fn secs(ms: u64) -> String {
    format!("{:.3}", ms as f64 / 1000.0)
}

fn delta(a: Option<u64>, b: Option<u64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => {
            let d = b as i64 - a as i64;
            format!(
                "{}{:.3}",
                if d >= 0 { "+" } else { "-" },
                d.unsigned_abs() as f64 / 1000.0
            )
        }
        _ => "-".into(),
    }
}

// ---------------------------------------------------------------- tables

struct Table {
    title: String,
    headers: Vec<String>,
    /// Which columns are numbers (right-aligned).
    numeric: Vec<bool>,
    rows: Vec<Vec<String>>,
    notes: Vec<String>,
}

impl Table {
    fn new(title: &str, headers: &[(&str, bool)]) -> Table {
        Table {
            title: title.into(),
            headers: headers.iter().map(|h| h.0.to_string()).collect(),
            numeric: headers.iter().map(|h| h.1).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    #[allow(clippy::needless_range_loop)] // one index over widths, headers and cells
    fn text(&self, out: &mut String) {
        let _ = writeln!(out, "{}", self.title);
        if !self.rows.is_empty() {
            let n = self.headers.len();
            let mut w: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
            for r in &self.rows {
                for (c, cell) in r.iter().enumerate().take(n) {
                    w[c] = w[c].max(cell.chars().count());
                }
            }
            let line = |cells: &[String], out: &mut String| {
                out.push('|');
                for c in 0..n {
                    let cell = cells.get(c).map(String::as_str).unwrap_or("");
                    let pad = w[c] - cell.chars().count();
                    if self.numeric[c] {
                        let _ = write!(out, " {}{} |", " ".repeat(pad), cell);
                    } else {
                        let _ = write!(out, " {}{} |", cell, " ".repeat(pad));
                    }
                }
                out.push('\n');
            };
            line(&self.headers, out);
            out.push('|');
            for c in 0..n {
                let dashes = "-".repeat(w[c]);
                if self.numeric[c] {
                    let _ = write!(out, " {}: |", &dashes[..dashes.len().saturating_sub(1)]);
                } else {
                    let _ = write!(out, " {dashes} |");
                }
            }
            out.push('\n');
            for r in &self.rows {
                line(r, out);
            }
        }
        for n in &self.notes {
            let _ = writeln!(out, "  {n}");
        }
        out.push('\n');
    }

    fn html(&self, out: &mut String) {
        let _ = writeln!(out, "<h2>{}</h2>", esc(&self.title));
        if !self.rows.is_empty() {
            out.push_str("<table><thead><tr>");
            for (c, h) in self.headers.iter().enumerate() {
                let _ = write!(
                    out,
                    "<th class=\"{}\">{}</th>",
                    if self.numeric[c] { "num" } else { "" },
                    esc(h)
                );
            }
            out.push_str("</tr></thead><tbody>\n");
            for r in &self.rows {
                out.push_str("<tr>");
                for (c, cell) in r.iter().enumerate() {
                    let cls = if self.numeric.get(c).copied().unwrap_or(false) {
                        "num"
                    } else {
                        ""
                    };
                    let _ = write!(out, "<td class=\"{cls}\">{}</td>", esc(cell));
                }
                out.push_str("</tr>\n");
            }
            out.push_str("</tbody></table>\n");
        }
        for n in &self.notes {
            let _ = writeln!(out, "<p class=\"note\">{}</p>", esc(n));
        }
    }
}

fn summary_lines(a: &Analysis) -> Vec<String> {
    let mut v = Vec::new();
    if !a.argv.is_empty() {
        v.push(format!("command: {}", a.argv));
    }
    let mut l = String::new();
    if !a.wall_clock.is_empty() {
        let _ = write!(l, "started {}", a.wall_clock);
    }
    if !a.version.is_empty() {
        let _ = write!(l, " (k3shim {})", a.version);
    }
    let _ = write!(
        l,
        "{}ran {} s",
        if l.is_empty() { "" } else { "; " },
        secs(a.end_t)
    );
    match &a.exit {
        Some((_, code, sig)) => {
            let _ = write!(
                l,
                "; exit code {}",
                code.map(|c| c.to_string()).unwrap_or_else(|| "?".into())
            );
            if let Some(sig) = sig {
                let _ = write!(l, " (target died of {sig})");
            }
        }
        None => l.push_str("; no exit event (the run was cut short or is still going)"),
    }
    v.push(l);
    v
}

fn tables(a: &Analysis) -> Vec<Table> {
    let mut out = Vec::new();

    let mut m = Table::new(
        "Milestones and periods",
        &[
            ("#", true),
            ("milestone", false),
            ("t (s)", true),
            ("period (s)", true),
            ("period", false),
        ],
    );
    for (n, ms) in a.milestones.iter().enumerate() {
        let (p, pl) = if n == 0 {
            ("-".to_string(), String::new())
        } else {
            let prev = &a.milestones[n - 1];
            (
                secs(ms.t - prev.t),
                format!("Period {n}: {} → {}", prev.label, ms.label),
            )
        };
        m.rows
            .push(vec![n.to_string(), ms.label.clone(), secs(ms.t), p, pl]);
    }
    if let Some((t, _, _)) = &a.exit {
        m.rows.push(vec![
            "".into(),
            "whole run".into(),
            "".into(),
            secs(*t),
            "launch → exit".into(),
        ]);
    }
    out.push(m);

    let mut p = Table::new(
        "Probes",
        &[
            ("result", false),
            ("count", true),
            ("first (s)", true),
            ("last (s)", true),
        ],
    );
    if a.probes.is_empty() {
        p.notes.push("no probe (no gate)".into());
    } else {
        let mut groups: BTreeMap<String, (usize, u64, u64)> = BTreeMap::new();
        for pr in &a.probes {
            let key = match (pr.status, &pr.error) {
                (Some(s), _) => format!("status {s}{}", if pr.ok { " (ready)" } else { "" }),
                (None, Some(e)) => format!("error: {}", tail(e, 80)),
                _ => "?".into(),
            };
            let g = groups.entry(key).or_insert((0, pr.t, pr.t));
            g.0 += 1;
            g.2 = pr.t;
        }
        let mut rows: Vec<_> = groups.into_iter().collect();
        rows.sort_by_key(|(_, g)| g.1);
        for (k, g) in rows {
            p.rows.push(vec![k, g.0.to_string(), secs(g.1), secs(g.2)]);
        }
        let lat: Vec<u64> = a.probes.iter().map(|p| p.latency_ms).collect();
        let first_ok = a.probes.iter().find(|p| p.ok);
        p.notes.push(format!(
            "{} attempts; first success {}; latency max {} ms",
            a.probes.len(),
            first_ok
                .map(|p| format!("at {} s (attempt {})", secs(p.t), p.attempt))
                .unwrap_or_else(|| "never".into()),
            lat.iter().max().copied().unwrap_or(0)
        ));
    }
    match &a.gate {
        Some((how, t)) => p.notes.push(format!("gate {how} at {} s", secs(*t))),
        None if !a.probes.is_empty() => p.notes.push("the gate never opened".into()),
        None => {}
    }
    out.push(p);

    let mut h = Table::new(
        "Holds",
        &[
            ("what", false),
            ("holds", true),
            ("released", true),
            ("total wait (s)", true),
            ("max wait (s)", true),
            ("threads", false),
        ],
    );
    if a.holds.is_empty() {
        h.notes.push("no hold".into());
    } else {
        let mut groups: BTreeMap<&str, Vec<&Hold>> = BTreeMap::new();
        for hd in &a.holds {
            groups.entry(hd.what.as_str()).or_default().push(hd);
        }
        for (what, hs) in groups {
            let released = hs.iter().filter(|h| h.end.is_some()).count();
            let total: u64 = hs.iter().filter_map(|h| h.waited_ms).sum();
            let max = hs.iter().filter_map(|h| h.waited_ms).max().unwrap_or(0);
            let mut threads: Vec<String> = hs
                .iter()
                .map(|h| format!("{}[{}/{}]", h.comm, h.pid, h.tid))
                .collect();
            threads.dedup();
            let th = if threads.len() > 3 {
                format!("{} and {} more", threads[..3].join(", "), threads.len() - 3)
            } else {
                threads.join(", ")
            };
            h.rows.push(vec![
                what.to_string(),
                hs.len().to_string(),
                released.to_string(),
                secs(total),
                secs(max),
                th,
            ]);
        }
        let total: u64 = a.holds.iter().filter_map(|h| h.waited_ms).sum();
        let max = a
            .holds
            .iter()
            .filter_map(|h| h.waited_ms)
            .max()
            .unwrap_or(0);
        let unreleased = a.holds.iter().filter(|h| h.end.is_none()).count();
        h.notes.push(format!(
            "{} holds, total wait {} s, max wait {} s{}",
            a.holds.len(),
            secs(total),
            secs(max),
            if unreleased > 0 {
                format!(", {unreleased} never released")
            } else {
                String::new()
            }
        ));
    }
    out.push(h);

    let mut k = Table::new(
        "Hooks",
        &[
            ("#", true),
            ("command", false),
            ("start (s)", true),
            ("end (s)", true),
            ("duration (s)", true),
            ("result", false),
        ],
    );
    for hk in &a.hooks {
        let dur = match (hk.start, hk.end) {
            (Some(s), Some(e)) => secs(e.saturating_sub(s)),
            _ => "-".into(),
        };
        let res = if hk.end.is_some() {
            hook_result(hk)
        } else {
            "still running at the end".into()
        };
        k.rows.push(vec![
            hk.index.to_string(),
            short(&hk.cmd, 60),
            hk.start.map(secs).unwrap_or("-".into()),
            hk.end.map(secs).unwrap_or("-".into()),
            dur,
            res,
        ]);
    }
    for (t, n) in &a.hook_notes {
        k.notes.push(format!("{} s: {n}", secs(*t)));
    }
    if a.hooks.is_empty() && a.hook_notes.is_empty() {
        k.notes.push("no hook".into());
    }
    out.push(k);

    let mut r = Table::new(
        "Redirects, writes, signals",
        &[
            ("what", false),
            ("count", true),
            ("first (s)", true),
            ("last (s)", true),
            ("example", false),
        ],
    );
    if !a.redirects.is_empty() {
        let mut paths: Vec<&str> = a.redirects.iter().map(|r| r.1.as_str()).collect();
        paths.sort();
        paths.dedup();
        r.rows.push(vec![
            "redirects (first per path)".into(),
            a.redirects.len().to_string(),
            secs(a.redirects[0].0),
            secs(a.redirects.last().unwrap().0),
            a.redirects[0].1.clone(),
        ]);
    }
    if !a.writes.is_empty() {
        let failed = a.writes.iter().filter(|w| !w.2).count();
        r.rows.push(vec![
            format!("writes ({failed} failed)"),
            a.writes.len().to_string(),
            secs(a.writes[0].0),
            secs(a.writes.last().unwrap().0),
            a.writes[0].1.clone(),
        ]);
    }
    for (t, sig) in &a.signals {
        r.rows.push(vec![
            format!("signal {sig}"),
            "1".into(),
            secs(*t),
            secs(*t),
            String::new(),
        ]);
    }
    if r.rows.is_empty() {
        r.notes.push("none".into());
    }
    out.push(r);
    out
}

/// Milestones and periods between them, probes, holds, hooks, redirects
/// and the exit, as aligned text tables (valid Markdown).
pub fn table(events: &[Value]) -> String {
    let a = analyze(events);
    let mut out = String::new();
    for l in summary_lines(&a) {
        let _ = writeln!(out, "{l}");
    }
    out.push('\n');
    for t in tables(&a) {
        t.text(&mut out);
    }
    out.trim_end().to_string() + "\n"
}

/// Milestone keys of both runs in one order: A's, then B's own in B's order.
fn union_keys<'a>(a: &'a Analysis, b: &'a Analysis) -> Vec<(&'a str, &'a str)> {
    let mut keys: Vec<(&str, &str)> = a
        .milestones
        .iter()
        .map(|m| (m.key.as_str(), m.label.as_str()))
        .collect();
    for (n, m) in b.milestones.iter().enumerate() {
        if keys.iter().any(|k| k.0 == m.key) {
            continue;
        }
        // After the last key that precedes it in B.
        let pos = b.milestones[..n]
            .iter()
            .rev()
            .find_map(|p| keys.iter().position(|k| k.0 == p.key))
            .map(|p| p + 1)
            .unwrap_or(keys.len());
        keys.insert(pos, (m.key.as_str(), m.label.as_str()));
    }
    keys
}

fn compare_table(a: &Analysis, b: &Analysis) -> Table {
    let mut t = Table::new(
        "Runs compared (A, B): milestones and periods",
        &[
            ("#", true),
            ("milestone", false),
            ("A t (s)", true),
            ("B t (s)", true),
            ("A period (s)", true),
            ("B period (s)", true),
            ("Δ period B−A (s)", true),
        ],
    );
    let keys = union_keys(a, b);
    let at = |an: &Analysis, k: &str| an.milestones.iter().find(|m| m.key == k).map(|m| m.t);
    for (n, (k, label)) in keys.iter().enumerate() {
        let (ta, tb) = (at(a, k), at(b, k));
        // The period runs from the last earlier milestone that both runs have,
        // so that A's and B's periods cover the same stretch.
        let prev = keys[..n]
            .iter()
            .rev()
            .map(|k| k.0)
            .find(|pk| at(a, pk).is_some() && at(b, pk).is_some());
        let (pa, pb) = match prev {
            None => (None, None),
            Some(pk) => (
                ta.zip(at(a, pk)).map(|(x, y)| x.saturating_sub(y)),
                tb.zip(at(b, pk)).map(|(x, y)| x.saturating_sub(y)),
            ),
        };
        // Labels differ between runs for the same key (gate open vs timeout, exit codes).
        let lb = b
            .milestones
            .iter()
            .find(|m| m.key == *k)
            .map(|m| m.label.as_str());
        let label = match lb {
            Some(l) if l != *label && ta.is_some() => format!("{label} / B: {l}"),
            _ => label.to_string(),
        };
        let f = |x: Option<u64>| x.map(secs).unwrap_or_else(|| "-".into());
        t.rows.push(vec![
            n.to_string(),
            label,
            f(ta),
            f(tb),
            f(pa),
            f(pb),
            delta(pa, pb),
        ]);
    }
    let ea = a.exit.as_ref().map(|e| e.0);
    let eb = b.exit.as_ref().map(|e| e.0);
    let f = |x: Option<u64>| x.map(secs).unwrap_or_else(|| "-".into());
    t.rows.push(vec![
        "".into(),
        "whole run".into(),
        "".into(),
        "".into(),
        f(ea),
        f(eb),
        delta(ea, eb),
    ]);
    let hw = |an: &Analysis| an.holds.iter().filter_map(|h| h.waited_ms).sum::<u64>();
    t.notes.push(format!(
        "probes: A {} attempts, B {}; holds: A {} (wait {} s), B {} (wait {} s); redirects: A {}, B {}; exit: A {}, B {}",
        a.probes.len(),
        b.probes.len(),
        a.holds.len(),
        secs(hw(a)),
        b.holds.len(),
        secs(hw(b)),
        a.redirects.len(),
        b.redirects.len(),
        exit_text(a),
        exit_text(b)
    ));
    t
}

fn exit_text(a: &Analysis) -> String {
    match &a.exit {
        Some((_, code, sig)) => {
            let c = code.map(|c| c.to_string()).unwrap_or_else(|| "?".into());
            match sig {
                Some(s) => format!("{c} ({s})"),
                None => c,
            }
        }
        None => "none".into(),
    }
}

/// Both runs side by side, with the difference (B − A) per period.
pub fn compare(a: &[Value], b: &[Value]) -> String {
    let (aa, bb) = (analyze(a), analyze(b));
    let mut out = String::new();
    for (name, an) in [("A", &aa), ("B", &bb)] {
        for l in summary_lines(an) {
            let _ = writeln!(out, "{name}: {l}");
        }
    }
    out.push('\n');
    compare_table(&aa, &bb).text(&mut out);
    out.trim_end().to_string() + "\n"
}

// ---------------------------------------------------------------- HTML

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const W: f64 = 1120.0;
const LEFT: f64 = 150.0;
const RIGHT: f64 = 30.0;
const PERIOD_COLOURS: [&str; 6] = [
    "#4e79a7", "#59a14f", "#9c755f", "#edc948", "#76b7b2", "#b07aa1",
];

/// A "nice" tick step for a span in ms: about ten ticks for any span (a
/// damaged timeline can claim a span of centuries; the axis stays short).
fn tick_step(span: u64) -> u64 {
    let target = span as f64 / 10.0;
    for s in [
        1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 15_000, 30_000, 60_000,
        120_000, 300_000, 600_000, 1_200_000, 1_800_000, 3_600_000,
    ] {
        if s as f64 >= target {
            return s;
        }
    }
    // Beyond an hour: 1, 2 or 5 times a power of ten hours.
    let mut hours = 1u64;
    loop {
        for m in [1, 2, 5] {
            let s = m * hours * 3_600_000;
            if s as f64 >= target || s > u64::MAX / 100 {
                return s;
            }
        }
        hours *= 10;
    }
}

fn fmt_tick(ms: u64, step: u64) -> String {
    if step >= 3_600_000 && ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else if step >= 60_000 && ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else if step >= 1000 {
        format!("{}s", ms / 1000)
    } else if step >= 100 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{:.2}s", ms as f64 / 1000.0)
    }
}

/// One run as an SVG chart on a time axis of `span` ms.
fn svg(a: &Analysis, span: u64, title: &str) -> String {
    let span = span.max(1);
    let plot_w = W - LEFT - RIGHT;
    let x = |t: u64| LEFT + plot_w * (t.min(span) as f64 / span as f64);
    let mut body = String::new();
    let mut y = 56.0; // below the milestone numbers
    let lane_label = |body: &mut String, y: f64, h: f64, name: &str, sub: &str| {
        let _ = write!(
            body,
            r##"<text class="lane-label" x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT - 10.0,
            y + h / 2.0 + 1.0,
            esc(name)
        );
        if !sub.is_empty() {
            let _ = write!(
                body,
                r##"<text class="lane-sub" x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT - 10.0,
                y + h / 2.0 + 14.0,
                esc(sub)
            );
        }
        let _ = write!(
            body,
            r##"<line class="lane-sep" x1="{LEFT}" x2="{}" y1="{:.1}" y2="{:.1}"/>"##,
            W - RIGHT,
            y + h + 6.0,
            y + h + 6.0
        );
    };

    // Periods lane.
    let h = 30.0;
    lane_label(&mut body, y, h, "periods", "");
    for n in 1..a.milestones.len() {
        let (p, m) = (&a.milestones[n - 1], &a.milestones[n]);
        let (x0, x1) = (x(p.t), x(m.t));
        let wdt = (x1 - x0).max(1.0);
        let col = PERIOD_COLOURS[(n - 1) % PERIOD_COLOURS.len()];
        let _ = write!(
            body,
            r##"<g class="period"><title>Period {n}: {} → {}: {} s</title><rect x="{x0:.1}" y="{y:.1}" width="{wdt:.1}" height="{h}" rx="3" fill="{col}"/>"##,
            esc(&p.label),
            esc(&m.label),
            secs(m.t - p.t)
        );
        if wdt > 34.0 {
            let label = if wdt > 90.0 {
                format!("P{n} {}s", secs(m.t - p.t))
            } else {
                format!("P{n}")
            };
            let _ = write!(
                body,
                r##"<text class="bar-text" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                x0 + wdt / 2.0,
                y + h / 2.0 + 4.0,
                esc(&label)
            );
        }
        body.push_str("</g>");
    }
    y += h + 16.0;

    // Probes lane.
    let h = 22.0;
    let sub = if a.probes.is_empty() {
        "none".to_string()
    } else {
        format!("{} attempts", a.probes.len())
    };
    lane_label(&mut body, y, h, "probes", &sub);
    for p in &a.probes {
        let (cls, col, what) = match (p.status, &p.error) {
            (Some(s), _) if p.ok => ("probe probe-ok", "#2ca02c", format!("status {s}")),
            (Some(s), _) => ("probe probe-bad", "#f28e2b", format!("status {s}")),
            (None, e) => (
                "probe probe-err",
                "#d62728",
                format!("error: {}", e.clone().unwrap_or_default()),
            ),
        };
        let _ = write!(
            body,
            r##"<circle class="{cls}" cx="{:.1}" cy="{:.1}" r="5" fill="{col}"><title>attempt {} at {} s: {} ({} ms)</title></circle>"##,
            x(p.t),
            y + h / 2.0,
            p.attempt,
            secs(p.t),
            esc(&what),
            p.latency_ms
        );
    }
    y += h + 16.0;

    // Holds lane: one row per overlapping hold.
    let mut rows_end: Vec<u64> = Vec::new();
    let mut placed = Vec::new();
    for hd in &a.holds {
        let end = hd.end.unwrap_or(a.end_t);
        let row = match rows_end.iter().position(|&e| e <= hd.t) {
            Some(r) => r,
            None => {
                rows_end.push(0);
                rows_end.len() - 1
            }
        };
        rows_end[row] = end.max(hd.t + 1);
        placed.push((row, hd, end));
    }
    let nrows = rows_end.len().clamp(1, 12);
    let rh = 12.0;
    let h = (nrows as f64 * (rh + 3.0)).max(22.0);
    let sub = if a.holds.is_empty() {
        "none".to_string()
    } else {
        format!("{} held", a.holds.len())
    };
    lane_label(&mut body, y, h, "holds", &sub);
    for (row, hd, end) in placed {
        let row = row.min(11);
        let (x0, x1) = (x(hd.t), x(end));
        let col = if hd.end.is_some() {
            "#8c6bb1"
        } else {
            "#e15759"
        };
        let _ = write!(
            body,
            r##"<rect class="hold" x="{x0:.1}" y="{:.1}" width="{:.1}" height="{rh}" rx="2" fill="{col}"><title>{} {}[{}/{}] held {} → {} ({} s){}</title></rect>"##,
            y + row as f64 * (rh + 3.0),
            (x1 - x0).max(2.0),
            esc(&hd.what),
            esc(&hd.comm),
            hd.pid,
            hd.tid,
            secs(hd.t),
            secs(end),
            secs(hd.waited_ms.unwrap_or(end - hd.t)),
            if hd.end.is_none() {
                ", never released"
            } else {
                ""
            }
        );
    }
    y += h + 16.0;

    // Hooks lane.
    let hh = 18.0;
    let nh = a.hooks.len().max(1);
    let h = nh as f64 * (hh + 4.0);
    let sub = if a.hooks.is_empty() {
        if a.hook_notes.is_empty() {
            "none".to_string()
        } else {
            "not run".to_string()
        }
    } else {
        format!("{} run", a.hooks.len())
    };
    lane_label(&mut body, y, h, "hooks", &sub);
    for (n, hk) in a.hooks.iter().enumerate() {
        let s0 = hk.start.unwrap_or(0);
        let e0 = hk.end.unwrap_or(a.end_t);
        let col = match (hk.ok, &hk.killed) {
            (_, Some(_)) => "#7f7f7f",
            (Some(true), _) => "#2ca02c",
            (Some(false), _) => "#d62728",
            (None, _) => "#bab0ac",
        };
        let (x0, x1) = (x(s0), x(e0));
        let wdt = (x1 - x0).max(3.0);
        let yy = y + n as f64 * (hh + 4.0);
        let res = if hk.end.is_some() {
            hook_result(hk)
        } else {
            "running".into()
        };
        let _ = write!(
            body,
            r##"<g class="hook"><title>hook {}: {} ({} → {} s, {})</title><rect x="{x0:.1}" y="{yy:.1}" width="{wdt:.1}" height="{hh}" rx="3" fill="{col}"/>"##,
            hk.index,
            esc(&hk.cmd),
            secs(s0),
            secs(e0),
            esc(&res)
        );
        let label = short(&format!("{}: {}", hk.index, hk.cmd), 48);
        // Label inside a wide bar, else to its right (or left near the end).
        let approx = label.chars().count() as f64 * 6.6;
        if wdt > approx + 8.0 {
            let _ = write!(
                body,
                r##"<text class="bar-text" x="{:.1}" y="{:.1}">{}</text>"##,
                x0 + 5.0,
                yy + 13.0,
                esc(&label)
            );
        } else if x1 + approx + 6.0 < W {
            let _ = write!(
                body,
                r##"<text class="hook-text" x="{:.1}" y="{:.1}">{}</text>"##,
                x1 + 5.0,
                yy + 13.0,
                esc(&label)
            );
        } else {
            let _ = write!(
                body,
                r##"<text class="hook-text" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                x0 - 5.0,
                yy + 13.0,
                esc(&label)
            );
        }
        body.push_str("</g>");
    }
    y += h + 16.0;

    // Redirects lane: cumulative count as a step line, writes as ticks.
    let h = 44.0;
    let sub = format!("{} paths, {} writes", a.redirects.len(), a.writes.len());
    lane_label(&mut body, y, h, "redirects", &sub);
    if !a.redirects.is_empty() {
        let total = a.redirects.len() as f64;
        let mut pts = format!("{LEFT:.1},{:.1}", y + h);
        for (n, (t, _)) in a.redirects.iter().enumerate() {
            let yy0 = y + h - h * (n as f64 / total);
            let yy1 = y + h - h * ((n + 1) as f64 / total);
            let _ = write!(pts, " {:.1},{yy0:.1} {:.1},{yy1:.1}", x(*t), x(*t));
        }
        let _ = write!(pts, " {:.1},{y:.1}", x(a.end_t));
        let _ = write!(
            body,
            r##"<polyline class="redirects" points="{pts}" fill="none" stroke="#4e79a7" stroke-width="2"><title>{} redirected paths (first time per path)</title></polyline>"##,
            a.redirects.len()
        );
        for (t, p) in &a.redirects {
            let _ = write!(
                body,
                r##"<line class="redirect" x1="{0:.1}" x2="{0:.1}" y1="{1:.1}" y2="{2:.1}" stroke="#4e79a7" stroke-opacity="0.35"><title>{3} s redirect {4}</title></line>"##,
                x(*t),
                y + h + 1.0,
                y + h + 5.0,
                secs(*t),
                esc(p)
            );
        }
    }
    for (t, p, ok) in &a.writes {
        let col = if *ok { "#59a14f" } else { "#d62728" };
        let _ = write!(
            body,
            r##"<path class="write" d="M{0:.1},{1:.1} l-4,-7 h8 z" fill="{col}"><title>{2} s write {3}</title></path>"##,
            x(*t),
            y + 8.0,
            secs(*t),
            esc(p)
        );
    }
    y += h + 22.0;

    // Milestone lines over every lane, numbered as in the table.
    let top = 40.0;
    let mut marks = String::new();
    let mut last_label_x = f64::NEG_INFINITY;
    let mut level = 0;
    for (n, m) in a.milestones.iter().enumerate() {
        let xm = x(m.t);
        let _ = write!(
            marks,
            r##"<g class="milestone"><title>{n}: {} at {} s</title><line x1="{xm:.1}" x2="{xm:.1}" y1="{top:.1}" y2="{:.1}" stroke="#333" stroke-dasharray="3,3" stroke-opacity="0.55"/>"##,
            esc(&m.label),
            secs(m.t),
            y - 14.0
        );
        // Alternate heights when numbers would touch.
        level = if xm - last_label_x < 18.0 {
            (level + 1) % 2
        } else {
            0
        };
        last_label_x = xm;
        let cy = top - 8.0 - level as f64 * 16.0;
        let _ = write!(
            marks,
            r##"<circle cx="{xm:.1}" cy="{cy:.1}" r="7.5" fill="#fff" stroke="#333"/><text class="ms-num" x="{xm:.1}" y="{:.1}" text-anchor="middle">{n}</text></g>"##,
            cy + 3.5
        );
    }

    // Time axis.
    let step = tick_step(span);
    let mut axis = String::new();
    let mut t = 0;
    while t <= span {
        let xt = x(t);
        let _ = write!(
            axis,
            r##"<line class="grid" x1="{xt:.1}" x2="{xt:.1}" y1="{top:.1}" y2="{:.1}"/><text class="tick" x="{xt:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            y - 14.0,
            y,
            fmt_tick(t, step)
        );
        t += step;
    }
    let height = y + 12.0;
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="run-chart" viewBox="0 0 {W} {height:.0}" width="{W}" height="{height:.0}" role="img" aria-label="{}"><rect x="0" y="0" width="{W}" height="{height:.0}" fill="#fff"/><text class="chart-title" x="10" y="20">{}</text>{axis}{body}{marks}</svg>"##,
        esc(title),
        esc(title)
    )
}

fn legend() -> &'static str {
    r##"<div class="legend"><span><i style="background:#2ca02c"></i>probe ready</span><span><i style="background:#f28e2b"></i>probe not ready (status)</span><span><i style="background:#d62728"></i>probe error / hook failed</span><span><i style="background:#8c6bb1"></i>hold (until released)</span><span><i style="background:#e15759"></i>hold never released</span><span><i style="background:#7f7f7f"></i>hook killed at exit</span><span><i style="background:#4e79a7"></i>redirected paths (cumulative)</span></div>"##
}

const CSS: &str = r#"
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:24px 32px;color:#222;background:#f6f7f9}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:22px 0 8px}
.meta{color:#555;font-size:13px;margin:2px 0}
.card{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:12px 14px;margin:14px 0;overflow-x:auto}
svg text{font-family:inherit}
.chart-title{font-size:14px;font-weight:600;fill:#222}
.lane-label{font-size:13px;font-weight:600;fill:#333}.lane-sub{font-size:11px;fill:#777}
.lane-sep{stroke:#eceef1}.grid{stroke:#eef0f3}.tick{font-size:11px;fill:#666}
.bar-text{font-size:11px;fill:#fff;font-weight:600}.hook-text{font-size:11px;fill:#333}
.ms-num{font-size:10px;font-weight:700;fill:#333}
table{border-collapse:collapse;font-size:13px;background:#fff}
th,td{border:1px solid #dde1e6;padding:4px 9px;text-align:left;vertical-align:top}
th{background:#eef1f5}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tbody tr:nth-child(even){background:#fafbfc}
.note{font-size:13px;color:#444;margin:6px 0}
.legend{font-size:12px;color:#444;margin:6px 0 0}.legend span{margin-right:16px;white-space:nowrap}
.ms-legend{font-size:12px;color:#333;margin:4px 0 2px;line-height:1.7}.ms-legend span{margin-right:14px;white-space:nowrap}
.ms-legend b{display:inline-block;min-width:15px;height:15px;line-height:15px;border:1px solid #333;border-radius:8px;text-align:center;font-size:10px;margin-right:3px}.ms-legend small{color:#777}
.legend i{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:5px;vertical-align:-1px}
"#;

/// One self-contained HTML page (no script, no network): an SVG chart of
/// the run (and of the compared run, on the same time scale), then the
/// tables.
pub fn html(events: &[Value], compare: Option<&[Value]>) -> String {
    let a = analyze(events);
    let b = compare.map(analyze);
    let span = a.end_t.max(b.as_ref().map(|b| b.end_t).unwrap_or(0));
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>k3shim timeline{}</title><style>{CSS}</style></head><body>\n",
        if b.is_some() { " comparison" } else { "" }
    );
    let _ = writeln!(
        out,
        "<h1>k3shim timeline{}</h1>",
        if b.is_some() {
            ": two runs compared"
        } else {
            ""
        }
    );
    let runs: Vec<(&str, &Analysis)> = match &b {
        Some(b) => vec![("Run A", &a), ("Run B", b)],
        None => vec![("Run", &a)],
    };
    for (name, an) in &runs {
        out.push_str("<div class=\"card\">");
        for l in summary_lines(an) {
            let _ = writeln!(
                out,
                "<p class=\"meta\">{}{}</p>",
                if b.is_some() {
                    format!("<b>{name}</b> ")
                } else {
                    String::new()
                },
                esc(&l)
            );
        }
        out.push_str(&svg(an, span, &format!("{name}: {} s", secs(an.end_t))));
        out.push_str("<p class=\"ms-legend\">");
        for (n, m) in an.milestones.iter().enumerate() {
            let _ = write!(
                out,
                "<span><b>{n}</b> {} <small>{} s</small></span>",
                esc(&m.label),
                secs(m.t)
            );
        }
        out.push_str("</p>");
        out.push_str(legend());
        out.push_str("</div>\n");
    }
    if let Some(b) = &b {
        out.push_str("<div class=\"card\">");
        compare_table(&a, b).html(&mut out);
        out.push_str("</div>\n");
    }
    for (name, an) in &runs {
        out.push_str("<div class=\"card\">");
        if b.is_some() {
            let _ = writeln!(out, "<h2>{name}</h2>");
        }
        for t in tables(an) {
            t.html(&mut out);
        }
        out.push_str("</div>\n");
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_step(10_000), 1000);
        assert_eq!(tick_step(95_000), 10_000);
        assert_eq!(tick_step(50), 5);
    }

    #[test]
    fn escapes_html() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
