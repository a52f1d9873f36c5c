//! The Kubernetes API over HTTPS.
//!
//! [`serve`] accepts TLS connections (HTTP/1.1 and HTTP/2), reads the client
//! certificate's identity, and hands each request to [`handle`], which routes it:
//! health and version, discovery ([`discovery`]), OpenAPI ([`openapi`]), then resource
//! paths ([`request`]) to the verbs in [`handlers`] and [`watch`]. Every failure leaves
//! as a Kubernetes `Status` ([`status`]).

pub mod admission;
pub mod allocator;
pub mod discovery;
pub mod encryption;
pub mod handlers;
pub mod nodeproxy;
pub mod objects;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod request;
pub mod selectable;
pub mod selectors;
pub mod status;
pub mod table;
pub mod tokenrequest;
pub mod watch;

use crate::auth::authz::{self, Attributes};
use crate::store::Store;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{json, Value};
use status::{ApiError, ApiResult};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// A response body: a whole buffer or a stream (watch).
pub type Body = BoxBody<Bytes, Infallible>;

pub use crate::auth::User;

/// The API server's shared state.
pub struct Api {
    /// The datastore.
    pub store: Store,
    /// Service address and port allocation.
    pub allocator: allocator::Allocator,
    /// Held across a Service create, so allocations never collide.
    pub service_lock: tokio::sync::Mutex<()>,
    /// The address clients should use (`host:port`), for `/api`.
    pub server_address: String,
    /// The largest request body accepted.
    pub max_body: usize,
    /// How the API server reaches nodes' APIs (logs, exec, attach, port-forward).
    pub kubelet_tls: Arc<rustls::ClientConfig>,
    /// The cluster CA (PEM), handed to joining machines at `/cacerts`.
    pub ca_pem: String,
    /// What machines join with: the tokens and the CA that signs their certificates.
    pub joining: crate::join::Joining,
    /// The RBAC index authorization reads, kept current by [`crate::auth::rbac::run`].
    pub rbac: crate::auth::rbac::Index,
    /// ServiceAccount tokens: issued by `serviceaccounts/token`, accepted as bearers.
    pub sa_tokens: Arc<crate::auth::authn::ServiceAccountTokens>,
    /// Secrets encryption at rest, when on.
    pub encryption: Option<Arc<crate::encryption::Encryption>>,
    /// The cluster's network settings, served to nodes.
    pub network: skiff_core::join::ClusterNetwork,
}

/// A whole answer of a handler.
#[derive(Debug)]
pub struct Reply {
    /// The HTTP status.
    pub code: u16,
    /// The JSON body.
    pub body: Bytes,
    /// `Warning` header texts.
    pub warnings: Vec<String>,
}

impl Reply {
    /// A reply from a JSON value.
    pub fn json(code: u16, v: &Value) -> Reply {
        Reply {
            code,
            body: Bytes::from(v.to_string()),
            warnings: Vec::new(),
        }
    }

    /// A reply from JSON bytes.
    pub fn raw(code: u16, body: Bytes) -> Reply {
        Reply {
            code,
            body,
            warnings: Vec::new(),
        }
    }

    /// Adds warnings.
    pub fn warnings(mut self, w: Vec<String>) -> Reply {
        self.warnings.extend(w);
        self
    }
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).boxed()
}

fn respond(code: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    respond(code, "application/json", v.to_string())
}

fn error_response(e: &ApiError) -> Response<Body> {
    let mut resp = json_response(e.code, &e.to_status());
    if let Some(secs) = e.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

fn reply_response(reply: Reply) -> Response<Body> {
    let mut resp = respond(reply.code, "application/json", reply.body);
    for w in reply.warnings {
        let text = format!("299 - {}", serde_json::Value::String(w));
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

/// Serves the API on `addr` until `cancel` fires.
pub async fn serve(
    api: Arc<Api>,
    tls: Arc<rustls::ServerConfig>,
    listener: tokio::net::TcpListener,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = cancel.cancelled() => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let api = api.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            let user = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|c| User::from_certificate(c.as_ref()));
            let service = hyper::service::service_fn(move |req| {
                let api = api.clone();
                let user = user.clone();
                async move { Ok::<_, Infallible>(handle(&api, req, user.as_ref(), peer).await) }
            });
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let conn =
                builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    // Give open requests a moment to finish; watches are cut.
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
    }
    Ok(())
}

/// Handles one request.
pub async fn handle(
    api: &Api,
    req: Request<Incoming>,
    user: Option<&User>,
    peer: SocketAddr,
) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let uri = req.uri().clone();
    // The client certificate first, as upstream's authenticators are ordered; then a
    // bearer token. A token that fails is 401 whatever the path: anonymous access is
    // for requests without credentials. The join checks its own token (a join or
    // bootstrap token, not a ServiceAccount's).
    let from_token;
    let joining = uri.path() == skiff_core::join::JOIN_PATH;
    let user = match user {
        Some(u) => Some(u),
        None if joining => None,
        None => match bearer_user(api, &req) {
            Bearer::Absent => None,
            Bearer::Valid(u) => {
                from_token = u;
                Some(&from_token)
            }
            Bearer::Invalid => {
                tracing::debug!(%method, uri = %uri, %peer, "invalid bearer token");
                return error_response(&ApiError::unauthorized());
            }
        },
    };
    let resp = match route(api, req, user).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    tracing::debug!(
        %method,
        uri = %uri,
        status = resp.status().as_u16(),
        user = user.map(|u| u.name.as_str()).unwrap_or("<anonymous>"),
        %peer,
        elapsed_us = started.elapsed().as_micros() as u64,
        "request"
    );
    resp
}

/// What the `Authorization` header says.
enum Bearer {
    /// No bearer token.
    Absent,
    /// A token that authenticates this user.
    Valid(User),
    /// A token that does not authenticate anyone.
    Invalid,
}

fn bearer_user(api: &Api, req: &Request<Incoming>) -> Bearer {
    let Some(token) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::authn::bearer)
    else {
        return Bearer::Absent;
    };
    let now = jiff::Timestamp::now().as_second();
    match api.sa_tokens.authenticate(token, now, &api.store) {
        Some(u) => Bearer::Valid(u),
        None => Bearer::Invalid,
    }
}

fn version_info() -> Value {
    let v = skiff_core::defaults::KUBERNETES_VERSION;
    let mut parts = v.trim_start_matches('v').split('.');
    let major = parts.next().unwrap_or("1");
    let minor = parts.next().unwrap_or("0");
    json!({
        "major": major,
        "minor": minor,
        "emulationMajor": major,
        "emulationMinor": minor,
        "gitVersion": format!("{v}+skiff"),
        "gitCommit": env!("CARGO_PKG_VERSION"),
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "n/a",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, match std::env::consts::ARCH { "x86_64" => "amd64", "aarch64" => "arm64", "arm" => "arm", other => other }),
    })
}

async fn route(
    api: &Api,
    req: Request<Incoming>,
    user: Option<&User>,
) -> ApiResult<Response<Body>> {
    let path = req.uri().path().to_string();
    // Who the request acts as: the authenticated user, or whom it impersonates.
    let impersonated = match user {
        Some(u) => authz::impersonate(api, u, req.headers())?,
        None => None,
    };
    let user = impersonated.as_ref().or(user);
    let public = matches!(
        path.as_str(),
        "/healthz"
            | "/livez"
            | "/readyz"
            | "/healthz/ping"
            | "/livez/ping"
            | "/readyz/ping"
            | "/version"
            | "/version/"
    );
    if public {
        if let Some(u) = user {
            authz::check(api, &Attributes::non_resource(u, "get", &path))?;
        }
    }
    match path.as_str() {
        "/healthz" | "/livez" | "/readyz" | "/healthz/ping" | "/livez/ping" | "/readyz/ping" => {
            return Ok(respond(200, "text/plain; charset=utf-8", "ok"));
        }
        "/version" | "/version/" => return Ok(json_response(200, &version_info())),
        // Agents join with their token, before they have a certificate.
        skiff_core::join::JOIN_PATH => return join(api, req).await,
        // The CA, for a joining machine to check against its token's hash.
        "/cacerts" => {
            return Ok(respond(
                200,
                "text/plain; charset=utf-8",
                api.ca_pem.clone(),
            ))
        }
        _ => {}
    }
    let Some(user) = user else {
        return Err(ApiError::unauthorized());
    };
    if path == skiff_core::join::TOKEN_ROTATE_PATH {
        return rotate_token(api, req, user).await;
    }
    if path == skiff_core::join::NETWORK_PATH {
        if !(user.in_group(skiff_core::join::NODES_GROUP) || user.in_group("system:masters")) {
            return Err(ApiError::new(
                403,
                "Forbidden",
                format!(
                    "forbidden: User {:?} cannot read the cluster's network settings",
                    user.name
                ),
            ));
        }
        return Ok(json_response(
            200,
            &serde_json::to_value(&api.network).unwrap_or_default(),
        ));
    }
    if let Some(action) = path.strip_prefix("/v1-skiff/secrets-encrypt/") {
        return encryption::serve(api, req.method(), action, user).await;
    }
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    if let Some((review, ns)) = crate::auth::reviews::find(&path) {
        return review_request(api, req, review, ns, user).await;
    }
    let target = request::parse_path(&path)?;
    let Some(target) = target else {
        // Not a resource path: discovery, OpenAPI, or nothing; authorized by path.
        let verb = match *req.method() {
            Method::GET | Method::HEAD => "get",
            Method::POST => "post",
            Method::PUT => "put",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "",
        };
        authz::check(api, &Attributes::non_resource(user, verb, &path))?;
        return non_resource(api, req, &path, &accept);
    };
    resource(api, req, target, &accept, user).await
}

/// A review (create-only, never stored): authorized as a create of its resource.
async fn review_request(
    api: &Api,
    req: Request<Incoming>,
    review: &'static crate::auth::reviews::Review,
    namespace: Option<String>,
    user: &User,
) -> ApiResult<Response<Body>> {
    let mut a = Attributes::new(user);
    a.verb = match *req.method() {
        Method::POST => "create".into(),
        ref m => return Err(ApiError::method_not_allowed(m.as_str())),
    };
    a.resource_request = true;
    a.api_group = review.group.into();
    a.api_version = review.version.into();
    a.resource = review.plural.into();
    a.namespace = namespace.clone().unwrap_or_default();
    authz::check(api, &a)?;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let body = request::read_body(req.into_body(), api.max_body).await?;
    let obj = crate::auth::reviews::create(
        api,
        review,
        namespace.as_deref(),
        user,
        &body,
        content_type.as_deref(),
    )?;
    Ok(json_response(201, &obj))
}

/// Discovery and OpenAPI.
fn non_resource(
    api: &Api,
    req: Request<Incoming>,
    path: &str,
    accept: &str,
) -> ApiResult<Response<Body>> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let is_get = req.method() == Method::GET;
    let accept = accept.to_string();
    match segs.as_slice() {
        ["api"] if is_get => {
            return Ok(match discovery::aggregated_version(&accept) {
                Some(ct) => respond(200, ct, discovery::aggregated(true, ct).to_string()),
                None => json_response(200, &discovery::api_versions(&api.server_address)),
            });
        }
        ["apis"] if is_get => {
            return Ok(match discovery::aggregated_version(&accept) {
                Some(ct) => respond(200, ct, discovery::aggregated(false, ct).to_string()),
                None => json_response(200, &discovery::api_group_list()),
            });
        }
        ["api", version] if is_get => {
            return discovery::api_resource_list("", version)
                .map(|v| json_response(200, &v))
                .ok_or_else(ApiError::no_route);
        }
        ["apis", group] if is_get => {
            return discovery::api_group(group)
                .map(|v| json_response(200, &v))
                .ok_or_else(ApiError::no_route);
        }
        ["apis", group, version] if is_get => {
            return discovery::api_resource_list(group, version)
                .map(|v| json_response(200, &v))
                .ok_or_else(ApiError::no_route);
        }
        [".well-known", "openid-configuration"] if is_get => {
            return Ok(json_response(
                200,
                &crate::auth::jwt::openid_configuration(&api.server_address),
            ));
        }
        ["openid", "v1", "jwks"] if is_get => {
            return Ok(respond(
                200,
                "application/jwk-set+json",
                api.sa_tokens.signer().jwks().to_string(),
            ));
        }
        ["openapi", "v2"] if is_get => {
            // kubectl asks for the protobuf form and decodes the body as protobuf.
            if accept.contains("com.github.proto-openapi.spec.v2") {
                return Ok(respond(
                    200,
                    openapi::V2_PROTOBUF_CONTENT_TYPE,
                    openapi::openapi().v2_protobuf(),
                ));
            }
            return Ok(respond(200, "application/json", openapi::openapi().v2()));
        }
        ["openapi", "v3"] if is_get => {
            return Ok(respond(
                200,
                "application/json",
                openapi::openapi().v3_index(),
            ));
        }
        ["openapi", "v3", rest @ ..] if is_get => {
            let doc_path = rest.join("/");
            return openapi::openapi()
                .v3(&doc_path)
                .map(|(body, _)| respond(200, "application/json", body))
                .ok_or_else(ApiError::no_route);
        }
        _ => {}
    }
    Err(ApiError::no_route())
}

async fn resource(
    api: &Api,
    req: Request<Incoming>,
    t: request::Target,
    accept: &str,
    user: &User,
) -> ApiResult<Response<Body>> {
    let q = request::parse_query(req.uri().query());
    let websocket = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let verb = authz::verb_of(req.method(), &t, &q, websocket);
    let attrs = Attributes::resource(user, &verb, &t, &q);
    authz::check(api, &attrs)?;
    let node_user = crate::auth::node::node_name(user).is_some();
    // Writes of RBAC objects by users outside system:masters are checked for escalation.
    let escalation = r_is_rbac(&t) && !user.in_group(authz::MASTERS);
    if node_user && verb != "create" {
        crate::auth::node::admit(&api.store, &attrs, None)?;
    }
    let table = table::wants_table(accept).then(|| table::TableOptions::from_query(&q));
    let partial = accept
        .split(',')
        .next()
        .unwrap_or("")
        .contains("as=PartialObjectMetadata");
    if table.is_none() && !partial && !accepts_json(accept) {
        return Err(ApiError::not_acceptable(accept));
    }
    let method = req.method().clone();
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let r = t.resource;
    let has_name = t.name.is_some();
    let sub = t.subresource.clone();
    let read_body = |req: Request<Incoming>| async {
        if let Some(len) = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
        {
            if len > api.max_body {
                // Read (and drop) a bounded amount first: answering while the client is
                // still sending makes the close reset the connection, and the client may
                // never see the 413.
                drain(req.into_body(), DRAIN_LIMIT).await;
                return Err(ApiError::too_large(api.max_body));
            }
        }
        request::read_body(req.into_body(), api.max_body).await
    };
    let reply = match (&method, has_name) {
        (&Method::GET, false) => {
            let watching = q.get("watch").is_some_and(|w| w == "true" || w == "1");
            if watching {
                let params = watch::WatchParams::from_query(r, &q, table)?;
                let rx = watch::start(api, &t, params)?;
                return Ok(stream_response(rx));
            }
            let lq = handlers::ListQuery::from_query(r, &q)?;
            let listed = handlers::list(api, &t, &lq)?;
            if let Some(opts) = &table {
                let objs = parse_all(&listed.items)?;
                let tbl = table::to_table(
                    r,
                    &objs,
                    opts,
                    true,
                    Some(listed.revision),
                    listed.continue_token.as_deref(),
                );
                return Ok(json_response(200, &tbl));
            }
            if partial {
                let objs = parse_all(&listed.items)?;
                let items: Vec<Value> = objs.iter().map(partial_object).collect();
                let mut meta = json!({"resourceVersion": listed.revision.to_string()});
                if let Some(c) = &listed.continue_token {
                    meta["continue"] = c.clone().into();
                }
                return Ok(json_response(
                    200,
                    &json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "items": items}),
                ));
            }
            Reply::raw(200, handlers::encode_list(r, &listed))
        }
        (&Method::GET, true)
            if sub
                .as_deref()
                .is_some_and(|s| s == "proxy" || s.starts_with("proxy/")) =>
        {
            let query = req.uri().query().map(String::from);
            return nodeproxy::node_proxy(api, &t, query.as_deref()).await;
        }
        (&Method::GET, true) if sub.as_deref() == Some("log") => {
            return nodeproxy::pod_log(api, &t, &q).await;
        }
        (&Method::GET | &Method::POST, true)
            if matches!(sub.as_deref(), Some("exec" | "attach" | "portforward")) =>
        {
            return nodeproxy::pod_stream(api, &t, req).await;
        }
        (&Method::GET, true) => {
            if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
                let params = watch::WatchParams::from_query(r, &q, table)?;
                let rx = watch::start(api, &t, params)?;
                return Ok(stream_response(rx));
            }
            let entry = handlers::get(api, &t)?;
            match sub.as_deref() {
                Some("scale") => {
                    let obj = parse_all(std::slice::from_ref(&entry))?.remove(0);
                    Reply::json(200, &handlers::scale_of(&obj))
                }
                Some("finalize") => return Err(ApiError::method_not_allowed("GET")),
                _ => {
                    if table.is_some() || partial {
                        let obj = parse_all(std::slice::from_ref(&entry))?.remove(0);
                        if let Some(opts) = &table {
                            return Ok(json_response(
                                200,
                                &table::to_table(r, &[obj], opts, true, None, None),
                            ));
                        }
                        return Ok(json_response(200, &partial_object(&obj)));
                    }
                    Reply::raw(200, entry.value)
                }
            }
        }
        (&Method::POST, false) => {
            let opts = handlers::WriteOptions::from_query(&q)?;
            let body = read_body(req).await?;
            if node_user || escalation {
                let obj = request::decode_object(&body, content_type.as_deref(), r.kind)?;
                crate::auth::node::admit(&api.store, &attrs, Some(&obj))?;
                authz::check_escalation(api, &attrs, &obj)?;
            }
            handlers::create(api, &t, &body, content_type.as_deref(), &opts).await?
        }
        (&Method::POST, true) if sub.as_deref() == Some("token") => {
            let body = read_body(req).await?;
            tokenrequest::create(api, &t, &body, content_type.as_deref())?
        }
        (&Method::POST, true) if matches!(sub.as_deref(), Some("binding" | "eviction")) => {
            if node_user {
                crate::auth::node::admit(&api.store, &attrs, None)?;
            }
            let body = read_body(req).await?;
            if sub.as_deref() == Some("binding") {
                handlers::bind(api, &t, &body, content_type.as_deref()).await?
            } else {
                handlers::evict(api, &t, &body, content_type.as_deref()).await?
            }
        }
        (&Method::PUT, true) => {
            let opts = handlers::WriteOptions::from_query(&q)?;
            let body = read_body(req).await?;
            if escalation {
                let obj = request::decode_object(&body, content_type.as_deref(), r.kind)?;
                authz::check_escalation(api, &attrs, &obj)?;
            }
            handlers::update(api, &t, &body, content_type.as_deref(), &opts).await?
        }
        (&Method::PATCH, true) => {
            let opts = handlers::WriteOptions::from_query(&q)?;
            let body = read_body(req).await?;
            if escalation {
                // The object the patch would store, to check what it grants.
                let dry = handlers::WriteOptions {
                    dry_run: true,
                    ..opts.clone()
                };
                let would = handlers::patch(api, &t, &body, content_type.as_deref(), &dry).await?;
                let obj: Value = serde_json::from_slice(&would.body)
                    .map_err(|e| ApiError::internal(format!("encoding reply: {e}")))?;
                authz::check_escalation(api, &attrs, &obj)?;
            }
            handlers::patch(api, &t, &body, content_type.as_deref(), &opts).await?
        }
        (&Method::DELETE, true) if sub.is_none() => {
            let body = read_body(req).await?;
            let opts = handlers::DeleteOptions::parse(&body, content_type.as_deref(), &q)?;
            handlers::delete(api, &t, &opts).await?
        }
        (&Method::DELETE, false) => {
            let body = read_body(req).await?;
            let opts = handlers::DeleteOptions::parse(&body, content_type.as_deref(), &q)?;
            let lq = handlers::ListQuery::from_query(r, &q)?;
            handlers::delete_collection(api, &t, &lq, &opts).await?
        }
        (m, _) => return Err(ApiError::method_not_allowed(m.as_str())),
    };
    if let Some(opts) = &table {
        if reply.code < 300 && method != Method::GET {
            let obj: Value = serde_json::from_slice(&reply.body)
                .map_err(|e| ApiError::internal(format!("encoding reply: {e}")))?;
            let tbl = table::to_table(r, &[obj], opts, true, None, None);
            return Ok(reply_response(Reply {
                body: Bytes::from(tbl.to_string()),
                ..reply
            }));
        }
    }
    Ok(reply_response(reply))
}

/// `POST /v1-skiff/join`: an agent's token and node password for its certificates.
async fn join(api: &Api, req: Request<Incoming>) -> ApiResult<Response<Body>> {
    if req.method() != Method::POST {
        return Err(ApiError::method_not_allowed(req.method().as_str()));
    }
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let body = request::read_body(req.into_body(), 64 * 1024).await?;
    let issued = crate::join::admit(api, authorization.as_deref(), &body).await?;
    let json = serde_json::to_vec(&issued)
        .map_err(|e| ApiError::internal(format!("encoding the join response: {e}")))?;
    Ok(respond(200, "application/json", json))
}

/// `POST /v1-skiff/token/rotate` (`skiff token rotate`), for cluster admins only: a new
/// server token, given (`{"token": ...}`) or made.
async fn rotate_token(api: &Api, req: Request<Incoming>, user: &User) -> ApiResult<Response<Body>> {
    if req.method() != Method::POST {
        return Err(ApiError::method_not_allowed(req.method().as_str()));
    }
    if !user.in_group("system:masters") {
        return Err(ApiError::new(
            403,
            "Forbidden",
            format!(
                "forbidden: User {:?} cannot rotate the server token",
                user.name
            ),
        ));
    }
    let body = request::read_body(req.into_body(), 64 * 1024).await?;
    let given: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?
    };
    let token = api
        .joining
        .rotate(given.get("token").and_then(Value::as_str))
        .map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
    tracing::info!(user = %user.name, "the server token was rotated");
    Ok(json_response(200, &json!({"token": token.render()})))
}

fn r_is_rbac(t: &request::Target) -> bool {
    t.resource.group == crate::auth::rbac::GROUP
}

/// How much of an oversized body is read and dropped before answering 413.
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;

async fn drain(mut body: Incoming, limit: usize) {
    let mut seen = 0;
    let deadline = tokio::time::sleep(std::time::Duration::from_secs(10));
    tokio::pin!(deadline);
    while seen < limit {
        let frame = tokio::select! {
            f = body.frame() => f,
            _ = &mut deadline => return,
        };
        match frame {
            Some(Ok(f)) => seen += f.data_ref().map_or(0, |d| d.len()),
            _ => return,
        }
    }
}

fn accepts_json(accept: &str) -> bool {
    accept.split(',').any(|p| {
        let media = p.split(';').next().unwrap_or("").trim();
        matches!(media, "application/json" | "*/*" | "application/*" | "")
    })
}

fn parse_all(entries: &[crate::store::Entry]) -> ApiResult<Vec<Value>> {
    entries
        .iter()
        .map(|e| {
            serde_json::from_slice(&e.value).map_err(|err| {
                ApiError::internal(format!("stored object {} is not JSON: {err}", e.key))
            })
        })
        .collect()
}

fn partial_object(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": objects::meta(obj)})
}

fn stream_response(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Response<Body> {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut resp = Response::new(StreamBody::new(stream).boxed());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    resp
}
