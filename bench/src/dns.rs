//! `--suite dns`: the node's cluster DNS answering cluster names. A `Dns` holding
//! `services` Services (a third of them headless with three endpoints each) serves on
//! loopback on a thread of its own; `clients` clients ask over UDP, one query at a time
//! each, for random Service names, and the rate and latency are printed beside the
//! goal (p99 <= 1 ms). The time to rebuild the index is printed too.

use super::{ms, Stats};
use anyhow::{bail, Context, Result};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use skiff_agent::network::dns::{Dns, Sockets};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// What to run.
pub struct Plan {
    /// Services in the zone.
    pub services: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// How long the run lasts.
    pub seconds: u64,
}

const NAMESPACES: usize = 10;

fn objects(n: usize) -> (Vec<Arc<Service>>, Vec<Arc<EndpointSlice>>, Vec<String>) {
    let mut services = Vec::with_capacity(n);
    let mut slices = Vec::new();
    let mut names = Vec::with_capacity(n);
    for i in 0..n {
        let ns = format!("ns{}", i % NAMESPACES);
        let name = format!("svc{i}");
        let headless = i % 3 == 0;
        let ip = if headless {
            "None".to_string()
        } else {
            format!("10.43.{}.{}", i / 250, i % 250 + 1)
        };
        services.push(Arc::new(Service {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.clone()),
                cluster_ips: (!headless).then(|| vec![ip]),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        }));
        if headless {
            slices.push(Arc::new(EndpointSlice {
                metadata: ObjectMeta {
                    name: Some(format!("{name}-abcde")),
                    namespace: Some(ns.clone()),
                    labels: Some(BTreeMap::from([(
                        "kubernetes.io/service-name".to_string(),
                        name.clone(),
                    )])),
                    ..Default::default()
                },
                address_type: "IPv4".into(),
                endpoints: Some(
                    (0..3)
                        .map(|e| Endpoint {
                            addresses: vec![format!("10.42.{}.{}", i / 80, (i % 80) * 3 + e)],
                            conditions: Some(EndpointConditions {
                                ready: Some(true),
                                ..Default::default()
                            }),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ports: None,
            }));
        }
        names.push(format!("{name}.{ns}.svc.cluster.local."));
    }
    (services, slices, names)
}

/// One client: sequential queries for `seconds`, each for a name picked by a simple
/// generator, with its latency.
async fn client(
    socket: UdpSocket,
    queries: Arc<Vec<Vec<u8>>>,
    seed: usize,
    until: Instant,
) -> Result<(Vec<Duration>, usize)> {
    let mut buf = vec![0u8; 4096];
    let mut lat = Vec::new();
    let mut lost = 0;
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    let mut id: u16 = seed as u16;
    while Instant::now() < until {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut q = queries[x % queries.len()].clone();
        id = id.wrapping_add(1);
        q[..2].copy_from_slice(&id.to_be_bytes());
        let start = Instant::now();
        socket.send(&q).await?;
        loop {
            match tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buf)).await {
                Err(_) => {
                    lost += 1;
                    break;
                }
                Ok(r) => {
                    let n = r?;
                    if n < 12 || buf[..2] != id.to_be_bytes() {
                        continue; // a late answer to an earlier, lost query
                    }
                    lat.push(start.elapsed());
                    let rcode = buf[3] & 0x0f;
                    let answers = u16::from_be_bytes([buf[6], buf[7]]);
                    if rcode != 0 || answers == 0 {
                        bail!("query {x}: rcode {rcode}, {answers} answers");
                    }
                    break;
                }
            }
        }
    }
    Ok((lat, lost))
}

/// Queries for the A record of each of `names`, in wire form.
pub fn queries(names: &[String]) -> Result<Arc<Vec<Vec<u8>>>> {
    let queries = names
        .iter()
        .map(|n| -> Result<Vec<u8>> {
            let mut m = Message::query();
            m.metadata.recursion_desired = true;
            m.add_query(Query::query(Name::from_ascii(n)?, RecordType::A));
            Ok(m.to_vec()?)
        })
        .collect::<Result<_>>()?;
    Ok(Arc::new(queries))
}

/// What one DNS run measured.
pub struct Measured {
    pub clients: usize,
    pub stats: Stats,
    pub elapsed: f64,
    pub lost: usize,
}

impl Measured {
    /// Queries answered per second.
    pub fn rate(&self) -> f64 {
        self.stats.sorted.len() as f64 / self.elapsed.max(1e-9)
    }
}

/// Warms up on the first of `sockets` (each connected to the server), then runs one
/// client on each of the others for `time`, one query at a time each.
pub async fn measure(
    mut sockets: Vec<UdpSocket>,
    queries: Arc<Vec<Vec<u8>>>,
    time: Duration,
) -> Result<Measured> {
    if sockets.len() < 2 {
        bail!("a DNS run needs a socket to warm up with and one per client");
    }
    // Warm up (caches, the server's first allocations), then measure.
    let warm = sockets.remove(0);
    client(
        warm,
        queries.clone(),
        7,
        Instant::now() + Duration::from_millis(300),
    )
    .await?;
    let clients = sockets.len();
    let until = Instant::now() + time;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (c, socket) in sockets.into_iter().enumerate() {
        tasks.push(tokio::spawn(client(socket, queries.clone(), c + 1, until)));
    }
    let mut all = Vec::new();
    let mut lost = 0;
    for t in tasks {
        let (lat, l) = t.await??;
        all.extend(lat);
        lost += l;
    }
    Ok(Measured {
        clients,
        stats: Stats::new(all),
        elapsed: started.elapsed().as_secs_f64(),
        lost,
    })
}

/// Runs the suite.
pub async fn run(plan: Plan) -> Result<()> {
    let (services, slices, names) = objects(plan.services);
    let dns = Arc::new(Dns::new("cluster.local", vec![]));
    let started = Instant::now();
    dns.update(&services, &slices);
    let build = started.elapsed();
    println!(
        "dns: index of {} services ({} headless, 3 endpoints each): {} names, built in {}",
        plan.services,
        slices.len(),
        dns.index().len(),
        ms(build)
    );

    // The server on a runtime and thread of its own, as it would be in the agent.
    let cancel = CancellationToken::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let server_cancel = cancel.clone();
    let server_dns = dns.clone();
    let thread = std::thread::spawn(move || -> Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let sockets = Sockets::bind("127.0.0.1:0".parse()?).await?;
            tx.send(sockets.local_addr()?)?;
            server_dns.serve_on(sockets, server_cancel).await?;
            anyhow::Ok(())
        })
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(10))
        .context("the DNS server did not start")?;

    let queries = queries(&names)?;
    let mut sockets = Vec::new();
    for _ in 0..=plan.clients.max(1) {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        socket.connect(addr).await?;
        sockets.push(socket);
    }
    let m = measure(sockets, queries, Duration::from_secs(plan.seconds)).await?;
    println!(
        "dns: {} clients over UDP, {} cluster-name queries in {:.1} s: {:.0} queries/s, p50 {}, p99 {} (goal p99 <= 1 ms), max {}, {} unanswered",
        m.clients,
        m.stats.sorted.len(),
        m.elapsed,
        m.rate(),
        ms(m.stats.pct(0.5)),
        ms(m.stats.pct(0.99)),
        ms(m.stats.pct(1.0)),
        m.lost,
    );

    cancel.cancel();
    match thread.join() {
        Ok(r) => r?,
        Err(_) => bail!("the DNS server's thread panicked"),
    }
    Ok(())
}
