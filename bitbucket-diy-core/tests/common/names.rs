//! Database names unique to one test of one run, so tests run in parallel and reruns never meet
//! a leftover of an earlier run.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// `bbdiy_<pid>_<run>_<n>_<test>_<purpose>`, lower-case, at most 63 bytes (PostgreSQL's limit;
/// MySQL's is 64).
pub fn unique_name(test: &str, purpose: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    static RUN: OnceLock<String> = OnceLock::new();
    let run = RUN.get_or_init(|| {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        format!("{:x}", nanos % 0x10_0000)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tail: String = format!("{test}_{purpose}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .collect();
    let mut name = format!("bbdiy_{}_{run}_{n}_{tail}", std::process::id());
    name.truncate(63);
    name
}
