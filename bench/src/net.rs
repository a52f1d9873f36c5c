//! `--suite net` (root): the pod network's data path beside the kernel's bare minimum,
//! side by side in one run: each round measures both paths of a pair back to back,
//! and the figure is the median over the rounds of each round's ratio.
//!
//! Two hosts are network namespaces joined to a bridge in the bench's own namespace
//! (as the e2e harness makes them); `skiff server` runs on the first and `skiff agent`
//! on the second, each with its node, VXLAN between them. Busybox pods sleep: `a` and
//! `b` on host 0, `c` and `e` on host 1; Services select `b` and `c`. Beside them, two bare
//! namespaces are joined by one veth pair, and two more sit on a bridge with no rules
//! (a node's topology without skiff, to tell what the rules cost from what the
//! topology costs). Two more hosts on the same bridge carry a bare VXLAN between one
//! pod namespace each, laid out as skiff lays out a node but without skiff: what the
//! kernel's VXLAN alone gets beside host to host. A last bridge has one DNAT rule and
//! its frames through the IP hooks: what the kernel's DNAT alone costs on a bridge.
//!
//! The traffic is the bench's own: a thread enters a namespace (a pod's, a host's or a
//! bare one) with `setns` and listens or connects there, so the same code runs over
//! every path and only the path differs; the client runs on one CPU and the servers
//! on another. For each path, each round:
//!
//! - stream: one TCP connection, the client writing 128 KiB at a time;
//! - rr: one connection, one byte there and back at a time (request latency);
//! - crr: a new connection for each byte there and back, closed by the server (what a
//!   Service's DNAT costs is paid per connection).
//!
//! The paths, in pairs: pod to pod on one node beside the bare veth pair (and the bare
//! bridge); pod to pod across nodes beside host to host (and the bare VXLAN beside
//! bare host to host, and skiff's VXLAN beside it); pod to a Service's ClusterIP
//! beside pod to the same pod's address, with the endpoint on the same node (and the
//! bare DNAT beside direct over its bridge) and on the other. Then cluster DNS: queries from a pod to the cluster DNS address,
//! beside the same queries from the node to its DNS server's own address. Last, how
//! long an endpoint change takes to reach another node's rules.

use crate::{dns, image, keep_if_mounted, ms, stop_node, target, Conn, Stats, Target};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What the suite is told.
pub struct Plan<'a> {
    /// The skiff binary.
    pub skiff: &'a Path,
    /// How long each measured run lasts.
    pub seconds: u64,
    /// Rounds over every path.
    pub rounds: usize,
    /// Concurrent DNS clients.
    pub dns_clients: usize,
    /// Endpoint changes timed, each way.
    pub changes: usize,
    /// The pairs to measure (`one-node`, `bare-bridge`, `across`, `bare-vxlan`,
    /// `across-bare-vxlan`, `clusterip-local`, `bare-dnat`, `clusterip-remote`); empty:
    /// all.
    pub pairs: Vec<String>,
    /// Wait for a line on standard input once the paths answer.
    pub hold: bool,
    /// The cluster's `--network-backend` (`vxlan`, `host-gw`).
    pub backend: &'a str,
}

/// The hosts' network: `10.219.0.0/24`, the bridge holding `.1`, host `i` `.10+i`.
const HOST_NET: [u8; 3] = [10, 219, 0];
/// The bare pair: `10.219.1.1` and `10.219.1.2`.
const BARE_NET: [u8; 3] = [10, 219, 1];
/// The bare bridge's two ends: `10.219.2.1` and `10.219.2.2`.
const BRIDGE_NET: [u8; 3] = [10, 219, 2];
/// The bare DNAT's bridge: `10.219.4.1` and `10.219.4.2`; [`DNAT_VIP`] is the second.
const DNAT_NET: [u8; 3] = [10, 219, 4];
const DNAT_VIP: Ipv4Addr = Ipv4Addr::new(10, 219, 5, 2);
/// The bare VXLAN's pods: `10.220.<host>.2`.
const VXLAN_NET: [u8; 2] = [10, 220];
const API_PORT: u16 = 6443;
/// The servers' ports: the sink reads and drops, the echo sends back what it reads,
/// the one-shot sends back one byte and closes.
const SINK: u16 = 5201;
const ECHO: u16 = 5202;
const ONCE: u16 = 5203;
/// A second one-shot server, the Services' target: a client's connections to a pod
/// and through a ClusterIP to it never share the pod's TIME_WAIT sockets (their
/// timestamps differ, and a SYN older than a TIME_WAIT's would wait for a resend).
const ONCE_SVC: u16 = 5204;
/// How long the cluster may take to come up, a pod to run, a rule to appear.
const LIMIT: Duration = Duration::from_secs(90);

fn host_ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(HOST_NET[0], HOST_NET[1], HOST_NET[2], 10 + i)
}

/// Runs `ip args`, failing with its stderr.
fn ip(args: &[&str]) -> Result<()> {
    iproute2("ip", args)
}

/// Runs iproute2's `tool -n netns <line's words>`, failing with its stderr.
fn ip_in(tool: &str, netns: &str, line: &str) -> Result<()> {
    let mut args = vec!["-n", netns];
    args.extend(line.split_whitespace());
    iproute2(tool, &args)
}

/// Runs iproute2's `tool args`, failing with its stderr.
fn iproute2(tool: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(tool)
        .args(args)
        .output()
        .with_context(|| format!("running {tool}"))?;
    if !out.status.success() {
        bail!(
            "{tool} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Everything the suite makes; dropping it removes all of it, also on a failure.
struct Lab {
    /// Names start with this (`skb<pid>`), to tell what a crashed run left.
    prefix: String,
    dir: tempfile::TempDir,
    skiff: PathBuf,
    /// The server and the agent, stopped in reverse order.
    processes: Vec<Child>,
    namespaces: Vec<String>,
    /// The root namespace's ends of the hosts' veths.
    outside: Vec<String>,
    bridge: Option<String>,
}

impl Lab {
    fn new(skiff: &Path) -> Result<Lab> {
        let prefix = format!("skb{:x}", std::process::id());
        let dir = tempfile::Builder::new()
            .prefix("skiff-bench-net-")
            .tempdir()?;
        Ok(Lab {
            prefix,
            dir,
            skiff: skiff.to_path_buf(),
            processes: Vec::new(),
            namespaces: Vec::new(),
            outside: Vec::new(),
            bridge: None,
        })
    }

    fn netns_path(name: &str) -> PathBuf {
        Path::new("/run/netns").join(name)
    }

    fn add_netns(&mut self, name: &str) -> Result<PathBuf> {
        ip(&["netns", "add", name])?;
        self.namespaces.push(name.to_string());
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(Lab::netns_path(name))
    }

    /// Two namespaces joined by one veth pair: the bare path.
    fn bare_pair(&mut self) -> Result<(PathBuf, PathBuf)> {
        let (a, b) = (format!("{}-a", self.prefix), format!("{}-b", self.prefix));
        let pa = self.add_netns(&a)?;
        let pb = self.add_netns(&b)?;
        ip(&[
            "link", "add", "eth0", "netns", &a, "type", "veth", "peer", "name", "eth0", "netns", &b,
        ])?;
        for (ns, last) in [(&a, 1), (&b, 2)] {
            let addr = format!("{}.{}.{}.{last}/24", BARE_NET[0], BARE_NET[1], BARE_NET[2]);
            ip(&["-n", ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        }
        Ok((pa, pb))
    }

    /// Two namespaces on a bridge in a third, with no rules anywhere: a node's pod
    /// topology (a veth each, a bridge between) without skiff.
    fn bare_bridge(&mut self) -> Result<(PathBuf, PathBuf)> {
        self.two_on_a_bridge(["x", "c", "d"], BRIDGE_NET)
    }

    /// Namespaces `sides[1]` and `sides[2]` on a bridge in `sides[0]`, at `.1` and `.2`
    /// of `net`; the bridge holds `.254`.
    fn two_on_a_bridge(&mut self, sides: [&str; 3], net: [u8; 3]) -> Result<(PathBuf, PathBuf)> {
        let x = format!("{}-{}", self.prefix, sides[0]);
        self.add_netns(&x)?;
        ip(&["-n", &x, "link", "add", "br0", "type", "bridge"])?;
        let gw = format!("{}.{}.{}.254/24", net[0], net[1], net[2]);
        ip(&["-n", &x, "addr", "add", &gw, "dev", "br0"])?;
        ip(&["-n", &x, "link", "set", "br0", "up"])?;
        let mut ends = Vec::new();
        for (side, last) in [(sides[1], 1), (sides[2], 2)] {
            let ns = format!("{}-{side}", self.prefix);
            ends.push(self.add_netns(&ns)?);
            let port = format!("port-{side}");
            ip(&[
                "-n", &x, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            ip(&["-n", &x, "link", "set", &port, "master", "br0", "up"])?;
            let addr = format!("{}.{}.{}.{last}/24", net[0], net[1], net[2]);
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        let d = ends.pop().context("two ends")?;
        let c = ends.pop().context("two ends")?;
        Ok((c, d))
    }

    /// The kernel's cost of a DNAT on a bridge, without skiff: two namespaces on a
    /// bridge whose frames go through the IP hooks (as a node's bridge), and one
    /// nftables rule in the bridge's namespace, made through skiff's own netlink
    /// code, that sends [`DNAT_VIP`] to the second. The first reaches the VIP through
    /// the bridge's address, as a pod reaches a ClusterIP through its gateway.
    fn bare_dnat(&mut self) -> Result<(PathBuf, PathBuf)> {
        use skiff_agent::network::nft::{
            expr, Batch, ChainKind, Expr, Hook, HookPoint, Message, NatKind, Netlink, NftSocket,
            REG_1,
        };
        let (e, f) = self.two_on_a_bridge(["y", "e", "f"], DNAT_NET)?;
        let y = format!("{}-y", self.prefix);
        ip_in("ip", &y, "link set br0 type bridge nf_call_iptables 1")?;
        let gw = format!("{}.{}.{}.254", DNAT_NET[0], DNAT_NET[1], DNAT_NET[2]);
        let e_name = format!("{}-e", self.prefix);
        ip_in("ip", &e_name, &format!("route add {DNAT_VIP}/32 via {gw}"))?;
        let to = Ipv4Addr::new(DNAT_NET[0], DNAT_NET[1], DNAT_NET[2], 2);
        in_netns(&Lab::netns_path(&y), move || {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").context("forwarding")?;
            let t = || "bench".to_string();
            let mut b = Batch::new();
            b.push(Message::AddTable { table: t() });
            b.push(Message::AddChain {
                table: t(),
                chain: "pre".into(),
                hook: Some(Hook {
                    kind: ChainKind::Nat,
                    hook: HookPoint::Prerouting,
                    priority: -100,
                }),
            });
            b.push(Message::AddRule {
                table: t(),
                chain: "pre".into(),
                exprs: vec![
                    expr::ip_daddr(REG_1),
                    expr::eq(REG_1, DNAT_VIP.octets()),
                    Expr::Immediate {
                        dreg: REG_1,
                        data: to.octets().to_vec(),
                    },
                    Expr::Nat {
                        kind: NatKind::Dnat,
                        addr: REG_1,
                        port: None,
                    },
                ],
            });
            NftSocket::open()?.apply(&b).context("the bare DNAT rule")
        })?;
        Ok((e, f))
    }

    /// The hosts' bridge, and host `i`'s namespace joined to it.
    fn host(&mut self, i: u8) -> Result<PathBuf> {
        self.on_hosts_bridge(&format!("h{i}"), host_ip(i))
    }

    /// A namespace `<prefix>-<tag>` joined to the hosts' bridge (made on first use)
    /// at `addr`, with a default route through the bridge.
    fn on_hosts_bridge(&mut self, tag: &str, addr: Ipv4Addr) -> Result<PathBuf> {
        let bridge = format!("{}-br", self.prefix);
        if self.bridge.is_none() {
            ip(&["link", "add", &bridge, "type", "bridge"])?;
            self.bridge = Some(bridge.clone());
            let gw = format!("{}.{}.{}.1/24", HOST_NET[0], HOST_NET[1], HOST_NET[2]);
            ip(&["addr", "add", &gw, "dev", &bridge])?;
            ip(&["link", "set", &bridge, "up"])?;
        }
        let name = format!("{}-{tag}", self.prefix);
        let path = self.add_netns(&name)?;
        let outside = format!("{}-v{tag}", self.prefix);
        ip(&[
            "link", "add", &outside, "type", "veth", "peer", "name", "eth0", "netns", &name,
        ])?;
        self.outside.push(outside.clone());
        ip(&["link", "set", &outside, "master", &bridge, "up"])?;
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &name, "link", "set", "eth0", "up"])?;
        let gw = format!("{}.{}.{}.1", HOST_NET[0], HOST_NET[1], HOST_NET[2]);
        ip(&["-n", &name, "route", "add", "default", "via", &gw])?;
        Ok(path)
    }

    /// The kernel's VXLAN path with nothing of skiff's: two more hosts on the hosts'
    /// bridge, each with a VXLAN device (the overlay's VNI, port and MTU, static FDB
    /// and neighbour entries), a bridge at full MTU and one pod namespace behind it
    /// whose route to the other pod has the overlay's MTU, as skiff lays a node out.
    /// No nftables table, so no conntrack. Answers each host's and each pod's
    /// namespace and address.
    fn bare_vxlan(&mut self) -> Result<[(PathBuf, Ipv4Addr, PathBuf, Ipv4Addr); 2]> {
        let host = |i: u8| Ipv4Addr::new(HOST_NET[0], HOST_NET[1], HOST_NET[2], 20 + i);
        let mac = |i: u8| format!("02:5b:00:00:00:0{i}");
        let [v0, v1] = VXLAN_NET;
        let mut made = Vec::new();
        for i in 0..2u8 {
            let hpath = self.on_hosts_bridge(&format!("g{i}"), host(i))?;
            let h = format!("{}-g{i}", self.prefix);
            let pod = format!("{}-q{i}", self.prefix);
            let ppath = self.add_netns(&pod)?;
            let n = |last: u8| format!("{v0}.{v1}.{i}.{last}");
            for line in [
                format!(
                    "link add vx0 address {} type vxlan id 1 dstport 8472 nolearning local {} dev eth0",
                    mac(i),
                    host(i)
                ),
                "link set vx0 mtu 1450 up".into(),
                format!("addr add {}/32 dev vx0", n(0)),
                "link add br0 type bridge".into(),
                format!("addr add {}/24 dev br0", n(1)),
                "link set br0 up".into(),
                format!("link add port0 type veth peer name eth0 netns {pod}"),
                "link set port0 master br0 up".into(),
            ] {
                ip_in("ip", &h, &line)?;
            }
            for line in [
                format!("addr add {}/24 dev eth0", n(2)),
                "link set eth0 up".to_string(),
                format!("route add {v0}.{v1}.0.0/16 via {} mtu 1450", n(1)),
                format!("route add default via {}", n(1)),
            ] {
                ip_in("ip", &pod, &line)?;
            }
            in_netns(&hpath, || {
                std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
                    .context("turning forwarding on")
            })?;
            made.push((hpath, host(i), ppath, n(2).parse::<Ipv4Addr>()?));
        }
        // Each host reaches the other's pods through the other's VTEP.
        for i in 0..2u8 {
            let (h, o) = (format!("{}-g{i}", self.prefix), 1 - i);
            let peer0 = format!("{v0}.{v1}.{o}.0");
            ip_in(
                "ip",
                &h,
                &format!("neigh add {peer0} lladdr {} dev vx0", mac(o)),
            )?;
            ip_in(
                "bridge",
                &h,
                &format!("fdb append {} dev vx0 dst {}", mac(o), host(o)),
            )?;
            ip_in(
                "ip",
                &h,
                &format!("route add {v0}.{v1}.{o}.0/24 via {peer0} dev vx0 onlink"),
            )?;
        }
        let second = made.pop().context("two hosts")?;
        let first = made.pop().context("two hosts")?;
        Ok([first, second])
    }

    fn data_dir(&self, i: u8) -> PathBuf {
        self.dir.path().join(format!("h{i}"))
    }

    /// Starts `skiff args` in host `i`'s namespace, its log in the lab's folder, with
    /// busybox in its air-gap folder.
    fn start(&mut self, i: u8, layer: &[u8], args: &[&str]) -> Result<()> {
        let data = self.data_dir(i);
        let images = data.join("agent/images");
        std::fs::create_dir_all(&images)?;
        image::write_oci(layer, &images.join("busybox.tar"))?;
        let log = std::fs::File::create(self.dir.path().join(format!("h{i}.log")))?;
        let netns = Lab::netns_path(&format!("{}-h{i}", self.prefix));
        let child = Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .arg("--")
            .arg(&self.skiff)
            .args(args)
            .arg("--data-dir")
            .arg(&data)
            .args(["--config", "/dev/null", "--node-name", &format!("h{i}")])
            .args(["--node-ip", &host_ip(i).to_string()])
            .env(
                "SKIFF_LOG",
                std::env::var("SKIFF_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting skiff in a host")?;
        self.processes.push(child);
        Ok(())
    }

    /// The warnings and errors in host `i`'s log.
    fn log_lines(&self, i: u8) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join(format!("h{i}.log")))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .take(8)
            .map(|l| l.chars().take(300).collect())
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for mut child in self.processes.drain(..).rev() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for i in 0..2 {
            let data = self.data_dir(i);
            if !data.exists() {
                continue;
            }
            stop_node(&self.skiff, &data);
        }
        for ns in self.namespaces.drain(..) {
            if let Err(e) = ip(&["netns", "del", &ns]) {
                eprintln!("{e:#}");
            }
        }
        for outside in self.outside.drain(..) {
            // Gone with its peer's namespace unless a socket still holds that.
            let _ = ip(&["link", "del", &outside]);
        }
        if let Some(bridge) = self.bridge.take() {
            if let Err(e) = ip(&["link", "del", &bridge]) {
                eprintln!("{e:#}");
            }
        }
        keep_if_mounted(&mut self.dir);
    }
}

/// Runs `f` on a thread that has entered the network namespace at `netns`: sockets it
/// makes belong to that namespace wherever they are used afterwards.
fn in_netns<T: Send + 'static>(
    netns: &Path,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let netns = netns.to_path_buf();
    std::thread::spawn(move || {
        let file =
            std::fs::File::open(&netns).with_context(|| format!("opening {}", netns.display()))?;
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering {}", netns.display()))?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("a thread in a namespace panicked"))?
}

/// Where the client and the servers run. Left to the scheduler, a run where both ends
/// share a CPU and one where they do not differ by more than the paths do; pinned,
/// every path gets the same placement: the client (and the softirq work of what it
/// sends, which runs where it is sent) on one CPU, the servers on the other.
const CLIENT_CPU: usize = 0;
const SERVER_CPU: usize = 1;

/// Keeps the calling thread on `cpu`, when the machine has more than one.
fn pin(cpu: usize) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        return;
    }
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu % cpus).is_ok() {
        // Unpinned is still a valid run, only a noisier one.
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

/// The sink and echo servers, listening in one namespace and served on threads of
/// their own until the bench ends.
fn serve(netns: &Path) -> Result<()> {
    let (sink, echo, once) = in_netns(netns, || {
        Ok((
            TcpListener::bind(("0.0.0.0", SINK))?,
            TcpListener::bind(("0.0.0.0", ECHO))?,
            [
                TcpListener::bind(("0.0.0.0", ONCE))?,
                TcpListener::bind(("0.0.0.0", ONCE_SVC))?,
            ],
        ))
    })?;
    // Closing first, the one-shot servers keep the TIME_WAIT sockets, so the clients'
    // ports are not used up.
    for once in once {
        std::thread::spawn(move || {
            pin(SERVER_CPU);
            for mut conn in once.incoming().flatten() {
                let _ = conn.set_nodelay(true);
                let mut b = [0u8; 1];
                if conn.read_exact(&mut b).is_ok() {
                    let _ = conn.write_all(&b);
                }
            }
        });
    }
    std::thread::spawn(move || {
        for conn in sink.incoming().flatten() {
            std::thread::spawn(move || {
                pin(SERVER_CPU);
                let mut conn = conn;
                let mut buf = vec![0u8; 256 * 1024];
                while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    std::thread::spawn(move || {
        for conn in echo.incoming().flatten() {
            std::thread::spawn(move || {
                pin(SERVER_CPU);
                let mut conn = conn;
                let _ = conn.set_nodelay(true);
                let mut buf = [0u8; 64];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(())
}

/// One path: where the client runs and what it connects to.
struct Route {
    name: &'static str,
    client: PathBuf,
    /// The sink's, the echo's and the one-shot's addresses.
    sink: SocketAddr,
    echo: SocketAddr,
    once: SocketAddr,
}

/// What one run of the three tests measured on one path.
struct Sample {
    /// Bytes per second of the stream.
    stream: f64,
    rr: Stats,
    /// Exchanges per second over the one connection.
    rr_rate: f64,
    crr: Stats,
    /// Connections per second.
    crr_rate: f64,
}

/// Two paths compared: `ours` beside `base`, as indexes into the routes.
struct Pair {
    /// What `--net-pairs` calls it.
    key: &'static str,
    what: &'static str,
    goal: &'static str,
    ours: usize,
    base: usize,
    /// One (ours, base) per round.
    samples: Vec<(Sample, Sample)>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

/// The stream: bytes per second written through one connection for `time`.
fn stream(to: SocketAddr, time: Duration) -> Result<f64> {
    let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(5))
        .with_context(|| format!("connecting to {to}"))?;
    let buf = vec![0x5au8; 128 * 1024];
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < time {
        conn.write_all(&buf)?;
        sent += buf.len() as u64;
    }
    Ok(sent as f64 / started.elapsed().as_secs_f64())
}

/// One byte there and back over one connection, for `time`: each exchange's latency.
fn rr(to: SocketAddr, time: Duration) -> Result<Vec<Duration>> {
    let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(5))
        .with_context(|| format!("connecting to {to}"))?;
    conn.set_nodelay(true)?;
    let mut lat = Vec::new();
    let mut b = [0u8; 1];
    let started = Instant::now();
    while started.elapsed() < time {
        let t = Instant::now();
        conn.write_all(b"x")?;
        conn.read_exact(&mut b)?;
        lat.push(t.elapsed());
    }
    Ok(lat)
}

/// A new connection to the one-shot server for each byte there and back, for `time`:
/// each one's latency from connect to the answer. The client waits for the server's
/// close before the next.
fn crr(to: SocketAddr, time: Duration) -> Result<Vec<Duration>> {
    let mut lat = Vec::new();
    let mut b = [0u8; 1];
    let started = Instant::now();
    while started.elapsed() < time {
        let t = Instant::now();
        let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(5))
            .with_context(|| format!("connecting to {to}"))?;
        conn.set_nodelay(true)?;
        conn.write_all(b"x")?;
        conn.read_exact(&mut b)?;
        lat.push(t.elapsed());
        if conn.read(&mut b)? != 0 {
            bail!("{to}: the one-shot server sent more than one byte");
        }
    }
    Ok(lat)
}

/// The three tests on `path`, each for `time`.
fn sample(path: &Route, time: Duration) -> Result<Sample> {
    let (sink, echo, once) = (path.sink, path.echo, path.once);
    let what = path.name;
    in_netns(&path.client, move || {
        pin(CLIENT_CPU);
        let stream = stream(sink, time).with_context(|| format!("{what}: stream"))?;
        let t = Instant::now();
        let rr = rr(echo, time).with_context(|| format!("{what}: rr"))?;
        let rr_rate = rr.len() as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        let crr = crr(once, time).with_context(|| format!("{what}: crr"))?;
        let crr_rate = crr.len() as f64 / t.elapsed().as_secs_f64();
        Ok(Sample {
            stream,
            rr: Stats::new(rr),
            rr_rate,
            crr: Stats::new(crr),
            crr_rate,
        })
    })
}

/// Prints a pair: each side's medians over the rounds, then the medians of the
/// per-round ratios (each round ran both sides back to back, so a slow spell of the
/// machine weighs on both).
fn print_pair(pair: &Pair, routes: &[Route]) {
    println!("{}:", pair.what);
    let side = |name: &str, pick: &dyn Fn(&(Sample, Sample)) -> &Sample| {
        let m =
            |f: &dyn Fn(&Sample) -> f64| median(pair.samples.iter().map(|s| f(pick(s))).collect());
        println!(
            "  {name:<28} stream {:>5.2} Gbit/s | rr {:>6.0}/s p50 {} p99 {} | crr {:>5.0}/s p50 {} p99 {}",
            m(&|s| s.stream) * 8.0 / 1e9,
            m(&|s| s.rr_rate),
            us(Duration::from_secs_f64(m(&|s| s.rr.pct(0.5).as_secs_f64()))),
            us(Duration::from_secs_f64(m(&|s| s.rr.pct(0.99).as_secs_f64()))),
            m(&|s| s.crr_rate),
            us(Duration::from_secs_f64(m(&|s| s.crr.pct(0.5).as_secs_f64()))),
            us(Duration::from_secs_f64(m(&|s| s.crr.pct(0.99).as_secs_f64()))),
        );
    };
    side(routes[pair.ours].name, &|s| &s.0);
    side(routes[pair.base].name, &|s| &s.1);
    let ratio = |f: &dyn Fn(&Sample) -> f64| {
        100.0
            * median(
                pair.samples
                    .iter()
                    .map(|(o, b)| f(o) / f(b).max(1e-12))
                    .collect(),
            )
    };
    let latency = |f: &dyn Fn(&Sample) -> Duration| {
        // Speed as a share of the base's: base latency / ours.
        100.0
            * median(
                pair.samples
                    .iter()
                    .map(|(o, b)| f(b).as_secs_f64() / f(o).as_secs_f64().max(1e-12))
                    .collect(),
            )
    };
    println!(
        "  ratio, median of {} rounds: stream {:.1}% | rr rate {:.1}%, p50 latency {:.1}% | crr rate {:.1}%, p50 latency {:.1}% ({})",
        pair.samples.len(),
        ratio(&|s| s.stream),
        ratio(&|s| s.rr_rate),
        latency(&|s| s.rr.pct(0.5)),
        ratio(&|s| s.crr_rate),
        latency(&|s| s.crr.pct(0.5)),
        pair.goal,
    );
}

fn busybox_pod(name: &str, node: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": image::NAME, "imagePullPolicy": "IfNotPresent",
                            "command": ["sh", "-c", "sleep 3600"]}]
        }
    })
}

async fn create(c: &mut Conn, path: &str, body: &Value) -> Result<Value> {
    let (code, out) = c.call("POST", path, Some(body)).await?;
    if code != 201 {
        bail!("POST {path}: {code} {}", String::from_utf8_lossy(&out));
    }
    Ok(serde_json::from_slice(&out)?)
}

/// Polls `path` until `done` picks something out of it.
async fn wait_for<T>(
    c: &mut Conn,
    path: &str,
    what: &str,
    done: impl Fn(&Value) -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Ok((200, body)) = c.call("GET", path, None).await {
            if let Some(t) = done(&serde_json::from_slice(&body)?) {
                return Ok(t);
            }
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ready(node: &Value) -> bool {
    node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// A running pod: its address and its network namespace's file.
struct Pod {
    ip: Ipv4Addr,
    netns: PathBuf,
}

async fn running_pod(c: &mut Conn, lab: &Lab, name: &str, host: u8) -> Result<Pod> {
    let path = format!("/api/v1/namespaces/default/pods/{name}");
    let (ip, uid) = wait_for(c, &path, &format!("pod {name} Running"), |p| {
        let ip = p["status"]["podIP"].as_str()?.parse::<Ipv4Addr>().ok()?;
        (p["status"]["phase"] == "Running").then(|| (ip, p["metadata"]["uid"].clone()))
    })
    .await?;
    let uid = uid.as_str().context("a pod without a uid")?;
    let netns = lab
        .data_dir(host)
        .join("agent/pods")
        .join(uid)
        .join("ns-net");
    Ok(Pod { ip, netns })
}

/// Waits until a connection from `netns` to `to` is accepted and, for the echo server,
/// answered.
fn wait_reachable(netns: &Path, to: SocketAddr, echo: bool, what: &str) -> Result<()> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let ok = in_netns(netns, move || {
            let mut c = TcpStream::connect_timeout(&to, Duration::from_millis(500))?;
            if echo {
                c.set_read_timeout(Some(Duration::from_millis(500)))?;
                c.write_all(b"x")?;
                let mut b = [0u8; 1];
                c.read_exact(&mut b)?;
            }
            Ok(())
        });
        if ok.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what} ({to}) did not answer within {LIMIT:?}: {ok:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// From `netns`, tries to connect to `to` every millisecond until it succeeds (`open`)
/// or is refused (not `open`); answers when it first did.
fn wait_connect(netns: &Path, to: SocketAddr, open: bool) -> Result<Instant> {
    in_netns(netns, move || {
        let deadline = Instant::now() + LIMIT;
        loop {
            let now = Instant::now();
            let ok = TcpStream::connect_timeout(&to, Duration::from_millis(200)).is_ok();
            if ok == open {
                return Ok(now);
            }
            if now > deadline {
                bail!(
                    "{to} was not {} within {LIMIT:?}",
                    if open { "open" } else { "refused" }
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    })
}

/// How long a Service's endpoint change takes to reach another node's rules: pod `e`
/// (on host 1) is labelled into Service `f` and out again, `runs` times; each time,
/// from the API's answer to the label change to the first connection from pod `a` (on
/// host 0) to `f`'s ClusterIP that succeeds (added) or is refused (removed).
async fn endpoint_changes(
    c: &mut Conn,
    client: &Path,
    service: SocketAddr,
    runs: usize,
) -> Result<(Stats, Stats)> {
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    let path = "/api/v1/namespaces/default/pods/e";
    for _ in 0..runs {
        for (app, open, into) in [("f", true, &mut added), ("e", false, &mut removed)] {
            let patch = json!({"metadata": {"labels": {"app": app}}});
            let (code, body) = c.call("PATCH", path, Some(&patch)).await?;
            if code != 200 {
                bail!("labelling pod e: {code} {}", String::from_utf8_lossy(&body));
            }
            let answered = Instant::now();
            let client = client.to_path_buf();
            let seen =
                tokio::task::spawn_blocking(move || wait_connect(&client, service, open)).await??;
            into.push(seen.saturating_duration_since(answered));
        }
    }
    Ok((Stats::new(added), Stats::new(removed)))
}

/// A UDP socket in `netns`, connected to `to`, for the runtime.
fn udp_in(netns: &Path, to: SocketAddr) -> Result<tokio::net::UdpSocket> {
    let socket = in_netns(netns, move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
        s.connect(to)?;
        s.set_nonblocking(true)?;
        Ok(s)
    })?;
    Ok(tokio::net::UdpSocket::from_std(socket)?)
}

async fn dns_run(
    netns: &Path,
    server: SocketAddr,
    clients: usize,
    names: &[String],
    time: Duration,
) -> Result<dns::Measured> {
    let sockets = (0..=clients)
        .map(|_| udp_in(netns, server))
        .collect::<Result<Vec<_>>>()?;
    dns::measure(sockets, dns::queries(names)?, time).await
}

/// Runs the suite and prints its figures.
pub async fn run(plan: Plan<'_>) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the net suite makes network namespaces: run it as root");
    }
    let layer = image::layer()?;
    let mut lab = Lab::new(plan.skiff)?;
    let (bare_a, bare_b) = lab.bare_pair()?;
    let (bridge_c, bridge_d) = lab.bare_bridge()?;
    let (dnat_e, dnat_f) = lab.bare_dnat()?;
    let h0 = lab.host(0)?;
    let h1 = lab.host(1)?;
    let [(g0, _, q0, _), (g1, g1_ip, q1, q1_ip)] = lab.bare_vxlan()?;

    let kubeconfig = lab.dir.path().join("kubeconfig.yaml");
    let kubeconfig_arg = kubeconfig.to_string_lossy().into_owned();
    lab.start(
        0,
        &layer,
        &[
            "server",
            "--write-kubeconfig",
            &kubeconfig_arg,
            "--network-backend",
            plan.backend,
        ],
    )?;
    // The server writes its kubeconfig once it serves; it names loopback, which is the
    // host's own: the bench reaches the host at its address.
    let deadline = Instant::now() + LIMIT;
    while !std::fs::read_to_string(&kubeconfig).is_ok_and(|k| k.contains("client-key-data")) {
        if Instant::now() > deadline {
            bail!(
                "the server did not write its kubeconfig: {:?}",
                lab.log_lines(0)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = Target {
        addr: format!("{}:{API_PORT}", host_ip(0)),
        ..target(&kubeconfig, API_PORT)?
    };
    let token = std::fs::read_to_string(lab.data_dir(0).join("server/token"))
        .context("reading the server token")?;
    let server_url = format!("https://{}:{API_PORT}", host_ip(0));
    lab.start(
        1,
        &layer,
        &["agent", "--server", &server_url, "--token", token.trim()],
    )?;
    let mut c = Conn::open(&t).await?;
    let mut gateways = Vec::new();
    for node in ["h0", "h1"] {
        let gateway = wait_for(&mut c, &format!("/api/v1/nodes/{node}"), node, |n| {
            // The node's DNS server listens on its range's first address.
            let range = n["spec"]["podCIDR"].as_str()?;
            let net: Ipv4Addr = range.split('/').next()?.parse().ok()?;
            ready(n).then(|| Ipv4Addr::from(u32::from(net) + 1))
        })
        .await
        .with_context(|| format!("logs: {:?} {:?}", lab.log_lines(0), lab.log_lines(1)))?;
        gateways.push(gateway);
    }

    for (name, node) in [("a", "h0"), ("b", "h0"), ("c", "h1"), ("e", "h1")] {
        create(
            &mut c,
            "/api/v1/namespaces/default/pods",
            &busybox_pod(name, node),
        )
        .await?;
    }
    let svc = create(
        &mut c,
        "/api/v1/namespaces/default/services",
        &json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "b", "namespace": "default"},
            "spec": {"selector": {"app": "b"}, "ports": [
                {"name": "sink", "port": 81, "targetPort": SINK},
                {"name": "echo", "port": 80, "targetPort": ECHO},
                {"name": "once", "port": 82, "targetPort": ONCE_SVC},
            ]},
        }),
    )
    .await?;
    let cluster_ip: Ipv4Addr = svc["spec"]["clusterIP"]
        .as_str()
        .context("a Service without a clusterIP")?
        .parse()?;
    // Pod c's Service: its one endpoint is on the other node.
    let svc_c = create(
        &mut c,
        "/api/v1/namespaces/default/services",
        &json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "c", "namespace": "default"},
            "spec": {"selector": {"app": "c"}, "ports": [
                {"name": "sink", "port": 81, "targetPort": SINK},
                {"name": "echo", "port": 80, "targetPort": ECHO},
                {"name": "once", "port": 82, "targetPort": ONCE_SVC},
            ]},
        }),
    )
    .await?;
    let c_ip: Ipv4Addr = svc_c["spec"]["clusterIP"]
        .as_str()
        .context("a Service without a clusterIP")?
        .parse()?;
    // Selects no pod until pod e is labelled into it.
    let svc_f = create(
        &mut c,
        "/api/v1/namespaces/default/services",
        &json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "f", "namespace": "default"},
            "spec": {"selector": {"app": "f"}, "ports": [{"name": "echo", "port": 80, "targetPort": ECHO}]},
        }),
    )
    .await?;
    let f_ip: Ipv4Addr = svc_f["spec"]["clusterIP"]
        .as_str()
        .context("a Service without a clusterIP")?
        .parse()?;
    let a = running_pod(&mut c, &lab, "a", 0).await?;
    let b = running_pod(&mut c, &lab, "b", 0).await?;
    let cp = running_pod(&mut c, &lab, "c", 1).await?;
    let e = running_pod(&mut c, &lab, "e", 1).await?;

    for ns in [
        &bare_b, &bridge_d, &dnat_f, &b.netns, &cp.netns, &e.netns, &h1, &g1, &q1,
    ] {
        serve(ns)?;
    }
    let bare_b_ip = Ipv4Addr::new(BARE_NET[0], BARE_NET[1], BARE_NET[2], 2);
    let bridge_d_ip = Ipv4Addr::new(BRIDGE_NET[0], BRIDGE_NET[1], BRIDGE_NET[2], 2);
    let dnat_f_ip = Ipv4Addr::new(DNAT_NET[0], DNAT_NET[1], DNAT_NET[2], 2);
    let at = |ip: Ipv4Addr, port: u16| SocketAddr::from((ip, port));
    let paths = [
        Route {
            name: "bare veth pair",
            client: bare_a,
            sink: at(bare_b_ip, SINK),
            echo: at(bare_b_ip, ECHO),
            once: at(bare_b_ip, ONCE),
        },
        Route {
            name: "bare bridge",
            client: bridge_c,
            sink: at(bridge_d_ip, SINK),
            echo: at(bridge_d_ip, ECHO),
            once: at(bridge_d_ip, ONCE),
        },
        Route {
            name: "pod to pod, one node",
            client: a.netns.clone(),
            sink: at(b.ip, SINK),
            echo: at(b.ip, ECHO),
            once: at(b.ip, ONCE),
        },
        Route {
            name: "host to host",
            client: h0.clone(),
            sink: at(host_ip(1), SINK),
            echo: at(host_ip(1), ECHO),
            once: at(host_ip(1), ONCE),
        },
        Route {
            name: "pod to pod, across nodes",
            client: a.netns.clone(),
            sink: at(cp.ip, SINK),
            echo: at(cp.ip, ECHO),
            once: at(cp.ip, ONCE),
        },
        Route {
            name: "pod to ClusterIP",
            client: a.netns.clone(),
            sink: at(cluster_ip, 81),
            echo: at(cluster_ip, 80),
            once: at(cluster_ip, 82),
        },
        Route {
            name: "pod to ClusterIP, across",
            client: a.netns.clone(),
            sink: at(c_ip, 81),
            echo: at(c_ip, 80),
            once: at(c_ip, 82),
        },
        Route {
            name: "bare host to host",
            client: g0,
            sink: at(g1_ip, SINK),
            echo: at(g1_ip, ECHO),
            once: at(g1_ip, ONCE),
        },
        Route {
            name: "bare VXLAN, pod to pod",
            client: q0,
            sink: at(q1_ip, SINK),
            echo: at(q1_ip, ECHO),
            once: at(q1_ip, ONCE),
        },
        Route {
            name: "bare bridge with DNAT, direct",
            client: dnat_e.clone(),
            sink: at(dnat_f_ip, SINK),
            echo: at(dnat_f_ip, ECHO),
            once: at(dnat_f_ip, ONCE),
        },
        Route {
            name: "bare bridge, through a DNAT",
            client: dnat_e,
            sink: at(DNAT_VIP, SINK),
            echo: at(DNAT_VIP, ECHO),
            once: at(DNAT_VIP, ONCE_SVC),
        },
    ];
    for p in &paths {
        wait_reachable(&p.client, p.echo, true, p.name)?;
        wait_reachable(&p.client, p.sink, false, p.name)?;
        wait_reachable(&p.client, p.once, false, p.name)?;
    }

    if plan.hold {
        for p in &paths {
            println!(
                "{}: nsenter --net={} → sink {}, echo {}, one-shot {}",
                p.name,
                p.client.display(),
                p.sink,
                p.echo,
                p.once
            );
        }
        println!("holding: press Enter to measure");
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
    }
    let time = Duration::from_secs(plan.seconds);
    let mut pairs = [
        Pair {
            key: "one-node",
            what: "one node",
            goal: "goal >= 90%",
            ours: 2,
            base: 0,
            samples: Vec::new(),
        },
        Pair {
            key: "bare-bridge",
            what: "one node, beside the same topology without skiff's rules",
            goal: "what the rules and conntrack cost",
            ours: 2,
            base: 1,
            samples: Vec::new(),
        },
        Pair {
            key: "across",
            what: "across nodes, over the cluster's backend",
            goal: "goal >= 80%",
            ours: 4,
            base: 3,
            samples: Vec::new(),
        },
        Pair {
            key: "bare-vxlan",
            what: "the kernel's VXLAN alone: pod to pod across two bare hosts, beside them host to host",
            goal: "the most any VXLAN data path gets on this machine",
            ours: 8,
            base: 7,
            samples: Vec::new(),
        },
        Pair {
            key: "across-bare-vxlan",
            what: "across nodes, beside the same VXLAN path without skiff's rules",
            goal: "what skiff adds to the kernel's VXLAN",
            ours: 4,
            base: 8,
            samples: Vec::new(),
        },
        Pair {
            key: "clusterip-local",
            what: "through a ClusterIP, its endpoint on the same node",
            goal: "goal >= 95%",
            ours: 5,
            base: 2,
            samples: Vec::new(),
        },
        Pair {
            key: "bare-dnat",
            what: "the kernel's DNAT alone: through a DNAT on a bare bridge, beside direct over the same bridge",
            goal: "the most any DNAT on a bridge gets on this machine",
            ours: 10,
            base: 9,
            samples: Vec::new(),
        },
        Pair {
            key: "clusterip-remote",
            what: "through a ClusterIP, its endpoint on the other node",
            goal: "goal >= 95%",
            ours: 6,
            base: 4,
            samples: Vec::new(),
        },
    ];
    if let Some(unknown) = plan
        .pairs
        .iter()
        .find(|k| !pairs.iter().any(|p| p.key == k.as_str()))
    {
        let known: Vec<&str> = pairs.iter().map(|p| p.key).collect();
        bail!(
            "--net-pairs: no pair {unknown:?} (one of {})",
            known.join(", ")
        );
    }
    let chosen = |p: &Pair| plan.pairs.is_empty() || plan.pairs.iter().any(|k| k == p.key);
    for round in 0..plan.rounds {
        for pair in pairs.iter_mut().filter(|p| chosen(p)) {
            // Alternate which side goes first.
            let (ours, base) = if round % 2 == 0 {
                let o = sample(&paths[pair.ours], time)?;
                (o, sample(&paths[pair.base], time)?)
            } else {
                let b = sample(&paths[pair.base], time)?;
                (sample(&paths[pair.ours], time)?, b)
            };
            pair.samples.push((ours, base));
        }
    }
    println!(
        "net: backend {}, {} rounds; in each, for each pair, both paths back to back (alternating which goes first), {} s per test",
        plan.backend, plan.rounds, plan.seconds
    );
    for pair in pairs.iter().filter(|p| chosen(p)) {
        print_pair(pair, &paths);
    }

    // Cluster DNS: from a pod to the cluster DNS address (DNAT to the node's server),
    // beside the node asking its server at its own address.
    let names: Vec<String> = ["b.default", "kubernetes.default", "kube-dns.kube-system"]
        .iter()
        .map(|n| format!("{n}.svc.cluster.local"))
        .collect();
    let cluster_dns: SocketAddr = "10.43.0.10:53".parse()?;
    let node_dns = SocketAddr::from((gateways[0], 53));
    // Three rounds, the two sides alternating; the medians over the rounds.
    let dns_time = Duration::from_secs(2);
    for clients in [1, plan.dns_clients.max(1)] {
        let sides = [
            ("from pod a to 10.43.0.10", &a.netns, cluster_dns),
            ("from host 0 to its own server", &h0, node_dns),
        ];
        let mut runs: [Vec<dns::Measured>; 2] = [Vec::new(), Vec::new()];
        for round in 0..3 {
            for k in 0..2 {
                let i = (k + round) % 2;
                let (_, netns, server) = sides[i];
                runs[i].push(dns_run(netns, server, clients, &names, dns_time).await?);
            }
        }
        for ((name, _, _), runs) in sides.iter().zip(runs) {
            let secs = |d: Duration| d.as_secs_f64();
            println!(
                "dns {name}, {clients} clients, median of 3 runs of {} s: {:.0} queries/s, p50 {}, p99 {} (goal p99 <= 1 ms), {} unanswered",
                dns_time.as_secs(),
                median(runs.iter().map(|m| m.rate()).collect()),
                us(Duration::from_secs_f64(median(runs.iter().map(|m| secs(m.stats.pct(0.5))).collect()))),
                us(Duration::from_secs_f64(median(runs.iter().map(|m| secs(m.stats.pct(0.99))).collect()))),
                runs.iter().map(|m| m.lost).sum::<usize>(),
            );
        }
    }

    // Endpoint changes, once the Service's "no endpoints" rule refuses at once.
    let f = SocketAddr::from((f_ip, 80));
    wait_connect(&a.netns, f, false)?;
    let (added, removed) = endpoint_changes(&mut c, &a.netns, f, plan.changes).await?;
    println!(
        "endpoint change, label written → another node's rules follow, {} each: added p50 {}, max {}; removed p50 {}, max {} (goal <= 1 s)",
        plan.changes,
        ms(added.pct(0.5)),
        ms(added.pct(1.0)),
        ms(removed.pct(0.5)),
        ms(removed.pct(1.0)),
    );

    let warnings = [lab.log_lines(0), lab.log_lines(1)].concat();
    println!("hosts' logs: {} warnings or errors", warnings.len());
    for w in warnings {
        println!("    {w}");
    }
    Ok(())
}
