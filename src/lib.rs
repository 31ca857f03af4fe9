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
