//! A view: the fake /proc/sys written out as a plain directory tree, for a
//! caller that serves the tree some other way than by answering each path
//! syscall (a mount). fakefs still decides everything that changes state
//! ([`FakeFs::decide_as`], [`FakeFs::write`]); the view is a copy the
//! caller refreshes with [`FakeFs::update_view`] after each accepted write.
//!
//! A view differs from the state directory on purpose: its files are
//! replaced by rename, so a directory bound elsewhere shows new values at
//! once, and whoever can write the view cannot change the state.

use crate::{parent_of, Error, FakeFs, Mode, RealKind};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// What a view holds besides its files.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct View {
    /// Entries (relative to /proc/sys, directories before what is below
    /// them) that the real tree serves: the caller puts the real entry over
    /// the placeholder of the same name (an empty file or directory). Live
    /// values that programs never write (overlay's read-only entries,
    /// write-through entries) and, in shadow mode, real entries with no value
    /// to copy (write-only ones such as vm/drop_caches, whose reads the
    /// kernel refuses).
    pub real: Vec<String>,
    /// Fake files written.
    pub files: usize,
}

impl FakeFs {
    /// Writes the tree a traced program sees under /proc/sys into `dir`
    /// (which must be empty or absent): directories 0555, files with
    /// procfs's mode and the value a read would give. Damaged entries are
    /// written empty with mode 0 (no value is served from them).
    pub fn write_view(&mut self, dir: &Path) -> Result<View, Error> {
        self.refresh_index();
        std::fs::DirBuilder::new()
            .mode(0o755)
            .recursive(true)
            .create(dir)
            .map_err(crate::io_err(dir, "cannot create view directory"))?;
        let mut view = View::default();
        let mut dirs = Vec::new();
        self.write_dir(dir, "", &mut view, &mut dirs)?;
        // Read-only once full, deepest first (root writes them anyway).
        for d in dirs.iter().rev() {
            let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o555));
        }
        Ok(view)
    }

    fn write_dir(
        &mut self,
        top: &Path,
        rel: &str,
        view: &mut View,
        dirs: &mut Vec<std::path::PathBuf>,
    ) -> Result<(), Error> {
        let here = if rel.is_empty() {
            top.to_path_buf()
        } else {
            top.join(rel)
        };
        dirs.push(here.clone());
        for (name, kind) in self.children_of(rel) {
            if name.contains('/') || name == "." || name == ".." {
                continue;
            }
            let child = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let path = here.join(&name);
            let err = |what: &'static str| crate::io_err(&path, what);
            match kind {
                None => {
                    std::fs::DirBuilder::new()
                        .mode(0o755)
                        .create(&path)
                        .map_err(err("cannot create view directory"))?;
                    if self.wholly_real(&child) {
                        view.real.push(child);
                        dirs.push(path);
                    } else {
                        self.write_dir(top, &child, view, dirs)?;
                    }
                }
                Some(_) => match self.view_value(&child) {
                    Some((value, mode)) => {
                        write_file(&path, value.as_bytes(), mode)
                            .map_err(err("cannot write view file"))?;
                        view.files += 1;
                    }
                    None => {
                        write_file(&path, b"", 0o444).map_err(err("cannot write view file"))?;
                        view.real.push(child);
                    }
                },
            }
        }
        Ok(())
    }

    /// Overlay with write-through: a real directory with no fake entry
    /// below it is served by the real tree as a whole.
    fn wholly_real(&self, rel: &str) -> bool {
        if self.mode != Mode::Overlay || !self.write_through || self.real(rel) != RealKind::Dir {
            return false;
        }
        let prefix = format!("{rel}/");
        !self
            .profile
            .entries
            .keys()
            .chain(self.index.keys())
            .any(|k| k.starts_with(&prefix))
    }

    /// The content and mode of an entry's view file, or None where the real
    /// entry serves it.
    fn view_value(&self, rel: &str) -> Option<(String, u32)> {
        if self.entry_damage(rel).is_some() {
            return Some((String::new(), 0));
        }
        let mode = self.kmode(rel);
        let real_mode = match self.real(rel) {
            RealKind::File { mode } => Some(mode),
            _ => None,
        };
        if self.mode == Mode::Overlay && !self.pinned(rel) && self.real_is_readable(rel) {
            let real_ro = real_mode.is_some_and(|m| m & 0o200 == 0);
            // Live where nothing k3shim emulates can change it: read-only
            // entries that stat read-only, and writes that reach the kernel.
            // A writable entry is a copy: its first write makes it fake.
            if (real_ro && mode & 0o222 == 0) || (self.write_through && !real_ro) {
                return None;
            }
        }
        match self.current(rel) {
            Ok((v, _)) => Some((format!("{v}\n"), mode)),
            Err(_) if real_mode.is_some() => None,
            Err(_) => Some((String::new(), mode)),
        }
    }

    /// Brings `rel`'s view file in line with the state (after a write), by
    /// rename, so that a bound directory shows the new value at once.
    /// Entries the real tree serves are left alone.
    pub fn update_view(&mut self, dir: &Path, rel: &str) -> std::io::Result<()> {
        self.refresh_index();
        let Some((value, mode)) = self.view_value(rel) else {
            return Ok(());
        };
        let path = dir.join(rel);
        let parent = dir.join(parent_of(rel));
        let tmp = parent.join(format!(".k3shim-new-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        write_file(&tmp, value.as_bytes(), mode)?;
        std::fs::rename(&tmp, &path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    f.write_all(data)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
}
