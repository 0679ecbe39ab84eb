//! report.md: per experiment step, the milestone times of every run with
//! avg/min/max rows and the periods between milestones (the layout of the
//! tables in seeds/002), then each run's outcome against the expectation.

use super::runner::{describe, Outcome};
use super::spec::{self, Expect};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

type Milestones = (BTreeMap<String, f64>, BTreeMap<String, String>, Option<f64>);

/// Milestones (seconds since the step's launch: the clock origin the
/// timeline names, i.e. when the runner started the step's command on the
/// host, else k3shim's own launch) from a timeline: the first log_match of
/// each name, and the built-in ones (k3shim_start when k3shim started later
/// than the origin, gate_open, gate_timeout, held, released, hooks_ok,
/// hook_failed); the exit time.
pub fn milestones(events: &[Value]) -> Milestones {
    let mut m: BTreeMap<String, f64> = BTreeMap::new();
    let mut lines = BTreeMap::new();
    let mut end = None;
    let (mut starts, mut ends, mut all_ok, mut not_run, mut last_end) = (0, 0, true, false, 0.0);
    let shift = crate::timeline::clock_offset_ms(events);
    // How many hooks k3shim was given (its argv in the launch event): a timeline
    // read while it is written may hold hook 1's end but not yet hook 2's start.
    let given = events
        .iter()
        .find(|e| e.get("kind").and_then(Value::as_str) == Some("launch"))
        .and_then(|e| e.get("argv")?.as_array().cloned())
        .map(|a| a.iter().filter(|x| x.as_str() == Some("--hook")).count())
        .unwrap_or(0);
    for e in events {
        let t = e
            .get("t_ms")
            .and_then(Value::as_u64)
            .unwrap_or(0)
            .saturating_add(shift) as f64
            / 1000.0;
        let kind = e.get("kind").and_then(Value::as_str).unwrap_or("");
        let put = |m: &mut BTreeMap<String, f64>, k: &str| {
            m.entry(k.to_string()).or_insert(t);
        };
        match kind {
            "log_match" => {
                if let Some(n) = e.get("name").and_then(Value::as_str) {
                    if !m.contains_key(n) {
                        put(&mut m, n);
                        if let Some(l) = e.get("line").and_then(Value::as_str) {
                            lines.insert(n.to_string(), l.to_string());
                        }
                    }
                }
            }
            "launch" if e.get("clock").is_some() => put(&mut m, "k3shim_start"),
            "gate_open" => put(&mut m, "gate_open"),
            "gate_timeout" => put(&mut m, "gate_timeout"),
            "hold" => put(&mut m, "held"),
            "release" => put(&mut m, "released"),
            "hook_start" => starts += 1,
            "hook_end" => {
                ends += 1;
                last_end = t;
                if e.get("ok").and_then(Value::as_bool) != Some(true) {
                    all_ok = false;
                    put(&mut m, "hook_failed");
                }
            }
            "hooks_not_run" => not_run = true,
            "exit" => end = Some(t),
            _ => {}
        }
    }
    if ends > 0 && ends == starts && ends >= given && all_ok && !not_run {
        m.insert("hooks_ok".into(), last_end);
    }
    (m, lines, end)
}

pub fn expectation(e: &Expect) -> String {
    let mut p = Vec::new();
    if let Some(x) = &e.exit {
        p.push(x.describe());
    }
    if !e.milestones.is_empty() {
        p.push(format!("with {}", e.milestones.join(", ")));
    }
    if !e.absent.is_empty() {
        p.push(format!("without {}", e.absent.join(", ")));
    }
    for (a, b) in &e.before {
        p.push(format!("{a} before {b}"));
    }
    if p.is_empty() {
        "anything".into()
    } else {
        p.join("; ")
    }
}

/// What does not match the expectation (empty: as expected).
pub fn evaluate(e: &Expect, o: &Outcome) -> Vec<String> {
    let mut bad = Vec::new();
    if let Some(x) = &e.exit {
        if !x.accepts(o.stopped, o.exit_code) {
            bad.push(format!("expected {}, got {}", x.describe(), describe(o)));
        }
    }
    for m in &e.milestones {
        if !o.milestones.contains_key(m) {
            bad.push(format!("{m} missing"));
        }
    }
    for m in &e.absent {
        if o.milestones.contains_key(m) {
            bad.push(format!("{m} appeared"));
        }
    }
    for (a, b) in &e.before {
        match (o.milestones.get(a), o.milestones.get(b)) {
            (Some(x), Some(y)) if x <= y => {}
            (Some(_), Some(_)) => bad.push(format!("{b} came before {a}")),
            _ => bad.push(format!("{a} before {b}: not both seen")),
        }
    }
    bad
}

pub struct Report {
    pub markdown: String,
    pub all_match: bool,
}

struct Group {
    experiment: String,
    step: String,
    title: String,
    expected: String,
    runs: Vec<(String, Outcome)>,
}

fn read_outcomes(dir: &Path) -> Result<Vec<(PathBuf, Outcome)>> {
    let mut out = Vec::new();
    for s in std::fs::read_dir(dir).with_context(|| format!("{}: cannot read", dir.display()))? {
        let s = s?.path();
        if !s.is_dir() {
            continue;
        }
        let Ok(rd) = std::fs::read_dir(&s) else {
            continue;
        };
        for a in rd {
            let a = a?.path();
            let f = a.join("outcome.json");
            if f.is_file() {
                let text = std::fs::read_to_string(&f)?;
                let o: Outcome = serde_json::from_str(&text)
                    .with_context(|| format!("{}: not an outcome", f.display()))?;
                out.push((a, o));
            }
        }
    }
    out.sort_by(|a, b| (a.1.attempt, &a.0).cmp(&(b.1.attempt, &b.0)));
    Ok(out)
}

/// What the Diff row of a milestone table is.
const DIFF: &str = "**Diff**: a column's Avg minus the Avg of the column before it, i.e. the average time from the previous milestone to this one (as in the seeds' tables).";

/// What every time in the report is measured from.
const CLOCK: &str = "Clock: every time is in seconds since **launch**, the moment the runner started the step's command on the host (`runsc` for a step in gVisor), the same event for every step. A step under k3shim has a `k3shim_start` milestone, when k3shim itself started (inside the sandbox); its timeline counts from there and is shifted by that much (the launch event's `clock`).";

/// A milestone's time in one run: `launch` is 0, `end` the exit (or stop).
fn value(o: &Outcome, c: &str) -> Option<f64> {
    match c {
        "launch" => Some(0.0),
        "end" => o.end_s,
        _ => o.milestones.get(c).copied(),
    }
}

/// The milestone columns for these runs: launch, every milestone seen in the
/// order of its average time, end.
fn columns(runs: &[&Outcome]) -> Vec<String> {
    let mut times: HashMap<&str, Vec<f64>> = HashMap::new();
    for o in runs {
        for (k, v) in &o.milestones {
            times.entry(k.as_str()).or_default().push(*v);
        }
        if let Some(e) = o.end_s {
            times.entry("end").or_default().push(e);
        }
    }
    let mut cols: Vec<(&str, f64)> = times.iter().map(|(k, v)| (*k, stats(v).0)).collect();
    cols.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(b.0)));
    if let Some(i) = cols.iter().position(|c| c.0 == "end") {
        let e = cols.remove(i);
        cols.push(e);
    }
    // k3shim's own start comes first in any step that has it (averaging it
    // with steps that have not would misplace it).
    if let Some(i) = cols.iter().position(|c| c.0 == "k3shim_start") {
        let e = cols.remove(i);
        cols.insert(0, e);
    }
    std::iter::once("launch".to_string())
        .chain(cols.into_iter().map(|c| c.0.to_string()))
        .collect()
}

/// One experiment's steps side by side: a row per milestone, a column per
/// step with its average (over its runs), and for every step after the
/// first the difference from the first step's average.
fn steps_compared(md: &mut String, experiment: &str, groups: &[&Group]) {
    let runs: Vec<&Outcome> = groups
        .iter()
        .flat_map(|g| g.runs.iter().map(|(_, o)| o))
        .collect();
    let cols = columns(&runs);
    let base = &groups[0].step;
    let _ = writeln!(md, "## {experiment}: steps compared\n");
    let _ = writeln!(
        md,
        "Average seconds since launch per step (runs in brackets where not every run reached the milestone); Δ: the step's average minus `{base}`'s.\n"
    );
    let mut head = vec!["milestone".to_string()];
    for (k, g) in groups.iter().enumerate() {
        head.push(format!(
            "{} ({} run{})",
            g.step,
            g.runs.len(),
            if g.runs.len() == 1 { "" } else { "s" }
        ));
        if k > 0 {
            head.push(format!("Δ vs {base}"));
        }
    }
    let _ = writeln!(md, "| {} |", head.join(" | "));
    let _ = writeln!(md, "| :-- |{}", " --: |".repeat(head.len() - 1));
    let avg = |g: &Group, c: &str| -> (Option<f64>, usize) {
        let v: Vec<f64> = g.runs.iter().filter_map(|(_, o)| value(o, c)).collect();
        ((!v.is_empty()).then(|| stats(&v).0), v.len())
    };
    for c in &cols {
        let (b, _) = avg(groups[0], c);
        let mut cells = vec![format!("`{c}`")];
        for (k, g) in groups.iter().enumerate() {
            let (a, n) = avg(g, c);
            cells.push(match a {
                Some(a) if n < g.runs.len() => format!("{} ({n}/{})", fmt_s(a), g.runs.len()),
                Some(a) => fmt_s(a),
                None => "-".into(),
            });
            if k > 0 {
                cells.push(match (a, b) {
                    (Some(a), Some(b)) => format!("{:+.3}", a - b),
                    _ => "-".into(),
                });
            }
        }
        let _ = writeln!(md, "| {} |", cells.join(" | "));
    }
    md.push('\n');
}

fn fmt_s(v: f64) -> String {
    format!("{v:.3}")
}

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let n = v.len().max(1) as f64;
    let avg = v.iter().sum::<f64>() / n;
    let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    (avg, min, max)
}

/// Aggregates run directories (each from `k3shim experiment run`).
pub fn aggregate(dirs: &[PathBuf]) -> Result<Report> {
    let mut groups: Vec<Group> = Vec::new();
    let mut envs = Vec::new();
    for d in dirs {
        let exp_path = d.join("experiment.toml");
        if !exp_path.is_file() {
            bail!("{}: not a run directory (no experiment.toml)", d.display());
        }
        let text = std::fs::read_to_string(&exp_path)?;
        let stem = d
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let loaded = spec::parse_as_run(&stem, &text, Some(exp_path.clone()))?;
        if let Ok(e) = std::fs::read_to_string(d.join("env.json")) {
            if let Ok(v) = serde_json::from_str::<Value>(&e) {
                envs.push((stem.clone(), v));
            }
        }
        let mut outs = read_outcomes(d)?;
        let pos = |step: &str| {
            loaded
                .steps
                .iter()
                .position(|s| s.name == step)
                .unwrap_or(usize::MAX)
        };
        outs.sort_by_key(|a| (pos(&a.1.step), a.1.attempt));
        for (path, mut o) in outs {
            // Re-derive from the timeline and the expectation in the file as used.
            if let Ok(ev) = crate::timeline::read_events(&path.join("timeline.jsonl")) {
                let (m, l, e) = milestones(&ev);
                o.milestones = m;
                o.lines = l;
                o.end_s = e;
            }
            if let Some(step) = loaded.steps.iter().find(|s| s.name == o.step) {
                o.expected = expectation(&step.expect);
                let no_tl = o.mismatches.iter().any(|m| m == "no timeline was written");
                o.mismatches = evaluate(&step.expect, &o);
                if no_tl {
                    o.mismatches.insert(0, "no timeline was written".into());
                }
            }
            let label = if dirs.len() > 1 {
                format!("{stem} #{}", o.attempt)
            } else {
                o.attempt.to_string()
            };
            match groups
                .iter_mut()
                .find(|g| g.experiment == loaded.name && g.step == o.step)
            {
                Some(g) => g.runs.push((label, o)),
                None => groups.push(Group {
                    experiment: loaded.name.clone(),
                    step: o.step.clone(),
                    title: o.title.clone(),
                    expected: o.expected.clone(),
                    runs: vec![(label, o)],
                }),
            }
        }
    }
    let mut md = String::new();
    let mut all = true;
    let names: Vec<&str> = {
        let mut v: Vec<&str> = groups.iter().map(|g| g.experiment.as_str()).collect();
        v.dedup();
        v
    };
    let _ = writeln!(md, "# Experiment report: {}\n", names.join(", "));
    let _ = writeln!(
        md,
        "Run directories: {}\n",
        dirs.iter()
            .map(|d| format!("`{}`", d.display()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (stem, v) in &envs {
        let g = |k: &str| {
            v.get(k)
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| x.to_string())
                })
                .unwrap_or_default()
        };
        let un = v
            .get("uname")
            .map(|u| {
                format!(
                    "{} {}",
                    u.get("release").and_then(Value::as_str).unwrap_or(""),
                    u.get("machine").and_then(Value::as_str).unwrap_or("")
                )
            })
            .unwrap_or_default();
        let k3s = v
            .get("k3s")
            .and_then(|k| k.get("path"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let _ = writeln!(
            md,
            "- `{stem}`: k3shim {}, kernel {un}, {}, k3s `{k3s}`, started {}, quick {}",
            g("k3shim_version"),
            g("runsc_version").lines().next().unwrap_or(""),
            g("started"),
            g("quick")
        );
        // The upstream parts: each component and the module version it was built from.
        let comps = v.pointer("/k3s/components").and_then(Value::as_array);
        for c in comps.into_iter().flatten().filter_map(Value::as_str) {
            let _ = writeln!(md, "  - {c}");
        }
    }
    md.push('\n');
    if groups.is_empty() {
        let _ = writeln!(md, "No runs found.");
        return Ok(Report {
            markdown: md,
            all_match: false,
        });
    }
    let _ = writeln!(md, "{CLOCK}\n");
    let mut done: Vec<&str> = Vec::new();
    for g in &groups {
        if done.contains(&g.experiment.as_str()) {
            continue;
        }
        done.push(&g.experiment);
        let steps: Vec<&Group> = groups
            .iter()
            .filter(|x| x.experiment == g.experiment)
            .collect();
        if steps.len() > 1 {
            steps_compared(&mut md, &g.experiment, &steps);
        }
    }
    for g in &groups {
        let _ = writeln!(
            md,
            "## {} / {}{}\n",
            g.experiment,
            g.step,
            if g.title.is_empty() {
                String::new()
            } else {
                format!(": {}", g.title)
            }
        );
        let _ = writeln!(md, "Expected: {}.\n", g.expected);
        let runs: Vec<&Outcome> = g.runs.iter().map(|(_, o)| o).collect();
        let cols = columns(&runs);
        let cols: Vec<&str> = cols.iter().map(String::as_str).collect();
        let _ = writeln!(md, "Milestones, seconds since launch (`end`: the exit, or the stop at the end of the watch):\n");
        let _ = writeln!(md, "| Run | {} |", cols.join(" | "));
        let _ = writeln!(md, "| :-: |{}", " --: |".repeat(cols.len()));
        for (label, o) in &g.runs {
            let cells: Vec<String> = cols
                .iter()
                .map(|c| value(o, c).map(fmt_s).unwrap_or_else(|| "-".into()))
                .collect();
            let _ = writeln!(md, "| {label} | {} |", cells.join(" | "));
        }
        let col_stats: Vec<Option<(f64, f64, f64)>> = cols
            .iter()
            .map(|c| {
                let v: Vec<f64> = g.runs.iter().filter_map(|(_, o)| value(o, c)).collect();
                (!v.is_empty()).then(|| stats(&v))
            })
            .collect();
        for (name, pick) in [("Avg", 0usize), ("Min", 1), ("Max", 2)] {
            let cells: Vec<String> = col_stats
                .iter()
                .map(|s| {
                    s.map(|s| fmt_s([s.0, s.1, s.2][pick]))
                        .unwrap_or_else(|| "-".into())
                })
                .collect();
            let _ = writeln!(md, "| **{name}** | {} |", cells.join(" | "));
        }
        let mut diff = vec!["-".to_string()];
        for w in col_stats.windows(2) {
            diff.push(match (w[0], w[1]) {
                (Some(a), Some(b)) => fmt_s(b.0 - a.0),
                _ => "-".into(),
            });
        }
        let _ = writeln!(md, "| **Diff** | {} |\n", diff.join(" | "));
        let _ = writeln!(md, "{DIFF}\n");
        // Periods between consecutive milestones, per run, then aggregated.
        let _ = writeln!(
            md,
            "Periods (seconds; per run, between consecutive milestones both seen):\n"
        );
        let _ = writeln!(md, "| Period | from → to | avg | min | max | runs |");
        let _ = writeln!(md, "| :-- | :-- | --: | --: | --: | --: |");
        for (i, w) in cols.windows(2).enumerate() {
            let v: Vec<f64> = g
                .runs
                .iter()
                .filter_map(|(_, o)| Some(value(o, w[1])? - value(o, w[0])?))
                .collect();
            if v.is_empty() {
                let _ = writeln!(
                    md,
                    "| Period {} | {} → {} | - | - | - | 0 |",
                    i + 1,
                    w[0],
                    w[1]
                );
            } else {
                let (a, mn, mx) = stats(&v);
                let _ = writeln!(
                    md,
                    "| Period {} | {} → {} | {} | {} | {} | {} |",
                    i + 1,
                    w[0],
                    w[1],
                    fmt_s(a),
                    fmt_s(mn),
                    fmt_s(mx),
                    v.len()
                );
            }
        }
        let whole: Vec<f64> = g.runs.iter().filter_map(|(_, o)| o.end_s).collect();
        if !whole.is_empty() {
            let (a, mn, mx) = stats(&whole);
            let _ = writeln!(
                md,
                "| **Whole run** | launch → end | {} | {} | {} | {} |",
                fmt_s(a),
                fmt_s(mn),
                fmt_s(mx),
                whole.len()
            );
        }
        md.push('\n');
        let _ = writeln!(md, "Outcome:\n");
        let _ = writeln!(md, "| Run | outcome | wall (s) | verdict |");
        let _ = writeln!(md, "| :-: | :-- | --: | :-- |");
        for (label, o) in &g.runs {
            let verdict = if o.mismatches.is_empty() {
                "as expected".to_string()
            } else {
                format!("**not as expected**: {}", o.mismatches.join("; "))
            };
            let err = o
                .k3shim_error
                .as_deref()
                .map(|e| format!(" (k3shim: {})", e.replace('|', "\\|")))
                .unwrap_or_default();
            let _ = writeln!(
                md,
                "| {label} | {}{err} | {:.1} | {verdict} |",
                describe(o),
                o.wall_s
            );
            if !o.mismatches.is_empty() {
                all = false;
            }
        }
        let ok = g
            .runs
            .iter()
            .filter(|(_, o)| o.mismatches.is_empty())
            .count();
        let _ = writeln!(md, "\n{ok} of {} runs as expected.\n", g.runs.len());
    }
    let _ = writeln!(
        md,
        "**Overall: {}**",
        if all {
            "every run as expected"
        } else {
            "NOT every run as expected"
        }
    );
    Ok(Report {
        markdown: md,
        all_match: all,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hooks_ok_waits_for_every_hook_k3shim_was_given_not_only_those_started() {
        let mut ev = vec![
            json!({"t_ms": 0, "kind": "launch", "argv": ["k3shim", "run", "--hook", "a", "--hook", "b", "--", "k3s"]}),
            json!({"t_ms": 100, "kind": "hook_start", "index": 1}),
            json!({"t_ms": 200, "kind": "hook_end", "index": 1, "ok": true}),
        ];
        // Read between hook 1's end and hook 2's start: not all hooks ran yet.
        assert!(!milestones(&ev).0.contains_key("hooks_ok"));
        ev.push(json!({"t_ms": 210, "kind": "hook_start", "index": 2}));
        assert!(!milestones(&ev).0.contains_key("hooks_ok"));
        ev.push(json!({"t_ms": 300, "kind": "hook_end", "index": 2, "ok": true}));
        assert_eq!(milestones(&ev).0.get("hooks_ok"), Some(&0.3));
    }
}
