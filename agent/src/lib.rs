//! `skiff-agent`: the node. It joins a server with a token and talks to it only over
//! HTTPS. The kubelet, pod network, service proxy and cluster DNS come with the node
//! issue; what is here now is [`sim`], simulated nodes that exercise the control plane
//! at scale without running containers.

pub mod sim;
