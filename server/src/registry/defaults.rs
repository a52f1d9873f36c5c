//! Upstream's defaulting of built-in kinds, applied to objects as JSON.
//!
//! The API server stores and returns objects the way upstream would after
//! its defaulting pass, so `kubectl get -o yaml`, `kubectl diff` and
//! `kubectl apply` see the same fields they see against upstream. The rules
//! follow the `SetDefaults_*` functions and declarative `+default` markers in
//! `pkg/apis/<group>/<version>/` upstream, plus the few values upstream's
//! storage strategies fill in on create and that users read back (service IP
//! families, namespace finalizers, the `apiVersion`/`kind` that conversion
//! writes into StatefulSet volume claim templates).
//!
//! Defaulting follows Go's notion of "unset": a pointer field is unset when
//! absent or `null`; a plain string or enum field also when it is `""`; a plain
//! integer field also when it is `0`. Values of the wrong JSON type are left
//! alone for validation to report; nothing here panics on odd input.
//!
//! One admission plugin's work is done here too, because it only ever adds
//! fields to a pod: upstream's DefaultTolerationSeconds, which gives every pod
//! (on create and update, as upstream) a 300 s toleration of the
//! `node.kubernetes.io/not-ready` and `node.kubernetes.io/unreachable`
//! NoExecute taints unless it already tolerates them.
//!
//! Not done here on purpose: fields set by other admission (`serviceAccountName`,
//! `priority`, `preemptionPolicy` on pods), by storage
//! strategies that need the stored object or a fresh UID (Job selectors and
//! `controller-uid` labels, pod `status.phase`), and by allocators (cluster
//! IPs, node ports).

use serde_json::{json, Map, Value};

type Obj = Map<String, Value>;

/// The API group of RBAC, which is also the default `apiGroup` of user and
/// group subjects and of role references.
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// Applies upstream's defaults for `kind` in API group `group` (`""` is the
/// core group) to `obj` in place. Kinds without defaults are left untouched,
/// as is anything that is not a JSON object.
pub fn apply_defaults(group: &str, kind: &str, obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    match (group, kind) {
        ("", "Pod") => pod(root),
        ("", "Service") => service(root),
        ("", "Secret") => default_str(root, "type", "Opaque"),
        ("", "Namespace") => namespace(root),
        ("", "PersistentVolumeClaim") => persistent_volume_claim(root),
        ("", "PersistentVolume") => persistent_volume(root),
        ("", "Node") => node(root),
        ("", "Endpoints") => endpoints(root),
        ("", "LimitRange") => limit_range(root),
        ("apps", "Deployment") => deployment(root),
        ("apps", "ReplicaSet") => replica_set(root),
        ("apps", "DaemonSet") => daemon_set(root),
        ("apps", "StatefulSet") => stateful_set(root),
        ("batch", "Job") => job(root),
        ("batch", "CronJob") => cron_job(root),
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => role_binding(root),
        ("networking.k8s.io", "NetworkPolicy") => network_policy(root),
        ("networking.k8s.io", "IngressClass") => ingress_class(root),
        ("discovery.k8s.io", "EndpointSlice") => endpoint_slice(root),
        ("storage.k8s.io", "StorageClass") => {
            default_ptr(root, "reclaimPolicy", json!("Delete"));
            default_ptr(root, "volumeBindingMode", json!("Immediate"));
        }
        ("scheduling.k8s.io", "PriorityClass") => {
            default_ptr(root, "preemptionPolicy", json!("PreemptLowerPriority"));
        }
        ("autoscaling", "HorizontalPodAutoscaler") => horizontal_pod_autoscaler(root),
        _ => {}
    }
}

// ---------------------------------------------------------------------------
// Helpers with Go's "unset" semantics.

fn is_unset(v: Option<&Value>) -> bool {
    matches!(v, None | Some(Value::Null))
}

fn is_empty_str(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        _ => false,
    }
}

fn is_empty_collection(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        _ => false,
    }
}

/// Defaults a pointer field: only absent or `null` counts as unset.
fn default_ptr(m: &mut Obj, key: &str, value: Value) {
    if is_unset(m.get(key)) {
        m.insert(key.to_owned(), value);
    }
}

/// Defaults a plain string field, for which `""` also counts as unset.
fn default_str(m: &mut Obj, key: &str, value: &str) {
    if is_empty_str(m.get(key)) {
        m.insert(key.to_owned(), Value::String(value.to_owned()));
    }
}

/// Defaults a plain integer field, for which `0` also counts as unset.
fn default_int(m: &mut Obj, key: &str, value: i64) {
    let unset = match m.get(key) {
        None | Some(Value::Null) => true,
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        _ => false,
    };
    if unset {
        m.insert(key.to_owned(), Value::from(value));
    }
}

/// Returns the object under `key`, creating it when absent or `null`; `None`
/// when something that is not an object is there.
fn child<'a>(m: &'a mut Obj, key: &str) -> Option<&'a mut Obj> {
    if is_unset(m.get(key)) {
        m.insert(key.to_owned(), Value::Object(Map::new()));
    }
    m.get_mut(key)?.as_object_mut()
}

/// Returns the object under `key` if there is one.
fn existing<'a>(m: &'a mut Obj, key: &str) -> Option<&'a mut Obj> {
    m.get_mut(key)?.as_object_mut()
}

/// Calls `f` on every object in the array under `key`.
fn each_obj(m: &mut Obj, key: &str, mut f: impl FnMut(&mut Obj)) {
    if let Some(Value::Array(items)) = m.get_mut(key) {
        for item in items.iter_mut() {
            if let Some(o) = item.as_object_mut() {
                f(o);
            }
        }
    }
}

fn str_of<'a>(m: &'a Obj, key: &str) -> &'a str {
    m.get(key).and_then(Value::as_str).unwrap_or("")
}

fn labels_of(m: &Obj) -> Option<&Obj> {
    m.get("metadata")?.get("labels")?.as_object()
}

// ---------------------------------------------------------------------------
// Pods and pod templates.

fn pod(root: &mut Obj) {
    let Some(spec) = child(root, "spec") else {
        return;
    };
    pod_spec(spec);
    // Upstream keeps these out of templates so that adding them did not roll
    // every existing workload; they only materialize on Pods.
    default_ptr(spec, "enableServiceLinks", Value::Bool(true));
    default_toleration_seconds(spec);
    for key in ["containers", "initContainers"] {
        each_obj(spec, key, requests_from_limits);
    }
    if spec.get("hostNetwork") == Some(&Value::Bool(true)) {
        for key in ["containers", "initContainers"] {
            each_obj(spec, key, |c| {
                each_obj(c, "ports", |p| {
                    let unset = match p.get("hostPort") {
                        None | Some(Value::Null) => true,
                        Some(v) => v.as_i64() == Some(0),
                    };
                    if unset {
                        if let Some(port) = p.get("containerPort").cloned() {
                            p.insert("hostPort".to_owned(), port);
                        }
                    }
                });
            });
        }
    }
}

/// How long a pod tolerates its node being not ready or unreachable unless it
/// says otherwise (upstream's `--default-not-ready-toleration-seconds` and
/// `--default-unreachable-toleration-seconds`).
pub const DEFAULT_TOLERATION_SECONDS: i64 = 300;

/// The NoExecute taints the DefaultTolerationSeconds admission plugin covers.
const NODE_PROBLEM_TAINTS: [&str; 2] = [
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
];

/// Upstream's DefaultTolerationSeconds admission: a toleration of each node
/// problem taint the pod does not already tolerate. A toleration with an empty
/// key (all keys) or an empty effect (all effects) counts, as upstream checks.
fn default_toleration_seconds(spec: &mut Obj) {
    let existing: Vec<(String, String)> = match spec.get("tolerations") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_object)
            .map(|t| (str_of(t, "key").to_owned(), str_of(t, "effect").to_owned()))
            .collect(),
        // Not a list: validation reports it.
        Some(_) => return,
    };
    let mut added = Vec::new();
    for taint in NODE_PROBLEM_TAINTS {
        let tolerated = existing
            .iter()
            .any(|(k, e)| (k == taint || k.is_empty()) && (e == "NoExecute" || e.is_empty()));
        if !tolerated {
            added.push(json!({
                "key": taint,
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": DEFAULT_TOLERATION_SECONDS,
            }));
        }
    }
    if added.is_empty() {
        return;
    }
    match spec.get_mut("tolerations") {
        Some(Value::Array(items)) => items.extend(added),
        _ => {
            spec.insert("tolerations".to_owned(), Value::Array(added));
        }
    }
}

/// Requests default to limits, per resource, on Pods only.
fn requests_from_limits(container: &mut Obj) {
    let Some(resources) = existing(container, "resources") else {
        return;
    };
    let Some(limits) = resources.get("limits").and_then(Value::as_object).cloned() else {
        return;
    };
    if limits.is_empty() {
        return;
    }
    let Some(requests) = child(resources, "requests") else {
        return;
    };
    for (name, quantity) in limits {
        requests.entry(name).or_insert(quantity);
    }
}

fn pod_template(template: &mut Obj) {
    if let Some(spec) = child(template, "spec") {
        pod_spec(spec);
    }
}

/// Defaults shared by Pods and every pod template.
fn pod_spec(spec: &mut Obj) {
    default_str(spec, "dnsPolicy", "ClusterFirst");
    default_str(spec, "restartPolicy", "Always");
    default_ptr(spec, "securityContext", json!({}));
    default_ptr(spec, "terminationGracePeriodSeconds", json!(30));
    default_str(spec, "schedulerName", "default-scheduler");
    each_obj(spec, "volumes", volume);
    for key in ["initContainers", "containers", "ephemeralContainers"] {
        each_obj(spec, key, container);
    }
}

fn volume(v: &mut Obj) {
    let has_source = v.iter().any(|(k, val)| k != "name" && !val.is_null());
    if !has_source {
        v.insert("emptyDir".to_owned(), json!({}));
    }
    if let Some(host_path) = existing(v, "hostPath") {
        default_ptr(host_path, "type", json!(""));
    }
    for key in ["secret", "configMap"] {
        if let Some(source) = existing(v, key) {
            default_ptr(source, "defaultMode", json!(420));
        }
    }
    if let Some(downward) = existing(v, "downwardAPI") {
        default_ptr(downward, "defaultMode", json!(420));
        each_obj(downward, "items", downward_item);
    }
    if let Some(projected) = existing(v, "projected") {
        default_ptr(projected, "defaultMode", json!(420));
        each_obj(projected, "sources", |source| {
            if let Some(downward) = existing(source, "downwardAPI") {
                each_obj(downward, "items", downward_item);
            }
            if let Some(token) = existing(source, "serviceAccountToken") {
                default_ptr(token, "expirationSeconds", json!(3600));
            }
        });
    }
    if let Some(iscsi) = existing(v, "iscsi") {
        default_str(iscsi, "iscsiInterface", "default");
    }
    if let Some(rbd) = existing(v, "rbd") {
        rbd_defaults(rbd);
    }
    if let Some(ephemeral) = existing(v, "ephemeral") {
        if let Some(template) = existing(ephemeral, "volumeClaimTemplate") {
            if let Some(spec) = child(template, "spec") {
                default_ptr(spec, "volumeMode", json!("Filesystem"));
            }
        }
    }
    if let Some(image) = existing(v, "image") {
        if is_empty_str(image.get("pullPolicy")) {
            let policy = pull_policy(str_of(image, "reference"));
            image.insert("pullPolicy".to_owned(), json!(policy));
        }
    }
}

fn rbd_defaults(rbd: &mut Obj) {
    default_str(rbd, "pool", "rbd");
    default_str(rbd, "user", "admin");
    default_str(rbd, "keyring", "/etc/ceph/keyring");
}

fn downward_item(item: &mut Obj) {
    if let Some(field_ref) = existing(item, "fieldRef") {
        default_str(field_ref, "apiVersion", "v1");
    }
}

fn container(c: &mut Obj) {
    if is_empty_str(c.get("imagePullPolicy")) {
        let policy = pull_policy(str_of(c, "image"));
        c.insert("imagePullPolicy".to_owned(), json!(policy));
    }
    default_str(c, "terminationMessagePath", "/dev/termination-log");
    default_str(c, "terminationMessagePolicy", "File");
    each_obj(c, "ports", |p| default_str(p, "protocol", "TCP"));
    each_obj(c, "env", |e| {
        if let Some(value_from) = existing(e, "valueFrom") {
            if let Some(field_ref) = existing(value_from, "fieldRef") {
                default_str(field_ref, "apiVersion", "v1");
            }
        }
    });
    for key in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(probe) = existing(c, key) {
            default_int(probe, "timeoutSeconds", 1);
            default_int(probe, "periodSeconds", 10);
            default_int(probe, "successThreshold", 1);
            default_int(probe, "failureThreshold", 3);
            if let Some(get) = existing(probe, "httpGet") {
                http_get(get);
            }
            if let Some(grpc) = existing(probe, "grpc") {
                default_ptr(grpc, "service", json!(""));
            }
        }
    }
    if let Some(lifecycle) = existing(c, "lifecycle") {
        for key in ["postStart", "preStop"] {
            if let Some(handler) = existing(lifecycle, key) {
                if let Some(get) = existing(handler, "httpGet") {
                    http_get(get);
                }
            }
        }
    }
    // Go always writes the non-pointer resources struct, so upstream shows
    // `resources: {}` for containers that set none.
    default_ptr(c, "resources", json!({}));
}

fn http_get(get: &mut Obj) {
    default_str(get, "path", "/");
    default_str(get, "scheme", "HTTP");
}

/// `Always` for images tagged `latest` or untagged without a digest,
/// `IfNotPresent` otherwise (including references upstream cannot parse).
fn pull_policy(image: &str) -> &'static str {
    if image_is_latest(image) {
        "Always"
    } else {
        "IfNotPresent"
    }
}

fn image_is_latest(image: &str) -> bool {
    if image.is_empty() || image.chars().any(char::is_whitespace) {
        return false;
    }
    let (name, has_digest) = match image.split_once('@') {
        Some((name, _)) => (name, true),
        None => (image, false),
    };
    let last_segment = name.rfind('/').map_or(0, |i| i + 1);
    let (repository, tag) = match name[last_segment..].rfind(':') {
        Some(i) => (
            &name[..last_segment + i],
            Some(&name[last_segment + i + 1..]),
        ),
        None => (name, None),
    };
    // The first segment is a registry host when it looks like one; everything
    // after it must be lowercase or upstream rejects the reference, and a
    // reference it cannot parse gets IfNotPresent.
    let path = match repository.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            rest
        }
        _ => repository,
    };
    if path.is_empty() || path.chars().any(|c| c.is_ascii_uppercase()) {
        return false;
    }
    match tag {
        Some(tag) => tag == "latest",
        None => !has_digest,
    }
}

// ---------------------------------------------------------------------------
// Core kinds.

fn service(root: &mut Obj) {
    let Some(spec) = child(root, "spec") else {
        return;
    };
    default_str(spec, "sessionAffinity", "None");
    match str_of(spec, "sessionAffinity") {
        "None" => {
            spec.remove("sessionAffinityConfig");
        }
        "ClientIP" => {
            let timeout_set = spec
                .get("sessionAffinityConfig")
                .and_then(|c| c.get("clientIP"))
                .and_then(|c| c.get("timeoutSeconds"))
                .is_some_and(|t| !t.is_null());
            if !timeout_set {
                spec.insert(
                    "sessionAffinityConfig".to_owned(),
                    json!({"clientIP": {"timeoutSeconds": 10800}}),
                );
            }
        }
        _ => {}
    }
    default_str(spec, "type", "ClusterIP");
    each_obj(spec, "ports", |p| {
        default_str(p, "protocol", "TCP");
        let unset = match p.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => s.is_empty(),
            Some(v) => v.as_i64() == Some(0),
        };
        if unset {
            let port = p.get("port").filter(|v| v.is_number()).cloned();
            p.insert("targetPort".to_owned(), port.unwrap_or_else(|| json!(0)));
        }
    });
    let ty = str_of(spec, "type").to_owned();
    let has_external_ips = !is_empty_collection(spec.get("externalIPs"));
    let externally_accessible =
        ty == "LoadBalancer" || ty == "NodePort" || (ty == "ClusterIP" && has_external_ips);
    if externally_accessible {
        default_str(spec, "externalTrafficPolicy", "Cluster");
    }
    if matches!(ty.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer") {
        default_ptr(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        default_ptr(spec, "allocateLoadBalancerNodePorts", Value::Bool(true));
    }
    service_ip_families(spec, &ty);
    if ty == "LoadBalancer" {
        if let Some(status) = existing(root, "status") {
            if let Some(lb) = existing(status, "loadBalancer") {
                each_obj(lb, "ingress", |ingress| {
                    if !str_of(ingress, "ip").is_empty() {
                        default_ptr(ingress, "ipMode", json!("VIP"));
                    }
                });
            }
        }
    }
}

/// What upstream's service storage fills in on create for a single-stack
/// IPv4 cluster: `clusterIP`/`clusterIPs` kept in step, `ipFamilyPolicy`,
/// and `ipFamilies` (inferred from given cluster IPs, else the cluster's).
fn service_ip_families(spec: &mut Obj, ty: &str) {
    if ty == "ExternalName" {
        return;
    }
    let cluster_ip = str_of(spec, "clusterIP").to_owned();
    let cluster_ips: Vec<String> = match spec.get("clusterIPs") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    if cluster_ips.is_empty() && !cluster_ip.is_empty() {
        spec.insert("clusterIPs".to_owned(), json!([cluster_ip]));
    } else if cluster_ip.is_empty() {
        if let Some(first) = cluster_ips.first() {
            spec.insert("clusterIP".to_owned(), json!(first));
        }
    }
    let ips: Vec<String> = if cluster_ips.is_empty() && !cluster_ip.is_empty() {
        vec![cluster_ip.clone()]
    } else {
        cluster_ips
    };
    let headless = ips.first().map(String::as_str) == Some("None");
    let selectorless = is_empty_collection(spec.get("selector"));
    if is_unset(spec.get("ipFamilyPolicy")) {
        let policy = if headless && selectorless {
            "RequireDualStack"
        } else {
            "SingleStack"
        };
        spec.insert("ipFamilyPolicy".to_owned(), json!(policy));
    }
    let policy = str_of(spec, "ipFamilyPolicy").to_owned();
    let mut families: Vec<Value> = match spec.get("ipFamilies") {
        Some(Value::Array(a)) => a.clone(),
        None | Some(Value::Null) => Vec::new(),
        // Not a list: leave it for validation to reject.
        Some(_) => return,
    };
    for (i, ip) in ips.iter().enumerate() {
        if ip == "None" {
            break;
        }
        if i >= families.len() {
            families.push(json!(if ip.contains(':') { "IPv6" } else { "IPv4" }));
        }
    }
    if families.is_empty() {
        families.push(json!("IPv4"));
    }
    // Headless services without a selector may hold endpoints of both
    // families even on a single-stack cluster.
    if headless && selectorless && families.len() < 2 && policy != "SingleStack" {
        let other = if families[0] == json!("IPv6") {
            "IPv4"
        } else {
            "IPv6"
        };
        families.push(json!(other));
    }
    spec.insert("ipFamilies".to_owned(), Value::Array(families));
}

fn namespace(root: &mut Obj) {
    let name = root
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if !name.is_empty() {
        if let Some(metadata) = child(root, "metadata") {
            if let Some(labels) = child(metadata, "labels") {
                labels.insert("kubernetes.io/metadata.name".to_owned(), json!(name));
            }
        }
    }
    if let Some(spec) = child(root, "spec") {
        if is_empty_collection(spec.get("finalizers")) {
            spec.insert("finalizers".to_owned(), json!(["kubernetes"]));
        }
    }
    if let Some(status) = child(root, "status") {
        default_str(status, "phase", "Active");
    }
}

fn persistent_volume_claim(root: &mut Obj) {
    if let Some(spec) = child(root, "spec") {
        default_ptr(spec, "volumeMode", json!("Filesystem"));
    }
    if let Some(status) = child(root, "status") {
        default_str(status, "phase", "Pending");
    }
}

fn persistent_volume(root: &mut Obj) {
    if let Some(spec) = child(root, "spec") {
        default_str(spec, "persistentVolumeReclaimPolicy", "Retain");
        default_ptr(spec, "volumeMode", json!("Filesystem"));
        if let Some(host_path) = existing(spec, "hostPath") {
            default_ptr(host_path, "type", json!(""));
        }
        if let Some(rbd) = existing(spec, "rbd") {
            rbd_defaults(rbd);
        }
        if let Some(iscsi) = existing(spec, "iscsi") {
            default_str(iscsi, "iscsiInterface", "default");
        }
    }
    if let Some(status) = child(root, "status") {
        default_str(status, "phase", "Pending");
    }
}

fn node(root: &mut Obj) {
    let Some(status) = existing(root, "status") else {
        return;
    };
    if is_unset(status.get("allocatable")) {
        if let Some(capacity) = status.get("capacity").filter(|c| c.is_object()).cloned() {
            status.insert("allocatable".to_owned(), capacity);
        }
    }
}

fn endpoints(root: &mut Obj) {
    each_obj(root, "subsets", |subset| {
        each_obj(subset, "ports", |p| default_str(p, "protocol", "TCP"));
    });
}

fn limit_range(root: &mut Obj) {
    let Some(spec) = existing(root, "spec") else {
        return;
    };
    each_obj(spec, "limits", |item| {
        if str_of(item, "type") != "Container" {
            return;
        }
        let map_of = |item: &Obj, key: &str| -> Option<Obj> {
            match item.get(key) {
                None | Some(Value::Null) => Some(Map::new()),
                Some(Value::Object(o)) => Some(o.clone()),
                Some(_) => None,
            }
        };
        let (Some(mut default), Some(mut default_request)) =
            (map_of(item, "default"), map_of(item, "defaultRequest"))
        else {
            return;
        };
        if let Some(Value::Object(max)) = item.get("max") {
            for (k, v) in max {
                default.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        for (k, v) in &default {
            default_request
                .entry(k.clone())
                .or_insert_with(|| v.clone());
        }
        if let Some(Value::Object(min)) = item.get("min") {
            for (k, v) in min {
                default_request
                    .entry(k.clone())
                    .or_insert_with(|| v.clone());
            }
        }
        // Go serializes empty maps as absent, so only non-empty ones show.
        if !default.is_empty() {
            item.insert("default".to_owned(), Value::Object(default));
        }
        if !default_request.is_empty() {
            item.insert("defaultRequest".to_owned(), Value::Object(default_request));
        }
    });
}

// ---------------------------------------------------------------------------
// apps/v1

fn deployment(root: &mut Obj) {
    let Some(spec) = child(root, "spec") else {
        return;
    };
    default_ptr(spec, "replicas", json!(1));
    if let Some(strategy) = child(spec, "strategy") {
        default_str(strategy, "type", "RollingUpdate");
        if str_of(strategy, "type") == "RollingUpdate" {
            if let Some(rolling) = child(strategy, "rollingUpdate") {
                default_ptr(rolling, "maxUnavailable", json!("25%"));
                default_ptr(rolling, "maxSurge", json!("25%"));
            }
        }
    }
    default_ptr(spec, "revisionHistoryLimit", json!(10));
    default_ptr(spec, "progressDeadlineSeconds", json!(600));
    if let Some(template) = existing(spec, "template") {
        pod_template(template);
    }
}

fn replica_set(root: &mut Obj) {
    let Some(spec) = child(root, "spec") else {
        return;
    };
    default_ptr(spec, "replicas", json!(1));
    if let Some(template) = existing(spec, "template") {
        pod_template(template);
    }
}

fn daemon_set(root: &mut Obj) {
    let Some(spec) = child(root, "spec") else {
        return;
    };
    if let Some(strategy) = child(spec, "updateStrategy") {
        default_str(strategy, "type", "RollingUpdate");
        if str_of(strategy, "type") == "RollingUpdate" {
            if let Some(rolling) = child(strategy, "rollingUpdate") {
                default_ptr(rolling, "maxUnavailable", json!(1));
                default_ptr(rolling, "maxSurge", json!(0));
            }
        }
    }
    default_ptr(spec, "revisionHistoryLimit", json!(10));
    if let Some(template) = existing(spec, "template") {
        pod_template(template);
    }
}

fn stateful_set(root: &mut Obj) {
    let Some(spec) = child(root, "spec") else {
        return;
    };
    default_str(spec, "podManagementPolicy", "OrderedReady");
    if let Some(strategy) = child(spec, "updateStrategy") {
        if is_empty_str(strategy.get("type")) {
            strategy.insert("type".to_owned(), json!("RollingUpdate"));
            default_ptr(strategy, "rollingUpdate", json!({}));
        }
        if str_of(strategy, "type") == "RollingUpdate" {
            if let Some(rolling) = existing(strategy, "rollingUpdate") {
                default_ptr(rolling, "partition", json!(0));
            }
        }
    }
    if let Some(retention) = child(spec, "persistentVolumeClaimRetentionPolicy") {
        default_str(retention, "whenDeleted", "Retain");
        default_str(retention, "whenScaled", "Retain");
    }
    default_ptr(spec, "replicas", json!(1));
    default_ptr(spec, "revisionHistoryLimit", json!(10));
    if let Some(template) = existing(spec, "template") {
        pod_template(template);
    }
    each_obj(spec, "volumeClaimTemplates", |claim| {
        // Upstream's conversion to v1 writes these into every claim template.
        claim.insert("apiVersion".to_owned(), json!("v1"));
        claim.insert("kind".to_owned(), json!("PersistentVolumeClaim"));
        persistent_volume_claim(claim);
    });
}

// ---------------------------------------------------------------------------
// batch/v1

fn job(root: &mut Obj) {
    let template_labels = root
        .get("spec")
        .and_then(|s| s.get("template"))
        .and_then(|t| t.as_object())
        .and_then(labels_of)
        .cloned();
    if let Some(labels) = template_labels {
        if let Some(metadata) = child(root, "metadata") {
            if is_empty_collection(metadata.get("labels")) {
                metadata.insert("labels".to_owned(), Value::Object(labels));
            }
        }
    }
    let Some(spec) = child(root, "spec") else {
        return;
    };
    if is_unset(spec.get("completions")) && is_unset(spec.get("parallelism")) {
        spec.insert("completions".to_owned(), json!(1));
        spec.insert("parallelism".to_owned(), json!(1));
    }
    default_ptr(spec, "parallelism", json!(1));
    if is_unset(spec.get("backoffLimit")) {
        let limit = if is_unset(spec.get("backoffLimitPerIndex")) {
            6
        } else {
            i64::from(i32::MAX)
        };
        spec.insert("backoffLimit".to_owned(), json!(limit));
    }
    default_ptr(spec, "completionMode", json!("NonIndexed"));
    default_ptr(spec, "suspend", Value::Bool(false));
    let has_failure_policy = !is_unset(spec.get("podFailurePolicy"));
    if let Some(policy) = existing(spec, "podFailurePolicy") {
        pod_failure_policy(policy);
    }
    let replacement = if has_failure_policy {
        "Failed"
    } else {
        "TerminatingOrFailed"
    };
    default_ptr(spec, "podReplacementPolicy", json!(replacement));
    default_ptr(spec, "manualSelector", Value::Bool(false));
    if let Some(template) = existing(spec, "template") {
        pod_template(template);
    }
}

fn pod_failure_policy(policy: &mut Obj) {
    each_obj(policy, "rules", |rule| {
        each_obj(rule, "onPodConditions", |pattern| {
            default_str(pattern, "status", "True");
        });
    });
}

fn cron_job(root: &mut Obj) {
    let Some(spec) = child(root, "spec") else {
        return;
    };
    default_str(spec, "concurrencyPolicy", "Allow");
    default_ptr(spec, "suspend", Value::Bool(false));
    default_ptr(spec, "successfulJobsHistoryLimit", json!(3));
    default_ptr(spec, "failedJobsHistoryLimit", json!(1));
    // The job template only gets type-level defaults, not the Job's own.
    let Some(job_template) = existing(spec, "jobTemplate") else {
        return;
    };
    let Some(job_spec) = existing(job_template, "spec") else {
        return;
    };
    if let Some(policy) = existing(job_spec, "podFailurePolicy") {
        pod_failure_policy(policy);
    }
    if let Some(template) = existing(job_spec, "template") {
        pod_template(template);
    }
}

// ---------------------------------------------------------------------------
// Other groups.

fn role_binding(root: &mut Obj) {
    if let Some(role_ref) = existing(root, "roleRef") {
        default_str(role_ref, "apiGroup", RBAC_GROUP);
    }
    each_obj(root, "subjects", |subject| {
        if is_empty_str(subject.get("apiGroup"))
            && matches!(str_of(subject, "kind"), "User" | "Group")
        {
            subject.insert("apiGroup".to_owned(), json!(RBAC_GROUP));
        }
    });
}

fn network_policy(root: &mut Obj) {
    let Some(spec) = child(root, "spec") else {
        return;
    };
    for direction in ["ingress", "egress"] {
        each_obj(spec, direction, |rule| {
            each_obj(rule, "ports", |p| default_ptr(p, "protocol", json!("TCP")));
        });
    }
    if is_empty_collection(spec.get("policyTypes")) {
        let mut types = vec![json!("Ingress")];
        if !is_empty_collection(spec.get("egress")) {
            types.push(json!("Egress"));
        }
        spec.insert("policyTypes".to_owned(), Value::Array(types));
    }
}

fn ingress_class(root: &mut Obj) {
    if let Some(spec) = existing(root, "spec") {
        if let Some(parameters) = existing(spec, "parameters") {
            default_ptr(parameters, "scope", json!("Cluster"));
        }
    }
}

fn endpoint_slice(root: &mut Obj) {
    each_obj(root, "ports", |p| {
        default_ptr(p, "name", json!(""));
        default_ptr(p, "protocol", json!("TCP"));
    });
}

fn horizontal_pod_autoscaler(root: &mut Obj) {
    let is_v2 = str_of(root, "apiVersion").ends_with("/v2");
    let Some(spec) = child(root, "spec") else {
        return;
    };
    default_ptr(spec, "minReplicas", json!(1));
    if !is_v2 {
        return;
    }
    if is_empty_collection(spec.get("metrics")) {
        spec.insert(
            "metrics".to_owned(),
            json!([{
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 80}
                }
            }]),
        );
    }
    // Rules are only filled in when the user asked for a behavior at all.
    if let Some(behavior) = existing(spec, "behavior") {
        let scale_up = json!({
            "stabilizationWindowSeconds": 0,
            "selectPolicy": "Max",
            "policies": [
                {"type": "Pods", "value": 4, "periodSeconds": 15},
                {"type": "Percent", "value": 100, "periodSeconds": 15}
            ]
        });
        let scale_down = json!({
            "selectPolicy": "Max",
            "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]
        });
        for (key, defaults) in [("scaleUp", scale_up), ("scaleDown", scale_down)] {
            let mut rules = match defaults {
                Value::Object(o) => o,
                _ => continue,
            };
            if let Some(Value::Object(given)) = behavior.get(key) {
                for (k, v) in given {
                    if !v.is_null() {
                        rules.insert(k.clone(), v.clone());
                    }
                }
            } else if !is_unset(behavior.get(key)) {
                continue;
            }
            behavior.insert(key.to_owned(), Value::Object(rules));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaulted(group: &str, kind: &str, mut obj: Value) -> Value {
        apply_defaults(group, kind, &mut obj);
        obj
    }

    fn minimal_pod_spec() -> Value {
        json!({"containers": [{"name": "web", "image": "nginx"}]})
    }

    #[test]
    fn pod_gets_spec_and_container_defaults() {
        let pod = defaulted(
            "",
            "Pod",
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                   "spec": minimal_pod_spec()}),
        );
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["securityContext"], json!({}));
        assert_eq!(spec["enableServiceLinks"], true);
        assert!(
            spec.get("serviceAccountName").is_none(),
            "admission sets it"
        );
        let c = &spec["containers"][0];
        assert_eq!(c["imagePullPolicy"], "Always");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(c["resources"], json!({}));
    }

    #[test]
    fn pods_tolerate_node_problems_for_300_seconds_unless_they_say_otherwise() {
        let pod = defaulted("", "Pod", json!({"spec": minimal_pod_spec()}));
        assert_eq!(
            pod["spec"]["tolerations"],
            json!([
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                 "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                 "effect": "NoExecute", "tolerationSeconds": 300},
            ])
        );
        // Idempotent: defaulting again adds nothing.
        assert_eq!(defaulted("", "Pod", pod.clone()), pod);

        // Its own toleration of one is kept; only the other is added.
        let own = json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                         "effect": "NoExecute", "tolerationSeconds": 2});
        let mut spec = minimal_pod_spec();
        spec["tolerations"] = json!([own.clone()]);
        let pod = defaulted("", "Pod", json!({"spec": spec}));
        let t = pod["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0], own);
        assert_eq!(t[1]["key"], "node.kubernetes.io/not-ready");

        // Tolerating everything (empty key, empty effect) covers both.
        let mut spec = minimal_pod_spec();
        spec["tolerations"] = json!([{"operator": "Exists"}]);
        let pod = defaulted("", "Pod", json!({"spec": spec}));
        assert_eq!(pod["spec"]["tolerations"], json!([{"operator": "Exists"}]));

        // Templates are left alone: only Pods get them.
        let d = defaulted(
            "apps",
            "Deployment",
            json!({"spec": {"template": {"spec": minimal_pod_spec()}}}),
        );
        assert!(d["spec"]["template"]["spec"].get("tolerations").is_none());
    }

    #[test]
    fn explicit_values_are_kept() {
        let pod = defaulted(
            "",
            "Pod",
            json!({"spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                            "enableServiceLinks": false,
                            "containers": [{"name": "c", "image": "nginx",
                                            "imagePullPolicy": "Never"}]}}),
        );
        assert_eq!(pod["spec"]["restartPolicy"], "Never");
        assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 0);
        assert_eq!(pod["spec"]["enableServiceLinks"], false);
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Never");
    }

    #[test]
    fn pull_policy_follows_the_tag() {
        for (image, want) in [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("nginx:1.25", "IfNotPresent"),
            ("registry.example.com:5000/team/app", "Always"),
            ("registry.example.com:5000/team/app:v2", "IfNotPresent"),
            ("localhost/app:latest", "Always"),
            ("nginx@sha256:abcd", "IfNotPresent"),
            ("nginx:latest@sha256:abcd", "Always"),
            ("Nginx", "IfNotPresent"),
            ("", "IfNotPresent"),
        ] {
            assert_eq!(pull_policy(image), want, "image {image:?}");
        }
    }

    #[test]
    fn container_parts_get_defaults() {
        let pod = defaulted(
            "",
            "Pod",
            json!({"spec": {"containers": [{
                "name": "c", "image": "app:1",
                "ports": [{"containerPort": 80}],
                "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "livenessProbe": {"httpGet": {"port": 80}},
                "readinessProbe": {"grpc": {"port": 9000}, "periodSeconds": 5},
                "lifecycle": {"preStop": {"httpGet": {"port": 80, "path": "/stop"}}}
            }]}}),
        );
        let c = &pod["spec"]["containers"][0];
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
        let live = &c["livenessProbe"];
        assert_eq!(live["timeoutSeconds"], 1);
        assert_eq!(live["periodSeconds"], 10);
        assert_eq!(live["successThreshold"], 1);
        assert_eq!(live["failureThreshold"], 3);
        assert_eq!(live["httpGet"]["path"], "/");
        assert_eq!(live["httpGet"]["scheme"], "HTTP");
        assert_eq!(c["readinessProbe"]["periodSeconds"], 5);
        assert_eq!(c["readinessProbe"]["grpc"]["service"], "");
        assert_eq!(c["lifecycle"]["preStop"]["httpGet"]["path"], "/stop");
        assert_eq!(c["lifecycle"]["preStop"]["httpGet"]["scheme"], "HTTP");
    }

    #[test]
    fn volumes_get_defaults() {
        let pod = defaulted(
            "",
            "Pod",
            json!({"spec": {"containers": [], "volumes": [
                {"name": "scratch"},
                {"name": "cfg", "configMap": {"name": "c"}},
                {"name": "sec", "secret": {"secretName": "s", "defaultMode": 256}},
                {"name": "host", "hostPath": {"path": "/var"}},
                {"name": "proj", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}},
                {"name": "eph", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}}
            ]}}),
        );
        let v = &pod["spec"]["volumes"];
        assert_eq!(v[0]["emptyDir"], json!({}));
        assert_eq!(v[1]["configMap"]["defaultMode"], 420);
        assert_eq!(v[2]["secret"]["defaultMode"], 256);
        assert_eq!(v[3]["hostPath"]["type"], "");
        assert_eq!(v[4]["projected"]["defaultMode"], 420);
        assert_eq!(
            v[4]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
            3600
        );
        assert_eq!(
            v[5]["ephemeral"]["volumeClaimTemplate"]["spec"]["volumeMode"],
            "Filesystem"
        );
    }

    #[test]
    fn pod_requests_default_to_limits_and_host_ports_follow_host_network() {
        let pod = defaulted(
            "",
            "Pod",
            json!({"spec": {"hostNetwork": true, "containers": [{
                "name": "c", "image": "x:1",
                "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}},
                "ports": [{"containerPort": 8080}]
            }]}}),
        );
        let c = &pod["spec"]["containers"][0];
        assert_eq!(
            c["resources"]["requests"],
            json!({"cpu": "500m", "memory": "1Gi"})
        );
        assert_eq!(c["ports"][0]["hostPort"], 8080);
    }

    #[test]
    fn templates_get_pod_spec_defaults_but_not_pod_only_ones() {
        let deploy = defaulted(
            "apps",
            "Deployment",
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                   "spec": {"template": {"spec": {"containers": [{
                       "name": "c", "image": "x:1",
                       "resources": {"limits": {"cpu": "1"}}}]}}}}),
        );
        let spec = &deploy["spec"]["template"]["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["containers"][0]["imagePullPolicy"], "IfNotPresent");
        assert!(spec.get("enableServiceLinks").is_none());
        assert!(spec["containers"][0]["resources"].get("requests").is_none());
    }

    #[test]
    fn deployment_defaults() {
        let d = defaulted("apps", "Deployment", json!({"spec": {}}));
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(
            d["spec"]["strategy"],
            json!({"type": "RollingUpdate",
                   "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);

        let recreate = defaulted(
            "apps",
            "Deployment",
            json!({"spec": {"replicas": 0, "strategy": {"type": "Recreate"}}}),
        );
        assert_eq!(recreate["spec"]["replicas"], 0);
        assert_eq!(recreate["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn replica_set_and_daemon_set_defaults() {
        let rs = defaulted("apps", "ReplicaSet", json!({"spec": {}}));
        assert_eq!(rs["spec"]["replicas"], 1);
        let ds = defaulted("apps", "DaemonSet", json!({"spec": {}}));
        assert_eq!(
            ds["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        assert_eq!(ds["spec"]["revisionHistoryLimit"], 10);
        let on_delete = defaulted(
            "apps",
            "DaemonSet",
            json!({"spec": {"updateStrategy": {"type": "OnDelete"}}}),
        );
        assert_eq!(
            on_delete["spec"]["updateStrategy"],
            json!({"type": "OnDelete"})
        );
    }

    #[test]
    fn stateful_set_defaults() {
        let sts = defaulted(
            "apps",
            "StatefulSet",
            json!({"spec": {"volumeClaimTemplates": [{"metadata": {"name": "data"},
                                                     "spec": {"accessModes": ["ReadWriteOnce"]}}]}}),
        );
        let spec = &sts["spec"];
        assert_eq!(spec["podManagementPolicy"], "OrderedReady");
        assert_eq!(
            spec["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );
        assert_eq!(
            spec["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
        );
        assert_eq!(spec["replicas"], 1);
        assert_eq!(spec["revisionHistoryLimit"], 10);
        let claim = &spec["volumeClaimTemplates"][0];
        assert_eq!(claim["apiVersion"], "v1");
        assert_eq!(claim["kind"], "PersistentVolumeClaim");
        assert_eq!(claim["spec"]["volumeMode"], "Filesystem");
        assert_eq!(claim["status"]["phase"], "Pending");

        let on_delete = defaulted(
            "apps",
            "StatefulSet",
            json!({"spec": {"updateStrategy": {"type": "OnDelete"}}}),
        );
        assert_eq!(
            on_delete["spec"]["updateStrategy"],
            json!({"type": "OnDelete"})
        );
    }

    #[test]
    fn job_defaults() {
        let job = defaulted(
            "batch",
            "Job",
            json!({"metadata": {"name": "j"},
                   "spec": {"template": {"metadata": {"labels": {"app": "j"}},
                                         "spec": {"restartPolicy": "Never", "containers": []}}}}),
        );
        let spec = &job["spec"];
        assert_eq!(spec["completions"], 1);
        assert_eq!(spec["parallelism"], 1);
        assert_eq!(spec["backoffLimit"], 6);
        assert_eq!(spec["completionMode"], "NonIndexed");
        assert_eq!(spec["suspend"], false);
        assert_eq!(spec["podReplacementPolicy"], "TerminatingOrFailed");
        assert_eq!(spec["manualSelector"], false);
        assert_eq!(spec["template"]["spec"]["restartPolicy"], "Never");
        assert_eq!(job["metadata"]["labels"], json!({"app": "j"}));

        let parallel = defaulted(
            "batch",
            "Job",
            json!({"spec": {"parallelism": 3, "backoffLimitPerIndex": 1,
                            "podFailurePolicy": {"rules": [{"action": "Ignore",
                                "onPodConditions": [{"type": "DisruptionTarget"}]}]}}}),
        );
        assert!(parallel["spec"].get("completions").is_none());
        assert_eq!(parallel["spec"]["backoffLimit"], 2147483647);
        assert_eq!(parallel["spec"]["podReplacementPolicy"], "Failed");
        assert_eq!(
            parallel["spec"]["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["status"],
            "True"
        );
    }

    #[test]
    fn cron_job_defaults_leave_the_job_spec_alone() {
        let cj = defaulted(
            "batch",
            "CronJob",
            json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {
                "spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "x"}]}}}}}}),
        );
        let spec = &cj["spec"];
        assert_eq!(spec["concurrencyPolicy"], "Allow");
        assert_eq!(spec["suspend"], false);
        assert_eq!(spec["successfulJobsHistoryLimit"], 3);
        assert_eq!(spec["failedJobsHistoryLimit"], 1);
        let job_spec = &spec["jobTemplate"]["spec"];
        assert!(job_spec.get("backoffLimit").is_none());
        assert_eq!(job_spec["template"]["spec"]["dnsPolicy"], "ClusterFirst");
    }

    #[test]
    fn service_defaults() {
        let svc = defaulted(
            "",
            "Service",
            json!({"spec": {"selector": {"app": "a"},
                            "ports": [{"port": 80}, {"port": 53, "protocol": "UDP", "targetPort": "dns"}]}}),
        );
        let spec = &svc["spec"];
        assert_eq!(spec["type"], "ClusterIP");
        assert_eq!(spec["sessionAffinity"], "None");
        assert_eq!(spec["ports"][0]["protocol"], "TCP");
        assert_eq!(spec["ports"][0]["targetPort"], 80);
        assert_eq!(spec["ports"][1]["targetPort"], "dns");
        assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
        assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
        assert_eq!(spec["internalTrafficPolicy"], "Cluster");
        assert!(spec.get("externalTrafficPolicy").is_none());
        assert!(spec.get("allocateLoadBalancerNodePorts").is_none());
    }

    #[test]
    fn external_services_get_traffic_policy() {
        let lb = defaulted(
            "",
            "Service",
            json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 443}]},
                   "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}, {"hostname": "lb"}]}}}),
        );
        assert_eq!(lb["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(lb["spec"]["allocateLoadBalancerNodePorts"], true);
        assert_eq!(lb["status"]["loadBalancer"]["ingress"][0]["ipMode"], "VIP");
        assert!(lb["status"]["loadBalancer"]["ingress"][1]
            .get("ipMode")
            .is_none());

        let np = defaulted("", "Service", json!({"spec": {"type": "NodePort"}}));
        assert_eq!(np["spec"]["externalTrafficPolicy"], "Cluster");

        let ext = defaulted(
            "",
            "Service",
            json!({"spec": {"type": "ExternalName", "externalName": "example.com"}}),
        );
        assert!(ext["spec"].get("internalTrafficPolicy").is_none());
        assert!(ext["spec"].get("ipFamilies").is_none());
    }

    #[test]
    fn service_session_affinity_and_ip_families() {
        let client_ip = defaulted(
            "",
            "Service",
            json!({"spec": {"sessionAffinity": "ClientIP"}}),
        );
        assert_eq!(
            client_ip["spec"]["sessionAffinityConfig"],
            json!({"clientIP": {"timeoutSeconds": 10800}})
        );
        let none = defaulted(
            "",
            "Service",
            json!({"spec": {"sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 5}}}}),
        );
        assert!(none["spec"].get("sessionAffinityConfig").is_none());

        let headless = defaulted("", "Service", json!({"spec": {"clusterIP": "None"}}));
        assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
        assert_eq!(headless["spec"]["ipFamilyPolicy"], "RequireDualStack");
        assert_eq!(headless["spec"]["ipFamilies"], json!(["IPv4", "IPv6"]));

        let headless_selected = defaulted(
            "",
            "Service",
            json!({"spec": {"clusterIP": "None", "selector": {"app": "db"}}}),
        );
        assert_eq!(headless_selected["spec"]["ipFamilyPolicy"], "SingleStack");
        assert_eq!(headless_selected["spec"]["ipFamilies"], json!(["IPv4"]));

        let v6 = defaulted("", "Service", json!({"spec": {"clusterIPs": ["fd00::10"]}}));
        assert_eq!(v6["spec"]["clusterIP"], "fd00::10");
        assert_eq!(v6["spec"]["ipFamilies"], json!(["IPv6"]));
    }

    #[test]
    fn secret_namespace_and_volume_defaults() {
        let secret = defaulted("", "Secret", json!({"data": {}}));
        assert_eq!(secret["type"], "Opaque");

        let ns = defaulted("", "Namespace", json!({"metadata": {"name": "team-a"}}));
        assert_eq!(
            ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "team-a"
        );
        assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(ns["status"]["phase"], "Active");

        let pvc = defaulted("", "PersistentVolumeClaim", json!({"spec": {}}));
        assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
        assert_eq!(pvc["status"]["phase"], "Pending");

        let pv = defaulted(
            "",
            "PersistentVolume",
            json!({"spec": {"hostPath": {"path": "/d"}}}),
        );
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        assert_eq!(pv["spec"]["volumeMode"], "Filesystem");
        assert_eq!(pv["spec"]["hostPath"]["type"], "");
        assert_eq!(pv["status"]["phase"], "Pending");
    }

    #[test]
    fn node_endpoints_and_limit_range_defaults() {
        let node = defaulted("", "Node", json!({"status": {"capacity": {"cpu": "4"}}}));
        assert_eq!(node["status"]["allocatable"], json!({"cpu": "4"}));

        let ep = defaulted(
            "",
            "Endpoints",
            json!({"subsets": [{"ports": [{"port": 80}]}]}),
        );
        assert_eq!(ep["subsets"][0]["ports"][0]["protocol"], "TCP");

        let lr = defaulted(
            "",
            "LimitRange",
            json!({"spec": {"limits": [
                {"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "64Mi"}},
                {"type": "Pod", "max": {"cpu": "4"}}
            ]}}),
        );
        let item = &lr["spec"]["limits"][0];
        assert_eq!(item["default"], json!({"cpu": "2"}));
        assert_eq!(
            item["defaultRequest"],
            json!({"cpu": "2", "memory": "64Mi"})
        );
        assert!(lr["spec"]["limits"][1].get("default").is_none());
    }

    #[test]
    fn rbac_subjects_and_role_refs_get_api_group() {
        let rb = defaulted(
            "rbac.authorization.k8s.io",
            "RoleBinding",
            json!({"roleRef": {"kind": "Role", "name": "r"},
                   "subjects": [{"kind": "User", "name": "u"},
                                {"kind": "ServiceAccount", "name": "sa", "namespace": "default"},
                                {"kind": "Group", "name": "g"}]}),
        );
        assert_eq!(rb["roleRef"]["apiGroup"], RBAC_GROUP);
        assert_eq!(rb["subjects"][0]["apiGroup"], RBAC_GROUP);
        assert!(rb["subjects"][1].get("apiGroup").is_none());
        assert_eq!(rb["subjects"][2]["apiGroup"], RBAC_GROUP);
    }

    #[test]
    fn networking_discovery_storage_and_scheduling_defaults() {
        let np = defaulted(
            "networking.k8s.io",
            "NetworkPolicy",
            json!({"spec": {"podSelector": {}, "egress": [{"ports": [{"port": 53}]}]}}),
        );
        assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(np["spec"]["egress"][0]["ports"][0]["protocol"], "TCP");

        let ic = defaulted(
            "networking.k8s.io",
            "IngressClass",
            json!({"spec": {"parameters": {"kind": "K", "name": "n"}}}),
        );
        assert_eq!(ic["spec"]["parameters"]["scope"], "Cluster");

        let slice = defaulted(
            "discovery.k8s.io",
            "EndpointSlice",
            json!({"ports": [{"port": 80}]}),
        );
        assert_eq!(
            slice["ports"][0],
            json!({"port": 80, "name": "", "protocol": "TCP"})
        );

        let sc = defaulted(
            "storage.k8s.io",
            "StorageClass",
            json!({"provisioner": "p"}),
        );
        assert_eq!(sc["reclaimPolicy"], "Delete");
        assert_eq!(sc["volumeBindingMode"], "Immediate");

        let pc = defaulted("scheduling.k8s.io", "PriorityClass", json!({"value": 10}));
        assert_eq!(pc["preemptionPolicy"], "PreemptLowerPriority");
    }

    #[test]
    fn hpa_defaults() {
        let hpa = defaulted(
            "autoscaling",
            "HorizontalPodAutoscaler",
            json!({"apiVersion": "autoscaling/v2",
                   "spec": {"maxReplicas": 5, "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}}),
        );
        assert_eq!(hpa["spec"]["minReplicas"], 1);
        assert_eq!(
            hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            80
        );
        assert_eq!(
            hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
            60
        );
        assert_eq!(hpa["spec"]["behavior"]["scaleDown"]["selectPolicy"], "Max");
        assert_eq!(
            hpa["spec"]["behavior"]["scaleUp"]["policies"][0]["value"],
            4
        );

        let v1 = defaulted(
            "autoscaling",
            "HorizontalPodAutoscaler",
            json!({"apiVersion": "autoscaling/v1", "spec": {"maxReplicas": 5}}),
        );
        assert_eq!(v1["spec"]["minReplicas"], 1);
        assert!(v1["spec"].get("metrics").is_none());
    }

    #[test]
    fn odd_input_does_not_panic_or_change() {
        let cases = [
            json!(null),
            json!("pod"),
            json!([1, 2]),
            json!({"spec": "nope"}),
            json!({"spec": {"containers": "nope", "volumes": [1, null, "x"]}}),
            json!({"spec": {"containers": [null, 3, {"image": 7, "ports": [{"protocol": 5}]}]}}),
            json!({"spec": {"template": [], "strategy": 3, "updateStrategy": "x"}}),
            json!({"spec": {"ports": [{"port": "http", "targetPort": null}], "selector": 1}}),
            json!({"metadata": 5, "spec": {"ipFamilies": "IPv4", "clusterIPs": 3}}),
        ];
        for case in cases {
            for (group, kind) in [
                ("", "Pod"),
                ("", "Service"),
                ("", "Namespace"),
                ("apps", "Deployment"),
                ("apps", "StatefulSet"),
                ("apps", "DaemonSet"),
                ("batch", "Job"),
                ("batch", "CronJob"),
                ("", "LimitRange"),
            ] {
                let mut obj = case.clone();
                apply_defaults(group, kind, &mut obj);
            }
        }
        let mut scalar = json!("pod");
        apply_defaults("", "Pod", &mut scalar);
        assert_eq!(scalar, json!("pod"));
        let mut bad_spec = json!({"spec": "nope"});
        apply_defaults("", "Pod", &mut bad_spec);
        assert_eq!(bad_spec, json!({"spec": "nope"}));
    }

    #[test]
    fn unknown_kinds_are_untouched() {
        let obj = json!({"apiVersion": "example.com/v1", "kind": "Widget", "spec": {}});
        assert_eq!(defaulted("example.com", "Widget", obj.clone()), obj);
    }
}
