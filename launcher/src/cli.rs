//! The command line, as raw flags (clap derive). `config` validates them into
//! what `run` needs; nothing here touches the system.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "k3shim",
    version,
    about = "Run k3s server (or any program) in a sandbox under a ptrace + seccomp shim that fakes missing /proc/sys entries, gates start-up work on apiserver readiness, and records a timeline.",
    after_help = "Examples:\n  k3shim run --timeline run.jsonl -- k3s server --disable-agent\n  k3shim trace -e trace=%file -- sysctl -n vm.panic_on_oom\n  k3shim timeline run.jsonl --html run.html\n  k3shim doctor\n\nExit status of run/trace: the command's own, 128+N if it died of signal N, 127 if it was not found, 126 if it could not be executed, 2 for k3shim usage or configuration errors, 3 for an internal tracer failure."
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
    /// k3shim's own lines on stderr: error, warn, info, debug, trace or off [default: notices and warnings]; also K3SHIM_LOG (a level, or tracing directives)
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run CMD under the shim.
    #[command(
        after_help = "Examples:\n  k3shim run -- sysctl -n vm.panic_on_oom\n  k3shim run --mode shadow --state /tmp/s --timeline run.jsonl -- k3s server --disable-agent\n  k3shim run --gate-kubeconfig /etc/rancher/k3s/k3s.yaml --hold connect:127.0.0.1:6443 \\\n      --hook 'kubectl get --raw /readyz' -- k3s server\n\nThe command and its arguments go after `--`."
    )]
    Run(RunArgs),
    /// Run CMD under the shim and print its intercepted syscalls.
    #[command(
        after_help = "Examples:\n  k3shim trace -- sysctl -n vm.panic_on_oom\n  k3shim trace -f -e trace=%file -o trace.txt -- k3s server\n  k3shim trace -c --path /proc/sys -- sysctl -a\n  k3shim trace --all -e trace=%network -- curl -s http://127.0.0.1:6443/\n\nLines are strace's (`-T` time last, `<0.000024>`), with what k3shim did as a /* comment */."
    )]
    Trace(TraceArgs),
    /// Inspect and shape a fake /proc/sys state directory.
    #[command(
        after_help = "Examples:\n  k3shim fakefs init --state /tmp/s\n  k3shim fakefs show --state /tmp/s\n  k3shim fakefs set --state /tmp/s kernel/panic 10"
    )]
    Fakefs(FakefsArgs),
    /// Reproducible experiments: list, run, report.
    #[command(
        after_help = "Examples:\n  k3shim experiment list\n  k3shim experiment run control-plane --runs 3\n  k3shim experiment report runs/control-plane-*"
    )]
    Experiment(ExperimentArgs),
    /// Print a run's timeline as a table; compare two runs; render HTML.
    #[command(
        after_help = "Examples:\n  k3shim timeline run.jsonl\n  k3shim timeline run.jsonl --html run.html\n  k3shim timeline bare.jsonl --compare shim.jsonl --html compare.html\n\nA damaged line (a killed run leaves a truncated last one) is named on stderr and skipped."
    )]
    Timeline(TimelineArgs),
    /// What is missing here, and why.
    #[command(after_help = "Examples:\n  k3shim doctor\n  k3shim doctor --json")]
    Doctor(DoctorArgs),
    /// Measure k3shim against native, proot and strace.
    #[command(
        after_help = "Examples:\n  k3shim bench --quick\n  k3shim bench --only sqlite --reps 3 --native-only"
    )]
    Bench(BenchArgs),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    Overlay,
    Shadow,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// mount where the probe shows a private mount namespace works, else ptrace (default).
    Auto,
    /// A private mount namespace serves /proc/sys; only mutations stop (needs CAP_SYS_ADMIN).
    Mount,
    /// Every path syscall stops and the tracer answers it.
    Ptrace,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum FilterArg {
    /// Stop only path-taking syscalls (default).
    Paths,
    /// Stop every syscall at entry and exit, like a plain PTRACE_SYSCALL interceptor (slow; for experiments).
    None,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum TimeoutActionArg {
    RunHooks,
    SkipHooks,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReleaseArg {
    /// Once the gate is open (or timed out) and every hook has ended: held clients see what hooks did
    AfterHooks,
    /// As soon as the gate opens (or times out), while the hooks start
    AtGate,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum HookFailureArg {
    Continue,
    Stop,
}

/// The state directory and profile options, shared by run, trace and fakefs.
#[derive(Args, Debug, Clone)]
pub struct StateArgs {
    /// fakefs state directory (created and seeded if absent) [default: $K3SHIM_STATE, else ~/.local/state/k3shim]
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// fakefs seed profile: k3s, none, or a .toml/.tsv file; repeat to layer (later wins) [default: k3s]
    #[arg(long = "profile", value_name = "NAME")]
    pub profiles: Vec<String>,
    /// overlay: real entries that exist and work are used, the rest is fake; shadow: every /proc/sys access is fake
    /// [default: overlay for run and trace; for fakefs commands, the mode the state directory was last run with]
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// Overlay: send writes of real, writable entries to the kernel (changes the machine!)
    #[arg(long)]
    pub write_through: bool,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub state: StateArgs,
    /// Redirect path prefix DST to SRC as well (proot's syntax: SRC:DST, or PATH for both)
    #[arg(short = 'b', long = "bind", value_name = "SRC:DST")]
    pub binds: Vec<String>,
    /// Write the run's events as JSON lines
    #[arg(long, value_name = "FILE")]
    pub timeline: Option<PathBuf>,
    /// Readiness probe URL (http or https); with --gate-kubeconfig alone, the kubeconfig's server + /readyz
    #[arg(long, value_name = "URL")]
    pub gate_url: Option<String>,
    /// Kubeconfig supplying the probe's CA and client credentials (k3s writes /etc/rancher/k3s/k3s.yaml)
    #[arg(long, value_name = "FILE")]
    pub gate_kubeconfig: Option<PathBuf>,
    /// Do not verify the probe's server certificate
    #[arg(long)]
    pub gate_insecure: bool,
    /// Give up waiting for readiness after SECS; held syscalls are then released and hooks run (see --gate-timeout-action); 0 waits for ever [default: 300]
    #[arg(long, value_name = "SECS")]
    pub gate_timeout: Option<f64>,
    /// What happens to hooks when the gate times out
    #[arg(long, value_enum, default_value = "run-hooks")]
    pub gate_timeout_action: TimeoutActionArg,
    /// HTTP status that counts as ready
    #[arg(long, default_value_t = 200, value_name = "CODE")]
    pub gate_status: u16,
    /// Consecutive successful probes needed (at least 1)
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub gate_successes: u32,
    /// First probe interval in milliseconds, at least 10 (backs off to 2 s)
    #[arg(long, default_value_t = 250, value_name = "MS")]
    pub gate_interval_ms: u64,
    /// Per-attempt timeout in milliseconds (more than 0)
    #[arg(long, default_value_t = 2000, value_name = "MS")]
    pub gate_attempt_timeout_ms: u64,
    /// Hold matching syscalls until the gate opens: connect:HOST:PORT, connect:[V6]:PORT, connect:unix:PATH, exec:PATH
    #[arg(long = "hold", value_name = "RULE")]
    pub holds: Vec<String>,
    /// When held syscalls continue: after-hooks (once the gate is open and every hook has ended) or at-gate (as the hooks start)
    #[arg(long, value_enum, default_value = "after-hooks", value_name = "WHEN")]
    pub release: ReleaseArg,
    /// Post-start hook: a shell command run once the gate is open (repeatable, run in order); its stdout and stderr go to k3shim's stderr, or to --log FILE
    #[arg(long = "hook", value_name = "CMD")]
    pub hooks: Vec<String>,
    /// A failing hook: continue, or stop the traced tree (SIGTERM) and exit non-zero
    #[arg(long, value_enum, default_value = "continue")]
    pub hook_failure: HookFailureArg,
    /// Mark lines of CMD's (and the hooks') output matching REGEX as milestone NAME in the timeline (output passes through unchanged)
    #[arg(long = "log-match", value_name = "NAME=REGEX")]
    pub log_matches: Vec<String>,
    /// Also copy CMD's stdout and stderr (and hook output) to FILE
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Which syscalls stop: paths (default) or none (stop every syscall, as the seeds' interceptor did)
    #[arg(long, value_enum, default_value = "paths")]
    pub filter: FilterArg,
    /// How /proc/sys is served: auto, mount (a private mount namespace; reads never stop) or ptrace [default: auto, or K3SHIM_BACKEND]; `trace` always uses ptrace
    #[arg(long, value_enum, value_name = "BACKEND")]
    pub backend: Option<BackendArg>,
    /// Turn off a sandbox compatibility fix by name (see `k3shim doctor`)
    #[arg(long = "no-fix", value_name = "NAME")]
    pub no_fix: Vec<String>,
    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "CMD")]
    pub cmd: Vec<OsString>,
}

#[derive(Args, Debug, Clone)]
pub struct TraceArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Write trace lines to FILE instead of stderr
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print a summary table at exit instead of lines
    #[arg(short = 'c', long = "summary")]
    pub summary: bool,
    /// One JSON object per line
    #[arg(long)]
    pub json: bool,
    /// Every syscall of the tree, not only path-taking ones (stops every syscall: much slower)
    #[arg(long)]
    pub all: bool,
    /// Only these syscalls, as strace's -e: trace=NAME,... or a class (%file, %process, %network, %signal, %ipc, %desc, %memory, %creds, %clock, %stat, %lstat, %fstat, %%stat, %statfs, %fstatfs, %%statfs, %pure), /REGEX, !SET
    #[arg(short = 'e', value_name = "trace=SET")]
    pub expr: Option<String>,
    /// Follow forks and threads: always on (accepted for strace's -f)
    #[arg(short = 'f')]
    pub follow: bool,
    /// Only syscalls whose path starts with PREFIX (as given or as resolved)
    #[arg(long = "path", value_name = "PREFIX")]
    pub path: Vec<String>,
    /// Only this process (or thread) id
    #[arg(long = "pid", value_name = "PID")]
    pub pid: Vec<i32>,
    /// Only redirected syscalls
    #[arg(long)]
    pub redirected_only: bool,
    /// Only failed syscalls
    #[arg(long)]
    pub failed_only: bool,
}

#[derive(Args, Debug, Clone)]
pub struct FakefsArgs {
    #[command(subcommand)]
    pub cmd: FakefsCmd,
}

#[derive(Subcommand, Debug, Clone)]
pub enum FakefsCmd {
    /// Create and seed the state directory, or check and repair an existing one
    #[command(after_help = "Example:\n  k3shim fakefs init --state /tmp/s --profile k3s")]
    Init(FakefsCommon),
    /// List entries with their source (real, profile, written, damaged) and value
    #[command(
        after_help = "Examples:\n  k3shim fakefs show --state /tmp/s\n  k3shim fakefs show --state /tmp/s --json"
    )]
    Show {
        #[command(flatten)]
        common: FakefsCommon,
        /// JSON output
        #[arg(long)]
        json: bool,
    },
    /// Print one entry's value (PATH relative to /proc/sys or a sysctl name: vm/panic_on_oom, vm.panic_on_oom)
    #[command(
        after_help = "Examples:\n  k3shim fakefs get --state /tmp/s vm/panic_on_oom\n  k3shim fakefs get --state /tmp/s vm.panic_on_oom"
    )]
    Get {
        #[command(flatten)]
        common: FakefsCommon,
        path: String,
    },
    /// Set one entry (validated like a write from a traced program)
    #[command(after_help = "Example:\n  k3shim fakefs set --state /tmp/s kernel/panic 10")]
    Set {
        #[command(flatten)]
        common: FakefsCommon,
        path: String,
        value: String,
    },
    /// What traced programs changed relative to the profile
    #[command(
        after_help = "Examples:\n  k3shim fakefs diff --state /tmp/s\n  k3shim fakefs diff --state /tmp/s --json"
    )]
    Diff {
        #[command(flatten)]
        common: FakefsCommon,
        #[arg(long)]
        json: bool,
    },
    /// Restore the profile's values
    #[command(after_help = "Example:\n  k3shim fakefs reset --state /tmp/s --yes")]
    Reset {
        #[command(flatten)]
        common: FakefsCommon,
        /// Really reset
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Args, Debug, Clone)]
pub struct FakefsCommon {
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Args, Debug, Clone)]
pub struct ExperimentArgs {
    #[command(subcommand)]
    pub cmd: ExperimentCmd,
}

#[derive(Subcommand, Debug, Clone)]
pub enum ExperimentCmd {
    /// List the experiments
    #[command(
        after_help = "Examples:\n  k3shim experiment list\n  k3shim experiment list --dir ./experiments"
    )]
    List {
        /// Directory of experiment files [default: ./experiments, else the built-in set]
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Run one experiment
    #[command(
        after_help = "Examples:\n  k3shim experiment run control-plane\n  k3shim experiment run timing --runs 5 --quick 0.5\n  k3shim experiment run fakefs --k3s /usr/local/bin/k3s --quick 2"
    )]
    Run {
        /// Experiment name (experiments/NAME.toml) or a path to a .toml file
        name: String,
        /// k3s binary to run, or `upstream` for the real Kubernetes parts
        /// (tests/fixtures/k8s, built on demand) [default: the built stand-in]
        #[arg(long, value_name = "PATH|upstream")]
        k3s: Option<PathBuf>,
        /// Repetitions
        #[arg(long, default_value_t = 1)]
        runs: u32,
        /// Where run directories go [default: ./runs]
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Directory of experiment files
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Scale watch times down (e.g. 0.2 in CI)
        #[arg(long, value_name = "F")]
        quick: Option<f64>,
    },
    /// Aggregate one or more run directories into a report
    #[command(
        after_help = "Examples:\n  k3shim experiment report runs/timing-20261122-055220\n  k3shim experiment report runs/timing-*"
    )]
    Report {
        #[arg(required = true, value_name = "RUN_DIR")]
        dirs: Vec<PathBuf>,
    },
}

#[derive(Args, Debug, Clone)]
pub struct TimelineArgs {
    /// Timeline file (JSON lines)
    pub file: PathBuf,
    /// A second run to put side by side
    #[arg(long, value_name = "FILE2")]
    pub compare: Option<PathBuf>,
    /// Write a self-contained HTML report with an SVG chart
    #[arg(long, value_name = "OUT")]
    pub html: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct DoctorArgs {
    /// JSON output for scripts
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Quick mode: 1 repetition, small sizes (proves the bench runs)
    #[arg(long)]
    pub quick: bool,
    /// Repetitions per workload and tool
    #[arg(long, default_value_t = 5)]
    pub reps: u32,
    /// Where results go
    #[arg(long, default_value = "bench/results", value_name = "DIR")]
    pub out: PathBuf,
    /// Only workloads whose name contains this
    #[arg(long)]
    pub only: Option<String>,
    /// Skip the inside-gVisor half
    #[arg(long)]
    pub native_only: bool,
    /// Only these tools besides native (comma-separated; k3shim is the ptrace
    /// backend, k3shim-mount the mount backend)
    #[arg(long, value_delimiter = ',', value_name = "TOOLS",
          value_parser = ["k3shim", "k3shim-mount", "k3shim-none", "proot", "strace"])]
    pub tools: Vec<String>,
    /// Measure the real Kubernetes parts (tests/fixtures/k8s) in gVisor instead:
    /// control plane ready (bare, k3shim, --filter none; --reps up to 3) and the
    /// full server's steady state (tracer CPU and RSS, syscalls stopped per second)
    #[arg(long)]
    pub upstream: bool,
}

/// An error and its causes as the one line k3shim prints: each cause once.
/// A cause already said is dropped (a message that embeds its source, as
/// `{source}` in an error type does, would otherwise end in
/// "(os error 13): Permission denied (os error 13)"), a cause that starts by
/// repeating what was said ("--timeline F: cannot create: --timeline F: ...")
/// loses that part, and a message of several lines is put on one.
pub fn error_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let mut text: &str = &text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        while let Some((head, rest)) = text.split_once(": ") {
            if out.contains(&format!("{head}: ")) || out.ends_with(head) {
                text = rest;
            } else {
                break;
            }
        }
        if text.is_empty() || out.contains(text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(text);
    }
    out
}

/// A one-line hint for the usage errors a newcomer makes with run and
/// trace: the command not after `--` (clap only says "unexpected argument"),
/// or no command at all. None: clap's own message will do.
pub fn usage_hint(err: &clap::Error, argv: &[OsString]) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let args: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let sub = args.get(1).map(String::as_str)?;
    if sub != "run" && sub != "trace" {
        return None;
    }
    let example = format!(
        "k3shim {sub} [OPTIONS] -- CMD [ARGS...], e.g. k3shim {sub} -- sysctl -n vm.panic_on_oom"
    );
    if args.iter().any(|a| a == "--") {
        return None;
    }
    match err.kind() {
        ErrorKind::MissingRequiredArgument => Some(format!("{sub}: no command given: {example}")),
        ErrorKind::UnknownArgument => {
            let Some(ContextValue::String(bad)) = err.get(ContextKind::InvalidArg) else {
                return None;
            };
            if bad.starts_with('-') {
                return None;
            }
            // Where the command starts: the first `bad` that is not an option's value.
            let cmd = <Cli as clap::CommandFactory>::command();
            let opts = cmd.find_subcommand(sub)?;
            let takes_value = |a: &str| {
                opts.get_arguments().any(|o| {
                    let named = a
                        .strip_prefix("--")
                        .map(|l| o.get_long() == Some(l))
                        .or_else(|| {
                            a.strip_prefix('-')
                                .filter(|s| s.chars().count() == 1)
                                .map(|s| o.get_short() == s.chars().next())
                        })
                        .unwrap_or(false);
                    named && o.get_action().takes_values()
                })
            };
            let at = (2..args.len()).find(|&i| args[i] == *bad && !takes_value(&args[i - 1]))?;
            let quoted = |v: &[String]| {
                v.iter()
                    .map(|a| crate::timeline_report::shell_word(a))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            Some(format!(
                "{sub}: put the command after `--` (so that its options are not taken for k3shim's): {} -- {}",
                quoted(&args[..at]).replacen(&crate::timeline_report::shell_word(&args[0]), "k3shim", 1),
                quoted(&args[at..])
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every command and subcommand, as (path, command).
    fn all(c: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
        out.push((path.clone(), c.clone()));
        for s in c.get_subcommands() {
            all(s, format!("{path} {}", s.get_name()), out);
        }
    }

    #[test]
    fn every_command_and_subcommand_shows_an_example_in_its_help() {
        let mut v = Vec::new();
        all(&Cli::command(), "k3shim".into(), &mut v);
        assert!(v.len() > 15, "{}", v.len());
        for (path, mut c) in v {
            if c.get_name() == "help" {
                continue;
            }
            let help = c.render_long_help().to_string();
            assert!(
                help.contains("Example") && help.contains(&format!("  {path}")),
                "`{path} --help` shows no example of itself:\n{help}"
            );
        }
    }

    fn args(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn hint(v: &[&str]) -> Option<String> {
        let a = args(v);
        let e = Cli::try_parse_from(&a).expect_err("a usage error");
        usage_hint(&e, &a)
    }

    #[test]
    fn a_command_not_after_dashdash_gets_the_line_to_type() {
        assert_eq!(
            hint(&["k3shim", "run", "--state", "sleep", "sleep", "1"]).unwrap(),
            "run: put the command after `--` (so that its options are not taken for k3shim's): k3shim run --state sleep -- sleep 1"
        );
        assert_eq!(
            hint(&["/usr/bin/k3shim", "trace", "-e", "trace=%file", "ls", "-l", "a b"]).unwrap(),
            "trace: put the command after `--` (so that its options are not taken for k3shim's): k3shim trace -e trace=%file -- ls -l 'a b'"
        );
        assert!(hint(&["k3shim", "run"])
            .unwrap()
            .starts_with("run: no command given: k3shim run [OPTIONS] -- CMD"));
        // An unknown option is clap's to explain.
        assert_eq!(hint(&["k3shim", "run", "--nope", "--", "true"]), None);
        assert_eq!(hint(&["k3shim", "run", "--nope"]), None);
    }

    #[test]
    fn an_error_line_says_each_cause_once() {
        #[derive(Debug)]
        struct Embeds(std::io::Error);
        impl std::fmt::Display for Embeds {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "/s/lock: cannot open: {}", self.0)
            }
        }
        impl std::error::Error for Embeds {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let denied = || std::io::Error::from_raw_os_error(13);
        let e = anyhow::Error::new(Embeds(denied())).context("fakefs state /s");
        assert_eq!(
            error_line(&e),
            "fakefs state /s: /s/lock: cannot open: Permission denied (os error 13)"
        );
        let e = anyhow::Error::new(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "--timeline /x/t: No such file or directory (os error 2)",
        ))
        .context("--timeline /x/t: cannot create");
        assert_eq!(
            error_line(&e),
            "--timeline /x/t: cannot create: No such file or directory (os error 2)"
        );
        let e = anyhow::anyhow!("regex parse error:\n    (\n    ^\nerror: unclosed group")
            .context("--log-match a=(");
        assert_eq!(
            error_line(&e),
            "--log-match a=(: regex parse error: ( ^ error: unclosed group"
        );
        assert!(!error_line(&anyhow::Error::new(denied())).is_empty());
    }
}
