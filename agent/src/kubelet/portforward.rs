//! `kubectl port-forward` on the node: `/portForward/{namespace}/{pod}`.
//!
//! The client speaks SPDY/3.1 ([`super::spdy`]), either tunneled in a WebSocket that
//! negotiated the subprotocol `SPDY/3.1+portforward.k8s.io` (kubectl 1.31 and later,
//! PortForwardWebsockets) or after a plain `Upgrade: SPDY/3.1` with
//! `X-Stream-Protocol-Version: portforward.k8s.io` (older kubectl, and newer ones when the
//! WebSocket upgrade is refused).
//!
//! For every local connection the client opens two streams, with headers `streamType`
//! (`error` or `data`), `port` and `requestID`. Once both of a request are there, the data
//! stream is joined to a TCP connection to 127.0.0.1:port inside the pod's network
//! namespace; a connection that fails is reported on the error stream (kubectl then stops
//! forwarding, as with upstream's kubelet). Both streams end with FIN.

use super::api::Body;
use super::spdy::{self, Stream, StreamReader, StreamWriter};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;

/// The port-forward protocol spoken over SPDY (`X-Stream-Protocol-Version`).
pub const PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket subprotocol of SPDY tunneled in WebSocket binary messages (KEP-4006).
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// The header that offers, and answers with, SPDY stream protocols.
const STREAM_PROTOCOL_HEADER: &str = "x-stream-protocol-version";
/// How long the second stream of a request may take to follow the first (upstream's
/// default streamCreationTimeout).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting to the pod's port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How much is read from the pod at once (one data frame).
const CHUNK: usize = 32 * 1024;

/// Why forwarding one connection failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pod's network namespace could not be entered.
    #[error("entering the pod's network namespace {path}")]
    Namespace {
        /// The namespace file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Nothing answered on the port, over IPv4 nor IPv6.
    #[error("connecting to port {port}: IPv4: {v4}; IPv6: {v6}")]
    Connect {
        /// The port.
        port: u16,
        /// Why 127.0.0.1 failed.
        v4: std::io::Error,
        /// Why ::1 failed.
        v6: std::io::Error,
    },
    /// The connecting thread could not run or hand its connection over.
    #[error("the connecting thread")]
    Thread(#[source] std::io::Error),
}

/// The pod whose ports are forwarded.
#[derive(Debug, Clone)]
pub struct Target {
    /// The pod's name, for messages.
    pub pod: String,
    /// The pod's uid, for messages.
    pub uid: String,
    /// The pod's network namespace file; `None` for hostNetwork pods.
    pub netns: Option<PathBuf>,
}

/// A refused request: its HTTP status, `Status` reason and message.
pub type Refusal = (u16, &'static str, String);

/// Which transport the client asked for.
enum Upgrade {
    /// A WebSocket tunneling SPDY; the `Sec-WebSocket-Accept` value.
    Tunnel(String),
    /// SPDY directly; the negotiated stream protocol, if the client offered any.
    Spdy(Option<&'static str>),
}

/// The comma-separated values of all `name` headers.
fn offered(headers: &HeaderMap, name: impl header::AsHeaderName) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    offered(headers, name)
        .iter()
        .any(|v| v.eq_ignore_ascii_case(token))
}

/// What the client asked for, or why it cannot have it.
fn negotiate(headers: &HeaderMap) -> Result<Upgrade, Refusal> {
    if header_has(headers, header::UPGRADE, "websocket") {
        let key = headers.get(header::SEC_WEBSOCKET_KEY).ok_or((
            400,
            "BadRequest",
            "a WebSocket upgrade without a key".into(),
        ))?;
        let protocols = offered(headers, header::SEC_WEBSOCKET_PROTOCOL);
        if !protocols.iter().any(|p| p == TUNNEL_PROTOCOL) {
            return Err((
                400,
                "BadRequest",
                format!(
                    "unable to upgrade: none of the WebSocket subprotocols {protocols:?} is \
                     spoken for port-forward; use {TUNNEL_PROTOCOL:?}"
                ),
            ));
        }
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        return Ok(Upgrade::Tunnel(accept));
    }
    let spdy = offered(headers, header::UPGRADE)
        .iter()
        .any(|u| u.to_ascii_lowercase().starts_with("spdy/3.1"));
    if !spdy || !header_has(headers, header::CONNECTION, "upgrade") {
        return Err((400, "BadRequest", "Upgrade request required".into()));
    }
    let protocols = offered(headers, STREAM_PROTOCOL_HEADER);
    if protocols.is_empty() {
        // Clients from before stream protocols were negotiated.
        return Ok(Upgrade::Spdy(None));
    }
    if protocols.iter().any(|p| p == PROTOCOL) {
        return Ok(Upgrade::Spdy(Some(PROTOCOL)));
    }
    Err((
        403,
        "Forbidden",
        format!(
            "unable to upgrade: unable to negotiate protocol: client supports {protocols:?}, \
             server supports [{PROTOCOL:?}]"
        ),
    ))
}

/// Answers the upgrade (101) and forwards the pod's ports over the connection it gives.
pub fn handle(target: Target, req: Request<Incoming>) -> Result<Response<Body>, Refusal> {
    let upgrade = negotiate(req.headers())?;
    let mut resp = Response::new(super::api::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    let tunnel = match upgrade {
        Upgrade::Tunnel(accept) => {
            h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            let accept = HeaderValue::from_str(&accept)
                .map_err(|e| (500, "InternalError", e.to_string()))?;
            h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
            h.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(TUNNEL_PROTOCOL),
            );
            true
        }
        Upgrade::Spdy(protocol) => {
            h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
            if let Some(p) = protocol {
                h.insert(STREAM_PROTOCOL_HEADER, HeaderValue::from_static(p));
            }
            false
        }
    };
    let target = Arc::new(target);
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => hyper_util::rt::TokioIo::new(u),
            Err(e) => {
                tracing::debug!(error = %e, "port-forward upgrade failed");
                return;
            }
        };
        if tunnel {
            let ws =
                tokio_tungstenite::WebSocketStream::from_raw_socket(upgraded, Role::Server, None)
                    .await;
            serve(target, untunnel(ws)).await;
        } else {
            serve(target, upgraded).await;
        }
    });
    Ok(resp)
}

/// The byte stream that the binary messages of `ws` carry, both ways: a message may hold
/// any piece of the SPDY byte stream, and every write goes out as one message.
fn untunnel<S>(ws: tokio_tungstenite::WebSocketStream<S>) -> tokio::io::DuplexStream
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (mut from_spdy, mut to_spdy) = tokio::io::split(theirs);
    let (mut sink, mut messages) = ws.split();
    // Each direction on its own task, so a slow one never holds up the other.
    tokio::spawn(async move {
        while let Some(msg) = messages.next().await {
            match msg {
                Ok(Message::Binary(b)) => {
                    if to_spdy.write_all(&b).await.is_err() {
                        break;
                    }
                }
                Ok(Message::Close(_)) | Err(_) => break,
                // tungstenite answers pings itself; text is not part of the tunnel.
                Ok(_) => {}
            }
        }
        // The client is gone: the SPDY session sees the end of its input.
        let _ = to_spdy.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from_spdy.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink.send(Message::binary(buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            }
        }
        // A close without a code (1005) reads as an error to Go clients: say 1000.
        use tokio_tungstenite::tungstenite::protocol::frame::{coding::CloseCode, CloseFrame};
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        let _ = sink.send(Message::Close(Some(frame))).await;
        let _ = sink.close().await;
    });
    ours
}

/// What a stream is for, from its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Error,
    Data,
}

/// A stream's kind, port and request id, checked as upstream's kubelet does.
fn classify(s: &Stream) -> Result<(Kind, u16, String), String> {
    let port = s
        .header("port")
        .ok_or("\"port\" header is required")?
        .to_string();
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or(format!("{port:?} is not a valid port"))?;
    let kind = match s.header("streamtype") {
        Some("error") => Kind::Error,
        Some("data") => Kind::Data,
        Some(other) => return Err(format!("invalid stream type {other:?}")),
        None => return Err("\"streamType\" header is required".into()),
    };
    let request = match s.header("requestid") {
        Some(r) if !r.is_empty() => r.to_string(),
        // Clients from before requestID: the error stream comes first, the data stream
        // next, with consecutive odd ids.
        _ => match kind {
            Kind::Error => s.id().to_string(),
            Kind::Data => s.id().saturating_sub(2).to_string(),
        },
    };
    Ok((kind, port, request))
}

/// The streams of one request as they arrive; the port is the data stream's.
#[derive(Default)]
struct Pair {
    error: Option<Stream>,
    data: Option<(Stream, u16)>,
}

/// Runs a SPDY session on `io`, forwarding each request's streams once both are there.
async fn serve<T>(target: Arc<Target>, io: T)
where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let mut session = spdy::Session::start(io);
    let mut pending: HashMap<String, Pair> = HashMap::new();
    let (expired_tx, mut expired) = mpsc::unbounded_channel::<String>();
    loop {
        tokio::select! {
            stream = session.accept() => {
                let Some(stream) = stream else { break };
                let (kind, port, request) = match classify(&stream) {
                    Ok(c) => c,
                    Err(why) => {
                        tracing::debug!(pod = %target.pod, %why, "port-forward stream refused");
                        let _ = stream.reset(spdy::status::PROTOCOL_ERROR).await;
                        continue;
                    }
                };
                if stream.reply().await.is_err() {
                    break;
                }
                let pair = pending.entry(request.clone()).or_insert_with(|| {
                    let (tx, request) = (expired_tx.clone(), request.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep(STREAM_CREATION_TIMEOUT).await;
                        let _ = tx.send(request);
                    });
                    Pair::default()
                });
                let taken = match kind {
                    Kind::Error => pair.error.is_some(),
                    Kind::Data => pair.data.is_some(),
                };
                if taken {
                    // Upstream reports this on the request's error stream.
                    let msg = format!(
                        "error processing stream for request {request}: \
                         {kind:?} stream already assigned"
                    );
                    tracing::debug!(pod = %target.pod, %msg, "port-forward");
                    let _ = stream.reset(spdy::status::PROTOCOL_ERROR).await;
                    if let Some(e) = &pair.error {
                        let _ = e.writer().send(Bytes::from(msg)).await;
                    }
                    continue;
                }
                match kind {
                    Kind::Error => pair.error = Some(stream),
                    Kind::Data => pair.data = Some((stream, port)),
                }
                if pair.error.is_some() && pair.data.is_some() {
                    if let Some(Pair { error: Some(error), data: Some((data, port)) }) =
                        pending.remove(&request)
                    {
                        tokio::spawn(forward(target.clone(), port, error, data));
                    }
                }
            }
            Some(request) = expired.recv() => {
                // Still waiting for its second stream: give up on it, as upstream does.
                if let Some(pair) = pending.remove(&request) {
                    let msg = format!("timed out waiting for streams of request {request}");
                    tracing::debug!(pod = %target.pod, %msg, "port-forward");
                    if let Some(e) = pair.error {
                        let (_, w) = e.split();
                        let _ = w.send(Bytes::from(msg)).await;
                        let _ = w.finish().await;
                    }
                    if let Some((d, _)) = pair.data {
                        let _ = d.reset(spdy::status::CANCEL).await;
                    }
                }
            }
        }
    }
    session.close();
}

/// Joins the data stream of one request to the pod's port; a failure to connect is
/// written on the error stream. Both streams are finished at the end.
async fn forward(target: Arc<Target>, port: u16, error: Stream, data: Stream) {
    // The client writes nothing on the error stream (it finishes it at once).
    let (_, error) = error.split();
    let (rx, tx) = data.split();
    match connect(target.netns.clone(), port).await {
        Ok(tcp) => pump(tcp, rx, &tx).await,
        Err(e) => {
            let msg = format!(
                "error forwarding port {port} to pod {}, uid {}: {}",
                target.pod,
                target.uid,
                chain(&e)
            );
            tracing::debug!(%msg, "port-forward");
            let _ = error.send(Bytes::from(msg)).await;
        }
    }
    let _ = tx.finish().await;
    let _ = error.finish().await;
}

/// An error with its causes, for the one-line message kubectl prints.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// Copies between the stream and the pod's connection until the pod ends its side or the
/// stream is reset. The client finishing its side only shuts down the connection's
/// writing: the pod's answer still comes back.
async fn pump(tcp: tokio::net::TcpStream, mut rx: StreamReader, tx: &StreamWriter) {
    let _ = tcp.set_nodelay(true);
    let (mut from_pod, mut to_pod) = tcp.into_split();
    let upstream = async {
        loop {
            match rx.recv().await {
                Ok(Some(b)) => {
                    if to_pod.write_all(&b).await.is_err() {
                        return false;
                    }
                }
                Ok(None) => {
                    let _ = to_pod.shutdown().await;
                    return true;
                }
                Err(_) => return false,
            }
        }
    };
    let downstream = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match from_pod.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = tx.finish().await;
                    return;
                }
                Ok(n) => {
                    if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    tokio::pin!(upstream, downstream);
    tokio::select! {
        () = &mut downstream => {}
        half_closed = &mut upstream => {
            if half_closed {
                downstream.await;
            }
        }
    }
}

/// A TCP connection to `port` on the loopback of the network namespace `netns` (the
/// host's when `None`), made on a thread of its own that enters the namespace: a socket
/// stays in the namespace it was made in, and the thread ends with it.
async fn connect(netns: Option<PathBuf>, port: u16) -> Result<tokio::net::TcpStream, Error> {
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("port-forward".into())
        .spawn(move || {
            let _ = tx.send(connect_in(netns, port));
        })
        .map_err(Error::Thread)?;
    let stream = rx
        .await
        .map_err(|_| Error::Thread(std::io::Error::other("it ended without an answer")))??;
    stream.set_nonblocking(true).map_err(Error::Thread)?;
    tokio::net::TcpStream::from_std(stream).map_err(Error::Thread)
}

fn connect_in(netns: Option<PathBuf>, port: u16) -> Result<TcpStream, Error> {
    if let Some(path) = netns {
        let f = std::fs::File::open(&path).map_err(|source| Error::Namespace {
            path: path.clone(),
            source,
        })?;
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
            Error::Namespace {
                path,
                source: e.into(),
            }
        })?;
    }
    // As upstream's runtimes: IPv4 loopback first, then IPv6.
    let v4 = match TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        CONNECT_TIMEOUT,
    ) {
        Ok(s) => return Ok(s),
        Err(e) => e,
    };
    match TcpStream::connect_timeout(
        &SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
        CONNECT_TIMEOUT,
    ) {
        Ok(s) => Ok(s),
        Err(v6) => Err(Error::Connect { port, v4, v6 }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn upgrades_are_negotiated() {
        let ws = headers(&[
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-protocol", "SPDY/3.1+portforward.k8s.io"),
        ]);
        match negotiate(&ws) {
            Ok(Upgrade::Tunnel(accept)) => assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            _ => panic!("a tunnel"),
        }
        let other_ws = headers(&[
            ("upgrade", "websocket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-protocol", "v4.channel.k8s.io"),
        ]);
        assert_eq!(negotiate(&other_ws).err().map(|r| r.0), Some(400));
        let spdy = headers(&[
            ("upgrade", "SPDY/3.1"),
            ("connection", "Upgrade"),
            ("x-stream-protocol-version", "portforward.k8s.io"),
        ]);
        assert!(matches!(
            negotiate(&spdy),
            Ok(Upgrade::Spdy(Some("portforward.k8s.io")))
        ));
        let legacy = headers(&[("upgrade", "SPDY/3.1"), ("connection", "Upgrade")]);
        assert!(matches!(negotiate(&legacy), Ok(Upgrade::Spdy(None))));
        let unknown = headers(&[
            ("upgrade", "SPDY/3.1"),
            ("connection", "Upgrade"),
            ("x-stream-protocol-version", "v9.portforward.k8s.io"),
        ]);
        assert_eq!(negotiate(&unknown).err().map(|r| r.0), Some(403));
        assert_eq!(negotiate(&HeaderMap::new()).err().map(|r| r.0), Some(400));
    }

    #[tokio::test]
    async fn connecting_reaches_a_port_and_reports_a_closed_one() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut s = connect(None, port).await.unwrap();
        let (mut accepted, _) = listener.accept().unwrap();
        std::io::Write::write_all(&mut accepted, b"hi").unwrap();
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hi");
        drop(listener);
        let e = connect(None, port).await.unwrap_err();
        assert!(matches!(e, Error::Connect { .. }), "{e}");
        let e = connect(Some("/nonexistent/ns-net".into()), port)
            .await
            .unwrap_err();
        assert!(chain(&e).contains("/nonexistent/ns-net"), "{}", chain(&e));
    }
}
