//! Offload, a parallel test runner.
//!
//! A run reads as: [`cli`] parses the command line and dispatches to one function in
//! `commands`; `run` loads the [`config`], discovers tests through a [`framework`],
//! cuts them into batches with the `scheduler`, and hands them to the
//! `orchestrator`, which runs them in sandboxes of a `provider` and feeds the
//! results to the `report`.

#![warn(missing_docs, unreachable_pub)]

// Public: what the binary (`cli::main`) and the black-box tests in `tests/` (framework
// commands run for real, in `tests/cli/collect.rs`) use. Everything else is internal.
mod bundled;
pub mod cli;
mod commands;
pub mod config;
mod date;
mod exit;
pub mod framework;
mod history;
mod image;
mod orchestrator;
mod output;
mod partition;
mod patch;
pub mod process;
mod provider;
mod report;
mod scheduler;
mod signal;
mod template;

// `crate::status!` and `crate::statusln!`, the panic-free `eprint!` and `eprintln!`.
use output::{status, statusln};

/// The configuration of the property tests beside the code: `cases` cases from a fixed
/// seed, so every run (CI's included) tries the same inputs; `PROPTEST_RNG_SEED` and
/// `PROPTEST_CASES` explore others.
#[cfg(test)]
fn proptest_config(cases: u32) -> proptest::test_runner::Config {
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
