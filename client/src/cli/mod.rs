//! The binary's own modules (not part of the `bandit` library): the command
//! line, and the checks `bandit feedback` makes before it sends.

pub mod args;
pub mod feedback;
