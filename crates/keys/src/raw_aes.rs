//! The raw AES-256 keyring (MPL `RawAesKeyring`): offline wrapping under a local key, for tests,
//! interoperability checks and forensics with an escrowed key.
//!
//! EDK: provider id = key namespace; provider info = key name || u32be(128) || u32be(12) || IV(12);
//! provider ciphertext = AES-256-GCM(wrapping key, IV, AAD = serialized full EC, PT = IKM) || tag.
//!
//! The same keyring serves both formats: the item format's [`Keyring`] (32-byte intermediate keys) and the
//! message format's [`ddbguard_esdk::Keyring`] (data keys of the suite's length; an empty encryption context
//! serializes to no bytes there).

use ddbguard_dbe::{
    EncryptedDataKey, EncryptionContext, Ikm, Keyring, KeyringError, KeyringFuture, SecretKey, UnwrappedKey,
    WrappedKey, gcm_open, gcm_seal, random_fill, serialize_context,
};
use ddbguard_esdk::{self as esdk, AlgorithmSuite};
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

    /// The IV if the EDK names this keyring's key with the 128-bit tag / 12-byte IV layout.
    fn iv_for<'a>(&self, provider_id: &str, provider_info: &'a [u8]) -> Option<&'a [u8]> {
        if provider_id != self.namespace {
            return None;
        }
        let rest = provider_info.strip_prefix(self.name.as_bytes())?;
        let (tag_bits, rest) = rest.split_first_chunk::<4>()?;
        let (iv_len, iv) = rest.split_first_chunk::<4>()?;
        (u32::from_be_bytes(*tag_bits) == TAG_BITS
            && u32::from_be_bytes(*iv_len) as usize == IV_LEN
            && iv.len() == IV_LEN)
            .then_some(iv)
    }

    /// Opens the first EDK for this key whose wrapped key is `key_len` bytes and authenticates under `aad`.
    ///
    /// Shared by the item format (32-byte intermediate keys, AAD = its EC serialization) and the message format
    /// (suite-length data keys, AAD = the message format's EC serialization, empty for an empty context).
    fn unwrap_with<'e>(
        &self,
        edks: impl Iterator<Item = (&'e str, &'e [u8], &'e [u8])>,
        aad: &[u8],
        key_len: usize,
    ) -> Result<(Zeroizing<Vec<u8>>, usize), KeyringError> {
        let mut candidates = 0usize;
        let mut seen = Vec::new();
        for (index, (provider_id, provider_info, ciphertext)) in edks.enumerate() {
            seen.push(provider_id);
            let Some(iv) = self.iv_for(provider_id, provider_info) else {
                continue;
            };
            candidates += 1;
            if ciphertext.len() != key_len + 16 {
                continue;
            }
            let mut key = Zeroizing::new(ciphertext[..key_len].to_vec());
            let mut nonce = [0u8; IV_LEN];
            nonce.copy_from_slice(iv);
            if gcm_open(&self.key, &nonce, aad, &mut key[..], &ciphertext[key_len..]) {
                return Ok((key, index));
            }
        }
        if candidates == 0 {
            Err(KeyringError::NoMatchingKey {
                message: format!(
                    "no EDK for raw AES key {}/{} among {} EDK(s) from providers [{}]",
                    self.namespace,
                    self.name,
                    seen.len(),
                    seen.join(", ")
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

    /// Wraps `key` under `aad`: returns (provider info, wrapped key || tag).
    fn wrap_with(&self, key: &[u8], aad: &[u8]) -> Result<(Vec<u8>, Vec<u8>), KeyringError> {
        let other = |e: ddbguard_dbe::DbeError| KeyringError::Other { message: e.to_string() };
        let mut iv = [0u8; IV_LEN];
        random_fill(&mut iv).map_err(other)?;
        let mut wrapped = Vec::with_capacity(key.len() + 16);
        wrapped.extend_from_slice(key);
        let tag = gcm_seal(&self.key, &iv, aad, &mut wrapped).map_err(other)?;
        wrapped.extend_from_slice(&tag);
        let mut provider_info = Vec::with_capacity(self.name.len() + 8 + IV_LEN);
        provider_info.extend_from_slice(self.name.as_bytes());
        provider_info.extend_from_slice(&TAG_BITS.to_be_bytes());
        provider_info.extend_from_slice(&(IV_LEN as u32).to_be_bytes());
        provider_info.extend_from_slice(&iv);
        Ok((provider_info, wrapped))
    }

    fn unwrap_sync(&self, edks: &[EncryptedDataKey], ec: &EncryptionContext) -> Result<UnwrappedKey, KeyringError> {
        let aad = serialize_context(ec).map_err(|e| KeyringError::Other { message: e.to_string() })?;
        let edks = edks
            .iter()
            .map(|e| (e.provider_id.as_str(), &e.provider_info[..], &e.ciphertext[..]));
        let (key, edk_index) = self.unwrap_with(edks, &aad, 32)?;
        let ikm = Ikm::from_slice(&key).ok_or_else(|| KeyringError::Other {
            message: "unwrapped key is not 32 bytes".into(),
        })?;
        Ok(UnwrappedKey { ikm, edk_index })
    }

    fn wrap_sync(&self, ec: &EncryptionContext) -> Result<WrappedKey, KeyringError> {
        let other = |e: ddbguard_dbe::DbeError| KeyringError::Other { message: e.to_string() };
        let aad = serialize_context(ec).map_err(other)?;
        let ikm = SecretKey::random().map_err(other)?;
        let (provider_info, wrapped) = self.wrap_with(ikm.expose(), &aad)?;
        Ok(WrappedKey {
            ikm,
            provider_id: self.namespace.clone(),
            provider_info,
            wrapped,
        })
    }

    fn esdk_aad(ec: &EncryptionContext) -> Result<Vec<u8>, KeyringError> {
        ddbguard_esdk::serialize_context(ec).map_err(|e| KeyringError::Other { message: e.to_string() })
    }

    fn esdk_decrypt_sync(
        &self,
        suite: AlgorithmSuite,
        edks: &[esdk::EncryptedDataKey],
        ec: &EncryptionContext,
    ) -> Result<esdk::DecryptedDataKey, KeyringError> {
        let aad = Self::esdk_aad(ec)?;
        let edks = edks
            .iter()
            .map(|e| (e.provider_id.as_str(), &e.provider_info[..], &e.ciphertext[..]));
        let (key, edk_index) = self.unwrap_with(edks, &aad, suite.key_len())?;
        Ok(esdk::DecryptedDataKey {
            key: esdk::DataKey::new(key),
            edk_index,
        })
    }

    fn esdk_generate_sync(
        &self,
        suite: AlgorithmSuite,
        ec: &EncryptionContext,
    ) -> Result<esdk::GeneratedDataKey, KeyringError> {
        let aad = Self::esdk_aad(ec)?;
        let mut key = Zeroizing::new(vec![0u8; suite.key_len()]);
        random_fill(&mut key).map_err(|e| KeyringError::Other { message: e.to_string() })?;
        let (provider_info, ciphertext) = self.wrap_with(&key, &aad)?;
        Ok(esdk::GeneratedDataKey {
            key: esdk::DataKey::new(key),
            edks: vec![esdk::EncryptedDataKey {
                provider_id: self.namespace.clone(),
                provider_info,
                ciphertext,
            }],
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

impl esdk::Keyring for RawAesKeyring {
    fn decrypt_data_key<'a>(
        &'a self,
        suite: AlgorithmSuite,
        edks: &'a [esdk::EncryptedDataKey],
        ec: &'a EncryptionContext,
    ) -> KeyringFuture<'a, esdk::DecryptedDataKey> {
        Box::pin(async move { self.esdk_decrypt_sync(suite, edks, ec) })
    }

    fn generate_data_key<'a>(
        &'a self,
        suite: AlgorithmSuite,
        ec: &'a EncryptionContext,
    ) -> KeyringFuture<'a, esdk::GeneratedDataKey> {
        Box::pin(async move { self.esdk_generate_sync(suite, ec) })
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

    #[test]
    fn the_same_keyring_wraps_message_data_keys_of_every_suite_length() {
        use ddbguard_esdk::{DecryptOptions, EncryptOptions, Keyring as _, decrypt, encrypt};
        use futures::executor::block_on;

        let k = RawAesKeyring::new("ns", "name", Zeroizing::new([3; 32]));
        for &suite in AlgorithmSuite::ALL {
            for ctx in [ec(), EncryptionContext::new()] {
                let g = block_on(k.generate_data_key(suite, &ctx)).unwrap();
                assert_eq!(g.key.len(), suite.key_len());
                assert_eq!(g.edks[0].ciphertext.len(), suite.key_len() + 16);
                let d = block_on(k.decrypt_data_key(suite, &g.edks, &ctx)).unwrap();
                assert_eq!(d.key.expose(), g.key.expose());
                assert!(
                    block_on(k.decrypt_data_key(suite, &g.edks, &[("x".to_owned(), "y".to_owned())].into())).is_err()
                );
            }
        }
        // An empty encryption context is AAD of no bytes in the message format (the item format writes a count).
        let g = block_on(k.generate_data_key(AlgorithmSuite::Aes256GcmHkdfSha512Commit, &EncryptionContext::new()))
            .unwrap();
        let (pi, ct) = (&g.edks[0].provider_info, &g.edks[0].ciphertext);
        let mut key = ct[..32].to_vec();
        let mut iv = [0u8; 12];
        iv.copy_from_slice(&pi[pi.len() - 12..]);
        assert!(gcm_open(&k.key, &iv, b"", &mut key, &ct[32..]));
        assert_eq!(key, g.key.expose());
        let m = block_on(encrypt(&k, &EncryptOptions::default(), &ec(), b"v")).unwrap();
        assert_eq!(
            block_on(decrypt(&k, &DecryptOptions::default(), &m)).unwrap().plaintext,
            b"v"
        );
    }
}
