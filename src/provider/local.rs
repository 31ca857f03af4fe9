//! The local provider: each sandbox is a child process in its own process group.
