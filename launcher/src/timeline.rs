//! The run timeline: JSON lines, one event each, written as they happen.
//!
//! Every line is `{"t_ms": <ms since launch>, "kind": "...", ...fields}`.
//! `t_ms` comes from a monotonic clock started at [`Timeline::create`] and
//! never decreases from one line to the next, whichever thread emits. Each
//! line reaches the file with a single `write(2)` while a lock is held, so a
//! crash of k3shim leaves every earlier line complete.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context as _};
use serde_json::{Map, Value};

/// A thread-safe, cheaply clonable handle on the run's timeline.
#[derive(Clone)]
pub struct Timeline {
    inner: Arc<Inner>,
}

struct Inner {
    start: Instant,
    path: Option<PathBuf>,
    state: Mutex<State>,
    warned: AtomicBool,
}

struct State {
    file: Option<File>,
    last_t: u64,
}

impl std::fmt::Debug for Timeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timeline")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl Timeline {
    /// Truncates FILE and writes the `launch` event first (t_ms 0): argv,
    /// wall clock (RFC3339 + unix ms), k3shim version, plus `extra` fields
    /// (probed kernel facts). With `path` None the timeline is disabled but
    /// still counts time.
    pub fn create(path: Option<&Path>, argv: &[String], extra: Value) -> std::io::Result<Timeline> {
        let start = Instant::now();
        let wall = SystemTime::now();
        // Errors are the OS's alone: the caller names the file and its role.
        let file = match path {
            Some(p) => Some(File::create(p)?),
            None => None,
        };
        let tl = Timeline {
            inner: Arc::new(Inner {
                start,
                path: path.map(Path::to_path_buf),
                state: Mutex::new(State { file, last_t: 0 }),
                warned: AtomicBool::new(false),
            }),
        };
        let unix_us = wall
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let unix_ms = unix_us / 1000;
        let mut fields = Map::new();
        fields.insert("argv".into(), Value::from(argv.to_vec()));
        fields.insert(
            "wall_clock".into(),
            Value::from(humantime::format_rfc3339_millis(wall).to_string()),
        );
        fields.insert("unix_ms".into(), Value::from(unix_ms));
        fields.insert("unix_us".into(), Value::from(unix_us));
        if let Some(clock) = clock_origin(unix_us) {
            fields.insert("clock".into(), clock);
        }
        fields.insert("version".into(), Value::from(env!("CARGO_PKG_VERSION")));
        fields.insert("pid".into(), Value::from(std::process::id()));
        if let Value::Object(extra) = extra {
            for (k, v) in extra {
                fields.insert(k, v);
            }
        } else if !extra.is_null() {
            fields.insert("extra".into(), extra);
        }
        // The launch line is t_ms 0 by definition, and it is written
        // synchronously so that a failing disk shows up here, as an error.
        let line = render(0, "launch", &Value::Object(fields));
        let mut st = tl.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = st.file.as_mut() {
            f.write_all(line.as_bytes())?;
        }
        drop(st);
        Ok(tl)
    }

    /// A disabled timeline (no file) that still counts time; emit is a no-op.
    pub fn disabled() -> Timeline {
        Timeline {
            inner: Arc::new(Inner {
                start: Instant::now(),
                path: None,
                state: Mutex::new(State {
                    file: None,
                    last_t: 0,
                }),
                warned: AtomicBool::new(false),
            }),
        }
    }

    /// Whether events go to a file.
    pub fn is_enabled(&self) -> bool {
        self.inner.path.is_some()
    }

    /// The file this timeline writes, if any.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    fn path_display(&self) -> String {
        self.inner
            .path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }

    /// Milliseconds since launch on the monotonic clock.
    pub fn t_ms(&self) -> u64 {
        self.inner.start.elapsed().as_millis() as u64
    }

    /// One JSON line `{"t_ms": .., "kind": kind, ...fields}`, written and
    /// flushed now. `fields` should be an object; anything else is stored
    /// under `"value"`. Fields named `t_ms` or `kind` are ignored.
    pub fn emit(&self, kind: &str, fields: Value) {
        let mut st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        // t_ms is taken under the lock, so lines are in t_ms order in the file.
        let t = self.t_ms().max(st.last_t);
        st.last_t = t;
        let Some(file) = st.file.as_mut() else { return };
        let line = render(t, kind, &fields);
        if let Err(e) = file.write_all(line.as_bytes()) {
            if !self.inner.warned.swap(true, Ordering::Relaxed) {
                eprintln!(
                    "k3shim: warning: timeline {}: {e}; later events may be missing",
                    self.path_display()
                );
            }
        }
    }
}

/// The environment variable through which whoever starts k3shim (the
/// experiment runner) names an earlier instant, in microseconds since the
/// Unix epoch, that the run's times are to be measured from: the host-side
/// start of `runsc`, say, so that a step under k3shim (whose clock would
/// otherwise start inside the sandbox) and a bare step start their clocks
/// at the same event.
pub const CLOCK_ORIGIN_ENV: &str = "K3SHIM_CLOCK_ORIGIN";

/// The launch event's `clock` field when [`CLOCK_ORIGIN_ENV`] is set:
/// `{"origin_unix_us", "offset_ms"}`, the offset being how long after the
/// origin k3shim launched. Events keep t_ms since launch (launch is t_ms 0);
/// readers add offset_ms ([`clock_offset_ms`]).
fn clock_origin(now_us: u64) -> Option<Value> {
    let raw = std::env::var(CLOCK_ORIGIN_ENV).ok()?;
    match raw.trim().parse::<u64>() {
        // An origin after launch can only be a clock step: count from launch.
        Ok(origin) => Some(serde_json::json!({
            "origin_unix_us": origin,
            "offset_ms": now_us.saturating_sub(origin) / 1000,
        })),
        Err(_) => {
            eprintln!(
                "k3shim: warning: {CLOCK_ORIGIN_ENV}={raw:?} is not a time in microseconds since the Unix epoch: the timeline's times count from k3shim's launch"
            );
            None
        }
    }
}

/// How long after the clock origin the run launched, in ms: the launch
/// event's `clock.offset_ms`, else 0 (the timeline starts at launch). Every
/// t_ms of the timeline plus this is the time since the origin.
pub fn clock_offset_ms(events: &[Value]) -> u64 {
    events
        .iter()
        .find(|e| e.get("kind").and_then(Value::as_str) == Some("launch"))
        .and_then(|e| e.get("clock")?.get("offset_ms")?.as_u64())
        .map(|o| o.min(MAX_T_MS))
        .unwrap_or(0)
}

/// Renders one line with `t_ms` and `kind` first, then the fields in order.
fn render(t: u64, kind: &str, fields: &Value) -> String {
    let mut s = String::with_capacity(128);
    s.push_str("{\"t_ms\":");
    s.push_str(&t.to_string());
    s.push_str(",\"kind\":");
    s.push_str(&Value::from(kind).to_string());
    match fields {
        Value::Object(m) => {
            for (k, v) in m {
                if k == "t_ms" || k == "kind" {
                    continue;
                }
                s.push(',');
                s.push_str(&Value::from(k.as_str()).to_string());
                s.push(':');
                s.push_str(&v.to_string());
            }
        }
        Value::Null => {}
        other => {
            s.push_str(",\"value\":");
            s.push_str(&other.to_string());
        }
    }
    s.push_str("}\n");
    s
}

/// The largest `t_ms` a timeline line may carry: 2^53 ms (about 285,000
/// years), the largest integer every JSON reader keeps exactly. Anything
/// larger is a damaged line, not a time.
pub const MAX_T_MS: u64 = 1 << 53;

/// A line longer than this is damaged (k3shim's own lines are a few hundred
/// bytes; a log_match line carries at most one line of output). Reading stops
/// storing it there, so memory stays bounded whatever the file holds.
const MAX_LINE: usize = 1 << 20;

/// A timeline as read: its events, in file order, and one message per line
/// that could not be used (damaged, truncated by a killed run, out of range).
#[derive(Debug, Default)]
pub struct Events {
    pub events: Vec<Value>,
    /// `FILE:LINE: what is wrong` for each skipped line.
    pub skipped: Vec<String>,
}

impl Events {
    /// One line for stderr summarising the skipped lines (the first few named), if any.
    pub fn warning(&self) -> Option<String> {
        const SHOWN: usize = 3;
        if self.skipped.is_empty() {
            return None;
        }
        let mut w = format!(
            "skipped {} damaged timeline line{}: {}",
            self.skipped.len(),
            if self.skipped.len() == 1 { "" } else { "s" },
            self.skipped[..self.skipped.len().min(SHOWN)].join("; ")
        );
        if self.skipped.len() > SHOWN {
            w.push_str(&format!("; and {} more", self.skipped.len() - SHOWN));
        }
        Some(w)
    }
}

/// The event on one line, or why the line cannot be used as one.
fn check_line(line: &[u8]) -> Result<Value, String> {
    let v: Value = serde_json::from_slice(line).map_err(|e| {
        if e.is_eof() {
            "truncated (the run was cut short while writing it?)".to_string()
        } else {
            format!("not a JSON line ({e})")
        }
    })?;
    let Some(obj) = v.as_object() else {
        return Err("not a JSON object".into());
    };
    match obj.get("t_ms") {
        None => return Err("no \"t_ms\"".into()),
        Some(t) => match t.as_u64() {
            Some(t) if t <= MAX_T_MS => {}
            _ => {
                return Err(format!(
                    "\"t_ms\" {t} is not a time in ms since launch (an integer from 0 to 2^53)"
                ))
            }
        },
    }
    if !obj.get("kind").is_some_and(Value::is_string) {
        return Err("missing or non-string \"kind\"".into());
    }
    Ok(v)
}

/// Reads a timeline file: one JSON object per line, each with `t_ms` (an
/// integer, see [`MAX_T_MS`]) and a string `kind`. Blank lines are ignored;
/// a damaged line (a killed run leaves a truncated last one) is skipped and
/// named in [`Events::skipped`]. Errors (one line naming the file): the file
/// cannot be read, or it holds no usable event at all. Time and memory are
/// bounded by the file's size, whatever it contains.
pub fn read_timeline(path: &Path) -> Result<Events, anyhow::Error> {
    use std::io::BufRead;
    let f =
        File::open(path).with_context(|| format!("timeline {}: cannot open", path.display()))?;
    let mut r = std::io::BufReader::new(f);
    let mut out = Events::default();
    let mut line: Vec<u8> = Vec::new();
    let mut n = 0usize;
    loop {
        // One line, keeping at most MAX_LINE bytes of it.
        line.clear();
        let mut overlong = false;
        let mut any = false;
        loop {
            let buf = r
                .fill_buf()
                .with_context(|| format!("timeline {}: cannot read", path.display()))?;
            if buf.is_empty() {
                break;
            }
            any = true;
            let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (&buf[..i], Some(i + 1)),
                None => (buf, None),
            };
            let room = MAX_LINE.saturating_sub(line.len());
            if chunk.len() > room {
                overlong = true;
            }
            line.extend_from_slice(&chunk[..chunk.len().min(room)]);
            let used = done.unwrap_or(buf.len());
            r.consume(used);
            if done.is_some() {
                break;
            }
        }
        if !any {
            break;
        }
        n += 1;
        if overlong {
            out.skipped.push(format!(
                "{}:{n}: longer than {} MiB",
                path.display(),
                MAX_LINE >> 20
            ));
            continue;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match check_line(&line) {
            Ok(v) => out.events.push(v),
            Err(why) => out.skipped.push(format!("{}:{n}: {why}", path.display())),
        }
    }
    if out.events.is_empty() {
        return Err(match out.skipped.first() {
            Some(first) => anyhow!(
                "timeline {}: no usable event ({} damaged line{}, the first: {first})",
                path.display(),
                out.skipped.len(),
                if out.skipped.len() == 1 { "" } else { "s" }
            ),
            None => anyhow!("timeline {}: no events (an empty file)", path.display()),
        });
    }
    Ok(out)
}

/// [`read_timeline`]'s events alone (damaged lines skipped silently).
pub fn read_events(path: &Path) -> Result<Vec<Value>, anyhow::Error> {
    Ok(read_timeline(path)?.events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn render_puts_t_ms_and_kind_first() {
        let l = render(12, "probe", &json!({"status": 200, "kind": "ignored"}));
        assert_eq!(l, "{\"t_ms\":12,\"kind\":\"probe\",\"status\":200}\n");
        assert_eq!(
            render(1, "x", &Value::Null),
            "{\"t_ms\":1,\"kind\":\"x\"}\n"
        );
        assert_eq!(
            render(1, "x", &json!(5)),
            "{\"t_ms\":1,\"kind\":\"x\",\"value\":5}\n"
        );
    }

    #[test]
    fn disabled_counts_time_and_emits_nothing() {
        let t = Timeline::disabled();
        t.emit("x", json!({}));
        assert!(!t.is_enabled());
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(t.t_ms() >= 5);
    }
}
