//! What the API server knows of each kind: one [`Resource`] per served resource, and per
//! kind the rules that upstream keeps in its registry strategies.
//!
//! [`RESOURCES`] is the single table that discovery, OpenAPI, routing and storage read.
//! The modules below it add, per kind: [`defaults`], [`validation`], [`printers`] (the
//! `kubectl get` columns) and [`schema`] (OpenAPI schemas and patch metadata).

pub mod defaults;
pub mod printers;
pub mod schema;
pub mod validation;

mod table;

pub use table::RESOURCES;

use serde_json::Value;

/// The shape of a typed round trip: decode into the k8s-openapi type and encode again.
/// This applies upstream's types (unknown fields dropped, wrong types refused).
pub type RoundTrip = fn(Value) -> Result<Value, serde_json::Error>;

/// One served resource.
#[derive(Debug)]
pub struct Resource {
    /// The API group, "" for core.
    pub group: &'static str,
    /// The served version.
    pub version: &'static str,
    /// The kind, e.g. `Deployment`.
    pub kind: &'static str,
    /// The resource name in URLs, e.g. `deployments`.
    pub plural: &'static str,
    /// The singular name, e.g. `deployment`.
    pub singular: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Short names, e.g. `deploy`.
    pub short_names: &'static [&'static str],
    /// Categories, e.g. `all`.
    pub categories: &'static [&'static str],
    /// Whether the kind has a `status` subresource (spec and status written separately).
    pub status: bool,
    /// Whether the kind has a `scale` subresource.
    pub scale: bool,
    /// The OpenAPI definition name of the kind, e.g. `io.k8s.api.apps.v1.Deployment`.
    pub schema: &'static str,
    /// Decodes and re-encodes through the k8s-openapi type.
    pub round_trip: RoundTrip,
}

impl Resource {
    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The kind qualified by its group as upstream names it in messages, e.g.
    /// `deployments.apps` or `configmaps`.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The kind qualified by its group as upstream prints it in validation errors, e.g.
    /// `Deployment.apps`.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// The datastore prefix of this resource, optionally narrowed to a namespace. Always
    /// ends with `/`, so one resource's prefix never matches another's keys.
    pub fn prefix(&self, namespace: Option<&str>) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            self.group
        };
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{group}/{}/{ns}/", self.plural),
            _ => format!("/registry/{group}/{}/", self.plural),
        }
    }

    /// The datastore key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.prefix(namespace))
    }

    /// Whether a completed delete answers with the deleted object (upstream's
    /// `ReturnDeletedObject`) rather than a success `Status`.
    pub fn returns_deleted_object(&self) -> bool {
        matches!(
            (self.group, self.kind),
            ("", "Pod")
                | ("", "Service")
                | ("", "ServiceAccount")
                | ("", "Namespace")
                | ("", "PersistentVolume")
                | ("", "PersistentVolumeClaim")
                | ("storage.k8s.io", "StorageClass")
                | ("scheduling.k8s.io", "PriorityClass")
        )
    }

    /// The verbs upstream discovery lists for the resource.
    pub fn verbs(&self) -> &'static [&'static str] {
        &[
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }
}

/// Finds a resource by group, version and plural name.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Finds a resource by group and kind.
pub fn find_kind(group: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.kind == kind)
}

/// The groups served, in discovery order (core first), each with its one version.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in RESOURCES {
        if !out.iter().any(|(g, v)| *g == r.group && *v == r.version) {
            out.push((r.group, r.version));
        }
    }
    out
}
