//! Writes `server/src/api/protobuf_table.rs`: for every message reachable from the kinds skiff
//! decodes, its wire tags with their JSON names and value types.
//!
//! Two generated crates are read as text, so that neither has to be compiled: `k8s-pb`
//! (prost code from upstream's `generated.proto`) gives each field's tag, cardinality and
//! type; `k8s-openapi` (code from upstream's OpenAPI document) gives each field's JSON name and
//! whether upstream always serializes it. Both are matched on their snake-case field names.
//!
//! Usage: `cargo run -- [--k8s-pb DIR] [--k8s-openapi DIR] [--out FILE]`; the directories
//! default to the crates' sources in the cargo registry, which `cargo fetch` fills.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::{env, fs, process};

const K8S_PB: &str = "k8s-pb-0.9.0";
const K8S_OPENAPI: &str = "k8s-openapi-0.29.0";
/// The Kubernetes version module of k8s-openapi that names the JSON fields.
const OPENAPI_VERSION: &str = "v1_37";

/// The kinds a request body may carry: apiVersion, kind, k8s-pb module, message.
const KINDS: &[(&str, &str, &str, &str)] = &[
    ("v1", "Namespace", "api::core::v1", "Namespace"),
    ("v1", "Pod", "api::core::v1", "Pod"),
    ("v1", "Service", "api::core::v1", "Service"),
    ("v1", "Endpoints", "api::core::v1", "Endpoints"),
    ("v1", "ConfigMap", "api::core::v1", "ConfigMap"),
    ("v1", "Secret", "api::core::v1", "Secret"),
    ("v1", "ServiceAccount", "api::core::v1", "ServiceAccount"),
    ("v1", "Node", "api::core::v1", "Node"),
    ("v1", "Event", "api::core::v1", "Event"),
    (
        "v1",
        "PersistentVolume",
        "api::core::v1",
        "PersistentVolume",
    ),
    (
        "v1",
        "PersistentVolumeClaim",
        "api::core::v1",
        "PersistentVolumeClaim",
    ),
    ("v1", "LimitRange", "api::core::v1", "LimitRange"),
    ("v1", "ResourceQuota", "api::core::v1", "ResourceQuota"),
    ("v1", "Binding", "api::core::v1", "Binding"),
    ("apps/v1", "Deployment", "api::apps::v1", "Deployment"),
    ("apps/v1", "ReplicaSet", "api::apps::v1", "ReplicaSet"),
    ("apps/v1", "DaemonSet", "api::apps::v1", "DaemonSet"),
    ("apps/v1", "StatefulSet", "api::apps::v1", "StatefulSet"),
    (
        "apps/v1",
        "ControllerRevision",
        "api::apps::v1",
        "ControllerRevision",
    ),
    ("batch/v1", "Job", "api::batch::v1", "Job"),
    ("batch/v1", "CronJob", "api::batch::v1", "CronJob"),
    (
        "coordination.k8s.io/v1",
        "Lease",
        "api::coordination::v1",
        "Lease",
    ),
    (
        "discovery.k8s.io/v1",
        "EndpointSlice",
        "api::discovery::v1",
        "EndpointSlice",
    ),
    ("events.k8s.io/v1", "Event", "api::events::v1", "Event"),
    (
        "networking.k8s.io/v1",
        "Ingress",
        "api::networking::v1",
        "Ingress",
    ),
    (
        "networking.k8s.io/v1",
        "IngressClass",
        "api::networking::v1",
        "IngressClass",
    ),
    (
        "networking.k8s.io/v1",
        "NetworkPolicy",
        "api::networking::v1",
        "NetworkPolicy",
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "Role",
        "api::rbac::v1",
        "Role",
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        "api::rbac::v1",
        "ClusterRole",
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        "api::rbac::v1",
        "RoleBinding",
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        "api::rbac::v1",
        "ClusterRoleBinding",
    ),
    (
        "storage.k8s.io/v1",
        "StorageClass",
        "api::storage::v1",
        "StorageClass",
    ),
    (
        "node.k8s.io/v1",
        "RuntimeClass",
        "api::node::v1",
        "RuntimeClass",
    ),
    (
        "policy/v1",
        "PodDisruptionBudget",
        "api::policy::v1",
        "PodDisruptionBudget",
    ),
    ("policy/v1", "Eviction", "api::policy::v1", "Eviction"),
    ("autoscaling/v1", "Scale", "api::autoscaling::v1", "Scale"),
    // `kubectl autoscale` posts the v1 form.
    (
        "autoscaling/v1",
        "HorizontalPodAutoscaler",
        "api::autoscaling::v1",
        "HorizontalPodAutoscaler",
    ),
    (
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        "api::autoscaling::v2",
        "HorizontalPodAutoscaler",
    ),
    (
        "scheduling.k8s.io/v1",
        "PriorityClass",
        "api::scheduling::v1",
        "PriorityClass",
    ),
    // `kubectl create token` posts this to serviceaccounts/<name>/token.
    (
        "authentication.k8s.io/v1",
        "TokenRequest",
        "api::authentication::v1",
        "TokenRequest",
    ),
    (
        "v1",
        "DeleteOptions",
        "apimachinery::pkg::apis::meta::v1",
        "DeleteOptions",
    ),
    (
        "meta.k8s.io/v1",
        "DeleteOptions",
        "apimachinery::pkg::apis::meta::v1",
        "DeleteOptions",
    ),
];

/// Messages whose JSON form is not an object of their fields.
const SPECIAL: &[(&str, &str, &str)] = &[
    ("apimachinery::pkg::apis::meta::v1", "Time", "Time"),
    (
        "apimachinery::pkg::apis::meta::v1",
        "MicroTime",
        "MicroTime",
    ),
    ("apimachinery::pkg::apis::meta::v1", "Duration", "Duration"),
    ("apimachinery::pkg::apis::meta::v1", "FieldsV1", "RawJson"),
    ("apimachinery::pkg::runtime", "RawExtension", "RawJson"),
    (
        "apimachinery::pkg::util::intstr",
        "IntOrString",
        "IntOrString",
    ),
    ("apimachinery::pkg::api::resource", "Quantity", "Quantity"),
];

/// Optional integer and boolean fields that are plain values, not pointers, in upstream's Go
/// types (message, JSON name). Go's protobuf encoding writes such fields even when zero, and
/// its JSON encoding drops them when zero (`omitempty`); the decoder drops them too. Every
/// other optional integer or boolean is a pointer whose zero was set on purpose (`replicas: 0`,
/// `backoffLimit: 0`, `automountServiceAccountToken: false`), so a zero on the wire is kept.
/// A field missing here only costs a redundant zero in the decoded JSON.
const PLAIN_SCALARS: &[(&str, &str)] = &[
    ("ObjectMeta", "generation"),
    ("Condition", "observedGeneration"),
    ("DeploymentSpec", "minReadySeconds"),
    ("DeploymentSpec", "paused"),
    ("DeploymentStatus", "observedGeneration"),
    ("DeploymentStatus", "replicas"),
    ("DeploymentStatus", "updatedReplicas"),
    ("DeploymentStatus", "readyReplicas"),
    ("DeploymentStatus", "availableReplicas"),
    ("DeploymentStatus", "unavailableReplicas"),
    ("ReplicaSetSpec", "minReadySeconds"),
    ("ReplicaSetStatus", "fullyLabeledReplicas"),
    ("ReplicaSetStatus", "readyReplicas"),
    ("ReplicaSetStatus", "availableReplicas"),
    ("ReplicaSetStatus", "observedGeneration"),
    ("DaemonSetSpec", "minReadySeconds"),
    ("DaemonSetStatus", "observedGeneration"),
    ("DaemonSetStatus", "updatedNumberScheduled"),
    ("DaemonSetStatus", "numberAvailable"),
    ("DaemonSetStatus", "numberUnavailable"),
    ("StatefulSetSpec", "minReadySeconds"),
    ("StatefulSetOrdinals", "start"),
    ("StatefulSetStatus", "observedGeneration"),
    ("StatefulSetStatus", "readyReplicas"),
    ("StatefulSetStatus", "currentReplicas"),
    ("StatefulSetStatus", "updatedReplicas"),
    ("StatefulSetStatus", "availableReplicas"),
    ("JobStatus", "active"),
    ("JobStatus", "succeeded"),
    ("JobStatus", "failed"),
    ("PodSpec", "hostNetwork"),
    ("PodSpec", "hostPID"),
    ("PodSpec", "hostIPC"),
    ("Container", "stdin"),
    ("Container", "stdinOnce"),
    ("Container", "tty"),
    ("EphemeralContainerCommon", "stdin"),
    ("EphemeralContainerCommon", "stdinOnce"),
    ("EphemeralContainerCommon", "tty"),
    ("ContainerPort", "hostPort"),
    ("Probe", "initialDelaySeconds"),
    ("Probe", "timeoutSeconds"),
    ("Probe", "periodSeconds"),
    ("Probe", "successThreshold"),
    ("Probe", "failureThreshold"),
    ("ContainerStateTerminated", "signal"),
    ("ServiceSpec", "healthCheckNodePort"),
    ("ServiceSpec", "publishNotReadyAddresses"),
    ("ServicePort", "nodePort"),
    ("VolumeMount", "readOnly"),
    ("PersistentVolumeClaimVolumeSource", "readOnly"),
    ("NodeSpec", "unschedulable"),
    ("ContainerImage", "sizeBytes"),
    ("Event", "count"),
    ("EventSeries", "count"),
    ("PriorityClass", "globalDefault"),
    ("HorizontalPodAutoscalerStatus", "currentReplicas"),
    ("ScaleSpec", "replicas"),
    ("PodDisruptionBudgetStatus", "observedGeneration"),
    ("PodStatus", "observedGeneration"),
    ("PodCondition", "observedGeneration"),
    ("VolumeMountStatus", "readOnly"),
    ("ServiceBackendPort", "number"),
    ("Event", "deprecatedCount"),
    ("GcePersistentDiskVolumeSource", "partition"),
    ("GcePersistentDiskVolumeSource", "readOnly"),
    ("AwsElasticBlockStoreVolumeSource", "partition"),
    ("AwsElasticBlockStoreVolumeSource", "readOnly"),
    ("GlusterfsPersistentVolumeSource", "readOnly"),
    ("GlusterfsVolumeSource", "readOnly"),
    ("NfsVolumeSource", "readOnly"),
    ("RbdPersistentVolumeSource", "readOnly"),
    ("RbdVolumeSource", "readOnly"),
    ("IscsiPersistentVolumeSource", "readOnly"),
    ("IscsiPersistentVolumeSource", "chapAuthDiscovery"),
    ("IscsiPersistentVolumeSource", "chapAuthSession"),
    ("IscsiVolumeSource", "readOnly"),
    ("IscsiVolumeSource", "chapAuthDiscovery"),
    ("IscsiVolumeSource", "chapAuthSession"),
    ("CinderPersistentVolumeSource", "readOnly"),
    ("CinderVolumeSource", "readOnly"),
    ("CephFsPersistentVolumeSource", "readOnly"),
    ("CephFsVolumeSource", "readOnly"),
    ("FcVolumeSource", "readOnly"),
    ("FlexPersistentVolumeSource", "readOnly"),
    ("FlexVolumeSource", "readOnly"),
    ("AzureFilePersistentVolumeSource", "readOnly"),
    ("AzureFileVolumeSource", "readOnly"),
    ("QuobyteVolumeSource", "readOnly"),
    ("PortworxVolumeSource", "readOnly"),
    ("ScaleIoPersistentVolumeSource", "sslEnabled"),
    ("ScaleIoPersistentVolumeSource", "readOnly"),
    ("ScaleIoVolumeSource", "sslEnabled"),
    ("ScaleIoVolumeSource", "readOnly"),
    ("StorageOsPersistentVolumeSource", "readOnly"),
    ("StorageOsVolumeSource", "readOnly"),
    ("CSIPersistentVolumeSource", "readOnly"),
];

/// Optional string fields that are pointers upstream and where an empty string means
/// something other than unset (a claim with `storageClassName: ""` asks for no class).
const EMPTY_STRINGS_KEPT: &[(&str, &str)] = &[("PersistentVolumeClaimSpec", "storageClassName")];

#[derive(Debug, Clone, PartialEq)]
enum PbType {
    Scalar(String),
    Message(String, String),
}

#[derive(Debug, Clone, PartialEq)]
enum Card {
    Single,
    Repeated,
    Map,
}

#[derive(Debug)]
struct PbField {
    tag: u32,
    snake: String,
    ty: PbType,
    card: Card,
}

#[derive(Debug)]
struct OaField {
    json: String,
    required: bool,
}

/// Message name → fields of one k8s-pb module.
type PbModule = BTreeMap<String, Vec<PbField>>;

/// (module, lowercased struct name) → normalized field name → field, from k8s-openapi.
type Openapi = BTreeMap<(String, String), BTreeMap<String, OaField>>;

fn main() {
    if let Err(e) = run() {
        eprintln!("protobuf-table: {e}");
        process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let mut pb_root = None;
    let mut oa_root = None;
    let mut out =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../server/src/api/protobuf_table.rs");
    let mut args = env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or(format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--k8s-pb" => pb_root = Some(PathBuf::from(value)),
            "--k8s-openapi" => oa_root = Some(PathBuf::from(value)),
            "--out" => out = PathBuf::from(value),
            _ => return Err(format!("unknown argument {arg}")),
        }
    }
    let pb_root = match pb_root {
        Some(p) => p,
        None => registry_crate(K8S_PB)?,
    };
    let oa_root = match oa_root {
        Some(p) => p,
        None => registry_crate(K8S_OPENAPI)?,
    };
    let pb = parse_pb(&pb_root.join("src"))?;
    let oa = parse_openapi(&oa_root.join("src").join(OPENAPI_VERSION))?;
    let table = generate(&pb, &oa)?;
    fs::write(&out, table).map_err(|e| format!("writing {}: {e}", out.display()))?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

fn registry_crate(name: &str) -> Result<PathBuf, String> {
    let home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .ok_or("neither CARGO_HOME nor HOME is set")?;
    let src = home.join("registry").join("src");
    let entries = fs::read_dir(&src).map_err(|e| format!("reading {}: {e}", src.display()))?;
    for entry in entries.flatten() {
        let candidate = entry.path().join(name);
        if candidate.is_dir() {
            return Ok(candidate);
        }
    }
    Err(format!(
        "{name} is not in {}; run `cargo fetch` here first",
        src.display()
    ))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// The module path (`api::core::v1`) of a directory below `root`.
fn module_of(root: &Path, dir: &Path) -> String {
    dir.strip_prefix(root)
        .map(|p| {
            p.components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("::")
        })
        .unwrap_or_default()
}

/// Reads every `#[prost(...)]` field of every message in k8s-pb, by module.
fn parse_pb(src: &Path) -> Result<BTreeMap<String, PbModule>, String> {
    let mut files = Vec::new();
    rust_files(src, &mut files)?;
    let mut modules = BTreeMap::new();
    for file in files.iter().filter(|f| f.ends_with("mod.rs")) {
        let module = module_of(src, file.parent().unwrap_or(src));
        let text = fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let mut messages: PbModule = BTreeMap::new();
        let mut current: Option<String> = None;
        let mut attr: Option<String> = None;
        let mut pending: Option<String> = None;
        for (n, line) in text.lines().enumerate() {
            let at = || format!("{}:{}", file.display(), n + 1);
            if let Some(rest) = line.strip_prefix("pub struct ") {
                let name = rest.trim_end_matches(" {").trim().to_string();
                messages.insert(name.clone(), Vec::new());
                current = Some(name);
            } else if line == "}" {
                current = None;
            } else if current.is_some() {
                let t = line.trim();
                if let Some(a) = t.strip_prefix("#[prost(") {
                    attr = Some(a.trim_end_matches(")]").to_string());
                } else if let Some(p) = pending.as_mut() {
                    p.push_str(t);
                } else if t.starts_with("pub ") && attr.is_some() {
                    pending = Some(t.to_string());
                }
                let balanced = |p: &String| p.matches('<').count() == p.matches('>').count();
                if pending
                    .as_ref()
                    .is_some_and(|p| p.ends_with(',') && balanced(p))
                {
                    let (Some(decl), Some(a)) = (pending.take(), attr.take()) else {
                        continue;
                    };
                    let rest = decl.trim_start_matches("pub ");
                    let (snake, ty) = rest
                        .split_once(':')
                        .ok_or_else(|| format!("{}: field", at()))?;
                    let ty = ty.trim();
                    let field = pb_field(&module, &a, snake, ty.trim_end_matches(','))
                        .map_err(|e| format!("{}: {e}", at()))?;
                    if let Some(name) = &current {
                        messages.entry(name.clone()).or_default().push(field);
                    }
                }
            }
        }
        if !messages.is_empty() {
            modules.insert(module, messages);
        }
    }
    Ok(modules)
}

fn pb_field(module: &str, attr: &str, snake: &str, ty: &str) -> Result<PbField, String> {
    let parts: Vec<&str> = attr.split(", ").collect();
    let tag = parts
        .iter()
        .find_map(|p| p.strip_prefix("tag = \""))
        .and_then(|t| t.trim_end_matches('"').parse().ok())
        .ok_or_else(|| format!("no tag in {attr}"))?;
    let snake = snake.trim_start_matches("r#").to_string();
    let head = parts.first().copied().unwrap_or("");
    let (card, scalar) = if let Some(map) = head.strip_prefix("btree_map = \"") {
        // `btree_map = "string, message"` is split by the ", " above.
        let value = parts.get(1).map(|v| v.trim_end_matches('"')).unwrap_or("");
        if map != "string" {
            return Err(format!("map key {map} is not a string"));
        }
        (Card::Map, value.to_string())
    } else {
        let scalar = head.split(' ').next().unwrap_or("").to_string();
        let card = if parts.contains(&"repeated") {
            Card::Repeated
        } else {
            Card::Single
        };
        (card, scalar)
    };
    let ty = match scalar.as_str() {
        "message" => {
            let (m, n) = resolve(module, innermost(ty));
            PbType::Message(m, n)
        }
        "string" | "bytes" | "bool" | "int32" | "int64" | "double" => PbType::Scalar(scalar),
        other => return Err(format!("unsupported protobuf type {other}")),
    };
    Ok(PbField {
        tag,
        snake,
        ty,
        card,
    })
}

/// The message named by a prost field type, without its `Option`/`Vec`/`Box`/map wrapper.
fn innermost(ty: &str) -> &str {
    let mut t = ty.trim();
    loop {
        let Some(open) = t.find('<') else { return t };
        let inner = t[open + 1..t.len() - 1].trim().trim_end_matches(',');
        t = if t[..open].ends_with("BTreeMap") {
            inner.split_once(',').map_or(inner, |(_, v)| v).trim()
        } else {
            inner.trim()
        };
    }
}

/// Resolves a path relative to `module` into (module, name).
fn resolve(module: &str, path: &str) -> (String, String) {
    let mut base: Vec<&str> = module.split("::").collect();
    let mut segments: Vec<&str> = path.split("::").collect();
    let name = segments.pop().unwrap_or("").to_string();
    for s in segments {
        if s == "super" {
            base.pop();
        } else {
            base.push(s);
        }
    }
    (base.join("::"), name)
}

/// A field name as both crates can be matched on: they split acronyms into words
/// differently (`pod_cid_rs` against `pod_cidrs`) and escape keywords differently.
fn norm(snake: &str) -> String {
    snake
        .trim_start_matches("r#")
        .trim_end_matches('_')
        .replace('_', "")
        .to_lowercase()
}

/// Reads the JSON name and requiredness of every field of every k8s-openapi struct, keyed by
/// module and lowercased struct name (the crates spell acronyms differently), then by
/// [`norm`]ed field name.
fn parse_openapi(src: &Path) -> Result<Openapi, String> {
    let mut files = Vec::new();
    rust_files(src, &mut files)?;
    let mut structs = BTreeMap::new();
    for file in files.iter().filter(|f| !f.ends_with("mod.rs")) {
        let module = module_of(src, file.parent().unwrap_or(src));
        let text = fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let mut name = None;
        let mut required = BTreeMap::new();
        let mut json = BTreeMap::new();
        let mut in_struct = false;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("pub struct ") {
                if let (Some(n), None) = (rest.strip_suffix(" {"), &name) {
                    name = Some(n.to_string());
                    in_struct = true;
                }
            } else if in_struct && line == "}" {
                in_struct = false;
            } else if in_struct {
                if let Some((snake, ty)) = line
                    .strip_prefix("    pub ")
                    .and_then(|r| r.split_once(": "))
                {
                    required.insert(snake.to_string(), !ty.starts_with("Option<"));
                }
            } else if let Some((j, key)) = line.trim().split_once("\" => Field::Key_") {
                json.insert(
                    key.trim_end_matches(',').to_string(),
                    j.trim_start_matches('"').to_string(),
                );
            }
        }
        let Some(name) = name else { continue };
        let mut fields = BTreeMap::new();
        for (snake, required) in required {
            let Some(j) = json.get(&snake) else { continue };
            let field = OaField {
                json: j.clone(),
                required,
            };
            if fields.insert(norm(&snake), field).is_some() {
                return Err(format!("{}: two fields match {snake}", file.display()));
            }
        }
        structs.insert((module, name.to_lowercase()), fields);
    }
    Ok(structs)
}

/// The Rust identifier of a message's static, e.g. `CORE_V1_POD_SPEC`.
fn static_name(module: &str, name: &str) -> String {
    let segments: Vec<&str> = module.split("::").collect();
    let mut out = segments[segments.len().saturating_sub(2)..]
        .join("_")
        .to_uppercase();
    let chars: Vec<char> = name.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let prev = i.checked_sub(1).map(|p| chars[p]);
        let next = chars.get(i + 1);
        let word_start = prev.is_none_or(|p| p.is_lowercase() || p.is_ascii_digit())
            || prev.is_some_and(char::is_uppercase) && next.is_some_and(|n| n.is_lowercase());
        if c.is_uppercase() && word_start {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn special(module: &str, name: &str) -> Option<&'static str> {
    SPECIAL
        .iter()
        .find(|(m, n, _)| *m == module && *n == name)
        .map(|(_, _, s)| *s)
}

/// A message to emit: module, name, and for an inlined message the parent whose JSON names
/// its fields carry.
type Reach = (String, String, Option<String>);

/// What the run found beyond the table, printed for whoever regenerates it.
#[derive(Default)]
struct Report {
    skew: BTreeSet<String>,
    pointers: BTreeSet<String>,
    inlined: BTreeSet<String>,
    listed: BTreeSet<(String, String)>,
}

/// The table lines of one message's fields, and the messages they refer to.
fn message(
    pb: &BTreeMap<String, PbModule>,
    oa: &Openapi,
    (module, name, json_of): &Reach,
    report: &mut Report,
) -> Result<(String, Vec<Reach>), String> {
    let fields = pb
        .get(module)
        .and_then(|m| m.get(name))
        .ok_or_else(|| format!("k8s-pb has no message {module}::{name}"))?;
    let json_fields = oa
        .get(&(
            module.clone(),
            json_of.as_deref().unwrap_or(name).to_lowercase(),
        ))
        .ok_or_else(|| format!("k8s-openapi has no struct for {module}::{name}"))?;
    let mut matched = BTreeSet::new();
    let mut lines = String::new();
    let mut reached = Vec::new();
    for f in fields {
        let Some(j) = json_fields.get(&norm(&f.snake)) else {
            // An embedded Go struct (`json:",inline"`) is one message field in protobuf and
            // its fields in JSON: it is inlined when all of those have JSON names here.
            let inner = match &f.ty {
                PbType::Message(m, n) if f.card == Card::Single => {
                    pb.get(m).and_then(|x| x.get(n)).map(|i| (m, n, i))
                }
                _ => None,
            };
            match inner {
                Some((m, n, inner))
                    if inner
                        .iter()
                        .all(|g| json_fields.contains_key(&norm(&g.snake))) =>
                {
                    matched.extend(inner.iter().map(|g| norm(&g.snake)));
                    report.inlined.insert(format!("{name}.{} = {n}", f.snake));
                    reached.push((
                        m.clone(),
                        n.clone(),
                        Some(json_of.clone().unwrap_or(name.clone())),
                    ));
                    let _ = writeln!(
                        lines,
                        "    F {{ tag: {}, json: \"\", card: S, ty: T::Inline(&{}), keep_zero: false }},",
                        f.tag,
                        static_name(m, n)
                    );
                }
                _ => {
                    report.skew.insert(format!(
                        "{name}.{} (tag {}) has no JSON name",
                        f.snake, f.tag
                    ));
                }
            }
            continue;
        };
        matched.insert(norm(&f.snake));
        let ty = match &f.ty {
            PbType::Scalar(s) => match s.as_str() {
                "string" => "T::String".to_string(),
                "bytes" => "T::Bytes".to_string(),
                "bool" => "T::Bool".to_string(),
                "int32" | "int64" => "T::Int".to_string(),
                _ => "T::Double".to_string(),
            },
            PbType::Message(m, n) => match special(m, n) {
                Some(s) => format!("T::{s}"),
                None => {
                    reached.push((m.clone(), n.clone(), None));
                    format!("T::Message(&{})", static_name(m, n))
                }
            },
        };
        let card = match f.card {
            Card::Single => "S",
            Card::Repeated => "R",
            Card::Map => "P",
        };
        let key = (name.clone(), j.json.clone());
        let listed = |list: &[(&str, &str)]| list.iter().any(|(m, f)| *m == key.0 && *f == key.1);
        let keep_zero = match &f.ty {
            PbType::Message(..) => false,
            _ if j.required => true,
            PbType::Scalar(s) if s == "string" => {
                let keep = listed(EMPTY_STRINGS_KEPT);
                if keep {
                    report.listed.insert(key.clone());
                }
                keep
            }
            PbType::Scalar(s) if s != "bytes" && f.card == Card::Single => {
                let plain = listed(PLAIN_SCALARS);
                if plain {
                    report.listed.insert(key.clone());
                } else {
                    report.pointers.insert(format!("{name}.{}", j.json));
                }
                !plain
            }
            _ => false,
        };
        let _ = writeln!(
            lines,
            "    F {{ tag: {}, json: {:?}, card: {card}, ty: {ty}, keep_zero: {keep_zero} }},",
            f.tag, j.json
        );
    }
    if json_of.is_none() {
        for (n, j) in json_fields {
            // apiVersion and kind are the envelope's, not the message's.
            if !matched.contains(n) && j.json != "apiVersion" && j.json != "kind" {
                report
                    .skew
                    .insert(format!("{name}.{} is not in k8s-pb", j.json));
            }
        }
    }
    Ok((lines, reached))
}

fn generate(pb: &BTreeMap<String, PbModule>, oa: &Openapi) -> Result<String, String> {
    let mut queue: VecDeque<Reach> = KINDS
        .iter()
        .map(|(_, _, m, n)| (m.to_string(), n.to_string(), None))
        .collect();
    let mut report = Report::default();
    // static name → (the reach that produced it, its lines)
    let mut bodies: BTreeMap<String, (Reach, String)> = BTreeMap::new();
    while let Some(reach) = queue.pop_front() {
        let ident = static_name(&reach.0, &reach.1);
        if let Some((first, lines)) = bodies.get(&ident) {
            if (&first.0, &first.1) != (&reach.0, &reach.1) {
                return Err(format!(
                    "{}::{} and {}::{} are both {ident}",
                    first.0, first.1, reach.0, reach.1
                ));
            }
            // A message inlined into several parents takes its JSON names from each of
            // them: they must agree.
            if first.2 != reach.2 {
                let (again, _) = message(pb, oa, &reach, &mut Report::default())?;
                if &again != lines {
                    return Err(format!(
                        "{ident} has different JSON names in {:?} and {:?}",
                        first.2, reach.2
                    ));
                }
            }
            continue;
        }
        let (lines, reached) = message(pb, oa, &reach, &mut report)?;
        queue.extend(reached);
        bodies.insert(ident, (reach, lines));
    }
    let unmatched: Vec<String> = PLAIN_SCALARS
        .iter()
        .chain(EMPTY_STRINGS_KEPT)
        .map(|(m, f)| (m.to_string(), f.to_string()))
        .filter(|e| !report.listed.contains(e))
        .map(|(m, f)| format!("{m}.{f}"))
        .collect();
    if !unmatched.is_empty() {
        return Err(format!(
            "listed fields that are no optional scalar of a reachable message: {}",
            unmatched.join(", ")
        ));
    }
    eprintln!("optional integers and booleans kept when zero (pointers upstream):");
    for p in &report.pointers {
        eprintln!("  {p}");
    }
    eprintln!("embedded messages inlined into their parent's JSON object:");
    for i in &report.inlined {
        eprintln!("  {i}");
    }
    eprintln!("version skew between {K8S_PB} and {K8S_OPENAPI} {OPENAPI_VERSION}:");
    for s in &report.skew {
        eprintln!("  {s}");
    }

    let mut out = format!(
        "//! The protobuf decoding table: the fields of every message reachable from the kinds\n\
         //! that request bodies may carry.\n//!\n\
         //! Generated by `tools/protobuf-table` from {K8S_PB} and {K8S_OPENAPI} ({OPENAPI_VERSION});\n\
         //! do not edit: regenerate with `cargo fetch && cargo run` in that folder.\n//!\n\
         //! Fields the two crates disagree on, which are not decoded:\n"
    );
    for s in &report.skew {
        let _ = writeln!(out, "//! - {s}");
    }
    out.push_str(
        "\nuse super::{Card::Map as P, Card::Repeated as R, Card::Single as S, Field as F, Message as M, Type as T};\n\n\
         /// apiVersion, kind, and the message of each kind.\n\
         pub(super) static KINDS: &[(&str, &str, &M)] = &[\n",
    );
    for (api_version, kind, module, name) in KINDS {
        let _ = writeln!(
            out,
            "    ({api_version:?}, {kind:?}, &{}),",
            static_name(module, name)
        );
    }
    out.push_str("];\n");
    for (ident, ((module, name, _), lines)) in &bodies {
        let _ = write!(
            out,
            "\nstatic {ident}: M = M {{ name: \"{}.{name}\", fields: &[\n{lines}] }};\n",
            module.replace("::", ".")
        );
    }
    Ok(out)
}
