//! The `ddbguard verify` verdict engine and its operational surface.
//!
//! This crate will own the record -> verdict decision, the table policy, sampling, canaries, the
//! origin x replica matrix, metrics and quarantine (architecture §4). The verdict vocabulary itself
//! lives in [`ddbguard_dbe::Verdict`] so that item-format errors can name their verdict.
//!
//! - [`http`]: the `/metrics`, `/healthz` and `/readyz` endpoint.

pub mod http;
