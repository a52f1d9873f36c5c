//! The pod loop: one watch of every bound pod, filtered to the simulated nodes here,
//! each pod moved along by [`pod::decide`]. Writes run with bounded concurrency; the
//! Job pods waiting to finish sit in one timer heap, not in a task each.
//!
//! One watch of all bound pods (`spec.nodeName!=`), not one per node with
//! `spec.nodeName=<node>`: with 1,000 per-node watches open, creating 3,000 pods cost
//! the (debug) server 52 s of CPU against 1.8 s with the single watch, and creation
//! slowed from 3 s to 50 s, as every event is matched against every watcher. The
//! initial state comes as a streaming list (`sendInitialEvents`): paging through
//! 36,000 pods with a field selector took about 2 s a page, a streaming list seconds.

use super::node::PodRange;
use super::pod::{self, Decision};
use super::register::Registered;
use super::Error;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Requests in flight at once.
const IN_FLIGHT: usize = 64;
/// How long to wait before trying a failed write again.
const RETRY: Duration = Duration::from_secs(2);
/// The field selector of the watch: every pod bound to some node.
pub const BOUND_PODS: &str = "spec.nodeName!=";

/// `namespace/name`.
type Key = String;

/// The addresses in use in one node's pod range; host numbers are handed out
/// round-robin, so a freed address is not reused at once.
#[derive(Debug)]
struct Addresses {
    range: PodRange,
    used: Vec<bool>,
    next: u32,
}

impl Addresses {
    fn new(range: PodRange) -> Addresses {
        Addresses {
            range,
            used: vec![false; range.size() as usize],
            next: 1,
        }
    }

    /// Marks `ip` used if it is in this range; returns whether it is.
    fn claim(&mut self, ip: Ipv4Addr) -> bool {
        match self.range.host_number(ip) {
            Some(n) => {
                self.used[n as usize] = true;
                true
            }
            None => false,
        }
    }

    fn allocate(&mut self) -> Option<Ipv4Addr> {
        let size = self.range.size();
        for i in 0..size {
            let n = (self.next + i) % size;
            if n == 0 || n == size - 1 || self.used[n as usize] {
                continue;
            }
            self.used[n as usize] = true;
            self.next = n + 1;
            return Some(self.range.addr(n));
        }
        None
    }

    fn release(&mut self, ip: Ipv4Addr) {
        if let Some(n) = self.range.host_number(ip) {
            self.used[n as usize] = false;
        }
    }
}

/// The furthest phase this simulator has written for a pod, so that a watch event older
/// than our own write (it can arrive after the write's answer) is not acted on twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Written {
    Nothing,
    Running,
    Succeeded,
}

/// What the loop remembers of one pod on its nodes.
#[derive(Debug)]
struct Record {
    uid: String,
    node: usize,
    /// The address it holds in its node's range.
    ip: Option<Ipv4Addr>,
    written: Written,
    /// A timer is set for it.
    waiting: bool,
}

/// What the watch said about a pod while a request for it was in flight.
#[derive(Debug)]
enum Meanwhile {
    Nothing,
    /// Its newest state.
    Changed(Box<Pod>),
    /// It was deleted.
    Gone,
}

/// How a request for one pod ended.
enum Outcome {
    /// The status was written; the answer is the pod as it now is.
    Wrote(Key, Written, Result<Pod, kube::Error>),
    /// The delete was sent.
    Deleted(Key, Result<(), kube::Error>),
    /// The pod was read again (after a timer).
    Fetched(Key, Result<Option<Pod>, kube::Error>),
}

fn key_of(pod: &Pod) -> Key {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

fn split(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

fn phase_rank(pod: &Pod) -> Written {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Running") => Written::Running,
        Some("Succeeded") | Some("Failed") => Written::Succeeded,
        _ => Written::Nothing,
    }
}

/// The state of the pod loop.
struct Pods {
    client: kube::Client,
    job_duration: Duration,
    /// Node name → index into `nodes` and `addresses`.
    by_name: HashMap<String, usize>,
    nodes: Vec<Registered>,
    addresses: Vec<Addresses>,
    records: HashMap<Key, Record>,
    /// Pods with a request in flight, with what the watch said meanwhile.
    in_flight: HashMap<Key, Meanwhile>,
    requests: FuturesUnordered<BoxFuture<'static, Outcome>>,
    timers: BinaryHeap<Reverse<(Instant, Key)>>,
    /// Pods listed since the watch (re)started, to forget the ones deleted unseen.
    relisting: Option<HashSet<Key>>,
}

/// Runs the pod loop for `nodes` until `cancel` fires.
pub async fn run(
    client: kube::Client,
    nodes: Vec<Registered>,
    job_duration: Duration,
    cancel: CancellationToken,
) -> Result<(), Error> {
    let api: Api<Pod> = Api::all(client.clone());
    let events = watcher(
        api,
        watcher::Config::default()
            .fields(BOUND_PODS)
            .streaming_lists(),
    )
    .default_backoff();
    let mut events = std::pin::pin!(events);
    let mut pods = Pods {
        client,
        job_duration,
        by_name: nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.name.clone(), i))
            .collect(),
        addresses: nodes
            .iter()
            .map(|n| Addresses::new(n.id.pod_range))
            .collect(),
        nodes,
        records: HashMap::new(),
        in_flight: HashMap::new(),
        requests: FuturesUnordered::new(),
        timers: BinaryHeap::new(),
        relisting: None,
    };
    loop {
        let room = pods.requests.len() < IN_FLIGHT;
        let next_timer = pods.timers.peek().map(|Reverse((at, _))| *at);
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            Some(outcome) = pods.requests.next(), if !pods.requests.is_empty() => {
                pods.finished(outcome);
            }
            event = events.next(), if room => match event {
                Some(Ok(event)) => pods.on_event(event),
                Some(Err(e)) => tracing::warn!(error = %e, "watching pods"),
                None => return Ok(()),
            },
            _ = sleep_until(next_timer), if room && next_timer.is_some() => pods.fire_timers(),
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

impl Pods {
    fn on_event(&mut self, event: watcher::Event<Pod>) {
        match event {
            watcher::Event::Init => self.relisting = Some(HashSet::new()),
            watcher::Event::InitApply(pod) => {
                if let Some(seen) = self.relisting.as_mut() {
                    seen.insert(key_of(&pod));
                }
                self.on_pod(pod);
            }
            watcher::Event::InitDone => {
                if let Some(seen) = self.relisting.take() {
                    let gone: Vec<Key> = self
                        .records
                        .keys()
                        .filter(|k| !seen.contains(*k))
                        .cloned()
                        .collect();
                    for key in gone {
                        self.forget(&key);
                    }
                }
            }
            watcher::Event::Apply(pod) => self.on_pod(pod),
            watcher::Event::Delete(pod) => {
                let key = key_of(&pod);
                let same = self
                    .records
                    .get(&key)
                    .is_some_and(|r| Some(&r.uid) == pod.metadata.uid.as_ref());
                if same {
                    self.forget(&key);
                }
            }
        }
    }

    /// Drops what is known of a pod that is gone, returning its address.
    fn forget(&mut self, key: &str) {
        if let Some(r) = self.records.remove(key) {
            if let Some(ip) = r.ip {
                self.addresses[r.node].release(ip);
            }
        }
        if let Some(meanwhile) = self.in_flight.get_mut(key) {
            *meanwhile = Meanwhile::Gone;
        }
    }

    /// Acts on the newest state of a pod.
    fn on_pod(&mut self, pod: Pod) {
        let Some(node) = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .and_then(|n| self.by_name.get(n))
            .copied()
        else {
            return;
        };
        let key = key_of(&pod);
        if let Some(meanwhile) = self.in_flight.get_mut(&key) {
            *meanwhile = Meanwhile::Changed(Box::new(pod));
            return;
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if self.records.get(&key).is_some_and(|r| r.uid != uid) {
            // Same name, new pod.
            self.forget(&key);
        }
        let record = self.records.entry(key.clone()).or_insert_with(|| Record {
            uid,
            node,
            ip: None,
            written: Written::Nothing,
            waiting: false,
        });
        if record.ip.is_none() && !pod::host_network(&pod) {
            if let Some(ip) = pod::current_ip(&pod) {
                if self.addresses[node].claim(ip) {
                    record.ip = Some(ip);
                }
            }
        }
        let decision = pod::decide(&pod, Timestamp::now(), self.job_duration);
        if !matches!(decision, Decision::Delete { .. }) && phase_rank(&pod) < record.written {
            // Older than what we wrote: our own write's event is on its way.
            return;
        }
        match decision {
            Decision::Nothing => {}
            Decision::WaitUntil(at) => {
                if !record.waiting {
                    record.waiting = true;
                    let wait =
                        Duration::try_from(at.duration_since(Timestamp::now())).unwrap_or_default();
                    self.timers.push(Reverse((Instant::now() + wait, key)));
                }
            }
            Decision::Run => {
                let host = self.nodes[node].id.ip;
                let ip = if pod::host_network(&pod) {
                    Some(host)
                } else if let Some(ip) = record.ip.or_else(|| pod::current_ip(&pod)) {
                    Some(ip)
                } else {
                    let ip = self.addresses[node].allocate();
                    record.ip = ip;
                    ip
                };
                let Some(ip) = ip else {
                    tracing::warn!(pod = %key, node = %self.nodes[node].id.name, "no pod address left on the node");
                    self.retry_later(key);
                    return;
                };
                let status = pod::running_status(&pod, host, ip, Timestamp::now());
                self.write(key, Written::Running, status);
            }
            Decision::Succeed => {
                let status = pod::succeeded_status(&pod, Timestamp::now());
                self.write(key, Written::Succeeded, status);
            }
            Decision::Delete { uid } => self.delete(key, uid),
        }
    }

    fn retry_later(&mut self, key: Key) {
        if let Some(r) = self.records.get_mut(&key) {
            if r.waiting {
                return;
            }
            r.waiting = true;
        }
        self.timers.push(Reverse((Instant::now() + RETRY, key)));
    }

    fn write(&mut self, key: Key, phase: Written, status: k8s_openapi::api::core::v1::PodStatus) {
        let (ns, name) = split(&key);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let name = name.to_string();
        let patch = serde_json::json!({ "status": status });
        self.in_flight.insert(key.clone(), Meanwhile::Nothing);
        self.requests.push(
            async move {
                let result = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
                Outcome::Wrote(key, phase, result)
            }
            .boxed(),
        );
    }

    fn delete(&mut self, key: Key, uid: String) {
        let (ns, name) = split(&key);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let name = name.to_string();
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        self.in_flight.insert(key.clone(), Meanwhile::Nothing);
        self.requests.push(
            async move {
                let result = api.delete(&name, &params).await.map(|_| ());
                Outcome::Deleted(key, result)
            }
            .boxed(),
        );
    }

    fn fetch(&mut self, key: Key) {
        let (ns, name) = split(&key);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let name = name.to_string();
        self.in_flight.insert(key.clone(), Meanwhile::Nothing);
        self.requests.push(
            async move {
                let result = api.get_opt(&name).await;
                Outcome::Fetched(key, result)
            }
            .boxed(),
        );
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while self.requests.len() < IN_FLIGHT {
            match self.timers.peek() {
                Some(Reverse((at, _))) if *at <= now => {}
                _ => return,
            }
            let Some(Reverse((_, key))) = self.timers.pop() else {
                return;
            };
            let Some(record) = self.records.get_mut(&key) else {
                continue;
            };
            record.waiting = false;
            if !self.in_flight.contains_key(&key) {
                self.fetch(key);
            }
        }
    }

    fn finished(&mut self, outcome: Outcome) {
        let (key, fresh, failed) = match outcome {
            Outcome::Wrote(key, phase, result) => match result {
                Ok(pod) => {
                    if let Some(r) = self.records.get_mut(&key) {
                        r.written = r.written.max(phase);
                    }
                    (key, Some(pod), None)
                }
                Err(e) => (key, None, Some(e)),
            },
            Outcome::Deleted(key, result) => (key, None, result.err()),
            Outcome::Fetched(key, result) => match result {
                Ok(pod) => (key, pod, None),
                Err(e) => (key, None, Some(e)),
            },
        };
        let meanwhile = self.in_flight.remove(&key).unwrap_or(Meanwhile::Nothing);
        match failed {
            // Gone, or replaced by a pod of another uid: the watch tells the rest.
            Some(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Some(e) => {
                tracing::warn!(pod = %key, error = %e, "updating a simulated pod");
                self.retry_later(key);
            }
            None => {}
        }
        // Our answer first, then whatever the watch said meanwhile (older events are
        // skipped by the record of what we wrote).
        match meanwhile {
            Meanwhile::Gone => {}
            Meanwhile::Nothing => fresh.into_iter().for_each(|p| self.on_pod(p)),
            Meanwhile::Changed(later) => {
                fresh.into_iter().for_each(|p| self.on_pod(p));
                self.on_pod(*later);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_handed_out_round_robin_and_released() {
        let range = PodRange::parse("10.128.0.0/30").unwrap();
        let mut a = Addresses::new(range);
        assert_eq!(a.allocate(), Some(Ipv4Addr::new(10, 128, 0, 1)));
        assert_eq!(a.allocate(), Some(Ipv4Addr::new(10, 128, 0, 2)));
        assert_eq!(a.allocate(), None, "network and broadcast stay free");
        a.release(Ipv4Addr::new(10, 128, 0, 1));
        assert_eq!(a.allocate(), Some(Ipv4Addr::new(10, 128, 0, 1)));

        let mut b = Addresses::new(PodRange::parse("10.128.1.0/24").unwrap());
        assert!(b.claim(Ipv4Addr::new(10, 128, 1, 1)));
        assert!(!b.claim(Ipv4Addr::new(10, 128, 2, 1)));
        assert_eq!(b.allocate(), Some(Ipv4Addr::new(10, 128, 1, 2)));
    }
}
