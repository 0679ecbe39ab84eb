//! The readiness gate, as specified in DESIGN.md ("Readiness gate and
//! hooks") and issue 4: probes go to the timeline, the gate opens on the
//! expected status, times out when asked, speaks HTTPS with a k3s-style
//! kubeconfig, and refuses malformed input before anything is launched.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use launcher::gate::{self, GateConfig, GateOutcome, TimeoutAction};
use launcher::timeline::Timeline;
use serde_json::json;

fn cfg(url: &str) -> GateConfig {
    GateConfig {
        url: url.into(),
        interval: Duration::from_millis(50),
        attempt_timeout: Duration::from_millis(500),
        ..Default::default()
    }
}

fn timeline(dir: &Path) -> (Timeline, std::path::PathBuf) {
    let p = dir.join("timeline.jsonl");
    (
        Timeline::create(Some(&p), &["k3shim".into(), "test".into()], json!({})).unwrap(),
        p,
    )
}

#[tokio::test]
async fn gate_opens_once_the_server_answers_200_and_every_probe_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (tl, path) = timeline(dir.path());
    let srv = http_server(Duration::from_millis(600), false).await;
    let h = gate::start(cfg(&srv.url).validate().unwrap(), tl.clone());
    assert!(!h.is_open(), "a gate is closed until a probe passes");
    let out = tokio::time::timeout(Duration::from_secs(10), h.wait())
        .await
        .expect("gate opens");
    let GateOutcome::Opened { at_ms } = out else {
        panic!("expected Opened, got {out:?}")
    };
    assert!(
        at_ms >= 550,
        "opened at {at_ms} ms, before the server was ready"
    );
    assert!(h.is_open());
    assert_eq!(h.outcome(), Some(out));

    let ev = events(&path);
    let probes = of_kind(&ev, "probe");
    assert!(probes.len() >= 3, "several attempts expected: {probes:?}");
    let last = probes.last().unwrap();
    assert_eq!(last["status"], 200);
    assert_eq!(last["ok"], true);
    for p in &probes[..probes.len() - 1] {
        assert_eq!(p["status"], 503, "earlier attempts saw 503: {p}");
        assert_eq!(p["ok"], false);
        assert!(p["latency_ms"].is_u64());
        // The failing readyz checks are kept, not the whole body.
        assert_eq!(
            p["failing"],
            json!(["poststarthook/scheduling/bootstrap-system-priority-classes"])
        );
    }
    let attempts: Vec<u64> = probes
        .iter()
        .map(|p| p["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, (1..=probes.len() as u64).collect::<Vec<_>>());
    let open = of_kind(&ev, "gate_open");
    assert_eq!(open.len(), 1);
    assert_eq!(open[0]["attempts"], probes.len() as u64);
    assert!(of_kind(&ev, "gate_timeout").is_empty());
    assert_eq!(
        srv.seen.requests.load(std::sync::atomic::Ordering::SeqCst),
        probes.len()
    );
}

#[tokio::test]
async fn consecutive_successes_and_a_custom_status_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let (tl, path) = timeline(dir.path());
    let srv = http_server(Duration::ZERO, true).await; // always 503
    let c = GateConfig {
        expect_status: 503,
        successes: 3,
        ..cfg(&srv.url)
    };
    let h = gate::start(c.validate().unwrap(), tl);
    tokio::time::timeout(Duration::from_secs(10), h.wait())
        .await
        .unwrap();
    let ev = events(&path);
    assert_eq!(of_kind(&ev, "probe").len(), 3);
    assert!(of_kind(&ev, "probe").iter().all(|p| p["ok"] == true));
}

#[tokio::test]
async fn on_resolved_callbacks_fire_once_the_gate_opens() {
    let srv = http_server(Duration::from_millis(200), false).await;
    let h = gate::start(cfg(&srv.url).validate().unwrap(), Timeline::disabled());
    let (tx, rx) = std::sync::mpsc::channel();
    h.on_resolved(move |o| tx.send(o).unwrap());
    let got = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(10)))
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(got, GateOutcome::Opened { .. }));
    // Registered after the fact: called at once.
    let (tx, rx) = std::sync::mpsc::channel();
    h.on_resolved(move |o| tx.send(o).unwrap());
    assert_eq!(rx.try_recv().unwrap(), got);
}

#[tokio::test]
async fn a_never_ready_server_times_out_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (tl, path) = timeline(dir.path());
    let srv = http_server(Duration::ZERO, true).await;
    let c = GateConfig {
        timeout: Some(Duration::from_millis(700)),
        timeout_action: TimeoutAction::SkipHooks,
        ..cfg(&srv.url)
    };
    let h = gate::start(c.validate().unwrap(), tl);
    let out = tokio::time::timeout(Duration::from_secs(10), h.wait())
        .await
        .unwrap();
    let GateOutcome::TimedOut { at_ms } = out else {
        panic!("expected TimedOut, got {out:?}")
    };
    assert!((650..3000).contains(&at_ms), "timed out at {at_ms} ms");
    assert!(h.is_open(), "a timed-out gate releases holds too");
    assert_eq!(h.timeout_action(), TimeoutAction::SkipHooks);
    let ev = events(&path);
    let to = of_kind(&ev, "gate_timeout");
    assert_eq!(to.len(), 1);
    assert_eq!(to[0]["action"], "skip-hooks");
    assert_eq!(to[0]["timeout_ms"], 700);
    assert_eq!(to[0]["last_status"], 503);
    assert_eq!(to[0]["attempts"], of_kind(&ev, "probe").len() as u64);
    assert!(of_kind(&ev, "gate_open").is_empty());
}

#[tokio::test]
async fn an_unreachable_url_keeps_probing_until_the_timeout_with_each_error_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (tl, path) = timeline(dir.path());
    let url = format!("http://127.0.0.1:{}/readyz", dead_port());
    let c = GateConfig {
        timeout: Some(Duration::from_millis(1000)),
        ..cfg(&url)
    };
    let h = gate::start(c.validate().unwrap(), tl);
    let out = tokio::time::timeout(Duration::from_secs(10), h.wait())
        .await
        .unwrap();
    assert!(matches!(out, GateOutcome::TimedOut { .. }));
    let ev = events(&path);
    let probes = of_kind(&ev, "probe");
    assert!(probes.len() >= 4, "kept probing: {} attempts", probes.len());
    for p in &probes {
        let e = p["error"]
            .as_str()
            .unwrap_or_else(|| panic!("an error, not a status: {p}"));
        assert!(
            e.to_lowercase().contains("refused"),
            "the error says why: {e}"
        );
    }
    // Backoff: the gaps grow, and never exceed the 2 s cap.
    let ts: Vec<u64> = probes.iter().map(|p| p["t_ms"].as_u64().unwrap()).collect();
    assert!(ts.windows(2).last().map(|w| w[1] - w[0]).unwrap() > ts[1] - ts[0]);
    let to = of_kind(&ev, "gate_timeout");
    assert!(to[0]["last_error"].as_str().unwrap().contains("efused"));
}

#[tokio::test]
async fn stop_ends_probing_and_leaves_the_gate_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (tl, path) = timeline(dir.path());
    let url = format!("http://127.0.0.1:{}/readyz", dead_port());
    let h = gate::start(cfg(&url).validate().unwrap(), tl);
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.stop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!h.is_open());
    assert_eq!(h.outcome(), None);
    let ev = events(&path);
    assert_eq!(of_kind(&ev, "gate_stopped").len(), 1);
    assert_eq!(kinds(&ev).last().unwrap(), "gate_stopped");
}

#[test]
fn malformed_urls_are_refused_naming_the_option() {
    for bad in [
        "htp://127.0.0.1:6443/readyz",
        "not a url",
        "ftp://127.0.0.1/x",
        "http://",
    ] {
        let e = GateConfig {
            url: bad.into(),
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("--gate-url"), "{bad}: {e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }
    let e = GateConfig::default().validate().unwrap_err().to_string();
    assert!(
        e.contains("--gate-url") && e.contains("--gate-kubeconfig"),
        "{e}"
    );
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn kubeconfig(server: &str, ca: Option<&str>, user: &str) -> String {
    let ca = ca
        .map(|c| format!("    certificate-authority-data: {}\n", b64(c)))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nclusters:\n- cluster:\n{ca}    server: {server}\n  name: default\ncontexts:\n- context:\n    cluster: default\n    user: default\n  name: default\ncurrent-context: default\nkind: Config\npreferences: {{}}\nusers:\n- name: default\n  user:\n{user}"
    )
}

#[test]
fn malformed_kubeconfigs_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("k3s.yaml");
    let check = |text: &str, want: &str| {
        std::fs::write(&kc, text).unwrap();
        let e = GateConfig {
            kubeconfig: Some(kc.clone()),
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with(&format!("--gate-kubeconfig {}", kc.display())),
            "{e}"
        );
        assert!(e.contains(want), "expected {want:?} in: {e}");
        assert!(!e.contains('\n'), "one line: {e}");
    };
    check("clusters: [[[\n", "not a kubeconfig");
    check("clusters:\n- name: x\n  cluster: 7\n", "not a kubeconfig");
    check(
        &kubeconfig("https://127.0.0.1:6443", None, "    token: abc\n")
            .replace("current-context: default", "current-context: other"),
        "current-context \"other\"",
    );
    check(
        &kubeconfig("ftp://127.0.0.1:6443", None, "    token: abc\n"),
        "clusters[\"default\"].cluster.server",
    );
    let bad_ca = kubeconfig("https://127.0.0.1:6443", None, "    token: abc\n").replace(
        "    server:",
        "    certificate-authority-data: '%%%not base64'\n    server:",
    );
    check(
        &bad_ca,
        "clusters[\"default\"].cluster.certificate-authority-data: not base64",
    );
    let not_pem = kubeconfig(
        "https://127.0.0.1:6443",
        None,
        &format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            b64("hello"),
            b64("x")
        ),
    );
    check(
        &not_pem,
        "users[\"default\"].user.client-certificate-data: not PEM",
    );
    let bad_key = kubeconfig(
        "https://127.0.0.1:6443",
        None,
        &format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            b64("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            b64("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
        ),
    );
    check(
        &bad_key,
        "client-certificate-data + users[\"default\"].user.client-key-data",
    );
    let half = kubeconfig(
        "https://127.0.0.1:6443",
        None,
        &format!(
            "    client-certificate-data: {}\n",
            b64("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
        ),
    );
    check(&half, "without a client-key");
}

#[tokio::test]
async fn a_kubeconfig_written_after_launch_is_picked_up_and_its_token_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (tl, path) = timeline(dir.path());
    let srv = http_server(Duration::ZERO, false).await;
    let kc = dir.path().join("rancher/k3s/k3s.yaml");
    let c = GateConfig {
        url: String::new(),
        kubeconfig: Some(kc.clone()),
        ..cfg("")
    };
    let prepared = c
        .validate()
        .expect("a kubeconfig not written yet is accepted (k3s writes it once it runs)");
    let h = gate::start(prepared, tl);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!h.is_open());
    std::fs::create_dir_all(kc.parent().unwrap()).unwrap();
    std::fs::write(
        &kc,
        kubeconfig(
            &format!("http://127.0.0.1:{}", srv.port),
            None,
            "    token: s3cr3t\n",
        ),
    )
    .unwrap();
    tokio::time::timeout(Duration::from_secs(10), h.wait())
        .await
        .unwrap();
    let ev = events(&path);
    let probes = of_kind(&ev, "probe");
    assert!(
        probes[0]["error"]
            .as_str()
            .unwrap()
            .contains("not written yet"),
        "{}",
        probes[0]
    );
    assert_eq!(probes.last().unwrap()["status"], 200);
    assert_eq!(
        srv.seen.paths.lock().unwrap().last().unwrap(),
        "/readyz",
        "URL defaults to the kubeconfig's server + /readyz"
    );
    assert_eq!(
        srv.seen.auth.lock().unwrap().last().unwrap().as_deref(),
        Some("Bearer s3cr3t")
    );
    assert_eq!(
        of_kind(&ev, "gate_open")[0]["url"],
        format!("http://127.0.0.1:{}/readyz", srv.port)
    );
}

// ---------------------------------------------------------------- HTTPS with client certificates

struct Pki {
    ca_pem: String,
    ca_der: rustls::pki_types::CertificateDer<'static>,
    server_cert: rcgen::Certificate,
    server_key: rcgen::KeyPair,
    client_cert_pem: String,
    client_key_pem: String,
}

/// A k3s-like PKI: server CA, serving certificate for 127.0.0.1, and a
/// client certificate ("system:admin") signed by the same CA.
fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose, SanType,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "k3s-server-ca@test");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();

    let mut sp = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    sp.subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    sp.distinguished_name.push(DnType::CommonName, "k3s");
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate().unwrap();
    let server_cert = sp.signed_by(&server_key, &ca_cert, &ca_key).unwrap();

    let mut cp = CertificateParams::new(Vec::<String>::new()).unwrap();
    cp.distinguished_name
        .push(DnType::CommonName, "system:admin");
    cp.distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    cp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_key = KeyPair::generate().unwrap();
    let client_cert = cp.signed_by(&client_key, &ca_cert, &ca_key).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        ca_der: ca_cert.der().clone(),
        server_cert,
        server_key,
        client_cert_pem: client_cert.pem(),
        client_key_pem: client_key.serialize_pem(),
    }
}

/// An HTTPS server on 127.0.0.1 that requires a client certificate signed by the CA.
async fn https_server(p: &Pki) -> (u16, Arc<Seen>, Arc<std::sync::atomic::AtomicUsize>) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(p.ca_der.clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(p.server_key.serialize_der()));
    let chain: Vec<CertificateDer<'static>> = vec![p.server_cert.der().clone()];
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Seen::default());
    let handshake_failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (s2, f2) = (seen.clone(), handshake_failures.clone());
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, seen, fails) = (acceptor.clone(), s2.clone(), f2.clone());
            tokio::spawn(async move {
                match acceptor.accept(sock).await {
                    Ok(tls) => serve_one(tls, seen, true).await,
                    Err(_) => {
                        fails.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            });
        }
    });
    (port, seen, handshake_failures)
}

#[tokio::test]
async fn a_k3s_style_kubeconfig_with_client_certificates_opens_the_gate_over_https() {
    let p = pki();
    let (port, seen, _) = https_server(&p).await;
    let dir = tempfile::tempdir().unwrap();
    let (tl, path) = timeline(dir.path());
    let kc = dir.path().join("k3s.yaml");
    let user = format!(
        "    client-certificate-data: {}\n    client-key-data: {}\n",
        b64(&p.client_cert_pem),
        b64(&p.client_key_pem)
    );
    std::fs::write(
        &kc,
        kubeconfig(&format!("https://127.0.0.1:{port}"), Some(&p.ca_pem), &user),
    )
    .unwrap();
    let c = GateConfig {
        url: String::new(),
        kubeconfig: Some(kc),
        timeout: Some(Duration::from_secs(10)),
        ..cfg("")
    };
    let h = gate::start(c.validate().unwrap(), tl);
    let out = h.wait().await;
    assert!(
        matches!(out, GateOutcome::Opened { .. }),
        "{out:?}: {:?}",
        events(&path)
    );
    assert_eq!(seen.paths.lock().unwrap().as_slice(), ["/readyz"]);
    let ev = events(&path);
    assert_eq!(of_kind(&ev, "probe").len(), 1);
    assert_eq!(
        of_kind(&ev, "gate_open")[0]["url"],
        format!("https://127.0.0.1:{port}/readyz")
    );
}

#[tokio::test]
async fn without_the_client_certificate_the_https_probe_fails_and_says_why() {
    let p = pki();
    let (port, seen, fails) = https_server(&p).await;
    let dir = tempfile::tempdir().unwrap();
    let (tl, path) = timeline(dir.path());
    let kc = dir.path().join("k3s.yaml");
    std::fs::write(
        &kc,
        kubeconfig(
            &format!("https://127.0.0.1:{port}"),
            Some(&p.ca_pem),
            "    {}\n",
        )
        .replace("  user:\n    {}", "  user: {}"),
    )
    .unwrap();
    let c = GateConfig {
        url: String::new(),
        kubeconfig: Some(kc),
        timeout: Some(Duration::from_millis(400)),
        ..cfg("")
    };
    let out = gate::start(c.validate().unwrap(), tl).wait().await;
    assert!(matches!(out, GateOutcome::TimedOut { .. }));
    assert_eq!(seen.requests.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(fails.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    let ev = events(&path);
    assert!(
        of_kind(&ev, "probe").iter().all(|p| p["error"].is_string()),
        "{ev:?}"
    );
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused_unless_insecure() {
    let p = pki();
    let other = pki();
    let (port, _, _) = https_server(&p).await;
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("k3s.yaml");
    let user = format!(
        "    client-certificate-data: {}\n    client-key-data: {}\n",
        b64(&p.client_cert_pem),
        b64(&p.client_key_pem)
    );
    std::fs::write(
        &kc,
        kubeconfig(
            &format!("https://127.0.0.1:{port}"),
            Some(&other.ca_pem),
            &user,
        ),
    )
    .unwrap();
    let (tl, path) = timeline(dir.path());
    let c = GateConfig {
        url: String::new(),
        kubeconfig: Some(kc.clone()),
        timeout: Some(Duration::from_millis(400)),
        ..cfg("")
    };
    assert!(matches!(
        gate::start(c.validate().unwrap(), tl).wait().await,
        GateOutcome::TimedOut { .. }
    ));
    let ev = events(&path);
    let err = of_kind(&ev, "probe")[0]["error"]
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(
        err.contains("certificate") || err.contains("unknownissuer"),
        "{err}"
    );
    // --gate-insecure accepts it.
    let c = GateConfig {
        insecure: true,
        url: String::new(),
        kubeconfig: Some(kc),
        timeout: Some(Duration::from_secs(10)),
        ..cfg("")
    };
    assert!(matches!(
        gate::start(c.validate().unwrap(), Timeline::disabled())
            .wait()
            .await,
        GateOutcome::Opened { .. }
    ));
}
