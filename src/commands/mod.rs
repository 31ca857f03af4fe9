//! One module per subcommand. Each takes plain options (no clap types) and returns the
//! process exit code. [`selection`] is the test selection `run` and `collect` share.

pub(crate) mod apply_diff;
pub(crate) mod checkpoint_status;
pub(crate) mod collect;
pub(crate) mod durations;
pub(crate) mod history;
pub(crate) mod init;
pub(crate) mod logs;
pub(crate) mod report_merge;
pub(crate) mod run;
pub(crate) mod selection;
pub(crate) mod validate;
