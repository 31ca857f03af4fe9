//! Black-box tests: each runs the built `offload` binary against a real project built in
//! a temporary directory.

mod apply_diff;
mod apply_diff_differential;
mod bad_input;
mod collect;
mod config;
mod default_provider;
mod discovery_cache;
mod history;
mod images;
mod junit_report;
mod large;
mod live;
mod logs;
mod messages;
mod modal_provider;
mod modal_script;
mod outcomes;
mod partition;
mod prepare;
mod resident;
mod run;
mod selection;
mod ssh_provider;
mod support;
mod terminal;
