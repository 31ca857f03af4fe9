//! `offload run`: discover, schedule, execute, report.
//!
//! [`run`] reads as its phases: load the config and apply the flags; discover every
//! group while the image is prepared, the previous durations are read and a local
//! cargo build is checked ([`discover`]); keep the tests the command line selects
//! ([`Selection`]: filters, `-k`, `--rerun-failed`), then, under `--partition K/N`, the
//! tests of part K ([`Partition`]); prepare the output directory and
//! build the provider; hand everything to the [`orchestrator`](crate::orchestrator)
//! ([`execute`]); write the merged report, print the summary and return the exit code
//! ([`report`]). Each phase calls into the module that owns the decision.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use rustc_hash::FxHashMap;
use tokio_util::sync::CancellationToken;

use crate::commands::durations::{self, Durations};
use crate::commands::selection::Selection;
use crate::config::{Config, RecordHistory};
use crate::exit;
use crate::framework::cache::DiscoveryCache;
use crate::framework::cargo::Cargo;
use crate::framework::{self, Framework, TestRecord, discovery};
use crate::image::PreparedImage;
use crate::orchestrator::progress::{Progress, StatusLevel};
use crate::orchestrator::{self, EngineOutcome, EngineSettings, HeadStart, WarmUp};
use crate::output::plural;
use crate::partition::Partition;
use crate::provider::default::{self as default_provider, PrepareLog};
use crate::provider::default_image::ImagePlan;
use crate::provider::{self, Setup};
use crate::report::merge::{PARTITION_PROPERTY, PLAN_TESTS_PROPERTY};
use crate::report::summary::{self, FinalStatusLevel};
use crate::report::{junit, output_dir};
use crate::signal::Signals;

/// Options of `offload run`.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunOptions {
    /// Overrides `max_parallel`.
    pub(crate) parallel: Option<usize>,
    /// Discover and print only.
    pub(crate) collect_only: bool,
    /// `--copy-dir LOCAL:REMOTE` values, unparsed.
    pub(crate) copy_dirs: Vec<String>,
    /// `--env KEY=VALUE` values, unparsed.
    pub(crate) env: Vec<String>,
    /// Skip the image cache.
    pub(crate) no_cache: bool,
    /// Stop at the first failure.
    pub(crate) fail_fast: bool,
    /// Print the cost estimate.
    pub(crate) show_estimated_cost: bool,
    /// Plain progress lines.
    pub(crate) ci: bool,
    /// Status lines while tests run (default: slow).
    pub(crate) status_level: Option<StatusLevel>,
    /// Tests named at the end.
    pub(crate) final_status_level: FinalStatusLevel,
    /// Positional filters: run the tests whose ID contains any of them.
    pub(crate) filters: Vec<String>,
    /// `-k EXPR`: pytest's own expression at discovery, else a regex on IDs.
    pub(crate) keyword: Option<String>,
    /// Only the tests that failed, errored or did not run in the last report.
    pub(crate) rerun_failed: bool,
    /// One sandbox, its output shown as it comes.
    pub(crate) no_capture: bool,
    /// Record this run's test times into the durations history.
    pub(crate) record_history: bool,
    /// Run only this part of the selected tests.
    pub(crate) partition: Option<Partition>,
}

/// Runs the test suite configured at `config_path`.
pub(crate) async fn run(config_path: &Path, options: RunOptions) -> Result<i32> {
    let mut config = crate::config::load(config_path)?.config;
    apply_flags(&mut config, &options)?;
    let setup = Setup::of(&config.provider)?;
    let (framework, keyword_at_discovery) = framework_of(&config, &options)?;
    let Some(selection) = selection_of(&config, &options, keyword_at_discovery).await? else {
        return Ok(exit::SUCCESS);
    };
    let signals = Signals::install().context("cannot install the SIGINT/SIGTERM handlers")?;
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let plan = match setup.commands() {
        Some(p) if !options.collect_only => {
            ImagePlan::for_run(&config, p, config_path, &cwd, options.no_cache).map(Arc::new)
        }
        _ => None,
    };
    let interrupt = signals.token();
    // Local sandboxes need no image: they exist from the start, so a resident worker
    // can warm up in them while discovery runs. It loads all that the framework's own
    // paths hold: not when a group's filters narrow that down (`--ignore`, a subpath).
    let early = match &setup {
        Setup::Local(_) if !options.collect_only => Some(provider::from_config(
            &setup, &config, None, None, &cwd, &interrupt,
        )?),
        _ => None,
    };
    let unfiltered = config.groups.values().all(|g| g.filters.trim().is_empty());
    let warm = early.as_ref().filter(|_| unfiltered).map(|provider| {
        WarmUp::new(
            Arc::clone(provider),
            Arc::clone(&framework),
            config.offload.max_parallel.max(1),
            options.fail_fast,
            Duration::from_secs(config.offload.test_timeout_secs),
        )
    });
    // Remote sandboxes each start a worker of their own: they are made, and their
    // workers started, while discovery runs (on the same terms as the local warm-up, and
    // not when the command line picks a part of the suite, which may need fewer).
    let ahead = (matches!(setup, Setup::Commands(_))
        && !options.collect_only
        && unfiltered
        && !selection.is_active())
    .then(|| Ahead {
        plan: plan.clone(),
        framework: Arc::clone(&framework),
        state: Mutex::default(),
    });
    let start = Start {
        config: &config,
        options: &options,
        setup: &setup,
        framework: framework.as_ref(),
        plan: plan.as_deref(),
        cwd: &cwd,
        interrupt: &interrupt,
        warm: warm.as_ref(),
        ahead: ahead.as_ref(),
    };
    let result = run_from(
        &start,
        &framework,
        &selection,
        &signals,
        plan.clone(),
        early,
        keyword_at_discovery,
    )
    .await;
    // The warm-up holds the local provider: it ends before the provider does (which
    // ends the worker), also when the run stopped early.
    if let Some(warm) = warm {
        warm.finish().await;
    }
    // The sandboxes made ahead that no batch took go, however the run ended.
    if let Some(head_start) = ahead.as_ref().and_then(Ahead::head_start) {
        head_start.finish().await;
    }
    result
}

/// Sandboxes made ahead for a provider driven by commands (see [`HeadStart`]): started
/// once both the image is ready and a discovery command runs, unless discovery has
/// ended by then (a cached one: the engine creates them as soon). Discovery tells it
/// what happens, with the run's [`Start`].
struct Ahead {
    plan: Option<Arc<ImagePlan>>,
    framework: Arc<dyn Framework>,
    state: Mutex<AheadState>,
}

#[derive(Default)]
struct AheadState {
    discovering: bool,
    discovered: bool,
    /// The image, once prepared (`Some(None)`: the provider has none).
    image: Option<Option<PreparedImage>>,
    started: Option<Arc<HeadStart>>,
}

impl Ahead {
    fn discovering(&self, s: &Start<'_>) {
        self.update(s, |state| state.discovering = true);
    }

    fn discovered(&self, s: &Start<'_>) {
        self.update(s, |state| state.discovered = true);
    }

    fn image_ready(&self, s: &Start<'_>, image: &Option<PreparedImage>) {
        self.update(s, |state| state.image = Some(image.clone()));
    }

    fn head_start(&self) -> Option<Arc<HeadStart>> {
        self.lock().started.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AheadState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn update(&self, s: &Start<'_>, change: impl FnOnce(&mut AheadState)) {
        let mut state = self.lock();
        change(&mut state);
        let image = match &state.image {
            Some(image) if state.discovering && !state.discovered && state.started.is_none() => {
                image.clone()
            }
            _ => return,
        };
        // A provider that cannot be built here fails the run where it is built for the
        // engine, with its message.
        match provider::from_config(
            s.setup,
            s.config,
            image,
            self.plan.clone(),
            s.cwd,
            s.interrupt,
        ) {
            Ok(provider) => {
                state.started = Some(HeadStart::start(
                    provider,
                    Arc::clone(&self.framework),
                    s.config.offload.max_parallel.max(1),
                    s.options.fail_fast,
                    Duration::from_secs(s.config.offload.test_timeout_secs),
                    s.interrupt,
                ));
            }
            Err(err) => tracing::debug!("no sandboxes made ahead: {err:#}"),
        }
    }
}

/// The run from discovery on (see [`run`]); `early` is the provider when it was built
/// before discovery.
async fn run_from(
    start: &Start<'_>,
    framework: &Arc<dyn Framework>,
    selection: &Selection,
    signals: &Signals,
    plan: Option<Arc<ImagePlan>>,
    early: Option<Arc<dyn provider::Provider>>,
    keyword_at_discovery: bool,
) -> Result<i32> {
    let (config, options, setup, cwd, interrupt) = (
        start.config,
        start.options,
        start.setup,
        start.cwd,
        start.interrupt,
    );
    let Some(mut found) = discover(start).await? else {
        return Ok(interrupted(signals));
    };
    // What exists, for pruning the history: all that discovery found, unless pytest's
    // `-k` narrowed the discovery itself.
    let live = (recording(config, options) && !keyword_at_discovery)
        .then(|| durations::live(&found.records));
    if selection.is_active() {
        selection.apply(&mut found.records)?;
        crate::statusln!(
            "{} selected by the command line",
            plural(found.records.len(), "test")
        );
    }
    // The report says which part it is, and of how large a plan.
    let mut properties: Vec<(&str, String)> = Vec::new();
    if let Some(partition) = options.partition {
        let total = partition.retain(&mut found.records, &found.durations);
        crate::statusln!(
            "part {partition}: {} of {}",
            plural(found.records.len(), "test"),
            total
        );
        properties.push((PARTITION_PROPERTY, partition.to_string()));
        properties.push((PLAN_TESTS_PROPERTY, total.to_string()));
    }

    if options.collect_only {
        crate::commands::collect::print_listing(
            &found.records,
            config.groups.keys().map(String::as_str),
        );
        return Ok(exit::SUCCESS);
    }
    if found.records.is_empty() {
        if let Some(partition) = options.partition {
            return empty_part(config, framework.as_ref(), partition, &properties);
        }
        crate::output::print("No tests to run.\n");
        return Ok(exit::SUCCESS);
    }
    output_dir::prepare(&config.report.output_dir)?;
    let provider = match early.or_else(|| {
        let head_start = start.ahead.and_then(Ahead::head_start)?;
        Some(head_start as Arc<dyn provider::Provider>)
    }) {
        Some(provider) => provider,
        None => provider::from_config(
            setup,
            config,
            found.prepared,
            found.plan.or_else(|| plan.clone()),
            cwd,
            interrupt,
        )?,
    };
    let batch_framework: Arc<dyn Framework> = match found.reused {
        Some(mut cargo) => {
            if options.no_capture {
                cargo.set_no_capture();
            }
            Arc::new(cargo)
        }
        None => Arc::clone(framework),
    };
    let settings = EngineSettings {
        parallel: config.offload.max_parallel,
        timeout: Duration::from_secs(config.offload.test_timeout_secs),
        fail_fast: options.fail_fast,
        output_dir: config.report.output_dir.clone(),
        durations: found.durations,
        no_capture: options.no_capture,
    };
    let outcome = execute(found.records, batch_framework, provider, &settings, start).await;
    if recording(config, options) && signals.received().is_none() {
        durations::record(config, &outcome.results, live.as_ref());
    }
    report(
        config,
        setup,
        options,
        framework.as_ref(),
        &properties,
        outcome,
        signals,
    )
}

/// Whether this run records its test times into the durations history.
fn recording(config: &Config, options: &RunOptions) -> bool {
    options.record_history || config.history.record_history == RecordHistory::Always
}

/// A part of a partitioned run that got no test (more parts than tests, say): it says
/// so, writes a report without tests that still names the part (so that the CI job's
/// upload finds it) and succeeds, since the other parts run the tests.
fn empty_part(
    config: &Config,
    framework: &dyn Framework,
    partition: Partition,
    properties: &[(&str, String)],
) -> Result<i32> {
    let report = &config.report;
    if report.junit {
        output_dir::prepare(&report.output_dir)?;
        let hostname = junit::hostname();
        let run = junit::RunInfo {
            started: SystemTime::now(),
            hostname: &hostname,
            framework: Some(framework),
            properties,
        };
        junit::write_merged(&report.junit_path(), &[], &run)?;
    }
    crate::output::print(&format!("Part {partition} has no tests: nothing to run.\n"));
    Ok(exit::SUCCESS)
}

/// The selection of the command line (filters, `-k`, `--rerun-failed`). The previous
/// report is read before anything in the output dir changes (the run rewrites it);
/// `None` when it has nothing to rerun, which is said on stdout.
async fn selection_of(
    config: &Config,
    options: &RunOptions,
    keyword_at_discovery: bool,
) -> Result<Option<Selection>> {
    let rerun = if options.rerun_failed {
        let path = config.report.junit_path();
        let enabled = config.report.junit;
        let ids = tokio::task::spawn_blocking(move || {
            crate::commands::selection::previous_unfinished(&path, enabled)
        })
        .await
        .context("reading the previous report stopped")??;
        if ids.is_empty() {
            crate::output::print(
                "Nothing to rerun: no test failed, errored or was not run in the last report.\n",
            );
            return Ok(None);
        }
        Some(ids)
    } else {
        None
    };
    Selection::new(
        options.filters.clone(),
        options.keyword.as_deref(),
        keyword_at_discovery,
        rerun,
    )
    .map(Some)
}

/// What the phases before the run share.
struct Start<'a> {
    config: &'a Config,
    options: &'a RunOptions,
    setup: &'a Setup<'a>,
    framework: &'a dyn Framework,
    /// The image pipeline, for a provider with a `prepare_command`.
    plan: Option<&'a ImagePlan>,
    cwd: &'a Path,
    interrupt: &'a CancellationToken,
    /// Started when a discovery command runs (see [`WarmUp`]).
    warm: Option<&'a WarmUp>,
    /// Told when a discovery command runs, when it ends and when the image is ready.
    ahead: Option<&'a Ahead>,
}

/// What the discovery phase produced.
struct Found {
    /// Every test to run, each ID once.
    records: Vec<TestRecord>,
    /// The image the sandboxes start from, when one was built.
    prepared: Option<PreparedImage>,
    /// The plan `prepared` was built by, when it is not the run's own: the run's with
    /// the cargo test archive. A rebuild of a gone image goes through it too.
    plan: Option<Arc<ImagePlan>>,
    /// Cargo batches: the framework that reuses the build made for the run (listed for
    /// local sandboxes, archived for remote ones).
    reused: Option<Cargo>,
    /// The known durations by test ID (see [`durations`]).
    durations: FxHashMap<String, f64>,
}

/// The framework of `config`, told about `-k` and `--no-capture`, and whether it applies
/// `-k` itself at discovery; under `--fail-fast`, warns when it has no stop flag.
fn framework_of(config: &Config, options: &RunOptions) -> Result<(Arc<dyn Framework>, bool)> {
    let mut framework = framework::from_config(&config.framework)?;
    let keyword_at_discovery = options
        .keyword
        .as_deref()
        .is_some_and(|expr| framework.select_by_expression(expr));
    if options.no_capture {
        framework.set_no_capture();
    }
    if options.fail_fast && !framework.has_stop_flag() {
        tracing::warn!(
            "--fail-fast: the {} framework has no stop flag; running batches are cancelled at the first failure, \
             but a batch does not stop by itself",
            framework.name()
        );
    }
    Ok((Arc::from(framework), keyword_at_discovery))
}

/// Discovers every group's tests while the image is prepared, the previous report's
/// durations are read and the cargo build batches reuse is made: checked for local
/// sandboxes, archived (before the image) for remote ones (none of these for
/// `--collect-only`). `None` when a signal stopped it.
async fn discover(s: &Start<'_>) -> Result<Option<Found>> {
    crate::status!("Discovering tests... ");
    // The image's progress waits for discovery's line.
    let prepare_log = PrepareLog::held();
    let discovery_done = AtomicBool::new(false);
    let collect_only = s.options.collect_only;
    // The known durations are read while discovery runs (a large report takes a while
    // to scan), and before anything in the output dir changes. A partition is cut by
    // them, also when only listed.
    let durations = (!collect_only || s.options.partition.is_some()).then(|| {
        let report = s.config.report.junit.then(|| s.config.report.junit_path());
        let history = s.config.history.path.clone();
        tokio::task::spawn_blocking(move || Durations::read(report.as_deref(), &history))
    });
    let discovery = async {
        let result = discover_tests(s).await;
        discovery_done.store(true, Ordering::SeqCst);
        if let Some(ahead) = s.ahead {
            ahead.discovered(s);
        }
        prepare_log.release();
        result
    };
    // The build batches reuse, made while discovery runs: listed for local sandboxes
    // beside the image preparation, archived for remote ones before it, since the
    // archive goes into the image.
    let build_and_image = async {
        if !collect_only && provider::reused_build::archives(s.config, s.plan) {
            let archived = provider::reused_build::for_remote_cargo(s.config, s.cwd).await;
            let plan = match (&archived, s.plan) {
                (Some(archive), Some(plan)) => {
                    Some(plan.with_run_copy_dir(archive.copy_dir.clone()))
                }
                _ => None,
            };
            let prepared = match &plan {
                Some(plan) => plan.prepare(&prepare_log, s.interrupt).await?,
                None => prepare_image(s, &prepare_log).await?,
            };
            let reused = archived.map(|archive| archive.framework);
            return Ok((prepared, (reused, plan.map(Arc::new))));
        }
        let reuse = async {
            let reused = if collect_only {
                None
            } else {
                provider::reused_build::for_local_cargo(s.config, s.cwd).await
            };
            Ok::<_, anyhow::Error>(reused)
        };
        let prepare = async {
            let prepared = prepare_image(s, &prepare_log).await?;
            if let Some(ahead) = s.ahead {
                ahead.image_ready(s, &prepared);
            }
            Ok::<_, anyhow::Error>(prepared)
        };
        let (prepared, reused) = tokio::try_join!(prepare, reuse)?;
        Ok((prepared, (reused, None)))
    };
    let joined = tokio::select! {
        result = async {
            tokio::try_join!(discovery, build_and_image)
        } => result,
        () = s.interrupt.cancelled() => {
            crate::statusln!("interrupted");
            return Ok(None);
        }
    };
    let (records, (prepared, (reused, plan))) = match joined {
        Ok(all) => all,
        Err(err) => {
            if !discovery_done.load(Ordering::SeqCst) {
                crate::statusln!("stopped");
            }
            prepare_log.release();
            return if s.interrupt.is_cancelled() {
                Ok(None)
            } else {
                Err(err)
            };
        }
    };
    let durations = match durations {
        // A huge previous report may still be being read: a signal must not wait for it.
        Some(task) => tokio::select! {
            read = task => read.unwrap_or_else(|err| {
                tracing::debug!("reading the known durations failed: {err}");
                Durations::default()
            }),
            () = s.interrupt.cancelled() => return Ok(None),
        },
        None => Durations::default(),
    };
    let durations = durations.into_seconds(&records);
    Ok(Some(Found {
        records,
        prepared,
        plan,
        reused,
        durations,
    }))
}

/// Runs discovery (through the discovery cache unless `--no-cache`), each ID once, and
/// says on the status line what it found.
async fn discover_tests(s: &Start<'_>) -> Result<Vec<TestRecord>> {
    let cacheable =
        s.framework.discovery_is_cacheable() && !s.options.no_cache && !s.options.collect_only;
    let cache = cacheable
        .then(|| DiscoveryCache::in_output_dir(s.cwd, &s.config.report, &s.config.history.path))
        .flatten()
        .map(std::sync::Mutex::new);
    let result = discovery::discover_with_cache(
        s.framework,
        &s.config.groups,
        s.config.offload.max_parallel_collection,
        cache.as_ref(),
        &|| {
            if let Some(warm) = s.warm {
                warm.begin();
            }
            if let Some(ahead) = s.ahead {
                ahead.discovering(s);
            }
        },
    )
    .await
    .map(discovery::dedupe);
    if let (Ok(_), Some(cache)) = (&result, cache) {
        let cache = cache.into_inner().unwrap_or_else(|e| e.into_inner());
        if let Err(err) = cache.save() {
            tracing::warn!("cannot save the discovery cache: {err:#}");
        }
    }
    match &result {
        Ok(records) => crate::statusln!(
            "found {} across {}",
            plural(records.len(), "test"),
            plural(s.config.groups.len(), "group")
        ),
        Err(_) => crate::statusln!("failed"),
    }
    result
}

/// Prepares the sandboxes' image through the plan (cached base image + thin diff, see
/// [`crate::image`]); without one, warns about image settings that cannot apply.
async fn prepare_image(s: &Start<'_>, log: &PrepareLog) -> Result<Option<PreparedImage>> {
    match (s.plan, s.setup.commands()) {
        (Some(plan), _) => plan.prepare(log, s.interrupt).await,
        (None, Some(p)) if !s.options.collect_only => {
            default_provider::warn_image_settings_without_image(p);
            Ok(None)
        }
        _ => Ok(None),
    }
}

/// Runs `records` in sandboxes of `provider`, with the progress display.
async fn execute(
    records: Vec<TestRecord>,
    framework: Arc<dyn Framework>,
    provider: Arc<dyn provider::Provider>,
    settings: &EngineSettings,
    s: &Start<'_>,
) -> EngineOutcome {
    let level = s.options.status_level.unwrap_or(StatusLevel::Slow);
    // Under `--no-capture` the batch's own lines go to the terminal: no bar to tear them.
    let plain = s.options.ci || s.options.no_capture;
    let mut progress = Progress::new(records.len(), plain, false, level);
    let outcome = orchestrator::run(
        records,
        framework,
        provider,
        settings,
        s.interrupt,
        &mut progress,
    )
    .await;
    progress.finish();
    outcome
}

/// Writes the merged report, prints the summary and returns the exit code: the
/// signal's when one stopped the run, an error when the report that was asked for
/// could not be written.
fn report(
    config: &Config,
    setup: &Setup<'_>,
    options: &RunOptions,
    framework: &dyn Framework,
    properties: &[(&str, String)],
    outcome: EngineOutcome,
    signals: &Signals,
) -> Result<i32> {
    let report = &config.report;
    // A report that was asked for and is missing fails the run, whatever the tests did:
    // a CI job must not go green without the file its dashboard reads.
    let report_error = if report.junit {
        let hostname = junit::hostname();
        let run = junit::RunInfo {
            started: SystemTime::now()
                .checked_sub(outcome.elapsed)
                .unwrap_or(SystemTime::UNIX_EPOCH),
            hostname: &hostname,
            framework: Some(framework),
            properties,
        };
        junit::write_merged(&report.junit_path(), &outcome.results, &run).err()
    } else {
        None
    };
    let counts = summary::Counts::from_results(&outcome.results);
    let cost = match (setup.commands(), options.show_estimated_cost) {
        (Some(p), true) => Some(provider::modal::estimated_cost(
            outcome.sandbox_seconds,
            p.cpu_cores,
        )),
        (None, true) => {
            tracing::warn!(
                "--show-estimated-cost: the local provider runs on this machine, there is no cost to estimate"
            );
            None
        }
        (_, false) => None,
    };
    let color = crate::output::use_color(std::io::stdout().is_terminal());
    let mut text = summary::final_lines(&outcome.results, options.final_status_level, color);
    text.push_str(&summary::render(counts, outcome.elapsed, cost, color));
    crate::output::print(&text);

    // The process exits next: freeing tens of thousands of results one by one takes
    // longer (10 ms for 20 000 tests) than the kernel takes to reclaim them at once.
    std::mem::forget(outcome);
    if let Some(signal) = signals.received() {
        if let Some(err) = report_error {
            tracing::error!("{err:#}");
        }
        crate::statusln!("offload: stopped by {}", signal.name());
        return Ok(signal.exit_code());
    }
    if let Some(err) = report_error {
        bail!(
            "{err:#}; the run fails without the report it was asked for (hint: make \
             `report.output_dir` writable and `junit_file` a name no directory has, or set \
             `junit = false` in `[report]`)"
        );
    }
    Ok(counts.exit_code())
}

/// The exit code of a run a signal stopped before it started.
fn interrupted(signals: &Signals) -> i32 {
    signals
        .received()
        .map_or(exit::INTERRUPTED, |s| s.exit_code())
}

/// Applies `--parallel`, `--no-capture`, `--env` and `--copy-dir` to the loaded
/// configuration.
fn apply_flags(config: &mut Config, options: &RunOptions) -> Result<()> {
    if let Some(parallel) = options.parallel {
        if parallel == 0 {
            bail!("`--parallel 0` would run nothing: give at least 1");
        }
        config.offload.max_parallel = parallel;
    }
    if options.no_capture {
        if options.parallel.is_some_and(|p| p > 1) {
            tracing::warn!(
                "--no-capture runs one sandbox at a time, so that its output reads in order; \
                 --parallel is ignored"
            );
        }
        config.offload.max_parallel = 1;
    }
    for pair in &options.env {
        let Some((key, value)) = pair.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            bail!("invalid `--env {pair}`: expected KEY=VALUE, e.g. `--env DEBUG=1`");
        };
        config
            .provider
            .section_mut()
            .env_mut()
            .insert(key.to_owned(), value.to_owned());
    }
    for dir in &options.copy_dirs {
        if dir.split_once(':').is_none() {
            bail!(
                "invalid `--copy-dir {dir}`: expected LOCAL:REMOTE, e.g. `--copy-dir ./data:/app/data`"
            );
        }
    }
    config
        .provider
        .section_mut()
        .add_copy_dirs(&options.copy_dirs);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local_pytest() -> Config {
        crate::config::load_str(
            "[offload]\nmax_parallel = 4\n[provider]\ntype = \"local\"\n\
             [framework]\ntype = \"pytest\"\n[groups.all]\n",
            std::path::Path::new("offload.toml"),
        )
        .unwrap()
        .config
    }

    #[test]
    fn flags_apply_and_bad_values_say_how_to_fix_them() {
        let mut config = local_pytest();
        let options = RunOptions {
            parallel: Some(2),
            env: vec!["A=1".to_owned()],
            ..RunOptions::default()
        };
        apply_flags(&mut config, &options).unwrap();
        assert_eq!(config.offload.max_parallel, 2);
        assert_eq!(
            config
                .provider
                .section_mut()
                .env_mut()
                .get("A")
                .map(String::as_str),
            Some("1")
        );

        let zero = RunOptions {
            parallel: Some(0),
            ..RunOptions::default()
        };
        let err = apply_flags(&mut config, &zero).unwrap_err().to_string();
        assert!(err.contains("--parallel 0"), "{err}");
        let bad_env = RunOptions {
            env: vec!["=x".to_owned()],
            ..RunOptions::default()
        };
        let err = apply_flags(&mut config, &bad_env).unwrap_err().to_string();
        assert!(err.contains("KEY=VALUE"), "{err}");
    }

    #[test]
    fn no_capture_runs_one_sandbox_whatever_parallel_says() {
        let mut config = local_pytest();
        let options = RunOptions {
            parallel: Some(3),
            no_capture: true,
            ..RunOptions::default()
        };
        apply_flags(&mut config, &options).unwrap();
        assert_eq!(config.offload.max_parallel, 1);
    }
}
