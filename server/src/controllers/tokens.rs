//! The tokens controller: upstream's legacy ServiceAccount token Secrets. A Secret of
//! type `kubernetes.io/service-account-token` that names a ServiceAccount (annotation
//! `kubernetes.io/service-account.name`) is filled with a legacy token (no expiry), the
//! cluster CA and the namespace, and gets the account's uid annotation; a Secret whose
//! account is gone, or is another one of that name now, is deleted.
//!
//! [`reconcile`] decides from the Secret and the cached ServiceAccount;
//! [`TokensController`] is keyed by `namespace/name` of the Secret and fed by the
//! Secrets' changes (its cache holds only that type) and the ServiceAccounts' changes.

use super::driver::{self, Caches, Change, Effects, Kind, Next, Queue, Reconciler};
use crate::auth::authn::{Legacy, ServiceAccountTokens};
use crate::auth::jwt::Ref;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::ResourceExt;
use serde_json::{json, Value};
use std::sync::Arc;

/// The Secret type.
pub const TYPE: &str = "kubernetes.io/service-account-token";
/// The annotation naming the ServiceAccount.
pub const SA_NAME: &str = "kubernetes.io/service-account.name";
/// The annotation with the ServiceAccount's uid.
pub const SA_UID: &str = "kubernetes.io/service-account.uid";

/// What to do about one token Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// It is complete, not ours, or going away.
    Nothing,
    /// Its account is gone (or is another one): delete it, if it still has this uid.
    Delete(String),
    /// Fill in what it lacks, for this token.
    Fill(Legacy),
}

fn annotation<'a>(s: &'a Secret, key: &str) -> Option<&'a str> {
    s.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// The action for `secret`, whose ServiceAccount (by its annotation) is `account`.
pub fn reconcile(secret: &Secret, account: Option<&ServiceAccount>) -> Action {
    if secret.type_.as_deref() != Some(TYPE) || secret.metadata.deletion_timestamp.is_some() {
        return Action::Nothing;
    }
    if annotation(secret, SA_NAME).is_none() {
        return Action::Nothing;
    }
    let secret_uid = secret.metadata.uid.clone().unwrap_or_default();
    let Some(account) = account else {
        return Action::Delete(secret_uid);
    };
    let account_uid = account.metadata.uid.clone().unwrap_or_default();
    if annotation(secret, SA_UID).is_some_and(|u| u != account_uid) {
        return Action::Delete(secret_uid);
    }
    let data = secret.data.clone().unwrap_or_default();
    let complete = ["token", "ca.crt", "namespace"]
        .iter()
        .all(|k| data.get(*k).is_some_and(|v| !v.0.is_empty()))
        && annotation(secret, SA_UID).is_some();
    if complete {
        return Action::Nothing;
    }
    Action::Fill(Legacy {
        namespace: secret.namespace().unwrap_or_default(),
        secret: secret.name_any(),
        service_account: Ref {
            name: account.name_any(),
            uid: account_uid,
        },
    })
}

/// Registers the controller's hooks and returns its worker (none without a signer).
pub fn start(ctx: &super::Context) -> super::Workers {
    let queue = Queue::new();
    TokensController::watch(&ctx.caches, &queue);
    let Some(tokens) = ctx.config.service_account_tokens.clone() else {
        return Box::pin(async {});
    };
    let controller = TokensController {
        caches: ctx.caches.clone(),
        effects: ctx.effects.clone(),
        tokens,
        ca: ctx.config.root_ca_pem.clone(),
    };
    ctx.workers(Arc::new(controller), queue, 1)
}

/// The controller: caches in, API calls out.
pub struct TokensController {
    caches: Arc<Caches>,
    effects: Arc<dyn Effects>,
    tokens: Arc<ServiceAccountTokens>,
    ca: String,
}

impl TokensController {
    /// Registers the cache hooks that fill `queue` with `namespace/name` of Secrets.
    pub fn watch(caches: &Caches, queue: &Arc<Queue<String>>) {
        let q = queue.clone();
        caches
            .tokensecrets
            .on_change(Box::new(move |s: &Secret, change| {
                if change == Change::Applied {
                    q.add(format!(
                        "{}/{}",
                        s.namespace().unwrap_or_default(),
                        s.name_any()
                    ));
                }
            }));
        let q = queue.clone();
        let secrets = caches.tokensecrets.clone();
        caches
            .serviceaccounts
            .on_change(Box::new(move |sa: &ServiceAccount, _change| {
                let ns = sa.namespace().unwrap_or_default();
                for s in secrets.store().state() {
                    if s.namespace().as_deref() == Some(ns.as_str())
                        && annotation(&s, SA_NAME) == Some(sa.name_any().as_str())
                    {
                        q.add(format!("{ns}/{}", s.name_any()));
                    }
                }
            }));
    }

    async fn sync_one(&self, key: &str) -> driver::Result<Next> {
        let Some((ns, name)) = key.split_once('/') else {
            return Ok(Next::Done);
        };
        let Some(secret) = self.caches.tokensecrets.get(ns, name) else {
            return Ok(Next::Done);
        };
        let account_name = annotation(&secret, SA_NAME).unwrap_or_default().to_string();
        let account = self.caches.serviceaccounts.get(ns, &account_name);
        let kind = Kind::of::<Secret>(true);
        let result = match reconcile(&secret, account.as_deref()) {
            Action::Nothing => return Ok(Next::Done),
            Action::Delete(uid) => {
                // The cache may be behind a ServiceAccount just made: ask the API.
                let sa_kind = Kind::of::<ServiceAccount>(true);
                let live = self
                    .effects
                    .get(&sa_kind, ns, &account_name)
                    .await
                    .map_err(driver::api_error("get", &sa_kind, ns, &account_name))?;
                let same = live.as_ref().is_some_and(|sa| {
                    annotation(&secret, SA_UID).is_none_or(|u| {
                        sa.pointer("/metadata/uid").and_then(Value::as_str) == Some(u)
                    })
                });
                if same {
                    return Ok(Next::After(std::time::Duration::from_secs(1)));
                }
                self.effects
                    .delete(&kind, ns, name, Some(uid.as_str()), None)
                    .await
            }
            Action::Fill(legacy) => {
                let data = secret.data.clone().unwrap_or_default();
                let token = match data.get("token").filter(|t| !t.0.is_empty()) {
                    Some(t) => STANDARD.encode(&t.0),
                    None => STANDARD.encode(
                        self.tokens
                            .issue_legacy(&legacy)
                            .map_err(driver::Error::Sign)?,
                    ),
                };
                let patch = json!({
                    "metadata": {
                        "resourceVersion": secret.resource_version(),
                        "annotations": {SA_UID: legacy.service_account.uid},
                    },
                    "data": {
                        "token": token,
                        "ca.crt": STANDARD.encode(&self.ca),
                        "namespace": STANDARD.encode(ns),
                    },
                });
                self.effects
                    .merge_patch(&kind, ns, name, patch)
                    .await
                    .map(drop)
            }
        };
        match result {
            Ok(()) => Ok(Next::Done),
            // Changed meanwhile (its event brings the key back), or gone.
            Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409) => Ok(Next::Done),
            Err(e) => Err(driver::api_error("write", &kind, ns, name)(e)),
        }
    }
}

impl Reconciler for TokensController {
    type Key = String;

    fn name(&self) -> &'static str {
        "tokens"
    }

    fn sync<'a>(&'a self, key: &'a String) -> BoxFuture<'a, driver::Result<Next>> {
        Box::pin(self.sync_one(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn secret(annotations: &[(&str, &str)], data: &[&str]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some("robot-token".into()),
                namespace: Some("ns".into()),
                uid: Some("secret-uid".into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            type_: Some(TYPE.into()),
            data: Some(
                data.iter()
                    .map(|k| (k.to_string(), ByteString(b"x".to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        }
    }

    fn account(uid: &str) -> ServiceAccount {
        ServiceAccount {
            metadata: ObjectMeta {
                name: Some("robot".into()),
                namespace: Some("ns".into()),
                uid: Some(uid.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_new_token_secret_is_filled() {
        let s = secret(&[(SA_NAME, "robot")], &[]);
        assert_eq!(
            reconcile(&s, Some(&account("sa-uid"))),
            Action::Fill(Legacy {
                namespace: "ns".into(),
                secret: "robot-token".into(),
                service_account: Ref {
                    name: "robot".into(),
                    uid: "sa-uid".into()
                },
            })
        );
        let done = secret(
            &[(SA_NAME, "robot"), (SA_UID, "sa-uid")],
            &["token", "ca.crt", "namespace"],
        );
        assert_eq!(reconcile(&done, Some(&account("sa-uid"))), Action::Nothing);
        let mut other = secret(&[(SA_NAME, "robot")], &[]);
        other.type_ = Some("Opaque".into());
        assert_eq!(reconcile(&other, None), Action::Nothing);
    }

    #[test]
    fn a_secret_without_its_account_goes() {
        let s = secret(&[(SA_NAME, "robot"), (SA_UID, "sa-uid")], &["token"]);
        assert_eq!(reconcile(&s, None), Action::Delete("secret-uid".into()));
        assert_eq!(
            reconcile(&s, Some(&account("another"))),
            Action::Delete("secret-uid".into())
        );
    }
}
