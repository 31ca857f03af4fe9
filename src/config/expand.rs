//! Environment expansion of config strings: `${VAR}`, `${VAR:-default}`, `$$`.
