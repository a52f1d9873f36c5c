//! The table of served resources.

use super::Resource;
use k8s_openapi::api;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

fn rt<T: DeserializeOwned + Serialize>(v: Value) -> Result<Value, serde_json::Error> {
    let typed: T = serde_json::from_value(v)?;
    serde_json::to_value(typed)
}

macro_rules! resource {
    ($group:literal, $version:literal, $kind:literal, $plural:literal, $singular:literal,
     namespaced: $ns:literal, short: [$($short:literal),*], categories: [$($cat:literal),*],
     status: $status:literal, scale: $scale:literal, schema: $schema:literal, ty: $ty:ty) => {
        Resource {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $ns,
            short_names: &[$($short),*],
            categories: &[$($cat),*],
            status: $status,
            scale: $scale,
            schema: $schema,
            round_trip: rt::<$ty>,
        }
    };
}

/// Every built-in resource skiff serves, core first, in upstream's discovery order.
pub static RESOURCES: &[Resource] = &[
    resource!("", "v1", "Namespace", "namespaces", "namespace", namespaced: false, short: ["ns"], categories: [],
        status: true, scale: false, schema: "io.k8s.api.core.v1.Namespace", ty: api::core::v1::Namespace),
    resource!("", "v1", "Pod", "pods", "pod", namespaced: true, short: ["po"], categories: ["all"],
        status: true, scale: false, schema: "io.k8s.api.core.v1.Pod", ty: api::core::v1::Pod),
    resource!("", "v1", "Service", "services", "service", namespaced: true, short: ["svc"], categories: ["all"],
        status: true, scale: false, schema: "io.k8s.api.core.v1.Service", ty: api::core::v1::Service),
    resource!("", "v1", "Endpoints", "endpoints", "endpoints", namespaced: true, short: ["ep"], categories: [],
        status: false, scale: false, schema: "io.k8s.api.core.v1.Endpoints", ty: api::core::v1::Endpoints),
    resource!("", "v1", "ConfigMap", "configmaps", "configmap", namespaced: true, short: ["cm"], categories: [],
        status: false, scale: false, schema: "io.k8s.api.core.v1.ConfigMap", ty: api::core::v1::ConfigMap),
    resource!("", "v1", "Secret", "secrets", "secret", namespaced: true, short: [], categories: [],
        status: false, scale: false, schema: "io.k8s.api.core.v1.Secret", ty: api::core::v1::Secret),
    resource!("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", namespaced: true, short: ["sa"], categories: [],
        status: false, scale: false, schema: "io.k8s.api.core.v1.ServiceAccount", ty: api::core::v1::ServiceAccount),
    resource!("", "v1", "Node", "nodes", "node", namespaced: false, short: ["no"], categories: [],
        status: true, scale: false, schema: "io.k8s.api.core.v1.Node", ty: api::core::v1::Node),
    resource!("", "v1", "Event", "events", "event", namespaced: true, short: ["ev"], categories: [],
        status: false, scale: false, schema: "io.k8s.api.core.v1.Event", ty: api::core::v1::Event),
    resource!("", "v1", "PersistentVolume", "persistentvolumes", "persistentvolume", namespaced: false, short: ["pv"], categories: [],
        status: true, scale: false, schema: "io.k8s.api.core.v1.PersistentVolume", ty: api::core::v1::PersistentVolume),
    resource!("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", "persistentvolumeclaim", namespaced: true, short: ["pvc"], categories: [],
        status: true, scale: false, schema: "io.k8s.api.core.v1.PersistentVolumeClaim", ty: api::core::v1::PersistentVolumeClaim),
    resource!("", "v1", "LimitRange", "limitranges", "limitrange", namespaced: true, short: ["limits"], categories: [],
        status: false, scale: false, schema: "io.k8s.api.core.v1.LimitRange", ty: api::core::v1::LimitRange),
    resource!("", "v1", "ResourceQuota", "resourcequotas", "resourcequota", namespaced: true, short: ["quota"], categories: [],
        status: true, scale: false, schema: "io.k8s.api.core.v1.ResourceQuota", ty: api::core::v1::ResourceQuota),
    resource!("apps", "v1", "Deployment", "deployments", "deployment", namespaced: true, short: ["deploy"], categories: ["all"],
        status: true, scale: true, schema: "io.k8s.api.apps.v1.Deployment", ty: api::apps::v1::Deployment),
    resource!("apps", "v1", "ReplicaSet", "replicasets", "replicaset", namespaced: true, short: ["rs"], categories: ["all"],
        status: true, scale: true, schema: "io.k8s.api.apps.v1.ReplicaSet", ty: api::apps::v1::ReplicaSet),
    resource!("apps", "v1", "DaemonSet", "daemonsets", "daemonset", namespaced: true, short: ["ds"], categories: ["all"],
        status: true, scale: false, schema: "io.k8s.api.apps.v1.DaemonSet", ty: api::apps::v1::DaemonSet),
    resource!("apps", "v1", "StatefulSet", "statefulsets", "statefulset", namespaced: true, short: ["sts"], categories: ["all"],
        status: true, scale: true, schema: "io.k8s.api.apps.v1.StatefulSet", ty: api::apps::v1::StatefulSet),
    resource!("apps", "v1", "ControllerRevision", "controllerrevisions", "controllerrevision", namespaced: true, short: [], categories: [],
        status: false, scale: false, schema: "io.k8s.api.apps.v1.ControllerRevision", ty: api::apps::v1::ControllerRevision),
    resource!("batch", "v1", "Job", "jobs", "job", namespaced: true, short: [], categories: ["all"],
        status: true, scale: false, schema: "io.k8s.api.batch.v1.Job", ty: api::batch::v1::Job),
    resource!("batch", "v1", "CronJob", "cronjobs", "cronjob", namespaced: true, short: ["cj"], categories: ["all"],
        status: true, scale: false, schema: "io.k8s.api.batch.v1.CronJob", ty: api::batch::v1::CronJob),
    resource!("coordination.k8s.io", "v1", "Lease", "leases", "lease", namespaced: true, short: [], categories: [],
        status: false, scale: false, schema: "io.k8s.api.coordination.v1.Lease", ty: api::coordination::v1::Lease),
    resource!("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice", namespaced: true, short: [], categories: [],
        status: false, scale: false, schema: "io.k8s.api.discovery.v1.EndpointSlice", ty: api::discovery::v1::EndpointSlice),
    resource!("events.k8s.io", "v1", "Event", "events", "event", namespaced: true, short: ["ev"], categories: [],
        status: false, scale: false, schema: "io.k8s.api.events.v1.Event", ty: api::events::v1::Event),
    resource!("networking.k8s.io", "v1", "Ingress", "ingresses", "ingress", namespaced: true, short: ["ing"], categories: [],
        status: true, scale: false, schema: "io.k8s.api.networking.v1.Ingress", ty: api::networking::v1::Ingress),
    resource!("networking.k8s.io", "v1", "IngressClass", "ingressclasses", "ingressclass", namespaced: false, short: [], categories: [],
        status: false, scale: false, schema: "io.k8s.api.networking.v1.IngressClass", ty: api::networking::v1::IngressClass),
    resource!("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", "networkpolicy", namespaced: true, short: ["netpol"], categories: [],
        status: false, scale: false, schema: "io.k8s.api.networking.v1.NetworkPolicy", ty: api::networking::v1::NetworkPolicy),
    resource!("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", "clusterrole", namespaced: false, short: [], categories: [],
        status: false, scale: false, schema: "io.k8s.api.rbac.v1.ClusterRole", ty: api::rbac::v1::ClusterRole),
    resource!("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", "clusterrolebinding", namespaced: false, short: [], categories: [],
        status: false, scale: false, schema: "io.k8s.api.rbac.v1.ClusterRoleBinding", ty: api::rbac::v1::ClusterRoleBinding),
    resource!("rbac.authorization.k8s.io", "v1", "Role", "roles", "role", namespaced: true, short: [], categories: [],
        status: false, scale: false, schema: "io.k8s.api.rbac.v1.Role", ty: api::rbac::v1::Role),
    resource!("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", "rolebinding", namespaced: true, short: [], categories: [],
        status: false, scale: false, schema: "io.k8s.api.rbac.v1.RoleBinding", ty: api::rbac::v1::RoleBinding),
    resource!("storage.k8s.io", "v1", "StorageClass", "storageclasses", "storageclass", namespaced: false, short: ["sc"], categories: [],
        status: false, scale: false, schema: "io.k8s.api.storage.v1.StorageClass", ty: api::storage::v1::StorageClass),
    resource!("node.k8s.io", "v1", "RuntimeClass", "runtimeclasses", "runtimeclass", namespaced: false, short: [], categories: [],
        status: false, scale: false, schema: "io.k8s.api.node.v1.RuntimeClass", ty: api::node::v1::RuntimeClass),
    resource!("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", "poddisruptionbudget", namespaced: true, short: ["pdb"], categories: [],
        status: true, scale: false, schema: "io.k8s.api.policy.v1.PodDisruptionBudget", ty: api::policy::v1::PodDisruptionBudget),
    resource!("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", "horizontalpodautoscaler", namespaced: true, short: ["hpa"], categories: ["all"],
        status: true, scale: false, schema: "io.k8s.api.autoscaling.v2.HorizontalPodAutoscaler", ty: api::autoscaling::v2::HorizontalPodAutoscaler),
    resource!("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", "priorityclass", namespaced: false, short: ["pc"], categories: [],
        status: false, scale: false, schema: "io.k8s.api.scheduling.v1.PriorityClass", ty: api::scheduling::v1::PriorityClass),
    resource!("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", "customresourcedefinition", namespaced: false, short: ["crd", "crds"], categories: ["api-extensions"],
        status: true, scale: false, schema: "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition",
        ty: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition),
];
