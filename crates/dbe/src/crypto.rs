//! Key derivation, intermediate key wrapping, field encryption, commitment, tags and signatures
//! (§1.6–§1.9). Every secret lives in a zeroizing buffer; comparisons are constant time.
//!
//! Primitives: HKDF, HMAC and SHA-2 from RustCrypto; AES-GCM and ECDSA P-384 from aws-lc-rs, which is
//! faster for both at the sizes of the format (a GCM key is set up per attribute; see
//! `docs/BENCHMARKS.md`); the field key stream (AES-CTR) from RustCrypto.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::encoding::{AsBigEndian, EcPublicKeyCompressedBin};
use aws_lc_rs::signature::{
    ECDSA_P384_SHA384_ASN1, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair, KeyPair, UnparsedPublicKey,
};
use ctr::cipher::{KeyIvInit, StreamCipher};
use std::sync::LazyLock;

use hkdf::{Hkdf, HkdfExtract};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha384, Sha512};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::error::DbeError;
use crate::header::{COMMITMENT_LEN, MESSAGE_ID_LEN, SIGNATURE_LEN, TAG_LEN, WRAPPED_PDK_LEN};

/// A 32-byte secret: zeroized on drop, never printed.
#[derive(Clone)]
pub struct SecretKey(Zeroizing<[u8; 32]>);

impl SecretKey {
    /// Wraps key bytes.
    pub fn new(bytes: Zeroizing<[u8; 32]>) -> SecretKey {
        SecretKey(bytes)
    }

    /// Copies key bytes from a slice of exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<SecretKey> {
        let mut k = Zeroizing::new([0u8; 32]);
        if bytes.len() != 32 {
            return None;
        }
        k.copy_from_slice(bytes);
        Some(SecretKey(k))
    }

    /// Fresh random key bytes.
    pub fn random() -> Result<SecretKey, DbeError> {
        let mut k = Zeroizing::new([0u8; 32]);
        random_fill(&mut k[..])?;
        Ok(SecretKey(k))
    }

    /// The key bytes.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// The 32-byte intermediate key material a keyring unwraps or generates.
pub type Ikm = SecretKey;

/// Fills `buf` from the system CSPRNG.
pub fn random_fill(buf: &mut [u8]) -> Result<(), DbeError> {
    aws_lc_rs::rand::fill(buf).map_err(|_| DbeError::Crypto("random source failed"))
}

const MAC_INFO: &[u8] = b"AWS_MPL_INTERMEDIATE_KEYWRAP_MAC";
const ENC_INFO: &[u8] = b"AWS_MPL_INTERMEDIATE_KEYWRAP_ENC";
const COMMIT_INFO: &[u8] = b"AWS_DBE_COMMIT_KEY";
const DERIVE_INFO: &[u8] = b"AWS_DBE_DERIVE_KEY";
const FIELD_NONCE_PREFIX: &[u8; 12] = b"AwsDbeField,";

/// HKDF-SHA-512 extract with the default salt (64 zero bytes, RFC 5869 §2.2), as both derivations of the
/// format use. The HMAC state keyed with that salt is the same for every record, so it is computed once
/// and cloned: two SHA-512 compressions fewer per derivation than `Hkdf::new(None, ikm)`, same output.
fn extract_zero_salt(ikm: &[u8]) -> Hkdf<Sha512> {
    static ZERO_SALT: LazyLock<HkdfExtract<Sha512>> = LazyLock::new(|| HkdfExtract::new(None));
    let mut ctx = ZERO_SALT.clone();
    ctx.input_ikm(ikm);
    let (mut prk, hk) = ctx.finalize();
    prk.as_mut_slice().zeroize();
    hk
}

fn expand(hk: &Hkdf<Sha512>, info: &[&[u8]]) -> SecretKey {
    let mut k = Zeroizing::new([0u8; 32]);
    // 32 bytes is always a valid HKDF-SHA-512 output length.
    let _ = hk.expand_multi_info(info, &mut k[..]);
    SecretKey(k)
}

/// Intermediate key wrapping keys of one recipient (§1.7).
pub(crate) struct IntermediateKeys {
    pub kek: SecretKey,
    pub mac_key: SecretKey,
}

impl IntermediateKeys {
    pub fn derive(ikm: &Ikm) -> IntermediateKeys {
        let hk = extract_zero_salt(ikm.expose());
        IntermediateKeys {
            mac_key: expand(&hk, &[MAC_INFO]),
            kek: expand(&hk, &[ENC_INFO]),
        }
    }

    /// Opens the 48-byte wrapped data key.
    pub fn unwrap_pdk(&self, wrapped: &[u8], ec_bytes: &[u8]) -> Option<SecretKey> {
        if wrapped.len() != WRAPPED_PDK_LEN {
            return None;
        }
        let mut pdk = Zeroizing::new([0u8; 32]);
        pdk.copy_from_slice(&wrapped[..32]);
        gcm_open(&self.kek, &[0u8; 12], ec_bytes, &mut pdk[..], &wrapped[32..]).then_some(SecretKey(pdk))
    }

    /// Wraps a data key: 32 bytes ciphertext || 16 bytes tag.
    pub fn wrap_pdk(&self, pdk: &SecretKey, ec_bytes: &[u8]) -> Result<[u8; WRAPPED_PDK_LEN], DbeError> {
        let mut out = [0u8; WRAPPED_PDK_LEN];
        out[..32].copy_from_slice(pdk.expose());
        let tag = gcm_seal(&self.kek, &[0u8; 12], ec_bytes, &mut out[..32])?;
        out[32..].copy_from_slice(&tag);
        Ok(out)
    }

    /// The recipient tag over the canonical hash.
    pub fn tag(&self, hash: &[u8; 48]) -> Result<[u8; TAG_LEN], DbeError> {
        hmac_sha384(&self.mac_key, hash)
    }
}

/// Keys derived from the data key (PDK) and message id (§1.6, §1.8).
pub(crate) struct RecordKeys {
    pub commit_key: SecretKey,
    pub field_root: SecretKey,
}

impl RecordKeys {
    pub fn derive(pdk: &SecretKey, message_id: &[u8; MESSAGE_ID_LEN]) -> RecordKeys {
        let hk = extract_zero_salt(pdk.expose());
        RecordKeys {
            commit_key: expand(&hk, &[COMMIT_INFO, message_id]),
            field_root: expand(&hk, &[DERIVE_INFO, message_id]),
        }
    }

    /// Header commitment: HMAC-SHA-512(commitKey, header body) truncated to 32 bytes.
    pub fn commitment(&self, header_body: &[u8]) -> Result<[u8; COMMITMENT_LEN], DbeError> {
        let mut mac = <Hmac<Sha512> as KeyInit>::new_from_slice(self.commit_key.expose())
            .map_err(|_| DbeError::Crypto("HMAC key setup failed"))?;
        mac.update(header_body);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; COMMITMENT_LEN];
        out.copy_from_slice(&full[..COMMITMENT_LEN]);
        Ok(out)
    }

    /// Field keys for ordinals `0..count`: 44 bytes each (32 key || 12 nonce). One CTR pass: field
    /// `i` uses counter blocks `3i, 3i+1, 3i+2`, so the key streams of consecutive fields are adjacent.
    pub fn field_keys(&self, count: usize) -> Result<FieldKeys, DbeError> {
        if count > 1_431_655_765 {
            return Err(DbeError::TooLarge {
                what: "encrypted attribute count",
                len: count,
                max: 1_431_655_765,
            });
        }
        let mut stream = Zeroizing::new(vec![0u8; count * 48]);
        let mut iv = [0u8; 16];
        iv[..12].copy_from_slice(FIELD_NONCE_PREFIX);
        let mut cipher = ctr::Ctr128BE::<aes::Aes256>::new(self.field_root.expose().into(), (&iv).into());
        cipher.apply_keystream(&mut stream[..]);
        Ok(FieldKeys(stream))
    }
}

/// Concatenated per-field key streams (48 bytes per ordinal, first 44 used).
pub(crate) struct FieldKeys(Zeroizing<Vec<u8>>);

impl FieldKeys {
    fn get(&self, ordinal: usize) -> Option<(&[u8], &[u8])> {
        let start = ordinal.checked_mul(48)?;
        let chunk = self.0.get(start..start + 44)?;
        Some(chunk.split_at(32))
    }

    /// Encrypts serialized value bytes in place; returns the tag.
    pub fn seal(&self, ordinal: usize, path: &[u8], buf: &mut [u8]) -> Result<[u8; 16], DbeError> {
        let (key, nonce) = self
            .get(ordinal)
            .ok_or(DbeError::Crypto("field ordinal out of range"))?;
        let key = SecretKey::from_slice(key).ok_or(DbeError::Crypto("field key length"))?;
        let mut n = [0u8; 12];
        n.copy_from_slice(nonce);
        gcm_seal(&key, &n, path, buf)
    }

    /// Decrypts in place; false if authentication fails.
    pub fn open(&self, ordinal: usize, path: &[u8], buf: &mut [u8], tag: &[u8]) -> bool {
        let Some((key, nonce)) = self.get(ordinal) else {
            return false;
        };
        let Some(key) = SecretKey::from_slice(key) else {
            return false;
        };
        let mut n = [0u8; 12];
        n.copy_from_slice(nonce);
        gcm_open(&key, &n, path, buf, tag)
    }
}

fn gcm_key(key: &SecretKey) -> Option<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, key.expose()).ok().map(LessSafeKey::new)
}

/// AES-256-GCM encrypt in place; returns the 16-byte tag.
pub fn gcm_seal(key: &SecretKey, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> Result<[u8; 16], DbeError> {
    let cipher = gcm_key(key).ok_or(DbeError::Crypto("AES-GCM key setup failed"))?;
    let tag = cipher
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), buf)
        .map_err(|_| DbeError::Crypto("AES-GCM encryption failed"))?;
    let mut out = [0u8; 16];
    out.copy_from_slice(tag.as_ref());
    Ok(out)
}

/// AES-256-GCM decrypt in place; false if the tag does not authenticate (buffer contents then undefined).
pub fn gcm_open(key: &SecretKey, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8], tag: &[u8]) -> bool {
    if tag.len() != 16 {
        return false;
    }
    let Some(cipher) = gcm_key(key) else {
        return false;
    };
    cipher
        .open_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), tag, buf)
        .is_ok()
}

fn hmac_sha384(key: &SecretKey, data: &[u8]) -> Result<[u8; 48], DbeError> {
    let mut mac = <Hmac<Sha384> as KeyInit>::new_from_slice(key.expose())
        .map_err(|_| DbeError::Crypto("HMAC key setup failed"))?;
    mac.update(data);
    let mut out = [0u8; 48];
    out.copy_from_slice(&mac.finalize().into_bytes());
    Ok(out)
}

/// Constant-time equality of two byte strings (length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Whether `tag` equals any of `tags`, examining all of them in constant time.
pub(crate) fn any_tag_matches(tag: &[u8; TAG_LEN], tags: &[[u8; TAG_LEN]]) -> bool {
    let mut found = subtle::Choice::from(0);
    for t in tags {
        found |= tag.ct_eq(t);
    }
    bool::from(found)
}

/// Streaming SHA-384 over the canonical record.
#[derive(Debug, Clone, Default)]
pub(crate) struct CanonicalHasher(Sha384);

impl CanonicalHasher {
    pub fn update(&mut self, b: &[u8]) {
        self.0.update(b);
    }
    pub fn finish(self) -> [u8; 48] {
        let mut out = [0u8; 48];
        out.copy_from_slice(&self.0.finalize());
        out
    }
}

/// A fresh per-record P-384 signing key.
pub(crate) struct Signer(EcdsaKeyPair);

impl Signer {
    pub fn generate() -> Result<Signer, DbeError> {
        EcdsaKeyPair::generate(&ECDSA_P384_SHA384_ASN1_SIGNING)
            .map(Signer)
            .map_err(|_| DbeError::Crypto("P-384 key generation failed"))
    }

    /// The 49-byte SEC1 compressed public point.
    pub fn public_key_compressed(&self) -> Result<Vec<u8>, DbeError> {
        let c: EcPublicKeyCompressedBin<'static> = self
            .0
            .public_key()
            .as_be_bytes()
            .map_err(|_| DbeError::Crypto("public key encoding failed"))?;
        Ok(c.as_ref().to_vec())
    }

    /// DER signature over `hash` (ECDSA hashes it again with SHA-384), re-signed until exactly 103 bytes.
    pub fn sign(&self, hash: &[u8; 48]) -> Result<[u8; SIGNATURE_LEN], DbeError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        for _ in 0..256 {
            let sig = self
                .0
                .sign(&rng, hash)
                .map_err(|_| DbeError::Crypto("ECDSA signing failed"))?;
            if let Ok(s) = <[u8; SIGNATURE_LEN]>::try_from(sig.as_ref()) {
                return Ok(s);
            }
        }
        Err(DbeError::Crypto("no 103-byte ECDSA signature after 256 attempts"))
    }
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<redacted>)")
    }
}

/// Verifies a DER ECDSA P-384/SHA-384 signature over `hash` with a SEC1 (compressed) public key.
pub(crate) fn verify_signature(public_key: &[u8], hash: &[u8; 48], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ECDSA_P384_SHA384_ASN1, public_key)
        .verify(hash, signature)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_salt_extract_matches_hkdf_new() {
        for ikm in [[0u8; 32], [0x5a; 32]] {
            let mut a = [0u8; 32];
            let mut b = [0u8; 32];
            extract_zero_salt(&ikm).expand(b"info", &mut a).unwrap();
            Hkdf::<Sha512>::new(None, &ikm).expand(b"info", &mut b).unwrap();
            assert_eq!(a, b);
        }
    }

    #[test]
    fn gcm_matches_rustcrypto() {
        use aes_gcm::aead::AeadInOut;
        let key = SecretKey::new(Zeroizing::new([0x24; 32]));
        let nonce = [0x11u8; 12];
        let rc = <aes_gcm::Aes256Gcm as aes_gcm::KeyInit>::new(key.expose().into());
        for (len, aad_len) in [(0usize, 0usize), (0, 17), (1, 0), (32, 150), (61, 27), (1000, 3)] {
            let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let aad = vec![0x5a; aad_len];
            let mut ours = plain.clone();
            let tag = gcm_seal(&key, &nonce, &aad, &mut ours).unwrap();
            let mut theirs = plain.clone();
            let their_tag = rc
                .encrypt_inout_detached((&nonce).into(), &aad, theirs.as_mut_slice().into())
                .unwrap();
            assert_eq!(ours, theirs);
            assert_eq!(&tag[..], &their_tag[..]);
            assert!(gcm_open(&key, &nonce, &aad, &mut ours, &tag));
            assert_eq!(ours, plain);
            let mut bad = tag;
            bad[0] ^= 1;
            assert!(!gcm_open(&key, &nonce, &aad, &mut theirs.clone(), &bad));
            assert!(!gcm_open(&key, &nonce, &aad, &mut theirs.clone(), &tag[..15]));
        }
    }

    #[test]
    fn pdk_wrap_round_trip() {
        let ikm = SecretKey::random().unwrap();
        let keys = IntermediateKeys::derive(&ikm);
        let pdk = SecretKey::random().unwrap();
        let wrapped = keys.wrap_pdk(&pdk, b"ec").unwrap();
        assert_eq!(keys.unwrap_pdk(&wrapped, b"ec").unwrap().expose(), pdk.expose());
        assert!(keys.unwrap_pdk(&wrapped, b"ed").is_none());
        assert!(keys.unwrap_pdk(&wrapped[..47], b"ec").is_none());
    }

    #[test]
    fn field_keys_match_separate_ctr_runs() {
        let rk = RecordKeys::derive(&SecretKey::random().unwrap(), &[1; 32]);
        let all = rk.field_keys(3).unwrap();
        for i in 0..3usize {
            let mut iv = [0u8; 16];
            iv[..12].copy_from_slice(FIELD_NONCE_PREFIX);
            iv[12..].copy_from_slice(&(3 * i as u32).to_be_bytes());
            let mut ks = [0u8; 44];
            let mut c = ctr::Ctr128BE::<aes::Aes256>::new(rk.field_root.expose().into(), (&iv).into());
            c.apply_keystream(&mut ks);
            let (k, n) = all.get(i).unwrap();
            assert_eq!(k, &ks[..32]);
            assert_eq!(n, &ks[32..]);
        }
        assert!(all.get(3).is_none());
    }

    #[test]
    fn field_seal_open() {
        let rk = RecordKeys::derive(&SecretKey::random().unwrap(), &[1; 32]);
        let fk = rk.field_keys(2).unwrap();
        let mut buf = b"hello".to_vec();
        let tag = fk.seal(1, b"path", &mut buf).unwrap();
        let mut b2 = buf.clone();
        assert!(fk.open(1, b"path", &mut b2, &tag));
        assert_eq!(b2, b"hello");
        let mut b3 = buf.clone();
        assert!(!fk.open(0, b"path", &mut b3, &tag));
        let mut b4 = buf.clone();
        assert!(!fk.open(1, b"patH", &mut b4, &tag));
    }

    #[test]
    fn sign_and_verify_compressed() {
        let s = Signer::generate().unwrap();
        let pk = s.public_key_compressed().unwrap();
        assert_eq!(pk.len(), 49);
        let h = [5u8; 48];
        let sig = s.sign(&h).unwrap();
        assert!(verify_signature(&pk, &h, &sig));
        assert!(!verify_signature(&pk, &[6u8; 48], &sig));
        assert!(!verify_signature(&pk[..48], &h, &sig));
    }

    #[test]
    fn tags_and_ct() {
        let t = [1u8; 48];
        assert!(any_tag_matches(&t, &[[0; 48], [1; 48]]));
        assert!(!any_tag_matches(&t, &[[0; 48]]));
        assert!(ct_eq(b"ab", b"ab"));
        assert!(!ct_eq(b"ab", b"abc"));
        assert_eq!(format!("{:?}", SecretKey::random().unwrap()), "SecretKey(<redacted>)");
    }
}
