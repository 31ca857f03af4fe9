//! Offload, a parallel test runner.
//!
//! A run reads as: [`cli`] parses the command line and dispatches to one function in
//! [`commands`]; `run` loads the [`config`], discovers tests through a [`framework`],
//! cuts them into batches with the [`scheduler`], and hands them to the
//! [`orchestrator`], which runs them in sandboxes of a [`provider`] and feeds the
//! results to the [`report`].

pub mod bundled;
pub mod cli;
pub mod commands;
pub mod config;
pub mod exit;
pub mod framework;
pub mod image;
pub mod orchestrator;
pub mod output;
pub mod patch;
pub mod process;
pub mod provider;
pub mod report;
pub mod scheduler;
pub mod signal;
pub mod template;

/// The configuration of the property tests beside the code: `cases` cases from a fixed
/// seed, so every run (CI's included) tries the same inputs; `PROPTEST_RNG_SEED` and
/// `PROPTEST_CASES` explore others.
#[cfg(test)]
pub(crate) fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    use proptest::test_runner::{Config, RngSeed};
    let defaults = Config::default();
    let cases = if std::env::var_os("PROPTEST_CASES").is_some() {
        defaults.cases
    } else {
        cases
    };
    let rng_seed = match defaults.rng_seed {
        RngSeed::Random => RngSeed::Fixed(0x00ff_10ad),
        set => set,
    };
    Config {
        cases,
        rng_seed,
        ..defaults
    }
}
