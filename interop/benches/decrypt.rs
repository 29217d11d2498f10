//! Decrypt-and-verify cost per item, ddbguard against the official `aws-db-esdk` crate, on the very same
//! encrypted items (written by the official crate), for suites 0x6700 and 0x6701, in one run.
//!
//! The item has 9 attributes (partition and sort key, four ENCRYPT_AND_SIGN, three SIGN_ONLY), about
//! 400 bytes encrypted. Both sides use a raw AES keyring. After the measurements the bench prints a
//! table of mean µs/item per suite and side, the ratio, and the peak RSS of this process.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use criterion::{BatchSize, Criterion};

fn config(suite: AlgorithmSuite) -> TableConfig {
    let actions = [
        ("pk", CryptoAction::SignOnly),
        ("sk", CryptoAction::SignOnly),
        ("name", CryptoAction::EncryptAndSign),
        ("email", CryptoAction::EncryptAndSign),
        ("address", CryptoAction::EncryptAndSign),
        ("balance", CryptoAction::EncryptAndSign),
        ("tags", CryptoAction::SignOnly),
        ("created", CryptoAction::SignOnly),
        ("status", CryptoAction::SignOnly),
    ];
    TableConfig {
        logical_table_name: "Customers".to_owned(),
        partition_key: "pk".to_owned(),
        sort_key: Some("sk".to_owned()),
        attribute_actions: actions.into_iter().map(|(n, a)| (n.to_owned(), a)).collect(),
        allowed_unsigned_attributes: BTreeSet::new(),
        allowed_unsigned_attribute_prefix: None,
        algorithm_suite: suite,
    }
}

fn item() -> Item {
    let s = |v: &str| AttributeValue::S(v.to_owned());
    Item::from([
        ("pk".to_owned(), s("customer#000471142")),
        ("sk".to_owned(), AttributeValue::N("20240611".to_owned())),
        ("name".to_owned(), s("Dr. Josephine Quartermaine-Øverland")),
        ("email".to_owned(), s("josephine.quartermaine@example.com")),
        (
            "address".to_owned(),
            AttributeValue::M(BTreeMap::from([
                ("street".to_owned(), s("1428 Elm Street, Apartment 12B")),
                ("city".to_owned(), s("Springwood")),
                ("zip".to_owned(), s("43210-1234")),
                ("country".to_owned(), s("US")),
            ])),
        ),
        ("balance".to_owned(), AttributeValue::N("1234567.89".to_owned())),
        (
            "tags".to_owned(),
            AttributeValue::Ss(vec!["gold".to_owned(), "newsletter".to_owned(), "vip".to_owned()]),
        ),
        ("created".to_owned(), s("2024-06-11T09:30:00Z")),
        ("status".to_owned(), s("active")),
    ])
}

fn encrypted_size(item: &Item) -> usize {
    fn size(v: &AttributeValue) -> usize {
        match v {
            AttributeValue::S(s) | AttributeValue::N(s) => s.len(),
            AttributeValue::B(b) => b.len(),
            AttributeValue::Bool(_) | AttributeValue::Null => 1,
            AttributeValue::Ss(v) | AttributeValue::Ns(v) => v.iter().map(String::len).sum(),
            AttributeValue::Bs(v) => v.iter().map(Vec::len).sum(),
            AttributeValue::M(m) => m.iter().map(|(k, v)| k.len() + size(v)).sum(),
            AttributeValue::L(l) => l.iter().map(size).sum(),
        }
    }
    item.iter().map(|(k, v)| k.len() + size(v)).sum()
}

const SUITES: [(&str, AlgorithmSuite); 2] = [
    ("0x6700", AlgorithmSuite::HmacOnly),
    ("0x6701", AlgorithmSuite::EcdsaP384),
];

fn bench(c: &mut Criterion) {
    // A current-thread runtime: neither side does I/O with a raw AES keyring, and it keeps the
    // per-call overhead of `block_on` out of ddbguard's few microseconds.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    for (name, suite) in SUITES {
        let cfg = config(suite);
        let official = rt.block_on(official::client(&cfg)).expect("official client");
        let keyring = ours::keyring();
        let encrypted = rt
            .block_on(official::encrypt_with(&official, &item()))
            .expect("official encrypt");
        // Both sides decrypt the item to the same plaintext before anything is timed.
        let a = rt
            .block_on(official::decrypt_with(&official, &encrypted))
            .expect("official decrypt");
        let b = rt
            .block_on(ours::decrypt_with(&cfg, &keyring, &encrypted))
            .expect("ddbguard decrypt");
        assert_eq!(canon_item(&a), canon_item(&b), "decrypted items differ");
        println!(
            "suite {name}: {} attributes, {} bytes encrypted",
            encrypted.len() - 2,
            encrypted_size(&encrypted)
        );

        let official_form = to_official_item(&encrypted);
        let mut group = c.benchmark_group(format!("decrypt_{name}"));
        group.bench_function("official", |b| {
            b.iter_batched(
                || official_form.clone(),
                |item| {
                    rt.block_on(official::decrypt_official_with(&official, item))
                        .expect("official decrypt")
                },
                BatchSize::SmallInput,
            )
        });
        group.bench_function("ddbguard", |b| {
            b.iter(|| {
                rt.block_on(ours::decrypt_with(&cfg, &keyring, &encrypted))
                    .expect("ddbguard decrypt")
            })
        });
        group.finish();
    }
}

/// Mean time in µs from criterion's saved estimate for one benchmark, if present.
fn mean_us(dir: &Path, group: &str, function: &str) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join(group).join(function).join("new").join("estimates.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(json["mean"]["point_estimate"].as_f64()? / 1000.0)
}

/// Peak resident set size of this process in kB (Linux).
fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() {
    let dir = std::env::var_os("CRITERION_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| "target".into());
            target.join("criterion")
        });
    let mut c = Criterion::default()
        .output_directory(&dir)
        .without_plots()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench(&mut c);
    c.final_summary();

    println!();
    println!(
        "{:<8} {:>13} {:>13} {:>8}",
        "suite", "official µs", "ddbguard µs", "ratio"
    );
    for (name, _) in SUITES {
        let group = format!("decrypt_{name}");
        match (mean_us(&dir, &group, "official"), mean_us(&dir, &group, "ddbguard")) {
            (Some(o), Some(d)) => println!("{name:<8} {o:>13.1} {d:>13.2} {:>7.1}x", o / d),
            _ => println!("{name:<8} (no estimates in {})", dir.display()),
        }
    }
    match peak_rss_kb() {
        Some(kb) => println!("peak RSS of the bench process: {:.1} MiB", kb as f64 / 1024.0),
        None => println!("peak RSS of the bench process: unknown (no /proc/self/status)"),
    }
}
