//! The server on real loopback sockets, asked by a client that builds its messages
//! with hickory; forwarding against small upstream servers the tests run.

use super::index::tests::{port, service, slice};
use super::*;
use hickory_proto::op::Query;
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::task::JoinHandle;

/// How long a test waits for any one answer before failing.
const WAIT: Duration = Duration::from_secs(5);

/// A running server, stopped when dropped.
struct Running {
    addr: SocketAddr,
    cancel: CancellationToken,
    task: Option<JoinHandle<Result<()>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

async fn start(dns: Dns) -> Running {
    let sockets = Sockets::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = sockets.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(Arc::new(dns).serve_on(sockets, cancel.clone()));
    Running {
        addr,
        cancel,
        task: Some(task),
    }
}

fn query(name: &str, t: RecordType) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    m
}

async fn udp_exchange(server: SocketAddr, q: &Message) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(server).await.unwrap();
    socket.send(&q.to_vec().unwrap()).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(WAIT, socket.recv(&mut buf))
        .await
        .expect("an answer in time")
        .unwrap();
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(m.metadata.id, q.metadata.id);
    m
}

async fn udp(server: SocketAddr, name: &str, t: RecordType) -> Message {
    udp_exchange(server, &query(name, t)).await
}

async fn tcp(server: SocketAddr, name: &str, t: RecordType) -> Message {
    let q = query(name, t);
    let bytes = q.to_vec().unwrap();
    let exchange = async {
        let mut s = TcpStream::connect(server).await.unwrap();
        s.write_all(&(bytes.len() as u16).to_be_bytes())
            .await
            .unwrap();
        s.write_all(&bytes).await.unwrap();
        let len = s.read_u16().await.unwrap();
        let mut buf = vec![0u8; usize::from(len)];
        s.read_exact(&mut buf).await.unwrap();
        buf
    };
    let buf = tokio::time::timeout(WAIT, exchange)
        .await
        .expect("an answer in time");
    let m = Message::from_vec(&buf).unwrap();
    assert_eq!(m.metadata.id, q.metadata.id);
    m
}

fn data(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
    v.sort();
    v
}

fn cluster() -> Dns {
    let dns = Dns::new("cluster.local", vec![]);
    let services = vec![
        Arc::new(service(
            "default",
            "web",
            "10.43.0.15",
            vec![port("http", 80, "TCP")],
        )),
        Arc::new(service("db", "pg", "None", vec![port("pg", 5432, "TCP")])),
        Arc::new(service("db", "big", "None", vec![])),
    ];
    let many: Vec<String> = (0..100).map(|i| format!("10.42.3.{i}")).collect();
    let many: Vec<(&str, Option<&str>, Option<bool>)> = many
        .iter()
        .map(|ip| (ip.as_str(), None, Some(true)))
        .collect();
    let slices = vec![
        Arc::new(slice(
            "db",
            "pg",
            "pg-1",
            &[
                ("10.42.0.5", Some("pg-0"), Some(true)),
                ("10.42.0.6", Some("pg-1"), Some(false)),
            ],
            &[("pg", 5432)],
        )),
        Arc::new(slice("db", "big", "big-1", &many, &[])),
    ];
    dns.update(&services, &slices);
    dns
}

#[tokio::test]
async fn cluster_names_are_answered_over_udp_and_tcp() {
    let server = start(cluster()).await;
    let m = udp(server.addr, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert_eq!(data(&m), ["10.43.0.15"]);
    assert_eq!(m.answers[0].ttl, 5);

    // Case is kept as asked.
    let m = tcp(server.addr, "Web.Default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(data(&m), ["10.43.0.15"]);
    assert_eq!(
        m.answers[0].name.to_ascii(),
        "Web.Default.svc.cluster.local."
    );

    let m = tcp(
        server.addr,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    assert_eq!(data(&m), ["0 100 80 web.default.svc.cluster.local."]);
    assert_eq!(m.additionals.len(), 1);

    let m = udp(server.addr, "15.0.43.10.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(data(&m), ["web.default.svc.cluster.local."]);

    let m = udp(server.addr, "pg.db.svc.cluster.local.", RecordType::A).await;
    assert_eq!(data(&m), ["10.42.0.5"]);
    let m = udp(
        server.addr,
        "_pg._tcp.pg.db.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    assert_eq!(data(&m), ["0 100 5432 pg-0.pg.db.svc.cluster.local."]);

    let m = udp(
        server.addr,
        "nope.default.svc.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.answers.is_empty());
    assert_eq!(m.authorities.len(), 1);
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    assert_eq!(m.authorities[0].ttl, 5);

    let m = udp(
        server.addr,
        "web.default.svc.cluster.local.",
        RecordType::AAAA,
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
}

#[tokio::test]
async fn answers_too_large_for_udp_are_truncated_and_whole_over_tcp() {
    let server = start(cluster()).await;
    let m = udp(server.addr, "big.db.svc.cluster.local.", RecordType::A).await;
    assert!(m.metadata.truncation);
    assert!(m.answers.is_empty());
    let m = tcp(server.addr, "big.db.svc.cluster.local.", RecordType::A).await;
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 100);
    // With a large EDNS payload size it fits over UDP.
    let mut q = query("big.db.svc.cluster.local.", RecordType::A);
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    q.edns = Some(edns);
    let m = udp_exchange(server.addr, &q).await;
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 100);
    assert!(m.edns.is_some());
}

/// A small upstream server on loopback: answers every A query with 192.0.2.1 over UDP
/// and TCP; with `truncate_udp`, its UDP answers are empty and truncated.
struct Upstream {
    addr: SocketAddr,
    udp_queries: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn upstream_answer(raw: &[u8], truncate: bool) -> Vec<u8> {
    let q = Message::from_vec(raw).unwrap();
    let mut m = Message::response(q.metadata.id, q.metadata.op_code);
    m.metadata.recursion_desired = q.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.queries = q.queries.clone();
    if truncate {
        m.metadata.truncation = true;
    } else {
        let name = q.queries[0].name().clone();
        m.answers.push(Record::from_rdata(
            name,
            300,
            RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
        ));
    }
    m.to_vec().unwrap()
}

async fn upstream(truncate_udp: bool) -> Upstream {
    let Sockets { udp, tcp } = Sockets::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = udp.local_addr().unwrap();
    let udp_queries = Arc::new(AtomicUsize::new(0));
    let count = udp_queries.clone();
    let u = tokio::spawn(async move {
        let mut buf = vec![0u8; 65535];
        while let Ok((n, from)) = udp.recv_from(&mut buf).await {
            count.fetch_add(1, Ordering::SeqCst);
            let answer = upstream_answer(&buf[..n], truncate_udp);
            let _ = udp.send_to(&answer, from).await;
        }
    });
    let t = tokio::spawn(async move {
        while let Ok((mut s, _)) = tcp.accept().await {
            let Ok(len) = s.read_u16().await else {
                continue;
            };
            let mut raw = vec![0u8; usize::from(len)];
            if s.read_exact(&mut raw).await.is_err() {
                continue;
            }
            let answer = upstream_answer(&raw, false);
            let _ = s.write_all(&(answer.len() as u16).to_be_bytes()).await;
            let _ = s.write_all(&answer).await;
        }
    });
    Upstream {
        addr,
        udp_queries,
        tasks: vec![u, t],
    }
}

#[tokio::test]
async fn other_names_are_forwarded_with_the_client_id() {
    let up = upstream(false).await;
    let server = start(Dns::new("cluster.local", vec![up.addr])).await;
    let m = udp(server.addr, "example.com.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(!m.metadata.authoritative);
    assert_eq!(data(&m), ["192.0.2.1"]);
    assert_eq!(m.answers[0].ttl, 300);
    let m = tcp(server.addr, "example.org.", RecordType::A).await;
    assert_eq!(data(&m), ["192.0.2.1"]);
    // Reverse names of addresses outside the cluster go upstream as well.
    let m = udp(server.addr, "1.2.0.192.in-addr.arpa.", RecordType::A).await;
    assert_eq!(data(&m), ["192.0.2.1"]);
    assert_eq!(up.udp_queries.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn truncated_upstream_answers_are_asked_again_over_tcp() {
    let up = upstream(true).await;
    let server = start(Dns::new("cluster.local", vec![up.addr])).await;
    let m = udp(server.addr, "example.com.", RecordType::A).await;
    assert!(!m.metadata.truncation);
    assert_eq!(data(&m), ["192.0.2.1"]);
    let m = tcp(server.addr, "example.com.", RecordType::A).await;
    assert_eq!(data(&m), ["192.0.2.1"]);
}

#[tokio::test]
async fn a_silent_upstream_is_passed_over_and_none_answering_is_servfail() {
    // Bound and never read: queries to it go unanswered.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let up = upstream(false).await;
    let dns = Dns::new("cluster.local", vec![silent_addr, up.addr])
        .with_forward_timeout(Duration::from_millis(200));
    let server = start(dns).await;
    let m = udp(server.addr, "example.com.", RecordType::A).await;
    assert_eq!(data(&m), ["192.0.2.1"]);

    let dns = Dns::new("cluster.local", vec![silent_addr])
        .with_forward_timeout(Duration::from_millis(200));
    let server = start(dns).await;
    let m = udp(server.addr, "example.com.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(m.queries.len(), 1);
    let m = tcp(server.addr, "example.com.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    drop(silent);
}

#[tokio::test]
async fn updates_are_seen_by_the_next_query() {
    let dns = Arc::new(Dns::new("cluster.local", vec![]));
    let q = query("web.default.svc.cluster.local.", RecordType::A);
    let reply = dns.answer(&q).unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    dns.update(
        &[Arc::new(service("default", "web", "10.43.0.15", vec![]))],
        &[],
    );
    let reply = dns.answer(&q).unwrap();
    assert_eq!(data(&reply), ["10.43.0.15"]);
    assert!(dns.answer(&query("example.com.", RecordType::A)).is_none());
}
