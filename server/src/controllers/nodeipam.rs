//! The node address allocator: every Node gets a slice of the pod network in
//! `spec.podCIDR` (and `spec.podCIDRs`), which its node network hands out to its pods.
//!
//! As upstream's range allocator: a node keeps the range it was given; a range is free
//! again once its Node is gone (the allocator only looks at the Nodes that exist), so
//! nothing needs releasing. [`pick`] decides from plain values; [`NodeIpamController`]
//! keeps the ranges it has just given out until the cache shows them, so two nodes
//! registering at once never get the same one.

use super::driver::{self, Caches, Change, Effects, Kind, Next, Queue, Reconciler};
use futures::future::BoxFuture;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use serde_json::json;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

/// The first range of `cluster` with prefix `prefix` that is not in `used`.
pub fn pick(cluster: Ipv4Net, prefix: u8, used: &BTreeSet<Ipv4Net>) -> Option<Ipv4Net> {
    cluster.subnets(prefix).ok()?.find(|s| !used.contains(s))
}

/// The ranges nodes hold now, as their Node objects say.
fn held(nodes: &[Arc<Node>]) -> BTreeSet<Ipv4Net> {
    nodes
        .iter()
        .filter_map(|n| n.spec.as_ref()?.pod_cidr.as_deref()?.parse().ok())
        .collect()
}

/// Registers the controller's hooks and returns its worker; nothing runs without a
/// cluster CIDR.
pub fn start(ctx: &super::Context) -> super::Workers {
    let queue = Queue::new();
    let Some(cluster) = ctx.config.cluster_cidr else {
        return Box::pin(async {});
    };
    NodeIpamController::watch(&ctx.caches, &queue);
    let controller = NodeIpamController::new(
        ctx.caches.clone(),
        ctx.effects.clone(),
        cluster,
        ctx.config.node_cidr_prefix,
    );
    ctx.workers(controller, queue, 1)
}

/// The controller: the Node cache in, `spec.podCIDR` patches out.
pub struct NodeIpamController {
    caches: Arc<Caches>,
    effects: Arc<dyn Effects>,
    cluster: Ipv4Net,
    prefix: u8,
    /// Ranges given out whose Node the cache may not show with them yet.
    given: Mutex<HashMap<String, Ipv4Net>>,
}

impl NodeIpamController {
    /// A controller giving out `prefix`-sized ranges of `cluster`.
    pub fn new(
        caches: Arc<Caches>,
        effects: Arc<dyn Effects>,
        cluster: Ipv4Net,
        prefix: u8,
    ) -> Arc<Self> {
        Arc::new(NodeIpamController {
            caches,
            effects,
            cluster,
            prefix,
            given: Mutex::new(HashMap::new()),
        })
    }

    /// Registers the cache hook that fills `queue` with node names.
    pub fn watch(caches: &Caches, queue: &Arc<Queue<String>>) {
        let q = queue.clone();
        caches
            .nodes
            .on_change(Box::new(move |n: &Node, _change: Change| {
                q.add(n.name_any());
            }));
    }

    async fn sync_one(&self, name: &str) -> driver::Result<Next> {
        let nodes = self.caches.nodes.store().state();
        let Some(node) = nodes.iter().find(|n| n.name_any() == name) else {
            self.forget(name);
            return Ok(Next::Done);
        };
        if node
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_ref())
            .is_some()
            || node.metadata.deletion_timestamp.is_some()
        {
            self.forget(name);
            return Ok(Next::Done);
        }
        let range = {
            let Ok(mut given) = self.given.lock() else {
                return Ok(Next::Done);
            };
            match given.get(name) {
                Some(r) => *r,
                None => {
                    let mut used = held(&nodes);
                    used.extend(given.values().copied());
                    let Some(r) = pick(self.cluster, self.prefix, &used) else {
                        tracing::warn!(node = name, cluster_cidr = %self.cluster, "no pod range left for the node");
                        return Ok(Next::After(std::time::Duration::from_secs(60)));
                    };
                    given.insert(name.to_string(), r);
                    r
                }
            }
        };
        let kind = Kind::of::<Node>(false);
        let patch =
            json!({"spec": {"podCIDR": range.to_string(), "podCIDRs": [range.to_string()]}});
        match self.effects.merge_patch(&kind, "", name, patch).await {
            Ok(_) => {
                tracing::info!(node = name, pod_cidr = %range, "gave the node its pod range");
                Ok(Next::Done)
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {
                self.forget(name);
                Ok(Next::Done)
            }
            Err(e) => Err(driver::api_error("patch", &kind, "", name)(e)),
        }
    }

    fn forget(&self, name: &str) {
        if let Ok(mut given) = self.given.lock() {
            given.remove(name);
        }
    }
}

impl Reconciler for NodeIpamController {
    type Key = String;

    fn name(&self) -> &'static str {
        "node-ipam-controller"
    }

    fn sync<'a>(&'a self, key: &'a String) -> BoxFuture<'a, driver::Result<Next>> {
        Box::pin(self.sync_one(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_are_given_in_order_and_reused_once_free() {
        let cluster = net("10.42.0.0/16");
        let mut used = BTreeSet::new();
        assert_eq!(pick(cluster, 24, &used), Some(net("10.42.0.0/24")));
        used.insert(net("10.42.0.0/24"));
        used.insert(net("10.42.2.0/24"));
        assert_eq!(pick(cluster, 24, &used), Some(net("10.42.1.0/24")));
        used.insert(net("10.42.1.0/24"));
        assert_eq!(pick(cluster, 24, &used), Some(net("10.42.3.0/24")));
    }

    #[test]
    fn a_full_network_gives_nothing() {
        let cluster = net("10.42.0.0/23");
        let used = BTreeSet::from([net("10.42.0.0/24"), net("10.42.1.0/24")]);
        assert_eq!(pick(cluster, 24, &used), None);
        // A cluster range smaller than one node's range gives nothing either.
        assert_eq!(pick(net("10.42.0.0/25"), 24, &BTreeSet::new()), None);
    }
}
