//! k3shim's own lines on stderr, one line each, `k3shim: ...`.
//!
//! - Notices (target [`NOTICE`], INFO) are the events a user wants to know
//!   about: the gate opening, still waiting, timing out; held syscalls
//!   released; a compatibility fix applied; the traced tree being ended.
//!   They are shown by default, as are warnings and errors from anywhere
//!   (`k3shim: warning: ...`).
//! - `--log-level info|debug|trace` (or `K3SHIM_LOG`) adds diagnostics from
//!   k3shim's crates: debug shows spans for the tracer loop, the gate's probes
//!   and each hook; trace shows every tracer stop. Those lines carry the time
//!   since start, the level and the span they come from.
//! - `--log-level warn` keeps warnings and errors only; `error`, errors only.

use anyhow::{bail, Result};
use std::fmt;
use std::time::Instant;
use tracing::{Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// The target of notices: `tracing::info!(target: NOTICE, ...)`.
pub const NOTICE: &str = "k3shim";

/// What each notice starts with, after `k3shim: `: a subject, so that a
/// reader of k3shim's stderr (the experiment runner) tells them from errors.
const NOTICE_SUBJECTS: &[&str] = &[
    "warning: ",
    "gate: ",
    "holds: ",
    "hooks: ",
    "fix: ",
    "tree: ",
];

/// Whether the text after `k3shim: ` on a line of k3shim's stderr is a notice
/// or a warning rather than the one-line error k3shim ends with.
pub fn is_notice(rest: &str) -> bool {
    NOTICE_SUBJECTS.iter().any(|s| rest.starts_with(s))
}

const LEVELS: &str = "error, warn, info, debug, trace or off";
const OURS: &[&str] = &["launcher", "shim", "fakefs"];

/// The filter for `--log-level` (wins) or `K3SHIM_LOG`: a level, or (only in
/// K3SHIM_LOG) full `tracing` directives such as `warn,shim=trace`.
pub fn filter(flag: Option<&str>, env: Option<&str>) -> Result<EnvFilter> {
    let directives = match (flag, env.filter(|e| !e.trim().is_empty())) {
        (Some(l), _) => match for_level(l) {
            Some(d) => d,
            None => bail!("--log-level {l:?}: unknown level (expected {LEVELS})"),
        },
        (None, Some(e)) => match for_level(e.trim()) {
            Some(d) => d,
            None => {
                // Directives, as RUST_LOG takes them.
                if let Err(err) = EnvFilter::builder().parse(e) {
                    bail!("K3SHIM_LOG {e:?}: neither a level ({LEVELS}) nor tracing directives: {err}");
                }
                e.to_string()
            }
        },
        (None, None) => format!("warn,{NOTICE}=info"),
    };
    Ok(EnvFilter::builder().parse_lossy(directives))
}

fn for_level(l: &str) -> Option<String> {
    let l = l.to_ascii_lowercase();
    match l.as_str() {
        "off" | "error" | "warn" => Some(l),
        "info" | "debug" | "trace" => {
            // Other crates (hyper, rustls, ...) stay at warn: their chatter is not k3shim's.
            let mut d = format!("warn,{NOTICE}={l}");
            for c in OURS {
                d.push_str(&format!(",{c}={l}"));
            }
            Some(d)
        }
        _ => None,
    }
}

/// Installs the stderr logger. Errors are one line naming the flag or variable.
pub fn init(flag: Option<&str>) -> Result<()> {
    let env = std::env::var("K3SHIM_LOG").ok();
    let f = filter(flag, env.as_deref())?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(f)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .event_format(Lines {
            start: Instant::now(),
        })
        .try_init();
    Ok(())
}

/// One line per event: user lines (notices, warnings, errors) plainly,
/// diagnostics with time, level and span.
struct Lines {
    start: Instant,
}

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        ev: &tracing::Event<'_>,
    ) -> fmt::Result {
        let meta = ev.metadata();
        let level = *meta.level();
        write!(w, "k3shim: ")?;
        if level == Level::ERROR || level == Level::WARN {
            write!(
                w,
                "{}",
                if level == Level::ERROR {
                    "error: "
                } else {
                    "warning: "
                }
            )?;
        } else if !(level == Level::INFO && meta.target() == NOTICE) {
            let t = self.start.elapsed().as_secs_f64();
            write!(w, "[{t:9.3}s] {:5} ", level.as_str().to_ascii_lowercase())?;
            if let Some(scope) = ctx.event_scope() {
                for span in scope.from_root() {
                    write!(w, "{}", span.name())?;
                    let ext = span.extensions();
                    if let Some(f) = ext.get::<FormattedFields<N>>() {
                        if !f.is_empty() {
                            write!(w, "{{{f}}}")?;
                        }
                    }
                    write!(w, ": ")?;
                }
            }
        }
        ctx.field_format().format_fields(w.by_ref(), ev)?;
        writeln!(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_checked_and_the_flag_wins_over_the_variable() {
        assert!(filter(Some("debug"), Some("garbage[")).is_ok());
        for ok in ["error", "warn", "info", "debug", "trace", "off", "DEBUG"] {
            assert!(filter(Some(ok), None).is_ok(), "{ok}");
        }
        let e = filter(Some("verbose"), None).unwrap_err().to_string();
        assert!(
            e.starts_with("--log-level \"verbose\": unknown level"),
            "{e}"
        );
        assert!(filter(None, Some("warn,shim=trace")).is_ok());
        let e = filter(None, Some("shim=loud")).unwrap_err().to_string();
        assert!(e.starts_with("K3SHIM_LOG"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn notices_and_warnings_are_told_from_errors() {
        assert!(is_notice("gate: open after 1.2 s"));
        assert!(is_notice("warning: hook 1 (`false`) failed: exit status 1"));
        assert!(!is_notice("--gate-url \"x\": not a URL"));
        assert!(!is_notice("cannot trace here: ..."));
    }
}
