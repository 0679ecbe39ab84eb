//! `k3shim timeline FILE [--compare FILE2] [--html OUT]`.

use crate::cli::TimelineArgs;
use crate::timeline::read_events;
use crate::timeline_report;
use anyhow::{Context, Result};

pub fn run(a: &TimelineArgs) -> Result<i32> {
    let ev = read_events(&a.file)?;
    let other = match &a.compare {
        Some(p) => Some(read_events(p)?),
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
