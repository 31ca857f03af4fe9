//! Providers: where batches run.
//!
//! A [`Provider`] creates [`Sandbox`]es; a sandbox runs commands (streaming their
//! output, with a timeout and a cancel signal), hands result files back and is
//! destroyed at the end. Adding a provider means one file implementing these two traits,
//! a variant of `config::ProviderKind`, and the arms the compiler then asks for in
//! [`select`] (the one constructor, [`from_config`]).

pub mod default;
pub mod default_image;
pub mod local;
pub mod modal;
pub mod reused_build;
pub mod running;
mod sandbox;
pub mod select;

pub use sandbox::{OutputLine, Provider, Sandbox};
pub use select::{Setup, from_config, local_settings};
