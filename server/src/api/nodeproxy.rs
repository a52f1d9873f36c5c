//! Pod subresources that the node running the pod serves: `pods/log`, `pods/exec`,
//! `pods/attach` and `pods/portforward`. The API server checks the request, finds
//! the pod's node, and relays to that node's API over mutual TLS as
//! `kube-apiserver-kubelet-client`, streaming the answer back as it comes; an upgraded
//! connection (WebSocket, or SPDY for port-forward) is relayed byte for byte, the node
//! speaking the protocol.

use super::{handlers, request::Target, status::ApiError, status::ApiResult, Api, Body};
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Empty, StreamBody};
use serde_json::Value;
use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

/// The node API's port when a Node does not publish one.
const DEFAULT_KUBELET_PORT: u64 = 10250;
/// How long reaching a node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Query parameters of `pods/log` passed on to the node, each checked first.
const LOG_PARAMS: &[&str] = &[
    "follow",
    "previous",
    "timestamps",
    "tailLines",
    "limitBytes",
    "sinceSeconds",
    "sinceTime",
    "insecureSkipTLSVerifyBackend",
];

fn container_names(pod: &Value, field: &str) -> Vec<String> {
    pod["spec"][field]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(String::from))
        .collect()
}

/// The pod `t` names, with its name and namespace.
fn stored_pod(api: &Api, t: &Target) -> ApiResult<(Value, String, String)> {
    let entry = handlers::get(api, t)?;
    let pod: Value = serde_json::from_slice(&entry.value)
        .map_err(|e| ApiError::internal(format!("stored pod is not JSON: {e}")))?;
    let name = pod["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let namespace = pod["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok((pod, name, namespace))
}

/// The pod `t` names and the container a request means (`container`, or the pod's
/// only one): pod, name, namespace, container.
fn pod_container(
    api: &Api,
    t: &Target,
    container: Option<&str>,
) -> ApiResult<(Value, String, String, String)> {
    let (pod, name, namespace) = stored_pod(api, t)?;
    let containers = container_names(&pod, "containers");
    let mut all = containers.clone();
    all.extend(container_names(&pod, "initContainers"));
    all.extend(container_names(&pod, "ephemeralContainers"));
    let container = match container.filter(|c| !c.is_empty()) {
        Some(c) if all.iter().any(|a| a == c) => c.to_string(),
        Some(c) => {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}"
            )))
        }
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                all.join(" ")
            )))
        }
    };
    Ok((pod, name, namespace, container))
}

/// `GET pods/log`.
pub async fn pod_log(
    api: &Api,
    t: &Target,
    q: &HashMap<String, String>,
) -> ApiResult<Response<Body>> {
    let (pod, name, namespace, container) =
        pod_container(api, t, q.get("container").map(String::as_str))?;
    for (key, check) in [("tailLines", 0i64), ("limitBytes", 1), ("sinceSeconds", 1)] {
        if let Some(v) = q.get(key) {
            match v.parse::<i64>() {
                Ok(n) if n >= check => {}
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "{key} must be an integer of at least {check}, not {v:?}"
                    )))
                }
            }
        }
    }
    if q.contains_key("sinceSeconds") && q.contains_key("sinceTime") {
        return Err(ApiError::bad_request(
            "at most one of sinceTime or sinceSeconds may be specified",
        ));
    }
    if let Some(v) = q.get("sinceTime") {
        if v.parse::<jiff::Timestamp>().is_err() {
            return Err(ApiError::bad_request(format!(
                "sinceTime {v:?} is not an RFC 3339 time"
            )));
        }
    }
    let path = format!(
        "/containerLogs/{}/{}/{}",
        enc(&namespace),
        enc(&name),
        enc(&container)
    );
    let query: Vec<(&str, &str)> = LOG_PARAMS
        .iter()
        .filter_map(|k| q.get(*k).map(|v| (*k, v.as_str())))
        .collect();
    let node = node_of(api, &pod, &name)?;
    relay(api, &node, &path, &query).await
}

/// Request headers of an upgrade that the node needs: the WebSocket handshake's, and
/// SPDY's stream protocol negotiation.
const UPGRADE_REQUEST_HEADERS: &[&str] = &[
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];

/// Answer headers of an upgrade that the client needs.
const UPGRADE_RESPONSE_HEADERS: &[&str] = &[
    "upgrade",
    "connection",
    "sec-websocket-accept",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];

/// `pods/exec`, `pods/attach` and `pods/portforward`: the client's upgrade (WebSocket; or
/// for port-forward also SPDY/3.1, which kubectl falls back to), relayed to the node as
/// `/exec/{ns}/{pod}/{container}`, `/attach/{ns}/{pod}/{container}` or
/// `/portForward/{ns}/{pod}` with the client's query; the
/// node answers the upgrade, then bytes go both ways until either side closes.
pub async fn pod_stream(
    api: &Api,
    t: &Target,
    req: Request<hyper::body::Incoming>,
) -> ApiResult<Response<Body>> {
    let sub = t.subresource.clone().unwrap_or_default();
    let raw = req.uri().query().unwrap_or("").to_string();
    let pairs: Vec<(String, String)> = form_urlencoded::parse(raw.as_bytes())
        .into_owned()
        .collect();
    let (pod, name, path) = match sub.as_str() {
        "exec" | "attach" => {
            let container_param = pairs
                .iter()
                .rev()
                .find(|(k, _)| k == "container")
                .map(|(_, v)| v.as_str());
            let (pod, name, namespace, container) = pod_container(api, t, container_param)?;
            let on = |key: &str| {
                pairs
                    .iter()
                    .any(|(k, v)| k == key && (v == "true" || v == "1"))
            };
            if sub == "exec" && !pairs.iter().any(|(k, _)| k == "command") {
                return Err(ApiError::bad_request(
                    "you must specify at least one command for the container",
                ));
            }
            if !(on("stdin") || on("stdout") || on("stderr")) {
                return Err(ApiError::bad_request(
                    "you must specify at least one of stdin, stdout, stderr",
                ));
            }
            let path = format!(
                "/{sub}/{}/{}/{}",
                enc(&namespace),
                enc(&name),
                enc(&container)
            );
            (pod, name, path)
        }
        "portforward" => {
            let (pod, name, namespace) = stored_pod(api, t)?;
            let path = format!("/portForward/{}/{}", enc(&namespace), enc(&name));
            (pod, name, path)
        }
        other => {
            return Err(ApiError::internal(format!(
                "{other} is not a streaming subresource"
            )))
        }
    };
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let websocket = upgrade.split(',').any(|u| u.trim() == "websocket");
    let spdy = upgrade.split(',').any(|u| u.trim().starts_with("spdy/3.1"));
    if !(websocket || (spdy && sub == "portforward")) {
        let speaks = if sub == "portforward" {
            "WebSocket or SPDY/3.1"
        } else {
            "WebSocket, not SPDY"
        };
        return Err(ApiError::bad_request(format!(
            "Upgrade request required (this server speaks {speaks})"
        )));
    }
    let addr = node_of(api, &pod, &name)?;
    let uri = if raw.is_empty() {
        path
    } else {
        format!("{path}?{raw}")
    };
    let mut backend = Request::builder()
        .method(req.method().clone())
        .uri(uri)
        .header(header::HOST, addr.as_str());
    for h in UPGRADE_REQUEST_HEADERS {
        for v in req.headers().get_all(*h) {
            backend = backend.header(*h, v);
        }
    }
    let backend = backend
        .body(Empty::<Bytes>::new())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut sender = connect(api, &addr).await?;
    let resp = sender
        .send_request(backend)
        .await
        .map_err(|e| ApiError::unavailable(format!("reaching the node at {addr}: {e}")))?;
    if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        return Ok(passthrough(resp));
    }
    let mut out = Response::new(Empty::<Bytes>::new().map_err(|e| match e {}).boxed());
    *out.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
    for h in UPGRADE_RESPONSE_HEADERS {
        if let Some(v) = resp.headers().get(*h) {
            out.headers_mut().insert(*h, v.clone());
        }
    }
    tokio::spawn(async move {
        let (client, node) = tokio::join!(hyper::upgrade::on(req), hyper::upgrade::on(resp));
        match (client, node) {
            (Ok(client), Ok(node)) => {
                let mut client = hyper_util::rt::TokioIo::new(client);
                let mut node = hyper_util::rt::TokioIo::new(node);
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut node).await {
                    tracing::debug!(error = %e, "relayed stream ended");
                }
            }
            (c, n) => tracing::debug!(client = ?c.err(), node = ?n.err(), "upgrade failed"),
        }
    });
    Ok(out)
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The `host:port` of the API of the node the pod runs on.
fn node_of(api: &Api, pod: &Value, name: &str) -> ApiResult<String> {
    let node_name = pod["spec"]["nodeName"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!("pod {name} does not have a host assigned"))
        })?;
    node_addr(api, node_name)
}

/// `GET nodes/NAME/proxy/PATH`: PATH on the node's API (`/stats/summary`,
/// `/metrics/resource`, `/healthz`, `/containerLogs/...`).
pub async fn node_proxy(api: &Api, t: &Target, query: Option<&str>) -> ApiResult<Response<Body>> {
    let node = t.name.clone().unwrap_or_default();
    let sub = t.subresource.clone().unwrap_or_default();
    let path = format!(
        "/{}",
        sub.strip_prefix("proxy")
            .unwrap_or("")
            .trim_start_matches('/')
    );
    let addr = node_addr(api, &node)?;
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let pairs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    relay(api, &addr, &path, &pairs).await
}

/// The `host:port` of node `node_name`'s API.
fn node_addr(api: &Api, node_name: &str) -> ApiResult<String> {
    let nodes = crate::registry::find("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("nodes are not served"))?;
    let entry = api
        .store
        .get(&nodes.key(None, node_name))
        .ok_or_else(|| ApiError::not_found("", "nodes", node_name))?;
    let node: Value = serde_json::from_slice(&entry.value)
        .map_err(|e| ApiError::internal(format!("stored node is not JSON: {e}")))?;
    let addresses = node["status"]["addresses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let address = ["InternalIP", "ExternalIP", "Hostname"]
        .iter()
        .find_map(|kind| {
            addresses
                .iter()
                .find(|a| a["type"] == *kind)
                .and_then(|a| a["address"].as_str())
        })
        .ok_or_else(|| ApiError::unavailable(format!("node {node_name} publishes no address")))?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Ok(match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(a)) => format!("[{a}]:{port}"),
        _ => format!("{address}:{port}"),
    })
}

/// An HTTP/1.1 connection (upgrades allowed) to the node's API at `addr`.
async fn connect(
    api: &Api,
    addr: &str,
) -> ApiResult<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> {
    let unreachable =
        |e: String| ApiError::unavailable(format!("reaching the node at {addr}: {e}"));
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let server_name = rustls_pki_types::ServerName::try_from(host.clone())
        .map_err(|e| unreachable(e.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(api.kubelet_tls.clone());
    let tls = tokio::time::timeout(CONNECT_TIMEOUT, async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        connector.connect(server_name, tcp).await
    })
    .await
    .map_err(|_| unreachable("timed out".into()))?
    .map_err(|e| unreachable(e.to_string()))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "node connection ended");
        }
    });
    Ok(sender)
}

/// The node's answer, streamed back as it comes: status, content type and body.
fn passthrough(resp: Response<hyper::body::Incoming>) -> Response<Body> {
    let (parts, body) = resp.into_parts();
    // Frames pass through as they arrive; a broken node connection ends the stream.
    let stream = futures::stream::unfold(body, |mut body| async move {
        match body.frame().await {
            Some(Ok(frame)) => Some((Ok::<_, Infallible>(frame), body)),
            _ => None,
        }
    });
    let mut out = Response::new(StreamBody::new(stream).boxed());
    *out.status_mut() = parts.status;
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or(HeaderValue::from_static("text/plain"));
    out.headers_mut().insert(header::CONTENT_TYPE, content_type);
    out
}

/// GETs `path` from the node at `addr` and streams its answer back.
async fn relay(
    api: &Api,
    addr: &str,
    path: &str,
    query: &[(&str, &str)],
) -> ApiResult<Response<Body>> {
    let mut sender = connect(api, addr).await?;
    let mut uri = path.to_string();
    if !query.is_empty() {
        uri.push('?');
        uri.push_str(
            &form_urlencoded::Serializer::new(String::new())
                .extend_pairs(query)
                .finish(),
        );
    }
    let req = Request::get(uri)
        .header(header::HOST, addr)
        .body(Empty::<Bytes>::new())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| ApiError::unavailable(format!("reaching the node at {addr}: {e}")))?;
    Ok(passthrough(resp))
}
