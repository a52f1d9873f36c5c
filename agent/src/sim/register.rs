//! Registering the simulated nodes and keeping them alive: a Lease renewed every
//! [`LEASE_RENEW`], and the status conditions' heartbeat every [`STATUS_EVERY`] lease
//! rounds, as kubelets do since node leases exist. All nodes share one loop; each round
//! is a stream of requests with bounded concurrency.

use super::node::{self, Layout, NodeIdentity, PodRange};
use super::{Error, SimConfig};
use futures::{stream, StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The namespace of node leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// How long a lease holds without renewal (the kubelet's default).
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// How often leases are renewed (a quarter of their duration, as the kubelet does).
pub const LEASE_RENEW: Duration = Duration::from_secs(10);
/// The node status heartbeat comes every this many lease rounds (60 s); each round
/// refreshes a different share of the nodes, so the writes are spread evenly.
pub const STATUS_EVERY: usize = 6;
/// Requests in flight at once while registering or renewing.
const CONCURRENCY: usize = 32;
/// Attempts of one request that fails for a reason worth retrying.
const ATTEMPTS: u32 = 5;

/// A node that is registered.
#[derive(Debug, Clone)]
pub struct Registered {
    /// Its index among the simulated nodes.
    pub index: usize,
    /// Name and addresses.
    pub id: NodeIdentity,
    /// The Node's uid (the owner of its Lease).
    pub uid: String,
}

/// Whether a failed request may succeed if sent again: the server was unreachable,
/// overloaded or failing, as opposed to refusing the request.
fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 429 || s.code >= 500,
        _ => true,
    }
}

/// Runs `f` until it succeeds, fails for good, or has failed [`ATTEMPTS`] times.
async fn retry<T, F, Fut>(mut f: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut pause = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match f().await {
            Err(e) if attempt < ATTEMPTS && transient(&e) => {
                tracing::debug!(error = %e, attempt, "retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_not_found())
}

fn already_exists(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_already_exists())
}

fn now() -> Timestamp {
    Timestamp::now()
}

/// Registers every node of `config` (creating it, or adopting the one that exists) and
/// its Lease; returns them in index order.
pub async fn register_all(
    client: &kube::Client,
    config: &SimConfig,
    layout: Layout,
) -> Result<Vec<Registered>, Error> {
    let arch = node::kube_arch(std::env::consts::ARCH);
    let started = Instant::now();
    let mut nodes: Vec<Registered> = stream::iter(0..config.count)
        .map(|index| register(client, config, layout, arch, index))
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    nodes.sort_by_key(|n| n.index);
    tracing::info!(
        count = nodes.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "registered simulated nodes"
    );
    Ok(nodes)
}

/// Registers node `index`: create (or adopt), then its status, then its Lease.
async fn register(
    client: &kube::Client,
    config: &SimConfig,
    layout: Layout,
    arch: &str,
    index: usize,
) -> Result<Registered, Error> {
    let name = node::node_name(&config.name_prefix, index);
    let fail = |source| Error::Register {
        node: name.clone(),
        source,
    };
    let nodes: Api<Node> = Api::all(client.clone());
    let mut id = NodeIdentity {
        name: name.clone(),
        ip: layout.node_ip(index),
        pod_range: layout.pod_range(index),
    };
    let wanted = node::build_node(config, &id, arch);
    let post = PostParams::default();
    let params = PatchParams::default();
    let existing = match retry(|| nodes.create(&post, &wanted)).await {
        Ok(created) => created,
        Err(e) if already_exists(&e) => {
            // Adopt it: our labels on top of its own, and the pod range it already has
            // (spec.podCIDR cannot change once set).
            let patch = Patch::Merge(serde_json::json!({
                "metadata": { "labels": wanted.metadata.labels },
            }));
            let adopted = retry(|| nodes.patch(&name, &params, &patch))
                .await
                .map_err(fail)?;
            if let Some(range) = adopted
                .spec
                .as_ref()
                .and_then(|s| s.pod_cidr.as_deref())
                .and_then(PodRange::parse)
            {
                id.pod_range = range;
            }
            adopted
        }
        Err(e) => return Err(fail(e)),
    };
    let status = node::node_status(config, &id, arch, now(), existing.status.as_ref());
    let patch = Patch::Merge(serde_json::json!({ "status": status }));
    let node = retry(|| nodes.patch_status(&name, &params, &patch))
        .await
        .map_err(fail)?;
    let uid = node.metadata.uid.unwrap_or_default();
    renew_lease(client, &name, &uid).await.map_err(fail)?;
    Ok(Registered { index, id, uid })
}

/// The Lease of node `name` (owned by the Node, so it goes when the Node goes).
fn lease(name: &str, node_uid: &str, now: Timestamp) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(LEASE_NAMESPACE.to_string()),
            owner_references: (!node_uid.is_empty()).then(|| {
                vec![OwnerReference {
                    api_version: "v1".to_string(),
                    kind: "Node".to_string(),
                    name: name.to_string(),
                    uid: node_uid.to_string(),
                    ..OwnerReference::default()
                }]
            }),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(name.to_string()),
            lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
            renew_time: Some(MicroTime(now)),
            ..LeaseSpec::default()
        }),
    }
}

/// Renews node `name`'s Lease: one merge patch, or a create if it is missing.
async fn renew_lease(client: &kube::Client, name: &str, node_uid: &str) -> Result<(), kube::Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let now = now();
    let wanted = lease(name, node_uid, now);
    // The holder and duration go with every renewal, so a lease that someone changed
    // is put right.
    let patch = serde_json::json!({ "spec": wanted.spec });
    match leases
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if not_found(&e) => match leases.create(&PostParams::default(), &wanted).await {
            Ok(_) => Ok(()),
            // Created meanwhile by someone else: renewed next round.
            Err(e) if already_exists(&e) => Ok(()),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// Refreshes node `name`'s conditions: read them, then write them back with a new
/// heartbeat (and a new transition time for any that someone else changed).
async fn heartbeat(client: &kube::Client, name: &str) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let current = nodes.get_status(name).await?;
    let conditions = node::conditions(
        now(),
        current
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_deref()),
    );
    let patch = serde_json::json!({ "status": { "conditions": conditions } });
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Renews one node's Lease, and its status too if `status`; returns how many failed.
async fn keep_one_alive(client: &kube::Client, n: &Registered, status: bool) -> usize {
    let mut failed = 0;
    if let Err(e) = renew_lease(client, &n.id.name, &n.uid).await {
        tracing::warn!(node = %n.id.name, error = %e, "renewing the lease");
        failed += 1;
    }
    if status {
        if let Err(e) = heartbeat(client, &n.id.name).await {
            tracing::warn!(node = %n.id.name, error = %e, "node status heartbeat");
            failed += 1;
        }
    }
    failed
}

/// Renews every node's Lease each [`LEASE_RENEW`] and refreshes a share of their
/// statuses each round, until `cancel` fires. Failures are logged and retried the next
/// round: one missed renewal is within the lease's duration.
pub async fn keep_alive(client: kube::Client, nodes: &[Registered], cancel: CancellationToken) {
    let mut ticker = tokio::time::interval(LEASE_RENEW);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Registration just renewed every lease and wrote every status.
    ticker.tick().await;
    let mut round = 0usize;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        round += 1;
        let started = Instant::now();
        // Each request owns what it needs: futures borrowing across `buffer_unordered`
        // trip the compiler's higher-ranked lifetime checks inside a spawned task.
        let failures = stream::iter(nodes.iter().cloned())
            .map(|n| {
                let client = client.clone();
                let status = n.index % STATUS_EVERY == round % STATUS_EVERY;
                async move { keep_one_alive(&client, &n, status).await }
            })
            .buffer_unordered(CONCURRENCY)
            .take_until(cancel.cancelled())
            .fold(0usize, |sum, f| async move { sum + f })
            .await;
        tracing::debug!(
            nodes = nodes.len(),
            failures,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "renewed leases"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_is_held_by_its_node() {
        let t = Timestamp::from_second(1_000).unwrap();
        let l = lease("sim-3", "uid-3", t);
        assert_eq!(l.metadata.namespace.as_deref(), Some("kube-node-lease"));
        let spec = l.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("sim-3"));
        assert_eq!(spec.lease_duration_seconds, Some(40));
        assert_eq!(spec.renew_time, Some(MicroTime(t)));
        let owner = &l.metadata.owner_references.unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Node", "uid-3"));
    }

    #[test]
    fn only_unavailability_is_retried() {
        let api = |code| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                ..kube::core::Status::default()
            }))
        };
        assert!(transient(&api(503)));
        assert!(transient(&api(429)));
        assert!(!transient(&api(422)));
        assert!(!transient(&api(409)));
    }
}
