//! `k3shim timeline FILE [--compare FILE2] [--html OUT]`.

use crate::cli::TimelineArgs;
use crate::timeline::read_timeline;
use crate::timeline_report;
use anyhow::{Context, Result};
use serde_json::Value;
use std::path::Path;

/// A timeline's events; damaged lines are skipped with one warning line.
fn load(path: &Path) -> Result<Vec<Value>> {
    let t = read_timeline(path)?;
    if let Some(w) = t.warning() {
        eprintln!("k3shim: warning: {w}");
    }
    Ok(t.events)
}

pub fn run(a: &TimelineArgs) -> Result<i32> {
    if let Some(out) = &a.html {
        // Written by k3shim itself: never a real /proc/sys entry.
        crate::run::refuse_proc_sys("--html", out)?;
    }
    let ev = load(&a.file)?;
    let other = match &a.compare {
        Some(p) => Some(load(p)?),
        None => None,
    };
    match &other {
        Some(b) => print!("{}", timeline_report::compare(&ev, b)),
        None => print!("{}", timeline_report::table(&ev)),
    }
    if let Some(out) = &a.html {
        let html = timeline_report::html(&ev, other.as_deref());
        std::fs::write(out, html)
            .with_context(|| format!("--html {}: cannot write", out.display()))?;
        eprintln!("wrote {}", out.display());
    }
    Ok(0)
}
