//! `offload init`: write a new configuration file.

use std::path::Path;

use anyhow::Result;

/// The provider to write a configuration for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderChoice {
    /// Local processes.
    Local,
    /// Shell-command sandboxes.
    Default,
    /// Modal.
    Modal,
}

/// The framework to write a configuration for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameworkChoice {
    /// pytest.
    Pytest,
    /// cargo-nextest.
    Cargo,
    /// Custom commands.
    Default,
}

/// Options of `offload init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Provider.
    pub provider: ProviderChoice,
    /// Framework.
    pub framework: FrameworkChoice,
    /// Overwrite an existing file.
    pub force: bool,
}

/// Writes a configuration to `path`.
pub fn run(path: &Path, options: InitOptions) -> Result<i32> {
    let _ = (path, options);
    anyhow::bail!("`offload init` is not implemented yet")
}
