//! Rules that span fields, checked after expansion.
