//! Providers: where batches run.
//!
//! A [`Provider`] creates [`Sandbox`]es; a sandbox runs commands (streaming their
//! output, with a timeout and a cancel signal), hands result files back and is
//! destroyed at the end.
//!
//! Adding a provider is one file and one line: the file holds the provider's
//! `[provider]` section type, which implements [`ProviderSection`] (its checks, its
//! no-effect warnings, the [`Setup`] it runs with) and declares its `type` name and
//! `offload init` text in a [`ProviderInfo`]; the line names both in the list below. A
//! provider driven by shell commands (as `modal` is) needs nothing more; one with
//! sandboxes of a new sort implements [`Provider`] and [`Sandbox`] and adds a [`Setup`]
//! variant, and the compiler names what must decide.

use anyhow::Result;
use indexmap::IndexMap;

use crate::config::section_kinds;

section_kinds! {
    /// `[provider]`, selected by `type`: where batches run.
    pub(crate) enum ProviderConfig: ProviderSection, info ProviderInfo;
    /// The kinds of provider: the one list of valid `[provider] type` values.
    pub(crate) enum ProviderKind, visited by ProviderVisitor;
    mod local::LocalProviderConfig as Local;
    pub(crate) mod default::DefaultProviderConfig as Default;
    pub(crate) mod modal::ModalProviderConfig as Modal;
}

pub(crate) mod default_image;
pub(crate) mod reused_build;
mod running;
mod sandbox;
mod select;

pub(crate) use default::DefaultProviderConfig;
pub(crate) use local::LocalProviderConfig;
pub(crate) use sandbox::{
    InputFilesNotWritten, OutputLine, Provider, SANDBOX_LOST_EXIT_CODE, Sandbox, SandboxLost,
};
pub(crate) use select::{Setup, from_config, local_settings};

/// What a provider's `[provider]` section decides for itself.
pub(crate) trait ProviderSection: std::fmt::Debug + Send + Sync {
    /// Checks the rules across its fields that its types cannot say, with a message
    /// that names the field and the fix.
    fn check(&self) -> Result<()> {
        Ok(())
    }

    /// Why no sandbox image is built as configured (so image settings have no effect),
    /// or `None` when one is.
    fn no_image(&self) -> Option<&'static str>;

    /// Warnings for its own fields that are accepted but have no effect as configured,
    /// each naming the field and why.
    fn no_effect(&self) -> Vec<String> {
        Vec::new()
    }

    /// The environment of test processes (`--env` adds to it).
    fn env_mut(&mut self) -> &mut IndexMap<String, String>;

    /// Adds `--copy-dir` entries (`LOCAL:REMOTE`), or warns why they have no effect.
    fn add_copy_dirs(&mut self, dirs: &[String]);

    /// The form the run works with: local processes, or shell-command sandboxes. Fails
    /// only when the commands cannot be made.
    fn setup(&self) -> Result<Setup<'_>>;
}

/// What a provider kind declares with no section at hand.
#[derive(Debug)]
pub(crate) struct ProviderInfo {
    /// The `type` value, canonical spelling.
    pub(crate) name: &'static str,
    /// Other spellings of the `type` value.
    pub(crate) aliases: &'static [&'static str],
    /// One line for `offload init --help`.
    pub(crate) summary: &'static str,
    /// The commented `[provider]` section `offload init` writes.
    pub(crate) template: &'static str,
    /// Sandboxes are processes on this machine, in the working tree: no image, no
    /// sandbox roots, and `max_parallel` is bounded by this machine's CPUs.
    pub(crate) local: bool,
}

impl ProviderConfig {
    /// Whether its sandboxes are processes on this machine (see [`ProviderInfo::local`]).
    pub(crate) fn is_local(&self) -> bool {
        self.kind().info().local
    }
}
