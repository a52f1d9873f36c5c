//! The OpenAPI documents: `/openapi/v2` (one Swagger 2.0 document, as JSON or as the
//! protobuf that kubectl asks for) and `/openapi/v3` (an index of one OpenAPI 3.0 document
//! per group-version). The paths come from [`RESOURCES`], the schemas from
//! [`schema::definitions`]; nothing here is written out by hand.
//!
//! What real kubectl reads, and so what has to be right:
//! - `apply`, `create` and `replace` ask the v3 document of the kind's group-version whether
//!   the server validates fields itself: some PATCH operation carrying the kind's
//!   `x-kubernetes-group-version-kind` must take a `fieldValidation` query parameter listed
//!   inline (kubectl stops at the first such PATCH, so every one here takes it). If not,
//!   kubectl validates on the client against `/openapi/v2`.
//! - `/openapi/v2` is fetched with `Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf`
//!   and decoded as a gnostic `openapi.v2.Document` whatever the response's content type; one
//!   malformed definition fails the command. kubectl 1.32 fetches it for that fallback and
//!   for `explain --output plaintext-openapiv2`; some older releases for every `apply`.
//!   Hence [`OpenApi::v2_protobuf`].
//! - `apply` builds its strategic merge patch from the v3 schema holding the kind's
//!   `x-kubernetes-group-version-kind` (patch extensions included), provided the PATCH
//!   request body lists `application/strategic-merge-patch+json`.
//! - `explain` (v3 since kubectl 1.27) takes the GVK from an operation on the resource's list
//!   or item path, then the schema whose GVK list holds an equal object: operations and
//!   schemas must spell GVKs identically (`group` is `""` for core, never left out).
//!
//! Each document is built on first request and kept only as encoded bytes; the schemas are
//! serialized straight from the shared definitions, never copied into a new tree.
//!
//! [`schema::definitions`]: crate::registry::schema::definitions

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::OnceLock;

use bytes::Bytes;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::registry::{self, schema, Resource, RESOURCES};

/// The content type of [`OpenApi::v2_protobuf`] (upstream's spelling; kubectl asks with
/// `@v1.0` in place of `.v1.0`, and both must be accepted).
pub const V2_PROTOBUF_CONTENT_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

const TITLE: &str = "Kubernetes";
const VERSION: &str = env!("CARGO_PKG_VERSION");

const V2_REF_PREFIX: &str = "#/definitions/";
const V3_REF_PREFIX: &str = "#/components/schemas/";

const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
const WATCH_EVENT: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent";
const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
const SCALE: &str = "io.k8s.api.autoscaling.v1.Scale";

/// What the server answers with and accepts (it speaks no Kubernetes protobuf).
const PRODUCES: &[&str] = &["application/json", "application/yaml"];
/// Lists and watches can also stream.
const PRODUCES_STREAM: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/json;stream=watch",
];
const CONSUMES_ANY: &[&str] = &["*/*"];
/// Server-side apply (`application/apply-patch+yaml`) joins this list once it is served.
const CONSUMES_PATCH: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];

/// The OpenAPI documents, built once on first use and kept encoded.
#[derive(Debug)]
pub struct OpenApi {
    v2: OnceLock<Bytes>,
    v2_protobuf: OnceLock<Bytes>,
    v3: OnceLock<V3Set>,
}

#[derive(Debug)]
struct V3Set {
    index: Bytes,
    docs: Vec<V3Doc>,
}

#[derive(Debug)]
struct V3Doc {
    /// `api/v1` or `apis/<group>/<version>`.
    path: String,
    hash: String,
    body: Bytes,
}

impl OpenApi {
    const fn new() -> Self {
        Self {
            v2: OnceLock::new(),
            v2_protobuf: OnceLock::new(),
            v3: OnceLock::new(),
        }
    }

    /// The Swagger 2.0 document as JSON.
    pub fn v2(&self) -> Bytes {
        self.v2.get_or_init(build_v2_json).clone()
    }

    /// The Swagger 2.0 document as a gnostic `openapi.v2.Document` protobuf, which is what
    /// kubectl requests (see the module docs); serve it with [`V2_PROTOBUF_CONTENT_TYPE`]
    /// when the `Accept` header names `com.github.proto-openapi.spec.v2`.
    pub fn v2_protobuf(&self) -> Bytes {
        self.v2_protobuf.get_or_init(build_v2_protobuf).clone()
    }

    /// The `/openapi/v3` index: each group-version's document path with its hash.
    pub fn v3_index(&self) -> Bytes {
        self.v3_set().index.clone()
    }

    /// One group-version's OpenAPI 3.0 document and its hash, by path (`api/v1`,
    /// `apis/apps/v1`); `None` for a group-version that is not served.
    pub fn v3(&self, path: &str) -> Option<(Bytes, &str)> {
        self.v3_set()
            .docs
            .iter()
            .find(|d| d.path == path)
            .map(|d| (d.body.clone(), d.hash.as_str()))
    }

    fn v3_set(&self) -> &V3Set {
        self.v3.get_or_init(build_v3)
    }
}

/// The process-wide documents; each is built on its first request.
pub fn openapi() -> &'static OpenApi {
    static OPENAPI: OpenApi = OpenApi::new();
    &OPENAPI
}

// ---------------------------------------------------------------------------------------
// The operations, described once and rendered three ways (v2 JSON, v2 protobuf, v3 JSON).
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum In {
    Path,
    Query,
}

impl In {
    fn name(self) -> &'static str {
        match self {
            In::Path => "path",
            In::Query => "query",
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Ty {
    String,
    Boolean,
    Integer,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::String => "string",
            Ty::Boolean => "boolean",
            Ty::Integer => "integer",
        }
    }
}

#[derive(Clone, Debug)]
struct Param {
    name: &'static str,
    location: In,
    ty: Ty,
    description: Cow<'static, str>,
}

impl Param {
    const fn query(name: &'static str, ty: Ty, description: &'static str) -> Self {
        Self {
            name,
            location: In::Query,
            ty,
            description: Cow::Borrowed(description),
        }
    }

    fn path(name: &'static str, description: String) -> Self {
        Self {
            name,
            location: In::Path,
            ty: Ty::String,
            description: Cow::Owned(description),
        }
    }

    /// Path parameters are always required; query parameters never are.
    fn required(&self) -> bool {
        self.location == In::Path
    }
}

const PRETTY: Param = Param::query(
    "pretty",
    Ty::String,
    "If 'true', the output is indented for reading.",
);
const ALLOW_WATCH_BOOKMARKS: Param = Param::query(
    "allowWatchBookmarks",
    Ty::Boolean,
    "Asks a watch for BOOKMARK events, which the server may or may not send.",
);
const CONTINUE: Param = Param::query(
    "continue",
    Ty::String,
    "The token from a previous paginated list, to fetch its next page.",
);
const FIELD_SELECTOR: Param = Param::query(
    "fieldSelector",
    Ty::String,
    "Restricts the objects returned by their fields; all by default.",
);
const LABEL_SELECTOR: Param = Param::query(
    "labelSelector",
    Ty::String,
    "Restricts the objects returned by their labels; all by default.",
);
const LIMIT: Param = Param::query(
    "limit",
    Ty::Integer,
    "The most objects one list response holds; the rest is fetched with continue.",
);
const RESOURCE_VERSION: Param = Param::query(
    "resourceVersion",
    Ty::String,
    "Which version of the data to serve (see resourceVersionMatch); the latest by default.",
);
const RESOURCE_VERSION_MATCH: Param = Param::query(
    "resourceVersionMatch",
    Ty::String,
    "How a list applies resourceVersion: NotOlderThan or Exact.",
);
const SEND_INITIAL_EVENTS: Param = Param::query(
    "sendInitialEvents",
    Ty::Boolean,
    "Starts a watch with an ADDED event per existing object, then a bookmark.",
);
const TIMEOUT_SECONDS: Param = Param::query(
    "timeoutSeconds",
    Ty::Integer,
    "Ends the list or watch call after this many seconds, whatever its activity.",
);
const WATCH: Param = Param::query(
    "watch",
    Ty::Boolean,
    "Streams changes to the objects (added, modified, deleted) instead of listing them.",
);
const DRY_RUN: Param = Param::query(
    "dryRun",
    Ty::String,
    "When present (only All is valid), the change is checked but not stored.",
);
const FIELD_MANAGER: Param = Param::query(
    "fieldManager",
    Ty::String,
    "Names the actor making the change (up to 128 printable characters); required to apply.",
);
const FIELD_VALIDATION: Param = Param::query(
    "fieldValidation",
    Ty::String,
    "What to do with unknown or duplicate fields in the body: Ignore, Warn or Strict.",
);
const FORCE: Param = Param::query(
    "force",
    Ty::Boolean,
    "Applies only: takes over the fields that other managers own.",
);
const GRACE_PERIOD_SECONDS: Param = Param::query(
    "gracePeriodSeconds",
    Ty::Integer,
    "Seconds to wait before the object is deleted; 0 deletes at once.",
);
const ORPHAN_DEPENDENTS: Param = Param::query(
    "orphanDependents",
    Ty::Boolean,
    "Deprecated in favour of propagationPolicy: whether dependents are orphaned.",
);
const PROPAGATION_POLICY: Param = Param::query(
    "propagationPolicy",
    Ty::String,
    "Whether and how dependents are garbage collected: Orphan, Background or Foreground.",
);

/// Every query parameter, each shared by name in the v2 document.
const SHARED_PARAMS: &[Param] = &[
    PRETTY,
    ALLOW_WATCH_BOOKMARKS,
    CONTINUE,
    FIELD_SELECTOR,
    LABEL_SELECTOR,
    LIMIT,
    RESOURCE_VERSION,
    RESOURCE_VERSION_MATCH,
    SEND_INITIAL_EVENTS,
    TIMEOUT_SECONDS,
    WATCH,
    DRY_RUN,
    FIELD_MANAGER,
    FIELD_VALIDATION,
    FORCE,
    GRACE_PERIOD_SECONDS,
    ORPHAN_DEPENDENTS,
    PROPAGATION_POLICY,
];
const LIST_PARAMS: &[Param] = &[
    ALLOW_WATCH_BOOKMARKS,
    CONTINUE,
    FIELD_SELECTOR,
    LABEL_SELECTOR,
    LIMIT,
    RESOURCE_VERSION,
    RESOURCE_VERSION_MATCH,
    SEND_INITIAL_EVENTS,
    TIMEOUT_SECONDS,
    WATCH,
];
const WRITE_PARAMS: &[Param] = &[DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION];
const PATCH_PARAMS: &[Param] = &[DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION, FORCE];
const DELETE_PARAMS: &[Param] = &[
    DRY_RUN,
    GRACE_PERIOD_SECONDS,
    ORPHAN_DEPENDENTS,
    PROPAGATION_POLICY,
];
const DELETE_COLLECTION_PARAMS: &[Param] = &[
    CONTINUE,
    DRY_RUN,
    FIELD_SELECTOR,
    GRACE_PERIOD_SECONDS,
    LABEL_SELECTOR,
    LIMIT,
    ORPHAN_DEPENDENTS,
    PROPAGATION_POLICY,
    RESOURCE_VERSION,
    RESOURCE_VERSION_MATCH,
    SEND_INITIAL_EVENTS,
    TIMEOUT_SECONDS,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Get,
    Put,
    Post,
    Delete,
    Patch,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Put => "put",
            Method::Post => "post",
            Method::Delete => "delete",
            Method::Patch => "patch",
        }
    }

    /// The field of gnostic's `PathItem` that holds this method's operation.
    fn pb_field(self) -> u32 {
        match self {
            Method::Get => 2,
            Method::Put => 3,
            Method::Post => 4,
            Method::Delete => 5,
            Method::Patch => 8,
        }
    }
}

/// Serialized with upstream's (sorted) key order; `group` stays even when empty, because
/// `kubectl explain` compares this object for equality with the schema's.
#[derive(Clone, Copy, Debug, Serialize)]
struct Gvk {
    group: &'static str,
    kind: &'static str,
    version: &'static str,
}

#[derive(Debug)]
struct Body {
    schema: String,
    required: bool,
    consumes: &'static [&'static str],
}

#[derive(Debug)]
struct Response {
    code: &'static str,
    description: &'static str,
    schema: Option<String>,
}

#[derive(Debug)]
struct Operation {
    method: Method,
    action: &'static str,
    id: String,
    description: String,
    gvk: Gvk,
    params: Vec<Param>,
    body: Option<Body>,
    responses: Vec<Response>,
    produces: &'static [&'static str],
}

impl Operation {
    fn consumes(&self) -> &'static [&'static str] {
        self.body.as_ref().map_or(CONSUMES_ANY, |b| b.consumes)
    }
}

#[derive(Debug)]
struct Route {
    path: String,
    /// The group-version's tag, e.g. `apps_v1`.
    tag: String,
    params: Vec<Param>,
    operations: Vec<Operation>,
}

fn ok(schema: &str) -> Response {
    response("200", "OK", Some(schema))
}

fn response(code: &'static str, description: &'static str, schema: Option<&str>) -> Response {
    Response {
        code,
        description,
        schema: schema.map(str::to_string),
    }
}

fn with_unauthorized(mut responses: Vec<Response>) -> Vec<Response> {
    responses.push(response("401", "Unauthorized", None));
    responses
}

/// Names derived from a resource's group-version, in upstream's spelling.
struct Names<'r> {
    r: &'r Resource,
    /// `AppsV1`, `CoreV1`, `RbacAuthorizationV1`: the middle of operation ids.
    gv: String,
    /// `apps_v1`, `core_v1`, `rbacAuthorization_v1`.
    tag: String,
    /// `/apis/apps/v1` or `/api/v1`.
    root: String,
}

impl<'r> Names<'r> {
    fn new(r: &'r Resource) -> Self {
        let group = if r.group.is_empty() {
            "core"
        } else {
            r.group.strip_suffix(".k8s.io").unwrap_or(r.group)
        };
        let mut tag_group = String::new();
        let mut gv = String::new();
        for (i, part) in group.split('.').enumerate() {
            gv.push_str(&capitalize(part));
            if i == 0 {
                tag_group.push_str(part);
            } else {
                tag_group.push_str(&capitalize(part));
            }
        }
        gv.push_str(&capitalize(r.version));
        let root = if r.group.is_empty() {
            format!("/api/{}", r.version)
        } else {
            format!("/apis/{}/{}", r.group, r.version)
        };
        Self {
            r,
            gv,
            tag: format!("{tag_group}_{}", r.version),
            root,
        }
    }

    /// e.g. `readAppsV1NamespacedDeploymentStatus`.
    fn id(&self, verb: &str, suffix: &str) -> String {
        let scope = if self.r.namespaced { "Namespaced" } else { "" };
        format!("{verb}{}{scope}{}{suffix}", self.gv, self.r.kind)
    }
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Every route of one resource, as upstream lays them out.
fn routes(r: &Resource) -> Vec<Route> {
    let n = Names::new(r);
    let kind = r.kind;
    let gvk = Gvk {
        group: r.group,
        version: r.version,
        kind,
    };
    let scale_gvk = Gvk {
        group: "autoscaling",
        version: "v1",
        kind: "Scale",
    };
    let list_schema = format!("{}List", r.schema);
    let ns_segment = if r.namespaced {
        "/namespaces/{namespace}"
    } else {
        ""
    };
    let collection = format!("{}{ns_segment}/{}", n.root, r.plural);
    let item = format!("{collection}/{{name}}");
    let namespace_param =
        || Param::path("namespace", "the namespace the objects live in".to_string());
    let name_param = || Param::path("name", format!("the {kind}'s name"));
    let collection_params = || {
        let mut p = Vec::new();
        if r.namespaced {
            p.push(namespace_param());
        }
        p.push(PRETTY);
        p
    };
    let item_params = || {
        let mut p = vec![name_param()];
        p.extend(collection_params());
        p
    };
    let op = |method, action, id: String, description: String| Operation {
        method,
        action,
        id,
        description,
        gvk,
        params: Vec::new(),
        body: None,
        responses: Vec::new(),
        produces: PRODUCES,
    };
    let list_op = |id: String| Operation {
        params: LIST_PARAMS.to_vec(),
        responses: with_unauthorized(vec![ok(&list_schema)]),
        produces: PRODUCES_STREAM,
        ..op(
            Method::Get,
            "list",
            id,
            format!("list the {kind} objects, or watch them with watch=true"),
        )
    };
    // One read/replace/patch triple, for the object itself or one of its subresources.
    let read_write = |suffix: &str, what: &str, schema: &str, gvk: Gvk| {
        vec![
            Operation {
                responses: with_unauthorized(vec![ok(schema)]),
                gvk,
                ..op(
                    Method::Get,
                    "get",
                    n.id("read", suffix),
                    format!("read {what}one {kind}"),
                )
            },
            Operation {
                params: WRITE_PARAMS.to_vec(),
                body: Some(Body {
                    schema: schema.to_string(),
                    required: true,
                    consumes: CONSUMES_ANY,
                }),
                responses: with_unauthorized(vec![
                    ok(schema),
                    response("201", "Created", Some(schema)),
                ]),
                gvk,
                ..op(
                    Method::Put,
                    "put",
                    n.id("replace", suffix),
                    format!("replace {what}one {kind}"),
                )
            },
            Operation {
                params: PATCH_PARAMS.to_vec(),
                body: Some(Body {
                    schema: PATCH.to_string(),
                    required: true,
                    consumes: CONSUMES_PATCH,
                }),
                responses: with_unauthorized(vec![
                    ok(schema),
                    response("201", "Created", Some(schema)),
                ]),
                gvk,
                ..op(
                    Method::Patch,
                    "patch",
                    n.id("patch", suffix),
                    format!("patch {what}one {kind}"),
                )
            },
        ]
    };
    let watch_op = |id: String, description: String| Operation {
        responses: with_unauthorized(vec![ok(WATCH_EVENT)]),
        produces: PRODUCES_STREAM,
        ..op(Method::Get, "watch", id, description)
    };
    let watch_route = |path: String, mut params: Vec<Param>, operation: Operation| {
        // Upstream hangs the list parameters on watch paths rather than their operations.
        params.extend(LIST_PARAMS.iter().cloned());
        Route {
            path,
            tag: n.tag.clone(),
            params,
            operations: vec![operation],
        }
    };

    let mut item_operations = read_write("", "", r.schema, gvk);
    item_operations.push(Operation {
        params: DELETE_PARAMS.to_vec(),
        body: Some(Body {
            schema: DELETE_OPTIONS.to_string(),
            required: false,
            consumes: CONSUMES_ANY,
        }),
        responses: with_unauthorized(vec![ok(STATUS), response("202", "Accepted", Some(STATUS))]),
        ..op(
            Method::Delete,
            "delete",
            n.id("delete", ""),
            format!("delete one {kind}"),
        )
    });

    let scope = if r.namespaced { "Namespaced" } else { "" };
    let mut out = vec![
        Route {
            path: collection.clone(),
            tag: n.tag.clone(),
            params: collection_params(),
            operations: vec![
                list_op(n.id("list", "")),
                Operation {
                    params: WRITE_PARAMS.to_vec(),
                    body: Some(Body {
                        schema: r.schema.to_string(),
                        required: true,
                        consumes: CONSUMES_ANY,
                    }),
                    responses: with_unauthorized(vec![
                        ok(r.schema),
                        response("201", "Created", Some(r.schema)),
                        response("202", "Accepted", Some(r.schema)),
                    ]),
                    ..op(
                        Method::Post,
                        "post",
                        n.id("create", ""),
                        format!("create one {kind}"),
                    )
                },
                Operation {
                    params: DELETE_COLLECTION_PARAMS.to_vec(),
                    body: Some(Body {
                        schema: DELETE_OPTIONS.to_string(),
                        required: false,
                        consumes: CONSUMES_ANY,
                    }),
                    responses: with_unauthorized(vec![ok(STATUS)]),
                    ..op(
                        Method::Delete,
                        "deletecollection",
                        format!("delete{}Collection{scope}{kind}", n.gv),
                        format!("delete the {kind} objects the selectors match"),
                    )
                },
            ],
        },
        Route {
            path: item.clone(),
            tag: n.tag.clone(),
            params: item_params(),
            operations: item_operations,
        },
    ];
    if r.status {
        out.push(Route {
            path: format!("{item}/status"),
            tag: n.tag.clone(),
            params: item_params(),
            operations: read_write("Status", "the status of ", r.schema, gvk),
        });
    }
    if r.scale {
        out.push(Route {
            path: format!("{item}/scale"),
            tag: n.tag.clone(),
            params: item_params(),
            operations: read_write("Scale", "the scale of ", SCALE, scale_gvk),
        });
    }
    if r.namespaced {
        out.push(Route {
            path: format!("{}/{}", n.root, r.plural),
            tag: n.tag.clone(),
            params: vec![PRETTY],
            operations: vec![list_op(format!("list{}{kind}ForAllNamespaces", n.gv))],
        });
    }
    let watch_collection = format!("{}/watch{ns_segment}/{}", n.root, r.plural);
    out.push(watch_route(
        watch_collection.clone(),
        collection_params(),
        watch_op(
            n.id("watch", "List"),
            format!("watch changes to a list of {kind}; deprecated: list with watch=true"),
        ),
    ));
    out.push(watch_route(
        format!("{watch_collection}/{{name}}"),
        item_params(),
        watch_op(
            n.id("watch", ""),
            format!(
                "watch changes to one {kind}; deprecated: list with watch=true and a \
                 fieldSelector on metadata.name"
            ),
        ),
    ));
    if r.namespaced {
        out.push(watch_route(
            format!("{}/watch/{}", n.root, r.plural),
            vec![PRETTY],
            watch_op(
                format!("watch{}{kind}ListForAllNamespaces", n.gv),
                format!("watch changes to a list of {kind} in all namespaces; deprecated"),
            ),
        ));
    }
    out
}

/// The routes of every resource of one group-version.
fn group_routes(group: &str, version: &str) -> Vec<Route> {
    RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .flat_map(routes)
        .collect()
}

fn all_routes() -> Vec<Route> {
    registry::groups()
        .into_iter()
        .flat_map(|(g, v)| group_routes(g, v))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Rendering the routes as JSON, straight from the descriptions (no intermediate tree).
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flavor {
    V2,
    V3,
}

/// A reference to a definition, or a bare object schema when the definitions lack it, so
/// that a gap there never yields a dangling `$ref`.
struct SchemaRef<'a> {
    name: &'a str,
    flavor: Flavor,
}

impl Serialize for SchemaRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut m = serializer.serialize_map(Some(1))?;
        if schema::definitions().contains_key(self.name) {
            let prefix = match self.flavor {
                Flavor::V2 => V2_REF_PREFIX,
                Flavor::V3 => V3_REF_PREFIX,
            };
            m.serialize_entry("$ref", &format_args!("{prefix}{}", self.name))?;
        } else {
            m.serialize_entry("type", "object")?;
        }
        m.end()
    }
}

struct Paths<'a>(&'a [Route], Flavor);

impl Serialize for Paths<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut m = serializer.serialize_map(Some(self.0.len()))?;
        for route in self.0 {
            m.serialize_entry(&route.path, &PathItem(route, self.1))?;
        }
        m.end()
    }
}

struct PathItem<'a>(&'a Route, Flavor);

impl Serialize for PathItem<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Self(route, flavor) = *self;
        let mut m = serializer.serialize_map(None)?;
        for op in &route.operations {
            m.serialize_entry(op.method.name(), &Op { route, op, flavor })?;
        }
        if !route.params.is_empty() {
            let params = Params {
                params: &route.params,
                body: None,
                flavor,
            };
            m.serialize_entry("parameters", &params)?;
        }
        m.end()
    }
}

struct Params<'a> {
    params: &'a [Param],
    /// Only v2 lists the body among the parameters.
    body: Option<&'a Body>,
    flavor: Flavor,
}

impl Serialize for Params<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(None)?;
        if let Some(body) = self.body {
            seq.serialize_element(&BodyParam(body))?;
        }
        for param in self.params {
            // v2 refers to one shared definition per query parameter, as upstream does:
            // it keeps the document at half the size. kubectl's v3 check for
            // `fieldValidation` reads only inline parameters, so v3 spells them out.
            if self.flavor == Flavor::V2 && param.location == In::Query {
                seq.serialize_element(&json!({ "$ref": format!("#/parameters/{}", param.name) }))?;
            } else {
                seq.serialize_element(&ParamDef(param, self.flavor))?;
            }
        }
        seq.end()
    }
}

struct ParamDef<'a>(&'a Param, Flavor);

impl Serialize for ParamDef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Self(p, flavor) = *self;
        let mut m = serializer.serialize_map(None)?;
        m.serialize_entry("name", p.name)?;
        m.serialize_entry("in", p.location.name())?;
        m.serialize_entry("description", &p.description)?;
        if p.required() {
            m.serialize_entry("required", &true)?;
        }
        match flavor {
            Flavor::V2 => m.serialize_entry("type", p.ty.name())?,
            Flavor::V3 => m.serialize_entry("schema", &json!({ "type": p.ty.name() }))?,
        }
        m.end()
    }
}

/// The v2 `parameters` section: every query parameter, by name.
struct SharedParams;

impl Serialize for SharedParams {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut m = serializer.serialize_map(Some(SHARED_PARAMS.len()))?;
        for p in SHARED_PARAMS {
            m.serialize_entry(p.name, &ParamDef(p, Flavor::V2))?;
        }
        m.end()
    }
}

struct BodyParam<'a>(&'a Body);

impl Serialize for BodyParam<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut m = serializer.serialize_map(None)?;
        m.serialize_entry("name", "body")?;
        m.serialize_entry("in", "body")?;
        if self.0.required {
            m.serialize_entry("required", &true)?;
        }
        let schema = SchemaRef {
            name: &self.0.schema,
            flavor: Flavor::V2,
        };
        m.serialize_entry("schema", &schema)?;
        m.end()
    }
}

struct Op<'a> {
    route: &'a Route,
    op: &'a Operation,
    flavor: Flavor,
}

impl Serialize for Op<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Self { route, op, flavor } = *self;
        let mut m = serializer.serialize_map(None)?;
        m.serialize_entry("tags", &[&route.tag])?;
        m.serialize_entry("description", &op.description)?;
        m.serialize_entry("operationId", &op.id)?;
        if flavor == Flavor::V2 {
            m.serialize_entry("consumes", op.consumes())?;
            m.serialize_entry("produces", op.produces)?;
            m.serialize_entry("schemes", &["https"])?;
        }
        let body = op.body.as_ref().filter(|_| flavor == Flavor::V2);
        if !op.params.is_empty() || body.is_some() {
            let params = Params {
                params: &op.params,
                body,
                flavor,
            };
            m.serialize_entry("parameters", &params)?;
        }
        if let (Some(body), Flavor::V3) = (&op.body, flavor) {
            m.serialize_entry("requestBody", &RequestBody(body))?;
        }
        m.serialize_entry("responses", &Responses(op, flavor))?;
        m.serialize_entry("x-kubernetes-action", op.action)?;
        m.serialize_entry("x-kubernetes-group-version-kind", &op.gvk)?;
        m.end()
    }
}

struct RequestBody<'a>(&'a Body);

impl Serialize for RequestBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut m = serializer.serialize_map(None)?;
        m.serialize_entry("content", &Content(&self.0.schema, self.0.consumes))?;
        if self.0.required {
            m.serialize_entry("required", &true)?;
        }
        m.end()
    }
}

/// A v3 `content` map: the same schema under each media type.
struct Content<'a>(&'a str, &'a [&'a str]);

impl Serialize for Content<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct MediaType<'a> {
            schema: SchemaRef<'a>,
        }
        let mut m = serializer.serialize_map(Some(self.1.len()))?;
        for media_type in self.1 {
            let schema = SchemaRef {
                name: self.0,
                flavor: Flavor::V3,
            };
            m.serialize_entry(media_type, &MediaType { schema })?;
        }
        m.end()
    }
}

struct Responses<'a>(&'a Operation, Flavor);

impl Serialize for Responses<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Self(op, flavor) = *self;
        let mut m = serializer.serialize_map(Some(op.responses.len()))?;
        for resp in &op.responses {
            m.serialize_entry(resp.code, &ResponseOut(resp, op.produces, flavor))?;
        }
        m.end()
    }
}

struct ResponseOut<'a>(&'a Response, &'a [&'a str], Flavor);

impl Serialize for ResponseOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Self(resp, produces, flavor) = *self;
        let mut m = serializer.serialize_map(None)?;
        m.serialize_entry("description", resp.description)?;
        if let Some(name) = &resp.schema {
            match flavor {
                Flavor::V2 => m.serialize_entry("schema", &SchemaRef { name, flavor })?,
                Flavor::V3 => m.serialize_entry("content", &Content(name, produces))?,
            }
        }
        m.end()
    }
}

/// Every definition reachable from `roots`, sorted by name.
fn closure<'a>(roots: impl IntoIterator<Item = &'a str>) -> BTreeSet<&'static str> {
    let defs = schema::definitions();
    let mut seen = BTreeSet::new();
    let mut stack: Vec<&'static str> = roots
        .into_iter()
        .filter_map(|n| defs.get_key_value(n).map(|(k, _)| k.as_str()))
        .collect();
    while let Some(name) = stack.pop() {
        if !seen.insert(name) {
            continue;
        }
        if let Some(def) = defs.get(name) {
            visit_refs(def, &mut |target| {
                if let Some((k, _)) = defs.get_key_value(target) {
                    if !seen.contains(k.as_str()) {
                        stack.push(k.as_str());
                    }
                }
            });
        }
    }
    seen
}

/// Calls `f` with the definition name of every v2 `$ref` in `value`.
fn visit_refs<'v>(value: &'v Value, f: &mut impl FnMut(&'v str)) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::String(s) if k == "$ref" => {
                        if let Some(name) = s.strip_prefix(V2_REF_PREFIX) {
                            f(name);
                        }
                    }
                    _ => visit_refs(v, f),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| visit_refs(v, f)),
        _ => {}
    }
}

/// Serializes into an exactly sized buffer: the documents live as long as the process, and
/// a buffer grown by doubling would leave up to half of it unused.
fn encode_json(value: &impl Serialize) -> Bytes {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    const INFALLIBLE: &str = "the documents hold only JSON values and strings";
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).expect(INFALLIBLE);
    let mut out = Vec::with_capacity(count.0);
    serde_json::to_writer(&mut out, value).expect(INFALLIBLE);
    Bytes::from(out)
}

#[derive(Serialize)]
struct Info {
    title: &'static str,
    version: &'static str,
}

const INFO: Info = Info {
    title: TITLE,
    version: VERSION,
};

// ---------------------------------------------------------------------------------------
// Swagger 2.0 as JSON.
// ---------------------------------------------------------------------------------------

#[derive(Serialize)]
struct SwaggerDocument<'a> {
    swagger: &'static str,
    info: Info,
    paths: Paths<'a>,
    parameters: SharedParams,
    definitions: &'a Map<String, Value>,
}

fn build_v2_json() -> Bytes {
    let routes = all_routes();
    encode_json(&SwaggerDocument {
        swagger: "2.0",
        info: INFO,
        paths: Paths(&routes, Flavor::V2),
        parameters: SharedParams,
        definitions: schema::definitions(),
    })
}

// ---------------------------------------------------------------------------------------
// OpenAPI 3.0.
// ---------------------------------------------------------------------------------------

/// A v2 schema written out as OpenAPI 3.0: `$ref`s point into `components/schemas`, and a
/// `$ref` with siblings (a description, patch extensions) moves into a one-element `allOf`,
/// since 3.0 ignores a reference's siblings. kubectl's v3 patch metadata reads the
/// extensions from the outer object and follows `allOf[0]`.
struct V3Schema<'a>(&'a Value);

impl Serialize for V3Schema<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(map) => {
                let reference = map.get("$ref").and_then(Value::as_str);
                let wrap = reference.is_some() && map.len() > 1;
                let mut out = serializer.serialize_map(Some(map.len()))?;
                for (k, v) in map {
                    match (k.as_str(), reference) {
                        ("$ref", Some(r)) if wrap => {
                            out.serialize_entry("allOf", &[json!({ "$ref": v3_ref(r) })])?;
                        }
                        ("$ref", Some(r)) => out.serialize_entry(k, &v3_ref(r))?,
                        _ => out.serialize_entry(k, &V3Schema(v))?,
                    }
                }
                out.end()
            }
            Value::Array(items) => {
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for v in items {
                    out.serialize_element(&V3Schema(v))?;
                }
                out.end()
            }
            other => other.serialize(serializer),
        }
    }
}

fn v3_ref(r: &str) -> Cow<'_, str> {
    match r.strip_prefix(V2_REF_PREFIX) {
        Some(name) => Cow::Owned(format!("{V3_REF_PREFIX}{name}")),
        None => Cow::Borrowed(r),
    }
}

struct V3Schemas(BTreeSet<&'static str>);

impl Serialize for V3Schemas {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let defs = schema::definitions();
        let mut out = serializer.serialize_map(Some(self.0.len()))?;
        for name in &self.0 {
            if let Some(def) = defs.get(*name) {
                out.serialize_entry(name, &V3Schema(def))?;
            }
        }
        out.end()
    }
}

#[derive(Serialize)]
struct Components {
    schemas: V3Schemas,
}

#[derive(Serialize)]
struct OpenApiDocument<'a> {
    openapi: &'static str,
    info: Info,
    paths: Paths<'a>,
    components: Components,
}

/// The schema names the routes name directly.
fn route_schemas(routes: &[Route]) -> Vec<&str> {
    routes
        .iter()
        .flat_map(|route| &route.operations)
        .flat_map(|op| {
            op.responses
                .iter()
                .filter_map(|r| r.schema.as_deref())
                .chain(op.body.as_ref().map(|b| b.schema.as_str()))
        })
        .collect()
}

fn build_v3() -> V3Set {
    let mut docs = Vec::new();
    for (group, version) in registry::groups() {
        let routes = group_routes(group, version);
        let schemas = closure(route_schemas(&routes));
        let doc = OpenApiDocument {
            openapi: "3.0.0",
            info: INFO,
            paths: Paths(&routes, Flavor::V3),
            components: Components {
                schemas: V3Schemas(schemas),
            },
        };
        let body = encode_json(&doc);
        let path = if group.is_empty() {
            format!("api/{version}")
        } else {
            format!("apis/{group}/{version}")
        };
        docs.push(V3Doc {
            path,
            hash: hash(&body),
            body,
        });
    }
    let paths: Map<String, Value> = docs
        .iter()
        .map(|d| {
            let url = format!("/openapi/v3/{}?hash={}", d.path, d.hash);
            (d.path.clone(), json!({ "serverRelativeURL": url }))
        })
        .collect();
    let index = encode_json(&json!({ "paths": paths }));
    V3Set { index, docs }
}

/// Upper-case hex SHA-256, as upstream spells its (SHA-512) hashes.
fn hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(digest.len() * 2);
    for b in digest {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02X}");
    }
    out
}

// ---------------------------------------------------------------------------------------
// Swagger 2.0 as gnostic protobuf (`openapi.v2.Document` of github.com/google/gnostic).
// Only the fields the documents use are written. Vendor extensions, defaults, enums and
// examples are `Any { yaml }`; JSON is valid YAML, so they carry their JSON text.
// ---------------------------------------------------------------------------------------

/// A protobuf message being written.
#[derive(Default)]
struct Pb(Vec<u8>);

impl Pb {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u8) {
        self.varint(u64::from(field) << 3 | u64::from(wire));
    }

    fn string(&mut self, field: u32, s: &str) {
        self.bytes(field, s.as_bytes());
    }

    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    fn bool(&mut self, field: u32, b: bool) {
        self.key(field, 0);
        self.varint(u64::from(b));
    }

    fn int64(&mut self, field: u32, v: i64) {
        self.key(field, 0);
        // Negative numbers take ten bytes, as int64 (not sint64) is defined.
        self.varint(v as u64);
    }

    fn double(&mut self, field: u32, v: f64) {
        self.key(field, 1);
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn message(&mut self, field: u32, build: impl FnOnce(&mut Pb)) {
        let mut inner = Pb::default();
        build(&mut inner);
        self.bytes(field, &inner.0);
    }

    /// An `Any` holding a JSON value as its YAML text.
    fn any(&mut self, field: u32, v: &Value) {
        self.message(field, |m| m.string(2, &v.to_string()));
    }

    /// A `NamedAny` vendor extension.
    fn extension(&mut self, field: u32, name: &str, v: &Value) {
        self.message(field, |m| {
            m.string(1, name);
            m.any(2, v);
        });
    }
}

/// Writes the fields of a gnostic `Schema` from a v2 JSON schema. Keys gnostic has no field
/// for are dropped. kubectl rejects a reference that also has a type or properties, and any
/// schema with more than one type, so `null` types and a reference's siblings of that kind
/// are left out.
fn pb_schema(pb: &mut Pb, schema: &Value) {
    let Value::Object(map) = schema else {
        return;
    };
    let is_ref = map.get("$ref").is_some_and(Value::is_string);
    for (k, v) in map {
        match (k.as_str(), v) {
            ("$ref", Value::String(s)) => pb.string(1, s),
            ("format", Value::String(s)) => pb.string(2, s),
            ("title", Value::String(s)) => pb.string(3, s),
            ("description", Value::String(s)) => pb.string(4, s),
            ("default", v) => pb.any(5, v),
            ("multipleOf", Value::Number(n)) => pb.double(6, n.as_f64().unwrap_or_default()),
            ("maximum", Value::Number(n)) => pb.double(7, n.as_f64().unwrap_or_default()),
            ("exclusiveMaximum", Value::Bool(b)) => pb.bool(8, *b),
            ("minimum", Value::Number(n)) => pb.double(9, n.as_f64().unwrap_or_default()),
            ("exclusiveMinimum", Value::Bool(b)) => pb.bool(10, *b),
            ("maxLength", Value::Number(n)) => pb.int64(11, as_i64(n)),
            ("minLength", Value::Number(n)) => pb.int64(12, as_i64(n)),
            ("pattern", Value::String(s)) => pb.string(13, s),
            ("maxItems", Value::Number(n)) => pb.int64(14, as_i64(n)),
            ("minItems", Value::Number(n)) => pb.int64(15, as_i64(n)),
            ("uniqueItems", Value::Bool(b)) => pb.bool(16, *b),
            ("maxProperties", Value::Number(n)) => pb.int64(17, as_i64(n)),
            ("minProperties", Value::Number(n)) => pb.int64(18, as_i64(n)),
            ("required", Value::Array(names)) => {
                for name in names.iter().filter_map(Value::as_str) {
                    pb.string(19, name);
                }
            }
            ("enum", Value::Array(values)) => values.iter().for_each(|v| pb.any(20, v)),
            ("additionalProperties", Value::Bool(b)) => pb.message(21, |m| m.bool(2, *b)),
            ("additionalProperties", v @ Value::Object(_)) => {
                pb.message(21, |m| m.message(1, |s| pb_schema(s, v)));
            }
            ("type", v) if !is_ref => pb.message(22, |m| {
                let types = match v {
                    Value::Array(types) => types.iter().filter_map(Value::as_str).collect(),
                    Value::String(t) => vec![t.as_str()],
                    _ => Vec::new(),
                };
                for t in types.into_iter().filter(|t| *t != "null").take(1) {
                    m.string(1, t);
                }
            }),
            ("items", Value::Array(items)) => pb.message(23, |m| {
                for item in items {
                    m.message(1, |s| pb_schema(s, item));
                }
            }),
            ("items", v @ Value::Object(_)) => {
                pb.message(23, |m| m.message(1, |s| pb_schema(s, v)));
            }
            ("allOf", Value::Array(all)) => {
                for s in all {
                    pb.message(24, |m| pb_schema(m, s));
                }
            }
            ("properties", Value::Object(props)) if !is_ref => pb.message(25, |m| {
                for (name, prop) in props {
                    m.message(1, |named| {
                        named.string(1, name);
                        named.message(2, |s| pb_schema(s, prop));
                    });
                }
            }),
            ("discriminator", Value::String(s)) => pb.string(26, s),
            ("readOnly", Value::Bool(b)) => pb.bool(27, *b),
            ("example", v) => pb.any(30, v),
            (k, v) if k.starts_with("x-") => pb.extension(31, k, v),
            _ => {}
        }
    }
}

fn as_i64(n: &serde_json::Number) -> i64 {
    n.as_i64()
        .or_else(|| n.as_f64().map(|f| f as i64))
        .unwrap_or_default()
}

/// A `Schema` that references `name`, or a bare object when the definitions lack it.
fn pb_schema_ref(pb: &mut Pb, name: &str) {
    if schema::definitions().contains_key(name) {
        pb.string(1, &format!("{V2_REF_PREFIX}{name}"));
    } else {
        pb.message(22, |t| t.string(1, "object"));
    }
}

/// A `ParametersItem`: a reference to the shared definition of a query parameter, or a
/// path parameter in full.
fn pb_param(pb: &mut Pb, field: u32, p: &Param) {
    pb.message(field, |item| match p.location {
        In::Query => item.message(2, |r| r.string(1, &format!("#/parameters/{}", p.name))),
        In::Path => item.message(1, |param| pb_param_def(param, p)),
    });
}

/// A `Parameter` holding a non-body parameter.
fn pb_param_def(pb: &mut Pb, p: &Param) {
    pb.message(2, |non_body| {
        // Query and path sub-schemas number their fields alike up to `name`; `type`
        // follows `allow_empty_value` in the query one only.
        let (variant, type_field) = match p.location {
            In::Query => (3, 6),
            In::Path => (4, 5),
        };
        non_body.message(variant, |s| {
            if p.required() {
                s.bool(1, true);
            }
            s.string(2, p.location.name());
            s.string(3, &p.description);
            s.string(4, p.name);
            s.string(type_field, p.ty.name());
        });
    });
}

fn pb_operation(pb: &mut Pb, tag: &str, op: &Operation) {
    pb.string(1, tag);
    pb.string(3, &op.description);
    pb.string(5, &op.id);
    for t in op.produces {
        pb.string(6, t);
    }
    for t in op.consumes() {
        pb.string(7, t);
    }
    if let Some(body) = &op.body {
        pb.message(8, |item| {
            item.message(1, |param| {
                param.message(1, |b| {
                    b.string(2, "body");
                    b.string(3, "body");
                    if body.required {
                        b.bool(4, true);
                    }
                    b.message(5, |s| pb_schema_ref(s, &body.schema));
                });
            });
        });
    }
    for p in &op.params {
        pb_param(pb, 8, p);
    }
    pb.message(9, |responses| {
        for resp in &op.responses {
            responses.message(1, |named| {
                named.string(1, resp.code);
                named.message(2, |value| {
                    value.message(1, |r| {
                        r.string(1, resp.description);
                        if let Some(s) = &resp.schema {
                            r.message(2, |item| item.message(1, |m| pb_schema_ref(m, s)));
                        }
                    });
                });
            });
        }
    });
    pb.string(10, "https");
    pb.extension(13, "x-kubernetes-action", &Value::from(op.action));
    pb.extension(13, "x-kubernetes-group-version-kind", &json!(op.gvk));
}

fn build_v2_protobuf() -> Bytes {
    let routes = all_routes();
    let mut doc = Pb::default();
    doc.string(1, "2.0");
    doc.message(2, |info| {
        info.string(1, TITLE);
        info.string(2, VERSION);
    });
    doc.message(8, |paths| {
        for route in &routes {
            paths.message(2, |named| {
                named.string(1, &route.path);
                named.message(2, |item| {
                    for op in &route.operations {
                        item.message(op.method.pb_field(), |o| pb_operation(o, &route.tag, op));
                    }
                    for p in &route.params {
                        pb_param(item, 9, p);
                    }
                });
            });
        }
    });
    drop(routes);
    doc.message(10, |params| {
        for p in SHARED_PARAMS {
            params.message(1, |named| {
                named.string(1, p.name);
                named.message(2, |param| pb_param_def(param, p));
            });
        }
    });
    doc.message(9, |defs| {
        for (name, def) in schema::definitions() {
            defs.message(1, |named| {
                named.string(1, name);
                named.message(2, |s| pb_schema(s, def));
            });
        }
    });
    let mut out = doc.0;
    out.shrink_to_fit();
    Bytes::from(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashSet};

    fn parse(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    fn v2() -> Value {
        parse(&openapi().v2())
    }

    fn gv_path(group: &str, version: &str) -> String {
        if group.is_empty() {
            format!("api/{version}")
        } else {
            format!("apis/{group}/{version}")
        }
    }

    fn v3_for(r: &Resource) -> Value {
        parse(&openapi().v3(&gv_path(r.group, r.version)).unwrap().0)
    }

    fn v3_all() -> Vec<(String, Value)> {
        registry::groups()
            .into_iter()
            .map(|(g, v)| {
                let path = gv_path(g, v);
                let doc = parse(&openapi().v3(&path).unwrap().0);
                (path, doc)
            })
            .collect()
    }

    fn collect_refs<'v>(value: &'v Value, out: &mut Vec<&'v str>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    match v {
                        Value::String(s) if k == "$ref" => out.push(s),
                        _ => collect_refs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }

    fn gvk(group: &str, version: &str, kind: &str) -> Value {
        json!({ "group": group, "kind": kind, "version": version })
    }

    /// The paths and methods upstream serves for a resource.
    fn expected_paths(r: &Resource) -> Vec<(String, Vec<&'static str>)> {
        let root = format!("/{}", gv_path(r.group, r.version));
        let ns = if r.namespaced {
            "/namespaces/{namespace}"
        } else {
            ""
        };
        let collection = format!("{root}{ns}/{}", r.plural);
        let item = format!("{collection}/{{name}}");
        let mut out = vec![
            (collection, vec!["get", "post", "delete"]),
            (item.clone(), vec!["get", "put", "patch", "delete"]),
            (format!("{root}/watch{ns}/{}", r.plural), vec!["get"]),
            (
                format!("{root}/watch{ns}/{}/{{name}}", r.plural),
                vec!["get"],
            ),
        ];
        if r.status {
            out.push((format!("{item}/status"), vec!["get", "put", "patch"]));
        }
        if r.scale {
            out.push((format!("{item}/scale"), vec!["get", "put", "patch"]));
        }
        if r.namespaced {
            out.push((format!("{root}/{}", r.plural), vec!["get"]));
            out.push((format!("{root}/watch/{}", r.plural), vec!["get"]));
        }
        out
    }

    #[test]
    fn documents_parse_as_json() {
        assert_eq!(v2()["swagger"], "2.0");
        let index = parse(&openapi().v3_index());
        assert!(index["paths"].is_object());
        for (_, doc) in v3_all() {
            assert_eq!(doc["openapi"], "3.0.0");
            assert!(doc["components"]["schemas"].is_object());
        }
        assert!(openapi().v3("apis/nonexistent/v1").is_none());
    }

    #[test]
    fn v2_refs_resolve() {
        let doc = v2();
        let defs = doc["definitions"].as_object().unwrap();
        let params = doc["parameters"].as_object().unwrap();
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            if let Some(name) = r.strip_prefix("#/parameters/") {
                assert_eq!(params[name]["name"], name);
                assert_eq!(params[name]["in"], "query");
                continue;
            }
            let name = r.strip_prefix("#/definitions/").unwrap();
            assert!(defs.contains_key(name), "dangling {r}");
        }
    }

    #[test]
    fn v3_refs_resolve_into_components() {
        for (path, doc) in v3_all() {
            let schemas = doc["components"]["schemas"].as_object().unwrap();
            let mut refs = Vec::new();
            collect_refs(&doc, &mut refs);
            assert!(!refs.is_empty());
            for r in refs {
                let name = r
                    .strip_prefix("#/components/schemas/")
                    .unwrap_or_else(|| panic!("{path}: v2 style ref {r}"));
                assert!(schemas.contains_key(name), "{path}: dangling {r}");
            }
        }
    }

    #[test]
    fn every_resource_has_its_paths() {
        let doc = v2();
        for r in RESOURCES {
            let v3 = v3_for(r);
            for (path, methods) in expected_paths(r) {
                for d in [&doc, &v3] {
                    let item = d["paths"].get(&path).unwrap_or_else(|| panic!("no {path}"));
                    for m in &methods {
                        let op = &item[m];
                        assert!(op.is_object(), "no {m} {path}");
                        assert!(op["x-kubernetes-action"].is_string());
                        let want = if path.ends_with("/scale") {
                            gvk("autoscaling", "v1", "Scale")
                        } else {
                            gvk(r.group, r.version, r.kind)
                        };
                        assert_eq!(op["x-kubernetes-group-version-kind"], want, "{m} {path}");
                    }
                }
            }
        }
    }

    #[test]
    fn paths_and_operation_ids_are_unique() {
        let routes = all_routes();
        let paths: HashSet<_> = routes.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths.len(), routes.len());
        let mut ids = HashSet::new();
        for op in routes.iter().flat_map(|r| &r.operations) {
            assert!(ids.insert(op.id.as_str()), "duplicate {}", op.id);
        }
        assert!(ids.contains("listAppsV1NamespacedDeployment"));
        assert!(ids.contains("patchAppsV1NamespacedDeploymentScale"));
        assert!(ids.contains("readCoreV1Namespace"));
        assert!(ids.contains("watchRbacAuthorizationV1ClusterRoleList"));
    }

    /// v2 refers to query parameters by name, so each name must mean one definition.
    #[test]
    fn query_parameters_match_their_shared_definitions() {
        let routes = all_routes();
        let used = routes.iter().flat_map(|r| {
            r.params
                .iter()
                .chain(r.operations.iter().flat_map(|op| &op.params))
        });
        for p in used.filter(|p| p.location == In::Query) {
            let shared = SHARED_PARAMS.iter().find(|s| s.name == p.name).unwrap();
            assert_eq!(shared.description, p.description);
            assert_eq!(shared.ty.name(), p.ty.name());
        }
    }

    #[test]
    fn deployment_definition_carries_its_gvk() {
        let want = gvk("apps", "v1", "Deployment");
        let name = "io.k8s.api.apps.v1.Deployment";
        let doc = v2();
        let ext = &doc["definitions"][name]["x-kubernetes-group-version-kind"];
        assert!(ext.as_array().unwrap().contains(&want));
        let v3 = v3_for(registry::find("apps", "v1", "deployments").unwrap());
        let ext = &v3["components"]["schemas"][name]["x-kubernetes-group-version-kind"];
        assert!(ext.as_array().unwrap().contains(&want));
    }

    /// kubectl's check for server-side field validation: the first PATCH operation with the
    /// kind's GVK decides, so every one must take `fieldValidation` inline.
    #[test]
    fn every_patch_takes_field_validation_and_strategic_merge() {
        for (path, doc) in v3_all() {
            for (p, item) in doc["paths"].as_object().unwrap() {
                let Some(patch) = item.get("patch") else {
                    continue;
                };
                let gvk = patch["x-kubernetes-group-version-kind"]
                    .as_object()
                    .unwrap();
                for k in ["group", "version", "kind"] {
                    assert!(gvk[k].is_string(), "{path} {p}");
                }
                let params = patch["parameters"].as_array().unwrap();
                assert!(
                    params
                        .iter()
                        .any(|q| q["name"] == "fieldValidation" && q["in"] == "query"),
                    "{path} {p}"
                );
                let content = &patch["requestBody"]["content"];
                assert!(content["application/strategic-merge-patch+json"].is_object());
            }
        }
        for r in RESOURCES {
            let doc = v3_for(r);
            let want = gvk(r.group, r.version, r.kind);
            let found = doc["paths"]
                .as_object()
                .unwrap()
                .values()
                .any(|item| item["patch"]["x-kubernetes-group-version-kind"] == want);
            assert!(found, "no PATCH for {}", r.kind);
        }
    }

    /// Follows a field path as `kubectl explain` does: properties, then `$ref`, a single
    /// `allOf`, array items.
    fn resolve<'d>(doc: &'d Value, mut schema: &'d Value) -> &'d Value {
        loop {
            if let Some(r) = schema["$ref"].as_str() {
                let name = r.strip_prefix("#/components/schemas/").unwrap();
                schema = &doc["components"]["schemas"][name];
            } else if let Some([one]) = schema["allOf"].as_array().map(Vec::as_slice) {
                schema = one;
            } else if schema["items"].is_object() {
                schema = &schema["items"];
            } else {
                return schema;
            }
        }
    }

    /// What `kubectl explain` does with the v3 document (its plaintext template).
    fn explain<'d>(doc: &'d Value, r: &Resource, fields: &[&str]) -> &'d Value {
        let root = format!("/{}", gv_path(r.group, r.version));
        let searches = [
            format!("{root}/{}", r.plural),
            format!("{root}/{}/{{name}}", r.plural),
            format!("{root}/namespaces/{{namespace}}/{}", r.plural),
            format!("{root}/namespaces/{{namespace}}/{}/{{name}}", r.plural),
        ];
        let mut found = None;
        for s in &searches {
            for m in ["get", "post", "put", "patch", "delete"] {
                if let Some(g) = doc["paths"][s][m].get("x-kubernetes-group-version-kind") {
                    found = Some(g);
                    break;
                }
            }
        }
        let gvk = found.unwrap_or_else(|| panic!("explain: no GVK for {}", r.plural));
        let schema = doc["components"]["schemas"]
            .as_object()
            .unwrap()
            .values()
            .find(|s| {
                s["x-kubernetes-group-version-kind"]
                    .as_array()
                    .is_some_and(|l| l.contains(gvk))
            })
            .unwrap_or_else(|| panic!("explain: no schema for {gvk}"));
        let mut schema = schema;
        for f in fields {
            schema = &resolve(doc, schema)["properties"][f];
            assert!(schema.is_object(), "explain: no field {f} in {}", r.kind);
        }
        schema
    }

    #[test]
    fn explain_finds_every_kind_and_deployment_replicas() {
        for r in RESOURCES {
            let doc = v3_for(r);
            let metadata = explain(&doc, r, &["metadata"]);
            assert!(resolve(&doc, metadata)["properties"]["name"].is_object());
        }
        let deploy = registry::find("apps", "v1", "deployments").unwrap();
        let doc = v3_for(deploy);
        let replicas = explain(&doc, deploy, &["spec", "replicas"]);
        assert_eq!(replicas["type"], "integer");
        let pod = registry::find("", "v1", "pods").unwrap();
        let doc = v3_for(pod);
        let image = explain(&doc, pod, &["spec", "containers", "image"]);
        assert_eq!(image["type"], "string");
    }

    #[test]
    fn index_names_each_document_with_its_hash() {
        let index = parse(&openapi().v3_index());
        let paths = index["paths"].as_object().unwrap();
        assert_eq!(paths.len(), registry::groups().len());
        for (path, entry) in paths {
            let (body, h) = openapi().v3(path).unwrap();
            assert_eq!(h, hash(&body));
            assert_eq!(h.len(), 64);
            let url = format!("/openapi/v3/{path}?hash={h}");
            assert_eq!(entry["serverRelativeURL"], url.as_str());
        }
        assert!(paths.contains_key("api/v1"));
        assert!(paths.contains_key("apis/apps/v1"));
    }

    #[test]
    fn documents_are_deterministic() {
        assert_eq!(build_v2_json(), build_v2_json());
        assert_eq!(build_v2_protobuf(), build_v2_protobuf());
        assert_eq!(build_v3().index, build_v3().index);
        assert_eq!(hash(b"abc").len(), 64);
        assert_ne!(hash(b"abc"), hash(b"abd"));
    }

    /// Undoes the v3 conversion, so each component can be compared with its v2 definition.
    fn to_v2(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut out = Map::new();
                for (k, v) in map {
                    match (k.as_str(), v.as_array().map(Vec::as_slice)) {
                        ("allOf", Some([one])) if one["$ref"].is_string() && map.len() > 1 => {
                            out.insert("$ref".into(), to_v2(&one["$ref"]));
                        }
                        _ => {
                            out.insert(k.clone(), to_v2(v));
                        }
                    }
                }
                Value::Object(out)
            }
            Value::Array(items) => items.iter().map(to_v2).collect(),
            Value::String(s) => match s.strip_prefix("#/components/schemas/") {
                Some(name) => format!("#/definitions/{name}").into(),
                None => value.clone(),
            },
            other => other.clone(),
        }
    }

    #[test]
    fn v3_schemas_are_the_v2_definitions_converted() {
        let defs = schema::definitions();
        for (path, doc) in v3_all() {
            for (name, s) in doc["components"]["schemas"].as_object().unwrap() {
                assert_eq!(&to_v2(s), &defs[name], "{path}: {name}");
            }
        }
        let doc = v3_for(registry::find("apps", "v1", "deployments").unwrap());
        let metadata = &doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"]["properties"]
            ["metadata"];
        assert_eq!(
            metadata["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        );
        assert!(metadata["description"].is_string());
        assert!(metadata.get("$ref").is_none());
    }

    #[test]
    fn v3_keeps_patch_extensions() {
        let doc = v3_for(registry::find("", "v1", "pods").unwrap());
        let containers =
            &doc["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
    }

    // --- A protobuf reader, enough to read back what kubectl would. ---

    #[derive(Debug)]
    enum Field<'a> {
        Varint,
        Bytes(&'a [u8]),
        Fixed64,
    }

    fn read_varint(b: &[u8], pos: &mut usize) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let byte = b[*pos];
            *pos += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return v;
            }
            shift += 7;
        }
    }

    fn fields(b: &[u8]) -> Vec<(u32, Field<'_>)> {
        let mut pos = 0;
        let mut out = Vec::new();
        while pos < b.len() {
            let key = read_varint(b, &mut pos);
            let field = (key >> 3) as u32;
            let f = match key & 7 {
                0 => {
                    read_varint(b, &mut pos);
                    Field::Varint
                }
                1 => {
                    pos += 8;
                    Field::Fixed64
                }
                2 => {
                    let len = read_varint(b, &mut pos) as usize;
                    pos += len;
                    Field::Bytes(&b[pos - len..pos])
                }
                w => panic!("unexpected wire type {w}"),
            };
            out.push((field, f));
        }
        assert_eq!(pos, b.len());
        out
    }

    fn all(b: &[u8], n: u32) -> Vec<&[u8]> {
        fields(b)
            .into_iter()
            .filter_map(|(f, v)| match v {
                Field::Bytes(b) if f == n => Some(b),
                _ => None,
            })
            .collect()
    }

    fn one(b: &[u8], n: u32) -> Option<&[u8]> {
        all(b, n).into_iter().next()
    }

    fn string(b: &[u8], n: u32) -> String {
        one(b, n)
            .map(|s| String::from_utf8(s.to_vec()).unwrap())
            .unwrap_or_default()
    }

    fn strings(b: &[u8], n: u32) -> Vec<String> {
        all(b, n)
            .into_iter()
            .map(|s| String::from_utf8(s.to_vec()).unwrap())
            .collect()
    }

    /// Vendor extensions (`NamedAny` with YAML text, here JSON) by name.
    fn extensions(b: &[u8], n: u32) -> BTreeMap<String, Value> {
        all(b, n)
            .into_iter()
            .map(|named| {
                let any = one(named, 2).unwrap();
                (
                    string(named, 1),
                    serde_json::from_str(&string(any, 2)).unwrap(),
                )
            })
            .collect()
    }

    /// kubectl's model parser (kube-openapi `proto.Definitions.ParseSchema`), which fails
    /// the whole command on the first schema it rejects.
    fn kubectl_parse(s: &[u8], models: &HashSet<String>, at: &str) -> Result<(), String> {
        let reference = string(s, 1);
        let types = one(s, 22).map(|t| strings(t, 1)).unwrap_or_default();
        let properties = one(s, 25);
        if !reference.is_empty() {
            if properties.is_some_and(|p| !all(p, 1).is_empty()) {
                return Err(format!("{at}: embedded type definition"));
            }
            if !types.is_empty() {
                return Err(format!("{at}: reference with a type"));
            }
            let name = reference
                .strip_prefix("#/definitions/")
                .ok_or(format!("{at}: reference to non-definition"))?;
            return match models.contains(name) {
                true => Ok(()),
                false => Err(format!("{at}: unknown model {name}")),
            };
        }
        let kind = |props: &[u8]| {
            for named in all(props, 1) {
                let field = format!("{at}.{}", string(named, 1));
                kubectl_parse(one(named, 2).unwrap_or_default(), models, &field)?;
            }
            Ok(())
        };
        match types.as_slice() {
            [] => properties.map_or(Ok(()), kind),
            [t] if t == "object" => match properties {
                Some(p) => kind(p),
                None => match one(s, 21).and_then(|a| one(a, 1)) {
                    Some(sub) => kubectl_parse(sub, models, at),
                    None => Ok(()),
                },
            },
            [t] if t == "array" => {
                let items = one(s, 23).map(|i| all(i, 1)).unwrap_or_default();
                match items.as_slice() {
                    [item] => kubectl_parse(item, models, at),
                    _ => Err(format!("{at}: array without exactly one item schema")),
                }
            }
            [t] if ["string", "number", "integer", "boolean"].contains(&t.as_str()) => Ok(()),
            other => Err(format!("{at}: bad type {other:?}")),
        }
    }

    #[test]
    fn v2_protobuf_passes_kubectl_model_parsing() {
        let pb = openapi().v2_protobuf();
        let json = v2();
        assert_eq!(string(&pb, 1), "2.0");
        let defs = all(one(&pb, 9).unwrap(), 1);
        assert_eq!(defs.len(), json["definitions"].as_object().unwrap().len());
        let models: HashSet<String> = defs.iter().map(|d| string(d, 1)).collect();
        for named in &defs {
            let name = string(named, 1);
            kubectl_parse(one(named, 2).unwrap(), &models, &name).unwrap();
        }
        let deployment = defs
            .iter()
            .find(|d| string(d, 1) == "io.k8s.api.apps.v1.Deployment")
            .unwrap();
        let ext = extensions(one(deployment, 2).unwrap(), 31);
        let list = ext["x-kubernetes-group-version-kind"].as_array().unwrap();
        assert!(list.contains(&gvk("apps", "v1", "Deployment")));
    }

    /// The protobuf carries the same paths and operations as the JSON, and passes kubectl's
    /// v2 check for `fieldValidation` and its patch type lookup.
    #[test]
    fn v2_protobuf_paths_match_json() {
        let pb = openapi().v2_protobuf();
        let json = v2();
        let json_paths = json["paths"].as_object().unwrap();
        let paths = all(one(&pb, 8).unwrap(), 2);
        assert_eq!(paths.len(), json_paths.len());
        let shared: BTreeMap<String, &[u8]> = all(one(&pb, 10).unwrap(), 1)
            .into_iter()
            .map(|named| {
                (
                    format!("#/parameters/{}", string(named, 1)),
                    one(named, 2).unwrap(),
                )
            })
            .collect();
        assert_eq!(shared.len(), SHARED_PARAMS.len());
        let methods = [
            ("get", 2),
            ("put", 3),
            ("post", 4),
            ("delete", 5),
            ("patch", 8),
        ];
        for named in paths {
            let path = string(named, 1);
            let item = one(named, 2).unwrap();
            let want = &json_paths[&path];
            for (m, field) in methods {
                let Some(op) = one(item, field) else {
                    assert!(want.get(m).is_none(), "{m} {path}");
                    continue;
                };
                assert_eq!(string(op, 5), want[m]["operationId"], "{m} {path}");
                let ext = extensions(op, 13);
                assert_eq!(
                    ext["x-kubernetes-group-version-kind"],
                    want[m]["x-kubernetes-group-version-kind"]
                );
                assert_eq!(ext["x-kubernetes-action"], want[m]["x-kubernetes-action"]);
                if m == "patch" {
                    // kubectl's v2 check: an inline query parameter, or a reference to a
                    // shared one.
                    let query_names: Vec<String> = all(op, 8)
                        .into_iter()
                        .filter_map(|item| match one(item, 2) {
                            Some(reference) => shared.get(&string(reference, 1)).copied(),
                            None => one(item, 1),
                        })
                        .filter_map(|param| one(param, 2))
                        .filter_map(|non_body| one(non_body, 3))
                        .map(|q| string(q, 4))
                        .collect();
                    assert!(query_names.iter().any(|n| n == "fieldValidation"), "{path}");
                    let consumes = strings(op, 7);
                    assert!(consumes
                        .iter()
                        .any(|c| c == "application/strategic-merge-patch+json"));
                }
            }
        }
    }
}
