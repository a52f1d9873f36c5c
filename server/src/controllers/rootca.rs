//! The root CA publisher: every active namespace has the ConfigMap `kube-root-ca.crt`
//! with the cluster CA under `ca.crt`, which the ServiceAccount token volume projects
//! into pods. As upstream's root-ca-cert-publisher: made again when deleted, and its
//! data and description annotation put back when edited.
//!
//! [`reconcile`] decides from the namespace and the cached ConfigMap;
//! [`RootCaController`] is keyed by namespace name and fed by the namespaces' changes and
//! the changes of ConfigMaps with that name (the only ones its cache holds).

use super::driver::{self, Caches, Change, Effects, Kind, Next, Queue, Reconciler};
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::ResourceExt;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// The ConfigMap's name.
pub const NAME: &str = "kube-root-ca.crt";
/// The key of the CA bundle.
pub const KEY: &str = "ca.crt";
/// The annotation that says what the ConfigMap is for.
pub const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";
/// Upstream's description.
pub const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// What to do about one namespace's ConfigMap.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// It is as it should be, or the namespace is going away.
    Nothing,
    /// Create it.
    Create(Value),
    /// Put its data and annotation back (a JSON merge patch).
    Fix(Value),
}

/// The action for namespace `ns`, whose ConfigMap is `current`, with the CA `ca`.
pub fn reconcile(ns: &Namespace, current: Option<&ConfigMap>, ca: &str) -> Action {
    let phase = ns.status.as_ref().and_then(|s| s.phase.as_deref());
    let active = ns.metadata.deletion_timestamp.is_none() && matches!(phase, None | Some("Active"));
    if !active || ca.is_empty() {
        return Action::Nothing;
    }
    let Some(cm) = current else {
        return Action::Create(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": NAME,
                "namespace": ns.name_any(),
                "annotations": {DESCRIPTION_ANNOTATION: DESCRIPTION},
            },
            "data": {KEY: ca},
        }));
    };
    let data = cm.data.clone().unwrap_or_default();
    let data_ok = data.len() == 1 && data.get(KEY).map(String::as_str) == Some(ca);
    let described = cm
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DESCRIPTION_ANNOTATION))
        .is_some_and(|d| !d.is_empty());
    if data_ok && described {
        return Action::Nothing;
    }
    // Replace the data whole: other keys go, as upstream's update drops them.
    let mut new_data: Map<String, Value> = data.keys().map(|k| (k.clone(), Value::Null)).collect();
    new_data.insert(KEY.into(), ca.into());
    Action::Fix(json!({
        "metadata": {"annotations": {DESCRIPTION_ANNOTATION: DESCRIPTION}},
        "data": new_data,
    }))
}

/// Registers the controller's hooks and returns its worker.
pub fn start(ctx: &super::Context) -> super::Workers {
    let queue = Queue::new();
    RootCaController::watch(&ctx.caches, &queue);
    let controller = RootCaController::new(
        ctx.caches.clone(),
        ctx.effects.clone(),
        ctx.config.root_ca_pem.clone(),
    );
    ctx.workers(controller, queue, 1)
}

/// The controller: caches in, API calls out.
pub struct RootCaController {
    caches: Arc<Caches>,
    effects: Arc<dyn Effects>,
    ca: String,
}

impl RootCaController {
    /// A controller publishing `ca` over `caches`, writing through `effects`.
    pub fn new(caches: Arc<Caches>, effects: Arc<dyn Effects>, ca: String) -> Arc<Self> {
        Arc::new(RootCaController {
            caches,
            effects,
            ca,
        })
    }

    /// Registers the cache hooks that fill `queue` with namespace names.
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
            .rootcas
            .on_change(Box::new(move |cm: &ConfigMap, _change| {
                if cm.name_any() == NAME {
                    q.add(cm.namespace().unwrap_or_default());
                }
            }));
    }

    async fn sync_one(&self, name: &str) -> driver::Result<Next> {
        let Some(ns) = self.caches.namespaces.get("", name) else {
            return Ok(Next::Done);
        };
        let current = self.caches.rootcas.get(name, NAME);
        let kind = Kind::of::<ConfigMap>(true);
        let result = match reconcile(&ns, current.as_deref(), &self.ca) {
            Action::Nothing => return Ok(Next::Done),
            Action::Create(body) => self.effects.create(&kind, name, body).await.map(drop),
            Action::Fix(patch) => self
                .effects
                .merge_patch(&kind, name, NAME, patch)
                .await
                .map(drop),
        };
        match result {
            Ok(()) => Ok(Next::Done),
            // Already there (the cache is behind: its event brings the key back), gone,
            // or the namespace is going away.
            Err(kube::Error::Api(s)) if matches!(s.code, 403 | 404 | 409) => Ok(Next::Done),
            Err(e) => Err(driver::api_error("write", &kind, name, NAME)(e)),
        }
    }
}

impl Reconciler for RootCaController {
    type Key = String;

    fn name(&self) -> &'static str {
        "root-ca-cert-publisher"
    }

    fn sync<'a>(&'a self, key: &'a String) -> BoxFuture<'a, driver::Result<Next>> {
        Box::pin(self.sync_one(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NamespaceStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

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

    fn cm(data: &[(&str, &str)], described: bool) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(NAME.into()),
                namespace: Some("x".into()),
                annotations: described.then(|| {
                    BTreeMap::from([(DESCRIPTION_ANNOTATION.to_string(), DESCRIPTION.to_string())])
                }),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn a_namespace_without_the_configmap_gets_it() {
        let Action::Create(body) = reconcile(&ns("x", "Active"), None, "PEM") else {
            panic!("expected a create");
        };
        assert_eq!(body["metadata"]["name"], NAME);
        assert_eq!(body["metadata"]["namespace"], "x");
        assert_eq!(body["data"], json!({"ca.crt": "PEM"}));
        assert_eq!(
            body["metadata"]["annotations"][DESCRIPTION_ANNOTATION],
            DESCRIPTION
        );
        assert_eq!(
            reconcile(&ns("x", "Terminating"), None, "PEM"),
            Action::Nothing
        );
    }

    #[test]
    fn an_edited_configmap_is_put_back() {
        let good = cm(&[("ca.crt", "PEM")], true);
        assert_eq!(
            reconcile(&ns("x", "Active"), Some(&good), "PEM"),
            Action::Nothing
        );
        let edited = cm(&[("ca.crt", "other"), ("extra", "1")], true);
        assert_eq!(
            reconcile(&ns("x", "Active"), Some(&edited), "PEM"),
            Action::Fix(json!({
                "metadata": {"annotations": {DESCRIPTION_ANNOTATION: DESCRIPTION}},
                "data": {"ca.crt": "PEM", "extra": null},
            }))
        );
        let bare = cm(&[("ca.crt", "PEM")], false);
        assert!(matches!(
            reconcile(&ns("x", "Active"), Some(&bare), "PEM"),
            Action::Fix(_)
        ));
    }
}
