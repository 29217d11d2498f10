//! Item-level tests: encrypt→decrypt round trips over both suites and record versions, tampering of
//! every part of a record, and the policy errors of encrypt and decrypt.

use std::collections::BTreeMap;

use proptest::prelude::*;
use zeroize::Zeroizing;

use crate::value::tests::{arb_value, canonical};
use crate::*;

/// A raw-AES-like keyring local to these tests (ddbguard-keys depends on this crate).
#[derive(Debug)]
struct TestKeyring {
    key: SecretKey,
}

impl TestKeyring {
    fn new(byte: u8) -> TestKeyring {
        TestKeyring {
            key: SecretKey::new(Zeroizing::new([byte; 32])),
        }
    }
}

impl Keyring for TestKeyring {
    fn unwrap_key<'a>(
        &'a self,
        edks: &'a [EncryptedDataKey],
        ec: &'a EncryptionContext,
    ) -> KeyringFuture<'a, UnwrappedKey> {
        Box::pin(async move {
            let aad = serialize_context(ec).map_err(|e| KeyringError::Other { message: e.to_string() })?;
            for (i, edk) in edks.iter().enumerate() {
                if edk.provider_id != "test" || edk.provider_info.len() != 12 || edk.ciphertext.len() != 48 {
                    continue;
                }
                let mut iv = [0u8; 12];
                iv.copy_from_slice(&edk.provider_info);
                let mut ikm = Zeroizing::new([0u8; 32]);
                ikm.copy_from_slice(&edk.ciphertext[..32]);
                if gcm_open(&self.key, &iv, &aad, &mut ikm[..], &edk.ciphertext[32..]) {
                    return Ok(UnwrappedKey {
                        ikm: SecretKey::new(ikm),
                        edk_index: i,
                    });
                }
                return Err(KeyringError::IntegrityFailed {
                    message: "test EDK did not authenticate".into(),
                });
            }
            Err(KeyringError::NoMatchingKey {
                message: "no test EDK".into(),
            })
        })
    }

    fn wrap_key<'a>(&'a self, ec: &'a EncryptionContext) -> KeyringFuture<'a, WrappedKey> {
        Box::pin(async move {
            let other = |e: DbeError| KeyringError::Other { message: e.to_string() };
            let aad = serialize_context(ec).map_err(other)?;
            let ikm = SecretKey::random().map_err(other)?;
            let mut iv = [0u8; 12];
            random_fill(&mut iv).map_err(other)?;
            let mut wrapped = ikm.expose().to_vec();
            let tag = gcm_seal(&self.key, &iv, &aad, &mut wrapped).map_err(other)?;
            wrapped.extend_from_slice(&tag);
            Ok(WrappedKey {
                ikm,
                provider_id: "test".into(),
                provider_info: iv.to_vec(),
                wrapped,
            })
        })
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn config(suite: AlgorithmSuite, v2: bool) -> TableConfig {
    let key_action = if v2 {
        CryptoAction::SignAndIncludeInEncryptionContext
    } else {
        CryptoAction::SignOnly
    };
    let mut c = TableConfig::new("Customers", "pk");
    c.sort_key = Some("sk".into());
    c.algorithm_suite = suite;
    let actions = [
        ("pk", key_action),
        ("sk", key_action),
        ("secret", CryptoAction::EncryptAndSign),
        ("blob", CryptoAction::EncryptAndSign),
        ("café", CryptoAction::EncryptAndSign),
        ("x𝟁", CryptoAction::SignOnly),
        ("meta", CryptoAction::SignOnly),
        ("tags", CryptoAction::EncryptAndSign),
        ("n", CryptoAction::SignOnly),
        ("junk", CryptoAction::DoNothing),
    ];
    c.attribute_actions = actions.iter().map(|(k, a)| ((*k).to_owned(), *a)).collect();
    if v2 {
        c.attribute_actions
            .insert("ctx".into(), CryptoAction::SignAndIncludeInEncryptionContext);
    }
    c.allowed_unsigned_attributes.insert("junk".into());
    c.allowed_unsigned_attribute_prefix = Some("aws:rep:".into());
    c.validate().unwrap();
    c
}

fn item() -> Item {
    let mut m = BTreeMap::new();
    m.insert("k".to_owned(), AttributeValue::N("-0.50".into()));
    m.insert(
        "𝟁".to_owned(),
        AttributeValue::L(vec![AttributeValue::Null, AttributeValue::Bool(false)]),
    );
    let mut i = Item::new();
    i.insert("pk".into(), s("customer#1"));
    i.insert("sk".into(), AttributeValue::N("42".into()));
    i.insert("secret".into(), s("123-45-6789"));
    i.insert("blob".into(), AttributeValue::B(vec![0, 1, 2, 255]));
    i.insert("café".into(), AttributeValue::M(m));
    i.insert("x𝟁".into(), AttributeValue::Ss(vec!["b".into(), "a".into()]));
    i.insert("meta".into(), AttributeValue::Ns(vec!["10".into(), "1E2".into()]));
    i.insert("tags".into(), AttributeValue::Bs(vec![vec![2], vec![1]]));
    i.insert("n".into(), AttributeValue::N("1.50".into()));
    i.insert("junk".into(), s("unsigned"));
    i.insert("ctx".into(), AttributeValue::Bool(true));
    i
}

fn all_configs() -> Vec<TableConfig> {
    let mut out = Vec::new();
    for suite in [AlgorithmSuite::HmacOnly, AlgorithmSuite::EcdsaP384] {
        for v2 in [false, true] {
            out.push(config(suite, v2));
        }
    }
    out
}

fn encrypt(c: &TableConfig, i: &Item) -> Item {
    let mut i = i.clone();
    if !c.attribute_actions.contains_key("ctx") {
        i.remove("ctx");
    }
    block_on(encrypt_item(c, &TestKeyring::new(1), &i)).unwrap()
}

fn decrypt(c: &TableConfig, i: &Item) -> Result<DecryptedItem, DbeError> {
    block_on(decrypt_item(c, &TestKeyring::new(1), i))
}

fn expected_plain(c: &TableConfig) -> Item {
    let mut i: Item = item().iter().map(|(k, v)| (k.clone(), canonical(v))).collect();
    if !c.attribute_actions.contains_key("ctx") {
        i.remove("ctx");
    }
    // Plaintext (signed or unsigned) attributes are returned exactly as stored.
    for name in ["pk", "sk", "x𝟁", "meta", "n", "junk", "ctx"] {
        if let Some(v) = item().get(name)
            && i.contains_key(name)
        {
            i.insert(name.into(), v.clone());
        }
    }
    i
}

#[test]
fn round_trip_all_suites_and_versions() {
    for c in all_configs() {
        let enc = encrypt(&c, &item());
        let head = Header::from_item(&enc).unwrap();
        let v2 = c.attribute_actions.contains_key("ctx");
        assert_eq!(head.version, if v2 { 2 } else { 1 });
        assert_eq!(head.suite, c.algorithm_suite);
        assert_eq!(
            head.stored_context.contains_key(EC_PUBLIC_KEY),
            c.algorithm_suite.signs()
        );
        assert!(matches!(enc["secret"], AttributeValue::B(_)));
        assert_eq!(enc["x𝟁"], item()["x𝟁"]);
        // Legend order = canonical order of the signed attributes.
        let names = signed_attribute_names(&c, &enc);
        let want: Vec<CryptoAction> = names.iter().map(|n| c.attribute_actions[*n]).collect();
        assert_eq!(head.legend, want);
        assert_eq!(check_structure(&c, &enc).unwrap(), head);
        let d = decrypt(&c, &enc).unwrap();
        assert_eq!(d.item, expected_plain(&c), "{c:?}");
        assert_eq!(d.edk_index, 0);
        assert!(d.action_differences(&c).is_empty());
        // +18 bytes per encrypted attribute.
        if let AttributeValue::B(b) = &enc["secret"] {
            assert_eq!(b.len(), "123-45-6789".len() + 18);
        }
    }
}

#[test]
fn unsigned_attributes_may_change() {
    for c in all_configs() {
        let mut enc = encrypt(&c, &item());
        enc.insert("junk".into(), s("changed"));
        enc.insert("aws:rep:updateregion".into(), s("eu-west-1"));
        let d = decrypt(&c, &enc).unwrap();
        assert_eq!(d.item["junk"], s("changed"));
        enc.remove("junk");
        assert!(decrypt(&c, &enc).is_ok());
    }
}

fn expect_err(c: &TableConfig, i: &Item, verdict: Verdict, what: &str) -> DbeError {
    match decrypt(c, i) {
        Ok(_) => panic!("{what}: decrypted"),
        Err(e) => {
            assert_eq!(e.verdict(), verdict, "{what}: {e}");
            e
        }
    }
}

fn bytes_of(i: &Item, name: &str) -> Vec<u8> {
    match &i[name] {
        AttributeValue::B(b) => b.clone(),
        other => panic!("{name} is {other:?}"),
    }
}

#[test]
fn every_header_bit_flip_is_detected() {
    for c in all_configs() {
        let enc = encrypt(&c, &item());
        let head = bytes_of(&enc, HEADER_ATTRIBUTE);
        for at in 0..head.len() {
            for bit in [0x01u8, 0x10, 0x80] {
                let mut b = head.clone();
                b[at] ^= bit;
                let mut t = enc.clone();
                t.insert(HEADER_ATTRIBUTE.into(), AttributeValue::B(b));
                let e = decrypt(&c, &t).expect_err("header flip decrypted");
                assert!(
                    matches!(
                        e.verdict(),
                        Verdict::IntegrityFailed | Verdict::PolicyViolation | Verdict::KeyNotMrk
                    ),
                    "header byte {at}: {e}"
                );
            }
        }
        for n in 0..head.len() {
            let mut t = enc.clone();
            t.insert(HEADER_ATTRIBUTE.into(), AttributeValue::B(head[..n].to_vec()));
            expect_err(&c, &t, Verdict::IntegrityFailed, "truncated header");
        }
        let mut longer = head.clone();
        longer.push(0);
        let mut t = enc.clone();
        t.insert(HEADER_ATTRIBUTE.into(), AttributeValue::B(longer));
        expect_err(&c, &t, Verdict::IntegrityFailed, "extended header");
        // The commitment specifically.
        let mut b = head.clone();
        let last = b.len() - 1;
        b[last] ^= 1;
        let mut t = enc.clone();
        t.insert(HEADER_ATTRIBUTE.into(), AttributeValue::B(b));
        assert!(matches!(decrypt(&c, &t), Err(DbeError::CommitmentMismatch)));
    }
}

#[test]
fn every_footer_bit_flip_is_detected() {
    for c in all_configs() {
        let enc = encrypt(&c, &item());
        let foot = bytes_of(&enc, FOOTER_ATTRIBUTE);
        for at in 0..foot.len() {
            let mut b = foot.clone();
            b[at] ^= 0x04;
            let mut t = enc.clone();
            t.insert(FOOTER_ATTRIBUTE.into(), AttributeValue::B(b));
            let e = expect_err(&c, &t, Verdict::IntegrityFailed, "footer flip");
            if at < TAG_LEN {
                assert!(matches!(e, DbeError::TagMismatch), "{e}");
            } else {
                assert!(matches!(e, DbeError::SignatureInvalid), "{e}");
            }
        }
        for n in [0, foot.len() - 1] {
            let mut t = enc.clone();
            t.insert(FOOTER_ATTRIBUTE.into(), AttributeValue::B(foot[..n].to_vec()));
            assert!(matches!(decrypt(&c, &t), Err(DbeError::FooterLength { .. })));
        }
    }
}

#[test]
fn encrypted_and_signed_attribute_tampering_is_detected() {
    for c in all_configs() {
        let enc = encrypt(&c, &item());
        for name in ["secret", "blob", "café", "tags"] {
            let v = bytes_of(&enc, name);
            for at in [0, 1, 2, v.len() / 2, v.len() - 1] {
                let mut b = v.clone();
                b[at] ^= 0x20;
                let mut t = enc.clone();
                t.insert(name.into(), AttributeValue::B(b));
                let e = expect_err(&c, &t, Verdict::IntegrityFailed, name);
                assert!(matches!(e, DbeError::TagMismatch), "{name}@{at}: {e}");
            }
            let mut t = enc.clone();
            t.insert(name.into(), AttributeValue::B(v[..10].to_vec()));
            expect_err(&c, &t, Verdict::IntegrityFailed, "short encrypted value");
            let mut t = enc.clone();
            t.insert(name.into(), s("plain"));
            let e = expect_err(&c, &t, Verdict::IntegrityFailed, "encrypted attribute replaced by S");
            assert_eq!(e.reason().as_str(), "malformed_encrypted_field");
        }
        // Swapped encrypted values.
        let mut t = enc.clone();
        let (a, b) = (enc["secret"].clone(), enc["blob"].clone());
        t.insert("secret".into(), b);
        t.insert("blob".into(), a);
        assert!(matches!(decrypt(&c, &t), Err(DbeError::TagMismatch)));
        // Changed signed plaintext values.
        for (name, v) in [
            ("x𝟁", AttributeValue::Ss(vec!["a".into()])),
            ("meta", AttributeValue::Ns(vec!["10".into(), "101".into()])),
            ("n", AttributeValue::N("1.51".into())),
        ] {
            let mut t = enc.clone();
            t.insert(name.into(), v);
            let e = expect_err(&c, &t, Verdict::IntegrityFailed, name);
            assert!(matches!(e, DbeError::TagMismatch), "{e}");
        }
        // A normalization-equivalent number still verifies (DynamoDB may rewrite it).
        let mut t = enc.clone();
        t.insert("n".into(), AttributeValue::N("1.5".into()));
        assert!(decrypt(&c, &t).is_ok());
        // Key values are in the encryption context: the keyring's unwrap fails.
        let mut t = enc.clone();
        t.insert("pk".into(), s("customer#2"));
        let e = expect_err(&c, &t, Verdict::IntegrityFailed, "changed pk");
        assert!(
            matches!(e, DbeError::Keyring(KeyringError::IntegrityFailed { .. })),
            "{e}"
        );
        // Another logical table name.
        let mut other = c.clone();
        other.logical_table_name = "Other".into();
        expect_err(&other, &enc, Verdict::IntegrityFailed, "other table");
    }
}

#[test]
fn shape_changes_are_policy_violations() {
    for c in all_configs() {
        let enc = encrypt(&c, &item());
        let mut t = enc.clone();
        t.insert("added".into(), s("x"));
        let e = expect_err(&c, &t, Verdict::PolicyViolation, "added attribute");
        assert!(matches!(e, DbeError::UnexpectedSignedAttribute { ref attribute } if attribute == "added"));
        let mut t = enc.clone();
        t.remove("meta");
        let e = expect_err(&c, &t, Verdict::PolicyViolation, "removed attribute");
        assert!(matches!(e, DbeError::LegendMismatch { legend, signed } if signed + 1 == legend));
        let mut t = enc.clone();
        t.remove("sk");
        assert!(matches!(decrypt(&c, &t), Err(DbeError::MissingKeyAttribute { .. })));
        // Reader treats a signed attribute as unsigned.
        let mut reader = c.clone();
        reader.allowed_unsigned_attributes.insert("meta".into());
        expect_err(&reader, &enc, Verdict::PolicyViolation, "reader policy");
    }
}

#[test]
fn missing_or_wrong_parts() {
    let c = config(AlgorithmSuite::EcdsaP384, false);
    let enc = encrypt(&c, &item());
    let mut t = enc.clone();
    t.remove(FOOTER_ATTRIBUTE);
    assert!(matches!(
        decrypt(&c, &t),
        Err(DbeError::PartMissing { part: Part::Footer })
    ));
    let mut t = enc.clone();
    t.remove(HEADER_ATTRIBUTE);
    assert!(matches!(
        decrypt(&c, &t),
        Err(DbeError::PartMissing { part: Part::Header })
    ));
    let mut t = enc.clone();
    t.insert(HEADER_ATTRIBUTE.into(), s("x"));
    let e = decrypt(&c, &t).unwrap_err();
    assert_eq!(e.reason().as_str(), "header_wrong_type");
    let e = decrypt(&c, &item()).unwrap_err();
    assert_eq!(e.verdict(), Verdict::Plaintext);
    let mut only_signed = c.clone();
    only_signed
        .attribute_actions
        .retain(|_, a| *a != CryptoAction::EncryptAndSign);
    assert_eq!(
        decrypt(&only_signed, &item()).unwrap_err().verdict(),
        Verdict::PolicyViolation
    );
    let mut legacy = item();
    legacy.insert(LEGACY_MATERIAL_DESCRIPTION.into(), AttributeValue::B(vec![0; 4]));
    legacy.insert(LEGACY_SIGNATURE.into(), AttributeValue::B(vec![0; 32]));
    assert_eq!(decrypt(&c, &legacy).unwrap_err().verdict(), Verdict::LegacyFormat);
    // A keyring without a matching EDK.
    #[derive(Debug)]
    struct Nobody;
    impl Keyring for Nobody {
        fn unwrap_key<'a>(
            &'a self,
            _: &'a [EncryptedDataKey],
            _: &'a EncryptionContext,
        ) -> KeyringFuture<'a, UnwrappedKey> {
            Box::pin(async { Err(KeyringError::NoMatchingKey { message: "none".into() }) })
        }
        fn wrap_key<'a>(&'a self, _: &'a EncryptionContext) -> KeyringFuture<'a, WrappedKey> {
            Box::pin(async { Err(KeyringError::Other { message: "none".into() }) })
        }
    }
    let e = block_on(decrypt_item(&c, &Nobody, &enc)).unwrap_err();
    assert_eq!(e.verdict(), Verdict::KeyNotMrk);
    assert_eq!(e.reason().as_str(), "no_matching_key");
    let e = block_on(decrypt_item(&c, &TestKeyring::new(2), &enc)).unwrap_err();
    assert_eq!(e.verdict(), Verdict::IntegrityFailed);
}

#[test]
fn encrypt_policy_errors() {
    let c = config(AlgorithmSuite::HmacOnly, true);
    let k = TestKeyring::new(1);
    let mut i = item();
    i.insert("aws_dbe_x".into(), s("x"));
    assert!(matches!(
        block_on(encrypt_item(&c, &k, &i)),
        Err(DbeError::ReservedAttributeName { .. })
    ));
    let mut i = item();
    i.insert("unknown".into(), s("x"));
    assert!(matches!(
        block_on(encrypt_item(&c, &k, &i)),
        Err(DbeError::MissingAction { .. })
    ));
    let mut i = item();
    i.insert("aws:rep:x".into(), s("x"));
    assert!(block_on(encrypt_item(&c, &k, &i)).is_ok());
    let mut i = item();
    i.remove("pk");
    assert!(matches!(
        block_on(encrypt_item(&c, &k, &i)),
        Err(DbeError::MissingKeyAttribute { .. })
    ));
    let mut i = item();
    i.remove("ctx");
    assert!(matches!(
        block_on(encrypt_item(&c, &k, &i)),
        Err(DbeError::MissingContextAttribute { .. })
    ));
    let mut i = item();
    i.insert("n".into(), AttributeValue::N("1e999".into()));
    let e = block_on(encrypt_item(&c, &k, &i)).unwrap_err();
    assert_eq!(e.reason().as_str(), "invalid_number");
    assert!(!e.to_string().contains("1e999"));
    let mut i = item();
    i.insert("secret".into(), AttributeValue::Ss(vec!["dup".into(), "dup".into()]));
    assert!(matches!(
        block_on(encrypt_item(&c, &k, &i)),
        Err(DbeError::BadValue { .. })
    ));
    let mut bad = c.clone();
    bad.attribute_actions.insert("pk".into(), CryptoAction::EncryptAndSign);
    assert!(matches!(
        block_on(encrypt_item(&bad, &k, &item())),
        Err(DbeError::Config(_))
    ));
}

#[test]
fn errors_do_not_leak_values() {
    let c = config(AlgorithmSuite::HmacOnly, false);
    let enc = encrypt(&c, &item());
    let mut t = enc.clone();
    t.insert("n".into(), s("123-45-6789-leak"));
    let e = decrypt(&c, &t).unwrap_err();
    assert!(!e.to_string().contains("leak"));
    assert!(!format!("{e:?}").contains("leak"));
}

fn arb_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,8}",
        "\\PC{1,6}",
        Just("café".to_owned()),
        Just("x𝟁".to_owned()),
        Just("\u{FF61}".to_owned()),
        Just("\u{1D401}".to_owned()),
    ]
    .prop_filter("reserved", |n| {
        !n.starts_with("aws_dbe_") && n != "pk" && n != "sk" && !n.starts_with("u_")
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn proptest_round_trip(
        suite in proptest::sample::select(vec![AlgorithmSuite::HmacOnly, AlgorithmSuite::EcdsaP384]),
        v2 in any::<bool>(),
        pk in arb_value(),
        attrs in proptest::collection::btree_map(arb_name(), (arb_value(), any::<u8>()), 0..8),
        unsigned in proptest::collection::btree_map("u_[a-z]{0,4}", arb_value(), 0..3),
    ) {
        let key_action = if v2 { CryptoAction::SignAndIncludeInEncryptionContext } else { CryptoAction::SignOnly };
        let mut c = TableConfig::new("T𝟁", "pk");
        c.algorithm_suite = suite;
        c.allowed_unsigned_attribute_prefix = Some("u_".into());
        c.attribute_actions.insert("pk".into(), key_action);
        let mut item = Item::new();
        item.insert("pk".into(), pk);
        let actions = [
            CryptoAction::EncryptAndSign,
            CryptoAction::SignOnly,
            CryptoAction::DoNothing,
            CryptoAction::SignAndIncludeInEncryptionContext,
        ];
        for (name, (value, pick)) in &attrs {
            let mut action = actions[usize::from(*pick) % actions.len()];
            if action == CryptoAction::DoNothing {
                c.allowed_unsigned_attributes.insert(name.clone());
            }
            if action == CryptoAction::SignAndIncludeInEncryptionContext && !v2 {
                action = CryptoAction::SignOnly;
            }
            c.attribute_actions.insert(name.clone(), action);
            item.insert(name.clone(), value.clone());
        }
        for (name, value) in &unsigned {
            item.insert(name.clone(), value.clone());
        }
        prop_assert_eq!(c.validate(), Ok(()));
        let k = TestKeyring::new(9);
        let enc = block_on(encrypt_item(&c, &k, &item)).unwrap();
        let d = block_on(decrypt_item(&c, &k, &enc)).unwrap();
        for (name, v) in &item {
            let got = &d.item[name];
            let action = c.attribute_actions.get(name).copied().unwrap_or(CryptoAction::DoNothing);
            if action == CryptoAction::EncryptAndSign {
                prop_assert_eq!(got, &canonical(v));
            } else {
                prop_assert_eq!(got, v);
            }
        }
        prop_assert_eq!(d.item.len(), item.len());
        // Any single-byte change of a signed or encrypted binary attribute fails.
        for (name, v) in &enc {
            if let AttributeValue::B(b) = v {
                if b.is_empty() || c.is_allowed_unsigned(name) {
                    continue;
                }
                let mut t = enc.clone();
                let mut b2 = b.clone();
                let at = b2.len() / 2;
                b2[at] ^= 0x01;
                t.insert(name.clone(), AttributeValue::B(b2));
                prop_assert!(block_on(decrypt_item(&c, &k, &t)).is_err(), "flip in {} undetected", name);
            }
        }
    }
}

/// The table policy's checks against a record written under `config(suite, false)`.
#[test]
fn table_policy_checks_suite_required_encryption_and_actions() {
    let c = config(AlgorithmSuite::EcdsaP384, false);
    let written = encrypt(&c, &item());
    let header = check_structure(&c, &written).unwrap();
    let check = |p: &TablePolicy| p.check_header(&header, &written).map_err(|e| (e.verdict(), e.reason()));

    let same = TablePolicy::new(c.clone());
    assert_eq!(check(&same), Ok(()));
    assert!(same.requires_encryption());
    assert_eq!(same.check_decrypted(&decrypt(&c, &written).unwrap()), Ok(()));

    let mut p = same.clone();
    p.require_suite = Some(AlgorithmSuite::HmacOnly);
    assert_eq!(check(&p), Err((Verdict::PolicyViolation, Reason::WrongSuite)));

    let mut p = same.clone();
    p.required_encrypted.insert("meta".into());
    let e = p.check_header(&header, &written).unwrap_err();
    assert_eq!(
        (e.verdict(), e.reason()),
        (Verdict::Plaintext, Reason::AttributeNotEncrypted)
    );
    assert!(
        e.to_string().contains("\"meta\"") && e.to_string().contains("SIGN_ONLY"),
        "{e}"
    );

    let mut p = same.clone();
    p.required_encrypted.insert("junk".into());
    let e = p.check_header(&header, &written).unwrap_err();
    assert!(e.to_string().contains("stored unsigned"), "{e}");

    let mut p = same.clone();
    p.config.attribute_actions.remove("meta");
    assert_eq!(
        check(&p),
        Err((Verdict::PolicyViolation, Reason::UnexpectedSignedAttribute))
    );

    let mut p = same.clone();
    p.config
        .attribute_actions
        .insert("secret".into(), CryptoAction::SignOnly);
    p.config
        .attribute_actions
        .insert("n".into(), CryptoAction::EncryptAndSign);
    let e = p.check_header(&header, &written).unwrap_err();
    assert_eq!(
        (e.verdict(), e.reason()),
        (Verdict::Plaintext, Reason::AttributeNotEncrypted)
    );
    p.config.attribute_actions.insert("n".into(), CryptoAction::SignOnly);
    assert_eq!(check(&p), Err((Verdict::PolicyViolation, Reason::ActionMismatch)));
    let decrypted = decrypt(&c, &written).unwrap();
    let e = p.check_decrypted(&decrypted).unwrap_err();
    assert_eq!(e.reason(), Reason::ActionMismatch);
    assert!(!e.to_string().contains("123-45-6789"), "{e}");
}
