//! In-memory stand-ins for KMS: [`FakeKmsWorld`] (keys and replicas in several regions, key states, ciphertexts
//! bound to their encryption context) and [`FailureKms`] (injects service errors into any [`KmsApi`]).
//!
//! The fake follows KMS semantics where the keyrings depend on them: a key ARN must name a key in the client's
//! region (else `NotFoundException`), disabled keys answer `DisabledException`, keys pending deletion
//! `KMSInvalidStateException`, a ciphertext opens only with the same encryption context
//! (`InvalidCiphertextException`) and only under a key with the same identity, i.e. the same MRK in any region
//! (`IncorrectKeyException`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};

use zeroize::Zeroizing;

use super::api::{DataKey, EncryptionContext, KeyDescription, KmsApi, KmsFuture, ReEncryptRequest, WrappedKey};
use super::error::{KmsError, Operation};
use crate::arn::KmsArn;

/// The state of a fake key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeKeyState {
    /// Usable.
    Enabled,
    /// `DisabledException`.
    Disabled,
    /// `KMSInvalidStateException` (pending deletion).
    PendingDeletion,
}

/// What the fake remembers about a ciphertext blob: (key identity, encryption context, plaintext).
type BlobRecord = (String, EncryptionContext, Zeroizing<Vec<u8>>);

#[derive(Default)]
struct World {
    /// Key ARN -> state.
    keys: BTreeMap<String, FakeKeyState>,
    /// Blob -> (key identity, encryption context, plaintext).
    blobs: HashMap<Vec<u8>, BlobRecord>,
    next: u64,
}

/// A fake KMS spanning regions; make per-region clients with [`FakeKmsWorld::client`].
#[derive(Default)]
pub struct FakeKmsWorld {
    world: Mutex<World>,
}

impl fmt::Debug for FakeKmsWorld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.world.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("FakeKmsWorld")
            .field("keys", &w.keys)
            .finish_non_exhaustive()
    }
}

/// The identity shared by all replicas of an MRK (and by nothing else for a single-region key).
fn identity(arn: &KmsArn) -> String {
    if arn.is_mrk() {
        format!("{}:{}:{}", arn.partition(), arn.account(), arn.resource_id())
    } else {
        arn.to_string()
    }
}

impl FakeKmsWorld {
    /// An empty world.
    pub fn new() -> Arc<FakeKmsWorld> {
        Arc::new(FakeKmsWorld::default())
    }

    /// Creates an enabled key (or MRK replica) with this ARN.
    pub fn create_key(&self, arn: &str) {
        KmsArn::parse_key(arn).expect("fake keys need key ARNs");
        self.lock().keys.insert(arn.to_owned(), FakeKeyState::Enabled);
    }

    /// Changes a key's state.
    pub fn set_state(&self, arn: &str, state: FakeKeyState) {
        self.lock().keys.insert(arn.to_owned(), state);
    }

    /// Deletes a key outright (later calls answer `NotFoundException`).
    pub fn remove_key(&self, arn: &str) {
        self.lock().keys.remove(arn);
    }

    /// A client for `region`.
    pub fn client(self: &Arc<FakeKmsWorld>, region: &str) -> FakeKms {
        FakeKms {
            world: self.clone(),
            region: region.to_owned(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A one-region client of a [`FakeKmsWorld`].
#[derive(Debug, Clone)]
pub struct FakeKms {
    world: Arc<FakeKmsWorld>,
    region: String,
}

impl FakeKms {
    fn err(&self, op: Operation, key_id: &str, code: &str, message: &str) -> KmsError {
        KmsError::from_code(op, &self.region, key_id, Some(code), Some(400), Some(message))
    }

    /// Resolves a usable key in this region: (ARN, identity).
    fn usable(&self, op: Operation, key_id: &str, w: &World) -> Result<KmsArn, KmsError> {
        let arn = KmsArn::parse_key(key_id)
            .map_err(|e| self.err(op, key_id, "NotFoundException", &format!("Invalid keyId {key_id}: {e}")))?;
        if arn.region() != self.region {
            return Err(self.err(
                op,
                key_id,
                "NotFoundException",
                &format!("Key '{key_id}' does not exist"),
            ));
        }
        match w.keys.get(key_id) {
            None => Err(self.err(
                op,
                key_id,
                "NotFoundException",
                &format!("Key '{key_id}' does not exist"),
            )),
            Some(FakeKeyState::Disabled) => {
                Err(self.err(op, key_id, "DisabledException", &format!("{key_id} is disabled.")))
            }
            Some(FakeKeyState::PendingDeletion) => Err(self.err(
                op,
                key_id,
                "KMSInvalidStateException",
                &format!("{key_id} is pending deletion."),
            )),
            Some(FakeKeyState::Enabled) => Ok(arn),
        }
    }

    fn generate(&self, op: Operation, key_id: &str, n: i32, ec: &EncryptionContext) -> Result<DataKey, KmsError> {
        let mut w = self.world.lock();
        let arn = self.usable(op, key_id, &w)?;
        let len = usize::try_from(n).unwrap_or(0);
        let mut plaintext = Zeroizing::new(vec![0u8; len]);
        rand::fill(&mut plaintext[..]);
        w.next += 1;
        let mut blob = format!("fake-kms-blob/{}/", w.next).into_bytes();
        let mut nonce = [0u8; 16];
        rand::fill(&mut nonce);
        blob.extend_from_slice(&nonce);
        w.blobs
            .insert(blob.clone(), (identity(&arn), ec.clone(), plaintext.clone()));
        Ok(DataKey {
            key_id: arn.to_string(),
            plaintext,
            ciphertext: blob,
        })
    }
}

impl KmsApi for FakeKms {
    fn region(&self) -> &str {
        &self.region
    }

    fn decrypt<'a>(&'a self, key_id: &'a str, ct: &'a [u8], ec: &'a EncryptionContext) -> KmsFuture<'a, DataKey> {
        Box::pin(async move {
            let op = Operation::Decrypt;
            let w = self.world.lock();
            let arn = self.usable(op, key_id, &w)?;
            let Some((id, blob_ec, pt)) = w.blobs.get(ct) else {
                return Err(self.err(op, key_id, "InvalidCiphertextException", ""));
            };
            if *id != identity(&arn) {
                return Err(self.err(op, key_id, "IncorrectKeyException", "blob belongs to another key"));
            }
            if blob_ec != ec {
                return Err(self.err(op, key_id, "InvalidCiphertextException", ""));
            }
            Ok(DataKey {
                key_id: arn.to_string(),
                plaintext: pt.clone(),
                ciphertext: Vec::new(),
            })
        })
    }

    fn generate_data_key<'a>(&'a self, key_id: &'a str, n: i32, ec: &'a EncryptionContext) -> KmsFuture<'a, DataKey> {
        Box::pin(async move { self.generate(Operation::GenerateDataKey, key_id, n, ec) })
    }

    fn generate_data_key_without_plaintext<'a>(
        &'a self,
        key_id: &'a str,
        n: i32,
        ec: &'a EncryptionContext,
    ) -> KmsFuture<'a, WrappedKey> {
        Box::pin(async move {
            let dk = self.generate(Operation::GenerateDataKeyWithoutPlaintext, key_id, n, ec)?;
            Ok(WrappedKey {
                key_id: dk.key_id,
                ciphertext: dk.ciphertext,
            })
        })
    }

    fn re_encrypt<'a>(&'a self, r: ReEncryptRequest<'a>) -> KmsFuture<'a, WrappedKey> {
        Box::pin(async move {
            let op = Operation::ReEncrypt;
            let plaintext = {
                let w = self.world.lock();
                let source = self.usable(op, r.source_key_id, &w)?;
                let Some((id, blob_ec, pt)) = w.blobs.get(r.ciphertext) else {
                    return Err(self.err(op, r.source_key_id, "InvalidCiphertextException", ""));
                };
                if *id != identity(&source) {
                    return Err(self.err(
                        op,
                        r.source_key_id,
                        "IncorrectKeyException",
                        "blob belongs to another key",
                    ));
                }
                if blob_ec != r.source_encryption_context {
                    return Err(self.err(op, r.source_key_id, "InvalidCiphertextException", ""));
                }
                pt.clone()
            };
            let mut w = self.world.lock();
            let dest = self.usable(op, r.destination_key_id, &w)?;
            w.next += 1;
            let mut blob = format!("fake-kms-blob/{}/", w.next).into_bytes();
            let mut nonce = [0u8; 16];
            rand::fill(&mut nonce);
            blob.extend_from_slice(&nonce);
            w.blobs.insert(
                blob.clone(),
                (identity(&dest), r.destination_encryption_context.clone(), plaintext),
            );
            Ok(WrappedKey {
                key_id: dest.to_string(),
                ciphertext: blob,
            })
        })
    }

    fn describe_key<'a>(&'a self, key_id: &'a str) -> KmsFuture<'a, KeyDescription> {
        Box::pin(async move {
            let op = Operation::DescribeKey;
            let w = self.world.lock();
            let arn =
                KmsArn::parse_key(key_id).map_err(|e| self.err(op, key_id, "NotFoundException", &e.to_string()))?;
            let state = match (arn.region() == self.region).then(|| w.keys.get(key_id)).flatten() {
                None => return Err(self.err(op, key_id, "NotFoundException", "Key does not exist")),
                Some(FakeKeyState::Enabled) => "Enabled",
                Some(FakeKeyState::Disabled) => "Disabled",
                Some(FakeKeyState::PendingDeletion) => "PendingDeletion",
            };
            let id = identity(&arn);
            let replica_regions = if arn.is_mrk() {
                w.keys
                    .keys()
                    .filter_map(|k| KmsArn::parse(k).ok())
                    .filter(|k| identity(k) == id)
                    .map(|k| k.region().to_owned())
                    .collect()
            } else {
                Vec::new()
            };
            Ok(KeyDescription {
                arn: key_id.to_owned(),
                state: state.to_owned(),
                multi_region: arn.is_mrk(),
                replica_regions,
            })
        })
    }
}

/// Wraps a [`KmsApi`] and fails chosen calls with chosen service errors (mountpoint-s3's failure client, for
/// KMS). Injected failures are consumed in order per operation; once exhausted, calls pass through.
#[derive(Debug)]
pub struct FailureKms {
    inner: Arc<dyn KmsApi>,
    plan: Mutex<HashMap<Operation, VecDeque<(String, u16)>>>,
    calls: Mutex<HashMap<Operation, u64>>,
}

impl FailureKms {
    /// Passes everything through until failures are injected.
    pub fn new(inner: Arc<dyn KmsApi>) -> FailureKms {
        FailureKms {
            inner,
            plan: Mutex::new(HashMap::new()),
            calls: Mutex::new(HashMap::new()),
        }
    }

    /// Makes the next `times` calls to `op` fail with service error `code` (HTTP `status`).
    pub fn fail_next(&self, op: Operation, times: usize, code: &str, status: u16) {
        let mut p = self.plan.lock().unwrap_or_else(|e| e.into_inner());
        let q = p.entry(op).or_default();
        q.extend(std::iter::repeat_n((code.to_owned(), status), times));
    }

    /// Calls made to `op` (failed or not).
    pub fn calls(&self, op: Operation) -> u64 {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&op)
            .copied()
            .unwrap_or(0)
    }

    fn check(&self, op: Operation, key_id: &str) -> Result<(), KmsError> {
        *self
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(op)
            .or_default() += 1;
        let next = self
            .plan
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&op)
            .and_then(VecDeque::pop_front);
        match next {
            Some((code, status)) => Err(KmsError::from_code(
                op,
                self.inner.region(),
                key_id,
                Some(&code),
                Some(status),
                Some("injected failure"),
            )),
            None => Ok(()),
        }
    }
}

impl KmsApi for FailureKms {
    fn region(&self) -> &str {
        self.inner.region()
    }

    fn decrypt<'a>(&'a self, key_id: &'a str, ct: &'a [u8], ec: &'a EncryptionContext) -> KmsFuture<'a, DataKey> {
        match self.check(Operation::Decrypt, key_id) {
            Ok(()) => self.inner.decrypt(key_id, ct, ec),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }

    fn generate_data_key<'a>(&'a self, key_id: &'a str, n: i32, ec: &'a EncryptionContext) -> KmsFuture<'a, DataKey> {
        match self.check(Operation::GenerateDataKey, key_id) {
            Ok(()) => self.inner.generate_data_key(key_id, n, ec),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }

    fn generate_data_key_without_plaintext<'a>(
        &'a self,
        key_id: &'a str,
        n: i32,
        ec: &'a EncryptionContext,
    ) -> KmsFuture<'a, WrappedKey> {
        match self.check(Operation::GenerateDataKeyWithoutPlaintext, key_id) {
            Ok(()) => self.inner.generate_data_key_without_plaintext(key_id, n, ec),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }

    fn describe_key<'a>(&'a self, key_id: &'a str) -> KmsFuture<'a, KeyDescription> {
        match self.check(Operation::DescribeKey, key_id) {
            Ok(()) => self.inner.describe_key(key_id),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }

    fn re_encrypt<'a>(&'a self, request: ReEncryptRequest<'a>) -> KmsFuture<'a, WrappedKey> {
        match self.check(Operation::ReEncrypt, request.source_key_id) {
            Ok(()) => self.inner.re_encrypt(request),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }
}
