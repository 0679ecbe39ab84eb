//! `k3shim timeline --html`: one self-contained page with an SVG chart,
//! checked in a real headless browser (Debian's chromium). Without chromium
//! the test is skipped on a developer's machine and fails under CI=true.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::fixture_run;
use launcher::timeline_report;

fn chromium() -> Option<PathBuf> {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::var("PATH")
            .unwrap_or_default()
            .split(':')
            .chain(["/usr/bin"])
        {
            let p = Path::new(dir).join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Runs headless chromium with `args` + the page; returns stdout.
fn run_chromium(bin: &Path, profile: &Path, args: &[&str], page: &Path) -> String {
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out, &mut s).unwrap();
        s
    });
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "chromium {args:?} failed: {st}");
            break;
        }
        if t0.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            panic!("chromium {args:?} did not finish in 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().unwrap()
}

fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

#[test]
fn the_html_report_renders_its_svg_chart_in_a_real_browser() {
    let Some(bin) = chromium() else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("chromium is missing: install Debian's chromium (apt-get install -y chromium)");
        }
        eprintln!("SKIPPED: chromium not installed (apt-get install -y chromium); this fails under CI=true");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = fixture_run(1.0);
    let b = fixture_run(1.4);

    // Self-contained: nothing is fetched from anywhere.
    let page = timeline_report::html(&a, None);
    for forbidden in ["<script src", "<link ", "@import", "url(http", "src=\"http"] {
        assert!(
            !page.contains(forbidden),
            "the page refers to something outside it: {forbidden}"
        );
    }
    let single = dir.path().join("run.html");
    std::fs::write(&single, &page).unwrap();
    let cmp = dir.path().join("compare.html");
    std::fs::write(&cmp, timeline_report::html(&a, Some(&b))).unwrap();

    let profile = dir.path().join("profile");
    let dom = run_chromium(&bin, &profile, &["--dump-dom"], &single);
    // The browser parsed the SVG into elements: one chart, periods as bars,
    // every probe, the holds, the hooks, the redirects, the milestones.
    assert_eq!(count(&dom, "<svg"), 1, "{dom}");
    assert_eq!(count(&dom, "class=\"period\""), 10, "one bar per period");
    assert_eq!(count(&dom, "class=\"milestone\""), 11);
    assert_eq!(count(&dom, "class=\"probe probe-err\""), 4);
    assert_eq!(count(&dom, "class=\"probe probe-bad\""), 8);
    assert_eq!(count(&dom, "class=\"probe probe-ok\""), 1);
    assert_eq!(count(&dom, "class=\"hold\""), 3);
    assert_eq!(count(&dom, "class=\"hook\""), 2);
    assert_eq!(count(&dom, "class=\"redirects\""), 1);
    assert_eq!(count(&dom, "class=\"redirect\""), 8);
    assert_eq!(count(&dom, "class=\"write\""), 3);
    assert!(
        dom.contains(
            "<title>Period 4: log: kubelet-start → gate open (attempt 13): 5.051 s</title>"
        ),
        "tooltips name the period"
    );
    assert!(dom.contains("<table>") && dom.contains("Milestones and periods"));

    let dom = run_chromium(&bin, &profile, &["--dump-dom"], &cmp);
    assert_eq!(count(&dom, "<svg"), 2, "both runs charted");
    assert!(dom.contains("Runs compared (A, B)"));

    // A screenshot to look at (kept in the temp dir's parent for a human: /tmp).
    for (page, png) in [
        (&single, "k3shim-timeline.png"),
        (&cmp, "k3shim-timeline-compare.png"),
    ] {
        let shot = std::env::temp_dir().join(png);
        let _ = std::fs::remove_file(&shot);
        run_chromium(
            &bin,
            &profile,
            &[
                &format!("--screenshot={}", shot.display()),
                "--window-size=1200,900",
            ],
            page,
        );
        let len = std::fs::metadata(&shot).expect("screenshot written").len();
        assert!(len > 20_000, "a screenshot with content: {len} bytes");
    }
}
