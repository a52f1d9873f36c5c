//! The Endpoints and EndpointSlice controllers, run as one: for each Service with a
//! selector, the Endpoints object of the same name and the EndpointSlices labelled with
//! its name list the addresses and ports of the pods it selects.
//!
//! [`reconcile`] decides from plain values (the Service, its pods, the current Endpoints
//! and slices) and returns [`Action`]s; [`EndpointsController`] feeds it from the shared
//! caches and carries them out. The pod hook keeps the last version of each pod it saw
//! (a shared `Arc`, no copy) so a pod whose labels change reaches the Services of both
//! its old and its new labels, and it compares only Service selectors of the pod's
//! namespace, from a small index the Service hook keeps.
//!
//! As upstream: Services without a selector are left alone (among them the `kubernetes`
//! Service, whose Endpoints and slice the server writes at start, see `bootstrap.rs`);
//! a deleted Service's Endpoints are deleted by name, its slices by the garbage collector
//! (they carry a controller reference); slices are updated in place, at most
//! [`MAX_PER_SLICE`] endpoints each.

use super::driver::{
    self, controller_ref, Caches, Change, Effects, Key, Kind, Next, Queue, Reconciler,
};
use super::events::{reference, EventType, Recorder};
use super::replicaset::is_ready;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort as CorePort, EndpointSubset, Endpoints, ObjectReference, Pod,
    Service, ServicePort,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The label naming the Service a slice belongs to.
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
/// The label naming the controller that manages a slice.
pub const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY`].
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// The label marking the Endpoints and slices of a headless Service.
pub const HEADLESS: &str = "service.kubernetes.io/headless";
/// The annotation with the time of the earliest change the last write reflects.
pub const TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// The annotation marking Endpoints cut down to [`MAX_ENDPOINTS`] addresses.
pub const OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";
/// The node label giving an endpoint's zone.
pub const ZONE: &str = "topology.kubernetes.io/zone";
/// At most this many addresses in one Endpoints object (upstream's cap).
pub const MAX_ENDPOINTS: usize = 1000;
/// At most this many endpoints in one EndpointSlice (upstream's default).
pub const MAX_PER_SLICE: usize = 100;

/// How long a writer waits for the caches to show its own writes before deciding again.
const SETTLE: Duration = Duration::from_secs(10);
/// When to look again after a write lost a race with another writer.
const RETRY: Duration = Duration::from_millis(250);

/// One thing a sync does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create the Service's Endpoints (the whole object).
    CreateEndpoints(Value),
    /// Merge-patch the Service's Endpoints (preconditioned on its resourceVersion).
    UpdateEndpoints(Value),
    /// Delete the Endpoints of a Service that is gone, if it still has this uid.
    DeleteEndpoints {
        /// The Endpoints' uid.
        uid: String,
    },
    /// Create an EndpointSlice (the whole object, with a generated name).
    CreateSlice(Value),
    /// Merge-patch an EndpointSlice (preconditioned on its resourceVersion).
    UpdateSlice {
        /// The slice.
        name: String,
        /// The merge patch.
        patch: Value,
    },
    /// Delete an EndpointSlice.
    DeleteSlice {
        /// The slice.
        name: String,
        /// Its uid.
        uid: String,
    },
}

/// What a sync sees besides the Service.
pub struct Observed<'a> {
    /// Pods of the Service's namespace (those the selector picks are used).
    pub pods: &'a [Arc<Pod>],
    /// The Endpoints of the Service's name, if any.
    pub endpoints: Option<&'a Endpoints>,
    /// The slices this controller manages for the Service's name.
    pub slices: &'a [Arc<EndpointSlice>],
    /// Zone of each node that has one.
    pub zones: &'a BTreeMap<String, String>,
}

/// The Service's selector when this controller acts on it: set, not empty, and not an
/// ExternalName Service (an empty selector comes back from storage as none upstream).
pub fn selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref().filter(|s| !s.is_empty())
}

/// Whether a Service selector picks `labels` (every key with its value).
pub fn selects(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// Whether a pod has finished (Succeeded or Failed).
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

/// An IP family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn of(ip: &str) -> Family {
        if ip.contains(':') {
            Family::V6
        } else {
            Family::V4
        }
    }

    fn address_type(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// The families a Service serves, primary first: `spec.ipFamilies`, else the family of
/// its cluster IP, else IPv4.
fn families(svc: &Service) -> Vec<Family> {
    let spec = svc.spec.as_ref();
    let mut out = Vec::new();
    for f in spec
        .and_then(|s| s.ip_families.as_deref())
        .unwrap_or_default()
    {
        let f = if f == "IPv6" { Family::V6 } else { Family::V4 };
        if !out.contains(&f) {
            out.push(f);
        }
    }
    if out.is_empty() {
        let ip = spec.and_then(|s| s.cluster_ip.as_deref()).unwrap_or("");
        out.push(if ip.contains(':') {
            Family::V6
        } else {
            Family::V4
        });
    }
    out
}

/// Whether the Service has a cluster IP (not headless).
fn ip_set(svc: &Service) -> bool {
    let ip = svc
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .unwrap_or("");
    !ip.is_empty() && ip != "None"
}

fn is_headless_without_ports(svc: &Service) -> bool {
    let spec = svc.spec.as_ref();
    spec.and_then(|s| s.ports.as_ref())
        .is_none_or(Vec::is_empty)
        && spec.and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// The pod's IP of `family`, if it has one.
fn pod_ip(pod: &Pod, family: Family) -> Option<String> {
    let status = pod.status.as_ref()?;
    status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.as_str())
        .chain(status.pod_ip.as_deref())
        .find(|ip| !ip.is_empty() && Family::of(ip) == family)
        .map(String::from)
}

fn has_ip(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty())
            || s.pod_ips.as_ref().is_some_and(|ips| !ips.is_empty())
    })
}

/// Whether a pod's hostname is published: it names the Service as its subdomain.
fn hostname(pod: &Pod, svc: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let host = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == svc.metadata.name.as_deref()
        && pod.metadata.namespace == svc.metadata.namespace)
        .then(|| host.to_string())
}

/// The time a pod's Ready condition last changed, which is when a change it brings to
/// endpoints was triggered.
fn trigger_of(pod: &Pod) -> Option<jiff::Timestamp> {
    pod.status
        .as_ref()?
        .conditions
        .as_deref()?
        .iter()
        .find(|c| c.type_ == "Ready")?
        .last_transition_time
        .as_ref()
        .map(|t| t.0)
}

fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

/// One resolved port of a pod behind a Service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct PortSpec {
    name: String,
    port: i32,
    protocol: String,
    app_protocol: Option<String>,
}

impl PortSpec {
    fn core(&self) -> CorePort {
        CorePort {
            name: (!self.name.is_empty()).then(|| self.name.clone()),
            port: self.port,
            protocol: Some(self.protocol.clone()),
            app_protocol: self.app_protocol.clone(),
        }
    }

    fn slice(&self) -> SlicePort {
        SlicePort {
            name: Some(self.name.clone()),
            port: Some(self.port),
            protocol: Some(self.protocol.clone()),
            app_protocol: self.app_protocol.clone(),
        }
    }

    fn of_slice(p: &SlicePort) -> PortSpec {
        PortSpec {
            name: p.name.clone().unwrap_or_default(),
            port: p.port.unwrap_or(0),
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            app_protocol: p.app_protocol.clone(),
        }
    }
}

/// The container port a Service port reaches on `pod`: a number as it is, a name looked
/// up (with the protocol) in the containers and then the sidecars.
fn find_port(pod: &Pod, sp: &ServicePort) -> Option<i32> {
    let protocol = sp.protocol.as_deref().unwrap_or("TCP");
    match &sp.target_port {
        None | Some(IntOrString::Int(0)) => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            let spec = pod.spec.as_ref()?;
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            spec.containers
                .iter()
                .chain(sidecars)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

/// The ports of `pod` behind the Service's ports, in the Service's order; ports that do
/// not resolve are left out.
fn pod_ports(svc: &Service, pod: &Pod) -> Vec<PortSpec> {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default()
        .iter()
        .filter_map(|sp| {
            Some(PortSpec {
                name: sp.name.clone().unwrap_or_default(),
                port: find_port(pod, sp)?,
                protocol: sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect()
}

fn nonempty<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

/// An address's identity in Endpoints: IP and pod uid.
type AddrKey = (String, String);

fn addr_key(a: &EndpointAddress) -> AddrKey {
    (
        a.ip.clone(),
        a.target_ref
            .as_ref()
            .and_then(|r| r.uid.clone())
            .unwrap_or_default(),
    )
}

/// The subsets of a Service's Endpoints over the pods it selects, packed as upstream
/// packs them: addresses grouped by the set of ports they serve, ready ones apart from
/// not-ready ones, each list ordered by IP.
pub fn subsets(svc: &Service, pods: &[&Pod]) -> Vec<EndpointSubset> {
    let publish = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let family = families(svc)[0];
    let no_ports = is_headless_without_ports(svc);
    // `None` stands for "no port" (a headless Service without ports).
    let mut by_port: BTreeMap<Option<PortSpec>, BTreeMap<AddrKey, bool>> = BTreeMap::new();
    let mut addresses: HashMap<AddrKey, EndpointAddress> = HashMap::new();
    for pod in pods {
        if is_terminal(pod) || (!publish && pod.metadata.deletion_timestamp.is_some()) {
            continue;
        }
        let Some(ip) = pod_ip(pod, family) else {
            continue;
        };
        let ports: Vec<Option<PortSpec>> = if no_ports {
            vec![None]
        } else {
            pod_ports(svc, pod).into_iter().map(Some).collect()
        };
        if ports.is_empty() {
            continue;
        }
        let address = EndpointAddress {
            ip,
            hostname: hostname(pod, svc),
            node_name: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty()),
            target_ref: Some(pod_ref(pod)),
        };
        let key = addr_key(&address);
        let ready = publish || is_ready(pod);
        for port in ports {
            by_port.entry(port).or_default().insert(key.clone(), ready);
        }
        addresses.insert(key, address);
    }
    // Ports served by exactly the same addresses share a subset.
    let mut groups: BTreeMap<Vec<(AddrKey, bool)>, Vec<PortSpec>> = BTreeMap::new();
    for (port, addrs) in by_port {
        let ports = groups.entry(addrs.into_iter().collect()).or_default();
        ports.extend(port);
    }
    groups
        .into_iter()
        .map(|(set, ports)| {
            let (ready, not_ready): (Vec<_>, Vec<_>) = set.into_iter().partition(|(_, r)| *r);
            let pick = |v: Vec<(AddrKey, bool)>| {
                nonempty(
                    v.into_iter()
                        .filter_map(|(k, _)| addresses.get(&k).cloned())
                        .collect(),
                )
            };
            EndpointSubset {
                addresses: pick(ready),
                not_ready_addresses: pick(not_ready),
                ports: nonempty(ports.iter().map(PortSpec::core).collect()),
            }
        })
        .collect()
}

/// Cuts subsets down to [`MAX_ENDPOINTS`] addresses as upstream does: not-ready ones go
/// first; each subset keeps its share. Says whether anything was cut.
pub fn truncate(subsets: &mut [EndpointSubset]) -> bool {
    let count = |v: &Option<Vec<EndpointAddress>>| v.as_ref().map_or(0, Vec::len);
    let ready: usize = subsets.iter().map(|s| count(&s.addresses)).sum();
    let not_ready: usize = subsets.iter().map(|s| count(&s.not_ready_addresses)).sum();
    if ready + not_ready <= MAX_ENDPOINTS {
        return false;
    }
    let cut_ready = ready > MAX_ENDPOINTS;
    let (room, total) = if cut_ready {
        (MAX_ENDPOINTS, ready)
    } else {
        (MAX_ENDPOINTS - ready, not_ready)
    };
    let mut left = room;
    for s in subsets.iter_mut() {
        let list = if cut_ready {
            s.not_ready_addresses = None;
            &mut s.addresses
        } else {
            &mut s.not_ready_addresses
        };
        let n = count(list);
        let share = (n * room).div_ceil(total.max(1)).min(left);
        left -= share;
        if let Some(v) = list.as_mut() {
            v.truncate(share);
        }
        if list.as_ref().is_some_and(Vec::is_empty) {
            *list = None;
        }
    }
    true
}

fn normalized(subsets: Option<&Vec<EndpointSubset>>) -> Vec<EndpointSubset> {
    subsets
        .into_iter()
        .flatten()
        .map(|s| EndpointSubset {
            addresses: s.addresses.clone().filter(|v| !v.is_empty()),
            not_ready_addresses: s.not_ready_addresses.clone().filter(|v| !v.is_empty()),
            ports: s.ports.clone().filter(|v| !v.is_empty()),
        })
        .collect()
}

/// The labels of a Service's Endpoints: the Service's, plus the headless mark.
fn endpoints_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    if ip_set(svc) {
        labels.remove(HEADLESS);
    } else {
        labels.insert(HEADLESS.into(), String::new());
    }
    labels
}

/// The labels of a Service's slices: the Service's (less the reserved ones), the headless
/// mark, the Service's name and this controller's.
fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = svc
        .metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| ![SERVICE_NAME, MANAGED_BY, HEADLESS].contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !ip_set(svc) {
        labels.insert(HEADLESS.into(), String::new());
    }
    labels.insert(SERVICE_NAME.into(), svc.name_any());
    labels.insert(MANAGED_BY.into(), CONTROLLER_NAME.into());
    labels
}

/// A merge patch of a string map: keys of `set` take their value (`None` removes them);
/// with `only`, the keys of `from` not in `set` are removed too. A map left empty is
/// removed whole, so no empty map stays behind.
fn map_patch(
    from: Option<&BTreeMap<String, String>>,
    set: &BTreeMap<String, Option<String>>,
    only: bool,
) -> Value {
    let mut result: BTreeMap<&str, &str> = if only {
        BTreeMap::new()
    } else {
        from.into_iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    };
    for (k, v) in set {
        match v {
            Some(v) => result.insert(k, v),
            None => result.remove(k.as_str()),
        };
    }
    if result.is_empty() {
        return Value::Null;
    }
    let mut m: Map<String, Value> = set
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().map_or(Value::Null, Value::String)))
        .collect();
    if only {
        for k in from.into_iter().flatten().map(|(k, _)| k) {
            if !set.contains_key(k) {
                m.insert(k.clone(), Value::Null);
            }
        }
    }
    Value::Object(m)
}

fn all_set(labels: &BTreeMap<String, String>) -> BTreeMap<String, Option<String>> {
    labels
        .iter()
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect()
}

/// RFC 3339 with as many fractional digits as needed (Go's RFC3339Nano), UTC.
fn rfc3339_nano(t: jiff::Timestamp) -> String {
    t.to_string()
}

fn earliest(times: impl Iterator<Item = Option<jiff::Timestamp>>) -> Option<jiff::Timestamp> {
    times.flatten().min()
}

fn service_created(svc: &Service) -> Option<jiff::Timestamp> {
    svc.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

fn json_of<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn endpoints_action(svc: &Service, pods: &[&Pod], current: Option<&Endpoints>) -> Option<Action> {
    let mut subsets = subsets(svc, pods);
    let truncated = truncate(&mut subsets);
    let labels = endpoints_labels(svc);
    let old = normalized(current.and_then(|e| e.subsets.as_ref()));
    if let Some(cur) = current {
        let cur_truncated = cur.annotations().contains_key(OVER_CAPACITY);
        let cur_labels = cur.metadata.labels.clone().unwrap_or_default();
        if old == subsets && cur_labels == labels && cur_truncated == truncated {
            return None;
        }
    }
    // The change was triggered by the earliest of: pods whose address is new or whose
    // readiness flipped, and the Service itself when its Endpoints are new.
    let state = |subsets: &[EndpointSubset]| {
        let mut m: HashMap<AddrKey, bool> = HashMap::new();
        for s in subsets {
            for a in s.addresses.iter().flatten() {
                m.insert(addr_key(a), true);
            }
            for a in s.not_ready_addresses.iter().flatten() {
                m.insert(addr_key(a), false);
            }
        }
        m
    };
    let (before, after) = (state(&old), state(&subsets));
    let by_uid: HashMap<&str, &Pod> = pods
        .iter()
        .filter_map(|p| Some((p.metadata.uid.as_deref()?, *p)))
        .collect();
    let changed = after
        .iter()
        .filter(|(k, ready)| before.get(*k) != Some(*ready))
        .filter_map(|((_, uid), _)| by_uid.get(uid.as_str()).map(|p| trigger_of(p)));
    let created = current.is_none().then(|| service_created(svc)).flatten();
    let trigger = earliest(changed.chain(std::iter::once(created)));
    let subsets_json = nonempty(subsets).map(|s| json_of(&s));
    match current {
        None => {
            let mut meta = json!({"name": svc.name_any(), "namespace": svc.namespace()});
            if !labels.is_empty() {
                meta["labels"] = json!(labels);
            }
            let mut annotations = Map::new();
            if let Some(t) = trigger {
                annotations.insert(TRIGGER_TIME.into(), rfc3339_nano(t).into());
            }
            if truncated {
                annotations.insert(OVER_CAPACITY.into(), "truncated".into());
            }
            if !annotations.is_empty() {
                meta["annotations"] = Value::Object(annotations);
            }
            let mut body = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": meta});
            if let Some(s) = subsets_json {
                body["subsets"] = s;
            }
            Some(Action::CreateEndpoints(body))
        }
        Some(cur) => Some(Action::UpdateEndpoints(json!({
            "metadata": {
                "resourceVersion": cur.metadata.resource_version,
                "labels": map_patch(cur.metadata.labels.as_ref(), &all_set(&labels), true),
                "annotations": map_patch(
                    cur.metadata.annotations.as_ref(),
                    &BTreeMap::from([
                        (TRIGGER_TIME.to_string(), trigger.map(rfc3339_nano)),
                        (OVER_CAPACITY.to_string(), truncated.then(|| "truncated".to_string())),
                    ]),
                    false,
                ),
            },
            "subsets": subsets_json,
        }))),
    }
}

/// An endpoint's identity in slices: its first address and its pod's uid.
type EpKey = (String, String);

fn ep_key(e: &Endpoint) -> EpKey {
    (
        e.addresses.first().cloned().unwrap_or_default(),
        e.target_ref
            .as_ref()
            .and_then(|r| r.uid.clone())
            .unwrap_or_default(),
    )
}

/// A pod as a slice endpoint: ready (serving and not terminating, or always when the
/// Service publishes not-ready addresses), serving (ready), terminating (being deleted).
fn slice_endpoint(
    svc: &Service,
    pod: &Pod,
    ip: String,
    zones: &BTreeMap<String, String>,
) -> Endpoint {
    let publish = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let serving = is_ready(pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty());
    Endpoint {
        addresses: vec![ip],
        conditions: Some(EndpointConditions {
            ready: Some(publish || (serving && !terminating)),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname: hostname(pod, svc),
        zone: node.as_ref().and_then(|n| zones.get(n).cloned()),
        node_name: node,
        target_ref: Some(pod_ref(pod)),
        ..Default::default()
    }
}

/// The endpoints one slice should hold, grouped by the (sorted) ports they serve.
struct Wanted {
    ports: Vec<PortSpec>,
    endpoints: BTreeMap<EpKey, Endpoint>,
}

/// An existing slice and what it will hold.
struct Plan<'a> {
    slice: &'a EndpointSlice,
    key: Vec<PortSpec>,
    endpoints: Vec<Endpoint>,
    changed: bool,
}

fn sorted(mut ports: Vec<PortSpec>) -> Vec<PortSpec> {
    ports.sort();
    ports
}

fn owned_by(slice: &EndpointSlice, svc: &Service) -> bool {
    driver::controller_of(&slice.metadata)
        .is_some_and(|r| Some(&r.uid) == svc.metadata.uid.as_ref() && r.kind == "Service")
}

/// The trigger time of a slice change: the earliest Ready transition of pods whose
/// endpoint is new or changed, and the Service's creation when it has no slice yet.
fn slice_trigger(
    svc: &Service,
    slices: &[&EndpointSlice],
    wanted: &BTreeMap<EpKey, (Endpoint, Option<jiff::Timestamp>)>,
) -> Option<jiff::Timestamp> {
    let before: HashMap<EpKey, &Endpoint> = slices
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .map(|e| (ep_key(e), e))
        .collect();
    let changed = wanted
        .iter()
        .filter(|(k, (e, _))| before.get(*k).is_none_or(|b| b.conditions != e.conditions))
        .map(|(_, (_, t))| *t);
    let created = slices.is_empty().then(|| service_created(svc)).flatten();
    earliest(changed.chain(std::iter::once(created)))
}

fn slice_actions(
    svc: &Service,
    pods: &[&Pod],
    existing: &[&EndpointSlice],
    zones: &BTreeMap<String, String>,
) -> Vec<Action> {
    let mut actions = Vec::new();
    let labels = slice_labels(svc);
    let families = families(svc);
    let prefix = {
        let name = svc.name_any();
        if name.len() < 253 {
            format!("{name}-")
        } else {
            name
        }
    };

    // Slices of another owner or of an address type the Service no longer has go.
    let mut mine: Vec<&EndpointSlice> = Vec::new();
    for s in existing {
        let kept = owned_by(s, svc)
            && families
                .iter()
                .any(|f| f.address_type() == s.address_type.as_str());
        if kept {
            mine.push(s);
        } else {
            actions.push(Action::DeleteSlice {
                name: s.name_any(),
                uid: s.metadata.uid.clone().unwrap_or_default(),
            });
        }
    }
    mine.sort_by_key(|s| s.name_any());

    // Every endpoint wanted, with its pod's trigger time, for the annotation.
    let mut per_family: Vec<(Family, BTreeMap<Vec<PortSpec>, Wanted>)> = Vec::new();
    let mut all: BTreeMap<EpKey, (Endpoint, Option<jiff::Timestamp>)> = BTreeMap::new();
    for &family in &families {
        let mut wanted: BTreeMap<Vec<PortSpec>, Wanted> = BTreeMap::new();
        for pod in pods.iter().filter(|p| !is_terminal(p)) {
            let Some(ip) = pod_ip(pod, family) else {
                continue;
            };
            let ep = slice_endpoint(svc, pod, ip, zones);
            let ports = pod_ports(svc, pod);
            let key = ep_key(&ep);
            all.insert(key.clone(), (ep.clone(), trigger_of(pod)));
            wanted
                .entry(sorted(ports.clone()))
                .or_insert_with(|| Wanted {
                    ports,
                    endpoints: BTreeMap::new(),
                })
                .endpoints
                .insert(key, ep);
        }
        per_family.push((family, wanted));
    }
    let trigger = slice_trigger(svc, &mine, &all).map(rfc3339_nano);

    for (family, mut wanted) in per_family {
        let address_type = family.address_type();
        let mut plans: Vec<Plan<'_>> = Vec::new();
        let mut doomed: Vec<&EndpointSlice> = Vec::new();
        for s in mine.iter().filter(|s| s.address_type == address_type) {
            let key = sorted(s.ports.iter().flatten().map(PortSpec::of_slice).collect());
            let Some(w) = wanted.get_mut(&key) else {
                doomed.push(s);
                continue;
            };
            let mut changed = s.metadata.labels.as_ref() != Some(&labels);
            let mut endpoints = Vec::new();
            for e in s.endpoints.iter().flatten() {
                match w.endpoints.remove(&ep_key(e)) {
                    Some(want) => {
                        changed |= want != *e;
                        endpoints.push(want);
                    }
                    None => changed = true,
                }
            }
            plans.push(Plan {
                slice: s,
                key,
                endpoints,
                changed,
            });
        }

        // Place the endpoints not in any slice yet: first in slices changing anyway,
        // then all in one unchanged slice if they fit, then in new slices.
        let mut creates: Vec<(Vec<PortSpec>, Vec<Endpoint>)> = Vec::new();
        for (key, w) in wanted {
            let mut rest: Vec<Endpoint> = w.endpoints.into_values().collect();
            for p in plans.iter_mut().filter(|p| p.key == key && p.changed) {
                let room = MAX_PER_SLICE
                    .saturating_sub(p.endpoints.len())
                    .min(rest.len());
                p.endpoints.extend(rest.drain(..room));
            }
            if !rest.is_empty() {
                let fits = plans.iter_mut().find(|p| {
                    p.key == key && MAX_PER_SLICE.saturating_sub(p.endpoints.len()) >= rest.len()
                });
                if let Some(p) = fits {
                    p.endpoints.append(&mut rest);
                    p.changed = true;
                }
            }
            for chunk in rest.chunks(MAX_PER_SLICE) {
                creates.push((w.ports.clone(), chunk.to_vec()));
            }
        }

        let mut emptied = Vec::new();
        let mut remaining = 0;
        for p in plans {
            if p.endpoints.is_empty() {
                emptied.push(p.slice);
            } else {
                remaining += 1;
                if p.changed {
                    actions.push(update_slice(
                        p.slice,
                        &labels,
                        &p.key,
                        &p.endpoints,
                        &trigger,
                    ));
                }
            }
        }
        doomed.extend(emptied);

        // A Service with no endpoint of this type keeps one empty slice (upstream's
        // placeholder); an existing slice becomes it rather than being recreated.
        if remaining == 0 && creates.is_empty() {
            doomed.sort_by_key(|s| {
                let placeholder = s.endpoints.as_ref().is_none_or(Vec::is_empty)
                    && s.ports.as_ref().is_none_or(Vec::is_empty)
                    && s.metadata.labels.as_ref() == Some(&labels);
                (!placeholder, s.name_any())
            });
            if doomed.is_empty() {
                actions.push(new_slice(
                    svc,
                    &prefix,
                    &labels,
                    address_type,
                    &[],
                    &[],
                    &None,
                ));
            } else {
                let keep = doomed.remove(0);
                let already = keep.endpoints.as_ref().is_none_or(Vec::is_empty)
                    && keep.ports.as_ref().is_none_or(Vec::is_empty)
                    && keep.metadata.labels.as_ref() == Some(&labels);
                if !already {
                    actions.push(update_slice(keep, &labels, &[], &[], &trigger));
                }
            }
        }
        for s in doomed {
            actions.push(Action::DeleteSlice {
                name: s.name_any(),
                uid: s.metadata.uid.clone().unwrap_or_default(),
            });
        }
        for (ports, endpoints) in creates {
            actions.push(new_slice(
                svc,
                &prefix,
                &labels,
                address_type,
                &ports,
                &endpoints,
                &trigger,
            ));
        }
    }
    actions
}

fn update_slice(
    slice: &EndpointSlice,
    labels: &BTreeMap<String, String>,
    ports: &[PortSpec],
    endpoints: &[Endpoint],
    trigger: &Option<String>,
) -> Action {
    // Keep the slice's own port order when the set is unchanged.
    let current: Vec<PortSpec> = slice
        .ports
        .iter()
        .flatten()
        .map(PortSpec::of_slice)
        .collect();
    let ports: Vec<SlicePort> = if sorted(current.clone()) == ports {
        current.iter().map(PortSpec::slice).collect()
    } else {
        ports.iter().map(PortSpec::slice).collect()
    };
    Action::UpdateSlice {
        name: slice.name_any(),
        patch: json!({
            "metadata": {
                "resourceVersion": slice.metadata.resource_version,
                "labels": map_patch(slice.metadata.labels.as_ref(), &all_set(labels), true),
                "annotations": map_patch(
                    slice.metadata.annotations.as_ref(),
                    &BTreeMap::from([(TRIGGER_TIME.to_string(), trigger.clone())]),
                    false,
                ),
            },
            "endpoints": json_of(&endpoints),
            "ports": nonempty(ports).map(|p| json_of(&p)),
        }),
    }
}

fn new_slice(
    svc: &Service,
    prefix: &str,
    labels: &BTreeMap<String, String>,
    address_type: &str,
    ports: &[PortSpec],
    endpoints: &[Endpoint],
    trigger: &Option<String>,
) -> Action {
    let mut meta = json!({
        "generateName": prefix,
        "namespace": svc.namespace(),
        "labels": labels,
        "ownerReferences": [controller_ref(svc)],
    });
    if let Some(t) = trigger {
        meta["annotations"] = json!({ TRIGGER_TIME: t });
    }
    let mut body = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": meta,
        "addressType": address_type,
        "endpoints": json_of(&endpoints),
    });
    if !ports.is_empty() {
        body["ports"] = json_of(&ports.iter().map(PortSpec::slice).collect::<Vec<_>>());
    }
    Action::CreateSlice(body)
}

/// Decides one sync of the Service named by the key: `svc` is `None` when it is gone.
pub fn reconcile(svc: Option<&Service>, observed: &Observed<'_>) -> Vec<Action> {
    let Some(svc) = svc else {
        return observed
            .endpoints
            .map(|e| Action::DeleteEndpoints {
                uid: e.metadata.uid.clone().unwrap_or_default(),
            })
            .into_iter()
            .collect();
    };
    let Some(sel) = selector(svc) else {
        return Vec::new();
    };
    let mut pods: Vec<&Pod> = observed
        .pods
        .iter()
        .map(Arc::as_ref)
        .filter(|p| p.metadata.namespace == svc.metadata.namespace)
        .filter(|p| selects(sel, p.metadata.labels.as_ref()))
        .filter(|p| has_ip(p))
        .collect();
    pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut actions: Vec<Action> = endpoints_action(svc, &pods, observed.endpoints)
        .into_iter()
        .collect();
    let slices: Vec<&EndpointSlice> = observed.slices.iter().map(Arc::as_ref).collect();
    actions.extend(slice_actions(svc, &pods, &slices, observed.zones));
    actions
}

/// Whether a pod change can change any Endpoints or slice.
fn relevant_change(old: &Pod, new: &Pod) -> bool {
    old.metadata.labels != new.metadata.labels || facts(old) != facts(new)
}

/// What of a pod, besides its labels, its endpoints are made of.
type Facts<'a> = (
    bool,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a Vec<k8s_openapi::api::core::v1::PodIP>>,
    bool,
    [Option<&'a str>; 3],
);

fn facts(p: &Pod) -> Facts<'_> {
    let spec = p.spec.as_ref();
    let status = p.status.as_ref();
    (
        p.metadata.deletion_timestamp.is_some(),
        status.and_then(|s| s.phase.as_deref()),
        status.and_then(|s| s.pod_ip.as_deref()),
        status.and_then(|s| s.pod_ips.as_ref()),
        is_ready(p),
        [
            spec.and_then(|s| s.node_name.as_deref()),
            spec.and_then(|s| s.hostname.as_deref()),
            spec.and_then(|s| s.subdomain.as_deref()),
        ],
    )
}

/// Registers the controller's hooks and returns its workers (5, upstream's count).
pub fn start(ctx: &super::Context) -> super::Workers {
    let queue = Queue::new();
    let controller = EndpointsController::new(
        ctx.caches.clone(),
        ctx.effects.clone(),
        ctx.recorder("endpoint-controller"),
        ctx.recorder("endpoint-slice-controller"),
    );
    controller.watch(&queue);
    ctx.workers(controller, queue, 5)
}

#[derive(Default)]
struct Index {
    /// The last version of each pod seen, by namespace and name (shared with the cache).
    pods: HashMap<String, HashMap<String, Arc<Pod>>>,
    /// Selectors of the Services that have one, by namespace and name.
    selectors: HashMap<String, BTreeMap<String, BTreeMap<String, String>>>,
    /// The resourceVersion of the last write of each slice, by namespace and name.
    written: HashMap<(String, String), String>,
}

/// The controller: caches in, API calls out.
pub struct EndpointsController {
    caches: Arc<Caches>,
    effects: Arc<dyn Effects>,
    endpoint_events: Arc<Recorder>,
    slice_events: Arc<Recorder>,
    index: Mutex<Index>,
    settle: Duration,
}

fn newer_or_same(have: Option<&str>, want: &str) -> bool {
    match (
        have.and_then(|h| h.parse::<u64>().ok()),
        want.parse::<u64>().ok(),
    ) {
        (Some(h), Some(w)) => h >= w,
        _ => have == Some(want),
    }
}

fn rv_of(v: &Value) -> String {
    v.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn name_of(v: &Value) -> String {
    v.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

impl EndpointsController {
    /// A controller over `caches`, writing through `effects`.
    pub fn new(
        caches: Arc<Caches>,
        effects: Arc<dyn Effects>,
        endpoint_events: Arc<Recorder>,
        slice_events: Arc<Recorder>,
    ) -> Arc<Self> {
        Arc::new(EndpointsController {
            caches,
            effects,
            endpoint_events,
            slice_events,
            index: Mutex::new(Index::default()),
            settle: SETTLE,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers the cache hooks that fill `queue`: Services, the pods they select
    /// (before and after a change), deleted Endpoints, and managed slices changed or
    /// deleted by someone else.
    pub fn watch(self: &Arc<Self>, queue: &Arc<Queue<Key>>) {
        let (me, q) = (self.clone(), queue.clone());
        self.caches
            .services
            .on_change(Box::new(move |svc: &Service, change| {
                let key = Key::of(&svc.metadata);
                {
                    let mut idx = me.lock();
                    let sels = idx.selectors.entry(key.namespace.clone()).or_default();
                    match (change, selector(svc)) {
                        (Change::Applied, Some(sel)) => {
                            sels.insert(key.name.clone(), sel.clone());
                        }
                        _ => {
                            sels.remove(&key.name);
                            if sels.is_empty() {
                                idx.selectors.remove(&key.namespace);
                            }
                        }
                    }
                }
                q.add(key);
            }));
        let (me, q) = (self.clone(), queue.clone());
        self.caches
            .pods
            .on_change(Box::new(move |pod: &Pod, change| {
                for key in me.services_of(pod, change) {
                    q.add(key);
                }
            }));
        let q = queue.clone();
        self.caches
            .endpoints
            .on_change(Box::new(move |e: &Endpoints, change| {
                if change == Change::Deleted {
                    q.add(Key::of(&e.metadata));
                }
            }));
        let (me, q) = (self.clone(), queue.clone());
        self.caches
            .endpointslices
            .on_change(Box::new(move |s: &EndpointSlice, change| {
                let labels = s.labels();
                if labels.get(MANAGED_BY).map(String::as_str) != Some(CONTROLLER_NAME) {
                    return;
                }
                let Some(service) = labels.get(SERVICE_NAME) else {
                    return;
                };
                let slice = (s.namespace().unwrap_or_default(), s.name_any());
                let ours = {
                    let mut idx = me.lock();
                    match change {
                        Change::Deleted => {
                            idx.written.remove(&slice);
                            false
                        }
                        Change::Applied => {
                            idx.written.get(&slice) == s.metadata.resource_version.as_ref()
                        }
                    }
                };
                if !ours {
                    q.add(Key {
                        namespace: slice.0,
                        name: service.clone(),
                    });
                }
            }));
    }

    /// The Services a pod change concerns: those of its namespace whose selector picks
    /// the pod's labels before or after the change. Nothing when the change cannot
    /// matter to endpoints.
    pub fn services_of(&self, pod: &Pod, change: Change) -> Vec<Key> {
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let new = match change {
            Change::Applied => Some(
                self.caches
                    .pods
                    .get(&ns, &name)
                    .filter(|p| p.metadata.uid == pod.metadata.uid)
                    .unwrap_or_else(|| Arc::new(pod.clone())),
            ),
            Change::Deleted => None,
        };
        let mut idx = self.lock();
        let old = match &new {
            Some(p) => idx
                .pods
                .entry(ns.clone())
                .or_default()
                .insert(name, p.clone()),
            None => {
                let pods = idx.pods.get_mut(&ns);
                let old = pods.and_then(|m| m.remove(&name));
                if idx.pods.get(&ns).is_some_and(HashMap::is_empty) {
                    idx.pods.remove(&ns);
                }
                old
            }
        };
        if let (Some(o), Some(n)) = (&old, &new) {
            if Arc::ptr_eq(o, n) || !relevant_change(o, n) {
                return Vec::new();
            }
        }
        let Some(sels) = idx.selectors.get(&ns) else {
            return Vec::new();
        };
        let before = old.as_ref().and_then(|p| p.metadata.labels.as_ref());
        let after = match &new {
            Some(p) => p.metadata.labels.as_ref(),
            None => pod.metadata.labels.as_ref(),
        };
        sels.iter()
            .filter(|(_, sel)| selects(sel, before) || selects(sel, after))
            .map(|(svc, _)| Key {
                namespace: ns.clone(),
                name: svc.clone(),
            })
            .collect()
    }

    async fn sync_one(&self, key: &Key) -> driver::Result<Next> {
        let (ns, name) = (key.namespace.as_str(), key.name.as_str());
        let svc = self.caches.services.get(ns, name);
        let endpoints = self.caches.endpoints.get(ns, name);
        let pods: Vec<Arc<Pod>> = match svc.as_deref().and_then(selector) {
            Some(sel) => self.caches.pods.store().state_filter(|p| {
                p.metadata.namespace.as_deref() == Some(ns)
                    && selects(sel, p.metadata.labels.as_ref())
            }),
            None => Vec::new(),
        };
        let slices: Vec<Arc<EndpointSlice>> = if svc.is_some() {
            self.caches.endpointslices.store().state_filter(|s| {
                let labels = s.labels();
                s.metadata.namespace.as_deref() == Some(ns)
                    && labels.get(SERVICE_NAME).map(String::as_str) == Some(name)
                    && labels.get(MANAGED_BY).map(String::as_str) == Some(CONTROLLER_NAME)
            })
        } else {
            Vec::new()
        };
        let nodes: BTreeSet<&str> = pods
            .iter()
            .filter_map(|p| p.spec.as_ref()?.node_name.as_deref())
            .collect();
        let zones: BTreeMap<String, String> = nodes
            .into_iter()
            .filter_map(|n| {
                let node = self.caches.nodes.get("", n)?;
                Some((n.to_string(), node.labels().get(ZONE)?.clone()))
            })
            .collect();
        let actions = reconcile(
            svc.as_deref(),
            &Observed {
                pods: &pods,
                endpoints: endpoints.as_deref(),
                slices: &slices,
                zones: &zones,
            },
        );
        self.apply(key, svc.as_deref(), actions).await
    }

    /// Carries out `actions`. A write that lost a race looks again shortly; other
    /// failures are reported as Warning events on the Service and retried with backoff.
    pub async fn apply(
        &self,
        key: &Key,
        svc: Option<&Service>,
        actions: Vec<Action>,
    ) -> driver::Result<Next> {
        let ns = key.namespace.as_str();
        let (ep_kind, slice_kind) = (Kind::of::<Endpoints>(true), Kind::of::<EndpointSlice>(true));
        let mut next = Next::Done;
        let mut failed: Option<driver::Error> = None;
        let mut slice_failure: Option<String> = None;
        for action in actions {
            match action {
                Action::CreateEndpoints(body) => {
                    match self.effects.create(&ep_kind, ns, body).await {
                        Ok(made) => self.settle_endpoints(ns, &key.name, &rv_of(&made)).await,
                        // Someone made it meanwhile; the cache will show it.
                        Err(e) if code(&e) == Some(409) => next = next.min(Next::After(RETRY)),
                        // The namespace is going away.
                        Err(e) if code(&e) == Some(403) || code(&e) == Some(404) => {}
                        Err(e) => {
                            if let Some(svc) = svc {
                                let msg = format!(
                                    "Failed to create endpoint for service {ns}/{}: {}",
                                    key.name,
                                    driver::api_message(&e)
                                );
                                self.endpoint_events
                                    .record(
                                        &reference(svc),
                                        EventType::Warning,
                                        "FailedToCreateEndpoint",
                                        &msg,
                                    )
                                    .await;
                            }
                            failed = Some(driver::api_error("create", &ep_kind, ns, &key.name)(e));
                        }
                    }
                }
                Action::UpdateEndpoints(patch) => {
                    match self
                        .effects
                        .merge_patch(&ep_kind, ns, &key.name, patch)
                        .await
                    {
                        Ok(done) => self.settle_endpoints(ns, &key.name, &rv_of(&done)).await,
                        Err(e) if code(&e) == Some(409) => next = next.min(Next::After(RETRY)),
                        // Deleted meanwhile: its deletion brings us back.
                        Err(e) if code(&e) == Some(404) => {}
                        Err(e) => {
                            if let Some(svc) = svc {
                                let msg = format!(
                                    "Failed to update endpoint {ns}/{}: {}",
                                    key.name,
                                    driver::api_message(&e)
                                );
                                self.endpoint_events
                                    .record(
                                        &reference(svc),
                                        EventType::Warning,
                                        "FailedToUpdateEndpoint",
                                        &msg,
                                    )
                                    .await;
                            }
                            failed = Some(driver::api_error("update", &ep_kind, ns, &key.name)(e));
                        }
                    }
                }
                Action::DeleteEndpoints { uid } => {
                    match self
                        .effects
                        .delete(&ep_kind, ns, &key.name, Some(&uid), None)
                        .await
                    {
                        Ok(()) => {}
                        Err(e) if code(&e) == Some(404) || code(&e) == Some(409) => {}
                        Err(e) => {
                            failed = Some(driver::api_error("delete", &ep_kind, ns, &key.name)(e))
                        }
                    }
                }
                Action::CreateSlice(body) => match self.effects.create(&slice_kind, ns, body).await
                {
                    Ok(made) => self.settle_slice(ns, &name_of(&made), &rv_of(&made)).await,
                    Err(e) if code(&e) == Some(403) || code(&e) == Some(404) => {}
                    Err(e) => {
                        slice_failure = Some(driver::api_message(&e));
                        failed = Some(driver::api_error("create", &slice_kind, ns, &key.name)(e));
                    }
                },
                Action::UpdateSlice { name, patch } => {
                    match self
                        .effects
                        .merge_patch(&slice_kind, ns, &name, patch)
                        .await
                    {
                        Ok(done) => self.settle_slice(ns, &name, &rv_of(&done)).await,
                        Err(e) if code(&e) == Some(409) => next = next.min(Next::After(RETRY)),
                        Err(e) if code(&e) == Some(404) => {}
                        Err(e) => {
                            slice_failure = Some(driver::api_message(&e));
                            failed = Some(driver::api_error("update", &slice_kind, ns, &name)(e));
                        }
                    }
                }
                Action::DeleteSlice { name, uid } => {
                    match self
                        .effects
                        .delete(&slice_kind, ns, &name, Some(&uid), None)
                        .await
                    {
                        Ok(()) => {
                            self.caches
                                .endpointslices
                                .wait_for(
                                    |c| {
                                        c.get(ns, &name)
                                            .is_none_or(|s| s.metadata.uid.as_deref() != Some(&uid))
                                    },
                                    self.settle,
                                )
                                .await;
                        }
                        Err(e) if code(&e) == Some(404) || code(&e) == Some(409) => {}
                        Err(e) => {
                            slice_failure = Some(driver::api_message(&e));
                            failed = Some(driver::api_error("delete", &slice_kind, ns, &name)(e));
                        }
                    }
                }
            }
        }
        if let (Some(msg), Some(svc)) = (slice_failure, svc) {
            let msg = format!(
                "Error updating Endpoint Slices for Service {ns}/{}: {msg}",
                key.name
            );
            self.slice_events
                .record(
                    &reference(svc),
                    EventType::Warning,
                    "FailedToUpdateEndpointSlices",
                    &msg,
                )
                .await;
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(next),
        }
    }

    async fn settle_endpoints(&self, ns: &str, name: &str, rv: &str) {
        self.caches
            .endpoints
            .wait_for(
                |c| {
                    c.get(ns, name)
                        .is_some_and(|e| newer_or_same(e.metadata.resource_version.as_deref(), rv))
                },
                self.settle,
            )
            .await;
    }

    async fn settle_slice(&self, ns: &str, name: &str, rv: &str) {
        self.lock()
            .written
            .insert((ns.to_string(), name.to_string()), rv.to_string());
        self.caches
            .endpointslices
            .wait_for(
                |c| {
                    c.get(ns, name)
                        .is_some_and(|s| newer_or_same(s.metadata.resource_version.as_deref(), rv))
                },
                self.settle,
            )
            .await;
    }
}

impl Reconciler for EndpointsController {
    type Key = Key;

    fn name(&self) -> &'static str {
        "endpoints"
    }

    fn sync<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, driver::Result<Next>> {
        Box::pin(self.sync_one(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::driver::tests::{FixedClock, Recording};
    use crate::controllers::driver::Cache;
    use futures::stream;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, Node, PodCondition, PodIP, PodSpec, PodStatus, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use kube::runtime::watcher;

    fn t(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn labels(kv: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn svc(name: &str, app: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("svc-{name}")),
                labels: labels(&[("team", "blue")]),
                creation_timestamp: Some(Time(t(0))),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: labels(&[("app", app)]),
                cluster_ip: Some("10.43.0.5".into()),
                ip_families: Some(vec!["IPv4".into()]),
                ports: Some(vec![ServicePort {
                    name: Some("web".into()),
                    port: 80,
                    protocol: Some("TCP".into()),
                    target_port: Some(IntOrString::String("http".into())),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// A pod of app `web` on `node` at `ip` (none when empty), serving `http` on `port`,
    /// ready since `ready` if any.
    fn pod(name: &str, ip: &str, node: &str, port: i32, ready: Option<i64>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("u-{name}")),
                labels: labels(&[("app", "web")]),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some(node.into()),
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some("http".into()),
                        container_port: port,
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: (!ip.is_empty()).then(|| ip.to_string()),
                pod_ips: (!ip.is_empty()).then(|| vec![PodIP { ip: ip.into() }]),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready.is_some() { "True" } else { "False" }.into(),
                    last_transition_time: Some(Time(t(ready.unwrap_or(1)))),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn arcs(pods: Vec<Pod>) -> Vec<Arc<Pod>> {
        pods.into_iter().map(Arc::new).collect()
    }

    fn decide(
        svc: Option<&Service>,
        pods: &[Arc<Pod>],
        endpoints: Option<&Endpoints>,
        slices: &[Arc<EndpointSlice>],
    ) -> Vec<Action> {
        let zones = [("n1".to_string(), "zone-a".to_string())].into();
        reconcile(
            svc,
            &Observed {
                pods,
                endpoints,
                slices,
                zones: &zones,
            },
        )
    }

    fn created_endpoints(actions: &[Action]) -> Endpoints {
        let body = actions
            .iter()
            .find_map(|a| match a {
                Action::CreateEndpoints(b) => Some(b.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{actions:#?}"));
        let mut e: Endpoints = serde_json::from_value(body).unwrap();
        e.metadata.uid = Some("ep-uid".into());
        e.metadata.resource_version = Some("5".into());
        e
    }

    fn ips(list: &Option<Vec<EndpointAddress>>) -> Vec<&str> {
        list.iter().flatten().map(|a| a.ip.as_str()).collect()
    }

    #[test]
    fn endpoints_list_ready_and_not_ready_pods_grouped_by_ports() {
        let mut finished = pod("finished", "10.0.0.9", "n1", 8080, Some(1));
        finished.status.as_mut().unwrap().phase = Some("Succeeded".into());
        let mut deleting = pod("deleting", "10.0.0.8", "n1", 8080, Some(1));
        deleting.metadata.deletion_timestamp = Some(Time(t(5)));
        let mut unnamed = pod("unnamed", "10.0.0.7", "n1", 8080, Some(1));
        unnamed.spec.as_mut().unwrap().containers[0]
            .ports
            .as_mut()
            .unwrap()[0]
            .name = None;
        let mut other_app = pod("other", "10.0.0.6", "n1", 8080, Some(1));
        other_app.metadata.labels = labels(&[("app", "api")]);
        let pods = arcs(vec![
            pod("b", "10.0.0.2", "n1", 8080, Some(7)),
            pod("a", "10.0.0.1", "n2", 8080, None),
            pod("c", "10.0.0.3", "n2", 9090, Some(3)),
            pod("no-ip", "", "n1", 8080, None),
            finished,
            deleting,
            unnamed,
            other_app,
        ]);
        let s = svc("web", "web");
        let actions = decide(Some(&s), &pods, None, &[]);
        let e = created_endpoints(&actions);
        assert_eq!(e.metadata.name.as_deref(), Some("web"));
        assert_eq!(e.metadata.labels, labels(&[("team", "blue")]));
        // The earliest change: the Service's creation, its Endpoints being new.
        assert_eq!(
            e.annotations().get(TRIGGER_TIME).map(String::as_str),
            Some("2023-11-14T22:13:20Z")
        );
        let subsets = e.subsets.unwrap();
        assert_eq!(subsets.len(), 2, "{subsets:#?}");
        let on = |port: i32| {
            subsets
                .iter()
                .find(|s| s.ports.as_ref().unwrap()[0].port == port)
                .unwrap()
        };
        assert_eq!(ips(&on(8080).addresses), ["10.0.0.2"]);
        assert_eq!(ips(&on(8080).not_ready_addresses), ["10.0.0.1"]);
        assert_eq!(ips(&on(9090).addresses), ["10.0.0.3"]);
        let port = &on(8080).ports.as_ref().unwrap()[0];
        assert_eq!(
            (port.name.as_deref(), port.protocol.as_deref()),
            (Some("web"), Some("TCP"))
        );
        let a = &on(8080).addresses.as_ref().unwrap()[0];
        assert_eq!(a.node_name.as_deref(), Some("n1"));
        let r = a.target_ref.as_ref().unwrap();
        assert_eq!(
            (r.kind.as_deref(), r.name.as_deref(), r.uid.as_deref()),
            (Some("Pod"), Some("b"), Some("u-b"))
        );
        assert_eq!(a.hostname, None);
    }

    #[test]
    fn not_ready_addresses_are_published_when_asked_and_headless_services_are_marked() {
        let mut s = svc("web", "web");
        let spec = s.spec.as_mut().unwrap();
        spec.publish_not_ready_addresses = Some(true);
        spec.cluster_ip = Some("None".into());
        spec.ports = None;
        let mut named = pod("a", "10.0.0.1", "n1", 8080, None);
        let pspec = named.spec.as_mut().unwrap();
        pspec.hostname = Some("a-host".into());
        pspec.subdomain = Some("web".into());
        let mut deleting = pod("b", "10.0.0.2", "n1", 8080, Some(1));
        deleting.metadata.deletion_timestamp = Some(Time(t(5)));
        let pods = arcs(vec![named, deleting]);
        let e = created_endpoints(&decide(Some(&s), &pods, None, &[]));
        assert_eq!(e.labels().get(HEADLESS).map(String::as_str), Some(""));
        let subsets = e.subsets.unwrap();
        assert_eq!(subsets.len(), 1);
        assert_eq!(ips(&subsets[0].addresses), ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(subsets[0].ports, None);
        assert_eq!(
            subsets[0].addresses.as_ref().unwrap()[0]
                .hostname
                .as_deref(),
            Some("a-host")
        );
    }

    #[test]
    fn endpoints_are_updated_only_when_they_change() {
        let s = svc("web", "web");
        let mut pods = arcs(vec![
            pod("a", "10.0.0.1", "n1", 8080, Some(4)),
            pod("b", "10.0.0.2", "n1", 8080, None),
        ]);
        let e = created_endpoints(&decide(Some(&s), &pods, None, &[]));
        let same = decide(Some(&s), &pods, Some(&e), &[]);
        assert!(
            !same.iter().any(|a| matches!(a, Action::UpdateEndpoints(_))),
            "{same:#?}"
        );
        // "b" turns ready at 9: it is the change, and its time the trigger.
        pods[1] = Arc::new(pod("b", "10.0.0.2", "n1", 8080, Some(9)));
        let actions = decide(Some(&s), &pods, Some(&e), &[]);
        let Some(Action::UpdateEndpoints(patch)) = actions.first() else {
            panic!("{actions:#?}")
        };
        assert_eq!(patch["metadata"]["resourceVersion"], "5");
        assert_eq!(
            patch["metadata"]["annotations"][TRIGGER_TIME],
            "2023-11-14T22:13:29Z"
        );
        assert_eq!(patch["metadata"]["annotations"][OVER_CAPACITY], Value::Null);
        assert_eq!(patch["subsets"][0]["addresses"][1]["ip"], "10.0.0.2");
        // Only a pod going away: no trigger time, the annotation goes (and with it the
        // map it was alone in).
        let actions = decide(Some(&s), &pods[..1], Some(&e), &[]);
        let Some(Action::UpdateEndpoints(patch)) = actions.first() else {
            panic!("{actions:#?}")
        };
        assert_eq!(patch["metadata"]["annotations"], Value::Null);
        let mut noted = e.clone();
        noted
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert("note".into(), "kept".into());
        let actions = decide(Some(&s), &pods[..1], Some(&noted), &[]);
        let Some(Action::UpdateEndpoints(patch)) = actions.first() else {
            panic!("{actions:#?}")
        };
        assert_eq!(
            patch["metadata"]["annotations"],
            json!({TRIGGER_TIME: null, OVER_CAPACITY: null})
        );
        // New Service labels are copied; removed ones are dropped.
        let mut relabeled = s.clone();
        relabeled.metadata.labels = labels(&[("tier", "front")]);
        let actions = decide(Some(&relabeled), &pods, Some(&e), &[]);
        let Some(Action::UpdateEndpoints(patch)) = actions.first() else {
            panic!("{actions:#?}")
        };
        assert_eq!(
            patch["metadata"]["labels"],
            json!({"tier": "front", "team": null})
        );
    }

    #[test]
    fn a_gone_service_loses_its_endpoints_and_one_without_selector_is_left_alone() {
        let s = svc("web", "web");
        let pods = arcs(vec![pod("a", "10.0.0.1", "n1", 8080, Some(4))]);
        let e = created_endpoints(&decide(Some(&s), &pods, None, &[]));
        assert_eq!(
            decide(None, &pods, Some(&e), &[]),
            [Action::DeleteEndpoints {
                uid: "ep-uid".into()
            }]
        );
        assert_eq!(decide(None, &pods, None, &[]), []);
        let mut manual = s.clone();
        manual.spec.as_mut().unwrap().selector = None;
        assert_eq!(decide(Some(&manual), &pods, Some(&e), &[]), []);
        manual.spec.as_mut().unwrap().selector = Some(BTreeMap::new());
        assert_eq!(decide(Some(&manual), &pods, Some(&e), &[]), []);
    }

    #[test]
    fn endpoints_over_capacity_are_truncated_proportionally() {
        let addr = |i: usize| EndpointAddress {
            ip: format!("10.0.{}.{}", i / 250, i % 250),
            ..Default::default()
        };
        let mut subsets = vec![
            EndpointSubset {
                addresses: Some((0..900).map(addr).collect()),
                not_ready_addresses: Some((900..1000).map(addr).collect()),
                ports: None,
            },
            EndpointSubset {
                addresses: Some((1000..1300).map(addr).collect()),
                ..Default::default()
            },
        ];
        assert!(truncate(&mut subsets));
        let n = |s: &EndpointSubset| s.addresses.as_ref().map_or(0, Vec::len);
        assert_eq!(n(&subsets[0]) + n(&subsets[1]), MAX_ENDPOINTS);
        assert_eq!(subsets[0].not_ready_addresses, None);
        assert_eq!(n(&subsets[0]), 750);
        let mut small = subsets[1..].to_vec();
        assert!(!truncate(&mut small));
    }

    fn created_slices(actions: &[Action]) -> Vec<Value> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::CreateSlice(b) => Some(b.clone()),
                _ => None,
            })
            .collect()
    }

    fn stored(body: &Value, name: &str) -> Arc<EndpointSlice> {
        let mut s: EndpointSlice = serde_json::from_value(body.clone()).unwrap();
        s.metadata.name = Some(name.into());
        s.metadata.uid = Some(format!("uid-{name}"));
        s.metadata.resource_version = Some("9".into());
        Arc::new(s)
    }

    #[test]
    fn slices_hold_at_most_100_endpoints_with_labels_owner_and_conditions() {
        let mut s = svc("web", "web");
        s.metadata.labels = labels(&[("team", "blue"), (SERVICE_NAME, "spoof")]);
        let mut pods: Vec<Pod> = (0..250)
            .map(|i| {
                pod(
                    &format!("p{i:03}"),
                    &format!("10.1.{}.{}", i / 200, i % 200),
                    if i % 2 == 0 { "n1" } else { "n2" },
                    8080,
                    Some(2),
                )
            })
            .collect();
        pods[0].metadata.deletion_timestamp = Some(Time(t(5)));
        let made = created_slices(&decide(Some(&s), &arcs(pods), None, &[]));
        let sizes: Vec<usize> = made
            .iter()
            .map(|b| b["endpoints"].as_array().unwrap().len())
            .collect();
        assert_eq!(sizes, [100, 100, 50]);
        let b = &made[0];
        assert_eq!(b["metadata"]["generateName"], "web-");
        assert_eq!(
            b["metadata"]["labels"],
            json!({
                "team": "blue",
                SERVICE_NAME: "web",
                MANAGED_BY: CONTROLLER_NAME,
            })
        );
        let owner = &b["metadata"]["ownerReferences"][0];
        assert_eq!(
            (
                &owner["kind"],
                &owner["uid"],
                &owner["controller"],
                &owner["blockOwnerDeletion"]
            ),
            (
                &json!("Service"),
                &json!("svc-web"),
                &json!(true),
                &json!(true)
            )
        );
        assert_eq!(b["addressType"], "IPv4");
        assert_eq!(
            b["ports"],
            json!([{"name": "web", "port": 8080, "protocol": "TCP"}])
        );
        let first = &b["endpoints"][0];
        assert_eq!(first["addresses"], json!(["10.1.0.0"]));
        // Being deleted: still serving, terminating, not ready.
        assert_eq!(
            first["conditions"],
            json!({"ready": false, "serving": true, "terminating": true})
        );
        assert_eq!(first["nodeName"], "n1");
        assert_eq!(first["zone"], "zone-a");
        assert_eq!(first["targetRef"]["name"], "p000");
        let second = &b["endpoints"][1];
        assert_eq!(
            second["conditions"],
            json!({"ready": true, "serving": true, "terminating": false})
        );
        assert_eq!(second.get("zone"), None);
    }

    #[test]
    fn slices_are_updated_in_place_down_to_an_empty_placeholder() {
        let s = svc("web", "web");
        let pods = arcs(vec![
            pod("a", "10.0.0.1", "n1", 8080, Some(2)),
            pod("b", "10.0.0.2", "n1", 8080, Some(2)),
            pod("c", "10.0.0.3", "n1", 8080, Some(2)),
        ]);
        let made = created_slices(&decide(Some(&s), &pods, None, &[]));
        assert_eq!(made.len(), 1);
        let slice = stored(&made[0], "web-abcde");
        let slices = [slice.clone()];
        let steady = decide(Some(&s), &pods, None, &slices);
        assert!(
            !steady.iter().any(|a| matches!(
                a,
                Action::CreateSlice(_) | Action::UpdateSlice { .. } | Action::DeleteSlice { .. }
            )),
            "{steady:#?}"
        );
        // Scaled to one: the same slice, one endpoint.
        let actions = decide(Some(&s), &pods[..1], None, &slices);
        let updates: Vec<&Action> = actions
            .iter()
            .filter(|a| !matches!(a, Action::CreateEndpoints(_)))
            .collect();
        let [Action::UpdateSlice { name, patch }] = updates[..] else {
            panic!("{actions:#?}")
        };
        assert_eq!(name, "web-abcde");
        assert_eq!(patch["metadata"]["resourceVersion"], "9");
        assert_eq!(patch["endpoints"].as_array().unwrap().len(), 1);
        // Scaled to zero: the slice stays, empty and without ports.
        let actions = decide(Some(&s), &[], None, &slices);
        let updates: Vec<&Action> = actions
            .iter()
            .filter(|a| !matches!(a, Action::CreateEndpoints(_)))
            .collect();
        let [Action::UpdateSlice { name, patch }] = updates[..] else {
            panic!("{actions:#?}")
        };
        assert_eq!(name, "web-abcde");
        assert_eq!(patch["endpoints"], json!([]));
        assert_eq!(patch["ports"], Value::Null);
        // A new pod joins the existing slice rather than making another.
        let more = arcs(vec![
            pod("a", "10.0.0.1", "n1", 8080, Some(2)),
            pod("b", "10.0.0.2", "n1", 8080, Some(2)),
            pod("c", "10.0.0.3", "n1", 8080, Some(2)),
            pod("d", "10.0.0.4", "n1", 8080, Some(2)),
        ]);
        let actions = decide(Some(&s), &more, None, &slices);
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::UpdateSlice { patch, .. }
                if patch["endpoints"].as_array().unwrap().len() == 4)),
            "{actions:#?}"
        );
        assert!(created_slices(&actions).is_empty());
    }

    #[test]
    fn a_service_without_pods_gets_one_placeholder_and_stale_slices_go() {
        let s = svc("web", "web");
        let made = created_slices(&decide(Some(&s), &[], None, &[]));
        assert_eq!(made.len(), 1);
        assert_eq!(made[0]["endpoints"], json!([]));
        assert_eq!(made[0].get("ports"), None);
        let placeholder = stored(&made[0], "web-empty");
        let actions = decide(Some(&s), &[], None, std::slice::from_ref(&placeholder));
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::CreateSlice(_) | Action::UpdateSlice { .. })),
            "{actions:#?}"
        );
        // A slice owned by an older Service of the same name is replaced.
        let mut foreign = (*placeholder).clone();
        foreign.metadata.name = Some("web-old".into());
        foreign.metadata.uid = Some("uid-old".into());
        foreign.metadata.owner_references.as_mut().unwrap()[0].uid = "gone".into();
        let pods = arcs(vec![pod("a", "10.0.0.1", "n1", 8080, Some(2))]);
        let actions = decide(Some(&s), &pods, None, &[Arc::new(foreign)]);
        assert!(actions.contains(&Action::DeleteSlice {
            name: "web-old".into(),
            uid: "uid-old".into()
        }));
        assert_eq!(created_slices(&actions).len(), 1);
    }

    async fn feed<K>(cache: &Cache<K>, objs: Vec<K>)
    where
        K: kube::Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        let mut events = vec![Ok(watcher::Event::Init)];
        events.extend(objs.into_iter().map(|o| Ok(watcher::Event::InitApply(o))));
        events.push(Ok(watcher::Event::InitDone));
        cache.feed(stream::iter(events)).await;
    }

    fn controller(fx: Arc<Recording>) -> (Arc<EndpointsController>, Arc<Caches>) {
        let caches = Arc::new(Caches::new());
        let clock = Arc::new(FixedClock(std::sync::Mutex::new(t(0))));
        let events = Arc::new(Recorder::new(fx.clone(), clock, "endpoint-controller"));
        (
            EndpointsController::new(caches.clone(), fx, events.clone(), events),
            caches,
        )
    }

    #[tokio::test]
    async fn pod_changes_reach_the_services_of_their_old_and_new_labels() {
        let (c, caches) = controller(Arc::new(Recording::default()));
        let queue = Queue::new();
        c.watch(&queue);
        feed(&caches.services, vec![svc("web", "web"), svc("api", "api")]).await;
        let names = |keys: Vec<Key>| {
            let mut n: Vec<String> = keys.into_iter().map(|k| k.name).collect();
            n.sort();
            n
        };
        let p = pod("a", "10.0.0.1", "n1", 8080, Some(1));
        assert_eq!(names(c.services_of(&p, Change::Applied)), ["web"]);
        let mut moved = p.clone();
        moved.metadata.labels = labels(&[("app", "api")]);
        assert_eq!(
            names(c.services_of(&moved, Change::Applied)),
            ["api", "web"]
        );
        let mut annotated = moved.clone();
        annotated.metadata.annotations = labels(&[("note", "x")]);
        assert!(c.services_of(&annotated, Change::Applied).is_empty());
        assert_eq!(names(c.services_of(&annotated, Change::Deleted)), ["api"]);
        let mut elsewhere = p.clone();
        elsewhere.metadata.namespace = Some("other".into());
        assert!(c.services_of(&elsewhere, Change::Applied).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn driver_writes_endpoints_and_slices_and_deletes_endpoints_of_gone_services() {
        let fx = Arc::new(Recording::default());
        let (c, caches) = controller(fx.clone());
        let queue = Queue::new();
        c.watch(&queue);
        feed(&caches.services, vec![svc("web", "web")]).await;
        feed(
            &caches.pods,
            vec![pod("a", "10.0.0.1", "n1", 8080, Some(1))],
        )
        .await;
        feed(&caches.endpoints, vec![]).await;
        feed(&caches.endpointslices, vec![]).await;
        feed(
            &caches.nodes,
            vec![Node {
                metadata: ObjectMeta {
                    name: Some("n1".into()),
                    labels: labels(&[(ZONE, "zone-a")]),
                    ..Default::default()
                },
                ..Default::default()
            }],
        )
        .await;
        let key = queue.next().await;
        assert_eq!(key.name, "web");
        assert_eq!(c.sync(&key).await.unwrap(), Next::Done);
        let calls = fx.calls();
        assert!(
            calls.contains(&"create Endpoints default/web".to_string()),
            "{calls:#?}"
        );
        assert!(
            calls.contains(&"create EndpointSlice default/web-0".to_string()),
            "{calls:#?}"
        );

        // The Service goes; its Endpoints (now cached) follow.
        let e = Endpoints {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("ep".into()),
                ..Default::default()
            },
            subsets: None,
        };
        let caches2 = Arc::new(Caches::new());
        feed(&caches2.endpoints, vec![e]).await;
        let c2 = EndpointsController::new(
            caches2,
            fx.clone(),
            c.endpoint_events.clone(),
            c.slice_events.clone(),
        );
        c2.sync(&key).await.unwrap();
        assert!(
            fx.calls()
                .contains(&"delete Endpoints default/web None".to_string()),
            "{:#?}",
            fx.calls()
        );
    }
}
