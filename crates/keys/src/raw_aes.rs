//! The raw AES-256 keyring (MPL `RawAesKeyring`): offline wrapping under a local key, for tests,
//! interoperability checks and forensics with an escrowed key.
//!
//! EDK: provider id = key namespace; provider info = key name || u32be(128) || u32be(12) || IV(12);
//! provider ciphertext = AES-256-GCM(wrapping key, IV, AAD = serialized full EC, PT = IKM) || tag.

use ddbguard_dbe::{
    EncryptedDataKey, EncryptionContext, Ikm, Keyring, KeyringError, KeyringFuture, SecretKey, UnwrappedKey,
    WrappedKey, gcm_open, gcm_seal, random_fill, serialize_context,
};
use zeroize::Zeroizing;

const TAG_BITS: u32 = 128;
const IV_LEN: usize = 12;

/// A raw AES-256-GCM keyring with one wrapping key.
pub struct RawAesKeyring {
    namespace: String,
    name: String,
    key: SecretKey,
}

impl std::fmt::Debug for RawAesKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawAesKeyring")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl RawAesKeyring {
    /// A keyring for wrapping key `key` named `namespace`/`name`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, key: Zeroizing<[u8; 32]>) -> RawAesKeyring {
        RawAesKeyring {
            namespace: namespace.into(),
            name: name.into(),
            key: SecretKey::new(key),
        }
    }

    /// The key namespace (EDK provider id).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The key name (start of the EDK provider info).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The IV if `provider_info` names this keyring's key with the 128-bit tag / 12-byte IV layout.
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
        let mut candidates = 0usize;
        for (index, edk) in edks.iter().enumerate() {
            let Some(iv) = self.iv_for(edk) else { continue };
            candidates += 1;
            if edk.ciphertext.len() != 32 + 16 {
                continue;
            }
            let mut ikm = Zeroizing::new([0u8; 32]);
            ikm.copy_from_slice(&edk.ciphertext[..32]);
            let mut nonce = [0u8; IV_LEN];
            nonce.copy_from_slice(iv);
            if gcm_open(&self.key, &nonce, &aad, &mut ikm[..], &edk.ciphertext[32..]) {
                return Ok(UnwrappedKey {
                    ikm: Ikm::new(ikm),
                    edk_index: index,
                });
            }
        }
        if candidates == 0 {
            Err(KeyringError::NoMatchingKey {
                message: format!(
                    "no EDK for raw AES key {}/{} among {} EDK(s) from providers [{}]",
                    self.namespace,
                    self.name,
                    edks.len(),
                    edks.iter()
                        .map(|e| e.provider_id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
        } else {
            Err(KeyringError::IntegrityFailed {
                message: format!(
                    "{candidates} EDK(s) for raw AES key {}/{} did not authenticate (wrong key bytes or encryption context)",
                    self.namespace, self.name
                ),
            })
        }
    }

    fn wrap_sync(&self, ec: &EncryptionContext) -> Result<WrappedKey, KeyringError> {
        let other = |e: ddbguard_dbe::DbeError| KeyringError::Other { message: e.to_string() };
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

impl Keyring for RawAesKeyring {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ec() -> EncryptionContext {
        [("a".to_owned(), "b".to_owned())].into_iter().collect()
    }

    #[test]
    fn wrap_unwrap() {
        let k = RawAesKeyring::new("ns", "name", Zeroizing::new([3; 32]));
        let w = k.wrap_sync(&ec()).unwrap();
        assert_eq!(w.provider_info.len(), 4 + 8 + 12);
        let edk = EncryptedDataKey {
            provider_id: w.provider_id.clone(),
            provider_info: w.provider_info.clone(),
            ciphertext: w.wrapped.clone(),
        };
        let other = EncryptedDataKey {
            provider_id: "other".into(),
            ..edk.clone()
        };
        let u = k.unwrap_sync(&[other.clone(), edk.clone()], &ec()).unwrap();
        assert_eq!(u.edk_index, 1);
        assert_eq!(u.ikm.expose(), w.ikm.expose());
        // Wrong EC, wrong key, wrong name, no EDK.
        assert!(matches!(
            k.unwrap_sync(std::slice::from_ref(&edk), &EncryptionContext::new()),
            Err(KeyringError::IntegrityFailed { .. })
        ));
        let k2 = RawAesKeyring::new("ns", "name", Zeroizing::new([4; 32]));
        assert!(matches!(
            k2.unwrap_sync(std::slice::from_ref(&edk), &ec()),
            Err(KeyringError::IntegrityFailed { .. })
        ));
        let k3 = RawAesKeyring::new("ns", "nam", Zeroizing::new([3; 32]));
        assert!(matches!(
            k3.unwrap_sync(std::slice::from_ref(&edk), &ec()),
            Err(KeyringError::NoMatchingKey { .. })
        ));
        assert!(matches!(
            k.unwrap_sync(&[other], &ec()),
            Err(KeyringError::NoMatchingKey { .. })
        ));
        assert!(!format!("{k:?}").contains("3, 3"));
    }
}
