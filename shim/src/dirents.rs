//! Directory listings as procfs gives them: `.` and `..` first, then the
//! entries in name order, each with d_off = its index + 1 (procfs's ctx->pos),
//! encoded as getdents64 (linux_dirent64) or getdents (linux_dirent) records.
//! The host file system of a state directory lists in its own order (ext4:
//! hash order, with `.` and `..` anywhere), which procps `sysctl -a` cannot
//! walk: it drops the first two names.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: Vec<u8>,
    pub ino: u64,
    /// DT_* type.
    pub dtype: u8,
}

/// The listing of `dir`: `.`, `..` (with `parent_ino`), then its entries by name.
pub fn list(dir: &Path, parent_ino: u64) -> std::io::Result<Vec<Entry>> {
    let me = std::fs::metadata(dir)?;
    let mut out = vec![
        Entry {
            name: b".".to_vec(),
            ino: me.ino(),
            dtype: libc::DT_DIR,
        },
        Entry {
            name: b"..".to_vec(),
            ino: parent_ino,
            dtype: libc::DT_DIR,
        },
    ];
    let mut rest = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let ft = e.file_type()?;
        let dtype = if ft.is_dir() {
            libc::DT_DIR
        } else if ft.is_symlink() {
            libc::DT_LNK
        } else {
            libc::DT_REG
        };
        rest.push(Entry {
            name: e.file_name().as_bytes().to_vec(),
            ino: std::os::unix::fs::DirEntryExt::ino(&e),
            dtype,
        });
    }
    rest.sort_by(|a, b| a.name.cmp(&b.name));
    out.extend(rest);
    Ok(out)
}

/// Record layout of the two getdents flavours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// getdents64: ino u64, off i64, reclen u16, type u8, name, NUL.
    Dirent64,
    /// getdents: ino ulong, off ulong, reclen u16, name, NUL, pad, type in the last byte.
    Dirent,
}

fn record(e: &Entry, off: u64, f: Flavour) -> Vec<u8> {
    let name = &e.name;
    let (head, tail) = match f {
        Flavour::Dirent64 => (19, 1),
        Flavour::Dirent => (18, 2),
    };
    let reclen = (head + name.len() + tail + 7) & !7;
    let mut r = vec![0u8; reclen];
    r[0..8].copy_from_slice(&e.ino.to_ne_bytes());
    r[8..16].copy_from_slice(&off.to_ne_bytes());
    r[16..18].copy_from_slice(&(reclen as u16).to_ne_bytes());
    match f {
        Flavour::Dirent64 => {
            r[18] = e.dtype;
            r[19..19 + name.len()].copy_from_slice(name);
        }
        Flavour::Dirent => {
            r[18..18 + name.len()].copy_from_slice(name);
            r[reclen - 1] = e.dtype;
        }
    }
    r
}

/// Fills at most `count` bytes with the records from index `pos` on.
/// Returns the bytes and the next index; Err(EINVAL) when not even one
/// record fits (as the kernel does), Ok(empty) at the end.
pub fn fill(entries: &[Entry], pos: u64, count: usize, f: Flavour) -> Result<(Vec<u8>, u64), i32> {
    let mut out = Vec::new();
    let mut i = pos;
    while let Some(e) = entries.get(i as usize) {
        let r = record(e, i + 1, f);
        if out.len() + r.len() > count {
            break;
        }
        out.extend_from_slice(&r);
        i += 1;
    }
    if out.is_empty() && (i as usize) < entries.len() {
        return Err(libc::EINVAL);
    }
    Ok((out, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(buf: &[u8], f: Flavour) -> Vec<(String, u64, u8)> {
        let mut v = Vec::new();
        let mut at = 0;
        while at < buf.len() {
            let off = u64::from_ne_bytes(buf[at + 8..at + 16].try_into().unwrap());
            let reclen = u16::from_ne_bytes(buf[at + 16..at + 18].try_into().unwrap()) as usize;
            let (start, ty) = match f {
                Flavour::Dirent64 => (at + 19, buf[at + 18]),
                Flavour::Dirent => (at + 18, buf[at + reclen - 1]),
            };
            let end = start + buf[start..].iter().position(|&b| b == 0).unwrap();
            v.push((
                String::from_utf8_lossy(&buf[start..end]).into_owned(),
                off,
                ty,
            ));
            assert_eq!(reclen % 8, 0);
            at += reclen;
        }
        v
    }

    #[test]
    fn dot_and_dotdot_come_first_then_names_in_order() {
        let d = std::env::temp_dir().join(format!("dirents-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("vm")).unwrap();
        for n in ["zeta", "alpha", "mid"] {
            std::fs::write(d.join(n), "0\n").unwrap();
        }
        let l = list(&d, 7).unwrap();
        let got: Vec<_> = l
            .iter()
            .map(|e| String::from_utf8_lossy(&e.name).into_owned())
            .collect();
        assert_eq!(got, [".", "..", "alpha", "mid", "vm", "zeta"]);
        assert_eq!(l[1].ino, 7);
        assert_eq!(l[4].dtype, libc::DT_DIR);
        for f in [Flavour::Dirent64, Flavour::Dirent] {
            let (all, next) = fill(&l, 0, 4096, f).unwrap();
            assert_eq!(next, 6);
            let n = names(&all, f);
            assert_eq!(n.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(), got);
            assert_eq!(
                n.iter().map(|x| x.1).collect::<Vec<_>>(),
                [1, 2, 3, 4, 5, 6]
            );
            // A small buffer: entries come a few at a time, resuming at the index.
            let (part, next) = fill(&l, 0, 60, f).unwrap();
            assert!((1..6).contains(&next) && part.len() <= 60);
            let (rest, end) = fill(&l, next, 4096, f).unwrap();
            assert_eq!(end, 6);
            assert_eq!(names(&part, f).len() + names(&rest, f).len(), 6);
            assert_eq!(
                fill(&l, 6, 4096, f).unwrap().0.len(),
                0,
                "end of the listing"
            );
            assert_eq!(
                fill(&l, 0, 8, f),
                Err(libc::EINVAL),
                "no room for one record"
            );
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}
