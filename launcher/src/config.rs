//! Validated configuration: raw flags (cli) become what run and the other
//! commands need, with one-line errors that name the flag or file at fault.

use crate::cli::{ModeArg, StateArgs};
use anyhow::{bail, Result};
use std::path::PathBuf;

/// Where the state directory is: --state, else $K3SHIM_STATE, else ~/.local/state/k3shim.
pub fn state_dir(a: &StateArgs) -> Result<PathBuf> {
    if let Some(s) = &a.state {
        return Ok(s.clone());
    }
    if let Some(s) = std::env::var_os("K3SHIM_STATE").filter(|s| !s.is_empty()) {
        return Ok(PathBuf::from(s));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".local/state/k3shim")),
        None => bail!("no state directory: give --state DIR or set K3SHIM_STATE (HOME is not set)"),
    }
}

/// fakefs options for the shared state flags (binds are added by run).
/// Without --mode: overlay (run's default, the CLI contract's).
pub fn fakefs_options(a: &StateArgs) -> Result<fakefs::Options> {
    fakefs_options_or(a, |_| fakefs::Mode::Overlay)
}

/// As [`fakefs_options`]; without --mode, the mode the state directory was
/// last opened with for writing (so `fakefs show` shows what the last run
/// saw), else overlay.
pub fn fakefs_options_recorded(a: &StateArgs) -> Result<fakefs::Options> {
    fakefs_options_or(a, |dir| {
        fakefs::recorded_mode(dir).unwrap_or(fakefs::Mode::Overlay)
    })
}

fn fakefs_options_or(
    a: &StateArgs,
    default: impl FnOnce(&std::path::Path) -> fakefs::Mode,
) -> Result<fakefs::Options> {
    let mut o = fakefs::Options::new(state_dir(a)?);
    o.profiles = a.profiles.clone();
    o.mode = match a.mode {
        Some(ModeArg::Overlay) => fakefs::Mode::Overlay,
        Some(ModeArg::Shadow) => fakefs::Mode::Shadow,
        None => default(&o.state),
    };
    o.write_through = a.write_through;
    if let Some(root) = std::env::var_os("K3SHIM_PROC_SYS_ROOT") {
        // For tests only: where "the real /proc/sys" is.
        o.proc_root = PathBuf::from(root);
    }
    Ok(o)
}

/// Opens the fake tree, with the error naming the state directory.
pub fn open_fakefs(o: fakefs::Options) -> Result<fakefs::FakeFs> {
    // fakefs's errors already name the state directory or the file that failed.
    Ok(fakefs::FakeFs::open(o)?)
}
