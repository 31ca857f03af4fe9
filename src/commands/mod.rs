//! One module per subcommand. Each takes plain options (no clap types) and returns the
//! process exit code. [`selection`] is the test selection `run` and `collect` share.

pub mod apply_diff;
pub mod checkpoint_status;
pub mod collect;
pub mod init;
pub mod logs;
pub mod run;
pub mod selection;
pub mod validate;
