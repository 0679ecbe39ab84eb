//! The credentials of a traced thread, for fakefs's permission checks
//! (procfs checks the caller's effective ids and capabilities, not the
//! tracer's).

/// The thread's credentials from /proc/TID/status (None if it is gone).
pub fn of_thread(tid: i32) -> Option<fakefs::Caller> {
    let text = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    fakefs::Caller::from_status(&text)
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_threads_credentials_are_read_from_proc() {
        // SAFETY: gettid and geteuid have no preconditions.
        let (tid, euid) = unsafe { (libc::gettid(), libc::geteuid()) };
        let me = super::of_thread(tid).expect("own status");
        assert_eq!(me.euid, euid);
        assert!(super::of_thread(-1).is_none());
    }
}
