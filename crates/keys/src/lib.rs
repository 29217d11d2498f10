//! placeholder
pub mod arn;
pub mod kms;
