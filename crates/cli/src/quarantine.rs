//! `ddbguard quarantine list|show|replay`: the failing records `verify` kept in `[verify] quarantine_table`, in
//! the local region.
//!
//! - `list [--verdict V] [--since 24h] [--open]`: the entries (without their images) as a JSON array, oldest
//!   first. Exit 0.
//! - `show ID`: one entry with its stored image as DynamoDB JSON (ciphertext as stored; never decrypted). Exit 0,
//!   or 1 when there is no such entry.
//! - `replay [--verdict V]`: every open entry of the local region judged again, in full, with today's keyring and
//!   policy of its table (a replica key enabled again turns a `key_unavailable` record `ok`); passing entries are
//!   marked resolved. Prints a JSON summary; exit 0 when every replayed entry passed, 1 otherwise.
//! - 2: configuration or startup error, or the quarantine table unreadable.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use ddbguard_dbe::Keyring;
use ddbguard_verify::Verifier;
use ddbguard_verify::quarantine::{self, EntryStatus, QuarantineEntry};
use ddbguard_verify::service::RegionClients as _;
use serde_json::json;

use crate::config::verify::parse_duration;
use crate::keyring::{self, AwsContext};

/// `ddbguard quarantine` subcommands.
#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// List the quarantined records (JSON array, oldest first, without images).
    List(ListArgs),
    /// Show one quarantined record with its stored image (exit 1 if there is none).
    Show(ShowArgs),
    /// Judge the open entries again with today's keys and configuration; mark passing ones resolved. Exit 0 when
    /// every replayed entry passed, 1 otherwise.
    Replay(ReplayArgs),
}

/// `quarantine list` arguments.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub config: crate::config::ConfigArgs,
    /// Only entries with this verdict (e.g. `key_unavailable`).
    #[arg(long)]
    pub verdict: Option<String>,
    /// Only entries quarantined within this long (e.g. `30m`, `24h`, `7d`).
    #[arg(long, value_parser = parse_since)]
    pub since: Option<Duration>,
    /// Only entries not resolved by a replay.
    #[arg(long)]
    pub open: bool,
}

/// `quarantine show` arguments.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub config: crate::config::ConfigArgs,
    /// The entry id (`<region>#<event id>`, as `list` prints it).
    pub id: String,
}

/// `quarantine replay` arguments.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub config: crate::config::ConfigArgs,
    /// Only entries with this verdict.
    #[arg(long)]
    pub verdict: Option<String>,
}

fn parse_since(text: &str) -> Result<Duration, String> {
    parse_duration(text).ok_or_else(|| format!("{text:?} is not a duration such as 30m, 24h or 7d"))
}

/// Runs a `ddbguard quarantine` subcommand. `Err` is a configuration or startup error (exit code 2).
pub async fn run(command: QuarantineCommand) -> anyhow::Result<ExitCode> {
    match command {
        QuarantineCommand::List(args) => list(args).await,
        QuarantineCommand::Show(args) => show(args).await,
        QuarantineCommand::Replay(args) => replay(args).await,
    }
}

/// Every readable entry of the quarantine table; unreadable ones are logged and left out.
async fn entries(aws: &AwsContext, region: &str, table: &str) -> anyhow::Result<Vec<QuarantineEntry>> {
    let all = quarantine::scan(&aws.dynamo(region), table).await?;
    let mut entries = Vec::with_capacity(all.len());
    for entry in all {
        match entry {
            Ok(entry) => entries.push(entry),
            Err(e) => tracing::warn!(error = %e, "skipping an unreadable quarantine entry"),
        }
    }
    entries.sort_by(|a, b| (a.quarantined_at, &a.id).cmp(&(b.quarantined_at, &b.id)));
    Ok(entries)
}

/// The entries `list` prints: by verdict, age and status.
fn select(
    entries: Vec<QuarantineEntry>,
    verdict: Option<&str>,
    since: Option<u64>,
    open: bool,
) -> Vec<QuarantineEntry> {
    entries
        .into_iter()
        .filter(|e| verdict.is_none_or(|v| e.verdict == v))
        .filter(|e| since.is_none_or(|t| e.quarantined_at >= t))
        .filter(|e| !open || e.status == EntryStatus::Open)
        .collect()
}

async fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let config = args.config.load()?;
    let settings = keyring::aws_settings(&config).await?;
    let aws = AwsContext::new(&settings).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let since = args.since.map(|d| now.saturating_sub(d.as_secs()));
    let all = entries(&aws, &settings.region, &config.verify.quarantine_table).await?;
    let selected = select(all, args.verdict.as_deref(), since, args.open);
    crate::print_json(&serde_json::Value::Array(
        selected.iter().map(|e| e.to_json(false)).collect(),
    ))?;
    Ok(ExitCode::SUCCESS)
}

async fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let config = args.config.load()?;
    let settings = keyring::aws_settings(&config).await?;
    let aws = AwsContext::new(&settings).await;
    let table = &config.verify.quarantine_table;
    match quarantine::get(&aws.dynamo(&settings.region), table, &args.id).await? {
        Some(entry) => {
            crate::print_json(&entry.to_json(true))?;
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!(
                "no entry {:?} in quarantine table {table:?} ({})",
                args.id, settings.region
            );
            Ok(ExitCode::from(1))
        }
    }
}

async fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let config = args.config.load()?;
    let settings = keyring::aws_settings(&config).await?;
    let region = settings.region.clone();
    let aws = AwsContext::new(&settings).await;
    let quarantine_table = &config.verify.quarantine_table;
    let db = aws.dynamo(&region);
    let all = entries(&aws, &region, quarantine_table).await?;
    // Only this region's entries: they were judged with this region's replica key, and are judged with it again.
    let open: Vec<QuarantineEntry> = select(all, args.verdict.as_deref(), None, true)
        .into_iter()
        .filter(|e| e.region == region)
        .collect();

    let mut verifiers: HashMap<String, Verifier> = HashMap::new();
    let (mut resolved, mut failing, mut skipped) = (0u64, 0u64, 0u64);
    let mut results = Vec::new();
    for mut entry in open {
        if !verifiers.contains_key(&entry.table) {
            let Ok(table) = config.table(&entry.table) else {
                tracing::warn!(table = %entry.table, id = %entry.id, "no [[tables]] entry for a quarantined record");
                skipped += 1;
                results.push(json!({"id": entry.id, "skipped": "table not configured"}));
                continue;
            };
            let keyring: Arc<dyn Keyring> = Arc::from(keyring::build(&table.keyring, Some(&aws))?);
            let policy = keyring::verify_policy(table, 1.0)?;
            let mut verifier = Verifier::new(policy, keyring, region.clone())
                .with_context(|| format!("{}: table {:?}: unusable policy", config.origin, table.name))?
                .with_table_label(table.name.clone());
            if let Some(provider) = keyring::legacy_provider(table, Some(&aws)).await? {
                verifier = verifier.with_legacy_provider(provider);
            }
            verifiers.insert(entry.table.clone(), verifier);
        }
        let Some(verifier) = verifiers.get(&entry.table) else {
            continue;
        };
        let before = entry.verdict.clone();
        let judgement = quarantine::replay(verifier, &mut entry).await;
        if entry.status == EntryStatus::Resolved {
            quarantine::put(&db, quarantine_table, &entry).await?;
            resolved += 1;
        } else {
            failing += 1;
        }
        results.push(json!({
            "id": entry.id,
            "table": entry.table,
            "keys": entry.to_json(false)["keys"],
            "verdict_before": before,
            "verdict": judgement.verdict.as_str(),
            "reason": judgement.reason.as_str(),
            "resolved": entry.status == EntryStatus::Resolved,
        }));
    }
    crate::print_json(&json!({
        "quarantine_table": quarantine_table,
        "region": region,
        "replayed": resolved + failing,
        "resolved": resolved,
        "still_failing": failing,
        "skipped": skipped,
        "entries": results,
    }))?;
    Ok(if failing == 0 && skipped == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, verdict: &str, at: u64, status: EntryStatus) -> QuarantineEntry {
        QuarantineEntry {
            id: id.into(),
            table: "orders".into(),
            region: "eu-west-1".into(),
            keys: r#"{"pk":{"S":"p1"}}"#.into(),
            verdict: verdict.into(),
            reason: "disabled".into(),
            message: String::new(),
            origin_region: None,
            shard_id: "s".into(),
            sequence_number: "1".into(),
            event_id: id.into(),
            event_name: "INSERT".into(),
            written_at: None,
            quarantined_at: at,
            expires_at: at + 100,
            status,
            resolved_at: None,
            resolved_verdict: None,
            image: None,
        }
    }

    #[test]
    fn list_filters_by_verdict_age_and_status() {
        let all = vec![
            entry("a", "key_unavailable", 10, EntryStatus::Open),
            entry("b", "integrity_failed", 20, EntryStatus::Open),
            entry("c", "key_unavailable", 30, EntryStatus::Resolved),
        ];
        let ids = |v: Vec<QuarantineEntry>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(ids(select(all.clone(), None, None, false)), ["a", "b", "c"]);
        assert_eq!(
            ids(select(all.clone(), Some("key_unavailable"), None, false)),
            ["a", "c"]
        );
        assert_eq!(ids(select(all.clone(), None, Some(20), false)), ["b", "c"]);
        assert_eq!(ids(select(all.clone(), Some("key_unavailable"), None, true)), ["a"]);
        assert!(parse_since("24h").is_ok() && parse_since("yesterday").is_err());
    }
}
