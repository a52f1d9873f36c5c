//! Applying the body of a PATCH request to a stored object.
//!
//! JSON patch (RFC 6902) and JSON merge patch (RFC 7386) come from the `json-patch` crate.
//! Strategic merge patch, Kubernetes' own format, is implemented here after upstream's
//! `strategicpatch` package: it is driven by the patch metadata of
//! [`crate::registry::schema`], honours the directives kubectl sends (`$patch`, `$retainKeys`,
//! `$setElementOrder/…`, `$deleteFromPrimitiveList/…`) and orders merged lists the way
//! upstream does, so that kubectl's apply, edit and `set` commands see the results they expect.

use std::mem;

use serde_json::{Map, Value};

use crate::registry::schema::{self, FieldMeta, PatchStrategy};

/// Errors of [`apply_patch`].
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The body is not JSON, or not the JSON its patch type needs (a JSON patch is an array of
    /// operations).
    #[error("invalid {kind} patch body: {source}")]
    InvalidBody {
        /// Which patch type the body was read as.
        kind: &'static str,
        /// What the JSON parser said.
        #[source]
        source: serde_json::Error,
    },
    /// A strategic merge patch whose body is JSON but not an object.
    #[error("strategic merge patch body must be a JSON object")]
    NotAnObject,
    /// A JSON patch operation could not be applied: a path does not exist, or a `test` failed.
    #[error("cannot apply JSON patch: {source}")]
    JsonPatchFailed {
        /// The failed operation and why.
        #[source]
        source: json_patch::PatchError,
    },
    /// A `$patch` directive other than `replace`, `merge` or `delete`.
    #[error("unknown patch type: {directive}")]
    UnknownDirective {
        /// The directive's value as sent.
        directive: String,
    },
    /// `$retainKeys` is not a list of field names, or the patch sets a field it does not retain.
    #[error("invalid patch format of retainKeys")]
    InvalidRetainKeys,
    /// A `$setElementOrder/<field>` list is malformed or disagrees with the order of the patch's
    /// list.
    #[error("invalid patch format of setElementOrder list")]
    InvalidSetElementOrder,
    /// A `$deleteFromPrimitiveList/<field>` value is not a list of scalars.
    #[error("invalid patch format of primitive list")]
    InvalidDeleteFromPrimitiveList,
    /// An element of a patch list merged by key lacks the key.
    #[error("{element} does not contain declared merge key: {key}")]
    MissingMergeKey {
        /// The merge key of the list.
        key: &'static str,
        /// The offending element, as JSON.
        element: String,
    },
    /// A merged list has lists as elements.
    #[error("lists of lists are not supported")]
    ListOfLists,
    /// A merged list mixes objects and scalars (in the patch, or between patch and object).
    #[error("list element types are not identical in field {field}")]
    MixedListElements {
        /// The list's field name.
        field: String,
    },
    /// A JSON or merge patch turned the object into something other than an object.
    #[error("the patched object is not a JSON object")]
    ResultNotObject,
    /// Strategic merge patch of a type without a schema (custom resources).
    #[error(
        "the body of the request was in an unknown format - accepted media types include: \
         application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    )]
    StrategicMergeUnsupported,
    /// Server-side apply is not implemented yet.
    #[error("server-side apply (application/apply-patch+yaml) is not supported by this server")]
    ApplyUnsupported,
}

impl PatchError {
    /// The HTTP status the API answers this error with, as upstream does: 400 for a malformed
    /// patch, 422 for a well-formed patch that cannot apply to this object, 415 for a patch
    /// type the resource does not support.
    pub fn http_status(&self) -> u16 {
        match self {
            PatchError::InvalidBody { .. }
            | PatchError::NotAnObject
            | PatchError::UnknownDirective { .. }
            | PatchError::InvalidRetainKeys
            | PatchError::InvalidSetElementOrder
            | PatchError::InvalidDeleteFromPrimitiveList
            | PatchError::MissingMergeKey { .. } => 400,
            PatchError::JsonPatchFailed { .. }
            | PatchError::ListOfLists
            | PatchError::MixedListElements { .. }
            | PatchError::ResultNotObject => 422,
            PatchError::StrategicMergeUnsupported | PatchError::ApplyUnsupported => 415,
        }
    }
}

/// Result of this module's operations.
pub type Result<T, E = PatchError> = std::result::Result<T, E>;

/// The patch formats a PATCH request may carry, told apart by its `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    /// JSON patch, RFC 6902: a list of operations.
    Json,
    /// JSON merge patch, RFC 7386.
    Merge,
    /// Kubernetes strategic merge patch.
    StrategicMerge,
    /// Server-side apply.
    Apply,
}

impl PatchKind {
    /// Maps a `Content-Type` header to its patch kind; parameters after `;` are ignored.
    pub fn from_content_type(content_type: &str) -> Option<PatchKind> {
        let media_type = content_type
            .split_once(';')
            .map_or(content_type, |(media_type, _)| media_type)
            .trim();
        [
            PatchKind::Json,
            PatchKind::Merge,
            PatchKind::StrategicMerge,
            PatchKind::Apply,
        ]
        .into_iter()
        .find(|kind| kind.content_type().eq_ignore_ascii_case(media_type))
    }

    /// The media type of this patch kind.
    pub fn content_type(self) -> &'static str {
        match self {
            PatchKind::Json => "application/json-patch+json",
            PatchKind::Merge => "application/merge-patch+json",
            PatchKind::StrategicMerge => "application/strategic-merge-patch+json",
            PatchKind::Apply => "application/apply-patch+yaml",
        }
    }
}

/// Applies `patch`, a PATCH request body of the given kind, to `original` and returns the
/// patched object. `original` is left alone.
///
/// `type_name` is the schema name of the object's type (`io.k8s.api.apps.v1.Deployment`);
/// strategic merge patch needs it and answers [`PatchError::StrategicMergeUnsupported`]
/// without it, as upstream does for custom resources.
pub fn apply_patch(
    kind: PatchKind,
    type_name: Option<&str>,
    original: &Value,
    patch: &[u8],
) -> Result<Value> {
    match kind {
        PatchKind::Json => {
            let operations: json_patch::Patch =
                serde_json::from_slice(patch).map_err(|source| PatchError::InvalidBody {
                    kind: "JSON",
                    source,
                })?;
            let mut patched = original.clone();
            json_patch::patch(&mut patched, &operations.0)
                .map_err(|source| PatchError::JsonPatchFailed { source })?;
            object(patched)
        }
        PatchKind::Merge => {
            let patch: Value =
                serde_json::from_slice(patch).map_err(|source| PatchError::InvalidBody {
                    kind: "merge",
                    source,
                })?;
            let mut patched = original.clone();
            json_patch::merge(&mut patched, &patch);
            object(patched)
        }
        PatchKind::StrategicMerge => {
            let type_name = type_name.ok_or(PatchError::StrategicMergeUnsupported)?;
            let patch: Value =
                serde_json::from_slice(patch).map_err(|source| PatchError::InvalidBody {
                    kind: "strategic merge",
                    source,
                })?;
            let Value::Object(patch) = patch else {
                return Err(PatchError::NotAnObject);
            };
            let original = match original {
                Value::Object(map) => map.clone(),
                _ => Map::new(),
            };
            merge_map(original, patch, Shape::Object(Some(type_name))).map(Value::Object)
        }
        PatchKind::Apply => Err(PatchError::ApplyUnsupported),
    }
}

fn object(value: Value) -> Result<Value> {
    if value.is_object() {
        Ok(value)
    } else {
        Err(PatchError::ResultNotObject)
    }
}

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// Where a value sits in the schema, which decides how its keys are looked up.
#[derive(Clone, Copy)]
enum Shape<'a> {
    /// An object of a schema type; `None` when unknown, so that every field is plain.
    Object(Option<&'a str>),
    /// A map with free-form keys whose values are of the given type.
    MapOf(Option<&'static str>),
}

impl Shape<'_> {
    fn field(self, key: &str) -> FieldMeta {
        match self {
            Shape::Object(Some(type_name)) => schema::field_meta(type_name, key),
            Shape::Object(None) => FieldMeta::default(),
            Shape::MapOf(type_name) => FieldMeta {
                type_name,
                ..FieldMeta::default()
            },
        }
    }
}

/// The shape of a field's value; for a list, of its elements.
fn value_shape(meta: FieldMeta) -> Shape<'static> {
    if meta.is_map {
        Shape::MapOf(meta.type_name)
    } else {
        Shape::Object(meta.type_name)
    }
}

fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    shape: Shape<'_>,
) -> Result<Map<String, Value>> {
    if let Some(directive) = patch.shift_remove(DIRECTIVE) {
        match directive.as_str() {
            // What is left of the patch becomes the map; merging it into nothing drops its
            // nulls and directives.
            Some("replace") => return merge_map(Map::new(), patch, shape),
            // Upstream leaves an empty map behind rather than removing the key.
            Some("delete") => return Ok(Map::new()),
            Some("merge") => {}
            _ => {
                return Err(PatchError::UnknownDirective {
                    directive: directive_text(&directive),
                })
            }
        }
    }

    if let Some(retain) = patch.shift_remove(RETAIN_KEYS) {
        retain_keys(&mut original, &patch, &retain)?;
    }

    let ordered: Vec<String> = patch
        .keys()
        .filter(|key| key.starts_with(SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for directive_key in ordered {
        let order = patch.shift_remove(&directive_key);
        let field = &directive_key[SET_ELEMENT_ORDER.len()..];
        let (Some(Value::Array(order)), false) = (order, field.is_empty()) else {
            return Err(PatchError::InvalidSetElementOrder);
        };
        set_element_order(&mut original, &mut patch, field, &order, shape.field(field))?;
    }

    for (key, value) in patch {
        if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            delete_from_primitive_list(&mut original, field, value)?;
            continue;
        }
        if value.is_null() {
            original.shift_remove(&key);
            continue;
        }
        let meta = shape.field(&key);
        let merged = match original.get_mut(&key) {
            None => fresh(value, meta, &key)?,
            Some(existing) => match (mem::take(existing), value) {
                (Value::Object(old), Value::Object(new))
                    if meta.strategy != Some(PatchStrategy::Replace) =>
                {
                    Value::Object(merge_map(old, new, value_shape(meta))?)
                }
                (Value::Array(old), Value::Array(new)) => {
                    Value::Array(merge_list(old, new, meta, &key)?)
                }
                (_, new) => fresh(new, meta, &key)?,
            },
        };
        original.insert(key, merged);
    }
    Ok(original)
}

fn directive_text(directive: &Value) -> String {
    directive
        .as_str()
        .map_or_else(|| directive.to_string(), str::to_owned)
}

/// A value that replaces whatever was there, with its directives processed and its nulls
/// dropped, as if merged into nothing.
fn fresh(value: Value, meta: FieldMeta, field: &str) -> Result<Value> {
    match value {
        Value::Object(new) => merge_map(Map::new(), new, value_shape(meta)).map(Value::Object),
        Value::Array(new) => merge_list(Vec::new(), new, meta, field).map(Value::Array),
        other => Ok(other),
    }
}

/// `$retainKeys`: fields of `original` not listed are cleared. Every field the patch sets
/// must be listed.
fn retain_keys(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    retain: &Value,
) -> Result<()> {
    let keys = retain
        .as_array()
        .ok_or(PatchError::InvalidRetainKeys)?
        .iter()
        .map(|key| key.as_str().ok_or(PatchError::InvalidRetainKeys))
        .collect::<Result<Vec<_>>>()?;
    let unlisted = patch.iter().any(|(key, value)| {
        !value.is_null()
            && !key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            && !key.starts_with(SET_ELEMENT_ORDER)
            && !keys.contains(&key.as_str())
    });
    if unlisted {
        return Err(PatchError::InvalidRetainKeys);
    }
    original.retain(|key, _| keys.contains(&key.as_str()));
    Ok(())
}

fn delete_from_primitive_list(
    original: &mut Map<String, Value>,
    field: &str,
    remove: Value,
) -> Result<()> {
    let Value::Array(remove) = remove else {
        return Err(PatchError::InvalidDeleteFromPrimitiveList);
    };
    if field.is_empty() || remove.iter().any(|v| v.is_object() || v.is_array()) {
        return Err(PatchError::InvalidDeleteFromPrimitiveList);
    }
    if let Some(Value::Array(list)) = original.get_mut(field) {
        list.retain(|item| !remove.iter().any(|r| same(r, item)));
    }
    Ok(())
}

/// `$setElementOrder/<field>`: merges the patch's `field` list (if any) into the original's
/// and sorts the result: the listed order first, then the patch's, then the original's.
fn set_element_order(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    field: &str,
    order: &[Value],
    meta: FieldMeta,
) -> Result<()> {
    let patch_list = match patch.shift_remove(field) {
        None => None,
        Some(Value::Array(list)) => Some(list),
        Some(_) => return Err(PatchError::InvalidSetElementOrder),
    };
    let original_list = match original.get_mut(field) {
        Some(Value::Array(list)) => Some(mem::take(list)),
        _ => None,
    };
    let key = meta.merge_key;
    let server_order = match &original_list {
        Some(list) => identities(list, key),
        None => Vec::new(),
    };
    let merged = match (original_list, patch_list) {
        (None, None) => return Ok(()),
        (Some(list), None) => list,
        (list, Some(new)) => {
            check_order(&new, order, key)?;
            merge_list(list.unwrap_or_default(), new, meta, field)?
        }
    };
    let set_order = order
        .iter()
        .map(|item| match key {
            Some(key) => item
                .get(key)
                .cloned()
                .ok_or(PatchError::InvalidSetElementOrder),
            None => Ok(item.clone()),
        })
        .map(|id| id.map(Some))
        .collect::<Result<Vec<_>>>()?;
    let sorted = reorder(merged, &set_order, &server_order, key);
    original.insert(field.to_owned(), Value::Array(sorted));
    Ok(())
}

/// The elements the patch lists (deletions aside) must appear in `order` in the same
/// relative order.
fn check_order(patch: &[Value], order: &[Value], key: Option<&'static str>) -> Result<()> {
    let identity = |item: &Value| -> Result<Value> {
        match key {
            Some(key) => item
                .get(key)
                .cloned()
                .ok_or_else(|| PatchError::MissingMergeKey {
                    key,
                    element: item.to_string(),
                }),
            None => Ok(item.clone()),
        }
    };
    let listed: Vec<Value> = patch
        .iter()
        .filter(|item| item.get(DIRECTIVE).is_none())
        .map(identity)
        .collect::<Result<_>>()?;
    let mut next = 0;
    for item in order {
        if next < listed.len() && same(&listed[next], &identity(item)?) {
            next += 1;
        }
    }
    if next < listed.len() {
        return Err(PatchError::InvalidSetElementOrder);
    }
    Ok(())
}

fn merge_list(
    original: Vec<Value>,
    patch: Vec<Value>,
    meta: FieldMeta,
    field: &str,
) -> Result<Vec<Value>> {
    if !meta.strategy.is_some_and(PatchStrategy::merges_lists) {
        return Ok(patch);
    }
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    let objects = elements_are_objects(&original, &patch, field)?;
    match (objects, meta.merge_key) {
        (false, _) => Ok(merge_scalars(original, patch)),
        (true, Some(key)) => merge_objects(original, patch, key, value_shape(meta)),
        // Upstream refuses to merge objects without a key; replacing is the lenient reading.
        (true, None) => Ok(patch),
    }
}

fn elements_are_objects(original: &[Value], patch: &[Value], field: &str) -> Result<bool> {
    let mut objects = None;
    for item in original.iter().chain(patch) {
        if item.is_array() {
            return Err(PatchError::ListOfLists);
        }
        match objects {
            None => objects = Some(item.is_object()),
            Some(seen) if seen != item.is_object() => {
                return Err(PatchError::MixedListElements {
                    field: field.to_owned(),
                })
            }
            Some(_) => {}
        }
    }
    Ok(objects.unwrap_or(false))
}

/// A set union, ordered like upstream: see [`reorder`].
fn merge_scalars(original: Vec<Value>, patch: Vec<Value>) -> Vec<Value> {
    let server_order: Vec<Option<Value>> = original.iter().cloned().map(Some).collect();
    let patch_order: Vec<Option<Value>> = patch.iter().cloned().map(Some).collect();
    let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
    for item in original.into_iter().chain(patch) {
        if !merged.iter().any(|m| same(m, &item)) {
            merged.push(item);
        }
    }
    reorder(merged, &patch_order, &server_order, None)
}

fn merge_objects(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    key: &'static str,
    shape: Shape<'_>,
) -> Result<Vec<Value>> {
    let mut listed = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        let Value::Object(mut item) = item else {
            continue;
        };
        let Some(directive) = item.get(DIRECTIVE) else {
            listed.push(item);
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let id = merge_key_of(&item, key)?.clone();
                original.retain(|o| !o.get(key).is_some_and(|v| same(v, &id)));
            }
            Some("replace") => replace = true,
            Some("merge") => {
                item.shift_remove(DIRECTIVE);
                if !item.is_empty() {
                    listed.push(item);
                }
            }
            _ => {
                return Err(PatchError::UnknownDirective {
                    directive: directive_text(directive),
                })
            }
        }
    }
    if replace {
        return listed
            .into_iter()
            .map(|item| merge_map(Map::new(), item, shape).map(Value::Object))
            .collect();
    }

    let server_order = identities(&original, Some(key));
    let patch_order = listed
        .iter()
        .map(|item| merge_key_of(item, key).map(|id| Some(id.clone())))
        .collect::<Result<Vec<_>>>()?;
    for item in listed {
        let id = merge_key_of(&item, key)?.clone();
        match original
            .iter_mut()
            .find(|o| o.get(key).is_some_and(|v| same(v, &id)))
        {
            Some(existing) => {
                let old = match mem::take(existing) {
                    Value::Object(old) => old,
                    _ => Map::new(),
                };
                *existing = Value::Object(merge_map(old, item, shape)?);
            }
            None => original.push(Value::Object(merge_map(Map::new(), item, shape)?)),
        }
    }
    Ok(reorder(original, &patch_order, &server_order, Some(key)))
}

fn merge_key_of<'v>(item: &'v Map<String, Value>, key: &'static str) -> Result<&'v Value> {
    item.get(key).ok_or_else(|| PatchError::MissingMergeKey {
        key,
        element: Value::Object(item.clone()).to_string(),
    })
}

/// What identifies a list element: its merge key's value, or the scalar itself.
fn identities(list: &[Value], key: Option<&str>) -> Vec<Option<Value>> {
    list.iter()
        .map(|item| match key {
            Some(key) => item.get(key).cloned(),
            None => Some(item.clone()),
        })
        .collect()
}

/// Upstream's ordering of a merged list: the elements named by the patch, in the patch's
/// order, are interleaved with the rest, in the original's order. While both are at hand, the
/// original's order decides between the two if it knows both; otherwise the patch's element
/// goes first (so, without `$setElementOrder`, new elements land before old ones that the
/// patch did not mention).
fn reorder(
    merged: Vec<Value>,
    patch_order: &[Option<Value>],
    server_order: &[Option<Value>],
    key: Option<&str>,
) -> Vec<Value> {
    let identity = |item: &Value| match key {
        Some(key) => item.get(key).cloned(),
        None => Some(item.clone()),
    };
    let position = |order: &[Option<Value>], id: &Option<Value>| {
        let id = id.as_ref()?;
        order
            .iter()
            .position(|o| o.as_ref().is_some_and(|o| same(o, id)))
    };
    let (mut named, mut rest): (Vec<_>, Vec<_>) = merged
        .into_iter()
        .map(|item| (identity(&item), item))
        .partition(|(id, _)| position(patch_order, id).is_some());
    named.sort_by_key(|(id, _)| position(patch_order, id));
    rest.sort_by_key(|(id, _)| position(server_order, id).unwrap_or(usize::MAX));

    let mut out = Vec::with_capacity(named.len() + rest.len());
    let mut named = named.into_iter().peekable();
    let mut rest = rest.into_iter().peekable();
    loop {
        let take_rest = match (rest.peek(), named.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((old, _)), Some((new, _))) => {
                match (position(server_order, old), position(server_order, new)) {
                    (Some(o), Some(n)) => o < n,
                    _ => false,
                }
            }
        };
        let next = if take_rest { rest.next() } else { named.next() };
        out.extend(next.map(|(_, item)| item));
    }
    out
}

/// JSON equality, except that numbers compare by value (`80` and `80.0` name the same port).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    const DEPLOYMENT: &str = "io.k8s.api.apps.v1.Deployment";
    const POD: &str = "io.k8s.api.core.v1.Pod";
    const SERVICE: &str = "io.k8s.api.core.v1.Service";
    const CONFIG_MAP: &str = "io.k8s.api.core.v1.ConfigMap";

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web",
                "namespace": "default",
                "uid": "5b0d7c1e-52a4-4c4b-9d7e-1f6a2b9c0e11",
                "resourceVersion": "1042",
                "generation": 3,
                "labels": {"app": "web"},
                "annotations": {
                    "deployment.kubernetes.io/revision": "3",
                    "kubectl.kubernetes.io/last-applied-configuration": "{\"old\":true}\n"
                }
            },
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}
                },
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "app",
                                "image": "registry.example/web:1.4.0",
                                "args": ["--port=8080", "--verbose"],
                                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                                "env": [
                                    {"name": "LOG_LEVEL", "value": "info"},
                                    {"name": "REGION", "value": "eu-west"},
                                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
                                ],
                                "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}}
                            },
                            {
                                "name": "sidecar",
                                "image": "registry.example/proxy:2.1",
                                "ports": [{"containerPort": 15001, "protocol": "TCP"}]
                            }
                        ],
                        "tolerations": [
                            {"key": "edge", "operator": "Exists", "effect": "NoSchedule"}
                        ],
                        "restartPolicy": "Always"
                    }
                }
            },
            "status": {
                "observedGeneration": 3,
                "replicas": 2,
                "conditions": [
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                    {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
                ]
            }
        })
    }

    fn smp(type_name: &str, original: &Value, patch: Value) -> Value {
        apply_patch(
            PatchKind::StrategicMerge,
            Some(type_name),
            original,
            patch.to_string().as_bytes(),
        )
        .unwrap()
    }

    fn smp_err(type_name: &str, original: &Value, patch: Value) -> PatchError {
        apply_patch(
            PatchKind::StrategicMerge,
            Some(type_name),
            original,
            patch.to_string().as_bytes(),
        )
        .unwrap_err()
    }

    fn names(list: &Value) -> Vec<&str> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|item| item["name"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn content_types() {
        assert_eq!(
            PatchKind::from_content_type("application/json-patch+json"),
            Some(PatchKind::Json)
        );
        assert_eq!(
            PatchKind::from_content_type("application/merge-patch+json; charset=utf-8"),
            Some(PatchKind::Merge)
        );
        assert_eq!(
            PatchKind::from_content_type("Application/Strategic-Merge-Patch+JSON"),
            Some(PatchKind::StrategicMerge)
        );
        assert_eq!(
            PatchKind::from_content_type("application/apply-patch+yaml;charset=utf-8"),
            Some(PatchKind::Apply)
        );
        assert_eq!(PatchKind::from_content_type("application/json"), None);
        assert_eq!(PatchKind::from_content_type(""), None);
    }

    /// `kubectl apply` after editing replicas, the image and an env var of the manifest, and
    /// dropping `--verbose` from the args: the three-way patch it computes.
    #[test]
    fn kubectl_apply_three_way_patch() {
        let patch = json!({
            "metadata": {"annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{\"new\":true}\n"
            }},
            "spec": {
                "replicas": 3,
                "template": {"spec": {
                    "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
                    "containers": [{
                        "$setElementOrder/env": [
                            {"name": "LOG_LEVEL"}, {"name": "REGION"}, {"name": "POD_IP"}
                        ],
                        "args": ["--port=8080"],
                        "env": [{"name": "LOG_LEVEL", "value": "debug"}],
                        "image": "registry.example/web:1.5.0",
                        "name": "app"
                    }]
                }}
            }
        });
        let patched = smp(DEPLOYMENT, &deployment(), patch);
        let mut expected = deployment();
        expected["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
            json!("{\"new\":true}\n");
        expected["spec"]["replicas"] = json!(3);
        let app = &mut expected["spec"]["template"]["spec"]["containers"][0];
        app["image"] = json!("registry.example/web:1.5.0");
        app["args"] = json!(["--port=8080"]);
        app["env"][0]["value"] = json!("debug");
        assert_eq!(patched, expected);
    }

    /// Removing a field from the manifest: apply sends null for it.
    #[test]
    fn null_deletes_a_key() {
        let patch =
            json!({"spec": {"template": {"spec": {"restartPolicy": null}}, "paused": null}});
        let patched = smp(DEPLOYMENT, &deployment(), patch);
        assert!(patched["spec"]["template"]["spec"]
            .get("restartPolicy")
            .is_none());
        assert!(patched["spec"].get("paused").is_none());
    }

    /// `kubectl label deploy web tier=frontend env-` and `kubectl annotate` send merge patches.
    #[test]
    fn kubectl_label_and_annotate() {
        let original = deployment();
        let patch = br#"{"metadata":{"labels":{"tier":"frontend","app":null}}}"#;
        let patched = apply_patch(PatchKind::Merge, None, &original, patch).unwrap();
        assert_eq!(patched["metadata"]["labels"], json!({"tier": "frontend"}));

        let patch = br#"{"metadata":{"annotations":{"owner":"team-a"}}}"#;
        let patched = apply_patch(PatchKind::Merge, None, &original, patch).unwrap();
        assert_eq!(patched["metadata"]["annotations"]["owner"], "team-a");
        assert_eq!(
            patched["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
            "3"
        );
        assert_eq!(patched["spec"], original["spec"]);
    }

    /// `kubectl scale deploy web --replicas=5` patches the scale subresource.
    #[test]
    fn kubectl_scale() {
        let scale = json!({
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {"name": "web", "namespace": "default", "resourceVersion": "1042"},
            "spec": {"replicas": 2},
            "status": {"replicas": 2, "selector": "app=web"}
        });
        let patched = apply_patch(
            PatchKind::Merge,
            None,
            &scale,
            br#"{"spec":{"replicas":5}}"#,
        )
        .unwrap();
        assert_eq!(patched["spec"], json!({"replicas": 5}));
        assert_eq!(patched["status"], scale["status"]);
    }

    /// `kubectl set image deploy/web app=registry.example/web:2.0.0`.
    #[test]
    fn kubectl_set_image() {
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
            "containers": [{"image": "registry.example/web:2.0.0", "name": "app"}]
        }}}});
        let patched = smp(DEPLOYMENT, &deployment(), patch);
        let containers = &patched["spec"]["template"]["spec"]["containers"];
        assert_eq!(names(containers), ["app", "sidecar"]);
        assert_eq!(containers[0]["image"], "registry.example/web:2.0.0");
        assert_eq!(
            containers[0]["env"],
            deployment()["spec"]["template"]["spec"]["containers"][0]["env"]
        );
        assert_eq!(
            containers[1],
            deployment()["spec"]["template"]["spec"]["containers"][1]
        );
    }

    /// `kubectl rollout restart deploy/web`.
    #[test]
    fn kubectl_rollout_restart() {
        let patch = json!({"spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": "2025-03-01T12:00:00Z"
        }}}}});
        let patched = smp(DEPLOYMENT, &deployment(), patch);
        assert_eq!(
            patched["spec"]["template"]["metadata"],
            json!({
                "labels": {"app": "web"},
                "annotations": {"kubectl.kubernetes.io/restartedAt": "2025-03-01T12:00:00Z"}
            })
        );
    }

    /// `kubectl edit`: remove env var REGION, add OTEL_ENDPOINT after LOG_LEVEL, change a
    /// port, and drop the sidecar container.
    #[test]
    fn kubectl_edit_two_way_patch() {
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "app"}],
            "containers": [
                {
                    "$setElementOrder/env": [
                        {"name": "LOG_LEVEL"}, {"name": "OTEL_ENDPOINT"}, {"name": "POD_IP"}
                    ],
                    "$setElementOrder/ports": [{"containerPort": 9090}],
                    "env": [
                        {"name": "OTEL_ENDPOINT", "value": "http://collector:4317"},
                        {"$patch": "delete", "name": "REGION"}
                    ],
                    "name": "app",
                    "ports": [
                        {"containerPort": 9090, "protocol": "TCP"},
                        {"$patch": "delete", "containerPort": 8080}
                    ]
                },
                {"$patch": "delete", "name": "sidecar"}
            ]
        }}}});
        let patched = smp(DEPLOYMENT, &deployment(), patch);
        let containers = &patched["spec"]["template"]["spec"]["containers"];
        assert_eq!(names(containers), ["app"]);
        assert_eq!(
            names(&containers[0]["env"]),
            ["LOG_LEVEL", "OTEL_ENDPOINT", "POD_IP"]
        );
        assert_eq!(containers[0]["env"][1]["value"], "http://collector:4317");
        assert_eq!(
            containers[0]["ports"],
            json!([{"containerPort": 9090, "protocol": "TCP"}])
        );
    }

    #[test]
    fn set_element_order_places_a_new_container() {
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "init-db"}, {"name": "app"}, {"name": "sidecar"}],
            "containers": [{"name": "init-db", "image": "registry.example/migrate:1"}]
        }}}});
        let patched = smp(DEPLOYMENT, &deployment(), patch);
        assert_eq!(
            names(&patched["spec"]["template"]["spec"]["containers"]),
            ["init-db", "app", "sidecar"]
        );
    }

    /// Without `$setElementOrder`, upstream puts elements the patch names before the
    /// original's others: a patch that only adds a container makes it the first.
    #[test]
    fn merge_without_order_directive_follows_upstream_order() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "logger", "image": "registry.example/fluent-bit:3"}
        ]}}}});
        let patched = smp(DEPLOYMENT, &deployment(), patch);
        assert_eq!(
            names(&patched["spec"]["template"]["spec"]["containers"]),
            ["logger", "app", "sidecar"]
        );

        // Naming an existing element keeps the original's order around it.
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "sidecar", "image": "registry.example/proxy:2.2"},
            {"name": "logger", "image": "registry.example/fluent-bit:3"}
        ]}}}});
        let patched = smp(DEPLOYMENT, &deployment(), patch);
        assert_eq!(
            names(&patched["spec"]["template"]["spec"]["containers"]),
            ["app", "sidecar", "logger"]
        );
    }

    #[test]
    fn patch_delete_removes_a_container() {
        let patch = json!({"spec": {"template": {"spec": {
            "containers": [{"$patch": "delete", "name": "sidecar"}]
        }}}});
        let patched = smp(DEPLOYMENT, &deployment(), patch);
        assert_eq!(
            names(&patched["spec"]["template"]["spec"]["containers"]),
            ["app"]
        );
    }

    #[test]
    fn patch_replace_in_a_list_and_in_a_map() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "only", "image": "registry.example/only:1"},
            {"$patch": "replace"}
        ]}}}});
        let patched = smp(DEPLOYMENT, &deployment(), patch);
        assert_eq!(
            patched["spec"]["template"]["spec"]["containers"],
            json!([{"name": "only", "image": "registry.example/only:1"}])
        );

        let patch = json!({"spec": {"template": {"spec": {"containers": [{
            "name": "app",
            "resources": {"$patch": "replace", "requests": {"cpu": "100m"}}
        }]}}}});
        let patched = smp(DEPLOYMENT, &deployment(), patch);
        assert_eq!(
            patched["spec"]["template"]["spec"]["containers"][0]["resources"],
            json!({"requests": {"cpu": "100m"}})
        );
    }

    #[test]
    fn patch_delete_and_merge_on_a_map() {
        let patch = json!({"spec": {"selector": {"$patch": "delete"}}});
        let patched = smp(DEPLOYMENT, &deployment(), patch);
        assert_eq!(patched["spec"]["selector"], json!({}));

        let patch = json!({"metadata": {"labels": {"$patch": "merge", "tier": "frontend"}}});
        let patched = smp(DEPLOYMENT, &deployment(), patch);
        assert_eq!(
            patched["metadata"]["labels"],
            json!({"app": "web", "tier": "frontend"})
        );
    }

    /// Switching the manifest's strategy from RollingUpdate to Recreate: kubectl sends
    /// `$retainKeys` so the stale `rollingUpdate` goes away.
    #[test]
    fn retain_keys_on_deployment_strategy() {
        let patch = json!({"spec": {"strategy": {
            "$retainKeys": ["type"],
            "rollingUpdate": null,
            "type": "Recreate"
        }}});
        let patched = smp(DEPLOYMENT, &deployment(), patch);
        assert_eq!(patched["spec"]["strategy"], json!({"type": "Recreate"}));

        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        let patched = smp(DEPLOYMENT, &deployment(), patch);
        assert_eq!(patched["spec"]["strategy"], json!({"type": "Recreate"}));

        let patch =
            json!({"spec": {"strategy": {"$retainKeys": ["rollingUpdate"], "type": "Recreate"}}});
        let err = smp_err(DEPLOYMENT, &deployment(), patch);
        assert!(matches!(err, PatchError::InvalidRetainKeys));
        assert_eq!(err.http_status(), 400);
    }

    /// Volumes merge by name and honour `$retainKeys` per element.
    #[test]
    fn retain_keys_inside_merged_volumes() {
        let mut original = deployment();
        original["spec"]["template"]["spec"]["volumes"] = json!([
            {"name": "config", "configMap": {"name": "web-config"}},
            {"name": "cache", "emptyDir": {}}
        ]);
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/volumes": [{"name": "config"}, {"name": "cache"}],
            "volumes": [{
                "$retainKeys": ["name", "secret"],
                "name": "config",
                "secret": {"secretName": "web-secret"}
            }]
        }}}});
        let patched = smp(DEPLOYMENT, &original, patch);
        assert_eq!(
            patched["spec"]["template"]["spec"]["volumes"],
            json!([
                {"name": "config", "secret": {"secretName": "web-secret"}},
                {"name": "cache", "emptyDir": {}}
            ])
        );
    }

    #[test]
    fn env_merges_by_name() {
        let patch = json!({"spec": {"template": {"spec": {"containers": [{
            "name": "app",
            "env": [{"name": "REGION", "value": "us-east"}]
        }]}}}});
        let patched = smp(DEPLOYMENT, &deployment(), patch);
        assert_eq!(
            patched["spec"]["template"]["spec"]["containers"][0]["env"],
            json!([
                {"name": "LOG_LEVEL", "value": "info"},
                {"name": "REGION", "value": "us-east"},
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
            ])
        );
    }

    #[test]
    fn lists_without_strategy_are_replaced() {
        let patch = json!({"spec": {"template": {"spec": {
            "tolerations": [{"key": "gpu", "operator": "Exists"}],
            "containers": [{"name": "app", "args": ["--port=9090"]}]
        }}}});
        let patched = smp(DEPLOYMENT, &deployment(), patch);
        let spec = &patched["spec"]["template"]["spec"];
        assert_eq!(
            spec["tolerations"],
            json!([{"key": "gpu", "operator": "Exists"}])
        );
        assert_eq!(spec["containers"][0]["args"], json!(["--port=9090"]));
    }

    #[test]
    fn status_conditions_merge_by_type() {
        let patch = json!({"status": {"conditions": [
            {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}
        ]}});
        let patched = smp(DEPLOYMENT, &deployment(), patch);
        assert_eq!(
            patched["status"]["conditions"],
            json!([
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}
            ])
        );
    }

    #[test]
    fn finalizers_union_and_delete() {
        let original = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings", "finalizers": ["example.com/backup"]},
            "data": {"mode": "fast"}
        });
        let patch =
            json!({"metadata": {"finalizers": ["example.com/audit", "example.com/backup"]}});
        let patched = smp(CONFIG_MAP, &original, patch);
        assert_eq!(
            patched["metadata"]["finalizers"],
            json!(["example.com/audit", "example.com/backup"])
        );

        // A patch naming only the new finalizer: upstream puts it first.
        let patch = json!({"metadata": {"finalizers": ["example.com/audit"]}});
        let patched = smp(CONFIG_MAP, &original, patch);
        assert_eq!(
            patched["metadata"]["finalizers"],
            json!(["example.com/audit", "example.com/backup"])
        );

        // What apply sends to swap one finalizer for another.
        let patch = json!({"metadata": {
            "$deleteFromPrimitiveList/finalizers": ["example.com/backup"],
            "$setElementOrder/finalizers": ["example.com/audit"],
            "finalizers": ["example.com/audit"]
        }});
        let patched = smp(CONFIG_MAP, &original, patch);
        assert_eq!(
            patched["metadata"]["finalizers"],
            json!(["example.com/audit"])
        );
    }

    #[test]
    fn service_ports_merge_by_port() {
        let service = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "type": "NodePort",
                "selector": {"app": "web"},
                "clusterIP": "10.43.12.7",
                "ports": [
                    {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": 31080}
                ]
            }
        });
        let patch = json!({"spec": {
            "$setElementOrder/ports": [{"port": 80}, {"port": 443}],
            "ports": [{"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"}]
        }});
        let patched = smp(SERVICE, &service, patch);
        assert_eq!(
            patched["spec"]["ports"],
            json!([
                {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": 31080},
                {"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"}
            ])
        );
        assert_eq!(patched["spec"]["clusterIP"], "10.43.12.7");
    }

    /// Maps of objects (`additionalProperties`) merge per key with the value's type.
    #[test]
    fn pod_overhead_and_labels_merge_per_key() {
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "labels": {"a": "1"}},
            "spec": {
                "containers": [{"name": "c", "image": "busybox"}],
                "nodeSelector": {"zone": "a", "disk": "ssd"},
                "overhead": {"cpu": "10m"}
            }
        });
        let patch = json!({
            "metadata": {"labels": {"b": "2"}},
            "spec": {"nodeSelector": {"zone": "b"}, "overhead": {"memory": "16Mi"}}
        });
        let patched = smp(POD, &pod, patch);
        assert_eq!(patched["metadata"]["labels"], json!({"a": "1", "b": "2"}));
        assert_eq!(
            patched["spec"]["nodeSelector"],
            json!({"zone": "b", "disk": "ssd"})
        );
        assert_eq!(
            patched["spec"]["overhead"],
            json!({"cpu": "10m", "memory": "16Mi"})
        );
    }

    #[test]
    fn new_values_lose_their_nulls_and_directives() {
        let patch = json!({"spec": {"template": {"spec": {
            "securityContext": {"runAsNonRoot": true, "fsGroup": null},
            "volumes": [{"name": "tmp", "emptyDir": {}}, {"$patch": "delete", "name": "gone"}]
        }}}});
        let patched = smp(DEPLOYMENT, &deployment(), patch);
        let spec = &patched["spec"]["template"]["spec"];
        assert_eq!(spec["securityContext"], json!({"runAsNonRoot": true}));
        assert_eq!(spec["volumes"], json!([{"name": "tmp", "emptyDir": {}}]));
    }

    #[test]
    fn json_patch() {
        let patch = br#"[
            {"op": "test", "path": "/spec/replicas", "value": 2},
            {"op": "replace", "path": "/spec/replicas", "value": 4},
            {"op": "add", "path": "/metadata/labels/tier", "value": "web"},
            {"op": "remove", "path": "/spec/template/spec/tolerations"}
        ]"#;
        let patched = apply_patch(PatchKind::Json, Some(DEPLOYMENT), &deployment(), patch).unwrap();
        assert_eq!(patched["spec"]["replicas"], 4);
        assert_eq!(patched["metadata"]["labels"]["tier"], "web");
        assert!(patched["spec"]["template"]["spec"]
            .get("tolerations")
            .is_none());
    }

    #[test]
    fn json_patch_that_cannot_apply_is_unprocessable() {
        let original = deployment();
        let failed_test = br#"[{"op": "test", "path": "/spec/replicas", "value": 7}]"#;
        let err = apply_patch(PatchKind::Json, None, &original, failed_test).unwrap_err();
        assert!(matches!(err, PatchError::JsonPatchFailed { .. }));
        assert_eq!(err.http_status(), 422);

        let missing = br#"[{"op": "remove", "path": "/spec/nothing"}]"#;
        let err = apply_patch(PatchKind::Json, None, &original, missing).unwrap_err();
        assert_eq!(err.http_status(), 422);

        let whole = br#"[{"op": "replace", "path": "", "value": 3}]"#;
        let err = apply_patch(PatchKind::Json, None, &original, whole).unwrap_err();
        assert!(matches!(err, PatchError::ResultNotObject));
        assert_eq!(err.http_status(), 422);
    }

    #[test]
    fn malformed_bodies_are_bad_requests() {
        let original = deployment();
        for (kind, body) in [
            (PatchKind::Json, &b"{\"op\": \"add\"}"[..]),
            (
                PatchKind::Json,
                b"[{\"op\": \"frobnicate\", \"path\": \"/a\"}]",
            ),
            (PatchKind::Merge, b"{\"spec\":"),
            (PatchKind::StrategicMerge, b"not json"),
        ] {
            let err = apply_patch(kind, Some(DEPLOYMENT), &original, body).unwrap_err();
            assert!(
                matches!(err, PatchError::InvalidBody { .. }),
                "{kind:?}: {err}"
            );
            assert_eq!(err.http_status(), 400);
            assert!(err.to_string().starts_with("invalid "), "{err}");
        }
        let err = apply_patch(
            PatchKind::StrategicMerge,
            Some(DEPLOYMENT),
            &original,
            b"[1]",
        )
        .unwrap_err();
        assert!(matches!(err, PatchError::NotAnObject));

        for (patch, expected) in [
            (
                json!({"spec": {"$patch": "frobnicate"}}),
                "unknown patch type: frobnicate",
            ),
            (
                json!({"spec": {"strategy": {"$retainKeys": "type"}}}),
                "invalid patch format of retainKeys",
            ),
            (
                json!({"spec": {"template": {"spec": {"$setElementOrder/containers": {"name": "app"}}}}}),
                "invalid patch format of setElementOrder list",
            ),
            (
                json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}),
                "invalid patch format of primitive list",
            ),
            (
                json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}),
                "{\"image\":\"x\"} does not contain declared merge key: name",
            ),
            (
                json!({"spec": {"template": {"spec": {
                    "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}],
                    "containers": [{"name": "app"}, {"name": "sidecar"}]
                }}}}),
                "invalid patch format of setElementOrder list",
            ),
        ] {
            let err = smp_err(DEPLOYMENT, &original, patch);
            assert_eq!(err.to_string(), expected);
            assert_eq!(err.http_status(), 400);
        }
    }

    #[test]
    fn mismatched_list_elements_are_unprocessable() {
        let patch = json!({"metadata": {"finalizers": [{"name": "x"}]}});
        let original = json!({"metadata": {"finalizers": ["a"]}});
        let err = smp_err(CONFIG_MAP, &original, patch);
        assert!(matches!(err, PatchError::MixedListElements { .. }));
        assert_eq!(err.http_status(), 422);

        let patch = json!({"metadata": {"finalizers": [["nested"]]}});
        let err = smp_err(CONFIG_MAP, &original, patch);
        assert!(matches!(err, PatchError::ListOfLists));
    }

    #[test]
    fn unsupported_patch_types() {
        let custom = json!({"apiVersion": "example.com/v1", "kind": "Widget", "spec": {}});
        let err = apply_patch(PatchKind::StrategicMerge, None, &custom, b"{}").unwrap_err();
        assert!(matches!(err, PatchError::StrategicMergeUnsupported));
        assert_eq!(err.http_status(), 415);

        let err =
            apply_patch(PatchKind::Apply, Some(DEPLOYMENT), &deployment(), b"{}").unwrap_err();
        assert!(matches!(err, PatchError::ApplyUnsupported));
        assert_eq!(err.http_status(), 415);

        // Custom resources still take merge patches.
        let patched =
            apply_patch(PatchKind::Merge, None, &custom, br#"{"spec":{"size":3}}"#).unwrap();
        assert_eq!(patched["spec"], json!({"size": 3}));
    }

    #[test]
    fn whole_object_directives() {
        let patched = smp(
            CONFIG_MAP,
            &json!({"data": {"a": "1"}}),
            json!({"$patch": "delete"}),
        );
        assert_eq!(patched, json!({}));
        let patched = smp(
            CONFIG_MAP,
            &json!({"data": {"a": "1"}, "metadata": {"name": "c"}}),
            json!({"$patch": "replace", "data": {"b": "2"}}),
        );
        assert_eq!(patched, json!({"data": {"b": "2"}}));
    }

    #[test]
    fn unknown_fields_merge_plainly() {
        let mut original = deployment();
        original["spec"]["extra"] = json!({"list": [1, 2], "map": {"a": 1}});
        let patch = json!({"spec": {"extra": {"list": [3], "map": {"b": 2}}}});
        let patched = smp(DEPLOYMENT, &original, patch);
        assert_eq!(
            patched["spec"]["extra"],
            json!({"list": [3], "map": {"a": 1, "b": 2}})
        );
    }
}
