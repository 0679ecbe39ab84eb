pub mod gate;
pub mod hooks;
pub mod timeline;
pub mod timeline_report;
