//! Batching: cuts the discovered tests into batches, longest first when durations are known.
