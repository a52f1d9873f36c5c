//! Image pulls: an image from a registry into the [`ImageStore`], for this node's
//! platform, over the Docker Registry HTTP API v2 (the OCI distribution spec's pull
//! side).
//!
//! For each endpoint [`Registries::endpoints`] gives, mirrors first: the manifest is
//! asked for by tag or digest (an index or a manifest, OCI's or Docker's), the index's
//! manifest for this platform chosen, then the config and layers fetched, a few at a
//! time, each streamed into [`Blobs::put`], which makes it visible only whole and only if
//! it hashes to its digest. A blob already stored is not fetched again, so a pull that
//! failed half-way, or moved on to the next endpoint, resumes. Only once everything is
//! stored is the name set ([`ImageStore::set_name`]). The store's mutex is taken only for
//! that and to get the blob store: never across a network wait.
//!
//! Authentication is what registries ask for: a `401` with `WWW-Authenticate: Bearer`
//! sends the client to the token service the challenge names (anonymously, or with the
//! endpoint's credentials), `Basic` gets the credentials directly. Redirects (blob
//! downloads usually go to a CDN) are followed, without credentials once they leave the
//! endpoint's origin.
//!
//! Errors tell "not found" from "unauthorized" from "unreachable", name the URL, and
//! when several endpoints failed, say what each did; the kubelet turns them into
//! `ErrImagePull` messages.
//!
//! Chosen over the `oci-client` crate, which needs reqwest 0.13 (aws-lc-rs unless its
//! crypto provider is installed process-wide), a second sha2 and tower-http, the url
//! crate's ICU stack, and cannot present a client certificate (registries.yaml's
//! `cert_file`) or use an endpoint's path as the API root. Everything here was already
//! built for kube's client.

use super::blobs::{self, Blobs, Digest};
use super::platform::{self, Platform};
use super::reference;
use super::registries::{self, Auth, Endpoint, Registries};
use super::store::{self, ImageStore};
use base64::Engine as _;
use bytes::Bytes;
use futures::TryStreamExt as _;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION, USER_AGENT, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use oci_spec::distribution::Reference;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;
use tokio::sync::mpsc;

/// What a manifest request accepts: indexes and manifests, OCI's and Docker's.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";
/// The largest manifest or index read (containerd's limit).
const MAX_MANIFEST: u64 = 4 << 20;
/// The most of an error response read for its message.
const MAX_ERROR_BODY: u64 = 64 << 10;
/// How deep indexes may nest (as in the store).
const MAX_DEPTH: usize = 4;
/// Blobs fetched at once (containerd's `max_concurrent_downloads`).
const CONCURRENT_BLOBS: usize = 3;
/// Redirects followed for one request.
const MAX_REDIRECTS: usize = 5;
/// How long a TCP connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a response's headers may take, once connected.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a body may send nothing before the transfer is abandoned.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Chunks of a blob buffered between the download and the writer thread.
const CHUNKS: usize = 16;
const USER_AGENT_VALUE: &str = concat!("skiff/", env!("CARGO_PKG_VERSION"));

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The image is not a valid reference.
    #[error(transparent)]
    Reference(#[from] reference::Error),
    /// The image pins a digest the store cannot hold.
    #[error("image {image}")]
    UnsupportedDigest {
        /// The image.
        image: String,
        /// Why.
        #[source]
        source: blobs::Error,
    },
    /// A rewrite in the registries file made an invalid repository of the image.
    #[error(transparent)]
    Registries(#[from] registries::Error),
    /// The registries file gives no endpoint to try (its mirrors list none, and the
    /// default endpoint is disabled).
    #[error("no endpoint to pull {image} from: its mirrors list none and the registry itself is disabled")]
    NoEndpoint {
        /// The image.
        image: String,
    },
    /// The endpoint answered that it has no such manifest or blob (`404`, or an error
    /// code saying so).
    #[error("{what} not found at {url}{}", detail(message))]
    NotFound {
        /// `manifest`, or `blob <digest>`.
        what: String,
        /// The URL asked.
        url: String,
        /// The registry's error message.
        message: Option<String>,
    },
    /// The endpoint, or its token service, refused access (`401`, `403`).
    #[error("{}", unauthorized(url, *status, *with_credentials, message))]
    Unauthorized {
        /// The URL refused.
        url: String,
        /// The HTTP status.
        status: u16,
        /// Whether credentials were sent (they are wrong), or none were (the image may
        /// need some, or not exist: Docker Hub says `401` for repositories it does not
        /// have).
        with_credentials: bool,
        /// The registry's error message.
        message: Option<String>,
    },
    /// The endpoint could not be reached, its TLS handshake failed, or it stopped
    /// answering.
    #[error("{url} is unreachable")]
    Unreachable {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// The endpoint answered with an unexpected status.
    #[error("{url} answered HTTP {status}{}", detail(message))]
    Status {
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The registry's error message.
        message: Option<String>,
    },
    /// The endpoint sent something that is not what it should be: a manifest that is no
    /// manifest, content that is not its digest, a token response without a token.
    #[error("{url}: {message}")]
    Malformed {
        /// The URL.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// A blob the endpoint sent did not match its digest; nothing of it was stored.
    #[error("{url}")]
    Corrupt {
        /// The URL.
        url: String,
        /// The mismatch.
        #[source]
        source: blobs::Error,
    },
    /// The image has no build for this node.
    #[error("{url}: the image has no build for {platform}")]
    NoPlatform {
        /// The index's URL.
        url: String,
        /// This node's platform, `os/architecture[/variant]`.
        platform: String,
    },
    /// The endpoint's TLS settings cannot be used (an unreadable `ca_file`...).
    #[error("TLS settings for {endpoint}: {message}")]
    Tls {
        /// The endpoint's API root.
        endpoint: String,
        /// What is wrong.
        message: String,
    },
    /// The store failed: no endpoint would do better, so the pull stops.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// A blob writer thread died.
    #[error("a blob writer thread failed")]
    Writer(#[source] tokio::task::JoinError),
    /// Every endpoint failed: the most telling failure, and what the others said.
    #[error("pulling {image}{}", others_note(others))]
    Failed {
        /// The image, normalized.
        image: String,
        /// The failure reported: the last of those where a registry answered (the image's
        /// own registry's word, when it was reached), else the first.
        #[source]
        cause: Box<Error>,
        /// The other endpoints' failures, one line each, in the order tried.
        others: Vec<String>,
    },
}

/// The pull module's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn detail(message: &Option<String>) -> String {
    message
        .as_ref()
        .map(|m| format!(" ({m})"))
        .unwrap_or_default()
}

fn unauthorized(
    url: &str,
    status: u16,
    with_credentials: bool,
    message: &Option<String>,
) -> String {
    let message = message
        .as_ref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    let hint = if with_credentials {
        "the registry refused the credentials given"
    } else {
        "no credentials were given: the image may need an imagePullSecret or registries.yaml \
         auth, or may not exist"
    };
    format!("unauthorized at {url} (HTTP {status}{message}); {hint}")
}

fn others_note(others: &[String]) -> String {
    if others.is_empty() {
        String::new()
    } else {
        format!(" (also tried: {})", others.join("; "))
    }
}

impl Error {
    /// Whether the registry said it has no such image (or blob).
    pub fn is_not_found(&self) -> bool {
        matches!(self.reported(), Error::NotFound { .. })
    }

    /// Whether the registry refused access.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self.reported(), Error::Unauthorized { .. })
    }

    /// Whether no registry could be reached.
    pub fn is_unreachable(&self) -> bool {
        matches!(self.reported(), Error::Unreachable { .. })
    }

    /// The failure a [`Error::Failed`] reports, or this one.
    fn reported(&self) -> &Error {
        match self {
            Error::Failed { cause, .. } => cause.reported(),
            other => other,
        }
    }

    /// Whether a registry answered (as opposed to not being reached, or a local failure).
    fn answered(&self) -> bool {
        !matches!(self, Error::Unreachable { .. } | Error::Tls { .. }) && !self.stops_pull()
    }

    /// Whether the failure is the node's own (the disk, a thread), so that trying
    /// another endpoint cannot help. An image the store finds malformed is the
    /// endpoint's doing: another may serve a good one.
    fn stops_pull(&self) -> bool {
        match self {
            Error::Writer(_) => true,
            Error::Store(e) => !matches!(
                e,
                store::Error::Malformed { .. } | store::Error::NoPlatform { .. }
            ),
            _ => false,
        }
    }
}

/// Credentials for one registry, as an imagePullSecret gives them.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The registry, as a `.dockerconfigjson` key spells it: `registry.example:5000`,
    /// `https://index.docker.io/v1/`, `docker.io`. Scheme and path are ignored, and
    /// Docker Hub's names are one. (The kubelet's matching of keys with globs or paths
    /// against an image is the caller's: pass the credentials that match the image.)
    pub registry: String,
    /// The user name.
    pub username: String,
    /// The password or token.
    pub password: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("registry", &self.registry)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credential {
    /// Whether this credential is for `registry` (an [`Endpoint::registry`]). A secret
    /// for an image's registry is sent to that registry only, not to its mirrors: they
    /// are other hosts, with their own `configs` entry.
    pub fn is_for(&self, registry: &str) -> bool {
        registry_name(&self.registry) == registry_name(registry)
    }
}

/// A registry name as a Docker config key or endpoint spells it, compared form.
fn registry_name(key: &str) -> String {
    let key = key
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = key
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        _ => host,
    }
}

/// Pulls `image` into `store` from the endpoints `registries` gives for it, in order,
/// and names it; returns its normalized name (`busybox:1` is
/// `docker.io/library/busybox:1`). `credentials` are the pod's imagePullSecrets; one for
/// an endpoint's registry is used before that registry's `configs` auth.
pub async fn pull(
    store: &Mutex<ImageStore>,
    image: &str,
    registries: &Registries,
    credentials: &[Credential],
) -> Result<String> {
    let reference = reference::normalize(image)?;
    let name = reference::canonical(&reference);
    let pinned = reference
        .digest()
        .map(str::parse::<Digest>)
        .transpose()
        .map_err(|source| Error::UnsupportedDigest {
            image: name.clone(),
            source,
        })?;
    let endpoints = registries.endpoints(&reference)?;
    if endpoints.is_empty() {
        return Err(Error::NoEndpoint { image: name });
    }
    let blobs = lock(store).blobs().clone();
    let mut failures = Vec::new();
    for endpoint in &endpoints {
        let result = pull_from(
            store,
            &blobs,
            endpoint,
            credentials,
            &reference,
            &name,
            pinned.as_ref(),
        )
        .await;
        match result {
            Ok(named) => {
                tracing::info!(image = %named, endpoint = %endpoint.api_root, "image pulled");
                return Ok(named);
            }
            Err(e) if e.stops_pull() => return Err(e),
            Err(e) => {
                tracing::warn!(image = %name, endpoint = %endpoint.api_root, error = %chain(&e),
                    "pull from this endpoint failed");
                failures.push(e);
            }
        }
    }
    Err(failed(name, failures))
}

/// The pull's error once every endpoint failed.
fn failed(image: String, mut failures: Vec<Error>) -> Error {
    if failures.is_empty() {
        return Error::NoEndpoint { image };
    }
    let reported = failures.iter().rposition(Error::answered).unwrap_or(0);
    let cause = failures.remove(reported);
    // Each failure names its URL, so the endpoint need not be repeated.
    let others = failures.iter().map(|e| chain(e)).collect();
    Error::Failed {
        image,
        cause: Box::new(cause),
        others,
    }
}

/// The store, locked. Every store write goes aside and is renamed into place, so a
/// panic elsewhere while it was held leaves nothing half-done: a poisoned lock is used.
fn lock(store: &Mutex<ImageStore>) -> MutexGuard<'_, ImageStore> {
    store.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Pulls from one endpoint and names the image.
async fn pull_from(
    store: &Mutex<ImageStore>,
    blobs: &Blobs,
    endpoint: &Endpoint,
    credentials: &[Credential],
    reference: &Reference,
    name: &str,
    pinned: Option<&Digest>,
) -> Result<String> {
    let session = Session::new(endpoint, credentials)?;
    let mut fetched_again = false;
    loop {
        let digest = session.fetch_image(reference, pinned, blobs).await?;
        // Bound to a statement of its own: the guard must not live into an await.
        let named = lock(store).set_name(name, &digest);
        match named {
            // A prune ran mid-pull and removed blobs no name reached yet: fetch them once
            // more (what is still there is not fetched again).
            Err(store::Error::Incomplete { missing, .. }) if !fetched_again => {
                tracing::info!(image = name, %missing, "blobs pruned during the pull; fetching again");
                fetched_again = true;
            }
            other => return Ok(other?),
        }
    }
}

/// One endpoint, with its connection pool and the authorization it last earned.
struct Session<'a> {
    client: HttpsClient,
    endpoint: &'a Endpoint,
    credentials: Option<Auth>,
    /// The `Authorization` value to send to the endpoint's origin, once a challenge was
    /// answered; shared by the concurrent blob downloads.
    authorization: Mutex<Option<HeaderValue>>,
}

/// A manifest or index, told apart as the store does.
enum Parsed {
    Index(Box<ImageIndex>),
    Manifest(Box<ImageManifest>),
}

impl<'a> Session<'a> {
    fn new(endpoint: &'a Endpoint, credentials: &[Credential]) -> Result<Session<'a>> {
        let tls = tls_config(&endpoint.tls).map_err(|message| Error::Tls {
            endpoint: endpoint.api_root.clone(),
            message,
        })?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(https);
        let credentials = credentials
            .iter()
            .find(|c| c.is_for(&endpoint.registry))
            .map(|c| Auth::Basic {
                username: c.username.clone(),
                password: c.password.clone(),
            })
            .or_else(|| endpoint.auth.clone());
        Ok(Session {
            client,
            endpoint,
            credentials,
            authorization: Mutex::new(None),
        })
    }

    fn url(&self, kind: &str, reference: &str) -> String {
        format!(
            "{}/{}/{kind}/{reference}",
            self.endpoint.api_root, self.endpoint.repository
        )
    }

    /// Fetches the image (for this platform) into `blobs`; returns the digest its name
    /// is to point at (the index's, for a multi-platform image).
    async fn fetch_image(
        &self,
        reference: &Reference,
        pinned: Option<&Digest>,
        blobs: &Blobs,
    ) -> Result<Digest> {
        let tag_or_digest = match (pinned, reference.tag()) {
            (Some(d), _) => d.to_string(),
            (None, Some(tag)) => tag.to_owned(),
            (None, None) => "latest".to_owned(),
        };
        let (top, mut body, mut url) = self.fetch_manifest(&tag_or_digest, pinned).await?;
        let host = Platform::host();
        let mut current = top.clone();
        // The index and manifest, stored after the blobs they reference.
        let mut manifests = vec![(current.clone(), body.clone())];
        for _ in 0..=MAX_DEPTH {
            match parse(&body, &url)? {
                Parsed::Index(index) => {
                    let chosen =
                        platform::choose(&index, &host).ok_or_else(|| Error::NoPlatform {
                            url: url.clone(),
                            platform: platform_name(&host),
                        })?;
                    let digest = digest_of(chosen, &url)?;
                    tracing::debug!(index = %current, manifest = %digest, "platform manifest chosen");
                    (current, body, url) = self
                        .fetch_manifest(&digest.to_string(), Some(&digest))
                        .await?;
                    manifests.push((current.clone(), body.clone()));
                }
                Parsed::Manifest(manifest) => {
                    let wanted = std::iter::once(manifest.config())
                        .chain(manifest.layers())
                        .map(|d| Ok((digest_of(d, &url)?, d.size())))
                        .collect::<Result<Vec<_>>>()?;
                    futures::stream::iter(wanted.into_iter().map(Ok))
                        .try_for_each_concurrent(CONCURRENT_BLOBS, |(digest, size)| {
                            self.fetch_blob(blobs, digest, size)
                        })
                        .await?;
                    // Manifest, then index: a manifest in the store means its blobs are
                    // too (nothing relies on it yet, as nothing is named, but a reader of
                    // the store is never shown a manifest whose layers are missing).
                    for (digest, bytes) in manifests.into_iter().rev() {
                        put_bytes(blobs, digest, bytes).await?;
                    }
                    return Ok(top);
                }
            }
        }
        Err(Error::Malformed {
            url,
            message: format!("indexes nest more than {MAX_DEPTH} deep"),
        })
    }

    /// Fetches a manifest or index by tag or digest: its digest, content and URL.
    /// Content fetched by digest must be that digest.
    async fn fetch_manifest(
        &self,
        reference: &str,
        expected: Option<&Digest>,
    ) -> Result<(Digest, Bytes, String)> {
        let url = self.url("manifests", reference);
        let response = self.get(&url, Some(MANIFEST_TYPES)).await?;
        let response = self.check(response, &url, "manifest").await?;
        let body = read_body(response.into_body(), MAX_MANIFEST, &url).await?;
        let digest = Digest::of(&body);
        if let Some(expected) = expected {
            if digest != *expected {
                return Err(Error::Malformed {
                    url,
                    message: format!("asked for {expected}, got content whose digest is {digest}"),
                });
            }
        }
        Ok((digest, body, url))
    }

    /// Streams a blob into `blobs`, unless it is there already.
    async fn fetch_blob(&self, blobs: &Blobs, digest: Digest, size: u64) -> Result<()> {
        if blobs.contains(&digest) {
            return Ok(());
        }
        let url = self.url("blobs", &digest.to_string());
        let response = self.get(&url, None).await?;
        let response = self
            .check(response, &url, &format!("blob {digest}"))
            .await?;
        let (tx, rx) = mpsc::channel(CHUNKS);
        let writer = {
            let (blobs, digest) = (blobs.clone(), digest.clone());
            tokio::task::spawn_blocking(move || blobs.put(&digest, ChannelReader::new(rx)))
        };
        let mut body = response.into_body();
        let mut received = 0u64;
        let failure = loop {
            let frame = match tokio::time::timeout(IDLE_TIMEOUT, body.frame()).await {
                Err(_) => break Some(stalled(&url)),
                Ok(None) => break None,
                Ok(Some(Err(e))) => break Some(unreachable(&url, e)),
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            received += data.len() as u64;
            if received > size {
                break Some(Error::Malformed {
                    url: url.clone(),
                    message: format!("sent more than the {size} bytes its descriptor gives"),
                });
            }
            if tx.send(Ok(data)).await.is_err() {
                // The writer stopped; its error is the one to report.
                break None;
            }
        };
        if failure.is_some() {
            // The writer discards what it has instead of storing a truncated blob (which
            // its digest check would refuse anyway).
            let _ = tx.send(Err(io::Error::other("download failed"))).await;
        }
        drop(tx);
        let written = writer.await.map_err(Error::Writer)?;
        if let Some(failure) = failure {
            return Err(failure);
        }
        match written {
            Ok(_) => {
                tracing::debug!(%digest, size, "blob pulled");
                Ok(())
            }
            Err(source @ blobs::Error::Mismatch { .. }) => Err(Error::Corrupt { url, source }),
            Err(e) => Err(Error::Store(e.into())),
        }
    }

    /// The response if it is a success; else the error its status (and body) says.
    async fn check(
        &self,
        response: Response<Incoming>,
        url: &str,
        what: &str,
    ) -> Result<Response<Incoming>> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = read_body(response.into_body(), MAX_ERROR_BODY, url)
            .await
            .unwrap_or_default();
        let (codes, message) = registry_errors(&body);
        let not_found = ["MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN"];
        let denied = ["UNAUTHORIZED", "DENIED"];
        let url = url.to_owned();
        Err(
            if status == StatusCode::NOT_FOUND
                || codes.iter().any(|c| not_found.contains(&c.as_str()))
            {
                Error::NotFound {
                    what: what.to_owned(),
                    url,
                    message,
                }
            } else if status == StatusCode::UNAUTHORIZED
                || status == StatusCode::FORBIDDEN
                || codes.iter().any(|c| denied.contains(&c.as_str()))
            {
                Error::Unauthorized {
                    url,
                    status: status.as_u16(),
                    with_credentials: self.credentials.is_some(),
                    message,
                }
            } else {
                Error::Status {
                    url,
                    status: status.as_u16(),
                    message,
                }
            },
        )
    }

    /// GETs `url`, answering an authentication challenge from the endpoint once and
    /// following redirects.
    async fn get(&self, url: &str, accept: Option<&str>) -> Result<Response<Incoming>> {
        let endpoint_origin = origin(url);
        let mut url = url.to_owned();
        let mut challenged = false;
        let mut redirects = 0;
        loop {
            let own_origin = origin(&url) == endpoint_origin;
            // Credentials go to the endpoint only, never to where it redirects (a CDN
            // URL is signed instead).
            let authorization = if own_origin {
                self.authorization
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
            } else {
                None
            };
            let response = self
                .send(Method::GET, &url, accept, authorization, None)
                .await?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && own_origin && !challenged {
                challenged = true;
                if let Some(authorization) = self.answer(&response, &url).await? {
                    *self
                        .authorization
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(authorization);
                    continue;
                }
                return Ok(response);
            }
            let redirect = matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308);
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok());
            match location {
                Some(location) if redirect => {
                    redirects += 1;
                    if redirects > MAX_REDIRECTS {
                        return Err(Error::Malformed {
                            url,
                            message: format!("more than {MAX_REDIRECTS} redirects"),
                        });
                    }
                    url = resolve_location(&url, location).ok_or_else(|| Error::Malformed {
                        url: url.clone(),
                        message: format!("redirects to {location:?}, which is no URL"),
                    })?;
                }
                _ => return Ok(response),
            }
        }
    }

    /// The `Authorization` a `401`'s challenge asks for, if it can be answered: a token
    /// from the challenge's token service (Bearer), or the credentials (Basic).
    async fn answer(
        &self,
        response: &Response<Incoming>,
        url: &str,
    ) -> Result<Option<HeaderValue>> {
        let challenges: Vec<Challenge> = response
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|h| h.to_str().ok())
            .flat_map(parse_challenges)
            .collect();
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            let Some(realm) = bearer.params.get("realm") else {
                return Err(Error::Malformed {
                    url: url.to_owned(),
                    message: "a Bearer challenge without a realm".into(),
                });
            };
            let default_scope = format!("repository:{}:pull", self.endpoint.repository);
            let scope = bearer.params.get("scope").unwrap_or(&default_scope);
            let token = self
                .token(
                    realm,
                    bearer.params.get("service").map(String::as_str),
                    scope,
                )
                .await?;
            return header_value(&format!("Bearer {token}"), url).map(Some);
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            if let Some(Auth::Basic { username, password }) = &self.credentials {
                return header_value(&basic(username, password), url).map(Some);
            }
        }
        Ok(None)
    }

    /// A token from the token service at `realm` (Docker's token authentication, or
    /// OAuth2's refresh-token grant for an identity token).
    async fn token(&self, realm: &str, service: Option<&str>, scope: &str) -> Result<String> {
        let mut pairs: Vec<(&str, &str)> = service.map(|s| ("service", s)).into_iter().collect();
        pairs.extend(scope.split_whitespace().map(|s| ("scope", s)));
        let identity_token = match &self.credentials {
            Some(Auth::IdentityToken(token)) => Some(token.as_str()),
            _ => None,
        };
        if let Some(token) = identity_token {
            pairs.extend([
                ("grant_type", "refresh_token"),
                ("refresh_token", token),
                ("client_id", "skiff"),
            ]);
        }
        // Finished before any await: the serializer is not Send.
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        let response = match (&self.credentials, identity_token) {
            (_, Some(_)) => {
                let form = ("application/x-www-form-urlencoded", Bytes::from(query));
                self.send(Method::POST, realm, None, None, Some(form))
                    .await?
            }
            (credentials, None) => {
                let separator = if realm.contains('?') { '&' } else { '?' };
                let url = format!("{realm}{separator}{query}");
                let authorization = match credentials {
                    Some(Auth::Basic { username, password }) => {
                        Some(header_value(&basic(username, password), realm)?)
                    }
                    _ => None,
                };
                self.send(Method::GET, &url, None, authorization, None)
                    .await?
            }
        };
        let response = self.check(response, realm, "token service").await?;
        let body = read_body(response.into_body(), MAX_ERROR_BODY, realm).await?;
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
        }
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| Error::Malformed {
                url: realm.to_owned(),
                message: format!("not a token response: {e}"),
            })?;
        parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Malformed {
                url: realm.to_owned(),
                message: "the token response has no token".into(),
            })
    }

    /// Sends one request; its headers must come within [`RESPONSE_TIMEOUT`].
    async fn send(
        &self,
        method: Method,
        url: &str,
        accept: Option<&str>,
        authorization: Option<HeaderValue>,
        body: Option<(&str, Bytes)>,
    ) -> Result<Response<Incoming>> {
        let mut request = Request::builder()
            .method(method)
            .uri(url)
            .header(USER_AGENT, USER_AGENT_VALUE);
        if let Some(accept) = accept {
            request = request.header(ACCEPT, accept);
        }
        if let Some(authorization) = authorization {
            request = request.header(AUTHORIZATION, authorization);
        }
        let body = match body {
            Some((content_type, bytes)) => {
                request = request.header(CONTENT_TYPE, content_type);
                bytes
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(body))
            .map_err(|e| Error::Malformed {
                url: url.to_owned(),
                message: format!("not a valid request URL: {e}"),
            })?;
        match tokio::time::timeout(RESPONSE_TIMEOUT, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(unreachable(url, e)),
            Err(_) => Err(Error::Unreachable {
                url: url.to_owned(),
                source: format!("no response within {} s", RESPONSE_TIMEOUT.as_secs()).into(),
            }),
        }
    }
}

/// Stores a small blob (a manifest) from a blocking thread.
async fn put_bytes(blobs: &Blobs, digest: Digest, bytes: Bytes) -> Result<()> {
    let blobs = blobs.clone();
    tokio::task::spawn_blocking(move || blobs.put(&digest, &bytes[..]))
        .await
        .map_err(Error::Writer)?
        .map_err(|e| Error::Store(e.into()))?;
    Ok(())
}

fn unreachable(url: &str, e: impl Into<BoxError>) -> Error {
    Error::Unreachable {
        url: url.to_owned(),
        source: e.into(),
    }
}

fn stalled(url: &str) -> Error {
    unreachable(
        url,
        format!(
            "the transfer stalled: no data for {} s",
            IDLE_TIMEOUT.as_secs()
        ),
    )
}

fn basic(username: &str, password: &str) -> String {
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    format!("Basic {encoded}")
}

fn header_value(value: &str, url: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(value).map_err(|_| Error::Malformed {
        url: url.to_owned(),
        message: "credentials or token that cannot go in a header".into(),
    })
}

/// Reads a body of at most `limit` bytes, each chunk within [`IDLE_TIMEOUT`].
async fn read_body(mut body: Incoming, limit: u64, url: &str) -> Result<Bytes> {
    let mut out = Vec::new();
    loop {
        let frame = match tokio::time::timeout(IDLE_TIMEOUT, body.frame()).await {
            Err(_) => return Err(stalled(url)),
            Ok(None) => return Ok(Bytes::from(out)),
            Ok(Some(Err(e))) => return Err(unreachable(url, e)),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if (out.len() + data.len()) as u64 > limit {
                return Err(Error::Malformed {
                    url: url.to_owned(),
                    message: format!("the response is larger than {limit} bytes"),
                });
            }
            out.extend_from_slice(&data);
        }
    }
}

/// The error codes and a message from a registry's error body
/// (`{"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}`).
fn registry_errors(body: &[u8]) -> (Vec<String>, Option<String>) {
    #[derive(serde::Deserialize)]
    struct Body {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        code: Option<String>,
        message: Option<String>,
    }
    let Ok(parsed) = serde_json::from_slice::<Body>(body) else {
        return (Vec::new(), None);
    };
    let codes = parsed
        .errors
        .iter()
        .filter_map(|e| e.code.clone())
        .collect();
    let messages: Vec<String> = parsed
        .errors
        .iter()
        .map(|e| match (&e.code, &e.message) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(s), None) | (None, Some(s)) => s.clone(),
            (None, None) => String::new(),
        })
        .filter(|m| !m.is_empty())
        .collect();
    (codes, (!messages.is_empty()).then(|| messages.join("; ")))
}

/// A manifest or index, by its fields as the store tells them apart.
fn parse(body: &[u8], url: &str) -> Result<Parsed> {
    let malformed = |message: String| Error::Malformed {
        url: url.to_owned(),
        message,
    };
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| malformed(format!("not an image manifest or index: {e}")))?;
    if value.get("schemaVersion").and_then(|v| v.as_u64()) == Some(1) {
        return Err(malformed(
            "a Docker schema 1 manifest, which is not supported (Docker deprecated it in 2017; \
             push the image again with a current tool)"
                .into(),
        ));
    }
    let invalid = |e: serde_json::Error| malformed(format!("not an image manifest or index: {e}"));
    Ok(if value.get("manifests").is_some() {
        Parsed::Index(Box::new(serde_json::from_value(value).map_err(invalid)?))
    } else {
        Parsed::Manifest(Box::new(serde_json::from_value(value).map_err(invalid)?))
    })
}

fn digest_of(descriptor: &Descriptor, url: &str) -> Result<Digest> {
    descriptor
        .digest()
        .to_string()
        .parse()
        .map_err(|e: blobs::Error| Error::Malformed {
            url: url.to_owned(),
            message: e.to_string(),
        })
}

fn platform_name(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

/// `scheme://authority` of a URL, lowercased (`None` for no absolute URL).
fn origin(url: &str) -> Option<String> {
    let uri = url.parse::<http::Uri>().ok()?;
    Some(format!("{}://{}", uri.scheme_str()?, uri.authority()?).to_ascii_lowercase())
}

/// Where a `Location` header points, from `base`.
fn resolve_location(base: &str, location: &str) -> Option<String> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return Some(location.to_owned());
    }
    let uri = base.parse::<http::Uri>().ok()?;
    let scheme = uri.scheme_str()?;
    if let Some(rest) = location.strip_prefix("//") {
        return Some(format!("{scheme}://{rest}"));
    }
    let origin = format!("{scheme}://{}", uri.authority()?);
    if location.starts_with('/') {
        return Some(format!("{origin}{location}"));
    }
    let path = uri.path();
    let dir = &path[..=path.rfind('/')?];
    Some(format!("{origin}{dir}{location}"))
}

/// One challenge of a `WWW-Authenticate` header.
#[derive(Debug, PartialEq, Eq)]
struct Challenge {
    /// The scheme, lowercased: `bearer`, `basic`.
    scheme: String,
    /// Its parameters, names lowercased.
    params: HashMap<String, String>,
}

/// The challenges in a `WWW-Authenticate` value
/// (`Bearer realm="https://auth.example/token",service="registry",scope="..."`): a
/// name followed by `=` is a parameter of the challenge before it, any other word
/// starts a challenge.
fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let mut rest = header;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        if rest.is_empty() {
            return out;
        }
        let end = rest
            .find(|c: char| c == '=' || c == ',' || c.is_whitespace())
            .unwrap_or(rest.len());
        let word = &rest[..end];
        let after = rest[end..].trim_start_matches([' ', '\t']);
        let Some(value) = after.strip_prefix('=') else {
            out.push(Challenge {
                scheme: word.to_ascii_lowercase(),
                params: HashMap::new(),
            });
            rest = &rest[end..];
            continue;
        };
        let value = value.trim_start_matches([' ', '\t']);
        let (parsed, remaining) = match value.strip_prefix('"') {
            Some(quoted) => {
                let mut parsed = String::new();
                let mut chars = quoted.char_indices();
                let mut end = quoted.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, escaped)) = chars.next() {
                                parsed.push(escaped);
                            }
                        }
                        '"' => {
                            end = i + 1;
                            break;
                        }
                        c => parsed.push(c),
                    }
                }
                (parsed, &quoted[end.min(quoted.len())..])
            }
            None => {
                let end = value
                    .find(|c: char| c == ',' || c.is_whitespace())
                    .unwrap_or(value.len());
                (value[..end].to_owned(), &value[end..])
            }
        };
        if let Some(challenge) = out.last_mut() {
            challenge.params.insert(word.to_ascii_lowercase(), parsed);
        }
        rest = remaining;
    }
}

/// A blob's bytes as the download sends them, for the writer thread.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    chunk: Bytes,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> ChannelReader {
        ChannelReader {
            rx,
            chunk: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => return Err(e),
                // The sender is gone: the end of the download (a truncated one fails
                // the digest check).
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// The TLS client settings for an endpoint: the system's roots and `ca_file`'s, or no
/// verification at all, and the client certificate if one is given.
fn tls_config(tls: &registries::Tls) -> std::result::Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
    } else {
        let mut roots = native_roots().clone();
        if let Some(ca_file) = &tls.ca_file {
            let certs = read_certificates(ca_file)?;
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("ca_file {}: {e}", ca_file.display()))?;
            }
        }
        builder.with_root_certificates(roots)
    };
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert_file), Some(key_file)) => {
            let certs = read_certificates(cert_file)?;
            let key = PrivateKeyDer::from_pem_file(key_file)
                .map_err(|e| format!("key_file {}: {e}", key_file.display()))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("cert_file {}: {e}", cert_file.display()))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// The PEM certificates in `path`; none is an error (a wrong file, not a wish).
fn read_certificates(path: &Path) -> std::result::Result<Vec<CertificateDer<'static>>, String> {
    let context = |e: &dyn fmt::Display| format!("{}: {e}", path.display());
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| context(&e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| context(&e))?;
    if certs.is_empty() {
        return Err(context(&"no PEM certificate in it"));
    }
    Ok(certs)
}

/// The system's trusted certificates, read once.
fn native_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::warn!(%error, "reading the system's trusted certificates");
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            tracing::warn!(
                ignored,
                "no system trusted certificates: https registries need a ca_file"
            );
        }
        roots
    })
}

/// `insecure_skip_verify`: any certificate is accepted, though the handshake's
/// signatures are still checked (rustls wants them, and they cost nothing).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use serde_json::json;
    use std::convert::Infallible;

    #[test]
    fn challenges_parse_as_registries_send_them() {
        let hub = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#;
        let parsed = parse_challenges(hub);
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].scheme, "bearer");
        assert_eq!(parsed[0].params["realm"], "https://auth.docker.io/token");
        assert_eq!(parsed[0].params["service"], "registry.docker.io");
        assert_eq!(parsed[0].params["scope"], "repository:library/busybox:pull");
        // Two challenges in one value, spaces, escapes and unquoted values.
        let parsed = parse_challenges(
            r#"Basic realm="Registry \"R\"", Bearer Realm = https://t.example/token , service=reg"#,
        );
        assert_eq!(parsed.len(), 2, "{parsed:?}");
        assert_eq!(parsed[0].scheme, "basic");
        assert_eq!(parsed[0].params["realm"], "Registry \"R\"");
        assert_eq!(parsed[1].scheme, "bearer");
        assert_eq!(parsed[1].params["realm"], "https://t.example/token");
        assert_eq!(parsed[1].params["service"], "reg");
        // Garbage gives something, never a hang or a panic.
        for junk in ["", "=", "\"", "Bearer realm=\"unterminated", ",,, =x"] {
            let _ = parse_challenges(junk);
        }
    }

    #[test]
    fn locations_resolve_against_the_request() {
        let base = "https://registry.example:5000/v2/app/blobs/sha256:ab";
        for (location, expected) in [
            ("https://cdn.example/x?sig=1", "https://cdn.example/x?sig=1"),
            ("//cdn.example/x", "https://cdn.example/x"),
            ("/storage/x", "https://registry.example:5000/storage/x"),
            ("other", "https://registry.example:5000/v2/app/blobs/other"),
        ] {
            assert_eq!(
                resolve_location(base, location).as_deref(),
                Some(expected),
                "{location}"
            );
        }
        assert_eq!(
            origin("HTTP://Registry.Example:5000/v2/x").as_deref(),
            Some("http://registry.example:5000")
        );
    }

    #[test]
    fn credentials_match_their_registry_in_any_spelling() {
        let credential = |registry: &str| Credential {
            registry: registry.into(),
            username: "u".into(),
            password: "secret".into(),
        };
        assert!(credential("https://index.docker.io/v1/").is_for("docker.io"));
        assert!(credential("docker.io").is_for("docker.io"));
        assert!(credential("registry-1.docker.io").is_for("docker.io"));
        assert!(credential("https://registry.example:5000").is_for("registry.example:5000"));
        assert!(!credential("registry.example").is_for("registry.example:5000"));
        assert!(!credential("quay.io").is_for("docker.io"));
        let printed = format!("{:?}", credential("docker.io"));
        assert!(!printed.contains("secret"), "{printed}");
    }

    #[test]
    fn registry_error_bodies_give_codes_and_messages() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"2"}}]}"#;
        assert_eq!(
            registry_errors(body),
            (
                vec!["MANIFEST_UNKNOWN".to_owned()],
                Some("MANIFEST_UNKNOWN: manifest unknown".to_owned())
            )
        );
        assert_eq!(registry_errors(b"<html>404</html>"), (vec![], None));
    }

    #[test]
    fn the_reported_failure_is_the_last_registry_that_answered() {
        let unreachable = || Error::Unreachable {
            url: "http://down/v2/a/manifests/1".into(),
            source: "connection refused".into(),
        };
        let not_found = Error::NotFound {
            what: "manifest".into(),
            url: "http://mirror/v2/a/manifests/1".into(),
            message: None,
        };
        let unauthorized = Error::Unauthorized {
            url: "https://registry/v2/a/manifests/1".into(),
            status: 401,
            with_credentials: false,
            message: None,
        };
        let err = failed("a:1".into(), vec![unreachable(), not_found, unauthorized]);
        assert!(err.is_unauthorized(), "{err}");
        let Error::Failed { others, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(others.len(), 2);
        assert!(others[0].contains("http://down/v2/a/manifests/1 is unreachable"));
        // Nothing answered: the first endpoint's failure.
        let err = failed("a:1".into(), vec![unreachable(), unreachable()]);
        assert!(err.is_unreachable(), "{err}");
        assert!(matches!(
            failed("a:1".into(), vec![]),
            Error::NoEndpoint { .. }
        ));
    }

    /// A registry that wants a token from its token service for everything, and
    /// redirects blob downloads to a "CDN" on another origin (`localhost` rather than
    /// `127.0.0.1`), as Docker Hub does.
    struct Fake {
        port: u16,
        state: Arc<FakeState>,
    }

    struct FakeState {
        /// The user and password the token service accepts.
        login: (String, String),
        /// Blobs by digest, and the manifest's digest.
        blobs: HashMap<String, Vec<u8>>,
        manifest: String,
        /// Challenge with HTTP basic authentication rather than a token service.
        basic: bool,
        /// Serve this blob with its content changed.
        corrupt: Option<String>,
        /// What was asked: method, path and query, `Authorization`.
        seen: Mutex<Vec<(String, Option<String>)>>,
        port: OnceLock<u16>,
    }

    const TOKEN: &str = "t0k3n";
    const REFRESH: &str = "r3fresh";

    impl Fake {
        async fn start(basic: bool, corrupt_layer: bool) -> (Fake, String) {
            let mut layer = tar::Builder::new(Vec::new());
            let mut header = tar::Header::new_gnu();
            header.set_size(3);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(1_700_000_000);
            layer
                .append_data(&mut header, "hi", &b"hi\n"[..])
                .expect("entry");
            let layer = layer.into_inner().expect("layer");
            let host = Platform::host();
            let config = json!({"architecture": host.architecture, "os": host.os,
                "rootfs": {"type": "layers", "diff_ids": [Digest::of(&layer).to_string()]}})
            .to_string()
            .into_bytes();
            let manifest = json!({"schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": Digest::of(&config).to_string(), "size": config.len()},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                            "digest": Digest::of(&layer).to_string(), "size": layer.len()}]})
            .to_string()
            .into_bytes();
            let layer_digest = Digest::of(&layer).to_string();
            let manifest_digest = Digest::of(&manifest).to_string();
            let blobs = [layer, config, manifest]
                .into_iter()
                .map(|b| (Digest::of(&b).to_string(), b))
                .collect();
            let state = Arc::new(FakeState {
                login: ("puller".into(), "s3cret".into()),
                blobs,
                manifest: manifest_digest,
                basic,
                corrupt: corrupt_layer.then_some(layer_digest),
                seen: Mutex::new(Vec::new()),
                port: OnceLock::new(),
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let port = listener.local_addr().expect("addr").port();
            let _ = state.port.set(port);
            let serving = state.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let state = serving.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |request| {
                            let state = state.clone();
                            async move { Ok::<_, Infallible>(state.answer(request).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
            (Fake { port, state }, format!("127.0.0.1:{port}/app:1"))
        }

        fn seen(&self) -> Vec<(String, Option<String>)> {
            self.state.seen.lock().expect("seen").clone()
        }
    }

    impl FakeState {
        async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
            let (request, body) = request.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let body = String::from_utf8_lossy(&body);
            let target = request
                .uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default();
            let authorization = request
                .headers
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            self.seen
                .lock()
                .expect("seen")
                .push((target.clone(), authorization.clone()));
            let port = self.port.get().copied().unwrap_or_default();
            let respond = |status: u16, body: Vec<u8>| {
                Response::builder()
                    .status(status)
                    .body(Full::new(Bytes::from(body)))
                    .expect("response")
            };
            // OAuth2's refresh-token grant, for an identity token.
            if target == "/token" && request.method == Method::POST {
                let granted = body.contains("grant_type=refresh_token")
                    && body.contains(&format!("refresh_token={REFRESH}"))
                    && body.contains("scope=repository%3Aapp%3Apull");
                return if granted {
                    respond(200, json!({"access_token": TOKEN}).to_string().into_bytes())
                } else {
                    respond(401, br#"{"error":"invalid_grant"}"#.to_vec())
                };
            }
            let (user, password) = &self.login;
            if target.starts_with("/token?") {
                return if authorization.as_deref() == Some(basic(user, password).as_str()) {
                    respond(200, json!({"token": TOKEN}).to_string().into_bytes())
                } else {
                    respond(
                        401,
                        br#"{"details":"incorrect username or password"}"#.to_vec(),
                    )
                };
            }
            if let Some(digest) = target.strip_prefix("/cdn/") {
                let mut blob = self.blobs.get(digest).cloned().unwrap_or_default();
                if self.corrupt.as_deref() == Some(digest) {
                    blob[0] ^= 1;
                }
                return respond(200, blob);
            }
            let (accepted, challenge) = if self.basic {
                (basic(user, password), "Basic realm=\"fake\"".to_owned())
            } else {
                (
                    format!("Bearer {TOKEN}"),
                    format!(
                        "Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"fake\",scope=\"repository:app:pull\""
                    ),
                )
            };
            if authorization.as_deref() != Some(accepted.as_str()) {
                let mut response = respond(
                    401,
                    br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#
                        .to_vec(),
                );
                response.headers_mut().insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_str(&challenge).expect("challenge"),
                );
                return response;
            }
            if let Some(reference) = target.strip_prefix("/v2/app/manifests/") {
                let digest = if reference == "1" {
                    self.manifest.as_str()
                } else {
                    reference
                };
                return match self.blobs.get(digest) {
                    Some(m) if digest == self.manifest => respond(200, m.clone()),
                    _ => respond(
                        404,
                        br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#
                            .to_vec(),
                    ),
                };
            }
            if let Some(digest) = target.strip_prefix("/v2/app/blobs/") {
                let mut response = respond(307, Vec::new());
                let cdn = format!("http://localhost:{port}/cdn/{digest}");
                response
                    .headers_mut()
                    .insert(LOCATION, HeaderValue::from_str(&cdn).expect("location"));
                return response;
            }
            respond(404, Vec::new())
        }
    }

    fn store() -> (tempfile::TempDir, Mutex<ImageStore>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ImageStore::open(&dir.path().join("images")).expect("store");
        (dir, Mutex::new(store))
    }

    fn login(fake: &Fake, password: &str) -> Vec<Credential> {
        vec![Credential {
            registry: format!("127.0.0.1:{}", fake.port),
            username: "puller".into(),
            password: password.into(),
        }]
    }

    #[test]
    fn a_pull_can_be_spawned() {
        fn assert_send<T: Send>(_: &T) {}
        let (_dir, store) = store();
        let registries = Registries::default();
        // Not polled: only its type is checked (the store's guard never crosses an await).
        let future = pull(&store, "busybox", &registries, &[]);
        assert_send(&future);
    }

    #[tokio::test]
    async fn token_auth_with_a_pull_secret_and_cdn_redirects_without_it() {
        let (fake, image) = Fake::start(false, false).await;
        let (_dir, store) = store();
        let name = pull(
            &store,
            &image,
            &Registries::default(),
            &login(&fake, "s3cret"),
        )
        .await
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
        assert_eq!(name, image);
        let resolved = lock(&store)
            .resolve(&image)
            .expect("resolve")
            .expect("named");
        assert_eq!(resolved.layers.len(), 1);
        let seen = fake.seen();
        let bearer = Some(format!("Bearer {TOKEN}"));
        // Asked anonymously, challenged, the token fetched with the secret, asked again.
        assert_eq!(seen[0], ("/v2/app/manifests/1".to_owned(), None));
        assert_eq!(
            seen[1],
            (
                "/token?service=fake&scope=repository%3Aapp%3Apull".to_owned(),
                Some(basic("puller", "s3cret"))
            )
        );
        assert_eq!(seen[2], ("/v2/app/manifests/1".to_owned(), bearer.clone()));
        // The token serves the blob requests; the CDN never sees it.
        for (target, authorization) in &seen[3..] {
            if target.starts_with("/cdn/") {
                assert_eq!(*authorization, None, "{target}");
            } else {
                assert!(target.starts_with("/v2/app/blobs/"), "{target}");
                assert_eq!(*authorization, bearer, "{target}");
            }
        }
        assert_eq!(seen.len(), 3 + 2 * 2, "{seen:?}");
    }

    #[tokio::test]
    async fn refused_or_missing_credentials_are_unauthorized() {
        let (fake, image) = Fake::start(false, false).await;
        let (_dir, store) = store();
        let err = pull(
            &store,
            &image,
            &Registries::default(),
            &login(&fake, "wrong"),
        )
        .await
        .expect_err("wrong password");
        let message = chain(&err);
        assert!(err.is_unauthorized(), "{message}");
        assert!(
            message.contains(&format!(
                "unauthorized at http://127.0.0.1:{}/token",
                fake.port
            )),
            "{message}"
        );
        assert!(message.contains("refused the credentials"), "{message}");
        // A secret for another registry is not sent.
        let other = vec![Credential {
            registry: "docker.io".into(),
            username: "puller".into(),
            password: "s3cret".into(),
        }];
        let err = pull(&store, &image, &Registries::default(), &other)
            .await
            .expect_err("no credentials");
        let message = chain(&err);
        assert!(err.is_unauthorized(), "{message}");
        assert!(message.contains("imagePullSecret"), "{message}");
        assert!(lock(&store).resolve(&image).expect("resolve").is_none());
    }

    #[tokio::test]
    async fn an_identity_token_from_registries_yaml_is_exchanged_for_a_token() {
        let (fake, image) = Fake::start(false, false).await;
        let (_dir, store) = store();
        let yaml = format!(
            "configs:\n  \"127.0.0.1:{}\":\n    auth: {{identity_token: {REFRESH}}}\n",
            fake.port
        );
        let registries = Registries::parse(&yaml).expect("registries");
        pull(&store, &image, &registries, &[])
            .await
            .unwrap_or_else(|e| panic!("{}", chain(&e)));
        let seen = fake.seen();
        assert_eq!(seen[1], ("/token".to_owned(), None));
        assert_eq!(
            seen[2],
            (
                "/v2/app/manifests/1".to_owned(),
                Some(format!("Bearer {TOKEN}"))
            )
        );
    }

    #[tokio::test]
    async fn a_basic_challenge_gets_the_credentials() {
        let (fake, image) = Fake::start(true, false).await;
        let (_dir, store) = store();
        let yaml = format!(
            "configs:\n  \"127.0.0.1:{}\":\n    auth: {{username: puller, password: s3cret}}\n",
            fake.port
        );
        let registries = Registries::parse(&yaml).expect("registries");
        pull(&store, &image, &registries, &[])
            .await
            .unwrap_or_else(|e| panic!("{}", chain(&e)));
        let seen = fake.seen();
        assert_eq!(seen[0], ("/v2/app/manifests/1".to_owned(), None));
        let login = Some(basic("puller", "s3cret"));
        assert_eq!(seen[1], ("/v2/app/manifests/1".to_owned(), login));
        assert!(!seen.iter().any(|(target, _)| target.starts_with("/token")));
        // Without credentials, the same registry refuses the pull.
        let (_dir, store) = self::store();
        let err = pull(&store, &image, &Registries::default(), &[])
            .await
            .expect_err("no credentials");
        assert!(err.is_unauthorized(), "{}", chain(&err));
    }

    #[tokio::test]
    async fn a_corrupt_blob_is_refused_and_nothing_is_named() {
        let (fake, image) = Fake::start(false, true).await;
        let (_dir, store) = store();
        let err = pull(
            &store,
            &image,
            &Registries::default(),
            &login(&fake, "s3cret"),
        )
        .await
        .expect_err("corrupt layer");
        let message = chain(&err);
        assert!(
            message.contains("content does not match its digest"),
            "{message}"
        );
        assert!(lock(&store).resolve(&image).expect("resolve").is_none());
        // The config may have arrived; the layer and the manifest did not.
        assert!(lock(&store).blobs().list().expect("blobs").len() <= 1);
    }
}
