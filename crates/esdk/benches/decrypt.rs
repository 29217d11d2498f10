//! Decrypt-and-verify per value for suites 0x0478 and 0x0578 (4096-byte frames, a raw-AES-style keyring), beside
//! its floor — the primitives the same message needs over the same bytes (data key unwrap, HKDF-SHA-512 extract and
//! two expands, AES-GCM key setup, header tag and every frame, and for 0x0578 SHA-384 over the message and one
//! ECDSA P-384 verify) — and, when the project's venv has it, the official Python SDK on the same shapes
//! (`scripts/local-aws.d/esdk_bench.py`, raw AES master key), all in one run.
//!
//! `cargo bench -p ddbguard-esdk --features fake --bench decrypt` (an argument filters the shapes by name).

use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::digest;
use aws_lc_rs::signature::{ECDSA_P384_SHA384_ASN1, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ddbguard_esdk::fake::FakeKeyring;
use ddbguard_esdk::{
    AlgorithmSuite, ContentType, DecryptOptions, EC_PUBLIC_KEY, EncryptOptions, EncryptionContext, Header, decrypt,
    encrypt, inspect,
};
use futures::executor::block_on;
use hkdf::Hkdf;
use sha2::Sha512;

const SHAPES: [(&str, usize); 3] = [("ssn_11B", 11), ("value_1KiB", 1024), ("blob_1MiB", 1 << 20)];
const SUITES: [(&str, AlgorithmSuite); 2] = [
    ("0478", AlgorithmSuite::Aes256GcmHkdfSha512Commit),
    ("0578", AlgorithmSuite::Aes256GcmHkdfSha512CommitEcdsaP384),
];

/// Mean µs per call: repeated for about `budget` after a warm-up, best of three rounds.
fn time_us(budget: Duration, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    while start.elapsed() < budget / 5 {
        f();
    }
    let mut best = f64::MAX;
    for _ in 0..3 {
        let (mut n, start) = (0u64, Instant::now());
        while start.elapsed() < budget / 3 {
            f();
            n += 1;
        }
        best = best.min(start.elapsed().as_secs_f64() * 1e6 / n as f64);
    }
    best
}

/// The primitives one decrypt of `message` needs, with the key material known in advance.
struct Floor {
    wrapping: LessSafeKey,
    edk: Vec<u8>,
    edk_iv: [u8; 12],
    edk_aad: Vec<u8>,
    message: Vec<u8>,
    header: Header,
    public_key: Option<Vec<u8>>,
    signature: Vec<u8>,
    body_end: usize,
}

impl Floor {
    fn new(message: &[u8], ec_aad: Vec<u8>) -> Floor {
        let header = Header::parse(message).expect("header");
        let edk = &header.encrypted_data_keys[0];
        let mut edk_iv = [0u8; 12];
        edk_iv.copy_from_slice(&edk.provider_info[edk.provider_info.len() - 12..]);
        let info = inspect(&DecryptOptions::default(), message).expect("inspect");
        let sig_len = info.signature_len.map_or(0, |n| n + 2);
        let body_end = message.len() - sig_len;
        Floor {
            wrapping: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[0x42; 32]).expect("key")),
            edk: edk.ciphertext.clone(),
            edk_iv,
            edk_aad: ec_aad,
            public_key: header
                .encryption_context
                .get(EC_PUBLIC_KEY)
                .map(|b| STANDARD.decode(b).expect("base64")),
            signature: message[body_end + 2.min(sig_len)..].to_vec(),
            message: message.to_vec(),
            header,
            body_end,
        }
    }

    fn decrypt(&self) -> usize {
        let mut dk = self.edk.clone();
        let (ct, tag) = dk.split_at_mut(32);
        self.wrapping
            .open_in_place_separate_tag(
                Nonce::assume_unique_for_key(self.edk_iv),
                Aad::from(&self.edk_aad[..]),
                tag,
                ct,
            )
            .expect("unwrap");
        let hk = Hkdf::<Sha512>::new(Some(&self.header.message_id), ct);
        let mut key = [0u8; 32];
        let mut commit = [0u8; 32];
        hk.expand_multi_info(&[&[0x04, 0x78], b"DERIVEKEY"], &mut key)
            .expect("expand");
        hk.expand(b"COMMITKEY", &mut commit).expect("expand");
        let gcm = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).expect("key"));
        // Header tag (fails: the floor's key is not the message's), then each frame's ciphertext and tag.
        let _ = gcm.open_in_place_separate_tag(
            Nonce::assume_unique_for_key([0; 12]),
            Aad::from(&self.message[..self.header.body_len]),
            &self.header.header_tag,
            &mut [],
        );
        let mut body = self.message[self.header.len..self.body_end].to_vec();
        let unit = 4 + 12 + self.header.frame_length as usize + 16;
        let frames = if self.header.content_type == ContentType::Framed {
            body.len().div_ceil(unit)
        } else {
            1
        };
        let per = body.len() / frames;
        for chunk in body.chunks_mut(per.max(1)) {
            if chunk.len() > 16 {
                let (c, t) = chunk.split_at_mut(chunk.len() - 16);
                let _ = gcm.open_in_place_separate_tag(
                    Nonce::assume_unique_for_key([0; 12]),
                    Aad::from(&self.header.message_id[..]),
                    t,
                    c,
                );
            }
        }
        if let Some(pk) = &self.public_key {
            let d = digest::digest(&digest::SHA384, &self.message[..self.body_end]);
            UnparsedPublicKey::new(&ECDSA_P384_SHA384_ASN1, pk)
                .verify_digest(&d, &self.signature)
                .expect("signature");
        }
        body.len()
    }
}

/// The Python SDK's µs per decrypt for each (suite, size), if the venv and script are there.
fn python(sizes: &[usize]) -> Option<Vec<(String, usize, f64)>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".venv/bin/python");
    if !python.exists() {
        return None;
    }
    let out = Command::new(python)
        .arg(root.join("scripts/local-aws.d/esdk_bench.py"))
        .args(sizes.iter().map(|s| s.to_string()))
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("esdk_bench.py failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let rows = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_owned(), f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
        .collect();
    Some(rows)
}

fn main() {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let keyring = FakeKeyring::new("bench", "key", [0x42; 32]);
    let ec: EncryptionContext = [
        ("table".to_owned(), "patients".to_owned()),
        ("column".to_owned(), "ssn".to_owned()),
        ("id".to_owned(), "12345".to_owned()),
    ]
    .into();
    let shapes: Vec<(&str, usize)> = SHAPES
        .iter()
        .copied()
        .filter(|(name, _)| filter.as_deref().is_none_or(|f| name.contains(f)))
        .collect();
    let py = python(&shapes.iter().map(|s| s.1).collect::<Vec<_>>());
    println!("\n| shape | suite | ddbguard µs/value | floor µs | ratio | Python SDK µs/value | Python / ddbguard |");
    println!("|---|---|---|---|---|---|---|");
    for (name, size) in &shapes {
        let budget = if *size > 100_000 {
            Duration::from_secs(3)
        } else {
            Duration::from_millis(1500)
        };
        for (suite_name, suite) in SUITES {
            let pt: Vec<u8> = (0..*size).map(|i| i as u8).collect();
            let options = EncryptOptions {
                suite,
                ..EncryptOptions::default()
            };
            let m = block_on(encrypt(&keyring, &options, &ec, &pt)).expect("encrypt");
            let header = Header::parse(&m).expect("header");
            let aad = ddbguard_esdk::serialize_context(&header.encryption_context).expect("ec");
            let floor = Floor::new(&m, aad);
            let ours = time_us(budget, || {
                let d = block_on(decrypt(&keyring, &DecryptOptions::default(), black_box(&m))).expect("decrypt");
                black_box(d.plaintext.len());
            });
            let fl = time_us(budget, || {
                black_box(floor.decrypt());
            });
            let theirs = py
                .as_ref()
                .and_then(|rows| rows.iter().find(|(s, n, _)| s == suite_name && n == size))
                .map(|r| r.2);
            let (py_us, py_ratio) = match theirs {
                Some(t) => (format!("{t:.1}"), format!("{:.1}×", t / ours)),
                None => ("n/a".into(), "n/a".into()),
            };
            println!(
                "| {name} | {suite_name} | {ours:.1} | {fl:.1} | {:.2}× | {py_us} | {py_ratio} |",
                ours / fl
            );
        }
    }
}
