//! What the benches share.

/// A field of this process's /proc/self/status in KiB (e.g. "VmRSS:", "VmHWM:").
#[allow(dead_code)] // The ledger bench reads it; the province bench counts its heap.
pub fn status_kib(field: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}
