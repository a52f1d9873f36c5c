//! Joining: the tokens other machines join with, and the CA they check first.
//!
//! The server token lives in `<data-dir>/server/token` in K3s's secure format
//! (`K10<sha256 of the CA>::server:<secret>`): written on first start, from `--token` when
//! given, kept across restarts. `--agent-token` adds a second token, in
//! `<data-dir>/server/agent-token`, that can only join agents. `GET /cacerts` hands the CA
//! to anyone, so that a joining machine can check it against the hash in its token
//! before trusting it.

use skiff_core::pki::{write_file_atomic, Ca};
use skiff_core::token::{self, Token};
use std::path::Path;

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
