//! The `[aws]` section: regions, endpoint and the KMS request budget.
//!
//! The local region may come from the file or, when the file leaves it out, from the AWS SDK's region chain
//! (`AWS_REGION`, then the profile, then the instance metadata) — on ECS the task's `AWS_REGION`, so one file
//! serves every region. Validation checks what the file says; [`AwsSection::resolve`] combines it with the
//! chain's answer once the binary has asked the SDK.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::{ConfigError, ConfigSource, Location};

/// The `[aws]` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAws {
    pub region: Option<String>,
    #[serde(default)]
    pub regions: Vec<String>,
    pub endpoint_url: Option<String>,
    pub kms_requests_per_second: Option<f64>,
}

/// The validated `[aws]` section (defaults when the file has none). The local region may still be unknown:
/// [`AwsSection::resolve`] settles it.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsSection {
    /// `region`: the process's local region, if the file sets it.
    pub region: Option<String>,
    /// `regions`: every replica region of the global tables, without duplicates; empty means "only the local
    /// region".
    pub regions: Vec<String>,
    /// A non-AWS endpoint (the local environment), for every service.
    pub endpoint_url: Option<String>,
    /// The process-wide KMS request rate (token bucket shared by all tasks).
    pub kms_requests_per_second: f64,
}

/// The `[aws]` settings with the local region known: what the AWS clients are built from.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsSettings {
    /// The process's local region: KMS keyrings decrypt with the key's replica here.
    pub region: String,
    /// Every replica region of the global tables (includes `region`).
    pub regions: Vec<String>,
    /// A non-AWS endpoint (the local environment), for every service.
    pub endpoint_url: Option<String>,
    /// The process-wide KMS request rate (token bucket shared by all tasks).
    pub kms_requests_per_second: f64,
}

/// Default KMS request budget of one process: well under the smallest regional KMS quota for
/// symmetric cryptographic operations (5,500/s), leaving room for the applications.
pub const DEFAULT_KMS_REQUESTS_PER_SECOND: f64 = 100.0;

pub(super) fn valid_region(r: &str) -> bool {
    !r.is_empty()
        && r.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn invalid(origin: &ConfigSource, field: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        origin: origin.clone(),
        location: Location::Section("aws"),
        field: field.to_owned(),
        message,
    }
}

impl AwsSection {
    /// Validates the section as written (`None`: the file has no `[aws]`).
    pub(super) fn from_raw(origin: &ConfigSource, raw: Option<RawAws>) -> Result<AwsSection, ConfigError> {
        let raw = raw.unwrap_or_default();
        if let Some(region) = &raw.region
            && !valid_region(region)
        {
            return Err(invalid(
                origin,
                "region",
                format!("{region:?} is not a region name like \"us-east-1\""),
            ));
        }
        if let Some(bad) = raw.regions.iter().find(|r| !valid_region(r)) {
            return Err(invalid(
                origin,
                "regions",
                format!("{bad:?} is not a region name like \"us-east-1\""),
            ));
        }
        let mut seen = BTreeSet::new();
        let regions: Vec<String> = raw.regions.into_iter().filter(|r| seen.insert(r.clone())).collect();
        if let Some(region) = &raw.region {
            check_includes(origin, &regions, region)?;
        }
        if let Some(url) = &raw.endpoint_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(invalid(
                origin,
                "endpoint_url",
                format!("{url:?} is not an http(s) URL"),
            ));
        }
        let rate = raw.kms_requests_per_second.unwrap_or(DEFAULT_KMS_REQUESTS_PER_SECOND);
        if !(rate.is_finite() && rate > 0.0) {
            return Err(invalid(
                origin,
                "kms_requests_per_second",
                format!("must be a positive number, got {rate}"),
            ));
        }
        Ok(AwsSection {
            region: raw.region,
            regions,
            endpoint_url: raw.endpoint_url,
            kms_requests_per_second: rate,
        })
    }

    /// The settings with the local region settled: the file's `region`, else `from_chain` (what the SDK's region
    /// chain found: `AWS_REGION`, the profile, …). An error names the field when neither has one, or when the
    /// chain's region is not one of `regions`.
    pub fn resolve(&self, origin: &ConfigSource, from_chain: Option<String>) -> Result<AwsSettings, ConfigError> {
        let region = match (&self.region, from_chain) {
            (Some(region), _) => region.clone(),
            (None, Some(region)) => {
                if !valid_region(&region) {
                    return Err(invalid(
                        origin,
                        "region",
                        format!("not set, and the region from the environment ({region:?}) is not a region name"),
                    ));
                }
                check_includes(origin, &self.regions, &region)?;
                region
            }
            (None, None) => {
                return Err(invalid(
                    origin,
                    "region",
                    "no local region: set `region` here, or AWS_REGION (or a region in the AWS profile) in the \
                     environment"
                        .into(),
                ));
            }
        };
        let regions = if self.regions.is_empty() {
            vec![region.clone()]
        } else {
            self.regions.clone()
        };
        Ok(AwsSettings {
            region,
            regions,
            endpoint_url: self.endpoint_url.clone(),
            kms_requests_per_second: self.kms_requests_per_second,
        })
    }
}

fn check_includes(origin: &ConfigSource, regions: &[String], region: &str) -> Result<(), ConfigError> {
    if regions.is_empty() || regions.iter().any(|r| r == region) {
        Ok(())
    } else {
        Err(invalid(
            origin,
            "regions",
            format!("must include the local region {region:?} (it lists the global table's replica regions)"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn origin() -> ConfigSource {
        ConfigSource::File(PathBuf::from("ddbguard.toml"))
    }

    fn section(region: Option<&str>, regions: &[&str]) -> AwsSection {
        AwsSection::from_raw(
            &origin(),
            Some(RawAws {
                region: region.map(str::to_owned),
                regions: regions.iter().map(|r| (*r).to_owned()).collect(),
                ..RawAws::default()
            }),
        )
        .unwrap()
    }

    #[test]
    fn the_file_region_wins_over_the_chain() {
        let s = section(Some("eu-west-1"), &[])
            .resolve(&origin(), Some("us-east-1".into()))
            .unwrap();
        assert_eq!(
            (s.region.as_str(), s.regions.as_slice()),
            ("eu-west-1", &["eu-west-1".to_owned()][..])
        );
    }

    #[test]
    fn without_a_file_region_the_chain_region_is_used() {
        let s = section(None, &["us-east-1", "ap-southeast-2"])
            .resolve(&origin(), Some("ap-southeast-2".into()))
            .unwrap();
        assert_eq!(s.region, "ap-southeast-2");
        assert_eq!(s.regions, ["us-east-1", "ap-southeast-2"]);
        let s = AwsSection::from_raw(&origin(), None)
            .unwrap()
            .resolve(&origin(), Some("us-east-1".into()))
            .unwrap();
        assert_eq!(
            (s.regions.as_slice(), s.kms_requests_per_second),
            (&["us-east-1".to_owned()][..], 100.0)
        );
    }

    #[test]
    fn no_region_anywhere_is_an_error_naming_the_field() {
        let e = section(None, &[]).resolve(&origin(), None).unwrap_err().to_string();
        assert!(
            e.contains("ddbguard.toml") && e.contains("[aws]") && e.contains("`region`") && e.contains("AWS_REGION"),
            "{e}"
        );
    }

    #[test]
    fn a_chain_region_outside_regions_is_an_error() {
        let e = section(None, &["us-east-1"])
            .resolve(&origin(), Some("eu-west-1".into()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`regions`") && e.contains("eu-west-1"), "{e}");
        let e = section(None, &[])
            .resolve(&origin(), Some("Not A Region".into()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`region`"), "{e}");
    }

    #[test]
    fn regions_are_deduplicated_and_checked() {
        assert_eq!(section(None, &["us-east-1", "us-east-1"]).regions, ["us-east-1"]);
        let raw = RawAws {
            region: Some("eu-west-1".into()),
            regions: vec!["us-east-1".into()],
            ..RawAws::default()
        };
        let e = AwsSection::from_raw(&origin(), Some(raw)).unwrap_err().to_string();
        assert!(
            e.contains("[aws]") && e.contains("regions") && e.contains("eu-west-1"),
            "{e}"
        );
    }
}
