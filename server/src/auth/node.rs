//! The node authorizer and NodeRestriction, for users in `system:nodes` named
//! `system:node:<name>`.
//!
//! [`authorize`] answers what upstream's node authorizer answers: the reads and writes a
//! kubelet needs (upstream's `NodeRules`), and reads of Secrets, ConfigMaps,
//! PersistentVolumeClaims, PersistentVolumes and ServiceAccounts only when a pod bound to
//! the node refers to them. Instead of upstream's graph, the relationship is looked up in
//! the store's in-memory objects: the pods of the object's namespace (or, for a
//! PersistentVolume, the claims of the node's pods). [`admit`] is NodeRestriction: a node
//! may write only its own Node and Lease, the status of pods bound to it, and mirror pods.

use super::authz::{Attributes, Decision};
use super::rbac::Rule;
use crate::api::status::ApiError;
use crate::registry;
use crate::store::Store;
use serde_json::Value;
use std::sync::OnceLock;

/// The group of nodes' users.
pub const NODES_GROUP: &str = "system:nodes";

/// The namespace of nodes' Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// The annotation that makes a pod a mirror pod.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// The node a user is, if it is one.
pub fn node_name(user: &super::User) -> Option<&str> {
    if !user.in_group(NODES_GROUP) {
        return None;
    }
    user.name.strip_prefix("system:node:")
}

/// What nodes may do besides the objects of their pods (upstream's `NodeRules`, as the
/// node authorizer applies them).
fn node_rules() -> &'static [Rule] {
    static RULES: OnceLock<Vec<Rule>> = OnceLock::new();
    RULES.get_or_init(|| {
        let read = &["get", "list", "watch"];
        vec![
            Rule::new(&["create", "get", "list", "watch"], &[""], &["nodes"]),
            Rule::new(&["update", "patch"], &[""], &["nodes/status", "nodes"]),
            Rule::new(
                &["create", "update", "patch"],
                &["", "events.k8s.io"],
                &["events"],
            ),
            Rule::new(read, &[""], &["pods"]),
            Rule::new(&["create", "delete"], &[""], &["pods"]),
            Rule::new(&["update", "patch"], &[""], &["pods/status"]),
            Rule::new(&["create"], &[""], &["pods/eviction"]),
            Rule::new(read, &[""], &["services", "endpoints"]),
            Rule::new(read, &["discovery.k8s.io"], &["endpointslices"]),
            Rule::new(
                &["update", "patch"],
                &[""],
                &["persistentvolumeclaims/status"],
            ),
            Rule::new(read, &["node.k8s.io"], &["runtimeclasses"]),
            Rule::new(read, &["storage.k8s.io"], &["storageclasses"]),
            Rule::new(
                &["get", "create", "update", "patch", "delete"],
                &["coordination.k8s.io"],
                &["leases"],
            ),
        ]
    })
}

/// The kinds whose objects a node may read only through its pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Secrets.
    Secret,
    /// ConfigMaps.
    ConfigMap,
    /// PersistentVolumeClaims.
    Claim,
    /// ServiceAccounts.
    ServiceAccount,
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

fn array<'a>(v: &'a Value, ptr: &str) -> impl Iterator<Item = &'a Value> + 'a {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// The names of the objects of `kind` that `pod` refers to (the edges upstream's node
/// graph draws from a pod).
pub fn references(pod: &Value, kind: Kind) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |s: Option<&str>| {
        if let Some(s) = s.filter(|s| !s.is_empty()) {
            if !out.iter().any(|o| o == s) {
                out.push(s.to_string());
            }
        }
    };
    let pod_name = str_at(pod, "/metadata/name").unwrap_or("");
    if kind == Kind::ServiceAccount {
        add(Some(
            str_at(pod, "/spec/serviceAccountName").unwrap_or("default"),
        ));
        return out;
    }
    for vol in array(pod, "/spec/volumes") {
        match kind {
            Kind::Secret => {
                add(str_at(vol, "/secret/secretName"));
                for src in array(vol, "/projected/sources") {
                    add(str_at(src, "/secret/name"));
                }
                for p in [
                    "/csi/nodePublishSecretRef/name",
                    "/cephfs/secretRef/name",
                    "/flexVolume/secretRef/name",
                    "/iscsi/secretRef/name",
                    "/rbd/secretRef/name",
                    "/azureFile/secretName",
                ] {
                    add(str_at(vol, p));
                }
            }
            Kind::ConfigMap => {
                add(str_at(vol, "/configMap/name"));
                for src in array(vol, "/projected/sources") {
                    add(str_at(src, "/configMap/name"));
                }
            }
            Kind::Claim => {
                add(str_at(vol, "/persistentVolumeClaim/claimName"));
                if vol.get("ephemeral").is_some() {
                    let v = str_at(vol, "/name").unwrap_or("");
                    add(Some(&format!("{pod_name}-{v}")));
                }
            }
            Kind::ServiceAccount => {}
        }
    }
    if kind == Kind::Secret {
        for s in array(pod, "/spec/imagePullSecrets") {
            add(str_at(s, "/name"));
        }
    }
    for list in [
        "/spec/initContainers",
        "/spec/containers",
        "/spec/ephemeralContainers",
    ] {
        for c in array(pod, list) {
            for env in array(c, "/env") {
                match kind {
                    Kind::Secret => add(str_at(env, "/valueFrom/secretKeyRef/name")),
                    Kind::ConfigMap => add(str_at(env, "/valueFrom/configMapKeyRef/name")),
                    _ => {}
                }
            }
            for from in array(c, "/envFrom") {
                match kind {
                    Kind::Secret => add(str_at(from, "/secretRef/name")),
                    Kind::ConfigMap => add(str_at(from, "/configMapRef/name")),
                    _ => {}
                }
            }
        }
    }
    out
}

/// Whether `pod` is bound to `node`.
pub fn bound_to(pod: &Value, node: &str) -> bool {
    str_at(pod, "/spec/nodeName") == Some(node)
}

fn pods_of(store: &Store, namespace: Option<&str>) -> Vec<Value> {
    let Some(r) = registry::find_kind("", "Pod") else {
        return Vec::new();
    };
    store
        .list(&r.prefix(namespace), None, 0, false, &|_| true)
        .items
        .iter()
        .filter_map(|e| serde_json::from_slice(&e.value).ok())
        .collect()
}

/// Whether a pod bound to `node` in `namespace` refers to the object `name` of `kind`.
fn related(store: &Store, node: &str, namespace: &str, kind: Kind, name: &str) -> bool {
    pods_of(store, Some(namespace))
        .iter()
        .any(|p| bound_to(p, node) && references(p, kind).iter().any(|n| n == name))
}

/// Whether a claim of a pod bound to `node` is bound to the PersistentVolume `name`.
fn related_volume(store: &Store, node: &str, name: &str) -> bool {
    let Some(claims) = registry::find_kind("", "PersistentVolumeClaim") else {
        return false;
    };
    pods_of(store, None)
        .iter()
        .filter(|p| bound_to(p, node))
        .any(|p| {
            let ns = str_at(p, "/metadata/namespace").unwrap_or("");
            references(p, Kind::Claim).iter().any(|c| {
                store
                    .get(&claims.key(Some(ns), c))
                    .and_then(|e| serde_json::from_slice::<Value>(&e.value).ok())
                    .is_some_and(|pvc| str_at(&pvc, "/spec/volumeName") == Some(name))
            })
        })
}

fn no_relationship(node: &str) -> String {
    format!("no relationship found between node '{node}' and this object")
}

/// The node authorizer: no opinion for users that are not nodes.
pub fn authorize(store: &Store, a: &Attributes) -> (Decision, String) {
    if !a.user.in_group(NODES_GROUP) {
        return (Decision::NoOpinion, String::new());
    }
    let Some(node) = node_name(a.user) else {
        return (
            Decision::NoOpinion,
            format!("unknown node for user {:?}", a.user.name),
        );
    };
    if !a.resource_request {
        return (Decision::NoOpinion, String::new());
    }
    let kind = match (a.api_group.as_str(), a.resource.as_str()) {
        ("", "secrets") => Some(Kind::Secret),
        ("", "configmaps") => Some(Kind::ConfigMap),
        ("", "persistentvolumeclaims") if a.subresource.is_empty() => Some(Kind::Claim),
        ("", "serviceaccounts") => Some(Kind::ServiceAccount),
        ("", "persistentvolumes") => {
            if a.verb != "get" {
                return (
                    Decision::NoOpinion,
                    "can only get individual resources of this type".into(),
                );
            }
            if !a.subresource.is_empty() {
                return (Decision::NoOpinion, "cannot get subresource".into());
            }
            if a.name.is_empty() {
                return (Decision::NoOpinion, "No Object name found".into());
            }
            return if related_volume(store, node, &a.name) {
                (Decision::Allow, String::new())
            } else {
                (Decision::NoOpinion, no_relationship(node))
            };
        }
        _ => None,
    };
    if let Some(kind) = kind {
        if kind == Kind::ServiceAccount && !a.subresource.is_empty() {
            if a.verb != "create" || a.subresource != "token" {
                return (
                    Decision::NoOpinion,
                    "can only create tokens for individual service accounts".into(),
                );
            }
        } else {
            if !matches!(a.verb.as_str(), "get" | "list" | "watch") {
                return (
                    Decision::NoOpinion,
                    "can only read resources of this type".into(),
                );
            }
            if !a.subresource.is_empty() {
                return (Decision::NoOpinion, "cannot read subresource".into());
            }
        }
        if a.namespace.is_empty() {
            return (
                Decision::NoOpinion,
                "can only read namespaced object of this type".into(),
            );
        }
        if a.name.is_empty() {
            return (Decision::NoOpinion, "No Object name found".into());
        }
        return if related(store, node, &a.namespace, kind, &a.name) {
            (Decision::Allow, String::new())
        } else {
            (Decision::NoOpinion, no_relationship(node))
        };
    }
    if node_rules().iter().any(|r| r.allows(a)) {
        (Decision::Allow, String::new())
    } else {
        (Decision::NoOpinion, String::new())
    }
}

fn forbidden(a: &Attributes, name: &str, message: String) -> ApiError {
    ApiError::forbidden(&a.api_group, &a.resource, name, message)
}

/// NodeRestriction: once the node authorizer allowed a write, limits it to the node's
/// own objects. `body` is the decoded object of a create, when there is one.
pub fn admit(store: &Store, a: &Attributes, body: Option<&Value>) -> Result<(), ApiError> {
    let Some(node) = node_name(a.user) else {
        return Ok(());
    };
    if matches!(a.verb.as_str(), "get" | "list" | "watch") {
        return Ok(());
    }
    let body_name = body
        .and_then(|b| str_at(b, "/metadata/name"))
        .unwrap_or("")
        .to_string();
    let name = if a.name.is_empty() {
        body_name
    } else {
        a.name.clone()
    };
    match (a.api_group.as_str(), a.resource.as_str()) {
        ("", "nodes") if name != node => {
            return Err(forbidden(
                a,
                &name,
                format!("node {node:?} is not allowed to modify node {name:?}"),
            ));
        }
        ("coordination.k8s.io", "leases") => {
            if a.namespace != LEASE_NAMESPACE {
                return Err(forbidden(
                    a,
                    &name,
                    format!("can only access leases in the {LEASE_NAMESPACE:?} namespace"),
                ));
            }
            if name != node {
                return Err(forbidden(
                    a,
                    &name,
                    "can only access node lease with the same name as the requesting node".into(),
                ));
            }
        }
        ("", "pods") => {
            let stored = || {
                registry::find_kind("", "Pod")
                    .and_then(|r| store.get(&r.key(Some(&a.namespace), &name)))
                    .and_then(|e| serde_json::from_slice::<Value>(&e.value).ok())
            };
            match (a.verb.as_str(), a.subresource.as_str()) {
                ("create", "") => {
                    let Some(pod) = body else {
                        return Ok(());
                    };
                    let mirror = pod
                        .pointer("/metadata/annotations")
                        .and_then(|m| m.get(MIRROR_ANNOTATION))
                        .is_some();
                    if !mirror {
                        return Err(forbidden(a, &name, format!(
                            "pod does not have {MIRROR_ANNOTATION:?} annotation, node {node:?} can only create mirror pods"
                        )));
                    }
                    if !bound_to(pod, node) {
                        return Err(forbidden(
                            a,
                            &name,
                            format!("node {node:?} can only create pods with spec.nodeName set to itself"),
                        ));
                    }
                }
                ("delete", "") if stored().is_some_and(|p| !bound_to(&p, node)) => {
                    return Err(forbidden(
                        a,
                        &name,
                        format!(
                            "node {node:?} can only delete pods with spec.nodeName set to itself"
                        ),
                    ));
                }
                (_, "status") if stored().is_some_and(|p| !bound_to(&p, node)) => {
                    return Err(forbidden(
                            a,
                            &name,
                            format!("node {node:?} can only update pod status for pods with spec.nodeName set to itself"),
                        ));
                }
                (_, "eviction") if stored().is_some_and(|p| !bound_to(&p, node)) => {
                    return Err(forbidden(
                        a,
                        &name,
                        format!(
                            "node {node:?} can only evict pods with spec.nodeName set to itself"
                        ),
                    ));
                }
                _ => {}
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pod_refers_to_its_secrets_configmaps_claims_and_account() {
        let pod = json!({
            "metadata": {"name": "web", "namespace": "d"},
            "spec": {
                "nodeName": "n1",
                "serviceAccountName": "builder",
                "imagePullSecrets": [{"name": "pull"}],
                "volumes": [
                    {"name": "a", "secret": {"secretName": "vol-secret"}},
                    {"name": "b", "configMap": {"name": "vol-cm"}},
                    {"name": "c", "projected": {"sources": [{"secret": {"name": "proj-secret"}}, {"configMap": {"name": "kube-root-ca.crt"}}]}},
                    {"name": "d", "persistentVolumeClaim": {"claimName": "data"}},
                    {"name": "e", "ephemeral": {"volumeClaimTemplate": {}}},
                ],
                "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "init-env"}}]}],
                "containers": [{"name": "c", "env": [
                    {"name": "X", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}},
                    {"name": "Y", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}},
                ], "envFrom": [{"configMapRef": {"name": "from-cm"}}]}],
            }
        });
        assert_eq!(
            references(&pod, Kind::Secret),
            vec![
                "vol-secret",
                "proj-secret",
                "pull",
                "init-env",
                "env-secret"
            ]
        );
        assert_eq!(
            references(&pod, Kind::ConfigMap),
            vec!["vol-cm", "kube-root-ca.crt", "env-cm", "from-cm"]
        );
        assert_eq!(references(&pod, Kind::Claim), vec!["data", "web-e"]);
        assert_eq!(references(&pod, Kind::ServiceAccount), vec!["builder"]);
        let bare = json!({"metadata": {"name": "p"}, "spec": {}});
        assert_eq!(references(&bare, Kind::ServiceAccount), vec!["default"]);
        assert!(bound_to(&pod, "n1"));
        assert!(!bound_to(&pod, "n2"));
    }

    #[test]
    fn only_nodes_are_nodes() {
        let n = super::super::User::new("system:node:a", vec![NODES_GROUP.into()]);
        assert_eq!(node_name(&n), Some("a"));
        let fake = super::super::User::new("system:node:a", vec![]);
        assert_eq!(node_name(&fake), None);
    }
}
