//! The scheduler's placement decisions and messages on simulated nodes.
