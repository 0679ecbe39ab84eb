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

/// clap's error text as one line: its message and hints, without the usage
/// and "For more information" lines.
fn one_line(rendered: &str) -> String {
    let mut out = String::new();
    for l in rendered.lines().map(str::trim) {
        if l.is_empty() || l.starts_with("Usage:") || l.starts_with("For more information") {
            continue;
        }
        let l = l.strip_prefix("error: ").unwrap_or(l);
        if !out.is_empty() {
            out.push_str(if out.ends_with(':') { " " } else { "; " });
        }
        out.push_str(l);
    }
    out
}

fn main() -> ExitCode {
    use clap::error::ErrorKind;
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            e.exit()
        }
        Err(e) => {
            match launcher::cli::usage_hint(&e, &argv) {
                Some(h) => eprintln!("k3shim: {h}"),
                None => eprintln!("k3shim: {}", one_line(&e.render().to_string())),
            }
            return ExitCode::from(2);
        }
    };
    if let Err(e) = launcher::log::init(cli.log_level.as_deref()) {
        eprintln!("k3shim: {e:#}");
        return ExitCode::from(2);
    }
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            let code = e.downcast_ref::<Fail>().map(|f| f.code).unwrap_or(2);
            eprintln!("k3shim: {}", launcher::cli::error_line(&e));
            ExitCode::from(code as u8)
        }
    }
}
