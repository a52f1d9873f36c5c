//! `--suite proxy`: the Service proxy's nftables programming. In a network namespace
//! of its own (root; removed at the end, also on failure), 1,000 Services with 5,000
//! endpoints are programmed in one batch, then one Service's endpoints change at a
//! time and each sync (decision, diff and the kernel's atomic apply) is timed; the
//! goal is at most 100 ms per change.

use super::{ms, Stats};
use anyhow::{bail, Result};
use serde_json::json;
use skiff_agent::network::nft::{Netlink, NftSocket};
use skiff_agent::network::proxy::{NodeContext, Proxy, TABLE};
use std::sync::Arc;
use std::time::Instant;

/// What to run.
pub struct Plan {
    /// Services programmed.
    pub services: usize,
    /// Endpoints per Service.
    pub endpoints: usize,
    /// One-Service changes timed.
    pub changes: usize,
}

type Service = k8s_openapi::api::core::v1::Service;
type Slice = k8s_openapi::api::discovery::v1::EndpointSlice;

fn service(i: usize) -> Result<Arc<Service>> {
    let ip = format!("10.43.{}.{}", i / 250, i % 250 + 1);
    Ok(Arc::new(serde_json::from_value(json!({
        "metadata": {"name": format!("svc-{i}"), "namespace": "bench"},
        "spec": {
            "type": "NodePort",
            "clusterIP": ip,
            "ports": [{"name": "http", "port": 80, "nodePort": 30000 + i, "targetPort": 8080}],
        },
    }))?))
}

/// Service `i`'s slice; `generation` shifts one endpoint to a new address.
fn slice(i: usize, endpoints: usize, generation: usize) -> Result<Arc<Slice>> {
    let eps: Vec<_> = (0..endpoints)
        .map(|e| {
            let n = i * endpoints + e + if e == 0 { generation * 100_000 } else { 0 };
            json!({
                "addresses": [format!("10.{}.{}.{}", 42 + n / 65_536 % 8, n / 256 % 256, n % 256)],
                "nodeName": if e % 2 == 0 { "n1" } else { "n2" },
                "conditions": {"ready": true},
            })
        })
        .collect();
    Ok(Arc::new(serde_json::from_value(json!({
        "metadata": {
            "name": format!("svc-{i}-x"),
            "namespace": "bench",
            "labels": {"kubernetes.io/service-name": format!("svc-{i}")},
        },
        "addressType": "IPv4",
        "endpoints": eps,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }))?))
}

/// Runs the suite.
pub fn run(plan: Plan) -> Result<()> {
    super::netns::run_inside("proxy", || measure(&plan))
}

fn measure(plan: &Plan) -> Result<()> {
    let ctx = NodeContext {
        node_name: "n1".into(),
        node_ips: vec![],
        cluster_cidr: "10.42.0.0/16".parse()?,
        service_cidr: "10.43.0.0/16".parse()?,
        bridge: "skiff0".into(),
        dns: None,
    };
    let services = (0..plan.services)
        .map(service)
        .collect::<Result<Vec<_>>>()?;
    let mut generation = vec![0; plan.services];
    let mut slices = (0..plan.services)
        .map(|i| slice(i, plan.endpoints, 0))
        .collect::<Result<Vec<_>>>()?;
    let mut proxy = Proxy::new(NftSocket::open()?, ctx);

    let t = Instant::now();
    let stats = proxy.sync(&services, &slices)?;
    let full = t.elapsed();
    let mut sock = NftSocket::open()?;
    let chains = sock.chains(TABLE)?.len();
    let rules: usize = sock.rule_counts(TABLE)?.values().sum();
    println!(
        "proxy: {} Services, {} endpoints: first sync {} ({} messages; {chains} chains, {rules} rules in the kernel)",
        plan.services,
        plan.services * plan.endpoints,
        ms(full),
        stats.messages,
    );

    let mut times = Vec::with_capacity(plan.changes);
    let mut messages = 0;
    for k in 0..plan.changes {
        let i = (k * 37 + 11) % plan.services;
        generation[i] += 1;
        slices[i] = slice(i, plan.endpoints, generation[i])?;
        let t = Instant::now();
        let stats = proxy.sync(&services, &slices)?;
        times.push(t.elapsed());
        messages += stats.messages;
    }
    // An unchanged sync: the cost of the decision and diff alone.
    let t = Instant::now();
    proxy.sync(&services, &slices)?;
    let idle = t.elapsed();
    let s = Stats::new(times);
    println!(
        "proxy: one-Service endpoint change, {} changes: p50 {} p99 {} max {} (goal <= 100 ms; {:.0} messages each); a sync with no change {}",
        plan.changes,
        ms(s.pct(0.5)),
        ms(s.pct(0.99)),
        ms(s.pct(1.0)),
        messages as f64 / plan.changes.max(1) as f64,
        ms(idle),
    );
    let rules_after: usize = sock.rule_counts(TABLE)?.values().sum();
    if rules_after != rules {
        bail!("rules in the kernel went from {rules} to {rules_after} over same-sized changes");
    }
    proxy.remove()?;
    if sock.table_exists(TABLE)? {
        bail!("table {TABLE} still present after remove");
    }
    Ok(())
}
