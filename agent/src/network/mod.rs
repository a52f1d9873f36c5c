//! The node's network: what flannel, kube-proxy, CoreDNS and the network policy
//! controller are to K3s, in-process and programmed over netlink (no `ip`, `nft`,
//! `iptables` or CNI binaries).
//!
//! - the pod network: a bridge on the node's podCIDR, a veth and an address per pod
//!   (host-local IPAM kept on disk), and routes to the other nodes' podCIDRs over a
//!   VXLAN overlay or plain routes (host-gw);
//! - Services, as nftables rules in skiff's own table;
//! - cluster DNS, answered from this node's own watch of Services and EndpointSlices.

use ipnet::Ipv4Net;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// How the pod networks of the nodes reach each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A VXLAN overlay (VNI 1, UDP 8472), as flannel's default.
    Vxlan,
    /// Plain routes via the other nodes' addresses (all nodes on one L2 segment).
    HostGw,
    /// No pod network: pods get no address beyond loopback (hostNetwork pods work).
    None,
}

/// What the node's network is told.
#[derive(Debug, Clone)]
pub struct Config {
    /// The node's name.
    pub node_name: String,
    /// The node's address: the overlay's endpoint and the NodePorts' first address.
    pub node_ip: Ipv4Addr,
    /// The node's external address, if it has one (LoadBalancer ingress, NodePorts).
    pub external_ip: Option<Ipv4Addr>,
    /// The interface the overlay runs over (else the one that holds `node_ip`).
    pub interface: Option<String>,
    /// All pods' addresses (`--cluster-cidr`).
    pub cluster_cidr: Ipv4Net,
    /// All Services' cluster addresses (`--service-cidr`).
    pub service_cidr: Ipv4Net,
    /// The cluster DNS address pods are given (`--cluster-dns`).
    pub cluster_dns: Ipv4Addr,
    /// The cluster's DNS domain (`--cluster-domain`).
    pub cluster_domain: String,
    /// How nodes reach each other's pods.
    pub backend: Backend,
    /// skiff's data folder (`agent/network/` below it is the network's).
    pub data_dir: PathBuf,
}

impl Config {
    /// Where the network keeps its state (IPAM).
    pub fn state_dir(&self) -> PathBuf {
        self.data_dir.join("agent").join("network")
    }
}
