//! The k3shim launcher: CLI, readiness gate, hooks, timelines, experiments.
//! It wires fakefs (what /proc/sys looks like) into the shim engine (how
//! syscalls are intercepted).

pub mod bench;
pub mod bench_upstream;
pub mod caller;
pub mod cli;
pub mod config;
pub mod doctor;
pub mod experiment;
pub mod fakefs_cmd;
pub mod gate;
pub mod holds;
pub mod hooks;
pub mod interrupt;
pub mod log;
pub mod mount_backend;
pub mod policy;
pub mod run;
pub mod timeline;
pub mod timeline_cmd;
pub mod timeline_html;
pub mod timeline_report;
pub mod trace;
pub mod trace_classes;
