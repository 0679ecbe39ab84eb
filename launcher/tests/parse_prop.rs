//! Property tests: the launcher's parsers of user input never panic, and every
//! refusal is one line (the CLI prints it as k3shim's one-line error).
//!
//! - `HoldRule::parse` on arbitrary strings and on near-miss rule spellings.
//! - Kubeconfig validation (`GateConfig { kubeconfig: Some(file), .. }.validate()`)
//!   on kubeconfigs built from a grammar (servers, inline and file PEMs that are
//!   valid, truncated or bit-flipped, tokens, contexts that do or do not
//!   resolve) and on raw text.
//!
//! Case counts: PROPTEST_CASES (default 256); x20 when K3SHIM_SOAK_SECS > 0.

use base64::Engine;
use launcher::gate::GateConfig;
use launcher::holds::HoldRule;
use proptest::prelude::*;
use std::sync::OnceLock;

fn config(default: u32) -> ProptestConfig {
    let base = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    let soak = std::env::var("K3SHIM_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let cases = if soak > 0 {
        base.saturating_mul(20)
    } else {
        base
    };
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn hold_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "(connect|exec|conect|CONNECT):.{0,30}",
        "connect:(\\[[0-9a-f:]{0,12}\\]|[0-9.]{0,16}|localhost|unix|)(:[0-9]{0,7})?(:.{0,6})?",
        "connect:unix:.{0,20}",
        "exec:/?[a-z/]{0,16}",
    ]
}

/// A valid CA certificate and key, made once.
fn pems() -> &'static (String, String) {
    static P: OnceLock<(String, String)> = OnceLock::new();
    P.get_or_init(|| {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("rcgen");
        (ck.cert.pem(), ck.key_pair.serialize_pem())
    })
}

/// PEM text: valid, truncated, bit-flipped, the wrong kind, or junk.
fn pem() -> impl Strategy<Value = String> {
    (0usize..6, any::<usize>(), any::<u8>(), any::<String>()).prop_map(|(kind, at, bits, junk)| {
        let (cert, key) = pems();
        match kind {
            0 => cert.clone(),
            1 => cert[..at % cert.len()].to_string(),
            2 => {
                let mut b = cert.clone().into_bytes();
                let i = at % b.len();
                b[i] ^= bits | 1;
                String::from_utf8_lossy(&b).into_owned()
            }
            3 => key.clone(),
            4 => format!("-----BEGIN CERTIFICATE-----\n{junk}\n-----END CERTIFICATE-----\n"),
            _ => junk,
        }
    })
}

/// A PEM field: inline base64 (or broken base64), a file (that may not exist,
/// be a directory, or escape upwards), or absent.
#[derive(Debug, Clone)]
enum Field {
    None,
    Data(String),
    BadBase64(String),
    File(String),
    MissingFile(&'static str),
}

fn field() -> impl Strategy<Value = Field> {
    prop_oneof![
        Just(Field::None),
        pem().prop_map(Field::Data),
        "[^A-Za-z0-9+/=]{1,10}".prop_map(Field::BadBase64),
        pem().prop_map(Field::File),
        prop_oneof![
            Just("/nonexistent/ca.crt"),
            Just("."),
            Just("/"),
            Just("../../../../etc/hostname"),
            Just("")
        ]
        .prop_map(Field::MissingFile),
    ]
}

fn server() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        Just("https://127.0.0.1:6443".to_string()),
        Just("http://[::1]:6444/".to_string()),
        Just("https://[::1".to_string()),
        Just("ftp://x".to_string()),
        Just("https://localhost:99999".to_string()),
        Just("".to_string()),
        "(https?://)?[a-z0-9.:\\[\\]/%@-]{0,24}",
        any::<String>(),
    ])
}

#[derive(Debug, Clone)]
struct Kube {
    server: Option<String>,
    ca: Field,
    cert: Field,
    key: Field,
    token: Option<String>,
    token_file: Option<Field>,
    userpass: Option<(String, String)>,
    insecure: bool,
    current: Option<String>,
    ctx_cluster: String,
    ctx_user: String,
    junk: Option<String>,
}

fn kube() -> impl Strategy<Value = Kube> {
    let names = || {
        prop_oneof![
            Just("default".to_string()),
            Just("".to_string()),
            Just("other".to_string()),
            "[a-z]{1,4}"
        ]
    };
    (
        (server(), field(), field(), field()),
        (
            prop::option::of(any::<String>()),
            prop::option::of(field()),
            prop::option::of((any::<String>(), any::<String>())),
            any::<bool>(),
        ),
        (
            prop::option::of(names()),
            names(),
            names(),
            prop::option::of(any::<String>()),
        ),
    )
        .prop_map(
            |(
                (server, ca, cert, key),
                (token, token_file, userpass, insecure),
                (current, ctx_cluster, ctx_user, junk),
            )| Kube {
                server,
                ca,
                cert,
                key,
                token,
                token_file,
                userpass,
                insecure,
                current,
                ctx_cluster,
                ctx_user,
                junk,
            },
        )
}

fn yq(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// Renders the kubeconfig into `dir`, writing file-backed fields beside it.
fn render(k: &Kube, dir: &std::path::Path) -> String {
    let mut n = 0;
    let mut field = |name: &str, data_key: &str, f: &Field| -> String {
        n += 1;
        match f {
            Field::None => String::new(),
            Field::Data(p) => format!(
                "    {data_key}: {}\n",
                yq(&base64::engine::general_purpose::STANDARD.encode(p))
            ),
            Field::BadBase64(s) => format!("    {data_key}: {}\n", yq(s)),
            Field::File(p) => {
                let f = dir.join(format!("f{n}.pem"));
                std::fs::write(&f, p).unwrap();
                format!("    {name}: {}\n", yq(f.to_str().unwrap()))
            }
            Field::MissingFile(p) => format!("    {name}: {}\n", yq(p)),
        }
    };
    let mut t =
        String::from("apiVersion: v1\nkind: Config\nclusters:\n- name: default\n  cluster:\n");
    if let Some(s) = &k.server {
        t.push_str(&format!("    server: {}\n", yq(s)));
    }
    t.push_str(&field(
        "certificate-authority",
        "certificate-authority-data",
        &k.ca,
    ));
    if k.insecure {
        t.push_str("    insecure-skip-tls-verify: true\n");
    }
    t.push_str("users:\n- name: default\n  user:\n");
    t.push_str(&field(
        "client-certificate",
        "client-certificate-data",
        &k.cert,
    ));
    t.push_str(&field("client-key", "client-key-data", &k.key));
    if let Some(tok) = &k.token {
        t.push_str(&format!("    token: {}\n", yq(tok)));
    }
    if let Some(tf) = &k.token_file {
        match tf {
            Field::File(p) | Field::Data(p) => {
                let f = dir.join("token");
                std::fs::write(&f, p).unwrap();
                t.push_str(&format!("    tokenFile: {}\n", yq(f.to_str().unwrap())));
            }
            Field::MissingFile(p) => t.push_str(&format!("    tokenFile: {}\n", yq(p))),
            _ => {}
        }
    }
    if let Some((u, p)) = &k.userpass {
        t.push_str(&format!(
            "    username: {}\n    password: {}\n",
            yq(u),
            yq(p)
        ));
    }
    t.push_str(&format!(
        "contexts:\n- name: default\n  context:\n    cluster: {}\n    user: {}\n",
        yq(&k.ctx_cluster),
        yq(&k.ctx_user)
    ));
    if let Some(c) = &k.current {
        t.push_str(&format!("current-context: {}\n", yq(c)));
    }
    if let Some(j) = &k.junk {
        t.push_str(j);
    }
    t
}

fn validate(kubeconfig_text: &str, dir: &std::path::Path, with_url: bool) -> Result<(), String> {
    let path = dir.join("kubeconfig.yaml");
    std::fs::write(&path, kubeconfig_text).unwrap();
    let cfg = GateConfig {
        url: if with_url {
            "https://127.0.0.1:6444/readyz".into()
        } else {
            String::new()
        },
        kubeconfig: Some(path),
        ..GateConfig::default()
    };
    cfg.validate().map(|_| ()).map_err(|e| format!("{e:#}"))
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn hold_rules_never_panic_and_refuse_in_one_line(s in hold_text()) {
        match HoldRule::parse(&s) {
            Ok(rule) => {
                // A parsed rule answers questions without panicking.
                let _ = rule.needs_connect();
                let _ = rule.matches(&shim::HoldRequest::Exec { path: "/usr/bin/kubectl".into() });
                let _ = rule.matches(&shim::HoldRequest::ConnectInet { addr: "127.0.0.1:6443".parse().unwrap() });
            }
            Err(e) => {
                let m = format!("{e:#}");
                prop_assert!(!m.contains('\n'), "more than one line: {m:?}");
            }
        }
    }

    #[test]
    fn kubeconfigs_from_a_grammar_never_panic_and_refuse_in_one_line(k in kube(), with_url in any::<bool>()) {
        let td = tempfile::tempdir().unwrap();
        let text = render(&k, td.path());
        if let Err(m) = validate(&text, td.path(), with_url) {
            prop_assert!(!m.contains('\n'), "more than one line: {m:?}\n--- kubeconfig\n{text}");
            prop_assert!(m.contains("--gate-kubeconfig") || m.contains("--gate-url"), "the error names the option: {m}");
        }
    }

    #[test]
    fn raw_text_kubeconfigs_never_panic(text in prop_oneof![any::<String>(), "[a-z: \\n\\-{}\\[\\]\"']{0,200}"]) {
        let td = tempfile::tempdir().unwrap();
        if let Err(m) = validate(&text, td.path(), false) {
            prop_assert!(!m.contains('\n'), "more than one line: {m:?}");
        }
    }
}

#[test]
fn a_valid_kubeconfig_from_the_grammar_is_accepted() {
    // The control: the grammar's well-formed end does produce accepted files,
    // so the properties above are not vacuous.
    let td = tempfile::tempdir().unwrap();
    let k = Kube {
        server: Some("https://127.0.0.1:6443".into()),
        ca: Field::Data(pems().0.clone()),
        cert: Field::Data(pems().0.clone()),
        key: Field::Data(pems().1.clone()),
        token: None,
        token_file: None,
        userpass: None,
        insecure: false,
        current: Some("default".into()),
        ctx_cluster: "default".into(),
        ctx_user: "default".into(),
        junk: None,
    };
    let text = render(&k, td.path());
    validate(&text, td.path(), false).unwrap_or_else(|e| panic!("{e}\n{text}"));
}
