//! ServiceAccount tokens for projected `serviceAccountToken` volume sources, as
//! upstream's kubelet token manager: requested through the TokenRequest API as the
//! node, bound to the pod (name and uid), kept per pod, audience and lifetime, and
//! requested again once 80 % of the lifetime has passed or the token is 24 hours old.
//! Tokens never reach the log.

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount, ServiceAccountTokenProjection};
use kube::api::{Api, PostParams};
use std::collections::HashMap;
use std::sync::Mutex;

/// The lifetime a projection that names none gets (the API's default).
const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// A token older than this is replaced whatever its lifetime.
const MAX_AGE_SECONDS: i64 = 24 * 3600;

/// A token as requested: when it was issued and when it expires (seconds since the
/// epoch).
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The token.
    pub token: String,
    /// When it was issued.
    pub issued: i64,
    /// When it expires.
    pub expires: i64,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("issued", &self.issued)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// Whether a new token is due at `now`: 80 % of the lifetime gone, or a day old.
    pub fn needs_refresh(&self, now: i64) -> bool {
        let ttl = (self.expires - self.issued).max(0);
        now >= self.expires - ttl / 5 || now >= self.issued + MAX_AGE_SECONDS
    }
}

/// Which token: the pod (uid), the audience and the lifetime.
type Key = (String, String, i64);

/// The node's tokens, by pod, audience and lifetime.
#[derive(Debug, Default)]
pub struct Tokens {
    cache: Mutex<HashMap<Key, Token>>,
}

impl Tokens {
    /// The token for `source` of `pod` (in namespace `ns`): the cached one while it is
    /// fresh, else a new one from the API. Errors read as volume setup failures.
    pub async fn get(
        &self,
        client: &kube::Client,
        pod: &Pod,
        ns: &str,
        source: &ServiceAccountTokenProjection,
    ) -> Result<String, String> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let audience = source.audience.clone().unwrap_or_default();
        let lifetime = source
            .expiration_seconds
            .unwrap_or(DEFAULT_EXPIRATION_SECONDS);
        let key = (uid.clone(), audience.clone(), lifetime);
        let now = jiff::Timestamp::now().as_second();
        if let Some(t) = self.lock().get(&key) {
            if !t.needs_refresh(now) {
                return Ok(t.token.clone());
            }
        }
        let account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into());
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(if audience.is_empty() {
                    Vec::new()
                } else {
                    vec![audience]
                }),
                expiration_seconds: Some(lifetime),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: pod.metadata.name.clone(),
                    uid: Some(uid),
                }),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
        let answer = api
            .create_token_request(&account, &PostParams::default(), &request)
            .await
            .map_err(|e| {
                format!("failed to fetch token for service account {ns}/{account}: {e}")
            })?;
        let missing = || format!("the token request for {ns}/{account} came back without a token");
        let status = answer.status.ok_or_else(missing)?;
        let (Some(token), Some(expires)) = (status.token, status.expiration_timestamp) else {
            return Err(missing());
        };
        let expires = expires.0.as_second();
        let granted = answer
            .spec
            .and_then(|s| s.expiration_seconds)
            .unwrap_or(lifetime);
        let token = Token {
            token,
            issued: expires - granted,
            expires,
        };
        tracing::debug!(namespace = %ns, serviceaccount = %account, expires, "requested a service account token");
        let out = token.token.clone();
        self.lock().insert(key, token);
        Ok(out)
    }

    /// Drops the tokens of the pod with `uid` (it is gone from the node).
    pub fn forget(&self, uid: &str) {
        self.lock().retain(|(pod, _, _), _| pod != uid);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Token>> {
        // A panic while holding the lock cannot leave the map half-changed.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_refreshed_at_eighty_percent_or_after_a_day() {
        let t = Token {
            token: "t".into(),
            issued: 1000,
            expires: 1000 + 3607,
        };
        assert!(!t.needs_refresh(1000));
        assert!(!t.needs_refresh(1000 + 2884));
        assert!(t.needs_refresh(1000 + 2886));
        let long = Token {
            token: "t".into(),
            issued: 0,
            expires: 365 * 24 * 3600,
        };
        assert!(!long.needs_refresh(23 * 3600));
        assert!(long.needs_refresh(24 * 3600));
        assert!(!format!("{t:?}").contains("\"t\""), "no token in Debug");
    }
}
