//! What the workspace's benchmarks share: the customer table and its records, and the process measurements
//! (CPU time, RSS) read from `/proc`. Included by path from `crates/verify/benches/pipeline.rs` and
//! `crates/backfill/benches/backfill.rs`, so both measure the same items the same way.

use std::collections::BTreeMap;
use std::time::Duration;

use ddbguard_dbe::{AlgorithmSuite, AttributeValue, CryptoAction, Item, TableConfig};

/// The logical (and physical) table name of the benchmarks' records.
pub const TABLE: &str = "Customers";

pub fn suite_label(suite: AlgorithmSuite) -> String {
    format!("{:#06x}", suite.id())
}

/// The customer table: three encrypted attributes and a map, signed keys, one unsigned note.
pub fn table_config(suite: AlgorithmSuite) -> TableConfig {
    let mut c = TableConfig::new(TABLE, "pk");
    c.sort_key = Some("sk".into());
    c.algorithm_suite = suite;
    for (name, action) in [
        ("pk", CryptoAction::SignOnly),
        ("sk", CryptoAction::SignOnly),
        ("ssn", CryptoAction::EncryptAndSign),
        ("email", CryptoAction::EncryptAndSign),
        ("balance", CryptoAction::EncryptAndSign),
        ("address", CryptoAction::EncryptAndSign),
        ("status", CryptoAction::SignOnly),
        ("tags", CryptoAction::SignOnly),
        ("updated_at", CryptoAction::SignOnly),
        ("note", CryptoAction::DoNothing),
    ] {
        c.attribute_actions.insert(name.into(), action);
    }
    c.allowed_unsigned_attributes.insert("note".into());
    c
}

/// A customer record: 10 attributes, about 240 bytes of plaintext.
pub fn plain_item(i: usize) -> Item {
    let s = |v: String| AttributeValue::S(v);
    let mut address = BTreeMap::new();
    address.insert("street".to_owned(), s(format!("{} Harbour Street", i % 997 + 1)));
    address.insert("city".to_owned(), s(["Sydney", "Dublin", "Boston"][i % 3].to_owned()));
    address.insert("zip".to_owned(), AttributeValue::N(format!("{}", 2000 + i % 7000)));
    let mut item = Item::new();
    item.insert("pk".into(), s(format!("customer#{i:08}")));
    item.insert("sk".into(), AttributeValue::N(format!("{}", 1_700_000_000 + i)));
    item.insert(
        "ssn".into(),
        s(format!(
            "{:03}-{:02}-{:04}",
            i % 900 + 100,
            i % 90 + 10,
            i % 9000 + 1000
        )),
    );
    item.insert("email".into(), s(format!("customer.{i}@example.com")));
    item.insert(
        "balance".into(),
        // Ends in 5: the table stores numbers normalized, and the check compares them as written.
        AttributeValue::N(format!("{}.{}5", i * 37 % 100_000, i % 10)),
    );
    item.insert("address".into(), AttributeValue::M(address));
    item.insert("status".into(), s(["ACTIVE", "SUSPENDED", "CLOSED"][i % 3].to_owned()));
    item.insert(
        "tags".into(),
        AttributeValue::L(vec![s("gold".into()), s(format!("segment-{}", i % 12))]),
    );
    item.insert(
        "updated_at".into(),
        s(format!("2026-01-{:02}T10:{:02}:00Z", i % 28 + 1, i % 60)),
    );
    item.insert("note".into(), s("called about the new statement format".into()));
    item
}

/// Process CPU time (user + system, all threads, finished ones included) from `/proc/self/stat`.
pub fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // Fields after the command name (which may contain spaces): state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // USER_HZ is 100 on Linux (sysconf(_SC_CLK_TCK)); one tick is 10 ms.
    Duration::from_millis(ticks * 10)
}

/// A `/proc/self/status` value in KiB (`VmRSS`, `VmHWM`).
pub fn status_kib(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resets `VmHWM` to the current RSS (Linux ≥ 4.0); `false` if not allowed here.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a count")),
        Err(_) => default,
    }
}

pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, m)| m.trim().to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!("{cpus} CPU(s), {model}")
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}
