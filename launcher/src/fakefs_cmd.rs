//! `k3shim fakefs init|show|get|set|diff|reset`: inspect and shape a fake
//! /proc/sys state directory.
//!
//! Only `init` creates a state directory; the other commands refuse a path
//! that does not exist (a typo must not leave a fresh, seeded directory
//! behind). Every error is one line naming the state directory or the path
//! and what to do; nothing in the state directory changes on bad input
//! (fakefs validates values, profiles and the directory before writing).

use crate::cli::{FakefsArgs, FakefsCmd, FakefsCommon};
use crate::config;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Runs one `k3shim fakefs` subcommand, printing to stdout. Returns the exit status.
pub fn run(args: &FakefsArgs) -> Result<i32> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match run_to(args, &mut out) {
        // `k3shim fakefs show | head`: the reader went away; not an error.
        Err(e) if is_broken_pipe(&e) => Ok(0),
        r => r,
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// As [`run`], writing to `out` (for tests and embedding).
pub fn run_to(args: &FakefsArgs, out: &mut dyn Write) -> Result<i32> {
    match &args.cmd {
        FakefsCmd::Init(common) => init(common, out),
        FakefsCmd::Show { common, json } => show(common, *json, out),
        FakefsCmd::Get { common, path } => get(common, path, out),
        FakefsCmd::Set {
            common,
            path,
            value,
        } => set(common, path, value, out),
        FakefsCmd::Diff { common, json } => diff(common, *json, out),
        FakefsCmd::Reset { common, yes } => reset(common, *yes, out),
    }
}

fn state_of(common: &FakefsCommon) -> Result<PathBuf> {
    config::state_dir(&common.state)
}

/// Opens an existing state directory (every command but init).
fn open_existing(common: &FakefsCommon) -> Result<(fakefs::FakeFs, PathBuf)> {
    let dir = state_of(common)?;
    match std::fs::symlink_metadata(&dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "fakefs state {}: no such directory: create it with `k3shim fakefs init --state {}` (or check --state / $K3SHIM_STATE)",
            dir.display(),
            dir.display()
        ),
        _ => {}
    }
    let fs = config::open_fakefs(config::fakefs_options(&common.state)?)?;
    Ok((fs, dir))
}

fn io(r: std::io::Result<()>) -> Result<()> {
    r.context("cannot write to standard output")
}

fn mode_name(m: fakefs::Mode) -> &'static str {
    match m {
        fakefs::Mode::Overlay => "overlay",
        fakefs::Mode::Shadow => "shadow",
    }
}

fn init(common: &FakefsCommon, out: &mut dyn Write) -> Result<i32> {
    let dir = state_of(common)?;
    let existed = std::fs::symlink_metadata(dir.join(fakefs::STATE_FILE)).is_ok();
    let mut fs = config::open_fakefs(config::fakefs_options(&common.state)?)?;
    if existed {
        // `init` on an existing directory also repairs entries edited by hand.
        fs.verify()?;
    }
    let entries = fs.entries();
    let profiles = if common.state.profiles.is_empty() {
        "k3s".to_string()
    } else {
        common.state.profiles.join(" + ")
    };
    io(writeln!(
        out,
        "{} state directory {} (profile {profiles}, {} mode, {} entries)",
        if existed {
            "opened existing"
        } else {
            "initialized"
        },
        fs.state_dir().display(),
        mode_name(fs.mode()),
        entries.len()
    ))?;
    Ok(0)
}

/// Shows a value on one line: control characters escaped, empty as "".
fn printable(v: &str) -> String {
    if v.is_empty() {
        "\"\"".to_string()
    } else if v.chars().any(|c| c.is_control()) {
        format!("\"{}\"", v.escape_debug())
    } else {
        v.to_string()
    }
}

/// Formats rows as left-aligned columns separated by two spaces (no trailing blanks).
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let n = header.len();
    let mut w: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(n) {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut s = String::new();
    let line = |cells: Vec<String>, s: &mut String| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<width$}  ", width = w[i]));
            }
        }
        s.push_str(l.trim_end());
        s.push('\n');
    };
    line(header.iter().map(|h| h.to_string()).collect(), &mut s);
    for r in rows {
        line(r.clone(), &mut s);
    }
    s
}

#[derive(Serialize)]
struct ShowJson<'a> {
    state: &'a Path,
    mode: &'static str,
    entries: Vec<fakefs::EntryInfo>,
}

fn show(common: &FakefsCommon, json: bool, out: &mut dyn Write) -> Result<i32> {
    let (fs, _) = open_existing(common)?;
    let entries = fs.entries();
    if json {
        let j = ShowJson {
            state: fs.state_dir(),
            mode: mode_name(fs.mode()),
            entries,
        };
        io(writeln!(out, "{}", serde_json::to_string_pretty(&j)?))?;
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.path.clone(),
                printable(&e.value),
                e.source.to_string(),
                e.rule.clone(),
                if e.readonly {
                    "ro".into()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    let count = |s: fakefs::Source| entries.iter().filter(|e| e.source == s).count();
    io(write!(
        out,
        "{}",
        table(&["PATH", "VALUE", "SOURCE", "RULE", "RO"], &rows)
    ))?;
    io(writeln!(
        out,
        "{} entries in {} ({} mode): {} real, {} profile, {} written",
        entries.len(),
        fs.state_dir().display(),
        mode_name(fs.mode()),
        count(fakefs::Source::Real),
        count(fakefs::Source::Profile),
        count(fakefs::Source::Written)
    ))?;
    Ok(0)
}

fn get(common: &FakefsCommon, path: &str, out: &mut dyn Write) -> Result<i32> {
    let (fs, dir) = open_existing(common)?;
    let v = fs
        .get(path)
        .with_context(|| format!("fakefs get {path} (state {})", dir.display()))?;
    io(writeln!(out, "{v}"))?;
    Ok(0)
}

fn set(common: &FakefsCommon, path: &str, value: &str, out: &mut dyn Write) -> Result<i32> {
    let (mut fs, dir) = open_existing(common)?;
    let ctx = || {
        format!(
            "fakefs set {path} (state {}); nothing was changed",
            dir.display()
        )
    };
    let old = fs.get(path).with_context(ctx)?;
    fs.set(path, value).with_context(ctx)?;
    let new = fs.get(path).with_context(ctx)?;
    io(writeln!(
        out,
        "{path}: {} -> {}",
        printable(&old),
        printable(&new)
    ))?;
    Ok(0)
}

#[derive(Serialize)]
struct DiffJson<'a> {
    state: &'a Path,
    changes: Vec<fakefs::DiffLine>,
}

fn diff(common: &FakefsCommon, json: bool, out: &mut dyn Write) -> Result<i32> {
    let (fs, _) = open_existing(common)?;
    let changes = fs.diff();
    if json {
        let j = DiffJson {
            state: fs.state_dir(),
            changes,
        };
        io(writeln!(out, "{}", serde_json::to_string_pretty(&j)?))?;
        return Ok(0);
    }
    if changes.is_empty() {
        io(writeln!(
            out,
            "no changes relative to the profile in {}",
            fs.state_dir().display()
        ))?;
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = changes
        .iter()
        .map(|d| {
            vec![
                d.path.clone(),
                printable(&d.baseline),
                printable(&d.current),
            ]
        })
        .collect();
    io(write!(out, "{}", table(&["PATH", "PROFILE", "NOW"], &rows)))?;
    io(writeln!(
        out,
        "{} entries changed relative to the profile in {}",
        changes.len(),
        fs.state_dir().display()
    ))?;
    Ok(0)
}

fn reset(common: &FakefsCommon, yes: bool, out: &mut dyn Write) -> Result<i32> {
    let (mut fs, dir) = open_existing(common)?;
    let written: Vec<fakefs::EntryInfo> = fs
        .entries()
        .into_iter()
        .filter(|e| e.source == fakefs::Source::Written)
        .collect();
    let diffs = fs.diff();
    if !yes {
        if written.is_empty() {
            io(writeln!(
                out,
                "nothing written in {}: reset would only re-seed the profile's values",
                dir.display()
            ))?;
        } else {
            let rows: Vec<Vec<String>> = written
                .iter()
                .map(|e| {
                    let to = diffs
                        .iter()
                        .find(|d| d.path == e.path)
                        .map(|d| printable(&d.baseline));
                    vec![
                        e.path.clone(),
                        printable(&e.value),
                        to.unwrap_or_else(|| "(unchanged)".into()),
                    ]
                })
                .collect();
            io(writeln!(
                out,
                "reset would restore {} written entries in {}:",
                written.len(),
                dir.display()
            ))?;
            io(write!(
                out,
                "{}",
                table(&["PATH", "NOW", "AFTER RESET"], &rows)
            ))?;
        }
        io(out.flush())?;
        bail!(
            "fakefs reset (state {}): nothing was changed; run again with --yes to restore the profile's values (the journal is kept)",
            dir.display()
        );
    }
    fs.reset()
        .with_context(|| format!("fakefs reset (state {})", dir.display()))?;
    io(writeln!(
        out,
        "reset {}: {} written entries restored to the profile's values (journal kept)",
        fs.state_dir().display(),
        written.len()
    ))?;
    Ok(0)
}
