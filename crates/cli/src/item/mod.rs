//! `ddbguard item decrypt|encrypt|inspect`: one item, or a stream of items, for operators and forensics.
//!
//! Input is DynamoDB JSON items (`{"pk":{"S":"a"},"blob":{"B":"base64…"}}`), read as a stream (see [`input`]):
//! JSON lines, DynamoDB's S3 export lines (`{"Item":{…}}`), or the pretty-printed output of
//! `aws dynamodb get-item` (`{"Item":{…},"ConsumedCapacity":…}`). A single document is one item and its result is
//! printed pretty; anything else is answered with one result line per input document, in order, numbered by the
//! input line the document starts on, so that a failing item never hides or shifts the others:
//!
//! ```text
//! {"line":1,"ok":true,"item":{…}}
//! {"line":2,"ok":false,"verdict":"integrity_failed","reason":"commitment_mismatch","error":"…"}
//! {"line":3,"ok":false,"input_error":"not_json","error":"the document starting on line 3 is not JSON (…)"}
//! ```
//!
//! `decrypt` decides its verdict with the same [`Judge`] and policy as `ddbguard verify` (fully decrypted, as a
//! sampled stream record), and prints the plaintext only when the verdict passes. Input that is not an item at all
//! is not a verdict: it is an `input_error` (`not_json`, `not_utf8`, `too_large`, `not_an_item`) and has no
//! `verdict` or `reason`. Exit code 0 when every document succeeded, 1 when any failed.
//!
//! Legacy DynamoDB Encryption Client items are decrypted (and described by `inspect`) on a table with
//! `[tables.legacy]`; `encrypt` never writes that format.
//!
//! Errors never contain plaintext of a protected attribute or key material: messages come from the typed
//! errors of `ddbguard-dbe` and the judge, which name attributes and offsets, never values.

pub mod input;

use std::io::{self, BufRead, Write};
use std::sync::Arc;

use ddbguard_dbe::json::{item_from_ddb_json, item_to_ddb_json};
use ddbguard_dbe::{DbeError, Header, Item, Keyring, Reason, Verdict};
use ddbguard_ddbec::{MaterialsProvider, is_legacy_item};
use ddbguard_verify::{Depth, ItemFormat, Judge, Judgement};
use serde_json::{Value, json};

use crate::config::TableSettings;
use input::{Documents, InputError, InputErrorKind, item_of};

/// What to do with each item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ItemOp {
    /// Decrypt and verify; print the plaintext item.
    Decrypt,
    /// Encrypt with the table's keyring and policy; print the encrypted item.
    Encrypt,
    /// Parse the header without a key; print it as JSON.
    Inspect,
}

/// Why one document failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemFailure {
    /// A verdict that does not pass (decrypt), or the verdict of an item-format error (encrypt, inspect).
    Verdict {
        /// The verdict.
        verdict: Verdict,
        /// Why.
        reason: Reason,
        /// Details; never values.
        message: String,
    },
    /// Not an item at all: nothing was judged.
    Input(InputError),
}

impl From<DbeError> for ItemFailure {
    fn from(e: DbeError) -> Self {
        ItemFailure::Verdict {
            verdict: e.verdict(),
            reason: e.reason(),
            message: e.to_string(),
        }
    }
}

impl From<Judgement> for ItemFailure {
    fn from(j: Judgement) -> Self {
        ItemFailure::Verdict {
            verdict: j.verdict,
            reason: j.reason,
            message: j.message,
        }
    }
}

impl ItemFailure {
    fn to_json(&self) -> Value {
        match self {
            ItemFailure::Verdict {
                verdict,
                reason,
                message,
            } => json!({"verdict": verdict, "reason": reason, "error": message}),
            ItemFailure::Input(e) => json!({"input_error": e.kind.as_str(), "error": e.message}),
        }
    }
}

/// One table's item operation, ready to run over documents.
#[derive(Debug)]
pub struct ItemProcessor<'a> {
    op: ItemOp,
    table: &'a TableSettings,
    keyring: Option<Arc<dyn Keyring>>,
    judge: Option<Judge>,
}

impl<'a> ItemProcessor<'a> {
    /// `op` on `table`'s items. `decrypt` and `encrypt` need the table's keyring; `decrypt` judges with the policy
    /// `ddbguard verify` uses for the table ([`crate::keyring::verify_policy`]).
    pub fn new(op: ItemOp, table: &'a TableSettings, keyring: Option<Arc<dyn Keyring>>) -> anyhow::Result<Self> {
        let judge = match (op, &keyring) {
            (ItemOp::Decrypt, Some(keyring)) => {
                let policy = crate::keyring::verify_policy(table, 1.0)?;
                Some(Judge::new(policy, keyring.clone())?)
            }
            (ItemOp::Decrypt | ItemOp::Encrypt, None) => anyhow::bail!("item decrypt and encrypt need a keyring"),
            _ => None,
        };
        Ok(ItemProcessor {
            op,
            table,
            keyring,
            judge,
        })
    }

    /// Lets `decrypt` judge and decrypt the table's legacy items with keys from `provider` (from
    /// [`crate::keyring::legacy_provider`]); without it they are `legacy_format`, as in `ddbguard verify`.
    pub fn with_legacy_provider(mut self, provider: Arc<dyn MaterialsProvider>) -> Self {
        self.judge = self.judge.map(|judge| judge.with_legacy_provider(provider));
        self
    }

    /// The result of one input document: the output item (or header description), or why it failed.
    pub async fn process(&self, document: Value) -> Result<Value, ItemFailure> {
        let value = item_of(document, &self.table.dbe.partition_key);
        let item = item_from_ddb_json(&value).map_err(|e| {
            ItemFailure::Input(InputError::new(
                InputErrorKind::NotAnItem,
                format!("not a DynamoDB JSON item: {e}"),
            ))
        })?;
        match (self.op, &self.judge, &self.keyring) {
            (ItemOp::Decrypt, Some(judge), _) => match judge.judge_and_decrypt(&item, Depth::Full).await {
                (judgement, Some(plaintext)) if judgement.is_pass() => Ok(item_to_ddb_json(plaintext.item())),
                (judgement, _) => Err(judgement.into()),
            },
            // The legacy format is read, never written: a legacy item must be decrypted first.
            (ItemOp::Encrypt, _, _) if is_legacy_item(&item) => Err(ItemFailure::Verdict {
                verdict: Verdict::LegacyFormat,
                reason: Reason::LegacyFormat,
                message: "a legacy DynamoDB Encryption Client item: decrypt it first; item encrypt writes only the \
                          DB-ESDK format"
                    .into(),
            }),
            (ItemOp::Encrypt, _, Some(keyring)) => {
                let encrypted = ddbguard_dbe::encrypt_item(&self.table.dbe, keyring.as_ref(), &item).await?;
                Ok(item_to_ddb_json(&encrypted))
            }
            (ItemOp::Inspect, _, _) => inspect(self.table, &item),
            // `new` refuses decrypt and encrypt without a keyring.
            _ => Err(ItemFailure::Input(InputError::new(
                InputErrorKind::NotAnItem,
                "no keyring for this operation",
            ))),
        }
    }

    /// Runs over every document of `input` and writes results to `out`. Returns whether every document succeeded.
    pub async fn run(&self, input: impl BufRead, out: &mut dyn Write) -> io::Result<bool> {
        let mut documents = Documents::new(input);
        // The first document's result is held until we know whether it is the only one (then it prints pretty).
        let Some(first) = documents.next().transpose()? else {
            return Ok(true);
        };
        let first_result = match first.value {
            Ok(value) => Some(self.process(value).await),
            Err(e) => {
                write_line(out, first.line, Err(ItemFailure::Input(e)))?;
                None
            }
        };
        let mut all_ok = matches!(first_result, Some(Ok(_)));
        let mut pending = first_result;
        while let Some(doc) = documents.next().transpose()? {
            if let Some(result) = pending.take() {
                write_line(out, first.line, result)?;
            }
            let result = match doc.value {
                Ok(value) => self.process(value).await,
                Err(e) => Err(ItemFailure::Input(e)),
            };
            all_ok &= result.is_ok();
            write_line(out, doc.line, result)?;
        }
        // Still pending: the input held exactly one document.
        if let Some(result) = pending {
            match result {
                Ok(v) => serde_json::to_writer_pretty(&mut *out, &v)?,
                Err(failure) => serde_json::to_writer(&mut *out, &failure.to_json())?,
            }
            writeln!(out)?;
        }
        Ok(all_ok)
    }
}

fn write_line(out: &mut dyn Write, line: usize, result: Result<Value, ItemFailure>) -> io::Result<()> {
    let record = match result {
        Ok(v) => json!({"line": line, "ok": true, "item": v}),
        Err(failure) => {
            let mut record = failure.to_json();
            record["line"] = json!(line);
            record["ok"] = json!(false);
            record
        }
    };
    serde_json::to_writer(&mut *out, &record)?;
    writeln!(out)
}

/// Describes an item's header without any key.
fn inspect(table: &TableSettings, item: &Item) -> Result<Value, ItemFailure> {
    if table.legacy.is_some() && ItemFormat::of(item) == ItemFormat::Ddbec {
        return inspect_legacy(item);
    }
    let header = Header::from_item(item)?;
    let signed = ddbguard_dbe::signed_attribute_names(&table.dbe, item);
    let signed_attributes: Vec<Value> = if signed.len() == header.legend.len() {
        signed
            .iter()
            .zip(&header.legend)
            .map(|(name, action)| json!({"name": name, "action": action.as_str()}))
            .collect()
    } else {
        // The legend does not line up with the item's attributes (that is itself a finding): show the
        // legend as written rather than guessing which attribute each byte belongs to.
        header
            .legend
            .iter()
            .map(|action| json!({"name": null, "action": action.as_str()}))
            .collect()
    };
    let edks: Vec<Value> = header
        .edks
        .iter()
        .map(|edk| {
            let info = String::from_utf8_lossy(&edk.provider_info);
            let mut entry = json!({"provider_id": edk.provider_id});
            if edk.provider_id == "aws-kms" {
                entry["key_arn"] = json!(info);
                entry["mrk"] = json!(ddbguard_keys::arn::KmsArn::parse(&info).is_ok_and(|a| a.is_mrk()));
            } else if edk.provider_id == "aws-kms-hierarchy" {
                entry["branch_key_id"] = json!(info);
            } else {
                entry["provider_info_hex"] = json!(hex(&edk.provider_info));
            }
            entry["ciphertext_len"] = json!(edk.ciphertext.len());
            entry
        })
        .collect();
    let mut out = json!({
        "format": "dbesdk",
        "version": header.version,
        "algorithm_suite": format!("0x{:04x}", header.suite.id()),
        "message_id": hex(&header.message_id),
        "signed_attributes": signed_attributes,
        "legend_matches_item": signed.len() == header.legend.len(),
        "encrypted_data_keys": edks,
        "stored_encryption_context": header.stored_context,
    });
    if signed.len() != header.legend.len() {
        out["legend_mismatch"] = json!(format!(
            "the header signs {} attributes, the item has {} that the table policy treats as signed",
            header.legend.len(),
            signed.len()
        ));
    }
    Ok(out)
}

/// Describes a legacy item's material description without any key: every entry, except that the wrapped (or
/// KMS-encrypted) content key is shown by its length only.
fn inspect_legacy(item: &Item) -> Result<Value, ItemFailure> {
    let legacy_error = |e: ddbguard_ddbec::DdbecError| ItemFailure::Verdict {
        verdict: e.verdict(),
        reason: e.reason(),
        message: e.to_string(),
    };
    let binary = |name: &str| match item.get(name) {
        Some(ddbguard_dbe::AttributeValue::B(bytes)) => Some(bytes.as_slice()),
        _ => None,
    };
    let description = binary(ddbguard_ddbec::MATERIAL_DESCRIPTION)
        .ok_or(ddbguard_ddbec::DdbecError::MissingMaterialDescription)
        .and_then(ddbguard_ddbec::MaterialDescription::parse)
        .map_err(legacy_error)?;
    let entries: serde_json::Map<String, Value> = description
        .entries()
        .map(|(name, value)| {
            let shown = if name == ddbguard_ddbec::keys::WRAPPED_KEY {
                json!(format!("<{} base64 characters>", value.len()))
            } else {
                json!(value)
            };
            (name.to_owned(), shown)
        })
        .collect();
    Ok(json!({
        "format": "ddbec",
        "material_description": entries,
        "signature_len": binary(ddbguard_ddbec::SIGNATURE).map(<[u8]>::len),
    }))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use ddbguard_keys::RawAesKeyring;
    use ddbguard_verify::convert::item_to_image;
    use ddbguard_verify::{EventName, SequenceNumber, StreamRecord, Verifier};
    use zeroize::Zeroizing;

    use super::*;
    use crate::config::Config;

    const KEY_BYTE: u8 = 7;
    const MRK: &str = "arn:aws:kms:us-east-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab";
    /// A single-region key: never MRK-matches [`MRK`].
    const OTHER_KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    const SSN: &str = "123-45-6789";

    /// A `Customers` table: `extra` goes into the `[[tables]]` entry; `actions` (`name = "ACTION"` lines) add to or
    /// replace its attribute actions.
    fn config(aws: bool, extra: &str, actions: &str, keyring: &str) -> Config {
        let mut all: std::collections::BTreeMap<&str, &str> = [
            ("pk", "pk = \"SIGN_ONLY\""),
            ("ssn", "ssn = \"ENCRYPT_AND_SIGN\""),
            ("tier", "tier = \"SIGN_ONLY\""),
        ]
        .into();
        for line in actions.lines() {
            all.insert(line.split(' ').next().unwrap_or_default(), line);
        }
        let actions = all.into_values().collect::<Vec<_>>().join("\n");
        let aws = if aws {
            "[aws]\nregion = \"us-east-1\"\nregions = [\"us-east-1\"]\n"
        } else {
            ""
        };
        let text = format!(
            "{aws}[[tables]]\nname = \"Customers\"\npartition_key = \"pk\"\nalgorithm_suite = \"0x6701\"\n\
             allowed_unsigned_attributes = [\"note\"]\n{extra}\n[tables.attribute_actions]\n{actions}\n\
             [tables.keyring]\n{keyring}\n"
        );
        Config::parse(Path::new("t.toml"), &text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn raw_keyring_settings() -> String {
        // Base64 of 32 bytes of KEY_BYTE.
        let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [KEY_BYTE; 32]);
        format!("kind = \"raw-aes\"\nkey_namespace = \"ops\"\nkey_name = \"k\"\nkey_base64 = \"{key}\"")
    }

    fn raw(extra: &str, actions: &str) -> Config {
        config(false, extra, actions, &raw_keyring_settings())
    }

    fn keyring(byte: u8) -> Arc<dyn Keyring> {
        Arc::new(RawAesKeyring::new("ops", "k", Zeroizing::new([byte; 32])))
    }

    fn plain() -> Item {
        let value = json!({"pk": {"S": "c1"}, "ssn": {"S": SSN}, "tier": {"S": "gold"}, "note": {"S": "vip"}});
        item_from_ddb_json(&value).unwrap()
    }

    async fn encrypt(writer: &Config, key_byte: u8, item: &Item) -> Item {
        ddbguard_dbe::encrypt_item(&writer.tables[0].dbe, keyring(key_byte).as_ref(), item)
            .await
            .unwrap()
    }

    /// Writes `aws-kms` EDKs naming `arn` without any KMS (the judge refuses them before any unwrap).
    #[derive(Debug)]
    struct KmsEdkWriter(&'static str);

    impl Keyring for KmsEdkWriter {
        fn unwrap_key<'a>(
            &'a self,
            _: &'a [ddbguard_dbe::EncryptedDataKey],
            _: &'a ddbguard_dbe::EncryptionContext,
        ) -> ddbguard_dbe::KeyringFuture<'a, ddbguard_dbe::UnwrappedKey> {
            Box::pin(async {
                Err(ddbguard_dbe::KeyringError::Other {
                    message: "test keyring never unwraps".into(),
                })
            })
        }

        fn wrap_key<'a>(
            &'a self,
            _: &'a ddbguard_dbe::EncryptionContext,
        ) -> ddbguard_dbe::KeyringFuture<'a, ddbguard_dbe::WrappedKey> {
            Box::pin(async move {
                Ok(ddbguard_dbe::WrappedKey {
                    ikm: ddbguard_dbe::SecretKey::new(Zeroizing::new([1; 32])),
                    provider_id: "aws-kms".into(),
                    provider_info: self.0.as_bytes().to_vec(),
                    wrapped: vec![0; 64],
                })
            })
        }
    }

    fn stream_record(item: &Item) -> StreamRecord {
        StreamRecord {
            event_id: "event-1".into(),
            event_name: EventName::Insert,
            sequence_number: SequenceNumber::new("1"),
            approximate_creation_time: None,
            keys: HashMap::new(),
            new_image: Some(item_to_image(item)),
            old_image: None,
            size_bytes: None,
        }
    }

    /// `(verdict, reason)` of `item decrypt`'s code path.
    async fn via_item_decrypt(config: &Config, keyring: Arc<dyn Keyring>, item: &Item) -> (Verdict, Reason) {
        let processor = ItemProcessor::new(ItemOp::Decrypt, &config.tables[0], Some(keyring)).unwrap();
        match processor.process(item_to_ddb_json(item)).await {
            Ok(_) => (Verdict::Ok, Reason::Verified),
            Err(ItemFailure::Verdict { verdict, reason, .. }) => (verdict, reason),
            Err(ItemFailure::Input(e)) => panic!("input error {e:?}"),
        }
    }

    /// `(verdict, reason)` of `ddbguard verify`'s code path: the policy it builds, a stream record, the verifier.
    async fn via_stream_verifier(config: &Config, keyring: Arc<dyn Keyring>, item: &Item) -> (Verdict, Reason) {
        let table = &config.tables[0];
        let policy = crate::keyring::verify_policy(table, 1.0).unwrap();
        let verifier = Verifier::new(policy, keyring, "us-east-1").unwrap();
        let outcome = verifier.evaluate(&stream_record(item)).await;
        assert!(!outcome.message.contains(SSN), "{}", outcome.message);
        (outcome.verdict, outcome.reason)
    }

    /// The same item under the same configuration gets the same verdict and reason from `item decrypt` and from
    /// the stream verifier, for every kind of finding.
    #[tokio::test]
    async fn item_decrypt_and_the_stream_verifier_agree() {
        let reader = raw("", "");
        let good = encrypt(&reader, KEY_BYTE, &plain()).await;
        let mut tampered = good.clone();
        match tampered.get_mut("ssn") {
            Some(ddbguard_dbe::AttributeValue::B(bytes)) => {
                let i = bytes.len() / 2;
                bytes[i] ^= 1;
            }
            other => panic!("ssn is not B: {other:?}"),
        }
        let wrong_key = encrypt(&reader, KEY_BYTE + 1, &plain()).await;
        let signed_ssn = encrypt(&raw("", "ssn = \"SIGN_ONLY\""), KEY_BYTE, &plain()).await;
        let mut with_extra = plain();
        with_extra.insert("extra".into(), ddbguard_dbe::AttributeValue::S("x".into()));
        let extra_signed = encrypt(&raw("", "extra = \"SIGN_ONLY\""), KEY_BYTE, &with_extra).await;
        let tier_encrypted = encrypt(&raw("", "tier = \"ENCRYPT_AND_SIGN\""), KEY_BYTE, &plain()).await;
        let plaintext = plain();
        let kms_reader = config(true, "", "", &format!("kind = \"kms-mrk\"\nkey_arn = \"{MRK}\""));
        let under_other_key = ddbguard_dbe::encrypt_item(&reader.tables[0].dbe, &KmsEdkWriter(OTHER_KEY), &plain())
            .await
            .unwrap();

        let cases: Vec<(&str, &Config, &Item, Verdict, Reason)> = vec![
            ("ok", &reader, &good, Verdict::Ok, Reason::Verified),
            (
                "tampered",
                &reader,
                &tampered,
                Verdict::IntegrityFailed,
                Reason::RecipientTagMismatch,
            ),
            (
                "wrong key bytes",
                &reader,
                &wrong_key,
                Verdict::IntegrityFailed,
                Reason::WrappedKeyIntegrityFailed,
            ),
            (
                "no KMS EDK under a KMS keyring",
                &kms_reader,
                &good,
                Verdict::KeyNotMrk,
                Reason::NoKmsEdk,
            ),
            (
                "another KMS key",
                &kms_reader,
                &under_other_key,
                Verdict::KeyNotMrk,
                Reason::EdkKeyNotMrk,
            ),
            (
                "plaintext",
                &reader,
                &plaintext,
                Verdict::Plaintext,
                Reason::NotEncrypted,
            ),
            (
                "required attribute signed only",
                &reader,
                &signed_ssn,
                Verdict::Plaintext,
                Reason::AttributeNotEncrypted,
            ),
            (
                "unexpected signed attribute",
                &reader,
                &extra_signed,
                Verdict::PolicyViolation,
                Reason::UnexpectedSignedAttribute,
            ),
            (
                "action mismatch",
                &reader,
                &tier_encrypted,
                Verdict::PolicyViolation,
                Reason::ActionMismatch,
            ),
        ];
        let wrong_suite = raw("require_suite = \"0x6700\"", "");
        let mut cases = cases;
        cases.push((
            "wrong suite",
            &wrong_suite,
            &good,
            Verdict::PolicyViolation,
            Reason::WrongSuite,
        ));
        let required_note = raw("required_encrypted = [\"note\"]", "");
        cases.push((
            "required_encrypted",
            &required_note,
            &good,
            Verdict::Plaintext,
            Reason::AttributeNotEncrypted,
        ));

        for (name, config, item, verdict, reason) in cases {
            let by_item = via_item_decrypt(config, keyring(KEY_BYTE), item).await;
            let by_stream = via_stream_verifier(config, keyring(KEY_BYTE), item).await;
            assert_eq!(by_item, by_stream, "{name}: item decrypt and verify disagree");
            assert_eq!(by_item, (verdict, reason), "{name}");
        }
    }

    async fn run_on(op: ItemOp, config: &Config, input: &str) -> (bool, String) {
        let keyring = (op != ItemOp::Inspect).then(|| keyring(KEY_BYTE));
        let processor = ItemProcessor::new(op, &config.tables[0], keyring).unwrap();
        let mut out = Vec::new();
        let ok = processor.run(input.as_bytes(), &mut out).await.unwrap();
        (ok, String::from_utf8(out).unwrap())
    }

    fn lines(out: &str) -> Vec<Value> {
        out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[tokio::test]
    async fn one_document_prints_pretty_and_failed_decrypts_never_print_plaintext() {
        let reader = raw("", "");
        let good = item_to_ddb_json(&encrypt(&reader, KEY_BYTE, &plain()).await);
        let (ok, out) = run_on(ItemOp::Decrypt, &reader, &good.to_string()).await;
        assert!(ok);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["ssn"]["S"], SSN);
        assert!(out.lines().count() > 1, "pretty: {out}");

        // Decrypts, but the policy wants `note` encrypted: no plaintext is printed.
        let strict = raw("required_encrypted = [\"note\"]", "");
        let (ok, out) = run_on(ItemOp::Decrypt, &strict, &good.to_string()).await;
        assert!(!ok);
        assert!(!out.contains(SSN), "{out}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            (v["verdict"].as_str(), v["reason"].as_str()),
            (Some("plaintext"), Some("attribute_not_encrypted"))
        );
    }

    #[tokio::test]
    async fn get_item_output_and_s3_export_lines_are_items() {
        let reader = raw("", "");
        let good = item_to_ddb_json(&encrypt(&reader, KEY_BYTE, &plain()).await);
        let get_item = serde_json::to_string_pretty(
            &json!({"Item": good, "ConsumedCapacity": {"TableName": "Customers", "CapacityUnits": 0.5}}),
        )
        .unwrap();
        assert!(get_item.lines().count() > 5);
        let (ok, out) = run_on(ItemOp::Decrypt, &reader, &get_item).await;
        assert!(ok, "{out}");
        assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["ssn"]["S"], SSN);

        // Two get-item outputs one after the other: result lines numbered by where each starts.
        let twice = format!("{get_item}\n{get_item}\n");
        let (ok, out) = run_on(ItemOp::Decrypt, &reader, &twice).await;
        assert!(ok, "{out}");
        let got = lines(&out);
        let second = get_item.lines().count() + 1;
        assert_eq!(
            (got[0]["line"].as_u64(), got[1]["line"].as_u64()),
            (Some(1), Some(second as u64))
        );

        // An S3 export (DYNAMODB_JSON): one {"Item":…} per line.
        let export_line = json!({"Item": good}).to_string();
        let export = format!("{export_line}\n{export_line}\n{export_line}\n");
        let (ok, out) = run_on(ItemOp::Decrypt, &reader, &export).await;
        assert!(ok, "{out}");
        let got = lines(&out);
        assert_eq!(got.len(), 3);
        for (i, line) in got.iter().enumerate() {
            assert_eq!(
                (line["line"].as_u64(), line["ok"].as_bool()),
                (Some(i as u64 + 1), Some(true))
            );
            assert_eq!(line["item"]["ssn"]["S"], SSN);
        }
    }

    #[tokio::test]
    async fn a_malformed_line_in_the_middle_is_an_input_error_and_the_rest_is_processed() {
        let reader = raw("", "");
        let good = item_to_ddb_json(&encrypt(&reader, KEY_BYTE, &plain()).await);
        let input = format!(
            "{good}\nnot json: ssn 555-12-3456\n{{\"pk\": \"not ddb json\"}}\n{}\n",
            json!({"Item": good})
        );
        let (ok, out) = run_on(ItemOp::Decrypt, &reader, &input).await;
        assert!(!ok);
        assert!(!out.contains("555-12-3456"), "{out}");
        let got = lines(&out);
        assert_eq!(got.len(), 4, "{out}");
        assert_eq!(got[0]["ok"], true);
        assert_eq!(
            got[1],
            json!({"line": 2, "ok": false, "input_error": "not_json", "error": got[1]["error"]})
        );
        assert!(got[1]["error"].as_str().unwrap().contains("line 2"), "{}", got[1]);
        assert_eq!(
            (got[2]["line"].as_u64(), got[2]["input_error"].as_str()),
            (Some(3), Some("not_an_item"))
        );
        assert!(
            got[2].get("verdict").is_none(),
            "an input error is not a verdict: {}",
            got[2]
        );
        assert_eq!((got[3]["line"].as_u64(), got[3]["ok"].as_bool()), (Some(4), Some(true)));
    }

    #[tokio::test]
    async fn encrypt_and_inspect_read_the_same_shapes() {
        let reader = raw("", "");
        let export_line = json!({"Item": item_to_ddb_json(&plain())}).to_string();
        let (ok, out) = run_on(ItemOp::Encrypt, &reader, &format!("{export_line}\n{export_line}\n")).await;
        assert!(ok, "{out}");
        let encrypted = lines(&out)[0]["item"].clone();
        assert!(encrypted["aws_dbe_head"]["B"].is_string());
        let (ok, out) = run_on(ItemOp::Inspect, &reader, &json!({"Item": encrypted}).to_string()).await;
        assert!(ok, "{out}");
        assert_eq!(
            serde_json::from_str::<Value>(&out).unwrap()["algorithm_suite"],
            "0x6701"
        );
        let (ok, out) = run_on(ItemOp::Inspect, &reader, "").await;
        assert!(ok && out.is_empty());
    }

    /// The legacy client's official vectors: the Python client's static-provider item `hashKey = 5,
    /// rangeKey = 7` (every attribute but `version` encrypted), with the vectors' own static keys.
    mod legacy {
        use super::*;

        const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../ddbec/tests/data/ddbec/encrypted_item");

        fn vector_item() -> Value {
            let path = format!("{VECTORS}/ciphertext/python/static-aes-hmac-1.json");
            let all: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            all["TableName"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["hashKey"]["N"] == "5" && i["rangeKey"]["N"] == "7")
                .unwrap()
                .clone()
        }

        /// A config for the vectors' table, its key files written beside it; `legacy` is the section's body.
        fn vector_config(dir: &std::path::Path, legacy: Option<&str>) -> Config {
            let keys: Value =
                serde_json::from_str(&std::fs::read_to_string(format!("{VECTORS}/keys.json")).unwrap()).unwrap();
            std::fs::create_dir_all(dir).unwrap();
            for (file, key) in [("aes.b64", "aesKey"), ("hmac.b64", "hmacKey")] {
                std::fs::write(dir.join(file), keys[key]["material"].as_str().unwrap()).unwrap();
            }
            let legacy = legacy.map(|l| format!("[tables.legacy]\n{l}\n")).unwrap_or_default();
            let text = format!(
                "[[tables]]\nname = \"TableName\"\npartition_key = \"hashKey\"\nsort_key = \"rangeKey\"\n\
                 [tables.attribute_actions]\nhashKey = \"SIGN_ONLY\"\nrangeKey = \"SIGN_ONLY\"\n\
                 [tables.keyring]\n{}\n{legacy}",
                raw_keyring_settings()
            );
            std::fs::write(dir.join("t.toml"), text).unwrap();
            Config::load(Some(&dir.join("t.toml")), &|_: &str| None).unwrap()
        }

        const STATIC: &str = "allowed = true\nprovider = \"static\"\nencryption_key_file = \"aes.b64\"\n\
                              signing_key_file = \"hmac.b64\"\ndefault_action = \"ENCRYPT_AND_SIGN\"\n\
                              [tables.legacy.attribute_actions]\nversion = \"SIGN_ONLY\"";

        async fn run(op: ItemOp, config: &Config, item: &Value) -> Result<Value, ItemFailure> {
            let table = &config.tables[0];
            let keyring = (op != ItemOp::Inspect).then(|| keyring(KEY_BYTE));
            let mut processor = ItemProcessor::new(op, table, keyring).unwrap();
            if let Some(provider) = crate::keyring::legacy_provider(table, None).await.unwrap() {
                processor = processor.with_legacy_provider(provider);
            }
            processor.process(item.clone()).await
        }

        fn dir(name: &str) -> std::path::PathBuf {
            std::env::temp_dir().join(format!("ddbguard-item-legacy-{name}-{}", std::process::id()))
        }

        #[tokio::test]
        async fn decrypt_prints_a_legacy_vector_item_in_plaintext() {
            let d = dir("decrypt");
            let config = vector_config(&d, Some(STATIC));
            let out = run(ItemOp::Decrypt, &config, &vector_item()).await.unwrap();
            assert_eq!(out["stringValue"], json!({"S": "Hello world!"}));
            assert_eq!(out["byteArrayValue"], json!({"B": "AAECAwQF"}));
            assert_eq!(out["hashKey"], json!({"N": "5"}));
            assert!(out.get(ddbguard_ddbec::MATERIAL_DESCRIPTION).is_none(), "{out}");
            assert!(out.get(ddbguard_ddbec::SIGNATURE).is_none(), "{out}");

            // One flipped bit of an encrypted attribute fails the signature; nothing is printed.
            let mut tampered = vector_item();
            let b64 = tampered["stringValue"]["B"].as_str().unwrap().to_owned();
            let mut bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).unwrap();
            bytes[20] ^= 1;
            tampered["stringValue"]["B"] = json!(base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                bytes
            ));
            let e = run(ItemOp::Decrypt, &config, &tampered).await.unwrap_err();
            assert!(
                matches!(
                    e,
                    ItemFailure::Verdict {
                        verdict: Verdict::IntegrityFailed,
                        ..
                    }
                ),
                "{e:?}"
            );
            std::fs::remove_dir_all(&d).unwrap();
        }

        #[tokio::test]
        async fn without_the_section_a_legacy_item_is_legacy_format() {
            let d = dir("none");
            let config = vector_config(&d, None);
            for op in [ItemOp::Decrypt, ItemOp::Inspect] {
                let e = run(op, &config, &vector_item()).await.unwrap_err();
                assert!(
                    matches!(
                        e,
                        ItemFailure::Verdict {
                            verdict: Verdict::LegacyFormat,
                            ..
                        }
                    ),
                    "{op:?}: {e:?}"
                );
            }
            std::fs::remove_dir_all(&d).unwrap();
        }

        #[tokio::test]
        async fn inspect_shows_the_material_description_and_encrypt_refuses_legacy_items() {
            let d = dir("inspect");
            let config = vector_config(&d, Some(STATIC));
            let out = run(ItemOp::Inspect, &config, &vector_item()).await.unwrap();
            assert_eq!(out["format"], "ddbec");
            assert_eq!(
                out["material_description"],
                json!({"amzn-ddb-map-signingAlg": "HmacSHA256", "amzn-ddb-map-sym-mode": "/CBC/PKCS5Padding"})
            );
            // A wrapped content key is shown by its length only.
            let path = format!("{VECTORS}/ciphertext/python/wrapped-aes-hmac-1.json");
            let wrapped: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            let out = run(ItemOp::Inspect, &config, &wrapped["TableName"][0]).await.unwrap();
            let shown = out["material_description"]["amzn-ddb-env-key"].as_str().unwrap();
            assert!(
                shown.starts_with('<') && shown.ends_with(" base64 characters>"),
                "{out}"
            );
            assert_eq!(out["material_description"]["amzn-ddb-wrap-alg"], "AESWrap", "{out}");
            assert_eq!(out["signature_len"], 32);
            let e = run(ItemOp::Encrypt, &config, &vector_item()).await.unwrap_err();
            assert!(
                matches!(
                    e,
                    ItemFailure::Verdict {
                        verdict: Verdict::LegacyFormat,
                        ..
                    }
                ),
                "{e:?}"
            );
            std::fs::remove_dir_all(&d).unwrap();
        }
    }
}
