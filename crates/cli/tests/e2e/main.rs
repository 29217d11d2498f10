//! End-to-end tests against the local two-region AWS environment (`scripts/local-aws`), through the Rust SDK.
//!
//! One test binary; each module is one area. Every test uses its own keys and tables (unique names) and
//! table-scoped replication knobs, so tests are independent under `cargo test` (one environment per process,
//! tests in parallel threads) and under `cargo nextest` (one environment per test process).

mod audit;
mod backfill;
mod canary;
mod cli;
mod ddbec_interop;
mod esdk_interop;
mod global_tables;
mod hierarchy;
mod keys_kms;
mod kms_mrk;
mod local_env;
mod quarantine;
mod sql;
mod verify;
