//! The AWS Encryption SDK message format (`ddbguard-esdk`) against the official Python SDK 4.x
//! (`scripts/local-aws.d/esdk_interop.py`) through the local KMS, both ways: messages the SDK writes under the MRK
//! in us-east-1 decrypt in ddbguard with the ap-southeast-2 replica, and messages ddbguard writes decrypt in the SDK
//! with the replica; both committing suites, framed and non-framed, empty and 1 MiB. A flipped bit, a changed
//! encryption context and a truncated frame fail on both sides.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Once};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ddbguard_e2e::{LocalAws, Mrk, PRIMARY_REGION, REPLICA_REGION, repo_root, unique_name};
use ddbguard_esdk::{
    AlgorithmSuite, DecryptOptions, EncryptOptions, EncryptionContext, EsdkError, Header, decrypt, encrypt,
};
use ddbguard_keys::kms::{MrkKeyring, SdkKms};
use serde_json::{Value, json};

const SIZES: [usize; 2] = [0, 1 << 20];
const SUITES: [(AlgorithmSuite, &str); 2] = [
    (AlgorithmSuite::Aes256GcmHkdfSha512Commit, "0478"),
    (AlgorithmSuite::Aes256GcmHkdfSha512CommitEcdsaP384, "0578"),
];
/// 4096: the SDKs' default frame; 0: non-framed.
const FRAMINGS: [u32; 2] = [4096, 0];

fn plaintext(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn context() -> EncryptionContext {
    [
        ("table".to_owned(), "patients".to_owned()),
        ("column".to_owned(), "ssn".to_owned()),
        ("id".to_owned(), "17".to_owned()),
    ]
    .into()
}

/// Runs the Python SDK on a batch of operations.
pub(crate) fn python(env: &LocalAws, ops: Vec<Value>) -> Result<Vec<Value>> {
    let answer = python_script("esdk_interop.py", &json!({ "endpoint": env.endpoint(), "ops": ops }))?;
    Ok(answer["results"].as_array().context("results")?.clone())
}

/// Runs `scripts/local-aws.d/<script>` in the local environment's venv with `request` on stdin and returns the JSON
/// document it prints; installs the pinned venv first if its stamp is stale.
pub(crate) fn python_script(script: &str, request: &Value) -> Result<Value> {
    static INSTALL: Once = Once::new();
    let repo = repo_root();
    INSTALL.call_once(|| {
        let status = Command::new(repo.join("scripts/local-aws"))
            .arg("install")
            .current_dir(&repo)
            .status();
        assert!(
            matches!(status, Ok(s) if s.success()),
            "scripts/local-aws install: {status:?}"
        );
    });
    let mut child = Command::new(repo.join(".venv/bin/python"))
        .arg(repo.join("scripts/local-aws.d").join(script))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {script}"))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(request.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{script}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("{script} answer"))
}

async fn keyring(env: &LocalAws, mrk: &Mrk, region: &str) -> Arc<MrkKeyring> {
    let kms = SdkKms::new(env.kms(region).await, region);
    Arc::new(MrkKeyring::new(&mrk.primary_arn, Arc::new(kms), None).expect("MRK ARN"))
}

/// The three tampered forms of a framed message of at least two frames.
fn tampered(message: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let header = Header::parse(message).expect("header");
    // A flipped bit inside the second frame's ciphertext.
    let mut flipped = message.to_vec();
    flipped[header.len + 4096 + 32 + 40] ^= 0x04;
    // The stored `id` value "17" becomes "18": the ciphertext moved to another row.
    let mut moved = message.to_vec();
    let at = message[..header.len]
        .windows(4)
        .position(|w| w == b"\x00\x0217")
        .expect("id in the stored context");
    moved[at + 3] = b'8';
    // Cut inside the second frame.
    let truncated = message[..header.len + 4096 + 32 + 100].to_vec();
    vec![
        ("flipped bit", flipped),
        ("changed context", moved),
        ("truncated frame", truncated),
    ]
}

#[tokio::test]
async fn messages_the_python_sdk_writes_in_us_east_1_decrypt_with_the_replica() -> Result<()> {
    let env = LocalAws::shared();
    let mrk = env
        .create_replicated_mrk(&unique_name("mrk", "esdk-python-writes"))
        .await?;
    let mut ops = Vec::new();
    let mut expected = Vec::new();
    for (suite, id) in SUITES {
        for frame_length in FRAMINGS {
            for size in SIZES {
                ops.push(json!({
                    "op": "encrypt", "key_arn": mrk.primary_arn, "suite": id, "frame_length": frame_length,
                    "encryption_context": context(), "plaintext": STANDARD.encode(plaintext(size)),
                }));
                expected.push((suite, frame_length, size));
            }
        }
    }
    for (_, id) in SUITES {
        ops.push(json!({
            "op": "encrypt", "key_arn": mrk.primary_arn, "suite": id, "frame_length": 4096,
            "encryption_context": context(), "plaintext": STANDARD.encode(plaintext(10_000)),
        }));
    }
    let written = python(env, ops)?;
    let reader = keyring(env, &mrk, REPLICA_REGION).await;
    let options = DecryptOptions {
        expected_context: context(),
        ..DecryptOptions::default()
    };
    let message = |r: &Value| -> Result<Vec<u8>> {
        anyhow::ensure!(r["ok"] == true, "python encrypt failed: {r}");
        Ok(STANDARD.decode(r["ciphertext"].as_str().context("ciphertext")?)?)
    };
    for (r, &(suite, frame_length, size)) in written.iter().zip(&expected) {
        let m = message(r)?;
        let d = decrypt(&*reader, &options, &m)
            .await
            .with_context(|| format!("{suite} frame {frame_length} size {size}"))?;
        assert_eq!(d.plaintext, plaintext(size), "{suite} frame {frame_length} size {size}");
        assert_eq!(d.header.suite, suite);
        assert_eq!(d.header.frame_length, frame_length);
        assert_eq!(
            d.header.encrypted_data_keys[0].provider_info,
            mrk.primary_arn.as_bytes()
        );
    }
    for r in &written[expected.len()..] {
        let m = message(r)?;
        assert_eq!(decrypt(&*reader, &options, &m).await?.plaintext, plaintext(10_000));
        // The same message checked against another row's context: integrity_failed / context_mismatch.
        let mut other_row = options.clone();
        other_row.expected_context.insert("id".into(), "18".into());
        let e = decrypt(&*reader, &other_row, &m).await.expect_err("other row");
        assert!(matches!(e, EsdkError::ContextMismatch { .. }), "{e}");
        for (what, bad) in tampered(&m) {
            let e = decrypt(&*reader, &DecryptOptions::default(), &bad)
                .await
                .expect_err(what);
            assert_eq!(e.verdict(), ddbguard_esdk::Verdict::IntegrityFailed, "{what}: {e}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn messages_ddbguard_writes_decrypt_in_the_python_sdk_with_the_replica() -> Result<()> {
    let env = LocalAws::shared();
    let mrk = env
        .create_replicated_mrk(&unique_name("mrk", "esdk-ddbguard-writes"))
        .await?;
    let replica_arn = mrk.replica_arn.clone().context("replicated")?;
    let writer = keyring(env, &mrk, PRIMARY_REGION).await;
    let mut ops = Vec::new();
    let mut expected = Vec::new();
    for (suite, id) in SUITES {
        for frame_length in FRAMINGS {
            for size in SIZES {
                let options = EncryptOptions {
                    suite,
                    frame_length: (frame_length > 0).then_some(frame_length),
                };
                let m = encrypt(&*writer, &options, &context(), &plaintext(size)).await?;
                ops.push(json!({ "op": "decrypt", "key_arn": replica_arn, "ciphertext": STANDARD.encode(&m) }));
                expected.push(Some((id, size)));
            }
        }
        let options = EncryptOptions {
            suite,
            ..EncryptOptions::default()
        };
        let m = encrypt(&*writer, &options, &context(), &plaintext(10_000)).await?;
        for (_, bad) in tampered(&m) {
            ops.push(json!({ "op": "decrypt", "key_arn": replica_arn, "ciphertext": STANDARD.encode(&bad) }));
            expected.push(None);
        }
    }
    let results = python(env, ops)?;
    assert_eq!(results.len(), expected.len());
    for (r, e) in results.iter().zip(&expected) {
        match e {
            Some((id, size)) => {
                assert_eq!(r["ok"], true, "python decrypt of {id}/{size}: {r}");
                assert_eq!(r["suite"], *id);
                let pt = STANDARD.decode(r["plaintext"].as_str().context("plaintext")?)?;
                assert_eq!(pt, plaintext(*size), "{id}/{size}");
                for (k, v) in context() {
                    assert_eq!(r["encryption_context"][&k], v.as_str());
                }
            }
            None => assert_eq!(r["ok"], false, "python accepted a tampered message: {r}"),
        }
    }
    Ok(())
}
