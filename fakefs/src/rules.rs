//! Value rules: how a write to an entry is parsed, validated and normalized.
//!
//! Why: procfs rejects a bad value with EINVAL in write(2) and keeps the old
//! one; components (kubelet, CNI plugins) rely on that, so the fake tree must
//! validate exactly where the kernel would, and store the value the way the
//! kernel prints it (decimal, tab-separated vectors).

use std::fmt;

/// A value rule, written in profiles as a short string:
/// `integer`, `range MIN MAX`, `ints N [MIN MAX]`, `enum A B ...`, `text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// One C `int` (proc_dointvec): -2147483648..=2147483647.
    Integer,
    /// One integer within MIN..=MAX (proc_dointvec_minmax and friends).
    Range { min: i64, max: i64 },
    /// Up to `count` integers on one line, each within MIN..=MAX
    /// (e.g. ip_local_port_range); missing trailing ones keep their old value.
    Ints { count: usize, min: i64, max: i64 },
    /// One word out of a fixed set.
    Enum(Vec<String>),
    /// Free text (proc_dostring): everything up to the first newline.
    Text,
}

/// Names accepted as the first word of a rule, for error messages.
pub const RULE_NAMES: &str = "integer, range, ints, enum, text";

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
        match kind {
            "integer" | "int" if rest.is_empty() => Ok(Rule::Integer),
            "range" if rest.len() == 2 => {
                let (min, max) = (int(rest[0])?, int(rest[1])?);
                if min > max {
                    return Err(format!("value rule \"{s}\": MIN is above MAX"));
                }
                Ok(Rule::Range { min, max })
            }
            "ints" if rest.len() == 1 || rest.len() == 3 => {
                let count = rest[0]
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| format!("value rule \"{s}\": count must be a positive integer"))?;
                let (min, max) = if rest.len() == 3 {
                    (int(rest[1])?, int(rest[2])?)
                } else {
                    (i32::MIN as i64, i32::MAX as i64)
                };
                if min > max {
                    return Err(format!("value rule \"{s}\": MIN is above MAX"));
                }
                Ok(Rule::Ints { count, min, max })
            }
            "enum" if !rest.is_empty() => Ok(Rule::Enum(rest.iter().map(|w| w.to_string()).collect())),
            "text" if rest.is_empty() => Ok(Rule::Text),
            "integer" | "int" | "range" | "ints" | "enum" | "text" => Err(format!(
                "value rule \"{s}\" has the wrong arguments (integer | range MIN MAX | ints N [MIN MAX] | enum A B.. | text)"
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
            return Rule::Ints {
                count: toks.len(),
                min: i64::MIN,
                max: i64::MAX,
            };
        }
        Rule::Text
    }

    /// Validates what a program wrote (raw bytes of one write(2) at offset 0)
    /// against the rule, given the current value (for partial vectors).
    /// Returns the normalized value without trailing newline, or an errno.
    pub fn apply(&self, data: &[u8], old: &str) -> Result<String, i32> {
        let text = std::str::from_utf8(data).map_err(|_| libc::EINVAL)?;
        match self {
            Rule::Text => {
                // proc_dostring stops at the first newline or NUL.
                let end = text.find(['\n', '\0']).unwrap_or(text.len());
                Ok(text[..end].to_string())
            }
            Rule::Enum(words) => {
                let v = text.trim();
                if words.iter().any(|w| w == v) {
                    Ok(v.to_string())
                } else {
                    Err(libc::EINVAL)
                }
            }
            Rule::Integer => {
                let v = single_int(text)?;
                if v < i32::MIN as i64 || v > i32::MAX as i64 {
                    return Err(libc::EINVAL);
                }
                Ok(v.to_string())
            }
            Rule::Range { min, max } => {
                let v = single_int(text)?;
                if v < *min || v > *max {
                    return Err(libc::EINVAL);
                }
                Ok(v.to_string())
            }
            Rule::Ints { count, min, max } => {
                let vals = parse_ints(text)?;
                if vals.is_empty() || vals.len() > *count {
                    return Err(libc::EINVAL);
                }
                if vals.iter().any(|v| v < min || v > max) {
                    return Err(libc::EINVAL);
                }
                let olds: Vec<&str> = old.split_whitespace().collect();
                let mut out: Vec<String> = Vec::with_capacity(*count);
                for i in 0..*count {
                    match vals.get(i) {
                        Some(v) => out.push(v.to_string()),
                        None => out.push(olds.get(i).copied().unwrap_or("0").to_string()),
                    }
                }
                Ok(out.join("\t"))
            }
        }
    }

    /// Normalizes a profile default (same rules as a write).
    pub fn normalize(&self, value: &str) -> Result<String, i32> {
        self.apply(value.as_bytes(), "")
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Integer => write!(f, "integer"),
            Rule::Range { min, max } => write!(f, "range {min} {max}"),
            Rule::Ints { count, min, max } => {
                if *min == i32::MIN as i64 && *max == i32::MAX as i64 {
                    write!(f, "ints {count}")
                } else {
                    write!(f, "ints {count} {min} {max}")
                }
            }
            Rule::Enum(w) => write!(f, "enum {}", w.join(" ")),
            Rule::Text => write!(f, "text"),
        }
    }
}

fn single_int(text: &str) -> Result<i64, i32> {
    let v = parse_ints(text)?;
    if v.len() != 1 {
        return Err(libc::EINVAL);
    }
    Ok(v[0])
}

/// Parses whitespace-separated integers the way the kernel's proc_get_long
/// does: optional '-', then strtoul base 0 (0x.. hex, 0.. octal), and the
/// number must be followed by whitespace or the end ("1abc" is EINVAL).
/// Whitespace-only input is EINVAL (kernel: `if (write && first) return -EINVAL`).
fn parse_ints(text: &str) -> Result<Vec<i64>, i32> {
    let mut out = Vec::new();
    for tok in text.split_ascii_whitespace() {
        let (neg, digits) = match tok.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, tok),
        };
        if !digits.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(libc::EINVAL);
        }
        let (radix, body) = if let Some(h) = digits
            .strip_prefix("0x")
            .or_else(|| digits.strip_prefix("0X"))
        {
            (16, h)
        } else if digits.len() > 1 && digits.starts_with('0') {
            (8, &digits[1..])
        } else {
            (10, digits)
        };
        let mag = i128::from_str_radix(body, radix).map_err(|_| libc::EINVAL)?;
        let v = if neg { -mag } else { mag };
        let v = i64::try_from(v).map_err(|_| libc::EINVAL)?;
        out.push(v);
    }
    if out.is_empty() {
        return Err(libc::EINVAL);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_accepts_kernel_forms_and_normalizes_to_decimal() {
        let r = Rule::Integer;
        assert_eq!(r.apply(b"1", "0"), Ok("1".into()));
        assert_eq!(r.apply(b"1\n", "0"), Ok("1".into()));
        assert_eq!(r.apply(b"  42 \n", "0"), Ok("42".into()));
        assert_eq!(r.apply(b"-5", "0"), Ok("-5".into()));
        assert_eq!(r.apply(b"0x10", "0"), Ok("16".into()));
        assert_eq!(r.apply(b"010", "0"), Ok("8".into()));
        assert_eq!(r.apply(b"0", "1"), Ok("0".into()));
    }

    #[test]
    fn integer_rejects_garbage_overflow_and_blank_with_einval() {
        let r = Rule::Integer;
        for bad in [
            &b"abc"[..],
            b"1abc",
            b"+1",
            b"",
            b"\n",
            b"  ",
            b"1 2",
            b"2147483648",
            b"0x",
            b"\xff",
        ] {
            assert_eq!(
                r.apply(bad, "0"),
                Err(libc::EINVAL),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(r.apply(b"-2147483648", "0"), Ok("-2147483648".into()));
    }

    #[test]
    fn range_is_inclusive() {
        let r = Rule::parse("range 0 2").unwrap();
        assert_eq!(r.apply(b"0", ""), Ok("0".into()));
        assert_eq!(r.apply(b"2\n", ""), Ok("2".into()));
        assert_eq!(r.apply(b"3", ""), Err(libc::EINVAL));
        assert_eq!(r.apply(b"-1", ""), Err(libc::EINVAL));
    }

    #[test]
    fn ints_are_tab_separated_and_partial_writes_keep_old_tail() {
        let r = Rule::parse("ints 2 1 65535").unwrap();
        assert_eq!(
            r.apply(b"1024 65000\n", "32768\t60999"),
            Ok("1024\t65000".into())
        );
        assert_eq!(r.apply(b"1024\t65000", ""), Ok("1024\t65000".into()));
        assert_eq!(r.apply(b"2000", "32768\t60999"), Ok("2000\t60999".into()));
        assert_eq!(r.apply(b"1 2 3", "1\t2"), Err(libc::EINVAL));
        assert_eq!(r.apply(b"0 5", "1\t2"), Err(libc::EINVAL));
        assert_eq!(r.apply(b"a b", "1\t2"), Err(libc::EINVAL));
    }

    #[test]
    fn enum_accepts_only_listed_words() {
        let r = Rule::parse("enum cubic reno").unwrap();
        assert_eq!(r.apply(b"reno\n", ""), Ok("reno".into()));
        assert_eq!(r.apply(b"bbr", ""), Err(libc::EINVAL));
    }

    #[test]
    fn text_keeps_everything_up_to_the_first_newline() {
        let r = Rule::Text;
        assert_eq!(r.apply(b"my host\nrest", ""), Ok("my host".into()));
        assert_eq!(r.apply(b"\n", "x"), Ok("".into()));
    }

    #[test]
    fn rule_syntax_round_trips_and_unknown_names_are_explained() {
        for s in [
            "integer",
            "range 0 1",
            "ints 2",
            "ints 2 0 9",
            "enum a b",
            "text",
        ] {
            assert_eq!(Rule::parse(s).unwrap().to_string(), s);
        }
        let e = Rule::parse("intt").unwrap_err();
        assert_eq!(
            e,
            "value rule \"intt\" unknown (expected integer, range, ints, enum, text)"
        );
        assert!(Rule::parse("range 1").is_err());
        assert!(Rule::parse("range 2 1").is_err());
        assert!(Rule::parse("ints 0").is_err());
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
