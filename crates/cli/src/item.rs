//! `ddbguard item decrypt|encrypt|inspect`: one item, or JSON lines of items, for operators and forensics.
//!
//! Input is DynamoDB JSON (`{"pk":{"S":"a"},"blob":{"B":"base64…"}}`). A single JSON document is one
//! item and its result is printed pretty; anything else is read as JSON lines and answered with one
//! result line per input line, in order, so that a failing item never hides or shifts the others:
//!
//! ```text
//! {"line":1,"ok":true,"item":{…}}
//! {"line":2,"ok":false,"verdict":"integrity_failed","reason":"commitment_mismatch","error":"…"}
//! ```
//!
//! Errors never contain plaintext of a protected attribute or key material: messages come from the
//! typed errors of `ddbguard-dbe`, which name attributes and offsets, never values.

use std::io::{self, Write};

use ddbguard_dbe::json::{item_from_ddb_json, item_to_ddb_json};
use ddbguard_dbe::{DbeError, Header, Item, Keyring};
use serde_json::{Value, json};

use crate::config::TableSettings;

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

/// Why one item failed: a verdict of the verifier's vocabulary plus a stable reason code.
#[derive(Debug)]
struct ItemFailure {
    verdict: &'static str,
    reason: &'static str,
    message: String,
}

impl From<DbeError> for ItemFailure {
    fn from(e: DbeError) -> Self {
        ItemFailure {
            verdict: e.verdict().as_str(),
            reason: e.reason(),
            message: e.to_string(),
        }
    }
}

impl ItemFailure {
    fn input(message: String) -> Self {
        ItemFailure {
            verdict: "invalid_input",
            reason: "invalid_input",
            message,
        }
    }

    fn to_json(&self) -> Value {
        json!({"verdict": self.verdict, "reason": self.reason, "error": self.message})
    }
}

/// Runs `op` over `input` and writes results to `out`. Returns whether every item succeeded.
pub async fn run(
    op: ItemOp,
    table: &TableSettings,
    keyring: Option<&dyn Keyring>,
    input: &str,
    out: &mut dyn Write,
) -> io::Result<bool> {
    match single_document(input) {
        Some(value) => {
            let result = process(op, table, keyring, value).await;
            match result {
                Ok(v) => {
                    serde_json::to_writer_pretty(&mut *out, &v)?;
                    writeln!(out)?;
                    Ok(true)
                }
                Err(failure) => {
                    serde_json::to_writer(&mut *out, &failure.to_json())?;
                    writeln!(out)?;
                    Ok(false)
                }
            }
        }
        None => {
            let mut all_ok = true;
            for (index, line) in input.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let number = index + 1;
                let result = match serde_json::from_str::<Value>(line) {
                    Ok(value) => process(op, table, keyring, value).await,
                    Err(e) => Err(ItemFailure::input(format!("line {number} is not JSON: {e}"))),
                };
                let record = match result {
                    Ok(v) => json!({"line": number, "ok": true, "item": v}),
                    Err(failure) => {
                        all_ok = false;
                        let mut record = failure.to_json();
                        record["line"] = json!(number);
                        record["ok"] = json!(false);
                        record
                    }
                };
                serde_json::to_writer(&mut *out, &record)?;
                writeln!(out)?;
            }
            Ok(all_ok)
        }
    }
}

/// The input as one JSON document, or `None` when it holds several (JSON lines) or is not JSON at all.
fn single_document(input: &str) -> Option<Value> {
    let mut stream = serde_json::Deserializer::from_str(input).into_iter::<Value>();
    let first = stream.next()?.ok()?;
    input[stream.byte_offset()..].trim().is_empty().then_some(first)
}

async fn process(
    op: ItemOp,
    table: &TableSettings,
    keyring: Option<&dyn Keyring>,
    value: Value,
) -> Result<Value, ItemFailure> {
    let item = item_from_ddb_json(&value).map_err(|e| ItemFailure::input(format!("not a DynamoDB JSON item: {e}")))?;
    match op {
        ItemOp::Decrypt => {
            let keyring = keyring.ok_or_else(|| ItemFailure::input("decrypt needs a keyring".into()))?;
            let decrypted = ddbguard_dbe::decrypt_item(&table.dbe, keyring, &item).await?;
            Ok(item_to_ddb_json(&decrypted.item))
        }
        ItemOp::Encrypt => {
            let keyring = keyring.ok_or_else(|| ItemFailure::input("encrypt needs a keyring".into()))?;
            let encrypted = ddbguard_dbe::encrypt_item(&table.dbe, keyring, &item).await?;
            Ok(item_to_ddb_json(&encrypted))
        }
        ItemOp::Inspect => inspect(table, &item),
    }
}

/// Describes an item's header without any key.
fn inspect(table: &TableSettings, item: &Item) -> Result<Value, ItemFailure> {
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

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
