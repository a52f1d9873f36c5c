//! The ServiceAccount controller: every active namespace has a ServiceAccount named
//! `default`, made again when it is deleted. As upstream today, no token Secret is made
//! for it (tokens are requested through `serviceaccounts/token`).
//!
//! [`reconcile`] decides from the namespace and whether its `default` ServiceAccount is
//! cached; [`ServiceAccountController`] is keyed by namespace name and fed by the
//! namespaces' changes and the ServiceAccounts' deletions.

use super::driver::{self, Caches, Change, Effects, Kind, Next, Queue, Reconciler};
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::ResourceExt;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// The ServiceAccount every namespace has.
pub const DEFAULT: &str = "default";

/// How long the controller waits for the cache to show the account it made.
const SETTLE: Duration = Duration::from_secs(10);

/// The ServiceAccount to create in `ns`, if it needs one: the namespace is active (not
/// being deleted) and has no `default` ServiceAccount.
pub fn reconcile(ns: &Namespace, has_default: bool) -> Option<Value> {
    let phase = ns.status.as_ref().and_then(|s| s.phase.as_deref());
    let active = ns.metadata.deletion_timestamp.is_none() && matches!(phase, None | Some("Active"));
    (active && !has_default).then(|| {
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": DEFAULT, "namespace": ns.name_any()},
        })
    })
}

/// Registers the controller's hooks and returns its worker.
pub fn start(ctx: &super::Context) -> super::Workers {
    let queue = Queue::new();
    ServiceAccountController::watch(&ctx.caches, &queue);
    let controller = ServiceAccountController::new(ctx.caches.clone(), ctx.effects.clone());
    ctx.workers(controller, queue, 1)
}

/// The controller: caches in, API calls out.
pub struct ServiceAccountController {
    caches: Arc<Caches>,
    effects: Arc<dyn Effects>,
    settle: Duration,
}

impl ServiceAccountController {
    /// A controller over `caches`, writing through `effects`.
    pub fn new(caches: Arc<Caches>, effects: Arc<dyn Effects>) -> Arc<Self> {
        Arc::new(ServiceAccountController {
            caches,
            effects,
            settle: SETTLE,
        })
    }

    /// Registers the cache hooks that fill `queue` with namespace names: a namespace's
    /// changes, and the deletion of a `default` ServiceAccount.
    pub fn watch(caches: &Caches, queue: &Arc<Queue<String>>) {
        let q = queue.clone();
        caches
            .namespaces
            .on_change(Box::new(move |ns: &Namespace, change| {
                if change == Change::Applied {
                    q.add(ns.name_any());
                }
            }));
        let q = queue.clone();
        caches
            .serviceaccounts
            .on_change(Box::new(move |sa: &ServiceAccount, change| {
                if change == Change::Deleted && sa.name_any() == DEFAULT {
                    q.add(sa.namespace().unwrap_or_default());
                }
            }));
    }

    async fn sync_one(&self, name: &str) -> driver::Result<Next> {
        let Some(ns) = self.caches.namespaces.get("", name) else {
            return Ok(Next::Done);
        };
        let has = self.caches.serviceaccounts.get(name, DEFAULT).is_some();
        let Some(body) = reconcile(&ns, has) else {
            return Ok(Next::Done);
        };
        let kind = Kind::of::<ServiceAccount>(true);
        match self.effects.create(&kind, name, body).await {
            Ok(_) => {
                self.caches
                    .serviceaccounts
                    .wait_for(|c| c.get(name, DEFAULT).is_some(), self.settle)
                    .await;
                Ok(Next::Done)
            }
            // Already there (the cache is behind), or the namespace is going away.
            Err(kube::Error::Api(s)) if matches!(s.code, 403 | 404 | 409) => Ok(Next::Done),
            Err(e) => Err(driver::api_error("create", &kind, name, DEFAULT)(e)),
        }
    }
}

impl Reconciler for ServiceAccountController {
    type Key = String;

    fn name(&self) -> &'static str {
        "serviceaccount"
    }

    fn sync<'a>(&'a self, key: &'a String) -> BoxFuture<'a, driver::Result<Next>> {
        Box::pin(self.sync_one(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::driver::tests::Recording;
    use futures::stream;
    use k8s_openapi::api::core::v1::NamespaceStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use kube::runtime::watcher;

    fn ns(name: &str, phase: &str) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: None,
            status: Some(NamespaceStatus {
                phase: Some(phase.into()),
                conditions: None,
            }),
        }
    }

    fn sa(ns: &str, name: &str) -> ServiceAccount {
        ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn active_namespaces_without_a_default_account_get_one() {
        let made = reconcile(&ns("x", "Active"), false).unwrap();
        assert_eq!(
            made["metadata"],
            json!({"name": "default", "namespace": "x"})
        );
        assert_eq!(made["kind"], "ServiceAccount");
        assert_eq!(reconcile(&ns("x", "Active"), true), None);
        assert_eq!(reconcile(&ns("x", "Terminating"), false), None);
        let mut dying = ns("x", "Active");
        dying.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(reconcile(&dying, false), None);
    }

    async fn feed<K>(cache: &driver::Cache<K>, events: Vec<watcher::Event<K>>)
    where
        K: kube::Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        cache.feed(stream::iter(events.into_iter().map(Ok))).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_deleted_default_account_is_made_again() {
        let fx = Arc::new(Recording::default());
        let caches = Arc::new(Caches::new());
        let queue = Queue::new();
        ServiceAccountController::watch(&caches, &queue);
        let c = ServiceAccountController::new(caches.clone(), fx.clone());
        feed(
            &caches.namespaces,
            vec![
                watcher::Event::Init,
                watcher::Event::InitApply(ns("x", "Active")),
                watcher::Event::InitApply(ns("gone", "Terminating")),
                watcher::Event::InitDone,
            ],
        )
        .await;
        feed(
            &caches.serviceaccounts,
            vec![
                watcher::Event::Init,
                watcher::Event::InitApply(sa("x", "default")),
                watcher::Event::InitApply(sa("x", "builder")),
                watcher::Event::InitDone,
                watcher::Event::Delete(sa("x", "builder")),
                watcher::Event::Delete(sa("x", "default")),
            ],
        )
        .await;
        let mut keys = Vec::new();
        while !queue.is_empty() {
            let k = queue.next().await;
            c.sync(&k).await.unwrap();
            queue.done(&k, Ok(Next::Done));
            keys.push(k);
        }
        keys.sort();
        assert_eq!(keys, ["gone", "x"]);
        assert_eq!(fx.calls(), ["create ServiceAccount x/default"]);
    }
}
