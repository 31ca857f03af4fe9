//! Configuration: the `offload.toml` schema, environment expansion and validation.
//!
//! Loading is staged: the file as written ([`schema`], checked for syntax, types and
//! unknown keys without touching the environment) becomes a [`Config`] with every
//! string expanded ([`expand`]), defaults filled and values checked ([`validate`]).

pub mod expand;
pub mod load;
pub mod schema;
pub mod validate;

pub use load::{LoadedConfig, load, load_str, load_str_with_env};
pub use schema::*;
