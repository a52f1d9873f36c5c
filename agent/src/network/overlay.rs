//! The routes to other nodes' pods: what each node publishes in its Node object, and
//! what this node must program to reach the others, as a pure decision.
//!
//! Over VXLAN (VNI 1, UDP 8472), each node's VXLAN device holds the network address of
//! its pod range (`10.42.1.0/32`) and a MAC that it publishes. To reach node B's range,
//! node A routes it via B's VXLAN address on its own VXLAN device (onlink), knows B's
//! VXLAN address resolves to B's MAC (a permanent neighbour) and sends B's MAC's frames
//! to B's node address (a forwarding entry). With host-gw, the range is routed via B's
//! node address directly.

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The annotation naming a node's backend (`vxlan` or `host-gw`).
pub const BACKEND: &str = "skiff.io/network-backend";
/// The annotation holding a node's VXLAN MAC.
pub const VTEP_MAC: &str = "skiff.io/vtep-mac";
/// The annotation holding the address other nodes reach this node's pods through.
pub const PUBLIC_IP: &str = "skiff.io/public-ip";

/// How this node reaches one other node's pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its pod range.
    pub range: Ipv4Net,
    /// Its node address (the tunnel's far end, or the host-gw gateway).
    pub ip: Ipv4Addr,
    /// Its VXLAN MAC (VXLAN only).
    pub mac: Option<[u8; 6]>,
}

impl Peer {
    /// The address of its VXLAN device: its range's network address.
    pub fn vtep(&self) -> Ipv4Addr {
        self.range.network()
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The peers `me` must reach with `backend` (`vxlan` or `host-gw`), by node name: every
/// other node that has a range, an address, and (for VXLAN) a published MAC, and runs
/// the same backend.
pub fn peers(nodes: &[&Node], me: &str, backend: &str) -> BTreeMap<String, Peer> {
    let mut out = BTreeMap::new();
    for n in nodes {
        let name = n.metadata.name.clone().unwrap_or_default();
        if name == me || n.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(range) = n
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_deref())
            .and_then(|c| c.parse::<Ipv4Net>().ok())
        else {
            continue;
        };
        let ann = n.metadata.annotations.clone().unwrap_or_default();
        if ann.get(BACKEND).map(String::as_str) != Some(backend) {
            continue;
        }
        let Some(ip) = ann.get(PUBLIC_IP).and_then(|s| s.parse::<Ipv4Addr>().ok()) else {
            continue;
        };
        let mac = ann.get(VTEP_MAC).and_then(|m| parse_mac(m));
        if backend == "vxlan" && mac.is_none() {
            continue;
        }
        out.insert(name, Peer { range, ip, mac });
    }
    out
}

/// What to change to go from the peers programmed (`had`) to those wanted (`want`): the
/// peers to remove (gone or changed), then those to add.
pub fn changes(
    had: &BTreeMap<String, Peer>,
    want: &BTreeMap<String, Peer>,
) -> (Vec<Peer>, Vec<Peer>) {
    let remove = had
        .iter()
        .filter(|(k, p)| want.get(*k) != Some(*p))
        .map(|(_, p)| p.clone())
        .collect();
    let add = want
        .iter()
        .filter(|(k, p)| had.get(*k) != Some(*p))
        .map(|(_, p)| p.clone())
        .collect();
    (remove, add)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, cidr: Option<&str>, ann: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                annotations: Some(
                    ann.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: cidr.map(Into::into),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn peers_are_the_other_nodes_that_published_enough() {
        let full = [
            (BACKEND, "vxlan"),
            (PUBLIC_IP, "192.168.9.2"),
            (VTEP_MAC, "0a:00:00:00:00:02"),
        ];
        let nodes = [
            node("me", Some("10.42.0.0/24"), &full),
            node("b", Some("10.42.1.0/24"), &full),
            node("no-range", None, &full),
            node("no-mac", Some("10.42.3.0/24"), &full[..2]),
            node(
                "host-gw",
                Some("10.42.4.0/24"),
                &[(BACKEND, "host-gw"), (PUBLIC_IP, "192.168.9.4")],
            ),
        ];
        let refs: Vec<&Node> = nodes.iter().collect();
        let p = peers(&refs, "me", "vxlan");
        assert_eq!(p.keys().collect::<Vec<_>>(), vec!["b"]);
        assert_eq!(p["b"].vtep(), Ipv4Addr::new(10, 42, 1, 0));
        assert_eq!(p["b"].mac, Some([10, 0, 0, 0, 0, 2]));
        let p = peers(&refs, "me", "host-gw");
        assert_eq!(p.keys().collect::<Vec<_>>(), vec!["host-gw"]);
    }

    #[test]
    fn a_changed_peer_is_removed_then_added() {
        let p = |ip: [u8; 4]| Peer {
            range: "10.42.1.0/24".parse().unwrap(),
            ip: Ipv4Addr::from(ip),
            mac: None,
        };
        let had = BTreeMap::from([
            ("b".to_string(), p([1, 1, 1, 1])),
            ("c".into(), p([3, 3, 3, 3])),
        ]);
        let want = BTreeMap::from([
            ("b".to_string(), p([2, 2, 2, 2])),
            ("c".into(), p([3, 3, 3, 3])),
        ]);
        let (remove, add) = changes(&had, &want);
        assert_eq!(remove, vec![p([1, 1, 1, 1])]);
        assert_eq!(add, vec![p([2, 2, 2, 2])]);
        assert_eq!(changes(&want, &want), (vec![], vec![]));
    }

    #[test]
    fn macs_round_trip() {
        assert_eq!(parse_mac("0a:1B:00:ff:00:02"), Some([10, 27, 0, 255, 0, 2]));
        assert_eq!(parse_mac("0a:1b:00"), None);
        assert_eq!(parse_mac("0a:1b:00:ff:00:02:03"), None);
        assert_eq!(format_mac(&[10, 27, 0, 255, 0, 2]), "0a:1b:00:ff:00:02");
    }
}
