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
    after_help = "Exit status of run/trace: the command's own, 128+N if it died of signal N, 127 if it was not found, 126 if it could not be executed, 2 for k3shim usage or configuration errors, 3 for an internal tracer failure."
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
    Run(RunArgs),
    /// Run CMD under the shim and print its intercepted syscalls.
    Trace(TraceArgs),
    /// Inspect and shape a fake /proc/sys state directory.
    Fakefs(FakefsArgs),
    /// Reproducible experiments: list, run, report.
    Experiment(ExperimentArgs),
    /// Print a run's timeline as a table; compare two runs; render HTML.
    Timeline(TimelineArgs),
    /// What is missing here, and why.
    Doctor(DoctorArgs),
    /// Measure k3shim against native, proot and strace.
    Bench(BenchArgs),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    Overlay,
    Shadow,
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
    #[arg(long, value_enum, default_value = "overlay")]
    pub mode: ModeArg,
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
    /// Mark lines of CMD's output matching REGEX as milestone NAME in the timeline (output passes through unchanged)
    #[arg(long = "log-match", value_name = "NAME=REGEX")]
    pub log_matches: Vec<String>,
    /// Also copy CMD's stdout and stderr (and hook output) to FILE
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Which syscalls stop: paths (default) or none (stop every syscall, as the seeds' interceptor did)
    #[arg(long, value_enum, default_value = "paths")]
    pub filter: FilterArg,
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
    /// Only these syscalls: trace=open,openat,...
    #[arg(short = 'e', value_name = "trace=NAMES")]
    pub expr: Option<String>,
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
    /// Create and seed the state directory
    Init(FakefsCommon),
    /// List entries with their source (real, profile, written) and value
    Show {
        #[command(flatten)]
        common: FakefsCommon,
        /// JSON output
        #[arg(long)]
        json: bool,
    },
    /// Print one entry's value (PATH relative to /proc/sys, e.g. vm/panic_on_oom)
    Get {
        #[command(flatten)]
        common: FakefsCommon,
        path: String,
    },
    /// Set one entry (validated like a write from a traced program)
    Set {
        #[command(flatten)]
        common: FakefsCommon,
        path: String,
        value: String,
    },
    /// What traced programs changed relative to the profile
    Diff {
        #[command(flatten)]
        common: FakefsCommon,
        #[arg(long)]
        json: bool,
    },
    /// Restore the profile's values
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
    List {
        /// Directory of experiment files [default: ./experiments, else the built-in set]
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Run one experiment
    Run {
        /// Experiment name (experiments/NAME.toml) or a path to a .toml file
        name: String,
        /// k3s binary to run [default: the built stand-in]
        #[arg(long, value_name = "PATH")]
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
}
