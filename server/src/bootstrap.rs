//! The objects every cluster has: the default namespaces, the built-in PriorityClasses
//! and the `kubernetes` Service with its Endpoints and EndpointSlice pointing at this
//! server.

use crate::api::handlers::{self, WriteOptions};
use crate::api::request::Target;
use crate::api::status::ApiError;
use crate::api::Api;
use crate::registry;
use crate::store::{self, WriteOp};
use serde_json::{json, Value};
use std::net::IpAddr;

/// The namespaces that always exist.
pub const DEFAULT_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

async fn create_if_missing(
    api: &Api,
    group: &str,
    kind: &str,
    namespace: Option<&str>,
    obj: Value,
) -> Result<(), ApiError> {
    let resource = registry::find_kind(group, kind)
        .ok_or_else(|| ApiError::internal(format!("no resource for {kind}")))?;
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if api.store.get(&resource.key(namespace, &name)).is_some() {
        return Ok(());
    }
    let target = Target {
        resource,
        namespace: namespace.map(String::from),
        name: None,
        subresource: None,
    };
    let mut prepared = handlers::prepare_create(api, &target, obj, &WriteOptions::default())?.obj;
    if kind == "Service" {
        api.allocator.allocate(&api.store, &mut prepared)?;
    }
    match api
        .store
        .write(WriteOp::Create {
            key: resource.key(namespace, &name),
            value: prepared,
        })
        .await
    {
        Ok(_) | Err(store::Error::AlreadyExists) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Creates `wanted` if it is missing; else updates the stored object to what
/// `reconcile(stored, wanted)` gives, if it gives anything (nothing: leave it).
async fn create_or_reconcile(
    api: &Api,
    group: &str,
    kind: &str,
    namespace: Option<&str>,
    wanted: Value,
    reconcile: impl Fn(&Value, &Value) -> Option<Value>,
) -> Result<bool, ApiError> {
    let resource = registry::find_kind(group, kind)
        .ok_or_else(|| ApiError::internal(format!("no resource for {kind}")))?;
    let name = wanted
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let Some(stored) = api.store.get(&resource.key(namespace, &name)) else {
        create_if_missing(api, group, kind, namespace, wanted).await?;
        return Ok(false);
    };
    let stored: Value = serde_json::from_slice(&stored.value)
        .map_err(|e| ApiError::internal(format!("stored {kind} {name}: {e}")))?;
    if reconcile(&stored, &wanted).is_none() {
        return Ok(false);
    }
    let target = Target {
        resource,
        namespace: namespace.map(String::from),
        name: Some(name),
        subresource: None,
    };
    handlers::guaranteed_update(
        api,
        &target,
        handlers::Part::Main,
        &WriteOptions::default(),
        |old| Ok(reconcile(old, &wanted).unwrap_or_else(|| old.clone())),
    )
    .await?;
    Ok(true)
}

/// Creates `wanted` in the default namespace, or sets its `fields` on the stored object
/// where they differ; other fields, such as labels added by users, are left alone.
async fn keep_current(
    api: &Api,
    group: &str,
    kind: &str,
    wanted: Value,
    fields: &[&str],
) -> Result<(), ApiError> {
    let set_fields = |old: &Value, wanted: &Value| {
        let mut new = old.clone();
        for f in fields {
            new[*f] = wanted[*f].clone();
        }
        (new != *old).then_some(new)
    };
    if create_or_reconcile(api, group, kind, Some("default"), wanted, set_fields).await? {
        tracing::info!(%kind, name = "kubernetes", "the API's address changed: updated");
    }
    Ok(())
}

/// Creates whatever default object is missing. Existing ones are left as they are, but
/// for the `kubernetes` Endpoints and EndpointSlice, which follow `advertised`.
pub async fn ensure_defaults(api: &Api, advertised: IpAddr, port: u16) -> Result<(), ApiError> {
    for ns in DEFAULT_NAMESPACES {
        create_if_missing(
            api,
            "",
            "Namespace",
            None,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await?;
    }
    for class in crate::api::admission::system_priority_classes() {
        create_if_missing(api, "scheduling.k8s.io", "PriorityClass", None, class).await?;
    }
    let first_ip = api.allocator.first_ip().to_string();
    create_if_missing(
        api,
        "",
        "Service",
        Some("default"),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {
                "type": "ClusterIP",
                "clusterIP": first_ip,
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}],
            },
        }),
    )
    .await?;
    // The cluster DNS address, held by a Service as upstream's DNS add-on holds it (so it
    // is never given to another Service); every node answers it itself.
    create_if_missing(
        api,
        "",
        "Service",
        Some("kube-system"),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS", "kubernetes.io/cluster-service": "true"}},
            "spec": {
                "type": "ClusterIP",
                "clusterIP": api.network.cluster_dns,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                ],
            },
        }),
    )
    .await?;
    let address = advertised.to_string();
    // The API's address can change between starts (a new --advertise-address, a node
    // that got another address), so these two are made current each time.
    keep_current(
        api,
        "",
        "Endpoints",
        json!({
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": address}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
        }),
        &["subsets"],
    )
    .await?;
    keep_current(
        api,
        "discovery.k8s.io",
        "EndpointSlice",
        json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubernetes", "endpointslice.kubernetes.io/managed-by": "skiff"}},
            "addressType": if advertised.is_ipv4() { "IPv4" } else { "IPv6" },
            "endpoints": [{"addresses": [address], "conditions": {"ready": true}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        }),
        &["addressType", "endpoints", "ports"],
    )
    .await?;
    ensure_policy(api).await
}

/// Creates the default ClusterRoles and ClusterRoleBindings that are missing and
/// reconciles those annotated for autoupdate ([`crate::auth::policy::reconcile`]).
pub async fn ensure_policy(api: &Api) -> Result<(), ApiError> {
    use crate::auth::policy;
    let kinds = [
        ("ClusterRole", policy::cluster_roles()),
        ("ClusterRoleBinding", policy::cluster_role_bindings()),
    ];
    for (kind, objects) in kinds {
        for wanted in objects {
            let name = wanted
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let reconcile = |old: &Value, wanted: &Value| policy::reconcile(old, wanted);
            let group = crate::auth::rbac::GROUP;
            if create_or_reconcile(api, group, kind, None, wanted, reconcile).await? {
                tracing::info!(%kind, %name, "reconciled a default RBAC object");
            }
        }
    }
    Ok(())
}
