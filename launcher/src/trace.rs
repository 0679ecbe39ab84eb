//! `k3shim trace`: one line per intercepted syscall, strace style, plus what the
//! shim did; filters; a summary table with -c; JSON lines with --json.

use anyhow::{bail, Result};
use shim::{Action, SyscallRecord};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;

/// Filters and output settings, validated.
pub struct TraceOpts {
    pub names: Option<HashSet<String>>,
    pub paths: Vec<String>,
    pub pids: Vec<i32>,
    pub redirected_only: bool,
    pub failed_only: bool,
    pub summary: bool,
    pub json: bool,
}

impl TraceOpts {
    pub fn from_args(a: &crate::cli::TraceArgs) -> Result<TraceOpts> {
        let names = match &a.expr {
            None => None,
            Some(e) => {
                let Some(list) = e.strip_prefix("trace=") else {
                    bail!("-e {e:?}: only trace=NAME[,NAME...] is supported");
                };
                let set: HashSet<String> = list
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
                for n in &set {
                    if !syscalls::Sysno::iter().any(|s| s.name() == n) {
                        bail!("-e trace={list}: {n:?} is not a syscall name on this architecture");
                    }
                }
                Some(set)
            }
        };
        Ok(TraceOpts {
            names,
            paths: a.path.clone(),
            pids: a.pid.clone(),
            redirected_only: a.redirected_only,
            failed_only: a.failed_only,
            summary: a.summary,
            json: a.json,
        })
    }

    fn wants(&self, r: &SyscallRecord) -> bool {
        if let Some(n) = &self.names {
            if !n.contains(r.name) {
                return false;
            }
        }
        if !self.pids.is_empty() && !self.pids.contains(&r.pid) && !self.pids.contains(&r.tid) {
            return false;
        }
        if self.redirected_only && r.action != Action::Redirected {
            return false;
        }
        if self.failed_only && r.ret >= 0 {
            return false;
        }
        if !self.paths.is_empty() {
            let Some(p) = &r.path else { return false };
            if !self.paths.iter().any(|pre| p.starts_with(pre.as_str())) {
                return false;
            }
        }
        true
    }
}

#[derive(Default)]
struct Stat {
    calls: u64,
    errors: u64,
    redirected: u64,
    total_us: u64,
}

/// Receives syscall records from the tracer thread and writes lines.
pub struct TraceSink {
    opts: TraceOpts,
    out: Box<dyn Write + Send>,
    per_call: BTreeMap<&'static str, Stat>,
    per_path: HashMap<String, (u64, &'static str)>,
    written: HashSet<String>,
}

pub fn errno_name(e: i64) -> String {
    syscalls::Errno::new(e as i32)
        .name()
        .map(str::to_string)
        .unwrap_or_else(|| format!("E{e}"))
}

impl TraceSink {
    pub fn new(opts: TraceOpts, out: Box<dyn Write + Send>) -> TraceSink {
        TraceSink {
            opts,
            out,
            per_call: BTreeMap::new(),
            per_path: HashMap::new(),
            written: HashSet::new(),
        }
    }

    /// A journaled write to `path` (for the summary's source column).
    pub fn note_write(&mut self, path: &str) {
        self.written.insert(path.to_string());
    }

    pub fn record(&mut self, r: &SyscallRecord) {
        if !self.opts.wants(r) {
            return;
        }
        let s = self.per_call.entry(r.name).or_default();
        s.calls += 1;
        s.total_us += r.dur_us;
        if r.ret < 0 {
            s.errors += 1;
        }
        if r.action == Action::Redirected {
            s.redirected += 1;
        }
        if let Some(p) = &r.path {
            let src = match r.action {
                Action::Redirected | Action::Emulated => "fake",
                _ => "real",
            };
            let e = self.per_path.entry(p.clone()).or_insert((0, src));
            e.0 += 1;
            if src == "fake" {
                e.1 = "fake";
            }
        }
        if self.opts.summary {
            return;
        }
        // One write per line: lines never interleave (the tracer is one thread).
        let line = if self.opts.json {
            format!("{}\n", serde_json::to_string(r).unwrap_or_default())
        } else {
            format_line(r)
        };
        let _ = self.out.write_all(line.as_bytes());
    }

    /// At exit: the -c table.
    pub fn finish(&mut self) {
        if self.opts.summary {
            let t = self.summary();
            let _ = self.out.write_all(t.as_bytes());
        }
        let _ = self.out.flush();
    }

    fn summary(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "{:<18} {:>8} {:>8} {:>10} {:>12} {:>10}\n",
            "syscall", "calls", "errors", "redirected", "total_us", "mean_us"
        ));
        let mut rows: Vec<_> = self.per_call.iter().collect();
        rows.sort_by(|a, b| b.1.calls.cmp(&a.1.calls).then(a.0.cmp(b.0)));
        let (mut c, mut e, mut r, mut t) = (0, 0, 0, 0);
        for (name, st) in rows {
            s.push_str(&format!(
                "{:<18} {:>8} {:>8} {:>10} {:>12} {:>10}\n",
                name,
                st.calls,
                st.errors,
                st.redirected,
                st.total_us,
                st.total_us / st.calls.max(1)
            ));
            c += st.calls;
            e += st.errors;
            r += st.redirected;
            t += st.total_us;
        }
        s.push_str(&format!(
            "{:<18} {:>8} {:>8} {:>10} {:>12} {:>10}\n",
            "total",
            c,
            e,
            r,
            t,
            t / c.max(1)
        ));
        s.push_str(&format!("\n{:<8} {:<8} path\n", "calls", "source"));
        let mut paths: Vec<_> = self.per_path.iter().collect();
        paths.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(b.0)));
        for (p, (n, src)) in paths.into_iter().take(20) {
            let src = if self.written.contains(p) {
                "written"
            } else {
                src
            };
            s.push_str(&format!("{n:<8} {src:<8} {p}\n"));
        }
        s
    }
}

/// `[pid 12/13 sysctl] openat(AT_FDCWD, "/proc/sys/vm/x", O_RDONLY) = 3 <redirected -> /state/values/vm/x> (41us)`
pub fn format_line(r: &SyscallRecord) -> String {
    let ret = if r.ret < 0 {
        format!("-1 {}", errno_name(-r.ret))
    } else {
        r.ret.to_string()
    };
    let what = match (&r.action, &r.backing) {
        (Action::Redirected, Some(b)) => format!("redirected -> {}", b.display()),
        (Action::Passed, _) => "passed".into(),
        (Action::Emulated, _) => "emulated".into(),
        (Action::Failed, _) => "failed".into(),
        (Action::Held, _) => "held".into(),
        (a, _) => format!("{a:?}").to_lowercase(),
    };
    let who = if r.pid == r.tid {
        format!("{}", r.pid)
    } else {
        format!("{}/{}", r.pid, r.tid)
    };
    format!(
        "[pid {who} {}] {}({}) = {ret} <{what}> ({}us)\n",
        r.comm, r.name, r.args, r.dur_us
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &'static str, path: &str, ret: i64, action: Action) -> SyscallRecord {
        SyscallRecord {
            pid: 10,
            tid: 11,
            comm: "sysctl".into(),
            name,
            args: format!("AT_FDCWD, \"{path}\", O_RDONLY"),
            path: Some(path.into()),
            action,
            backing: None,
            ret,
            dur_us: 5,
        }
    }

    #[test]
    fn a_failed_call_shows_its_errno_name() {
        let l = format_line(&rec("openat", "/proc/sys/x", -2, Action::Emulated));
        assert!(l.contains("= -1 ENOENT <emulated>"), "{l}");
        assert!(l.starts_with("[pid 10/11 sysctl] openat(AT_FDCWD"), "{l}");
    }

    #[test]
    fn filters_select_by_name_path_and_result() {
        let o = TraceOpts {
            names: Some(HashSet::from(["openat".to_string()])),
            paths: vec!["/proc/sys".into()],
            pids: vec![],
            redirected_only: false,
            failed_only: true,
            summary: false,
            json: false,
        };
        assert!(o.wants(&rec("openat", "/proc/sys/x", -2, Action::Passed)));
        assert!(!o.wants(&rec("openat", "/proc/sys/x", 3, Action::Passed)));
        assert!(!o.wants(&rec("stat", "/proc/sys/x", -2, Action::Passed)));
        assert!(!o.wants(&rec("openat", "/etc/x", -2, Action::Passed)));
    }
}
