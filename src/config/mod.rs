//! Configuration: the `offload.toml` schema, environment expansion and validation.
//!
//! Loading is staged: the file as written (`schema`, checked for syntax, types and
//! unknown keys without touching the environment) becomes a `Config` with every
//! string expanded (`expand`), defaults filled and values checked (`validate`).

mod expand;
mod kinds;
pub(crate) mod load;
mod schema;
mod validate;

pub use crate::framework::{CargoConfig, FrameworkConfig, PytestConfig};
pub(crate) use kinds::{Described, Kind, section_kinds};
pub(crate) use load::load;
#[cfg(test)]
pub(crate) use load::load_str;
pub(crate) use schema::*;
pub(crate) use validate::{check_copy_dirs, check_cpu_cores, check_timeout};
