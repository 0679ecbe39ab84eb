//! Value rules: how a write to an entry is parsed, validated and normalized.
//!
//! Why: procfs rejects a bad value with EINVAL in write(2) and keeps the old
//! one; components (kubelet, CNI plugins) rely on that, so the fake tree must
//! validate exactly where the kernel would, and store the value the way the
//! kernel prints it (decimal, tab-separated vectors).
//!
//! The numeric rules follow Linux's kernel/sysctl.c (do_proc_dointvec,
//! __do_proc_doulongvec_minmax, proc_get_long, proc_do_large_bitmap), checked
//! against the kernel by writing to net.* entries in a private network
//! namespace: leading white space is skipped, each number is an optional '-'
//! then C's strtoul with base 0 (`0x1f`, `010`) of at most 20 characters, and
//! must be followed by a space, tab or newline or the end; as many numbers as
//! the entry holds are taken and the rest of the write is left unread (write(2)
//! then returns fewer bytes than it was given: "1 2" stores 1 and returns 2,
//! as Linux does). With sysctl_writes_strict=1 (Linux's default) a write at a
//! non-zero file position to a numeric entry is ignored but reports success.

use std::fmt;

/// A value rule, written in profiles as a short string:
/// `integer`, `range MIN MAX`, `urange MIN MAX`, `ulong MIN MAX`,
/// `ints N [MIN MAX] [ascending]`, `bitmap N`, `enum A B ...`, `text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// One C `int` (proc_dointvec): -2147483648..=2147483647.
    Integer,
    /// One signed integer within MIN..=MAX (proc_dointvec_minmax, the
    /// jiffies variants); "-0" is 0.
    Range { min: i64, max: i64 },
    /// One unsigned integer within MIN..=MAX as proc_dou8vec_minmax and
    /// proc_douintvec_minmax take it: any '-' is EINVAL, a write is taken
    /// whole ("1 2" stores 1 and returns 3) and leaves the file position
    /// where it was, so the next write on the fd is parsed again.
    URange { min: u64, max: u64 },
    /// One unsigned long within MIN..=MAX (proc_doulongvec_minmax): parsed
    /// like an integer vector, any '-' is EINVAL.
    ULong { min: u64, max: u64 },
    /// Up to `count` integers on one line, each within MIN..=MAX (e.g.
    /// ip_local_port_range); missing trailing ones keep their old value;
    /// `ascending`: each at least the one before (else EINVAL).
    Ints {
        count: usize,
        min: i64,
        max: i64,
        ascending: bool,
    },
    /// A set of numbers below `size` (proc_do_large_bitmap, e.g.
    /// ip_local_reserved_ports): "8080,30000-32767", printed as ranges.
    Bitmap { size: u64 },
    /// One word out of a fixed set.
    Enum(Vec<String>),
    /// Free text (proc_dostring): everything up to the first newline.
    Text,
}

/// Names accepted as the first word of a rule, for error messages.
pub const RULE_NAMES: &str = "integer, range, urange, ulong, ints, bitmap, enum, text";

/// What one write(2) to an entry does, as the kernel's handler decides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The value to store (normalized, without trailing newline); None when
    /// the write changes nothing (empty, or ignored at a non-zero position).
    pub value: Option<String>,
    /// What write(2) returns: the bytes the handler took.
    pub consumed: usize,
}

/// Linux's isspace() (proc_skip_spaces).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// What may follow a number in an integer vector (proc_wspace_sep).
const WSPACE_SEP: &[u8] = b" \t\n";
/// The kernel caps one write at a page less its terminating NUL.
const MAX_WRITE: usize = 4095;
/// proc_get_long's TMPBUFLEN - 1: a number this long (or longer) is EINVAL.
const MAX_DIGITS: usize = 21;

/// A read position in a write's bytes, with what is left to parse.
struct Cursor<'a> {
    buf: &'a [u8],
    p: usize,
    left: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Cursor {
            buf,
            p: 0,
            left: buf.len().min(MAX_WRITE),
        }
    }

    fn skip_spaces(&mut self) {
        while self.left > 0 && is_space(self.buf[self.p]) {
            self.p += 1;
            self.left -= 1;
        }
    }

    fn skip_char(&mut self, c: u8) {
        while self.left > 0 && self.buf[self.p] == c {
            self.p += 1;
            self.left -= 1;
        }
    }

    fn skip_one(&mut self) {
        if self.left > 0 {
            self.p += 1;
            self.left -= 1;
        }
    }

    /// proc_get_long: an optional '-', then strtoul(base 0), followed by one
    /// of `trailers` or the end. Returns (negative, magnitude, trailer).
    fn get_long(&mut self, trailers: &[u8]) -> Result<(bool, u64, Option<u8>), i32> {
        if self.left == 0 {
            return Err(libc::EINVAL);
        }
        let len = self.left.min(MAX_DIGITS);
        let tmp = &self.buf[self.p..self.p + len];
        let at = |i: usize| tmp.get(i).copied().unwrap_or(0);
        let neg = at(0) == b'-' && self.left > 1;
        let mut i = usize::from(neg);
        if !at(i).is_ascii_digit() {
            return Err(libc::EINVAL);
        }
        // _parse_integer_fixup_radix
        let base: u64 = if at(i) == b'0' {
            if at(i + 1).eq_ignore_ascii_case(&b'x') && at(i + 2).is_ascii_hexdigit() {
                i += 2;
                16
            } else {
                8
            }
        } else {
            10
        };
        let mut val: u64 = 0;
        while i < len {
            let d = match (at(i) as char).to_digit(16) {
                Some(d) if (d as u64) < base => d as u64,
                _ => break,
            };
            val = val
                .checked_mul(base)
                .and_then(|v| v.checked_add(d))
                .ok_or(libc::EINVAL)?;
            i += 1;
        }
        if i == MAX_DIGITS {
            return Err(libc::EINVAL);
        }
        let trailer = (i < self.left).then(|| at(i));
        if let Some(t) = trailer {
            if !trailers.contains(&t) {
                return Err(libc::EINVAL);
            }
        }
        self.p += i;
        self.left -= i;
        Ok((neg, val, trailer))
    }
}

/// A signed value within min..=max ("-0" is 0), as do_proc_int_conv_minmax.
fn signed(neg: bool, mag: u64, min: i64, max: i64) -> Result<i64, i32> {
    let v = if neg { -(mag as i128) } else { mag as i128 };
    if v < min as i128 || v > max as i128 {
        return Err(libc::EINVAL);
    }
    Ok(v as i64)
}

/// The integer-vector write of do_proc_dointvec: up to `count` numbers, each
/// converted by `conv`. Returns the values and the bytes taken.
fn int_vector<T>(
    data: &[u8],
    count: usize,
    conv: impl Fn(bool, u64) -> Result<T, i32>,
) -> Result<(Vec<T>, usize), i32> {
    let mut c = Cursor::new(data);
    let mut vals = Vec::new();
    while c.left > 0 && vals.len() < count {
        c.skip_spaces();
        if c.left == 0 {
            break;
        }
        let (neg, mag, _) = c.get_long(WSPACE_SEP)?;
        vals.push(conv(neg, mag)?);
    }
    if c.left > 0 {
        c.skip_spaces();
    }
    if vals.is_empty() {
        return Err(libc::EINVAL);
    }
    Ok((vals, data.len() - c.left))
}

/// proc_do_large_bitmap's write: "a,b-c,..." below `size`; returns the set
/// (sorted) and the bytes taken.
fn bitmap_write(data: &[u8], size: u64) -> Result<(Vec<(u64, u64)>, usize), i32> {
    let mut c = Cursor::new(data);
    // The kernel's own bound for one pass (a longer write is taken in pages).
    let skipped = data.len() - c.left;
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    c.skip_char(b'\n');
    // The kernel reads the trailer into a variable that keeps its last value.
    let mut last: Option<u8> = None;
    while c.left > 0 {
        let saved = (c.p, c.left);
        let got = c.get_long(b"-,\n");
        if c.left <= 1 && skipped > 0 {
            // A page boundary cut the number: the caller writes it again.
            (c.p, c.left) = saved;
            break;
        }
        let (neg, a, t) = got?;
        last = t.or(last);
        if a >= size || neg {
            return Err(libc::EINVAL);
        }
        let mut b = a;
        c.skip_one();
        if last == Some(b'-') {
            let got = c.get_long(b",\n");
            if c.left == 0 && skipped > 0 {
                (c.p, c.left) = saved;
                break;
            }
            let (neg, v, t) = got?;
            last = t.or(last);
            if v >= size || neg || a > v {
                return Err(libc::EINVAL);
            }
            b = v;
            c.skip_one();
        }
        ranges.push((a, b));
        c.skip_char(b'\n');
    }
    Ok((ranges, data.len() - c.left - skipped))
}

/// Merges ranges into the kernel's printed form: sorted, runs joined.
fn bitmap_text(mut ranges: Vec<(u64, u64)>) -> String {
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (a, b) in ranges {
        match merged.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    merged
        .iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses a stored bitmap ("1-3,5"); None if it is not one.
fn bitmap_ranges(text: &str, size: u64) -> Option<Vec<(u64, u64)>> {
    if text.is_empty() {
        return Some(Vec::new());
    }
    let (ranges, used) = bitmap_write(text.as_bytes(), size).ok()?;
    (used == text.len()).then_some(ranges)
}

impl Rule {
    /// Parses the profile syntax; the error is a short reason (no file/line:
    /// the profile loader adds those).
    pub fn parse(s: &str) -> Result<Rule, String> {
        let mut words = s.split_whitespace();
        let kind = words.next().unwrap_or("");
        let rest: Vec<&str> = words.collect();
        let int = |w: &str| -> Result<i64, String> {
            w.parse::<i64>()
                .map_err(|_| format!("value rule \"{s}\": {w:?} is not an integer"))
        };
        let uint = |w: &str| -> Result<u64, String> {
            w.parse::<u64>()
                .map_err(|_| format!("value rule \"{s}\": {w:?} is not an unsigned integer"))
        };
        let above = || format!("value rule \"{s}\": MIN is above MAX");
        match kind {
            "integer" | "int" if rest.is_empty() => Ok(Rule::Integer),
            "range" if rest.len() == 2 => {
                let (min, max) = (int(rest[0])?, int(rest[1])?);
                if min > max {
                    return Err(above());
                }
                Ok(Rule::Range { min, max })
            }
            "urange" | "ulong" if rest.len() == 2 => {
                let (min, max) = (uint(rest[0])?, uint(rest[1])?);
                if min > max {
                    return Err(above());
                }
                Ok(if kind == "urange" {
                    Rule::URange { min, max }
                } else {
                    Rule::ULong { min, max }
                })
            }
            "ints" if (1..=4).contains(&rest.len()) => {
                let count = rest[0]
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=64).contains(n))
                    .ok_or_else(|| {
                        format!("value rule \"{s}\": count must be an integer from 1 to 64")
                    })?;
                let ascending = rest.last() == Some(&"ascending");
                let bounds = &rest[1..rest.len() - usize::from(ascending)];
                let (min, max) = match bounds {
                    [] => (i32::MIN as i64, i32::MAX as i64),
                    [a, b] => (int(a)?, int(b)?),
                    _ => return Err(format!("value rule \"{s}\": expected ints N [MIN MAX] [ascending]")),
                };
                if min > max {
                    return Err(above());
                }
                Ok(Rule::Ints {
                    count,
                    min,
                    max,
                    ascending,
                })
            }
            "bitmap" if rest.len() == 1 => {
                let size = uint(rest[0])?;
                if size == 0 || size > 1 << 20 {
                    return Err(format!("value rule \"{s}\": the size must be from 1 to 1048576"));
                }
                Ok(Rule::Bitmap { size })
            }
            "enum" if !rest.is_empty() => Ok(Rule::Enum(rest.iter().map(|w| w.to_string()).collect())),
            "text" if rest.is_empty() => Ok(Rule::Text),
            "integer" | "int" | "range" | "urange" | "ulong" | "ints" | "bitmap" | "enum" | "text" => Err(format!(
                "value rule \"{s}\" has the wrong arguments (integer | range MIN MAX | urange MIN MAX | ulong MIN MAX | ints N [MIN MAX] [ascending] | bitmap N | enum A B.. | text)"
            )),
            _ => Err(format!("value rule \"{kind}\" unknown (expected {RULE_NAMES})")),
        }
    }

    /// Guesses a rule for an entry that only exists in the real tree, from
    /// its current value: the kernel rejects non-numbers on numeric entries.
    pub fn infer(value: &str) -> Rule {
        let toks: Vec<&str> = value.split_whitespace().collect();
        if !toks.is_empty() && toks.iter().all(|t| t.parse::<i64>().is_ok()) {
            if toks.len() == 1 {
                let v: i64 = toks[0].parse().unwrap_or(0);
                if v >= i32::MIN as i64 && v <= i32::MAX as i64 {
                    return Rule::Integer;
                }
                return Rule::Range {
                    min: i64::MIN,
                    max: i64::MAX,
                };
            }
            if toks.len() <= 64 {
                return Rule::Ints {
                    count: toks.len(),
                    min: i64::MIN,
                    max: i64::MAX,
                    ascending: false,
                };
            }
        }
        Rule::Text
    }

    /// One write(2) of `data` at file position `pos` to an entry holding
    /// `old`, as the kernel's handler does it (see the module comment).
    /// Returns what to store and what write(2) returns, or the errno (the
    /// old value is kept).
    pub fn write(&self, data: &[u8], old: &str, pos: u64) -> Result<Written, i32> {
        let unchanged = |consumed| {
            Ok(Written {
                value: None,
                consumed,
            })
        };
        if data.is_empty() {
            return unchanged(0);
        }
        let set = |value: String, consumed: usize| {
            Ok(Written {
                value: Some(value),
                consumed,
            })
        };
        match self {
            Rule::Text => {
                // proc_dostring, strict: a write continues the value at its
                // position (past the end: ignored); it stops at a newline or NUL.
                let pos = usize::try_from(pos).unwrap_or(usize::MAX);
                if pos > old.len() || !old.is_char_boundary(pos) {
                    return unchanged(data.len());
                }
                let end = data
                    .iter()
                    .position(|b| *b == b'\n' || *b == 0)
                    .unwrap_or(data.len());
                let chunk = std::str::from_utf8(&data[..end]).map_err(|_| libc::EINVAL)?;
                set(format!("{}{chunk}", &old[..pos]), data.len())
            }
            Rule::URange { min, max } => {
                // do_proc_douintvec_w: one number; the whole write is taken and
                // the position is not moved (so `pos` is never non-zero here).
                let (v, _) = int_vector(data, 1, |neg, mag| {
                    if neg || mag < *min || mag > *max {
                        Err(libc::EINVAL)
                    } else {
                        Ok(mag)
                    }
                })?;
                set(v[0].to_string(), data.len())
            }
            _ if pos > 0 && !matches!(self, Rule::Bitmap { .. }) => unchanged(data.len()),
            Rule::Enum(words) => {
                let text = std::str::from_utf8(data).map_err(|_| libc::EINVAL)?;
                let v = text.trim();
                if words.iter().any(|w| w == v) {
                    set(v.to_string(), data.len())
                } else {
                    Err(libc::EINVAL)
                }
            }
            Rule::Integer => {
                let (v, n) = int_vector(data, 1, |neg, mag| {
                    signed(neg, mag, i32::MIN as i64, i32::MAX as i64)
                })?;
                set(v[0].to_string(), n)
            }
            Rule::Range { min, max } => {
                let (v, n) = int_vector(data, 1, |neg, mag| signed(neg, mag, *min, *max))?;
                set(v[0].to_string(), n)
            }
            Rule::ULong { min, max } => {
                let (v, n) = int_vector(data, 1, |neg, mag| {
                    if neg || mag < *min || mag > *max {
                        Err(libc::EINVAL)
                    } else {
                        Ok(mag)
                    }
                })?;
                set(v[0].to_string(), n)
            }
            Rule::Ints {
                count,
                min,
                max,
                ascending,
            } => {
                let (vals, n) = int_vector(data, *count, |neg, mag| signed(neg, mag, *min, *max))?;
                // The handler starts from the current values: a short write
                // changes only the leading ones.
                let olds: Vec<&str> = old.split_whitespace().collect();
                let mut out: Vec<i64> = Vec::with_capacity(*count);
                for i in 0..*count {
                    out.push(match vals.get(i) {
                        Some(v) => *v,
                        None => olds.get(i).and_then(|o| o.parse().ok()).unwrap_or(0),
                    });
                }
                if *ascending && out.windows(2).any(|w| w[1] < w[0]) {
                    return Err(libc::EINVAL);
                }
                let text: Vec<String> = out.iter().map(i64::to_string).collect();
                set(text.join("\t"), n)
            }
            Rule::Bitmap { size } => {
                let (mut ranges, n) = bitmap_write(data, *size)?;
                if pos > 0 {
                    // At a non-zero position the kernel adds to the set.
                    ranges.extend(bitmap_ranges(old, *size).unwrap_or_default());
                }
                set(bitmap_text(ranges), n)
            }
        }
    }

    /// The value a whole write of `data` at position 0 stores (the old one
    /// if it changes nothing), or the errno.
    pub fn apply(&self, data: &[u8], old: &str) -> Result<String, i32> {
        let w = self.write(data, old, 0)?;
        Ok(w.value.unwrap_or_else(|| old.to_string()))
    }

    /// The value `value` stands for when all of it must be used (a profile
    /// default, `k3shim fakefs set`): what a write of `value` and a newline
    /// stores, if that write takes every byte; else EINVAL ("1 2" for one
    /// integer, which the kernel would cut to "1").
    pub fn normalize(&self, value: &str) -> Result<String, i32> {
        let data = format!("{value}\n");
        let w = self.write(data.as_bytes(), "", 0)?;
        if w.consumed != data.len() {
            return Err(libc::EINVAL);
        }
        Ok(w.value.unwrap_or_default())
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Integer => write!(f, "integer"),
            Rule::Range { min, max } => write!(f, "range {min} {max}"),
            Rule::URange { min, max } => write!(f, "urange {min} {max}"),
            Rule::ULong { min, max } => write!(f, "ulong {min} {max}"),
            Rule::Ints {
                count,
                min,
                max,
                ascending,
            } => {
                write!(f, "ints {count}")?;
                if *min != i32::MIN as i64 || *max != i32::MAX as i64 {
                    write!(f, " {min} {max}")?;
                }
                if *ascending {
                    write!(f, " ascending")?;
                }
                Ok(())
            }
            Rule::Bitmap { size } => write!(f, "bitmap {size}"),
            Rule::Enum(w) => write!(f, "enum {}", w.join(" ")),
            Rule::Text => write!(f, "text"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (written, write(2)'s result, value afterwards) for one write at
    /// position 0 to an entry holding `old`.
    fn outcome(r: &Rule, data: &[u8], old: &str) -> (Result<usize, i32>, String) {
        match r.write(data, old, 0) {
            Ok(w) => (Ok(w.consumed), w.value.unwrap_or_else(|| old.to_string())),
            Err(e) => (Err(e), old.to_string()),
        }
    }

    /// Measured on Linux 6.18 by writing to net.core.somaxconn (proc_dointvec_minmax,
    /// 0..INT_MAX) in a private network namespace, one write each, starting at 5.
    #[test]
    fn single_integer_writes_parse_as_linux_does() {
        let r = Rule::parse("range 0 2147483647").unwrap();
        let ok = |n: usize, v: &str| (Ok(n), v.to_string());
        let einval = (Err(libc::EINVAL), "5".to_string());
        for (data, want) in [
            (&b"1"[..], ok(1, "1")),
            (b" 7 ", ok(3, "7")),
            (b"\t8", ok(2, "8")),
            (b"9\n\n", ok(3, "9")),
            (b"+1", einval.clone()),
            (b"0x20", ok(4, "32")),
            (b"0X1f", ok(4, "31")),
            (b"010", ok(3, "8")),
            (b"08", einval.clone()),
            (b"1 2", ok(2, "1")),
            (b"3\n4", ok(2, "3")),
            (b"7 x", ok(2, "7")),
            (b"-1", einval.clone()),
            (b"-0", ok(2, "0")),
            (b"5x", einval.clone()),
            (b"", ok(0, "5")),
            (b"\n", einval.clone()),
            (b" ", einval.clone()),
            (b"99999999999", einval.clone()),
            (b"2147483647", ok(10, "2147483647")),
            (b"2147483648", einval.clone()),
            (b"6 ", ok(2, "6")),
            (b"1.5", einval.clone()),
            (b"\r5", ok(2, "5")),
            (b"\x0b5", ok(2, "5")),
            (b"5\r", einval.clone()),
            (b"5\0", einval.clone()),
            (b"5 \r", ok(3, "5")),
            (b"5\t", ok(2, "5")),
            (b"000000000000000000001", einval.clone()),
            (b"00000000000000000001", ok(20, "1")),
            (b"0x", einval.clone()),
            (b"12,13", einval.clone()),
            (b"\xff", einval.clone()),
        ] {
            assert_eq!(
                outcome(&r, data, "5"),
                want,
                "{:?}",
                String::from_utf8_lossy(data)
            );
        }
    }

    /// net.ipv4.conf.all.arp_notify (proc_dointvec) on Linux.
    #[test]
    fn integer_is_a_c_int() {
        let r = Rule::Integer;
        assert_eq!(outcome(&r, b"-1", "0"), (Ok(2), "-1".into()));
        assert_eq!(
            outcome(&r, b"-2147483648", "0"),
            (Ok(11), "-2147483648".into())
        );
        assert_eq!(
            outcome(&r, b"-2147483649", "0"),
            (Err(libc::EINVAL), "0".into())
        );
        assert_eq!(
            outcome(&r, b"2147483648", "0"),
            (Err(libc::EINVAL), "0".into())
        );
    }

    /// net.ipv4.ip_nonlocal_bind and tcp_keepalive_probes (proc_dou8vec_minmax)
    /// on Linux: no sign at all, not even "-0"; the whole write is taken and
    /// a second write on the fd is parsed again ("3" then "4 7" stores 4).
    #[test]
    fn unsigned_ranges_refuse_any_minus_sign_and_take_the_whole_write() {
        let r = Rule::parse("urange 0 255").unwrap();
        assert_eq!(outcome(&r, b"255", "0"), (Ok(3), "255".into()));
        for bad in [&b"256"[..], b"-0", b"-1"] {
            assert_eq!(outcome(&r, bad, "0"), (Err(libc::EINVAL), "0".into()));
        }
        assert_eq!(outcome(&r, b"1 2", "0"), (Ok(3), "1".into()));
        assert_eq!(outcome(&r, b" 5 \n", "0"), (Ok(4), "5".into()));
        let again = r.write(b"4 7", "3", 1).unwrap();
        assert_eq!((again.value.as_deref(), again.consumed), (Some("4"), 3));
        // proc_doulongvec_minmax parses like a vector.
        let r = Rule::parse("ulong 0 9223372036854775807").unwrap();
        assert_eq!(outcome(&r, b"1 2", "0"), (Ok(2), "1".into()));
        assert_eq!(outcome(&r, b"-0", "0"), (Err(libc::EINVAL), "0".into()));
        assert_eq!(r.write(b"5", "1", 2).unwrap().value, None);
    }

    /// net.ipv4.ip_local_port_range on Linux: a short write keeps the tail,
    /// a longer one is cut after two numbers, the range must not go down.
    #[test]
    fn integer_vectors_keep_the_old_tail_and_stop_after_their_count() {
        let r = Rule::parse("ints 2 1 65535 ascending").unwrap();
        let old = "32768\t60999";
        assert_eq!(
            outcome(&r, b"1024 65000", old),
            (Ok(10), "1024\t65000".into())
        );
        assert_eq!(outcome(&r, b"2000", old), (Ok(4), "2000\t60999".into()));
        assert_eq!(
            outcome(&r, b"1024 65000 7", old),
            (Ok(11), "1024\t65000".into())
        );
        assert_eq!(
            outcome(&r, b"5000 5000 x", old),
            (Ok(10), "5000\t5000".into())
        );
        assert_eq!(
            outcome(&r, b" 40000   50000 ", old),
            (Ok(15), "40000\t50000".into())
        );
        for bad in [&b"3000 2000"[..], b"1024 x", b"0 100", b"100 65536"] {
            assert_eq!(outcome(&r, bad, old), (Err(libc::EINVAL), old.into()));
        }
        // ping_group_range is not ordered: "1 0" is how it is switched off.
        let r = Rule::parse("ints 2 0 4294967294").unwrap();
        assert_eq!(outcome(&r, b"1 0", "0\t5"), (Ok(3), "1\t0".into()));
    }

    /// net.ipv4.ip_local_reserved_ports (proc_do_large_bitmap) on Linux.
    #[test]
    fn bitmaps_take_lists_and_ranges_and_print_them_merged() {
        let r = Rule::parse("bitmap 65536").unwrap();
        let old = "1-3,5";
        for (data, want) in [
            (&b"8080"[..], (Ok(4), "8080")),
            (b"8080,9090", (Ok(9), "8080,9090")),
            (b"3000,1000-1005", (Ok(14), "1000-1005,3000")),
            (b"1,2,3", (Ok(5), "1-3")),
            (b"5,5", (Ok(3), "5")),
            (b"65535", (Ok(5), "65535")),
            (b"0", (Ok(1), "0")),
            (b"1-2,", (Ok(4), "1-2")),
            (b"1-3,\n5", (Ok(6), "1-3,5")),
            (b"1,\n", (Ok(3), "1")),
            (b"8,9\n\n", (Ok(5), "8-9")),
            (b"\n", (Ok(1), "")),
            (b"", (Ok(0), old)),
            (b"65536", (Err(libc::EINVAL), old)),
            (b"5-3", (Err(libc::EINVAL), old)),
            (b"abc", (Err(libc::EINVAL), old)),
            (b"1,2 3", (Err(libc::EINVAL), old)),
            (b" 8080", (Err(libc::EINVAL), old)),
            (b"1-3\n,5", (Err(libc::EINVAL), old)),
            (b"1 ", (Err(libc::EINVAL), old)),
            (b"1,,2", (Err(libc::EINVAL), old)),
            (b"-5", (Err(libc::EINVAL), old)),
            (b"5-", (Err(libc::EINVAL), old)),
            (b"1-2-3", (Err(libc::EINVAL), old)),
            (b"7\0", (Err(libc::EINVAL), old)),
        ] {
            assert_eq!(
                outcome(&r, data, old),
                (want.0, want.1.to_string()),
                "{:?}",
                String::from_utf8_lossy(data)
            );
        }
        // At a non-zero position the kernel adds to the set.
        let w = r.write(b"7", "1-3", 4).unwrap();
        assert_eq!(w.value.as_deref(), Some("1-3,7"));
    }

    /// sysctl_writes_strict=1: a numeric write at a non-zero position is
    /// ignored but reports success; text continues at the position.
    #[test]
    fn writes_at_a_nonzero_position_follow_sysctl_writes_strict() {
        let w = Rule::Integer.write(b"9", "3", 1).unwrap();
        assert_eq!(
            w,
            Written {
                value: None,
                consumed: 1
            }
        );
        let t = Rule::Text;
        assert_eq!(
            t.write(b"def", "abc", 3).unwrap().value.as_deref(),
            Some("abcdef")
        );
        assert_eq!(
            t.write(b"X\nrest", "abc", 1).unwrap().value.as_deref(),
            Some("aX")
        );
        assert_eq!(t.write(b"zz", "abc", 9).unwrap().value, None);
    }

    #[test]
    fn text_keeps_everything_up_to_the_first_newline() {
        let r = Rule::Text;
        assert_eq!(r.apply(b"my host\nrest", ""), Ok("my host".into()));
        assert_eq!(r.apply(b"\n", "x"), Ok("".into()));
    }

    #[test]
    fn enum_accepts_only_listed_words() {
        let r = Rule::parse("enum cubic reno").unwrap();
        assert_eq!(r.apply(b"reno\n", ""), Ok("reno".into()));
        assert_eq!(r.apply(b"bbr", ""), Err(libc::EINVAL));
    }

    #[test]
    fn normalize_wants_every_byte_used() {
        assert_eq!(Rule::Integer.normalize("010"), Ok("8".into()));
        assert_eq!(Rule::Integer.normalize("1 2"), Err(libc::EINVAL));
        assert_eq!(Rule::Integer.normalize(""), Err(libc::EINVAL));
        let b = Rule::Bitmap { size: 65536 };
        assert_eq!(b.normalize(""), Ok("".into()));
        assert_eq!(b.normalize("30000-32767"), Ok("30000-32767".into()));
        assert_eq!(Rule::Text.normalize(""), Ok("".into()));
    }

    #[test]
    fn rule_syntax_round_trips_and_unknown_names_are_explained() {
        for s in [
            "integer",
            "range 0 1",
            "urange 0 255",
            "ulong 0 9223372036854775807",
            "ints 2",
            "ints 2 0 9",
            "ints 2 1 65535 ascending",
            "ints 3 ascending",
            "bitmap 65536",
            "enum a b",
            "text",
        ] {
            assert_eq!(Rule::parse(s).unwrap().to_string(), s);
        }
        let e = Rule::parse("intt").unwrap_err();
        assert_eq!(
            e,
            "value rule \"intt\" unknown (expected integer, range, urange, ulong, ints, bitmap, enum, text)"
        );
        assert!(Rule::parse("range 1").is_err());
        assert!(Rule::parse("range 2 1").is_err());
        assert!(Rule::parse("urange -1 1").is_err());
        assert!(Rule::parse("ints 0").is_err());
        assert!(Rule::parse("ints 2 1").is_err());
        assert!(Rule::parse("bitmap 0").is_err());
    }

    #[test]
    fn inferred_rules_follow_the_real_value() {
        assert_eq!(Rule::infer("1"), Rule::Integer);
        assert!(matches!(
            Rule::infer("32768\t60999"),
            Rule::Ints { count: 2, .. }
        ));
        assert_eq!(Rule::infer("4.4.0"), Rule::Text);
        assert_eq!(Rule::infer(""), Rule::Text);
    }
}
