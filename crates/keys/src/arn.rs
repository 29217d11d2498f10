//! AWS KMS key identifiers: ARN parsing, multi-Region key (MRK) classification, MRK matching and region
//! replacement.
//!
//! The rules follow the AWS Encryption SDK specification (`framework/aws-kms/aws-kms-key-arn.md`,
//! `aws-kms-mrk-are-unique.md` and `aws-kms-mrk-match-for-decrypt.md`):
//!
//! - a KMS ARN is `arn:<partition>:kms:<region>:<account>:<key|alias>/<resource id>`, every part non-empty; the
//!   resource id may itself contain `/` (aliases such as `alias/team/app`);
//! - an identifier is an MRK iff its resource type is `key` and its id starts with `mrk-`; a bare key id
//!   `mrk-…` counts, `alias/mrk-…` never does;
//! - two identifiers MRK-match for decrypt when they are identical, or when both are MRK ARNs equal in every
//!   part except the region.
//!
//! ```
//! use ddbguard_keys::arn::KmsArn;
//! let arn: KmsArn = "arn:aws:kms:us-east-1:111122223333:key/mrk-1234abcd".parse().unwrap();
//! assert!(arn.is_mrk());
//! let replica = arn.with_region("ap-southeast-2").unwrap();
//! assert_eq!(replica.to_string(), "arn:aws:kms:ap-southeast-2:111122223333:key/mrk-1234abcd");
//! assert!(arn.mrk_matches(&replica));
//! ```

use std::fmt;
use std::str::FromStr;

/// Why a string is not a usable KMS key ARN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid KMS key ARN {input:?}: {kind}")]
pub struct ArnError {
    /// The string that was rejected.
    pub input: String,
    /// What is wrong with it.
    pub kind: ArnErrorKind,
}

/// The ways a KMS ARN can be malformed or unsuitable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArnErrorKind {
    /// It does not start with `arn:` (for example a bare key id or an `alias/…` name).
    #[error("not an ARN (expected arn:<partition>:kms:<region>:<account>:key/<id>)")]
    NotArn,
    /// A component is missing or empty.
    #[error("the {0} is missing or empty")]
    Empty(&'static str),
    /// The service is not `kms`.
    #[error("the service is {0:?}, expected \"kms\"")]
    WrongService(String),
    /// The resource type is neither `key` nor `alias`.
    #[error("the resource type is {0:?}, expected \"key\" or \"alias\"")]
    WrongResourceType(String),
    /// The ARN names an alias where a key is required (decrypt and MRK replicas need key ARNs).
    #[error("aliases cannot be used here; configure the key ARN (arn:…:key/mrk-…) that the alias points to")]
    Alias,
    /// The key is a single-Region key where a multi-Region key is required.
    #[error("the key is not a multi-Region key (its id does not start with \"mrk-\")")]
    NotMrk,
    /// A region to substitute is empty or contains `:`.
    #[error("invalid region {0:?}")]
    InvalidRegion(String),
}

/// The resource type of a KMS ARN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    /// `key/<id>`
    Key,
    /// `alias/<name>`
    Alias,
}

impl ResourceType {
    /// The ARN spelling: `key` or `alias`.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::Key => "key",
            ResourceType::Alias => "alias",
        }
    }
}

/// A parsed AWS KMS ARN. `Display` gives back the canonical string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KmsArn {
    partition: String,
    region: String,
    account: String,
    resource_type: ResourceType,
    resource_id: String,
}

impl KmsArn {
    /// Parses a KMS ARN (key or alias).
    pub fn parse(input: &str) -> Result<KmsArn, ArnError> {
        let err = |kind| ArnError {
            input: input.to_owned(),
            kind,
        };
        // arn : partition : service : region : account : resource (the resource may contain ':' and '/').
        let mut parts = input.splitn(6, ':');
        if parts.next() != Some("arn") {
            return Err(err(ArnErrorKind::NotArn));
        }
        let mut next = |name: &'static str| match parts.next() {
            Some(p) if !p.is_empty() => Ok(p),
            _ => Err(err(ArnErrorKind::Empty(name))),
        };
        let partition = next("partition")?;
        let service = next("service")?;
        let region = next("region")?;
        let account = next("account")?;
        let resource = next("resource")?;
        if service != "kms" {
            return Err(err(ArnErrorKind::WrongService(service.to_owned())));
        }
        let (rtype, rid) = match resource.split_once('/') {
            Some((t, id)) => (t, id),
            None => (resource, ""),
        };
        let resource_type = match rtype {
            "key" => ResourceType::Key,
            "alias" => ResourceType::Alias,
            other => return Err(err(ArnErrorKind::WrongResourceType(other.to_owned()))),
        };
        if rid.is_empty() {
            return Err(err(ArnErrorKind::Empty("resource id")));
        }
        Ok(KmsArn {
            partition: partition.to_owned(),
            region: region.to_owned(),
            account: account.to_owned(),
            resource_type,
            resource_id: rid.to_owned(),
        })
    }

    /// Parses an ARN that must name a key (not an alias), as decrypt requires.
    pub fn parse_key(input: &str) -> Result<KmsArn, ArnError> {
        let arn = KmsArn::parse(input)?;
        if arn.resource_type != ResourceType::Key {
            return Err(ArnError {
                input: input.to_owned(),
                kind: ArnErrorKind::Alias,
            });
        }
        Ok(arn)
    }

    /// Parses an ARN that must name a multi-Region key.
    pub fn parse_mrk(input: &str) -> Result<KmsArn, ArnError> {
        let arn = KmsArn::parse_key(input)?;
        if !arn.is_mrk() {
            return Err(ArnError {
                input: input.to_owned(),
                kind: ArnErrorKind::NotMrk,
            });
        }
        Ok(arn)
    }

    /// The partition (`aws`, `aws-cn`, `aws-us-gov`, …).
    pub fn partition(&self) -> &str {
        &self.partition
    }

    /// The region the ARN names.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The account id.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// `key` or `alias`.
    pub fn resource_type(&self) -> ResourceType {
        self.resource_type
    }

    /// The key id or alias name (without the `key/` / `alias/` prefix).
    pub fn resource_id(&self) -> &str {
        &self.resource_id
    }

    /// True iff this names a multi-Region key: resource type `key` and id starting with `mrk-`.
    pub fn is_mrk(&self) -> bool {
        self.resource_type == ResourceType::Key && self.resource_id.starts_with("mrk-")
    }

    /// The same ARN in another region. Only meaningful for MRKs (a single-region key does not exist elsewhere),
    /// but allowed for any ARN; callers decide (see [`KmsArn::replica_in`]).
    pub fn with_region(&self, region: &str) -> Result<KmsArn, ArnError> {
        if region.is_empty() || region.contains(':') || region.contains('/') {
            return Err(ArnError {
                input: self.to_string(),
                kind: ArnErrorKind::InvalidRegion(region.to_owned()),
            });
        }
        Ok(KmsArn {
            region: region.to_owned(),
            ..self.clone()
        })
    }

    /// The replica of this MRK in `region`; fails for aliases and single-region keys.
    pub fn replica_in(&self, region: &str) -> Result<KmsArn, ArnError> {
        let kind = match self.resource_type {
            ResourceType::Alias => Some(ArnErrorKind::Alias),
            ResourceType::Key if !self.is_mrk() => Some(ArnErrorKind::NotMrk),
            ResourceType::Key => None,
        };
        if let Some(kind) = kind {
            return Err(ArnError {
                input: self.to_string(),
                kind,
            });
        }
        self.with_region(region)
    }

    /// MRK match for decrypt between two parsed ARNs: identical, or both MRKs equal in every part but region.
    pub fn mrk_matches(&self, other: &KmsArn) -> bool {
        if self == other {
            return true;
        }
        if !self.is_mrk() || !other.is_mrk() {
            return false;
        }
        self.partition == other.partition
            && self.account == other.account
            && self.resource_type == other.resource_type
            && self.resource_id == other.resource_id
    }
}

impl fmt::Display for KmsArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arn:{}:kms:{}:{}:{}/{}",
            self.partition,
            self.region,
            self.account,
            self.resource_type.as_str(),
            self.resource_id
        )
    }
}

impl FromStr for KmsArn {
    type Err = ArnError;

    fn from_str(s: &str) -> Result<KmsArn, ArnError> {
        KmsArn::parse(s)
    }
}

/// Whether any KMS key identifier (ARN, `alias/…`, bare key id) names a multi-Region key, per the spec:
/// an ARN is an MRK iff it is a `key` ARN with an `mrk-` id; `alias/…` never is; a bare id iff it starts with
/// `mrk-`. An unparsable `arn:` string is not an MRK.
pub fn is_mrk_identifier(identifier: &str) -> bool {
    if identifier.starts_with("arn:") {
        KmsArn::parse(identifier).is_ok_and(|a| a.is_mrk())
    } else if identifier.starts_with("alias/") {
        false
    } else {
        identifier.starts_with("mrk-")
    }
}

/// MRK match for decrypt between two identifiers (strings): identical -> true; either not an MRK -> false;
/// otherwise both must parse as ARNs and agree on partition, service, account, resource type and id.
pub fn mrk_match(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    if !is_mrk_identifier(a) || !is_mrk_identifier(b) {
        return false;
    }
    match (KmsArn::parse(a), KmsArn::parse(b)) {
        (Ok(a), Ok(b)) => a.mrk_matches(&b),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MRK_E1: &str = "arn:aws:kms:us-east-1:111122223333:key/mrk-80bd8ecdcd4342aebd84b7dc9da498a7";
    const MRK_AP: &str = "arn:aws:kms:ap-southeast-2:111122223333:key/mrk-80bd8ecdcd4342aebd84b7dc9da498a7";
    const SRK_E1: &str = "arn:aws:kms:us-east-1:111122223333:key/b3537ef1-d8dc-4780-9f5a-55776cbb2f7f";
    const SRK_AP: &str = "arn:aws:kms:ap-southeast-2:111122223333:key/b3537ef1-d8dc-4780-9f5a-55776cbb2f7f";

    #[test]
    fn parses_key_arn() {
        let a = KmsArn::parse(MRK_E1).unwrap();
        assert_eq!(a.partition(), "aws");
        assert_eq!(a.region(), "us-east-1");
        assert_eq!(a.account(), "111122223333");
        assert_eq!(a.resource_type(), ResourceType::Key);
        assert_eq!(a.resource_id(), "mrk-80bd8ecdcd4342aebd84b7dc9da498a7");
        assert!(a.is_mrk());
        assert_eq!(a.to_string(), MRK_E1);
    }

    #[test]
    fn parses_alias_with_slashes_and_other_partitions() {
        let a = KmsArn::parse("arn:aws-cn:kms:cn-north-1:111122223333:alias/team/app/key").unwrap();
        assert_eq!(a.partition(), "aws-cn");
        assert_eq!(a.resource_type(), ResourceType::Alias);
        assert_eq!(a.resource_id(), "team/app/key");
        assert_eq!(
            a.to_string(),
            "arn:aws-cn:kms:cn-north-1:111122223333:alias/team/app/key"
        );
        let k = KmsArn::parse("arn:aws:kms:us-east-1:111122223333:key/a/b:c").unwrap();
        assert_eq!(k.resource_id(), "a/b:c");
    }

    #[test]
    fn rejects_malformed() {
        let kind = |s: &str| KmsArn::parse(s).unwrap_err().kind;
        assert_eq!(kind("mrk-1234"), ArnErrorKind::NotArn);
        assert_eq!(kind("alias/foo"), ArnErrorKind::NotArn);
        assert_eq!(kind("aws:kms:us-east-1:1:key/x"), ArnErrorKind::NotArn);
        assert_eq!(kind("arn::kms:us-east-1:1:key/x"), ArnErrorKind::Empty("partition"));
        assert_eq!(kind("arn:aws::us-east-1:1:key/x"), ArnErrorKind::Empty("service"));
        assert_eq!(kind("arn:aws:kms::1:key/x"), ArnErrorKind::Empty("region"));
        assert_eq!(kind("arn:aws:kms:us-east-1::key/x"), ArnErrorKind::Empty("account"));
        assert_eq!(kind("arn:aws:kms:us-east-1:1:"), ArnErrorKind::Empty("resource"));
        assert_eq!(kind("arn:aws:kms:us-east-1:1"), ArnErrorKind::Empty("resource"));
        assert_eq!(kind("arn:aws:kms:us-east-1:1:key/"), ArnErrorKind::Empty("resource id"));
        assert_eq!(kind("arn:aws:kms:us-east-1:1:key"), ArnErrorKind::Empty("resource id"));
        assert_eq!(
            kind("arn:aws:s3:us-east-1:1:key/x"),
            ArnErrorKind::WrongService("s3".into())
        );
        assert_eq!(
            kind("arn:aws:kms:us-east-1:1:grant/x"),
            ArnErrorKind::WrongResourceType("grant".into())
        );
        let e = KmsArn::parse("arn:aws:kms:us-east-1:1:grant/x").unwrap_err();
        assert!(e.to_string().contains("grant"), "{e}");
    }

    #[test]
    fn key_and_mrk_requirements() {
        let e = KmsArn::parse_key("arn:aws:kms:us-east-1:111122223333:alias/mrk-app").unwrap_err();
        assert_eq!(e.kind, ArnErrorKind::Alias);
        assert!(e.to_string().contains("aliases cannot be used"));
        assert_eq!(KmsArn::parse_mrk(SRK_E1).unwrap_err().kind, ArnErrorKind::NotMrk);
        assert!(KmsArn::parse_mrk(MRK_E1).is_ok());
    }

    #[test]
    fn mrk_classification() {
        assert!(is_mrk_identifier(MRK_E1));
        assert!(!is_mrk_identifier(SRK_E1));
        assert!(is_mrk_identifier("mrk-80bd8ecdcd4342aebd84b7dc9da498a7"));
        assert!(!is_mrk_identifier("b3537ef1-d8dc-4780-9f5a-55776cbb2f7f"));
        // An alias is never an MRK, even when its name starts with mrk-.
        assert!(!is_mrk_identifier("alias/mrk-app"));
        assert!(!is_mrk_identifier("arn:aws:kms:us-east-1:111122223333:alias/mrk-app"));
        assert!(
            !KmsArn::parse("arn:aws:kms:us-east-1:111122223333:alias/mrk-app")
                .unwrap()
                .is_mrk()
        );
        // Malformed ARN is not an MRK.
        assert!(!is_mrk_identifier("arn:aws:kms:us-east-1::key/mrk-1"));
        // Case matters: the prefix is lowercase.
        assert!(!is_mrk_identifier("MRK-1234"));
    }

    #[test]
    fn mrk_match_rules() {
        // Identical strings always match, MRK or not (even unparsable ones).
        assert!(mrk_match(SRK_E1, SRK_E1));
        assert!(mrk_match("whatever", "whatever"));
        assert!(mrk_match(MRK_E1, MRK_E1));
        // Same MRK, other region.
        assert!(mrk_match(MRK_E1, MRK_AP));
        assert!(mrk_match(MRK_AP, MRK_E1));
        // Single-region keys never match across regions.
        assert!(!mrk_match(SRK_E1, SRK_AP));
        assert!(!mrk_match(SRK_E1, MRK_E1));
        // Different account / partition / id.
        assert!(!mrk_match(MRK_E1, &MRK_AP.replace("111122223333", "444455556666")));
        assert!(!mrk_match(MRK_E1, &MRK_AP.replace("arn:aws:", "arn:aws-cn:")));
        assert!(!mrk_match(MRK_E1, &MRK_AP.replace("mrk-80bd", "mrk-90bd")));
        // A bare mrk- id is an MRK but not an ARN: it matches only itself.
        assert!(!mrk_match(MRK_E1, "mrk-80bd8ecdcd4342aebd84b7dc9da498a7"));
        assert!(mrk_match(
            "mrk-80bd8ecdcd4342aebd84b7dc9da498a7",
            "mrk-80bd8ecdcd4342aebd84b7dc9da498a7"
        ));
        // Aliases named mrk-… never match a key.
        assert!(!mrk_match(
            "arn:aws:kms:us-east-1:111122223333:alias/mrk-a",
            "arn:aws:kms:ap-southeast-2:111122223333:alias/mrk-a"
        ));
    }

    #[test]
    fn replica_region() {
        let a = KmsArn::parse(MRK_E1).unwrap();
        assert_eq!(a.replica_in("ap-southeast-2").unwrap().to_string(), MRK_AP);
        assert_eq!(a.replica_in("us-east-1").unwrap(), a);
        let s = KmsArn::parse(SRK_E1).unwrap();
        assert_eq!(s.replica_in("ap-southeast-2").unwrap_err().kind, ArnErrorKind::NotMrk);
        assert_eq!(s.with_region("ap-southeast-2").unwrap().to_string(), SRK_AP);
        let alias = KmsArn::parse("arn:aws:kms:us-east-1:1:alias/mrk-x").unwrap();
        assert_eq!(alias.replica_in("eu-west-1").unwrap_err().kind, ArnErrorKind::Alias);
        assert!(matches!(
            a.with_region("").unwrap_err().kind,
            ArnErrorKind::InvalidRegion(_)
        ));
        assert!(matches!(
            a.with_region("us:east").unwrap_err().kind,
            ArnErrorKind::InvalidRegion(_)
        ));
    }
}
