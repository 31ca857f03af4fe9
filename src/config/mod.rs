//! Configuration: the `offload.toml` schema, environment expansion and validation.
//!
//! Loading is staged: the file as written (`schema`, checked for syntax, types and
//! unknown keys without touching the environment) becomes a `Config` with every
//! string expanded (`expand`), defaults filled and values checked (`validate`).

mod expand;
pub(crate) mod load;
mod schema;
mod validate;

pub(crate) use load::load;
#[cfg(test)]
pub(crate) use load::load_str;
pub(crate) use schema::*;
pub use schema::{CargoConfig, FrameworkConfig, PytestConfig};
