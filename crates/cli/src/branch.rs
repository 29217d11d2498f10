//! `ddbguard keys branch create|rotate|show`: branch keys of a table's `hierarchy` keyring, in its key store.
//!
//! Every command prints one JSON document on stdout. `create` makes the key store table if it is missing
//! (on-demand; production key stores are usually a global table made by infrastructure code) and a new
//! branch key; `rotate` makes a new active version (older versions keep decrypting); `show` lists the
//! branch key's items and decrypts the active version in the local region, exiting 1 when that fails.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::json;

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
    /// The ddbguard config file (TOML).
    #[arg(long, env = "DDBGUARD_CONFIG")]
    pub config: PathBuf,

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

/// Runs a branch command; `Ok(false)` when it ran and found a failure (exit 1).
pub async fn run(command: BranchCommand, out: &mut impl std::io::Write) -> anyhow::Result<bool> {
    let (args, id) = match &command {
        BranchCommand::Create(c) => (&c.table, c.branch_key_id.clone()),
        BranchCommand::Rotate(b) | BranchCommand::Show(b) => (&b.table, b.branch_key_id.clone()),
    };
    let config = Config::load(&args.config)?;
    let (table, hierarchy) = hierarchy_table(&config, &args.table)?;
    let aws_settings = config.aws.as_ref().with_context(|| {
        format!(
            "{}: a hierarchy keyring needs an [aws] section with `region`",
            config.path.display()
        )
    })?;
    let aws = AwsContext::new(aws_settings).await;
    let store = aws.key_store(hierarchy)?;
    let configured_id = || {
        id.clone().or_else(|| hierarchy.branch_key_id.clone()).with_context(|| {
            format!(
                "table {:?}: pass --branch-key-id, or set branch_key_id in its [tables.keyring]",
                table.name
            )
        })
    };
    let (doc, ok) = match command {
        BranchCommand::Create(c) => {
            let created_table = store.create_key_store().await?;
            let custom: BTreeMap<String, String> = c.encryption_context.into_iter().collect();
            let id = store.create_key(c.branch_key_id.as_deref(), &custom).await?;
            let doc = json!({
                "branch_key_id": id,
                "key_store_table": hierarchy.key_store_table,
                "created_key_store_table": created_table,
                "kms_key": store.kms_key_id(),
                "encryption_context": custom,
            });
            (doc, true)
        }
        BranchCommand::Rotate(_) => {
            let id = configured_id()?;
            let version = store.version_key(&id).await?;
            (json!({ "branch_key_id": id, "active_version": version }), true)
        }
        BranchCommand::Show(_) => {
            let id = configured_id()?;
            let items = store.describe(&id).await?;
            let active = store.active_branch_key(&id).await;
            let decrypt = match &active {
                Ok(k) => json!({ "ok": true, "version": uuid_text(&k.version) }),
                Err(e) => json!({ "ok": false, "error": e.to_string() }),
            };
            let doc = json!({
                "branch_key_id": id,
                "key_store_table": hierarchy.key_store_table,
                "region": aws_settings.region,
                "items": items,
                "active_decrypts_here": decrypt,
            });
            (doc, active.is_ok())
        }
    };
    serde_json::to_writer_pretty(&mut *out, &doc).context("cannot write output")?;
    writeln!(out).context("cannot write output")?;
    Ok(ok)
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
            config.path.display()
        ),
    }
}
