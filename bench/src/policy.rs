//! `--suite policy`: NetworkPolicy as nftables rules. In a network namespace of its own
//! (root; removed at the end, also on failure), a cluster of pods over several nodes,
//! a tenth of them on this node, and a handful of policies per namespace are
//! programmed in one batch; then one pod's labels change at a time (which moves it in
//! and out of the policies' peer sets) and each sync (decision, diff and the kernel's
//! atomic apply) is timed.

use super::{ms, Stats};
use anyhow::{bail, Result};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::json;
use skiff_agent::network::nft::{Netlink, NftSocket};
use skiff_agent::network::policy::{NodeScope, Policy, TABLE};
use std::sync::Arc;
use std::time::Instant;

/// What to run.
pub struct Plan {
    /// Pods in the cluster.
    pub pods: usize,
    /// Namespaces they are spread over (four policies each).
    pub namespaces: usize,
    /// One-pod label changes timed.
    pub changes: usize,
}

/// Nodes the pods are spread over; this node is `n0`.
const NODES: usize = 10;

/// Pod `i`: in namespace `i % namespaces`, each namespace's pods spread over the nodes,
/// with one of three app labels (also among one namespace's pods on one node),
/// `generation` flipping its `tier` label, and a named port.
fn pod(i: usize, namespaces: usize, generation: usize) -> Result<Arc<Pod>> {
    let app = ["web", "api", "db"][i / namespaces / NODES % 3];
    let tier = if generation.is_multiple_of(2) {
        "front"
    } else {
        "back"
    };
    Ok(Arc::new(serde_json::from_value(json!({
        "metadata": {
            "name": format!("pod-{i}"),
            "namespace": format!("ns-{}", i % namespaces),
            "labels": {"app": app, "tier": tier},
        },
        "spec": {
            "nodeName": format!("n{}", i / namespaces % NODES),
            "containers": [{"name": "c", "image": "i",
                            "ports": [{"name": "http", "containerPort": 8080 + (i % 3) as i32}]}],
        },
        "status": {"phase": "Running", "podIP": format!("10.42.{}.{}", i / 250, i % 250 + 2)},
    }))?))
}

/// Namespace `n`'s four policies: default deny both ways, web from the front tier of
/// any namespace on its named port, api from web and from a monitoring namespace,
/// egress to db. A pod's tier changing changes every namespace's web peers.
fn policies(n: usize) -> Result<Vec<Arc<NetworkPolicy>>> {
    let ns = format!("ns-{n}");
    let specs = [
        (
            "deny",
            json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        ),
        (
            "web",
            json!({"podSelector": {"matchLabels": {"app": "web"}},
                   "ingress": [{"from": [{"namespaceSelector": {},
                                          "podSelector": {"matchLabels": {"tier": "front"}}}],
                                "ports": [{"port": "http"}]}]}),
        ),
        (
            "api",
            json!({"podSelector": {"matchLabels": {"app": "api"}},
                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}},
                                         {"namespaceSelector": {"matchLabels": {"role": "monitoring"}}}],
                                "ports": [{"port": 8081}]}]}),
        ),
        (
            "to-db",
            json!({"podSelector": {"matchLabels": {"app": "api"}}, "policyTypes": ["Egress"],
                   "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}],
                               "ports": [{"port": "http"}]},
                              {"to": [{"ipBlock": {"cidr": "10.43.0.0/16"}}]}]}),
        ),
    ];
    specs
        .into_iter()
        .map(|(name, spec)| {
            Ok(Arc::new(serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": ns},
                "spec": spec,
            }))?))
        })
        .collect()
}

/// Runs the suite.
pub fn run(plan: Plan) -> Result<()> {
    super::netns::run_inside("policy", || measure(&plan))
}

fn measure(plan: &Plan) -> Result<()> {
    let namespaces = plan.namespaces.max(1);
    let nss: Vec<Arc<Namespace>> = (0..namespaces)
        .map(|n| {
            let role = if n == 0 { "monitoring" } else { "app" };
            Ok(Arc::new(serde_json::from_value(json!({
                "metadata": {"name": format!("ns-{n}"), "labels": {"role": role}},
            }))?))
        })
        .collect::<Result<_>>()?;
    let mut generation = vec![0; plan.pods];
    let mut pods = (0..plan.pods)
        .map(|i| pod(i, namespaces, 0))
        .collect::<Result<Vec<_>>>()?;
    let policies: Vec<Arc<NetworkPolicy>> = (0..namespaces)
        .map(policies)
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect();
    let scope = NodeScope {
        node_name: "n0".into(),
        host_addrs: vec!["10.42.0.1".parse()?],
    };
    let mut enforcer = Policy::new(NftSocket::open()?, scope);

    let t = Instant::now();
    let stats = enforcer.sync(&pods, &nss, &policies)?;
    let full = t.elapsed();
    let mut sock = NftSocket::open()?;
    let chains = sock.chains(TABLE)?.len();
    let rules: usize = sock.rule_counts(TABLE)?.values().sum();
    println!(
        "policy: {} pods ({} on this node), {} policies: first sync {} ({} messages; {chains} chains, {rules} rules in the kernel)",
        plan.pods,
        plan.pods.div_ceil(NODES),
        policies.len(),
        ms(full),
        stats.messages,
    );

    let mut times = Vec::with_capacity(plan.changes);
    let mut messages = 0;
    for k in 0..plan.changes {
        let i = (k * 37 + 11) % plan.pods;
        generation[i] += 1;
        pods[i] = pod(i, namespaces, generation[i])?;
        let t = Instant::now();
        let stats = enforcer.sync(&pods, &nss, &policies)?;
        times.push(t.elapsed());
        messages += stats.messages;
    }
    let t = Instant::now();
    enforcer.sync(&pods, &nss, &policies)?;
    let idle = t.elapsed();
    let s = Stats::new(times);
    println!(
        "policy: one pod's labels changed, {} changes: p50 {} p99 {} max {} ({:.0} messages each); a sync with no change {}",
        plan.changes,
        ms(s.pct(0.5)),
        ms(s.pct(0.99)),
        ms(s.pct(1.0)),
        messages as f64 / plan.changes.max(1) as f64,
        ms(idle),
    );
    enforcer.remove()?;
    if sock.table_exists(TABLE)? {
        bail!("table {TABLE} still present after remove");
    }
    Ok(())
}
