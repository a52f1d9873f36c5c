//! Who is calling, and what they may do.
//!
//! Every request is first given a [`User`]: from the client certificate (CN = user,
//! O = groups), else from a bearer token ([`authn`]: ServiceAccount tokens, [`jwt`]),
//! or none (anonymous). Authorization builds on this: [`authz`] decides
//! each request (`system:masters`, then the [`node`] authorizer, then [`rbac`]) and
//! handles impersonation; [`policy`] holds the default roles reconciled at every start;
//! [`reviews`] serves the access and rules reviews and SelfSubjectReview.

pub mod authn;
pub mod authz;
pub mod jwt;
pub mod node;
pub mod policy;
pub mod rbac;
pub mod reviews;

use std::collections::BTreeMap;

/// The group every authenticated user is in.
pub const AUTHENTICATED: &str = "system:authenticated";

/// Who is calling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    /// The user name.
    pub name: String,
    /// A unique id, when the credential carries one (ServiceAccount tokens).
    pub uid: Option<String>,
    /// The groups, including [`AUTHENTICATED`].
    pub groups: Vec<String>,
    /// Extra attributes (a bound token's pod, for example).
    pub extra: BTreeMap<String, Vec<String>>,
}

impl User {
    /// An authenticated user with `groups` (plus [`AUTHENTICATED`]).
    pub fn new(name: impl Into<String>, mut groups: Vec<String>) -> User {
        if !groups.iter().any(|g| g == AUTHENTICATED) {
            groups.push(AUTHENTICATED.to_string());
        }
        User {
            name: name.into(),
            groups,
            ..User::default()
        }
    }

    /// The user a client certificate names (CN = user, O = groups).
    pub fn from_certificate(der: &[u8]) -> Option<User> {
        let (name, groups) = skiff_core::tls::identity(der)?;
        Some(User::new(name, groups))
    }

    /// Whether the user is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}
