//! The node's network: what flannel, kube-proxy, CoreDNS and the network policy
//! controller are to K3s, in-process and programmed over netlink (no `ip`, `nft`,
//! `iptables` or CNI binaries).
//!
//! - the pod network: a bridge on the node's podCIDR, a veth and an address per pod
//!   (host-local IPAM kept on disk), and routes to the other nodes' podCIDRs over a
//!   VXLAN overlay or plain routes (host-gw);
//! - Services, as nftables rules in skiff's own table;
//! - cluster DNS, answered from this node's own watch of Services and EndpointSlices.

pub mod dns;
pub mod ipam;
pub mod links;
pub mod nft;
pub mod overlay;
pub mod policy;
pub mod proxy;
#[cfg(test)]
mod testns;

use futures::StreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use links::Links;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The bridge pods hang off.
pub const BRIDGE: &str = "skiff0";
/// The VXLAN device.
pub const VXLAN: &str = "skiff.1";
/// The VXLAN network identifier.
pub const VNI: u32 = 1;
/// The VXLAN UDP port.
pub const VXLAN_PORT: u16 = 8472;
/// What VXLAN adds to each packet (outer Ethernet, IP, UDP and VXLAN headers).
const VXLAN_OVERHEAD: u32 = 50;

/// Errors of the node's network.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A netlink operation failed.
    #[error(transparent)]
    Links(#[from] links::Error),
    /// The address store failed.
    #[error("pod addresses")]
    Ipam(#[from] ipam::Error),
    /// An API request failed.
    #[error("{what}")]
    Api {
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// A kernel setting could not be written.
    #[error("setting {path}")]
    Sysctl {
        /// The file under /proc/sys.
        path: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The interface named by `--node-interface`, or holding the node address, is
    /// missing.
    #[error("no interface {0}")]
    NoInterface(String),
    /// The Service rules could not be programmed.
    #[error("service rules")]
    Proxy(#[from] proxy::Error),
    /// The NetworkPolicy rules could not be programmed.
    #[error("network policy rules")]
    Policy(#[from] policy::Error),
    /// The nftables socket could not be opened.
    #[error("opening the nftables socket")]
    Nft(#[from] nft::Error),
    /// Pods cannot be given addresses yet.
    #[error("the pod network is not ready yet (waiting for this node's pod range)")]
    NotReady,
}

/// A `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

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
    /// The resolver configuration that cluster DNS forwards with and that pods with
    /// `dnsPolicy: Default` get (`--resolv-conf`); else the host's, as upstream picks it.
    pub resolv_conf: Option<PathBuf>,
}

impl Config {
    /// Where the network keeps its state (IPAM).
    pub fn state_dir(&self) -> PathBuf {
        self.data_dir.join("agent").join("network")
    }
}

impl Backend {
    /// The name nodes publish (`vxlan`, `host-gw`, `none`).
    pub fn name(self) -> &'static str {
        match self {
            Backend::Vxlan => "vxlan",
            Backend::HostGw => "host-gw",
            Backend::None => "none",
        }
    }

    /// The backend named `s`.
    pub fn parse(s: &str) -> Option<Backend> {
        match s {
            "vxlan" => Some(Backend::Vxlan),
            "host-gw" => Some(Backend::HostGw),
            "none" => Some(Backend::None),
            _ => None,
        }
    }
}

/// What pods are attached with, once the node has its range.
struct PodNet {
    links: Links,
    ipam: ipam::Ipam,
    bridge: u32,
    pod: links::PodLinks,
}

/// The node's network: [`Network::run`] sets it up and keeps the routes to other nodes
/// current; the kubelet attaches pods to it.
pub struct Network {
    config: Config,
    ready: tokio::sync::watch::Sender<Option<Arc<PodNet>>>,
}

/// How pods are attached on a node whose interface has `iface_mtu` and whose overlay
/// has `overlay_mtu`: the veth and the bridge at the interface's MTU, so pods on one
/// node talk in full-size frames, and the route to `cluster_cidr` (other nodes' pods,
/// across the overlay) at the overlay's. Everything else, the service CIDR included,
/// takes the default route at the interface's MTU: a Service's endpoint on another
/// node is reached through the overlay after DNAT, where the proxy's `mss-clamp`
/// lowers the connection's MSS, and an oversized datagram gets "fragmentation
/// needed" from this node itself, not from a router on the way.
fn pod_links(iface_mtu: u32, overlay_mtu: u32, cluster_cidr: Ipv4Net) -> links::PodLinks {
    let routes = if overlay_mtu < iface_mtu {
        vec![(cluster_cidr, overlay_mtu)]
    } else {
        Vec::new()
    };
    links::PodLinks {
        mtu: iface_mtu,
        routes,
    }
}

/// The name of the host side of pod `uid`'s veth: short enough for a link name (15
/// bytes), the same at every start.
pub fn veth_name(uid: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(uid.as_bytes());
    format!("veth{}", &hex::encode(digest)[..10])
}

impl Network {
    /// A network not yet set up.
    pub fn new(config: Config) -> Arc<Network> {
        Arc::new(Network {
            config,
            ready: tokio::sync::watch::Sender::new(None),
        })
    }

    /// What it was told.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The host's resolver configuration as pods and cluster DNS use it: the file
    /// `--resolv-conf` names, else `/etc/resolv.conf` (systemd-resolved's real file when
    /// that one only names its stub). Unreadable counts as empty.
    pub fn host_resolv(&self) -> String {
        match &self.config.resolv_conf {
            Some(path) => std::fs::read_to_string(path).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "cannot read --resolv-conf");
                String::new()
            }),
            None => dns::resolv::host_resolv_conf(
                Path::new(dns::resolv::ETC_RESOLV_CONF),
                Path::new(dns::resolv::SYSTEMD_RESOLV_CONF),
            ),
        }
    }

    /// Gives pod `uid`, whose network namespace is `netns`, its address and its link to
    /// the bridge; the same address again for a pod that has one. `None` without a pod
    /// network (`--network-backend=none`).
    pub async fn attach(&self, uid: &str, netns: &Path) -> Result<Option<Ipv4Addr>> {
        if self.config.backend == Backend::None {
            return Ok(None);
        }
        let Some(net) = self.ready.borrow().clone() else {
            return Err(Error::NotReady);
        };
        let ipam = net.ipam.clone();
        let owner = uid.to_string();
        let ip = tokio::task::spawn_blocking(move || ipam.allocate(&owner))
            .await
            .map_err(|e| ipam::Error::Io {
                what: "allocating",
                path: PathBuf::new(),
                source: std::io::Error::other(e.to_string()),
            })??;
        let range = net.ipam.range();
        let address = Ipv4Net::new(ip, range.prefix_len()).unwrap_or(range);
        net.links
            .attach(
                &veth_name(uid),
                net.bridge,
                netns,
                address,
                net.ipam.gateway(),
                &net.pod,
            )
            .await?;
        Ok(Some(ip))
    }

    /// Frees pod `uid`'s address (its veth went with its namespace).
    pub fn release(&self, uid: &str) {
        let Some(net) = self.ready.borrow().clone() else {
            return;
        };
        if let Err(e) = net.ipam.release(uid) {
            tracing::warn!(pod = uid, error = %e, "freeing the pod's address");
        }
    }

    /// Sets the network up once the node has its pod range, then keeps the routes to the
    /// other nodes' pods current until `cancel` fires. Pods whose folder is gone from
    /// `pods_dir` lose the addresses they held.
    pub async fn run(
        self: Arc<Self>,
        client: kube::Client,
        pods_dir: PathBuf,
        cancel: CancellationToken,
    ) -> Result<()> {
        if self.config.backend == Backend::None {
            cancel.cancelled().await;
            return Ok(());
        }
        let nodes: Api<Node> = Api::all(client);
        let Some(range) = self.own_range(&nodes, &cancel).await? else {
            return Ok(());
        };
        let links = Links::connect()?;
        let iface = match &self.config.interface {
            Some(name) => links
                .get(name)
                .await?
                .ok_or_else(|| Error::NoInterface(name.clone()))?,
            None => links
                .holding(self.config.node_ip)
                .await?
                .ok_or_else(|| Error::NoInterface(format!("holding {}", self.config.node_ip)))?,
        };
        let mtu = match self.config.backend {
            Backend::Vxlan => iface.mtu.saturating_sub(VXLAN_OVERHEAD),
            _ => iface.mtu,
        };
        let pod = pod_links(iface.mtu, mtu, self.config.cluster_cidr);
        sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
        let ipam = ipam::Ipam::open(&self.config.state_dir().join("ipam"), range)?;
        let gateway = Ipv4Net::new(ipam.gateway(), range.prefix_len()).unwrap_or(range);
        let bridge = links.ensure_bridge(BRIDGE, gateway, iface.mtu).await?;
        let freed = ipam.collect(|uid| pods_dir.join(uid).exists())?;
        if !freed.is_empty() {
            tracing::info!(addresses = ?freed, "freed the addresses of pods that are gone");
        }
        let mut annotations = BTreeMap::from([
            (
                overlay::BACKEND.to_string(),
                self.config.backend.name().to_string(),
            ),
            (
                overlay::PUBLIC_IP.to_string(),
                self.config.node_ip.to_string(),
            ),
        ]);
        let vxlan = if self.config.backend == Backend::Vxlan {
            let dev = links
                .ensure_vxlan(&links::Vxlan {
                    name: VXLAN,
                    vni: VNI,
                    port: VXLAN_PORT,
                    local: self.config.node_ip,
                    dev: iface.index,
                    mtu,
                    address: Ipv4Net::new(range.network(), 32).unwrap_or(range),
                })
                .await?;
            annotations.insert(overlay::VTEP_MAC.into(), overlay::format_mac(&dev.mac));
            Some(dev.index)
        } else {
            None
        };
        let patch = serde_json::json!({"metadata": {"annotations": annotations}});
        nodes
            .patch(
                &self.config.node_name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(|source| Error::Api {
                what: "publishing the node's network annotations",
                source,
            })?;
        self.ready.send_replace(Some(Arc::new(PodNet {
            links: links.clone(),
            ipam,
            bridge: bridge.index,
            pod,
        })));
        tracing::info!(pod_cidr = %range, backend = self.config.backend.name(), mtu, "pod network ready");
        let services = tokio::spawn(self.clone().follow_services(
            nodes.clone().into_client(),
            ipam_gateway(range),
            cancel.clone(),
        ));
        let policies = tokio::spawn(self.clone().follow_policies(
            nodes.clone().into_client(),
            ipam_gateway(range),
            cancel.clone(),
        ));
        let result = self.follow_peers(&nodes, &links, vxlan, cancel).await;
        services.abort();
        policies.abort();
        result
    }

    /// Waits for this node's pod range.
    async fn own_range(
        &self,
        nodes: &Api<Node>,
        cancel: &CancellationToken,
    ) -> Result<Option<Ipv4Net>> {
        let config =
            watcher::Config::default().fields(&format!("metadata.name={}", self.config.node_name));
        let mut stream = std::pin::pin!(watcher::watcher(nodes.clone(), config));
        loop {
            let event = tokio::select! {
                () = cancel.cancelled() => return Ok(None),
                e = stream.next() => e,
            };
            let node = match event {
                Some(Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n))) => n,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "watching this node for its pod range");
                    continue;
                }
                Some(Ok(_)) => continue,
                None => return Ok(None),
            };
            if let Some(range) = node
                .spec
                .as_ref()
                .and_then(|s| s.pod_cidr.as_deref())
                .and_then(|c| c.parse::<Ipv4Net>().ok())
            {
                return Ok(Some(range));
            }
        }
    }

    /// Keeps the routes (and, over VXLAN, the neighbours and forwarding entries) to the
    /// other nodes' pods as the Nodes say, removing skiff's routes no node accounts for.
    async fn follow_peers(
        &self,
        nodes: &Api<Node>,
        links: &Links,
        vxlan: Option<u32>,
        cancel: CancellationToken,
    ) -> Result<()> {
        let (reader, writer) = kube::runtime::reflector::store();
        let stream = kube::runtime::reflector(
            writer,
            watcher::watcher(nodes.clone(), watcher::Config::default()),
        );
        let mut stream = std::pin::pin!(stream);
        let mut had: BTreeMap<String, overlay::Peer> = BTreeMap::new();
        let mut swept = false;
        let backend = self.config.backend.name();
        loop {
            let event = tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                e = stream.next() => e,
            };
            match event {
                None => return Ok(()),
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "watching nodes");
                    continue;
                }
                Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) => continue,
                Some(Ok(_)) => {}
            }
            let all = reader.state();
            let refs: Vec<&Node> = all.iter().map(AsRef::as_ref).collect();
            let want = overlay::peers(&refs, &self.config.node_name, backend);
            if !swept {
                // Routes of nodes deleted while this one was down.
                let wanted: Vec<Ipv4Net> = want.values().map(|p| p.range).collect();
                for dst in links.routes().await? {
                    if !wanted.contains(&dst) {
                        tracing::info!(route = %dst, "removing a route no node accounts for");
                        links.delete_route(dst).await?;
                    }
                }
                swept = true;
            }
            let (remove, add) = overlay::changes(&had, &want);
            for p in &remove {
                if let Err(e) = unprogram(links, vxlan, p).await {
                    tracing::warn!(range = %p.range, error = %e, "removing the route to a node's pods");
                }
            }
            let mut failed = false;
            for p in &add {
                if let Err(e) = program(links, vxlan, p).await {
                    tracing::warn!(range = %p.range, error = %e, "adding the route to a node's pods");
                    failed = true;
                }
            }
            if !remove.is_empty() || !add.is_empty() {
                tracing::info!(
                    peers = want.len(),
                    added = add.len(),
                    removed = remove.len(),
                    "routes to other nodes' pods changed"
                );
            }
            if !failed {
                had = want;
            }
        }
    }
}

/// The gateway of pod range `range`, where the node's DNS server listens.
fn ipam_gateway(range: Ipv4Net) -> Ipv4Addr {
    ipam::first_host(range)
}

impl Network {
    /// Serves cluster DNS on `gateway:53` and keeps the Service rules as the Services
    /// and EndpointSlices say, one sync per burst of changes.
    async fn follow_services(
        self: Arc<Self>,
        client: kube::Client,
        gateway: Ipv4Addr,
        cancel: CancellationToken,
    ) -> Result<()> {
        use k8s_openapi::api::core::v1::Service;
        use k8s_openapi::api::discovery::v1::EndpointSlice;
        let dns_addr = std::net::SocketAddrV4::new(gateway, 53);
        let host = self.host_resolv();
        let dns = Arc::new(dns::Dns::new(
            &self.config.cluster_domain,
            dns::resolv::upstreams(&host),
        ));
        let serving = tokio::spawn({
            let (dns, cancel) = (dns.clone(), cancel.clone());
            async move {
                if let Err(e) = dns.serve(dns_addr.into(), cancel).await {
                    tracing::error!(error = %e, addr = %dns_addr, "cluster DNS stopped");
                }
            }
        });
        let mut node_ips = vec![self.config.node_ip];
        node_ips.extend(self.config.external_ip);
        let ctx = proxy::NodeContext {
            node_name: self.config.node_name.clone(),
            node_ips,
            cluster_cidr: self.config.cluster_cidr,
            service_cidr: self.config.service_cidr,
            bridge: BRIDGE.into(),
            dns: Some((self.config.cluster_dns, dns_addr)),
        };
        let socket = tokio::task::spawn_blocking(nft::NftSocket::open)
            .await
            .map_err(|e| nft::Error::Open(std::io::Error::other(e.to_string())))??;
        let proxy = Arc::new(std::sync::Mutex::new(proxy::Proxy::new(socket, ctx)));
        let checked = proxy.clone();

        let changed = Arc::new(tokio::sync::Notify::new());
        let (services, w) = kube::runtime::reflector::store::<Service>();
        let svc_feed = tokio::spawn(feed(
            kube::runtime::reflector(
                w,
                watcher::watcher(Api::all(client.clone()), watcher::Config::default()),
            ),
            changed.clone(),
        ));
        let (slices, w) = kube::runtime::reflector::store::<EndpointSlice>();
        let slice_feed = tokio::spawn(feed(
            kube::runtime::reflector(
                w,
                watcher::watcher(Api::all(client), watcher::Config::default()),
            ),
            changed.clone(),
        ));
        let ready = async {
            let _ = services.wait_until_ready().await;
            let _ = slices.wait_until_ready().await;
        };
        tokio::select! {
            () = cancel.cancelled() => {}
            () = ready => resync(&changed, &cancel, "service rules", TABLE_CHECK, move || {
                let (svcs, eps) = (services.state(), slices.state());
                dns.update(&svcs, &eps);
                let started = std::time::Instant::now();
                let stats = locked(&proxy, "proxy", |p| p.sync(&svcs, &eps))?;
                if stats.messages > 0 {
                    tracing::debug!(
                        service_ports = stats.service_ports,
                        messages = stats.messages,
                        took = ?started.elapsed(),
                        "service rules changed"
                    );
                }
                Ok(())
            }, move || locked(&checked, "proxy", |p| p.lost()))
            .await,
        }
        svc_feed.abort();
        slice_feed.abort();
        serving.abort();
        Ok(())
    }
}

impl Network {
    /// Enforces the NetworkPolicies that select this node's pods, in skiff's table
    /// `ip skiff-policy`, one sync per burst of changes to pods, namespaces or policies.
    async fn follow_policies(
        self: Arc<Self>,
        client: kube::Client,
        gateway: Ipv4Addr,
        cancel: CancellationToken,
    ) -> Result<()> {
        use k8s_openapi::api::core::v1::{Namespace, Pod};
        use k8s_openapi::api::networking::v1::NetworkPolicy;
        let scope = policy::NodeScope {
            node_name: self.config.node_name.clone(),
            host_addrs: vec![self.config.node_ip, gateway],
        };
        let socket = tokio::task::spawn_blocking(nft::NftSocket::open)
            .await
            .map_err(|e| nft::Error::Open(std::io::Error::other(e.to_string())))??;
        let enforcer = Arc::new(std::sync::Mutex::new(policy::Policy::new(socket, scope)));
        let checked = enforcer.clone();
        let changed = Arc::new(tokio::sync::Notify::new());
        let watch = watcher::Config::default;
        let (pods, w) = kube::runtime::reflector::store::<Pod>();
        let f1 = tokio::spawn(feed(
            kube::runtime::reflector(w, watcher::watcher(Api::all(client.clone()), watch())),
            changed.clone(),
        ));
        let (namespaces, w) = kube::runtime::reflector::store::<Namespace>();
        let f2 = tokio::spawn(feed(
            kube::runtime::reflector(w, watcher::watcher(Api::all(client.clone()), watch())),
            changed.clone(),
        ));
        let (policies, w) = kube::runtime::reflector::store::<NetworkPolicy>();
        let f3 = tokio::spawn(feed(
            kube::runtime::reflector(w, watcher::watcher(Api::all(client), watch())),
            changed.clone(),
        ));
        let ready = async {
            let _ = pods.wait_until_ready().await;
            let _ = namespaces.wait_until_ready().await;
            let _ = policies.wait_until_ready().await;
        };
        tokio::select! {
            () = cancel.cancelled() => {}
            () = ready => resync(&changed, &cancel, "network policy rules", TABLE_CHECK, move || {
                let (p, n, np) = (pods.state(), namespaces.state(), policies.state());
                locked(&enforcer, "policy enforcer", |e| e.sync(&p, &n, &np)).map(drop)
            }, move || locked(&checked, "policy enforcer", |e| e.lost()))
            .await,
        }
        f1.abort();
        f2.abort();
        f3.abort();
        Ok(())
    }
}

/// Runs `f` on what `m` guards, for the rule loops' closures: a poisoned lock and an
/// error come back as their messages.
fn locked<T, R, E: std::error::Error>(
    m: &std::sync::Mutex<T>,
    what: &str,
    f: impl FnOnce(&mut T) -> Result<R, E>,
) -> Result<R, String> {
    let mut guard = m
        .lock()
        .map_err(|_| format!("the {what}'s lock is poisoned"))?;
    f(&mut guard).map_err(|e| crate::kubelet::worker::chain(&e))
}

/// How often the rule loops look for their table, which `nft flush ruleset` or a
/// firewall's reload may have removed behind skiff's back.
const TABLE_CHECK: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs `sync` (blocking: netlink) on a blocking thread now and after every change
/// `changed` reports, until `cancel` fires; a failed sync is tried again a second later
/// even without a change. Every `check_every` ([`TABLE_CHECK`]), `lost` says whether
/// the table was removed from outside, and if so `sync` builds it again.
async fn resync<F, L>(
    changed: &Arc<tokio::sync::Notify>,
    cancel: &CancellationToken,
    what: &'static str,
    check_every: std::time::Duration,
    sync: F,
    lost: L,
) where
    F: Fn() -> Result<(), String> + Send + Sync + 'static,
    L: Fn() -> Result<bool, String> + Send + Sync + 'static,
{
    let sync = Arc::new(sync);
    let lost = Arc::new(lost);
    // On a clock of its own: changes coming faster than `check_every` (a failing sync
    // retries every second) must not put the check off for ever.
    let mut check =
        tokio::time::interval_at(tokio::time::Instant::now() + check_every, check_every);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let s = sync.clone();
        let synced = tokio::task::spawn_blocking(move || s())
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
        if let Err(e) = synced {
            tracing::warn!(error = %e, "programming the {what} failed; retrying");
            let again = changed.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                again.notify_one();
            });
        }
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = changed.notified() => break,
                _ = check.tick() => {
                    let l = lost.clone();
                    let gone = tokio::task::spawn_blocking(move || l())
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r);
                    match gone {
                        Ok(false) => {}
                        Ok(true) => {
                            tracing::warn!("the {what} were removed from outside skiff; programming them again");
                            break;
                        }
                        Err(e) => tracing::warn!(error = %e, "looking for the {what}"),
                    }
                }
            }
        }
    }
}

/// Drives a reflector's stream, telling `changed` after every event.
async fn feed<S, K>(stream: S, changed: Arc<tokio::sync::Notify>)
where
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
            Ok(_) => changed.notify_one(),
            Err(e) => tracing::debug!(error = %e, "watching the objects the node's rules follow"),
        }
    }
}

async fn program(links: &Links, vxlan: Option<u32>, p: &overlay::Peer) -> Result<()> {
    match (vxlan, p.mac) {
        (Some(dev), Some(mac)) => {
            links.replace_fdb(dev, &mac, p.ip).await?;
            links.replace_neighbour(dev, p.vtep(), &mac).await?;
            links
                .replace_route(p.range, p.vtep(), Some(dev), true)
                .await?;
        }
        _ => links.replace_route(p.range, p.ip, None, false).await?,
    }
    Ok(())
}

async fn unprogram(links: &Links, vxlan: Option<u32>, p: &overlay::Peer) -> Result<()> {
    links.delete_route(p.range).await?;
    if let (Some(dev), Some(mac)) = (vxlan, p.mac) {
        links.delete_neighbour(dev, p.vtep()).await?;
        links.delete_fdb(dev, &mac, p.ip).await?;
    }
    Ok(())
}

fn sysctl(path: &'static str, value: &str) -> Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    std::fs::write(path, value).map_err(|source| Error::Sysctl { path, source })
}

/// Removes what the node's network made on the host (skiff's nftables table, the
/// bridge, the VXLAN device and skiff's routes), as `skiff killall` does once the pods
/// are gone.
pub async fn remove() -> Result<()> {
    tokio::task::spawn_blocking(|| -> Result<()> {
        let ctx = proxy::NodeContext {
            node_name: String::new(),
            node_ips: Vec::new(),
            cluster_cidr: Ipv4Net::default(),
            service_cidr: Ipv4Net::default(),
            bridge: BRIDGE.into(),
            dns: None,
        };
        proxy::Proxy::new(nft::NftSocket::open()?, ctx).remove()?;
        let scope = policy::NodeScope {
            node_name: String::new(),
            host_addrs: Vec::new(),
        };
        policy::Policy::new(nft::NftSocket::open()?, scope).remove()?;
        Ok(())
    })
    .await
    .map_err(|e| nft::Error::Open(std::io::Error::other(e.to_string())))??;
    let links = Links::connect()?;
    for dst in links.routes().await? {
        links.delete_route(dst).await?;
    }
    links.delete(VXLAN).await?;
    links.delete(BRIDGE).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lost_table_is_synced_again_without_a_change() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let (syncs, checks) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (s, c) = (syncs.clone(), checks.clone());
        let changed = Arc::new(tokio::sync::Notify::new());
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let run = {
            let changed = changed.clone();
            tokio::spawn(async move {
                let sync = move || {
                    s.fetch_add(1, SeqCst);
                    Ok(())
                };
                // The second check finds the table gone; the others find it there.
                let lost = move || Ok(c.fetch_add(1, SeqCst) == 1);
                resync(
                    &changed,
                    &cancel,
                    "test rules",
                    std::time::Duration::from_millis(5),
                    sync,
                    lost,
                )
                .await
            })
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while checks.load(SeqCst) < 4 {
            assert!(
                std::time::Instant::now() < deadline,
                "the table was never checked"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // The first sync, and one more for the lost table: nothing else changed.
        assert_eq!(syncs.load(SeqCst), 2);
        stop.cancel();
        run.await.expect("the loop ends when cancelled");
    }

    #[tokio::test]
    async fn the_table_is_checked_even_while_changes_come_faster() {
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let checks = Arc::new(AtomicUsize::new(0));
        let c = checks.clone();
        let changed = Arc::new(tokio::sync::Notify::new());
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let run = {
            let changed = changed.clone();
            tokio::spawn(async move {
                // The table is always there: only the checks are counted.
                let lost = move || {
                    c.fetch_add(1, SeqCst);
                    Ok(false)
                };
                let check_every = std::time::Duration::from_millis(50);
                resync(
                    &changed,
                    &cancel,
                    "test rules",
                    check_every,
                    || Ok(()),
                    lost,
                )
                .await
            })
        };
        // A change every 5 ms, as a failing sync's retries or a busy cluster bring.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while checks.load(SeqCst) < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "changes put the check off"
            );
            changed.notify_one();
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        stop.cancel();
        run.await.expect("the loop ends when cancelled");
    }

    #[test]
    fn pods_get_full_frames_on_the_node_and_the_overlays_mtu_beyond() {
        let cidr: Ipv4Net = "10.42.0.0/16".parse().unwrap();
        let pod = pod_links(1500, 1450, cidr);
        assert_eq!(pod.mtu, 1500);
        assert_eq!(pod.routes, vec![(cidr, 1450)]);
        // Without an overlay every route has the interface's MTU.
        let pod = pod_links(9000, 9000, cidr);
        assert_eq!((pod.mtu, pod.routes), (9000, vec![]));
    }
}
