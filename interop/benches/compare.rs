//! ddbguard against the official `aws-db-esdk` crate, on the very same items, in one run: decrypt-and-verify
//! and encrypt per item for a 3-, a 9- and a 30-attribute item (`crates/dbe/benches/common/mod.rs`),
//! suites 0x6700 and 0x6701, raw AES keyring on both sides, beside the floor (the raw primitives the same
//! record needs, over the same byte counts).
//!
//! The decrypt benchmarks read items the official crate wrote; both sides first decrypt each of them to
//! the same plaintext, and the official crate decrypts what ddbguard writes. After criterion's report the
//! bench prints a table of mean µs/item, the ratios, the floors, the peak RSS of this process and the
//! load average. Run it with `scripts/interop.sh --bench`.
//!
//! Times are the CPU time of the bench thread (`CLOCK_THREAD_CPUTIME_ID`), not wall time, so that other
//! work on a shared machine does not inflate them: both sides run entirely on this thread (a
//! current-thread runtime, no I/O with a raw AES keyring; checked before the measurements).
//! `BENCH_CLOCK=wall` measures wall time instead.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../../crates/dbe/benches/common/mod.rs"]
mod items;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue as Av;
use common::*;
use cpu_time::{ProcessTime, ThreadTime};
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{BatchSize, Criterion};
use items::{Floor, SUITES, Shape, criterion_dir, load_average, mean_us, peak_rss_kb, shapes};
use tokio::runtime::Runtime;

async fn official_encrypt(client: &official::Client, item: HashMap<String, Av>) -> HashMap<String, Av> {
    client
        .encrypt_item()
        .plaintext_item(item)
        .send()
        .await
        .expect("official encrypt")
        .encrypted_item
        .expect("encrypted item")
}

/// CPU time of the calling thread, formatted like wall time.
struct ThreadCpuTime(WallTime);

impl Measurement for ThreadCpuTime {
    type Intermediate = ThreadTime;
    type Value = Duration;

    fn start(&self) -> ThreadTime {
        ThreadTime::now()
    }
    fn end(&self, start: ThreadTime) -> Duration {
        start.elapsed()
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        self.0.formatter()
    }
}

/// Runs `f` `n` times and returns (this thread's CPU time, the process's CPU time, wall time) in µs per
/// call: if the first is well below the second, work ran on other threads and thread CPU time would
/// undercount it.
fn cpu_split(n: u32, mut f: impl FnMut()) -> (f64, f64, f64) {
    let (t, p, w) = (ThreadTime::now(), ProcessTime::now(), Instant::now());
    for _ in 0..n {
        f();
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / f64::from(n);
    (per(t.elapsed()), per(p.elapsed()), per(w.elapsed()))
}

fn bench_shape<M: Measurement>(
    c: &mut Criterion<M>,
    rt: &Runtime,
    shape: &Shape,
    suite_name: &str,
    suite: AlgorithmSuite,
) {
    let cfg = shape.config(suite);
    let official = rt.block_on(official::client(&cfg)).expect("official client");
    let keyring = ours::keyring();
    let plain = &shape.item;

    // The decrypt input: an item the official crate wrote. Both sides read it to the same plaintext,
    // and the official crate reads what ddbguard writes.
    let encrypted = rt
        .block_on(official::encrypt_with(&official, plain))
        .expect("official encrypt");
    let a = rt
        .block_on(official::decrypt_with(&official, &encrypted))
        .expect("official decrypt");
    let b = rt
        .block_on(ours::decrypt_with(&cfg, &keyring, &encrypted))
        .expect("ddbguard decrypt");
    assert_eq!(canon_item(&a), canon_item(&b), "decrypted items differ");
    let ours_encrypted = rt
        .block_on(ours::encrypt_with(&cfg, &keyring, plain))
        .expect("ddbguard encrypt");
    let c_back = rt
        .block_on(official::decrypt_with(&official, &ours_encrypted))
        .expect("official decrypt of ddbguard's item");
    assert_eq!(canon_item(&c_back), canon_item(plain), "round trip differs");
    let floor = Floor::new(&cfg, &encrypted);
    let (attrs, encrypted_attrs) = shape.counts();
    let head = binary(&encrypted, HEADER).map_or(0, <[u8]>::len);
    println!(
        "{} {suite_name}: {attrs} attributes ({encrypted_attrs} encrypted), header {head} B, canonical record {} B",
        shape.label,
        floor.record_len()
    );

    let official_encrypted = to_official_item(&encrypted);
    let official_plain = to_official_item(plain);
    let (thread, process, wall) = cpu_split(50, || {
        rt.block_on(official::decrypt_official_with(&official, official_encrypted.clone()))
            .expect("official decrypt");
        rt.block_on(official_encrypt(&official, official_plain.clone()));
    });
    if thread < 0.95 * process {
        println!(
            "  note: the official crate used other threads: {thread:.0} µs thread CPU, {process:.0} µs process CPU, \
             {wall:.0} µs wall per decrypt + encrypt"
        );
    }
    let mut g = c.benchmark_group(format!("decrypt_{}_{suite_name}", shape.label));
    g.bench_function("official", |b| {
        b.iter_batched(
            || official_encrypted.clone(),
            |item| {
                rt.block_on(official::decrypt_official_with(&official, item))
                    .expect("official decrypt")
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("ddbguard", |b| {
        b.iter(|| {
            rt.block_on(ours::decrypt_with(&cfg, &keyring, &encrypted))
                .expect("ddbguard decrypt")
        })
    });
    g.bench_function("floor", |b| b.iter(|| floor.decrypt()));
    g.finish();

    let mut g = c.benchmark_group(format!("encrypt_{}_{suite_name}", shape.label));
    g.bench_function("official", |b| {
        b.iter_batched(
            || official_plain.clone(),
            |item| rt.block_on(official_encrypt(&official, item)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("ddbguard", |b| {
        b.iter(|| {
            rt.block_on(ours::encrypt_with(&cfg, &keyring, plain))
                .expect("ddbguard encrypt")
        })
    });
    g.bench_function("floor", |b| b.iter(|| floor.encrypt()));
    g.finish();
}

fn run<M: Measurement>(c: Criterion<M>, shapes: &[Shape]) {
    let mut c = c
        .output_directory(&criterion_dir())
        .without_plots()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .configure_from_args();
    // A current-thread runtime: neither side does I/O with a raw AES keyring, all the work stays on this
    // thread, and it keeps the per-call overhead of `block_on` out of ddbguard's few microseconds.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    for shape in shapes {
        for (suite_name, suite) in SUITES {
            bench_shape(&mut c, &rt, shape, suite_name, suite);
        }
    }
    c.final_summary();
}

fn main() {
    let wall = std::env::var("BENCH_CLOCK").is_ok_and(|v| v == "wall");
    let shapes = shapes();
    if wall {
        run(Criterion::default(), &shapes);
    } else {
        run(Criterion::default().with_measurement(ThreadCpuTime(WallTime)), &shapes);
    }
    let dir = criterion_dir();

    println!();
    println!(
        "{:<8} {:<7} {:<7} {:>12} {:>12} {:>8} {:>10} {:>8}",
        "item", "suite", "op", "official µs", "ddbguard µs", "ratio", "floor µs", "÷ floor"
    );
    for shape in &shapes {
        for (suite_name, _) in SUITES {
            for op in ["decrypt", "encrypt"] {
                let group = format!("{op}_{}_{suite_name}", shape.label);
                let m = |f: &str| mean_us(&dir, &group, f);
                match (m("official"), m("ddbguard"), m("floor")) {
                    (Some(o), Some(d), Some(f)) => println!(
                        "{:<8} {suite_name:<7} {op:<7} {o:>12.1} {d:>12.2} {:>7.1}x {f:>10.2} {:>7.2}x",
                        shape.label,
                        o / d,
                        d / f
                    ),
                    _ => println!(
                        "{:<8} {suite_name:<7} {op:<7} (no estimates in {})",
                        shape.label,
                        dir.display()
                    ),
                }
            }
        }
    }
    println!(
        "times: mean {} per item; ratio = official ÷ ddbguard; ÷ floor = ddbguard ÷ floor",
        if wall {
            "wall time"
        } else {
            "CPU time of the bench thread"
        }
    );
    match peak_rss_kb() {
        Some(kb) => println!("peak RSS of the bench process: {:.1} MiB", kb as f64 / 1024.0),
        None => println!("peak RSS of the bench process: unknown (no /proc/self/status)"),
    }
    if let Some(load) = load_average() {
        println!("load average at the end (1/5/15 min): {load}");
    }
}
