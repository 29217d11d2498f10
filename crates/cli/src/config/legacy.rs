//! The `[tables.legacy]` sections: whether a table's legacy DynamoDB Encryption Client items are judged, and
//! with which materials provider and attribute actions.
//!
//! Without the section (or with `allowed = false`) a legacy item stays `legacy_format`, so a table that should
//! hold none still alerts on one.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ddbguard_dbe::{CryptoAction, TableConfig};
use ddbguard_ddbec::{
    AttributeActions, ContentKey, LegacyAction, SecretBytes, StaticProvider, UnwrappingKey, VerificationKey,
    WrappedProvider,
};
use ddbguard_keys::arn::KmsArn;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::keyring::{KeyFiles, KeyringSettings};

/// A `[tables.legacy]` section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLegacy {
    #[serde(default)]
    pub allowed: bool,
    /// `"aws-kms"` (default), `"wrapped"` or `"static"`.
    pub provider: Option<String>,
    /// `aws-kms`: the KMS key (default: the table keyring's `key_arn`).
    pub key_arn: Option<String>,
    /// `wrapped`: the AES key-wrap key, base64 in a file.
    pub wrapping_key_file: Option<PathBuf>,
    /// `static`: the AES content key, base64 in a file (optional: a signing-only table has none).
    pub encryption_key_file: Option<PathBuf>,
    /// `wrapped` and `static`: the HMAC signing key, base64 in a file.
    pub signing_key_file: Option<PathBuf>,
    /// What the legacy client did to each attribute (default: the table's `attribute_actions`).
    pub attribute_actions: Option<BTreeMap<String, String>>,
    /// The action of attributes not listed (default: `DO_NOTHING`, as the table's configuration treats them).
    pub default_action: Option<String>,
}

/// Where a table's legacy items get their keys.
#[derive(Clone)]
pub enum LegacyProviderSettings {
    /// The direct AWS KMS provider under this key, used through its replica in the local region.
    AwsKms {
        /// A key ARN (never an alias).
        key_arn: KmsArn,
    },
    /// A content key wrapped into each item's material description, and an HMAC signing key.
    Wrapped(WrappedProvider),
    /// Keys given as they are (tests, forensics with escrowed keys).
    Static(StaticProvider),
}

impl fmt::Debug for LegacyProviderSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The providers' own Debug redacts their keys; the names are enough here.
        match self {
            LegacyProviderSettings::AwsKms { key_arn } => f.debug_struct("AwsKms").field("key_arn", key_arn).finish(),
            LegacyProviderSettings::Wrapped(_) => f.write_str("Wrapped(<redacted>)"),
            LegacyProviderSettings::Static(_) => f.write_str("Static(<redacted>)"),
        }
    }
}

/// A table's validated `[tables.legacy]` section with `allowed = true`.
#[derive(Debug, Clone)]
pub struct LegacySettings {
    /// The provider of the items' keys.
    pub provider: LegacyProviderSettings,
    /// The legacy client's attribute actions (key attributes demoted to `SIGN_ONLY`).
    pub actions: AttributeActions,
}

impl RawLegacy {
    /// The key files this section reads, relative paths resolved against `base`.
    pub(super) fn key_files(&self, base: &Path) -> impl Iterator<Item = PathBuf> {
        [
            &self.wrapping_key_file,
            &self.encryption_key_file,
            &self.signing_key_file,
        ]
        .into_iter()
        .flatten()
        .map(|f| resolve(base, f))
        .collect::<Vec<_>>()
        .into_iter()
    }
}

impl LegacySettings {
    /// Validates a section; `None` when legacy items are not allowed. Errors are `(field, message)` for the
    /// caller to place (the field relative to `legacy.`).
    pub fn from_raw(
        raw: &RawLegacy,
        table: &TableConfig,
        keyring: &KeyringSettings,
        base: &Path,
        key_files: &KeyFiles,
    ) -> Result<Option<LegacySettings>, (String, String)> {
        let default = match raw.default_action.as_deref() {
            None => LegacyAction::DoNothing,
            Some(a) => parse_action(a).map_err(|m| ("default_action".to_owned(), m))?,
        };
        let mut actions = AttributeActions::new(default);
        match &raw.attribute_actions {
            Some(listed) => {
                for (attribute, action) in listed {
                    let parsed = parse_action(action).map_err(|m| (format!("attribute_actions.{attribute}"), m))?;
                    actions = actions.with(attribute.clone(), parsed);
                }
            }
            None => {
                for (attribute, action) in &table.attribute_actions {
                    actions = actions.with(attribute.clone(), from_table(*action));
                }
            }
        }
        let actions = actions.with_key_attributes(table.key_names());
        let provider = match raw.provider.as_deref().unwrap_or("aws-kms") {
            "aws-kms" => {
                refuse(&raw.wrapping_key_file, "wrapping_key_file", "aws-kms")?;
                refuse(&raw.encryption_key_file, "encryption_key_file", "aws-kms")?;
                refuse(&raw.signing_key_file, "signing_key_file", "aws-kms")?;
                let key_arn = match (&raw.key_arn, keyring.kms_key()) {
                    (Some(arn), _) => KmsArn::parse_key(arn).map_err(|e| ("key_arn".to_owned(), e.to_string()))?,
                    (None, Some(arn)) => arn.clone(),
                    (None, None) => {
                        return Err((
                            "key_arn".into(),
                            "is required: the table's keyring names no KMS key to default to".into(),
                        ));
                    }
                };
                LegacyProviderSettings::AwsKms { key_arn }
            }
            "wrapped" => {
                refuse(&raw.key_arn, "key_arn", "wrapped")?;
                refuse(&raw.encryption_key_file, "encryption_key_file", "wrapped")?;
                let wrapping = read_key(raw.wrapping_key_file.as_deref(), "wrapping_key_file", base, key_files)?
                    .ok_or_else(|| {
                        (
                            "wrapping_key_file".to_owned(),
                            "is required for provider \"wrapped\"".into(),
                        )
                    })?;
                let unwrapping =
                    UnwrappingKey::aes(wrapping).map_err(|e| ("wrapping_key_file".to_owned(), e.to_string()))?;
                LegacyProviderSettings::Wrapped(WrappedProvider::new(unwrapping, signing_key(raw, base, key_files)?))
            }
            "static" => {
                refuse(&raw.key_arn, "key_arn", "static")?;
                refuse(&raw.wrapping_key_file, "wrapping_key_file", "static")?;
                let content = read_key(
                    raw.encryption_key_file.as_deref(),
                    "encryption_key_file",
                    base,
                    key_files,
                )?
                .map(ContentKey::new)
                .transpose()
                .map_err(|e| ("encryption_key_file".to_owned(), e.to_string()))?;
                if content.is_none() && actions.may_encrypt() {
                    return Err((
                        "encryption_key_file".into(),
                        "is required: the attribute actions encrypt attributes".into(),
                    ));
                }
                LegacyProviderSettings::Static(StaticProvider::new(content, signing_key(raw, base, key_files)?))
            }
            other => {
                return Err((
                    "provider".into(),
                    format!("unknown legacy provider {other:?}; expected \"aws-kms\", \"wrapped\" or \"static\""),
                ));
            }
        };
        Ok(raw.allowed.then_some(LegacySettings { provider, actions }))
    }
}

/// The legacy action closest to a DB-ESDK action: the legacy client has no encryption context, so
/// `SIGN_AND_INCLUDE_IN_ENCRYPTION_CONTEXT` is `SIGN_ONLY` there.
fn from_table(action: CryptoAction) -> LegacyAction {
    match action {
        CryptoAction::EncryptAndSign => LegacyAction::EncryptAndSign,
        CryptoAction::SignOnly | CryptoAction::SignAndIncludeInEncryptionContext => LegacyAction::SignOnly,
        CryptoAction::DoNothing => LegacyAction::DoNothing,
    }
}

fn parse_action(action: &str) -> Result<LegacyAction, String> {
    match action {
        "ENCRYPT_AND_SIGN" => Ok(LegacyAction::EncryptAndSign),
        "SIGN_ONLY" => Ok(LegacyAction::SignOnly),
        "DO_NOTHING" => Ok(LegacyAction::DoNothing),
        other => Err(format!(
            "unknown legacy action {other:?}; expected ENCRYPT_AND_SIGN, SIGN_ONLY or DO_NOTHING"
        )),
    }
}

fn refuse<T>(value: &Option<T>, field: &str, provider: &str) -> Result<(), (String, String)> {
    match value {
        Some(_) => Err((field.to_owned(), format!("does not apply to provider {provider:?}"))),
        None => Ok(()),
    }
}

fn signing_key(raw: &RawLegacy, base: &Path, key_files: &KeyFiles) -> Result<VerificationKey, (String, String)> {
    let key = read_key(raw.signing_key_file.as_deref(), "signing_key_file", base, key_files)?
        .ok_or_else(|| ("signing_key_file".to_owned(), "is required for this provider".into()))?;
    VerificationKey::hmac(key).map_err(|e| ("signing_key_file".to_owned(), e.to_string()))
}

fn resolve(base: &Path, file: &Path) -> PathBuf {
    if file.is_absolute() {
        file.to_owned()
    } else {
        base.join(file)
    }
}

/// A base64 key from a key file; the error names the file, never its contents.
fn read_key(
    file: Option<&Path>,
    field: &str,
    base: &Path,
    key_files: &KeyFiles,
) -> Result<Option<SecretBytes>, (String, String)> {
    let Some(file) = file else {
        return Ok(None);
    };
    let path = resolve(base, file);
    let text = key_files.get(&path).map_err(|m| (field.to_owned(), m))?;
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| (field.to_owned(), format!("{}: is not valid base64", path.display())))?,
    );
    if bytes.is_empty() {
        return Err((field.to_owned(), format!("{}: is empty", path.display())));
    }
    Ok(Some(SecretBytes::new(bytes)))
}
