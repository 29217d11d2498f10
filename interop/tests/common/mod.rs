//! Shared by the interop tests and the decrypt benchmark: conversions between ddbguard's and the AWS
//! SDK's attribute values, the official item encryptor built from a ddbguard `TableConfig`, ddbguard's
//! side of the same calls, and the comparison helpers (DynamoDB number normalization, set order).
//! The local AWS environment of the hierarchical keyring tests is the workspace's (`ddbguard-e2e`).
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::LazyLock;

use aws_db_esdk::CryptoAction as OfficialAction;
use aws_db_esdk::item_encryptor::client as enc_client;
use aws_db_esdk::item_encryptor::types::dynamo_db_item_encryptor_config::DynamoDbItemEncryptorConfig;
use aws_db_esdk::material_providers::client as mpl_client;
use aws_db_esdk::material_providers::types::keyring::KeyringRef;
use aws_db_esdk::material_providers::types::material_providers_config::MaterialProvidersConfig;
use aws_db_esdk::material_providers::types::{AesWrappingAlg, DbeAlgorithmSuiteId};
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue as Av;

pub use ddbguard_dbe::{AlgorithmSuite, AttributeValue, CryptoAction, Item, TableConfig};

pub const HEADER: &str = "aws_dbe_head";
pub const FOOTER: &str = "aws_dbe_foot";

/// The raw AES wrapping key both sides use (namespace, name, 32 key bytes).
pub const KEY_NAMESPACE: &str = "ddbguard-interop";
pub const KEY_NAME: &str = "raw-aes-key-1";
pub const KEY: [u8; 32] = [
    0x60, 0x3d, 0xeb, 0x10, 0x15, 0xca, 0x71, 0xbe, 0x2b, 0x73, 0xae, 0xf0, 0x85, 0x7d, 0x77, 0x81, 0x1f, 0x35, 0x2c,
    0x07, 0x3b, 0x61, 0x08, 0xd7, 0x2d, 0x98, 0x10, 0xa3, 0x09, 0x14, 0xdf, 0xf4,
];

pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    });
    &RT
}

pub fn suite_name(ecdsa: bool) -> &'static str {
    if ecdsa { "0x6701" } else { "0x6700" }
}

// ---------------------------------------------------------------------------------------------
// Conversions

pub fn to_official(v: &AttributeValue) -> Av {
    match v {
        AttributeValue::S(s) => Av::S(s.clone()),
        AttributeValue::N(n) => Av::N(n.clone()),
        AttributeValue::B(b) => Av::B(Blob::new(b.clone())),
        AttributeValue::Bool(b) => Av::Bool(*b),
        AttributeValue::Null => Av::Null(true),
        AttributeValue::Ss(ss) => Av::Ss(ss.clone()),
        AttributeValue::Ns(ns) => Av::Ns(ns.clone()),
        AttributeValue::Bs(bs) => Av::Bs(bs.iter().map(|b| Blob::new(b.clone())).collect()),
        AttributeValue::M(m) => Av::M(m.iter().map(|(k, v)| (k.clone(), to_official(v))).collect()),
        AttributeValue::L(l) => Av::L(l.iter().map(to_official).collect()),
    }
}

pub fn from_official(v: &Av) -> AttributeValue {
    match v {
        Av::S(s) => AttributeValue::S(s.clone()),
        Av::N(n) => AttributeValue::N(n.clone()),
        Av::B(b) => AttributeValue::B(b.as_ref().to_vec()),
        Av::Bool(b) => AttributeValue::Bool(*b),
        Av::Null(_) => AttributeValue::Null,
        Av::Ss(ss) => AttributeValue::Ss(ss.clone()),
        Av::Ns(ns) => AttributeValue::Ns(ns.clone()),
        Av::Bs(bs) => AttributeValue::Bs(bs.iter().map(|b| b.as_ref().to_vec()).collect()),
        Av::M(m) => AttributeValue::M(m.iter().map(|(k, v)| (k.clone(), from_official(v))).collect()),
        Av::L(l) => AttributeValue::L(l.iter().map(from_official).collect()),
        other => panic!("attribute value type unknown to ddbguard: {other:?}"),
    }
}

pub fn to_official_item(item: &Item) -> HashMap<String, Av> {
    item.iter().map(|(k, v)| (k.clone(), to_official(v))).collect()
}

pub fn from_official_item(item: &HashMap<String, Av>) -> Item {
    item.iter().map(|(k, v)| (k.clone(), from_official(v))).collect()
}

// ---------------------------------------------------------------------------------------------
// Comparison helpers

/// DynamoDB's number normalization, written from its documented rules independently of both
/// implementations under test: optional sign, digits with an optional point, optional exponent;
/// leading and trailing zeros dropped, no exponent in the output, zero is "0". None for syntax errors,
/// more than 38 significant digits, or a magnitude outside 1E-130..<1E126.
pub fn normalize_number(s: &str) -> Option<String> {
    let (neg, rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(i) => {
            let e = &rest[i + 1..];
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (&rest[..i], e.parse::<i64>().ok()?)
        }
        None => (rest, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let all = format!("{int}{frac}");
    let lead = all.len() - all.trim_start_matches('0').len();
    let digits = all[lead..].trim_end_matches('0');
    if digits.is_empty() {
        return Some("0".to_owned());
    }
    if digits.len() > 38 {
        return None;
    }
    // Decimal point position relative to the start of `digits`.
    let point = int.len() as i64 + exp - lead as i64;
    // Magnitude: value = 0.digits × 10^point, so 10^(point-1) ≤ |value| < 10^point; DynamoDB allows
    // 1E-130 ≤ |value| < 1E126.
    if !(-129..=126).contains(&point) {
        return None;
    }
    let len = digits.len() as i64;
    let body = if point <= 0 {
        format!("0.{}{digits}", "0".repeat((-point) as usize))
    } else if point >= len {
        format!("{digits}{}", "0".repeat((point - len) as usize))
    } else {
        format!("{}.{}", &digits[..point as usize], &digits[point as usize..])
    };
    Some(if neg { format!("-{body}") } else { body })
}

/// A value as DynamoDB would store it: numbers normalized, sets sorted. Invalid numbers are kept.
pub fn canon(v: &AttributeValue) -> AttributeValue {
    let norm = |n: &String| normalize_number(n).unwrap_or_else(|| n.clone());
    match v {
        AttributeValue::N(n) => AttributeValue::N(norm(n)),
        AttributeValue::Ns(ns) => {
            let mut ns: Vec<_> = ns.iter().map(norm).collect();
            ns.sort();
            AttributeValue::Ns(ns)
        }
        AttributeValue::M(m) => AttributeValue::M(m.iter().map(|(k, v)| (k.clone(), canon(v))).collect()),
        AttributeValue::L(l) => AttributeValue::L(l.iter().map(canon).collect()),
        other => sets_sorted(other),
    }
}

pub fn canon_item(item: &Item) -> Item {
    item.iter().map(|(k, v)| (k.clone(), canon(v))).collect()
}

/// A value with its sets sorted and nothing else changed.
pub fn sets_sorted(v: &AttributeValue) -> AttributeValue {
    match v {
        AttributeValue::Ss(ss) => {
            let mut ss = ss.clone();
            ss.sort();
            AttributeValue::Ss(ss)
        }
        AttributeValue::Ns(ns) => {
            let mut ns = ns.clone();
            ns.sort();
            AttributeValue::Ns(ns)
        }
        AttributeValue::Bs(bs) => {
            let mut bs = bs.clone();
            bs.sort();
            AttributeValue::Bs(bs)
        }
        AttributeValue::M(m) => AttributeValue::M(m.iter().map(|(k, v)| (k.clone(), sets_sorted(v))).collect()),
        AttributeValue::L(l) => AttributeValue::L(l.iter().map(sets_sorted).collect()),
        other => other.clone(),
    }
}

pub fn sets_sorted_item(item: &Item) -> Item {
    item.iter().map(|(k, v)| (k.clone(), sets_sorted(v))).collect()
}

/// Whether DynamoDB would store this value as it is (up to number normalization): numbers that
/// normalize, non-empty sets without duplicates (numbers compared normalized), non-empty map keys,
/// at most 32 levels of nesting.
pub fn ddb_valid(v: &AttributeValue) -> bool {
    fn unique<T: Ord>(v: impl Iterator<Item = T>) -> bool {
        let mut seen = std::collections::BTreeSet::new();
        v.into_iter().all(|x| seen.insert(x))
    }
    match v {
        AttributeValue::N(n) => normalize_number(n).is_some(),
        AttributeValue::Ss(ss) => !ss.is_empty() && unique(ss.iter()),
        AttributeValue::Ns(ns) => {
            !ns.is_empty()
                && ns.iter().all(|n| normalize_number(n).is_some())
                && unique(ns.iter().map(|n| normalize_number(n)))
        }
        AttributeValue::Bs(bs) => !bs.is_empty() && unique(bs.iter()),
        AttributeValue::M(m) => depth(v) <= 31 && m.iter().all(|(k, v)| !k.is_empty() && ddb_valid(v)),
        AttributeValue::L(l) => depth(v) <= 31 && l.iter().all(ddb_valid),
        _ => true,
    }
}

/// Nesting depth in maps and lists (a scalar is 0, a list of scalars 1). DynamoDB and the official
/// crate allow 32 levels counting the attribute itself, so at most 31 nested maps or lists.
pub fn depth(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::M(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        AttributeValue::L(l) => 1 + l.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

pub fn binary<'a>(item: &'a Item, name: &str) -> Option<&'a [u8]> {
    match item.get(name)? {
        AttributeValue::B(b) => Some(b),
        _ => None,
    }
}

/// The legend bytes of an `aws_dbe_head` value (offset 34: u16be length, then the bytes).
pub fn legend(head: &[u8]) -> Option<&[u8]> {
    let n = usize::from(u16::from_be_bytes(head.get(34..36)?.try_into().ok()?));
    head.get(36..36 + n)
}

/// The byte range of the encrypted data keys in an `aws_dbe_head` value (after the EDK count, up to the
/// 32-byte commitment): version, flavor, message id, legend, stored context, EDK count, EDKs, commitment.
pub fn edk_region(head: &[u8]) -> Option<std::ops::Range<usize>> {
    let u16_at = |at: usize| Some(usize::from(u16::from_be_bytes(head.get(at..at + 2)?.try_into().ok()?)));
    let mut at = 36 + u16_at(34)?;
    let pairs = u16_at(at)?;
    at += 2;
    for _ in 0..2 * pairs {
        at += 2 + u16_at(at)?;
    }
    let start = at + 1;
    let end = head.len().checked_sub(32)?;
    (start <= end).then_some(start..end)
}

// ---------------------------------------------------------------------------------------------
// The official crate

pub mod official {
    use super::*;

    pub type Client = enc_client::Client;

    fn action(a: &CryptoAction) -> OfficialAction {
        match a {
            CryptoAction::EncryptAndSign => OfficialAction::EncryptAndSign,
            CryptoAction::SignOnly => OfficialAction::SignOnly,
            CryptoAction::SignAndIncludeInEncryptionContext => OfficialAction::SignAndIncludeInEncryptionContext,
            CryptoAction::DoNothing => OfficialAction::DoNothing,
        }
    }

    /// The official material providers client.
    pub fn mpl() -> Result<mpl_client::Client, String> {
        mpl_client::Client::from_conf(MaterialProvidersConfig::builder().build().map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())
    }

    /// An item encryptor with the same configuration and the same raw AES key as ddbguard's side.
    pub async fn client(cfg: &TableConfig) -> Result<Client, String> {
        let keyring = mpl()?
            .create_raw_aes_keyring()
            .key_namespace(KEY_NAMESPACE)
            .key_name(KEY_NAME)
            .wrapping_key(KEY.to_vec())
            .wrapping_alg(AesWrappingAlg::AlgAes256GcmIv12Tag16)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        client_with_keyring(cfg, keyring)
    }

    /// An item encryptor with ddbguard's table configuration and the given official keyring.
    pub fn client_with_keyring(cfg: &TableConfig, keyring: KeyringRef) -> Result<Client, String> {
        let actions: HashMap<String, OfficialAction> = cfg
            .attribute_actions
            .iter()
            .map(|(k, a)| (k.clone(), action(a)))
            .collect();
        let unsigned: Vec<String> = cfg.allowed_unsigned_attributes.iter().cloned().collect();
        let suite = match cfg.algorithm_suite {
            AlgorithmSuite::HmacOnly => DbeAlgorithmSuiteId::AlgAes256GcmHkdfSha512CommitKeySymsigHmacSha384,
            AlgorithmSuite::EcdsaP384 => DbeAlgorithmSuiteId::AlgAes256GcmHkdfSha512CommitKeyEcdsaP384SymsigHmacSha384,
        };
        let config = DynamoDbItemEncryptorConfig::builder()
            .logical_table_name(cfg.logical_table_name.clone())
            .partition_key_name(cfg.partition_key.clone())
            .set_sort_key_name(cfg.sort_key.clone())
            .attribute_actions_on_encrypt(actions)
            .set_allowed_unsigned_attributes((!unsigned.is_empty()).then_some(unsigned))
            .set_allowed_unsigned_attribute_prefix(cfg.allowed_unsigned_attribute_prefix.clone())
            .algorithm_suite_id(suite)
            .keyring(keyring)
            .build()
            .map_err(|e| e.to_string())?;
        Client::from_conf(config).map_err(|e| e.to_string())
    }

    pub async fn encrypt_with(client: &Client, item: &Item) -> Result<Item, String> {
        let out = client
            .encrypt_item()
            .plaintext_item(to_official_item(item))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        Ok(from_official_item(
            out.encrypted_item.as_ref().ok_or("no encrypted item")?,
        ))
    }

    pub async fn decrypt_with(client: &Client, item: &Item) -> Result<Item, String> {
        decrypt_official_with(client, to_official_item(item))
            .await
            .map(|i| from_official_item(&i))
    }

    /// Decrypts an item that is already in the AWS SDK's form (for the benchmark).
    pub async fn decrypt_official_with(
        client: &Client,
        item: HashMap<String, Av>,
    ) -> Result<HashMap<String, Av>, String> {
        let out = client
            .decrypt_item()
            .encrypted_item(item)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        out.plaintext_item.ok_or_else(|| "no plaintext item".to_owned())
    }

    pub async fn encrypt(cfg: &TableConfig, item: &Item) -> Result<Item, String> {
        encrypt_with(&client(cfg).await?, item).await
    }

    pub async fn decrypt(cfg: &TableConfig, item: &Item) -> Result<Item, String> {
        decrypt_with(&client(cfg).await?, item).await
    }
}

// ---------------------------------------------------------------------------------------------
// ddbguard

pub mod ours {
    use super::*;
    use ddbguard_keys::RawAesKeyring;

    pub use ddbguard_dbe::DbeError;

    pub fn keyring() -> RawAesKeyring {
        RawAesKeyring::new(
            KEY_NAMESPACE.to_owned(),
            KEY_NAME.to_owned(),
            zeroize::Zeroizing::new(KEY),
        )
    }

    pub async fn encrypt_with(cfg: &TableConfig, keyring: &RawAesKeyring, item: &Item) -> Result<Item, DbeError> {
        ddbguard_dbe::encrypt_item(cfg, keyring, item).await
    }

    pub async fn decrypt_with(cfg: &TableConfig, keyring: &RawAesKeyring, item: &Item) -> Result<Item, DbeError> {
        ddbguard_dbe::decrypt_item(cfg, keyring, item).await.map(|d| d.item)
    }

    pub async fn encrypt(cfg: &TableConfig, item: &Item) -> Result<Item, DbeError> {
        encrypt_with(cfg, &keyring(), item).await
    }

    pub async fn decrypt(cfg: &TableConfig, item: &Item) -> Result<Item, DbeError> {
        decrypt_with(cfg, &keyring(), item).await
    }

    /// ddbguard's verdict label for a failure: `integrity_failed`, `policy_violation`, `key_not_mrk`, …
    pub fn verdict(e: &DbeError) -> &'static str {
        e.verdict().as_str()
    }
}
