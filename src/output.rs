//! Results on stdout: written whole, and a reader that went away (`offload run | head`)
//! is not an error — the exit code must still tell how the run went. The same holds for
//! the progress and status lines on stderr ([`status!`](crate::status),
//! [`statusln!`](crate::statusln)): `eprint!` would panic on a closed pipe and end the
//! run without cleaning up. [`ellipsize`] keeps values quoted in messages short.

use std::io::Write;

/// Whether to colour output for a stream that `is_terminal`: only on a terminal, and
/// never when `NO_COLOR` is set to anything but the empty string.
pub(crate) fn use_color(is_terminal: bool) -> bool {
    is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// `1 test`, `2 tests`: a count and its noun, for messages.
pub(crate) fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Writes `text` to stdout and flushes it. A closed pipe is ignored; any other error
/// is logged, never a panic (unlike `print!`).
pub(crate) fn print(text: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(err) = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        if err.kind() != std::io::ErrorKind::BrokenPipe {
            tracing::warn!("cannot write to stdout: {err}");
        }
    }
}

/// Writes to stderr, ignoring any error: there is nowhere left to report it.
pub(crate) fn stderr(args: std::fmt::Arguments<'_>) {
    let _ = std::io::stderr().lock().write_fmt(args);
}

/// Like `eprint!`, but a closed or broken stderr is ignored instead of a panic.
macro_rules! status {
    ($($arg:tt)*) => {
        $crate::output::stderr(format_args!($($arg)*))
    };
}
pub(crate) use status;

/// Like `eprintln!`, but a closed or broken stderr is ignored instead of a panic.
macro_rules! statusln {
    () => {
        $crate::output::stderr(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use statusln;

/// `text` as a message may quote it: whole when it has at most `max` characters,
/// otherwise its first `max` characters and `…` with how much was cut, so that a 100 kB
/// value cannot bury the message around it.
pub(crate) fn ellipsize(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => std::borrow::Cow::Borrowed(text),
        Some((cut, _)) => {
            std::borrow::Cow::Owned(format!("{}… ({} bytes in all)", &text[..cut], text.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ellipsize;

    #[test]
    fn long_values_are_cut_with_an_ellipsis() {
        assert_eq!(ellipsize("short", 5), "short");
        assert_eq!(ellipsize("abcdef", 3), "abc… (6 bytes in all)");
        // Never inside a character.
        assert_eq!(ellipsize("ééé", 2), "éé… (6 bytes in all)");
        assert_eq!(ellipsize("", 0), "");
    }
}
