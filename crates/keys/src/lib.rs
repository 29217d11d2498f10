//! Keyrings for ddbguard: raw AES, hierarchical (branch keys), AWS KMS multi-Region keys.
//!
//! Feature `aws` (default) adds what talks to AWS: `kms::SdkKms`, the DynamoDB branch key store (`keystore`)
//! and the legacy client's metastore (`metastore`). Without it the crate has no AWS SDK in its graph, for users of the keyrings alone (the fuzz
//! targets).

pub mod arn;
pub mod hierarchy;
#[cfg(feature = "aws")]
pub mod keystore;
pub mod kms;
#[cfg(feature = "aws")]
mod load_cache;
#[cfg(feature = "aws")]
pub mod metastore;
pub mod raw_aes;

pub use hierarchy::{BranchKey, BranchKeySource, HierarchyKeyring, StaticBranchKeySource};
pub use raw_aes::RawAesKeyring;

#[cfg(test)]
pub(crate) mod test_metrics {
    /// The value of the one sample of `series` (name and labels as rendered) in Prometheus text.
    pub(crate) fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }
}
