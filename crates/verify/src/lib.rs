//! The `ddbguard verify` verdict engine and its operational surface.
//!
//! Every stream record gets exactly one [`Verdict`](ddbguard_dbe::Verdict) and [`Reason`](ddbguard_dbe::Reason) of
//! architecture §4; the vocabulary itself lives in `ddbguard-dbe` so that item-format errors can name their
//! verdict, and so does the table policy ([`TablePolicy`](ddbguard_dbe::TablePolicy)).
//!
//! - [`judge`]: [`Judge`], item + policy + keyring → [`Judgement`]: the one place a verdict about an item is
//!   decided, for the stream verifier and `ddbguard item decrypt` alike.
//! - [`convert`]: stream images (`aws_sdk_dynamodbstreams` attribute values) to the `ddbguard-dbe` item model.
//! - [`policy`]: [`VerifyPolicy`], the table policy plus what verification adds (KMS key, sample rate).
//! - [`engine`]: [`Verifier`], one stream record in (event name, NEW image, conversion, sampling, then the judge),
//!   one [`RecordOutcome`] out, with the `ddbguard_records_total` metric and the `alert` log event.
//! - [`sink`]: [`VerifySink`], the stream reader's `RecordSink`, and the run's [`VerifySummary`].
//! - [`canary`]: [`Canaries`](canary::Canaries), the encrypted canary item each region writes and every region
//!   watches arrive (lag, missing, verdict), recognised before records are counted.
//! - [`quarantine`]: [`Quarantine`](quarantine::Quarantine), failing records kept with their stored image in a
//!   DynamoDB table, written off the stream's path.
//! - [`http`]: the `/metrics`, `/healthz` and `/readyz` endpoint.
//! - [`emf`]: the metrics as CloudWatch Embedded Metric Format JSON lines (`--emf`).
//! - [`metrics`]: every metric's name, kind and HELP text; `ddbguard_build_info`.
//! - [`service`]: the verify service: one table's stream verified with injected AWS clients and a shutdown
//!   future, returning a [`VerifyReport`](service::VerifyReport).

pub mod canary;
pub mod convert;
pub mod emf;
pub mod engine;
pub mod http;
pub mod judge;
pub mod metrics;
pub mod policy;
pub mod quarantine;
pub mod service;
pub mod sink;

/// The stream record types of [`Verifier::verify`]'s signature.
pub use ddbguard_stream::{EventName, SequenceNumber, StreamRecord};
pub use engine::{RecordOutcome, Verifier};
pub use judge::{Depth, ItemFormat, Judge, Judgement, Plaintext};
pub use policy::{LegacyPolicy, PolicyError, VerifyPolicy};
pub use sink::{GapSummary, VerifySink, VerifySummary};

#[cfg(test)]
mod tests;
