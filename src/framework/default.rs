//! The default framework.
