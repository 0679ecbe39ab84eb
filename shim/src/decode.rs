//! Decoding arguments for trace lines and hold rules, strace style.

use crate::mem::Mem;
use crate::policy::HoldRequest;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::PathBuf;

/// Reads a sockaddr of `len` bytes at `addr`.
pub fn connect_target(
    mem: &mut Mem,
    tgid: i32,
    tid: i32,
    addr: u64,
    len: u64,
) -> Option<HoldRequest> {
    let len = (len as usize).min(128);
    let mut b = [0u8; 128];
    if len < 2 || mem.read(tgid, tid, addr, &mut b[..len]) < len {
        return None;
    }
    let family = u16::from_ne_bytes([b[0], b[1]]) as i32;
    match family {
        libc::AF_INET if len >= 8 => {
            let port = u16::from_be_bytes([b[2], b[3]]);
            let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
            Some(HoldRequest::ConnectInet {
                addr: SocketAddr::V4(SocketAddrV4::new(ip, port)),
            })
        }
        libc::AF_INET6 if len >= 24 => {
            let port = u16::from_be_bytes([b[2], b[3]]);
            let mut o = [0u8; 16];
            o.copy_from_slice(&b[8..24]);
            Some(HoldRequest::ConnectInet {
                addr: SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(o), port, 0, 0)),
            })
        }
        libc::AF_UNIX if len > 2 => {
            let p = &b[2..len];
            let s = if p[0] == 0 {
                let end = p[1..]
                    .iter()
                    .position(|&c| c == 0)
                    .map(|e| e + 1)
                    .unwrap_or(p.len());
                format!("@{}", String::from_utf8_lossy(&p[1..end]))
            } else {
                let end = p.iter().position(|&c| c == 0).unwrap_or(p.len());
                String::from_utf8_lossy(&p[..end]).into_owned()
            };
            Some(HoldRequest::ConnectUnix {
                path: PathBuf::from(s),
            })
        }
        _ => None,
    }
}

/// How a hold is described in events: `connect:127.0.0.1:6443`, `connect:unix:/run/x.sock`.
pub fn hold_what(r: &HoldRequest) -> String {
    match r {
        HoldRequest::ConnectInet { addr } => format!("connect:{addr}"),
        HoldRequest::ConnectUnix { path } => format!("connect:unix:{}", path.display()),
        HoldRequest::Exec { path } => format!("exec:{}", path.display()),
    }
}

/// A quoted C string, strace style.
pub fn quote(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() + 2);
    s.push('"');
    for &c in b {
        match c {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            0x20..=0x7e => s.push(c as char),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s.push('"');
    s
}

fn dirfd(v: u64) -> String {
    if v as i32 == libc::AT_FDCWD {
        "AT_FDCWD".into()
    } else {
        (v as i32).to_string()
    }
}

/// O_* flags, strace style: `O_RDONLY|O_CLOEXEC`.
pub fn open_flags(f: i32) -> String {
    let mut parts = vec![match f & libc::O_ACCMODE {
        libc::O_RDONLY => "O_RDONLY",
        libc::O_WRONLY => "O_WRONLY",
        _ => "O_RDWR",
    }
    .to_string()];
    let names: [(i32, &str); 12] = [
        (libc::O_CREAT, "O_CREAT"),
        (libc::O_EXCL, "O_EXCL"),
        (libc::O_NOCTTY, "O_NOCTTY"),
        (libc::O_TRUNC, "O_TRUNC"),
        (libc::O_APPEND, "O_APPEND"),
        (libc::O_NONBLOCK, "O_NONBLOCK"),
        (libc::O_DIRECTORY, "O_DIRECTORY"),
        (libc::O_NOFOLLOW, "O_NOFOLLOW"),
        (libc::O_CLOEXEC, "O_CLOEXEC"),
        (libc::O_PATH, "O_PATH"),
        (libc::O_LARGEFILE, "O_LARGEFILE"),
        (libc::O_DSYNC, "O_DSYNC"),
    ];
    let mut rest = f & !libc::O_ACCMODE;
    for (bit, n) in names {
        if rest & bit == bit && bit != 0 {
            parts.push(n.into());
            rest &= !bit;
        }
    }
    if rest != 0 {
        parts.push(format!("{rest:#o}"));
    }
    parts.join("|")
}

fn at_flags(f: u64) -> String {
    let f = f as i32;
    let mut parts = Vec::new();
    for (bit, n) in [
        (libc::AT_SYMLINK_NOFOLLOW, "AT_SYMLINK_NOFOLLOW"),
        (libc::AT_EMPTY_PATH, "AT_EMPTY_PATH"),
        (libc::AT_NO_AUTOMOUNT, "AT_NO_AUTOMOUNT"),
        (libc::AT_REMOVEDIR, "AT_REMOVEDIR"),
        (libc::AT_EACCESS, "AT_EACCESS"),
    ] {
        if f & bit != 0 {
            parts.push(n.to_string());
        }
    }
    if parts.is_empty() {
        "0".into()
    } else {
        parts.join("|")
    }
}

fn access_mode(m: u64) -> String {
    let m = m as i32;
    if m == libc::F_OK {
        return "F_OK".into();
    }
    let mut p = Vec::new();
    for (b, n) in [
        (libc::R_OK, "R_OK"),
        (libc::W_OK, "W_OK"),
        (libc::X_OK, "X_OK"),
    ] {
        if m & b != 0 {
            p.push(n);
        }
    }
    p.join("|")
}

fn prot(p: u64) -> String {
    if p == 0 {
        return "PROT_NONE".into();
    }
    let mut v: Vec<&str> = Vec::new();
    for (b, n) in [
        (libc::PROT_READ, "PROT_READ"),
        (libc::PROT_WRITE, "PROT_WRITE"),
        (libc::PROT_EXEC, "PROT_EXEC"),
    ] {
        if p as i32 & b != 0 {
            v.push(n);
        }
    }
    let rest = p as i32 & !(libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC);
    let mut s = v.join("|");
    if rest != 0 {
        s.push_str(&format!("|{rest:#x}"));
    }
    s
}

fn map_flags(f: u64) -> String {
    let f = f as i32;
    let mut v: Vec<String> = vec![match f & 0x3 {
        libc::MAP_SHARED => "MAP_SHARED".into(),
        libc::MAP_PRIVATE => "MAP_PRIVATE".into(),
        o => format!("{o:#x}"),
    }];
    let mut rest = f & !0x3;
    for (b, n) in [
        (libc::MAP_FIXED, "MAP_FIXED"),
        (libc::MAP_ANONYMOUS, "MAP_ANONYMOUS"),
        (libc::MAP_NORESERVE, "MAP_NORESERVE"),
        (libc::MAP_POPULATE, "MAP_POPULATE"),
        (libc::MAP_STACK, "MAP_STACK"),
        (libc::MAP_FIXED_NOREPLACE, "MAP_FIXED_NOREPLACE"),
        (libc::MAP_GROWSDOWN, "MAP_GROWSDOWN"),
        (libc::MAP_DENYWRITE, "MAP_DENYWRITE"),
    ] {
        if rest & b == b {
            v.push(n.into());
            rest &= !b;
        }
    }
    if rest != 0 {
        v.push(format!("{rest:#x}"));
    }
    v.join("|")
}

fn addr(a: u64) -> String {
    if a == 0 {
        "NULL".into()
    } else {
        format!("{a:#x}")
    }
}

fn fd(v: u64) -> String {
    (v as i32).to_string()
}

fn signal(v: u64) -> String {
    let n = v as i32;
    let name = match n {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGCONT => "SIGCONT",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGTSTP => "SIGTSTP",
        libc::SIGURG => "SIGURG",
        0 => "0",
        _ => return n.to_string(),
    };
    name.into()
}

/// The arguments of a syscall that takes no path, strace style for the
/// common ones (fds, sizes and offsets as numbers, PROT_*/MAP_*/SEEK_*/F_*
/// and signal names), the first three in hex for the others.
pub fn call_args(nr: i64, a: &[u64; 6]) -> String {
    let sz = |v: u64| v.to_string();
    let off = |v: u64| (v as i64).to_string();
    match nr {
        libc::SYS_read | libc::SYS_write => format!("{}, {:#x}, {}", fd(a[0]), a[1], sz(a[2])),
        libc::SYS_pread64 | libc::SYS_pwrite64 => {
            format!("{}, {:#x}, {}, {}", fd(a[0]), a[1], sz(a[2]), off(a[3]))
        }
        libc::SYS_readv | libc::SYS_writev => {
            format!("{}, {:#x}, {}", fd(a[0]), a[1], a[2] as i32)
        }
        libc::SYS_close
        | libc::SYS_fsync
        | libc::SYS_fdatasync
        | libc::SYS_dup
        | libc::SYS_fchdir
        | libc::SYS_syncfs => fd(a[0]),
        libc::SYS_dup2 => format!("{}, {}", fd(a[0]), fd(a[1])),
        libc::SYS_dup3 => format!(
            "{}, {}, {}",
            fd(a[0]),
            fd(a[1]),
            if a[2] as i32 & libc::O_CLOEXEC != 0 {
                "O_CLOEXEC".to_string()
            } else {
                (a[2] as i32).to_string()
            }
        ),
        libc::SYS_fstat | libc::SYS_fstatfs => format!("{}, {:#x}", fd(a[0]), a[1]),
        libc::SYS_lseek => {
            let whence = match a[2] as i32 {
                libc::SEEK_SET => "SEEK_SET".to_string(),
                libc::SEEK_CUR => "SEEK_CUR".to_string(),
                libc::SEEK_END => "SEEK_END".to_string(),
                libc::SEEK_DATA => "SEEK_DATA".to_string(),
                libc::SEEK_HOLE => "SEEK_HOLE".to_string(),
                w => w.to_string(),
            };
            format!("{}, {}, {whence}", fd(a[0]), off(a[1]))
        }
        libc::SYS_mmap => format!(
            "{}, {}, {}, {}, {}, {:#x}",
            addr(a[0]),
            sz(a[1]),
            prot(a[2]),
            map_flags(a[3]),
            fd(a[4]),
            a[5]
        ),
        libc::SYS_munmap => format!("{}, {}", addr(a[0]), sz(a[1])),
        libc::SYS_mprotect => format!("{}, {}, {}", addr(a[0]), sz(a[1]), prot(a[2])),
        libc::SYS_brk => addr(a[0]),
        libc::SYS_ioctl => format!("{}, {:#x}, {:#x}", fd(a[0]), a[1], a[2]),
        libc::SYS_fcntl => {
            let cmd = match a[1] as i32 {
                libc::F_DUPFD => "F_DUPFD",
                libc::F_DUPFD_CLOEXEC => "F_DUPFD_CLOEXEC",
                libc::F_GETFD => "F_GETFD",
                libc::F_SETFD => "F_SETFD",
                libc::F_GETFL => "F_GETFL",
                libc::F_SETFL => "F_SETFL",
                libc::F_SETLK => "F_SETLK",
                libc::F_SETLKW => "F_SETLKW",
                libc::F_GETLK => "F_GETLK",
                _ => "",
            };
            let cmd = if cmd.is_empty() {
                (a[1] as i32).to_string()
            } else {
                cmd.to_string()
            };
            format!("{}, {cmd}, {:#x}", fd(a[0]), a[2])
        }
        libc::SYS_exit | libc::SYS_exit_group => (a[0] as i32).to_string(),
        libc::SYS_kill => format!("{}, {}", a[0] as i32, signal(a[1])),
        libc::SYS_tgkill => format!("{}, {}, {}", a[0] as i32, a[1] as i32, signal(a[2])),
        libc::SYS_tkill => format!("{}, {}", a[0] as i32, signal(a[1])),
        libc::SYS_wait4 => format!(
            "{}, {}, {:#x}, {}",
            a[0] as i32,
            addr(a[1]),
            a[2] as i32,
            addr(a[3])
        ),
        libc::SYS_pipe2 => format!("{:#x}, {:#o}", a[0], a[1] as i32),
        libc::SYS_socket => format!("{}, {:#x}, {}", a[0] as i32, a[1] as i32, a[2] as i32),
        libc::SYS_getpid
        | libc::SYS_getppid
        | libc::SYS_gettid
        | libc::SYS_getuid
        | libc::SYS_geteuid
        | libc::SYS_getgid
        | libc::SYS_getegid
        | libc::SYS_getpgrp
        | libc::SYS_setsid
        | libc::SYS_sched_yield
        | libc::SYS_pause
        | libc::SYS_fork
        | libc::SYS_vfork
        | libc::SYS_sync
        | libc::SYS_rt_sigreturn => String::new(),
        _ => raw_args(a),
    }
}

/// Arguments of a syscall the decoder does not know, as hex.
pub fn raw_args(a: &[u64; 6]) -> String {
    format!("{:#x}, {:#x}, {:#x}, ...", a[0], a[1], a[2])
}

/// The argument list of a path syscall, strace style.
pub fn path_args(nr: i64, a: &[u64; 6], path: &[u8], how: Option<(u64, u64)>) -> String {
    let q = quote(path);
    match nr {
        libc::SYS_open => format!("{q}, {}, {:#o}", open_flags(a[1] as i32), a[2]),
        libc::SYS_creat => format!("{q}, {:#o}", a[1]),
        libc::SYS_openat => {
            if a[2] as i32 & libc::O_CREAT != 0 {
                format!(
                    "{}, {q}, {}, {:#o}",
                    dirfd(a[0]),
                    open_flags(a[2] as i32),
                    a[3]
                )
            } else {
                format!("{}, {q}, {}", dirfd(a[0]), open_flags(a[2] as i32))
            }
        }
        libc::SYS_openat2 => {
            let (f, m) = how.unwrap_or((0, 0));
            format!(
                "{}, {q}, {{flags={}, mode={m:#o}}}, {}",
                dirfd(a[0]),
                open_flags(f as i32),
                a[3]
            )
        }
        libc::SYS_newfstatat => format!("{}, {q}, {:#x}, {}", dirfd(a[0]), a[2], at_flags(a[3])),
        libc::SYS_statx => format!("{}, {q}, {}, {:#x}", dirfd(a[0]), at_flags(a[2]), a[3]),
        libc::SYS_access => format!("{q}, {}", access_mode(a[1])),
        libc::SYS_faccessat | libc::SYS_faccessat2 => {
            format!("{}, {q}, {}", dirfd(a[0]), access_mode(a[2]))
        }
        libc::SYS_readlinkat
        | libc::SYS_mkdirat
        | libc::SYS_unlinkat
        | libc::SYS_fchmodat
        | libc::SYS_execveat => {
            format!("{}, {q}, ...", dirfd(a[0]))
        }
        _ => format!("{q}, ..."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_flags_read_like_strace() {
        assert_eq!(
            open_flags(libc::O_RDONLY | libc::O_CLOEXEC),
            "O_RDONLY|O_CLOEXEC"
        );
        assert_eq!(
            open_flags(libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC),
            "O_WRONLY|O_CREAT|O_TRUNC"
        );
    }

    #[test]
    fn common_calls_without_a_path_read_like_strace() {
        assert_eq!(
            call_args(libc::SYS_write, &[1, 0x1000, 5, 0, 0, 0]),
            "1, 0x1000, 5"
        );
        assert_eq!(call_args(libc::SYS_close, &[3, 0, 0, 0, 0, 0]), "3");
        let m = [
            0,
            8192,
            (libc::PROT_READ | libc::PROT_WRITE) as u64,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
            u64::MAX,
            0,
        ];
        assert_eq!(
            call_args(libc::SYS_mmap, &m),
            "NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0x0"
        );
        assert_eq!(call_args(libc::SYS_getpid, &[7; 6]), "");
        assert_eq!(
            call_args(libc::SYS_lseek, &[3, 0, libc::SEEK_END as u64, 0, 0, 0]),
            "3, 0, SEEK_END"
        );
    }

    #[test]
    fn quoting_escapes_non_printable_bytes() {
        assert_eq!(quote(b"a\"b\xff\n"), "\"a\\\"b\\xff\\n\"");
    }

    #[test]
    fn openat_args_name_at_fdcwd() {
        let a = [
            libc::AT_FDCWD as i64 as u64,
            0,
            libc::O_RDONLY as u64,
            0,
            0,
            0,
        ];
        assert_eq!(
            path_args(libc::SYS_openat, &a, b"/proc/sys/x", None),
            "AT_FDCWD, \"/proc/sys/x\", O_RDONLY"
        );
    }
}
