//! The cargo framework.
