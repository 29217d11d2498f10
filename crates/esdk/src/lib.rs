//! The AWS Encryption SDK message format, natively: decrypt, verify, inspect and encrypt messages.
//!
//! What the official SDKs (Python, Java, …, 2.x and later) write under a multi-Region KMS key — an application's
//! encrypted database column, say — is read and checked here without the SDK, with the same verdict contract as the
//! DynamoDB item format ([`ddbguard_dbe::Verdict`] / [`ddbguard_dbe::Reason`]). No I/O: keys come through the
//! [`Keyring`] trait (implemented for KMS and raw AES in `ddbguard-keys`).
//!
//! - [`decrypt`] (a whole message) and [`Decryptor`] (push-based, at most the header plus one frame in memory)
//!   verify key commitment, the header tag, every frame, and the signature of signing suites.
//! - [`encrypt`] writes message format version 2 under 0x0578 (default) or 0x0478, framed (4096-byte frames,
//!   as the official SDKs) or non-framed.
//! - [`inspect`] checks a message's structure without its key.
//! - Version-1 messages and the non-committing suites are read but never written; [`DecryptOptions`]'s
//!   `require_commitment` (the default, as the SDKs' `REQUIRE_ENCRYPT_REQUIRE_DECRYPT`) makes them a
//!   `policy_violation` (`not_committing`).
//!
//! Byte-level reference: the public specification (`aws-encryption-sdk-specification`: `data-format/`,
//! `framework/algorithm-suites.md`, `client-apis/`); `docs/ESDK.md` summarizes what is supported.

#![warn(missing_docs)]

mod crypto;
mod decrypt;
mod encrypt;
mod error;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
mod header;
mod keyring;
mod suite;

pub use crypto::{COMMITMENT_LEN, IV_LEN, TAG_LEN};
pub use ddbguard_dbe::{EncryptionContext, KeyringError, KeyringFuture, Reason, Verdict};
pub use decrypt::{
    DEFAULT_MAX_BUFFER, DecryptOptions, Decrypted, Decryptor, EC_PUBLIC_KEY, MessageInfo, RESERVED_EC_PREFIX, decrypt,
    inspect,
};
pub use encrypt::{DEFAULT_FRAME_LENGTH, EncryptOptions, encrypt};
pub use error::{EsdkError, Part};
pub use header::{ContentType, Header, MESSAGE_ID_LEN_V1, MESSAGE_ID_LEN_V2, serialize_context};
pub use keyring::{DataKey, DecryptedDataKey, EncryptedDataKey, GeneratedDataKey, Keyring};
pub use suite::{AlgorithmSuite, Kdf, SignatureAlgorithm};

#[cfg(test)]
mod tests;
