//! Where images are pulled from: K3s's `registries.yaml`
//! (<https://docs.k3s.io/installation/private-registry>), and the ordered endpoints it
//! gives for an image.
//!
//! ```yaml
//! mirrors:
//!   docker.io:                       # a registry, or "*" for any registry without an entry
//!     endpoint: ["https://mirror.example:5000", "http://10.0.0.1:5000"]
//!     rewrite:                       # Go (RE2) regexes on the repository path
//!       "^rancher/(.*)": "mirrored/rancher/$1"
//! configs:
//!   mirror.example:5000:             # an endpoint's host (or a registry's, or "*")
//!     auth: {username: u, password: p}   # or auth: base64("u:p"), or identity_token
//!     tls: {ca_file: /ca.pem, cert_file: /c.pem, key_file: /k.pem, insecure_skip_verify: false}
//! ```
//!
//! The endpoints of an image are its registry's mirrors in the order given, rewrites
//! applied, then the registry itself (containerd's "default endpoint", tried last and
//! never rewritten). An endpoint written without a scheme is `https`, except on a
//! loopback host with a port other than 443, which is `http`; a path other than `/v2` is
//! the API root as given (K3s's override path). `docker.io` is served at
//! `registry-1.docker.io`. These are the rules K3s uses when it writes containerd's
//! `hosts.toml` files, so a file that works there works here. Unlike K3s, a mistake in
//! the file (an unknown key, an endpoint that is no URL, a regex that does not compile)
//! refuses the whole file, rather than being skipped with a log line the user may never
//! see while pulls quietly go elsewhere.

use base64::Engine as _;
use oci_spec::distribution::Reference;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Where Docker Hub's registry API is served; images name it `docker.io`.
const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// The `mirrors` and `configs` entry for registries without one of their own.
const WILDCARD: &str = "*";

/// What can be wrong with a registries file, or with what it makes of an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("reading {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file is wrong; nothing of it is used.
    #[error("{}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: Box<Error>,
    },
    /// Not YAML, or not the shape of a registries file (an unknown key, a list where a
    /// map belongs...).
    #[error("not a registries file")]
    Yaml(#[source] serde_yaml_ng::Error),
    /// A mirror endpoint is not an `http` or `https` URL.
    #[error("mirrors.{registry:?}: endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// The mirror entry.
        registry: String,
        /// The endpoint as written.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A rewrite is not a valid regex, or its replacement is not a string.
    #[error("mirrors.{registry:?}: rewrite {pattern:?}: {reason}")]
    Rewrite {
        /// The mirror entry.
        registry: String,
        /// The pattern as written.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An `auth` or `tls` section cannot be used.
    #[error("configs.{registry:?}: {reason}")]
    Config {
        /// The config entry.
        registry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A rewrite turned an image's repository into something that is no repository path.
    #[error("mirrors.{registry:?}: rewrite {pattern:?} turns {repository:?} into {rewritten:?}, which is not a repository path")]
    Rewritten {
        /// The mirror entry.
        registry: String,
        /// The rewrite's pattern.
        pattern: String,
        /// The repository before.
        repository: String,
        /// The repository after.
        rewritten: String,
    },
}

/// The registries module's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A registries file, checked: every endpoint parsed, every rewrite compiled, every
/// `auth` decoded.
#[derive(Debug, Clone)]
pub struct Registries {
    mirrors: BTreeMap<String, Mirror>,
    configs: BTreeMap<String, Config>,
    default_endpoint: bool,
}

impl Default for Registries {
    /// No file: every image is pulled from its own registry.
    fn default() -> Registries {
        Registries {
            mirrors: BTreeMap::new(),
            configs: BTreeMap::new(),
            default_endpoint: true,
        }
    }
}

#[derive(Debug, Clone)]
struct Mirror {
    endpoints: Vec<Url>,
    /// In the order the file gives them: the first that matches a repository rewrites it.
    rewrites: Vec<(regex::Regex, String)>,
}

#[derive(Debug, Clone, Default)]
struct Config {
    auth: Option<Auth>,
    tls: Tls,
}

/// An endpoint's address, normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Url {
    /// `scheme://authority/path`, the path being the API root (`/v2`, or an override).
    api_root: String,
    /// The registry name its configuration is found under: the host and port, Docker
    /// Hub's API host being `docker.io`.
    registry: String,
}

/// One place to ask for an image, with what to ask it and how to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The registry API's root, without a trailing slash:
    /// `https://registry-1.docker.io/v2`, `http://127.0.0.1:5000/v2`, or the path the
    /// file gives (`https://mirror.example/artifactory/api/docker/hub`).
    pub api_root: String,
    /// The registry name the endpoint's configuration and pull-secret credentials are
    /// found under: `host[:port]`, `docker.io` for Docker Hub.
    pub registry: String,
    /// The repository to ask this endpoint for (rewritten for a mirror):
    /// `library/busybox`.
    pub repository: String,
    /// The credentials `configs` gives for this endpoint's registry.
    pub auth: Option<Auth>,
    /// How to connect over https.
    pub tls: Tls,
    /// Whether this is the image's registry itself, rather than a mirror of it.
    pub is_default: bool,
}

impl Endpoint {
    /// Whether requests go over TLS.
    pub fn is_https(&self) -> bool {
        self.api_root.starts_with("https://")
    }
}

/// Credentials for a registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// A user name and password (or a token used as one), sent as HTTP basic
    /// authentication or to the registry's token service.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
    /// An OAuth2 refresh token (`identity_token`, what `docker login` keeps for some
    /// registries), exchanged at the registry's token service.
    IdentityToken(String),
}

impl fmt::Debug for Auth {
    /// Names the user, never the secret: errors and logs print endpoints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Auth::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

/// How to connect to an https endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// PEM certificates trusted besides the system's.
    pub ca_file: Option<PathBuf>,
    /// A PEM client certificate (chain) to present, with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// The PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate.
    pub insecure_skip_verify: bool,
}

/// The file as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    mirrors: Option<BTreeMap<String, Option<RawMirror>>>,
    configs: Option<BTreeMap<String, Option<RawConfig>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMirror {
    endpoint: Option<Vec<String>>,
    // A mapping keeps the file's order, which decides which rewrite wins.
    rewrite: Option<serde_yaml_ng::Mapping>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    auth: Option<RawAuth>,
    tls: Option<RawTls>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    username: Option<String>,
    password: Option<String>,
    auth: Option<String>,
    identity_token: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    insecure_skip_verify: Option<bool>,
}

impl Registries {
    /// Reads the registries file at `path`; a missing file configures nothing (images
    /// come from their own registries), as in K3s.
    pub fn load(path: &Path) -> Result<Registries> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Registries::default()),
            Err(source) => {
                return Err(Error::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        Registries::parse(&text).map_err(|e| Error::File {
            path: path.to_owned(),
            source: Box::new(e),
        })
    }

    /// Parses a registries file's text.
    pub fn parse(text: &str) -> Result<Registries> {
        // An empty file (or one of comments) is YAML's null: no configuration.
        let raw: Option<RawFile> = serde_yaml_ng::from_str(text).map_err(Error::Yaml)?;
        let raw = raw.unwrap_or_default();
        let mut mirrors = BTreeMap::new();
        for (registry, mirror) in raw.mirrors.unwrap_or_default() {
            let mirror = mirror.unwrap_or_default();
            let mut endpoints: Vec<Url> = Vec::new();
            for endpoint in mirror.endpoint.unwrap_or_default() {
                let url = Url::parse(&endpoint).map_err(|reason| Error::Endpoint {
                    registry: registry.clone(),
                    endpoint: endpoint.clone(),
                    reason,
                })?;
                // Listed twice, tried once (K3s skips duplicates too).
                if !endpoints.contains(&url) {
                    endpoints.push(url);
                }
            }
            let mut rewrites = Vec::new();
            for (pattern, replacement) in mirror.rewrite.unwrap_or_default() {
                let rewrite_err = |reason: String| Error::Rewrite {
                    registry: registry.clone(),
                    pattern: yaml_scalar(&pattern),
                    reason,
                };
                let (Some(pattern), Some(replacement)) = (pattern.as_str(), replacement.as_str())
                else {
                    return Err(rewrite_err(
                        "a rewrite maps a regex string to a replacement string".into(),
                    ));
                };
                let regex = regex::Regex::new(pattern).map_err(|e| rewrite_err(e.to_string()))?;
                rewrites.push((regex, replacement.to_owned()));
            }
            mirrors.insert(
                registry,
                Mirror {
                    endpoints,
                    rewrites,
                },
            );
        }
        let mut configs = BTreeMap::new();
        for (registry, config) in raw.configs.unwrap_or_default() {
            let config = config.unwrap_or_default();
            let config_err = |reason: &str| Error::Config {
                registry: registry.clone(),
                reason: reason.to_owned(),
            };
            let auth = config.auth.map(parse_auth).transpose();
            let auth = auth.map_err(|reason| config_err(&reason))?;
            let tls = config.tls.unwrap_or_default();
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                return Err(config_err(
                    "tls: cert_file and key_file go together (a client certificate and its key)",
                ));
            }
            let tls = Tls {
                ca_file: tls.ca_file,
                cert_file: tls.cert_file,
                key_file: tls.key_file,
                insecure_skip_verify: tls.insecure_skip_verify.unwrap_or(false),
            };
            configs.insert(registry, Config { auth, tls });
        }
        Ok(Registries {
            mirrors,
            configs,
            default_endpoint: true,
        })
    }

    /// Whether an image whose registry has a `mirrors` entry (its own or `*`) falls back
    /// to the registry itself when no mirror has it: K3s's
    /// `--disable-default-registry-endpoint` turned off. On by default; off suits an
    /// air-gapped site, where the upstream registry is never reachable.
    pub fn with_default_endpoint(mut self, enabled: bool) -> Registries {
        self.default_endpoint = enabled;
        self
    }

    /// The endpoints to try for `image` (a normalized reference), in order: its
    /// registry's mirrors (or the `*` mirrors when the registry has no entry), each with
    /// the repository rewritten by the first of the mirror's rewrites that matches it,
    /// then the registry itself, unrewritten.
    pub fn endpoints(&self, image: &Reference) -> Result<Vec<Endpoint>> {
        let registry = image.registry();
        let repository = image.repository();
        let (mirror_key, mirror) = match self.mirrors.get_key_value(registry) {
            Some((key, mirror)) => (key.as_str(), Some(mirror)),
            None => (WILDCARD, self.mirrors.get(WILDCARD)),
        };
        let default = Url::of_registry(registry);
        // `*` configures only the registries that have no entry of their own: K3s
        // writes such a registry its own hosts.toml, which does not inherit from
        // containerd's `_default` one.
        let has_own_entry =
            self.mirrors.contains_key(registry) || self.config_for(registry).is_some();
        let default_config = if has_own_entry {
            self.config_for(registry)
        } else {
            self.configs.get(WILDCARD)
        };

        let mut out = Vec::new();
        let mut default_listed = false;
        if let Some(mirror) = mirror {
            let rewritten = rewrite(mirror_key, &mirror.rewrites, repository)?;
            for url in &mirror.endpoints {
                let is_default = *url == default;
                default_listed |= is_default;
                let config = if is_default {
                    default_config
                } else {
                    self.config_for(&url.registry)
                };
                out.push(endpoint(url, &rewritten, config, is_default));
            }
        }
        if !default_listed && (self.default_endpoint || mirror.is_none()) {
            out.push(endpoint(&default, repository, default_config, true));
        }
        Ok(out)
    }

    /// The `configs` entry for a registry name; Docker Hub's may be under its API host.
    fn config_for(&self, registry: &str) -> Option<&Config> {
        let api_host = if registry == DOCKER_HUB {
            self.configs.get(DOCKER_HUB_API)
        } else {
            None
        };
        api_host.or_else(|| self.configs.get(registry))
    }
}

fn endpoint(url: &Url, repository: &str, config: Option<&Config>, is_default: bool) -> Endpoint {
    let config = config.cloned().unwrap_or_default();
    Endpoint {
        api_root: url.api_root.clone(),
        registry: url.registry.clone(),
        repository: repository.to_owned(),
        auth: config.auth,
        tls: config.tls,
        is_default,
    }
}

/// `repository` as the first matching rewrite makes it (all its matches replaced, as
/// Go's `ReplaceAllString`, whose `$1` syntax Rust's regex shares).
fn rewrite(
    registry: &str,
    rewrites: &[(regex::Regex, String)],
    repository: &str,
) -> Result<String> {
    let Some((regex, replacement)) = rewrites.iter().find(|(re, _)| re.is_match(repository)) else {
        return Ok(repository.to_owned());
    };
    let rewritten = regex
        .replace_all(repository, replacement.as_str())
        .into_owned();
    if !is_repository_path(&rewritten) {
        return Err(Error::Rewritten {
            registry: registry.to_owned(),
            pattern: regex.as_str().to_owned(),
            repository: repository.to_owned(),
            rewritten,
        });
    }
    Ok(rewritten)
}

/// Whether `path` is a repository path by the distribution spec's grammar (lowercase
/// components joined by `/`), as oci-spec's reference parser checks it.
fn is_repository_path(path: &str) -> bool {
    format!("registry.invalid/{path}")
        .parse::<Reference>()
        .is_ok_and(|r| r.repository() == path)
}

fn parse_auth(raw: RawAuth) -> std::result::Result<Auth, String> {
    if let Some(username) = raw.username.filter(|u| !u.is_empty()) {
        return Ok(Auth::Basic {
            username,
            password: raw.password.unwrap_or_default(),
        });
    }
    if let Some(token) = raw.identity_token.filter(|t| !t.is_empty()) {
        return Ok(Auth::IdentityToken(token));
    }
    if let Some(encoded) = raw.auth.filter(|a| !a.is_empty()) {
        let bad = || "auth: not base64 of \"username:password\"".to_owned();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| bad())?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
        let (username, password) = decoded.split_once(':').ok_or_else(bad)?;
        return Ok(Auth::Basic {
            username: username.to_owned(),
            password: password.to_owned(),
        });
    }
    Err("auth: gives none of username, auth or identity_token".to_owned())
}

impl Url {
    /// An endpoint as `registries.yaml` spells it, normalized as K3s does.
    fn parse(text: &str) -> std::result::Result<Url, String> {
        let with_scheme = if text.contains("://") {
            text.to_owned()
        } else {
            // Which scheme depends on the host, so parse the authority alone first.
            let authority = text.split('/').next().unwrap_or_default();
            let authority = authority
                .parse::<http::uri::Authority>()
                .map_err(|e| e.to_string())?;
            let port = authority.port_u16();
            let scheme = if is_loopback(authority.host()) && port.is_some_and(|p| p != 443) {
                "http"
            } else {
                "https"
            };
            format!("{scheme}://{text}")
        };
        let uri = with_scheme
            .parse::<http::Uri>()
            .map_err(|e| e.to_string())?;
        let scheme = match uri.scheme_str() {
            Some(s @ ("http" | "https")) => s,
            _ => return Err("only http and https endpoints are supported".into()),
        };
        let authority = uri.authority().ok_or("no host")?;
        if authority.as_str().contains('@') {
            return Err("credentials go in configs, not in the endpoint URL".into());
        }
        if uri.query().is_some() {
            return Err("an endpoint has no query".into());
        }
        let mut host = authority.as_str().to_ascii_lowercase();
        let mut registry = host.clone();
        if host == DOCKER_HUB {
            host = DOCKER_HUB_API.to_owned();
        } else if host == DOCKER_HUB_API {
            registry = DOCKER_HUB.to_owned();
        }
        let path = match uri.path().trim_end_matches('/') {
            "" | "/v2" => "/v2",
            other => other,
        };
        Ok(Url {
            api_root: format!("{scheme}://{host}{path}"),
            registry,
        })
    }

    /// The registry itself (a normalized reference's registry name cannot fail to
    /// parse; if one ever did, its plain https URL is still the best guess).
    fn of_registry(registry: &str) -> Url {
        Url::parse(registry).unwrap_or_else(|_| Url {
            api_root: format!("https://{registry}/v2"),
            registry: registry.to_owned(),
        })
    }
}

/// containerd's `IsLocalhost`: `localhost`, or a loopback address.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A YAML key as the user wrote it, for an error message.
fn yaml_scalar(value: &serde_yaml_ng::Value) -> String {
    match value {
        serde_yaml_ng::Value::String(s) => s.clone(),
        other => serde_yaml_ng::to_string(other)
            .map(|s| s.trim_end().to_owned())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(registries: &Registries, image: &str) -> Vec<Endpoint> {
        let reference = crate::image::normalize(image).expect("reference");
        registries.endpoints(&reference).expect("endpoints")
    }

    /// (api root, repository) of each endpoint.
    fn tried(registries: &Registries, image: &str) -> Vec<(String, String)> {
        endpoints(registries, image)
            .into_iter()
            .map(|e| (e.api_root, e.repository))
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn without_a_file_images_come_from_their_registry() {
        let none = Registries::default();
        assert_eq!(
            tried(&none, "busybox"),
            pairs(&[("https://registry-1.docker.io/v2", "library/busybox")])
        );
        let hub = &endpoints(&none, "busybox")[0];
        assert_eq!(hub.registry, "docker.io");
        assert!(hub.is_default && hub.is_https() && hub.auth.is_none());
        assert_eq!(
            tried(&none, "quay.io/coreos/etcd:v3"),
            pairs(&[("https://quay.io/v2", "coreos/etcd")])
        );
        // A loopback registry on a port speaks plain http, as containerd assumes.
        assert_eq!(
            tried(&none, "127.0.0.1:5000/app:1"),
            pairs(&[("http://127.0.0.1:5000/v2", "app")])
        );
        assert_eq!(
            tried(&none, "localhost:5000/app:1"),
            pairs(&[("http://localhost:5000/v2", "app")])
        );
        // An empty file, or one of comments only, is no configuration.
        let empty = Registries::parse("# nothing yet\n").expect("parse");
        assert_eq!(tried(&empty, "busybox").len(), 1);
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = Registries::load(&dir.path().join("registries.yaml")).expect("load");
        assert_eq!(tried(&missing, "busybox").len(), 1);
    }

    #[test]
    fn mirrors_come_first_in_order_then_the_registry() {
        let file = r#"
mirrors:
  docker.io:
    endpoint:
      - "https://mirror.example:5000"
      - "10.0.0.1:5000"
      - "127.0.0.1:5000"
      - "https://mirror.example:5000/"
      - "https://cache.example/artifactory/api/docker/hub/"
  registry.example.com:
    endpoint: ["registry.example.com"]
"#;
        let registries = Registries::parse(file).expect("parse");
        assert_eq!(
            tried(&registries, "busybox:1"),
            pairs(&[
                ("https://mirror.example:5000/v2", "library/busybox"),
                // No scheme: https, unless the host is loopback.
                ("https://10.0.0.1:5000/v2", "library/busybox"),
                ("http://127.0.0.1:5000/v2", "library/busybox"),
                // A path is the API root as given.
                (
                    "https://cache.example/artifactory/api/docker/hub",
                    "library/busybox"
                ),
                ("https://registry-1.docker.io/v2", "library/busybox"),
            ])
        );
        let all = endpoints(&registries, "busybox:1");
        assert_eq!(
            all.iter().map(|e| e.is_default).collect::<Vec<_>>(),
            [false, false, false, false, true]
        );
        assert_eq!(all[0].registry, "mirror.example:5000");
        // A registry listed as its own mirror is tried once.
        assert_eq!(
            tried(&registries, "registry.example.com/app:2"),
            pairs(&[("https://registry.example.com/v2", "app")])
        );
        // Registries without an entry are untouched.
        assert_eq!(
            tried(&registries, "ghcr.io/org/app"),
            pairs(&[("https://ghcr.io/v2", "org/app")])
        );
        // Without the default endpoint, mirrored registries use their mirrors only.
        let air_gapped = registries.with_default_endpoint(false);
        assert_eq!(tried(&air_gapped, "busybox").len(), 4);
        assert_eq!(tried(&air_gapped, "ghcr.io/org/app").len(), 1);
    }

    #[test]
    fn the_wildcard_mirrors_registries_without_an_entry() {
        let file = r#"
mirrors:
  "*":
    endpoint: ["https://everything.example"]
  quay.io:
    endpoint: ["https://quay-mirror.example"]
"#;
        let registries = Registries::parse(file).expect("parse");
        assert_eq!(
            tried(&registries, "ghcr.io/org/app"),
            pairs(&[
                ("https://everything.example/v2", "org/app"),
                ("https://ghcr.io/v2", "org/app"),
            ])
        );
        assert_eq!(
            tried(&registries, "busybox"),
            pairs(&[
                ("https://everything.example/v2", "library/busybox"),
                ("https://registry-1.docker.io/v2", "library/busybox"),
            ])
        );
        // A registry with its own entry does not also get the wildcard's.
        assert_eq!(
            tried(&registries, "quay.io/a/b"),
            pairs(&[
                ("https://quay-mirror.example/v2", "a/b"),
                ("https://quay.io/v2", "a/b"),
            ])
        );
    }

    #[test]
    fn rewrites_apply_to_mirrors_only_first_match_wins() {
        let file = r#"
mirrors:
  docker.io:
    endpoint: ["https://mirror.example"]
    rewrite:
      "^rancher/(.*)": "mirrorproject/rancher-images/$1"
      "^(.*)$": "everything-else/$1"
  registry.example:
    endpoint: ["https://mirror.example"]
    rewrite:
      "^(.*)$": "UPPER/$1"
"#;
        let registries = Registries::parse(file).expect("parse");
        assert_eq!(
            tried(&registries, "rancher/coredns-coredns:1.6.3"),
            pairs(&[
                (
                    "https://mirror.example/v2",
                    "mirrorproject/rancher-images/coredns-coredns"
                ),
                ("https://registry-1.docker.io/v2", "rancher/coredns-coredns"),
            ])
        );
        // In file order: the catch-all comes second, and catches what the first missed.
        assert_eq!(
            tried(&registries, "busybox")[0],
            (
                "https://mirror.example/v2".to_owned(),
                "everything-else/library/busybox".to_owned()
            )
        );
        // A rewrite producing no valid repository is an error naming it.
        let reference = crate::image::normalize("registry.example/app").expect("reference");
        let err = registries.endpoints(&reference).unwrap_err().to_string();
        assert!(
            err.contains("\"UPPER/app\", which is not a repository path"),
            "{err}"
        );
    }

    #[test]
    fn configs_are_found_by_endpoint_host() {
        let file = r#"
mirrors:
  docker.io:
    endpoint: ["https://mirror.example:5000", "https://open-mirror.example"]
configs:
  mirror.example:5000:
    auth: {username: mirror-user, password: mirror-pass}
    tls: {ca_file: /etc/skiff/mirror-ca.pem, cert_file: /c.pem, key_file: /k.pem}
  registry-1.docker.io:
    auth: {auth: aHViLXVzZXI6aHViOnBhc3M=}
  self-signed.example:
    tls: {insecure_skip_verify: true}
    auth: {identity_token: refresh-me}
  "*":
    auth: {username: anyone, password: x}
"#;
        let registries = Registries::parse(file).expect("parse");
        let hub = endpoints(&registries, "busybox");
        assert_eq!(hub.len(), 3);
        assert_eq!(
            hub[0].auth,
            Some(Auth::Basic {
                username: "mirror-user".into(),
                password: "mirror-pass".into()
            })
        );
        assert_eq!(
            hub[0].tls,
            Tls {
                ca_file: Some("/etc/skiff/mirror-ca.pem".into()),
                cert_file: Some("/c.pem".into()),
                key_file: Some("/k.pem".into()),
                insecure_skip_verify: false,
            }
        );
        // A mirror without its own config gets none (not the wildcard's).
        assert_eq!(hub[1].auth, None);
        assert_eq!(hub[1].tls, Tls::default());
        // Docker Hub's config may be under its API host; `auth` is base64 user:pass (the
        // password may hold a colon).
        assert_eq!(
            hub[2].auth,
            Some(Auth::Basic {
                username: "hub-user".into(),
                password: "hub:pass".into()
            })
        );
        let own = endpoints(&registries, "self-signed.example/app");
        assert_eq!(own.len(), 1);
        assert!(own[0].tls.insecure_skip_verify);
        assert_eq!(own[0].auth, Some(Auth::IdentityToken("refresh-me".into())));
        // The wildcard config is for registries with no entry of their own.
        let other = endpoints(&registries, "ghcr.io/org/app");
        assert_eq!(
            other[0].auth,
            Some(Auth::Basic {
                username: "anyone".into(),
                password: "x".into()
            })
        );
        // Secrets stay out of debug output (errors and logs print endpoints).
        let printed = format!("{:?}", hub[0]);
        assert!(!printed.contains("mirror-pass"), "{printed}");
        assert!(printed.contains("mirror-user"), "{printed}");
    }

    #[test]
    fn a_bad_file_is_refused_saying_what_and_where() {
        let cases = [
            ("mirrors: [docker.io]", "not a registries file"),
            (
                "mirrors:\n  docker.io:\n    endpoints: [\"https://m\"]\n",
                "unknown field `endpoints`",
            ),
            (
                "mirrors:\n  docker.io:\n    endpoint: [\"ftp://m\"]\n",
                "mirrors.\"docker.io\": endpoint \"ftp://m\": only http and https",
            ),
            (
                "mirrors:\n  docker.io:\n    endpoint: [\"https://m\"]\n    rewrite:\n      \"^(a\": \"b\"\n",
                "mirrors.\"docker.io\": rewrite \"^(a\": regex parse error",
            ),
            (
                "configs:\n  m:\n    auth: {auth: \"not base64!\"}\n",
                "configs.\"m\": auth: not base64",
            ),
            (
                "configs:\n  m:\n    tls: {cert_file: /c.pem}\n",
                "cert_file and key_file go together",
            ),
            ("configs:\n  m:\n    auth: {}\n", "gives none of username"),
            (
                "mirrors:\n  docker.io:\n    endpoint: [\"https://user:pw@m\"]\n",
                "credentials go in configs",
            ),
        ];
        for (text, expected) in cases {
            let err = Registries::parse(text).unwrap_err();
            let chain = chain(&err);
            assert!(chain.contains(expected), "{text:?}: {chain}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("registries.yaml");
        std::fs::write(&path, "mirrors:\n  docker.io:\n    endpoint: 3\n").expect("write");
        let err = chain(&Registries::load(&path).unwrap_err());
        assert!(
            err.starts_with(&format!("{}: not a registries file: ", path.display())),
            "{err}"
        );
        assert!(err.contains("line 3"), "{err}");
    }

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
}
