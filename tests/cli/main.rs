//! Black-box tests: each runs the built `offload` binary against a real project built in
//! a temporary directory.

mod collect;
mod config;
mod images;
mod logs;
mod run;
mod support;
