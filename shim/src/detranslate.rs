//! What the kernel reports about a program's own state, mapped back from the
//! state directory to the paths the program used (PRoot does the same at the
//! exit of getcwd and readlink): after a redirected chdir or open, its cwd and
//! fds are in the state directory, and `pwd -P`, /proc/self/cwd and
//! /proc/self/fd/N would show that directory. The tracer answers getcwd and
//! readlink of these magic links itself, with the policy's untranslate.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Is `path` (resolved, not followed) a magic link of a task: /proc/PID/cwd,
/// /proc/PID/root, /proc/PID/exe, /proc/PID/fd/N, or the same below task/TID?
pub fn is_magic_link(path: &Path) -> bool {
    let c: Vec<&[u8]> = path
        .as_os_str()
        .as_bytes()
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    let num = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    if c.len() < 3 || c[0] != b"proc" || !num(c[1]) {
        return false;
    }
    let rest = if c.len() >= 5 && c[2] == b"task" && num(c[3]) {
        &c[4..]
    } else {
        &c[2..]
    };
    match rest {
        [leaf] => matches!(*leaf, b"cwd" | b"root" | b"exe"),
        [b"fd", n] => num(n),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_links_of_tasks_are_recognized() {
        for p in [
            "/proc/12/cwd",
            "/proc/12/fd/3",
            "/proc/12/task/13/cwd",
            "/proc/1/exe",
        ] {
            assert!(is_magic_link(Path::new(p)), "{p}");
        }
        for p in [
            "/proc/12/status",
            "/proc/sys/vm",
            "/proc/12/fd",
            "/tmp/12/cwd",
            "/proc/x/cwd",
        ] {
            assert!(!is_magic_link(Path::new(p)), "{p}");
        }
    }
}
