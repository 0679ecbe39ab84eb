//! `k3shim timeline --html`: one self-contained page with an SVG chart,
//! checked in a real headless browser (Debian's chromium) at 1400 and 800 px
//! wide: what the browser laid out (getBoundingClientRect, through a script
//! added to a copy of the page) must have no two labels overlapping, no text
//! cut off at the chart's edge, and one number per milestone everywhere.
//! Without chromium the test is skipped on a developer's machine and fails
//! under CI=true.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{fixture_crowded, fixture_run};
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

fn need_chromium() -> Option<PathBuf> {
    let bin = chromium();
    if bin.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("chromium is missing: install Debian's chromium (apt-get install -y chromium)");
        }
        eprintln!("SKIPPED: chromium not installed (apt-get install -y chromium); this fails under CI=true");
    }
    bin
}

/// The part of a dumped DOM that is the wide chart (the page holds a wide and a narrow one).
fn wide_chart(dom: &str) -> &str {
    let start = dom.find("class=\"chart wide\"").expect("a wide chart");
    let end = dom[start..].find("</svg>").unwrap() + start;
    &dom[start..end]
}

#[test]
fn the_html_report_renders_its_svg_chart_in_a_real_browser() {
    let Some(bin) = need_chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let a = fixture_run(1.0);
    let b = fixture_run(1.4);

    // Self-contained: nothing is fetched from anywhere, and no script.
    let page = timeline_report::html(&a, None);
    for forbidden in [
        "<script",
        "<link ",
        "@import",
        "url(",
        "src=\"http",
        "href=\"http",
    ] {
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
    // The browser parsed the SVG into elements: a wide and a narrow chart,
    // periods as bars, every probe, the holds, the hooks, the redirects,
    // the writes, the milestones.
    assert_eq!(count(&dom, "class=\"chart wide\""), 1, "{dom}");
    assert_eq!(count(&dom, "class=\"chart narrow\""), 1);
    let w = wide_chart(&dom);
    assert_eq!(count(w, "class=\"period\""), 10, "one bar per period");
    assert_eq!(count(w, "class=\"ms-line\""), 11);
    assert_eq!(count(w, "class=\"probe probe-err\""), 4);
    assert_eq!(count(w, "class=\"probe probe-bad\""), 8);
    assert_eq!(count(w, "class=\"probe probe-ok\""), 1);
    assert_eq!(count(w, "class=\"hold\""), 3);
    assert_eq!(count(w, "class=\"hook\""), 2);
    assert_eq!(count(w, "class=\"redirects\""), 1);
    assert_eq!(count(w, "class=\"redirect\""), 8);
    assert_eq!(count(w, "class=\"write write-ok\""), 2);
    assert_eq!(count(w, "class=\"write write-failed\""), 1);
    assert!(
        w.contains("<title>3 log: kubelet-start → 4 gate open (attempt 13): 5.051 s</title>"),
        "tooltips name the period"
    );
    // The legend shows every kind of mark the chart draws, writes included.
    for item in [
        "write accepted",
        "write refused",
        "probe error",
        "held, never released",
        "hook killed at exit",
        "redirected paths",
    ] {
        assert!(dom.contains(item), "legend lacks {item}");
    }
    // The command is collapsed, shell-quoted.
    assert!(
        dom.contains("<details class=\"cmd\"><summary>")
            && dom.contains("--hook 'kubectl apply -f /srv/manifests'"),
        "{dom}"
    );
    assert!(dom.contains("Milestones and periods") && dom.contains("<table"));

    let dom = run_chromium(&bin, &profile, &["--dump-dom"], &cmp);
    assert_eq!(
        count(&dom, "class=\"chart wide\""),
        1,
        "both runs on one chart"
    );
    assert!(dom.contains("periods A") && dom.contains("periods B"));
    assert!(dom.contains("Milestones, A and B") && dom.contains("Δ t (s)"));

    // Screenshots to look at (kept in the temp dir's parent for a human: /tmp).
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
                "--window-size=1400,1600",
            ],
            page,
        );
        let len = std::fs::metadata(&shot).expect("screenshot written").len();
        assert!(len > 20_000, "a screenshot with content: {len} bytes");
    }
}

/// Measures the laid-out page in the browser: overlapping labels and
/// badges in the visible chart, text reaching past the chart's edge, and
/// which number each milestone shows where.
const CHECK: &str = r#"<script>
(function(){
  var r={overlaps:[],clipped:[],numbers:{},ranges:[],badges:0,texts:0,width:window.innerWidth};
  function vis(e){var b=e.getBoundingClientRect();return b.width>0&&b.height>0?b:null;}
  function hit(a,b){return a.left<b.right-0.5&&b.left<a.right-0.5&&a.top<b.bottom-0.5&&b.top<a.bottom-0.5;}
  document.querySelectorAll('svg.chart').forEach(function(svg){
    var sb=vis(svg);if(!sb)return;
    var boxes=[];
    svg.querySelectorAll('.ms-pill').forEach(function(el){var b=vis(el);if(b){boxes.push(['badge '+el.parentNode.textContent,b]);r.badges++;}});
    svg.querySelectorAll('text').forEach(function(el){
      var b=vis(el);if(!b)return;r.texts++;
      if(b.left<sb.left-0.5||b.right>sb.right+0.5||b.top<sb.top-0.5||b.bottom>sb.bottom+0.5)r.clipped.push(el.textContent);
      var c=el.getAttribute('class')||'';
      if(c!='ms-num'&&c!='ms-range')boxes.push([c+' '+el.textContent,b]);
    });
    for(var i=0;i<boxes.length;i++)for(var j=i+1;j<boxes.length;j++)
      if(hit(boxes[i][1],boxes[j][1]))r.overlaps.push(boxes[i][0]+' / '+boxes[j][0]);
  });
  document.querySelectorAll('.ms-num[data-ms]').forEach(function(el){
    if(!vis(el))return;var k=el.getAttribute('data-ms');(r.numbers[k]=r.numbers[k]||[]).push(el.textContent);});
  document.querySelectorAll('.ms-range').forEach(function(el){
    if(!vis(el))return;r.ranges.push([el.getAttribute('data-ms-from'),el.getAttribute('data-ms-to'),el.textContent]);});
  var pre=document.createElement('pre');pre.id='k3shim-check';pre.textContent=JSON.stringify(r);document.body.appendChild(pre);
})();
</script></body>"#;

fn layout_check(bin: &Path, dir: &Path, name: &str, page: &str, width: u32) -> serde_json::Value {
    let p = dir.join(format!("{name}-{width}.html"));
    std::fs::write(&p, page.replace("</body>", CHECK)).unwrap();
    let dom = run_chromium(
        bin,
        &dir.join(format!("profile-{name}-{width}")),
        &["--dump-dom", &format!("--window-size={width},2000")],
        &p,
    );
    let json = dom
        .split("<pre id=\"k3shim-check\">")
        .nth(1)
        .and_then(|s| s.split("</pre>").next())
        .unwrap_or_else(|| panic!("{name} at {width} px: the check did not run:\n{dom}"))
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

/// The milestone number the text table gives `label` (first column).
fn text_number(table: &str, label: &str) -> String {
    table
        .lines()
        .find(|l| l.contains(label))
        .and_then(|l| l.split('|').nth(1))
        .map(|c| c.trim().to_string())
        .unwrap_or_else(|| panic!("{label} not in\n{table}"))
}

#[test]
fn milestone_labels_never_overlap_and_each_milestone_has_one_number_everywhere() {
    let Some(bin) = need_chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    // 14 and 60 milestones; for --compare, B has a milestone A lacks (so
    // each run's own order differs from the merged numbering), is slower,
    // and its gate timed out.
    let mut pages = Vec::new();
    for (extra, name) in [(3usize, "m14"), (49, "m60")] {
        let a = fixture_crowded(1.0, extra);
        let mut b = fixture_crowded(1.3, extra);
        b.push(serde_json::json!({"t_ms": 5, "kind": "log_match", "name": "only-in-b", "line": "x", "stream": "stdout"}));
        b.sort_by_key(|e| e["t_ms"].as_u64().unwrap());
        let text_a = timeline_report::table(&a);
        let text_ab = timeline_report::compare(&a, &b);
        pages.push((
            name.to_string(),
            timeline_report::html(&a, None),
            text_a,
            11 + extra,
        ));
        pages.push((
            format!("{name}-compare"),
            timeline_report::html(&a, Some(&b)),
            text_ab,
            12 + extra,
        ));
    }
    for (name, page, text, milestones) in &pages {
        for width in [1400, 800] {
            let r = layout_check(&bin, dir.path(), name, page, width);
            let what = format!("{name} at {width} px");
            assert!(
                r["badges"].as_u64().unwrap() > 0,
                "{what}: no badge measured: {r}"
            );
            assert_eq!(
                r["overlaps"],
                serde_json::json!([]),
                "{what}: labels overlap"
            );
            assert_eq!(
                r["clipped"],
                serde_json::json!([]),
                "{what}: text cut off at the chart's edge"
            );
            let numbers = r["numbers"].as_object().unwrap();
            assert_eq!(
                numbers.len(),
                *milestones,
                "{what}: every milestone is numbered: {r}"
            );
            let mut of_key = std::collections::HashMap::new();
            for (k, v) in numbers {
                let shown: std::collections::BTreeSet<&str> = v
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_str().unwrap())
                    .collect();
                assert_eq!(shown.len(), 1, "{what}: milestone {k} shows as {shown:?}");
                of_key.insert(k.clone(), shown.into_iter().next().unwrap().to_string());
            }
            // A range badge runs from its first member's number to its last's.
            for g in r["ranges"].as_array().unwrap() {
                let (from, to) = (g[0].as_str().unwrap(), g[1].as_str().unwrap());
                assert_eq!(
                    g[2].as_str().unwrap(),
                    format!("{}–{}", of_key[from], of_key[to]),
                    "{what}: range badge {g}"
                );
            }
            // The page numbers milestones as `k3shim timeline` (and --compare) does.
            assert_eq!(of_key["gate"], text_number(text, "gate "), "{what}");
            assert_eq!(of_key["exit"], text_number(text, "exit 143"), "{what}");
            assert_eq!(
                of_key["log:step-2"],
                text_number(text, "log: step-2 "),
                "{what}"
            );
        }
    }
}

/// A run with 200,000 redirects and 20,000 writes: the page is aggregated per
/// pixel column (a cumulative step line, a density strip, one write marker
/// per column and result), so it is about the size of a small run's.
#[test]
fn a_run_with_200k_redirects_makes_a_page_of_bounded_size() {
    use serde_json::json;
    let base = fixture_run(1.0);
    let small = timeline_report::html(&base, None);
    let mut big = base.clone();
    let end = base.last().unwrap()["t_ms"].as_u64().unwrap();
    for i in 0..200_000u64 {
        big.push(json!({"t_ms": 1 + i * end / 200_000, "kind": "redirect", "pid": 9, "tid": 9,
            "syscall": "openat", "path": format!("/proc/sys/net/ipv4/conf/veth{i}/rp_filter"), "backing": "/s/x"}));
    }
    for i in 0..20_000u64 {
        big.push(
            json!({"t_ms": 1 + i * end / 20_000, "kind": "write", "pid": 9, "comm": "cni",
            "path": "/proc/sys/net/ipv4/ip_forward", "old": "0", "new": "1",
            "result": if i % 2 == 0 { "ok" } else { "EINVAL" }}),
        );
    }
    big.sort_by_key(|e| e["t_ms"].as_u64().unwrap());
    let t0 = Instant::now();
    let page = timeline_report::html(&big, None);
    let took = t0.elapsed();
    assert!(
        page.len() < small.len() + 1_000_000,
        "{} bytes for 220k events against {} for the fixture",
        page.len(),
        small.len()
    );
    // Two layouts (1200 and 740 px wide): at most one bar per pixel column each.
    let bars = count(&page, r#"<rect class="redirect""#);
    assert!(bars > 100 && bars <= 1200 + 740, "{bars} redirect bars");
    let markers = count(&page, r#"<path class="write "#);
    assert!(markers <= 2 * (1200 + 740), "{markers} write markers");
    let redirects = count(&big_text(&big), r#""kind":"redirect""#);
    let writes = count(&big_text(&big), r#""kind":"write""#);
    assert!(
        page.contains(&format!(">{redirects} paths"))
            && page.contains(&format!("{writes} writes<")),
        "every event is counted in the lane's label"
    );
    assert!(
        page.contains(" redirects, "),
        "a column's title says how many"
    );
    eprintln!("220k events: {} bytes in {took:?}", page.len());
}

fn big_text(events: &[serde_json::Value]) -> String {
    events.iter().map(|e| e.to_string()).collect()
}
