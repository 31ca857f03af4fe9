//! Environment expansion of config strings: `${VAR}`, `${VAR:-default}`, `$$`.
//!
//! [`expand`] is a pure function: the environment is a lookup passed in, so the rules can
//! be tested without touching the process environment. The rules, scanned left to right:
//!
//! - `${VAR}` is the value of `VAR`; an unset `VAR` is an error.
//! - `${VAR:-default}` is the value of `VAR`, or the literal `default` when `VAR` is unset
//!   or empty (as in the shell). The default is not expanded further.
//! - `$$` is a literal `$`.
//! - A `$` followed by anything else stays as written: `$HOME` is not expanded.
//!
//! This module knows nothing of config fields; the loader adds the dotted field name to
//! the errors ([`ExpandError`]) it gets from here.

use thiserror::Error;

/// Why a string could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(super) enum ExpandError {
    /// `${NAME}` where `NAME` is not set.
    #[error("environment variable `{name}` is not set")]
    Missing {
        /// The variable.
        name: String,
    },
    /// `${}` or `${:-default}`.
    #[error("empty variable name in `${{}}`")]
    EmptyName,
    /// A name with characters other than ASCII letters, digits and `_`.
    #[error("invalid environment variable name `{name}` (names use letters, digits and `_`)")]
    InvalidName {
        /// The name as written.
        name: String,
    },
    /// `${` without its closing `}`.
    #[error("unclosed variable reference `{rest}` (missing `}}`)")]
    Unclosed {
        /// The text from `${` to the end of the string.
        rest: String,
    },
}

/// Expands every `${VAR}` and `${VAR:-default}` in `input`, and `$$` to `$`.
///
/// `lookup` returns the value of an environment variable, or `None` when it is unset.
pub(super) fn expand(
    input: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(close) = body.find('}') else {
                return Err(ExpandError::Unclosed {
                    rest: rest[dollar..].to_owned(),
                });
            };
            let reference = &body[..close];
            let (name, default) = match reference.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (reference, None),
            };
            check_name(name)?;
            match (lookup(name), default) {
                (Some(value), None) => out.push_str(&value),
                (Some(value), Some(_)) if !value.is_empty() => out.push_str(&value),
                (_, Some(default)) => out.push_str(default),
                (None, None) => {
                    return Err(ExpandError::Missing {
                        name: name.to_owned(),
                    });
                }
            }
            rest = &body[close + 1..];
        } else {
            // A lone `$` (or `$NAME`) is literal text, not a reference.
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn check_name(name: &str) -> Result<(), ExpandError> {
    if name.is_empty() {
        return Err(ExpandError::EmptyName);
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(ExpandError::InvalidName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOME" => Some("/home/u".to_owned()),
            "TOKEN" => Some("s3cret".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_as_documented() {
        let cases: &[(&str, &str)] = &[
            ("plain", "plain"),
            ("", ""),
            ("${TOKEN}", "s3cret"),
            ("a ${TOKEN} b ${HOME}", "a s3cret b /home/u"),
            ("${TOKEN}${TOKEN}", "s3crets3cret"),
            ("${UNSET:-fallback}", "fallback"),
            ("${UNSET:-}", ""),
            ("${EMPTY:-fallback}", "fallback"),
            ("${EMPTY}", ""),
            ("${TOKEN:-fallback}", "s3cret"),
            ("${UNSET:-a:-b}", "a:-b"),
            ("${UNSET:-${TOKEN}", "${TOKEN"),
            ("${UNSET:-x y}", "x y"),
            ("$$", "$"),
            ("$$$$", "$$"),
            ("$${TOKEN}", "${TOKEN}"),
            ("$HOME", "$HOME"),
            ("cost $5", "cost $5"),
            ("end $", "end $"),
            ("$", "$"),
            ("a$b$$c", "a$b$c"),
            ("ünï ${TOKEN} çödé", "ünï s3cret çödé"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, env).as_deref(), Ok(*want), "input {input:?}");
        }
    }

    #[test]
    fn reports_bad_references() {
        let cases: &[(&str, ExpandError)] = &[
            (
                "${NOPE}",
                ExpandError::Missing {
                    name: "NOPE".into(),
                },
            ),
            ("${}", ExpandError::EmptyName),
            ("${:-x}", ExpandError::EmptyName),
            (
                "x ${TOKEN",
                ExpandError::Unclosed {
                    rest: "${TOKEN".into(),
                },
            ),
            ("${A B}", ExpandError::InvalidName { name: "A B".into() }),
            (
                "${FOO-bar}",
                ExpandError::InvalidName {
                    name: "FOO-bar".into(),
                },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, env).as_ref(), Err(want), "input {input:?}");
        }
    }

    #[test]
    fn error_messages_name_the_offender() {
        let err = expand("${NOPE}", env).unwrap_err().to_string();
        assert_eq!(err, "environment variable `NOPE` is not set");
        let err = expand("${}", env).unwrap_err().to_string();
        assert_eq!(err, "empty variable name in `${}`");
        let err = expand("${AB", env).unwrap_err().to_string();
        assert_eq!(err, "unclosed variable reference `${AB` (missing `}`)");
    }
}
