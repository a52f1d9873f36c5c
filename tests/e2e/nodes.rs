//! Node lifecycle, cordon and drain with PodDisruptionBudgets on simulated nodes.
