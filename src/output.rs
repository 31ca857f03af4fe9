//! Results on stdout: written whole, and a reader that went away (`offload run | head`)
//! is not an error — the exit code must still tell how the run went.

use std::io::Write;

/// Writes `text` to stdout and flushes it. A closed pipe is ignored; any other error
/// is logged, never a panic (unlike `print!`).
pub fn print(text: &str) {
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
