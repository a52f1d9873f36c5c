//! The node's own API (HTTPS, mutual TLS): what the API server relays to the node. Only
//! the API server's client identity (`kube-apiserver-kubelet-client`) is let in.
//!
//! Served now: `/healthz`; `/containerLogs/{namespace}/{pod}/{container}` with
//! upstream's options (follow, previous, timestamps, tailLines, sinceSeconds,
//! sinceTime, limitBytes), read from the CRI log files; `/exec/{namespace}/{pod}/{container}`
//! and `/attach/{namespace}/{pod}/{container}` (`stream.rs`); `/portForward/{namespace}/{pod}`
//! (`portforward.rs`); `/stats/summary` and `/metrics/resource` (`stats.rs`).

use super::worker::labels;
use super::Kubelet;
use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use jiff::Timestamp;
use skiff_embedded::container::Status;
use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The body of the node API's answers.
pub type Body = BoxBody<Bytes, Infallible>;

/// How often a followed log is looked at for more.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// Serves the node's API on `listener` until cancelled.
pub async fn serve(
    k: Arc<Kubelet>,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    cancel: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting on the node's API");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (k, acceptor) = (k.clone(), acceptor.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake on the node's API failed");
                    return;
                }
            };
            let allowed = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| skiff_core::tls::identity(c.as_ref()))
                .is_some_and(|(user, _)| user == skiff_core::client::KUBELET_CLIENT_USER);
            let service = hyper::service::service_fn(move |req| {
                let k = k.clone();
                async move {
                    if !allowed {
                        return Ok::<_, Infallible>(status(
                            403,
                            "Forbidden",
                            "only the API server may use the node's API",
                        ));
                    }
                    Ok(route(&k, req).await)
                }
            });
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "node API connection ended with an error");
            }
        });
    }
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed()
}

/// An empty body.
pub fn empty() -> Body {
    full(Bytes::new())
}

/// A Kubernetes `Status` answer.
fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    });
    let mut resp = Response::new(full(body.to_string()));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

async fn route(k: &Arc<Kubelet>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or("").to_string();
    let query: HashMap<String, String> = form_urlencoded::parse(raw_query.as_bytes())
        .into_owned()
        .collect();
    let parts: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(|p| {
            percent_encoding::percent_decode_str(p)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let bad = |m: String| status(400, "BadRequest", &m);
    match (req.method().as_str(), parts.as_slice()) {
        ("GET", ["healthz"]) => Response::new(full("ok")),
        ("GET", ["stats", "summary"]) => {
            let mut r = Response::new(full(super::stats::summary(k).to_string()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            r
        }
        ("GET", ["metrics", "resource"]) => {
            let mut r = Response::new(full(super::stats::resource_metrics(k)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        ("GET", ["containerLogs", ns, pod, container]) => {
            logs(k, ns, pod, container, &query).unwrap_or_else(bad)
        }
        ("GET" | "POST", [what @ ("exec" | "attach"), ns, pod, container]) => {
            let Some((_, id, _)) = runs(k, ns, pod, container).into_iter().next() else {
                return bad(format!("container {container} not found in pod {pod}"));
            };
            if !matches!(k.containers.status(&id), Ok(Some(Status::Running(_)))) {
                return bad(format!(
                    "unable to upgrade connection: container not found (\"{container}\")"
                ));
            }
            let streams = super::stream::ExecRequest::from_query(&raw_query);
            if *what == "exec" {
                super::stream::exec(k, id, streams, req).unwrap_or_else(bad)
            } else {
                super::stream::attach(k, id, streams, req).unwrap_or_else(bad)
            }
        }
        ("GET" | "POST", ["portForward", ns, pod]) => match port_forward_target(k, ns, pod).await {
            Ok(target) => super::portforward::handle(target, req)
                .unwrap_or_else(|(code, reason, message)| status(code, reason, &message)),
            Err((code, reason, message)) => status(code, reason, &message),
        },
        _ => status(404, "NotFound", &format!("the node's API has no {path}")),
    }
}

/// Where the ports of pod `ns/name` are reached. The pod comes from the API rather than
/// from its containers on disk: only the spec says whether it is on the host's network,
/// and guessing wrong would open the host's loopback to the client.
async fn port_forward_target(
    k: &Kubelet,
    ns: &str,
    name: &str,
) -> Result<super::portforward::Target, super::portforward::Refusal> {
    let api: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(k.client.clone(), ns);
    let pod = api
        .get_opt(name)
        .await
        .map_err(|e| {
            (
                503,
                "ServiceUnavailable",
                format!("reading pod {name} from the API: {e}"),
            )
        })?
        .ok_or_else(|| (404, "NotFound", format!("pod {name} not found")))?;
    let spec = pod.spec.unwrap_or_default();
    if spec.node_name.as_deref() != Some(k.node_name.as_str()) {
        return Err((
            400,
            "BadRequest",
            format!("pod {name} does not run on node {}", k.node_name),
        ));
    }
    let uid = pod.metadata.uid.unwrap_or_default();
    let host_network = spec.host_network == Some(true);
    let netns =
        skiff_embedded::container::sandbox::paths(&k.pods_dir().join(&uid), host_network).net;
    if netns.as_ref().is_some_and(|p| !p.exists()) {
        return Err((
            400,
            "BadRequest",
            format!("pod {name} has no network namespace on this node yet (is it running?)"),
        ));
    }
    Ok(super::portforward::Target {
        pod: name.to_string(),
        uid,
        netns,
    })
}

/// The runs of a container on disk, latest first: (attempt, id, pod uid).
fn runs(k: &Kubelet, ns: &str, pod: &str, container: &str) -> Vec<(u32, String, String)> {
    let mut runs: Vec<(u32, String, String)> = Vec::new();
    for id in k.containers.list().unwrap_or_default() {
        let l = k.containers.labels(&id).unwrap_or_default();
        if l.get(labels::POD_NAMESPACE).map(String::as_str) == Some(ns)
            && l.get(labels::POD_NAME).map(String::as_str) == Some(pod)
            && l.get(labels::CONTAINER).map(String::as_str) == Some(container)
        {
            let attempt = l
                .get(labels::ATTEMPT)
                .and_then(|a| a.parse().ok())
                .unwrap_or(0);
            runs.push((
                attempt,
                id,
                l.get(labels::POD_UID).cloned().unwrap_or_default(),
            ));
        }
    }
    runs.sort_by_key(|r| std::cmp::Reverse(r.0));
    runs
}

/// Options of a log request.
#[derive(Debug, Default, Clone)]
struct LogOptions {
    follow: bool,
    timestamps: bool,
    tail: Option<usize>,
    since: Option<Timestamp>,
    limit: Option<usize>,
}

fn flag(q: &HashMap<String, String>, key: &str) -> bool {
    q.get(key).is_some_and(|v| v == "true" || v == "1")
}

fn logs(
    k: &Arc<Kubelet>,
    ns: &str,
    pod: &str,
    container: &str,
    q: &HashMap<String, String>,
) -> Result<Response<Body>, String> {
    let bad = |m: String| m;
    let opts = LogOptions {
        follow: flag(q, "follow"),
        timestamps: flag(q, "timestamps"),
        tail: q
            .get("tailLines")
            .map(|v| v.parse::<i64>().map(|n| n.max(0) as usize))
            .transpose()
            .map_err(|_| bad("tailLines is not a number".into()))?,
        since: match (q.get("sinceSeconds"), q.get("sinceTime")) {
            (Some(s), _) => {
                let secs: i64 = s
                    .parse()
                    .map_err(|_| bad("sinceSeconds is not a number".into()))?;
                Some(Timestamp::now() - jiff::SignedDuration::from_secs(secs))
            }
            (None, Some(t)) => Some(
                t.parse()
                    .map_err(|_| bad("sinceTime is not an RFC 3339 time".into()))?,
            ),
            (None, None) => None,
        },
        limit: q
            .get("limitBytes")
            .map(|v| v.parse::<usize>())
            .transpose()
            .map_err(|_| bad("limitBytes is not a number".into()))?,
    };
    let previous = flag(q, "previous");
    let runs = runs(k, ns, pod, container);
    let run = if previous { runs.get(1) } else { runs.first() };
    let Some((attempt, id, uid)) = run.cloned() else {
        return Err(bad(if previous {
            format!("previous terminated container \"{container}\" in pod \"{pod}\" not found")
        } else {
            format!(
                "container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating"
            )
        }));
    };
    let path = k
        .config
        .pod_log_dir
        .join(format!("{ns}_{pod}_{uid}"))
        .join(container)
        .join(format!("{attempt}.log"));
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let k = k.clone();
    let follow = opts.follow && !previous;
    tokio::task::spawn_blocking(move || stream_log(&k, &id, &path, &opts, follow, &tx));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut resp = Response::new(StreamBody::new(stream).boxed());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    Ok(resp)
}

/// One record of a CRI log.
struct Record<'a> {
    time: &'a str,
    full: bool,
    text: &'a [u8],
}

fn parse_record(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let _stream = parts.next()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or_default();
    Some(Record {
        time,
        full: tag != b"P",
        text,
    })
}

/// Output state across records: a partial line continues without its own timestamp.
struct Out {
    opts: LogOptions,
    in_partial: bool,
    sent: usize,
}

impl Out {
    /// The bytes a record adds to the output, or None when it is filtered out.
    fn render(&mut self, r: &Record) -> Option<Vec<u8>> {
        if let Some(since) = self.opts.since {
            if !self.in_partial && r.time.parse::<Timestamp>().is_ok_and(|t| t < since) {
                return None;
            }
        }
        let mut out = Vec::with_capacity(r.text.len() + 40);
        if self.opts.timestamps && !self.in_partial {
            out.extend_from_slice(r.time.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(r.text);
        if r.full {
            out.push(b'\n');
        }
        self.in_partial = !r.full;
        Some(out)
    }

    /// Clips to limitBytes; false once the limit is reached.
    fn clip(&mut self, mut bytes: Vec<u8>) -> (Vec<u8>, bool) {
        if let Some(limit) = self.opts.limit {
            let left = limit.saturating_sub(self.sent);
            if bytes.len() >= left {
                bytes.truncate(left);
                self.sent = limit;
                return (bytes, false);
            }
        }
        self.sent += bytes.len();
        (bytes, true)
    }
}

fn stream_log(
    k: &Kubelet,
    id: &str,
    path: &PathBuf,
    opts: &LogOptions,
    follow: bool,
    tx: &tokio::sync::mpsc::Sender<Bytes>,
) {
    let mut out = Out {
        opts: opts.clone(),
        in_partial: false,
        sent: 0,
    };
    let Ok(mut file) = std::fs::File::open(path) else {
        return;
    };
    let mut content = Vec::new();
    if file.read_to_end(&mut content).is_err() {
        return;
    }
    // Whole records only; a trailing piece waits for its newline.
    let complete = content
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let mut offset = complete as u64;
    let records: Vec<Record> = content[..complete]
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(parse_record)
        .collect();
    // tailLines counts whole lines: a line is its partial records and the full one.
    let start = match opts.tail {
        Some(n) => {
            let mut lines = 0;
            let mut i = records.len();
            while i > 0 {
                if records[i - 1].full {
                    if lines == n {
                        break;
                    }
                    lines += 1;
                }
                i -= 1;
            }
            i
        }
        None => 0,
    };
    let mut batch = Vec::new();
    for r in &records[start..] {
        if let Some(bytes) = out.render(r) {
            let (bytes, more) = out.clip(bytes);
            batch.extend_from_slice(&bytes);
            if !more {
                let _ = tx.blocking_send(Bytes::from(batch));
                return;
            }
        }
    }
    if !batch.is_empty() && tx.blocking_send(Bytes::from(batch)).is_err() {
        return;
    }
    if !follow {
        return;
    }
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let running = matches!(
            k.containers.status(id),
            Ok(Some(Status::Running(_))) | Ok(None)
        );
        let mut chunk = Vec::new();
        if file.seek(SeekFrom::Start(offset)).is_ok() && file.read_to_end(&mut chunk).is_ok() {
            offset += chunk.len() as u64;
        }
        // Rotated: the path now names a new, shorter file.
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.len() < offset && chunk.is_empty() {
                if let Ok(f) = std::fs::File::open(path) {
                    file = f;
                    offset = 0;
                    continue;
                }
            }
        }
        pending.extend_from_slice(&chunk);
        let complete = pending
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let mut batch = Vec::new();
        let mut more = true;
        for line in pending[..complete]
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
        {
            if let Some(bytes) = parse_record(line).and_then(|r| out.render(&r)) {
                let (bytes, m) = out.clip(bytes);
                batch.extend_from_slice(&bytes);
                if !m {
                    more = false;
                    break;
                }
            }
        }
        pending.drain(..complete);
        if !batch.is_empty() && tx.blocking_send(Bytes::from(batch)).is_err() {
            return;
        }
        if !more || (!running && chunk.is_empty()) || tx.is_closed() {
            return;
        }
        std::thread::sleep(FOLLOW_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_render_with_partials_and_timestamps() {
        let mut out = Out {
            opts: LogOptions {
                timestamps: true,
                ..LogOptions::default()
            },
            in_partial: false,
            sent: 0,
        };
        let a = parse_record(b"2026-01-01T00:00:00Z stdout P hel").unwrap();
        let b = parse_record(b"2026-01-01T00:00:01Z stdout F lo").unwrap();
        let mut text = out.render(&a).unwrap();
        text.extend(out.render(&b).unwrap());
        assert_eq!(text, b"2026-01-01T00:00:00Z hello\n");
        let mut out = Out {
            opts: LogOptions {
                limit: Some(3),
                ..LogOptions::default()
            },
            in_partial: false,
            sent: 0,
        };
        let r = out.render(&b).unwrap();
        assert_eq!(out.clip(r), (b"lo\n".to_vec(), false));
    }
}
