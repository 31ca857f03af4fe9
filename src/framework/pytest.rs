//! The pytest framework.
