//! Whole-message tests: round trips, legacy suites, tampering, truncation, streaming and the verdicts.

use futures::executor::block_on;
use proptest::prelude::*;

use crate::encrypt::encrypt_any_suite;
use crate::fake::FakeKeyring;
use crate::*;

const COMMITTING: [AlgorithmSuite; 2] = [
    AlgorithmSuite::Aes256GcmHkdfSha512Commit,
    AlgorithmSuite::Aes256GcmHkdfSha512CommitEcdsaP384,
];

fn keyring() -> FakeKeyring {
    FakeKeyring::new("ddbguard-test", "key-1", [0x42; 32])
}

fn ec() -> EncryptionContext {
    [
        ("table".to_owned(), "patients".to_owned()),
        ("column".to_owned(), "ssn".to_owned()),
        ("id".to_owned(), "17".to_owned()),
    ]
    .into()
}

fn plaintext(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn seal(suite: AlgorithmSuite, frame_length: Option<u32>, pt: &[u8]) -> Vec<u8> {
    let options = EncryptOptions { suite, frame_length };
    block_on(encrypt_any_suite(&keyring(), &options, &ec(), pt)).unwrap()
}

fn open(message: &[u8]) -> Result<Decrypted, EsdkError> {
    open_with(&DecryptOptions::default(), message)
}

fn open_with(options: &DecryptOptions, message: &[u8]) -> Result<Decrypted, EsdkError> {
    block_on(decrypt(&keyring(), options, message))
}

fn legacy() -> DecryptOptions {
    DecryptOptions {
        require_commitment: false,
        ..DecryptOptions::default()
    }
}

#[test]
fn committing_suites_round_trip_framed_and_non_framed_at_every_edge_size() {
    for suite in COMMITTING {
        for framing in [Some(4096), Some(7), None] {
            for len in [0, 1, 6, 7, 8, 4095, 4096, 4097, 3 * 4096] {
                let pt = plaintext(len);
                let options = EncryptOptions {
                    suite,
                    frame_length: framing,
                };
                let m = block_on(encrypt(&keyring(), &options, &ec(), &pt)).unwrap();
                let d = open(&m).unwrap_or_else(|e| panic!("{suite} {framing:?} {len}: {e}"));
                assert_eq!(d.plaintext, pt, "{suite} {framing:?} {len}");
                assert_eq!(d.header.suite, suite);
                assert_eq!(d.header.version, 2);
                assert_eq!(d.header.frame_length, framing.unwrap_or(0));
                for (k, v) in ec() {
                    assert_eq!(d.header.encryption_context.get(&k), Some(&v));
                }
                assert_eq!(
                    d.header.encryption_context.contains_key(EC_PUBLIC_KEY),
                    suite.signature().is_some()
                );
            }
        }
    }
}

#[test]
fn one_mib_round_trips_in_both_suites_with_the_default_frame() {
    let pt = plaintext(1 << 20);
    for suite in COMMITTING {
        let m = seal(suite, Some(DEFAULT_FRAME_LENGTH), &pt);
        let info = inspect(&DecryptOptions::default(), &m).unwrap();
        assert_eq!(info.frames, 256);
        assert_eq!(info.plaintext_len, 1 << 20);
        assert_eq!(open(&m).unwrap().plaintext, pt);
        let m = seal(suite, None, &pt);
        assert_eq!(open(&m).unwrap().plaintext, pt);
    }
}

#[test]
fn legacy_suites_are_read_but_policy_violations_when_commitment_is_required() {
    let pt = plaintext(5000);
    for &suite in AlgorithmSuite::ALL.iter().filter(|s| !s.is_committing()) {
        for framing in [Some(4096), None] {
            let m = seal(suite, framing, &pt);
            assert_eq!(m[0], 1, "{suite}: version 1");
            let d = open_with(&legacy(), &m).unwrap_or_else(|e| panic!("{suite}: {e}"));
            assert_eq!(d.plaintext, pt);
            assert_eq!(d.header.message_id.len(), 16);
            let e = open(&m).unwrap_err();
            assert!(matches!(e, EsdkError::NotCommitting(s) if s == suite));
            assert_eq!(
                (e.verdict(), e.reason()),
                (Verdict::PolicyViolation, Reason::NotCommitting)
            );
            // The policy is decided from the header alone: no keyring call.
            let k = keyring();
            assert!(block_on(decrypt(&k, &DecryptOptions::default(), &m)).is_err());
            assert_eq!(k.calls(), 0);
            assert!(inspect(&DecryptOptions::default(), &m).is_err());
            assert!(inspect(&legacy(), &m).is_ok());
        }
    }
}

#[test]
fn non_committing_suites_are_never_written() {
    for &suite in AlgorithmSuite::ALL.iter().filter(|s| !s.is_committing()) {
        let options = EncryptOptions {
            suite,
            frame_length: Some(4096),
        };
        let e = block_on(encrypt(&keyring(), &options, &ec(), b"x")).unwrap_err();
        assert!(matches!(e, EsdkError::InvalidRequest(_)), "{suite}");
    }
}

#[test]
fn encrypt_rejects_reserved_context_keys_and_zero_frames() {
    let mut bad = ec();
    bad.insert("aws-crypto-public-key".into(), "x".into());
    let e = block_on(encrypt(&keyring(), &EncryptOptions::default(), &bad, b"x")).unwrap_err();
    assert!(matches!(e, EsdkError::InvalidRequest(_)));
    let options = EncryptOptions {
        frame_length: Some(0),
        ..EncryptOptions::default()
    };
    assert!(block_on(encrypt(&keyring(), &options, &ec(), b"x")).is_err());
}

#[test]
fn one_flipped_bit_anywhere_fails() {
    for suite in COMMITTING {
        for framing in [Some(16), None] {
            let m = seal(suite, framing, &plaintext(40));
            for i in 0..m.len() {
                for bit in [0x01u8, 0x80] {
                    let mut t = m.clone();
                    t[i] ^= bit;
                    assert!(
                        open(&t).is_err(),
                        "{suite} {framing:?}: byte {i} bit {bit:#x} went unnoticed"
                    );
                }
            }
        }
    }
}

#[test]
fn a_flipped_commitment_is_a_commitment_mismatch() {
    let m = seal(AlgorithmSuite::Aes256GcmHkdfSha512Commit, Some(4096), b"secret");
    let h = Header::parse(&m).unwrap();
    let mut t = m.clone();
    t[h.body_len - 1] ^= 1;
    let e = open(&t).unwrap_err();
    assert!(matches!(e, EsdkError::CommitmentMismatch), "{e}");
    assert_eq!(e.verdict(), Verdict::IntegrityFailed);
    // A flipped header tag fails header authentication.
    let mut t = m.clone();
    t[h.len - 1] ^= 1;
    assert!(matches!(open(&t), Err(EsdkError::HeaderAuthenticationFailed)));
    // A flipped frame byte fails that frame.
    let mut t = m.clone();
    t[h.len + 30] ^= 1;
    assert!(matches!(
        open(&t),
        Err(EsdkError::ContentAuthenticationFailed { sequence: 1 })
    ));
}

#[test]
fn a_signature_over_other_bytes_is_signature_invalid() {
    let m = seal(
        AlgorithmSuite::Aes256GcmHkdfSha512CommitEcdsaP384,
        Some(4096),
        b"secret",
    );
    let mut t = m.clone();
    let last = t.len() - 1;
    t[last] ^= 1;
    let e = open(&t).unwrap_err();
    assert!(matches!(e, EsdkError::SignatureInvalid), "{e}");
    assert_eq!(e.reason(), Reason::SignatureInvalid);
}

#[test]
fn a_changed_encryption_context_fails() {
    for suite in COMMITTING {
        let m = seal(suite, Some(4096), b"123-45-6789");
        // The stored pairs are what the caller expects.
        let mut expected = DecryptOptions {
            expected_context: ec(),
            ..DecryptOptions::default()
        };
        assert_eq!(open_with(&expected, &m).unwrap().plaintext, b"123-45-6789");
        // A ciphertext moved to another row: the stored id differs from the expected one.
        expected.expected_context.insert("id".into(), "18".into());
        let e = open_with(&expected, &m).unwrap_err();
        assert!(
            matches!(&e, EsdkError::ContextMismatch { key, .. } if key == "id"),
            "{e}"
        );
        assert_eq!(
            (e.verdict(), e.reason()),
            (Verdict::IntegrityFailed, Reason::ContextMismatch)
        );
        assert!(!e.to_string().contains("17") && !e.to_string().contains("18"));
        // A required pair the message was not written with fails header authentication.
        let extra = DecryptOptions {
            expected_context: [("tenant".to_owned(), "a".to_owned())].into(),
            ..DecryptOptions::default()
        };
        let e = open_with(&extra, &m).unwrap_err();
        assert!(
            matches!(e, EsdkError::HeaderAuthenticationFailed | EsdkError::Keyring(_)),
            "{e}"
        );
    }
}

#[test]
fn every_truncation_fails_and_never_panics() {
    for suite in COMMITTING {
        for framing in [Some(8), None] {
            let m = seal(suite, framing, &plaintext(20));
            for n in 0..m.len() {
                let e = open(&m[..n]).unwrap_err();
                assert!(
                    matches!(e, EsdkError::Truncated { .. }),
                    "{suite} {framing:?}: prefix {n} of {}: {e}",
                    m.len()
                );
                assert!(inspect(&DecryptOptions::default(), &m[..n]).is_err());
            }
            let mut longer = m.clone();
            longer.push(0);
            let e = open(&longer).unwrap_err();
            assert!(matches!(e, EsdkError::Malformed { .. }), "{e}");
            assert!(inspect(&DecryptOptions::default(), &longer).is_err());
        }
    }
}

#[test]
fn a_dropped_frame_or_reordered_frames_fail() {
    let frame = 8usize;
    let m = seal(
        AlgorithmSuite::Aes256GcmHkdfSha512Commit,
        Some(frame as u32),
        &plaintext(20),
    );
    let h = Header::parse(&m).unwrap();
    let unit = 4 + 12 + frame + 16;
    let (f1, f2) = (h.len..h.len + unit, h.len + unit..h.len + 2 * unit);
    let mut dropped = m[..h.len].to_vec();
    dropped.extend_from_slice(&m[f2.clone()]);
    dropped.extend_from_slice(&m[f2.end..]);
    assert!(matches!(open(&dropped), Err(EsdkError::Malformed { .. })));
    let mut swapped = m[..h.len].to_vec();
    swapped.extend_from_slice(&m[f2.clone()]);
    swapped.extend_from_slice(&m[f1]);
    swapped.extend_from_slice(&m[f2.end..]);
    assert!(matches!(open(&swapped), Err(EsdkError::Malformed { .. })));
}

#[test]
fn inspect_reports_the_structure_without_a_key() {
    let m = seal(
        AlgorithmSuite::Aes256GcmHkdfSha512CommitEcdsaP384,
        Some(4096),
        &plaintext(10_000),
    );
    let info = inspect(&DecryptOptions::default(), &m).unwrap();
    assert_eq!(info.frames, 3);
    assert_eq!(info.plaintext_len, 10_000);
    assert_eq!(info.message_len, m.len() as u64);
    assert!(matches!(info.signature_len, Some(102..=104)));
    assert_eq!(info.header.encrypted_data_keys[0].provider_id, "ddbguard-test");
    let required = DecryptOptions {
        require_suite: Some(AlgorithmSuite::Aes256GcmHkdfSha512Commit),
        ..DecryptOptions::default()
    };
    let e = inspect(&required, &m).unwrap_err();
    assert_eq!(
        (e.verdict(), e.reason()),
        (Verdict::PolicyViolation, Reason::WrongSuite)
    );
}

#[test]
fn keyring_failures_keep_their_verdicts() {
    let m = seal(AlgorithmSuite::Aes256GcmHkdfSha512Commit, Some(4096), b"x");
    let other_name = FakeKeyring::new("ddbguard-test", "key-2", [0x42; 32]);
    let e = block_on(decrypt(&other_name, &DecryptOptions::default(), &m)).unwrap_err();
    assert_eq!((e.verdict(), e.reason()), (Verdict::KeyNotMrk, Reason::NoMatchingKey));
    let other_bytes = FakeKeyring::new("ddbguard-test", "key-1", [0x43; 32]);
    let e = block_on(decrypt(&other_bytes, &DecryptOptions::default(), &m)).unwrap_err();
    assert_eq!(
        (e.verdict(), e.reason()),
        (Verdict::IntegrityFailed, Reason::WrappedKeyIntegrityFailed)
    );
}

#[test]
fn limits_are_policy_violations() {
    let m = seal(AlgorithmSuite::Aes256GcmHkdfSha512Commit, Some(1 << 16), &plaintext(10));
    let small = DecryptOptions {
        max_buffer: 4096,
        ..DecryptOptions::default()
    };
    let e = open_with(&small, &m).unwrap_err();
    assert_eq!((e.verdict(), e.reason()), (Verdict::PolicyViolation, Reason::TooLarge));
    let m = seal(AlgorithmSuite::Aes256GcmHkdfSha512Commit, None, &plaintext(5000));
    assert!(matches!(open_with(&small, &m), Err(EsdkError::TooLarge { .. })));
    let one_edk = DecryptOptions {
        max_encrypted_data_keys: Some(0),
        ..DecryptOptions::default()
    };
    assert!(matches!(open_with(&one_edk, &m), Err(EsdkError::TooLarge { .. })));
}

/// Decrypts by pushing `chunk`-byte pieces; checks the buffer never exceeds the header or one frame.
fn stream(message: &[u8], chunk: usize) -> Result<Vec<u8>, EsdkError> {
    let header_len = Header::parse(message).map(|h| h.len).unwrap_or(message.len());
    let k = keyring();
    let mut d = Decryptor::new(DecryptOptions::default());
    let mut out = Vec::new();
    for piece in message.chunks(chunk) {
        let mut rest = piece;
        loop {
            let n = d.push(rest, &mut out)?;
            assert!(d.buffered() <= header_len.max(4096 + 40), "buffered {}", d.buffered());
            rest = &rest[n..];
            if d.needs_key() {
                block_on(d.unlock(&k))?;
            } else {
                assert!(rest.is_empty());
                break;
            }
        }
    }
    d.finish()?;
    Ok(out)
}

#[test]
fn streaming_in_any_chunk_size_matches_and_stays_bounded() {
    let pt = plaintext(3 * 4096 + 5);
    for suite in COMMITTING {
        let m = seal(suite, Some(4096), &pt);
        for chunk in [1, 7, 4096, 5000, m.len()] {
            assert_eq!(stream(&m, chunk).unwrap(), pt, "{suite} chunk {chunk}");
        }
    }
}

#[test]
fn signed_messages_hold_the_final_frame_until_the_signature_verifies() {
    let pt = plaintext(4096 + 10);
    let m = seal(AlgorithmSuite::Aes256GcmHkdfSha512CommitEcdsaP384, Some(4096), &pt);
    let sig_len = inspect(&DecryptOptions::default(), &m).unwrap().signature_len.unwrap();
    let body_end = m.len() - 2 - sig_len;
    let k = keyring();
    let mut d = Decryptor::new(DecryptOptions::default());
    let mut out = Vec::new();
    let n = d.push(&m[..body_end], &mut out).unwrap();
    block_on(d.unlock(&k)).unwrap();
    assert_eq!(d.push(&m[n..body_end], &mut out).unwrap(), body_end - n);
    assert_eq!(out, pt[..4096], "only the regular frame is released");
    let mut tampered = m[body_end..].to_vec();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let mut d2 = Decryptor::new(DecryptOptions::default());
    let mut out2 = Vec::new();
    let n = d2.push(&m, &mut out2).unwrap();
    block_on(d2.unlock(&k)).unwrap();
    d2.push(&m[n..body_end], &mut out2).unwrap();
    assert!(d2.push(&tampered, &mut out2).is_err());
    assert_eq!(
        out2.len(),
        4096,
        "the final frame is not released under a bad signature"
    );
    d.push(&m[body_end..], &mut out).unwrap();
    d.finish().unwrap();
    assert_eq!(out, pt);
}

#[test]
fn errors_and_debug_output_never_show_keys_or_plaintext() {
    let k = keyring();
    assert!(!format!("{k:?}").contains("66"));
    let dk = DataKey::from_slice(&[0x42; 32]);
    assert_eq!(format!("{dk:?}"), "DataKey(<32 bytes redacted>)");
    let m = seal(AlgorithmSuite::Aes256GcmHkdfSha512Commit, Some(4096), b"PLAINTEXT-SSN");
    let mut t = m.clone();
    let last = t.len() - 1;
    t[last] ^= 1;
    let e = open(&t).unwrap_err();
    assert!(!format!("{e:?}{e}").contains("PLAINTEXT"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = open_with(&legacy(), &bytes);
        let _ = inspect(&legacy(), &bytes);
    }

    #[test]
    fn mutated_messages_fail_cleanly(
        suite in prop::sample::select(COMMITTING.to_vec()),
        len in 0usize..100,
        framed in any::<bool>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let m = seal(suite, framed.then_some(16), &plaintext(len));
        let mut t = m.clone();
        for (at, v) in &edits {
            let i = at.index(t.len());
            t[i] = *v;
        }
        if t != m {
            prop_assert!(open(&t).is_err());
        }
        let _ = inspect(&DecryptOptions::default(), &t);
        let n = cut.index(m.len());
        prop_assert!(open(&m[..n]).is_err());
    }
}
