//! LoadBalancer Services on the nodes' own addresses, as K3s's ServiceLB: every Service
//! of type LoadBalancer without a `loadBalancerClass` gets, in `status.loadBalancer`,
//! one ingress per eligible node (its ExternalIP, else its InternalIP, `ipMode: VIP`),
//! sorted. The nodes' service proxies answer on those addresses.
//!
//! Eligible nodes are Ready and not being deleted; when any node carries
//! [`ENABLE_LB_LABEL`]`=true`, only those (K3s's `enablelb` rule). A Service that stops
//! being a LoadBalancer loses the ingress this controller gave it.
//!
//! [`reconcile`] decides from the Service and the nodes; [`ServiceLbController`] is keyed
//! by Service and fed by Service changes and by node changes that can move the
//! decision (readiness, deletion, the label, addresses), and writes `services/status`.

use super::driver::{self, Caches, Change, Effects, Key, Kind, Next, Queue, Reconciler};
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Node, Service};
use kube::ResourceExt;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The node label that, once any node has it set to `true`, limits LoadBalancer
/// addresses to the nodes that have it.
pub const ENABLE_LB_LABEL: &str = "svccontroller.skiff.io/enablelb";

/// When to look again after a write lost a race with another writer.
const RETRY: Duration = Duration::from_millis(250);

/// What to do about one Service's status.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Its status is as it should be, or it is not this controller's.
    Nothing,
    /// Write these ingress points (none: clear them).
    SetIngress(Vec<LoadBalancerIngress>),
}

/// Whether the Service is a LoadBalancer this controller serves.
pub fn is_ours(svc: &Service) -> bool {
    svc.spec.as_ref().is_some_and(|s| {
        s.type_.as_deref() == Some("LoadBalancer") && s.load_balancer_class.is_none()
    })
}

fn is_ready(node: &Node) -> bool {
    super::nodelifecycle::ready_status(node) == Some("True")
}

fn enabled(node: &Node) -> bool {
    node.labels().get(ENABLE_LB_LABEL).map(String::as_str) == Some("true")
}

/// The address a node offers LoadBalancer traffic on: its first ExternalIP, else its
/// first InternalIP.
pub fn node_address(node: &Node) -> Option<IpAddr> {
    let addresses = node.status.as_ref()?.addresses.as_deref()?;
    let first = |kind: &str| {
        addresses
            .iter()
            .filter(|a| a.type_ == kind)
            .find_map(|a| a.address.parse::<IpAddr>().ok())
    };
    first("ExternalIP").or_else(|| first("InternalIP"))
}

/// The ingress points of a LoadBalancer Service over `nodes`: one per eligible node's
/// address, sorted, without duplicates.
pub fn ingress(nodes: &[Arc<Node>]) -> Vec<LoadBalancerIngress> {
    let labelled = nodes.iter().any(|n| enabled(n));
    let mut ips: Vec<IpAddr> = nodes
        .iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none() && is_ready(n))
        .filter(|n| !labelled || enabled(n))
        .filter_map(|n| node_address(n))
        .collect();
    ips.sort();
    ips.dedup();
    ips.into_iter()
        .map(|ip| LoadBalancerIngress {
            ip: Some(ip.to_string()),
            ip_mode: Some("VIP".into()),
            ..Default::default()
        })
        .collect()
}

/// The action for `svc` given all `nodes`.
pub fn reconcile(svc: &Service, nodes: &[Arc<Node>]) -> Action {
    if svc
        .spec
        .as_ref()
        .is_some_and(|s| s.load_balancer_class.is_some())
    {
        return Action::Nothing;
    }
    let wanted = if is_ours(svc) {
        ingress(nodes)
    } else {
        Vec::new()
    };
    let current = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.clone())
        .unwrap_or_default();
    if current == wanted {
        Action::Nothing
    } else {
        Action::SetIngress(wanted)
    }
}

/// What of a node the decision reads; a node change that leaves it alone is ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Facts {
    eligible: bool,
    enabled: bool,
    address: Option<IpAddr>,
}

fn facts(node: &Node) -> Facts {
    Facts {
        eligible: node.metadata.deletion_timestamp.is_none() && is_ready(node),
        enabled: enabled(node),
        address: node_address(node),
    }
}

/// Registers the controller's hooks and returns its worker.
pub fn start(ctx: &super::Context) -> super::Workers {
    let queue = Queue::new();
    let controller = ServiceLbController::new(ctx.caches.clone(), ctx.effects.clone());
    controller.watch(&queue);
    ctx.workers(controller, queue, 1)
}

/// The controller: caches in, `services/status` writes out.
pub struct ServiceLbController {
    caches: Arc<Caches>,
    effects: Arc<dyn Effects>,
    /// The last facts seen of each node.
    nodes: Mutex<HashMap<String, Facts>>,
}

impl ServiceLbController {
    /// A controller over `caches`, writing through `effects`.
    pub fn new(caches: Arc<Caches>, effects: Arc<dyn Effects>) -> Arc<Self> {
        Arc::new(ServiceLbController {
            caches,
            effects,
            nodes: Mutex::new(HashMap::new()),
        })
    }

    /// Registers the hooks that fill `queue`: every changed Service, and every
    /// LoadBalancer Service when a node's facts change.
    pub fn watch(self: &Arc<Self>, queue: &Arc<Queue<Key>>) {
        let q = queue.clone();
        self.caches
            .services
            .on_change(Box::new(move |svc: &Service, change| {
                if change == Change::Applied {
                    q.add(Key::of(&svc.metadata));
                }
            }));
        let (me, q) = (self.clone(), queue.clone());
        self.caches
            .nodes
            .on_change(Box::new(move |node: &Node, change| {
                if me.node_changed(node, change) {
                    for svc in me.caches.services.store().state() {
                        if is_ours(&svc) {
                            q.add(Key::of(&svc.metadata));
                        }
                    }
                }
            }));
    }

    /// Records a node's change; says whether it can move a decision.
    fn node_changed(&self, node: &Node, change: Change) -> bool {
        let mut known = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        let name = node.name_any();
        match change {
            Change::Deleted => known.remove(&name).is_some(),
            Change::Applied => {
                let now = facts(node);
                known.insert(name, now.clone()) != Some(now)
            }
        }
    }

    async fn sync_one(&self, key: &Key) -> driver::Result<Next> {
        let Some(svc) = self.caches.services.get(&key.namespace, &key.name) else {
            return Ok(Next::Done);
        };
        let nodes = self.caches.nodes.store().state();
        let Action::SetIngress(ingress) = reconcile(&svc, &nodes) else {
            return Ok(Next::Done);
        };
        let kind = Kind::of::<Service>(true);
        let mut body = (*svc).clone();
        body.metadata.managed_fields = None;
        body.status
            .get_or_insert_with(Default::default)
            .load_balancer = Some(LoadBalancerStatus {
            ingress: (!ingress.is_empty()).then_some(ingress),
        });
        let body =
            serde_json::to_value(&body).map_err(|e| driver::Error::Encode("Service".into(), e))?;
        match self
            .effects
            .replace_status(&kind, &key.namespace, &key.name, body)
            .await
        {
            Ok(_) => Ok(Next::Done),
            // Gone: nothing to do. Changed meanwhile: its event is coming; look again
            // soon in case the cache is what was behind.
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(Next::Done),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Next::After(RETRY)),
            Err(e) => Err(driver::api_error(
                "update status of",
                &kind,
                &key.namespace,
                &key.name,
            )(e)),
        }
    }
}

impl Reconciler for ServiceLbController {
    type Key = Key;

    fn name(&self) -> &'static str {
        "service-lb-controller"
    }

    fn sync<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, driver::Result<Next>> {
        Box::pin(self.sync_one(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::driver::tests::Recording;
    use futures::stream;
    use k8s_openapi::api::core::v1::{
        NodeAddress, NodeCondition, NodeStatus, ServiceSpec, ServiceStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use kube::runtime::watcher;
    use std::collections::BTreeMap;

    fn node(name: &str, ready: &str, internal: &str, external: Option<&str>) -> Node {
        let mut addresses = vec![NodeAddress {
            type_: "InternalIP".into(),
            address: internal.into(),
        }];
        if let Some(e) = external {
            addresses.push(NodeAddress {
                type_: "ExternalIP".into(),
                address: e.into(),
            });
        }
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: None,
            status: Some(NodeStatus {
                addresses: Some(addresses),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn labelled(mut n: Node, value: &str) -> Node {
        n.metadata.labels = Some(BTreeMap::from([(
            ENABLE_LB_LABEL.to_string(),
            value.to_string(),
        )]));
        n
    }

    fn svc(type_: &str, ingress: &[&str]) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                resource_version: Some("7".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some(type_.into()),
                ..Default::default()
            }),
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: (!ingress.is_empty()).then(|| {
                        ingress
                            .iter()
                            .map(|ip| LoadBalancerIngress {
                                ip: Some(ip.to_string()),
                                ip_mode: Some("VIP".into()),
                                ..Default::default()
                            })
                            .collect()
                    }),
                }),
                conditions: None,
            }),
        }
    }

    fn ips(a: &Action) -> Vec<String> {
        match a {
            Action::SetIngress(v) => v.iter().map(|i| i.ip.clone().unwrap()).collect(),
            Action::Nothing => panic!("no action"),
        }
    }

    fn arcs(v: Vec<Node>) -> Vec<Arc<Node>> {
        v.into_iter().map(Arc::new).collect()
    }

    #[test]
    fn ready_nodes_give_their_external_or_internal_address_sorted() {
        let nodes = arcs(vec![
            node("b", "True", "10.0.0.9", None),
            node("a", "True", "10.0.0.2", Some("203.0.113.5")),
            node("c", "False", "10.0.0.3", None),
            node("d", "Unknown", "10.0.0.4", None),
            node("e", "True", "10.0.0.10", None),
        ]);
        let a = reconcile(&svc("LoadBalancer", &[]), &nodes);
        assert_eq!(ips(&a), ["10.0.0.9", "10.0.0.10", "203.0.113.5"]);
        let Action::SetIngress(v) = &a else {
            unreachable!()
        };
        assert!(v.iter().all(|i| i.ip_mode.as_deref() == Some("VIP")));
        // Already so: nothing to write.
        let done = svc("LoadBalancer", &["10.0.0.9", "10.0.0.10", "203.0.113.5"]);
        assert_eq!(reconcile(&done, &nodes), Action::Nothing);
        // A node going away is dropped.
        let mut deleting = node("e", "True", "10.0.0.10", None);
        deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        let nodes = arcs(vec![node("b", "True", "10.0.0.9", None), deleting]);
        assert_eq!(ips(&reconcile(&done, &nodes)), ["10.0.0.9"]);
    }

    #[test]
    fn enablelb_labels_limit_the_nodes_once_any_node_has_one() {
        let nodes = arcs(vec![
            labelled(node("a", "True", "10.0.0.1", None), "true"),
            node("b", "True", "10.0.0.2", None),
            labelled(node("c", "True", "10.0.0.3", None), "false"),
        ]);
        assert_eq!(
            ips(&reconcile(&svc("LoadBalancer", &[]), &nodes)),
            ["10.0.0.1"]
        );
        // Only "false" labels: every ready node.
        let nodes = arcs(vec![
            node("b", "True", "10.0.0.2", None),
            labelled(node("c", "True", "10.0.0.3", None), "false"),
        ]);
        assert_eq!(
            ips(&reconcile(&svc("LoadBalancer", &[]), &nodes)),
            ["10.0.0.2", "10.0.0.3"]
        );
    }

    #[test]
    fn other_services_are_cleared_or_left_alone() {
        let nodes = arcs(vec![node("a", "True", "10.0.0.1", None)]);
        // No longer a LoadBalancer: the ingress goes.
        let was = svc("ClusterIP", &["10.0.0.1"]);
        assert_eq!(reconcile(&was, &nodes), Action::SetIngress(vec![]));
        assert_eq!(reconcile(&svc("ClusterIP", &[]), &nodes), Action::Nothing);
        // Another implementation's class: never touched.
        let mut other = svc("LoadBalancer", &["192.0.2.7"]);
        other.spec.as_mut().unwrap().load_balancer_class = Some("example.com/lb".into());
        assert_eq!(reconcile(&other, &nodes), Action::Nothing);
        // No eligible node: no ingress.
        let down = arcs(vec![node("a", "False", "10.0.0.1", None)]);
        assert_eq!(
            reconcile(&svc("LoadBalancer", &["10.0.0.1"]), &down),
            Action::SetIngress(vec![])
        );
    }

    async fn feed<K>(cache: &driver::Cache<K>, objs: Vec<K>)
    where
        K: kube::Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        let mut events = vec![Ok(watcher::Event::Init)];
        events.extend(objs.into_iter().map(|o| Ok(watcher::Event::InitApply(o))));
        events.push(Ok(watcher::Event::InitDone));
        cache.feed(stream::iter(events)).await;
    }

    #[tokio::test]
    async fn node_changes_requeue_load_balancers_and_the_status_is_written() {
        let fx = Arc::new(Recording::default());
        let caches = Arc::new(Caches::new());
        let c = ServiceLbController::new(caches.clone(), fx.clone());
        let queue = Queue::new();
        c.watch(&queue);
        let mut plain = svc("ClusterIP", &[]);
        plain.metadata.name = Some("plain".into());
        feed(&caches.services, vec![svc("LoadBalancer", &[]), plain]).await;
        while !queue.is_empty() {
            let k = queue.next().await;
            queue.done(&k, Ok(Next::Done));
        }
        let n = node("a", "True", "10.0.0.1", None);
        assert!(c.node_changed(&n, Change::Applied));
        assert!(!c.node_changed(&n, Change::Applied));
        let mut heartbeat = n.clone();
        heartbeat.metadata.resource_version = Some("99".into());
        assert!(!c.node_changed(&heartbeat, Change::Applied));
        assert!(c.node_changed(&labelled(n.clone(), "true"), Change::Applied));
        assert!(c.node_changed(&n, Change::Deleted));

        feed(&caches.nodes, vec![n]).await;
        let key = queue.next().await;
        assert_eq!(key.name, "web");
        assert!(queue.is_empty(), "only LoadBalancer Services are requeued");
        assert_eq!(c.sync(&key).await.unwrap(), Next::Done);
        let calls = fx.calls();
        assert_eq!(calls.len(), 1, "{calls:#?}");
        assert!(
            calls[0].starts_with("status Service default/web")
                && calls[0].contains(r#""ingress":[{"ip":"10.0.0.1","ipMode":"VIP"}]"#),
            "{calls:#?}"
        );
    }
}
