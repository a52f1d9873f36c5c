//! NetworkPolicies as nftables rules in skiff's own table `ip skiff-policy`, apart
//! from the Services' table `ip skiff` so neither ever touches the other's objects.
//!
//! Semantics are upstream's: a pod running on this node that some policy selects for
//! Ingress (Egress) only receives (sends) what the ingress (egress) rules of the
//! policies selecting it allow, their union; other pods are not isolated.
//! Established and related traffic always passes, and so does traffic from the node's
//! own addresses (kubelet probes).
//!
//! [`Policy::sync`] computes the wanted rules ([`desired`], pure; start reading there
//! for the table's layout), diffs them against what it programmed last with the
//! proxy's [`plan`](crate::network::proxy::plan) and applies the difference in one
//! atomic batch. The first sync after a start replaces the whole table.

pub mod rules;

#[cfg(test)]
mod kernel_tests;
#[cfg(test)]
mod tests;

use crate::network::nft::{self, Netlink};
use crate::network::proxy::{Parts, ProgrammedTable, Ruleset};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use std::net::Ipv4Addr;
use std::sync::Arc;

pub use rules::{desired, port_blocks};

/// The name of the policy table (family `ip`).
pub const TABLE: &str = "skiff-policy";

/// The rules wanted in the policy table: the same shape as the Services' table.
pub type PolicyRuleset = Ruleset;

/// What can go wrong programming NetworkPolicies.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel refused the batch; nothing of it was applied.
    #[error("programming the network policy rules ({messages} messages)")]
    Apply {
        /// How many messages the batch had.
        messages: usize,
        /// Why.
        #[source]
        source: nft::Error,
    },
    /// Removing the policy table failed.
    #[error("removing the nftables table {TABLE}")]
    Remove(#[source] nft::Error),
    /// Asking whether the table is still there failed.
    #[error("looking for the nftables table {TABLE}")]
    Check(#[source] nft::Error),
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What policy enforcement knows about the node it runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeScope {
    /// This node's name: pods with this `spec.nodeName` are enforced.
    pub node_name: String,
    /// The node's own addresses (its address, the bridge's gateway address), whose
    /// traffic to pods always passes.
    pub host_addrs: Vec<Ipv4Addr>,
}

/// What one [`Policy::sync`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Local pods isolated for ingress.
    pub ingress_isolated: usize,
    /// Local pods isolated for egress.
    pub egress_isolated: usize,
    /// Messages sent (0: nothing changed).
    pub messages: usize,
    /// Whether the whole table was replaced (the first sync).
    pub full: bool,
}

/// Programs NetworkPolicies into the policy table through a [`Netlink`].
#[derive(Debug)]
pub struct Policy<N: Netlink> {
    table: ProgrammedTable<N>,
    node: NodeScope,
}

impl<N: Netlink> Policy<N> {
    /// Enforcement that has programmed nothing yet: its first sync replaces the table.
    pub fn new(netlink: N, node: NodeScope) -> Policy<N> {
        Policy {
            table: ProgrammedTable::new(netlink, TABLE),
            node,
        }
    }

    /// The node scope.
    pub fn node(&self) -> &NodeScope {
        &self.node
    }

    /// The netlink it applies through (tests read a fake's record here).
    pub fn netlink(&mut self) -> &mut N {
        &mut self.table.netlink
    }

    /// Brings the table to what `policies` want for `pods` in `namespaces`, in one
    /// atomic batch touching only what changed since the last sync. On error nothing
    /// changed and the next sync retries the same difference.
    pub fn sync(
        &mut self,
        pods: &[Arc<Pod>],
        namespaces: &[Arc<Namespace>],
        policies: &[Arc<NetworkPolicy>],
    ) -> Result<SyncStats> {
        let want = desired(&self.node, pods, namespaces, policies);
        let count = |map: &str| want.elements.get(map).map_or(0, |e| e.len());
        let (ingress_isolated, egress_isolated) =
            (count(rules::INGRESS_PODS), count(rules::EGRESS_PODS));
        let full = !self.table.is_programmed();
        let messages = self
            .table
            .apply(Parts::single(want))
            .map_err(|r| Error::Apply {
                messages: r.messages,
                source: r.source,
            })?;
        let stats = SyncStats {
            ingress_isolated,
            egress_isolated,
            messages,
            full,
        };
        tracing::debug!(
            ingress_isolated = stats.ingress_isolated,
            egress_isolated = stats.egress_isolated,
            messages = stats.messages,
            full = stats.full,
            "network policy rules synced"
        );
        Ok(stats)
    }

    /// Whether the policy table was removed from outside since the last sync; if so,
    /// the next sync builds it whole again.
    pub fn lost(&mut self) -> Result<bool> {
        self.table.lost().map_err(Error::Check)
    }

    /// Deletes the policy table, lifting all isolation; no error if it is absent.
    pub fn remove(&mut self) -> Result<()> {
        self.table.remove().map_err(Error::Remove)?;
        Ok(())
    }
}
