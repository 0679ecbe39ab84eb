//! env.json: what the run ran on (k3shim, kernel, runsc, Go, k3s binary, doctor).

use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs a command with a time limit; its stdout (or why it failed).
pub fn capture(argv: &[&str], limit: Duration) -> Result<String, String> {
    let mut child = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", argv[0]))?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{}: no answer within {} s",
                    argv.join(" "),
                    limit.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(e.to_string()),
        }
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let so = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(so)
    } else {
        let se = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "{} exited {:?}: {}",
            argv.join(" "),
            out.status.code(),
            se.trim().lines().last().unwrap_or("")
        ))
    }
}

fn uname() -> Value {
    // SAFETY: uname fills the struct we own.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return Value::Null;
    }
    let f = |x: &[libc::c_char]| {
        // SAFETY: utsname fields are NUL-terminated.
        unsafe { std::ffi::CStr::from_ptr(x.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    };
    json!({"sysname": f(&u.sysname), "nodename": f(&u.nodename), "release": f(&u.release), "version": f(&u.version), "machine": f(&u.machine)})
}

pub fn collect(k3s: &Path, standin: bool, upstream: bool, quick: f64, runs: u32) -> Value {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let first = |r: Result<String, String>| match r {
        Ok(s) => json!(s.trim()),
        Err(e) => json!({"error": e}),
    };
    let doctor = match capture(&[&exe, "doctor", "--json"], Duration::from_secs(60)) {
        Ok(s) => serde_json::from_str::<Value>(&s).unwrap_or_else(|_| json!(s)),
        Err(e) => json!({"error": e}),
    };
    let meta = std::fs::metadata(k3s).ok();
    json!({
        "k3shim_version": env!("CARGO_PKG_VERSION"),
        "k3shim": exe,
        "started": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        "uname": uname(),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "euid": unsafe { libc::geteuid() },
        "runsc_version": first(capture(&["runsc", "--version"], Duration::from_secs(20))),
        "go_version": first(capture(&["go", "version"], Duration::from_secs(20))),
        "k3s": {"path": k3s, "standin": standin, "upstream": upstream, "size": meta.map(|m| m.len()),
                "components": if upstream { json!(super::upstream::components(k3s)) } else { Value::Null }},
        "quick": quick,
        "runs": runs,
        "doctor": doctor,
    })
}
