//! Discovery: `/api`, `/apis`, `/api/v1`, `/apis/<group>[/<version>]`, both the legacy
//! documents and the aggregated ones (`apidiscovery.k8s.io/v2`) that current kubectl asks
//! for first. All of it is derived from the resource table.

use crate::auth::reviews::{Review, REVIEWS};
use crate::registry::{self, Resource, RESOURCES};
use serde_json::{json, Value};

/// The groups discovery lists: the resource table's, plus the review APIs' groups
/// (served, create-only, after `apps` as upstream lists them).
fn served_groups() -> Vec<(&'static str, &'static str)> {
    let mut out = registry::groups();
    let at = out
        .iter()
        .position(|(g, _)| *g == "apps")
        .map_or(out.len(), |i| i + 1);
    let mut extra: Vec<(&'static str, &'static str)> = Vec::new();
    for r in REVIEWS {
        if !out.contains(&(r.group, r.version)) && !extra.contains(&(r.group, r.version)) {
            extra.push((r.group, r.version));
        }
    }
    for (i, g) in extra.into_iter().enumerate() {
        out.insert(at + i, g);
    }
    out
}

fn review_legacy(r: &Review) -> Value {
    json!({"name": r.plural, "singularName": r.kind.to_ascii_lowercase(), "namespaced": r.namespaced, "kind": r.kind, "verbs": ["create"]})
}

fn review_aggregated(r: &Review) -> Value {
    json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.kind.to_ascii_lowercase(),
        "verbs": ["create"],
    })
}

/// The content type of aggregated discovery answers.
pub const AGGREGATED_V2: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
const AGGREGATED_V2BETA1: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";

/// Which aggregated discovery version an Accept header asks for first, if any.
pub fn aggregated_version(accept: &str) -> Option<&'static str> {
    for part in accept.split(',') {
        let p = part.replace(' ', "");
        if p.contains("as=APIGroupDiscoveryList") && p.contains("g=apidiscovery.k8s.io") {
            if p.contains("v=v2beta1") {
                return Some(AGGREGATED_V2BETA1);
            }
            if p.contains("v=v2") {
                return Some(AGGREGATED_V2);
            }
        }
        if p.starts_with("application/json") || p.starts_with("*/*") {
            return None;
        }
    }
    None
}

/// `/api`: the core group's versions.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_json(group: &str, version: &str) -> Value {
    let gv = format!("{group}/{version}");
    json!({
        "name": group,
        "versions": [{"groupVersion": gv, "version": version}],
        "preferredVersion": {"groupVersion": gv, "version": version},
    })
}

/// `/apis`: every named group.
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = served_groups()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, v)| group_json(g, v))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`.
pub fn api_group(group: &str) -> Option<Value> {
    served_groups()
        .into_iter()
        .find(|(g, _)| *g == group && !g.is_empty())
        .map(|(g, v)| {
            let mut doc = group_json(g, v);
            doc["kind"] = "APIGroup".into();
            doc["apiVersion"] = "v1".into();
            doc
        })
}

fn legacy_resources(r: &Resource) -> Vec<Value> {
    let mut out = vec![json!({
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": r.verbs(),
        "shortNames": r.short_names,
        "categories": r.categories,
        "storageVersionHash": storage_hash(r),
    })];
    if r.status {
        out.push(json!({"name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]}));
    }
    if r.scale {
        out.push(json!({"name": format!("{}/scale", r.plural), "singularName": "", "namespaced": r.namespaced, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
    }
    if r.kind == "Node" && r.group.is_empty() {
        out.push(json!({"name": "nodes/proxy", "singularName": "", "namespaced": false, "kind": "NodeProxyOptions", "verbs": ["get"]}));
    }
    if is_core_service_account(r) {
        out.push(json!({"name": "serviceaccounts/token", "singularName": "", "namespaced": true, "group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest", "verbs": ["create"]}));
    }
    if r.kind == "Namespace" {
        out.push(json!({"name": "namespaces/finalize", "singularName": "", "namespaced": false, "kind": "Namespace", "verbs": ["update"]}));
    }
    if is_core_pod(r) {
        out.push(json!({"name": "pods/binding", "singularName": "", "namespaced": true, "kind": "Binding", "verbs": ["create"]}));
        out.push(json!({"name": "pods/eviction", "singularName": "", "namespaced": true, "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]}));
        out.push(json!({"name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]}));
        out.push(json!({"name": "pods/attach", "singularName": "", "namespaced": true, "kind": "PodAttachOptions", "verbs": ["create", "get"]}));
        out.push(json!({"name": "pods/exec", "singularName": "", "namespaced": true, "kind": "PodExecOptions", "verbs": ["create", "get"]}));
        out.push(json!({"name": "pods/portforward", "singularName": "", "namespaced": true, "kind": "PodPortForwardOptions", "verbs": ["create", "get"]}));
    }
    out
}

/// Pods carry the `binding` and `eviction` subresources (both create-only). kubectl drain
/// looks for `pods/eviction` in discovery and deletes pods outright when it is missing.
fn is_core_pod(r: &Resource) -> bool {
    r.group.is_empty() && r.kind == "Pod"
}

/// ServiceAccounts carry `token`, the TokenRequest API (`kubectl create token`).
fn is_core_service_account(r: &Resource) -> bool {
    r.group.is_empty() && r.kind == "ServiceAccount"
}

/// A stable hash of the resource's storage identity, as discovery carries it.
fn storage_hash(r: &Resource) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{}/{}/{}", r.group, r.version, r.kind));
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &digest[..8])
}

/// `/api/v1` or `/apis/<group>/<version>`: the resources of one group version.
pub fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .flat_map(legacy_resources)
        .chain(
            REVIEWS
                .iter()
                .filter(|r| r.group == group && r.version == version)
                .map(review_legacy),
        )
        .collect();
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

fn aggregated_resource(r: &Resource) -> Value {
    let mut subresources = Vec::new();
    if r.status {
        subresources.push(json!({"subresource": "status", "responseKind": {"group": r.group, "version": r.version, "kind": r.kind}, "verbs": ["get", "patch", "update"]}));
    }
    if r.scale {
        subresources.push(json!({"subresource": "scale", "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"}, "verbs": ["get", "patch", "update"]}));
    }
    if r.kind == "Node" && r.group.is_empty() {
        subresources.push(json!({"subresource": "proxy", "responseKind": {"group": "", "version": "v1", "kind": "NodeProxyOptions"}, "verbs": ["get"]}));
    }
    if is_core_service_account(r) {
        subresources.push(json!({"subresource": "token", "responseKind": {"group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest"}, "verbs": ["create"]}));
    }
    if r.kind == "Namespace" {
        subresources.push(json!({"subresource": "finalize", "responseKind": {"group": "", "version": "v1", "kind": "Namespace"}, "verbs": ["update"]}));
    }
    if is_core_pod(r) {
        subresources.push(json!({"subresource": "binding", "responseKind": {"group": "", "version": "v1", "kind": "Binding"}, "verbs": ["create"]}));
        subresources.push(json!({"subresource": "eviction", "responseKind": {"group": "policy", "version": "v1", "kind": "Eviction"}, "verbs": ["create"]}));
        subresources.push(json!({"subresource": "log", "responseKind": {"group": "", "version": "v1", "kind": "Pod"}, "verbs": ["get"]}));
        subresources.push(json!({"subresource": "attach", "responseKind": {"group": "", "version": "v1", "kind": "PodAttachOptions"}, "verbs": ["create", "get"]}));
        subresources.push(json!({"subresource": "exec", "responseKind": {"group": "", "version": "v1", "kind": "PodExecOptions"}, "verbs": ["create", "get"]}));
        subresources.push(json!({"subresource": "portforward", "responseKind": {"group": "", "version": "v1", "kind": "PodPortForwardOptions"}, "verbs": ["create", "get"]}));
    }
    let mut doc = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs(),
    });
    if !r.short_names.is_empty() {
        doc["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        doc["categories"] = json!(r.categories);
    }
    if !subresources.is_empty() {
        doc["subresources"] = Value::Array(subresources);
    }
    doc
}

/// Aggregated discovery: `/api` (`core = true`) or `/apis`.
pub fn aggregated(core: bool, content_type: &str) -> Value {
    let api_version = if content_type == AGGREGATED_V2BETA1 {
        "apidiscovery.k8s.io/v2beta1"
    } else {
        "apidiscovery.k8s.io/v2"
    };
    let items: Vec<Value> = served_groups()
        .into_iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(g, v)| {
            let resources: Vec<Value> = RESOURCES
                .iter()
                .filter(|r| r.group == g && r.version == v)
                .map(aggregated_resource)
                .chain(
                    REVIEWS
                        .iter()
                        .filter(|r| r.group == g && r.version == v)
                        .map(review_aggregated),
                )
                .collect();
            let mut metadata = json!({"creationTimestamp": null});
            if !g.is_empty() {
                metadata["name"] = g.into();
            }
            json!({
                "metadata": metadata,
                "versions": [{"version": v, "resources": resources, "freshness": "Current"}],
            })
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": api_version, "metadata": {}, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_covers_the_table() {
        let core = api_resource_list("", "v1").unwrap();
        let names: Vec<&str> = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert!(
            names.contains(&"pods")
                && names.contains(&"pods/status")
                && names.contains(&"namespaces/finalize")
                && names.contains(&"pods/eviction")
                && names.contains(&"pods/binding")
        );
        let apps = api_resource_list("apps", "v1").unwrap();
        assert!(apps["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "deployments/scale"));
        let agg = aggregated(false, AGGREGATED_V2);
        assert!(agg["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["metadata"]["name"] == "apps"));
        assert_eq!(aggregated_version("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"), Some(AGGREGATED_V2));
        assert_eq!(aggregated_version("application/json"), None);
    }
}
