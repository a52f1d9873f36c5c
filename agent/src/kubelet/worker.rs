//! One pod's worker: a task that drives the pod from what the API says it should be to
//! running containers, and reports what they do. It wakes on a change of the pod, on a
//! container's exit, and when a back-off ends.
//!
//! Each sync: the pod's namespaces and files, its volumes, then its init containers one
//! at a time in order, then its app containers, each restarted by the restart policy
//! with upstream's back-off; then the status, written when it changed. A pod being
//! deleted has its containers stopped (SIGTERM, the grace period, SIGKILL), its
//! namespaces and folders removed, and is then deleted from the API for good.

use super::container::{self, PodContext};
use super::probe::{self, Tracker};
use super::status::{self, Run, RunState, Waiting};
use super::volumes;
use super::Kubelet;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    Container, LifecycleHandler, Pod, PodCondition, PodStatus, Probe,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use skiff_embedded::container::runtime::NewContainer;
use skiff_embedded::container::{sandbox, Status};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Labels the kubelet keeps beside each container (in its `meta.json`).
pub mod labels {
    /// The pod's uid.
    pub const POD_UID: &str = "io.kubernetes.pod.uid";
    /// The pod's name.
    pub const POD_NAME: &str = "io.kubernetes.pod.name";
    /// The pod's namespace.
    pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    /// The container's name.
    pub const CONTAINER: &str = "io.kubernetes.container.name";
    /// Which run of the container (0 first).
    pub const ATTEMPT: &str = "io.kubernetes.container.attempt";
    /// The image ID it runs.
    pub const IMAGE_ID: &str = "io.kubernetes.container.image-id";
    /// The digest of its image's config (what the image GC keeps).
    pub const IMAGE_CONFIG: &str = "io.skiff.container.image-config";
}

/// A container run the worker knows of (from disk at start, or started since).
#[derive(Debug, Clone)]
pub struct Record {
    /// The runtime id.
    pub id: String,
    /// The container's name.
    pub name: String,
    /// Which run.
    pub attempt: u32,
    /// The image ID.
    pub image_id: String,
}

/// How often a pod is synced even when nothing woke it.
const RESYNC: Duration = Duration::from_secs(10);
/// How long a postStart hook may take.
const HOOK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a container may take to die after SIGKILL before the worker gives up on it.
const KILL_WAIT: Duration = Duration::from_secs(10);

struct Worker {
    k: Arc<Kubelet>,
    uid: String,
    records: Vec<Record>,
    /// Why a container is not running, by name, when it is the kubelet's doing.
    waiting: HashMap<String, Waiting>,
    /// Image IDs by container name.
    image_ids: HashMap<String, String>,
    /// Failures to start, by runtime id.
    failures: HashMap<String, String>,
    /// Pull back-off per image: failures so far and when to try again.
    pull_backoff: HashMap<String, (u32, tokio::time::Instant)>,
    sandbox: Option<sandbox::Namespaces>,
    /// The pod's address on the pod network, once it has one.
    pod_ip: Option<std::net::Ipv4Addr>,
    volumes: BTreeMap<String, std::path::PathBuf>,
    last_status: Option<serde_json::Value>,
    wake: mpsc::UnboundedSender<()>,
    /// Probe state by container run id.
    probes: HashMap<String, Probes>,
    /// When runs without an end time were first seen failed.
    failed_at: HashMap<String, Timestamp>,
}

/// The probes of one container run.
#[derive(Default)]
struct Probes {
    startup: Option<Tracker>,
    liveness: Option<Tracker>,
    readiness: Option<Tracker>,
    /// A failed liveness or startup probe has it being restarted.
    killed: bool,
}

/// Runs the worker of pod `uid` until the pod is gone and cleaned up.
pub async fn run(
    k: Arc<Kubelet>,
    uid: String,
    mut pod: watch::Receiver<Option<Pod>>,
    records: Vec<Record>,
) {
    let (wake, mut woken) = mpsc::unbounded_channel();
    let mut w = Worker {
        k,
        uid,
        records,
        waiting: HashMap::new(),
        image_ids: HashMap::new(),
        failures: HashMap::new(),
        pull_backoff: HashMap::new(),
        sandbox: None,
        pod_ip: None,
        volumes: BTreeMap::new(),
        last_status: None,
        wake,
        probes: HashMap::new(),
        failed_at: HashMap::new(),
    };
    for r in w.records.clone() {
        w.watch_exit(&r.id);
    }
    loop {
        let current = pod.borrow_and_update().clone();
        let Some(p) = current.filter(|p| p.metadata.deletion_timestamp.is_none()) else {
            let current = pod.borrow().clone();
            w.terminate(current.as_ref()).await;
            return;
        };
        let next = match w.sync(&p).await {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!(pod = %pod_key(&p), error = %e, "syncing the pod");
                Duration::from_secs(2)
            }
        };
        let next = next.min(RESYNC);
        tokio::select! {
            changed = pod.changed() => {
                if changed.is_err() {
                    // The kubelet is stopping: leave the containers running.
                    return;
                }
            }
            _ = woken.recv() => {}
            _ = tokio::time::sleep(next) => {}
        }
    }
}

fn pod_key(p: &Pod) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or_default(),
        p.metadata.name.as_deref().unwrap_or_default()
    )
}

impl Worker {
    /// Container `c` cannot be configured (a missing key, profile or reference): it
    /// waits with `CreateContainerConfigError`, and the pod is looked at again soon.
    fn config_error(&mut self, c: &Container, message: String) -> Option<Duration> {
        self.waiting.insert(
            c.name.clone(),
            Waiting {
                reason: "CreateContainerConfigError".into(),
                message: Some(message),
            },
        );
        Some(Duration::from_secs(2))
    }

    fn pod_dir(&self) -> std::path::PathBuf {
        self.k.pods_dir().join(&self.uid)
    }

    fn log_dir(&self, pod: &Pod) -> std::path::PathBuf {
        self.k.config.pod_log_dir.join(format!(
            "{}_{}_{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default(),
            self.uid
        ))
    }

    fn watch_exit(&self, id: &str) {
        let (containers, id, wake) = (self.k.containers.clone(), id.to_string(), self.wake.clone());
        tokio::spawn(async move {
            if let Err(e) = containers.wait(&id).await {
                tracing::warn!(container = %id, error = %e, "watching a container");
            }
            let _ = wake.send(());
        });
    }

    /// The latest run of `name` and the one before.
    fn runs(&self, name: &str) -> (Option<Run>, Option<Run>) {
        let mut mine: Vec<&Record> = self.records.iter().filter(|r| r.name == name).collect();
        mine.sort_by_key(|r| std::cmp::Reverse(r.attempt));
        let current = mine.first().map(|r| self.observe(r));
        let previous = mine.get(1).map(|r| self.observe(r));
        (current, previous)
    }

    fn observe(&self, r: &Record) -> Run {
        let parse = |s: &str| s.parse::<Timestamp>().unwrap_or(Timestamp::UNIX_EPOCH);
        let state = if let Some(message) = self.failures.get(&r.id) {
            RunState::Failed(message.clone())
        } else {
            match self.k.containers.status(&r.id) {
                Ok(None) => RunState::Starting,
                Ok(Some(Status::Running(s))) => RunState::Running {
                    started_at: parse(&s.started_at),
                },
                Ok(Some(Status::Exited(s, e))) => RunState::Exited {
                    started_at: parse(&s.started_at),
                    finished_at: parse(&e.finished_at),
                    exit_code: e.exit_code,
                    signal: e.signal,
                    oom_killed: e.oom_killed,
                },
                Ok(Some(Status::Failed(m))) => RunState::Failed(m),
                Err(e) => RunState::Failed(e.to_string()),
            }
        };
        Run {
            id: r.id.clone(),
            attempt: r.attempt,
            state,
        }
    }

    /// Every container of the pod waits, for `reason` with `message`.
    fn wait_all(
        &mut self,
        spec: &k8s_openapi::api::core::v1::PodSpec,
        reason: &str,
        message: &str,
    ) {
        for c in spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
        {
            self.waiting.insert(
                c.name.clone(),
                Waiting {
                    reason: reason.into(),
                    message: Some(message.into()),
                },
            );
        }
    }

    async fn sync(&mut self, pod: &Pod) -> Result<Duration, String> {
        let spec = pod.spec.clone().unwrap_or_default();
        let host_network = spec.host_network == Some(true);
        let mut next = RESYNC;
        if self.sandbox.is_none() {
            let dir = self.pod_dir();
            let hostname = spec
                .hostname
                .clone()
                .or_else(|| pod.metadata.name.clone())
                .unwrap_or_default();
            let ns =
                tokio::task::spawn_blocking(move || sandbox::create(&dir, &hostname, host_network))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("making the pod's namespaces: {}", chain(&e)))?;
            self.sandbox = Some(ns);
        }
        if !host_network && self.pod_ip.is_none() {
            if let Some(netns) = self.sandbox.as_ref().and_then(|s| s.net.clone()) {
                match self.k.network.attach(&self.uid, &netns).await {
                    Ok(ip) => self.pod_ip = ip,
                    // A pod attached before this kubelet started keeps its address and
                    // its reported state while the network comes back.
                    Err(_)
                        if pod
                            .status
                            .as_ref()
                            .and_then(|s| s.pod_ip.as_ref())
                            .is_some() =>
                    {
                        return Ok(Duration::from_millis(500));
                    }
                    Err(e) => {
                        let message = format!("network: {}", chain(&e));
                        self.wait_all(&spec, "ContainerCreating", &message);
                        self.report(pod, false, false).await;
                        return Ok(Duration::from_millis(500));
                    }
                }
            }
        }
        // The pod's own address, as the API will soon show it, for /etc/hosts and the
        // downward API.
        let with_ip;
        let pod = match self.pod_ip {
            Some(ip)
                if pod.status.as_ref().and_then(|s| s.pod_ip.as_deref())
                    != Some(&ip.to_string()) =>
            {
                let mut p = pod.clone();
                p.status.get_or_insert_with(Default::default).pod_ip = Some(ip.to_string());
                with_ip = p;
                &with_ip
            }
            _ => pod,
        };
        let cluster_dns =
            (self.k.config.network.backend != crate::network::Backend::None).then(|| {
                crate::network::dns::resolv::ClusterDns {
                    nameserver: self.k.config.network.cluster_dns,
                    domain: self.k.config.network.cluster_domain.clone(),
                }
            });
        let host_resolv = self.k.network.host_resolv();
        let etc = volumes::etc_files(
            &self.pod_dir(),
            pod,
            self.k.node_ip,
            cluster_dns.as_ref(),
            &host_resolv,
        )
        .map_err(|e| format!("writing the pod's /etc files: {e}"))?;
        match volumes::prepare(&self.k, pod, &self.pod_dir(), &self.volumes).await {
            Ok(v) => self.volumes = v,
            Err(e) => {
                // Every container waits on its volumes.
                self.wait_all(&spec, "CreateContainerConfigError", &e);
                self.report(pod, false, false).await;
                return Ok(Duration::from_secs(2));
            }
        }
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        let fields = downward_fields(pod, &self.k.node_name, self.k.node_ip);

        // Init containers, one at a time, each to success.
        let mut init_done = true;
        let mut init_failed = false;
        for c in spec.init_containers.iter().flatten() {
            let (current, _) = self.runs(&c.name);
            match current.as_ref().map(|r| &r.state) {
                Some(s) if s.succeeded() => continue,
                Some(RunState::Running { .. }) | Some(RunState::Starting) => {}
                Some(_) if policy == "Never" => init_failed = true,
                _ => {
                    if let Some(wait) = self
                        .maybe_start(pod, c, current.as_ref(), &etc, &fields)
                        .await
                    {
                        next = next.min(wait);
                    }
                }
            }
            init_done = false;
            break;
        }
        if init_done {
            for c in &spec.containers {
                let (current, _) = self.runs(&c.name);
                let restart = match current.as_ref().map(|r| &r.state) {
                    None => true,
                    Some(RunState::Running { .. }) | Some(RunState::Starting) => false,
                    Some(s) => policy == "Always" || (policy == "OnFailure" && !s.succeeded()),
                };
                if restart {
                    if let Some(wait) = self
                        .maybe_start(pod, c, current.as_ref(), &etc, &fields)
                        .await
                    {
                        next = next.min(wait);
                    }
                } else {
                    self.waiting.remove(&c.name);
                }
                if let Some(wait) = self.probe(pod, c).await {
                    next = next.min(wait);
                }
            }
        }
        self.report(pod, init_done, init_failed).await;
        Ok(next)
    }

    /// Starts the next run of `c` unless a back-off holds it; returns how long to wait
    /// when one does.
    async fn maybe_start(
        &mut self,
        pod: &Pod,
        c: &Container,
        current: Option<&Run>,
        etc: &[(String, std::path::PathBuf)],
        fields: &BTreeMap<String, String>,
    ) -> Option<Duration> {
        let key = pod_key(pod);
        // Restart back-off.
        if let Some(run) = current {
            let finished = match &run.state {
                RunState::Exited { finished_at, .. } => Some(*finished_at),
                _ => None,
            };
            let delay =
                status::backoff(run.attempt + u32::from(matches!(run.state, RunState::Failed(_))));
            // A run that never ran (or whose shim died) has no end time: its back-off
            // counts from when the worker first saw it failed.
            let since = finished.unwrap_or_else(|| {
                *self
                    .failed_at
                    .entry(run.id.clone())
                    .or_insert_with(Timestamp::now)
            });
            let ready_at = since + jiff::SignedDuration::try_from(delay).unwrap_or_default();
            let now = Timestamp::now();
            if ready_at > now && !delay.is_zero() {
                self.waiting.insert(
                    c.name.clone(),
                    Waiting {
                        reason: "CrashLoopBackOff".into(),
                        message: Some(format!(
                            "back-off {}s restarting failed container={} pod={}_{}({})",
                            delay.as_secs(),
                            c.name,
                            pod.metadata.name.as_deref().unwrap_or_default(),
                            pod.metadata.namespace.as_deref().unwrap_or_default(),
                            self.uid
                        )),
                    },
                );
                let left = ready_at.duration_since(now);
                return Some(Duration::try_from(left).unwrap_or(Duration::from_secs(1)));
            }
        }
        // The image: pulled as the pull policy says, then resolved and unpacked.
        let reference = c.image.clone().unwrap_or_default();
        if let Some((_, until)) = self.pull_backoff.get(&reference) {
            if *until > tokio::time::Instant::now() {
                return Some(until.duration_since(tokio::time::Instant::now()));
            }
        }
        let policy = c
            .image_pull_policy
            .clone()
            .unwrap_or_else(|| default_pull_policy(&reference).to_string());
        let present = self.image_present(&reference).await;
        let mut pull_error = None;
        if policy == "Always" || (policy == "IfNotPresent" && !present) {
            let creds = super::volumes::pull_credentials(&self.k, pod).await;
            let store = self.k.images.clone();
            match skiff_embedded::image::pull::pull(
                &store,
                &reference,
                &self.k.config.registries,
                &creds,
            )
            .await
            {
                Ok(name) => tracing::info!(pod = %key, image = %name, "image pulled"),
                // An image already here serves when its registry cannot be reached:
                // an air-gapped node keeps running what it has.
                Err(e) if present => {
                    tracing::warn!(pod = %key, image = %reference, error = %chain(&e), "pull failed; using the image on the node")
                }
                Err(e) => pull_error = Some(chain(&e)),
            }
        } else if policy == "Never" && !present {
            self.waiting.insert(
                c.name.clone(),
                Waiting {
                    reason: "ErrImageNeverPull".into(),
                    message: Some(format!(
                        "Container image {reference:?} is not present with pull policy of Never"
                    )),
                },
            );
            return Some(Duration::from_secs(5));
        }
        let images = self.k.images.clone();
        let r2 = reference.clone();
        let resolved = match pull_error {
            Some(e) => Err(e),
            None => tokio::task::spawn_blocking(move || {
                let mut store = images
                    .lock()
                    .map_err(|_| "the image store's lock is poisoned".to_string())?;
                let mut found = store.resolve(&r2).map_err(|e| chain(&e))?;
                if found.is_none() {
                    // `skiff images import` may have added it since.
                    store.reload_names().map_err(|e| chain(&e))?;
                    found = store.resolve(&r2).map_err(|e| chain(&e))?;
                }
                let Some(image) = found else {
                    return Ok(None);
                };
                let layers = store.layers(&image).map_err(|e| chain(&e))?;
                Ok::<_, String>(Some((image, layers)))
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string())),
        };
        let (image, layers) = match resolved {
            Ok(Some(found)) => {
                self.pull_backoff.remove(&reference);
                found
            }
            Ok(None) | Err(_) => {
                let message = match resolved {
                    Err(e) => format!("failed to pull and unpack image {reference:?}: {e}"),
                    _ => format!("image {reference:?} is not on the node"),
                };
                let (failures, _) = self
                    .pull_backoff
                    .get(&reference)
                    .cloned()
                    .unwrap_or((0, tokio::time::Instant::now()));
                let delay = status::backoff(failures + 1);
                self.pull_backoff.insert(
                    reference.clone(),
                    (failures + 1, tokio::time::Instant::now() + delay),
                );
                let reason = if failures == 0 {
                    "ErrImagePull"
                } else {
                    "ImagePullBackOff"
                };
                let message = if failures == 0 {
                    message
                } else {
                    format!("Back-off pulling image {reference:?}: {message}")
                };
                self.waiting.insert(
                    c.name.clone(),
                    Waiting {
                        reason: reason.into(),
                        message: Some(message),
                    },
                );
                return Some(if failures == 0 {
                    Duration::from_millis(500)
                } else {
                    delay
                });
            }
        };
        let image_id = format!(
            "{}@{}",
            image
                .name
                .split(['@'])
                .next()
                .unwrap_or(&image.name)
                .rsplit_once(':')
                .map_or(image.name.as_str(), |(n, _)| n),
            image.manifest
        );
        self.image_ids.insert(c.name.clone(), image_id.clone());

        let attempt = current.map_or(0, |r| r.attempt + 1);
        let id = uuid::Uuid::new_v4().simple().to_string();
        let ns = self
            .sandbox
            .clone()
            .unwrap_or_else(|| sandbox::paths(&self.pod_dir(), true));
        let env_refs = match volumes::env_refs(&self.k, pod, c).await {
            Ok(v) => v,
            Err(e) => return self.config_error(c, e),
        };
        let node_seccomp = super::seccomp::NodeSeccomp {
            supported: self.k.host.seccomp,
            default_runtime_default: self.k.config.seccomp_default,
        };
        let seccomp = match super::seccomp::resolve(pod, c, node_seccomp, &self.k.seccomp_dir()) {
            Ok(s) => s,
            Err(e) => return self.config_error(c, e.0),
        };
        let ctx = PodContext {
            net: ns.net.clone(),
            ipc: ns.ipc.clone(),
            uts: ns.uts.clone(),
            etc_files: etc.to_vec(),
            volumes: self.volumes.clone(),
            cgroup_parent: super::pod_cgroup(&self.uid),
            fields: fields.clone(),
            env_from_refs: env_refs.0,
            env_from: env_refs.1,
            service_env: volumes::service_env(&self.k, pod).await,
            seccomp,
        };
        let config = match container::config(pod, c, &image.config, &ctx, &id) {
            Ok(config) => config,
            Err(e) => return self.config_error(c, e.0),
        };
        let labels = BTreeMap::from([
            (labels::POD_UID.to_string(), self.uid.clone()),
            (
                labels::POD_NAME.to_string(),
                pod.metadata.name.clone().unwrap_or_default(),
            ),
            (
                labels::POD_NAMESPACE.to_string(),
                pod.metadata.namespace.clone().unwrap_or_default(),
            ),
            (labels::CONTAINER.to_string(), c.name.clone()),
            (labels::ATTEMPT.to_string(), attempt.to_string()),
            (labels::IMAGE_ID.to_string(), image_id.clone()),
            (
                labels::IMAGE_CONFIG.to_string(),
                image.config_digest.to_string(),
            ),
        ]);
        self.k.last_used.used(image.config_digest.clone());
        let log_path = self
            .log_dir(pod)
            .join(&c.name)
            .join(format!("{attempt}.log"));
        // Keep the latest run and the one before it (for `kubectl logs --previous`).
        let old: Vec<String> = self
            .records
            .iter()
            .filter(|r| r.name == c.name && r.attempt + 1 < attempt)
            .map(|r| r.id.clone())
            .collect();
        for id in old {
            if let Err(e) = self.k.containers.remove(&id) {
                tracing::warn!(container = %id, error = %e, "removing an old run");
            }
            self.records.retain(|r| r.id != id);
        }
        self.records.push(Record {
            id: id.clone(),
            name: c.name.clone(),
            attempt,
            image_id,
        });
        self.waiting.remove(&c.name);
        let started = self
            .k
            .containers
            .start(NewContainer {
                id: &id,
                config: &config,
                lowers: layers,
                log_path,
                labels: &labels,
            })
            .await;
        match started {
            Ok(_) => {
                tracing::info!(pod = %key, container = %c.name, attempt, "container started");
                self.watch_exit(&id);
                let post_start = c.lifecycle.as_ref().and_then(|l| l.post_start.clone());
                if let Some(hook) = post_start {
                    // As upstream: the container counts as started only once its
                    // postStart hook succeeded; a failed hook kills it.
                    if let Err(why) = self.hook(&id, c, &hook, HOOK_TIMEOUT).await {
                        tracing::warn!(pod = %key, container = %c.name, reason = %why, "postStart hook failed; killing the container");
                        let _ = self.k.containers.signal(&id, rustix::process::Signal::KILL);
                    }
                }
                None
            }
            Err(e) => {
                let message = chain(&e);
                tracing::warn!(pod = %key, container = %c.name, error = %message, "container failed to start");
                self.failures.insert(id, message);
                Some(Duration::from_millis(100))
            }
        }
    }

    /// Runs the container's probes that are due; returns when the next one is. A failed
    /// startup or liveness probe stops the container (SIGTERM, then SIGKILL after the
    /// grace period), and the restart policy brings it back.
    async fn probe(&mut self, pod: &Pod, c: &Container) -> Option<Duration> {
        if c.liveness_probe.is_none() && c.readiness_probe.is_none() && c.startup_probe.is_none() {
            return None;
        }
        let (Some(run), _) = self.runs(&c.name) else {
            return None;
        };
        if !matches!(run.state, RunState::Running { .. }) {
            self.probes.remove(&run.id);
            return None;
        }
        let now = tokio::time::Instant::now().into_std();
        let set = self.probes.entry(run.id.clone()).or_insert_with(|| Probes {
            startup: c.startup_probe.as_ref().map(|p| Tracker::new(p, now)),
            liveness: c.liveness_probe.as_ref().map(|p| Tracker::new(p, now)),
            readiness: c.readiness_probe.as_ref().map(|p| Tracker::new(p, now)),
            killed: false,
        });
        if set.killed {
            return None;
        }
        let started = set.startup.as_ref().is_none_or(|t| t.result == Some(true));
        let mut due: Vec<(&'static str, Probe)> = Vec::new();
        let pick = |t: &Option<Tracker>, p: &Option<Probe>| {
            t.as_ref()
                .zip(p.as_ref())
                .filter(|(t, _)| t.next <= now)
                .map(|(_, p)| p.clone())
        };
        if !started {
            due.extend(pick(&set.startup, &c.startup_probe).map(|p| ("startup", p)));
        } else {
            due.extend(pick(&set.liveness, &c.liveness_probe).map(|p| ("liveness", p)));
            due.extend(pick(&set.readiness, &c.readiness_probe).map(|p| ("readiness", p)));
        }
        let target = probe::Target {
            netns: self.sandbox.as_ref().and_then(|s| s.net.clone()),
            ports: c
                .ports
                .iter()
                .flatten()
                .filter_map(|p| p.name.clone().map(|n| (n, p.container_port)))
                .collect(),
        };
        let mut kill = None;
        for (kind, p) in due {
            let outcome = match probe::check_network(&p, &target).await {
                Some(r) => r,
                None => self.exec_probe(&run.id, &p).await,
            };
            let Some(set) = self.probes.get_mut(&run.id) else {
                break;
            };
            let tracker = match kind {
                "startup" => set.startup.as_mut(),
                "liveness" => set.liveness.as_mut(),
                _ => set.readiness.as_mut(),
            };
            let Some(t) = tracker else { continue };
            if let Err(why) = &outcome {
                tracing::info!(pod = %pod_key(pod), container = %c.name, probe = kind, reason = %why, "probe failed");
            }
            t.record(&p, outcome.is_ok(), tokio::time::Instant::now().into_std());
            if kind != "readiness" && t.result == Some(false) {
                kill = Some(kind);
            }
        }
        if let Some(kind) = kill {
            tracing::info!(pod = %pod_key(pod), container = %c.name, probe = kind, "container failed its probe; restarting it");
            if let Some(set) = self.probes.get_mut(&run.id) {
                set.killed = true;
            }
            let grace = pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(30)
                .max(0) as u64;
            let (containers, id) = (self.k.containers.clone(), run.id.clone());
            let _ = containers.signal(&id, rustix::process::Signal::TERM);
            tokio::spawn(async move {
                if tokio::time::timeout(Duration::from_secs(grace), containers.wait(&id))
                    .await
                    .is_err()
                {
                    let _ = containers.signal(&id, rustix::process::Signal::KILL);
                }
            });
            return None;
        }
        let set = self.probes.get(&run.id)?;
        let now = tokio::time::Instant::now().into_std();
        [&set.startup, &set.liveness, &set.readiness]
            .into_iter()
            .flatten()
            .map(|t| t.next.saturating_duration_since(now))
            .min()
    }

    /// Whether the image is in the node's store (names re-read, for `skiff images`).
    async fn image_present(&self, reference: &str) -> bool {
        let images = self.k.images.clone();
        let r = reference.to_string();
        tokio::task::spawn_blocking(move || {
            let Ok(mut store) = images.lock() else {
                return false;
            };
            if matches!(store.resolve(&r), Ok(Some(_))) {
                return true;
            }
            store.reload_names().is_ok() && matches!(store.resolve(&r), Ok(Some(_)))
        })
        .await
        .unwrap_or(false)
    }

    /// Runs a lifecycle hook (exec, httpGet, tcpSocket or sleep) within `limit`.
    async fn hook(
        &self,
        id: &str,
        c: &Container,
        hook: &LifecycleHandler,
        limit: Duration,
    ) -> Result<(), String> {
        if let Some(sleep) = &hook.sleep {
            tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64).min(limit)).await;
            return Ok(());
        }
        let secs = i32::try_from(limit.as_secs()).unwrap_or(i32::MAX).max(1);
        let as_probe = Probe {
            exec: hook.exec.clone(),
            http_get: hook.http_get.clone(),
            tcp_socket: hook.tcp_socket.clone(),
            timeout_seconds: Some(secs),
            ..Probe::default()
        };
        let target = probe::Target {
            netns: self.sandbox.as_ref().and_then(|s| s.net.clone()),
            ports: c
                .ports
                .iter()
                .flatten()
                .filter_map(|p| p.name.clone().map(|n| (n, p.container_port)))
                .collect(),
        };
        match probe::check_network(&as_probe, &target).await {
            Some(r) => r,
            None => self.exec_probe(id, &as_probe).await,
        }
    }

    async fn exec_probe(&self, id: &str, p: &Probe) -> Result<(), String> {
        let Some(cmd) = p
            .exec
            .as_ref()
            .and_then(|e| e.command.clone())
            .filter(|c| !c.is_empty())
        else {
            return Err("the probe has no handler (exec, httpGet, tcpSocket)".into());
        };
        let mut child = self
            .k
            .containers
            .exec_command(id, &cmd, false)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("starting the probe: {e}"))?;
        match tokio::time::timeout(probe::timeout(p), child.wait()).await {
            Ok(Ok(s)) if s.success() => Ok(()),
            Ok(Ok(s)) => Err(format!("command {cmd:?} exited with {s}")),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => {
                let _ = child.kill().await;
                Err(format!("command {cmd:?} timed out"))
            }
        }
    }

    /// Whether the latest run of `c` is ready: running, and its readiness probe (if
    /// any) has succeeded.
    fn ready(&self, c: &Container, current: Option<&Run>) -> bool {
        let Some(run) = current else { return false };
        match self.probes.get(&run.id) {
            Some(set) => {
                !set.killed
                    && set.startup.as_ref().is_none_or(|t| t.result == Some(true))
                    && set
                        .readiness
                        .as_ref()
                        .is_none_or(|t| t.result == Some(true))
            }
            None => c.readiness_probe.is_none() && c.startup_probe.is_none(),
        }
    }

    async fn report(&mut self, pod: &Pod, init_done: bool, init_failed: bool) {
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        let status_of = |w: &Worker, c: &Container, init: bool| {
            let (current, previous) = w.runs(&c.name);
            let waiting = w
                .waiting
                .get(&c.name)
                .filter(|_| current.as_ref().is_none_or(|r| r.state.is_done()));
            let waiting_init = (!init && !init_done && current.is_none()).then(|| Waiting {
                reason: "PodInitializing".into(),
                message: None,
            });
            let image_id = w.image_ids.get(&c.name).cloned().or_else(|| {
                w.records
                    .iter()
                    .rev()
                    .find(|r| r.name == c.name)
                    .map(|r| r.image_id.clone())
            });
            status::container_status(&status::Inputs {
                name: &c.name,
                image: c.image.as_deref().unwrap_or_default(),
                image_id: image_id.as_deref().unwrap_or_default(),
                current: current.as_ref(),
                previous: previous.as_ref(),
                waiting: waiting.or(waiting_init.as_ref()),
                ready: w.ready(c, current.as_ref()),
            })
        };
        let init_statuses: Vec<_> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| status_of(self, c, true))
            .collect();
        let statuses: Vec<_> = spec
            .containers
            .iter()
            .map(|c| status_of(self, c, false))
            .collect();
        let phase = status::phase(init_done, init_failed, &statuses, &policy);
        let now = Timestamp::now();
        let old = pod.status.clone().unwrap_or_default();
        let previous = old.conditions.clone().unwrap_or_default();
        let all_ready =
            !statuses.is_empty() && statuses.iter().all(|s| s.ready) && phase == "Running";
        let mut conditions: Vec<PodCondition> = vec![
            status::condition(
                "PodReadyToStartContainers",
                self.sandbox.is_some(),
                None,
                now,
                &previous,
            ),
            status::condition(
                "Initialized",
                init_done,
                Some("ContainersNotInitialized"),
                now,
                &previous,
            ),
            status::condition(
                "Ready",
                all_ready,
                Some("ContainersNotReady"),
                now,
                &previous,
            ),
            status::condition(
                "ContainersReady",
                all_ready,
                Some("ContainersNotReady"),
                now,
                &previous,
            ),
        ];
        conditions.extend(
            previous
                .iter()
                .filter(|c| c.type_ == "PodScheduled")
                .cloned(),
        );
        let host_ip = self.k.node_ip.to_string();
        let pod_ip = if spec.host_network == Some(true) {
            Some(host_ip.clone())
        } else {
            self.pod_ip.map(|ip| ip.to_string())
        };
        let status = PodStatus {
            phase: Some(phase.to_string()),
            conditions: Some(conditions),
            container_statuses: Some(statuses),
            init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
            host_ip: Some(host_ip.clone()),
            host_ips: Some(vec![k8s_openapi::api::core::v1::HostIP { ip: host_ip }]),
            pod_ip: pod_ip.clone(),
            pod_ips: pod_ip.map(|ip| vec![k8s_openapi::api::core::v1::PodIP { ip }]),
            start_time: old.start_time.clone().or(Some(Time(now))),
            qos_class: old.qos_class.clone(),
            ..PodStatus::default()
        };
        let Ok(value) = serde_json::to_value(&status) else {
            return;
        };
        // Transition times aside, nothing changed: nothing to write.
        if self.last_status.as_ref() == Some(&value) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(
            self.k.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let name = pod.metadata.name.clone().unwrap_or_default();
        let patch = Patch::Merge(serde_json::json!({ "status": value }));
        match api
            .patch_status(&name, &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => self.last_status = Some(value),
            Err(e) => tracing::warn!(pod = %pod_key(pod), error = %e, "writing the pod's status"),
        }
    }

    /// Stops every container (SIGTERM, the grace period, SIGKILL), removes what the pod
    /// had on the node, and deletes the pod from the API if it is still there.
    async fn terminate(&mut self, pod: Option<&Pod>) {
        let grace = pod
            .and_then(|p| p.metadata.deletion_grace_period_seconds)
            .or_else(|| pod.and_then(|p| p.spec.as_ref()?.termination_grace_period_seconds))
            .unwrap_or(30)
            .max(0) as u64;
        let running: Vec<String> = self
            .records
            .iter()
            .filter(|r| {
                matches!(
                    self.k.containers.status(&r.id),
                    Ok(Some(Status::Running(_))) | Ok(None)
                )
            })
            .map(|r| r.id.clone())
            .collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(grace);
        if let Some(spec) = pod.and_then(|p| p.spec.as_ref()) {
            let hooks: Vec<(String, Container, LifecycleHandler)> = running
                .iter()
                .filter_map(|id| {
                    let name = &self.records.iter().find(|r| &r.id == id)?.name;
                    let c = spec.containers.iter().find(|c| &c.name == name)?;
                    let hook = c.lifecycle.as_ref()?.pre_stop.clone()?;
                    Some((id.clone(), c.clone(), hook))
                })
                .collect();
            let this = &*self;
            let runs = hooks.iter().map(|(id, c, hook)| async move {
                if let Err(why) = this.hook(id, c, hook, Duration::from_secs(grace)).await {
                    tracing::warn!(container = %c.name, reason = %why, "preStop hook failed");
                }
            });
            let _ = tokio::time::timeout_at(deadline, futures::future::join_all(runs)).await;
        }
        // SIGTERM gets what is left of the grace period, at least 2 s, as upstream.
        let term_deadline =
            deadline.max(tokio::time::Instant::now() + Duration::from_secs(2.min(grace)));
        for id in &running {
            if let Err(e) = self.k.containers.signal(id, rustix::process::Signal::TERM) {
                tracing::warn!(container = %id, error = %e, "sending SIGTERM");
            }
        }
        let waits = futures::future::join_all(running.iter().map(|id| self.k.containers.wait(id)));
        if tokio::time::timeout_at(term_deadline, waits).await.is_err() {
            for id in &running {
                let _ = self.k.containers.signal(id, rustix::process::Signal::KILL);
            }
            let waits =
                futures::future::join_all(running.iter().map(|id| self.k.containers.wait(id)));
            let _ = tokio::time::timeout(KILL_WAIT, waits).await;
        }
        for r in &self.records {
            if let Err(e) = self.k.containers.remove(&r.id) {
                tracing::warn!(container = %r.id, error = %e, "removing a container");
            }
        }
        self.k.tokens.forget(&self.uid);
        self.k.network.release(&self.uid);
        let dir = self.pod_dir();
        let cgroup = super::pod_cgroup(&self.uid);
        let removed = tokio::task::spawn_blocking(move || {
            skiff_embedded::container::cgroups::remove(&cgroup);
            sandbox::remove(&dir).map_err(|e| chain(&e))?;
            volumes::remove(&dir).map_err(|e| e.to_string())?;
            std::fs::remove_dir_all(&dir).or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e.to_string())
                }
            })
        })
        .await;
        if let Ok(Err(e)) | Err(e) = removed.map_err(|e| e.to_string()) {
            tracing::warn!(pod = %self.uid, error = %e, "removing the pod's folder");
        }
        let Some(pod) = pod else {
            // Gone from the API while the node was down: its log folder is found by
            // its uid, the last part of the name.
            let suffix = format!("_{}", self.uid);
            for e in std::fs::read_dir(&self.k.config.pod_log_dir)
                .into_iter()
                .flatten()
                .flatten()
            {
                if e.file_name().to_string_lossy().ends_with(&suffix) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
            return;
        };
        let _ = std::fs::remove_dir_all(self.log_dir(pod));
        let api: Api<Pod> = Api::namespaced(
            self.k.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let name = pod.metadata.name.clone().unwrap_or_default();
        match api.delete(&name, &params).await {
            Ok(_) => tracing::info!(pod = %pod_key(pod), "pod deleted"),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => tracing::warn!(pod = %pod_key(pod), error = %e, "deleting the pod"),
        }
    }
}

/// The pull policy the API server defaults to: Always for `:latest` or no tag,
/// IfNotPresent otherwise.
pub fn default_pull_policy(image: &str) -> &'static str {
    let name = image.split('@').next().unwrap_or(image);
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.split_once(':') {
        Some((_, tag)) if tag != "latest" => "IfNotPresent",
        _ => "Always",
    }
}

/// The downward API's field values of a pod on this node.
pub fn downward_fields(
    pod: &Pod,
    node: &str,
    node_ip: std::net::IpAddr,
) -> BTreeMap<String, String> {
    let m = &pod.metadata;
    let spec = pod.spec.as_ref();
    let mut f = BTreeMap::from([
        (
            "metadata.name".to_string(),
            m.name.clone().unwrap_or_default(),
        ),
        (
            "metadata.namespace".to_string(),
            m.namespace.clone().unwrap_or_default(),
        ),
        (
            "metadata.uid".to_string(),
            m.uid.clone().unwrap_or_default(),
        ),
        ("spec.nodeName".to_string(), node.to_string()),
        (
            "spec.serviceAccountName".to_string(),
            spec.and_then(|s| s.service_account_name.clone())
                .unwrap_or_default(),
        ),
        ("status.hostIP".to_string(), node_ip.to_string()),
        ("status.hostIPs".to_string(), node_ip.to_string()),
    ]);
    let pod_ip = if spec.and_then(|s| s.host_network) == Some(true) {
        node_ip.to_string()
    } else {
        pod.status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default()
    };
    f.insert("status.podIP".into(), pod_ip.clone());
    f.insert("status.podIPs".into(), pod_ip);
    for (k, v) in m.labels.iter().flatten() {
        f.insert(format!("metadata.labels['{k}']"), v.clone());
    }
    for (k, v) in m.annotations.iter().flatten() {
        f.insert(format!("metadata.annotations['{k}']"), v.clone());
    }
    f
}

/// An error and its causes on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
