//! Join tokens in K3s's secure format: `K10<sha256 of the CA bundle>::<user>:<secret>`.
//!
//! The hash lets a joining machine check the CA it is handed before trusting it; the
//! user says what the secret is good for (`server` for the server token, which also
//! joins agents; `node` for the agent token, which only joins agents). A bootstrap
//! token (`skiff token create`) has the form `<id>.<secret>` in place of
//! `<user>:<secret>`, as upstream's bootstrap tokens do. A short token, without `K10` and
//! the hash, is accepted without the CA check: callers warn loudly about it.

use std::fmt;

/// The prefix of a secure token (K3s's format version 1.0).
const PREFIX: &str = "K10";

/// The user of the server token.
pub const SERVER_USER: &str = "server";
/// The user of the agent token.
pub const NODE_USER: &str = "node";

/// Whether `id.secret` has the shape of a bootstrap token: a 6-character id and a
/// 16-character secret, both `[a-z0-9]`.
pub fn is_bootstrap(credentials: &str) -> bool {
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    credentials
        .split_once('.')
        .is_some_and(|(id, secret)| ok(id, 6) && ok(secret, 16))
}

/// A parsed token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The SHA-256 (hex) of the CA bundle the server presents; `None` for a short token.
    pub ca_hash: Option<String>,
    /// Who the secret authenticates: [`SERVER_USER`], [`NODE_USER`], or a bootstrap
    /// token's id.
    pub user: String,
    /// A bootstrap token (`<id>.<secret>`), kept as a Secret in `kube-system`.
    pub bootstrap: bool,
    /// The secret.
    pub secret: String,
}

// Secrets never reach logs, even through `{:?}`.
impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("ca_hash", &self.ca_hash)
            .field("user", &self.user)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Why a token does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The token is empty.
    #[error("the token is empty")]
    Empty,
    /// A `K10` token whose parts are missing or malformed.
    #[error("the token starts with K10 but is not K10<64 hex digits>::<user>:<secret>")]
    Malformed,
}

impl Token {
    /// Parses a token as given on the command line or in a file (surrounding
    /// whitespace ignored). A short token is the secret of `default_user`.
    pub fn parse(text: &str, default_user: &str) -> Result<Token, Error> {
        let text = text.trim();
        if text.is_empty() {
            return Err(Error::Empty);
        }
        let Some(rest) = text.strip_prefix(PREFIX) else {
            if let Some((id, secret)) = text.split_once('.').filter(|_| is_bootstrap(text)) {
                return Ok(Token::bootstrap(None, id, secret));
            }
            return Ok(Token {
                ca_hash: None,
                user: default_user.to_string(),
                bootstrap: false,
                secret: text.to_string(),
            });
        };
        let (hash, credentials) = rest.split_once("::").ok_or(Error::Malformed)?;
        let hash_ok = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
        if !hash_ok {
            return Err(Error::Malformed);
        }
        let hash = Some(hash.to_ascii_lowercase());
        if let Some((id, secret)) = credentials
            .split_once('.')
            .filter(|_| is_bootstrap(credentials))
        {
            return Ok(Token::bootstrap(hash, id, secret));
        }
        let (user, secret) = credentials.split_once(':').ok_or(Error::Malformed)?;
        if user.is_empty() || secret.is_empty() {
            return Err(Error::Malformed);
        }
        Ok(Token {
            ca_hash: hash,
            user: user.to_string(),
            bootstrap: false,
            secret: secret.to_string(),
        })
    }

    /// A bootstrap token.
    pub fn bootstrap(ca_hash: Option<String>, id: &str, secret: &str) -> Token {
        Token {
            ca_hash,
            user: id.to_string(),
            bootstrap: true,
            secret: secret.to_string(),
        }
    }

    /// The credentials part: `<user>:<secret>`, or `<id>.<secret>` for a bootstrap token.
    pub fn credentials(&self) -> String {
        if self.bootstrap {
            format!("{}.{}", self.user, self.secret)
        } else {
            format!("{}:{}", self.user, self.secret)
        }
    }

    /// The token in the secure format (a short token stays short).
    pub fn render(&self) -> String {
        match &self.ca_hash {
            Some(hash) => format!("{PREFIX}{hash}::{}", self.credentials()),
            None if self.bootstrap => self.credentials(),
            None => self.secret.clone(),
        }
    }

    /// Whether `secret` given for `user` is this token's, compared in constant time.
    pub fn accepts(&self, user: &str, secret: &str) -> bool {
        user == self.user && constant_time_eq(secret.as_bytes(), self.secret.as_bytes())
    }
}

/// A new bootstrap token's id and secret.
pub fn new_bootstrap() -> (String, String) {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let mut pick = |n: usize| -> String {
        (0..n)
            .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
            .collect()
    };
    (pick(6), pick(16))
}

/// The hash a secure token carries: the SHA-256 (hex) of the CA bundle's PEM text.
pub fn ca_hash(ca_pem: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(ca_pem.as_bytes()))
}

/// Compares two secrets in constant time.
pub fn same_secret(a: &str, b: &str) -> bool {
    constant_time_eq(a.as_bytes(), b.as_bytes())
}

/// A new random secret: 32 bytes as hex.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "3f9c1a0e2b7d4c5f6a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f";

    #[test]
    fn secure_tokens_round_trip() {
        let text = format!("K10{HASH}::server:s3cret");
        let t = Token::parse(&format!("  {text}\n"), NODE_USER).unwrap();
        assert_eq!(t.ca_hash.as_deref(), Some(HASH));
        assert_eq!(t.user, SERVER_USER);
        assert_eq!(t.secret, "s3cret");
        assert_eq!(t.render(), text);
        assert!(t.accepts("server", "s3cret"));
        assert!(!t.accepts("node", "s3cret"));
        assert!(!t.accepts("server", "s3cre"));
        assert!(!format!("{t:?}").contains("s3cret"));
    }

    #[test]
    fn short_tokens_are_the_secret_of_the_default_user() {
        let t = Token::parse("abc", NODE_USER).unwrap();
        assert_eq!(t.ca_hash, None);
        assert_eq!(t.user, NODE_USER);
        assert_eq!(t.render(), "abc");
    }

    #[test]
    fn malformed_tokens_are_refused() {
        assert_eq!(Token::parse(" ", NODE_USER), Err(Error::Empty));
        for bad in [
            format!("K10{HASH}"),
            format!("K10{HASH}::server"),
            format!("K10{HASH}::server:"),
            format!("K10{HASH}::s"),
            "K10abc::server:x".to_string(),
            format!("K10{}::server:x", "z".repeat(64)),
        ] {
            assert_eq!(
                Token::parse(&bad, NODE_USER),
                Err(Error::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn bootstrap_tokens_round_trip() {
        let text = format!("K10{HASH}::abcdef.0123456789abcdef");
        let t = Token::parse(&text, NODE_USER).unwrap();
        assert!(t.bootstrap);
        assert_eq!(
            (t.user.as_str(), t.secret.as_str()),
            ("abcdef", "0123456789abcdef")
        );
        assert_eq!(t.render(), text);
        let short = Token::parse("abcdef.0123456789abcdef", NODE_USER).unwrap();
        assert!(short.bootstrap && short.ca_hash.is_none());
        assert_eq!(short.render(), "abcdef.0123456789abcdef");
        // Not the shape: a plain secret that happens to hold a dot.
        assert!(!Token::parse("abc.def", NODE_USER).unwrap().bootstrap);
        let (id, secret) = new_bootstrap();
        assert!(is_bootstrap(&format!("{id}.{secret}")));
        assert_ne!(new_bootstrap(), new_bootstrap());
    }

    #[test]
    fn secrets_are_random_hex() {
        let (a, b) = (new_secret(), new_secret());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
