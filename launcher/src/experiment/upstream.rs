//! `--k3s upstream`: the real Kubernetes parts (kine, kube-apiserver, kubelet,
//! kube-proxy, kubectl, upstream's fake CRI) built from their pinned upstream
//! modules by tests/fixtures/k8s/build.sh, and started as one k3s-shaped
//! process tree by its `k3s-like server`.

use anyhow::{anyhow, bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The `--k3s` word that selects the upstream parts.
pub const KEYWORD: &str = "upstream";

/// The name of the k3s-shaped server among the built parts.
pub const SERVER: &str = "k3s-like";

const BUILD_SH: &str = "tests/fixtures/k8s/build.sh";

/// The source tree's tests/fixtures/k8s/build.sh, if k3shim runs from (or was built in) one.
fn find_build_sh() -> Option<PathBuf> {
    let rel = Path::new(BUILD_SH);
    if let Ok(cwd) = std::env::current_dir() {
        if let Some(a) = cwd.ancestors().find(|a| a.join(rel).is_file()) {
            return Some(a.join(rel));
        }
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?.join(rel);
    p.is_file().then_some(p)
}

/// Builds the parts (build.sh rebuilds only when the pins change; its cache
/// is $XDG_CACHE_HOME/k3shim/upstream) and returns the path of `k3s-like`.
/// A missing Go or module proxy is build.sh's one line, never a fallback.
pub fn build() -> Result<PathBuf> {
    let build = find_build_sh().ok_or_else(|| {
        anyhow!("--k3s {KEYWORD}: the real Kubernetes parts are built from {BUILD_SH} in k3shim's source tree, which is not here: run from the source tree")
    })?;
    eprintln!(
        "k3shim experiment: preparing the upstream parts ({}; a cold build takes 10-30 minutes)",
        build.display()
    );
    let mut child = Command::new("sh")
        .arg(&build)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run sh {}", build.display()))?;
    // Pass the build's progress on, keep its last line for the error.
    let err = child.stderr.take().map(|e| {
        std::thread::spawn(move || {
            let mut last = String::new();
            for l in BufReader::new(e).lines().map_while(|l| l.ok()) {
                eprintln!("  {l}");
                if !l.trim().is_empty() {
                    last = l;
                }
            }
            last
        })
    });
    let mut out = String::new();
    if let Some(o) = child.stdout.take() {
        for l in BufReader::new(o).lines().map_while(|l| l.ok()) {
            out = l;
        }
    }
    let status = child.wait()?;
    let last = err.and_then(|t| t.join().ok()).unwrap_or_default();
    if !status.success() {
        bail!(
            "--k3s {KEYWORD}: building the real Kubernetes parts failed: {}",
            if last.is_empty() {
                format!("{} exited with {status}", build.display())
            } else {
                last
            }
        );
    }
    let server = PathBuf::from(out.trim()).join(SERVER);
    if !server.is_file() {
        bail!(
            "--k3s {KEYWORD}: {} did not produce {}",
            build.display(),
            server.display()
        );
    }
    Ok(server)
}

/// `k3s-like --version`: each component and the upstream module version it
/// was built from, one per line.
pub fn components(server: &Path) -> Vec<String> {
    match super::env::capture(
        &[&server.display().to_string(), "--version"],
        std::time::Duration::from_secs(30),
    ) {
        Ok(s) => s
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect(),
        Err(e) => vec![format!("(could not read the versions: {e})")],
    }
}
