//! `k3shim timeline FILE [--compare FILE2] [--html OUT]`: milestones and the
//! periods between them (like the tables in the seeds' experiment notes),
//! holds, probes, hooks, redirects and the exit; two runs side by side; and
//! one self-contained HTML page with an SVG chart (timeline_html.rs).
//!
//! Milestones: launch, the first exec, each log_match name (first
//! occurrence), gate_open or gate_timeout, each hook's start and end, exit.
//! A period is the time from one milestone to the next. Times count from
//! the launch event, or from the earlier clock origin it names (`clock`, set
//! by the experiment runner: the host-side start of runsc), in which case
//! k3shim's own start is the milestone "k3shim started".

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde_json::Value;

use crate::timeline_html::esc;
pub use crate::timeline_html::html;

// ---------------------------------------------------------------- analysis

#[derive(Clone, Debug)]
pub(crate) struct Milestone {
    /// Stable across runs, for --compare: "launch", "exec", "log:NAME", "gate", "hook:1:start", "exit".
    pub(crate) key: String,
    pub(crate) label: String,
    pub(crate) t: u64,
}

#[derive(Clone, Debug)]
pub(crate) struct Hold {
    pub(crate) pid: i64,
    pub(crate) tid: i64,
    pub(crate) comm: String,
    pub(crate) what: String,
    pub(crate) t: u64,
    /// Release time; None while still held at the end of the timeline.
    pub(crate) end: Option<u64>,
    pub(crate) waited_ms: Option<u64>,
}

#[derive(Clone, Debug)]
pub(crate) struct Probe {
    pub(crate) t: u64,
    pub(crate) attempt: u64,
    pub(crate) status: Option<u64>,
    pub(crate) error: Option<String>,
    pub(crate) ok: bool,
    pub(crate) latency_ms: u64,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Hook {
    pub(crate) index: u64,
    pub(crate) cmd: String,
    pub(crate) start: Option<u64>,
    pub(crate) end: Option<u64>,
    pub(crate) status: Option<i64>,
    pub(crate) signal: Option<i64>,
    pub(crate) killed: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) ok: Option<bool>,
}

#[derive(Debug, Default)]
pub(crate) struct Analysis {
    /// The command line k3shim (or the experiment runner) was started with.
    pub(crate) argv: Vec<String>,
    pub(crate) wall_clock: String,
    pub(crate) version: String,
    pub(crate) end_t: u64,
    pub(crate) milestones: Vec<Milestone>,
    pub(crate) holds: Vec<Hold>,
    pub(crate) probes: Vec<Probe>,
    pub(crate) gate: Option<(String, u64)>,
    pub(crate) hooks: Vec<Hook>,
    pub(crate) hook_notes: Vec<(u64, String)>,
    pub(crate) redirects: Vec<(u64, String)>,
    pub(crate) writes: Vec<(u64, String, bool)>,
    pub(crate) signals: Vec<(u64, String)>,
    pub(crate) exit: Option<(u64, Option<i64>, Option<String>)>,
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

pub(crate) fn short(s: &str, n: usize) -> String {
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

pub(crate) fn signal_name(v: &Value) -> Option<String> {
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

pub(crate) fn analyze(events: &[Value]) -> Analysis {
    let mut a = Analysis::default();
    let shift = crate::timeline::clock_offset_ms(events);
    let mut seen: HashMap<String, ()> = HashMap::new();
    let mut open_holds: HashMap<(i64, i64, String), usize> = HashMap::new();
    let mut hooks: BTreeMap<u64, Hook> = BTreeMap::new();
    let mut push = |a: &mut Analysis, key: String, label: String, t: u64| {
        if seen.insert(key.clone(), ()).is_none() {
            a.milestones.push(Milestone { key, label, t });
        }
    };
    for e in events {
        // Times since the clock origin (the launch, unless the launch event names an earlier one).
        let t = u(e, "t_ms").unwrap_or(0).saturating_add(shift);
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
                        .collect();
                }
                a.wall_clock = s(e, "wall_clock").unwrap_or_default();
                a.version = s(e, "version").unwrap_or_default();
                if e.get("clock").is_some() {
                    // The origin is the launch of the command that started
                    // k3shim (runsc, by the experiment runner); k3shim came later.
                    push(&mut a, "launch".into(), "launch".into(), 0);
                    push(&mut a, "k3shim".into(), "k3shim started".into(), t);
                } else {
                    push(&mut a, "launch".into(), "launch".into(), t);
                }
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

pub(crate) fn hook_result(h: &Hook) -> String {
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

/// argv as one line a POSIX shell reads back as the same words.
pub(crate) fn shell_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| shell_word(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One word quoted for a POSIX shell the way Python's shlex.quote does:
/// as it is when made only of characters no shell treats specially, else in
/// single quotes (a NUL, which no shell word can hold, is shown as \0).
/// (The shlex crate quotes `=` and `%` as well, which makes every
/// `--flag=value` harder to read for no gain.)
pub(crate) fn shell_word(a: &str) -> String {
    let a = a.replace('\0', "\\0");
    if !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./-_".contains(c))
    {
        a
    } else {
        format!("'{}'", a.replace('\'', "'\"'\"'"))
    }
}

pub(crate) fn secs(ms: u64) -> String {
    format!("{:.3}", ms as f64 / 1000.0)
}

pub(crate) fn delta(a: Option<u64>, b: Option<u64>) -> String {
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

pub(crate) struct Table {
    pub(crate) title: String,
    pub(crate) headers: Vec<String>,
    /// Which columns are numbers (right-aligned).
    pub(crate) numeric: Vec<bool>,
    pub(crate) rows: Vec<Vec<String>>,
    pub(crate) notes: Vec<String>,
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

    pub(crate) fn html(&self, out: &mut String) {
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
        v.push(format!("command: {}", shell_line(&a.argv)));
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

/// The tables of one run; `full` keeps long text whole (HTML wraps it, a terminal does not).
pub(crate) fn tables(a: &Analysis, full: bool) -> Vec<Table> {
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
            if full {
                hk.cmd.clone()
            } else {
                short(&hk.cmd, 60)
            },
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
    for t in tables(&a, false) {
        t.text(&mut out);
    }
    out.trim_end().to_string() + "\n"
}

/// One milestone of a compare, as `--compare`'s table and the HTML page show it.
pub(crate) struct CompareRow<'a> {
    /// Its number (the same everywhere in a compare).
    pub n: usize,
    pub key: &'a str,
    /// A's label, with B's after it where they differ.
    pub label: String,
    pub ta: Option<u64>,
    pub tb: Option<u64>,
    /// (from, to) of each run's period: from the last earlier milestone that
    /// both runs have, so that A's and B's periods cover the same stretch.
    pub span_a: Option<(u64, u64)>,
    pub span_b: Option<(u64, u64)>,
}

impl CompareRow<'_> {
    pub fn period_a(&self) -> Option<u64> {
        self.span_a.map(|(from, to)| to.saturating_sub(from))
    }
    pub fn period_b(&self) -> Option<u64> {
        self.span_b.map(|(from, to)| to.saturating_sub(from))
    }
}

/// The milestones of two runs side by side (union_keys' order).
pub(crate) fn compare_rows<'a>(a: &'a Analysis, b: &'a Analysis) -> Vec<CompareRow<'a>> {
    let keys = union_keys(a, b);
    let at = |an: &Analysis, k: &str| an.milestones.iter().find(|m| m.key == k).map(|m| m.t);
    let mut rows = Vec::with_capacity(keys.len());
    for (n, &(k, label)) in keys.iter().enumerate() {
        let (ta, tb) = (at(a, k), at(b, k));
        let prev = keys[..n]
            .iter()
            .rev()
            .map(|k| k.0)
            .find(|pk| at(a, pk).is_some() && at(b, pk).is_some());
        let (span_a, span_b) = match prev {
            None => (None, None),
            Some(pk) => (
                ta.zip(at(a, pk)).map(|(to, from)| (from, to)),
                tb.zip(at(b, pk)).map(|(to, from)| (from, to)),
            ),
        };
        // Labels differ between runs for the same key (gate open vs timeout, exit codes).
        let lb = b
            .milestones
            .iter()
            .find(|m| m.key == k)
            .map(|m| m.label.as_str());
        let label = match lb {
            Some(l) if l != label && ta.is_some() => format!("{label} / B: {l}"),
            _ => label.to_string(),
        };
        rows.push(CompareRow {
            n,
            key: k,
            label,
            ta,
            tb,
            span_a,
            span_b,
        });
    }
    rows
}

/// Milestone keys of both runs in one order: A's, then B's own in B's order.
pub(crate) fn union_keys<'a>(a: &'a Analysis, b: &'a Analysis) -> Vec<(&'a str, &'a str)> {
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
    for r in compare_rows(a, b) {
        let (pa, pb) = (r.period_a(), r.period_b());
        let f = |x: Option<u64>| x.map(secs).unwrap_or_else(|| "-".into());
        t.rows.push(vec![
            r.n.to_string(),
            r.label,
            f(r.ta),
            f(r.tb),
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

pub(crate) fn exit_text(a: &Analysis) -> String {
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
