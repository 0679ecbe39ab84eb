//! Minimal driver for manual engine checks: `redir DIR CMD ARGS...` redirects
//! /proc/sys/REL to DIR/REL when DIR/REL exists, and prints events to stderr
//! when REDIR_VERBOSE is set.

use shim::{Decision, Event, FilterMode, Plan, Policy, Redirect};
use std::path::{Path, PathBuf};

struct P {
    dir: PathBuf,
    verbose: bool,
}

impl Policy for P {
    fn on_path(&mut self, req: &shim::PathRequest<'_>) -> Decision {
        if let Ok(rel) = req.path.strip_prefix("/proc/sys") {
            let cand = self.dir.join(rel);
            if cand.exists() {
                let mut r = Redirect::to(cand);
                if req.op.is_mutation() {
                    r.write_token = Some(1);
                }
                return Decision::Redirect(r);
            }
            if rel.as_os_str() == "forbidden" {
                return Decision::Fail(libc::EACCES);
            }
        }
        Decision::Pass
    }
    fn untranslate(&self, host: &Path) -> Option<PathBuf> {
        host.strip_prefix(&self.dir)
            .ok()
            .map(|r| Path::new("/proc/sys").join(r))
    }
    fn on_write(&mut self, _t: u64, pid: i32, off: u64, data: &[u8]) -> Result<usize, i32> {
        if self.verbose {
            eprintln!(
                "[write pid={pid} off={off} {:?}]",
                String::from_utf8_lossy(data)
            );
        }
        if data.starts_with(b"bad") {
            return Err(libc::EINVAL);
        }
        Ok(data.len())
    }
    fn on_event(&mut self, ev: &Event) {
        if self.verbose {
            eprintln!("[{}]", serde_json::to_string(ev).unwrap_or_default());
        }
    }
}

fn main() {
    let mut a = std::env::args_os().skip(1);
    let dir = PathBuf::from(a.next().expect("DIR"));
    let argv: Vec<_> = a.collect();
    let facts = shim::probe().expect("probe");
    let verbose = std::env::var_os("REDIR_VERBOSE").is_some();
    if verbose {
        eprintln!("facts: {facts:?}");
    }
    let program = PathBuf::from(&argv[0]);
    let mode = if std::env::var_os("REDIR_STEP").is_some() {
        FilterMode::Everything
    } else {
        FilterMode::Paths
    };
    let plan = Plan {
        program,
        argv,
        env: None,
        cwd: None,
        filter: mode,
        trap_connect: false,
        report_syscalls: verbose,
        no_new_privs: false,
        stdio: Default::default(),
        fixes: Default::default(),
        paths: Default::default(),
        namespace: None,
    };
    let mut t = shim::Tracer::start(plan, facts).expect("start");
    let st = t.run(&mut P { dir, verbose }).expect("run");
    eprintln!("exit: {st:?}");
}
