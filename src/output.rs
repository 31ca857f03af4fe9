//! Results on stdout: written whole, and a reader that went away (`offload run | head`)
//! is not an error — the exit code must still tell how the run went. The same holds for
//! the progress and status lines on stderr ([`status!`](crate::status),
//! [`statusln!`](crate::statusln)): `eprint!` would panic on a closed pipe and end the
//! run without cleaning up. [`ellipsize`] keeps values quoted in messages short.
//!
//! While a progress bar is drawn ([`set_active_bar`]), everything written to stderr
//! through here — status lines and the diagnostics of [`StderrWriter`] — is written
//! above it, so no frame of the bar is left behind on the screen.

use std::io::Write;
use std::sync::Mutex;

use indicatif::ProgressBar;

/// The progress bar on the terminal, if one is drawn.
static ACTIVE_BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Sets (or clears, with `None`) the progress bar that stderr output goes above.
pub(crate) fn set_active_bar(bar: Option<ProgressBar>) {
    *ACTIVE_BAR.lock().unwrap_or_else(|e| e.into_inner()) = bar;
}

/// Runs `write` with the progress bar, if any, cleared from the screen, then redraws it.
fn above_bar<T>(write: impl FnOnce() -> T) -> T {
    let bar = ACTIVE_BAR.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match bar {
        Some(bar) => bar.suspend(write),
        None => write(),
    }
}

/// stderr for diagnostics (`tracing`), written above the progress bar.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StderrWriter;

impl Write for StderrWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        above_bar(|| std::io::stderr().lock().write(buf))
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        above_bar(|| std::io::stderr().lock().write_all(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

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

/// Writes to stderr (above the progress bar), ignoring any error: there is nowhere
/// left to report it.
pub(crate) fn stderr(args: std::fmt::Arguments<'_>) {
    above_bar(|| {
        let _ = std::io::stderr().lock().write_fmt(args);
    });
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
