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
        let file = match path {
            Some(p) => Some(File::create(p).map_err(|e| {
                std::io::Error::new(e.kind(), format!("--timeline {}: {e}", p.display()))
            })?),
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
        let unix_ms = wall
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut fields = Map::new();
        fields.insert("argv".into(), Value::from(argv.to_vec()));
        fields.insert(
            "wall_clock".into(),
            Value::from(humantime::format_rfc3339_millis(wall).to_string()),
        );
        fields.insert("unix_ms".into(), Value::from(unix_ms));
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
            f.write_all(line.as_bytes()).map_err(|e| {
                std::io::Error::new(e.kind(), format!("--timeline {}: {e}", tl.path_display()))
            })?;
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

/// Reads a timeline file: one JSON object per line, each with a numeric
/// `t_ms` and a string `kind`. Blank lines are skipped. Errors are one line
/// naming the file and the line number.
pub fn read_events(path: &Path) -> Result<Vec<Value>, anyhow::Error> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("timeline {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .map_err(|e| anyhow!("timeline {}:{n}: not a JSON line: {e}", path.display()))?;
        let Some(obj) = v.as_object() else {
            return Err(anyhow!(
                "timeline {}:{n}: expected a JSON object",
                path.display()
            ));
        };
        if !obj.get("t_ms").is_some_and(Value::is_number) {
            return Err(anyhow!(
                "timeline {}:{n}: missing or non-numeric \"t_ms\"",
                path.display()
            ));
        }
        if !obj.get("kind").is_some_and(Value::is_string) {
            return Err(anyhow!(
                "timeline {}:{n}: missing or non-string \"kind\"",
                path.display()
            ));
        }
        out.push(v);
    }
    if out.is_empty() {
        return Err(anyhow!("timeline {}: no events", path.display()));
    }
    Ok(out)
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
