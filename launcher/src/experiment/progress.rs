//! The progress display while a step is watched: a one-line spinner with the
//! elapsed time, the watch limit and the last milestone when stderr is a
//! terminal; plain lines (one per milestone) otherwise.

use std::io::Write;
use std::time::Instant;

pub struct Progress {
    tty: bool,
    start: Instant,
    label: String,
    watch: f64,
    last: String,
    tick: usize,
    lines: usize,
    drawn: bool,
}

const SPIN: &[char] = &['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

impl Progress {
    pub fn new(label: &str, watch: f64) -> Progress {
        // SAFETY: isatty only inspects the descriptor.
        let tty =
            unsafe { libc::isatty(2) } == 1 && std::env::var_os("K3SHIM_NO_PROGRESS").is_none();
        Progress {
            tty,
            start: Instant::now(),
            label: label.to_string(),
            watch,
            last: "starting".into(),
            tick: 0,
            lines: 0,
            drawn: false,
        }
    }

    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn clear(&mut self) {
        if self.tty && self.drawn {
            eprint!("\r\x1b[2K");
            self.drawn = false;
        }
    }

    /// A line of the target's output was seen.
    pub fn line(&mut self) {
        self.lines += 1;
    }

    /// A milestone appeared: always printed as a line of its own.
    pub fn milestone(&mut self, name: &str, t: f64) {
        self.clear();
        eprintln!("    {t:7.2}s  {name}");
        self.last = name.to_string();
        self.draw();
    }

    pub fn note(&mut self, msg: &str) {
        self.clear();
        eprintln!("    {:7.2}s  {msg}", self.elapsed());
        self.draw();
    }

    pub fn draw(&mut self) {
        if !self.tty {
            return;
        }
        self.tick += 1;
        let e = self.elapsed();
        let frac = (e / self.watch).clamp(0.0, 1.0);
        let width = 20;
        let fill = (frac * width as f64) as usize;
        let bar: String = "█".repeat(fill) + &"░".repeat(width - fill);
        eprint!(
            "\r\x1b[2K  {} {} {bar} {e:6.1}s / {:.0}s  last: {}  ({} lines)",
            SPIN[self.tick % SPIN.len()],
            self.label,
            self.watch,
            self.last,
            self.lines
        );
        let _ = std::io::stderr().flush();
        self.drawn = true;
    }

    pub fn finish(&mut self) {
        self.clear();
    }
}
