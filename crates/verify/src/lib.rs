//! The `ddbguard verify` verdict engine and its operational surface.
//!
//! Every stream record gets exactly one [`Verdict`](ddbguard_dbe::Verdict) of architecture §4; the verdict
//! vocabulary itself lives in `ddbguard-dbe` so that item-format errors can name their verdict.
//!
//! - [`convert`]: stream images (`aws_sdk_dynamodbstreams` attribute values) to the `ddbguard-dbe` item model.
//! - [`policy`]: [`VerifyPolicy`], what a table's records must look like (actions, required-encrypted attributes,
//!   suite, KMS key, sample rate).
//! - [`engine`]: [`Verifier`], one record in, one [`RecordOutcome`] out, with the `ddbguard_records_total` metric
//!   and the `alert` log event.
//! - [`sink`]: [`VerifySink`], the stream reader's `RecordSink`, and the run's [`VerifySummary`].
//! - [`http`]: the `/metrics`, `/healthz` and `/readyz` endpoint.
//! - [`service`]: the verify service: one table's stream verified with injected AWS clients and a shutdown
//!   future, returning a [`VerifyReport`](service::VerifyReport).

pub mod convert;
pub mod engine;
pub mod http;
pub mod policy;
pub mod service;
pub mod sink;

pub use engine::{RecordOutcome, Verifier, verdict_passes};
pub use policy::{PolicyError, VerifyPolicy};
pub use sink::{GapSummary, VerifySink, VerifySummary};

#[cfg(test)]
mod tests;
