//! `k3shim experiment (list | run NAME | report RUN_DIR...)`: reproducible
//! runs of k3s (or the Go stand-in) described by experiments/NAME.toml.
//!
//! The runner itself runs outside gVisor. Each step of an experiment is
//! launched as `runsc --platform=ptrace --network=none do -force-overlay=false
//! k3shim run ... -- k3s server ...` (or without k3shim, or natively), with
//! everything it writes under the run directory: `runsc do` overlays the host
//! root with a tmpfs unless -force-overlay=false, and the timeline must reach
//! the host. The target's output comes back through pipes (runsc garbles
//! output when stdout and stderr are the same file), is copied to target.log
//! and matched against the experiment's milestone patterns for the progress
//! display and the `until` milestone.

pub mod env;
pub mod progress;
pub mod report;
pub mod runner;
pub mod spec;
pub mod upstream;

use crate::cli::{ExperimentArgs, ExperimentCmd};
use anyhow::Result;

pub fn run(a: &ExperimentArgs) -> Result<i32> {
    match &a.cmd {
        ExperimentCmd::List { dir } => {
            let (from, all) = spec::list(dir.as_deref())?;
            println!("experiments ({from}):");
            let w = all.iter().map(|l| l.name.len()).max().unwrap_or(0);
            for l in &all {
                let seed = l
                    .exp
                    .seed
                    .as_deref()
                    .map(|s| format!(" [seed {s}]"))
                    .unwrap_or_default();
                let steps = if l.steps.len() > 1 {
                    format!(
                        " (steps: {})",
                        l.steps
                            .iter()
                            .map(|s| s.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                } else {
                    String::new()
                };
                println!("  {:w$}  {}{seed}{steps}", l.name, l.exp.description.trim());
            }
            println!("\nrun one: k3shim experiment run NAME [--k3s PATH|upstream] [--runs N] [--quick F]");
            Ok(0)
        }
        ExperimentCmd::Run {
            name,
            k3s,
            runs,
            out,
            dir,
            quick,
        } => runner::run(&runner::Options {
            name: name.clone(),
            k3s: k3s.clone(),
            runs: (*runs).max(1),
            out: out.clone(),
            dir: dir.clone(),
            quick: quick.unwrap_or(1.0),
        }),
        ExperimentCmd::Report { dirs } => {
            let r = report::aggregate(dirs)?;
            print!("{}", r.markdown);
            if dirs.len() == 1 {
                let _ = std::fs::write(dirs[0].join("report.md"), &r.markdown);
            }
            Ok(if r.all_match { 0 } else { 1 })
        }
    }
}
