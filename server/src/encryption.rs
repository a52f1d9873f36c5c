//! `--secrets-encryption`: the encryption configuration and key rotation.
//!
//! The keys live in `<data-dir>/server/cred/encryption-config.json` (mode 0600), in
//! upstream's `EncryptionConfiguration` shape as K3s keeps it: one `aesgcm` provider
//! whose first key writes, then `identity`, so Secrets stored before encryption was
//! turned on stay readable until they are sealed. The file is made, with a new random
//! 32-byte key, on the first start with `--secrets-encryption`; once it exists,
//! encryption stays on whether the flag is given or not (turning it off would leave
//! every sealed Secret unreadable to a server without the keys).
//!
//! [`Encryption`] is the running server's handle: its [`KeyringCell`] is shared with the
//! [`Encrypted`](crate::store::encrypted::Encrypted) backend, [`Encryption::status`]
//! answers `skiff secrets-encrypt status` and [`Encryption::rotate_keys`] does
//! `rotate-keys`: a new key, durable in the file before anything uses it, becomes the
//! active one; every Secret row is sealed again with it, in place, in the backend; then
//! the old keys, which nothing uses any more, leave the file.

use crate::store::encrypted::{self, Keyring, KeyringCell, Provider, AESGCM_TYPE, SECRETS_PREFIX};
use crate::store::Store;
use base64::Engine as _;
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The encryption configuration's file name, in `<data-dir>/server/cred/`.
pub const CONFIG_FILE: &str = "encryption-config.json";

/// The name of the first key, as K3s names its `aescbckey`.
const FIRST_KEY: &str = "aesgcmkey";

/// The length of the keys made here: AES-256.
const KEY_BYTES: usize = 32;

/// Where `skiff secrets-encrypt status` asks (GET).
pub const STATUS_PATH: &str = "/v1-skiff/secrets-encrypt/status";
/// Where `skiff secrets-encrypt rotate-keys` asks (POST).
pub const ROTATE_KEYS_PATH: &str = "/v1-skiff/secrets-encrypt/rotate-keys";

/// The only group allowed to see or change encryption.
pub const ADMIN_GROUP: &str = "system:masters";

/// Errors of secrets encryption. None carries a key's bytes or a Secret's value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file could not be read.
    #[error("reading {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file could not be written.
    #[error("writing {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not one skiff can use.
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong (never a key's value).
        reason: String,
    },
    /// The keys do not make a keyring.
    #[error("{}", path.display())]
    Keys {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: encrypted::Error,
    },
    /// The system's random generator failed.
    #[error("the system's random number generator failed")]
    Random,
    /// Encryption is not on.
    #[error(
        "secrets encryption is not enabled on this server (start it with --secrets-encryption)"
    )]
    Disabled,
    /// Sealing the Secrets again failed; the new key stays, beside the old ones.
    #[error("re-encrypting the stored secrets")]
    Store(#[source] crate::store::Error),
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Upstream's `apiserver.config.k8s.io/v1` `EncryptionConfiguration`, the part skiff uses.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionConfiguration {
    /// `EncryptionConfiguration`.
    pub kind: String,
    /// `apiserver.config.k8s.io/v1`.
    pub api_version: String,
    /// The resources and their providers: one entry, for `secrets`.
    pub resources: Vec<ResourceConfiguration>,
}

/// The providers of a list of resources.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfiguration {
    /// The resources: `secrets`.
    pub resources: Vec<String>,
    /// In order: the first writes, every one reads what it wrote.
    pub providers: Vec<ProviderConfiguration>,
}

/// One provider: `aesgcm` or `identity` (skiff supports no others).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfiguration {
    /// AES-GCM keys; the first one writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aesgcm: Option<KeysConfiguration>,
    /// Plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityConfiguration>,
}

/// The keys of a provider.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeysConfiguration {
    /// Named keys.
    pub keys: Vec<KeyConfiguration>,
}

/// The identity provider (no settings).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfiguration {}

/// One named key.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeyConfiguration {
    /// The name every value it seals carries.
    pub name: String,
    /// The key, base64.
    pub secret: String,
}

impl std::fmt::Debug for KeyConfiguration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyConfiguration")
            .field("name", &self.name)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl EncryptionConfiguration {
    /// A configuration with one AES-GCM key, then identity.
    pub fn with_key(name: &str, secret: &[u8]) -> EncryptionConfiguration {
        EncryptionConfiguration {
            kind: "EncryptionConfiguration".into(),
            api_version: "apiserver.config.k8s.io/v1".into(),
            resources: vec![ResourceConfiguration {
                resources: vec!["secrets".into()],
                providers: vec![
                    ProviderConfiguration {
                        aesgcm: Some(KeysConfiguration {
                            keys: vec![KeyConfiguration {
                                name: name.into(),
                                secret: base64::engine::general_purpose::STANDARD.encode(secret),
                            }],
                        }),
                        identity: None,
                    },
                    ProviderConfiguration {
                        aesgcm: None,
                        identity: Some(IdentityConfiguration {}),
                    },
                ],
            }],
        }
    }

    /// Checks the configuration is one skiff supports and builds its keyring.
    pub fn keyring(&self, path: &Path) -> Result<Keyring> {
        let invalid = |reason: String| Error::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        if self.kind != "EncryptionConfiguration" {
            return Err(invalid(format!(
                "kind is {:?}, not EncryptionConfiguration",
                self.kind
            )));
        }
        let [resource] = self.resources.as_slice() else {
            return Err(invalid(
                "skiff encrypts secrets only: resources must have one entry, for secrets".into(),
            ));
        };
        if resource.resources != ["secrets"] {
            return Err(invalid(format!(
                "skiff encrypts secrets only, not {:?}",
                resource.resources
            )));
        }
        if resource.providers.is_empty() {
            return Err(invalid("no providers".into()));
        }
        let mut secrets = Vec::new();
        for (i, p) in resource.providers.iter().enumerate() {
            match (&p.aesgcm, &p.identity) {
                (Some(keys), None) => {
                    if keys.keys.is_empty() {
                        return Err(invalid(format!("provider {i}: aesgcm has no keys")));
                    }
                    for k in &keys.keys {
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(k.secret.trim())
                            .map_err(|_| {
                                invalid(format!("key {:?}: the secret is not base64", k.name))
                            })?;
                        secrets.push(Some((k.name.as_str(), bytes)));
                    }
                }
                (None, Some(_)) => secrets.push(None),
                _ => {
                    return Err(invalid(format!(
                        "provider {i} must be exactly one of aesgcm, identity"
                    )))
                }
            }
        }
        let providers: Vec<Provider<'_>> = secrets
            .iter()
            .map(|s| match s {
                Some((name, secret)) => Provider::AesGcm { name, secret },
                None => Provider::Identity,
            })
            .collect();
        Keyring::new(&providers).map_err(|source| Error::Keys {
            path: path.to_path_buf(),
            source,
        })
    }

    fn providers_mut(&mut self) -> &mut Vec<ProviderConfiguration> {
        if self.resources.is_empty() {
            self.resources.push(ResourceConfiguration {
                resources: vec!["secrets".into()],
                providers: Vec::new(),
            });
        }
        &mut self.resources[0].providers
    }

    /// The configuration with `name` as the first key, the one that writes; the other
    /// keys stay and read.
    fn with_first_key(&self, name: &str, secret: &[u8]) -> EncryptionConfiguration {
        let mut next = self.clone();
        let key = KeyConfiguration {
            name: name.into(),
            secret: base64::engine::general_purpose::STANDARD.encode(secret),
        };
        let providers = next.providers_mut();
        match providers.first_mut().and_then(|p| p.aesgcm.as_mut()) {
            Some(keys) => keys.keys.insert(0, key),
            None => providers.insert(
                0,
                ProviderConfiguration {
                    aesgcm: Some(KeysConfiguration { keys: vec![key] }),
                    identity: None,
                },
            ),
        }
        next
    }

    /// The configuration with only the key that writes (and identity, if listed).
    fn only_first_key(&self) -> EncryptionConfiguration {
        let mut next = self.clone();
        let providers = next.providers_mut();
        let first = providers
            .iter()
            .find_map(|p| p.aesgcm.as_ref())
            .and_then(|k| k.keys.first().cloned());
        let identity = providers.iter().any(|p| p.identity.is_some());
        providers.clear();
        if let Some(key) = first {
            providers.push(ProviderConfiguration {
                aesgcm: Some(KeysConfiguration { keys: vec![key] }),
                identity: None,
            });
        }
        if identity {
            providers.push(ProviderConfiguration {
                aesgcm: None,
                identity: Some(IdentityConfiguration {}),
            });
        }
        next
    }
}

/// The configuration file of the server whose folder is `server_dir`.
pub fn config_path(server_dir: &Path) -> PathBuf {
    server_dir.join("cred").join(CONFIG_FILE)
}

/// Reads the configuration at `path`; `None` if there is none.
pub fn load(path: &Path) -> Result<Option<EncryptionConfiguration>> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_slice(&text).map(Some).map_err(|e| {
        // serde's messages may quote the values they reject, and a value here can be a
        // key: keep only messages about field names, else the position.
        let text = e.to_string();
        let reason = if text.starts_with("unknown field") || text.starts_with("missing field") {
            text
        } else {
            format!(
                "not a valid EncryptionConfiguration (line {}, column {})",
                e.line(),
                e.column()
            )
        };
        Error::Invalid {
            path: path.to_path_buf(),
            reason,
        }
    })
}

/// Writes `config` to `path` (mode 0600, its folder 0700) so that it is durable, folder
/// entry included, when this returns: rows are sealed with a key only after this.
pub fn save(path: &Path, config: &EncryptionConfiguration) -> Result<()> {
    let failed = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let text = serde_json::to_vec_pretty(config).map_err(|e| failed(e.into()))?;
    if let Some(dir) = path.parent() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(failed)?;
    }
    skiff_core::pki::write_file_atomic(path, &text, 0o600).map_err(failed)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(failed)?;
    }
    Ok(())
}

fn random_key() -> Result<[u8; KEY_BYTES]> {
    let mut key = [0u8; KEY_BYTES];
    ring::rand::SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| Error::Random)?;
    Ok(key)
}

/// A name for a new key: `aesgcmkey-<UTC time>`, as K3s stamps its rotated keys (in
/// ISO 8601's basic form, without ':'), made unique among `taken`.
fn new_key_name(now: jiff::Timestamp, taken: &[&str]) -> String {
    let base = format!("{FIRST_KEY}-{}", now.strftime("%Y%m%dT%H%M%SZ"));
    let mut name = base.clone();
    let mut n = 1;
    while taken.contains(&name.as_str()) {
        n += 1;
        name = format!("{base}-{n}");
    }
    name
}

/// The state `skiff secrets-encrypt status` shows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Whether new Secrets are written encrypted.
    pub enabled: bool,
    /// K3s's rotation stage: `start`, `reencrypt_active` while `rotate-keys` runs,
    /// `reencrypt_finished` after it (until the server restarts).
    pub stage: String,
    /// The key that writes.
    pub active_key: Option<String>,
    /// Every key, in order.
    pub keys: Vec<KeyStatus>,
}

/// One key, as `status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyStatus {
    /// Its name.
    pub name: String,
    /// `AES-GCM`.
    #[serde(rename = "type")]
    pub key_type: String,
    /// Whether it writes.
    pub active: bool,
}

impl Status {
    /// The status of a server without encryption.
    pub fn disabled() -> Status {
        Status {
            enabled: false,
            stage: String::new(),
            active_key: None,
            keys: Vec::new(),
        }
    }
}

const STAGE_START: &str = "start";
const STAGE_ACTIVE: &str = "reencrypt_active";
const STAGE_FINISHED: &str = "reencrypt_finished";

/// Secrets encryption of the running server.
#[derive(Debug)]
pub struct Encryption {
    path: PathBuf,
    keyring: Arc<KeyringCell>,
    /// The configuration as on disk; held across a rotation, so rotations do not overlap.
    config: tokio::sync::Mutex<EncryptionConfiguration>,
    stage: std::sync::Mutex<&'static str>,
    /// Whether this start made the configuration.
    new: bool,
}

impl Encryption {
    /// Loads the encryption configuration of the server folder `server_dir`, making one
    /// with a new key when `enable` and there is none yet. `None`: encryption is off.
    pub fn prepare(server_dir: &Path, enable: bool) -> Result<Option<Encryption>> {
        let path = config_path(server_dir);
        let mut new = false;
        let config = match load(&path)? {
            Some(config) => {
                if !enable {
                    tracing::info!(
                        path = %path.display(),
                        "secrets encryption stays on: its configuration exists"
                    );
                }
                config
            }
            None if enable => {
                let config = EncryptionConfiguration::with_key(FIRST_KEY, &random_key()?);
                save(&path, &config)?;
                new = true;
                tracing::info!(path = %path.display(), key = FIRST_KEY, "secrets encryption turned on with a new key");
                config
            }
            None => return Ok(None),
        };
        let keyring = config.keyring(&path)?;
        tracing::info!(active = ?keyring.active(), keys = keyring.names().len(), "secrets encryption configured");
        Ok(Some(Encryption {
            path,
            keyring: Arc::new(KeyringCell::new(keyring)),
            config: tokio::sync::Mutex::new(config),
            stage: std::sync::Mutex::new(STAGE_START),
            new,
        }))
    }

    /// Whether this start turned encryption on (made the configuration).
    pub fn is_new(&self) -> bool {
        self.new
    }

    /// The keyring the datastore's backend seals and opens Secrets with.
    pub fn keyring(&self) -> Arc<KeyringCell> {
        self.keyring.clone()
    }

    fn set_stage(&self, stage: &'static str) {
        *self.stage.lock().unwrap_or_else(|e| e.into_inner()) = stage;
    }

    /// What `status` shows.
    pub fn status(&self) -> Status {
        let keyring = self.keyring.get();
        let active = keyring.active().map(String::from);
        Status {
            enabled: active.is_some(),
            stage: self
                .stage
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .to_string(),
            keys: keyring
                .names()
                .into_iter()
                .map(|name| KeyStatus {
                    name: name.to_string(),
                    key_type: AESGCM_TYPE.to_string(),
                    active: active.as_deref() == Some(name),
                })
                .collect(),
            active_key: active,
        }
    }

    /// Makes a new key the active one, seals every stored Secret with it, then drops
    /// the keys nothing uses any more. A failure part way leaves every Secret readable:
    /// the file holds the new key and the old ones until the end.
    pub async fn rotate_keys(&self, store: &Store) -> Result<Status> {
        let mut config = self.config.lock().await;
        let current = self.keyring.get();
        if current.active().is_none() {
            return Err(Error::Disabled);
        }
        let name = new_key_name(jiff::Timestamp::now(), &current.names());
        let next = config.with_first_key(&name, &random_key()?);
        let keyring = next.keyring(&self.path)?;
        // On disk before anything is sealed with it.
        save(&self.path, &next)?;
        *config = next;
        self.keyring.set(keyring);
        self.set_stage(STAGE_ACTIVE);
        tracing::info!(key = %name, "secrets encryption: new active key; re-encrypting");

        let rows = match store.rewrite_stored(SECRETS_PREFIX).await {
            Ok(n) => n,
            Err(e) => {
                self.set_stage(STAGE_START);
                return Err(Error::Store(e));
            }
        };
        // Every row is sealed with the new key now (writes since the switch used it too):
        // the old keys open nothing any more.
        let last = config.only_first_key();
        let keyring = last.keyring(&self.path)?;
        save(&self.path, &last)?;
        *config = last;
        self.keyring.set(keyring);
        self.set_stage(STAGE_FINISHED);
        tracing::info!(key = %name, rows, "secrets encryption keys rotated");
        Ok(self.status())
    }
}

/// Why a request of `skiff secrets-encrypt` failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("the server refused: {0}")]
    Refused(String),
    /// The server could not be reached (the innermost cause).
    #[error("cannot reach the server (is it running?): {0}")]
    Unreachable(String),
}

impl From<kube::Error> for ClientError {
    fn from(e: kube::Error) -> ClientError {
        if let kube::Error::Api(status) = &e {
            return ClientError::Refused(status.message.clone());
        }
        let mut cause: &dyn std::error::Error = &e;
        while let Some(next) = cause.source() {
            cause = next;
        }
        ClientError::Unreachable(cause.to_string())
    }
}

async fn request(
    client: &kube::Client,
    req: http::Request<Vec<u8>>,
) -> Result<Status, ClientError> {
    Ok(client.request(req).await?)
}

/// Asks the server `client` reaches for its encryption status.
pub async fn request_status(client: &kube::Client) -> Result<Status, ClientError> {
    let req = http::Request::get(STATUS_PATH)
        .body(Vec::new())
        .map_err(|e| ClientError::Unreachable(e.to_string()))?;
    request(client, req).await
}

/// Asks the server `client` reaches to rotate its keys; answers the new status.
pub async fn request_rotate_keys(client: &kube::Client) -> Result<Status, ClientError> {
    let req = http::Request::post(ROTATE_KEYS_PATH)
        .body(Vec::new())
        .map_err(|e| ClientError::Unreachable(e.to_string()))?;
    request(client, req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::encrypted::Encrypted;
    use crate::store::sqlite::Sqlite;
    use crate::store::{Backend, StoreConfig, WriteOp};
    use serde_json::json;

    #[test]
    fn config_is_saved_0600_in_upstreams_shape_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = config_path(dir.path());
        assert!(load(&path).unwrap().is_none());
        let config = EncryptionConfiguration::with_key("aesgcmkey", &[5; 32]);
        save(&path, &config).unwrap();
        let mode = |p: &Path| {
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
                & 0o777
        };
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let text: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            text,
            json!({
                "kind": "EncryptionConfiguration",
                "apiVersion": "apiserver.config.k8s.io/v1",
                "resources": [{
                    "resources": ["secrets"],
                    "providers": [
                        {"aesgcm": {"keys": [{"name": "aesgcmkey", "secret": "BQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQU="}]}},
                        {"identity": {}}
                    ]
                }]
            })
        );
        let back = load(&path).unwrap().unwrap();
        assert_eq!(back, config);
        let ring = back.keyring(&path).unwrap();
        assert_eq!(ring.active(), Some("aesgcmkey"));
        // Debug output never shows a key.
        assert!(!format!("{back:?}").contains("BQUF"));
    }

    #[test]
    fn unsupported_configurations_are_refused_without_echoing_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        let check = |text: &str, want: &str| {
            std::fs::write(&path, text).unwrap();
            let err = load(&path).and_then(|c| c.unwrap().keyring(&path).map(|_| ()));
            let msg = format!("{}", err.as_ref().unwrap_err());
            let chain = match err {
                Err(Error::Keys { source, .. }) => format!("{msg}: {source}"),
                _ => msg,
            };
            assert!(chain.contains(want), "{chain} lacks {want}");
            assert!(!chain.contains("c2VjcmV0"), "{chain} shows a key");
        };
        let wrap = |providers: &str| {
            format!(
                r#"{{"kind":"EncryptionConfiguration","apiVersion":"apiserver.config.k8s.io/v1","resources":[{{"resources":["secrets"],"providers":{providers}}}]}}"#
            )
        };
        check(
            &wrap(r#"[{"aescbc":{"keys":[{"name":"k","secret":"c2VjcmV0"}]}}]"#),
            "unknown field `aescbc`",
        );
        check(
            &wrap(r#"[{"aesgcm":{"keys":[{"name":"k","secret":"c2VjcmV0"}]}}]"#),
            "must be 16 or 32 bytes",
        );
        check(
            &wrap(r#"[{"aesgcm":{"keys":[{"name":"k","secret":12}]}}]"#),
            "not a valid EncryptionConfiguration",
        );
        check(&wrap("[]"), "no providers");
        check(
            r#"{"kind":"EncryptionConfiguration","apiVersion":"v1","resources":[{"resources":["configmaps"],"providers":[{"identity":{}}]}]}"#,
            "secrets only",
        );
    }

    #[test]
    fn rotated_names_are_stamped_and_unique() {
        let t: jiff::Timestamp = "2026-12-03T17:06:29Z".parse().unwrap();
        assert_eq!(new_key_name(t, &[]), "aesgcmkey-20261203T170629Z");
        assert_eq!(
            new_key_name(t, &["aesgcmkey", "aesgcmkey-20261203T170629Z"]),
            "aesgcmkey-20261203T170629Z-2"
        );
    }

    fn secret(value: &str) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "default"}, "data": {"password": value}})
    }

    fn files_contain(dir: &Path, needle: &str) -> bool {
        std::fs::read_dir(dir).unwrap().any(|e| {
            let bytes = std::fs::read(e.unwrap().path()).unwrap_or_default();
            bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
    }

    #[tokio::test]
    async fn store_seals_secrets_turns_plaintext_into_ciphertext_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        let key = "/registry/core/secrets/default/db";
        // Before encryption: plaintext on disk.
        {
            let store = Store::open(
                Sqlite::open(&db.join("state.db")).unwrap(),
                StoreConfig::default(),
            )
            .unwrap();
            store
                .write(WriteOp::Create {
                    key: key.into(),
                    value: secret("cGxhaW4tYmVmb3Jl"),
                })
                .await
                .unwrap();
            store
                .write(WriteOp::Create {
                    key: "/registry/core/configmaps/default/c".into(),
                    value: json!({"kind": "ConfigMap", "data": {"k": "visible-config"}}),
                })
                .await
                .unwrap();
        }
        assert!(files_contain(&db, "cGxhaW4tYmVmb3Jl"));

        // The start that turns encryption on seals what was there.
        let enc = Encryption::prepare(dir.path(), true).unwrap().unwrap();
        let mut backend =
            Encrypted::new(Sqlite::open(&db.join("state.db")).unwrap(), enc.keyring());
        assert_eq!(
            backend.rewrite(SECRETS_PREFIX, &mut |_| Ok(None)).unwrap(),
            1
        );
        let store = Store::open(backend, StoreConfig::default()).unwrap();
        assert!(!files_contain(&db, "cGxhaW4tYmVmb3Jl"));
        assert!(files_contain(&db, "k8s:enc:aesgcm:v1:aesgcmkey:"));
        assert!(
            files_contain(&db, "visible-config"),
            "only secrets are sealed"
        );
        let read = store.get(key).unwrap();
        assert!(String::from_utf8_lossy(&read.value).contains("cGxhaW4tYmVmb3Jl"));

        // New writes are sealed; memory holds plaintext.
        let updated = store
            .write(WriteOp::Update {
                key: key.into(),
                value: secret("bmV3LXZhbHVl"),
                expected: None,
            })
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&updated.value).contains("bmV3LXZhbHVl"));
        assert!(!files_contain(&db, "bmV3LXZhbHVl"));

        // Rotation: history rows too are sealed again; the old key leaves the file.
        let status = enc.rotate_keys(&store).await.unwrap();
        let new_key = status.active_key.clone().unwrap();
        assert_ne!(new_key, "aesgcmkey");
        assert_eq!(status.keys.len(), 1);
        assert_eq!(status.stage, "reencrypt_finished");
        assert!(!files_contain(&db, "k8s:enc:aesgcm:v1:aesgcmkey:"));
        assert!(files_contain(&db, &format!("k8s:enc:aesgcm:v1:{new_key}:")));
        let on_disk = load(&config_path(dir.path())).unwrap().unwrap();
        assert_eq!(
            on_disk.keyring(Path::new("x")).unwrap().names(),
            vec![new_key.as_str()]
        );
        drop(store);

        // A restart without the flag keeps encryption and reads everything back.
        let enc = Encryption::prepare(dir.path(), false).unwrap().unwrap();
        assert_eq!(enc.status().active_key.as_deref(), Some(new_key.as_str()));
        let store = Store::open(
            Encrypted::new(Sqlite::open(&db.join("state.db")).unwrap(), enc.keyring()),
            StoreConfig::default(),
        )
        .unwrap();
        let read = store.get(key).unwrap();
        assert!(String::from_utf8_lossy(&read.value).contains("bmV3LXZhbHVl"));
        // A watch from the start replays history, decrypted.
        let mut w = store.watch("/registry/core/secrets/", 0).unwrap();
        let events = w.next().await.unwrap();
        assert!(events
            .iter()
            .any(|e| String::from_utf8_lossy(&e.entry.value).contains("cGxhaW4tYmVmb3Jl")));

        // Without the keys, the server does not start on sealed rows.
        let other = Arc::new(KeyringCell::new(
            EncryptionConfiguration::with_key("other", &[1; 32])
                .keyring(Path::new("x"))
                .unwrap(),
        ));
        drop(store);
        let err = Store::open(
            Encrypted::new(Sqlite::open(&db.join("state.db")).unwrap(), other),
            StoreConfig::default(),
        )
        .err()
        .unwrap();
        let chain = crate::api::status::error_chain(&err);
        assert!(chain.contains("does not hold"), "{chain}");
    }

    #[test]
    fn no_configuration_and_no_flag_is_off() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Encryption::prepare(dir.path(), false).unwrap().is_none());
        assert!(!Status::disabled().enabled);
    }
}
