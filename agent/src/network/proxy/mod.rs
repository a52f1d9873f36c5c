//! Services as nftables rules in skiff's table `ip skiff`: ClusterIPs, NodePorts,
//! LoadBalancer and external addresses, session affinity, traffic policies, the
//! cluster DNS address, and the masquerading the pod network needs.
//!
//! [`Proxy::sync`] takes the Services and EndpointSlices as the reflector stores hold
//! them, computes the wanted rules ([`ruleset::desired_reusing`], pure: a Service
//! port unchanged since the last sync keeps its part of the table as it was), diffs
//! them against what it programmed last ([`ruleset::plan`], pure: kept parts are
//! passed over) and applies the difference in one atomic batch. Start reading at
//! [`ruleset`] for the table's layout.

pub mod ruleset;
pub mod services;

#[cfg(test)]
mod kernel_tests;
#[cfg(test)]
mod tests;

use crate::network::nft::{self, Netlink};
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

pub use ruleset::{desired, desired_reusing, plan, Parts, ProgrammedTable, Ruleset};
pub use services::{service_ports, stale_udp, stale_udp_at_start, Endpoint, ServicePort};

/// The name of skiff's nftables table (family `ip`).
pub const TABLE: &str = "skiff";

/// What can go wrong programming Services.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel refused the batch; nothing of it was applied.
    #[error("programming the service rules ({messages} messages)")]
    Apply {
        /// How many messages the batch had.
        messages: usize,
        /// Why.
        #[source]
        source: nft::Error,
    },
    /// Removing skiff's table failed.
    #[error("removing the nftables table {TABLE}")]
    Remove(#[source] nft::Error),
    /// Asking whether the table is still there failed.
    #[error("looking for the nftables table {TABLE}")]
    Check(#[source] nft::Error),
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the proxy knows about the node it runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeContext {
    /// This node's name (endpoints' `nodeName` for the Local traffic policies).
    pub node_name: String,
    /// The addresses NodePorts answer on; empty: every local address but loopback
    /// (`fib daddr type local`).
    pub node_ips: Vec<Ipv4Addr>,
    /// All pods' addresses.
    pub cluster_cidr: Ipv4Net,
    /// All Services' cluster addresses.
    pub service_cidr: Ipv4Net,
    /// The pods' bridge (`skiff0`).
    pub bridge: String,
    /// The cluster DNS address, and this node's DNS server that answers for it.
    pub dns: Option<(Ipv4Addr, SocketAddrV4)>,
}

/// What one [`Proxy::sync`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Service ports with rules wanted.
    pub service_ports: usize,
    /// Messages sent (0: nothing changed).
    pub messages: usize,
    /// Whether the whole table was replaced (the first sync).
    pub full: bool,
}

/// Programs Services into skiff's table through a [`Netlink`].
#[derive(Debug)]
pub struct Proxy<N: Netlink> {
    table: ProgrammedTable<N>,
    ctx: NodeContext,
    /// The Service ports of the last sync, to tell which UDP flows a change leaves
    /// stale.
    ports: Option<Vec<ServicePort>>,
}

impl<N: Netlink> Proxy<N> {
    /// A proxy that has programmed nothing yet: its first sync replaces the table.
    pub fn new(netlink: N, ctx: NodeContext) -> Proxy<N> {
        Proxy {
            table: ProgrammedTable::new(netlink, TABLE),
            ctx,
            ports: None,
        }
    }

    /// The node context.
    pub fn context(&self) -> &NodeContext {
        &self.ctx
    }

    /// The netlink the proxy applies through (tests read a fake's record here).
    pub fn netlink(&mut self) -> &mut N {
        &mut self.table.netlink
    }

    /// Brings the table to what `services` and `slices` want, in one atomic batch
    /// that touches only what changed since the last sync. On error nothing changed
    /// and the next sync retries the same difference.
    pub fn sync(
        &mut self,
        services: &[Arc<Service>],
        slices: &[Arc<EndpointSlice>],
    ) -> Result<SyncStats> {
        let ports = service_ports(&self.ctx, services, slices);
        // A Service port unchanged since the last sync keeps its part as it was.
        let last = self.ports.as_deref().zip(self.table.programmed());
        let want = desired_reusing(&self.ctx, &ports, last);
        let full = !self.table.is_programmed();
        let messages = self.table.apply(want).map_err(|r| Error::Apply {
            messages: r.messages,
            source: r.source,
        })?;
        let stats = SyncStats {
            service_ports: ports.len(),
            messages,
            full,
        };
        tracing::debug!(
            service_ports = stats.service_ports,
            messages = stats.messages,
            full = stats.full,
            "service rules synced"
        );
        // After a start nothing is known of what the flows were made with: every UDP
        // flow to a Service that its endpoints do not answer goes. From then on, each
        // change's stale UDP flows go.
        let stale = match &self.ports {
            Some(old) => stale_udp(&self.ctx, old, &ports),
            None => stale_udp_at_start(&self.ctx, &ports),
        };
        if !stale.is_empty() {
            match self.table.netlink.forget_udp(&stale) {
                Ok(n) => tracing::debug!(flows = n, "forgot stale UDP flows"),
                Err(e) => tracing::warn!(error = %e, "forgetting stale UDP flows"),
            }
        }
        self.ports = Some(ports);
        Ok(stats)
    }

    /// Whether skiff's table was removed from outside since the last sync; if so, the
    /// next sync builds it whole again.
    pub fn lost(&mut self) -> Result<bool> {
        self.table.lost().map_err(Error::Check)
    }

    /// Deletes skiff's table (clean shutdown, uninstall); no error if it is absent.
    pub fn remove(&mut self) -> Result<()> {
        self.table.remove().map_err(Error::Remove)?;
        self.ports = None;
        Ok(())
    }
}
