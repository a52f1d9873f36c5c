//! OpenAPI schemas of the built-in kinds, and the patch metadata derived from them.
//!
//! Two consumers want two shapes, so there are two products:
//!
//! - [`definitions`] is the OpenAPI v2 `definitions` map served to clients. kubectl reads the
//!   patch extensions in it to compute strategic merge patches, so they must match upstream's
//!   published spec. The map is large; it is built on first use and kept.
//! - [`field_meta`] answers the patcher's questions from a compact type graph. The graph is
//!   built per root kind on first use, from a throwaway schema generation, so an idle server
//!   holds neither the graph nor the schemas.
//!
//! k8s-openapi's `schemars` impls carry no patch metadata, so [`PATCH_METADATA`] restates
//! upstream's `patchStrategy`/`patchMergeKey` struct tags as data.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, OnceLock, PoisonError, RwLock};

use k8s_openapi::api::{
    apps, autoscaling, batch, coordination, core, discovery, events, networking, node, policy,
    rbac, scheduling, storage,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::{ListableResource, Resource};
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};

/// How a strategic merge patch combines a field's old and new value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchStrategy {
    /// Lists are merged: by merge key for lists of objects, as a set for lists of scalars.
    Merge,
    /// The object honours the `$retainKeys` directive (union types such as a deployment strategy).
    RetainKeys,
    /// Both: list elements are merged by key, and each element honours `$retainKeys`.
    MergeRetainKeys,
    /// The value is replaced wholesale, never merged.
    Replace,
}

impl PatchStrategy {
    /// The value of `x-kubernetes-patch-strategy` for this strategy.
    pub fn as_str(self) -> &'static str {
        match self {
            PatchStrategy::Merge => "merge",
            PatchStrategy::RetainKeys => "retainKeys",
            PatchStrategy::MergeRetainKeys => "merge,retainKeys",
            PatchStrategy::Replace => "replace",
        }
    }

    /// Whether a list with this strategy is merged rather than replaced.
    pub fn merges_lists(self) -> bool {
        matches!(self, PatchStrategy::Merge | PatchStrategy::MergeRetainKeys)
    }
}

/// Upstream's patch metadata for the fields of the built-in kinds:
/// `(schema name, field, strategy, merge key)`.
///
/// Transcribed from the `patchStrategy`/`patchMergeKey` tags of the Go types in `k8s.io/api`
/// and `k8s.io/apimachinery`; every field tagged there that is reachable from
/// [`definitions`]' root types is listed. Fields not listed have no strategy: a strategic merge
/// patch replaces such lists and merges such objects key by key.
#[rustfmt::skip]
pub const PATCH_METADATA: &[(&str, &str, PatchStrategy, Option<&str>)] = &[
    // meta/v1
    (OBJECT_META, "finalizers", PatchStrategy::Merge, None),
    (OBJECT_META, "ownerReferences", PatchStrategy::Merge, Some("uid")),
    // core/v1: pods and their containers
    (CONTAINER, "env", PatchStrategy::Merge, Some("name")),
    (CONTAINER, "ports", PatchStrategy::Merge, Some("containerPort")),
    (CONTAINER, "volumeDevices", PatchStrategy::Merge, Some("devicePath")),
    (CONTAINER, "volumeMounts", PatchStrategy::Merge, Some("mountPath")),
    (EPHEMERAL_CONTAINER, "env", PatchStrategy::Merge, Some("name")),
    (EPHEMERAL_CONTAINER, "ports", PatchStrategy::Merge, Some("containerPort")),
    (EPHEMERAL_CONTAINER, "volumeDevices", PatchStrategy::Merge, Some("devicePath")),
    (EPHEMERAL_CONTAINER, "volumeMounts", PatchStrategy::Merge, Some("mountPath")),
    (CONTAINER_STATUS, "allocatedResourcesStatus", PatchStrategy::Merge, Some("name")),
    (CONTAINER_STATUS, "volumeMounts", PatchStrategy::Merge, Some("mountPath")),
    (POD_SPEC, "containers", PatchStrategy::Merge, Some("name")),
    (POD_SPEC, "ephemeralContainers", PatchStrategy::Merge, Some("name")),
    (POD_SPEC, "evictionResponders", PatchStrategy::Merge, Some("name")),
    (POD_SPEC, "hostAliases", PatchStrategy::Merge, Some("ip")),
    (POD_SPEC, "imagePullSecrets", PatchStrategy::Merge, Some("name")),
    (POD_SPEC, "initContainers", PatchStrategy::Merge, Some("name")),
    (POD_SPEC, "resourceClaims", PatchStrategy::MergeRetainKeys, Some("name")),
    (POD_SPEC, "schedulingGates", PatchStrategy::Merge, Some("name")),
    (POD_SPEC, "topologySpreadConstraints", PatchStrategy::Merge, Some("topologyKey")),
    (POD_SPEC, "volumes", PatchStrategy::MergeRetainKeys, Some("name")),
    (POD_STATUS, "conditions", PatchStrategy::Merge, Some("type")),
    (POD_STATUS, "hostIPs", PatchStrategy::Merge, Some("ip")),
    (POD_STATUS, "podIPs", PatchStrategy::Merge, Some("ip")),
    (POD_STATUS, "resourceClaimStatuses", PatchStrategy::MergeRetainKeys, Some("name")),
    // core/v1: everything else
    ("io.k8s.api.core.v1.NamespaceStatus", "conditions", PatchStrategy::Merge, Some("type")),
    ("io.k8s.api.core.v1.NodeSpec", "podCIDRs", PatchStrategy::Merge, None),
    ("io.k8s.api.core.v1.NodeStatus", "addresses", PatchStrategy::Merge, Some("type")),
    ("io.k8s.api.core.v1.NodeStatus", "conditions", PatchStrategy::Merge, Some("type")),
    ("io.k8s.api.core.v1.PersistentVolumeClaimStatus", "conditions", PatchStrategy::Merge, Some("type")),
    ("io.k8s.api.core.v1.ServiceAccount", "secrets", PatchStrategy::Merge, Some("name")),
    ("io.k8s.api.core.v1.ServiceSpec", "ports", PatchStrategy::Merge, Some("port")),
    ("io.k8s.api.core.v1.ServiceStatus", "conditions", PatchStrategy::Merge, Some("type")),
    // apps/v1
    ("io.k8s.api.apps.v1.DaemonSetStatus", "conditions", PatchStrategy::Merge, Some("type")),
    ("io.k8s.api.apps.v1.DeploymentSpec", "strategy", PatchStrategy::RetainKeys, None),
    ("io.k8s.api.apps.v1.DeploymentStatus", "conditions", PatchStrategy::Merge, Some("type")),
    ("io.k8s.api.apps.v1.ReplicaSetStatus", "conditions", PatchStrategy::Merge, Some("type")),
    ("io.k8s.api.apps.v1.StatefulSetStatus", "conditions", PatchStrategy::Merge, Some("type")),
    // batch/v1, policy/v1, autoscaling/v2
    ("io.k8s.api.batch.v1.JobStatus", "conditions", PatchStrategy::Merge, Some("type")),
    ("io.k8s.api.policy.v1.PodDisruptionBudgetStatus", "conditions", PatchStrategy::Merge, Some("type")),
    ("io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus", "conditions", PatchStrategy::Merge, Some("type")),
];

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const CONTAINER: &str = "io.k8s.api.core.v1.Container";
const EPHEMERAL_CONTAINER: &str = "io.k8s.api.core.v1.EphemeralContainer";
const CONTAINER_STATUS: &str = "io.k8s.api.core.v1.ContainerStatus";
const POD_SPEC: &str = "io.k8s.api.core.v1.PodSpec";
const POD_STATUS: &str = "io.k8s.api.core.v1.PodStatus";

const REF_PREFIX: &str = "#/definitions/";
const GVK_EXTENSION: &str = "x-kubernetes-group-version-kind";

/// What the patcher needs to know about one field of a schema type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FieldMeta {
    /// Schema name of the field's value when it refers to another definition; for lists and
    /// maps, of their elements.
    pub type_name: Option<&'static str>,
    /// The field is a list (`type: array`).
    pub is_list: bool,
    /// The field is a map with free-form keys (`additionalProperties`).
    pub is_map: bool,
    /// Upstream's patch strategy for the field, if it has one.
    pub strategy: Option<PatchStrategy>,
    /// Upstream's merge key for a list of objects merged by key.
    pub merge_key: Option<&'static str>,
}

/// Returns what is known about `field` of the schema type `type_name`.
///
/// Unknown types and fields, and plain scalars, answer `FieldMeta::default()`. The first
/// question about a kind builds that kind's part of the type graph; a question about any
/// other type not seen yet builds the rest of it.
pub fn field_meta(type_name: &str, field: &str) -> FieldMeta {
    let graph = &*GRAPH;
    {
        let read = graph.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(fields) = read.types.get(type_name) {
            return lookup(fields, field);
        }
        if read.complete {
            return FieldMeta::default();
        }
    }
    let mut write = graph.write().unwrap_or_else(PoisonError::into_inner);
    match roots().iter().find(|r| (r.schema_name)() == type_name) {
        Some(root) => write.load(root),
        None => {
            roots().iter().for_each(|root| write.load(root));
            write.complete = true;
        }
    }
    write
        .types
        .get(type_name)
        .map(|fields| lookup(fields, field))
        .unwrap_or_default()
}

/// Returns the OpenAPI v2 definitions of the built-in kinds, their lists, and the meta types
/// the API serves, keyed by schema name, with `$ref`s of the form `#/definitions/<name>`.
pub fn definitions() -> &'static Map<String, Value> {
    static DEFINITIONS: OnceLock<Map<String, Value>> = OnceLock::new();
    DEFINITIONS.get_or_init(build_definitions)
}

/// A root type of the schema: a kind, or a type the API serves outside of any kind's tree.
struct Root {
    schema_name: fn() -> Cow<'static, str>,
    generate: fn(&mut SchemaGenerator) -> Schema,
    /// Group, version and kind for `x-kubernetes-group-version-kind`.
    gvk: Option<(&'static str, &'static str, &'static str)>,
    list_kind: Option<&'static str>,
}

const fn kind<K: Resource + ListableResource + JsonSchema>() -> Root {
    Root {
        schema_name: K::schema_name,
        generate: SchemaGenerator::subschema_for::<K>,
        gvk: Some((K::GROUP, K::VERSION, K::KIND)),
        list_kind: Some(K::LIST_KIND),
    }
}

const fn subresource<K: Resource + JsonSchema>() -> Root {
    Root {
        schema_name: K::schema_name,
        generate: SchemaGenerator::subschema_for::<K>,
        gvk: Some((K::GROUP, K::VERSION, K::KIND)),
        list_kind: None,
    }
}

const fn plain<T: JsonSchema>() -> Root {
    Root {
        schema_name: T::schema_name,
        generate: SchemaGenerator::subschema_for::<T>,
        gvk: None,
        list_kind: None,
    }
}

fn roots() -> &'static [Root] {
    const ROOTS: &[Root] = &[
        kind::<core::v1::Namespace>(),
        kind::<core::v1::Pod>(),
        kind::<core::v1::Service>(),
        kind::<core::v1::Endpoints>(),
        kind::<core::v1::ConfigMap>(),
        kind::<core::v1::Secret>(),
        kind::<core::v1::ServiceAccount>(),
        kind::<core::v1::Node>(),
        kind::<core::v1::Event>(),
        kind::<core::v1::PersistentVolume>(),
        kind::<core::v1::PersistentVolumeClaim>(),
        kind::<core::v1::LimitRange>(),
        kind::<core::v1::ResourceQuota>(),
        kind::<apps::v1::Deployment>(),
        kind::<apps::v1::ReplicaSet>(),
        kind::<apps::v1::DaemonSet>(),
        kind::<apps::v1::StatefulSet>(),
        kind::<apps::v1::ControllerRevision>(),
        kind::<batch::v1::Job>(),
        kind::<batch::v1::CronJob>(),
        kind::<coordination::v1::Lease>(),
        kind::<discovery::v1::EndpointSlice>(),
        kind::<events::v1::Event>(),
        kind::<networking::v1::Ingress>(),
        kind::<networking::v1::IngressClass>(),
        kind::<networking::v1::NetworkPolicy>(),
        kind::<rbac::v1::Role>(),
        kind::<rbac::v1::ClusterRole>(),
        kind::<rbac::v1::RoleBinding>(),
        kind::<rbac::v1::ClusterRoleBinding>(),
        kind::<storage::v1::StorageClass>(),
        kind::<node::v1::RuntimeClass>(),
        kind::<policy::v1::PodDisruptionBudget>(),
        kind::<autoscaling::v2::HorizontalPodAutoscaler>(),
        kind::<scheduling::v1::PriorityClass>(),
        kind::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>(),
        subresource::<autoscaling::v1::Scale>(),
        plain::<meta::ListMeta>(),
        plain::<meta::Status>(),
        plain::<meta::DeleteOptions>(),
        plain::<meta::WatchEvent<k8s_openapi::apimachinery::pkg::runtime::RawExtension>>(),
        plain::<meta::APIResourceList>(),
        plain::<meta::APIGroupList>(),
        plain::<meta::APIGroup>(),
        plain::<meta::APIVersions>(),
        plain::<meta::Patch>(),
    ];
    ROOTS
}

/// Draft-07 layout puts definitions under `#/definitions`, which is where OpenAPI v2 wants
/// them; its transforms are dropped because they rewrite `$ref` siblings (the descriptions
/// k8s-openapi attaches) into `allOf`, which upstream's v2 spec does not do.
fn generator() -> SchemaGenerator {
    SchemaSettings::draft07()
        .with(|settings| {
            settings.meta_schema = None;
            settings.transforms.clear();
        })
        .into_generator()
}

/// k8s-openapi marks a kind's `metadata` and `spec` required where upstream's Go types
/// have them `omitempty`; upstream's OpenAPI requires neither (core Event's metadata
/// aside), and `kubectl explain` shows the difference, so drop them.
fn relax_required(defs: &mut Map<String, Value>, name: &str) {
    let keep_metadata = name == "io.k8s.api.core.v1.Event";
    let Some(schema) = defs.get_mut(name).and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(Value::Array(required)) = schema.get_mut("required") {
        required.retain(|f| f != "spec" && (keep_metadata || f != "metadata"));
        if required.is_empty() {
            schema.remove("required");
        }
    }
}

fn build_definitions() -> Map<String, Value> {
    let mut generator = generator();
    for root in roots() {
        (root.generate)(&mut generator);
    }
    let mut defs = generator.take_definitions(false);

    let mut group_versions: Vec<(&str, &str)> = Vec::new();
    for root in roots() {
        let Some((group, version, kind)) = root.gvk else {
            continue;
        };
        if !group_versions.contains(&(group, version)) {
            group_versions.push((group, version));
        }
        let name = (root.schema_name)();
        set_gvk(&mut defs, &name, &[(group, version, kind)]);
        relax_required(&mut defs, &name);
        if let Some(list_kind) = root.list_kind {
            let list_name = list_schema_name(&name, list_kind);
            let list = list_schema(&defs, &name, kind, list_kind, (group, version));
            defs.insert(list_name, list);
        }
    }
    // Upstream tags these with every group version that serves them, as options bodies and
    // watch frames of each group; skiff serves the group versions of its kinds.
    let status = meta::Status::schema_name();
    set_gvk(&mut defs, &status, &[("", "v1", "Status")]);
    for (type_name, kind) in [
        (meta::DeleteOptions::schema_name(), "DeleteOptions"),
        (meta::WatchEvent::<()>::schema_name(), "WatchEvent"),
    ] {
        let gvks: Vec<_> = group_versions.iter().map(|&(g, v)| (g, v, kind)).collect();
        set_gvk(&mut defs, &type_name, &gvks);
    }

    for &(type_name, field, strategy, merge_key) in PATCH_METADATA {
        let Some(property) = defs
            .get_mut(type_name)
            .and_then(|schema| schema.get_mut("properties"))
            .and_then(|properties| properties.get_mut(field))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        property.insert(
            "x-kubernetes-patch-strategy".into(),
            strategy.as_str().into(),
        );
        if let Some(key) = merge_key {
            property.insert("x-kubernetes-patch-merge-key".into(), key.into());
        }
    }

    defs.sort_keys();
    defs
}

fn set_gvk(defs: &mut Map<String, Value>, type_name: &str, gvks: &[(&str, &str, &str)]) {
    let Some(schema) = defs.get_mut(type_name).and_then(Value::as_object_mut) else {
        return;
    };
    let list = gvks
        .iter()
        .map(|&(group, version, kind)| json!({"group": group, "kind": kind, "version": version}))
        .collect();
    schema.insert(GVK_EXTENSION.into(), Value::Array(list));
}

/// `io.k8s.api.apps.v1.Deployment` + `DeploymentList` → `io.k8s.api.apps.v1.DeploymentList`.
fn list_schema_name(item_name: &str, list_kind: &str) -> String {
    let package = item_name.rfind('.').map_or("", |dot| &item_name[..=dot]);
    format!("{package}{list_kind}")
}

/// k8s-openapi models lists generically (`List<T>`) without a schema, so the `*List`
/// definitions upstream publishes are assembled here.
fn list_schema(
    defs: &Map<String, Value>,
    item_name: &str,
    kind: &str,
    list_kind: &str,
    (group, version): (&str, &str),
) -> Value {
    let item_property = |name: &str| {
        defs.get(item_name)
            .and_then(|schema| schema.pointer(&format!("/properties/{name}")))
            .cloned()
            .unwrap_or_else(|| json!({"type": "string"}))
    };
    json!({
        "description": format!("{list_kind} is a list of {kind} objects."),
        "type": "object",
        "properties": {
            "apiVersion": item_property("apiVersion"),
            "items": {
                "description": format!("The {kind} objects in the list."),
                "type": "array",
                "items": {"$ref": format!("{REF_PREFIX}{item_name}")},
            },
            "kind": item_property("kind"),
            "metadata": {
                "$ref": format!("{REF_PREFIX}{}", meta::ListMeta::schema_name()),
                "description": "List metadata: resource version and continue token.",
            },
        },
        "required": ["items"],
        GVK_EXTENSION: [{"group": group, "kind": list_kind, "version": version}],
    })
}

/// The patcher's type graph: for each schema type, its non-scalar or patch-tagged fields,
/// sorted by name. Scalar fields without metadata are left out; asking about them answers
/// the default.
struct Graph {
    /// Roots whose type trees have been added.
    loaded: HashSet<&'static str>,
    /// Every root has been added.
    complete: bool,
    types: HashMap<&'static str, Fields>,
    /// Interned type names. Schema names come from a fixed, finite set (the k8s-openapi
    /// types reachable from the roots), so each is leaked once: a few KiB at most, in exchange
    /// for a `Copy` [`FieldMeta`] the patcher can pass down freely.
    names: HashSet<&'static str>,
}

/// The fields of one schema type that the patcher cares about, sorted by name.
type Fields = Box<[(Box<str>, FieldMeta)]>;

static GRAPH: LazyLock<RwLock<Graph>> = LazyLock::new(|| {
    RwLock::new(Graph {
        loaded: HashSet::new(),
        complete: false,
        types: HashMap::new(),
        names: HashSet::new(),
    })
});

impl Graph {
    fn intern(&mut self, name: &str) -> &'static str {
        if let Some(interned) = self.names.get(name) {
            return interned;
        }
        let leaked: &'static str = Box::leak(Box::from(name));
        self.names.insert(leaked);
        leaked
    }

    fn load(&mut self, root: &Root) {
        let root_name = (root.schema_name)();
        if self.loaded.contains(root_name.as_ref()) {
            return;
        }
        let mut generator = generator();
        (root.generate)(&mut generator);
        for (name, schema) in generator.take_definitions(false) {
            if self.types.contains_key(name.as_str()) {
                continue;
            }
            let type_name = self.intern(&name);
            let fields = self.compact(type_name, &schema);
            self.types.insert(type_name, fields);
        }
        let root_name = self.intern(&root_name);
        self.loaded.insert(root_name);
    }

    fn compact(&mut self, type_name: &str, schema: &Value) -> Fields {
        let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
            return Box::default();
        };
        let mut fields: Vec<(Box<str>, FieldMeta)> = Vec::new();
        for (field, property) in properties {
            let mut meta = FieldMeta::default();
            let target = if let Some(items) = property.get("items") {
                meta.is_list = true;
                items
            } else if let Some(values) = property
                .get("additionalProperties")
                .filter(|v| v.is_object())
            {
                meta.is_map = true;
                values
            } else {
                property
            };
            meta.type_name = ref_name(target).map(|name| self.intern(name));
            if let Some(&(_, _, strategy, merge_key)) = PATCH_METADATA
                .iter()
                .find(|&&(t, f, _, _)| t == type_name && f == field)
            {
                meta.strategy = Some(strategy);
                meta.merge_key = merge_key;
            }
            if meta != FieldMeta::default() {
                fields.push((Box::from(field.as_str()), meta));
            }
        }
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        fields.into_boxed_slice()
    }
}

fn ref_name(schema: &Value) -> Option<&str> {
    schema.get("$ref")?.as_str()?.strip_prefix(REF_PREFIX)
}

fn lookup(fields: &[(Box<str>, FieldMeta)], field: &str) -> FieldMeta {
    fields
        .binary_search_by(|(name, _)| name.as_ref().cmp(field))
        .map(|i| fields[i].1)
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn collect_refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    if key == "$ref" {
                        if let Some(s) = v.as_str() {
                            out.push(s);
                        }
                    } else {
                        collect_refs(v, out);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_ref_resolves_in_v2_form() {
        let defs = definitions();
        let mut refs = Vec::new();
        for schema in defs.values() {
            collect_refs(schema, &mut refs);
        }
        assert!(refs.len() > 100, "suspiciously few refs: {}", refs.len());
        for r in refs {
            let name = r
                .strip_prefix(REF_PREFIX)
                .unwrap_or_else(|| panic!("bad ref {r}"));
            assert!(defs.contains_key(name), "dangling ref {r}");
        }
    }

    #[test]
    fn roots_lists_and_meta_types_are_defined() {
        let defs = definitions();
        for name in [
            "io.k8s.api.apps.v1.Deployment",
            "io.k8s.api.apps.v1.DeploymentList",
            "io.k8s.api.core.v1.PodList",
            "io.k8s.api.core.v1.Event",
            "io.k8s.api.events.v1.EventList",
            "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerList",
            "io.k8s.api.autoscaling.v1.Scale",
            "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
            "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
            "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent",
            "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList",
            "io.k8s.apimachinery.pkg.apis.meta.v1.APIGroupList",
            "io.k8s.apimachinery.pkg.apis.meta.v1.APIGroup",
            "io.k8s.apimachinery.pkg.apis.meta.v1.APIVersions",
            "io.k8s.apimachinery.pkg.apis.meta.v1.Patch",
            "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta",
        ] {
            assert!(defs.contains_key(name), "missing {name}");
        }
        let keys: Vec<_> = defs.keys().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "definitions are served sorted");
    }

    #[test]
    fn kinds_carry_group_version_kind() {
        let defs = definitions();
        assert_eq!(
            defs["io.k8s.api.apps.v1.Deployment"][GVK_EXTENSION],
            json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
        );
        assert_eq!(
            defs["io.k8s.api.core.v1.Pod"][GVK_EXTENSION],
            json!([{"group": "", "kind": "Pod", "version": "v1"}])
        );
        assert_eq!(
            defs["io.k8s.api.core.v1.ConfigMapList"][GVK_EXTENSION],
            json!([{"group": "", "kind": "ConfigMapList", "version": "v1"}])
        );
        let list = &defs["io.k8s.api.rbac.v1.ClusterRoleBindingList"];
        assert_eq!(
            list["properties"]["items"]["items"]["$ref"],
            "#/definitions/io.k8s.api.rbac.v1.ClusterRoleBinding"
        );
        assert_eq!(list["properties"]["kind"]["type"], "string");
        let delete_options = defs["io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"]
            [GVK_EXTENSION]
            .as_array()
            .map(Vec::len);
        assert!(delete_options > Some(10));
    }

    #[test]
    fn every_patch_metadata_entry_lands_on_a_property() {
        let defs = definitions();
        for &(type_name, field, strategy, merge_key) in PATCH_METADATA {
            let property = &defs[type_name]["properties"][field];
            assert_eq!(
                property["x-kubernetes-patch-strategy"],
                strategy.as_str(),
                "{type_name}.{field}"
            );
            match merge_key {
                Some(key) => {
                    assert_eq!(
                        property["x-kubernetes-patch-merge-key"], key,
                        "{type_name}.{field}"
                    );
                    // The merge key must be a property of the list's element type.
                    let element = property["items"]["$ref"]
                        .as_str()
                        .and_then(|r| r.strip_prefix(REF_PREFIX))
                        .unwrap_or_else(|| panic!("{type_name}.{field} is not a list of objects"));
                    assert!(
                        defs[element]["properties"].get(key).is_some(),
                        "{element} has no merge key {key}"
                    );
                }
                None => assert!(property.get("x-kubernetes-patch-merge-key").is_none()),
            }
            if strategy.merges_lists() {
                assert_eq!(property["type"], "array", "{type_name}.{field}");
            }
        }
    }

    #[test]
    fn field_meta_follows_the_type_graph() {
        let deployment = field_meta("io.k8s.api.apps.v1.Deployment", "spec");
        assert_eq!(
            deployment.type_name,
            Some("io.k8s.api.apps.v1.DeploymentSpec")
        );
        assert!(!deployment.is_list && deployment.strategy.is_none());

        let strategy = field_meta("io.k8s.api.apps.v1.DeploymentSpec", "strategy");
        assert_eq!(strategy.strategy, Some(PatchStrategy::RetainKeys));

        let containers = field_meta(POD_SPEC, "containers");
        assert_eq!(
            containers,
            FieldMeta {
                type_name: Some(CONTAINER),
                is_list: true,
                is_map: false,
                strategy: Some(PatchStrategy::Merge),
                merge_key: Some("name"),
            }
        );
        let tolerations = field_meta(POD_SPEC, "tolerations");
        assert!(tolerations.is_list && tolerations.strategy.is_none());

        let limits = field_meta("io.k8s.api.core.v1.ResourceRequirements", "limits");
        assert!(limits.is_map);
        assert_eq!(
            limits.type_name,
            Some("io.k8s.apimachinery.pkg.api.resource.Quantity")
        );

        let finalizers = field_meta(OBJECT_META, "finalizers");
        assert!(finalizers.is_list && finalizers.type_name.is_none());
        assert_eq!(finalizers.strategy, Some(PatchStrategy::Merge));

        assert_eq!(field_meta(CONTAINER, "image"), FieldMeta::default());
        assert_eq!(
            field_meta("io.example.v1.Widget", "spec"),
            FieldMeta::default()
        );
    }

    #[test]
    fn field_meta_of_a_type_inside_a_kind_loads_the_graph() {
        let ports = field_meta("io.k8s.api.core.v1.ServiceSpec", "ports");
        assert_eq!(ports.merge_key, Some("port"));
        let causes = field_meta(
            "io.k8s.apimachinery.pkg.apis.meta.v1.StatusDetails",
            "causes",
        );
        assert!(causes.is_list);
    }

    #[test]
    fn field_meta_loads_each_root_once() {
        field_meta("io.k8s.api.core.v1.ConfigMap", "data");
        field_meta("io.k8s.api.core.v1.ConfigMap", "binaryData");
        let graph = GRAPH.read().unwrap_or_else(PoisonError::into_inner);
        assert!(graph.loaded.contains("io.k8s.api.core.v1.ConfigMap"));
        assert!(graph.types.contains_key(OBJECT_META));
    }
}
