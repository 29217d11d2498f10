//! Decrypt-and-verify and encrypt per item (suites 0x6700 and 0x6701, raw AES keyring: `keyring/mod.rs`) for a 3-, a 9- and a
//! 30-attribute item, each beside its floor: the raw primitives the same record needs, over the same byte
//! counts, timed in the same run (see `common/mod.rs`). Prints a table of mean µs/item, floor and ratio,
//! and the peak RSS of the bench process, after criterion's own report.
//!
//! `cargo bench -p ddbguard-dbe --bench item` (criterion filters work: `-- decrypt_attrs30`).

mod common;
mod keyring;

use std::hint::black_box;
use std::time::Duration;

use common::{SUITES, Shape, criterion_dir, load_average, mean_us, peak_rss_kb, shapes};
use criterion::Criterion;
use ddbguard_dbe::{AlgorithmSuite, decrypt_item, encrypt_item};
use keyring::BenchKeyring;

use zeroize::Zeroizing;

fn bench_shape(c: &mut Criterion, keyring: &BenchKeyring, shape: &Shape, suite_name: &str, suite: AlgorithmSuite) {
    let cfg = shape.config(suite);
    let plain = &shape.item;
    let enc = futures::executor::block_on(encrypt_item(&cfg, keyring, plain)).expect("encrypt");
    let dec = futures::executor::block_on(decrypt_item(&cfg, keyring, &enc)).expect("decrypt");
    assert_eq!(dec.item.len(), plain.len());
    let floor = common::Floor::new(&cfg, &enc);

    let mut g = c.benchmark_group(format!("decrypt_{}_{suite_name}", shape.label));
    g.bench_function("ddbguard", |b| {
        b.iter(|| {
            futures::executor::block_on(decrypt_item(black_box(&cfg), keyring, black_box(&enc))).expect("decrypt")
        })
    });
    g.bench_function("floor", |b| b.iter(|| floor.decrypt()));
    g.finish();

    let mut g = c.benchmark_group(format!("encrypt_{}_{suite_name}", shape.label));
    g.bench_function("ddbguard", |b| {
        b.iter(|| {
            futures::executor::block_on(encrypt_item(black_box(&cfg), keyring, black_box(plain))).expect("encrypt")
        })
    });
    g.bench_function("floor", |b| b.iter(|| floor.encrypt()));
    g.finish();
}

fn main() {
    let dir = criterion_dir();
    let mut c = Criterion::default()
        .output_directory(&dir)
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .configure_from_args();
    let keyring = BenchKeyring::new("bench", "key", Zeroizing::new([7u8; 32]));
    let shapes = shapes();
    for shape in &shapes {
        for (suite_name, suite) in SUITES {
            bench_shape(&mut c, &keyring, shape, suite_name, suite);
        }
    }
    c.final_summary();

    println!();
    println!(
        "{:<8} {:<7} {:<7} {:>12} {:>10} {:>12}",
        "item", "suite", "op", "ddbguard µs", "floor µs", "÷ floor"
    );
    for shape in &shapes {
        for (suite_name, _) in SUITES {
            for op in ["decrypt", "encrypt"] {
                let group = format!("{op}_{}_{suite_name}", shape.label);
                if let (Some(d), Some(f)) = (mean_us(&dir, &group, "ddbguard"), mean_us(&dir, &group, "floor")) {
                    println!(
                        "{:<8} {suite_name:<7} {op:<7} {d:>12.2} {f:>10.2} {:>11.2}x",
                        shape.label,
                        d / f
                    );
                }
            }
        }
    }
    if let Some(kb) = peak_rss_kb() {
        println!("peak RSS of the bench process: {:.1} MiB", kb as f64 / 1024.0);
    }
    if let Some(load) = load_average() {
        println!("load average at the end (1/5/15 min): {load}");
    }
}
