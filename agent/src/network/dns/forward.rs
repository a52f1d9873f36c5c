//! Forwarding names outside the cluster zone to the host's resolvers: the query's bytes
//! as they came (under a fresh random id), over UDP, again over TCP when the answer is
//! truncated, the next server when one fails or stays silent; the answer's bytes as
//! they came back, under the client's id.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{timeout_at, Instant};

/// The largest DNS message (the TCP length prefix is 16 bits).
pub const MAX_MESSAGE: usize = 65535;

/// Why one upstream gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The exchange failed on the network.
    #[error("{proto} exchange with {server}")]
    Io {
        /// `udp` or `tcp`.
        proto: &'static str,
        /// The upstream server.
        server: SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// No answer came in time.
    #[error("{proto} exchange with {server} timed out")]
    Timeout {
        /// `udp` or `tcp`.
        proto: &'static str,
        /// The upstream server.
        server: SocketAddr,
    },
}

/// The header's flags byte that holds QR (response) and TC (truncated).
const FLAGS: usize = 2;
const QR: u8 = 0x80;
const TC: u8 = 0x02;

fn id_of(message: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*message.first()?, *message.get(1)?]))
}

fn set_id(message: &mut [u8], id: u16) {
    if message.len() >= 2 {
        message[..2].copy_from_slice(&id.to_be_bytes());
    }
}

/// Whether `message` is a response to the query with `id`.
fn answers(message: &[u8], id: u16) -> bool {
    message.len() >= 12 && id_of(message) == Some(id) && message[FLAGS] & QR != 0
}

/// Whether a response says it was truncated.
pub fn truncated(message: &[u8]) -> bool {
    message.get(FLAGS).is_some_and(|f| f & TC != 0)
}

/// The forwarding side of cluster DNS.
#[derive(Debug, Clone)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
}

impl Forwarder {
    /// Forwards to `upstreams` in order, waiting `timeout` for each.
    pub fn new(upstreams: Vec<SocketAddr>, timeout: Duration) -> Forwarder {
        Forwarder { upstreams, timeout }
    }

    /// The servers asked, in order.
    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// The first answer an upstream gives to `query` (a whole DNS message), with the
    /// query's id; `None` when none answers. With `udp_limit` (the client asked over
    /// UDP and takes messages up to that size) a full answer fetched over TCP that does
    /// not fit is replaced by the truncated one, so the client asks again over TCP.
    pub async fn forward(&self, query: &[u8], udp_limit: Option<usize>) -> Option<Vec<u8>> {
        let client_id = id_of(query)?;
        let mut outgoing = query.to_vec();
        for &server in &self.upstreams {
            // A fresh id per server: a late answer of the previous one is not taken.
            let id = rand::random::<u16>();
            set_id(&mut outgoing, id);
            let mut answer = match udp_exchange(server, &outgoing, id, self.timeout).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(error = %super::chain(&e), "upstream DNS server did not answer");
                    continue;
                }
            };
            if truncated(&answer) {
                match tcp_exchange(server, &outgoing, id, self.timeout).await {
                    Ok(full) if udp_limit.is_none_or(|limit| full.len() <= limit) => {
                        answer = full;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %super::chain(&e), "upstream DNS server did not answer over tcp; relaying the truncated answer");
                    }
                }
            }
            set_id(&mut answer, client_id);
            return Some(answer);
        }
        None
    }
}

async fn udp_exchange(
    server: SocketAddr,
    query: &[u8],
    id: u16,
    wait: Duration,
) -> Result<Vec<u8>, Error> {
    let io = |source| Error::Io {
        proto: "udp",
        server,
        source,
    };
    let local: SocketAddr = if server.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await.map_err(io)?;
    // Connected: the kernel drops datagrams from any other address.
    socket.connect(server).await.map_err(io)?;
    socket.send(query).await.map_err(io)?;
    let deadline = Instant::now() + wait;
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let n = match timeout_at(deadline, socket.recv(&mut buf)).await {
            Ok(r) => r.map_err(io)?,
            Err(_) => {
                return Err(Error::Timeout {
                    proto: "udp",
                    server,
                })
            }
        };
        if answers(&buf[..n], id) {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn tcp_exchange(
    server: SocketAddr,
    query: &[u8],
    id: u16,
    wait: Duration,
) -> Result<Vec<u8>, Error> {
    let io = |source| Error::Io {
        proto: "tcp",
        server,
        source,
    };
    let exchange = async {
        let mut stream = TcpStream::connect(server).await.map_err(io)?;
        let len = u16::try_from(query.len()).map_err(|_| {
            io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "query too long",
            ))
        })?;
        let mut framed = Vec::with_capacity(query.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(query);
        stream.write_all(&framed).await.map_err(io)?;
        loop {
            let len = stream.read_u16().await.map_err(io)?;
            let mut answer = vec![0u8; usize::from(len)];
            stream.read_exact(&mut answer).await.map_err(io)?;
            if answers(&answer, id) {
                return Ok(answer);
            }
        }
    };
    match tokio::time::timeout(wait, exchange).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout {
            proto: "tcp",
            server,
        }),
    }
}
