//! Cluster DNS, answered by every node from its own watch of Services and
//! EndpointSlices: what CoreDNS is to K3s, in-process.
//!
//! - [`index`]: the cluster zone, prebuilt into a hash map so an answer is one look-up.
//!   [`Dns::update`] builds a new one and swaps it in; readers only clone an `Arc`.
//! - [`forward`]: other names go to the host's resolvers ([`resolv`] reads them), their
//!   answers relayed as they come.
//! - [`Dns::serve`]: UDP and TCP on the address the node gives (the bridge's gateway;
//!   the service proxy sends the cluster DNS address there). A cluster name is answered
//!   on the receiving task itself; a forwarded one gets its own task.
//!
//! Messages are parsed and encoded with hickory's protocol crate. Its server crate is
//! not used: it answers through a chain of tasks and channels, logs each query at info
//! level, and cannot relay an upstream's bytes as they are.

pub mod forward;
pub mod index;
pub mod resolv;

pub use index::{Answer, Index};
pub use resolv::{host_resolv_conf, merge_option, upstreams, ClusterDns, ResolvConf};

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::DNSClass;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// How long an upstream server has to answer before the next one is asked.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a TCP client may stay silent before its connection is closed.
pub const TCP_IDLE: Duration = Duration::from_secs(10);
/// At most this many UDP queries wait on upstream servers at once.
pub const MAX_FORWARDS: usize = 1024;
/// The UDP payload size skiff offers in its EDNS answers (the DNS flag day's value).
pub const EDNS_PAYLOAD: u16 = 1232;

/// Errors of the DNS server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket could not be bound.
    #[error("binding {proto} {addr}")]
    Bind {
        /// `udp` or `tcp`.
        proto: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The UDP socket failed in a way it does not recover from.
    #[error("receiving on udp {addr}")]
    Receive {
        /// The address served.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The TCP listener failed in a way it does not recover from.
    #[error("accepting on tcp {addr}")]
    Accept {
        /// The address served.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error with its causes, for logs.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// The sockets a [`Dns`] serves: UDP and TCP on one address.
#[derive(Debug)]
pub struct Sockets {
    udp: UdpSocket,
    tcp: TcpListener,
}

impl Sockets {
    /// Binds UDP on `addr`, then TCP on the same address and port. With port 0 the
    /// port is the one the kernel gave UDP; when TCP finds that port taken, another
    /// is tried, a few times.
    pub async fn bind(addr: SocketAddr) -> Result<Sockets> {
        const ATTEMPTS: usize = 8;
        let mut attempt = 1;
        loop {
            let udp = UdpSocket::bind(addr).await.map_err(|source| Error::Bind {
                proto: "udp",
                addr,
                source,
            })?;
            let bound = udp.local_addr().map_err(|source| Error::Bind {
                proto: "udp",
                addr,
                source,
            })?;
            match TcpListener::bind(bound).await {
                Ok(tcp) => return Ok(Sockets { udp, tcp }),
                Err(e)
                    if addr.port() == 0
                        && e.kind() == io::ErrorKind::AddrInUse
                        && attempt < ATTEMPTS =>
                {
                    attempt += 1;
                }
                Err(source) => {
                    return Err(Error::Bind {
                        proto: "tcp",
                        addr: bound,
                        source,
                    })
                }
            }
        }
    }

    /// The address served.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.udp.local_addr()
    }
}

/// What one request comes to.
enum Outcome {
    /// Send this message.
    Reply(Message),
    /// Ask upstream; send back its answer, or this SERVFAIL when none answers.
    Forward(Message),
    /// Say nothing (not a query).
    Drop,
}

/// The node's cluster DNS server.
pub struct Dns {
    domain: String,
    index: RwLock<Arc<Index>>,
    forwarder: forward::Forwarder,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns")
            .field("domain", &self.domain)
            .field("upstreams", &self.forwarder.upstreams())
            .finish()
    }
}

impl Dns {
    /// A server for `cluster_domain` (e.g. `cluster.local`) that forwards other names to
    /// `upstreams`, with an empty zone until [`Dns::update`].
    pub fn new(cluster_domain: &str, upstreams: Vec<SocketAddr>) -> Dns {
        Dns {
            domain: cluster_domain.to_string(),
            index: RwLock::new(Arc::new(Index::empty(cluster_domain))),
            forwarder: forward::Forwarder::new(upstreams, FORWARD_TIMEOUT),
        }
    }

    /// The same server, waiting `timeout` for each upstream server.
    pub fn with_forward_timeout(mut self, timeout: Duration) -> Dns {
        self.forwarder = forward::Forwarder::new(self.forwarder.upstreams().to_vec(), timeout);
        self
    }

    /// Rebuilds the zone from all Services and EndpointSlices and swaps it in. Queries
    /// answered meanwhile see the previous zone.
    pub fn update(&self, services: &[Arc<Service>], slices: &[Arc<EndpointSlice>]) {
        let next = Arc::new(Index::build(&self.domain, services, slices));
        // A writer that panicked left a whole index behind: keep going with it.
        let mut current = self.index.write().unwrap_or_else(|e| e.into_inner());
        *current = next;
    }

    /// The zone queries are answered from now.
    pub fn index(&self) -> Arc<Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Answers UDP and TCP on `addr` until `cancel` fires.
    pub async fn serve(self: Arc<Self>, addr: SocketAddr, cancel: CancellationToken) -> Result<()> {
        let sockets = Sockets::bind(addr).await?;
        self.serve_on(sockets, cancel).await
    }

    /// Answers on sockets already bound until `cancel` fires.
    pub async fn serve_on(
        self: Arc<Self>,
        sockets: Sockets,
        cancel: CancellationToken,
    ) -> Result<()> {
        let addr = sockets.local_addr().map_err(|source| Error::Receive {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })?;
        tracing::info!(%addr, domain = %self.domain, upstreams = ?self.forwarder.upstreams(), "cluster DNS listening");
        let udp = self
            .clone()
            .serve_udp(Arc::new(sockets.udp), addr, cancel.clone());
        let tcp = self.serve_tcp(sockets.tcp, addr, cancel);
        tokio::try_join!(udp, tcp).map(|_| ())
    }

    async fn serve_udp(
        self: Arc<Self>,
        socket: Arc<UdpSocket>,
        addr: SocketAddr,
        cancel: CancellationToken,
    ) -> Result<()> {
        let mut forwards = tokio::task::JoinSet::new();
        let mut buf = vec![0u8; forward::MAX_MESSAGE];
        loop {
            let received = tokio::select! {
                () = cancel.cancelled() => break,
                r = socket.recv_from(&mut buf) => r,
            };
            let (n, src) = match received {
                Ok(r) => r,
                Err(e) if transient(&e) => {
                    tracing::debug!(error = %e, "udp receive failed; going on");
                    continue;
                }
                Err(source) => return Err(Error::Receive { addr, source }),
            };
            let raw = &buf[..n];
            let (outcome, limit) = self.handle(raw);
            let limit = usize::from(limit);
            match outcome {
                Outcome::Drop => {}
                Outcome::Reply(m) => {
                    if let Some(bytes) = encode(&m, Some(limit)) {
                        send(&socket, &bytes, src).await;
                    }
                }
                Outcome::Forward(mut servfail) if forwards.len() >= MAX_FORWARDS => {
                    // Too many already waiting on upstreams: refuse rather than grow
                    // without bound (CoreDNS's forward plugin does the same).
                    servfail.metadata.response_code = ResponseCode::Refused;
                    if let Some(bytes) = encode(&servfail, Some(limit)) {
                        send(&socket, &bytes, src).await;
                    }
                }
                Outcome::Forward(servfail) => {
                    let (me, socket, raw) = (self.clone(), socket.clone(), raw.to_vec());
                    forwards.spawn(async move {
                        let bytes = match me.forwarder.forward(&raw, Some(limit)).await {
                            Some(b) => Some(b),
                            None => encode(&servfail, Some(limit)),
                        };
                        if let Some(bytes) = bytes {
                            send(&socket, &bytes, src).await;
                        }
                    });
                }
            }
            while forwards.try_join_next().is_some() {}
        }
        forwards.abort_all();
        Ok(())
    }

    async fn serve_tcp(
        self: Arc<Self>,
        listener: TcpListener,
        addr: SocketAddr,
        cancel: CancellationToken,
    ) -> Result<()> {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let accepted = tokio::select! {
                () = cancel.cancelled() => break,
                r = listener.accept() => r,
            };
            match accepted {
                Ok((stream, _)) => {
                    let me = self.clone();
                    connections.spawn(async move { me.connection(stream).await });
                }
                Err(e) if transient(&e) => {
                    tracing::debug!(error = %e, "tcp accept failed; going on");
                    // Out of descriptors: give connections a moment to close.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(source) => return Err(Error::Accept { addr, source }),
            }
            while connections.try_join_next().is_some() {}
        }
        connections.abort_all();
        Ok(())
    }

    /// Answers one TCP client's messages (length-prefixed) one after another, until it
    /// closes the connection or stays idle for [`TCP_IDLE`].
    async fn connection(&self, mut stream: TcpStream) {
        loop {
            let len = match tokio::time::timeout(TCP_IDLE, stream.read_u16()).await {
                Ok(Ok(len)) => usize::from(len),
                Ok(Err(_)) | Err(_) => return,
            };
            let mut raw = vec![0u8; len];
            match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut raw)).await {
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => return,
            }
            let bytes = match self.handle(&raw).0 {
                Outcome::Drop => continue,
                Outcome::Reply(m) => encode(&m, None),
                Outcome::Forward(servfail) => match self.forwarder.forward(&raw, None).await {
                    Some(b) => Some(b),
                    None => encode(&servfail, None),
                },
            };
            let Some(bytes) = bytes else { continue };
            let Ok(len) = u16::try_from(bytes.len()) else {
                continue;
            };
            let mut framed = Vec::with_capacity(bytes.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&bytes);
            if stream.write_all(&framed).await.is_err() {
                return;
            }
        }
    }

    /// Decides what to do with one request; also says the largest UDP answer its
    /// sender takes (its EDNS payload size, at least 512).
    fn handle(&self, raw: &[u8]) -> (Outcome, u16) {
        let request = match Message::from_vec(raw) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "undecodable DNS message");
                return (unparsable(raw), 512);
            }
        };
        let limit = request.max_payload();
        if request.metadata.message_type != MessageType::Query {
            return (Outcome::Drop, limit);
        }
        if request.metadata.op_code != OpCode::Query {
            return (
                Outcome::Reply(error_reply(&request, ResponseCode::NotImp)),
                limit,
            );
        }
        let [query] = request.queries.as_slice() else {
            return (
                Outcome::Reply(error_reply(&request, ResponseCode::FormErr)),
                limit,
            );
        };
        if query.query_class() == DNSClass::IN {
            if let Some(reply) = self.answer(&request) {
                return (Outcome::Reply(reply), limit);
            }
        }
        (
            Outcome::Forward(error_reply(&request, ResponseCode::ServFail)),
            limit,
        )
    }

    /// The authoritative answer to `request` (one query), or `None` when the name is
    /// not one this server answers for.
    pub fn answer(&self, request: &Message) -> Option<Message> {
        let query = request.queries.first()?;
        let index = self.index();
        let mut reply = reply_to(request);
        reply.metadata.authoritative = true;
        match index.lookup(query) {
            Answer::Elsewhere => return None,
            Answer::Records {
                answers,
                additionals,
            } => {
                // Owners in the question's spelling: resolvers that randomize case
                // compare them.
                reply.answers = answers
                    .into_iter()
                    .map(|mut r| {
                        r.name = query.name().clone();
                        r
                    })
                    .collect();
                reply.additionals = additionals;
            }
            Answer::NoData => reply.authorities.push(index.soa().clone()),
            Answer::NxDomain => {
                reply.metadata.response_code = ResponseCode::NXDomain;
                reply.authorities.push(index.soa().clone());
            }
        }
        Some(reply)
    }
}

/// A response to `request` with its id, opcode, RD and CD and question, recursion
/// available, and an EDNS record when the request had one.
fn reply_to(request: &Message) -> Message {
    let mut reply = Message::new(
        request.metadata.id,
        MessageType::Response,
        request.metadata.op_code,
    );
    reply.metadata = Metadata::response_from_request(&request.metadata);
    reply.metadata.recursion_available = true;
    reply.queries = request.queries.clone();
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        reply.edns = Some(edns);
    }
    reply
}

fn error_reply(request: &Message, code: ResponseCode) -> Message {
    let mut reply = reply_to(request);
    reply.metadata.response_code = code;
    reply
}

/// FORMERR for a query whose header can be read but whose body cannot.
fn unparsable(raw: &[u8]) -> Outcome {
    if raw.len() < 12 || raw[2] & 0x80 != 0 {
        return Outcome::Drop;
    }
    let id = u16::from_be_bytes([raw[0], raw[1]]);
    Outcome::Reply(Message::error_msg(id, OpCode::Query, ResponseCode::FormErr))
}

/// The message's bytes; over UDP (`limit`), the truncated form when they do not fit.
fn encode(message: &Message, limit: Option<usize>) -> Option<Vec<u8>> {
    let bytes = match message.to_vec() {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "cannot encode a DNS answer");
            return None;
        }
    };
    match limit {
        Some(limit) if bytes.len() > limit => message.truncate().to_vec().ok(),
        _ => Some(bytes),
    }
}

async fn send(socket: &UdpSocket, bytes: &[u8], to: SocketAddr) {
    if let Err(e) = socket.send_to(bytes, to).await {
        tracing::debug!(%to, error = %e, "cannot send a DNS answer");
    }
}

/// Errors a socket goes on after (a client's ICMP error, a connection reset before it
/// was accepted, descriptors running out for a moment).
fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    ) || e.raw_os_error() == Some(24) // EMFILE
        || e.raw_os_error() == Some(23) // ENFILE
}

#[cfg(test)]
mod tests;
