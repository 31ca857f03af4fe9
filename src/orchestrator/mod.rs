//! The run engine: a shared queue of batches, one worker per sandbox, reactive retries,
//! verdicts, cancellation.
