//! DaemonSets on simulated nodes.
