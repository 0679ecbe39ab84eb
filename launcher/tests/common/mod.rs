//! Fixtures shared by the gate, hooks and timeline tests: a tiny HTTP(S)
//! server on 127.0.0.1 that is "not ready" (503) for its first N ms, TLS
//! material made with rcgen, and a realistic fixture timeline.
#![allow(dead_code)]

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the fixture server saw.
#[derive(Default)]
pub struct Seen {
    pub requests: AtomicUsize,
    pub paths: Mutex<Vec<String>>,
    pub auth: Mutex<Vec<Option<String>>>,
}

pub struct Fixture {
    pub url: String,
    pub port: u16,
    pub seen: Arc<Seen>,
}

/// Answers 503 until `not_ready_for` has passed since it started, then 200.
/// `never` keeps answering 503.
pub async fn http_server(not_ready_for: Duration, never: bool) -> Fixture {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Seen::default());
    let s2 = seen.clone();
    let started = Instant::now();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let seen = s2.clone();
            tokio::spawn(async move {
                let ready = !never && started.elapsed() >= not_ready_for;
                serve_one(sock, seen, ready).await;
            });
        }
    });
    Fixture {
        url: format!("http://127.0.0.1:{port}/readyz"),
        port,
        seen,
    }
}

/// Reads one request and answers it (200 if `ready`, else a readyz-like 503).
pub async fn serve_one<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut sock: S,
    seen: Arc<Seen>,
    ready: bool,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let req = String::from_utf8_lossy(&buf).to_string();
    let path = req.split_whitespace().nth(1).unwrap_or("").to_string();
    let auth = req
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
        .map(|l| l.split_once(':').unwrap().1.trim().to_string());
    seen.requests.fetch_add(1, Ordering::SeqCst);
    seen.paths.lock().unwrap().push(path);
    seen.auth.lock().unwrap().push(auth);
    let (status, body) = if ready {
        ("200 OK", "ok".to_string())
    } else {
        (
            "503 Service Unavailable",
            "[+]ping ok\n[+]etcd ok\n[-]poststarthook/scheduling/bootstrap-system-priority-classes failed: reason withheld\nreadyz check failed\n".to_string(),
        )
    };
    let resp = format!("HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    let _ = sock.write_all(resp.as_bytes()).await;
    let _ = sock.shutdown().await;
}

/// A port on 127.0.0.1 where nothing listens.
pub fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

pub fn events(path: &Path) -> Vec<Value> {
    launcher::timeline::read_events(path).expect("timeline parses")
}

pub fn kinds(ev: &[Value]) -> Vec<String> {
    ev.iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

pub fn of_kind<'a>(ev: &'a [Value], kind: &str) -> Vec<&'a Value> {
    ev.iter().filter(|e| e["kind"] == kind).collect()
}

pub fn t_of(ev: &[Value], kind: &str) -> u64 {
    of_kind(ev, kind)
        .first()
        .unwrap_or_else(|| panic!("no {kind} event in {:?}", kinds(ev)))["t_ms"]
        .as_u64()
        .unwrap()
}

/// A timeline of a k3s-like run as the engine and launcher write it:
/// exec, redirects, writes, holds released when the gate opens, probes
/// (errors, 503s, then 200), log matches, two hooks, and the exit.
/// `scale` stretches the times (to make a second, slower run for --compare).
pub fn fixture_run(scale: f64) -> Vec<Value> {
    let t = |ms: u64| ((ms as f64) * scale).round() as u64;
    let mut v = vec![
        json!({"t_ms": 0, "kind": "launch", "argv": ["k3shim", "run", "--gate-kubeconfig", "/etc/rancher/k3s/k3s.yaml", "--hold", "connect:127.0.0.1:6443", "--hook", "kubectl apply -f /srv/manifests", "--", "k3s", "server"], "wall_clock": "2026-11-02T10:00:00.000Z", "unix_ms": 1793613600000u64, "version": "0.1.0", "kernel": "4.4.0"}),
        json!({"t_ms": t(14), "kind": "exec", "pid": 101, "path": "/usr/local/bin/k3s"}),
    ];
    let sysctls = [
        "vm/panic_on_oom",
        "kernel/panic",
        "kernel/panic_on_oops",
        "kernel/keys/root_maxkeys",
        "kernel/keys/root_maxbytes",
        "net/ipv4/conf/all/route_localnet",
        "net/bridge/bridge-nf-call-iptables",
        "net/netfilter/nf_conntrack_max",
    ];
    for (n, p) in sysctls.iter().enumerate() {
        v.push(json!({"t_ms": t(900 + 35 * n as u64), "kind": "redirect", "pid": 101, "tid": 104, "syscall": "openat", "path": format!("/proc/sys/{p}"), "backing": format!("/var/lib/k3shim/sys/{p}")}));
    }
    v.push(json!({"t_ms": t(1210), "kind": "write", "pid": 101, "comm": "k3s-server", "path": "/proc/sys/vm/panic_on_oom", "old": "1\n", "new": "0\n", "result": "ok"}));
    v.push(json!({"t_ms": t(1240), "kind": "write", "pid": 101, "comm": "k3s-server", "path": "/proc/sys/kernel/panic", "old": "0\n", "new": "10\n", "result": "ok"}));
    v.push(json!({"t_ms": t(1300), "kind": "write", "pid": 101, "comm": "k3s-server", "path": "/proc/sys/kernel/panic_on_oops", "old": "0\n", "new": "abc", "result": "EINVAL"}));
    v.push(json!({"t_ms": t(1500), "kind": "log_match", "name": "apiserver-start", "line": "Running kube-apiserver --advertise-port=6443", "stream": "stderr"}));
    // Probes: connection refused, then 503 while post-start hooks run, then 200.
    let mut attempt = 0;
    let mut pt = 250;
    while pt < 9000 {
        attempt += 1;
        let (st, err) = if pt < 2600 {
            (None, Some("error sending request: client error (Connect): tcp connect error: Connection refused (os error 111)"))
        } else {
            (Some(503), None)
        };
        let mut p = json!({"t_ms": t(pt), "kind": "probe", "attempt": attempt, "ok": false, "latency_ms": if st.is_some() { 40 } else { 1 }});
        if let Some(s) = st {
            p["status"] = json!(s);
            p["failing"] = json!(["poststarthook/scheduling/bootstrap-system-priority-classes"]);
        }
        if let Some(e) = err {
            p["error"] = json!(e);
        }
        v.push(p);
        pt += 750;
    }
    v.push(json!({"t_ms": t(2100), "kind": "hold", "pid": 140, "tid": 140, "comm": "k3s-agent", "what": "connect 127.0.0.1:6443"}));
    v.push(json!({"t_ms": t(2400), "kind": "hold", "pid": 140, "tid": 146, "comm": "k3s-agent", "what": "connect 127.0.0.1:6443"}));
    v.push(json!({"t_ms": t(3300), "kind": "hold", "pid": 177, "tid": 177, "comm": "containerd", "what": "exec /usr/bin/kubectl"}));
    v.push(json!({"t_ms": t(4000), "kind": "log_match", "name": "kubelet-start", "line": "Starting kubelet", "stream": "stderr"}));
    attempt += 1;
    v.push(json!({"t_ms": t(9050), "kind": "probe", "attempt": attempt, "status": 200, "ok": true, "latency_ms": 12}));
    v.push(json!({"t_ms": t(9051), "kind": "gate_open", "attempts": attempt, "url": "https://127.0.0.1:6443/readyz"}));
    for (pid, tid, comm, what, since) in [
        (140, 140, "k3s-agent", "connect 127.0.0.1:6443", 2100),
        (140, 146, "k3s-agent", "connect 127.0.0.1:6443", 2400),
        (177, 177, "containerd", "exec /usr/bin/kubectl", 3300),
    ] {
        v.push(json!({"t_ms": t(9052), "kind": "release", "pid": pid, "tid": tid, "comm": comm, "what": what, "waited_ms": t(9052) - t(since)}));
    }
    v.push(json!({"t_ms": t(9053), "kind": "hook_start", "index": 1, "cmd": "kubectl apply -f /srv/manifests", "pid": 300}));
    v.push(json!({"t_ms": t(11200), "kind": "hook_end", "index": 1, "cmd": "kubectl apply -f /srv/manifests", "status": 0, "ok": true, "duration_ms": t(11200) - t(9053)}));
    v.push(json!({"t_ms": t(11201), "kind": "hook_start", "index": 2, "cmd": "kubectl wait --for=condition=Ready node --all", "pid": 301}));
    v.push(json!({"t_ms": t(12500), "kind": "log_match", "name": "node-ready", "line": "Node ready", "stream": "stderr"}));
    v.push(json!({"t_ms": t(14000), "kind": "hook_end", "index": 2, "cmd": "kubectl wait --for=condition=Ready node --all", "status": 0, "ok": true, "duration_ms": t(14000) - t(11201)}));
    v.push(json!({"t_ms": t(20000), "kind": "signal", "pid": 101, "signal": 15}));
    v.push(json!({"t_ms": t(20400), "kind": "exit", "code": 143, "signal": 15}));
    v.sort_by_key(|e| e["t_ms"].as_u64().unwrap());
    v
}

/// [`fixture_run`] with `extra` more log_match milestones crowded into the
/// start-up (one every 120 ms from 1.6 s): 11 + `extra` milestones, the
/// shape that made the page's milestone numbers collide.
pub fn fixture_crowded(scale: f64, extra: usize) -> Vec<Value> {
    let mut v = fixture_run(scale);
    for n in 0..extra {
        let t = ((1600 + 120 * n as u64) as f64 * scale).round() as u64;
        v.push(json!({"t_ms": t, "kind": "log_match", "name": format!("step-{n}"), "line": format!("step {n} done"), "stream": "stderr"}));
    }
    v.sort_by_key(|e| e["t_ms"].as_u64().unwrap());
    v
}
