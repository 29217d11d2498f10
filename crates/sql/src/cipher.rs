//! The AWS Encryption SDK seen from the SQL side: a narrow [`ValueCipher`] trait (open a stored message with the
//! local key, seal a plaintext under an encryption context), and the one judge that turns a stored column value
//! into a [`Verdict`].
//!
//! The judge decides what is not the cipher's business: NULL is no value and a value that is not an AWS Encryption
//! SDK message is `plaintext`. The cipher checks the row's expected encryption context: a message whose stored
//! context lacks a configured pair (and does not authenticate it as a required pair) or holds another value for it
//! is `integrity_failed` — a ciphertext copied from another row or column decrypts fine, only the context gives it
//! away.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;

use base64::Engine as _;
use ddbguard_dbe::Verdict;
use zeroize::Zeroizing;

use crate::table::Encoding;

/// A boxed future, so that [`ValueCipher`] stays object-safe.
pub type CipherFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An encryption context: the name–value pairs bound to a message.
pub type EncryptionContext = BTreeMap<String, String>;

/// A message opened with the local key.
#[derive(Debug)]
pub struct Opened {
    /// The encryption context stored in the message (including pairs the SDK adds, such as
    /// `aws-crypto-public-key` for signing suites).
    pub context: EncryptionContext,
    /// The decrypted value; wiped when dropped.
    pub plaintext: Zeroizing<Vec<u8>>,
}

/// Why a message could not be sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The key service refused or failed; the message names the key, never the plaintext.
    #[error("cannot encrypt: {0}")]
    Key(String),
    /// The key service throttled beyond the retry budget.
    #[error("cannot encrypt: the key service throttled")]
    Throttled,
}

/// The AWS Encryption SDK operations ddbguard needs, with the table's keyring inside.
pub trait ValueCipher: Send + Sync + Debug {
    /// Decrypts and authenticates `message` with the local key, holding it to the `expected` encryption context
    /// pairs. `Err` carries the failing verdict (`key_not_mrk`, `key_unavailable`, `integrity_failed` — including a
    /// context that does not match —, `policy_violation`, `kms_throttled`).
    fn open<'a>(
        &'a self,
        message: &'a [u8],
        expected: &'a EncryptionContext,
    ) -> CipherFuture<'a, Result<Opened, Verdict>>;

    /// Encrypts `plaintext` under the table's key with `context` bound.
    fn seal<'a>(
        &'a self,
        plaintext: &'a [u8],
        context: &'a EncryptionContext,
    ) -> CipherFuture<'a, Result<Vec<u8>, SealError>>;

    /// Key-service requests one [`open`](Self::open) or [`seal`](Self::seal) costs at most (for the KMS
    /// budget); 1 for a KMS keyring, 0 for a local one.
    fn kms_requests_per_call(&self) -> u32 {
        1
    }
}

/// The algorithm suite ids of the AWS Encryption SDK (message versions 1 and 2).
const SUITES_V1: [u16; 7] = [0x0014, 0x0046, 0x0078, 0x0114, 0x0146, 0x0178, 0x0214];
const SUITES_V1_SIGNED: [u16; 2] = [0x0346, 0x0378];
const SUITES_V2: [u16; 2] = [0x0478, 0x0578];

/// Whether `bytes` start like an AWS Encryption SDK message: version 2 and a committing suite, or version 1, type
/// 0x80 and a known suite. Anything else in a protected column is plaintext.
pub fn looks_like_message(bytes: &[u8]) -> bool {
    let suite = |hi: u8, lo: u8| u16::from_be_bytes([hi, lo]);
    match bytes {
        [0x02, hi, lo, ..] => SUITES_V2.contains(&suite(*hi, *lo)),
        [0x01, 0x80, hi, lo, ..] => {
            let s = suite(*hi, *lo);
            SUITES_V1.contains(&s) || SUITES_V1_SIGNED.contains(&s)
        }
        _ => false,
    }
}

/// A protected column's stored value as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// A text column (base64 encoding).
    Text(String),
    /// A bytea column.
    Bytes(Vec<u8>),
}

impl Stored {
    /// The message bytes, or `None` when the value cannot be a message (not base64 in a base64 column).
    pub fn message_bytes(&self) -> Option<std::borrow::Cow<'_, [u8]>> {
        match self {
            Stored::Text(s) => base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .ok()
                .map(std::borrow::Cow::Owned),
            Stored::Bytes(b) => Some(std::borrow::Cow::Borrowed(b)),
        }
    }

    /// The plaintext bytes the application stored (for a backfill): the text's UTF-8 or the raw bytes.
    pub fn plaintext_bytes(&self) -> &[u8] {
        match self {
            Stored::Text(s) => s.as_bytes(),
            Stored::Bytes(b) => b,
        }
    }

    /// A message stored the way `encoding` says.
    pub fn encode(message: Vec<u8>, encoding: Encoding) -> Stored {
        match encoding {
            Encoding::Base64 => Stored::Text(base64::engine::general_purpose::STANDARD.encode(message)),
            Encoding::Bytea => Stored::Bytes(message),
        }
    }
}

/// The verdict of one stored value, given the context the row should have bound (`None` when a referenced row
/// value is NULL: the application cannot have bound it, so the message belongs elsewhere).
pub async fn judge(cipher: &dyn ValueCipher, stored: &Stored, expected: Option<&EncryptionContext>) -> Verdict {
    let Some(bytes) = stored.message_bytes() else {
        return Verdict::Plaintext;
    };
    if !looks_like_message(&bytes) {
        return Verdict::Plaintext;
    }
    let Some(expected) = expected else {
        return Verdict::IntegrityFailed;
    };
    match cipher.open(&bytes, expected).await {
        Err(verdict) => verdict,
        Ok(_) => Verdict::Ok,
    }
}

/// Every expected pair is stored with the same value; extra stored pairs (the SDK's own) are allowed.
pub fn context_matches(expected: &EncryptionContext, stored: &EncryptionContext) -> bool {
    expected.iter().all(|(k, v)| stored.get(k) == Some(v))
}

#[cfg(any(test, feature = "fake"))]
pub use fake::FakeCipher;

#[cfg(any(test, feature = "fake"))]
mod fake {
    //! A stand-in cipher with the shape of the real one: version-2 header bytes, a key id, the context, the
    //! plaintext and a checksum (no secrecy at all: tests only).

    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use super::*;

    /// An in-memory [`ValueCipher`]: messages name a key id; the cipher opens those of its own key (or keys
    /// that "MRK-match" it, by a shared suffix after `mrk-`), can be made unavailable, and counts its calls.
    #[derive(Debug)]
    pub struct FakeCipher {
        key_id: String,
        unavailable: AtomicBool,
        calls: AtomicU64,
        fail_seal: Mutex<u32>,
    }

    impl FakeCipher {
        /// A cipher for `key_id` (e.g. `mrk-1234` in us-east-1 and ap-southeast-2 alike).
        pub fn new(key_id: &str) -> FakeCipher {
            FakeCipher {
                key_id: key_id.to_owned(),
                unavailable: AtomicBool::new(false),
                calls: AtomicU64::new(0),
                fail_seal: Mutex::new(0),
            }
        }

        /// Makes the key unavailable (`key_unavailable`), as a disabled replica would.
        pub fn set_unavailable(&self, unavailable: bool) {
            self.unavailable.store(unavailable, Ordering::SeqCst);
        }

        /// The next `n` seals fail.
        pub fn fail_next_seals(&self, n: u32) {
            *self.fail_seal.lock().unwrap_or_else(|e| e.into_inner()) = n;
        }

        /// `open` and `seal` calls so far.
        pub fn calls(&self) -> u64 {
            self.calls.load(Ordering::SeqCst)
        }

        /// A message under `key_id` with `context` bound, as another writer (e.g. with another key) would make.
        pub fn message(key_id: &str, context: &EncryptionContext, plaintext: &[u8]) -> Vec<u8> {
            let mut out = vec![0x02, 0x04, 0x78];
            let ctx = serde_json::to_vec(context).unwrap_or_default();
            for field in [key_id.as_bytes(), &ctx, plaintext] {
                out.extend_from_slice(&(field.len() as u32).to_be_bytes());
                out.extend_from_slice(field);
            }
            let sum = checksum(&out);
            out.extend_from_slice(&sum.to_be_bytes());
            out
        }
    }

    fn checksum(bytes: &[u8]) -> u64 {
        // FNV-1a: enough to notice a flipped bit in a test.
        bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
        })
    }

    fn fields(message: &[u8]) -> Option<(String, EncryptionContext, Vec<u8>)> {
        let (body, sum) = message.split_at_checked(message.len().checked_sub(8)?)?;
        if checksum(body) != u64::from_be_bytes(sum.try_into().ok()?) {
            return None;
        }
        let mut rest = body.get(3..)?;
        let mut next = || {
            let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
            let field = rest.get(4..4 + len)?.to_vec();
            rest = &rest[4 + len..];
            Some(field)
        };
        let key = String::from_utf8(next()?).ok()?;
        let ctx = serde_json::from_slice(&next()?).ok()?;
        Some((key, ctx, next()?))
    }

    fn mrk_match(a: &str, b: &str) -> bool {
        let id = |s: &str| s.rsplit_once('/').map_or(s, |(_, id)| id).to_owned();
        let (a, b) = (id(a), id(b));
        a == b && a.starts_with("mrk-")
    }

    impl ValueCipher for FakeCipher {
        fn open<'a>(
            &'a self,
            message: &'a [u8],
            expected: &'a EncryptionContext,
        ) -> CipherFuture<'a, Result<Opened, Verdict>> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                let (key, context, plaintext) = fields(message).ok_or(Verdict::IntegrityFailed)?;
                if key != self.key_id && !mrk_match(&key, &self.key_id) {
                    return Err(Verdict::KeyNotMrk);
                }
                if self.unavailable.load(Ordering::SeqCst) {
                    return Err(Verdict::KeyUnavailable);
                }
                if !context_matches(expected, &context) {
                    return Err(Verdict::IntegrityFailed);
                }
                Ok(Opened {
                    context,
                    plaintext: Zeroizing::new(plaintext),
                })
            })
        }

        fn seal<'a>(
            &'a self,
            plaintext: &'a [u8],
            context: &'a EncryptionContext,
        ) -> CipherFuture<'a, Result<Vec<u8>, SealError>> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                {
                    let mut fail = self.fail_seal.lock().unwrap_or_else(|e| e.into_inner());
                    if *fail > 0 {
                        *fail -= 1;
                        return Err(SealError::Key(format!("{} refused", self.key_id)));
                    }
                }
                if self.unavailable.load(Ordering::SeqCst) {
                    return Err(SealError::Key(format!("{} is disabled", self.key_id)));
                }
                Ok(FakeCipher::message(&self.key_id, context, plaintext))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(id: &str) -> EncryptionContext {
        [("table", "patients"), ("column", "ssn"), ("id", id)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn message_detection_follows_the_header_layout() {
        assert!(looks_like_message(&[0x02, 0x04, 0x78, 0]));
        assert!(looks_like_message(&[0x02, 0x05, 0x78]));
        assert!(looks_like_message(&[0x01, 0x80, 0x03, 0x78]));
        assert!(!looks_like_message(&[0x02, 0x03, 0x78]));
        assert!(!looks_like_message(&[0x01, 0x81, 0x03, 0x78]));
        assert!(!looks_like_message(b"123-45-6789"));
        assert!(!looks_like_message(&[]));
    }

    #[tokio::test]
    async fn verdicts_of_stored_values() {
        let cipher = FakeCipher::new("arn:aws:kms:ap-southeast-2:111122223333:key/mrk-1");
        let good = FakeCipher::message(
            "arn:aws:kms:us-east-1:111122223333:key/mrk-1",
            &ctx("1"),
            b"123-45-6789",
        );
        let b64 = |m: &[u8]| Stored::encode(m.to_vec(), Encoding::Base64);
        assert_eq!(judge(&cipher, &b64(&good), Some(&ctx("1"))).await, Verdict::Ok);
        assert_eq!(
            judge(&cipher, &Stored::Bytes(good.clone()), Some(&ctx("1"))).await,
            Verdict::Ok
        );
        // Moved to row 2: decrypts, but the context says row 1.
        assert_eq!(
            judge(&cipher, &b64(&good), Some(&ctx("2"))).await,
            Verdict::IntegrityFailed
        );
        assert_eq!(judge(&cipher, &b64(&good), None).await, Verdict::IntegrityFailed);
        let mut flipped = good.clone();
        flipped[20] ^= 1;
        assert_eq!(
            judge(&cipher, &b64(&flipped), Some(&ctx("1"))).await,
            Verdict::IntegrityFailed
        );
        let single = FakeCipher::message("arn:aws:kms:us-east-1:111122223333:key/1234", &ctx("1"), b"x");
        assert_eq!(judge(&cipher, &b64(&single), Some(&ctx("1"))).await, Verdict::KeyNotMrk);
        assert_eq!(
            judge(&cipher, &Stored::Text("123-45-6789".into()), Some(&ctx("1"))).await,
            Verdict::Plaintext
        );
        assert_eq!(
            judge(&cipher, &Stored::Text("aGVsbG8=".into()), Some(&ctx("1"))).await,
            Verdict::Plaintext
        );
        cipher.set_unavailable(true);
        assert_eq!(
            judge(&cipher, &b64(&good), Some(&ctx("1"))).await,
            Verdict::KeyUnavailable
        );
    }

    #[test]
    fn extra_stored_pairs_are_allowed_missing_ones_are_not() {
        let mut stored = ctx("1");
        stored.insert("aws-crypto-public-key".into(), "A…".into());
        assert!(context_matches(&ctx("1"), &stored));
        stored.remove("id");
        assert!(!context_matches(&ctx("1"), &stored));
    }
}
