//! The `Test Results:` summary printed at the end of `offload run`.
