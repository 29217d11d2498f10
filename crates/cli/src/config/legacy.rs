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
    /// `"aws-kms"` (default), `"most-recent"`, `"wrapped"` or `"static"`.
    pub provider: Option<String>,
    /// `aws-kms`: the KMS key (default: the table keyring's `key_arn`).
    pub key_arn: Option<String>,
    /// `most-recent`: the metastore table (partition key `N`, sort key `V`), read in the local region.
    pub metastore_table: Option<String>,
    /// `most-recent`: the material name the table's items are under (`amzn-ddb-meta-id` = `name#version`).
    pub material_name: Option<String>,
    /// `most-recent`: the KMS key of the metastore's own direct KMS provider (default: the table keyring's
    /// `key_arn`).
    pub metastore_key_arn: Option<String>,
    /// `wrapped`: the AES key-wrap key, base64 in a file.
    pub wrapping_key_file: Option<PathBuf>,
    /// `wrapped`, instead of `wrapping_key_file`: the RSA private key that unwraps content keys (RSA-OAEP), PKCS#8
    /// in PEM (`PRIVATE KEY`) or DER.
    pub rsa_unwrapping_key_file: Option<PathBuf>,
    /// `static`: the AES content key, base64 in a file (optional: a signing-only table has none).
    pub encryption_key_file: Option<PathBuf>,
    /// `wrapped` and `static`: the HMAC signing key, base64 in a file.
    pub signing_key_file: Option<PathBuf>,
    /// `wrapped` and `static`, instead of `signing_key_file`: the RSA public key that verifies SHA256withRSA
    /// signatures, in PEM (`PUBLIC KEY` or `RSA PUBLIC KEY`) or DER (SubjectPublicKeyInfo or PKCS#1).
    pub rsa_verification_key_file: Option<PathBuf>,
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
    /// The most-recent provider: each item's version (AESWrap key and HMAC key) read from a metastore table in
    /// the local region, whose records are under the direct KMS provider with `metastore_key_arn`.
    MostRecent {
        /// The metastore table.
        metastore_table: String,
        /// The material name of the table's items.
        material_name: String,
        /// The metastore's KMS key (used through its local replica, like `AwsKms`).
        metastore_key_arn: KmsArn,
    },
    /// A content key wrapped into each item's material description (AESWrap or RSA-OAEP), and an HMAC or RSA
    /// verification key.
    Wrapped(WrappedProvider),
    /// Keys given as they are (tests, forensics with escrowed keys).
    Static(StaticProvider),
}

impl fmt::Debug for LegacyProviderSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The providers' own Debug redacts their keys; the names are enough here.
        match self {
            LegacyProviderSettings::AwsKms { key_arn } => f.debug_struct("AwsKms").field("key_arn", key_arn).finish(),
            LegacyProviderSettings::MostRecent {
                metastore_table,
                material_name,
                metastore_key_arn,
            } => f
                .debug_struct("MostRecent")
                .field("metastore_table", metastore_table)
                .field("material_name", material_name)
                .field("metastore_key_arn", metastore_key_arn)
                .finish(),
            LegacyProviderSettings::Wrapped(_) => f.write_str("Wrapped(<redacted>)"),
            LegacyProviderSettings::Static(_) => f.write_str("Static(<redacted>)"),
        }
    }
}

impl LegacyProviderSettings {
    /// Whether the provider calls AWS (KMS, and DynamoDB for the metastore).
    pub fn needs_aws(&self) -> bool {
        matches!(
            self,
            LegacyProviderSettings::AwsKms { .. } | LegacyProviderSettings::MostRecent { .. }
        )
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
            &self.rsa_unwrapping_key_file,
            &self.encryption_key_file,
            &self.signing_key_file,
            &self.rsa_verification_key_file,
        ]
        .into_iter()
        .flatten()
        .map(|f| super::resolve(base, f))
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
                raw.refuse_others("aws-kms", &["key_arn"])?;
                let key_arn = kms_key(&raw.key_arn, "key_arn", keyring)?;
                LegacyProviderSettings::AwsKms { key_arn }
            }
            "most-recent" => {
                raw.refuse_others(
                    "most-recent",
                    &["metastore_table", "material_name", "metastore_key_arn"],
                )?;
                let required = |value: &Option<String>, field: &str, what: &str| match value.as_deref() {
                    Some(v) if !v.trim().is_empty() => Ok(v.to_owned()),
                    Some(_) => Err((field.to_owned(), "must not be empty".to_owned())),
                    None => Err((
                        field.to_owned(),
                        format!("is required for provider \"most-recent\" ({what})"),
                    )),
                };
                LegacyProviderSettings::MostRecent {
                    metastore_table: required(&raw.metastore_table, "metastore_table", "the metastore table")?,
                    material_name: required(
                        &raw.material_name,
                        "material_name",
                        "the name before `#` in the items' amzn-ddb-meta-id",
                    )?,
                    metastore_key_arn: kms_key(&raw.metastore_key_arn, "metastore_key_arn", keyring)?,
                }
            }
            "wrapped" => {
                raw.refuse_others(
                    "wrapped",
                    &[
                        "wrapping_key_file",
                        "rsa_unwrapping_key_file",
                        "signing_key_file",
                        "rsa_verification_key_file",
                    ],
                )?;
                let unwrapping = match (&raw.wrapping_key_file, &raw.rsa_unwrapping_key_file) {
                    (Some(file), None) => {
                        let key = read_key(file, "wrapping_key_file", base, key_files)?;
                        UnwrappingKey::aes(key).map_err(|e| ("wrapping_key_file".to_owned(), e.to_string()))?
                    }
                    (None, Some(file)) => {
                        let field = "rsa_unwrapping_key_file";
                        let path = super::resolve(base, file);
                        let der = read_rsa_key(&path, field, RsaKeyKind::Private, key_files)?;
                        UnwrappingKey::rsa_pkcs8_der(&der)
                            .map_err(|e| (field.to_owned(), format!("{}: {e}", path.display())))?
                    }
                    (Some(_), Some(_)) => {
                        return Err((
                            "wrapping_key_file".into(),
                            "set either wrapping_key_file (AESWrap) or rsa_unwrapping_key_file (RSA-OAEP), not both"
                                .into(),
                        ));
                    }
                    (None, None) => {
                        return Err((
                            "wrapping_key_file".into(),
                            "is required for provider \"wrapped\" (or rsa_unwrapping_key_file for an RSA key)".into(),
                        ));
                    }
                };
                LegacyProviderSettings::Wrapped(WrappedProvider::new(unwrapping, signing_key(raw, base, key_files)?))
            }
            "static" => {
                raw.refuse_others(
                    "static",
                    &["encryption_key_file", "signing_key_file", "rsa_verification_key_file"],
                )?;
                let content = raw
                    .encryption_key_file
                    .as_deref()
                    .map(|file| read_key(file, "encryption_key_file", base, key_files))
                    .transpose()?
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
                    format!(
                        "unknown legacy provider {other:?}; expected \"aws-kms\", \"most-recent\", \"wrapped\" or \
                         \"static\""
                    ),
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

/// A KMS key ARN from `field`, else the table keyring's key.
fn kms_key(value: &Option<String>, field: &str, keyring: &KeyringSettings) -> Result<KmsArn, (String, String)> {
    match (value, keyring.kms_key()) {
        (Some(arn), _) => KmsArn::parse_key(arn).map_err(|e| (field.to_owned(), e.to_string())),
        (None, Some(arn)) => Ok(arn.clone()),
        (None, None) => Err((
            field.to_owned(),
            "is required: the table's keyring names no KMS key to default to".into(),
        )),
    }
}

impl RawLegacy {
    /// Whether each provider-specific field is set, by name.
    fn provider_fields(&self) -> [(&'static str, bool); 9] {
        [
            ("key_arn", self.key_arn.is_some()),
            ("metastore_table", self.metastore_table.is_some()),
            ("material_name", self.material_name.is_some()),
            ("metastore_key_arn", self.metastore_key_arn.is_some()),
            ("wrapping_key_file", self.wrapping_key_file.is_some()),
            ("rsa_unwrapping_key_file", self.rsa_unwrapping_key_file.is_some()),
            ("encryption_key_file", self.encryption_key_file.is_some()),
            ("signing_key_file", self.signing_key_file.is_some()),
            ("rsa_verification_key_file", self.rsa_verification_key_file.is_some()),
        ]
    }

    /// Refuses a provider-specific field set that `provider` does not take (`takes` lists those it does).
    fn refuse_others(&self, provider: &str, takes: &[&str]) -> Result<(), (String, String)> {
        match self
            .provider_fields()
            .into_iter()
            .find(|(field, set)| *set && !takes.contains(field))
        {
            Some((field, _)) => Err((field.to_owned(), format!("does not apply to provider {provider:?}"))),
            None => Ok(()),
        }
    }
}

/// The verification key: an HMAC key (`signing_key_file`) or an RSA public key (`rsa_verification_key_file`).
fn signing_key(raw: &RawLegacy, base: &Path, key_files: &KeyFiles) -> Result<VerificationKey, (String, String)> {
    match (&raw.signing_key_file, &raw.rsa_verification_key_file) {
        (Some(file), None) => {
            let key = read_key(file, "signing_key_file", base, key_files)?;
            VerificationKey::hmac(key).map_err(|e| ("signing_key_file".to_owned(), e.to_string()))
        }
        (None, Some(file)) => {
            let field = "rsa_verification_key_file";
            let path = super::resolve(base, file);
            let der = read_rsa_key(&path, field, RsaKeyKind::Public, key_files)?;
            VerificationKey::rsa_public_der(&der).map_err(|e| (field.to_owned(), format!("{}: {e}", path.display())))
        }
        (Some(_), Some(_)) => Err((
            "signing_key_file".into(),
            "set either signing_key_file (HmacSHA256) or rsa_verification_key_file (SHA256withRSA), not both".into(),
        )),
        (None, None) => Err((
            "signing_key_file".into(),
            "is required for this provider (or rsa_verification_key_file for an RSA key)".into(),
        )),
    }
}

/// Which half of an RSA key pair a file must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RsaKeyKind {
    /// PKCS#8 (`PRIVATE KEY`).
    Private,
    /// SubjectPublicKeyInfo (`PUBLIC KEY`) or PKCS#1 (`RSA PUBLIC KEY`).
    Public,
}

/// The DER of an RSA key file: PEM (recognised by its `-----BEGIN` line, the label checked) or DER as it is.
/// Errors name the file and what is wrong with it, never its contents.
fn read_rsa_key(
    path: &Path,
    field: &str,
    kind: RsaKeyKind,
    key_files: &KeyFiles,
) -> Result<Zeroizing<Vec<u8>>, (String, String)> {
    let fail = |m: &str| (field.to_owned(), format!("{}: {m}", path.display()));
    let bytes = key_files.get_bytes(path).map_err(|m| (field.to_owned(), m))?;
    let text = bytes.trim_ascii();
    if !text.starts_with(b"-----BEGIN ") {
        if text.is_empty() {
            return Err(fail("is empty"));
        }
        return Ok(Zeroizing::new(bytes.to_vec()));
    }
    let (label, der) = pem_rfc7468::decode_vec(text).map_err(|_| fail("is not a well-formed PEM document"))?;
    let der = Zeroizing::new(der);
    match (kind, label) {
        (RsaKeyKind::Private, "PRIVATE KEY") | (RsaKeyKind::Public, "PUBLIC KEY" | "RSA PUBLIC KEY") => Ok(der),
        (RsaKeyKind::Private, "RSA PRIVATE KEY") => Err(fail(
            "is a PKCS#1 RSA private key; convert it to PKCS#8 (openssl pkcs8 -topk8 -nocrypt)",
        )),
        (RsaKeyKind::Private, "ENCRYPTED PRIVATE KEY") => Err(fail(
            "is an encrypted PKCS#8 key; store it unencrypted (openssl pkcs8 -topk8 -nocrypt), readable only by \
             ddbguard",
        )),
        (RsaKeyKind::Private, other) => Err(fail(&format!("is a PEM {other:?}, not a PKCS#8 \"PRIVATE KEY\""))),
        (RsaKeyKind::Public, other) => Err(fail(&format!(
            "is a PEM {other:?}, not a \"PUBLIC KEY\" or \"RSA PUBLIC KEY\""
        ))),
    }
}

/// A base64 key from a key file; the error names the file, never its contents.
fn read_key(file: &Path, field: &str, base: &Path, key_files: &KeyFiles) -> Result<SecretBytes, (String, String)> {
    let path = super::resolve(base, file);
    let text = key_files.get(&path).map_err(|m| (field.to_owned(), m))?;
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| (field.to_owned(), format!("{}: is not valid base64", path.display())))?,
    );
    if bytes.is_empty() {
        return Err((field.to_owned(), format!("{}: is empty", path.display())));
    }
    Ok(SecretBytes::new(bytes))
}
