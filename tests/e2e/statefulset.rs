//! StatefulSets on simulated nodes.
