//! Looks at the target binary before launch (goblin): architecture, static or
//! dynamic, Go build info. The engine refuses what it cannot trace.

use goblin::elf::{header, Elf};
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub machine: &'static str,
    pub is_static: bool,
    pub is_go: bool,
    /// "script" for a #! file (its interpreter is what runs).
    pub kind: &'static str,
}

/// Inspects `path`. Err is a one-line reason the shim cannot trace it.
pub fn inspect(path: &Path) -> Result<Target, String> {
    let data = std::fs::read(path)
        .map_err(|e| format!("{}: cannot read the program: {e}", path.display()))?;
    if data.starts_with(b"#!") {
        return Ok(Target {
            machine: "script",
            is_static: false,
            is_go: false,
            kind: "script",
        });
    }
    let elf = Elf::parse(&data)
        .map_err(|e| format!("{}: not an ELF program or script ({e})", path.display()))?;
    let machine = match elf.header.e_machine {
        header::EM_X86_64 => "x86_64",
        header::EM_AARCH64 => "aarch64",
        header::EM_386 => "i386",
        header::EM_ARM => "arm",
        header::EM_RISCV => "riscv",
        _ => "unknown",
    };
    let host = std::env::consts::ARCH;
    if machine != host || !elf.is_64 {
        let what = match (machine, elf.is_64) {
            ("x86_64", false) => "x32".to_string(),
            (m, true) => m.to_string(),
            (m, false) => format!("{m} 32-bit"),
        };
        return Err(format!(
            "{}: {what} program, but k3shim traces {host} programs only (it cannot follow the paths of other ABIs' syscalls, so its filter refuses their path syscalls: EPERM for i386, ENOSYS for x32)",
            path.display(),
        ));
    }
    let is_static = elf.interpreter.is_none();
    let is_go = elf.section_headers.iter().any(|s| {
        matches!(
            elf.shdr_strtab.get_at(s.sh_name),
            Some(".go.buildinfo") | Some(".gopclntab")
        )
    });
    Ok(Target {
        machine,
        is_static,
        is_go,
        kind: "elf",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sh_is_a_traceable_dynamic_elf() {
        let t = inspect(Path::new("/bin/sh")).unwrap();
        assert_eq!(t.machine, std::env::consts::ARCH);
        assert!(!t.is_static);
    }

    #[test]
    fn a_text_file_is_refused_with_its_path() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x");
        std::fs::write(&p, "hello").unwrap();
        let e = inspect(&p).unwrap_err();
        assert!(e.contains(p.to_str().unwrap()), "{e}");
    }
}
