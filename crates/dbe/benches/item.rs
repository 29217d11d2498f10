//! Decrypt-and-verify of a 9-attribute item (suites 0x6700 and 0x6701, raw AES keyring), beside the floor:
//! the raw primitives the same record needs (HKDFs, GCMs, CTR, HMACs, SHA-384, and one ECDSA verify).

use std::collections::BTreeMap;
use std::hint::black_box;

use aws_lc_rs::signature::{
    ECDSA_P384_SHA384_ASN1, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair, KeyPair, UnparsedPublicKey,
};
use criterion::{Criterion, criterion_group, criterion_main};
use ctr::cipher::{KeyIvInit, StreamCipher};
use ddbguard_dbe::{
    AlgorithmSuite, AttributeValue, CryptoAction, Header, Item, SecretKey, TableConfig, decrypt_item, encrypt_item,
    gcm_open, gcm_seal,
};
use ddbguard_keys::RawAesKeyring;
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha384, Sha512};
use zeroize::Zeroizing;

fn config(suite: AlgorithmSuite) -> TableConfig {
    let mut c = TableConfig::new("Customers", "pk");
    c.sort_key = Some("sk".into());
    c.algorithm_suite = suite;
    for (k, a) in [
        ("pk", CryptoAction::SignOnly),
        ("sk", CryptoAction::SignOnly),
        ("ssn", CryptoAction::EncryptAndSign),
        ("email", CryptoAction::EncryptAndSign),
        ("balance", CryptoAction::EncryptAndSign),
        ("address", CryptoAction::EncryptAndSign),
        ("status", CryptoAction::SignOnly),
        ("tags", CryptoAction::SignOnly),
        ("note", CryptoAction::DoNothing),
    ] {
        c.attribute_actions.insert(k.into(), a);
    }
    c.allowed_unsigned_attributes.insert("note".into());
    c
}

fn item() -> Item {
    let s = |v: &str| AttributeValue::S(v.into());
    let mut address = BTreeMap::new();
    address.insert("street".to_owned(), s("1 Main Street"));
    address.insert("city".to_owned(), s("Sydney"));
    address.insert("zip".to_owned(), AttributeValue::N("2000".into()));
    let mut i = Item::new();
    i.insert("pk".into(), s("customer#000123"));
    i.insert("sk".into(), AttributeValue::N("1700000000".into()));
    i.insert("ssn".into(), s("123-45-6789"));
    i.insert("email".into(), s("someone.somewhere@example.com"));
    i.insert("balance".into(), AttributeValue::N("12345.67".into()));
    i.insert("address".into(), AttributeValue::M(address));
    i.insert("status".into(), s("ACTIVE"));
    i.insert("tags".into(), AttributeValue::L(vec![s("gold"), s("newsletter")]));
    i.insert("note".into(), s("unsigned free text"));
    i
}

fn hkdf32(ikm: &[u8], infos: &[&[u8]]) -> [u8; 32] {
    let hk = Hkdf::<Sha512>::new(None, ikm);
    let mut out = [0u8; 32];
    for info in infos {
        hk.expand(info, &mut out).unwrap();
    }
    out
}

fn bench(c: &mut Criterion) {
    let keyring = RawAesKeyring::new("bench", "key", Zeroizing::new([7u8; 32]));
    for suite in [AlgorithmSuite::HmacOnly, AlgorithmSuite::EcdsaP384] {
        let cfg = config(suite);
        let enc = futures::executor::block_on(encrypt_item(&cfg, &keyring, &item())).unwrap();
        let label = format!("{:#06x}", suite.id());
        c.bench_function(&format!("decrypt_item/{label}"), |b| {
            b.iter(|| futures::executor::block_on(decrypt_item(black_box(&cfg), &keyring, black_box(&enc))).unwrap())
        });

        // The floor: the same primitives over the same byte counts.
        let AttributeValue::B(head) = &enc["aws_dbe_head"] else {
            unreachable!()
        };
        let header = Header::parse(head).unwrap();
        let fields: Vec<Vec<u8>> = ["ssn", "email", "balance", "address"]
            .iter()
            .map(|n| match &enc[*n] {
                AttributeValue::B(b) => b.clone(),
                _ => unreachable!(),
            })
            .collect();
        let ec_len = 2 + 4 * 6 + 150; // approximate serialized EC (v1 keys + table + names [+ public key])
        let record_len = head.len() + 8 + ec_len + fields.iter().map(|f| f.len() + 40).sum::<usize>() + 4 * 80;
        let record = vec![0u8; record_len];
        let key = SecretKey::new(Zeroizing::new([1u8; 32]));
        let mut ikm_ct = [0u8; 32];
        let ikm_tag = gcm_seal(&key, &[0; 12], &record[..ec_len], &mut ikm_ct).unwrap();
        let field_tags: Vec<(Vec<u8>, [u8; 16])> = fields
            .iter()
            .map(|f| {
                let mut ct = f[2..f.len() - 16].to_vec();
                let tag = gcm_seal(&key, &[0; 12], &record[..40], &mut ct).unwrap();
                (ct, tag)
            })
            .collect();
        let signer = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_ASN1_SIGNING).unwrap();
        let hash: [u8; 48] = Sha384::digest(&record).into();
        let sig = signer.sign(&aws_lc_rs::rand::SystemRandom::new(), &hash).unwrap();
        let pk = {
            use aws_lc_rs::encoding::{AsBigEndian, EcPublicKeyCompressedBin};
            let c: EcPublicKeyCompressedBin<'static> = signer.public_key().as_be_bytes().unwrap();
            c.as_ref().to_vec()
        };
        let verify = suite.signs();
        c.bench_function(&format!("primitive_floor/{label}"), |b| {
            b.iter(|| {
                // Keyring: open the IKM.
                let mut ikm = ikm_ct;
                assert!(gcm_open(&key, &[0; 12], &record[..ec_len], &mut ikm, &ikm_tag));
                // Intermediate keys, PDK unwrap.
                let mac_key = hkdf32(
                    &ikm,
                    &[b"AWS_MPL_INTERMEDIATE_KEYWRAP_MAC", b"AWS_MPL_INTERMEDIATE_KEYWRAP_ENC"],
                );
                let mut pdk = ikm_ct;
                assert!(gcm_open(&key, &[0; 12], &record[..ec_len], &mut pdk, &ikm_tag));
                // Commit key and field root key, commitment.
                let commit = hkdf32(&pdk, &[b"AWS_DBE_COMMIT_KEY", b"AWS_DBE_DERIVE_KEY"]);
                let mut m = <Hmac<Sha512> as KeyInit>::new_from_slice(&commit).unwrap();
                m.update(&head[..head.len() - 32]);
                black_box(m.finalize());
                // Canonical hash and recipient tag.
                let h = Sha384::digest(black_box(&record));
                let mut t = <Hmac<Sha384> as KeyInit>::new_from_slice(&mac_key).unwrap();
                t.update(&h);
                black_box(t.finalize());
                if verify {
                    UnparsedPublicKey::new(&ECDSA_P384_SHA384_ASN1, &pk)
                        .verify(&hash, sig.as_ref())
                        .unwrap();
                }
                // Field keys (one CTR pass) and field decryption.
                let mut ks = [0u8; 4 * 48];
                let iv = [0u8; 16];
                let mut ctr = ctr::Ctr128BE::<aes::Aes256>::new((&commit).into(), (&iv).into());
                ctr.apply_keystream(&mut ks);
                for (ct, tag) in &field_tags {
                    let mut buf = ct.clone();
                    assert!(gcm_open(&key, &[0; 12], &record[..40], &mut buf, tag));
                }
                black_box(&header);
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
