//! `skiff-core`: the small shared vocabulary of skiff's server and agent.
//!
//! Start with [`defaults`] (well-known ports, paths and network ranges), then [`pki`]
//! (the cluster CA and the certificates it signs) and [`kubeconfig`] (how clients are
//! told where the API server is). Nothing here talks to the network or runs tasks.

pub mod client;
pub mod defaults;
pub mod join;
pub mod kubeconfig;
pub mod pki;
pub mod tls;
pub mod token;
