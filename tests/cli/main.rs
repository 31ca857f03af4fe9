//! Black-box tests: each runs the built `offload` binary against a real project built in
//! a temporary directory.

mod collect;
mod config;
mod logs;
mod modal_script;
mod run;
mod support;
