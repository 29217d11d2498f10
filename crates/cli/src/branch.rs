//! `ddbguard keys branch create|rotate|show`: branch keys of a table's `hierarchy` keyring, in its key store.
//!
//! Every command prints one JSON document on stdout with `"ok"`; a failure of the key store, DynamoDB or KMS is
//! `{"ok": false, "kind": …, "error": …}` and exit 1 (exit 2 is for config and argument errors). `create` makes the key store table if it is missing
//! (on-demand; production key stores are usually a global table made by infrastructure code) and a new
//! branch key; `rotate` makes a new active version (older versions keep decrypting); `show` lists the
//! branch key's items and decrypts the active version in the local region, exiting 1 when that fails.

use std::collections::BTreeMap;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use ddbguard_keys::keystore::{DynamoKeyStore, KeyStoreError};
use serde_json::{Value, json};

use crate::config::{Config, HierarchySettings, KeyringSettings, TableSettings};
use crate::keyring::AwsContext;

#[derive(Debug, Subcommand)]
pub enum BranchCommand {
    /// Create a branch key (and the key store table if it is missing); prints its id.
    Create(CreateArgs),
    /// Rotate a branch key: a new active version encrypts from now on, every version keeps decrypting.
    Rotate(BranchArgs),
    /// Show a branch key's versions and whether its active version decrypts in the local region.
    Show(BranchArgs),
}

#[derive(Debug, Args)]
pub struct TableArgs {
    #[command(flatten)]
    pub config: crate::config::ConfigArgs,

    /// The physical name of a `[[tables]]` entry whose keyring has `kind = "hierarchy"`.
    #[arg(long)]
    pub table: String,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub table: TableArgs,

    /// The branch key id; default a random UUID. A chosen id needs an --encryption-context.
    #[arg(long)]
    pub branch_key_id: Option<String>,

    /// Custom encryption context bound to every version of the branch key, as KEY=VALUE (repeatable).
    #[arg(long = "encryption-context", value_name = "KEY=VALUE", value_parser = parse_pair)]
    pub encryption_context: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub struct BranchArgs {
    #[command(flatten)]
    pub table: TableArgs,

    /// The branch key id; default the keyring's `branch_key_id`.
    #[arg(long)]
    pub branch_key_id: Option<String>,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// Runs a branch command; `Ok(false)` when it ran and failed (exit 1, the failure printed as JSON). Config and
/// argument errors are `Err` (exit 2), found before anything is written.
pub async fn run(command: BranchCommand, out: &mut impl std::io::Write) -> anyhow::Result<bool> {
    let (args, id) = match &command {
        BranchCommand::Create(c) => (&c.table, c.branch_key_id.clone()),
        BranchCommand::Rotate(b) | BranchCommand::Show(b) => (&b.table, b.branch_key_id.clone()),
    };
    let config = args.config.load()?;
    let (table, hierarchy) = hierarchy_table(&config, &args.table)?;
    let aws_settings = &crate::keyring::aws_settings(&config).await?;
    let id = match &command {
        BranchCommand::Create(c) => {
            match c.branch_key_id.as_deref() {
                Some("") => anyhow::bail!("--branch-key-id must not be empty"),
                Some(_) if c.encryption_context.is_empty() => anyhow::bail!(
                    "a chosen --branch-key-id needs at least one --encryption-context KEY=VALUE (as in the official \
                     key store); leave the id out to get a random UUID"
                ),
                _ => {}
            }
            None
        }
        _ => Some(id.or_else(|| hierarchy.branch_key_id.clone()).with_context(|| {
            format!(
                "table {:?}: pass --branch-key-id, or set branch_key_id in its [tables.keyring]",
                table.name
            )
        })?),
    };
    let aws = AwsContext::new(aws_settings).await;
    let store = aws.key_store(hierarchy)?;
    let result = match command {
        BranchCommand::Create(c) => create(&store, hierarchy, c).await,
        BranchCommand::Rotate(_) => rotate(&store, id.as_deref().unwrap_or_default()).await,
        BranchCommand::Show(_) => {
            show(
                &store,
                hierarchy,
                &aws_settings.region,
                id.as_deref().unwrap_or_default(),
            )
            .await
        }
    };
    let (doc, ok) =
        result.unwrap_or_else(|e| (json!({ "ok": false, "kind": e.kind(), "error": e.to_string() }), false));
    serde_json::to_writer_pretty(&mut *out, &doc).context("cannot write output")?;
    writeln!(out).context("cannot write output")?;
    Ok(ok)
}

async fn create(
    store: &DynamoKeyStore,
    hierarchy: &HierarchySettings,
    args: CreateArgs,
) -> Result<(Value, bool), KeyStoreError> {
    let created_table = store.create_key_store().await?;
    let custom: BTreeMap<String, String> = args.encryption_context.into_iter().collect();
    let id = store.create_key(args.branch_key_id.as_deref(), &custom).await?;
    let doc = json!({
        "ok": true,
        "branch_key_id": id,
        "key_store_table": hierarchy.key_store_table,
        "created_key_store_table": created_table,
        "kms_key": store.kms_key_id(),
        "encryption_context": custom,
    });
    Ok((doc, true))
}

async fn rotate(store: &DynamoKeyStore, id: &str) -> Result<(Value, bool), KeyStoreError> {
    let version = store.version_key(id).await?;
    Ok((
        json!({ "ok": true, "branch_key_id": id, "active_version": version }),
        true,
    ))
}

async fn show(
    store: &DynamoKeyStore,
    hierarchy: &HierarchySettings,
    region: &str,
    id: &str,
) -> Result<(Value, bool), KeyStoreError> {
    let items = store.describe(id).await?;
    // A consistent read, like the listing, so both show the same version right after a rotation.
    let active = store.active_branch_key_consistent(id).await;
    let decrypt = match &active {
        Ok(k) => json!({ "ok": true, "version": uuid_text(&k.version) }),
        Err(e) => json!({ "ok": false, "kind": e.kind(), "error": e.to_string() }),
    };
    let doc = json!({
        "ok": active.is_ok(),
        "branch_key_id": id,
        "key_store_table": hierarchy.key_store_table,
        "region": region,
        "items": items,
        "active_decrypts_here": decrypt,
    });
    Ok((doc, active.is_ok()))
}

fn uuid_text(bytes: &[u8; 16]) -> String {
    ddbguard_keys::hierarchy::version_text(bytes)
}

fn hierarchy_table<'c>(config: &'c Config, name: &str) -> anyhow::Result<(&'c TableSettings, &'c HierarchySettings)> {
    let table = config.table(name)?;
    match &table.keyring {
        KeyringSettings::Hierarchy(h) => Ok((table, h)),
        _ => anyhow::bail!(
            "{}: table {name:?} does not use a `hierarchy` keyring, so it has no branch keys",
            config.origin
        ),
    }
}
