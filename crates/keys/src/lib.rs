//! Keyrings for ddbguard: raw AES, hierarchical (branch keys), AWS KMS multi-Region keys.

pub mod arn;
pub mod hierarchy;
pub mod keystore;
pub mod kms;
pub mod raw_aes;

pub use hierarchy::{BranchKey, BranchKeySource, HierarchyKeyring, StaticBranchKeySource};
pub use raw_aes::RawAesKeyring;
