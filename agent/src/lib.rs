//! `skiff-agent`: the node. It talks to the server only over HTTPS, even when both run
//! in one process. Start at [`kubelet`]: the node's registration and heartbeat and the
//! pods bound to it, run as real containers. [`sim`] holds simulated nodes that exercise
//! the control plane at scale without running containers.

pub mod join;
pub mod kubelet;
pub mod network;
pub mod sim;
