//! The node: kubelet, pod network, service proxy and cluster DNS. It joins a server
//! with a token and talks to it only over HTTPS. Not built yet: this crate is the seam the
//! agent issue fills.
