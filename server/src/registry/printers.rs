//! Server-side printing: the columns and cells of the `meta.k8s.io/v1` Table that the API
//! server returns when `kubectl get` asks for `application/json;as=Table;g=meta.k8s.io;v=v1`.
//!
//! Each kind has a fixed column list and a cell function that mirrors the upstream API
//! server's printer for it (`pkg/printers/internalversion`), so `kubectl get` shows the same
//! columns and the same wording as against a stock cluster. Like upstream, the server always
//! produces the wide form; kubectl hides priority-1 columns unless `-o wide` is given, so the
//! cells of a row always cover every column.
//!
//! Objects arrive as JSON and may be partial or malformed. Missing or mistyped fields read as
//! their zero value and every cell function is total: it never panics and always returns one
//! cell per column. Fields that the upstream API server always fills in on write (by
//! defaulting or by the create strategy: a pod's `Pending` phase, a secret's `Opaque` type, a
//! workload's single replica, ...) are read with that default, so an object stored without it
//! prints as upstream prints the same object.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use jiff::Timestamp;
use serde_json::Value;

/// One column of a Table (meta.k8s.io/v1 TableColumnDefinition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// Header as upstream spells it ("Name", "Cluster-IP"); kubectl upper-cases it.
    pub name: &'static str,
    /// OpenAPI type of the column: "string", "integer", "boolean" or "date".
    pub type_: &'static str,
    /// "name" for the column holding the object's name, else "".
    pub format: &'static str,
    /// Short human description of the column.
    pub description: &'static str,
    /// 0 for columns always shown, 1 for columns shown only by `-o wide`.
    pub priority: i32,
}

const fn column(name: &'static str, type_: &'static str, description: &'static str) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority: 0,
    }
}

const fn string(name: &'static str, description: &'static str) -> Column {
    column(name, "string", description)
}

const fn integer(name: &'static str, description: &'static str) -> Column {
    column(name, "integer", description)
}

const fn boolean(name: &'static str, description: &'static str) -> Column {
    column(name, "boolean", description)
}

const fn wide(c: Column) -> Column {
    Column { priority: 1, ..c }
}

const NAME: Column = Column {
    name: "Name",
    type_: "string",
    format: "name",
    description: "Name of the object.",
    priority: 0,
};
const AGE: Column = string("Age", "Time since the object was created.");
const CREATED_AT: Column = column("Created At", "date", "When the object was created.");
const CONTAINERS: Column = wide(string("Containers", "Names of the template's containers."));
const IMAGES: Column = wide(string("Images", "Images of the template's containers."));
const SELECTOR: Column = wide(string("Selector", "Label selector for the pods."));

const DEFAULT_COLUMNS: &[Column] = &[
    NAME,
    column("Age", "date", "Time since the object was created."),
];
const CREATED_AT_COLUMNS: &[Column] = &[NAME, CREATED_AT];

const NAMESPACE_COLUMNS: &[Column] = &[NAME, string("Status", "Phase of the namespace."), AGE];
const POD_COLUMNS: &[Column] = &[
    NAME,
    string("Ready", "Ready containers out of all containers."),
    string("Status", "Aggregate status of the pod's containers."),
    string(
        "Restarts",
        "Container restarts, and how long ago the last one was.",
    ),
    AGE,
    wide(string("IP", "IP address of the pod.")),
    wide(string("Node", "Node the pod is bound to.")),
    wide(string(
        "Nominated Node",
        "Node the pod may preempt its way onto.",
    )),
    wide(string(
        "Readiness Gates",
        "Readiness gates met out of all gates.",
    )),
];
const SERVICE_COLUMNS: &[Column] = &[
    NAME,
    string("Type", "How the service is exposed."),
    string("Cluster-IP", "Cluster IP address of the service."),
    string("External-IP", "External addresses of the service."),
    string("Port(s)", "Ports of the service."),
    AGE,
    wide(string("Selector", "Label selector for the backing pods.")),
];
const ENDPOINTS_COLUMNS: &[Column] =
    &[NAME, string("Endpoints", "Ready addresses and ports."), AGE];
const CONFIG_MAP_COLUMNS: &[Column] = &[NAME, string("Data", "Number of data entries."), AGE];
const SECRET_COLUMNS: &[Column] = &[
    NAME,
    string("Type", "Type of the secret."),
    string("Data", "Number of data entries."),
    AGE,
];
const SERVICE_ACCOUNT_COLUMNS: &[Column] = &[
    NAME,
    string("Secrets", "Number of referenced secrets."),
    AGE,
];
const NODE_COLUMNS: &[Column] = &[
    NAME,
    string("Status", "Readiness and schedulability of the node."),
    string("Roles", "Roles of the node."),
    AGE,
    string("Version", "Kubelet version."),
    wide(string("Internal-IP", "First internal address.")),
    wide(string("External-IP", "First external address.")),
    wide(string("OS-Image", "Operating system image.")),
    wide(string("Kernel-Version", "Kernel version.")),
    wide(string(
        "Container-Runtime",
        "Container runtime and version.",
    )),
];
const EVENT_COLUMNS: &[Column] = &[
    string("Last Seen", "Time since the event was last seen."),
    string("Type", "Type of the event."),
    string("Reason", "Short reason for the event."),
    string("Object", "Object the event is about."),
    wide(string(
        "Subobject",
        "Part of the object the event is about.",
    )),
    wide(string("Source", "Component that reported the event.")),
    string("Message", "Description of the event."),
    wide(string("First Seen", "Time since the event was first seen.")),
    wide(string("Count", "Number of occurrences.")),
    wide(NAME),
];
const PERSISTENT_VOLUME_COLUMNS: &[Column] = &[
    NAME,
    string("Capacity", "Storage capacity."),
    string("Access Modes", "Ways the volume can be mounted."),
    string(
        "Reclaim Policy",
        "What happens to the volume when released.",
    ),
    string("Status", "Phase of the volume."),
    string("Claim", "Claim bound to the volume."),
    string("StorageClass", "Storage class of the volume."),
    string(
        "VolumeAttributesClass",
        "Volume attributes class of the volume.",
    ),
    string("Reason", "Reason for the volume's phase."),
    AGE,
    wide(string("VolumeMode", "Filesystem or raw block.")),
];
const PERSISTENT_VOLUME_CLAIM_COLUMNS: &[Column] = &[
    NAME,
    string("Status", "Phase of the claim."),
    string("Volume", "Volume bound to the claim."),
    string("Capacity", "Storage capacity of the bound volume."),
    string("Access Modes", "Ways the bound volume can be mounted."),
    string("StorageClass", "Storage class of the claim."),
    string(
        "VolumeAttributesClass",
        "Volume attributes class of the claim.",
    ),
    AGE,
    wide(string("VolumeMode", "Filesystem or raw block.")),
];
const RESOURCE_QUOTA_COLUMNS: &[Column] = &[
    NAME,
    string("Request", "Used out of hard request quotas."),
    string("Limit", "Used out of hard limit quotas."),
    AGE,
];
const DEPLOYMENT_COLUMNS: &[Column] = &[
    NAME,
    string("Ready", "Ready replicas out of desired replicas."),
    string("Up-to-date", "Replicas running the latest template."),
    string("Available", "Replicas available to users."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];
const REPLICA_SET_COLUMNS: &[Column] = &[
    NAME,
    integer("Desired", "Desired replicas."),
    integer("Current", "Observed replicas."),
    integer("Ready", "Ready replicas."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];
const DAEMON_SET_COLUMNS: &[Column] = &[
    NAME,
    integer("Desired", "Nodes that should run the daemon pod."),
    integer("Current", "Nodes running the daemon pod."),
    integer("Ready", "Nodes with a ready daemon pod."),
    integer("Up-to-date", "Nodes running the latest template."),
    integer("Available", "Nodes with an available daemon pod."),
    string("Node Selector", "Node selector of the template."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];
const STATEFUL_SET_COLUMNS: &[Column] = &[
    NAME,
    string("Ready", "Ready replicas out of desired replicas."),
    AGE,
    CONTAINERS,
    IMAGES,
];
const CONTROLLER_REVISION_COLUMNS: &[Column] = &[
    NAME,
    string("Controller", "Controller owning the revision."),
    string("Revision", "Revision number."),
    AGE,
];
const JOB_COLUMNS: &[Column] = &[
    NAME,
    string("Status", "Status of the job."),
    string("Completions", "Succeeded pods out of desired completions."),
    string("Duration", "Time the job took or has taken so far."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];
const CRON_JOB_COLUMNS: &[Column] = &[
    NAME,
    string("Schedule", "Cron schedule."),
    string("Timezone", "Time zone of the schedule."),
    boolean("Suspend", "Whether scheduling is suspended."),
    integer("Active", "Number of running jobs."),
    string("Last Schedule", "Time since a job was last scheduled."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];
const LEASE_COLUMNS: &[Column] = &[NAME, string("Holder", "Current holder of the lease."), AGE];
const ENDPOINT_SLICE_COLUMNS: &[Column] = &[
    NAME,
    string("AddressType", "Type of the addresses."),
    string("Ports", "Ports of the slice."),
    string("Endpoints", "Addresses of the endpoints."),
    AGE,
];
const INGRESS_COLUMNS: &[Column] = &[
    NAME,
    string("Class", "Ingress class."),
    string("Hosts", "Hosts the rules match."),
    string("Address", "Addresses of the load balancer."),
    string("Ports", "Ports the ingress serves."),
    AGE,
];
const INGRESS_CLASS_COLUMNS: &[Column] = &[
    NAME,
    string("Controller", "Controller implementing the class."),
    string("Parameters", "Resource holding extra parameters."),
    AGE,
];
const NETWORK_POLICY_COLUMNS: &[Column] = &[
    NAME,
    string("Pod-Selector", "Pods the policy applies to."),
    AGE,
];
const ROLE_BINDING_COLUMNS: &[Column] = &[
    NAME,
    string("Role", "Role granted."),
    AGE,
    wide(string("Users", "Users bound.")),
    wide(string("Groups", "Groups bound.")),
    wide(string("ServiceAccounts", "Service accounts bound.")),
];
const STORAGE_CLASS_COLUMNS: &[Column] = &[
    NAME,
    string("Provisioner", "Volume provisioner."),
    string("ReclaimPolicy", "Reclaim policy of provisioned volumes."),
    string(
        "VolumeBindingMode",
        "When volumes are bound and provisioned.",
    ),
    string("AllowVolumeExpansion", "Whether volumes can be expanded."),
    AGE,
];
const RUNTIME_CLASS_COLUMNS: &[Column] = &[NAME, string("Handler", "Runtime handler."), AGE];
const POD_DISRUPTION_BUDGET_COLUMNS: &[Column] = &[
    NAME,
    string("Min Available", "Pods that must stay available."),
    string("Max Unavailable", "Pods that may be unavailable."),
    integer("Allowed Disruptions", "Pods that may be disrupted now."),
    AGE,
];
const HORIZONTAL_POD_AUTOSCALER_COLUMNS: &[Column] = &[
    NAME,
    string("Reference", "Scaled workload."),
    string("Targets", "Current and target metric values."),
    string("MinPods", "Lower replica limit."),
    string("MaxPods", "Upper replica limit."),
    string("Replicas", "Current replicas."),
    AGE,
];
const PRIORITY_CLASS_COLUMNS: &[Column] = &[
    NAME,
    integer("Value", "Priority value."),
    boolean("Global-Default", "Whether this is the default class."),
    AGE,
    string(
        "PreemptionPolicy",
        "Whether pods of the class preempt others.",
    ),
];

type CellFn = fn(J<'_>, Timestamp) -> Vec<Value>;

fn printer(group: &str, kind: &str) -> (&'static [Column], CellFn) {
    match (group, kind) {
        ("", "Namespace") => (NAMESPACE_COLUMNS, namespace_cells),
        ("", "Pod") => (POD_COLUMNS, pod_cells),
        ("", "Service") => (SERVICE_COLUMNS, service_cells),
        ("", "Endpoints") => (ENDPOINTS_COLUMNS, endpoints_cells),
        ("", "ConfigMap") => (CONFIG_MAP_COLUMNS, config_map_cells),
        ("", "Secret") => (SECRET_COLUMNS, secret_cells),
        ("", "ServiceAccount") => (SERVICE_ACCOUNT_COLUMNS, service_account_cells),
        ("", "Node") => (NODE_COLUMNS, node_cells),
        ("", "Event") => (EVENT_COLUMNS, core_event_cells),
        ("events.k8s.io", "Event") => (EVENT_COLUMNS, events_event_cells),
        ("", "PersistentVolume") => (PERSISTENT_VOLUME_COLUMNS, persistent_volume_cells),
        ("", "PersistentVolumeClaim") => (
            PERSISTENT_VOLUME_CLAIM_COLUMNS,
            persistent_volume_claim_cells,
        ),
        ("", "ResourceQuota") => (RESOURCE_QUOTA_COLUMNS, resource_quota_cells),
        // Upstream has no printer for these; its generic table convertor applies.
        ("", "LimitRange")
        | ("rbac.authorization.k8s.io", "Role")
        | ("rbac.authorization.k8s.io", "ClusterRole") => (CREATED_AT_COLUMNS, created_at_cells),
        ("apps", "Deployment") => (DEPLOYMENT_COLUMNS, deployment_cells),
        ("apps", "ReplicaSet") => (REPLICA_SET_COLUMNS, replica_set_cells),
        ("apps", "DaemonSet") => (DAEMON_SET_COLUMNS, daemon_set_cells),
        ("apps", "StatefulSet") => (STATEFUL_SET_COLUMNS, stateful_set_cells),
        ("apps", "ControllerRevision") => (CONTROLLER_REVISION_COLUMNS, controller_revision_cells),
        ("batch", "Job") => (JOB_COLUMNS, job_cells),
        ("batch", "CronJob") => (CRON_JOB_COLUMNS, cron_job_cells),
        ("coordination.k8s.io", "Lease") => (LEASE_COLUMNS, lease_cells),
        ("discovery.k8s.io", "EndpointSlice") => (ENDPOINT_SLICE_COLUMNS, endpoint_slice_cells),
        ("networking.k8s.io", "Ingress") => (INGRESS_COLUMNS, ingress_cells),
        ("networking.k8s.io", "IngressClass") => (INGRESS_CLASS_COLUMNS, ingress_class_cells),
        ("networking.k8s.io", "NetworkPolicy") => (NETWORK_POLICY_COLUMNS, network_policy_cells),
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            (ROLE_BINDING_COLUMNS, role_binding_cells)
        }
        ("storage.k8s.io", "StorageClass") => (STORAGE_CLASS_COLUMNS, storage_class_cells),
        ("node.k8s.io", "RuntimeClass") => (RUNTIME_CLASS_COLUMNS, runtime_class_cells),
        ("policy", "PodDisruptionBudget") => {
            (POD_DISRUPTION_BUDGET_COLUMNS, pod_disruption_budget_cells)
        }
        ("autoscaling", "HorizontalPodAutoscaler") => (
            HORIZONTAL_POD_AUTOSCALER_COLUMNS,
            horizontal_pod_autoscaler_cells,
        ),
        ("scheduling.k8s.io", "PriorityClass") => (PRIORITY_CLASS_COLUMNS, priority_class_cells),
        _ => (DEFAULT_COLUMNS, default_cells),
    }
}

/// Columns for a kind; `group` is "" for core.
pub fn columns(group: &str, kind: &str) -> &'static [Column] {
    printer(group, kind).0
}

/// Cells of one row, in the order of `columns(group, kind)`, as JSON values (strings or
/// integers as upstream sends them).
pub fn cells(group: &str, kind: &str, obj: &Value, now: Timestamp) -> Vec<Value> {
    (printer(group, kind).1)(J(Some(obj)), now)
}

/// Human duration as kubectl prints ages ("5s", "3m2s", "2d3h", "4y") — upstream's
/// HumanDuration rules.
pub fn human_duration(d: Duration) -> String {
    human_nanos(i128::try_from(d.as_nanos()).unwrap_or(i128::MAX))
}

/// Upstream's HumanDuration over a signed span in nanoseconds. A span up to two seconds in
/// the future counts as now, to absorb clock skew between machines; beyond that it is invalid.
fn human_nanos(nanos: i128) -> String {
    // Upstream measures with a 64-bit nanosecond Duration, which saturates at about 292 years.
    let nanos = nanos.clamp(i128::from(i64::MIN), i128::from(i64::MAX));
    let seconds = nanos / 1_000_000_000;
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{days}d"),
            h => format!("{days}d{h}h"),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        return match days % 365 {
            0 => format!("{years}y"),
            d => format!("{years}y{d}d"),
        };
    }
    format!("{years}y")
}

/// A possibly missing JSON value with lenient typed accessors: a missing or mistyped field
/// reads as the zero value, as an absent field decodes in upstream's Go types.
#[derive(Clone, Copy)]
struct J<'a>(Option<&'a Value>);

impl<'a> J<'a> {
    fn at(self, path: &[&str]) -> J<'a> {
        let mut v = self.0;
        for key in path {
            v = v.and_then(|v| v.get(*key));
        }
        J(v)
    }

    /// Present and not null: a non-nil pointer once decoded into a Go struct.
    fn present(self) -> bool {
        self.0.is_some_and(|v| !v.is_null())
    }

    fn is_object(self) -> bool {
        self.0.is_some_and(Value::is_object)
    }

    fn opt_str(self) -> Option<&'a str> {
        self.0.and_then(Value::as_str)
    }

    fn str(self) -> &'a str {
        self.opt_str().unwrap_or("")
    }

    fn opt_int(self) -> Option<i64> {
        self.0.and_then(Value::as_i64)
    }

    fn int(self) -> i64 {
        self.opt_int().unwrap_or(0)
    }

    fn opt_bool(self) -> Option<bool> {
        self.0.and_then(Value::as_bool)
    }

    fn bool(self) -> bool {
        self.opt_bool().unwrap_or(false)
    }

    fn items(self) -> impl Iterator<Item = J<'a>> {
        self.0
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|v| J(Some(v)))
    }

    fn entries(self) -> impl Iterator<Item = (&'a str, J<'a>)> {
        self.0
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), J(Some(v))))
    }

    /// Number of elements of an array or entries of an object.
    fn count(self) -> usize {
        match self.0 {
            Some(Value::Array(a)) => a.len(),
            Some(Value::Object(m)) => m.len(),
            _ => 0,
        }
    }

    fn time(self) -> Option<Timestamp> {
        self.opt_str()?.parse().ok()
    }
}

fn or<'a>(s: &'a str, default: &'a str) -> &'a str {
    if s.is_empty() {
        default
    } else {
        s
    }
}

fn name(o: J) -> Value {
    o.at(&["metadata", "name"]).str().into()
}

fn since(t: Option<Timestamp>, now: Timestamp) -> String {
    match t {
        Some(t) => human_nanos(now.as_nanosecond() - t.as_nanosecond()),
        None => "<unknown>".to_owned(),
    }
}

fn age(o: J, now: Timestamp) -> Value {
    since(o.at(&["metadata", "creationTimestamp"]).time(), now).into()
}

fn deleting(o: J) -> bool {
    o.at(&["metadata", "deletionTimestamp"]).present()
}

/// A resource quantity as JSON carries it: a string, or a bare number from a lenient client.
fn quantity(v: J) -> Option<String> {
    match v.0? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// An int-or-string field (`intstr.IntOrString`).
fn int_or_string(v: J) -> Option<String> {
    match v.0? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Upstream's `labels.FormatLabels`: sorted `key=value` pairs, or `<none>`.
fn format_labels(map: J) -> String {
    let mut pairs: Vec<(&str, &str)> = map.entries().map(|(k, v)| (k, v.str())).collect();
    pairs.sort_unstable();
    if pairs.is_empty() {
        return "<none>".to_owned();
    }
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Upstream's `LabelSelectorAsSelector(..).String()`: requirements sorted by key, `""` for a
/// missing or empty selector, `None` for a selector upstream refuses to convert.
fn selector_string(sel: J) -> Option<String> {
    let mut requirements: Vec<(&str, String)> = Vec::new();
    for (key, value) in sel.at(&["matchLabels"]).entries() {
        requirements.push((key, format!("{key}={}", value.str())));
    }
    for expr in sel.at(&["matchExpressions"]).items() {
        let key = expr.at(&["key"]).str();
        let values: BTreeSet<&str> = expr.at(&["values"]).items().map(J::str).collect();
        let joined = values.iter().copied().collect::<Vec<_>>().join(",");
        let text = match expr.at(&["operator"]).str() {
            "In" if !values.is_empty() => format!("{key} in ({joined})"),
            "NotIn" if !values.is_empty() => format!("{key} notin ({joined})"),
            "Exists" if values.is_empty() => key.to_owned(),
            "DoesNotExist" if values.is_empty() => format!("!{key}"),
            _ => return None,
        };
        requirements.push((key, text));
    }
    requirements.sort_by(|a, b| a.0.cmp(b.0));
    Some(
        requirements
            .into_iter()
            .map(|(_, text)| text)
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// Upstream's `metav1.FormatLabelSelector`.
fn format_label_selector(sel: J) -> String {
    match selector_string(sel) {
        None => "<error>".to_owned(),
        Some(s) if s.is_empty() => "<none>".to_owned(),
        Some(s) => s,
    }
}

/// Container names and images of a pod spec, each comma-joined.
fn container_cells(pod_spec: J) -> (Value, Value) {
    let (names, images): (Vec<&str>, Vec<&str>) = pod_spec
        .at(&["containers"])
        .items()
        .map(|c| (c.at(&["name"]).str(), c.at(&["image"]).str()))
        .unzip();
    (names.join(",").into(), images.join(",").into())
}

/// The first `max` entries, then how many more there are; `<unset>` when there are none.
fn list_with_more(list: &[String], max: usize) -> String {
    if list.len() > max {
        return format!("{} + {} more...", list[..max].join(","), list.len() - max);
    }
    if list.is_empty() {
        return "<unset>".to_owned();
    }
    list.join(",")
}

fn condition_true(conditions: J, type_: &str) -> bool {
    conditions
        .items()
        .find(|c| c.at(&["type"]).str() == type_)
        .is_some_and(|c| c.at(&["status"]).str() == "True")
}

fn default_cells(o: J, now: Timestamp) -> Vec<Value> {
    vec![name(o), age(o, now)]
}

fn created_at_cells(o: J, _now: Timestamp) -> Vec<Value> {
    // Upstream formats with second precision in UTC, and prints Go's zero time when unset.
    let created = match o.at(&["metadata", "creationTimestamp"]).time() {
        Some(t) => Timestamp::from_second(t.as_second())
            .map(|t| t.to_string())
            .unwrap_or_else(|_| t.to_string()),
        None => "0001-01-01T00:00:00Z".to_owned(),
    };
    vec![name(o), created.into()]
}

fn namespace_cells(o: J, now: Timestamp) -> Vec<Value> {
    let phase = or(o.at(&["status", "phase"]).str(), "Active");
    vec![name(o), phase.into(), age(o, now)]
}

/// Keeps the latest of the restart times seen so far.
fn bump(latest: &mut Option<Timestamp>, candidate: Option<Timestamp>) {
    if let Some(t) = candidate {
        if latest.is_none_or(|l| l < t) {
            *latest = Some(t);
        }
    }
}

fn pod_cells(o: J, now: Timestamp) -> Vec<Value> {
    let spec = o.at(&["spec"]);
    let status = o.at(&["status"]);
    let conditions = status.at(&["conditions"]);
    let phase = or(status.at(&["phase"]).str(), "Pending");
    let status_reason = status.at(&["reason"]).str();
    let mut reason = or(status_reason, phase).to_owned();
    if conditions.items().any(|c| {
        c.at(&["type"]).str() == "PodScheduled" && c.at(&["reason"]).str() == "SchedulingGated"
    }) {
        reason = "SchedulingGated".to_owned();
    }

    // Sidecars (init containers restarting always) run beside the main containers, so they
    // count towards READY and their restarts outlive initialization.
    let init_specs: Vec<J> = spec.at(&["initContainers"]).items().collect();
    let sidecar: HashMap<&str, bool> = init_specs
        .iter()
        .map(|c| {
            let always = c.at(&["restartPolicy"]).str() == "Always";
            (c.at(&["name"]).str(), always)
        })
        .collect();
    let is_sidecar = |name: &str| sidecar.get(name).copied().unwrap_or(false);
    let mut total = spec.at(&["containers"]).count() as i64;
    total += init_specs
        .iter()
        .filter(|c| c.at(&["restartPolicy"]).str() == "Always")
        .count() as i64;

    let mut ready = 0i64;
    let mut restarts = 0i64;
    let mut sidecar_restarts = 0i64;
    let mut last_restart = None;
    let mut last_sidecar_restart = None;
    let mut initializing = false;
    for (i, cs) in status.at(&["initContainerStatuses"]).items().enumerate() {
        let restart_count = cs.at(&["restartCount"]).int();
        let finished = cs.at(&["lastState", "terminated", "finishedAt"]).time();
        restarts += restart_count;
        bump(&mut last_restart, finished);
        let restartable = is_sidecar(cs.at(&["name"]).str());
        if restartable {
            sidecar_restarts += restart_count;
            bump(&mut last_sidecar_restart, finished);
        }
        let terminated = cs.at(&["state", "terminated"]);
        let waiting = cs.at(&["state", "waiting"]);
        if terminated.is_object() && terminated.at(&["exitCode"]).int() == 0 {
            continue;
        }
        if restartable && cs.at(&["started"]).bool() {
            if cs.at(&["ready"]).bool() {
                ready += 1;
            }
            continue;
        }
        let waiting_reason = waiting.at(&["reason"]).str();
        reason = if terminated.is_object() {
            match terminated.at(&["reason"]).str() {
                "" if terminated.at(&["signal"]).int() != 0 => {
                    format!("Init:Signal:{}", terminated.at(&["signal"]).int())
                }
                "" => format!("Init:ExitCode:{}", terminated.at(&["exitCode"]).int()),
                r => format!("Init:{r}"),
            }
        } else if waiting.is_object()
            && !waiting_reason.is_empty()
            && waiting_reason != "PodInitializing"
        {
            format!("Init:{waiting_reason}")
        } else {
            format!("Init:{i}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }

    let initialized = conditions
        .items()
        .find(|c| c.at(&["type"]).str() == "Initialized")
        .is_some_and(|c| c.at(&["status"]).str() == "True");
    if !initializing || initialized {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        let mut error_reason = None;
        let statuses: Vec<J> = status.at(&["containerStatuses"]).items().collect();
        // Walking backwards leaves the first container's state as the pod's reason.
        for cs in statuses.iter().rev() {
            restarts += cs.at(&["restartCount"]).int();
            bump(
                &mut last_restart,
                cs.at(&["lastState", "terminated", "finishedAt"]).time(),
            );
            let waiting = cs.at(&["state", "waiting"]);
            let terminated = cs.at(&["state", "terminated"]);
            if waiting.is_object() && !waiting.at(&["reason"]).str().is_empty() {
                reason = waiting.at(&["reason"]).str().to_owned();
            } else if terminated.is_object() {
                let exit_code = terminated.at(&["exitCode"]).int();
                reason = match terminated.at(&["reason"]).str() {
                    "" if terminated.at(&["signal"]).int() != 0 => {
                        format!("Signal:{}", terminated.at(&["signal"]).int())
                    }
                    "" => format!("ExitCode:{exit_code}"),
                    r => r.to_owned(),
                };
                if exit_code != 0 {
                    error_reason = Some(reason.clone());
                }
            } else if cs.at(&["ready"]).bool() && cs.at(&["state", "running"]).is_object() {
                has_running = true;
                ready += 1;
            }
        }
        // A finished container must not hide one still running, nor one that failed.
        if reason == "Completed" {
            let pod_ready = conditions
                .items()
                .any(|c| c.at(&["type"]).str() == "Ready" && c.at(&["status"]).str() == "True");
            if has_running && pod_ready {
                reason = "Running".to_owned();
            } else if let Some(error) = error_reason {
                reason = error;
            } else if has_running {
                reason = "NotReady".to_owned();
            }
        }
    }

    if deleting(o) && status_reason == "NodeLost" {
        reason = "Unknown".to_owned();
    } else if deleting(o) && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_owned();
    }

    let restarts = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", since(Some(t), now)),
        _ => restarts.to_string(),
    };

    let pod_ip = status
        .at(&["podIPs"])
        .items()
        .next()
        .map(|ip| ip.at(&["ip"]).str())
        .unwrap_or_else(|| status.at(&["podIP"]).str());
    let gates: Vec<&str> = spec
        .at(&["readinessGates"])
        .items()
        .map(|g| g.at(&["conditionType"]).str())
        .collect();
    let readiness_gates = if gates.is_empty() {
        "<none>".to_owned()
    } else {
        let met = gates
            .iter()
            .filter(|gate| condition_true(conditions, gate))
            .count();
        format!("{met}/{}", gates.len())
    };

    vec![
        name(o),
        format!("{ready}/{total}").into(),
        reason.into(),
        restarts.into(),
        age(o, now),
        or(pod_ip, "<none>").into(),
        or(spec.at(&["nodeName"]).str(), "<none>").into(),
        or(status.at(&["nominatedNodeName"]).str(), "<none>").into(),
        readiness_gates.into(),
    ]
}

fn service_external_ip(spec: J, status: J, type_: &str) -> String {
    let external: Vec<&str> = spec.at(&["externalIPs"]).items().map(J::str).collect();
    match type_ {
        "ClusterIP" | "NodePort" if external.is_empty() => "<none>".to_owned(),
        "ClusterIP" | "NodePort" => external.join(","),
        "LoadBalancer" => {
            let balancer: BTreeSet<&str> = status
                .at(&["loadBalancer", "ingress"])
                .items()
                .map(|i| or(i.at(&["ip"]).str(), i.at(&["hostname"]).str()))
                .filter(|a| !a.is_empty())
                .collect();
            if !external.is_empty() {
                balancer
                    .into_iter()
                    .chain(external)
                    .collect::<Vec<_>>()
                    .join(",")
            } else if !balancer.is_empty() {
                balancer.into_iter().collect::<Vec<_>>().join(",")
            } else {
                "<pending>".to_owned()
            }
        }
        "ExternalName" => spec.at(&["externalName"]).str().to_owned(),
        _ => "<unknown>".to_owned(),
    }
}

fn service_cells(o: J, now: Timestamp) -> Vec<Value> {
    let spec = o.at(&["spec"]);
    let type_ = or(spec.at(&["type"]).str(), "ClusterIP");
    let cluster_ip = spec
        .at(&["clusterIPs"])
        .items()
        .next()
        .map(J::str)
        .unwrap_or_else(|| spec.at(&["clusterIP"]).str());
    let ports: Vec<String> = spec
        .at(&["ports"])
        .items()
        .map(|p| {
            let port = p.at(&["port"]).int();
            let protocol = or(p.at(&["protocol"]).str(), "TCP");
            match p.at(&["nodePort"]).int() {
                node_port if node_port > 0 => format!("{port}:{node_port}/{protocol}"),
                _ => format!("{port}/{protocol}"),
            }
        })
        .collect();
    let ports = ports.join(",");
    vec![
        name(o),
        type_.into(),
        or(cluster_ip, "<none>").into(),
        service_external_ip(spec, o.at(&["status"]), type_).into(),
        or(&ports, "<none>").into(),
        age(o, now),
        format_labels(spec.at(&["selector"])).into(),
    ]
}

fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn endpoints_cells(o: J, now: Timestamp) -> Vec<Value> {
    const MAX: usize = 3;
    let subsets: Vec<J> = o.at(&["subsets"]).items().collect();
    let text = if subsets.is_empty() {
        "<none>".to_owned()
    } else {
        // Every address counts towards the total, but only the first few are spelled out.
        let mut list = Vec::new();
        let mut count = 0;
        for subset in subsets {
            let addresses: Vec<&str> = subset
                .at(&["addresses"])
                .items()
                .map(|a| a.at(&["ip"]).str())
                .collect();
            let ports: Vec<i64> = subset
                .at(&["ports"])
                .items()
                .map(|p| p.at(&["port"]).int())
                .collect();
            if ports.is_empty() {
                count += addresses.len();
                list.extend(
                    addresses
                        .iter()
                        .take(MAX - list.len())
                        .map(|a| a.to_string()),
                );
                continue;
            }
            for port in ports {
                count += addresses.len();
                let room = MAX - list.len();
                list.extend(addresses.iter().take(room).map(|a| join_host_port(a, port)));
            }
        }
        if count > list.len() {
            format!("{} + {} more...", list.join(","), count - MAX)
        } else {
            list.join(",")
        }
    };
    vec![name(o), text.into(), age(o, now)]
}

fn config_map_cells(o: J, now: Timestamp) -> Vec<Value> {
    let entries = o.at(&["data"]).count() + o.at(&["binaryData"]).count();
    vec![name(o), (entries as i64).into(), age(o, now)]
}

fn secret_cells(o: J, now: Timestamp) -> Vec<Value> {
    vec![
        name(o),
        or(o.at(&["type"]).str(), "Opaque").into(),
        (o.at(&["data"]).count() as i64).into(),
        age(o, now),
    ]
}

fn service_account_cells(o: J, now: Timestamp) -> Vec<Value> {
    vec![
        name(o),
        (o.at(&["secrets"]).count() as i64).into(),
        age(o, now),
    ]
}

fn node_cells(o: J, now: Timestamp) -> Vec<Value> {
    let status = o.at(&["status"]);
    // Only the Ready condition is reported; of duplicates, the last one wins.
    let ready = status
        .at(&["conditions"])
        .items()
        .filter(|c| c.at(&["type"]).str() == "Ready")
        .last();
    let mut state = vec![match ready {
        Some(c) if c.at(&["status"]).str() == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if o.at(&["spec", "unschedulable"]).bool() {
        state.push("SchedulingDisabled");
    }

    let mut roles = BTreeSet::new();
    for (key, value) in o.at(&["metadata", "labels"]).entries() {
        if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
            if !role.is_empty() {
                roles.insert(role);
            }
        } else if key == "kubernetes.io/role" && !value.str().is_empty() {
            roles.insert(value.str());
        }
    }
    let roles = roles.into_iter().collect::<Vec<_>>().join(",");

    let address = |type_: &str| {
        status
            .at(&["addresses"])
            .items()
            .find(|a| a.at(&["type"]).str() == type_)
            .map_or("<none>", |a| a.at(&["address"]).str())
    };
    let info = status.at(&["nodeInfo"]);
    let info = |field: &str| or(info.at(&[field]).str(), "<unknown>");
    vec![
        name(o),
        state.join(",").into(),
        or(&roles, "<none>").into(),
        age(o, now),
        status.at(&["nodeInfo", "kubeletVersion"]).str().into(),
        address("InternalIP").into(),
        address("ExternalIP").into(),
        info("osImage").into(),
        info("kernelVersion").into(),
        info("containerRuntimeVersion").into(),
    ]
}

/// Where core/v1 and events.k8s.io/v1 keep the fields an event row is made of; upstream
/// converts both into one internal type and prints them alike.
struct EventFields {
    involved: &'static str,
    message: &'static str,
    source: &'static str,
    first: &'static str,
    last: &'static str,
    count: &'static str,
}

fn core_event_cells(o: J, now: Timestamp) -> Vec<Value> {
    const FIELDS: EventFields = EventFields {
        involved: "involvedObject",
        message: "message",
        source: "source",
        first: "firstTimestamp",
        last: "lastTimestamp",
        count: "count",
    };
    event_cells(o, now, &FIELDS)
}

fn events_event_cells(o: J, now: Timestamp) -> Vec<Value> {
    const FIELDS: EventFields = EventFields {
        involved: "regarding",
        message: "note",
        source: "deprecatedSource",
        first: "deprecatedFirstTimestamp",
        last: "deprecatedLastTimestamp",
        count: "deprecatedCount",
    };
    event_cells(o, now, &FIELDS)
}

fn event_cells(o: J, now: Timestamp, f: &EventFields) -> Vec<Value> {
    // Events from the newer API carry only eventTime and, when repeated, a series.
    let first = match o.at(&[f.first]).time() {
        Some(t) => since(Some(t), now),
        None => since(o.at(&["eventTime"]).time(), now),
    };
    let mut last = match o.at(&[f.last]).time() {
        Some(t) => since(Some(t), now),
        None => first.clone(),
    };
    let series = o.at(&["series"]);
    let mut count = o.at(&[f.count]).int();
    if series.is_object() {
        last = since(series.at(&["lastObservedTime"]).time(), now);
        count = series.at(&["count"]).int();
    } else if count == 0 {
        count = 1;
    }

    let involved = o.at(&[f.involved]);
    let kind = involved.at(&["kind"]).str().to_lowercase();
    let target = match involved.at(&["name"]).str() {
        "" => kind,
        object => format!("{kind}/{object}"),
    };
    let component = or(
        o.at(&[f.source, "component"]).str(),
        o.at(&["reportingController"]).str(),
    );
    let host = or(
        o.at(&[f.source, "host"]).str(),
        o.at(&["reportingInstance"]).str(),
    );
    let source = if host.is_empty() {
        component.to_owned()
    } else {
        format!("{component}, {host}")
    };
    vec![
        last.into(),
        o.at(&["type"]).str().into(),
        o.at(&["reason"]).str().into(),
        target.into(),
        involved.at(&["fieldPath"]).str().into(),
        source.into(),
        o.at(&[f.message]).str().trim().into(),
        first.into(),
        count.into(),
        name(o),
    ]
}

/// Upstream's short access-mode list, in its fixed order whatever the object's order.
fn access_modes(modes: J) -> String {
    let present: BTreeSet<&str> = modes.items().map(J::str).collect();
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(mode, _)| present.contains(mode))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

/// The beta storage-class annotation, when present at all, wins over the spec field.
fn storage_class<'a>(o: J<'a>) -> &'a str {
    let annotation = o.at(&[
        "metadata",
        "annotations",
        "volume.beta.kubernetes.io/storage-class",
    ]);
    annotation
        .opt_str()
        .unwrap_or_else(|| o.at(&["spec", "storageClassName"]).str())
}

fn persistent_volume_cells(o: J, now: Timestamp) -> Vec<Value> {
    let spec = o.at(&["spec"]);
    let claim = spec.at(&["claimRef"]);
    let claim = if claim.present() {
        format!(
            "{}/{}",
            claim.at(&["namespace"]).str(),
            claim.at(&["name"]).str()
        )
    } else {
        String::new()
    };
    let phase = if deleting(o) {
        "Terminating"
    } else {
        or(o.at(&["status", "phase"]).str(), "Pending")
    };
    vec![
        name(o),
        quantity(spec.at(&["capacity", "storage"]))
            .unwrap_or_else(|| "0".to_owned())
            .into(),
        access_modes(spec.at(&["accessModes"])).into(),
        or(spec.at(&["persistentVolumeReclaimPolicy"]).str(), "Retain").into(),
        phase.into(),
        claim.into(),
        storage_class(o).into(),
        spec.at(&["volumeAttributesClassName"])
            .opt_str()
            .unwrap_or("<unset>")
            .into(),
        o.at(&["status", "reason"]).str().into(),
        age(o, now),
        or(spec.at(&["volumeMode"]).str(), "Filesystem").into(),
    ]
}

fn persistent_volume_claim_cells(o: J, now: Timestamp) -> Vec<Value> {
    let spec = o.at(&["spec"]);
    let status = o.at(&["status"]);
    let phase = if deleting(o) {
        "Terminating"
    } else {
        or(status.at(&["phase"]).str(), "Pending")
    };
    let volume = spec.at(&["volumeName"]).str();
    // What the claim got is only shown once it is bound to something.
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (
            quantity(status.at(&["capacity", "storage"])).unwrap_or_else(|| "0".to_owned()),
            access_modes(status.at(&["accessModes"])),
        )
    };
    let annotation = o.at(&[
        "metadata",
        "annotations",
        "volume.beta.kubernetes.io/storage-class",
    ]);
    let class = annotation
        .opt_str()
        .unwrap_or_else(|| spec.at(&["storageClassName"]).str());
    vec![
        name(o),
        phase.into(),
        volume.into(),
        capacity.into(),
        modes.into(),
        class.into(),
        spec.at(&["volumeAttributesClassName"])
            .opt_str()
            .unwrap_or("<unset>")
            .into(),
        age(o, now),
        or(spec.at(&["volumeMode"]).str(), "Filesystem").into(),
    ]
}

fn resource_quota_cells(o: J, now: Timestamp) -> Vec<Value> {
    let status = o.at(&["status"]);
    let mut hard: Vec<(&str, J)> = status.at(&["hard"]).entries().collect();
    hard.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut requests = Vec::new();
    let mut limits = Vec::new();
    for (resource, hard) in hard {
        let used = quantity(status.at(&["used", resource])).unwrap_or_else(|| "0".to_owned());
        let hard = quantity(hard).unwrap_or_else(|| "0".to_owned());
        let entry = format!("{resource}: {used}/{hard}");
        if resource.starts_with("limits.") {
            limits.push(entry);
        } else {
            requests.push(entry);
        }
    }
    vec![
        name(o),
        requests.join(", ").into(),
        limits.join(", ").into(),
        age(o, now),
    ]
}

fn replicas(spec: J) -> i64 {
    spec.at(&["replicas"]).opt_int().unwrap_or(1)
}

fn deployment_cells(o: J, now: Timestamp) -> Vec<Value> {
    let spec = o.at(&["spec"]);
    let status = o.at(&["status"]);
    let (containers, images) = container_cells(spec.at(&["template", "spec"]));
    let selector =
        selector_string(spec.at(&["selector"])).unwrap_or_else(|| "<invalid>".to_owned());
    vec![
        name(o),
        format!("{}/{}", status.at(&["readyReplicas"]).int(), replicas(spec)).into(),
        status.at(&["updatedReplicas"]).int().into(),
        status.at(&["availableReplicas"]).int().into(),
        age(o, now),
        containers,
        images,
        selector.into(),
    ]
}

fn replica_set_cells(o: J, now: Timestamp) -> Vec<Value> {
    let spec = o.at(&["spec"]);
    let status = o.at(&["status"]);
    let (containers, images) = container_cells(spec.at(&["template", "spec"]));
    vec![
        name(o),
        replicas(spec).into(),
        status.at(&["replicas"]).int().into(),
        status.at(&["readyReplicas"]).int().into(),
        age(o, now),
        containers,
        images,
        format_label_selector(spec.at(&["selector"])).into(),
    ]
}

fn daemon_set_cells(o: J, now: Timestamp) -> Vec<Value> {
    let spec = o.at(&["spec"]);
    let status = o.at(&["status"]);
    let pod_spec = spec.at(&["template", "spec"]);
    let (containers, images) = container_cells(pod_spec);
    vec![
        name(o),
        status.at(&["desiredNumberScheduled"]).int().into(),
        status.at(&["currentNumberScheduled"]).int().into(),
        status.at(&["numberReady"]).int().into(),
        status.at(&["updatedNumberScheduled"]).int().into(),
        status.at(&["numberAvailable"]).int().into(),
        format_labels(pod_spec.at(&["nodeSelector"])).into(),
        age(o, now),
        containers,
        images,
        format_label_selector(spec.at(&["selector"])).into(),
    ]
}

fn stateful_set_cells(o: J, now: Timestamp) -> Vec<Value> {
    let spec = o.at(&["spec"]);
    let (containers, images) = container_cells(spec.at(&["template", "spec"]));
    let ready = o.at(&["status", "readyReplicas"]).int();
    vec![
        name(o),
        format!("{ready}/{}", replicas(spec)).into(),
        age(o, now),
        containers,
        images,
    ]
}

fn controller_revision_cells(o: J, now: Timestamp) -> Vec<Value> {
    let owner = o
        .at(&["metadata", "ownerReferences"])
        .items()
        .find(|r| r.at(&["controller"]).bool());
    let controller = match owner {
        None => "<none>".to_owned(),
        Some(owner) => {
            let api_version = owner.at(&["apiVersion"]).str();
            let kind = owner.at(&["kind"]).str();
            let owner_name = owner.at(&["name"]).str();
            // The group is what precedes the version; upstream rejects more than one slash.
            let group = match api_version.split_once('/') {
                None => Some(""),
                Some((group, version)) if !version.contains('/') => Some(group),
                Some(_) => None,
            };
            match group {
                None => "<invalid>".to_owned(),
                Some("") if kind.is_empty() => owner_name.to_owned(),
                Some("") => format!("{}/{owner_name}", kind.to_lowercase()),
                Some(group) => format!(
                    "{}.{}/{owner_name}",
                    kind.to_lowercase(),
                    group.to_lowercase()
                ),
            }
        }
    };
    vec![
        name(o),
        controller.into(),
        o.at(&["revision"]).int().into(),
        age(o, now),
    ]
}

fn job_cells(o: J, now: Timestamp) -> Vec<Value> {
    let spec = o.at(&["spec"]);
    let status = o.at(&["status"]);
    let succeeded = status.at(&["succeeded"]).int();
    let completions = match spec.at(&["completions"]).opt_int() {
        Some(completions) => format!("{succeeded}/{completions}"),
        None => match spec.at(&["parallelism"]).int() {
            parallelism if parallelism > 1 => format!("{succeeded}/1 of {parallelism}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let duration = match (
        status.at(&["startTime"]).time(),
        status.at(&["completionTime"]).time(),
    ) {
        (None, _) => String::new(),
        (Some(start), None) => since(Some(start), now),
        (Some(start), Some(end)) => human_nanos(end.as_nanosecond() - start.as_nanosecond()),
    };
    let conditions = status.at(&["conditions"]);
    let state = if condition_true(conditions, "Complete") {
        "Complete"
    } else if condition_true(conditions, "Failed") {
        "Failed"
    } else if deleting(o) {
        "Terminating"
    } else if condition_true(conditions, "Suspended") {
        "Suspended"
    } else if condition_true(conditions, "FailureTarget") {
        "FailureTarget"
    } else if condition_true(conditions, "SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    };
    let (containers, images) = container_cells(spec.at(&["template", "spec"]));
    vec![
        name(o),
        state.into(),
        completions.into(),
        duration.into(),
        age(o, now),
        containers,
        images,
        format_label_selector(spec.at(&["selector"])).into(),
    ]
}

fn cron_job_cells(o: J, now: Timestamp) -> Vec<Value> {
    let spec = o.at(&["spec"]);
    let job = spec.at(&["jobTemplate", "spec"]);
    let suspend = if spec.at(&["suspend"]).bool() {
        "True"
    } else {
        "False"
    };
    let last = o.at(&["status", "lastScheduleTime"]);
    let last = if last.present() {
        since(last.time(), now)
    } else {
        "<none>".to_owned()
    };
    let (containers, images) = container_cells(job.at(&["template", "spec"]));
    vec![
        name(o),
        spec.at(&["schedule"]).str().into(),
        spec.at(&["timeZone"]).opt_str().unwrap_or("<none>").into(),
        suspend.into(),
        (o.at(&["status", "active"]).count() as i64).into(),
        last.into(),
        age(o, now),
        containers,
        images,
        format_label_selector(job.at(&["selector"])).into(),
    ]
}

fn lease_cells(o: J, now: Timestamp) -> Vec<Value> {
    vec![
        name(o),
        o.at(&["spec", "holderIdentity"]).str().into(),
        age(o, now),
    ]
}

fn endpoint_slice_cells(o: J, now: Timestamp) -> Vec<Value> {
    let ports: Vec<String> = o
        .at(&["ports"])
        .items()
        .map(
            |p| match (p.at(&["port"]).opt_int(), p.at(&["name"]).opt_str()) {
                (Some(port), _) => port.to_string(),
                (None, Some(name)) => name.to_owned(),
                (None, None) => "*".to_owned(),
            },
        )
        .collect();
    let addresses: Vec<String> = o
        .at(&["endpoints"])
        .items()
        .flat_map(|e| e.at(&["addresses"]).items())
        .map(|a| a.str().to_owned())
        .collect();
    vec![
        name(o),
        o.at(&["addressType"]).str().into(),
        list_with_more(&ports, 3).into(),
        list_with_more(&addresses, 3).into(),
        age(o, now),
    ]
}

fn ingress_cells(o: J, now: Timestamp) -> Vec<Value> {
    const MAX: usize = 3;
    let spec = o.at(&["spec"]);
    let rules: Vec<J> = spec.at(&["rules"]).items().collect();
    // Upstream stops collecting at three hosts, and then counts every rule, host or not.
    let mut hosts = Vec::new();
    let mut more = false;
    for rule in &rules {
        more |= hosts.len() == MAX;
        let host = rule.at(&["host"]).str();
        if !more && !host.is_empty() {
            hosts.push(host);
        }
    }
    let hosts = match (hosts.is_empty(), more) {
        (true, _) => "*".to_owned(),
        (false, true) => format!("{} + {} more...", hosts.join(","), rules.len() - MAX),
        (false, false) => hosts.join(","),
    };
    let addresses: BTreeSet<&str> = o
        .at(&["status", "loadBalancer", "ingress"])
        .items()
        .map(|i| or(i.at(&["ip"]).str(), i.at(&["hostname"]).str()))
        .filter(|a| !a.is_empty())
        .collect();
    let ports = if spec.at(&["tls"]).count() > 0 {
        "80, 443"
    } else {
        "80"
    };
    vec![
        name(o),
        spec.at(&["ingressClassName"])
            .opt_str()
            .unwrap_or("<none>")
            .into(),
        hosts.into(),
        addresses.into_iter().collect::<Vec<_>>().join(",").into(),
        ports.into(),
        age(o, now),
    ]
}

fn ingress_class_cells(o: J, now: Timestamp) -> Vec<Value> {
    let parameters = o.at(&["spec", "parameters"]);
    let parameters = if parameters.present() {
        let kind = parameters.at(&["kind"]).str();
        let object = parameters.at(&["name"]).str();
        match parameters.at(&["apiGroup"]).opt_str() {
            Some(group) => format!("{kind}.{group}/{object}"),
            None => format!("{kind}/{object}"),
        }
    } else {
        "<none>".to_owned()
    };
    let mut shown = o.at(&["metadata", "name"]).str().to_owned();
    let default = o.at(&[
        "metadata",
        "annotations",
        "ingressclass.kubernetes.io/is-default-class",
    ]);
    if default.str() == "true" {
        shown.push_str(" (default)");
    }
    vec![
        shown.into(),
        o.at(&["spec", "controller"]).str().into(),
        parameters.into(),
        age(o, now),
    ]
}

fn network_policy_cells(o: J, now: Timestamp) -> Vec<Value> {
    vec![
        name(o),
        format_label_selector(o.at(&["spec", "podSelector"])).into(),
        age(o, now),
    ]
}

fn role_binding_cells(o: J, now: Timestamp) -> Vec<Value> {
    let role_ref = o.at(&["roleRef"]);
    let role = format!(
        "{}/{}",
        role_ref.at(&["kind"]).str(),
        role_ref.at(&["name"]).str()
    );
    let mut users = Vec::new();
    let mut groups = Vec::new();
    let mut accounts = Vec::new();
    for subject in o.at(&["subjects"]).items() {
        let subject_name = subject.at(&["name"]).str();
        match subject.at(&["kind"]).str() {
            "User" => users.push(subject_name.to_owned()),
            "Group" => groups.push(subject_name.to_owned()),
            "ServiceAccount" => accounts.push(format!(
                "{}/{subject_name}",
                subject.at(&["namespace"]).str()
            )),
            _ => {}
        }
    }
    vec![
        name(o),
        role.into(),
        age(o, now),
        users.join(", ").into(),
        groups.join(", ").into(),
        accounts.join(", ").into(),
    ]
}

fn storage_class_cells(o: J, now: Timestamp) -> Vec<Value> {
    let annotations = o.at(&["metadata", "annotations"]);
    let is_default = [
        "storageclass.kubernetes.io/is-default-class",
        "storageclass.beta.kubernetes.io/is-default-class",
    ]
    .iter()
    .any(|key| annotations.at(&[key]).str() == "true");
    let mut shown = o.at(&["metadata", "name"]).str().to_owned();
    if is_default {
        shown.push_str(" (default)");
    }
    vec![
        shown.into(),
        o.at(&["provisioner"]).str().into(),
        or(o.at(&["reclaimPolicy"]).str(), "Delete").into(),
        or(o.at(&["volumeBindingMode"]).str(), "Immediate").into(),
        o.at(&["allowVolumeExpansion"]).bool().into(),
        age(o, now),
    ]
}

fn runtime_class_cells(o: J, now: Timestamp) -> Vec<Value> {
    vec![name(o), o.at(&["handler"]).str().into(), age(o, now)]
}

fn pod_disruption_budget_cells(o: J, now: Timestamp) -> Vec<Value> {
    let spec = o.at(&["spec"]);
    let bound = |field: &str| int_or_string(spec.at(&[field])).unwrap_or_else(|| "N/A".to_owned());
    vec![
        name(o),
        bound("minAvailable").into(),
        bound("maxUnavailable").into(),
        o.at(&["status", "disruptionsAllowed"]).int().into(),
        age(o, now),
    ]
}

/// Upstream's HPA TARGETS: for each metric, where it stands against where it should, the
/// first two spelled out. A metric's status is the one at the same position in the status
/// list. Where upstream prints an optional quantity without checking it, a missing one shows
/// as `<nil>`, as it does there.
fn hpa_targets(specs: &[J], statuses: &[J]) -> String {
    const MAX: usize = 2;
    if specs.is_empty() {
        return "<none>".to_owned();
    }
    let nil = |v: J| quantity(v).unwrap_or_else(|| "<nil>".to_owned());
    let list: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let status = statuses.get(i).copied().unwrap_or(J(None));
            match spec.at(&["type"]).str() {
                source @ ("External" | "Object") => {
                    let key = if source == "External" {
                        "external"
                    } else {
                        "object"
                    };
                    let target = spec.at(&[key, "target"]);
                    let current = status.at(&[key]);
                    if target.at(&["averageValue"]).present() {
                        let have = match quantity(current.at(&["current", "averageValue"])) {
                            Some(q) if current.is_object() => q,
                            _ => "<unknown>".to_owned(),
                        };
                        format!("{have}/{} (avg)", nil(target.at(&["averageValue"])))
                    } else {
                        let have = if current.is_object() {
                            nil(current.at(&["current", "value"]))
                        } else {
                            "<unknown>".to_owned()
                        };
                        format!("{have}/{}", nil(target.at(&["value"])))
                    }
                }
                "Pods" => {
                    let current = status.at(&["pods"]);
                    let have = if current.is_object() {
                        nil(current.at(&["current", "averageValue"]))
                    } else {
                        "<unknown>".to_owned()
                    };
                    format!(
                        "{have}/{}",
                        nil(spec.at(&["pods", "target", "averageValue"]))
                    )
                }
                source @ ("Resource" | "ContainerResource") => {
                    let key = if source == "Resource" {
                        "resource"
                    } else {
                        "containerResource"
                    };
                    let metric = spec.at(&[key]);
                    let resource = metric.at(&["name"]).str();
                    let target = metric.at(&["target"]);
                    let current = status.at(&[key]);
                    if target.at(&["averageValue"]).present() {
                        let have = if current.is_object() {
                            nil(current.at(&["current", "averageValue"]))
                        } else {
                            "<unknown>".to_owned()
                        };
                        format!("{resource}: {have}/{}", nil(target.at(&["averageValue"])))
                    } else {
                        let have = match current.at(&["current", "averageUtilization"]).opt_int() {
                            Some(u) if current.is_object() => format!("{u}%"),
                            _ => "<unknown>".to_owned(),
                        };
                        let goal = match target.at(&["averageUtilization"]).opt_int() {
                            Some(u) => format!("{u}%"),
                            None => "<auto>".to_owned(),
                        };
                        format!("{resource}: {have}/{goal}")
                    }
                }
                _ => "<unknown type>".to_owned(),
            }
        })
        .collect();
    if list.len() > MAX {
        format!("{} + {} more...", list[..MAX].join(", "), list.len() - MAX)
    } else {
        list.join(", ")
    }
}

fn horizontal_pod_autoscaler_cells(o: J, now: Timestamp) -> Vec<Value> {
    let spec = o.at(&["spec"]);
    let target = spec.at(&["scaleTargetRef"]);
    let reference = format!(
        "{}/{}",
        target.at(&["kind"]).str(),
        target.at(&["name"]).str()
    );
    // autoscaling/v2 defaults an empty metric list to 80% average CPU utilization.
    let default_metric = serde_json::json!({
        "type": "Resource",
        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
    });
    let mut specs: Vec<J> = spec.at(&["metrics"]).items().collect();
    if specs.is_empty() {
        specs.push(J(Some(&default_metric)));
    }
    let statuses: Vec<J> = o.at(&["status", "currentMetrics"]).items().collect();
    vec![
        name(o),
        reference.into(),
        hpa_targets(&specs, &statuses).into(),
        spec.at(&["minReplicas"])
            .opt_int()
            .unwrap_or(1)
            .to_string()
            .into(),
        spec.at(&["maxReplicas"]).int().into(),
        o.at(&["status", "currentReplicas"]).int().into(),
        age(o, now),
    ]
}

fn priority_class_cells(o: J, now: Timestamp) -> Vec<Value> {
    vec![
        name(o),
        o.at(&["value"]).int().into(),
        o.at(&["globalDefault"]).bool().into(),
        age(o, now),
        or(o.at(&["preemptionPolicy"]).str(), "PreemptLowerPriority").into(),
    ]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: &str = "2024-05-01T12:00:00Z";

    fn now() -> Timestamp {
        NOW.parse().unwrap()
    }

    /// The timestamp `secs` seconds before `NOW`.
    fn ago(secs: i64) -> String {
        (now() - jiff::SignedDuration::from_secs(secs)).to_string()
    }

    fn row(group: &str, kind: &str, obj: Value) -> Vec<Value> {
        let row = cells(group, kind, &obj, now());
        assert_eq!(row.len(), columns(group, kind).len(), "{group}/{kind}");
        row
    }

    fn headers(group: &str, kind: &str) -> Vec<&'static str> {
        columns(group, kind).iter().map(|c| c.name).collect()
    }

    fn wide_headers(group: &str, kind: &str) -> Vec<&'static str> {
        columns(group, kind)
            .iter()
            .filter(|c| c.priority == 1)
            .map(|c| c.name)
            .collect()
    }

    fn meta(name: &str, created_secs_ago: i64) -> Value {
        json!({"name": name, "namespace": "default", "creationTimestamp": ago(created_secs_ago)})
    }

    const KINDS: &[(&str, &str)] = &[
        ("", "Namespace"),
        ("", "Pod"),
        ("", "Service"),
        ("", "Endpoints"),
        ("", "ConfigMap"),
        ("", "Secret"),
        ("", "ServiceAccount"),
        ("", "Node"),
        ("", "Event"),
        ("", "PersistentVolume"),
        ("", "PersistentVolumeClaim"),
        ("", "LimitRange"),
        ("", "ResourceQuota"),
        ("apps", "Deployment"),
        ("apps", "ReplicaSet"),
        ("apps", "DaemonSet"),
        ("apps", "StatefulSet"),
        ("apps", "ControllerRevision"),
        ("batch", "Job"),
        ("batch", "CronJob"),
        ("coordination.k8s.io", "Lease"),
        ("discovery.k8s.io", "EndpointSlice"),
        ("events.k8s.io", "Event"),
        ("networking.k8s.io", "Ingress"),
        ("networking.k8s.io", "IngressClass"),
        ("networking.k8s.io", "NetworkPolicy"),
        ("rbac.authorization.k8s.io", "Role"),
        ("rbac.authorization.k8s.io", "ClusterRole"),
        ("rbac.authorization.k8s.io", "RoleBinding"),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
        ("storage.k8s.io", "StorageClass"),
        ("node.k8s.io", "RuntimeClass"),
        ("policy", "PodDisruptionBudget"),
        ("autoscaling", "HorizontalPodAutoscaler"),
        ("scheduling.k8s.io", "PriorityClass"),
        ("example.com", "Widget"),
    ];

    #[test]
    fn human_duration_boundaries() {
        let cases = [
            (0, "0s"),
            (59, "59s"),
            (119, "119s"),
            (120, "2m"),
            (121, "2m1s"),
            (9 * 60 + 59, "9m59s"),
            (10 * 60, "10m"),
            (10 * 60 + 59, "10m"),
            (179 * 60 + 59, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 5 * 60 + 9, "3h5m"),
            (7 * 3600 + 59 * 60, "7h59m"),
            (8 * 3600, "8h"),
            (47 * 3600 + 59 * 60, "47h"),
            (48 * 3600, "2d"),
            (51 * 3600, "2d3h"),
            (8 * 86400 - 3600, "7d23h"),
            (8 * 86400, "8d"),
            (729 * 86400, "729d"),
            (730 * 86400, "2y"),
            (731 * 86400, "2y1d"),
            (4 * 365 * 86400, "4y"),
            (8 * 365 * 86400 - 86400, "7y364d"),
            (8 * 365 * 86400, "8y"),
            (8 * 365 * 86400 + 100 * 86400, "8y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(Duration::from_secs(secs)), want, "{secs}s");
        }
        assert_eq!(human_duration(Duration::from_millis(1999)), "1s");
        // Go's Duration saturates at ~292 years.
        assert_eq!(human_duration(Duration::from_secs(u64::MAX)), "292y");
    }

    #[test]
    fn ages_tolerate_small_skew_but_not_large() {
        let at = |nanos: i64| now() + jiff::SignedDuration::from_nanos(nanos);
        assert_eq!(since(Some(at(1_500_000_000)), now()), "0s");
        assert_eq!(since(Some(at(1_999_999_999)), now()), "0s");
        assert_eq!(since(Some(at(2_000_000_000)), now()), "<invalid>");
        assert_eq!(since(None, now()), "<unknown>");
    }

    #[test]
    fn every_kind_survives_empty_and_malformed_objects() {
        let junk = [
            json!(null),
            json!("pod"),
            json!([1, 2]),
            json!({}),
            json!({"metadata": "x", "spec": 5, "status": [true]}),
            json!({"metadata": {"name": 3, "creationTimestamp": "yesterday", "labels": []},
                   "spec": {"containers": {"a": 1}, "ports": "80", "selector": "app",
                            "rules": 7, "metrics": [null, 1, {"type": 3}]},
                   "status": {"containerStatuses": [null, {"state": "x"}],
                              "conditions": [{"type": null}], "hard": {"cpu": {}}}}),
        ];
        for (group, kind) in KINDS {
            for obj in &junk {
                row(group, kind, obj.clone());
            }
        }
    }

    #[test]
    fn column_shapes() {
        for (group, kind) in KINDS {
            let cols = columns(group, kind);
            let names: Vec<_> = cols.iter().filter(|c| c.format == "name").collect();
            assert_eq!(names.len(), 1, "{group}/{kind}");
            assert_eq!(names[0].name, "Name");
            for c in cols {
                assert!(matches!(c.type_, "string" | "integer" | "boolean" | "date"));
                assert!(matches!(c.priority, 0 | 1));
                assert!(!c.description.is_empty());
            }
        }
        assert_eq!(headers("example.com", "Widget"), ["Name", "Age"]);
        assert_eq!(headers("", "LimitRange"), ["Name", "Created At"]);
        assert_eq!(columns("", "LimitRange")[1].type_, "date");
        // Kinds are matched within their group only.
        assert_eq!(headers("apps", "Pod"), ["Name", "Age"]);
    }

    #[test]
    fn namespace() {
        assert_eq!(headers("", "Namespace"), ["Name", "Status", "Age"]);
        let ns =
            json!({"metadata": meta("kube-system", 3 * 86400), "status": {"phase": "Terminating"}});
        assert_eq!(
            row("", "Namespace", ns),
            [json!("kube-system"), json!("Terminating"), json!("3d")]
        );
        let bare = json!({"metadata": {"name": "new"}});
        assert_eq!(
            row("", "Namespace", bare),
            [json!("new"), json!("Active"), json!("<unknown>")]
        );
    }

    fn pod(status: Value) -> Value {
        json!({
            "metadata": meta("web-0", 600),
            "spec": {"nodeName": "node-a", "containers": [{"name": "app"}, {"name": "proxy"}]},
            "status": status,
        })
    }

    #[test]
    fn pod_columns() {
        assert_eq!(
            headers("", "Pod"),
            [
                "Name",
                "Ready",
                "Status",
                "Restarts",
                "Age",
                "IP",
                "Node",
                "Nominated Node",
                "Readiness Gates"
            ]
        );
        assert_eq!(
            wide_headers("", "Pod"),
            ["IP", "Node", "Nominated Node", "Readiness Gates"]
        );
        assert_eq!(columns("", "Pod")[3].type_, "string");
    }

    #[test]
    fn pod_running_with_restarts() {
        let p = pod(json!({
            "phase": "Running",
            "podIP": "10.42.0.7",
            "podIPs": [{"ip": "10.42.0.7"}, {"ip": "fd00::7"}],
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [
                {"name": "app", "ready": true, "restartCount": 2, "state": {"running": {}},
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(3600)}}},
                {"name": "proxy", "ready": true, "restartCount": 1, "state": {"running": {}},
                 "lastState": {"terminated": {"exitCode": 137, "finishedAt": ago(300)}}},
            ],
        }));
        assert_eq!(
            row("", "Pod", p),
            [
                json!("web-0"),
                json!("2/2"),
                json!("Running"),
                json!("3 (5m ago)"),
                json!("10m"),
                json!("10.42.0.7"),
                json!("node-a"),
                json!("<none>"),
                json!("<none>"),
            ]
        );
    }

    #[test]
    fn pod_pending_without_status() {
        let p = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}});
        assert_eq!(
            row("", "Pod", p),
            [
                json!("p"),
                json!("0/1"),
                json!("Pending"),
                json!("0"),
                json!("<unknown>"),
                json!("<none>"),
                json!("<none>"),
                json!("<none>"),
                json!("<none>"),
            ]
        );
    }

    fn status_of(p: Value) -> (Value, Value, Value) {
        let r = row("", "Pod", p);
        (r[1].clone(), r[2].clone(), r[3].clone())
    }

    #[test]
    fn pod_crash_loop_and_waiting_reasons() {
        let p = pod(json!({
            "phase": "Running",
            "containerStatuses": [
                {"name": "app", "restartCount": 4,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(40)}}},
                {"name": "proxy", "ready": true, "state": {"running": {}}},
            ],
        }));
        assert_eq!(
            status_of(p),
            (
                json!("1/2"),
                json!("CrashLoopBackOff"),
                json!("4 (40s ago)")
            )
        );

        let p = pod(json!({
            "phase": "Pending",
            "containerStatuses": [
                {"name": "app", "state": {"waiting": {"reason": "ContainerCreating"}}},
                {"name": "proxy", "state": {"waiting": {"reason": "ErrImagePull"}}},
            ],
        }));
        // The first container's state wins.
        assert_eq!(status_of(p).1, json!("ContainerCreating"));
    }

    fn init_pod(init_statuses: Value, conditions: Value) -> Value {
        json!({
            "metadata": meta("job-x", 60),
            "spec": {
                "initContainers": [{"name": "a"}, {"name": "b"}, {"name": "c"}],
                "containers": [{"name": "main"}],
            },
            "status": {
                "phase": "Pending",
                "conditions": conditions,
                "initContainerStatuses": init_statuses,
                "containerStatuses": [{"name": "main", "state": {"waiting": {"reason": "PodInitializing"}}}],
            },
        })
    }

    #[test]
    fn pod_init_progress() {
        let p = init_pod(
            json!([
                {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                {"name": "b", "state": {"running": {}}},
                {"name": "c", "state": {"waiting": {"reason": "PodInitializing"}}},
            ]),
            json!([{"type": "Initialized", "status": "False"}]),
        );
        assert_eq!(status_of(p), (json!("0/1"), json!("Init:1/3"), json!("0")));

        let p = init_pod(
            json!([{"name": "a", "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 2, "finishedAt": ago(125)}}}]),
            json!([]),
        );
        assert_eq!(
            status_of(p),
            (
                json!("0/1"),
                json!("Init:CrashLoopBackOff"),
                json!("3 (2m5s ago)")
            )
        );

        let failed = |terminated: Value| {
            status_of(init_pod(
                json!([{"name": "a", "state": {"terminated": terminated}}]),
                json!([]),
            ))
            .1
        };
        assert_eq!(
            failed(json!({"exitCode": 1, "reason": "Error"})),
            json!("Init:Error")
        );
        assert_eq!(
            failed(json!({"exitCode": 137, "signal": 9})),
            json!("Init:Signal:9")
        );
        assert_eq!(failed(json!({"exitCode": 3})), json!("Init:ExitCode:3"));

        // Once initialized, init containers no longer decide the status.
        let p = init_pod(
            json!([{"name": "a", "state": {"running": {}}}]),
            json!([{"type": "Initialized", "status": "True"}]),
        );
        assert_eq!(status_of(p).1, json!("PodInitializing"));
    }

    #[test]
    fn pod_sidecars_count_as_containers() {
        let p = json!({
            "metadata": meta("with-sidecar", 60),
            "spec": {
                "initContainers": [{"name": "setup"}, {"name": "mesh", "restartPolicy": "Always"}],
                "containers": [{"name": "app"}],
            },
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
                "initContainerStatuses": [
                    {"name": "setup", "restartCount": 5, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                    {"name": "mesh", "restartCount": 1, "started": true, "ready": true, "state": {"running": {}},
                     "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(90)}}},
                ],
                "containerStatuses": [{"name": "app", "ready": true, "state": {"running": {}}}],
            },
        });
        // The finished init container's restarts no longer count; the sidecar's do.
        assert_eq!(
            status_of(p),
            (json!("2/2"), json!("Running"), json!("1 (90s ago)"))
        );
    }

    #[test]
    fn pod_completed_and_failed() {
        let completed = |exit_a: i64, reason_a: &str, phase: &str| {
            pod(json!({
                "phase": phase,
                "containerStatuses": [
                    {"name": "app", "state": {"terminated": {"exitCode": exit_a, "reason": reason_a}}},
                    {"name": "proxy", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                ],
            }))
        };
        assert_eq!(
            status_of(completed(0, "Completed", "Succeeded")).1,
            json!("Completed")
        );
        assert_eq!(status_of(completed(1, "Error", "Failed")).1, json!("Error"));

        // The first container completed, the second failed: the failure shows.
        let p = pod(json!({
            "phase": "Failed",
            "containerStatuses": [
                {"name": "app", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                {"name": "proxy", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}},
            ],
        }));
        assert_eq!(status_of(p).1, json!("Error"));

        // One finished, one still running: Running when the pod is ready, else NotReady.
        let mixed = |ready: &str| {
            pod(json!({
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": ready}],
                "containerStatuses": [
                    {"name": "app", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                    {"name": "proxy", "ready": true, "state": {"running": {}}},
                ],
            }))
        };
        assert_eq!(
            status_of(mixed("True")),
            (json!("1/2"), json!("Running"), json!("0"))
        );
        assert_eq!(status_of(mixed("False")).1, json!("NotReady"));
    }

    #[test]
    fn pod_terminating_unknown_and_gated() {
        let mut p = pod(json!({"phase": "Running"}));
        p["metadata"]["deletionTimestamp"] = json!(ago(5));
        assert_eq!(status_of(p.clone()).1, json!("Terminating"));
        p["status"]["phase"] = json!("Succeeded");
        assert_eq!(status_of(p.clone()).1, json!("Succeeded"));
        p["status"] = json!({"phase": "Running", "reason": "NodeLost"});
        assert_eq!(status_of(p).1, json!("Unknown"));

        let p = pod(json!({
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}],
        }));
        assert_eq!(status_of(p).1, json!("SchedulingGated"));

        let p = pod(json!({"phase": "Failed", "reason": "Evicted"}));
        assert_eq!(status_of(p).1, json!("Evicted"));
    }

    #[test]
    fn pod_wide_columns() {
        let p = json!({
            "metadata": meta("gated", 10),
            "spec": {
                "containers": [{"name": "a"}],
                "readinessGates": [{"conditionType": "example.com/lb"}, {"conditionType": "example.com/dns"}],
            },
            "status": {
                "phase": "Pending",
                "podIP": "10.1.2.3",
                "nominatedNodeName": "node-b",
                "conditions": [
                    {"type": "example.com/lb", "status": "True"},
                    {"type": "example.com/dns", "status": "False"},
                ],
            },
        });
        let r = row("", "Pod", p);
        assert_eq!(
            r[5..],
            [
                json!("10.1.2.3"),
                json!("<none>"),
                json!("node-b"),
                json!("1/2")
            ]
        );
    }

    fn service(spec: Value, status: Value) -> Vec<Value> {
        row(
            "",
            "Service",
            json!({"metadata": meta("svc", 120), "spec": spec, "status": status}),
        )
    }

    #[test]
    fn service_types() {
        assert_eq!(
            headers("", "Service"),
            [
                "Name",
                "Type",
                "Cluster-IP",
                "External-IP",
                "Port(s)",
                "Age",
                "Selector"
            ]
        );
        assert_eq!(wide_headers("", "Service"), ["Selector"]);
        let r = service(
            json!({"type": "ClusterIP", "clusterIP": "10.43.0.10", "clusterIPs": ["10.43.0.10"],
                   "selector": {"k8s-app": "kube-dns", "a": "b"},
                   "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}, {"port": 9153}]}),
            json!({}),
        );
        assert_eq!(
            r,
            [
                json!("svc"),
                json!("ClusterIP"),
                json!("10.43.0.10"),
                json!("<none>"),
                json!("53/UDP,53/TCP,9153/TCP"),
                json!("2m"),
                json!("a=b,k8s-app=kube-dns"),
            ]
        );

        let r = service(
            json!({"type": "NodePort", "clusterIPs": ["10.43.1.1"], "externalIPs": ["192.0.2.1", "192.0.2.2"],
                   "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}),
            json!({}),
        );
        assert_eq!(
            r[3..5],
            [json!("192.0.2.1,192.0.2.2"), json!("80:30080/TCP")]
        );

        let r = service(
            json!({"type": "LoadBalancer", "clusterIP": "10.43.1.2"}),
            json!({}),
        );
        assert_eq!(
            r[2..5],
            [json!("10.43.1.2"), json!("<pending>"), json!("<none>")]
        );

        let r = service(
            json!({"type": "LoadBalancer", "externalIPs": ["192.0.2.9"]}),
            json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.5"}, {"hostname": "lb.example.com"}, {"ip": "203.0.113.5"}]}}),
        );
        assert_eq!(r[3], json!("203.0.113.5,lb.example.com,192.0.2.9"));

        let r = service(
            json!({"type": "ExternalName", "externalName": "db.example.com"}),
            json!({}),
        );
        assert_eq!(
            r[2..5],
            [json!("<none>"), json!("db.example.com"), json!("<none>")]
        );

        let r = service(
            json!({"clusterIP": "None", "clusterIPs": ["None"]}),
            json!({}),
        );
        assert_eq!(
            r[1..4],
            [json!("ClusterIP"), json!("None"), json!("<none>")]
        );
        assert_eq!(r[6], json!("<none>"));

        let r = service(json!({"type": "Bogus"}), json!({}));
        assert_eq!(r[3], json!("<unknown>"));
    }

    #[test]
    fn endpoints() {
        let ep = |subsets: Value| {
            row(
                "",
                "Endpoints",
                json!({"metadata": meta("e", 5), "subsets": subsets}),
            )[1]
            .clone()
        };
        assert_eq!(ep(json!(null)), json!("<none>"));
        assert_eq!(
            ep(
                json!([{"addresses": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}], "ports": [{"port": 8080}]}])
            ),
            json!("10.0.0.1:8080,[fd00::1]:8080")
        );
        assert_eq!(
            ep(
                json!([{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}, {"port": 443}]}])
            ),
            json!("10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more...")
        );
        assert_eq!(
            ep(json!([{"addresses": [{"ip": "10.0.0.3"}]}])),
            json!("10.0.0.3")
        );
        assert_eq!(
            ep(json!([{"notReadyAddresses": [{"ip": "10.0.0.3"}], "ports": [{"port": 80}]}])),
            json!("")
        );
    }

    #[test]
    fn config_map_secret_service_account() {
        let cm = json!({"metadata": meta("cfg", 30), "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
        assert_eq!(
            row("", "ConfigMap", cm),
            [json!("cfg"), json!(3), json!("30s")]
        );

        assert_eq!(headers("", "Secret"), ["Name", "Type", "Data", "Age"]);
        let s = json!({"metadata": meta("tls", 30), "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}});
        assert_eq!(
            row("", "Secret", s),
            [
                json!("tls"),
                json!("kubernetes.io/tls"),
                json!(2),
                json!("30s")
            ]
        );
        let s = json!({"metadata": meta("plain", 30)});
        assert_eq!(row("", "Secret", s)[1..3], [json!("Opaque"), json!(0)]);

        let sa = json!({"metadata": meta("default", 30), "secrets": [{"name": "default-token"}]});
        assert_eq!(
            row("", "ServiceAccount", sa),
            [json!("default"), json!(1), json!("30s")]
        );
    }

    #[test]
    fn node() {
        assert_eq!(
            headers("", "Node"),
            [
                "Name",
                "Status",
                "Roles",
                "Age",
                "Version",
                "Internal-IP",
                "External-IP",
                "OS-Image",
                "Kernel-Version",
                "Container-Runtime"
            ]
        );
        let n = json!({
            "metadata": {"name": "node-a", "creationTimestamp": ago(5 * 86400 + 7200),
                         "labels": {"node-role.kubernetes.io/master": "", "node-role.kubernetes.io/control-plane": "true",
                                    "node-role.kubernetes.io/": "x", "kubernetes.io/role": "edge",
                                    "kubernetes.io/hostname": "node-a"}},
            "spec": {"unschedulable": true},
            "status": {
                "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                "addresses": [{"type": "Hostname", "address": "node-a"}, {"type": "InternalIP", "address": "192.168.1.10"}],
                "nodeInfo": {"kubeletVersion": "v1.33.1-skiff", "osImage": "Debian GNU/Linux 12 (bookworm)",
                             "kernelVersion": "6.1.0-18-amd64", "containerRuntimeVersion": "skiff://0.1.0"},
            },
        });
        assert_eq!(
            row("", "Node", n),
            [
                json!("node-a"),
                json!("Ready,SchedulingDisabled"),
                json!("control-plane,edge,master"),
                json!("5d2h"),
                json!("v1.33.1-skiff"),
                json!("192.168.1.10"),
                json!("<none>"),
                json!("Debian GNU/Linux 12 (bookworm)"),
                json!("6.1.0-18-amd64"),
                json!("skiff://0.1.0"),
            ]
        );
        let n = json!({"metadata": {"name": "b"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        let r = row("", "Node", n);
        assert_eq!(r[1..3], [json!("NotReady"), json!("<none>")]);
        assert_eq!(
            r[7..],
            [json!("<unknown>"), json!("<unknown>"), json!("<unknown>")]
        );
        let r = row("", "Node", json!({"metadata": {"name": "c"}}));
        assert_eq!(r[1], json!("Unknown"));
    }

    #[test]
    fn core_event() {
        assert_eq!(
            headers("", "Event"),
            [
                "Last Seen",
                "Type",
                "Reason",
                "Object",
                "Subobject",
                "Source",
                "Message",
                "First Seen",
                "Count",
                "Name"
            ]
        );
        assert_eq!(
            wide_headers("", "Event"),
            ["Subobject", "Source", "First Seen", "Count", "Name"]
        );
        let e = json!({
            "metadata": meta("web-0.17c", 600),
            "involvedObject": {"kind": "Pod", "name": "web-0", "fieldPath": "spec.containers{app}"},
            "reason": "BackOff",
            "message": "Back-off restarting failed container\n",
            "type": "Warning",
            "source": {"component": "kubelet", "host": "node-a"},
            "firstTimestamp": ago(600),
            "lastTimestamp": ago(20),
            "count": 7,
        });
        assert_eq!(
            row("", "Event", e),
            [
                json!("20s"),
                json!("Warning"),
                json!("BackOff"),
                json!("pod/web-0"),
                json!("spec.containers{app}"),
                json!("kubelet, node-a"),
                json!("Back-off restarting failed container"),
                json!("10m"),
                json!(7),
                json!("web-0.17c"),
            ]
        );

        // A new-style event written through core/v1: eventTime only, reporting fields.
        let e = json!({
            "metadata": meta("n.1", 60),
            "involvedObject": {"kind": "Node"},
            "eventTime": "2024-05-01T11:59:00.123456Z",
            "firstTimestamp": null,
            "reportingController": "skiff-scheduler",
            "type": "Normal",
            "reason": "Scheduled",
        });
        let r = row("", "Event", e);
        // Micro-time fractions count: 59.88s ago is still 59s.
        assert_eq!(r[0], json!("59s"));
        assert_eq!(r[3], json!("node"));
        assert_eq!(r[5], json!("skiff-scheduler"));
        assert_eq!(r[7..9], [json!("59s"), json!(1)]);

        let e = json!({
            "metadata": meta("s.1", 600),
            "eventTime": ago(600),
            "series": {"count": 12, "lastObservedTime": ago(30)},
        });
        let r = row("", "Event", e);
        assert_eq!(r[0], json!("30s"));
        assert_eq!(r[7..9], [json!("10m"), json!(12)]);
    }

    #[test]
    fn events_k8s_io_event() {
        assert_eq!(headers("events.k8s.io", "Event"), headers("", "Event"));
        let e = json!({
            "metadata": meta("web.1", 300),
            "regarding": {"kind": "Deployment", "name": "web"},
            "note": "  Scaled up replica set web-7d to 3  ",
            "reason": "ScalingReplicaSet",
            "type": "Normal",
            "eventTime": ago(300),
            "reportingController": "deployment-controller",
            "reportingInstance": "skiff-0",
            "deprecatedCount": 2,
            "deprecatedLastTimestamp": ago(100),
        });
        assert_eq!(
            row("events.k8s.io", "Event", e),
            [
                json!("100s"),
                json!("Normal"),
                json!("ScalingReplicaSet"),
                json!("deployment/web"),
                json!(""),
                json!("deployment-controller, skiff-0"),
                json!("Scaled up replica set web-7d to 3"),
                json!("5m"),
                json!(2),
                json!("web.1"),
            ]
        );
    }

    #[test]
    fn persistent_volume() {
        assert_eq!(
            headers("", "PersistentVolume"),
            [
                "Name",
                "Capacity",
                "Access Modes",
                "Reclaim Policy",
                "Status",
                "Claim",
                "StorageClass",
                "VolumeAttributesClass",
                "Reason",
                "Age",
                "VolumeMode"
            ]
        );
        let pv = json!({
            "metadata": meta("pv-1", 3600),
            "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
                     "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "local-path",
                     "claimRef": {"namespace": "default", "name": "data"}, "volumeMode": "Block"},
            "status": {"phase": "Bound"},
        });
        assert_eq!(
            row("", "PersistentVolume", pv),
            [
                json!("pv-1"),
                json!("10Gi"),
                json!("RWO,RWX"),
                json!("Delete"),
                json!("Bound"),
                json!("default/data"),
                json!("local-path"),
                json!("<unset>"),
                json!(""),
                json!("60m"),
                json!("Block"),
            ]
        );
        let mut pv = json!({"metadata": meta("pv-2", 10), "spec": {}});
        pv["metadata"]["deletionTimestamp"] = json!(ago(1));
        pv["metadata"]["annotations"] = json!({"volume.beta.kubernetes.io/storage-class": "old"});
        let r = row("", "PersistentVolume", pv);
        assert_eq!(
            r[1..7],
            [
                json!("0"),
                json!(""),
                json!("Retain"),
                json!("Terminating"),
                json!(""),
                json!("old")
            ]
        );
        assert_eq!(r[10], json!("Filesystem"));
    }

    #[test]
    fn persistent_volume_claim() {
        assert_eq!(
            headers("", "PersistentVolumeClaim"),
            [
                "Name",
                "Status",
                "Volume",
                "Capacity",
                "Access Modes",
                "StorageClass",
                "VolumeAttributesClass",
                "Age",
                "VolumeMode"
            ]
        );
        let pvc = json!({
            "metadata": meta("data", 120),
            "spec": {"volumeName": "pvc-123", "storageClassName": "local-path", "volumeAttributesClassName": "gold",
                     "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Bound", "capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteOncePod"]},
        });
        assert_eq!(
            row("", "PersistentVolumeClaim", pvc),
            [
                json!("data"),
                json!("Bound"),
                json!("pvc-123"),
                json!("2Gi"),
                json!("RWOP"),
                json!("local-path"),
                json!("gold"),
                json!("2m"),
                json!("Filesystem"),
            ]
        );
        let pending =
            json!({"metadata": meta("wait", 5), "spec": {"accessModes": ["ReadWriteOnce"]}});
        let r = row("", "PersistentVolumeClaim", pending);
        assert_eq!(
            r[1..7],
            [
                json!("Pending"),
                json!(""),
                json!(""),
                json!(""),
                json!(""),
                json!("<unset>")
            ]
        );
    }

    #[test]
    fn limit_range_role_and_cluster_role_use_created_at() {
        for (group, kind) in [
            ("", "LimitRange"),
            ("rbac.authorization.k8s.io", "Role"),
            ("rbac.authorization.k8s.io", "ClusterRole"),
        ] {
            let obj = json!({"metadata": {"name": "x", "creationTimestamp": "2024-04-30T10:20:30.5+02:00"}});
            assert_eq!(
                row(group, kind, obj),
                [json!("x"), json!("2024-04-30T08:20:30Z")]
            );
            let obj = json!({"metadata": {"name": "y"}});
            assert_eq!(
                row(group, kind, obj),
                [json!("y"), json!("0001-01-01T00:00:00Z")]
            );
        }
    }

    #[test]
    fn resource_quota() {
        assert_eq!(
            headers("", "ResourceQuota"),
            ["Name", "Request", "Limit", "Age"]
        );
        let rq = json!({
            "metadata": meta("quota", 60),
            "status": {
                "hard": {"requests.cpu": "2", "pods": "10", "limits.memory": "2Gi", "limits.cpu": "4"},
                "used": {"requests.cpu": "500m", "pods": "3", "limits.cpu": "1"},
            },
        });
        assert_eq!(
            row("", "ResourceQuota", rq),
            [
                json!("quota"),
                json!("pods: 3/10, requests.cpu: 500m/2"),
                json!("limits.cpu: 1/4, limits.memory: 0/2Gi"),
                json!("60s"),
            ]
        );
    }

    fn template(containers: Value) -> Value {
        json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": containers}})
    }

    #[test]
    fn deployment() {
        assert_eq!(
            headers("apps", "Deployment"),
            [
                "Name",
                "Ready",
                "Up-to-date",
                "Available",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        assert_eq!(
            wide_headers("apps", "Deployment"),
            ["Containers", "Images", "Selector"]
        );
        let d = json!({
            "metadata": meta("web", 86400),
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web", "tier": "fe"}},
                     "template": template(json!([{"name": "nginx", "image": "nginx:1.27"}, {"name": "log", "image": "busybox"}]))},
            "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
        });
        assert_eq!(
            row("apps", "Deployment", d),
            [
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("24h"),
                json!("nginx,log"),
                json!("nginx:1.27,busybox"),
                json!("app=web,tier=fe"),
            ]
        );
        let d = json!({
            "metadata": meta("api", 10),
            "spec": {"selector": {"matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["b", "a"]},
                {"key": "env", "operator": "NotIn", "values": ["dev"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "app", "operator": "Exists"}]}},
        });
        let r = row("apps", "Deployment", d);
        assert_eq!(r[1], json!("0/1"));
        assert_eq!(r[7], json!("app,!canary,env notin (dev),tier in (a,b)"));
        let d = json!({"metadata": meta("bad", 10), "spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}});
        assert_eq!(row("apps", "Deployment", d)[7], json!("<invalid>"));
        let d = json!({"metadata": meta("none", 10), "spec": {}});
        assert_eq!(row("apps", "Deployment", d)[7], json!(""));
    }

    #[test]
    fn replica_set_and_daemon_set() {
        assert_eq!(
            headers("apps", "ReplicaSet"),
            [
                "Name",
                "Desired",
                "Current",
                "Ready",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        let rs = json!({
            "metadata": meta("web-7d", 3600),
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web", "pod-template-hash": "7d"}},
                     "template": template(json!([{"name": "nginx", "image": "nginx"}]))},
            "status": {"replicas": 3, "readyReplicas": 1},
        });
        assert_eq!(
            row("apps", "ReplicaSet", rs),
            [
                json!("web-7d"),
                json!(3),
                json!(3),
                json!(1),
                json!("60m"),
                json!("nginx"),
                json!("nginx"),
                json!("app=web,pod-template-hash=7d"),
            ]
        );
        let rs = json!({"metadata": meta("x", 1)});
        assert_eq!(row("apps", "ReplicaSet", rs)[7], json!("<none>"));

        assert_eq!(
            headers("apps", "DaemonSet"),
            [
                "Name",
                "Desired",
                "Current",
                "Ready",
                "Up-to-date",
                "Available",
                "Node Selector",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        let ds = json!({
            "metadata": meta("flannel", 7200),
            "spec": {"selector": {"matchLabels": {"app": "flannel"}},
                     "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"},
                                           "containers": [{"name": "kube-flannel", "image": "flannel:v0.25"}]}}},
            "status": {"desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberReady": 1,
                       "updatedNumberScheduled": 2, "numberAvailable": 1},
        });
        assert_eq!(
            row("apps", "DaemonSet", ds),
            [
                json!("flannel"),
                json!(2),
                json!(2),
                json!(1),
                json!(2),
                json!(1),
                json!("kubernetes.io/os=linux"),
                json!("120m"),
                json!("kube-flannel"),
                json!("flannel:v0.25"),
                json!("app=flannel"),
            ]
        );
    }

    #[test]
    fn stateful_set_and_controller_revision() {
        assert_eq!(
            headers("apps", "StatefulSet"),
            ["Name", "Ready", "Age", "Containers", "Images"]
        );
        let ss = json!({
            "metadata": meta("db", 600),
            "spec": {"replicas": 3, "template": template(json!([{"name": "pg", "image": "postgres:16"}]))},
            "status": {"readyReplicas": 3},
        });
        assert_eq!(
            row("apps", "StatefulSet", ss),
            [
                json!("db"),
                json!("3/3"),
                json!("10m"),
                json!("pg"),
                json!("postgres:16")
            ]
        );

        assert_eq!(
            headers("apps", "ControllerRevision"),
            ["Name", "Controller", "Revision", "Age"]
        );
        let cr = |api_version: &str, kind: &str| {
            json!({
                "metadata": {"name": "db-5f", "creationTimestamp": ago(600), "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Pod", "name": "not-controller"},
                    {"apiVersion": api_version, "kind": kind, "name": "db", "controller": true}]},
                "revision": 4,
            })
        };
        assert_eq!(
            row("apps", "ControllerRevision", cr("apps/v1", "StatefulSet")),
            [
                json!("db-5f"),
                json!("statefulset.apps/db"),
                json!(4),
                json!("10m")
            ]
        );
        assert_eq!(
            row("apps", "ControllerRevision", cr("v1", "Pod"))[1],
            json!("pod/db")
        );
        assert_eq!(
            row("apps", "ControllerRevision", cr("a/b/c", "X"))[1],
            json!("<invalid>")
        );
        let orphan = json!({"metadata": meta("o", 1), "revision": 1});
        assert_eq!(
            row("apps", "ControllerRevision", orphan)[1],
            json!("<none>")
        );
    }

    #[test]
    fn job() {
        assert_eq!(
            headers("batch", "Job"),
            [
                "Name",
                "Status",
                "Completions",
                "Duration",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        let job = |spec: Value, status: Value| {
            let mut spec = spec;
            spec["template"] = template(json!([{"name": "pi", "image": "perl:5.34"}]));
            spec["selector"] =
                json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "abc"}});
            row(
                "batch",
                "Job",
                json!({"metadata": meta("pi", 600), "spec": spec, "status": status}),
            )
        };
        assert_eq!(
            job(
                json!({"completions": 1}),
                json!({"succeeded": 1, "startTime": ago(600), "completionTime": ago(600 - 75),
                       "conditions": [{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]}),
            ),
            [
                json!("pi"),
                json!("Complete"),
                json!("1/1"),
                json!("75s"),
                json!("10m"),
                json!("pi"),
                json!("perl:5.34"),
                json!("batch.kubernetes.io/controller-uid=abc"),
            ]
        );
        let r = job(
            json!({"parallelism": 3}),
            json!({"succeeded": 1, "startTime": ago(200)}),
        );
        assert_eq!(
            r[1..4],
            [json!("Running"), json!("1/1 of 3"), json!("3m20s")]
        );
        let r = job(json!({}), json!({}));
        assert_eq!(r[1..4], [json!("Running"), json!("0/1"), json!("")]);
        let status = |t: &str| {
            job(
                json!({"completions": 5}),
                json!({"conditions": [{"type": t, "status": "True"}]}),
            )[1]
            .clone()
        };
        assert_eq!(status("Failed"), json!("Failed"));
        assert_eq!(status("Suspended"), json!("Suspended"));
        assert_eq!(status("FailureTarget"), json!("FailureTarget"));
        assert_eq!(status("SuccessCriteriaMet"), json!("SuccessCriteriaMet"));
        let r = job(
            json!({"completions": 5}),
            json!({"conditions": [{"type": "Complete", "status": "False"}]}),
        );
        assert_eq!(r[1..3], [json!("Running"), json!("0/5")]);

        let deleted = json!({"metadata": {"name": "d", "deletionTimestamp": ago(1)},
                             "status": {"conditions": [{"type": "Suspended", "status": "True"}]}});
        assert_eq!(row("batch", "Job", deleted)[1], json!("Terminating"));
    }

    #[test]
    fn cron_job() {
        assert_eq!(
            headers("batch", "CronJob"),
            [
                "Name",
                "Schedule",
                "Timezone",
                "Suspend",
                "Active",
                "Last Schedule",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        let cj = json!({
            "metadata": meta("backup", 86400 * 3),
            "spec": {"schedule": "*/5 * * * *", "timeZone": "Etc/UTC", "suspend": true,
                     "jobTemplate": {"spec": {"template": template(json!([{"name": "b", "image": "restic"}]))}}},
            "status": {"active": [{"name": "backup-1"}], "lastScheduleTime": ago(240)},
        });
        assert_eq!(
            row("batch", "CronJob", cj),
            [
                json!("backup"),
                json!("*/5 * * * *"),
                json!("Etc/UTC"),
                json!("True"),
                json!(1),
                json!("4m"),
                json!("3d"),
                json!("b"),
                json!("restic"),
                json!("<none>"),
            ]
        );
        let cj = json!({"metadata": meta("idle", 5), "spec": {"schedule": "@daily"}});
        assert_eq!(
            row("batch", "CronJob", cj)[2..6],
            [json!("<none>"), json!("False"), json!(0), json!("<none>")]
        );
    }

    #[test]
    fn lease_and_endpoint_slice() {
        let lease = json!({"metadata": meta("node-a", 30), "spec": {"holderIdentity": "node-a"}});
        assert_eq!(
            row("coordination.k8s.io", "Lease", lease),
            [json!("node-a"), json!("node-a"), json!("30s")]
        );
        let lease = json!({"metadata": meta("free", 30), "spec": {}});
        assert_eq!(row("coordination.k8s.io", "Lease", lease)[1], json!(""));

        assert_eq!(
            headers("discovery.k8s.io", "EndpointSlice"),
            ["Name", "AddressType", "Ports", "Endpoints", "Age"]
        );
        let slice = json!({
            "metadata": meta("web-abc", 30),
            "addressType": "IPv4",
            "ports": [{"port": 80, "name": "http"}, {"name": "metrics"}, {}, {"port": 9000}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2", "10.0.0.3"]}, {"addresses": ["10.0.0.4"]}],
        });
        assert_eq!(
            row("discovery.k8s.io", "EndpointSlice", slice),
            [
                json!("web-abc"),
                json!("IPv4"),
                json!("80,metrics,* + 1 more..."),
                json!("10.0.0.1,10.0.0.2,10.0.0.3 + 1 more..."),
                json!("30s"),
            ]
        );
        let empty = json!({"metadata": meta("e", 30), "addressType": "IPv6"});
        assert_eq!(
            row("discovery.k8s.io", "EndpointSlice", empty)[2..4],
            [json!("<unset>"), json!("<unset>")]
        );
    }

    #[test]
    fn ingress() {
        assert_eq!(
            headers("networking.k8s.io", "Ingress"),
            ["Name", "Class", "Hosts", "Address", "Ports", "Age"]
        );
        let ing = |rules: Value, tls: Value| {
            row(
                "networking.k8s.io",
                "Ingress",
                json!({"metadata": meta("web", 60), "spec": {"ingressClassName": "traefik", "rules": rules, "tls": tls},
                       "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.20"}, {"ip": "192.0.2.10"}]}}}),
            )
        };
        assert_eq!(
            ing(
                json!([{"host": "a.example.com"}, {"host": "b.example.com"}]),
                json!([{"hosts": ["a.example.com"]}])
            ),
            [
                json!("web"),
                json!("traefik"),
                json!("a.example.com,b.example.com"),
                json!("192.0.2.10,192.0.2.20"),
                json!("80, 443"),
                json!("60s"),
            ]
        );
        assert_eq!(
            ing(json!([{}]), json!(null))[2..5],
            [json!("*"), json!("192.0.2.10,192.0.2.20"), json!("80")]
        );
        let hosts = |rules: Value| ing(rules, json!(null))[2].clone();
        assert_eq!(
            hosts(json!([{"host": "a"}, {"host": "b"}, {"host": "c"}, {"host": "d"}, {}])),
            json!("a,b,c + 2 more...")
        );
        assert_eq!(
            hosts(json!([{"host": "a"}, {}, {"host": "b"}, {"host": "c"}])),
            json!("a,b,c")
        );
        assert_eq!(
            hosts(json!([{"host": "a"}, {}, {"host": "b"}, {"host": "c"}, {}])),
            json!("a,b,c + 2 more...")
        );
        let bare = json!({"metadata": meta("b", 1)});
        assert_eq!(
            row("networking.k8s.io", "Ingress", bare)[1..4],
            [json!("<none>"), json!("*"), json!("")]
        );
    }

    #[test]
    fn ingress_class_and_network_policy() {
        let ic = json!({
            "metadata": {"name": "nginx", "creationTimestamp": ago(60),
                         "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
            "spec": {"controller": "k8s.io/ingress-nginx",
                     "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "cfg"}},
        });
        assert_eq!(
            row("networking.k8s.io", "IngressClass", ic),
            [
                json!("nginx (default)"),
                json!("k8s.io/ingress-nginx"),
                json!("IngressParameters.k8s.example.com/cfg"),
                json!("60s"),
            ]
        );
        let ic = json!({"metadata": meta("plain", 60), "spec": {"controller": "c", "parameters": {"kind": "ConfigMap", "name": "p"}}});
        assert_eq!(
            row("networking.k8s.io", "IngressClass", ic)[0..3],
            [json!("plain"), json!("c"), json!("ConfigMap/p")]
        );
        let ic = json!({"metadata": meta("none", 60), "spec": {"controller": "c"}});
        assert_eq!(
            row("networking.k8s.io", "IngressClass", ic)[2],
            json!("<none>")
        );

        let np = json!({"metadata": meta("deny", 60), "spec": {"podSelector": {}}});
        assert_eq!(
            row("networking.k8s.io", "NetworkPolicy", np),
            [json!("deny"), json!("<none>"), json!("60s")]
        );
        let np = json!({"metadata": meta("db", 60), "spec": {"podSelector": {"matchLabels": {"role": "db"}}}});
        assert_eq!(
            row("networking.k8s.io", "NetworkPolicy", np)[1],
            json!("role=db")
        );
        let np = json!({"metadata": meta("bad", 60), "spec": {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}});
        assert_eq!(
            row("networking.k8s.io", "NetworkPolicy", np)[1],
            json!("<error>")
        );
    }

    #[test]
    fn role_bindings() {
        for kind in ["RoleBinding", "ClusterRoleBinding"] {
            assert_eq!(
                headers("rbac.authorization.k8s.io", kind),
                ["Name", "Role", "Age", "Users", "Groups", "ServiceAccounts"]
            );
            let rb = json!({
                "metadata": meta("admins", 60),
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
                "subjects": [
                    {"kind": "User", "name": "alice"},
                    {"kind": "User", "name": "bob"},
                    {"kind": "Group", "name": "system:masters"},
                    {"kind": "ServiceAccount", "namespace": "kube-system", "name": "default"},
                    {"kind": "Robot", "name": "r2"},
                ],
            });
            assert_eq!(
                row("rbac.authorization.k8s.io", kind, rb),
                [
                    json!("admins"),
                    json!("ClusterRole/admin"),
                    json!("60s"),
                    json!("alice, bob"),
                    json!("system:masters"),
                    json!("kube-system/default"),
                ]
            );
        }
    }

    #[test]
    fn storage_and_runtime_class() {
        assert_eq!(
            headers("storage.k8s.io", "StorageClass"),
            [
                "Name",
                "Provisioner",
                "ReclaimPolicy",
                "VolumeBindingMode",
                "AllowVolumeExpansion",
                "Age"
            ]
        );
        let sc = json!({
            "metadata": {"name": "local-path", "creationTimestamp": ago(60),
                         "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "rancher.io/local-path",
            "reclaimPolicy": "Retain",
            "volumeBindingMode": "WaitForFirstConsumer",
            "allowVolumeExpansion": true,
        });
        assert_eq!(
            row("storage.k8s.io", "StorageClass", sc),
            [
                json!("local-path (default)"),
                json!("rancher.io/local-path"),
                json!("Retain"),
                json!("WaitForFirstConsumer"),
                json!(true),
                json!("60s"),
            ]
        );
        let sc = json!({"metadata": {"name": "beta", "annotations": {"storageclass.beta.kubernetes.io/is-default-class": "true"}}});
        assert_eq!(
            row("storage.k8s.io", "StorageClass", sc)[0..5],
            [
                json!("beta (default)"),
                json!(""),
                json!("Delete"),
                json!("Immediate"),
                json!(false)
            ]
        );

        let rc = json!({"metadata": meta("wasm", 60), "handler": "wasmtime"});
        assert_eq!(
            row("node.k8s.io", "RuntimeClass", rc),
            [json!("wasm"), json!("wasmtime"), json!("60s")]
        );
    }

    #[test]
    fn pod_disruption_budget() {
        assert_eq!(
            headers("policy", "PodDisruptionBudget"),
            [
                "Name",
                "Min Available",
                "Max Unavailable",
                "Allowed Disruptions",
                "Age"
            ]
        );
        let pdb = json!({"metadata": meta("web", 60), "spec": {"minAvailable": 2}, "status": {"disruptionsAllowed": 1}});
        assert_eq!(
            row("policy", "PodDisruptionBudget", pdb),
            [
                json!("web"),
                json!("2"),
                json!("N/A"),
                json!(1),
                json!("60s")
            ]
        );
        let pdb = json!({"metadata": meta("db", 60), "spec": {"maxUnavailable": "25%"}});
        assert_eq!(
            row("policy", "PodDisruptionBudget", pdb)[1..4],
            [json!("N/A"), json!("25%"), json!(0)]
        );
    }

    #[test]
    fn horizontal_pod_autoscaler() {
        assert_eq!(
            headers("autoscaling", "HorizontalPodAutoscaler"),
            [
                "Name",
                "Reference",
                "Targets",
                "MinPods",
                "MaxPods",
                "Replicas",
                "Age"
            ]
        );
        let hpa = |metrics: Value, current: Value| {
            row(
                "autoscaling",
                "HorizontalPodAutoscaler",
                json!({
                    "metadata": meta("web", 60),
                    "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                             "minReplicas": 2, "maxReplicas": 10, "metrics": metrics},
                    "status": {"currentReplicas": 3, "currentMetrics": current},
                }),
            )
        };
        assert_eq!(
            hpa(
                json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]),
                json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 23, "averageValue": "115m"}}}]),
            ),
            [
                json!("web"),
                json!("Deployment/web"),
                json!("cpu: 23%/50%"),
                json!("2"),
                json!(10),
                json!(3),
                json!("60s"),
            ]
        );
        let targets = |metrics: Value, current: Value| hpa(metrics, current)[2].clone();
        assert_eq!(
            targets(
                json!([
                    {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
                    {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "1k"}}},
                    {"type": "External", "external": {"metric": {"name": "queue"}, "target": {"type": "Value", "value": "30"}}},
                ]),
                json!([{"type": "Resource", "resource": {"name": "memory", "current": {"averageValue": "80Mi"}}}]),
            ),
            json!("memory: 80Mi/100Mi, <unknown>/1k + 1 more...")
        );
        assert_eq!(
            targets(
                json!([
                    {"type": "Object", "object": {"target": {"type": "AverageValue", "averageValue": "5"}}},
                    {"type": "ContainerResource", "containerResource": {"name": "cpu", "container": "app", "target": {"type": "Utilization"}}},
                ]),
                json!([{"type": "Object", "object": {"current": {"value": "7"}}}]),
            ),
            json!("<unknown>/5 (avg), cpu: <unknown>/<auto>")
        );
        assert_eq!(
            targets(
                json!([{"type": "External", "external": {"target": {"type": "Value"}}}, {"type": "Custom"}]),
                json!([{"type": "External", "external": {"current": {}}}]),
            ),
            json!("<nil>/<nil>, <unknown type>")
        );

        // autoscaling/v2 defaults: at least one replica, and 80% CPU when no metric is given.
        let bare = json!({"metadata": meta("d", 60), "spec": {"scaleTargetRef": {"kind": "StatefulSet", "name": "db"}, "maxReplicas": 4}});
        assert_eq!(
            row("autoscaling", "HorizontalPodAutoscaler", bare)[1..6],
            [
                json!("StatefulSet/db"),
                json!("cpu: <unknown>/80%"),
                json!("1"),
                json!(4),
                json!(0)
            ]
        );
    }

    #[test]
    fn priority_class() {
        assert_eq!(
            headers("scheduling.k8s.io", "PriorityClass"),
            ["Name", "Value", "Global-Default", "Age", "PreemptionPolicy"]
        );
        assert!(wide_headers("scheduling.k8s.io", "PriorityClass").is_empty());
        let pc = json!({"metadata": meta("system-node-critical", 600), "value": 2000001000, "globalDefault": false,
                        "preemptionPolicy": "Never"});
        assert_eq!(
            row("scheduling.k8s.io", "PriorityClass", pc),
            [
                json!("system-node-critical"),
                json!(2000001000),
                json!(false),
                json!("10m"),
                json!("Never")
            ]
        );
        let pc = json!({"metadata": meta("low", 600), "value": -5, "globalDefault": true});
        assert_eq!(
            row("scheduling.k8s.io", "PriorityClass", pc)[1..],
            [
                json!(-5),
                json!(true),
                json!("10m"),
                json!("PreemptLowerPriority")
            ]
        );
    }

    #[test]
    fn other_kinds_get_name_and_age() {
        let obj = json!({"metadata": meta("w", 90000)});
        assert_eq!(
            row("example.com", "Widget", obj),
            [json!("w"), json!("25h")]
        );
        assert_eq!(columns("example.com", "Widget")[1].type_, "date");
    }
}
