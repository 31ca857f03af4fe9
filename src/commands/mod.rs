//! One module per subcommand. Each takes plain options (no clap types) and returns the
//! process exit code.

pub(crate) mod apply_diff;
pub(crate) mod checkpoint_status;
pub(crate) mod collect;
pub(crate) mod init;
pub(crate) mod logs;
#[allow(unreachable_pub)]
pub(crate) mod run;
pub(crate) mod validate;
