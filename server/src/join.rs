//! Joining: the tokens other machines join with, and the CA they check first.
//!
//! The server token lives in `<data-dir>/server/token` in K3s's secure format
//! (`K10<sha256 of the CA>::server:<secret>`): written on first start, from `--token` when
//! given, kept across restarts. `--agent-token` adds a second token, in
//! `<data-dir>/server/agent-token`, that can only join agents. `GET /cacerts` hands the CA
//! to anyone, so that a joining machine can check it against the hash in its token
//! before trusting it.

use crate::api::handlers::{self, WriteOptions};
use crate::api::request::Target;
use crate::api::status::{ApiError, ApiResult};
use crate::api::Api;
use crate::registry;
use crate::store::{self, WriteOp};
use base64::Engine;
use serde_json::{json, Value};
use sha2::Digest;
use skiff_core::join::{JoinRequest, JoinResponse};
use skiff_core::pki::{write_file_atomic, Ca, Usage};
use skiff_core::token::{self, Token};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

/// Errors setting up the tokens.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A token given or stored does not parse.
    #[error("{what}: {source}")]
    Parse {
        /// Which token.
        what: String,
        /// Why.
        #[source]
        source: token::Error,
    },
    /// A secure token given for this server names another CA.
    #[error("{what} is for another cluster: its CA hash {given} is not this server's {ours}")]
    OtherCluster {
        /// Which token.
        what: String,
        /// The hash in the token.
        given: String,
        /// This server's CA hash.
        ours: String,
    },
    /// A secure token given for this server has the wrong user.
    #[error("{what} is a {user} token; it must be a {want} token")]
    WrongUser {
        /// Which token.
        what: String,
        /// Its user.
        user: String,
        /// The user it must have.
        want: &'static str,
    },
    /// The token file could not be read or written.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The tokens the server accepts.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// Joins servers and agents.
    pub server: Token,
    /// Joins agents only.
    pub agent: Option<Token>,
}

impl Tokens {
    /// Settles the tokens: `given` ones (the secret alone or a whole secure token) replace
    /// the stored ones; otherwise the stored ones stay; a server token is made on first
    /// start. Both are written back in the secure format, readable by root only.
    pub fn prepare(
        dir: &Path,
        ca: &Ca,
        given_server: Option<&str>,
        given_agent: Option<&str>,
    ) -> Result<Tokens, Error> {
        let hash = ca.hash();
        let server = settle(
            &dir.join("token"),
            "the server token",
            token::SERVER_USER,
            &hash,
            given_server,
        )?
        .unwrap_or_else(|| Token {
            ca_hash: Some(hash.clone()),
            user: token::SERVER_USER.into(),
            bootstrap: false,
            secret: token::new_secret(),
        });
        write(&dir.join("token"), &server)?;
        let agent_path = dir.join("agent-token");
        let agent = settle(
            &agent_path,
            "the agent token",
            token::NODE_USER,
            &hash,
            given_agent,
        )?;
        if let Some(agent) = &agent {
            write(&agent_path, agent)?;
        }
        Ok(Tokens { server, agent })
    }

    /// Whether `user`/`secret` (HTTP basic credentials) may join an agent.
    pub fn joins_agent(&self, user: &str, secret: &str) -> bool {
        self.server.accepts(user, secret)
            || self.agent.as_ref().is_some_and(|a| a.accepts(user, secret))
            // An agent given the server token's secret alone says it is a node.
            || (user == token::NODE_USER && self.server.accepts(token::SERVER_USER, secret))
    }
}

/// What the server needs to let machines join: the tokens, the CA that signs their
/// certificates, and the name of its own node, which no agent may take.
pub struct Joining {
    tokens: RwLock<Tokens>,
    ca: Ca,
    dir: PathBuf,
    local_node: Option<String>,
}

/// The namespace of bootstrap tokens and node passwords.
const KUBE_SYSTEM: &str = "kube-system";

/// The Secret that holds node `name`'s password hash (K3s's node-passwd idea).
pub fn password_secret(name: &str) -> String {
    format!("{name}.node-password.skiff")
}

/// The Secret type of node passwords.
const PASSWORD_TYPE: &str = "skiff.io/node-password";

impl Joining {
    /// The joining state of a server whose files are in `dir` (`<data-dir>/server`).
    pub fn new(dir: &Path, ca: Ca, tokens: Tokens, local_node: Option<String>) -> Joining {
        Joining {
            tokens: RwLock::new(tokens),
            ca,
            dir: dir.to_path_buf(),
            local_node,
        }
    }

    /// The current tokens.
    pub fn tokens(&self) -> Tokens {
        self.tokens
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the server token's secret (`skiff token rotate`): joined nodes keep
    /// their certificates; only new joins need the new token. Returns the new token.
    pub fn rotate(&self, secret: Option<&str>) -> Result<Token, Error> {
        let secret = match secret.map(str::trim) {
            Some("") => {
                return Err(Error::Parse {
                    what: "the new token".into(),
                    source: token::Error::Empty,
                })
            }
            Some(s) => {
                Token::parse(s, token::SERVER_USER)
                    .map_err(|source| Error::Parse {
                        what: "the new token".into(),
                        source,
                    })?
                    .secret
            }
            None => token::new_secret(),
        };
        let mut tokens = self
            .tokens
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut server = tokens.server.clone();
        server.secret = secret;
        write(&self.dir.join("token"), &server)?;
        tokens.server = server.clone();
        Ok(server)
    }
}

/// Lets an agent join: checks its token (the `Authorization` header) and its node
/// password, and issues its certificates.
pub async fn admit(api: &Api, authorization: Option<&str>, body: &[u8]) -> ApiResult<JoinResponse> {
    let joining = &api.joining;
    let refused = |why: &str| {
        ApiError::new(
            401,
            "Unauthorized",
            format!("the join token was refused: {why}"),
        )
    };
    let auth = authorization.ok_or_else(|| refused("no token was given"))?;
    if let Some(basic) = auth.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| refused("malformed credentials"))?;
        let (user, secret) = decoded
            .split_once(':')
            .ok_or_else(|| refused("malformed credentials"))?;
        if !joining.tokens().joins_agent(user, secret) {
            return Err(refused("it is not this cluster's token"));
        }
    } else if let Some(bearer) = auth.strip_prefix("Bearer ") {
        check_bootstrap(api, bearer.trim()).map_err(|why| refused(&why))?;
    } else {
        return Err(refused("unknown authorization scheme"));
    }
    let req: JoinRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the join request is not valid JSON: {e}")))?;
    let bad_name = registry::validation::is_dns1123_subdomain(&req.name);
    if !bad_name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "node name {:?} is invalid: {}",
            req.name,
            bad_name.join("; ")
        )));
    }
    if req.password.len() < 16 || req.password.len() > 256 {
        return Err(ApiError::bad_request(
            "the node password must have 16 to 256 characters",
        ));
    }
    if req.addresses.len() > 16 {
        return Err(ApiError::bad_request("at most 16 node addresses"));
    }
    if joining.local_node.as_deref() == Some(req.name.as_str()) {
        return Err(ApiError::new(
            403,
            "Forbidden",
            format!(
                "node name {:?} is the server's own node; give this agent another --node-name",
                req.name
            ),
        ));
    }
    check_password(api, &req.name, &req.password).await?;
    let issue = |usage: &Usage| {
        joining.ca.issue(usage).map_err(|e| {
            ApiError::internal(format!("issuing a certificate for node {}: {e}", req.name))
        })
    };
    let client = issue(&Usage::Client {
        user: skiff_core::join::node_user(&req.name),
        groups: vec![skiff_core::join::NODES_GROUP.to_string()],
    })?;
    let mut sans = vec![req.name.clone(), "localhost".into(), "127.0.0.1".into()];
    sans.extend(req.addresses.iter().map(|a| a.to_string()));
    let serving = issue(&Usage::Server { sans })?;
    tracing::info!(node = %req.name, addresses = ?req.addresses, "node joined");
    Ok(JoinResponse {
        ca: joining.ca.pair.cert_pem.clone(),
        client_cert: client.cert_pem,
        client_key: client.key_pem,
        serving_cert: serving.cert_pem,
        serving_key: serving.key_pem,
    })
}

fn secret_key(name: &str) -> String {
    registry::find_kind("", "Secret")
        .map(|r| r.key(Some(KUBE_SYSTEM), name))
        .unwrap_or_default()
}

fn stored(api: &Api, key: &str) -> Option<Value> {
    api.store
        .get(key)
        .and_then(|e| serde_json::from_slice(&e.value).ok())
}

/// A field of a Secret's `data`, decoded.
fn secret_field(secret: &Value, field: &str) -> Option<String> {
    let b64 = secret.pointer(&format!("/data/{field}"))?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    String::from_utf8(bytes).ok()
}

/// Checks a bootstrap token `<id>.<secret>` against its Secret in kube-system, as
/// upstream's bootstrap authenticator does.
fn check_bootstrap(api: &Api, credentials: &str) -> Result<(), String> {
    if !token::is_bootstrap(credentials) {
        return Err("it is not a bootstrap token".into());
    }
    let (id, secret) = credentials.split_once('.').unwrap_or_default();
    let stored = stored(api, &secret_key(&format!("bootstrap-token-{id}")))
        .ok_or_else(|| format!("no bootstrap token {id}"))?;
    if stored.pointer("/type").and_then(Value::as_str) != Some(BOOTSTRAP_TYPE) {
        return Err(format!("no bootstrap token {id}"));
    }
    let matches = secret_field(&stored, "token-secret")
        .is_some_and(|s| token::same_secret(&s, secret))
        && secret_field(&stored, "token-id").as_deref() == Some(id);
    if !matches {
        return Err(format!("wrong secret for bootstrap token {id}"));
    }
    if secret_field(&stored, "usage-bootstrap-authentication").as_deref() != Some("true") {
        return Err(format!("bootstrap token {id} is not for authentication"));
    }
    if let Some(exp) = secret_field(&stored, "expiration") {
        let expires: jiff::Timestamp = exp
            .parse()
            .map_err(|_| format!("bootstrap token {id} has an unreadable expiration"))?;
        if expires <= jiff::Timestamp::now() {
            return Err(format!("bootstrap token {id} expired at {exp}"));
        }
    }
    Ok(())
}

/// The Secret type of bootstrap tokens.
pub const BOOTSTRAP_TYPE: &str = "bootstrap.kubernetes.io/token";

/// Whether a stored bootstrap token's expiration is past at `now`.
fn expired(secret: &Value, now: jiff::Timestamp) -> bool {
    secret.pointer("/type").and_then(Value::as_str) == Some(BOOTSTRAP_TYPE)
        && secret_field(secret, "expiration")
            .and_then(|e| e.parse::<jiff::Timestamp>().ok())
            .is_some_and(|at| at <= now)
}

/// Deletes expired bootstrap tokens every 30 s until `cancel` fires, as upstream's
/// token cleaner does.
pub async fn clean_expired_tokens(
    api: std::sync::Arc<Api>,
    cancel: tokio_util::sync::CancellationToken,
) -> Result<(), crate::Error> {
    let Some(secrets) = registry::find_kind("", "Secret") else {
        return Ok(());
    };
    let prefix = secrets.prefix(Some(KUBE_SYSTEM));
    loop {
        let now = jiff::Timestamp::now();
        let page = api.store.list(&prefix, None, 0, false, &|e| {
            e.key.contains("/bootstrap-token-")
                && serde_json::from_slice::<Value>(&e.value).is_ok_and(|v| expired(&v, now))
        });
        for e in page.items {
            let op = WriteOp::Delete {
                key: e.key.to_string(),
                expected: Some(e.revision),
            };
            match api.store.write(op).await {
                Ok(_) => tracing::info!(secret = %e.key, "deleted an expired bootstrap token"),
                Err(store::Error::NotFound | store::Error::Conflict { .. }) => {}
                Err(err) => {
                    tracing::warn!(secret = %e.key, error = %err, "cannot delete an expired bootstrap token")
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(30)) => {}
            _ = cancel.cancelled() => return Ok(()),
        }
    }
}

fn password_hash(salt: &str, password: &str) -> String {
    let mut h = sha2::Sha256::new();
    h.update(salt.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    hex::encode(h.finalize())
}

/// The first agent to join with a name records its password's hash; later joins with
/// that name must bring the same password, unless the Node has been deleted since.
async fn check_password(api: &Api, name: &str, password: &str) -> ApiResult<()> {
    let key = secret_key(&password_secret(name));
    if let Some(existing) = api.store.get(&key) {
        let obj: Value = serde_json::from_slice(&existing.value)
            .map_err(|e| ApiError::internal(format!("stored node password of {name}: {e}")))?;
        let (salt, hash) = (
            secret_field(&obj, "salt").unwrap_or_default(),
            secret_field(&obj, "hash").unwrap_or_default(),
        );
        if token::same_secret(&password_hash(&salt, password), &hash) {
            return Ok(());
        }
        let node_key = registry::find_kind("", "Node")
            .map(|r| r.key(None, name))
            .unwrap_or_default();
        if api.store.get(&node_key).is_some() {
            return Err(ApiError::new(
                403,
                "Forbidden",
                format!(
                    "node password rejected: a node named {name:?} already joined from another machine \
                     (use another --node-name, or delete that Node to free its name)"
                ),
            ));
        }
        // The Node is gone: the name is free again.
        match api
            .store
            .write(WriteOp::Delete {
                key: key.clone(),
                expected: Some(existing.revision),
            })
            .await
        {
            Ok(_) | Err(store::Error::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let salt = hex::encode(rand::random::<[u8; 16]>());
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let obj = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": password_secret(name), "namespace": KUBE_SYSTEM},
        "type": PASSWORD_TYPE,
        "immutable": true,
        "data": {"salt": b64(&salt), "hash": b64(&password_hash(&salt, password))},
    });
    let resource = registry::find_kind("", "Secret")
        .ok_or_else(|| ApiError::internal("no Secret resource"))?;
    let target = Target {
        resource,
        namespace: Some(KUBE_SYSTEM.to_string()),
        name: None,
        subresource: None,
    };
    let prepared = handlers::prepare_create(api, &target, obj, &WriteOptions::default())?.obj;
    match api
        .store
        .write(WriteOp::Create {
            key,
            value: prepared,
        })
        .await
    {
        Ok(_) => Ok(()),
        // Two joins with one name at once: the other won; its password decides.
        Err(store::Error::AlreadyExists) => Err(ApiError::new(
            409,
            "Conflict",
            format!("node {name:?} is joining from another machine at the same time"),
        )),
        Err(e) => Err(e.into()),
    }
}

/// The token from `given`, else from the file at `path`, with this CA's hash.
fn settle(
    path: &Path,
    what: &str,
    user: &'static str,
    hash: &str,
    given: Option<&str>,
) -> Result<Option<Token>, Error> {
    let (text, what) = match given {
        Some(text) => (text.to_string(), format!("{what} given")),
        None => match std::fs::read_to_string(path) {
            Ok(text) => (text, format!("{what} in {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(Error::Io {
                    what: format!("reading {}", path.display()),
                    source,
                })
            }
        },
    };
    let mut t = Token::parse(&text, user).map_err(|source| Error::Parse {
        what: what.clone(),
        source,
    })?;
    if let Some(given) = &t.ca_hash {
        if given != hash {
            return Err(Error::OtherCluster {
                what,
                given: given.clone(),
                ours: hash.to_string(),
            });
        }
    }
    if t.user != user {
        return Err(Error::WrongUser {
            what,
            user: t.user,
            want: user,
        });
    }
    t.ca_hash = Some(hash.to_string());
    Ok(Some(t))
}

fn write(path: &Path, t: &Token) -> Result<(), Error> {
    let text = format!("{}\n", t.render());
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    write_file_atomic(path, text.as_bytes(), 0o600).map_err(|source| Error::Io {
        what: format!("writing {}", path.display()),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca(dir: &Path) -> Ca {
        Ca::load_or_create(&dir.join("tls")).unwrap()
    }

    #[test]
    fn bootstrap_tokens_expire() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let token = |exp: &str| json!({"type": BOOTSTRAP_TYPE, "data": {"token-id": b64("abcdef"), "expiration": b64(exp)}});
        let now: jiff::Timestamp = "2026-12-03T12:00:00Z".parse().unwrap();
        assert!(expired(&token("2026-12-03T11:59:59Z"), now));
        assert!(!expired(&token("2026-12-03T12:00:01Z"), now));
        // No expiration: for ever; another type: not a token.
        assert!(!expired(&json!({"type": BOOTSTRAP_TYPE, "data": {}}), now));
        let other = json!({"type": "Opaque", "data": {"expiration": b64("2000-01-01T00:00:00Z")}});
        assert!(!expired(&other, now));
    }

    #[test]
    fn made_once_then_kept() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca(dir.path());
        let first = Tokens::prepare(dir.path(), &ca, None, None).unwrap();
        let text = std::fs::read_to_string(dir.path().join("token")).unwrap();
        assert_eq!(
            text.trim(),
            format!("K10{}::server:{}", ca.hash(), first.server.secret)
        );
        let again = Tokens::prepare(dir.path(), &ca, None, None).unwrap();
        assert_eq!(again.server, first.server);
        assert!(first.agent.is_none());
        assert!(!dir.path().join("agent-token").exists());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn given_tokens_win_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca(dir.path());
        let t = Tokens::prepare(dir.path(), &ca, Some("abc"), Some("agent-only")).unwrap();
        assert_eq!(t.server.secret, "abc");
        assert!(t.joins_agent("server", "abc"));
        assert!(t.joins_agent("node", "abc"));
        assert!(t.joins_agent("node", "agent-only"));
        assert!(!t.joins_agent("server", "agent-only"));
        assert!(!t.joins_agent("node", "wrong"));
        let stored = std::fs::read_to_string(dir.path().join("agent-token")).unwrap();
        assert_eq!(stored.trim(), format!("K10{}::node:agent-only", ca.hash()));
        // The whole secure token is accepted when it names this CA...
        let secure = format!("K10{}::server:xyz", ca.hash());
        let t = Tokens::prepare(dir.path(), &ca, Some(&secure), None).unwrap();
        assert_eq!(t.server.secret, "xyz");
        // ...and refused when it names another, or has the wrong user.
        let other = format!("K10{}::server:xyz", "0".repeat(64));
        let e = Tokens::prepare(dir.path(), &ca, Some(&other), None).unwrap_err();
        assert!(e.to_string().contains("another cluster"), "{e}");
        let node = format!("K10{}::node:xyz", ca.hash());
        let e = Tokens::prepare(dir.path(), &ca, Some(&node), None).unwrap_err();
        assert!(e.to_string().contains("must be a server token"), "{e}");
    }
}
