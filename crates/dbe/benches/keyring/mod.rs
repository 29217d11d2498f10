//! The bench's keyring: the raw AES-256 keyring's wrapping (MPL `RawAesKeyring` layout), written against
//! `ddbguard-dbe`'s public API so that this crate depends on no other ddbguard crate, not even for benches.
//!
//! It does the same work per item as `ddbguard_keys::RawAesKeyring` (one AES-256-GCM over the 32-byte IKM with
//! the serialized encryption context as AAD, the same provider info layout and sizes), so the figures measure
//! the same thing as before.

use ddbguard_dbe::{
    DbeError, EncryptedDataKey, EncryptionContext, Keyring, KeyringError, KeyringFuture, SecretKey, UnwrappedKey,
    WrappedKey, gcm_open, gcm_seal, random_fill, serialize_context,
};
use zeroize::Zeroizing;

const TAG_BITS: u32 = 128;
const IV_LEN: usize = 12;

/// A raw AES-256-GCM keyring with one wrapping key.
pub struct BenchKeyring {
    namespace: String,
    name: String,
    key: SecretKey,
}

impl std::fmt::Debug for BenchKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BenchKeyring")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl BenchKeyring {
    /// A keyring for wrapping key `key` named `namespace`/`name`.
    pub fn new(namespace: &str, name: &str, key: Zeroizing<[u8; 32]>) -> BenchKeyring {
        BenchKeyring {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            key: SecretKey::new(key),
        }
    }

    fn iv_for<'a>(&self, edk: &'a EncryptedDataKey) -> Option<&'a [u8]> {
        if edk.provider_id != self.namespace {
            return None;
        }
        let rest = edk.provider_info.strip_prefix(self.name.as_bytes())?;
        let (tag_bits, rest) = rest.split_first_chunk::<4>()?;
        let (iv_len, iv) = rest.split_first_chunk::<4>()?;
        (u32::from_be_bytes(*tag_bits) == TAG_BITS
            && u32::from_be_bytes(*iv_len) as usize == IV_LEN
            && iv.len() == IV_LEN)
            .then_some(iv)
    }

    fn unwrap_sync(&self, edks: &[EncryptedDataKey], ec: &EncryptionContext) -> Result<UnwrappedKey, KeyringError> {
        let aad = serialize_context(ec).map_err(|e| KeyringError::Other { message: e.to_string() })?;
        for (index, edk) in edks.iter().enumerate() {
            let Some(iv) = self.iv_for(edk) else { continue };
            if edk.ciphertext.len() != 32 + 16 {
                continue;
            }
            let mut ikm = Zeroizing::new([0u8; 32]);
            ikm.copy_from_slice(&edk.ciphertext[..32]);
            let mut nonce = [0u8; IV_LEN];
            nonce.copy_from_slice(iv);
            if gcm_open(&self.key, &nonce, &aad, &mut ikm[..], &edk.ciphertext[32..]) {
                return Ok(UnwrappedKey {
                    ikm: SecretKey::new(ikm),
                    edk_index: index,
                });
            }
        }
        Err(KeyringError::NoMatchingKey {
            message: "no EDK for the bench key".into(),
        })
    }

    fn wrap_sync(&self, ec: &EncryptionContext) -> Result<WrappedKey, KeyringError> {
        let other = |e: DbeError| KeyringError::Other { message: e.to_string() };
        let aad = serialize_context(ec).map_err(other)?;
        let ikm = SecretKey::random().map_err(other)?;
        let mut iv = [0u8; IV_LEN];
        random_fill(&mut iv).map_err(other)?;
        let mut wrapped = Vec::with_capacity(48);
        wrapped.extend_from_slice(ikm.expose());
        let tag = gcm_seal(&self.key, &iv, &aad, &mut wrapped).map_err(other)?;
        wrapped.extend_from_slice(&tag);
        let mut provider_info = Vec::with_capacity(self.name.len() + 8 + IV_LEN);
        provider_info.extend_from_slice(self.name.as_bytes());
        provider_info.extend_from_slice(&TAG_BITS.to_be_bytes());
        provider_info.extend_from_slice(&(IV_LEN as u32).to_be_bytes());
        provider_info.extend_from_slice(&iv);
        Ok(WrappedKey {
            ikm,
            provider_id: self.namespace.clone(),
            provider_info,
            wrapped,
        })
    }
}

impl Keyring for BenchKeyring {
    fn unwrap_key<'a>(
        &'a self,
        edks: &'a [EncryptedDataKey],
        ec: &'a EncryptionContext,
    ) -> KeyringFuture<'a, UnwrappedKey> {
        Box::pin(async move { self.unwrap_sync(edks, ec) })
    }

    fn wrap_key<'a>(&'a self, ec: &'a EncryptionContext) -> KeyringFuture<'a, WrappedKey> {
        Box::pin(async move { self.wrap_sync(ec) })
    }
}
