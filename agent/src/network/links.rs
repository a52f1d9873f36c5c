//! The node's links, addresses, routes and neighbours, set over rtnetlink: the bridge
//! pods hang off, each pod's veth, the VXLAN device, and the routes, neighbour and
//! forwarding entries to other nodes' pods.
//!
//! A pod's side of its veth is set from a thread that has entered the pod's network
//! namespace (namespaces belong to threads), with a netlink socket opened there.

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAttribute, RouteMessage, RouteMetric, RouteProtocol, RouteScope,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkUnspec, LinkVeth, LinkVxlan, RouteMessageBuilder,
};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The routing protocol number skiff's routes carry, so that the routes it made can be
/// told from everyone else's after a restart.
pub const ROUTE_PROTOCOL: u8 = 101;

/// Errors of netlink operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A netlink request failed.
    #[error("{what}")]
    Netlink {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: rtnetlink::Error,
    },
    /// Opening a netlink socket failed.
    #[error("opening a netlink socket")]
    Socket(#[source] std::io::Error),
    /// Entering a pod's network namespace failed.
    #[error("entering the network namespace {path}")]
    Netns {
        /// The namespace file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A link that must exist does not.
    #[error("no link named {0}")]
    NoLink(String),
}

/// A `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Error {
    let what = what.into();
    move |source| Error::Netlink { what, source }
}

fn errno(e: &rtnetlink::Error) -> i32 {
    match e {
        rtnetlink::Error::NetlinkError(m) => -m.raw_code(),
        _ => 0,
    }
}

const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const ENODEV: i32 = 19;
const EEXIST: i32 = 17;

/// A VXLAN device as the node wants it.
#[derive(Debug, Clone, Copy)]
pub struct Vxlan<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its network identifier.
    pub vni: u32,
    /// Its UDP port.
    pub port: u16,
    /// The node address its packets leave from.
    pub local: Ipv4Addr,
    /// The index of the link its packets leave through.
    pub dev: u32,
    /// Its MTU.
    pub mtu: u32,
    /// Its own address (the network address of the node's pod range, /32).
    pub address: Ipv4Net,
}

/// A link's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Its index.
    pub index: u32,
    /// Its name.
    pub name: String,
    /// Its MTU.
    pub mtu: u32,
    /// Its hardware address.
    pub mac: Vec<u8>,
}

fn link_of(m: &LinkMessage) -> Link {
    let mut l = Link {
        index: m.header.index,
        name: String::new(),
        mtu: 0,
        mac: Vec::new(),
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Mtu(v) => l.mtu = *v,
            LinkAttribute::Address(mac) => l.mac = mac.clone(),
            _ => {}
        }
    }
    l
}

/// A netlink connection in the namespace of the thread that opened it.
#[derive(Clone)]
pub struct Links {
    handle: Handle,
}

impl Links {
    /// Opens a connection; its driver runs on the current tokio runtime.
    pub fn connect() -> Result<Links> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(Error::Socket)?;
        tokio::spawn(conn);
        Ok(Links { handle })
    }

    /// The link named `name`, if there is one.
    pub async fn get(&self, name: &str) -> Result<Option<Link>> {
        let mut s = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match s.try_next().await {
            Ok(m) => Ok(m.as_ref().map(link_of)),
            Err(e) if errno(&e) == ENODEV => Ok(None),
            Err(e) => Err(nl(format!("looking up link {name}"))(e)),
        }
    }

    async fn must(&self, name: &str) -> Result<Link> {
        self.get(name)
            .await?
            .ok_or_else(|| Error::NoLink(name.into()))
    }

    /// The link that holds `ip`.
    pub async fn holding(&self, ip: Ipv4Addr) -> Result<Option<Link>> {
        let mut s = self.handle.address().get().execute();
        let mut index = None;
        while let Some(m) = s.try_next().await.map_err(nl("listing addresses"))? {
            if m.attributes
                .iter()
                .any(|a| matches!(a, AddressAttribute::Address(IpAddr::V4(a)) if *a == ip))
            {
                index = Some(m.header.index);
                break;
            }
        }
        let Some(index) = index else { return Ok(None) };
        let mut s = self.handle.link().get().match_index(index).execute();
        Ok(s.try_next()
            .await
            .map_err(nl("looking up a link by index"))?
            .as_ref()
            .map(link_of))
    }

    /// Makes sure `address` (with its prefix) is on link `index`.
    pub async fn ensure_address(&self, index: u32, address: Ipv4Net) -> Result<()> {
        match self
            .handle
            .address()
            .add(index, IpAddr::V4(address.addr()), address.prefix_len())
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == EEXIST => Ok(()),
            Err(e) => Err(nl(format!("adding address {address}"))(e)),
        }
    }

    /// Makes the bridge `name` (if missing) with `gateway` on it, up, with `mtu`, and
    /// bridged IPv4 passed through netfilter (so Service rules see pod-to-pod traffic).
    pub async fn ensure_bridge(&self, name: &str, gateway: Ipv4Net, mtu: u32) -> Result<Link> {
        let make = LinkBridge::new(name)
            .mtu(mtu)
            .nf_call_iptables(true)
            .up()
            .build();
        self.ensure_link(name, make, mtu, gateway).await
    }

    /// Makes the VXLAN device `v.name` (if missing), up, with `v.address` on it;
    /// returns it (its MAC is the node's VTEP address).
    pub async fn ensure_vxlan(&self, v: &Vxlan<'_>) -> Result<Link> {
        let make = LinkVxlan::new(v.name, v.vni)
            .dev(v.dev)
            .port(v.port)
            .local(v.local)
            .learning(false)
            .mtu(v.mtu)
            .up()
            .build();
        self.ensure_link(v.name, make, v.mtu, v.address).await
    }

    /// Makes link `name` with `make` if it is missing, then sets it up with `mtu` and
    /// `address` on it.
    async fn ensure_link(
        &self,
        name: &str,
        make: LinkMessage,
        mtu: u32,
        address: Ipv4Net,
    ) -> Result<Link> {
        if self.get(name).await?.is_none() {
            match self.handle.link().add(make).execute().await {
                Ok(()) => {}
                Err(e) if errno(&e) == EEXIST => {}
                Err(e) => return Err(nl(format!("making link {name}"))(e)),
            }
        }
        let link = self.must(name).await?;
        let msg = LinkUnspec::new_with_index(link.index).mtu(mtu).up().build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(nl(format!("setting {name} up")))?;
        self.ensure_address(link.index, address).await?;
        Ok(link)
    }

    /// Deletes link `name`; gone already is fine.
    pub async fn delete(&self, name: &str) -> Result<()> {
        let Some(l) = self.get(name).await? else {
            return Ok(());
        };
        match self.handle.link().del(l.index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == ENODEV => Ok(()),
            Err(e) => Err(nl(format!("deleting link {name}"))(e)),
        }
    }

    /// Puts a pod on the bridge: a veth pair with `host_name` on the bridge (hairpin on,
    /// so a pod reaches itself through its Service) and `eth0` in the namespace at
    /// `netns`, holding `address`, with a default route via `gateway` and the routes of
    /// `pod`. Done already is fine; a half-made pair from a crash is made again.
    pub async fn attach(
        &self,
        host_name: &str,
        bridge: u32,
        netns: &Path,
        address: Ipv4Net,
        gateway: Ipv4Addr,
        pod: &PodLinks,
    ) -> Result<()> {
        let mtu = pod.mtu;
        let ns = std::fs::File::open(netns).map_err(|source| Error::Netns {
            path: netns.to_path_buf(),
            source,
        })?;
        if self.get(host_name).await?.is_some() && pod_side_ready(netns, address).await? {
            return Ok(());
        }
        self.delete(host_name).await?;
        let peer = format!("{host_name}p");
        self.delete(&peer).await?;
        let msg = LinkVeth::new(host_name, &peer).mtu(mtu).build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(nl(format!("making veth {host_name}")))?;
        let p = self.must(&peer).await?;
        let msg = LinkUnspec::new_with_index(p.index)
            .setns_by_fd(ns.as_raw_fd())
            .build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(nl("moving the veth into the pod's namespace"))?;
        let h = self.must(host_name).await?;
        let msg = LinkUnspec::new_with_index(h.index)
            .controller(bridge)
            .up()
            .build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(nl(format!("putting {host_name} on the bridge")))?;
        let msg = LinkBridgePort::new(h.index).hairpin(true).build();
        self.handle
            .link()
            .set_port(msg)
            .execute()
            .await
            .map_err(nl(format!("turning hairpin on for {host_name}")))?;
        setup_pod_side(netns, peer, address, gateway, pod.routes.clone()).await
    }

    /// Adds or replaces the route to `dst` via `via`, marked as skiff's; `onlink` for
    /// a gateway that is not on a connected network (the overlay's).
    pub async fn replace_route(
        &self,
        dst: Ipv4Net,
        via: Ipv4Addr,
        oif: Option<u32>,
        onlink: bool,
    ) -> Result<()> {
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst.network(), dst.prefix_len())
            .gateway(via)
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
            .scope(RouteScope::Universe);
        if let Some(i) = oif {
            b = b.output_interface(i);
        }
        if onlink {
            b = b.onlink();
        }
        self.handle
            .route()
            .add(b.build())
            .replace()
            .execute()
            .await
            .map_err(nl(format!("adding the route to {dst} via {via}")))
    }

    /// The destinations of skiff's routes in the main table.
    pub async fn routes(&self) -> Result<Vec<Ipv4Net>> {
        let filter = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let mut s = self.handle.route().get(filter).execute();
        let mut out = Vec::new();
        while let Some(m) = s.try_next().await.map_err(nl("listing routes"))? {
            if m.header.protocol != RouteProtocol::Other(ROUTE_PROTOCOL) {
                continue;
            }
            if let Some(dst) = route_destination(&m) {
                out.push(dst);
            }
        }
        Ok(out)
    }

    /// Deletes skiff's route to `dst`; gone already is fine.
    pub async fn delete_route(&self, dst: Ipv4Net) -> Result<()> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst.network(), dst.prefix_len())
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
            .build();
        match self.handle.route().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), ENOENT | ESRCH) => Ok(()),
            Err(e) => Err(nl(format!("deleting the route to {dst}"))(e)),
        }
    }

    /// Adds or replaces the permanent neighbour `ip` → `mac` on link `index`.
    pub async fn replace_neighbour(&self, index: u32, ip: Ipv4Addr, mac: &[u8]) -> Result<()> {
        self.handle
            .neighbours()
            .add(index, IpAddr::V4(ip))
            .link_layer_address(mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(nl(format!("adding the neighbour {ip}")))
    }

    /// Deletes the neighbour `ip` on link `index`; gone already is fine.
    pub async fn delete_neighbour(&self, index: u32, ip: Ipv4Addr) -> Result<()> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.ifindex = index;
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        match self.handle.neighbours().del(m).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), ENOENT | ESRCH) => Ok(()),
            Err(e) => Err(nl(format!("deleting the neighbour {ip}"))(e)),
        }
    }

    /// Adds or replaces the forwarding entry sending frames for `mac` on the VXLAN
    /// device `index` to the node at `dst`.
    pub async fn replace_fdb(&self, index: u32, mac: &[u8], dst: Ipv4Addr) -> Result<()> {
        self.handle
            .neighbours()
            .add_bridge(index, mac)
            .destination(IpAddr::V4(dst))
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(nl(format!("adding the forwarding entry to {dst}")))
    }

    /// Deletes the forwarding entry for `mac` on device `index`; gone already is fine.
    pub async fn delete_fdb(&self, index: u32, mac: &[u8], dst: Ipv4Addr) -> Result<()> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = index;
        m.header.flags = NeighbourFlags::Own;
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)));
        match self.handle.neighbours().del(m).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), ENOENT | ESRCH) => Ok(()),
            Err(e) => Err(nl(format!("deleting the forwarding entry to {dst}"))(e)),
        }
    }
}

fn route_destination(m: &RouteMessage) -> Option<Ipv4Net> {
    use rtnetlink::packet_route::route::RouteAddress;
    m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(ip)) => {
            Ipv4Net::new(*ip, m.header.destination_prefix_length).ok()
        }
        _ => None,
    })
}

/// Runs `f` with a netlink connection opened inside the network namespace `netns`, on
/// a thread of its own that entered it.
async fn in_netns<T, F, Fut>(netns: &Path, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(Links) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T>>,
{
    let path = netns.to_path_buf();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let run = || -> Result<T> {
            let file = std::fs::File::open(&path).map_err(|source| Error::Netns {
                path: path.clone(),
                source,
            })?;
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                Error::Netns {
                    path: path.clone(),
                    source: e.into(),
                }
            })?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(Error::Socket)?;
            rt.block_on(async move { f(Links::connect()?).await })
        };
        let _ = tx.send(run());
    });
    rx.await.map_err(|_| Error::Netns {
        path: netns.to_path_buf(),
        source: std::io::Error::other("the namespace's thread ended without an answer"),
    })?
}

/// How a pod's side is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodLinks {
    /// The veth's MTU: the node's interface's.
    pub mtu: u32,
    /// Routes via the gateway with a smaller MTU (the overlay's), besides the default.
    pub routes: Vec<(Ipv4Net, u32)>,
}

/// Whether the pod's `eth0` is up with `address`.
async fn pod_side_ready(netns: &Path, address: Ipv4Net) -> Result<bool> {
    in_netns(netns, move |links| async move {
        let Some(eth0) = links.get("eth0").await? else {
            return Ok(false);
        };
        let mut s = links
            .handle
            .address()
            .get()
            .set_link_index_filter(eth0.index)
            .execute();
        while let Some(m) = s
            .try_next()
            .await
            .map_err(nl("listing the pod's addresses"))?
        {
            if m.attributes.iter().any(
                |a| matches!(a, AddressAttribute::Address(IpAddr::V4(ip)) if *ip == address.addr()),
            ) {
                return Ok(true);
            }
        }
        Ok(false)
    })
    .await
}

async fn setup_pod_side(
    netns: &Path,
    peer: String,
    address: Ipv4Net,
    gateway: Ipv4Addr,
    routes: Vec<(Ipv4Net, u32)>,
) -> Result<()> {
    in_netns(netns, move |links| async move {
        // A half-made eth0 from a crash goes first.
        links.delete("eth0").await?;
        let p = links.must(&peer).await?;
        let msg = LinkUnspec::new_with_index(p.index).name("eth0").build();
        links
            .handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(nl("naming the pod's interface eth0"))?;
        links.ensure_address(p.index, address).await?;
        let msg = LinkUnspec::new_with_index(p.index).up().build();
        links
            .handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(nl("setting the pod's eth0 up"))?;
        let default = Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0).unwrap_or_default();
        for (dst, mtu) in std::iter::once((default, 0)).chain(routes) {
            let mut route = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(dst.network(), dst.prefix_len())
                .gateway(gateway)
                .output_interface(p.index)
                .build();
            if mtu > 0 {
                route
                    .attributes
                    .push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)]));
            }
            match links.handle.route().add(route).execute().await {
                Ok(()) => {}
                Err(e) if errno(&e) == EEXIST => {}
                Err(e) => {
                    return Err(nl(format!("adding the pod's route to {dst} via {gateway}"))(e))
                }
            }
        }
        Ok(())
    })
    .await
}
