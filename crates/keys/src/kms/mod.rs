//! AWS KMS: the client discipline every KMS call goes through, and the MRK keyrings built on it.
//!
//! Module map:
//! - [`api`]: the narrow [`KmsApi`] trait (Decrypt, GenerateDataKey, GenerateDataKeyWithoutPlaintext, ReEncrypt,
//!   DescribeKey);
//! - `sdk` (feature `aws`, on by default): `SdkKms`, the trait's `aws-sdk-kms` implementation;
//! - [`error`]: [`KmsError`] and its classification (`key_unavailable/<reason>`, `integrity_failed`,
//!   `throttled`, …);
//! - [`governor`]: [`GovernedKms`], which rate-limits ([`RateLimiter`], one per process), retries throttles with
//!   jittered backoff inside a budget ([`RetryPolicy`]) and counts calls ([`KmsCounters`], and the
//!   `ddbguard_kms_requests_total{region,operation,outcome}` metric);
//! - [`cache`]: [`KeyCache`], a bounded TTL cache of unwrapped intermediate keys;
//! - [`keyring`]: [`MrkKeyring`] (`kms-mrk`) and [`MrkDiscoveryKeyring`] (`kms-mrk-discovery`), which are keyrings
//!   of both the item format (`ddbguard_dbe::Keyring`) and the message format (`ddbguard_esdk::Keyring`);
//! - [`ddbec`]: [`DirectKmsProvider`], the legacy DynamoDB Encryption Client's direct KMS provider;
//! - [`check`]: [`check::check_keys`], the per-region state and round-trip matrix of `ddbguard keys check`;
//! - `fake` (feature `fake`): an in-memory multi-region KMS and a fault-injecting wrapper for tests.

pub mod api;
pub mod cache;
pub mod check;
mod dbe;
pub mod ddbec;
pub mod error;
mod esdk;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod governor;
pub mod keyring;
#[cfg(feature = "aws")]
pub mod sdk;

pub use api::{DataKey, EncryptionContext, KeyDescription, KmsApi, KmsFuture, ReEncryptRequest, WrappedKey};
pub use cache::KeyCache;
pub use ddbec::DirectKmsProvider;
pub use error::{KmsError, KmsErrorKind, Operation, UnavailableReason};
pub use governor::{GovernedKms, KmsCounters, RateLimiter, RetryPolicy};
pub use keyring::{DiscoveryFilter, EdkRef, GeneratedIkm, Ikm, KmsKeyringError, MrkDiscoveryKeyring, MrkKeyring};
#[cfg(feature = "aws")]
pub use sdk::SdkKms;
