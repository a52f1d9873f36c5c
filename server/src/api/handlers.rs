//! The verbs on resources: get, list, create, update, patch, delete, deletecollection,
//! and the `status`, `scale` and `finalize` subresources. Watch lives in [`super::watch`].
//!
//! Every write goes the same way: build the new object, [`prepare_create`] or
//! [`prepare_update`] it (defaults, typed round trip, field validation, validation,
//! server-owned metadata), then one store write with the revision read as precondition.
//! Updates computed from the current object (patches, status, scale) retry on a
//! conflict, as upstream's guaranteed update does.

use super::objects::{self, meta, meta_mut, meta_str};
use super::request::{check_type, decode_object, media_type, Target};
use super::selectors::{FieldSelector, LabelSelector};
use super::status::{ApiError, ApiResult, Cause};
use super::{Api, Reply};
use crate::registry::{defaults, validation, Resource};
use crate::store::{self, Entry, WriteOp};
use bytes::Bytes;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// How many times an update computed from the current object is retried on conflict.
/// Every round some writer of the object wins, so only a hot object reaches this; it is
/// a guard against livelock, not a limit clients should meet (upstream has none).
const MAX_RETRIES: usize = 100;

/// Options every write accepts.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// `dryRun=All`: run everything but the write.
    pub dry_run: bool,
    /// `fieldValidation`: `Strict`, `Warn` (default for the API) or `Ignore`.
    pub field_validation: FieldValidation,
}

/// What to do with unknown or duplicate fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FieldValidation {
    /// Fail the request.
    Strict,
    /// Drop them and say so in `Warning` headers (upstream's default).
    #[default]
    Warn,
    /// Drop them silently.
    Ignore,
}

impl WriteOptions {
    /// Reads `dryRun` and `fieldValidation` from the query.
    pub fn from_query(q: &HashMap<String, String>) -> ApiResult<WriteOptions> {
        let dry_run = match q.get("dryRun").map(String::as_str) {
            None | Some("") => false,
            Some("All") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "Invalid dryRun value: {other:?}: supported values: \"All\""
                )))
            }
        };
        let field_validation = match q.get("fieldValidation").map(String::as_str) {
            None | Some("") | Some("Warn") => FieldValidation::Warn,
            Some("Strict") => FieldValidation::Strict,
            Some("Ignore") => FieldValidation::Ignore,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "fieldValidation: Unsupported value: {other:?}: supported values: \"Ignore\", \"Strict\", \"Warn\""
                )))
            }
        };
        Ok(WriteOptions {
            dry_run,
            field_validation,
        })
    }
}

fn object_name(t: &Target) -> &str {
    t.name.as_deref().unwrap_or("")
}

fn parse(entry: &Entry) -> ApiResult<Value> {
    serde_json::from_slice(&entry.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is not JSON: {e}", entry.key)))
}

/// GET of one object (or its status).
pub fn get(api: &Api, t: &Target) -> ApiResult<Entry> {
    let r = t.resource;
    api.store
        .get(&r.key(t.namespace.as_deref(), object_name(t)))
        .ok_or_else(|| ApiError::not_found(r.group, r.plural, object_name(t)))
}

/// Parsed list parameters.
#[derive(Clone)]
pub struct ListQuery {
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// `limit` (0: none).
    pub limit: usize,
    /// The key to continue after, from `continue`.
    pub after: Option<String>,
    /// The revision a `continue` token was issued at.
    pub continue_revision: Option<i64>,
    /// `resourceVersionMatch=Exact`: the revision to list at.
    pub exact_revision: Option<i64>,
    /// The `resourceVersion` asked for: the list must be at least this recent.
    pub min_revision: Option<i64>,
}

impl ListQuery {
    /// Reads selectors and paging from the query.
    pub fn from_query(r: &Resource, q: &HashMap<String, String>) -> ApiResult<ListQuery> {
        let labels = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let fields = FieldSelector::parse(q.get("fieldSelector").map(String::as_str).unwrap_or(""))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        fields
            .check_supported(r.group, r.kind)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let limit = match q.get("limit").map(String::as_str) {
            None | Some("") => 0,
            Some(s) => s
                .parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {s:?}")))?
                .max(0) as usize,
        };
        let (after, continue_revision) = match q.get("continue").map(String::as_str) {
            None | Some("") => (None, None),
            Some(token) => {
                let (rev, key) = decode_continue(token)?;
                (Some(key), Some(rev))
            }
        };
        let rv =
            match q.get("resourceVersion").map(String::as_str) {
                None | Some("") => None,
                Some(s) => Some(s.parse::<i64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version {s:?}"))
                })?),
            };
        let exact_revision = match q.get("resourceVersionMatch").map(String::as_str) {
            None | Some("") | Some("NotOlderThan") => None,
            Some("Exact") => Some(rv.filter(|r| *r > 0).ok_or_else(|| {
                ApiError::bad_request("resourceVersionMatch: Forbidden: resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"\"")
            })?),
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "resourceVersionMatch: Unsupported value: {other:?}: supported values: \"Exact\", \"NotOlderThan\""
                )))
            }
        };
        Ok(ListQuery {
            labels,
            fields,
            limit,
            after,
            continue_revision,
            exact_revision,
            min_revision: rv,
        })
    }

    /// Whether an object passes both selectors.
    pub fn matches(&self, r: &Resource, obj: &Value) -> bool {
        self.labels
            .matches(meta(obj).get("labels").and_then(Value::as_object))
            && self.fields.matches(r.group, r.kind, obj)
    }

    /// Whether a stored object (its JSON) is selected; reads only what selectors read.
    pub fn matches_stored(&self, r: &Resource, json: &[u8]) -> bool {
        !self.filters() || super::selectable::parse(json).is_ok_and(|obj| self.matches(r, &obj))
    }

    /// Whether any selector needs the object decoded.
    pub fn filters(&self) -> bool {
        !self.labels.is_empty() || !self.fields.is_empty()
    }
}

fn encode_continue(revision: i64, key: &str) -> String {
    use base64::Engine;
    let raw = json!({"v": "skiff.continue/v1", "rv": revision, "start": key}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_continue(token: &str) -> ApiResult<(i64, String)> {
    use base64::Engine;
    let bad = || {
        ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version skiff.continue/v1)")
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rev = v.get("rv").and_then(Value::as_i64).ok_or_else(bad)?;
    let key = v.get("start").and_then(Value::as_str).ok_or_else(bad)?;
    Ok((rev, key.to_string()))
}

/// A list result: the entries, the revision and the continue token.
pub struct ListResult {
    /// The matching entries.
    pub items: Vec<Entry>,
    /// The list's resourceVersion.
    pub revision: i64,
    /// The continue token, if the list was cut.
    pub continue_token: Option<String>,
    /// How many items remain after this page.
    pub remaining: Option<usize>,
}

/// LIST.
pub fn list(api: &Api, t: &Target, q: &ListQuery) -> ApiResult<ListResult> {
    let r = t.resource;
    if let Some(rev) = q.continue_revision {
        // The pages of one list share its revision; once history before it is gone the
        // token is too old, as upstream says.
        if rev < api.store.oldest_revision() {
            return Err(ApiError::gone(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
            ));
        }
    }
    let namespace = t
        .namespace
        .clone()
        .or_else(|| q.fields.exact("metadata.namespace").map(String::from));
    let prefix = r.prefix(namespace.as_deref());
    let name = q.fields.exact("metadata.name").map(String::from);
    let keep = |e: &Entry| {
        if let Some(n) = &name {
            if !e.key.ends_with(&format!("/{n}")) {
                return false;
            }
        }
        q.matches_stored(r, &e.value)
    };
    let current = api.store.revision();
    if let Some(min) = q.min_revision.or(q.exact_revision) {
        if min > current {
            return Err(ApiError::timeout(format!(
                "Too large resource version: {min}, current: {current}"
            )));
        }
    }
    let at = match (q.continue_revision, q.exact_revision) {
        (Some(rev), _) | (None, Some(rev)) if rev < current => Some(rev),
        _ => None,
    };
    let page = match at {
        Some(rev) => api.store.list_at(
            &prefix,
            rev,
            q.after.as_deref(),
            q.limit,
            !q.filters(),
            &keep,
        )?,
        None => api
            .store
            .list(&prefix, q.after.as_deref(), q.limit, !q.filters(), &keep),
    };
    let revision = page.revision;
    Ok(ListResult {
        continue_token: page.next.as_ref().map(|k| encode_continue(revision, k)),
        // Upstream gives remainingItemCount only for lists without selectors.
        remaining: page
            .next
            .as_ref()
            .filter(|_| !q.filters())
            .map(|_| page.remaining),
        items: page.items,
        revision,
    })
}

/// Encodes a list as upstream's `<Kind>List`, splicing the stored bytes (no re-encoding).
pub fn encode_list(r: &Resource, res: &ListResult) -> Bytes {
    let mut metadata = Map::new();
    metadata.insert("resourceVersion".into(), res.revision.to_string().into());
    if let Some(c) = &res.continue_token {
        metadata.insert("continue".into(), c.clone().into());
    }
    if let Some(n) = res.remaining {
        metadata.insert("remainingItemCount".into(), n.into());
    }
    let head = json!({
        "kind": format!("{}List", r.kind),
        "apiVersion": r.api_version(),
        "metadata": metadata,
    })
    .to_string();
    let size: usize = res.items.iter().map(|e| e.value.len() + 1).sum();
    let mut out = Vec::with_capacity(head.len() + size + 16);
    // `head` ends with `}`; reopen it to append the items.
    out.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
    out.extend_from_slice(b",\"items\":[");
    for (i, e) in res.items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&e.value);
    }
    out.extend_from_slice(b"]}");
    Bytes::from(out)
}

/// Checks that the namespace exists and is not terminating, for a create in it.
fn check_namespace(api: &Api, r: &Resource, ns: &str, name: &str) -> ApiResult<()> {
    let key = format!("/registry/core/namespaces/{ns}");
    let Some(entry) = api.store.get(&key) else {
        return Err(ApiError::not_found("", "namespaces", ns));
    };
    let obj = parse(&entry)?;
    if !meta_str(&obj, "deletionTimestamp").is_empty() {
        return Err(ApiError::forbidden(
            r.group,
            r.plural,
            name,
            format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ),
        ));
    }
    Ok(())
}

/// The result of preparing a write: the object and any warnings.
pub struct Prepared {
    /// The object to store.
    pub obj: Value,
    /// `Warning` header texts.
    pub warnings: Vec<String>,
}

/// Typed round trip, unknown-field handling and validation, shared by create and update.
/// Folds a Secret's write-only `stringData` into `data` (base64), as upstream's decoding
/// does: `stringData` is never stored or returned.
fn fold_string_data(obj: &mut Value) {
    use base64::Engine;
    let Some(string_data) = obj.as_object_mut().and_then(|o| o.remove("stringData")) else {
        return;
    };
    let Some(entries) = string_data.as_object() else {
        return;
    };
    if !obj.get("data").is_some_and(Value::is_object) {
        obj["data"] = Value::Object(Map::new());
    }
    for (k, v) in entries {
        if let Some(text) = v.as_str() {
            obj["data"][k] = base64::engine::general_purpose::STANDARD
                .encode(text)
                .into();
        }
    }
}

fn normalize(
    r: &Resource,
    mut obj: Value,
    old: Option<&Value>,
    opts: &WriteOptions,
    warnings: &mut Vec<String>,
) -> ApiResult<Value> {
    if r.kind == "Secret" && r.group.is_empty() {
        fold_string_data(&mut obj);
    }
    let name = meta_str(&obj, "name").to_string();
    let mut typed = (r.round_trip)(obj.clone()).map_err(|e| {
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {e}",
            r.kind, r.version, r.kind
        ))
    })?;
    if opts.field_validation != FieldValidation::Ignore {
        let unknown = objects::unknown_fields(&obj, &typed);
        if !unknown.is_empty() {
            if opts.field_validation == FieldValidation::Strict {
                let list: Vec<String> = unknown
                    .iter()
                    .map(|f| format!("unknown field \"{f}\""))
                    .collect();
                return Err(ApiError::bad_request(format!(
                    "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                    r.kind,
                    r.version,
                    r.kind,
                    list.join(", ")
                )));
            }
            warnings.extend(unknown.iter().map(|f| format!("unknown field \"{f}\"")));
        }
    }
    defaults::apply_defaults(r.group, r.kind, &mut typed);
    let mut causes: Vec<Cause> = validation::validate(r.group, r.kind, &typed, old)
        .into_iter()
        .map(|c| Cause {
            reason: c.reason.to_string(),
            message: c.message,
            field: c.field,
        })
        .collect();
    if old.is_none() {
        let name_causes = validation::validate_name(r.group, r.kind, &name)
            .into_iter()
            .map(|msg| Cause {
                reason: "FieldValueInvalid".into(),
                message: format!("Invalid value: {name:?}: {msg}"),
                field: "metadata.name".into(),
            });
        causes.splice(0..0, name_causes);
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid(r.group, r.kind, &name, causes));
    }
    Ok(typed)
}

/// Builds the object a create stores: name, namespace, server-owned metadata, defaults,
/// validation.
pub fn prepare_create(
    api: &Api,
    t: &Target,
    mut obj: Value,
    opts: &WriteOptions,
) -> ApiResult<Prepared> {
    let r = t.resource;
    check_type(r, &mut obj)?;
    let body_ns = meta_str(&obj, "namespace").to_string();
    let namespace = if r.namespaced {
        let ns = t.namespace.clone().unwrap_or_default();
        if !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        Some(ns)
    } else {
        None
    };
    if !meta_str(&obj, "resourceVersion").is_empty() {
        return Err(ApiError::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let mut name = meta_str(&obj, "name").to_string();
    if name.is_empty() {
        let base = meta_str(&obj, "generateName").to_string();
        if base.is_empty() {
            return Err(ApiError::invalid(
                r.group,
                r.kind,
                "",
                vec![Cause {
                    reason: "FieldValueRequired".into(),
                    message: "Required value: name or generateName is required".into(),
                    field: "metadata.name".into(),
                }],
            ));
        }
        name = objects::generate_name(&base);
    }
    if let Some(ns) = &namespace {
        check_namespace(api, r, ns, &name)?;
    }
    {
        let m = meta_mut(&mut obj);
        m.insert("name".into(), name.clone().into());
        match &namespace {
            Some(ns) => m.insert("namespace".into(), ns.clone().into()),
            None => m.remove("namespace"),
        };
        m.insert("uid".into(), uuid::Uuid::new_v4().to_string().into());
        m.insert("creationTimestamp".into(), objects::now_rfc3339().into());
        m.remove("deletionTimestamp");
        m.remove("deletionGracePeriodSeconds");
        m.remove("selfLink");
        if r.status {
            m.insert("generation".into(), 1.into());
        }
    }
    if r.status {
        // Status is the controllers' to write; a create starts from none, as upstream's
        // strategies reset it.
        if let Some(o) = obj.as_object_mut() {
            o.remove("status");
        }
    }
    super::admission::on_create(api, r, &mut obj)?;
    let mut warnings = Vec::new();
    let mut obj = normalize(r, obj, None, opts, &mut warnings)?;
    if r.kind == "Pod" && r.group.is_empty() {
        // A new pod is Pending with its QoS class, as upstream's pod strategy sets it.
        let qos = qos_class(&obj);
        obj["status"] = json!({"phase": "Pending", "qosClass": qos});
    }
    Ok(Prepared { obj, warnings })
}

/// A pod's QoS class from its containers' requests and limits: Guaranteed when every
/// container limits cpu and memory with requests equal to limits, BestEffort when none
/// asks for anything, Burstable otherwise.
pub fn qos_class(pod: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|f| pod.pointer(&format!("/spec/{f}")).and_then(Value::as_array))
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let requests = c.pointer("/resources/requests").and_then(Value::as_object);
        let limits = c.pointer("/resources/limits").and_then(Value::as_object);
        let relevant = |m: Option<&Map<String, Value>>| {
            m.map(|m| {
                m.iter()
                    .filter(|(k, _)| *k == "cpu" || *k == "memory")
                    .count()
            })
            .unwrap_or(0)
        };
        if relevant(requests) > 0 || relevant(limits) > 0 {
            any = true;
        }
        for res in ["cpu", "memory"] {
            let limit = limits.and_then(|l| l.get(res));
            let request = requests.and_then(|r| r.get(res)).or(limit);
            if limit.is_none() || request != limit {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// CREATE.
pub async fn create(
    api: &Api,
    t: &Target,
    body: &[u8],
    content_type: Option<&str>,
    opts: &WriteOptions,
) -> ApiResult<Reply> {
    let r = t.resource;
    if t.name.is_some() {
        return Err(ApiError::method_not_allowed("POST"));
    }
    let obj = decode_object(body, content_type, t.resource.kind)?;
    let prepared = prepare_create(api, t, obj, opts)?;
    let mut obj = prepared.obj;
    let _guard = if r.kind == "Service" && r.group.is_empty() {
        let guard = api.service_lock.lock().await;
        api.allocator.allocate(&api.store, &mut obj)?;
        Some(guard)
    } else {
        None
    };
    let name = meta_str(&obj, "name").to_string();
    if opts.dry_run {
        return Ok(Reply::json(201, &obj).warnings(prepared.warnings));
    }
    let key = r.key(t.namespace.as_deref(), &name);
    let entry = api
        .store
        .write(WriteOp::Create { key, value: obj })
        .await
        .map_err(|e| match e {
            store::Error::AlreadyExists => ApiError::already_exists(r.group, r.plural, &name),
            other => other.into(),
        })?;
    Ok(Reply::raw(201, entry.value).warnings(prepared.warnings))
}

/// Which part of an object an update may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The main resource: everything but status (for kinds with a status subresource).
    Main,
    /// The `status` subresource: only status.
    Status,
    /// The namespace `finalize` subresource: only `spec.finalizers`.
    Finalize,
}

/// Builds the object an update stores from the current one and the one asked for.
/// `None` means nothing would change.
pub fn prepare_update(
    t: &Target,
    old: &Value,
    mut new: Value,
    part: Part,
    opts: &WriteOptions,
) -> ApiResult<Option<Prepared>> {
    let r = t.resource;
    check_type(r, &mut new)?;
    let name = object_name(t);
    let new_name = meta_str(&new, "name");
    if !new_name.is_empty() && new_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({new_name}) does not match the name on the URL ({name})"
        )));
    }
    if r.namespaced {
        let ns = meta_str(&new, "namespace");
        if !ns.is_empty() && Some(ns) != t.namespace.as_deref() {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
    }
    let mut new = match part {
        Part::Main => {
            if r.status {
                copy_field(old, &mut new, "status");
            }
            new
        }
        Part::Status => {
            let mut merged = old.clone();
            copy_field(&new, &mut merged, "status");
            merged
        }
        Part::Finalize => {
            let mut merged = old.clone();
            merged["spec"]["finalizers"] = new
                .get("spec")
                .and_then(|s| s.get("finalizers"))
                .cloned()
                .unwrap_or(Value::Array(vec![]));
            merged
        }
    };
    // Server-owned metadata always comes from the stored object.
    {
        let old_meta = meta(old).clone();
        let m = meta_mut(&mut new);
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "name",
        ] {
            match old_meta.get(field) {
                Some(v) => m.insert(field.into(), v.clone()),
                None => m.remove(field),
            };
        }
        if r.namespaced {
            if let Some(ns) = old_meta.get("namespace") {
                m.insert("namespace".into(), ns.clone());
            }
        } else {
            m.remove("namespace");
        }
        m.remove("selfLink");
        m.remove("resourceVersion");
    }
    if r.kind == "Service" && r.group.is_empty() {
        super::allocator::carry_over(old, &mut new);
    }
    let mut warnings = Vec::new();
    let mut new = normalize(r, new, Some(old), opts, &mut warnings)?;
    if part == Part::Main {
        super::admission::on_update(r, old, &mut new);
    }
    if r.status && part == Part::Main && old.get("spec") != new.get("spec") {
        let generation = meta(old)
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        meta_mut(&mut new).insert("generation".into(), (generation + 1).into());
    }
    if objects::same_but_volatile(old, &new) {
        return Ok(None);
    }
    Ok(Some(Prepared { obj: new, warnings }))
}

/// Makes `to[field]` what `from[field]` is, absent included.
fn copy_field(from: &Value, to: &mut Value, field: &str) {
    match from.get(field) {
        Some(v) => to[field] = v.clone(),
        None => {
            if let Some(o) = to.as_object_mut() {
                o.remove(field);
            }
        }
    }
}

/// Runs an update computed from the current object, computing it again on the newer
/// object after a conflict. A resourceVersion in the computed object is a precondition:
/// one the client sent fails (409) once the object moves on; one a patch carried over
/// from the stored object follows it.
pub async fn guaranteed_update<F>(
    api: &Api,
    t: &Target,
    part: Part,
    opts: &WriteOptions,
    compute: F,
) -> ApiResult<Reply>
where
    F: Fn(&Value) -> ApiResult<Value>,
{
    let r = t.resource;
    let name = object_name(t).to_string();
    let key = r.key(t.namespace.as_deref(), &name);
    for _ in 0..MAX_RETRIES {
        let entry = api
            .store
            .get(&key)
            .ok_or_else(|| ApiError::not_found(r.group, r.plural, &name))?;
        let old = parse(&entry)?;
        let new = compute(&old)?;
        let pinned =
            match meta_str(&new, "resourceVersion") {
                "" => None,
                rv => Some(rv.parse::<i64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))
                })?),
            };
        if let Some(pin) = pinned {
            if pin != entry.revision {
                return Err(ApiError::conflict(
                    r.group,
                    r.plural,
                    &name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                ));
            }
        }
        let Some(mut prepared) = prepare_update(t, &old, new, part, opts)? else {
            return Ok(Reply::raw(200, entry.value));
        };
        let _guard = if r.kind == "Service" && r.group.is_empty() {
            let guard = api.service_lock.lock().await;
            api.allocator
                .allocate_on_update(&api.store, &mut prepared.obj, &key)?;
            Some(guard)
        } else {
            None
        };
        // An object being deleted whose last finalizer is removed goes away now, unless
        // it is a pod still in its grace period: its node's delete (grace 0) ends it.
        let grace = meta(&prepared.obj)
            .get("deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let finishing = !meta_str(&prepared.obj, "deletionTimestamp").is_empty()
            && objects::finalizers(&prepared.obj).is_empty()
            && namespace_finalizers(r, &prepared.obj).is_empty()
            && grace == 0;
        if opts.dry_run {
            return Ok(Reply::json(200, &prepared.obj).warnings(prepared.warnings));
        }
        let op = if finishing {
            WriteOp::Delete {
                key: key.clone(),
                expected: Some(entry.revision),
            }
        } else {
            WriteOp::Update {
                key: key.clone(),
                value: prepared.obj,
                expected: Some(entry.revision),
            }
        };
        match api.store.write(op).await {
            Ok(e) => return Ok(Reply::raw(200, e.value).warnings(prepared.warnings)),
            // Computed again from the newer object: a resourceVersion the client sent
            // then no longer matches (409 above), while one a patch merely carried over
            // from the stored object follows it.
            Err(store::Error::Conflict { .. }) => continue,
            Err(store::Error::NotFound) => {
                return Err(ApiError::not_found(r.group, r.plural, &name))
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::conflict(
        r.group,
        r.plural,
        &name,
        "the object is being modified too often; try again",
    ))
}

fn namespace_finalizers(r: &Resource, obj: &Value) -> Vec<Value> {
    if r.kind != "Namespace" || !r.group.is_empty() {
        return Vec::new();
    }
    obj.get("spec")
        .and_then(|s| s.get("finalizers"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn part_of(t: &Target) -> Part {
    match t.subresource.as_deref() {
        Some("status") => Part::Status,
        Some("finalize") => Part::Finalize,
        _ => Part::Main,
    }
}

/// UPDATE (PUT).
pub async fn update(
    api: &Api,
    t: &Target,
    body: &[u8],
    content_type: Option<&str>,
    opts: &WriteOptions,
) -> ApiResult<Reply> {
    let kind = if t.subresource.as_deref() == Some("scale") {
        "Scale"
    } else {
        t.resource.kind
    };
    let new = decode_object(body, content_type, kind)?;
    if t.subresource.as_deref() == Some("scale") {
        return scale_update(api, t, opts, |_| Ok(new.clone())).await;
    }
    guaranteed_update(api, t, part_of(t), opts, |_| Ok(new.clone())).await
}

/// PATCH.
pub async fn patch(
    api: &Api,
    t: &Target,
    body: &[u8],
    content_type: Option<&str>,
    opts: &WriteOptions,
) -> ApiResult<Reply> {
    use super::patch::{apply_patch, PatchKind};
    let ct = content_type.unwrap_or("");
    let kind = PatchKind::from_content_type(ct)
        .ok_or_else(|| ApiError::unsupported_media_type(&media_type(content_type)))?;
    let patch_err = |e: super::patch::PatchError| {
        let code = e.http_status();
        let msg = e.to_string();
        match code {
            415 => ApiError::unsupported_media_type(ct),
            422 => ApiError::invalid(
                t.resource.group,
                t.resource.kind,
                object_name(t),
                vec![Cause {
                    reason: "FieldValueInvalid".into(),
                    message: msg,
                    field: String::new(),
                }],
            ),
            _ => ApiError::bad_request(msg),
        }
    };
    if t.subresource.as_deref() == Some("scale") {
        return scale_update(api, t, opts, |scale| {
            apply_patch(kind, Some("io.k8s.api.autoscaling.v1.Scale"), scale, body)
                .map_err(patch_err)
        })
        .await;
    }
    let schema = Some(t.resource.schema);
    guaranteed_update(api, t, part_of(t), opts, |cur| {
        apply_patch(kind, schema, cur, body).map_err(patch_err)
    })
    .await
}

/// The `scale` subresource of an object, as `autoscaling/v1` `Scale`.
pub fn scale_of(obj: &Value) -> Value {
    let m = meta(obj);
    let selector = obj
        .pointer("/spec/selector")
        .and_then(|s| LabelSelector::from_object(s).ok())
        .map(|s| s.to_string())
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m.get("name"),
            "namespace": m.get("namespace"),
            "uid": m.get("uid"),
            "resourceVersion": m.get("resourceVersion"),
            "creationTimestamp": m.get("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

async fn scale_update<F>(api: &Api, t: &Target, opts: &WriteOptions, compute: F) -> ApiResult<Reply>
where
    F: Fn(&Value) -> ApiResult<Value>,
{
    let reply = guaranteed_update(api, t, Part::Main, opts, |cur| {
        let scale = compute(&scale_of(cur))?;
        // Go clients omit a zero replicas field; upstream reads it as 0.
        let replicas = match scale.pointer("/spec/replicas") {
            None | Some(Value::Null) => 0,
            Some(v) => v.as_i64().ok_or_else(|| {
                ApiError::bad_request("spec.replicas in a Scale must be an integer")
            })?,
        };
        let mut new = cur.clone();
        new["spec"]["replicas"] = replicas.into();
        if let Some(rv) = scale
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
        {
            meta_mut(&mut new).insert("resourceVersion".into(), rv.into());
        } else {
            meta_mut(&mut new).remove("resourceVersion");
        }
        Ok(new)
    })
    .await?;
    let obj: Value = serde_json::from_slice(&reply.body)
        .map_err(|e| ApiError::internal(format!("encoding scale: {e}")))?;
    Ok(Reply::json(200, &scale_of(&obj)))
}

/// Options of a delete, from the body (`DeleteOptions`) and the query.
#[derive(Debug, Default)]
pub struct DeleteOptions {
    /// `dryRun=All`.
    pub dry_run: bool,
    /// `gracePeriodSeconds`.
    pub grace: Option<i64>,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
    /// `propagationPolicy` (or the older `orphanDependents`).
    pub propagation: Propagation,
}

/// What happens to an object's dependents when it is deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Propagation {
    /// The owner goes now; the garbage collector deletes dependents afterwards.
    #[default]
    Background,
    /// The owner stays (finalizer `foregroundDeletion`) until its blocking dependents are gone.
    Foreground,
    /// The owner stays (finalizer `orphan`) until its dependents no longer point at it.
    Orphan,
}

impl Propagation {
    fn parse(s: &str) -> ApiResult<Propagation> {
        match s {
            "Background" => Ok(Propagation::Background),
            "Foreground" => Ok(Propagation::Foreground),
            "Orphan" => Ok(Propagation::Orphan),
            other => Err(ApiError::bad_request(format!(
                "propagationPolicy: Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
            ))),
        }
    }

    /// The finalizer this policy puts on the owner, if any.
    fn finalizer(self) -> Option<&'static str> {
        match self {
            Propagation::Background => None,
            Propagation::Foreground => Some("foregroundDeletion"),
            Propagation::Orphan => Some("orphan"),
        }
    }
}

impl DeleteOptions {
    /// Reads the options from the body (if any, JSON, YAML or protobuf as its content
    /// type says) and the query (which wins).
    pub fn parse(
        body: &[u8],
        content_type: Option<&str>,
        q: &HashMap<String, String>,
    ) -> ApiResult<DeleteOptions> {
        let mut opts = if body.iter().all(u8::is_ascii_whitespace) {
            DeleteOptions::default()
        } else {
            DeleteOptions::from_value(&decode_object(body, content_type, "DeleteOptions")?)?
        };
        if let Some(p) = q.get("propagationPolicy") {
            opts.propagation = Propagation::parse(p)?;
        }
        if let Some(g) = q.get("gracePeriodSeconds") {
            opts.grace =
                Some(g.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid gracePeriodSeconds {g:?}"))
                })?);
        }
        if q.get("dryRun").is_some_and(|d| d == "All") {
            opts.dry_run = true;
        }
        Ok(opts)
    }

    /// The options a decoded `DeleteOptions` object carries.
    pub fn from_value(v: &Value) -> ApiResult<DeleteOptions> {
        let mut opts = DeleteOptions {
            grace: v.get("gracePeriodSeconds").and_then(Value::as_i64),
            dry_run: v
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|x| x == "All")),
            uid: v
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(String::from),
            resource_version: v
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(String::from),
            propagation: Propagation::default(),
        };
        if v.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
            opts.propagation = Propagation::Orphan;
        }
        if let Some(p) = v.get("propagationPolicy").and_then(Value::as_str) {
            opts.propagation = Propagation::parse(p)?;
        }
        Ok(opts)
    }
}

/// Puts a propagation policy's finalizer on an object being deleted, in place of the
/// other policy's.
fn set_propagation_finalizer(obj: &mut Value, finalizer: &str) {
    let mut list = objects::finalizers(obj);
    list.retain(|x| !matches!(x.as_str(), "foregroundDeletion" | "orphan") || x == finalizer);
    if !list.iter().any(|x| x == finalizer) {
        list.push(finalizer.to_string());
    }
    meta_mut(obj).insert("finalizers".into(), json!(list));
}

/// Namespaces that always exist.
pub const PROTECTED_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

/// DELETE of one object.
pub async fn delete(api: &Api, t: &Target, opts: &DeleteOptions) -> ApiResult<Reply> {
    let r = t.resource;
    let name = object_name(t).to_string();
    let key = r.key(t.namespace.as_deref(), &name);
    if r.kind == "Namespace" && r.group.is_empty() && PROTECTED_NAMESPACES.contains(&name.as_str())
    {
        return Err(ApiError::forbidden(
            r.group,
            r.plural,
            &name,
            "this namespace may not be deleted",
        ));
    }
    for _ in 0..MAX_RETRIES {
        let entry = api
            .store
            .get(&key)
            .ok_or_else(|| ApiError::not_found(r.group, r.plural, &name))?;
        let obj = parse(&entry)?;
        if let Some(uid) = &opts.uid {
            if meta_str(&obj, "uid") != uid {
                return Err(ApiError::conflict(
                    r.group,
                    r.plural,
                    &name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta_str(&obj, "uid")
                    ),
                ));
            }
        }
        if let Some(rv) = &opts.resource_version {
            if *rv != entry.revision.to_string() {
                return Err(ApiError::conflict(r.group, r.plural, &name, &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    entry.revision
                )));
            }
        }
        // Objects with finalizers (and namespaces with spec finalizers) are only marked;
        // whoever owns the finalizer finishes the deletion.
        let graceful = r.kind == "Pod"
            && r.group.is_empty()
            && !obj
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            && opts.grace != Some(0);
        // Foreground and Orphan deletions hand the owner to the garbage collector
        // through a finalizer (pods are never owners that way in practice, but the rule
        // is the same for every kind).
        let propagation_finalizer = opts.propagation.finalizer();
        let marked = !objects::finalizers(&obj).is_empty()
            || !namespace_finalizers(r, &obj).is_empty()
            || graceful
            || propagation_finalizer.is_some();
        if marked {
            let mut new = obj.clone();
            if let Some(f) = propagation_finalizer {
                set_propagation_finalizer(&mut new, f);
            }
            let again = !meta_str(&obj, "deletionTimestamp").is_empty();
            let grace = if again {
                // Deleting again: only a shorter grace period or another propagation
                // policy changes anything, as upstream.
                let current = obj
                    .pointer("/metadata/deletionGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                opts.grace.filter(|g| *g < current)
            } else if graceful {
                Some(
                    opts.grace
                        .or_else(|| {
                            obj.pointer("/spec/terminationGracePeriodSeconds")
                                .and_then(Value::as_i64)
                        })
                        .unwrap_or(30),
                )
            } else {
                Some(0)
            };
            if let Some(grace) = grace {
                objects::mark_deleted(&mut new, grace, jiff::Timestamp::now());
            }
            if again && (new == obj || opts.dry_run) {
                return Ok(Reply::raw(200, entry.value));
            }
            if !again && r.kind == "Namespace" && r.group.is_empty() {
                new["status"]["phase"] = "Terminating".into();
            }
            if opts.dry_run {
                return Ok(Reply::json(200, &new));
            }
            match api
                .store
                .write(WriteOp::Update {
                    key: key.clone(),
                    value: new,
                    expected: Some(entry.revision),
                })
                .await
            {
                Ok(e) => return Ok(Reply::raw(200, e.value)),
                Err(store::Error::Conflict { .. } | store::Error::NotFound) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let deleted = |value: bytes::Bytes| {
            if r.returns_deleted_object() {
                Reply::raw(200, value)
            } else {
                Reply::json(
                    200,
                    &super::status::success(r.group, r.plural, &name, meta_str(&obj, "uid")),
                )
            }
        };
        if opts.dry_run {
            return Ok(deleted(entry.value));
        }
        match api
            .store
            .write(WriteOp::Delete {
                key: key.clone(),
                expected: Some(entry.revision),
            })
            .await
        {
            Ok(e) => return Ok(deleted(e.value)),
            Err(store::Error::Conflict { .. }) => continue,
            Err(store::Error::NotFound) => {
                return Err(ApiError::not_found(r.group, r.plural, &name))
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::conflict(
        r.group,
        r.plural,
        &name,
        "the object is being modified too often; try again",
    ))
}

/// DELETE of a collection: every object the selectors match, each as a single delete.
pub async fn delete_collection(
    api: &Api,
    t: &Target,
    q: &ListQuery,
    opts: &DeleteOptions,
) -> ApiResult<Reply> {
    let r = t.resource;
    let listed = list(api, t, q)?;
    let mut deleted = Vec::new();
    for entry in listed.items {
        let obj = parse(&entry)?;
        let one = Target {
            resource: r,
            namespace: meta(&obj)
                .get("namespace")
                .and_then(Value::as_str)
                .map(String::from),
            name: Some(meta_str(&obj, "name").to_string()),
            subresource: None,
        };
        match delete(api, &one, opts).await {
            Ok(_) => deleted.push(entry.value.clone()),
            Err(e) if e.code == 404 || (e.code == 403 && r.kind == "Namespace") => {}
            Err(e) => return Err(e),
        }
    }
    let result = ListResult {
        items: deleted
            .into_iter()
            .map(|value| Entry {
                key: "".into(),
                value,
                revision: 0,
                create_revision: 0,
            })
            .collect(),
        revision: api.store.revision(),
        continue_token: None,
        remaining: None,
    };
    Ok(Reply::raw(200, encode_list(r, &result)))
}

/// `pods/binding`: assigns a pod to a node, once. The scheduler's only way to place a pod.
pub async fn bind(
    api: &Api,
    t: &Target,
    body: &[u8],
    content_type: Option<&str>,
) -> ApiResult<Reply> {
    let binding = decode_object(body, content_type, "Binding")?;
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::invalid(
                "",
                "Binding",
                object_name(t),
                vec![Cause {
                    reason: "FieldValueRequired".into(),
                    message: "Required value".into(),
                    field: "target.name".into(),
                }],
            )
        })?
        .to_string();
    let name = object_name(t).to_string();
    let key = t.resource.key(t.namespace.as_deref(), &name);
    // Not an update of the pod spec (validation forbids changing nodeName that way): the
    // binding itself is the only writer of nodeName, once, with PodScheduled=True.
    for _ in 0..MAX_RETRIES {
        let entry = api
            .store
            .get(&key)
            .ok_or_else(|| ApiError::not_found("", "pods", &name))?;
        let cur = parse(&entry)?;
        if !meta_str(&cur, "deletionTimestamp").is_empty() {
            return Err(ApiError::conflict(
                "",
                "pods/binding",
                &name,
                &format!("pod {name} is being deleted, cannot be assigned to a host"),
            ));
        }
        let current = cur
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !current.is_empty() {
            return Err(ApiError::conflict(
                "",
                "pods/binding",
                &name,
                &format!("pod {name} is already assigned to node \"{current}\""),
            ));
        }
        let mut new = cur.clone();
        new["spec"]["nodeName"] = node.clone().into();
        set_condition(
            &mut new,
            json!({
                "type": "PodScheduled",
                "status": "True",
                "lastProbeTime": null,
                "lastTransitionTime": objects::now_rfc3339(),
            }),
        );
        match api
            .store
            .write(WriteOp::Update {
                key: key.clone(),
                value: new,
                expected: Some(entry.revision),
            })
            .await
        {
            Ok(_) => {
                return Ok(Reply::json(
                    201,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                ));
            }
            Err(store::Error::Conflict { .. }) => continue,
            Err(store::Error::NotFound) => return Err(ApiError::not_found("", "pods", &name)),
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::conflict(
        "",
        "pods/binding",
        &name,
        "the pod is being modified too often; try again",
    ))
}

/// Sets (replaces by type) a condition in `status.conditions`.
pub fn set_condition(obj: &mut Value, condition: Value) {
    let kind = condition.get("type").cloned();
    if !obj.get("status").is_some_and(Value::is_object) {
        obj["status"] = json!({});
    }
    let conditions = &mut obj["status"]["conditions"];
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    if let Some(list) = conditions.as_array_mut() {
        match list.iter_mut().find(|c| c.get("type") == kind.as_ref()) {
            Some(existing) => *existing = condition,
            None => list.push(condition),
        }
    }
}

/// `pods/eviction`: deletes a pod unless that would take a PodDisruptionBudget covering
/// it below what it allows; then 429, as upstream answers, so `kubectl drain` retries.
pub async fn evict(
    api: &Api,
    t: &Target,
    body: &[u8],
    content_type: Option<&str>,
) -> ApiResult<Reply> {
    let eviction = decode_object(body, content_type, "Eviction")?;
    let name = object_name(t).to_string();
    let ns = t.namespace.clone().unwrap_or_default();
    let pod_target = Target {
        subresource: None,
        ..t.clone()
    };
    let opts = match eviction.get("deleteOptions") {
        Some(d) => DeleteOptions::from_value(d)?,
        None => DeleteOptions::default(),
    };
    let pdbs = crate::registry::find_kind("policy", "PodDisruptionBudget")
        .ok_or_else(|| ApiError::internal("PodDisruptionBudget is not served"))?;
    // Spending a disruption is preconditioned on the budget read; when the disruption
    // controller (or another eviction) wrote it meanwhile, read both again, as
    // upstream retries on conflicts (its EvictionsRetry steps).
    const EVICTION_ATTEMPTS: usize = 5;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let pod = parse(&get(api, &pod_target)?)?;
        let phase = pod
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("");
        // Finished, pending or already-terminating pods do not count against any
        // budget (upstream's canIgnorePDB).
        let ignores_budgets = matches!(phase, "Succeeded" | "Failed" | "Pending")
            || !meta_str(&pod, "deletionTimestamp").is_empty();
        if ignores_budgets {
            break;
        }
        let labels = meta(&pod).get("labels").and_then(Value::as_object).cloned();
        let listed = api
            .store
            .list(&pdbs.prefix(Some(&ns)), None, 0, false, &|_| true);
        let mut covering = Vec::new();
        for e in listed.items {
            let pdb = parse(&e)?;
            let selects = pdb
                .pointer("/spec/selector")
                .and_then(|s| LabelSelector::from_object(s).ok())
                .is_some_and(|s| !s.is_empty() && s.matches(labels.as_ref()));
            if selects {
                covering.push(pdb);
            }
        }
        if covering.len() > 1 {
            return Err(ApiError::internal("This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."));
        }
        let Some(pdb) = covering.first() else {
            break;
        };
        let pdb_name = meta_str(pdb, "name").to_string();
        let status_int = |field: &str| {
            pdb.pointer(&format!("/status/{field}"))
                .and_then(Value::as_i64)
                .unwrap_or(0)
        };
        // An unready pod adds nothing to the budget: it may go when the budget says
        // so (AlwaysAllow) or when the application is healthy anyway (the default,
        // IfHealthyBudget), without spending a disruption.
        let ready = pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        if !ready {
            let policy = pdb
                .pointer("/spec/unhealthyPodEvictionPolicy")
                .and_then(Value::as_str);
            let (current, desired) = (status_int("currentHealthy"), status_int("desiredHealthy"));
            if policy == Some("AlwaysAllow") || (current >= desired && desired > 0) {
                break;
            }
        }
        let processed = pdb
            .pointer("/status/observedGeneration")
            .and_then(Value::as_i64)
            .unwrap_or(-1)
            >= meta(pdb)
                .get("generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
        let allowed = status_int("disruptionsAllowed");
        if !processed || allowed < 1 {
            // Upstream suggests a wait (`Retry-After`, which clients then honour on
            // their own) only while the budget is being processed; a budget with no
            // disruption left is refused at once, and `kubectl drain` retries itself.
            let (detail, retry_after) = if processed {
                let detail = format!(
                    "The disruption budget {pdb_name} needs {} healthy pods and has {} currently",
                    status_int("desiredHealthy"),
                    status_int("currentHealthy")
                );
                (detail, None)
            } else {
                let detail = format!(
                    "The disruption budget {pdb_name} is still being processed by the server."
                );
                (detail, Some(10))
            };
            let mut err = ApiError {
                code: 429,
                reason: "TooManyRequests",
                message: "Cannot evict pod as it would violate the pod's disruption budget.".into(),
                details: None,
                retry_after,
            };
            err.details = Some(Box::new(super::status::Details {
                causes: vec![Cause {
                    reason: "DisruptionBudget".into(),
                    message: detail,
                    field: String::new(),
                }],
                ..Default::default()
            }));
            return Err(err);
        }
        if opts.dry_run {
            break;
        }
        // Spend one disruption before deleting, so concurrent evictions cannot both
        // pass the same budget.
        let pdb_target = Target {
            resource: pdbs,
            namespace: Some(ns.clone()),
            name: Some(pdb_name.clone()),
            subresource: Some("status".into()),
        };
        let pod_name = name.clone();
        let rv = meta_str(pdb, "resourceVersion").to_string();
        let spent = guaranteed_update(
            api,
            &pdb_target,
            Part::Status,
            &WriteOptions::default(),
            |cur| {
                let now = objects::now_rfc3339();
                let mut new = cur.clone();
                new["status"]["disruptionsAllowed"] = (allowed - 1).into();
                if !new["status"]["disruptedPods"].is_object() {
                    new["status"]["disruptedPods"] = json!({});
                }
                new["status"]["disruptedPods"][&pod_name] = now.clone().into();
                if allowed == 1 {
                    // As the disruption controller would put it, until it next looks.
                    let generation = new["status"]["observedGeneration"].clone();
                    if !new["status"]["conditions"].is_array() {
                        new["status"]["conditions"] = json!([]);
                    }
                    if let Some(conds) = new["status"]["conditions"].as_array_mut() {
                        let fresh = json!({
                            "type": "DisruptionAllowed", "status": "False",
                            "reason": "InsufficientPods", "message": "",
                            "observedGeneration": generation, "lastTransitionTime": now,
                        });
                        match conds.iter_mut().find(|c| c["type"] == "DisruptionAllowed") {
                            Some(c) => {
                                let moved = c["status"] != "False";
                                let since = c["lastTransitionTime"].clone();
                                *c = fresh;
                                if !moved {
                                    c["lastTransitionTime"] = since;
                                }
                            }
                            None => conds.push(fresh),
                        }
                    }
                }
                meta_mut(&mut new).insert("resourceVersion".into(), rv.clone().into());
                Ok(new)
            },
        )
        .await;
        match spent {
            Ok(_) => break,
            Err(e) if e.code == 409 && attempt < EVICTION_ATTEMPTS => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) if e.code == 409 => {
                return Err(ApiError {
                    code: 504,
                    reason: "Timeout",
                    message: format!(
                        "couldn't update PodDisruptionBudget {pdb_name:?} due to conflicts"
                    ),
                    details: None,
                    retry_after: Some(10),
                })
            }
            Err(e) => return Err(e),
        }
    }
    delete(api, &pod_target, &opts).await?;
    Ok(Reply::json(
        201,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos_follows_requests_and_limits() {
        let best = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(qos_class(&best), "BestEffort");
        let guaranteed = json!({"spec": {"containers": [{"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        assert_eq!(qos_class(&guaranteed), "Guaranteed");
        let burstable = json!({"spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}}}]}});
        assert_eq!(qos_class(&burstable), "Burstable");
    }

    #[test]
    fn secret_string_data_is_folded_into_data() {
        let mut s = json!({"kind": "Secret", "data": {"a": "eA=="}, "stringData": {"b": "hello"}});
        fold_string_data(&mut s);
        assert_eq!(
            s,
            json!({"kind": "Secret", "data": {"a": "eA==", "b": "aGVsbG8="}})
        );
    }

    #[test]
    fn continue_tokens_round_trip() {
        let token = encode_continue(42, "/registry/core/pods/a/b");
        assert_eq!(
            decode_continue(&token).unwrap(),
            (42, "/registry/core/pods/a/b".to_string())
        );
        assert!(decode_continue("not-a-token!").is_err());
    }
}
