//! `k3shim timeline --html`: one self-contained page (no script, no network)
//! to look at a run, or two runs compared.
//!
//! The page: a header (what ran, how long, how it ended; the command line
//! collapsed and shell-quoted), an overview chart (SVG) of every lane on one
//! time axis, a milestone waterfall (one row per milestone, so labels never
//! collide, with its period as a bar), then the detail tables. Milestones
//! carry one number everywhere on the page: the index in the text table, or
//! in compare mode the index in both runs' milestones merged (the numbering
//! of `k3shim timeline A --compare B`).
//!
//! The chart is drawn twice, for a wide and a narrow window (CSS picks one),
//! so that its text stays legible without a script to lay it out again. Its
//! milestone numbers are laid out in a few rows above the lanes; numbers too
//! close to fit become one range badge ("3–7") whose members the waterfall
//! lists. Every element showing a milestone number carries `data-ms` (its
//! key), which the browser test uses to check consistency.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::Value;

use crate::timeline_report::{
    analyze, compare_rows, hook_result, secs, shell_word, tables, union_keys, Analysis, Hold,
};

pub(crate) fn esc(s: &str) -> String {
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

/// Cuts `s` to at most `n` characters, with an ellipsis when cut.
fn fit(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else if n == 0 {
        String::new()
    } else {
        let mut o: String = s.chars().take(n - 1).collect();
        o.push('…');
        o
    }
}

/// A "nice" tick step for about `n` ticks over a span in ms, for any span
/// (a damaged timeline can claim centuries: the axis stays short).
pub(crate) fn tick_step(span: u64, n: u64) -> u64 {
    let target = span as f64 / n.max(1) as f64;
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
    if step >= 3_600_000 && ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if step >= 60_000 && ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if step >= 1000 {
        format!("{}s", ms / 1000)
    } else if step >= 100 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{:.2}s", ms as f64 / 1000.0)
    }
}

// ---------------------------------------------------------------- geometry

/// Estimated width of `s` in px at font size `px` (system sans fonts
/// average below 0.6 em a character; DejaVu Sans, the widest common one, 0.6).
fn text_w(s: &str, px: f64) -> f64 {
    s.chars().count() as f64 * px * 0.62
}

/// The chart's horizontal layout at one page width.
#[derive(Clone, Copy)]
struct Geo {
    /// Width of the SVG (user units = CSS px at full size).
    w: f64,
    /// Left margin for lane labels.
    left: f64,
    right: f64,
    span: u64,
    /// Short lane labels (narrow layout).
    narrow: bool,
}

impl Geo {
    fn x(&self, t: u64) -> f64 {
        let span = self.span.max(1);
        self.left + (self.w - self.left - self.right) * (t.min(span) as f64 / span as f64)
    }
    fn plot_end(&self) -> f64 {
        self.w - self.right
    }
}

const WIDE: f64 = 1200.0;
const NARROW: f64 = 740.0;
const BADGE_H: f64 = 16.0;
const BADGE_ROW: f64 = 20.0;
const BADGE_ROWS: usize = 3;
const BADGE_PX: f64 = 10.0;

/// One milestone drawn in the chart.
#[derive(Clone)]
struct Mark {
    n: usize,
    key: String,
    label: String,
    t: u64,
    x: f64,
}

/// A number badge above (or below) a lane: one milestone, or a range of
/// milestones too close together to number one by one.
struct Badge {
    row: usize,
    x0: f64,
    w: f64,
    members: Vec<Mark>,
}

impl Badge {
    fn text(&self) -> String {
        let (f, l) = (&self.members[0], &self.members[self.members.len() - 1]);
        if self.members.len() == 1 {
            f.n.to_string()
        } else {
            format!("{}–{}", f.n, l.n)
        }
    }
}

fn badge_w(text: &str) -> f64 {
    (text_w(text, BADGE_PX) + 9.0).max(BADGE_H + 1.0)
}

/// Lays number badges out so that no two overlap: each goes centred on its
/// milestone in the lowest of BADGE_ROWS rows where it fits; one that fits
/// nowhere joins the badge placed last (which then shows a range and grows
/// to the right: as the rightmost badge of its row it cannot run into
/// another). Badges stay within [lo, hi].
fn layout_badges(marks: &[Mark], lo: f64, hi: f64) -> Vec<Badge> {
    let gap = 3.0;
    let mut rows_end = [f64::NEG_INFINITY; BADGE_ROWS];
    let mut out: Vec<Badge> = Vec::new();
    let mut order: Vec<&Mark> = marks.iter().collect();
    order.sort_by(|a, b| a.x.total_cmp(&b.x).then(a.n.cmp(&b.n)));
    for m in order {
        let w = badge_w(&m.n.to_string());
        let x0 = (m.x - w / 2.0).clamp(lo, (hi - w).max(lo));
        if let Some(row) = (0..BADGE_ROWS).find(|&r| rows_end[r] + gap <= x0) {
            rows_end[row] = x0 + w;
            out.push(Badge {
                row,
                x0,
                w,
                members: vec![m.clone()],
            });
            continue;
        }
        let last = out.last_mut().expect("the first badge always fits");
        last.members.push(m.clone());
        last.members.sort_by_key(|m| m.n);
        last.w = badge_w(&last.text());
        // Keep it inside the chart: move left only as far as its row allows.
        let over = last.x0 + last.w - hi;
        if over > 0.0 {
            let prev_end = out[..out.len() - 1]
                .iter()
                .filter(|b| b.row == out[out.len() - 1].row)
                .map(|b| b.x0 + b.w)
                .fold(lo - gap, f64::max);
            let last = out.last_mut().expect("just used");
            last.x0 = (last.x0 - over).max(prev_end + gap);
        }
        let last = out.last().expect("just used");
        rows_end[last.row] = last.x0 + last.w;
    }
    out
}

/// Rows the badges use (at least one).
fn badge_rows(b: &[Badge]) -> usize {
    b.iter().map(|b| b.row + 1).max().unwrap_or(1)
}

/// Draws badges whose lane edge is at `base` (above it when `up`, else below).
fn draw_badges(out: &mut String, badges: &[Badge], base: f64, up: bool, run: &str) {
    let mut lines = String::new();
    let mut pills = String::new();
    for b in badges {
        let cy = if up {
            base - 5.0 - BADGE_H / 2.0 - b.row as f64 * BADGE_ROW
        } else {
            base + 5.0 + BADGE_H / 2.0 + b.row as f64 * BADGE_ROW
        };
        let edge = if up {
            cy + BADGE_H / 2.0
        } else {
            cy - BADGE_H / 2.0
        };
        let cx = b.x0 + b.w / 2.0;
        let (xf, xl) = (b.members[0].x, b.members[b.members.len() - 1].x);
        let tip = base + if up { -2.0 } else { 2.0 };
        let mut tx = cx.clamp(xf.min(xl), xf.max(xl));
        if b.members.len() > 1 {
            let _ = write!(
                lines,
                r##"<path class="ms-bracket" d="M{xf:.1},{base:.1} V{tip:.1} H{xl:.1} V{base:.1}"/>"##
            );
        } else {
            tx = xf;
        }
        let _ = write!(
            lines,
            r##"<line class="ms-leader" x1="{cx:.1}" y1="{edge:.1}" x2="{tx:.1}" y2="{tip:.1}"/>"##
        );
        let titles: Vec<String> = b
            .members
            .iter()
            .map(|m| format!("{}: {} at {} s", m.n, m.label, secs(m.t)))
            .collect();
        let text = b.text();
        let data = if b.members.len() == 1 {
            format!(r#" data-ms="{}""#, esc(&b.members[0].key))
        } else {
            format!(
                r#" data-ms-from="{}" data-ms-to="{}""#,
                esc(&b.members[0].key),
                esc(&b.members[b.members.len() - 1].key)
            )
        };
        let _ = write!(
            pills,
            r##"<g class="ms-badge {run}"><title>{}</title><rect class="ms-pill" x="{:.1}" y="{:.1}" width="{:.1}" height="{BADGE_H}" rx="8"/><text class="{}"{data} x="{cx:.1}" y="{:.1}" text-anchor="middle">{}</text></g>"##,
            esc(&titles.join("\n")),
            b.x0,
            cy - BADGE_H / 2.0,
            b.w,
            if b.members.len() == 1 {
                "ms-num"
            } else {
                "ms-range"
            },
            cy + 3.6,
            esc(&text)
        );
    }
    out.push_str(&lines);
    out.push_str(&pills);
}

// ---------------------------------------------------------------- lanes

const PERIOD_COLOURS: [&str; 6] = [
    "#4e79a7", "#59a14f", "#9c755f", "#e0a526", "#76b7b2", "#b07aa1",
];
/// Run A and run B in compare mode: two tones each, alternating by period.
const RUN_COLOURS: [[&str; 2]; 2] = [["#2f6fa8", "#7fb0dc"], ["#e07b1a", "#f6b26b"]];

struct Lane<'a> {
    out: &'a mut String,
    geo: Geo,
}

impl Lane<'_> {
    fn label(&mut self, y: f64, h: f64, name: &str, sub: &str, run: Option<usize>) {
        let g = self.geo;
        let lx = g.left - 10.0;
        // A sub-label too wide for the margin goes on two lines, split at its comma.
        let subs: Vec<&str> = if text_w(sub, 11.0) > g.left - 14.0 {
            sub.splitn(2, ", ").collect()
        } else if sub.is_empty() {
            vec![]
        } else {
            vec![sub]
        };
        let block = 13.0 + 13.5 * subs.len() as f64;
        let y0 = y + (h - block) / 2.0 + 10.0;
        let _ = write!(
            self.out,
            r##"<text class="lane-label" x="{lx}" y="{y0:.1}" text-anchor="end">{}</text>"##,
            esc(name)
        );
        for (k, line) in subs.iter().enumerate() {
            let _ = write!(
                self.out,
                r##"<text class="lane-sub" x="{lx}" y="{:.1}" text-anchor="end">{}</text>"##,
                y0 + 13.5 + k as f64 * 13.5,
                esc(line)
            );
        }
        if let Some(r) = run {
            let _ = write!(
                self.out,
                r##"<rect class="run-chip" x="2" y="{:.1}" width="4" height="{:.1}" rx="2" fill="{}"/>"##,
                y + 1.0,
                (h - 2.0).max(4.0),
                RUN_COLOURS[r][0]
            );
        }
        let _ = write!(
            self.out,
            r##"<line class="lane-sep" x1="{}" x2="{:.1}" y1="{:.1}" y2="{:.1}"/>"##,
            g.left,
            g.plot_end(),
            y + h + 5.0,
            y + h + 5.0
        );
    }

    /// The periods between milestones as bars, labelled with their length where wide enough.
    fn periods(
        &mut self,
        y: f64,
        h: f64,
        a: &Analysis,
        nums: &HashMap<String, usize>,
        run: Option<usize>,
    ) {
        let g = self.geo;
        for k in 1..a.milestones.len() {
            let (p, m) = (&a.milestones[k - 1], &a.milestones[k]);
            let (x0, x1) = (g.x(p.t), g.x(m.t));
            let wdt = (x1 - x0).max(1.0);
            let col = match run {
                Some(r) => RUN_COLOURS[r][k % 2],
                None => PERIOD_COLOURS[(k - 1) % PERIOD_COLOURS.len()],
            };
            let (np, nm) = (nums.get(&p.key), nums.get(&m.key));
            let _ = write!(
                self.out,
                r##"<g class="period"><title>{}{} → {}{}: {} s</title><rect x="{x0:.1}" y="{y:.1}" width="{wdt:.1}" height="{h}" rx="2" fill="{col}"/>"##,
                np.map(|n| format!("{n} ")).unwrap_or_default(),
                esc(&p.label),
                nm.map(|n| format!("{n} ")).unwrap_or_default(),
                esc(&m.label),
                secs(m.t.saturating_sub(p.t))
            );
            let label = format!("{} s", secs(m.t.saturating_sub(p.t)));
            if wdt > text_w(&label, 11.0) + 10.0 {
                let _ = write!(
                    self.out,
                    r##"<text class="bar-text" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                    x0 + wdt / 2.0,
                    y + h / 2.0 + 4.0,
                    esc(&label)
                );
            }
            self.out.push_str("</g>");
        }
    }

    fn probes(&mut self, y: f64, a: &Analysis, run: Option<usize>) -> f64 {
        let g = self.geo;
        let h = 20.0;
        let sub = if a.probes.is_empty() {
            "none".to_string()
        } else {
            format!("{} attempts", a.probes.len())
        };
        self.label(y, h, &lane_name("probes", run), &sub, run);
        // One dot per pixel and kind: a run of 100,000 probes stays a small page.
        let mut last: HashMap<&str, i64> = HashMap::new();
        for p in &a.probes {
            let (cls, what) = match (p.status, &p.error) {
                (Some(s), _) if p.ok => ("probe probe-ok", format!("status {s}")),
                (Some(s), _) => ("probe probe-bad", format!("status {s}")),
                (None, e) => (
                    "probe probe-err",
                    format!("error: {}", e.clone().unwrap_or_default()),
                ),
            };
            let px = g.x(p.t);
            if last.insert(cls, px.round() as i64) == Some(px.round() as i64) {
                continue;
            }
            let _ = write!(
                self.out,
                r##"<circle class="{cls}" cx="{px:.1}" cy="{:.1}" r="4.5"><title>attempt {} at {} s: {} ({} ms)</title></circle>"##,
                y + h / 2.0,
                p.attempt,
                secs(p.t),
                esc(&what),
                p.latency_ms
            );
        }
        y + h + 14.0
    }

    fn holds(&mut self, y: f64, a: &Analysis, run: Option<usize>) -> f64 {
        let g = self.geo;
        let mut rows_end: Vec<u64> = Vec::new();
        let mut placed: Vec<(usize, &Hold, u64)> = Vec::new();
        for hd in &a.holds {
            let end = hd.end.unwrap_or(a.end_t).max(hd.t);
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
        let nrows = rows_end.len().clamp(1, 8);
        let rh = 10.0;
        let h = (nrows as f64 * (rh + 3.0)).max(20.0);
        let sub = if a.holds.is_empty() {
            "none".to_string()
        } else {
            format!("{} held", a.holds.len())
        };
        self.label(y, h, &lane_name("holds", run), &sub, run);
        for (row, hd, end) in placed {
            let row = row.min(7);
            let (x0, x1) = (g.x(hd.t), g.x(end));
            let cls = if hd.end.is_some() {
                "hold"
            } else {
                "hold hold-open"
            };
            let _ = write!(
                self.out,
                r##"<rect class="{cls}" x="{x0:.1}" y="{:.1}" width="{:.1}" height="{rh}" rx="2"><title>{} {}[{}/{}] held {} → {} s ({} s){}</title></rect>"##,
                y + row as f64 * (rh + 3.0) + if nrows == 1 { 5.0 } else { 0.0 },
                (x1 - x0).max(2.0),
                esc(&hd.what),
                esc(&hd.comm),
                hd.pid,
                hd.tid,
                secs(hd.t),
                secs(end),
                secs(hd.waited_ms.unwrap_or(end.saturating_sub(hd.t))),
                if hd.end.is_none() {
                    ", never released"
                } else {
                    ""
                }
            );
        }
        y + h + 14.0
    }

    fn hooks(&mut self, y: f64, a: &Analysis, run: Option<usize>) -> f64 {
        let g = self.geo;
        let hh = 16.0;
        let shown = &a.hooks[..a.hooks.len().min(12)];
        // Each hook's label goes inside its bar if it fits, else beside it
        // where it fits whole, else on a line of its own under the bar
        // (cut only when longer than the whole plot; the tooltip and the
        // Hooks table have it all).
        let fs = 11.0;
        let plot = g.plot_end() - g.left;
        let places: Vec<(f64, f64, String, &str, f64, &str, f64)> = shown
            .iter()
            .map(|hk| {
                let s0 = hk.start.unwrap_or(0);
                let e0 = hk.end.unwrap_or(a.end_t).max(s0);
                let (x0, x1) = (g.x(s0), g.x(e0));
                let wdt = (x1 - x0).max(3.0);
                let full = format!("{}: {}", hk.index, hk.cmd);
                let need = text_w(&full, fs);
                if need <= wdt - 10.0 {
                    (x0, wdt, full, "bar-text", x0 + 5.0, "start", 0.0)
                } else if need <= g.w - 4.0 - (x1 + 5.0) {
                    (x0, wdt, full, "hook-text", x1 + 5.0, "start", 0.0)
                } else if need <= x0 - 5.0 - g.left {
                    (x0, wdt, full, "hook-text", x0 - 5.0, "end", 0.0)
                } else {
                    let chars = (plot / (fs * 0.62)).floor() as usize;
                    let text = fit(&full, chars);
                    let lx = x0.min(g.plot_end() - text_w(&text, fs)).max(g.left);
                    (x0, wdt, text, "hook-text", lx, "start", 14.0)
                }
            })
            .collect();
        let h = places
            .iter()
            .map(|p| hh + 4.0 + p.6)
            .sum::<f64>()
            .max(hh + 4.0);
        let sub = if a.hooks.is_empty() {
            if a.hook_notes.is_empty() {
                "none".to_string()
            } else {
                "not run".to_string()
            }
        } else {
            format!("{} run", a.hooks.len())
        };
        self.label(y, h, &lane_name("hooks", run), &sub, run);
        let mut yy = y;
        for (hk, (x0, wdt, text, tcls, tx, anchor, extra)) in shown.iter().zip(places) {
            let s0 = hk.start.unwrap_or(0);
            let e0 = hk.end.unwrap_or(a.end_t).max(s0);
            let cls = match (hk.ok, &hk.killed) {
                (_, Some(_)) => "hook-bar hook-killed",
                (Some(true), _) => "hook-bar hook-ok",
                (Some(false), _) => "hook-bar hook-failed",
                (None, _) => "hook-bar hook-running",
            };
            let res = if hk.end.is_some() {
                hook_result(hk)
            } else {
                "running".into()
            };
            let _ = write!(
                self.out,
                r##"<g class="hook"><title>hook {}: {} ({} → {} s, {})</title><rect class="{cls}" x="{x0:.1}" y="{yy:.1}" width="{wdt:.1}" height="{hh}" rx="3"/><text class="{tcls}" x="{tx:.1}" y="{:.1}" text-anchor="{anchor}">{}</text></g>"##,
                hk.index,
                esc(&hk.cmd),
                secs(s0),
                secs(e0),
                esc(&res),
                yy + 12.0 + extra,
                esc(&text)
            );
            yy += hh + 4.0 + extra;
        }
        y + h + 14.0
    }

    /// Redirects as a cumulative step line and a density strip, writes as
    /// markers: aggregated per pixel column, so that the page stays the same
    /// size however many events a run has (a column's title says how many).
    fn redirects(&mut self, y: f64, a: &Analysis, run: Option<usize>) -> f64 {
        let g = self.geo;
        let h = 40.0;
        let sub = format!("{} paths, {} writes", a.redirects.len(), a.writes.len());
        self.label(y, h, &lane_name("redirects", run), &sub, run);
        if !a.redirects.is_empty() {
            let total = a.redirects.len() as f64;
            let cols = columns(g, a.redirects.iter().map(|(t, p)| (*t, p.as_str())));
            let most = cols.iter().map(|c| c.count).max().unwrap_or(1) as f64;
            let mut pts = format!("{:.1},{:.1}", g.left, y + h);
            let mut done = 0usize;
            let mut strip = String::new();
            for c in &cols {
                let px = c.px as f64;
                let before = y + h - h * (done as f64 / total);
                done += c.count;
                let after = y + h - h * (done as f64 / total);
                let _ = write!(pts, " {px:.1},{before:.1} {px:.1},{after:.1}");
                // Bar height: at least a tick, the busiest column 8 px.
                let bh = 2.0 + 6.0 * (c.count as f64 / most);
                let _ = write!(
                    strip,
                    r##"<rect class="redirect" x="{:.1}" y="{:.1}" width="1" height="{bh:.1}"><title>{}</title></rect>"##,
                    px - 0.5,
                    y + h + 1.0,
                    esc(&c.title("redirect", "redirects"))
                );
            }
            let _ = write!(pts, " {:.1},{y:.1}", g.x(a.end_t));
            let _ = write!(
                self.out,
                r##"<polyline class="redirects" points="{pts}"><title>{} redirected paths (first time per path)</title></polyline>{strip}"##,
                a.redirects.len()
            );
        }
        for ok in [true, false] {
            let writes = a
                .writes
                .iter()
                .filter(|w| w.2 == ok)
                .map(|(t, p, _)| (*t, p.as_str()));
            for c in columns(g, writes) {
                let what = if ok {
                    ("write", "writes")
                } else {
                    ("refused write", "refused writes")
                };
                let _ = write!(
                    self.out,
                    r##"<path class="write {}" d="M{}.0,{:.1} l-4.5,-8 h9 z"><title>{}</title></path>"##,
                    if ok { "write-ok" } else { "write-failed" },
                    c.px,
                    y + 9.0,
                    esc(&c.title(what.0, what.1))
                );
            }
        }
        y + h + 20.0
    }

    /// Dashed milestone lines from `y0` to `y1`.
    fn milestone_lines(&mut self, marks: &[Mark], y0: f64, y1: f64) {
        for m in marks {
            let _ = write!(
                self.out,
                r##"<line class="ms-line" x1="{0:.1}" x2="{0:.1}" y1="{y0:.1}" y2="{y1:.1}"><title>{1}: {2} at {3} s</title></line>"##,
                m.x,
                m.n,
                esc(&m.label),
                secs(m.t)
            );
        }
    }

    fn axis(&mut self, top: f64, bottom: f64) -> f64 {
        let g = self.geo;
        let n = if g.narrow { 6 } else { 10 };
        let step = tick_step(g.span, n);
        let mut t = 0u64;
        let mut grid = String::new();
        while t <= g.span {
            let xt = g.x(t);
            let _ = write!(
                grid,
                r##"<line class="grid" x1="{xt:.1}" x2="{xt:.1}" y1="{top:.1}" y2="{bottom:.1}"/><text class="tick" x="{xt:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                bottom + 14.0,
                fmt_tick(t, step)
            );
            t = match t.checked_add(step) {
                Some(t) => t,
                None => break,
            };
        }
        // The grid goes under everything drawn so far.
        self.out.insert_str(0, &grid);
        bottom + 22.0
    }
}

/// The events that fall in one pixel column of the chart.
struct Column<'a> {
    px: i64,
    count: usize,
    t0: u64,
    t1: u64,
    first: &'a str,
}

impl Column<'_> {
    /// "3 redirects, 1.200–1.250 s: /proc/sys/vm/panic_on_oom, …"
    fn title(&self, one: &str, many: &str) -> String {
        let when = if self.t0 == self.t1 {
            format!("{} s", secs(self.t0))
        } else {
            format!("{}–{} s", secs(self.t0), secs(self.t1))
        };
        if self.count == 1 {
            format!("{when} {one} {}", self.first)
        } else {
            format!("{} {many}, {when}: {}, …", self.count, self.first)
        }
    }
}

/// Groups time-ordered events by the pixel column they fall in: at most one
/// group per column of the plot, whatever the number of events.
fn columns<'a>(g: Geo, events: impl Iterator<Item = (u64, &'a str)>) -> Vec<Column<'a>> {
    let mut events: Vec<(u64, &str)> = events.collect();
    events.sort_by_key(|e| e.0);
    let mut out: Vec<Column> = Vec::new();
    for (t, what) in events {
        let px = g.x(t).round() as i64;
        match out.last_mut() {
            Some(c) if c.px == px => {
                c.count += 1;
                c.t0 = c.t0.min(t);
                c.t1 = c.t1.max(t);
            }
            _ => out.push(Column {
                px,
                count: 1,
                t0: t,
                t1: t,
                first: what,
            }),
        }
    }
    out
}

fn lane_name(kind: &str, run: Option<usize>) -> String {
    match run {
        Some(r) => format!("{kind} {}", ["A", "B"][r]),
        None => kind.to_string(),
    }
}

fn marks(a: &Analysis, nums: &HashMap<String, usize>, geo: &Geo) -> Vec<Mark> {
    a.milestones
        .iter()
        .map(|m| Mark {
            n: nums.get(&m.key).copied().unwrap_or(0),
            key: m.key.clone(),
            label: m.label.clone(),
            t: m.t,
            x: geo.x(m.t),
        })
        .collect()
}

fn svg_open(out: &mut String, cls: &str, geo: &Geo, height: f64, body: &str, label: &str) {
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="chart {cls}" viewBox="0 0 {} {height:.0}" style="max-width:{}px" role="img" aria-label="{}">{body}</svg>"##,
        geo.w,
        geo.w,
        esc(label)
    );
}

/// One run: badges, the periods lane with milestone lines through every lane, the other lanes, the axis.
fn chart_single(a: &Analysis, nums: &HashMap<String, usize>, geo: Geo, cls: &str) -> String {
    let ms = marks(a, nums, &geo);
    let badges = layout_badges(&ms, 2.0, geo.w - 2.0);
    let top = 6.0 + badge_rows(&badges) as f64 * BADGE_ROW;
    let mut body = String::new();
    let mut lane = Lane {
        out: &mut body,
        geo,
    };
    let h = 26.0;
    lane.label(top, h, "periods", "", None);
    lane.periods(top, h, a, nums, None);
    let mut y = top + h + 14.0;
    y = lane.probes(y, a, None);
    y = lane.holds(y, a, None);
    y = lane.hooks(y, a, None);
    y = lane.redirects(y, a, None);
    lane.milestone_lines(&ms, top, y - 12.0);
    let height = lane.axis(top, y - 12.0);
    draw_badges(&mut body, &badges, top, true, "");
    let mut out = String::new();
    svg_open(
        &mut out,
        cls,
        &geo,
        height,
        &body,
        &format!("timeline of one run, {} s", secs(a.end_t)),
    );
    out
}

/// Two runs on one time axis: A's periods with its badges above, B's below,
/// lines joining the same milestone in both; then each kind of lane for A and B.
fn chart_compare(
    runs: [&Analysis; 2],
    nums: &HashMap<String, usize>,
    geo: Geo,
    cls: &str,
) -> String {
    let ms: Vec<Vec<Mark>> = runs.iter().map(|a| marks(a, nums, &geo)).collect();
    let badges_a = layout_badges(&ms[0], 2.0, geo.w - 2.0);
    let badges_b = layout_badges(&ms[1], 2.0, geo.w - 2.0);
    let h = 22.0;
    let top_a = 6.0 + badge_rows(&badges_a) as f64 * BADGE_ROW;
    let band = 30.0;
    let top_b = top_a + h + band;
    let mut body = String::new();
    let mut lane = Lane {
        out: &mut body,
        geo,
    };
    for (r, top) in [(0usize, top_a), (1, top_b)] {
        let _ = write!(
            lane.out,
            r##"<text class="lane-label" x="{}" y="{:.1}" text-anchor="end">{}</text><rect class="run-chip" x="2" y="{:.1}" width="4" height="{:.1}" rx="2" fill="{}"/>"##,
            geo.left - 10.0,
            top + h / 2.0 + 4.0,
            lane_name("periods", Some(r)),
            top + 1.0,
            h - 2.0,
            RUN_COLOURS[r][0]
        );
        lane.periods(top, h, runs[r], nums, Some(r));
        lane.milestone_lines(&ms[r], top, top + h);
    }
    // The same milestone in A and B, joined.
    for m in &ms[0] {
        if let Some(mb) = ms[1].iter().find(|x| x.key == m.key) {
            let d = mb.t as i64 - m.t as i64;
            let cls = if d > 0 {
                "ms-join later"
            } else if d < 0 {
                "ms-join earlier"
            } else {
                "ms-join"
            };
            let _ = write!(
                lane.out,
                r##"<line class="{cls}" x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}"><title>{}: {}: A {} s, B {} s (B − A {}{} s)</title></line>"##,
                m.x,
                top_a + h,
                mb.x,
                top_b,
                m.n,
                esc(&m.label),
                secs(m.t),
                secs(mb.t),
                if d < 0 { "−" } else { "+" },
                secs(d.unsigned_abs())
            );
        }
    }
    let mut y = top_b + h + 8.0 + badge_rows(&badges_b) as f64 * BADGE_ROW + 12.0;
    let sep = |lane: &mut Lane, y: f64| {
        let _ = write!(
            lane.out,
            r##"<line class="lane-sep strong" x1="{}" x2="{:.1}" y1="{:.1}" y2="{:.1}"/>"##,
            geo.left,
            geo.plot_end(),
            y - 8.0,
            y - 8.0
        );
    };
    sep(&mut lane, y);
    for (r, run) in runs.iter().enumerate() {
        y = lane.probes(y, run, Some(r));
    }
    for (r, run) in runs.iter().enumerate() {
        y = lane.holds(y, run, Some(r));
    }
    for (r, run) in runs.iter().enumerate() {
        y = lane.hooks(y, run, Some(r));
    }
    for (r, run) in runs.iter().enumerate() {
        y = lane.redirects(y, run, Some(r));
    }
    let height = lane.axis(top_a, y - 12.0);
    draw_badges(&mut body, &badges_a, top_a, true, "run-a");
    draw_badges(&mut body, &badges_b, top_b + h, false, "run-b");
    let mut out = String::new();
    svg_open(
        &mut out,
        cls,
        &geo,
        height,
        &body,
        "timelines of two runs on one time axis",
    );
    out
}

fn geos(span: u64) -> [(Geo, &'static str); 2] {
    [
        (
            Geo {
                w: WIDE,
                left: 128.0,
                right: 24.0,
                span,
                narrow: false,
            },
            "wide",
        ),
        (
            Geo {
                w: NARROW,
                left: 104.0,
                right: 18.0,
                span,
                narrow: true,
            },
            "narrow",
        ),
    ]
}

// ---------------------------------------------------------------- legend

fn legend(compare: bool) -> String {
    let item = |svg: &str, text: &str| {
        format!(
            r##"<span><svg viewBox="0 0 22 14" width="22" height="14" aria-hidden="true">{svg}</svg>{}</span>"##,
            esc(text)
        )
    };
    let mut v = vec![
        item(
            r##"<rect x="1" y="1" width="20" height="12" rx="6" class="ms-pill"/><text x="11" y="10.5" text-anchor="middle" class="ms-num">3</text>"##,
            "milestone (numbered as in the table)",
        ),
        item(
            r##"<rect x="1" y="3" width="20" height="8" rx="2" fill="#4e79a7"/>"##,
            "period between milestones",
        ),
        item(
            r##"<circle cx="11" cy="7" r="4.5" class="probe-ok"/>"##,
            "probe ready",
        ),
        item(
            r##"<circle cx="11" cy="7" r="4.5" class="probe-bad"/>"##,
            "probe not ready (HTTP status)",
        ),
        item(
            r##"<circle cx="11" cy="7" r="4.5" class="probe-err"/>"##,
            "probe error",
        ),
        item(
            r##"<rect x="1" y="3" width="20" height="8" rx="2" class="hold"/>"##,
            "held until released",
        ),
        item(
            r##"<rect x="1" y="3" width="20" height="8" rx="2" class="hold hold-open"/>"##,
            "held, never released",
        ),
        item(
            r##"<rect x="1" y="2" width="20" height="10" rx="3" class="hook-ok"/>"##,
            "hook ok",
        ),
        item(
            r##"<rect x="1" y="2" width="20" height="10" rx="3" class="hook-failed"/>"##,
            "hook failed",
        ),
        item(
            r##"<rect x="1" y="2" width="20" height="10" rx="3" class="hook-killed"/>"##,
            "hook killed at exit",
        ),
        item(
            r##"<polyline points="1,13 7,13 7,8 14,8 14,2 21,2" class="redirects"/>"##,
            "redirected paths (cumulative)",
        ),
        item(
            r##"<rect x="4" y="8" width="2" height="6" class="redirect"/><rect x="10" y="11" width="2" height="3" class="redirect"/><rect x="16" y="6" width="2" height="8" class="redirect"/>"##,
            "redirects per moment (taller: more)",
        ),
        item(
            r##"<path d="M11,11 l-4.5,-8 h9 z" class="write-ok"/>"##,
            "write accepted",
        ),
        item(
            r##"<path d="M11,11 l-4.5,-8 h9 z" class="write-failed"/>"##,
            "write refused (e.g. EINVAL)",
        ),
    ];
    if compare {
        v.insert(
            1,
            item(
                r##"<line x1="4" y1="1" x2="18" y2="13" class="ms-join later"/>"##,
                "same milestone in A and B (red: B later, green: B earlier)",
            ),
        );
    }
    format!(r#"<div class="legend">{}</div>"#, v.join(""))
}

// ---------------------------------------------------------------- header

/// The command in a <details>: the target command (after `--`) as the
/// summary, the whole line shell-quoted, one option per line, inside.
fn command_block(argv: &[String]) -> String {
    if argv.is_empty() {
        return String::new();
    }
    let target: Vec<String> = match argv.iter().position(|a| a == "--") {
        Some(i) if i + 1 < argv.len() => argv[i + 1..].to_vec(),
        _ => argv.to_vec(),
    };
    let summary = fit(
        &target
            .iter()
            .map(|a| shell_word(a))
            .collect::<Vec<_>>()
            .join(" "),
        110,
    );
    // One line per option with its value, continued with a backslash.
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut after_dashdash = false;
    for (k, a) in argv.iter().enumerate() {
        let w = shell_word(a);
        let starts_option = !after_dashdash && k > 0 && a.starts_with('-');
        if (starts_option || (a == "--" && !after_dashdash)) && !cur.is_empty() {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(&w);
        if a == "--" {
            after_dashdash = true;
        }
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    let full = lines.join(" \\\n    ");
    format!(
        r#"<details class="cmd"><summary><span class="cmd-label">command</span> <code>{}</code></summary><pre>{}</pre></details>"#,
        esc(&summary),
        esc(&full)
    )
}

fn facts(a: &Analysis) -> String {
    let mut v = Vec::new();
    v.push(format!(
        r#"<span class="chip">ran <b>{} s</b></span>"#,
        secs(a.end_t)
    ));
    match &a.exit {
        Some((_, code, sig)) => {
            let ok = *code == Some(0);
            let mut t = format!(
                "exit {}",
                code.map(|c| c.to_string()).unwrap_or_else(|| "?".into())
            );
            if let Some(s) = sig {
                let _ = write!(t, " ({s})");
            }
            v.push(format!(
                r#"<span class="chip {}">{}</span>"#,
                if ok { "good" } else { "bad" },
                esc(&t)
            ));
        }
        None => v.push(
            r#"<span class="chip bad">no exit event: cut short or still running</span>"#.into(),
        ),
    }
    match &a.gate {
        Some((how, t)) => v.push(format!(
            r#"<span class="chip {}">gate {} at {} s</span>"#,
            if how == "open" { "good" } else { "bad" },
            esc(how),
            secs(*t)
        )),
        None if !a.probes.is_empty() => {
            v.push(r#"<span class="chip bad">gate never opened</span>"#.into())
        }
        None => {}
    }
    if !a.wall_clock.is_empty() {
        v.push(format!(
            r#"<span class="muted">started {}</span>"#,
            esc(&a.wall_clock)
        ));
    }
    if !a.version.is_empty() {
        v.push(format!(
            r#"<span class="muted">k3shim {}</span>"#,
            esc(&a.version)
        ));
    }
    format!(r#"<div class="facts">{}</div>"#, v.join(" "))
}

// ---------------------------------------------------------------- waterfall

/// The waterfall's axis labels: 0, one round time near the middle, and the
/// end (the column can be narrow: more labels would collide).
fn scale_header(span: u64) -> String {
    let step = tick_step(span, 3);
    let mut s = String::from(r#"<div class="scale"><span>0s</span>"#);
    let mut t = step;
    while t < span {
        let pct = 100.0 * t as f64 / span.max(1) as f64;
        if pct > 60.0 {
            break;
        }
        if pct >= 25.0 {
            let _ = write!(
                s,
                r#"<span style="left:{pct:.2}%">{}</span>"#,
                fmt_tick(t, step)
            );
        }
        t = match t.checked_add(step) {
            Some(t) => t,
            None => break,
        };
    }
    let _ = write!(s, r#"<span class="end">{}</span></div>"#, fmt_tick(span, 1));
    s
}

fn pct(t: u64, span: u64) -> f64 {
    100.0 * t.min(span) as f64 / span.max(1) as f64
}

fn bar(from: u64, to: u64, span: u64, col: &str, cls: &str) -> String {
    let (l, r) = (pct(from.min(to), span), pct(to, span));
    format!(
        r#"<i class="{cls}" style="left:{l:.2}%;width:max(2px,{:.2}%);background:{col}"></i><b class="dot" style="left:{r:.2}%"></b>"#,
        r - l
    )
}

/// One row per milestone: its number, name, a bar for its period on the
/// run's time axis, its time and its period.
fn waterfall(a: &Analysis, span: u64) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<h2>Milestones and periods</h2><table class="wf"><thead><tr><th class="num">#</th><th>milestone</th><th class="wf-col">{}</th><th class="num">t (s)</th><th class="num">period (s)</th></tr></thead><tbody>"#,
        scale_header(span)
    );
    for (n, m) in a.milestones.iter().enumerate() {
        let (period, track) = if n == 0 {
            ("-".to_string(), bar(0, 0, span, "#333", "bar"))
        } else {
            let p = &a.milestones[n - 1];
            (
                secs(m.t.saturating_sub(p.t)),
                bar(
                    p.t,
                    m.t,
                    span,
                    PERIOD_COLOURS[(n - 1) % PERIOD_COLOURS.len()],
                    "bar",
                ),
            )
        };
        let title = if n == 0 {
            String::new()
        } else {
            format!(
                r#" title="period {n}: {} → {}""#,
                esc(&a.milestones[n - 1].label),
                esc(&m.label)
            )
        };
        let _ = write!(
            o,
            r#"<tr data-ms="{}"><td class="num"><span class="ms-num" data-ms="{}">{n}</span></td><td class="ms-name">{}</td><td class="wf-col"><div class="track"{title}>{track}</div></td><td class="num">{}</td><td class="num">{period}</td></tr>"#,
            esc(&m.key),
            esc(&m.key),
            esc(&m.label),
            secs(m.t)
        );
    }
    if let Some((t, _, _)) = &a.exit {
        let _ = write!(
            o,
            r#"<tr class="total"><td></td><td>whole run</td><td class="wf-col"><div class="track">{}</div></td><td></td><td class="num">{}</td></tr>"#,
            bar(0, *t, span, "#b9c2cc", "bar"),
            secs(*t)
        );
    }
    o.push_str("</tbody></table>");
    o
}

fn signed(d: i64) -> String {
    format!(
        "{}{}",
        if d < 0 { "−" } else { "+" },
        secs(d.unsigned_abs())
    )
}

fn delta_cell(d: Option<i64>) -> String {
    match d {
        Some(d) => format!(
            r#"<td class="num delta {}">{}</td>"#,
            if d > 0 {
                "later"
            } else if d < 0 {
                "earlier"
            } else {
                ""
            },
            signed(d)
        ),
        None => r#"<td class="num">-</td>"#.into(),
    }
}

/// The compare waterfall: per milestone (numbered as in the chart and
/// `--compare`'s table), A's and B's bars on the shared axis, both times and
/// the deltas B − A of the time and of the period.
fn waterfall_compare(a: &Analysis, b: &Analysis, span: u64) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<h2>Milestones, A and B</h2><p class="note">Δ = B − A. Δ t: how much later (+) or earlier (−) B reached the milestone; Δ period: how much longer (+) or shorter (−) B took since the last earlier milestone both runs have.</p><table class="wf cmp"><thead><tr><th class="num">#</th><th>milestone</th><th class="wf-col">{}</th><th class="num">A t (s)</th><th class="num">B t (s)</th><th class="num">Δ t (s)</th><th class="num">Δ period (s)</th></tr></thead><tbody>"#,
        scale_header(span)
    );
    for r in compare_rows(a, b) {
        let (n, k, label) = (r.n, r.key, &r.label);
        let (ta, tb, pa, pb) = (r.ta, r.tb, r.span_a, r.span_b);
        let track = |t: Option<u64>, p: Option<(u64, u64)>, r: usize| match (t, p) {
            (_, Some((from, to))) => bar(from, to, span, RUN_COLOURS[r][0], "bar"),
            (Some(t), None) => bar(t, t, span, RUN_COLOURS[r][0], "bar"),
            _ => String::new(),
        };
        let f = |x: Option<u64>| x.map(secs).unwrap_or_else(|| "-".into());
        let dt = ta.zip(tb).map(|(x, y)| y as i64 - x as i64);
        let dp = pa.zip(pb).map(|((a0, a1), (b0, b1))| {
            (b1.saturating_sub(b0)) as i64 - (a1.saturating_sub(a0)) as i64
        });
        let _ = write!(
            o,
            r#"<tr data-ms="{}"><td class="num"><span class="ms-num" data-ms="{}">{n}</span></td><td class="ms-name">{}</td><td class="wf-col"><div class="track two"><div class="lane-a">{}</div><div class="lane-b">{}</div></div></td><td class="num">{}</td><td class="num">{}</td>{}{}</tr>"#,
            esc(k),
            esc(k),
            esc(label),
            track(ta, pa, 0),
            track(tb, pb, 1),
            f(ta),
            f(tb),
            delta_cell(dt),
            delta_cell(dp)
        );
    }
    let ea = a.exit.as_ref().map(|e| e.0);
    let eb = b.exit.as_ref().map(|e| e.0);
    let whole = |t: Option<u64>, r: usize| {
        t.map(|t| bar(0, t, span, RUN_COLOURS[r][1], "bar"))
            .unwrap_or_default()
    };
    let _ = write!(
        o,
        r#"<tr class="total"><td></td><td>whole run</td><td class="wf-col"><div class="track two"><div class="lane-a">{}</div><div class="lane-b">{}</div></div></td><td class="num">{}</td><td class="num">{}</td>{}<td></td></tr></tbody></table>"#,
        whole(ea, 0),
        whole(eb, 1),
        ea.map(secs).unwrap_or_else(|| "-".into()),
        eb.map(secs).unwrap_or_else(|| "-".into()),
        delta_cell(ea.zip(eb).map(|(x, y)| y as i64 - x as i64))
    );
    o
}

// ---------------------------------------------------------------- page

const CSS: &str = r#"
:root{--ink:#1f2328;--muted:#656d76;--line:#d8dee4;--bg:#f6f8fa;--a:#2f6fa8;--b:#e07b1a}
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:24px 32px;color:var(--ink);background:var(--bg);font-size:14px;line-height:1.45}
h1{font-size:21px;margin:0 0 6px}h2{font-size:15px;margin:4px 0 10px}
.card{background:#fff;border:1px solid var(--line);border-radius:10px;padding:14px 16px;margin:14px 0}
.run-head{display:flex;gap:10px;align-items:baseline;flex-wrap:wrap}
.run-tag{display:inline-block;min-width:22px;text-align:center;border-radius:5px;color:#fff;font-weight:700;padding:0 6px}
.run-tag.a{background:var(--a)}.run-tag.b{background:var(--b)}
.facts{display:flex;flex-wrap:wrap;gap:6px 8px;align-items:center;margin:4px 0 6px}
.chip{border:1px solid var(--line);border-radius:999px;padding:1px 10px;background:#f6f8fa;white-space:nowrap}
.chip.good{background:#e6f4ea;border-color:#a8d5b5}.chip.bad{background:#fde8e8;border-color:#f0b4b4}
.muted{color:var(--muted);font-size:13px}
details.cmd{margin:4px 0 0}
details.cmd summary{cursor:pointer;color:var(--muted);overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
details.cmd summary code{color:var(--ink)}
.cmd-label{font-weight:600}
pre{background:#f6f8fa;border:1px solid var(--line);border-radius:6px;padding:8px 10px;overflow-x:auto;font-size:12.5px;margin:8px 0 0}
code,pre{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace}
svg.chart{width:100%;height:auto;display:block}
svg.chart.narrow{display:none}
@media (max-width:1000px){body{margin:12px}svg.chart.wide{display:none}svg.chart.narrow{display:block}.card{padding:10px}}
svg text{font-family:inherit}
.lane-label{font-size:12.5px;font-weight:600;fill:#333}.lane-sub{font-size:11px;fill:#777}
.lane-sep{stroke:#eef0f3}.lane-sep.strong{stroke:#d8dee4}.grid{stroke:#eef0f3}.tick{font-size:11px;fill:#666}
.bar-text{font-size:11px;fill:#fff;font-weight:600}.hook-text{font-size:11px;fill:#333}
.ms-line{stroke:#444;stroke-dasharray:3,3;stroke-opacity:.45}
.ms-leader{stroke:#9aa4ae;stroke-width:1}.ms-bracket{stroke:#9aa4ae;fill:none}
.ms-pill{fill:#fff;stroke:#333;stroke-width:1.2}
.run-a .ms-pill{stroke:var(--a)}.run-b .ms-pill{stroke:var(--b)}
.ms-num,.ms-range{font-size:10px;font-weight:700;fill:#222}
.ms-join{stroke:#8a939c;stroke-width:1.2}.ms-join.later{stroke:#d1495b}.ms-join.earlier{stroke:#2a9d55}
.probe-ok{fill:#2ca02c}.probe-bad{fill:#f28e2b}.probe-err{fill:#d62728}
.hold{fill:#8c6bb1}.hold.hold-open{fill:#e15759}
.hook-ok{fill:#2ca02c}.hook-failed{fill:#d62728}.hook-killed{fill:#7f7f7f}.hook-running{fill:#bab0ac}
.redirects{fill:none;stroke:#4e79a7;stroke-width:2}.redirect{fill:#4e79a7;fill-opacity:.55}
.write-ok{fill:#59a14f}.write-failed{fill:#d62728}
.legend{font-size:12px;color:#444;margin:8px 0 0;display:flex;flex-wrap:wrap;gap:4px 14px}
.legend span{white-space:nowrap;display:inline-flex;align-items:center;gap:5px}
.legend .ms-num{font-size:9px}
table{border-collapse:collapse;font-size:13px;background:#fff;max-width:100%}
th,td{border-bottom:1px solid #eaeef2;padding:4px 8px;text-align:left;vertical-align:middle}
th{background:#f6f8fa;font-weight:600;border-bottom:1px solid var(--line)}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.wf{width:100%}
table.wf td .ms-num{display:inline-block;min-width:22px;padding:0 5px;border:1.2px solid #333;border-radius:9px;text-align:center;font-size:11px;font-weight:700;line-height:15px}
.wf-col{width:42%;min-width:130px}
.track{position:relative;height:14px;background:#f3f5f7;border-radius:3px}
.track.two{height:20px}
.track .lane-a,.track .lane-b{position:absolute;left:0;right:0;height:8px}
.track .lane-a{top:1px}.track .lane-b{top:11px}
.track i{position:absolute;top:2px;bottom:2px;border-radius:2px}
.track.two i{top:0;bottom:0}
.track b.dot{position:absolute;top:-1px;width:2px;bottom:-1px;background:#222;margin-left:-1px}
.scale{position:relative;height:14px;font-weight:400;font-size:11px;color:#666}
.scale span{position:absolute;top:0;transform:translateX(-50%)}.scale span:first-child{transform:none}
.scale span.end{right:0;transform:none}
tr.total td{font-weight:600;border-top:1px solid var(--line)}
td.delta.later{color:#b42335}td.delta.earlier{color:#1e7b43}
.ms-name{min-width:9em;overflow-wrap:anywhere}
@media (max-width:1000px){.wf-col{width:auto}table.wf th,table.wf td{padding:4px 5px}}
.note{font-size:13px;color:#444;margin:6px 0}
.tables{display:flex;flex-wrap:wrap;gap:8px 28px}.tables>div{min-width:0;max-width:100%;overflow-x:auto}
"#;

fn run_header(out: &mut String, a: &Analysis, tag: Option<usize>) {
    out.push_str(r#"<div class="run-head">"#);
    if let Some(r) = tag {
        let _ = write!(
            out,
            r#"<span class="run-tag {}">{}</span>"#,
            ["a", "b"][r],
            ["A", "B"][r]
        );
    }
    out.push_str(&facts(a));
    out.push_str("</div>");
    out.push_str(&command_block(&a.argv));
}

fn detail_tables(out: &mut String, a: &Analysis) {
    out.push_str(r#"<div class="tables">"#);
    // The milestone table is the waterfall; the rest as tables.
    for t in tables(a, true).iter().skip(1) {
        out.push_str("<div>");
        t.html(out);
        out.push_str("</div>");
    }
    out.push_str("</div>");
}

/// One self-contained HTML page (no script, no network): the run (or the
/// two runs compared on one time axis) as a chart, the milestones as a
/// waterfall, then the details.
pub fn html(events: &[Value], compare: Option<&[Value]>) -> String {
    let a = analyze(events);
    let b = compare.map(analyze);
    let span = a.end_t.max(b.as_ref().map(|b| b.end_t).unwrap_or(0)).max(1);
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>k3shim timeline{}</title><style>{CSS}</style></head><body>\n",
        if b.is_some() { ": A and B compared" } else { "" }
    );
    match &b {
        None => {
            let nums: HashMap<String, usize> = a
                .milestones
                .iter()
                .enumerate()
                .map(|(n, m)| (m.key.clone(), n))
                .collect();
            out.push_str(r#"<div class="card"><h1>k3shim timeline</h1>"#);
            run_header(&mut out, &a, None);
            out.push_str("</div>\n<div class=\"card\">");
            for (geo, cls) in geos(span) {
                out.push_str(&chart_single(&a, &nums, geo, cls));
            }
            out.push_str(&legend(false));
            out.push_str("</div>\n<div class=\"card\">");
            out.push_str(&waterfall(&a, span));
            out.push_str("</div>\n<div class=\"card\">");
            detail_tables(&mut out, &a);
            out.push_str("</div>\n");
        }
        Some(b) => {
            let nums: HashMap<String, usize> = union_keys(&a, b)
                .iter()
                .enumerate()
                .map(|(n, (k, _))| (k.to_string(), n))
                .collect();
            out.push_str(r#"<div class="card"><h1>k3shim timeline: two runs compared</h1>"#);
            run_header(&mut out, &a, Some(0));
            run_header(&mut out, b, Some(1));
            out.push_str("</div>\n<div class=\"card\">");
            for (geo, cls) in geos(span) {
                out.push_str(&chart_compare([&a, b], &nums, geo, cls));
            }
            out.push_str(&legend(true));
            out.push_str("</div>\n<div class=\"card\">");
            out.push_str(&waterfall_compare(&a, b, span));
            out.push_str("</div>\n");
            for (r, an) in [(0usize, &a), (1, b)] {
                let _ = write!(
                    out,
                    r#"<div class="card"><h2><span class="run-tag {}">{}</span> details</h2>"#,
                    ["a", "b"][r],
                    ["A", "B"][r]
                );
                detail_tables(&mut out, an);
                out.push_str("</div>\n");
            }
        }
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_for_any_span() {
        assert_eq!(tick_step(10_000, 10), 1000);
        assert_eq!(tick_step(95_000, 10), 10_000);
        assert_eq!(tick_step(50, 10), 5);
        // A span of centuries still gets about ten ticks.
        let span = 1u64 << 53;
        assert!(span / tick_step(span, 10) <= 10);
        assert!(u64::MAX / tick_step(u64::MAX, 10) <= 100);
    }

    #[test]
    fn escapes_html() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    fn mark(n: usize, x: f64) -> Mark {
        Mark {
            n,
            key: format!("k{n}"),
            label: format!("m{n}"),
            t: n as u64,
            x,
        }
    }

    #[test]
    fn badges_never_overlap_and_crowds_become_ranges() {
        // 60 milestones, most within a few pixels of each other.
        let ms: Vec<Mark> = (0..60)
            .map(|n| {
                mark(
                    n,
                    10.0 + if n < 50 {
                        n as f64 * 2.0
                    } else {
                        300.0 + n as f64 * 40.0
                    },
                )
            })
            .collect();
        let b = layout_badges(&ms, 2.0, 740.0);
        for (i, x) in b.iter().enumerate() {
            assert!(x.x0 >= 2.0 && x.x0 + x.w <= 740.0 + 1e-9, "inside");
            for y in &b[i + 1..] {
                if x.row == y.row {
                    assert!(
                        x.x0 + x.w <= y.x0 || y.x0 + y.w <= x.x0,
                        "{} and {} overlap",
                        x.text(),
                        y.text()
                    );
                }
            }
        }
        // Every milestone is in exactly one badge.
        let mut all: Vec<usize> = b
            .iter()
            .flat_map(|b| b.members.iter().map(|m| m.n))
            .collect();
        all.sort();
        assert_eq!(all, (0..60).collect::<Vec<_>>());
        assert!(
            b.iter().any(|b| b.members.len() > 1),
            "a crowd becomes a range"
        );
        assert!(b.iter().all(|b| b.row < BADGE_ROWS));
    }

    #[test]
    fn the_command_is_collapsed_and_shell_quoted() {
        let argv: Vec<String> = [
            "k3shim",
            "run",
            "--hook",
            "kubectl apply -f '/srv/x'",
            "--",
            "k3s",
            "server",
            "--node-label=a b",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let h = command_block(&argv);
        assert!(h.starts_with(r#"<details class="cmd"><summary>"#), "{h}");
        assert!(
            h.contains("<code>k3s server &#39;--node-label=a b&#39;</code>"),
            "{h}"
        );
        // The full line reads back as the same words.
        let pre = h
            .split("<pre>")
            .nth(1)
            .unwrap()
            .split("</pre>")
            .next()
            .unwrap();
        let text = pre
            .replace("&#39;", "'")
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace(" \\\n    ", " ");
        assert_eq!(shlex::split(&text).unwrap(), argv, "{text}");
    }
}
