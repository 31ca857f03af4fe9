//! The command line: clap types, logging set-up and dispatch.
//!
//! Clap types stop here. Each subcommand is turned into a plain options struct from
//! `crate::commands` and handed to that command's `run` function, which returns an
//! exit code. Errors are printed once, here, as an `anyhow` chain.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::commands;
use crate::exit;
use crate::framework::FrameworkKind;
use crate::orchestrator::progress::StatusLevel;
use crate::partition::Partition;
use crate::provider::ProviderKind;
use crate::report::summary::FinalStatusLevel;

/// What `offload --version` prints after the name: the package version, then the commit
/// and the date of the build (`unknown` when the build had no git; see `build.rs`).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("OFFLOAD_COMMIT"),
    " ",
    env!("OFFLOAD_BUILD_DATE"),
    ")"
);

/// Offload: run a test suite in parallel sandboxes, retry failures, tell flaky tests
/// from broken ones and write one JUnit report.
#[derive(Debug, Parser)]
#[command(name = "offload", version = VERSION, about, long_about = None)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        short,
        long,
        global = true,
        value_name = "PATH",
        default_value = "offload.toml"
    )]
    config: PathBuf,

    /// More diagnostics on stderr (repeat for debug output).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Discover the tests, run them in parallel sandboxes and report.
    Run(RunArgs),
    /// Discover tests without running them.
    Collect(CollectArgs),
    /// Check the configuration file and print a summary of its settings.
    Validate,
    /// Write a new configuration file.
    Init(InitArgs),
    /// Show per-test results of the most recent run.
    Logs(LogsArgs),
    /// Apply a git-format patch (text and binary) to a directory, all or nothing.
    ApplyDiff(ApplyDiffArgs),
    /// Show the image cache state of the current commit.
    CheckpointStatus(CheckpointStatusArgs),
    /// The durations history: its git merge driver.
    #[command(subcommand)]
    History(HistoryCommand),
    /// Work with JUnit reports.
    #[command(subcommand)]
    Report(ReportCommand),
}

/// `offload history` subcommands.
#[derive(Debug, Subcommand)]
enum HistoryCommand {
    /// Three-way merge of durations histories, as a git merge driver (`%O %A %B`): writes
    /// the merge into OURS and exits 0.
    Merge {
        /// The common ancestor's file (`%O`).
        base: PathBuf,
        /// Our file (`%A`), where the merge is written.
        ours: PathBuf,
        /// Their file (`%B`).
        theirs: PathBuf,
    },
    /// Make git merge the durations history with `offload history merge`: adds its line
    /// to `.gitattributes` and the driver to the repository's git config.
    SetupMergeDriver,
}

/// The subcommands of `offload report`.
#[derive(Debug, Subcommand)]
enum ReportCommand {
    /// Merge the reports of the parts of a partitioned run (`offload run --partition
    /// K/N`) into one report of the whole run.
    Merge(MergeArgs),
}

/// Flags of `offload report merge`.
#[derive(Debug, Args)]
struct MergeArgs {
    /// The parts' reports (their tests are written in this order). A test in two of them
    /// is an error; a part missing from the set is a warning.
    #[arg(value_name = "REPORT", required = true)]
    inputs: Vec<PathBuf>,
    /// Where to write the merged report (atomically; it may be one of the inputs).
    #[arg(short, long, value_name = "PATH", default_value = "junit.xml")]
    output: PathBuf,
}

/// Flags of `offload run`.
#[derive(Debug, Args)]
struct RunArgs {
    /// Run only the tests whose ID contains one of these strings (a full ID selects
    /// exactly that test). Combined with `-k` and `--rerun-failed`, a test must match
    /// each. Nothing matching is an error (exit 1).
    #[arg(value_name = "FILTERS")]
    pub filters: Vec<String>,
    /// Maximum number of sandboxes running at once (overrides `max_parallel`).
    #[arg(short, long, value_name = "N")]
    parallel: Option<usize>,
    /// Discover tests, print them and stop.
    #[arg(long)]
    collect_only: bool,
    /// Copy a directory into each sandbox image (repeatable).
    #[arg(long = "copy-dir", value_name = "LOCAL:REMOTE")]
    copy_dirs: Vec<String>,
    /// Set an environment variable in the sandboxes (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Skip both caches: the image cache (git notes, or `.offload-image-cache` outside a
    /// git repository) is neither read nor written, with the image built the same way;
    /// and tests are discovered afresh, the discovery cache neither read nor written.
    #[arg(long)]
    no_cache: bool,
    /// Stop scheduling after the first failure and cancel running batches.
    #[arg(long)]
    fail_fast: bool,
    /// Print the estimated sandbox cost in the summary.
    #[arg(long)]
    show_estimated_cost: bool,
    /// Plain progress lines instead of a progress bar (also when `CI=true`).
    #[arg(long)]
    ci: bool,
    /// Status lines while tests run: none, fail, retry (also flaky), slow, pass, skip
    /// or all; each level shows those before it. Default: slow (pass with -v).
    #[arg(long, value_enum, value_name = "LEVEL")]
    pub status_level: Option<StatusLevel>,
    /// Tests named at the end, with their reason: none, fail (also errors and tests not
    /// run), flaky, slow, skip, pass or all; each level names those before it.
    #[arg(long, value_enum, value_name = "LEVEL", default_value_t = FinalStatusLevel::Flaky)]
    pub final_status_level: FinalStatusLevel,
    /// Run only the tests matching EXPR: pytest's own `-k` expression (given to pytest's
    /// discovery, e.g. `-k 'not slow and api'`); for cargo and default frameworks a
    /// regular expression matched anywhere in the test ID.
    #[arg(short = 'k', value_name = "EXPR")]
    pub keyword: Option<String>,
    /// Run only the tests that failed, errored or were not run in the last report
    /// (`[report]` junit file); flaky tests passed in the end and are not rerun. Exits 0
    /// when there is nothing to rerun.
    #[arg(long)]
    pub rerun_failed: bool,
    /// Show the tests' output as it is printed (stdout to stdout, stderr to stderr), in
    /// one sandbox (`max_parallel = 1`); pytest gets `-s`, nextest `--no-capture`. Logs
    /// are still written.
    #[arg(long)]
    pub no_capture: bool,
    /// Record this run's test times into the durations history (`[history] path`,
    /// default `.offload/durations`), which later runs schedule by when they have no
    /// previous report (a CI run). `record_history = "always"` in `[history]` records
    /// every run.
    #[arg(long)]
    pub record_history: bool,
    /// Run only part K of N of the selected tests, for N CI jobs that share a suite: the
    /// jobs K = 1..N together run each test once. `K/N` (or `count:K/N`, nextest's
    /// spelling) balances the parts by the known durations, longest first, so every job
    /// must discover the same tests and know the same durations; `hash:K/N` places each
    /// test by a hash of its ID, for suites whose discovery differs between machines. The
    /// report records the part; `offload report merge` joins the parts' reports.
    #[arg(long, value_name = "K/N", value_parser = parse_partition)]
    pub partition: Option<Partition>,
}

/// A `--partition` value (see [`Partition`]'s `FromStr`).
fn parse_partition(value: &str) -> Result<Partition, String> {
    value.parse()
}

/// Output formats of `offload collect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CollectFormat {
    /// Groups and test IDs, for people.
    Text,
    /// A JSON array of test records, alone on stdout.
    Json,
}

/// Flags of `offload collect`.
#[derive(Debug, Args)]
struct CollectArgs {
    /// List only the tests whose ID contains one of these strings.
    #[arg(value_name = "FILTERS")]
    pub filters: Vec<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = CollectFormat::Text)]
    format: CollectFormat,
    /// List only the tests matching EXPR: pytest's own `-k` expression; for cargo and
    /// default frameworks a regular expression matched anywhere in the test ID.
    #[arg(short = 'k', value_name = "EXPR")]
    pub keyword: Option<String>,
}

/// Flags of `offload init`.
#[derive(Debug, Args)]
struct InitArgs {
    /// Provider to configure.
    #[arg(short, long, value_enum, default_value = "local")]
    provider: ProviderKind,
    /// Test framework to configure.
    #[arg(short, long, value_enum, default_value = "pytest")]
    framework: FrameworkKind,
    /// Overwrite an existing file.
    #[arg(long)]
    force: bool,
}

/// Flags of `offload logs`.
#[derive(Debug, Args)]
struct LogsArgs {
    /// Only failed tests.
    #[arg(long)]
    failures: bool,
    /// Only tests that ended in an error.
    #[arg(long)]
    errors: bool,
    /// Only the test with exactly this ID (repeatable).
    #[arg(long = "test", value_name = "ID")]
    tests: Vec<String>,
    /// Only tests whose ID matches this regular expression (anywhere in the ID).
    #[arg(long, value_name = "PATTERN")]
    test_regex: Option<String>,
}

/// Flags of `offload apply-diff`.
#[derive(Debug, Args)]
struct ApplyDiffArgs {
    /// The patch file (`git diff --binary` format).
    patch: PathBuf,
    /// Directory the patch paths are relative to.
    #[arg(long, value_name = "DIR", default_value = ".")]
    project_root: PathBuf,
}

/// Flags of `offload checkpoint-status`.
#[derive(Debug, Args)]
struct CheckpointStatusArgs {
    /// Remote to fetch image notes from.
    #[arg(long, default_value = "origin")]
    remote: String,
}

/// The whole `offload` program: parses the command line (from `std::env::args`), runs
/// the subcommand and returns the process exit code for `main` to exit with.
///
/// It never returns an error: a usage error or a failed command is printed to stderr
/// once (as an `anyhow` chain) and becomes exit code 1. The other codes are 0 (passed),
/// 2 (passed, some only after a retry), 130 and 143 (stopped by SIGINT or SIGTERM).
/// Child processes still alive at the end are killed before it returns.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // Help and version are not errors; every usage error exits 1, never 2.
            let code = if err.use_stderr() {
                exit::FAILURE
            } else {
                exit::SUCCESS
            };
            let _ = err.print();
            return code;
        }
    };
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            crate::statusln!("error: cannot start the async runtime: {err}");
            return exit::FAILURE;
        }
    };
    let code = match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(err) => {
            crate::statusln!("error: {err:#}");
            exit::FAILURE
        }
    };
    // Dropping the runtime would wait for every blocking task, and one may still be
    // deep in work nobody needs any more (a tree snapshot abandoned on SIGTERM, say).
    // The command is done and the process exits next: leave them to the exit, and
    // kill the child processes such a task may still wait for.
    runtime.shutdown_background();
    crate::process::kill_all_process_groups();
    code
}

/// Diagnostics go to stderr; `-v` shows info, `-vv` debug. `RUST_LOG` wins when set.
fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = crate::output::use_color(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| crate::output::StderrWriter)
        .with_ansi(ansi)
        // Its own report of a failed write is an `eprintln!`, which panics when stderr
        // is a closed pipe (`offload run 2>&1 | head`).
        .log_internal_errors(false)
        .with_target(false)
        .without_time()
        .try_init();
}

async fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    let config = cli.config;
    match cli.command {
        Command::Run(args) => {
            let mut options: commands::run::RunOptions = args.into();
            if cli.verbose > 0 && options.status_level.is_none() {
                options.status_level = Some(StatusLevel::Pass);
            }
            commands::run::run(&config, options).await
        }
        Command::Collect(args) => commands::collect::run(&config, args.into()).await,
        Command::Validate => commands::validate::run(&config),
        Command::Init(args) => commands::init::run(&config, args.into()),
        Command::Logs(args) => commands::logs::run(&config, args.into()),
        Command::ApplyDiff(args) => commands::apply_diff::run(&args.patch, &args.project_root),
        Command::CheckpointStatus(args) => commands::checkpoint_status::run(&config, &args.remote),
        Command::History(HistoryCommand::Merge { base, ours, theirs }) => {
            commands::history::merge(&base, &ours, &theirs)
        }
        Command::History(HistoryCommand::SetupMergeDriver) => {
            // The history's path comes from the configuration when there is one.
            let path = match std::fs::exists(&config) {
                Ok(true) => crate::config::load(&config)?.config.history.path,
                _ => PathBuf::from(crate::history::DEFAULT_PATH),
            };
            commands::history::setup_merge_driver(&path)
        }
        Command::Report(ReportCommand::Merge(args)) => {
            commands::report_merge::run(commands::report_merge::MergeOptions {
                inputs: args.inputs,
                output: args.output,
            })
        }
    }
}

impl From<RunArgs> for commands::run::RunOptions {
    fn from(a: RunArgs) -> Self {
        Self {
            parallel: a.parallel,
            collect_only: a.collect_only,
            copy_dirs: a.copy_dirs,
            env: a.env,
            no_cache: a.no_cache,
            fail_fast: a.fail_fast,
            show_estimated_cost: a.show_estimated_cost,
            ci: a.ci || std::env::var("CI").is_ok_and(|v| v == "true"),
            status_level: a.status_level,
            final_status_level: a.final_status_level,
            filters: a.filters,
            keyword: a.keyword,
            rerun_failed: a.rerun_failed,
            no_capture: a.no_capture,
            record_history: a.record_history,
            partition: a.partition,
        }
    }
}

impl From<CollectArgs> for commands::collect::CollectOptions {
    fn from(a: CollectArgs) -> Self {
        Self {
            json: a.format == CollectFormat::Json,
            filters: a.filters,
            keyword: a.keyword,
        }
    }
}

impl From<InitArgs> for commands::init::InitOptions {
    fn from(a: InitArgs) -> Self {
        Self {
            provider: a.provider,
            framework: a.framework,
            force: a.force,
        }
    }
}

impl From<LogsArgs> for commands::logs::LogsOptions {
    fn from(a: LogsArgs) -> Self {
        Self {
            failures: a.failures,
            errors: a.errors,
            tests: a.tests,
            test_regex: a.test_regex,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_are_accepted_after_the_subcommand() {
        let cli = Cli::try_parse_from(["offload", "run", "-c", "x.toml", "-v"]).unwrap();
        assert_eq!(cli.config, PathBuf::from("x.toml"));
        assert_eq!(cli.verbose, 1);
        let cli = Cli::try_parse_from(["offload", "-c", "y.toml", "validate"]).unwrap();
        assert_eq!(cli.config, PathBuf::from("y.toml"));
    }

    #[test]
    fn run_takes_filters_k_and_selection_flags() {
        let cli = Cli::try_parse_from([
            "offload",
            "run",
            "test_a",
            "-k",
            "not slow",
            "tests/b.py::t",
            "--rerun-failed",
            "--no-capture",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run: {:?}", cli.command);
        };
        let options = commands::run::RunOptions::from(args);
        assert_eq!(options.filters, ["test_a", "tests/b.py::t"]);
        assert_eq!(options.keyword.as_deref(), Some("not slow"));
        assert!(options.rerun_failed && options.no_capture);
    }
}
