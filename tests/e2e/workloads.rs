//! Deployments, garbage collection and namespace deletion with kubectl on simulated nodes.
