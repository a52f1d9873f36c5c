//! Secrets encrypted at rest: a [`Backend`] that encrypts values on their way to disk.
//!
//! [`Encrypted`] sits between the watch cache and the durable log. Rows whose key is
//! under [`SECRETS_PREFIX`] are sealed with AES-GCM before the inner backend stores them
//! and opened again when it loads them, so the cache, watches and the API only ever see
//! plaintext while the database file never holds a Secret's plaintext.
//!
//! The stored form is upstream's (the apiserver's `aesgcm` provider):
//! `k8s:enc:aesgcm:v1:<key name>:` + a random 12-byte nonce + ciphertext and tag, with
//! the row's key as associated data, so a ciphertext moved to another key does not open.
//! A [`Keyring`] holds the keys the encryption configuration names, in order: the first
//! provider writes; every key reads what it wrote; `identity`, when listed, reads rows
//! stored before encryption was turned on.

use super::{Backend, BackendError, Loaded, Revision, Row};
use bytes::Bytes;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::sync::{Arc, RwLock};

/// Where Secrets live in the store: the only resource encrypted, as upstream's default
/// `resources: [secrets]`.
pub const SECRETS_PREFIX: &str = "/registry/core/secrets/";

/// What every encrypted value starts with.
const ENCRYPTED_MARK: &[u8] = b"k8s:enc:";

/// The prefix of values sealed by the `aesgcm` provider; the key's name and `:` follow.
const AESGCM_PREFIX: &str = "k8s:enc:aesgcm:v1:";

/// The length of AES-GCM's authentication tag.
const TAG_LEN: usize = 16;

/// The key type, as `secrets-encrypt status` shows it.
pub const AESGCM_TYPE: &str = "AES-GCM";

/// Errors of encryption at rest. None of them carries a value or a key's bytes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A key's secret is not 16 or 32 bytes.
    #[error("key {name:?} is {len} bytes; aesgcm keys must be 16 or 32 bytes")]
    KeyLength {
        /// The key's name.
        name: String,
        /// Its length.
        len: usize,
    },
    /// Two keys have the same name (their prefixes would be the same).
    #[error("key name {0:?} is used twice")]
    DuplicateName(String),
    /// A key has no name.
    #[error("a key has an empty name")]
    EmptyName,
    /// The system's random generator failed.
    #[error("the system's random number generator failed")]
    Random,
    /// Sealing failed (not expected with a valid key).
    #[error("encrypting {key} failed")]
    Seal {
        /// The store key.
        key: String,
    },
    /// A stored value is sealed with a key the configuration does not hold.
    #[error("{key} is encrypted with a key the encryption configuration does not hold")]
    UnknownKey {
        /// The store key.
        key: String,
    },
    /// A stored value does not open with the key its prefix names: it was changed, moved
    /// to another key, or the configuration's key of that name is not the one that sealed it.
    #[error("{key} does not decrypt with key {name:?}")]
    Open {
        /// The store key.
        key: String,
        /// The encryption key's name.
        name: String,
    },
    /// A stored value is plaintext but the configuration lists no `identity` provider.
    #[error(
        "{key} is stored unencrypted and the encryption configuration has no identity provider"
    )]
    Plaintext {
        /// The store key.
        key: String,
    },
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One named AES-GCM key.
struct Key {
    name: String,
    /// `k8s:enc:aesgcm:v1:<name>:`.
    prefix: Vec<u8>,
    cipher: LessSafeKey,
}

/// Which provider writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// The key at this index of [`Keyring::keys`].
    Key(usize),
    /// Plaintext (the configuration lists `identity` first: encryption is off).
    Identity,
}

/// The keys of an encryption configuration, ready to seal and open values.
pub struct Keyring {
    keys: Vec<Key>,
    writer: Writer,
    identity: bool,
    random: SystemRandom,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: the keys' bytes stay out of every log.
        f.debug_struct("Keyring")
            .field("keys", &self.names())
            .field("writer", &self.writer)
            .field("identity", &self.identity)
            .finish()
    }
}

/// A provider of an encryption configuration, in order, as [`Keyring::new`] takes them.
pub enum Provider<'a> {
    /// An `aesgcm` key: its name and secret bytes.
    AesGcm {
        /// The name, written into every value it seals.
        name: &'a str,
        /// 16 or 32 bytes.
        secret: &'a [u8],
    },
    /// Plaintext.
    Identity,
}

impl Keyring {
    /// A keyring from the providers in configuration order: the first one writes.
    pub fn new(providers: &[Provider<'_>]) -> Result<Keyring> {
        let mut keys: Vec<Key> = Vec::new();
        let mut writer = None;
        let mut identity = false;
        for p in providers {
            match p {
                Provider::AesGcm { name, secret } => {
                    if name.is_empty() {
                        return Err(Error::EmptyName);
                    }
                    if keys.iter().any(|k| k.name == *name) {
                        return Err(Error::DuplicateName(name.to_string()));
                    }
                    let algorithm = match secret.len() {
                        16 => &AES_128_GCM,
                        32 => &AES_256_GCM,
                        len => {
                            return Err(Error::KeyLength {
                                name: name.to_string(),
                                len,
                            })
                        }
                    };
                    let unbound =
                        UnboundKey::new(algorithm, secret).map_err(|_| Error::KeyLength {
                            name: name.to_string(),
                            len: secret.len(),
                        })?;
                    writer.get_or_insert(Writer::Key(keys.len()));
                    keys.push(Key {
                        name: name.to_string(),
                        prefix: format!("{AESGCM_PREFIX}{name}:").into_bytes(),
                        cipher: LessSafeKey::new(unbound),
                    });
                }
                Provider::Identity => {
                    writer.get_or_insert(Writer::Identity);
                    identity = true;
                }
            }
        }
        Ok(Keyring {
            keys,
            writer: writer.unwrap_or(Writer::Identity),
            identity,
            random: SystemRandom::new(),
        })
    }

    /// The name of the key that writes, if values are encrypted.
    pub fn active(&self) -> Option<&str> {
        match self.writer {
            Writer::Key(i) => Some(&self.keys[i].name),
            Writer::Identity => None,
        }
    }

    /// The names of every key, in order.
    pub fn names(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.name.as_str()).collect()
    }

    /// The stored form of `plain`, the value of store key `key`.
    pub fn seal(&self, key: &str, plain: &[u8]) -> Result<Vec<u8>> {
        let k = match self.writer {
            Writer::Key(i) => &self.keys[i],
            Writer::Identity => return Ok(plain.to_vec()),
        };
        let mut nonce = [0u8; NONCE_LEN];
        self.random.fill(&mut nonce).map_err(|_| Error::Random)?;
        let mut body = Vec::with_capacity(plain.len() + TAG_LEN);
        body.extend_from_slice(plain);
        k.cipher
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key.as_bytes()),
                &mut body,
            )
            .map_err(|_| Error::Seal {
                key: key.to_string(),
            })?;
        let mut out = Vec::with_capacity(k.prefix.len() + NONCE_LEN + body.len());
        out.extend_from_slice(&k.prefix);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// The plaintext of `stored`, the stored value of store key `key`.
    pub fn open(&self, key: &str, stored: &[u8]) -> Result<Vec<u8>> {
        if !stored.starts_with(ENCRYPTED_MARK) {
            if self.identity {
                return Ok(stored.to_vec());
            }
            return Err(Error::Plaintext {
                key: key.to_string(),
            });
        }
        let k = self.key_of(stored).ok_or_else(|| Error::UnknownKey {
            key: key.to_string(),
        })?;
        let failed = || Error::Open {
            key: key.to_string(),
            name: k.name.clone(),
        };
        let rest = &stored[k.prefix.len()..];
        if rest.len() < NONCE_LEN + TAG_LEN {
            return Err(failed());
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| failed())?;
        let mut body = sealed.to_vec();
        let plain_len = k
            .cipher
            .open_in_place(nonce, Aad::from(key.as_bytes()), &mut body)
            .map_err(|_| failed())?
            .len();
        body.truncate(plain_len);
        Ok(body)
    }

    /// The name of the key that sealed `stored`, if it is one this keyring holds.
    pub fn sealed_by<'a>(&'a self, stored: &[u8]) -> Option<&'a str> {
        self.key_of(stored).map(|k| k.name.as_str())
    }

    /// Whether `stored` is in the form this keyring writes now (sealed by the active
    /// key, or plaintext when identity writes).
    pub fn is_current(&self, stored: &[u8]) -> bool {
        match self.writer {
            Writer::Key(i) => stored.starts_with(&self.keys[i].prefix),
            Writer::Identity => !stored.starts_with(ENCRYPTED_MARK),
        }
    }

    fn key_of(&self, stored: &[u8]) -> Option<&Key> {
        // Names may contain ':', so match whole prefixes rather than split the value;
        // the longest match wins should one name be a prefix of another plus ':'.
        self.keys
            .iter()
            .filter(|k| stored.starts_with(&k.prefix))
            .max_by_key(|k| k.prefix.len())
    }
}

/// The keyring in use, replaced whole when keys rotate. Shared by the backend (on the
/// store's writer thread) and whoever rotates keys.
#[derive(Debug)]
pub struct KeyringCell(RwLock<Arc<Keyring>>);

impl KeyringCell {
    /// A cell holding `keyring`.
    pub fn new(keyring: Keyring) -> KeyringCell {
        KeyringCell(RwLock::new(Arc::new(keyring)))
    }

    /// The keyring now.
    pub fn get(&self) -> Arc<Keyring> {
        // A poisoned lock only means a panic while replacing an Arc: the value is whole.
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the keyring; later writes use the new one.
    pub fn set(&self, keyring: Keyring) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keyring);
    }
}

/// A [`Backend`] that encrypts the values of Secrets in `inner`.
pub struct Encrypted<B> {
    inner: B,
    keyring: Arc<KeyringCell>,
}

impl<B: Backend> Encrypted<B> {
    /// Wraps `inner`; values under [`SECRETS_PREFIX`] go through `keyring`.
    pub fn new(inner: B, keyring: Arc<KeyringCell>) -> Encrypted<B> {
        Encrypted { inner, keyring }
    }
}

fn encrypted(key: &str) -> bool {
    key.starts_with(SECRETS_PREFIX)
}

impl<B: Backend> Backend for Encrypted<B> {
    fn load(&mut self) -> Result<Loaded, BackendError> {
        let mut loaded = self.inner.load()?;
        let keyring = self.keyring.get();
        for row in loaded.rows.iter_mut().filter(|r| encrypted(&r.key)) {
            row.value = keyring.open(&row.key, &row.value)?.into();
        }
        Ok(loaded)
    }

    fn commit(&mut self, rows: &[Row]) -> Result<(), BackendError> {
        if !rows.iter().any(|r| encrypted(&r.key)) {
            return self.inner.commit(rows);
        }
        let keyring = self.keyring.get();
        let sealed = rows
            .iter()
            .map(|r| {
                if !encrypted(&r.key) {
                    return Ok(r.clone());
                }
                Ok(Row {
                    value: keyring.seal(&r.key, &r.value)?.into(),
                    ..r.clone()
                })
            })
            .collect::<Result<Vec<Row>>>()?;
        self.inner.commit(&sealed)
    }

    fn compact(&mut self, revision: Revision) -> Result<(), BackendError> {
        self.inner.compact(revision)
    }

    /// Hands `f` the plaintext of Secrets; stores what it returns sealed with the active
    /// key, and also stores again, sealed with the active key, every Secret row stored in
    /// another form (plaintext from before encryption, or an older key).
    fn rewrite(
        &mut self,
        prefix: &str,
        f: &mut dyn FnMut(&Row) -> Result<Option<Bytes>, BackendError>,
    ) -> Result<usize, BackendError> {
        let keyring = self.keyring.get();
        self.inner.rewrite(prefix, &mut |stored: &Row| {
            if !encrypted(&stored.key) {
                return f(stored);
            }
            let plain = Row {
                value: keyring.open(&stored.key, &stored.value)?.into(),
                ..stored.clone()
            };
            let value = match f(&plain)? {
                Some(changed) => changed,
                None if keyring.is_current(&stored.value) => return Ok(None),
                None => plain.value,
            };
            Ok(Some(keyring.seal(&stored.key, &value)?.into()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: [u8; 32] = [7; 32];
    const K2: [u8; 32] = [9; 32];
    const KEY: &str = "/registry/core/secrets/default/db";

    fn ring(providers: &[Provider<'_>]) -> Keyring {
        Keyring::new(providers).unwrap()
    }

    fn one() -> Keyring {
        ring(&[
            Provider::AesGcm {
                name: "k1",
                secret: &K1,
            },
            Provider::Identity,
        ])
    }

    #[test]
    fn round_trip_with_upstreams_prefix_and_fresh_nonces() {
        let r = one();
        let plain = br#"{"data":{"password":"aHVudGVyMg=="}}"#;
        let a = r.seal(KEY, plain).unwrap();
        let b = r.seal(KEY, plain).unwrap();
        assert!(a.starts_with(b"k8s:enc:aesgcm:v1:k1:"));
        assert_eq!(
            a.len(),
            "k8s:enc:aesgcm:v1:k1:".len() + 12 + plain.len() + 16
        );
        assert_ne!(a, b, "each seal draws a new nonce");
        assert!(!a.windows(8).any(|w| w == b"aHVudGVy"));
        assert_eq!(r.open(KEY, &a).unwrap(), plain);
        assert_eq!(r.open(KEY, &b).unwrap(), plain);
        assert_eq!(r.sealed_by(&a), Some("k1"));
        assert!(r.is_current(&a));
        // 16-byte keys are AES-128-GCM.
        let short = ring(&[Provider::AesGcm {
            name: "s",
            secret: &[1; 16],
        }]);
        let v = short.seal(KEY, b"x").unwrap();
        assert_eq!(short.open(KEY, &v).unwrap(), b"x");
    }

    #[test]
    fn wrong_key_other_store_key_or_tampering_fail() {
        let r = one();
        let sealed = r.seal(KEY, b"secret").unwrap();
        // The store key is associated data: the value does not open under another key.
        let moved = r.open("/registry/core/secrets/default/other", &sealed);
        assert!(matches!(moved, Err(Error::Open { .. })), "{moved:?}");
        // Same name, different bytes.
        let impostor = ring(&[Provider::AesGcm {
            name: "k1",
            secret: &K2,
        }]);
        assert!(matches!(
            impostor.open(KEY, &sealed),
            Err(Error::Open { .. })
        ));
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(r.open(KEY, &flipped), Err(Error::Open { .. })));
        // Too short to hold a nonce and a tag.
        assert!(matches!(
            r.open(KEY, b"k8s:enc:aesgcm:v1:k1:abc"),
            Err(Error::Open { .. })
        ));
        // A key the configuration does not hold.
        let other = ring(&[Provider::AesGcm {
            name: "k2",
            secret: &K2,
        }]);
        assert!(matches!(
            other.open(KEY, &sealed),
            Err(Error::UnknownKey { .. })
        ));
        // Errors name the store key and the key's name, never the value.
        let msg = r.open("/x", &sealed).unwrap_err().to_string();
        assert_eq!(msg, "/x does not decrypt with key \"k1\"");
    }

    #[test]
    fn prefixes_pick_the_key_that_sealed() {
        let old = one();
        let sealed_old = old.seal(KEY, b"v1").unwrap();
        // A rotated ring: a new key writes, the old one still reads.
        let rotated = ring(&[
            Provider::AesGcm {
                name: "k1-2026",
                secret: &K2,
            },
            Provider::AesGcm {
                name: "k1",
                secret: &K1,
            },
            Provider::Identity,
        ]);
        assert_eq!(rotated.active(), Some("k1-2026"));
        assert_eq!(rotated.names(), vec!["k1-2026", "k1"]);
        assert_eq!(rotated.open(KEY, &sealed_old).unwrap(), b"v1");
        assert_eq!(rotated.sealed_by(&sealed_old), Some("k1"));
        assert!(!rotated.is_current(&sealed_old));
        let sealed_new = rotated.seal(KEY, b"v2").unwrap();
        assert!(sealed_new.starts_with(b"k8s:enc:aesgcm:v1:k1-2026:"));
        assert_eq!(rotated.sealed_by(&sealed_new), Some("k1-2026"));
        // Names with ':' (as K3s's timestamped ones) match by their whole prefix.
        let colons = ring(&[Provider::AesGcm {
            name: "key-2021-12-08T22:32:14Z",
            secret: &K1,
        }]);
        let v = colons.seal(KEY, b"x").unwrap();
        assert_eq!(colons.sealed_by(&v), Some("key-2021-12-08T22:32:14Z"));
        assert_eq!(colons.open(KEY, &v).unwrap(), b"x");
        // Bad keyrings.
        assert!(matches!(
            Keyring::new(&[Provider::AesGcm {
                name: "k",
                secret: &[0; 24]
            }]),
            Err(Error::KeyLength { len: 24, .. })
        ));
        assert!(matches!(
            Keyring::new(&[
                Provider::AesGcm {
                    name: "k",
                    secret: &K1
                },
                Provider::AesGcm {
                    name: "k",
                    secret: &K2
                }
            ]),
            Err(Error::DuplicateName(_))
        ));
    }

    #[test]
    fn identity_reads_plaintext_and_writes_when_first() {
        let r = one();
        assert_eq!(r.open(KEY, b"{\"a\":1}").unwrap(), b"{\"a\":1}");
        assert!(!r.is_current(b"{\"a\":1}"));
        let strict = ring(&[Provider::AesGcm {
            name: "k1",
            secret: &K1,
        }]);
        assert!(matches!(
            strict.open(KEY, b"{}"),
            Err(Error::Plaintext { .. })
        ));
        // Identity first: encryption is off, but values sealed before still open.
        let off = ring(&[
            Provider::Identity,
            Provider::AesGcm {
                name: "k1",
                secret: &K1,
            },
        ]);
        assert_eq!(off.active(), None);
        assert_eq!(off.seal(KEY, b"{}").unwrap(), b"{}");
        let sealed = r.seal(KEY, b"v").unwrap();
        assert_eq!(off.open(KEY, &sealed).unwrap(), b"v");
        assert!(off.is_current(b"{}"));
        assert!(!off.is_current(&sealed));
    }

    #[test]
    fn keyring_debug_shows_names_only() {
        let text = format!("{:?}", one());
        assert!(text.contains("k1"), "{text}");
        assert!(!text.contains("7, 7"), "{text}");
    }
}
