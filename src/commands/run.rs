//! `offload run`: discover, schedule, execute, report.
//!
//! Reads top to bottom: load the config and apply the flags, discover every group,
//! prepare the output directory, build the provider, hand everything to the
//! [`orchestrator`](crate::orchestrator), write the merged report, print the summary
//! and return the exit code.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::config::{Config, DefaultProviderConfig, FrameworkConfig, ProviderConfig};
use crate::exit;
use crate::framework::cache::DiscoveryCache;
use crate::framework::cargo::{Cargo, ReusedBuild};
use crate::framework::{self, TestRecord};
use crate::orchestrator::progress::Progress;
use crate::orchestrator::{self, EngineSettings};
use crate::output::plural;
use crate::process::{self, CapturedOutput, CommandSpec, ExitOutcome};
use crate::provider;
use crate::provider::default::{self as default_provider, PrepareLog};
use crate::provider::default_image::{ImagePlan, opts_into_thin_diffs};
use crate::report::{junit, summary};
use crate::signal::Signals;

/// Price of one CPU-second of a Modal sandbox in USD (non-preemptible, per core).
/// `--show-estimated-cost` prices the CPU-seconds of `default` and `modal` sandboxes
/// (each sandbox's lifetime × `cpu_cores`) with it.
pub const MODAL_USD_PER_CPU_SECOND: f64 = 0.000_039_42;

/// Options of `offload run`.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Overrides `max_parallel`.
    pub parallel: Option<usize>,
    /// Discover and print only.
    pub collect_only: bool,
    /// `--copy-dir LOCAL:REMOTE` values, unparsed.
    pub copy_dirs: Vec<String>,
    /// `--env KEY=VALUE` values, unparsed.
    pub env: Vec<String>,
    /// Skip the image cache.
    pub no_cache: bool,
    /// Stop at the first failure.
    pub fail_fast: bool,
    /// Print the cost estimate.
    pub show_estimated_cost: bool,
    /// Plain progress lines.
    pub ci: bool,
}

/// Runs the test suite configured at `config_path`.
pub async fn run(config_path: &Path, options: RunOptions) -> Result<i32> {
    let loaded = crate::config::load(config_path)?;
    let mut config = loaded.config;
    apply_flags(&mut config, &options)?;
    let setup = provider::Setup::of(&config.provider)?;
    let sandbox_config = setup.commands();

    let signals = Signals::install().context("cannot install the SIGINT/SIGTERM handlers")?;
    let framework: Arc<dyn framework::Framework> =
        Arc::from(framework::from_config(&config.framework)?);
    if options.fail_fast && !framework.has_stop_flag() {
        tracing::warn!(
            "--fail-fast: the {} framework has no stop flag; running batches are cancelled at the first failure, \
             but a batch does not stop by itself",
            framework.name()
        );
    }

    crate::status!("Discovering tests... ");
    let interrupt = signals.token();
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    // The image is prepared while discovery runs; its progress waits for discovery's line.
    let prepare_log = PrepareLog::held();
    let discovery_done = std::sync::atomic::AtomicBool::new(false);
    let plan: Option<Arc<ImagePlan>> = match sandbox_config {
        Some(p) if !options.collect_only && p.prepare_command.is_some() => Some(Arc::new(
            image_plan(&config, p, config_path, &cwd, &options),
        )),
        _ => None,
    };
    let prepare = async {
        match (sandbox_config, &plan) {
            // The image pipeline: cached base image + thin diff (see crate::image).
            (_, Some(plan)) => plan.prepare(&prepare_log, &interrupt).await,
            (Some(p), None) if !options.collect_only => {
                default_provider::warn_image_settings_without_image(p);
                Ok(None)
            }
            _ => Ok(None),
        }
    };
    // The previous report's durations are read while discovery runs (a large report
    // takes a while to scan), and before anything in the output dir changes.
    let durations = (!options.collect_only).then(|| {
        let path = config.report.junit_path();
        tokio::task::spawn_blocking(move || junit::read_durations(&path))
    });
    let cache = (framework.discovery_is_cacheable() && !options.no_cache && !options.collect_only)
        .then(|| open_discovery_cache(&cwd, &config.report))
        .flatten()
        .map(std::sync::Mutex::new);
    let discovery = async {
        let result = framework::discovery::discover_with_cache(
            framework.as_ref(),
            &config.groups,
            config.offload.max_parallel_collection,
            cache.as_ref(),
        )
        .await
        .map(dedupe);
        if let (Ok(_), Some(cache)) = (&result, &cache) {
            let cache = cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(err) = cache.save() {
                tracing::warn!("cannot save the discovery cache: {err:#}");
            }
        }
        discovery_done.store(true, std::sync::atomic::Ordering::SeqCst);
        match &result {
            Ok(records) => crate::statusln!(
                "found {} across {}",
                plural(records.len(), "test"),
                plural(config.groups.len(), "group")
            ),
            Err(_) => crate::statusln!("failed"),
        }
        prepare_log.release();
        result
    };
    // Cargo batches in local sandboxes reuse one build check, made while discovery runs.
    let reuse = async {
        let reused = if options.collect_only {
            None
        } else {
            local_reused_build(&config, &cwd).await
        };
        Ok::<_, anyhow::Error>(reused)
    };
    let joined = tokio::select! {
        result = async { tokio::try_join!(discovery, prepare, reuse) } => result,
        () = interrupt.cancelled() => {
            crate::statusln!("interrupted");
            return Ok(signals.received().map_or(exit::INTERRUPTED, |s| s.exit_code()));
        }
    };
    let (records, prepared, reused) = match joined {
        Ok(all) => all,
        Err(err) => {
            if !discovery_done.load(std::sync::atomic::Ordering::SeqCst) {
                crate::statusln!("stopped");
            }
            prepare_log.release();
            if interrupt.is_cancelled() {
                return Ok(signals
                    .received()
                    .map_or(exit::INTERRUPTED, |s| s.exit_code()));
            }
            return Err(err);
        }
    };

    if options.collect_only {
        crate::commands::collect::print_listing(&records, config.groups.keys().map(String::as_str));
        return Ok(exit::SUCCESS);
    }
    if records.is_empty() {
        crate::output::print("No tests to run.\n");
        return Ok(exit::SUCCESS);
    }

    let report = &config.report;
    // Collect-only runs returned above, so the task exists here.
    let durations = match durations {
        // A huge previous report may still be being read: a signal must not wait for it.
        Some(task) => tokio::select! {
            read = task => read.unwrap_or_else(|err| {
                tracing::debug!("reading the previous durations failed: {err}");
                Default::default()
            }),
            () = interrupt.cancelled() => {
                return Ok(signals.received().map_or(exit::INTERRUPTED, |s| s.exit_code()));
            }
        },
        None => Default::default(),
    };
    prepare_output_dir(&report.output_dir)?;

    let provider = provider::from_config(&setup, &config, prepared, plan, &cwd, &interrupt)?;
    let settings = EngineSettings {
        parallel: config.offload.max_parallel,
        timeout: Duration::from_secs(config.offload.test_timeout_secs),
        fail_fast: options.fail_fast,
        output_dir: report.output_dir.clone(),
        durations,
    };
    let mut progress = Progress::new(records.len(), options.ci, false);
    let batch_framework: Arc<dyn framework::Framework> = match reused {
        Some(cargo) => Arc::new(cargo),
        None => Arc::clone(&framework),
    };
    let outcome = orchestrator::run(
        records,
        batch_framework,
        provider,
        &settings,
        &interrupt,
        &mut progress,
    )
    .await;
    progress.finish();

    // A report that was asked for and is missing fails the run, whatever the tests did:
    // a CI job must not go green without the file its dashboard reads.
    let report_error = if report.junit {
        junit::write_merged(&report.junit_path(), &outcome.results, outcome.elapsed).err()
    } else {
        None
    };

    let counts = summary::Counts::from_results(&outcome.results);
    let cost = match (sandbox_config, options.show_estimated_cost) {
        (Some(p), true) => Some(estimated_cost(outcome.sandbox_seconds, p.cpu_cores)),
        (None, true) => {
            tracing::warn!(
                "--show-estimated-cost: the local provider runs on this machine, there is no cost to estimate"
            );
            None
        }
        (_, false) => None,
    };
    let color = crate::output::use_color(std::io::stdout().is_terminal());
    let exit_code = counts.exit_code();
    crate::output::print(&summary::render(counts, outcome.elapsed, cost, color));

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
    Ok(exit_code)
}

/// The discovery cache in `{output_dir}/cache/`, fingerprinting the project at `cwd`
/// without the files Offload itself writes.
fn open_discovery_cache(
    cwd: &Path,
    report: &crate::config::ReportConfig,
) -> Option<DiscoveryCache> {
    let out = &report.output_dir;
    let skip = vec![
        out.join("logs"),
        out.join("junit-parts"),
        out.join("cache"),
        out.join(&report.junit_file),
    ];
    DiscoveryCache::open(out.join("cache").join("discovery.json"), cwd, &skip)
}

/// `(USD, CPU-seconds)` of sandboxes that lived `sandbox_seconds` in all, with
/// `cpu_cores` each, at [`MODAL_USD_PER_CPU_SECOND`].
fn estimated_cost(sandbox_seconds: f64, cpu_cores: f64) -> (f64, f64) {
    let cpu_seconds = sandbox_seconds * cpu_cores;
    (cpu_seconds * MODAL_USD_PER_CPU_SECOND, cpu_seconds)
}

/// The image pipeline of this run for provider config `p`. Warns about settings that
/// only apply to thin diffs when its `prepare_command` does not opt into them.
fn image_plan(
    config: &Config,
    p: &DefaultProviderConfig,
    config_path: &Path,
    cwd: &Path,
    options: &RunOptions,
) -> ImagePlan {
    let thin_diff = opts_into_thin_diffs(p);
    if !thin_diff {
        let unused = [
            (config.checkpoint.is_some(), "`[checkpoint]`"),
            (
                config.offload.post_patch_cmd.is_some(),
                "`[offload] post_patch_cmd`",
            ),
        ];
        for (_, setting) in unused.iter().filter(|(set, _)| *set) {
            tracing::warn!(
                "{setting} has no effect: it applies to thin-diff builds, and `prepare_command` \
                 does not opt into them, so every run is a full build of the working tree \
                 (hint: set `thin_diff = true` in `[provider]` once your prepare builds from \
                 OFFLOAD_BASE_IMAGE and OFFLOAD_PATCH_FILE, or name `{{base_image}}` and \
                 `{{patch_file}}` in it)"
            );
        }
    }
    ImagePlan {
        config: p.clone(),
        init_cmd: config.offload.sandbox_init_cmd.clone(),
        post_patch_cmd: config.offload.post_patch_cmd.clone().filter(|_| thin_diff),
        sandbox_repo_root: config
            .offload
            .sandbox_repo_root
            .clone()
            .or_else(|| config.offload.sandbox_project_root.clone()),
        cwd: cwd.to_path_buf(),
        options: crate::image::PrepareOptions {
            repo_dir: cwd.to_path_buf(),
            config_path: config_path.to_path_buf(),
            build_inputs: config.checkpoint.as_ref().map(|c| c.build_inputs.clone()),
            no_cache: options.no_cache,
            refresh_cache: false,
            has_post_patch_cmd: thin_diff && config.offload.post_patch_cmd.is_some(),
            thin_diff,
            remote: "origin".to_owned(),
        },
    }
}

/// Applies `--parallel`, `--env` and `--copy-dir` to the loaded configuration.
fn apply_flags(config: &mut Config, options: &RunOptions) -> Result<()> {
    if let Some(parallel) = options.parallel {
        if parallel == 0 {
            bail!("`--parallel 0` would run nothing: give at least 1");
        }
        config.offload.max_parallel = parallel;
    }
    for pair in &options.env {
        let Some((key, value)) = pair.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            bail!("invalid `--env {pair}`: expected KEY=VALUE, e.g. `--env DEBUG=1`");
        };
        config
            .provider
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
    match &mut config.provider {
        ProviderConfig::Local(_) => {
            if !options.copy_dirs.is_empty() {
                tracing::warn!(
                    "--copy-dir has no effect with the local provider: its sandboxes run in the working directory itself"
                );
            }
        }
        ProviderConfig::Default(p) => {
            if !options.copy_dirs.is_empty() && p.prepare_command.is_none() {
                tracing::warn!(
                    "--copy-dir has no effect: no image is built without a `prepare_command`"
                );
            }
            p.copy_dirs.extend(options.copy_dirs.iter().cloned())
        }
        ProviderConfig::Modal(p) => p.copy_dirs.extend(options.copy_dirs.iter().cloned()),
    }
    Ok(())
}

/// Keeps the first record of each ID: a test selected by two groups runs once, in the
/// first group (with the larger retry count of the two).
fn dedupe(mut records: Vec<TestRecord>) -> Vec<TestRecord> {
    // (first record, later record with the same ID), found without copying any ID.
    let mut first: rustc_hash::FxHashMap<&str, usize> = rustc_hash::FxHashMap::default();
    first.reserve(records.len());
    let mut repeats: Vec<(usize, usize)> = Vec::new();
    for (i, record) in records.iter().enumerate() {
        match first.entry(&record.id) {
            std::collections::hash_map::Entry::Occupied(e) => repeats.push((*e.get(), i)),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(i);
            }
        }
    }
    drop(first);
    if repeats.is_empty() {
        return records;
    }
    let mut warned: HashSet<(&str, &str)> = HashSet::new();
    let mut drop_at = vec![false; records.len()];
    for &(i, later) in &repeats {
        let (kept, again) = (&records[i], &records[later]);
        if warned.insert((&kept.group, &again.group)) {
            tracing::warn!(
                "groups `{}` and `{}` select the same tests (e.g. `{}`); each runs once, in group `{}`",
                kept.group,
                again.group,
                again.id,
                kept.group
            );
        }
        drop_at[later] = true;
    }
    for (i, later) in repeats {
        records[i].retry_count = records[i].retry_count.max(records[later].retry_count);
    }
    records
        .into_iter()
        .zip(drop_at)
        .filter_map(|(record, dropped)| (!dropped).then_some(record))
        .collect()
}

/// Creates `{output_dir}/logs` and `{output_dir}/junit-parts` and removes the files a
/// previous run wrote there. Nothing else in the directory is touched.
fn prepare_output_dir(output_dir: &Path) -> Result<()> {
    for sub in ["logs", "junit-parts"] {
        let dir = output_dir.join(sub);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create `{}`", dir.display()))?;
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("cannot list `{}`", dir.display()))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            if is_ours(sub, &name.to_string_lossy()) {
                let path = entry.path();
                if let Err(err) = std::fs::remove_file(&path) {
                    tracing::warn!("cannot remove the old `{}`: {err}", path.display());
                }
            }
        }
    }
    Ok(())
}

/// Whether a file in `{output_dir}/{sub}` is one Offload writes.
fn is_ours(sub: &str, name: &str) -> bool {
    let Some(rest) = name.strip_prefix("batch-") else {
        return false;
    };
    let (number, ext) = rest.split_once('.').unwrap_or((rest, ""));
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    match sub {
        "logs" => matches!(
            ext,
            "success" | "failure" | "error" | "cancelled" | "running"
        ),
        _ => ext == "xml",
    }
}

/// For cargo batches in local sandboxes: the build checked and listed once for the
/// whole run, where and as the sandboxes run commands, so that batches skip cargo (see
/// [`Cargo::reuse_build`]). `None` for other frameworks and providers, and when
/// listing fails — the batches then build for themselves and report any error.
async fn local_reused_build(config: &Config, cwd: &Path) -> Option<Cargo> {
    let (FrameworkConfig::Cargo(cargo_config), ProviderConfig::Local(local)) =
        (&config.framework, &config.provider)
    else {
        return None;
    };
    let cargo = Cargo::new(cargo_config);
    let settings = provider::local_settings(config, local, cwd);
    let dir = cwd.join(&config.report.output_dir).join("cache");
    if let Err(err) = std::fs::create_dir_all(&dir) {
        tracing::debug!("no reused build: cannot create `{}`: {err}", dir.display());
        return None;
    }
    let [list, metadata] = cargo.reuse_build_commands().map(|spec| CommandSpec {
        cwd: Some(settings.working_dir.clone()),
        env: settings.env.clone(),
        ..spec
    });
    let (list_output, metadata_output) = tokio::join!(
        process::capture(&list, None),
        process::capture(&metadata, None)
    );
    let binaries_metadata = save_stdout(&list, list_output, &dir.join("nextest-binaries.json"))?;
    let cargo_metadata = save_stdout(&metadata, metadata_output, &dir.join("cargo-metadata.json"))?;
    Some(cargo.reuse_build(ReusedBuild {
        binaries_metadata,
        cargo_metadata,
    }))
}

/// Writes the stdout of `spec`, when it succeeded, to `path` and returns the path;
/// otherwise says why at debug level.
fn save_stdout(spec: &CommandSpec, output: Result<CapturedOutput>, path: &Path) -> Option<String> {
    let output = match output {
        Ok(out) if out.outcome == ExitOutcome::Exited(0) => out,
        Ok(out) => {
            tracing::debug!(
                "no reused build: `{}` {}",
                spec.display(),
                framework::outcome_text(out.outcome)
            );
            return None;
        }
        Err(err) => {
            tracing::debug!("no reused build: {err:#}");
            return None;
        }
    };
    match std::fs::write(path, output.stdout) {
        Ok(()) => Some(path.to_string_lossy().into_owned()),
        Err(err) => {
            tracing::debug!("no reused build: cannot write `{}`: {err}", path.display());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_offloads_own_files_are_cleaned() {
        assert!(is_ours("logs", "batch-3.failure"));
        assert!(is_ours("logs", "batch-12.running"));
        assert!(is_ours("junit-parts", "batch-0.xml"));
        assert!(!is_ours("logs", "batch-x.failure"));
        assert!(!is_ours("logs", "notes.txt"));
        assert!(!is_ours("logs", "batch-1.txt"));
        assert!(!is_ours("junit-parts", "batch-1.failure"));
    }

    #[test]
    fn cost_is_lifetime_times_cores_at_the_modal_rate() {
        let (usd, cpu) = estimated_cost(100.0, 0.125);
        assert_eq!(cpu, 12.5);
        assert!((usd - 12.5 * 0.000_039_42).abs() < 1e-12, "{usd}");
        assert_eq!(estimated_cost(0.0, 2.0), (0.0, 0.0));
    }

    #[test]
    fn a_test_in_two_groups_runs_once() {
        let rec = |id: &str, group: &str, retry_count| TestRecord {
            id: id.to_owned(),
            group: group.to_owned(),
            retry_count,
            schedule_individual: false,
            ignored: false,
        };
        let out = dedupe(vec![
            rec("a", "g1", 0),
            rec("b", "g1", 0),
            rec("a", "g2", 3),
        ]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].group, "g1");
        assert_eq!(out[0].retry_count, 3);
    }
}
