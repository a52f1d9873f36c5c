//! Bearer-token authentication: ServiceAccount tokens.
//!
//! [`ServiceAccountTokens`] issues tokens (for the TokenRequest API) and authenticates
//! `Authorization: Bearer` tokens as upstream's ServiceAccount token authenticator does:
//! the signature ([`jwt::Signer`]), then issuer, audience and time
//! ([`jwt::check_claims`]), then, from the datastore, that the ServiceAccount and the
//! object the token is bound to (Pod, Secret, Node) still exist with the uids the token
//! names ([`check_bindings`]). Legacy tokens (issuer `kubernetes/serviceaccount`, kept
//! in `kubernetes.io/service-account-token` Secrets by the tokens controller) are
//! accepted while their Secret holds them and their ServiceAccount has the uid they name
//! ([`Legacy`]). A refused token is only logged at debug level, by reason, never with
//! the token.

use super::jwt::{self, Claims, KubernetesClaims, Ref};
use super::User;
use serde_json::Value;

/// The `extra` key of the pod a token is bound to.
pub const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
/// The `extra` key of the uid of the pod a token is bound to.
pub const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
/// The `extra` key of the node a token is bound to.
pub const EXTRA_NODE_NAME: &str = "authentication.kubernetes.io/node-name";
/// The `extra` key of the uid of that node.
pub const EXTRA_NODE_UID: &str = "authentication.kubernetes.io/node-uid";
/// The `extra` key of the token's id (`JTI=<jti>`).
pub const EXTRA_CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";
/// The group of every ServiceAccount.
pub const SERVICE_ACCOUNTS_GROUP: &str = "system:serviceaccounts";
/// How long a token bound to a pod outlives the pod's deletion timestamp, as upstream.
const DELETED_POD_GRACE_SECONDS: i64 = 60;

/// What the datastore says about an object a token refers to.
#[derive(Clone, PartialEq, Eq)]
pub struct Found {
    /// Its uid.
    pub uid: String,
    /// `metadata.deletionTimestamp` (seconds since the epoch), if it is being deleted.
    pub deleting_since: Option<i64>,
    /// A Secret's `data.token`, decoded.
    pub token: Option<String>,
}

impl std::fmt::Debug for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Found")
            .field("uid", &self.uid)
            .field("deleting_since", &self.deleting_since)
            .finish_non_exhaustive()
    }
}

impl Found {
    /// What a stored object (JSON) says.
    pub fn of(obj: &Value) -> Found {
        let meta = obj.get("metadata");
        let field = |f: &str| meta.and_then(|m| m.get(f)).and_then(Value::as_str);
        use base64::Engine as _;
        Found {
            uid: field("uid").unwrap_or_default().to_string(),
            deleting_since: field("deletionTimestamp")
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map(|t| t.as_second()),
            token: obj
                .pointer("/data/token")
                .and_then(Value::as_str)
                .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
                .and_then(|t| String::from_utf8(t).ok()),
        }
    }
}

/// Looks objects up by kind (`ServiceAccount`, `Pod`, `Secret`, `Node`), namespace and
/// name.
pub trait Lookup {
    /// The object, if it exists.
    fn find(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<Found>;
}

impl Lookup for crate::store::Store {
    fn find(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<Found> {
        let r = crate::registry::find_kind("", kind)?;
        let entry = self.get(&r.key(namespace, name))?;
        let obj: Value = serde_json::from_slice(&entry.value).ok()?;
        Some(Found::of(&obj))
    }
}

/// Why a token's bindings no longer hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// The object is gone.
    #[error("{kind} {name:?} not found")]
    NotFound {
        /// Its kind.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// An object of that name exists, but it is another one.
    #[error("{kind} {name:?} has another uid: the token is invalidated")]
    Uid {
        /// Its kind.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// The object is being deleted.
    #[error("{kind} {name:?} is being deleted: the token is invalidated")]
    Deleted {
        /// Its kind.
        kind: &'static str,
        /// Its name.
        name: String,
    },
}

/// Checks that the ServiceAccount and whatever the token is bound to still exist, with
/// the uids it names. A ServiceAccount or Secret being deleted invalidates the token at
/// once; a pod, 60 seconds after its deletion timestamp.
pub fn check_bindings(k: &KubernetesClaims, now: i64, objects: &dyn Lookup) -> Result<(), Invalid> {
    let ns = Some(k.namespace.as_str());
    let check = |kind: &'static str, ns: Option<&str>, r: &Ref, grace: Option<i64>| {
        let Some(found) = objects.find(kind, ns, &r.name) else {
            return Err(Invalid::NotFound {
                kind,
                name: r.name.clone(),
            });
        };
        if found.uid != r.uid {
            return Err(Invalid::Uid {
                kind,
                name: r.name.clone(),
            });
        }
        if let Some(since) = found.deleting_since {
            if grace.is_none_or(|g| since + g < now) {
                return Err(Invalid::Deleted {
                    kind,
                    name: r.name.clone(),
                });
            }
        }
        Ok(())
    };
    check("ServiceAccount", ns, &k.serviceaccount, None)?;
    if let Some(pod) = &k.pod {
        check("Pod", ns, pod, Some(DELETED_POD_GRACE_SECONDS))?;
    }
    if let Some(secret) = &k.secret {
        check("Secret", ns, secret, None)?;
    }
    // A token bound to a pod names the pod's node for information; one bound to the
    // node itself is checked against it (upstream's node binding validation).
    if let (Some(node), None) = (&k.node, &k.pod) {
        check("Node", None, node, None)?;
    }
    Ok(())
}

/// The user a token's claims name.
pub fn user_of(claims: &Claims) -> Option<User> {
    let k = claims.kubernetes.as_ref()?;
    let name = format!(
        "system:serviceaccount:{}:{}",
        k.namespace, k.serviceaccount.name
    );
    if claims.sub != name {
        return None;
    }
    let mut user = User::new(
        name,
        vec![
            SERVICE_ACCOUNTS_GROUP.to_string(),
            format!("{SERVICE_ACCOUNTS_GROUP}:{}", k.namespace),
        ],
    );
    user.uid = Some(k.serviceaccount.uid.clone());
    let mut extra = |key: &str, v: &str| {
        user.extra.insert(key.to_string(), vec![v.to_string()]);
    };
    if let Some(pod) = &k.pod {
        extra(EXTRA_POD_NAME, &pod.name);
        extra(EXTRA_POD_UID, &pod.uid);
    }
    if let Some(node) = &k.node {
        extra(EXTRA_NODE_NAME, &node.name);
        extra(EXTRA_NODE_UID, &node.uid);
    }
    if let Some(jti) = claims.jti.as_deref().filter(|j| !j.is_empty()) {
        extra(EXTRA_CREDENTIAL_ID, &format!("JTI={jti}"));
    }
    Some(user)
}

/// The claims of a legacy token, as upstream's legacy issuer writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Legacy {
    /// The namespace.
    pub namespace: String,
    /// The Secret that holds the token.
    pub secret: String,
    /// The ServiceAccount.
    pub service_account: Ref,
}

const LEGACY_NAMESPACE: &str = "kubernetes.io/serviceaccount/namespace";
const LEGACY_SECRET: &str = "kubernetes.io/serviceaccount/secret.name";
const LEGACY_SA_NAME: &str = "kubernetes.io/serviceaccount/service-account.name";
const LEGACY_SA_UID: &str = "kubernetes.io/serviceaccount/service-account.uid";

impl Legacy {
    /// The claims.
    pub fn claims(&self) -> Value {
        serde_json::json!({
            "iss": jwt::LEGACY_ISSUER,
            LEGACY_NAMESPACE: self.namespace,
            LEGACY_SECRET: self.secret,
            LEGACY_SA_NAME: self.service_account.name,
            LEGACY_SA_UID: self.service_account.uid,
            "sub": format!("system:serviceaccount:{}:{}", self.namespace, self.service_account.name),
        })
    }

    /// Reads the claims; `None` unless every one is there and `sub` agrees.
    pub fn from_claims(v: &Value) -> Option<Legacy> {
        let field = |f: &str| {
            v.get(f)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(String::from)
        };
        let legacy = Legacy {
            namespace: field(LEGACY_NAMESPACE)?,
            secret: field(LEGACY_SECRET)?,
            service_account: Ref {
                name: field(LEGACY_SA_NAME)?,
                uid: field(LEGACY_SA_UID)?,
            },
        };
        (field("iss")? == jwt::LEGACY_ISSUER && field("sub")? == legacy.claims()["sub"])
            .then_some(legacy)
    }

    /// Checks that the Secret still holds `token` and the ServiceAccount has the uid
    /// the token names; neither is being deleted.
    pub fn check(&self, token: &str, objects: &dyn Lookup) -> Result<(), Invalid> {
        let ns = Some(self.namespace.as_str());
        let sa = objects
            .find("ServiceAccount", ns, &self.service_account.name)
            .ok_or_else(|| Invalid::NotFound {
                kind: "ServiceAccount",
                name: self.service_account.name.clone(),
            })?;
        if sa.uid != self.service_account.uid {
            return Err(Invalid::Uid {
                kind: "ServiceAccount",
                name: self.service_account.name.clone(),
            });
        }
        let secret = objects
            .find("Secret", ns, &self.secret)
            .ok_or_else(|| Invalid::NotFound {
                kind: "Secret",
                name: self.secret.clone(),
            })?;
        if secret.token.as_deref() != Some(token) {
            return Err(Invalid::Uid {
                kind: "Secret",
                name: self.secret.clone(),
            });
        }
        if sa.deleting_since.is_some() || secret.deleting_since.is_some() {
            return Err(Invalid::Deleted {
                kind: "Secret",
                name: self.secret.clone(),
            });
        }
        Ok(())
    }

    /// The user the token names.
    pub fn user(&self) -> User {
        let mut user = User::new(
            format!(
                "system:serviceaccount:{}:{}",
                self.namespace, self.service_account.name
            ),
            vec![
                SERVICE_ACCOUNTS_GROUP.to_string(),
                format!("{SERVICE_ACCOUNTS_GROUP}:{}", self.namespace),
            ],
        );
        user.uid = Some(self.service_account.uid.clone());
        user
    }
}

/// What a token is requested for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// The ServiceAccount's namespace.
    pub namespace: String,
    /// The ServiceAccount.
    pub service_account: Ref,
    /// The audiences.
    pub audiences: Vec<String>,
    /// The lifetime in seconds.
    pub expiration_seconds: i64,
    /// The pod it is bound to.
    pub pod: Option<Ref>,
    /// The Secret it is bound to.
    pub secret: Option<Ref>,
    /// The node it is bound to (or the node of the pod).
    pub node: Option<Ref>,
}

/// The server's ServiceAccount token issuer and authenticator.
#[derive(Debug)]
pub struct ServiceAccountTokens {
    signer: jwt::Signer,
    audiences: Vec<String>,
}

impl ServiceAccountTokens {
    /// Tokens signed with `signer`, accepted for `audiences` (the API's).
    pub fn new(signer: jwt::Signer, audiences: Vec<String>) -> ServiceAccountTokens {
        ServiceAccountTokens { signer, audiences }
    }

    /// The API's audiences, which a TokenRequest gets when it names none.
    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }

    /// The signer (for the key set).
    pub fn signer(&self) -> &jwt::Signer {
        &self.signer
    }

    /// The claims of a token made at `now` (seconds), with id `jti`.
    pub fn claims(req: &Issue, now: i64, jti: String) -> Claims {
        Claims {
            iss: jwt::ISSUER.to_string(),
            sub: format!(
                "system:serviceaccount:{}:{}",
                req.namespace, req.service_account.name
            ),
            aud: jwt::Audience::Many(req.audiences.clone()),
            exp: Some(now + req.expiration_seconds),
            iat: Some(now),
            nbf: Some(now),
            jti: Some(jti),
            kubernetes: Some(KubernetesClaims {
                namespace: req.namespace.clone(),
                serviceaccount: req.service_account.clone(),
                pod: req.pod.clone(),
                secret: req.secret.clone(),
                node: req.node.clone(),
            }),
        }
    }

    /// A signed token for `req`, made at `now`, and its expiry.
    pub fn issue(&self, req: &Issue, now: i64) -> Result<(String, i64), jwt::Error> {
        let claims = Self::claims(req, now, uuid::Uuid::new_v4().to_string());
        let exp = claims.exp.unwrap_or(now);
        Ok((self.signer.sign(&claims)?, exp))
    }

    /// A legacy token for a `kubernetes.io/service-account-token` Secret: no expiry,
    /// valid while the Secret holds it.
    pub fn issue_legacy(&self, legacy: &Legacy) -> Result<String, jwt::Error> {
        self.signer.sign(&legacy.claims())
    }

    /// The user `token` authenticates, if it is a valid ServiceAccount token at `now`.
    pub fn authenticate(&self, token: &str, now: i64, objects: &dyn Lookup) -> Option<User> {
        let value = match self.signer.verify_value(token) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(reason = %e, "bearer token refused");
                return None;
            }
        };
        if value.get("iss").and_then(Value::as_str) == Some(jwt::LEGACY_ISSUER) {
            let legacy = Legacy::from_claims(&value)?;
            if let Err(e) = legacy.check(token, objects) {
                tracing::debug!(reason = %e, "legacy bearer token refused");
                return None;
            }
            return Some(legacy.user());
        }
        let claims: Claims = match serde_json::from_value(value) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(reason = %e, "bearer token refused: claims");
                return None;
            }
        };
        if let Err(e) = jwt::check_claims(&claims, now, &self.audiences) {
            tracing::debug!(reason = %e, sub = %claims.sub, "bearer token refused");
            return None;
        }
        let k = claims.kubernetes.as_ref()?;
        if let Err(e) = check_bindings(k, now, objects) {
            tracing::debug!(reason = %e, sub = %claims.sub, "bearer token refused");
            return None;
        }
        user_of(&claims)
    }
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    let token = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Objects(HashMap<(String, String), Found>);

    impl Lookup for Objects {
        fn find(&self, kind: &str, _ns: Option<&str>, name: &str) -> Option<Found> {
            self.0.get(&(kind.to_string(), name.to_string())).cloned()
        }
    }

    fn found(uid: &str) -> Found {
        Found {
            uid: uid.into(),
            deleting_since: None,
            token: None,
        }
    }

    fn tokens() -> ServiceAccountTokens {
        let rng = ring::rand::SystemRandom::new();
        let der = ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .unwrap();
        ServiceAccountTokens::new(
            jwt::Signer::from_pkcs8(der.as_ref()).unwrap(),
            jwt::API_AUDIENCES.iter().map(|s| s.to_string()).collect(),
        )
    }

    fn bound_to_pod() -> Issue {
        Issue {
            namespace: "ns".into(),
            service_account: Ref {
                name: "default".into(),
                uid: "sa-uid".into(),
            },
            audiences: vec![jwt::ISSUER.into()],
            expiration_seconds: 3600,
            pod: Some(Ref {
                name: "web".into(),
                uid: "pod-uid".into(),
            }),
            secret: None,
            node: Some(Ref {
                name: "n1".into(),
                uid: "node-uid".into(),
            }),
        }
    }

    fn objects() -> Objects {
        Objects(HashMap::from([
            (("ServiceAccount".into(), "default".into()), found("sa-uid")),
            (("Pod".into(), "web".into()), found("pod-uid")),
        ]))
    }

    #[test]
    fn a_bound_token_names_the_service_account_and_its_pod() {
        let t = tokens();
        let (token, exp) = t.issue(&bound_to_pod(), 1000).unwrap();
        assert_eq!(exp, 4600);
        let user = t.authenticate(&token, 1000, &objects()).unwrap();
        assert_eq!(user.name, "system:serviceaccount:ns:default");
        assert_eq!(user.uid.as_deref(), Some("sa-uid"));
        assert_eq!(
            user.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:ns",
                "system:authenticated"
            ]
        );
        assert_eq!(user.extra[EXTRA_POD_NAME], ["web"]);
        assert_eq!(user.extra[EXTRA_POD_UID], ["pod-uid"]);
        assert_eq!(user.extra[EXTRA_NODE_NAME], ["n1"]);
        assert!(user.extra[EXTRA_CREDENTIAL_ID][0].starts_with("JTI="));
    }

    #[test]
    fn a_token_dies_with_what_it_is_bound_to() {
        let t = tokens();
        let (token, _) = t.issue(&bound_to_pod(), 1000).unwrap();
        let mut objs = objects();
        objs.0.remove(&("Pod".into(), "web".into()));
        assert!(t.authenticate(&token, 1000, &objs).is_none(), "pod gone");
        let mut objs = objects();
        objs.0
            .insert(("Pod".into(), "web".into()), found("another-pod"));
        assert!(t.authenticate(&token, 1000, &objs).is_none(), "pod remade");
        let mut objs = objects();
        objs.0
            .insert(("ServiceAccount".into(), "default".into()), found("x"));
        assert!(t.authenticate(&token, 1000, &objs).is_none(), "SA remade");
        // A pod being deleted: valid for a minute after its deletion timestamp.
        let mut objs = objects();
        objs.0.insert(
            ("Pod".into(), "web".into()),
            Found {
                uid: "pod-uid".into(),
                deleting_since: Some(1000),
                token: None,
            },
        );
        assert!(t.authenticate(&token, 1030, &objs).is_some());
        assert!(t.authenticate(&token, 1061, &objs).is_none());
        // Expired.
        assert!(t.authenticate(&token, 4600 + 61, &objects()).is_none());
    }

    #[test]
    fn the_bearer_scheme_is_read_case_insensitively() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
    }

    #[test]
    fn found_reads_uid_and_deletion() {
        let obj = serde_json::json!({"metadata": {"uid": "u", "deletionTimestamp": "1970-01-01T00:16:40Z"}, "data": {"token": "YWJj"}});
        assert_eq!(
            Found::of(&obj),
            Found {
                uid: "u".into(),
                deleting_since: Some(1000),
                token: Some("abc".into()),
            }
        );
    }

    #[test]
    fn a_legacy_token_lives_as_long_as_its_secret_holds_it() {
        let t = tokens();
        let legacy = Legacy {
            namespace: "ns".into(),
            secret: "robot-token".into(),
            service_account: Ref {
                name: "default".into(),
                uid: "sa-uid".into(),
            },
        };
        let token = t.issue_legacy(&legacy).unwrap();
        let mut objs = objects();
        let secret = |token: &str| Found {
            uid: "s".into(),
            deleting_since: None,
            token: Some(token.into()),
        };
        objs.0
            .insert(("Secret".into(), "robot-token".into()), secret(&token));
        let user = t.authenticate(&token, 1 << 40, &objs).unwrap();
        assert_eq!(user.name, "system:serviceaccount:ns:default");
        assert_eq!(user.uid.as_deref(), Some("sa-uid"));
        // The Secret holds another token now (or is gone): refused.
        objs.0
            .insert(("Secret".into(), "robot-token".into()), secret("other"));
        assert!(t.authenticate(&token, 0, &objs).is_none());
        objs.0.remove(&("Secret".into(), "robot-token".into()));
        assert!(t.authenticate(&token, 0, &objs).is_none());
    }
}
