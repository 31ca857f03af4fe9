//! Black-box tests: each runs the built `offload` binary against a real project built in
//! a temporary directory.

mod apply_diff;
mod collect;
mod config;
mod default_provider;
mod images;
mod large;
mod logs;
mod modal_provider;
mod modal_script;
mod run;
mod support;
