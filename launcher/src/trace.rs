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

/// strace's class names, for messages.
const CLASS_NAMES: &str = "%file, %process, %network (%net), %signal, %ipc, %desc, %memory, %creds, %clock, %stat, %lstat, %fstat, %%stat, %statfs, %fstatfs, %%statfs, %pure";

/// The syscalls an strace `-e` expression selects, by name (None: all).
/// Accepted as strace does: `trace=SET` or `SET` alone; SET a comma-separated
/// list of syscall names, strace's classes (`%file`, ...; see
/// trace_classes.rs), `/REGEX`, `all` or `none`; `!` before SET negates it,
/// `?` before an item ignores it when unknown.
pub fn parse_expr(e: &str) -> Result<Option<HashSet<String>>> {
    let set = match e.split_once('=') {
        Some(("trace" | "t", v)) => v,
        Some((q, _)) => bail!(
            "-e {e}: only strace's trace=SET qualifier is supported, not {q}= (e.g. -e trace=%file)"
        ),
        None => e,
    };
    let (negate, set) = match set.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, set),
    };
    let every: Vec<&'static str> = syscalls::Sysno::iter().map(|s| s.name()).collect();
    let mut chosen: HashSet<String> = HashSet::new();
    let mut all = false;
    for item in set.split(',').filter(|t| !t.is_empty()) {
        let (optional, tok) = match item.strip_prefix('?') {
            Some(t) => (true, t),
            None => (false, item),
        };
        if tok.eq_ignore_ascii_case("all") {
            all = true;
        } else if tok.eq_ignore_ascii_case("none") {
        } else if let Some(re) = tok.strip_prefix('/') {
            let re = regex::Regex::new(re).map_err(|err| {
                // regex's message is several lines: the last says what is wrong.
                let err = err.to_string();
                let why = err
                    .lines()
                    .last()
                    .unwrap_or("")
                    .trim_start_matches("error: ");
                anyhow::anyhow!("-e {e}: /{re}: not a regular expression: {why}")
            })?;
            let hits: Vec<&&str> = every.iter().filter(|n| re.is_match(n)).collect();
            if hits.is_empty() && !optional {
                bail!("-e {e}: /{re} matches no syscall on this architecture");
            }
            chosen.extend(hits.into_iter().map(|n| n.to_string()));
        } else if let Some((_, members)) = crate::trace_classes::CLASSES
            .iter()
            .find(|(c, _)| c.eq_ignore_ascii_case(tok))
        {
            // By number: the names k3shim prints are the syscalls crate's.
            chosen.extend(members.iter().filter_map(|(nr, _)| {
                syscalls::Sysno::new(*nr as usize).map(|s| s.name().to_string())
            }));
        } else if every.contains(&tok) {
            chosen.insert(tok.to_string());
        } else if !optional {
            if tok.starts_with('%') {
                bail!("-e {e}: {tok:?} is not one of strace's classes ({CLASS_NAMES})");
            }
            bail!("-e {e}: {tok:?} is neither a syscall on this architecture nor a class ({CLASS_NAMES})");
        }
    }
    Ok(match (all, negate) {
        (true, false) => None,
        (true, true) => Some(HashSet::new()),
        (false, false) => Some(chosen),
        (false, true) => Some(
            every
                .iter()
                .filter(|n| !chosen.contains(**n))
                .map(|n| n.to_string())
                .collect(),
        ),
    })
}

impl TraceOpts {
    pub fn from_args(a: &crate::cli::TraceArgs) -> Result<TraceOpts> {
        let names = match &a.expr {
            None => None,
            Some(e) => parse_expr(e)?,
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

    /// The selected syscalls that the path filter does not stop (so without
    /// `--all` they would never show), sorted; empty without `-e`.
    pub fn unseen_with_path_filter(&self, trap_connect: bool) -> Vec<String> {
        let Some(names) = &self.names else {
            return Vec::new();
        };
        let mut v: Vec<String> = names
            .iter()
            .filter(|n| {
                !(shim::sysent::PATH_SYSCALLS
                    .iter()
                    .any(|e| e.sysno.name() == n.as_str())
                    || shim::filter::ALSO_STOPPED
                        .iter()
                        .any(|s| s.name() == n.as_str())
                    || (trap_connect && n.as_str() == "connect"))
            })
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// Whether the trace must stop every syscall: the `-e` set names none
    /// that the path filter stops (e.g. `%network`, `%memory`), so that the
    /// path filter would show nothing at all.
    pub fn needs_every_syscall(&self, trap_connect: bool) -> bool {
        match &self.names {
            Some(n) => !n.is_empty() && self.unseen_with_path_filter(trap_connect).len() == n.len(),
            None => false,
        }
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

/// The C library's text for errno `e` (strerror), as strace prints it after the name.
pub fn errno_text(e: i64) -> String {
    let s = std::io::Error::from_raw_os_error(e as i32).to_string();
    // std appends " (os error N)" to strerror's text.
    match s.rfind(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
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

/// One line as strace -T writes it, with what k3shim did as a comment:
/// `[pid 12/13 sysctl] openat(AT_FDCWD, "/proc/sys/vm/x", O_RDONLY) = -1 ENOENT (No such file or directory) /* emulated */ <0.000041>`
pub fn format_line(r: &SyscallRecord) -> String {
    let ret = if r.ret < 0 && r.ret > -4096 {
        format!("-1 {} ({})", errno_name(-r.ret), errno_text(-r.ret))
    } else if matches!(r.name, "mmap" | "mremap" | "brk" | "shmat") {
        // Addresses, in hex as strace prints them.
        format!("{:#x}", r.ret as u64)
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
        "[pid {who} {}] {}({}) = {ret} /* {what} */ <{}.{:06}>\n",
        r.comm,
        r.name,
        r.args,
        r.dur_us / 1_000_000,
        r.dur_us % 1_000_000
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
    fn a_line_ends_as_strace_t_writes_it_errno_text_and_seconds() {
        let l = format_line(&rec("openat", "/proc/sys/x", -2, Action::Emulated));
        assert!(
            l.ends_with("= -1 ENOENT (No such file or directory) /* emulated */ <0.000005>\n"),
            "{l}"
        );
        assert!(l.starts_with("[pid 10/11 sysctl] openat(AT_FDCWD"), "{l}");
        let mut r = rec("openat", "/proc/sys/x", 3, Action::Passed);
        r.dur_us = 2_345_678;
        assert!(format_line(&r).ends_with(" = 3 /* passed */ <2.345678>\n"));
        assert_eq!(errno_text(40), "Too many levels of symbolic links");
    }

    fn set(e: &str) -> Vec<String> {
        let mut v: Vec<String> = parse_expr(e).unwrap().unwrap().into_iter().collect();
        v.sort();
        v
    }

    #[test]
    fn strace_expressions_select_as_strace_does() {
        // Classes, as strace defines them for x86_64.
        let file = set("trace=%file");
        for n in [
            "openat",
            "newfstatat",
            "execve",
            "readlink",
            "statx",
            "chdir",
        ] {
            assert!(file.contains(&n.to_string()), "{n} in %file");
        }
        assert!(!file.contains(&"read".to_string()) && !file.contains(&"connect".to_string()));
        assert!(set("%network").contains(&"connect".to_string()));
        assert!(set("trace=%process").contains(&"clone3".to_string()));
        assert!(set("trace=%net") == set("trace=%network") && set("network") == set("%network"));
        assert_eq!(
            set("trace=%%stat"),
            set("trace=%stat,%lstat,%fstat,statx"),
            "stat-like"
        );
        assert!(set("%signal").contains(&"rt_sigaction".to_string()));
        // Names, regexes, negation, unknown items.
        assert_eq!(set("openat,stat"), vec!["openat", "stat"]);
        let open = set("trace=/^open");
        assert!(
            open.iter().all(|n| n.starts_with("open")) && open.contains(&"openat2".to_string())
        );
        assert!(!set("trace=!%file").contains(&"openat".to_string()));
        assert!(set("trace=!%file").contains(&"read".to_string()));
        assert_eq!(set("trace=?nosuchcall,openat"), vec!["openat"]);
        assert!(parse_expr("trace=all").unwrap().is_none());
        assert!(set("trace=none").is_empty());
        for bad in [
            "trace=%nope",
            "trace=nosuchcall",
            "signal=SIGINT",
            "trace=/(",
        ] {
            let e = parse_expr(bad).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("-e {bad}: ")) && !e.contains('\n'),
                "{e}"
            );
        }
    }

    #[test]
    fn a_class_the_path_filter_never_stops_needs_every_syscall() {
        let opts = |e: &str| TraceOpts {
            names: parse_expr(e).unwrap(),
            paths: vec![],
            pids: vec![],
            redirected_only: false,
            failed_only: false,
            summary: false,
            json: false,
        };
        assert!(!opts("trace=%file").needs_every_syscall(false));
        assert!(
            !opts("trace=%file")
                .unseen_with_path_filter(false)
                .is_empty(),
            "getcwd, mount, ..."
        );
        assert!(opts("trace=%network").needs_every_syscall(false));
        assert!(
            !opts("trace=connect").needs_every_syscall(true),
            "holds trap connect"
        );
        assert!(opts("trace=%memory").needs_every_syscall(false));
        assert!(!opts("trace=openat").needs_every_syscall(false));
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
