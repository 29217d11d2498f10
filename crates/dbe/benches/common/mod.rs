//! Shared by `crates/dbe/benches/item.rs` and the interop comparison bench (`interop/benches/decrypt.rs`,
//! which includes this file by path): the item shapes, their table configurations, and the floor — the raw
//! primitives one decrypt or encrypt of a given record needs, over the same byte counts, with the same
//! libraries `ddbguard-dbe` uses (RustCrypto for HKDF, HMAC, SHA-384 and AES-CTR; aws-lc-rs for AES-GCM,
//! ECDSA P-384 and randomness), each called the plain way (a fresh key per call, no precomputation).
//!
//! Only `ddbguard-dbe`'s public API and its own dependencies are used, so the interop crate can compile
//! this module with the same dev-dependencies.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::encoding::{AsBigEndian, EcPublicKeyCompressedBin};
use aws_lc_rs::signature::{
    ECDSA_P384_SHA384_ASN1, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair, KeyPair, UnparsedPublicKey,
};
use ctr::cipher::{KeyIvInit, StreamCipher};
use ddbguard_dbe::{
    AlgorithmSuite, AttributeValue, CryptoAction, FOOTER_ATTRIBUTE, HEADER_ATTRIBUTE, Header, Item, TableConfig,
    normalize_number,
};
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha384, Sha512};

/// The suites, with the labels the benches print.
pub const SUITES: [(&str, AlgorithmSuite); 2] = [
    ("0x6700", AlgorithmSuite::HmacOnly),
    ("0x6701", AlgorithmSuite::EcdsaP384),
];

/// One benchmarked item: its label, plaintext and attribute actions.
#[derive(Debug, Clone)]
pub struct Shape {
    /// `attrs3`, `attrs9`, `attrs30`.
    pub label: &'static str,
    /// The plaintext item.
    pub item: Item,
    /// Attribute actions on encrypt (DO_NOTHING ones are also allowed unsigned).
    pub actions: Vec<(&'static str, CryptoAction)>,
}

impl Shape {
    /// The table configuration for `suite`: logical table `Customers`, keys `pk` / `sk`.
    pub fn config(&self, suite: AlgorithmSuite) -> TableConfig {
        let mut c = TableConfig::new("Customers", "pk");
        c.sort_key = Some("sk".to_owned());
        c.algorithm_suite = suite;
        c.attribute_actions = self.actions.iter().map(|(n, a)| ((*n).to_owned(), *a)).collect();
        c.allowed_unsigned_attributes = self
            .actions
            .iter()
            .filter(|(_, a)| *a == CryptoAction::DoNothing)
            .map(|(n, _)| (*n).to_owned())
            .collect::<BTreeSet<_>>();
        c
    }

    /// How many attributes the item has, and how many of them are ENCRYPT_AND_SIGN.
    pub fn counts(&self) -> (usize, usize) {
        let encrypted = self
            .actions
            .iter()
            .filter(|(_, a)| *a == CryptoAction::EncryptAndSign)
            .count();
        (self.item.len(), encrypted)
    }
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn n(v: &str) -> AttributeValue {
    AttributeValue::N(v.to_owned())
}

fn map(entries: &[(&str, AttributeValue)]) -> AttributeValue {
    AttributeValue::M(entries.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect())
}

fn shape(label: &'static str, attrs: Vec<(&'static str, CryptoAction, AttributeValue)>) -> Shape {
    Shape {
        label,
        item: attrs.iter().map(|(n, _, v)| ((*n).to_owned(), v.clone())).collect(),
        actions: attrs.iter().map(|(n, a, _)| (*n, *a)).collect(),
    }
}

/// The three shapes: 3 attributes (keys and one secret), 9 attributes (a customer record; the item of the
/// first measurements), and 30 attributes covering all ten types, with a DO_NOTHING TTL attribute.
pub fn shapes() -> Vec<Shape> {
    use CryptoAction::{DoNothing, EncryptAndSign as Enc, SignOnly as Sign};
    let small = shape(
        "attrs3",
        vec![
            ("pk", Sign, s("customer#000471142")),
            ("sk", Sign, n("20240611")),
            ("ssn", Enc, s("123-45-6789")),
        ],
    );
    let address = map(&[
        ("street", s("1428 Elm Street, Apartment 12B")),
        ("city", s("Springwood")),
        ("zip", s("43210-1234")),
        ("country", s("US")),
    ]);
    let medium = shape(
        "attrs9",
        vec![
            ("pk", Sign, s("customer#000471142")),
            ("sk", Sign, n("20240611")),
            ("name", Enc, s("Dr. Josephine Quartermaine-Øverland")),
            ("email", Enc, s("josephine.quartermaine@example.com")),
            ("address", Enc, address.clone()),
            ("balance", Enc, n("1234567.89")),
            (
                "tags",
                Sign,
                AttributeValue::Ss(vec!["gold".into(), "newsletter".into(), "vip".into()]),
            ),
            ("created", Sign, s("2024-06-11T09:30:00Z")),
            ("status", Sign, s("active")),
        ],
    );
    let contact = |name: &str, phone: &str| {
        map(&[
            ("name", s(name)),
            ("phone", s(phone)),
            ("primary", AttributeValue::Bool(false)),
        ])
    };
    let large = shape(
        "attrs30",
        vec![
            ("pk", Sign, s("customer#000471142")),
            ("sk", Sign, n("20240611")),
            // 14 ENCRYPT_AND_SIGN
            ("name", Enc, s("Dr. Josephine Quartermaine-Øverland")),
            ("email", Enc, s("josephine.quartermaine@example.com")),
            ("phone", Enc, s("+61 2 9876 5432")),
            ("ssn", Enc, s("123-45-6789")),
            ("birth_date", Enc, s("1984-02-29")),
            ("address", Enc, address),
            ("balance", Enc, n("1234567.89")),
            ("credit_limit", Enc, n("25000")),
            ("card_last4", Enc, s("4242")),
            ("iban", Enc, s("GB33BUKB20201555555555")),
            (
                "private_notes",
                Enc,
                s(
                    "Prefers contact by e-mail after 6pm. Asked twice about the premium plan; \
                   follow up in Q3. Spouse is a co-signer on the mortgage account ending 0917.",
                ),
            ),
            ("photo", Enc, AttributeValue::B((0..=255u8).collect())),
            (
                "emergency_contacts",
                Enc,
                AttributeValue::L(vec![
                    contact("Marcus Øverland", "+61 400 111 222"),
                    contact("Ines Quartermaine", "+44 20 7946 0018"),
                ]),
            ),
            (
                "preferences",
                Enc,
                map(&[
                    ("language", s("en-AU")),
                    ("marketing", AttributeValue::Bool(true)),
                    ("channels", AttributeValue::Ss(vec!["email".into(), "sms".into()])),
                ]),
            ),
            // 13 SIGN_ONLY
            ("status", Sign, s("active")),
            ("tier", Sign, s("gold")),
            ("created", Sign, s("2024-06-11T09:30:00Z")),
            ("updated", Sign, s("2025-01-03T17:04:12Z")),
            ("version", Sign, n("17")),
            (
                "tags",
                Sign,
                AttributeValue::Ss(vec!["gold".into(), "newsletter".into(), "vip".into()]),
            ),
            (
                "scores",
                Sign,
                AttributeValue::Ns(vec!["0.75".into(), "12".into(), "99.5".into()]),
            ),
            (
                "key_ids",
                Sign,
                AttributeValue::Bs(vec![vec![1, 2, 3, 4], vec![9, 8, 7, 6, 5]]),
            ),
            ("active", Sign, AttributeValue::Bool(true)),
            ("deleted_at", Sign, AttributeValue::Null),
            ("home_region", Sign, s("ap-southeast-2")),
            ("loyalty_points", Sign, n("48210")),
            (
                "logins",
                Sign,
                AttributeValue::L(vec![n("1718090000"), n("1718176400"), n("1718262800")]),
            ),
            // DO_NOTHING
            ("expires", DoNothing, n("1893456000")),
        ],
    );
    assert_eq!(small.item.len(), 3);
    assert_eq!(medium.item.len(), 9);
    assert_eq!(large.item.len(), 30);
    vec![small, medium, large]
}

/// Length of a value's serialization (format digest §1.4), for the byte counts of the floor.
fn serialized_len(v: &AttributeValue) -> usize {
    let num = |x: &String| normalize_number(x).expect("benchmark numbers are valid").len();
    match v {
        AttributeValue::S(x) => x.len(),
        AttributeValue::N(x) => num(x),
        AttributeValue::B(b) => b.len(),
        AttributeValue::Bool(_) => 1,
        AttributeValue::Null => 0,
        AttributeValue::Ss(xs) => 4 + xs.iter().map(|x| 4 + x.len()).sum::<usize>(),
        AttributeValue::Ns(xs) => 4 + xs.iter().map(|x| 4 + num(x)).sum::<usize>(),
        AttributeValue::Bs(xs) => 4 + xs.iter().map(|x| 4 + x.len()).sum::<usize>(),
        AttributeValue::M(m) => {
            4 + m
                .iter()
                .map(|(k, v)| 6 + k.len() + 6 + serialized_len(v))
                .sum::<usize>()
        }
        AttributeValue::L(l) => 4 + l.iter().map(|v| 6 + serialized_len(v)).sum::<usize>(),
    }
}

fn base64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

fn binary<'a>(item: &'a Item, name: &str) -> &'a [u8] {
    match item.get(name) {
        Some(AttributeValue::B(b)) => b,
        _ => panic!("{name} is not a binary attribute"),
    }
}

/// One encrypted attribute as the floor sees it: its canonical path (the GCM AAD) and ciphertext.
#[derive(Debug, Clone)]
struct FloorField {
    aad: Vec<u8>,
    ciphertext: Vec<u8>,
    tag: [u8; 16],
}

/// The primitive work of one record, with the byte counts of a real encrypted item.
pub struct Floor {
    signs: bool,
    /// Serialized encryption context length (AAD of the IKM and PDK wraps).
    ec: Vec<u8>,
    header_body: Vec<u8>,
    message_id: [u8; 32],
    /// The canonical record hashed by SHA-384 (its exact length; the content does not matter).
    record: Vec<u8>,
    fields: Vec<FloorField>,
    key: [u8; 32],
    wrapped: [u8; 32],
    wrapped_tag: [u8; 16],
    public_key: Vec<u8>,
    hash: [u8; 48],
    signature: Vec<u8>,
}

impl std::fmt::Debug for Floor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Floor")
            .field("ec_len", &self.ec.len())
            .field("header_body_len", &self.header_body.len())
            .field("record_len", &self.record.len())
            .field("encrypted_fields", &self.fields.len())
            .finish()
    }
}

const TABLE: &str = "Customers";

fn path_len(name: &str) -> usize {
    TABLE.len() + 8 + 1 + 8 + name.len()
}

fn gcm_seal(key: &[u8; 32], aad: &[u8], buf: &mut [u8]) -> [u8; 16] {
    let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("AES-256 key"));
    let tag = k
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key([0; 12]), Aad::from(aad), buf)
        .expect("seal");
    tag.as_ref().try_into().expect("16-byte tag")
}

fn gcm_open(key: &[u8; 32], aad: &[u8], buf: &mut [u8], tag: &[u8; 16]) {
    let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("AES-256 key"));
    k.open_in_place_separate_tag(Nonce::assume_unique_for_key([0; 12]), Aad::from(aad), tag, buf)
        .expect("open");
}

fn hkdf2(ikm: &[u8; 32], infos: [&[&[u8]]; 2]) -> [[u8; 32]; 2] {
    let hk = Hkdf::<Sha512>::new(None, ikm);
    let mut out = [[0u8; 32]; 2];
    for (o, info) in out.iter_mut().zip(infos) {
        hk.expand_multi_info(info, o).expect("32-byte expand");
    }
    out
}

impl Floor {
    /// The byte counts of `encrypted` (an encryption of `shape` under `config`): EC, header, canonical
    /// record, and every encrypted attribute's path and ciphertext.
    pub fn new(config: &TableConfig, encrypted: &Item) -> Floor {
        let head = binary(encrypted, HEADER_ATTRIBUTE);
        let header = Header::parse(head).expect("benchmark header parses");
        assert_eq!(header.version, 1, "the floor computes record version 1 contexts only");
        // Stored ∪ required context, version 1: table, key names, and base64(type id || value) of the keys.
        let mut ec_lens: BTreeMap<String, usize> = header
            .stored_context
            .iter()
            .map(|(k, v)| (k.clone(), v.len()))
            .collect();
        ec_lens.insert("aws-crypto-table-name".into(), config.logical_table_name.len());
        ec_lens.insert("aws-crypto-partition-name".into(), config.partition_key.len());
        if let Some(sk) = &config.sort_key {
            ec_lens.insert("aws-crypto-sort-name".into(), sk.len());
        }
        for key in config.key_names() {
            ec_lens.insert(
                format!("aws-crypto-attr.{key}"),
                base64_len(2 + serialized_len(&encrypted[key])),
            );
        }
        let ec_len = 2 + ec_lens.iter().map(|(k, v)| 4 + k.len() + v).sum::<usize>();

        // Canonical record: header || u64 EC length || EC || per signed field: path, u64 length,
        // "ENCRYPTED"/"PLAINTEXT", (type id,) value.
        let mut record_len = head.len() + 8 + ec_len;
        let mut fields = Vec::new();
        let key = [0x42u8; 32];
        let mut names: Vec<&String> = encrypted
            .keys()
            .filter(|k| *k != HEADER_ATTRIBUTE && *k != FOOTER_ATTRIBUTE && !config.is_allowed_unsigned(k))
            .collect();
        assert_eq!(names.len(), header.legend.len());
        names.sort_by(|a, b| ddbguard_dbe::canonical_cmp(a, b));
        for (name, action) in names.into_iter().zip(&header.legend) {
            record_len += path_len(name) + 8 + 9;
            if *action == CryptoAction::EncryptAndSign {
                let stored = binary(encrypted, name);
                record_len += stored.len();
                let aad = vec![0u8; path_len(name)];
                let mut ciphertext = stored[2..stored.len() - 16].to_vec();
                let tag = gcm_seal(&key, &aad, &mut ciphertext);
                fields.push(FloorField { aad, ciphertext, tag });
            } else {
                record_len += 2 + serialized_len(&encrypted[name.as_str()]);
            }
        }

        let ec = vec![0u8; ec_len];
        let mut wrapped = [7u8; 32];
        let wrapped_tag = gcm_seal(&key, &ec, &mut wrapped);
        let record = vec![0u8; record_len];
        let hash: [u8; 48] = Sha384::digest(&record).into();
        let signer = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_ASN1_SIGNING).expect("P-384 key");
        let signature = signer
            .sign(&aws_lc_rs::rand::SystemRandom::new(), &hash)
            .expect("sign")
            .as_ref()
            .to_vec();
        let compressed: EcPublicKeyCompressedBin<'static> = signer.public_key().as_be_bytes().expect("public key");
        Floor {
            signs: header.suite.signs(),
            ec,
            header_body: head[..head.len() - 32].to_vec(),
            message_id: header.message_id,
            record,
            fields,
            key,
            wrapped,
            wrapped_tag,
            public_key: compressed.as_ref().to_vec(),
            hash,
            signature,
        }
    }

    /// Canonical record length in bytes (what SHA-384 hashes).
    pub fn record_len(&self) -> usize {
        self.record.len()
    }

    /// The primitives of one decrypt-and-verify: GCM-open the IKM (raw AES keyring), HKDF the intermediate
    /// keys, GCM-open the data key, HKDF the commit and field root keys, HMAC-SHA-512 the commitment,
    /// SHA-384 the canonical record, HMAC-SHA-384 the recipient tag, (0x6701) one ECDSA P-384 verify with
    /// a compressed public key, AES-CTR the field keys, and GCM-open every encrypted attribute.
    pub fn decrypt(&self) {
        let mut ikm = self.wrapped;
        gcm_open(&self.key, &self.ec, &mut ikm, &self.wrapped_tag);
        let [mac_key, kek] = hkdf2(
            black_box(&ikm),
            [
                &[b"AWS_MPL_INTERMEDIATE_KEYWRAP_MAC"],
                &[b"AWS_MPL_INTERMEDIATE_KEYWRAP_ENC"],
            ],
        );
        let mut pdk = self.wrapped;
        gcm_open(black_box(&self.key), &self.ec, &mut pdk, &self.wrapped_tag);
        black_box(kek);
        let [commit_key, field_root] = hkdf2(
            black_box(&pdk),
            [
                &[b"AWS_DBE_COMMIT_KEY", &self.message_id],
                &[b"AWS_DBE_DERIVE_KEY", &self.message_id],
            ],
        );
        let mut mac = <Hmac<Sha512> as KeyInit>::new_from_slice(&commit_key).expect("HMAC key");
        mac.update(&self.header_body);
        black_box(mac.finalize());
        let hash = Sha384::digest(black_box(&self.record));
        let mut tag = <Hmac<Sha384> as KeyInit>::new_from_slice(&mac_key).expect("HMAC key");
        tag.update(&hash);
        black_box(tag.finalize());
        if self.signs {
            UnparsedPublicKey::new(&ECDSA_P384_SHA384_ASN1, &self.public_key)
                .verify(&self.hash, &self.signature)
                .expect("signature verifies");
        }
        self.field_keys(&field_root);
        for f in &self.fields {
            let mut buf = f.ciphertext.clone();
            gcm_open(black_box(&self.key), &f.aad, &mut buf, &f.tag);
            black_box(buf);
        }
    }

    /// The primitives of one encrypt: random IKM, IV, data key and message id; (0x6701) a fresh P-384
    /// key pair, its compressed public key and one signature; GCM-seal the IKM (raw AES keyring), HKDF
    /// the intermediate keys, GCM-seal the data key, HKDF the commit and field root keys, HMAC-SHA-512
    /// the commitment, AES-CTR the field keys, GCM-seal every encrypted attribute, SHA-384 the canonical
    /// record and HMAC-SHA-384 the recipient tag.
    pub fn encrypt(&self) {
        let mut random = [0u8; 32 + 12 + 32 + 32];
        for part in [0..32, 32..44, 44..76, 76..108] {
            aws_lc_rs::rand::fill(&mut random[part]).expect("random");
        }
        let signer = self.signs.then(|| {
            let k = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_ASN1_SIGNING).expect("P-384 key");
            let c: EcPublicKeyCompressedBin<'static> = k.public_key().as_be_bytes().expect("public key");
            black_box(c.as_ref());
            k
        });
        let ikm: [u8; 32] = random[..32].try_into().expect("32 bytes");
        let mut wrapped = ikm;
        black_box(gcm_seal(&self.key, &self.ec, &mut wrapped));
        let [mac_key, kek] = hkdf2(
            &ikm,
            [
                &[b"AWS_MPL_INTERMEDIATE_KEYWRAP_MAC"],
                &[b"AWS_MPL_INTERMEDIATE_KEYWRAP_ENC"],
            ],
        );
        let pdk: [u8; 32] = random[44..76].try_into().expect("32 bytes");
        let mut wrapped_pdk = pdk;
        black_box(gcm_seal(&kek, &self.ec, &mut wrapped_pdk));
        let [commit_key, field_root] = hkdf2(
            &pdk,
            [
                &[b"AWS_DBE_COMMIT_KEY", &random[76..]],
                &[b"AWS_DBE_DERIVE_KEY", &random[76..]],
            ],
        );
        let mut mac = <Hmac<Sha512> as KeyInit>::new_from_slice(&commit_key).expect("HMAC key");
        mac.update(&self.header_body);
        black_box(mac.finalize());
        self.field_keys(&field_root);
        for f in &self.fields {
            let mut buf = f.ciphertext.clone();
            black_box(gcm_seal(black_box(&self.key), &f.aad, &mut buf));
            black_box(buf);
        }
        let hash = Sha384::digest(black_box(&self.record));
        let mut tag = <Hmac<Sha384> as KeyInit>::new_from_slice(&mac_key).expect("HMAC key");
        tag.update(&hash);
        black_box(tag.finalize());
        if let Some(k) = signer {
            black_box(k.sign(&aws_lc_rs::rand::SystemRandom::new(), &hash).expect("sign"));
        }
    }

    fn field_keys(&self, root: &[u8; 32]) {
        let mut stream = vec![0u8; 48 * self.fields.len()];
        let mut iv = [0u8; 16];
        iv[..12].copy_from_slice(b"AwsDbeField,");
        ctr::Ctr128BE::<aes::Aes256>::new(root.into(), (&iv).into()).apply_keystream(&mut stream);
        black_box(stream);
    }
}

/// Where criterion writes its estimates: `CRITERION_HOME`, else `$CARGO_TARGET_DIR/criterion`, else the
/// `criterion` folder of the target directory this bench binary was built in (`target/release/deps/…`).
pub fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join("criterion")))
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
}

/// Mean time in µs from criterion's saved estimate of one benchmark (`group/function`), if present.
pub fn mean_us(criterion_dir: &Path, group: &str, function: &str) -> Option<f64> {
    let path = criterion_dir
        .join(group)
        .join(function)
        .join("new")
        .join("estimates.json");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    Some(json["mean"]["point_estimate"].as_f64()? / 1000.0)
}

/// Peak resident set size of this process in kB (Linux `VmHWM`).
pub fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The load average line of `/proc/loadavg` (1, 5, 15 minutes), to print beside the numbers.
pub fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}
