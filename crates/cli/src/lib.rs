//! The `ddbguard` command line: argument parsing, configuration, wiring and exit codes.
//!
//! The binary's `main` only calls [`main`]. Everything the subcommands do lives in the library crates
//! (`ddbguard-dbe`, `ddbguard-keys`, …); this crate turns flags and the config file into their typed
//! inputs and their results into output and an exit code:
//!
//! | exit code | meaning |
//! |---|---|
//! | 0 | every item / check succeeded |
//! | 1 | the command ran, and at least one item or check failed (the output says which and why) |
//! | 2 | usage, configuration or environment error: nothing was checked |
//! | 3 | `backfill`, `migrate apply`: finished, but items were left plaintext after conflicts (run a new pass) |
//! | 4 | the command started and then failed: an error after startup, not a verdict ([`AfterStartup`]) |
//! | 130 | a second SIGINT/SIGTERM arrived while the command was stopping ([`signal::shutdown_signal`]) |

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, CommandFactory as _, Parser, Subcommand};

/// The git revision this binary was built from (`unknown` outside a git checkout without `GIT_SHA`).
pub const GIT_SHA: &str = env!("DDBGUARD_GIT_SHA");
/// The crate version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// What `--version` prints after the program name.
const LONG_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("DDBGUARD_GIT_SHA"), ")");

pub mod audit;
pub mod backfill;
pub mod branch;
pub mod config;
pub mod health;
pub mod item;
pub mod keyring;
pub mod keys;
pub mod migrate;
pub mod progress;
pub mod quarantine;
pub mod signal;
pub mod sql;
pub mod verify;

/// Verify and migrate client-side encrypted DynamoDB Global Tables under KMS multi-Region keys.
#[derive(Debug, Parser)]
#[command(name = "ddbguard", version = LONG_VERSION, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Also write every metric as CloudWatch Embedded Metric Format JSON lines on stdout at each flush (for
    /// the awslogs driver: CloudWatch metrics without an agent). Prometheus `/metrics` is unchanged.
    #[arg(long, global = true, env = "DDBGUARD_EMF")]
    pub emf: bool,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "DDBGUARD_LOG_FORMAT")]
    pub log_format: LogFormat,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per event (for CloudWatch Logs and other collectors).
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decrypt, encrypt or inspect DB-ESDK items given as DynamoDB JSON.
    Item(ItemArgs),
    /// Check KMS keys: state per region, replica coverage, cross-region round trips.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Verify a table's DynamoDB stream in the local region: one verdict per record, Prometheus metrics,
    /// /healthz and /readyz. Runs until SIGTERM/SIGINT, or with --until-caught-up prints a JSON summary and
    /// exits 0 when every verdict passed and no gap was seen, 1 otherwise; 2 on config or startup errors.
    Verify(verify::VerifyArgs),
    /// Scan a whole table in the local region and give every item the verdict `verify` would give it; with
    /// --compare-region, also compare every item with its copy in that replica. Prints a JSON summary; exit 0
    /// when every verdict passed (and the replicas agree), 1 otherwise, 2 on config or startup errors.
    Audit(audit::AuditArgs),
    /// Encrypt a table's plaintext items in its home region (resumable, rate-limited, concurrent-write safe).
    /// Exit 0 finished, 1 items failed, 2 usage/config, 3 items left after repeated conflicts, 130 interrupted.
    Backfill(backfill::BackfillArgs),
    /// Migration files (`migrations/NNNN_name.toml`): status, plan (dry run), apply.
    #[command(subcommand)]
    Migrate(migrate::MigrateCommand),
    /// The Aurora Global Database side: PostgreSQL columns encrypted with the AWS Encryption SDK.
    #[command(subcommand)]
    Sql(sql::SqlCommand),
    /// Records `verify` quarantined (failing verdicts, with their stored image): list, show, replay.
    #[command(subcommand)]
    Quarantine(quarantine::QuarantineCommand),
    /// Check a running verifier's health endpoint (the ECS container health check; the image has no curl):
    /// exit 0 when `/healthz` answers 200, 1 otherwise.
    Health(health::HealthArgs),
    /// Print a shell completion script on stdout, e.g. `ddbguard completions bash > /etc/bash_completion.d/ddbguard`.
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// For every table's KMS key and every region of `[aws] regions`: key state, replica coverage and a
    /// round-trip matrix (data key generated in each region, decrypted in every other). Exit 0 when every
    /// cell works, 1 when any fails, 2 on config errors. Usable as a deploy gate or an ECS health probe.
    Check(KeysCheckArgs),
    /// Branch keys of a `hierarchy` keyring: create, rotate, show (JSON on stdout).
    #[command(subcommand)]
    Branch(branch::BranchCommand),
}

#[derive(Debug, Args)]
pub struct KeysCheckArgs {
    #[command(flatten)]
    pub config: config::ConfigArgs,

    /// Only this table (physical name); default every table with a `kms-mrk` or `hierarchy` keyring.
    #[arg(long)]
    pub table: Option<String>,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ItemArgs {
    /// What to do with each item.
    #[arg(value_enum)]
    pub op: item::ItemOp,

    #[command(flatten)]
    pub config: config::ConfigArgs,

    /// The physical table name of a `[[tables]]` entry in the config.
    #[arg(long)]
    pub table: String,

    /// A file with one DynamoDB JSON item or JSON lines of items; `-` or nothing reads stdin.
    pub input: Option<PathBuf>,
}

/// Writes `doc` as pretty JSON and a newline on stdout: the report of every command that prints one.
pub(crate) fn print_json(doc: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, doc).context("cannot write output")?;
    // Flushed here, so that a full disk or a closed pipe is this call's error, not a silent loss at exit.
    out.write_all(b"\n")
        .and_then(|()| out.flush())
        .context("cannot write output")
}

/// Exit code of a command that failed after it started ([`AfterStartup`]).
pub const EXIT_AFTER_STARTUP: u8 = 4;

/// Context marking an error that ended a command after it started working (`verify`: the stream was found,
/// the lease and quarantine tables were ready and `/metrics` was served), as opposed to a usage, configuration
/// or startup error (exit 2) that a restart with the same configuration meets again. Exit code
/// [`EXIT_AFTER_STARTUP`]: the checkpoints written so far are kept, and a restart resumes from them.
///
/// Attach it last (`.context(AfterStartup)`), so that it is the error's outermost context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AfterStartup;

impl std::fmt::Display for AfterStartup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("failed after startup")
    }
}

/// Parses the process's arguments, runs the command and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let code = error_exit_code(&e);
            if code != ExitCode::SUCCESS {
                eprintln!("ddbguard: error: {e:#}");
            }
            code
        }
    }
}

/// The exit code of a command that returned `e`: 4 after startup, 2 for usage, configuration and startup
/// errors, and 0 when the only problem was output to a closed pipe (`ddbguard item … | head`), which is not
/// worth reporting.
fn error_exit_code(e: &anyhow::Error) -> ExitCode {
    if e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    }) {
        return ExitCode::SUCCESS;
    }
    if e.downcast_ref::<AfterStartup>().is_some() {
        return ExitCode::from(EXIT_AFTER_STARTUP);
    }
    ExitCode::from(2)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DDBGUARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Runs a parsed command. `Err` means a usage or configuration error (exit code 2), or with [`AfterStartup`] a
/// failure after the command started (exit code 4).
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let emf = cli.emf;
    runtime.block_on(async move {
        match cli.command {
            Command::Item(args) => run_item(args).await,
            Command::Keys(KeysCommand::Check(args)) => run_keys_check(args).await,
            Command::Keys(KeysCommand::Branch(command)) => {
                let ok = branch::run(command, &mut io::stdout().lock()).await?;
                Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
            }
            Command::Verify(args) => verify::run(args, emf).await,
            Command::Audit(args) => audit::run(args).await,
            Command::Backfill(args) => backfill::run(args).await,
            Command::Migrate(command) => migrate::run(command).await,
            Command::Quarantine(command) => quarantine::run(command).await,
            Command::Sql(command) => sql::run(command).await,
            Command::Health(args) => health::run(args).await,
            Command::Completions(args) => {
                let mut out = io::stdout().lock();
                clap_complete::generate(args.shell, &mut Cli::command(), "ddbguard", &mut out);
                out.flush().context("cannot write output")?;
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

async fn run_item(args: ItemArgs) -> anyhow::Result<ExitCode> {
    let config = args.config.load()?;
    let table = config.table(&args.table)?;
    let input = open_input(args.input.as_deref())?;
    let decrypt = args.op == item::ItemOp::Decrypt;
    let (keyring, legacy): (Option<Arc<dyn ddbguard_dbe::Keyring>>, _) = match args.op {
        item::ItemOp::Inspect => (None, None),
        _ => {
            // Only decrypt reads legacy items with keys (inspect needs none, encrypt never writes them).
            let legacy_kms = decrypt && table.legacy.as_ref().is_some_and(|l| l.provider.needs_aws());
            let aws = if table.keyring.needs_aws() || legacy_kms {
                Some(keyring::AwsContext::new(&keyring::aws_settings(&config).await?).await)
            } else {
                None
            };
            let legacy = if decrypt {
                keyring::legacy_provider(table, aws.as_ref()).await?
            } else {
                None
            };
            (Some(Arc::from(keyring::build(&table.keyring, aws.as_ref())?)), legacy)
        }
    };
    let mut processor = item::ItemProcessor::new(args.op, table, keyring)
        .with_context(|| format!("{}: table {:?}", config.origin, table.name))?;
    if let Some(provider) = legacy {
        processor = processor.with_legacy_provider(provider);
    }
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let all_ok = processor
        .run(input, &mut out)
        .await
        .context("cannot read items or write results")?;
    out.flush().context("cannot write output")?;
    Ok(if all_ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

async fn run_keys_check(args: KeysCheckArgs) -> anyhow::Result<ExitCode> {
    let config = args.config.load()?;
    let checks = keys::check(&config, args.table.as_deref()).await?;
    let ok = checks.iter().all(|c| c.report.ok);
    let mut out = io::stdout().lock();
    if args.json {
        let doc = serde_json::json!({ "ok": ok, "tables": checks });
        serde_json::to_writer_pretty(&mut out, &doc).context("cannot write output")?;
        writeln!(out).context("cannot write output")?;
    } else {
        write!(out, "{}", keys::render(&checks)).context("cannot write output")?;
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The item input as a buffered stream: a file, or stdin for `-` or no path.
fn open_input(path: Option<&std::path::Path>) -> anyhow::Result<Box<dyn BufRead>> {
    Ok(match path {
        Some(p) if p.as_os_str() != "-" => Box::new(io::BufReader::new(
            std::fs::File::open(p).with_context(|| format!("cannot read items from {}", p.display()))?,
        )),
        _ => Box::new(io::stdin().lock()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Startup errors exit 2, errors marked as after startup 4 (whatever context the caller added inside), and
    /// a closed pipe 0.
    #[test]
    fn errors_map_to_their_exit_codes() {
        let startup = anyhow::anyhow!("table \"orders\" does not exist").context("ddbguard.toml");
        assert_eq!(error_exit_code(&startup), ExitCode::from(2));
        let after = anyhow::anyhow!("the metrics endpoint stopped")
            .context("ddbguard.toml: table \"orders\"")
            .context(AfterStartup);
        assert_eq!(error_exit_code(&after), ExitCode::from(EXIT_AFTER_STARTUP));
        assert_eq!(
            format!("{after:#}"),
            "failed after startup: ddbguard.toml: table \"orders\": the metrics endpoint stopped"
        );
        let pipe = anyhow::Error::new(io::Error::from(io::ErrorKind::BrokenPipe)).context(AfterStartup);
        assert_eq!(error_exit_code(&pipe), ExitCode::SUCCESS);
    }

    #[test]
    fn version_names_the_git_revision() {
        let version = Cli::command().render_version();
        assert_eq!(version.trim_end(), format!("ddbguard {VERSION} (git {GIT_SHA})"));
        assert!(!GIT_SHA.is_empty());
    }

    #[test]
    fn completions_cover_the_subcommands() {
        let mut script = Vec::new();
        clap_complete::generate(clap_complete::Shell::Bash, &mut Cli::command(), "ddbguard", &mut script);
        let script = String::from_utf8(script).unwrap();
        for sub in ["verify", "health", "completions", "backfill"] {
            assert!(script.contains(sub), "{sub} missing from the bash completions");
        }
    }

    #[test]
    fn emf_is_a_global_flag() {
        let cli = Cli::try_parse_from(["ddbguard", "health", "--emf"]).unwrap();
        assert!(cli.emf);
        let cli = Cli::try_parse_from(["ddbguard", "completions", "zsh"]).unwrap();
        assert!(!cli.emf);
    }
}
