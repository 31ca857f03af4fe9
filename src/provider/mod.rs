//! Providers: where batches run.
//!
//! A [`Provider`] creates [`Sandbox`]es; a sandbox runs commands (streaming their
//! output, with a timeout and a cancel signal), hands result files back and is
//! destroyed at the end. Adding a provider means one file implementing these two traits,
//! a variant of `config::ProviderKind`, and the arms the compiler then asks for in
//! [`select`] (the one constructor, [`from_config`]).

pub(crate) mod default;
pub(crate) mod default_image;
mod local;
pub(crate) mod modal;
pub(crate) mod reused_build;
mod running;
mod sandbox;
mod select;

pub(crate) use sandbox::{OutputLine, Provider, Sandbox};
pub(crate) use select::{Setup, from_config, local_settings};
