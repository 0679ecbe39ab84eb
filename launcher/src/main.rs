//! The k3shim command: main -> run -> exit status. Errors are printed once,
//! as one line, by this file.

use clap::Parser;
use launcher::cli::{Cli, Cmd};
use launcher::run::Fail;
use std::process::ExitCode;

/// Records the signal dispositions and mask k3shim was started with, for the
/// traced command, before the Rust runtime ignores SIGPIPE (which happens
/// before `main`); `.init_array` functions run before the runtime starts.
#[used]
#[link_section = ".init_array"]
static RECORD_INHERITED_SIGNALS: extern "C" fn() = shim::spawn::record_inherited_signals;

fn init_logging(level: Option<&str>) {
    let filter = level
        .map(str::to_string)
        .or_else(|| std::env::var("K3SHIM_LOG").ok())
        .unwrap_or_else(|| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}

fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    match cli.cmd {
        Cmd::Run(a) => launcher::run::run(&a, None),
        Cmd::Trace(t) => launcher::run::run(&t.run, Some(&t)),
        Cmd::Timeline(t) => launcher::timeline_cmd::run(&t),
        Cmd::Fakefs(f) => launcher::fakefs_cmd::run(&f),
        Cmd::Doctor(d) => launcher::doctor::run(&d),
        Cmd::Experiment(e) => launcher::experiment::run(&e),
        Cmd::Bench(b) => launcher::bench::run(&b),
    }
}

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) => match launcher::cli::usage_hint(&e, &argv) {
            Some(h) => {
                eprintln!("k3shim: {h}");
                return ExitCode::from(2);
            }
            None => e.exit(),
        },
    };
    init_logging(cli.log_level.as_deref());
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            let code = e.downcast_ref::<Fail>().map(|f| f.code).unwrap_or(2);
            eprintln!("k3shim: {}", launcher::cli::error_line(&e));
            ExitCode::from(code as u8)
        }
    }
}
