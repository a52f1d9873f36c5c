//! What a simulated kubelet does with a pod bound to its node: pure decisions from the
//! pod and the time, and the statuses it writes. Nothing runs; the pod only looks as if
//! it did.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus,
    HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::net::Ipv4Addr;
use std::time::Duration;

/// What to do with a pod, decided from the pod alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing, until the pod changes.
    Nothing,
    /// Write the running status ([`running_status`]); the pod needs an address first.
    Run,
    /// The Job's pod has run its time: write [`succeeded_status`].
    Succeed,
    /// The Job's pod is running; look again at this time.
    WaitUntil(Timestamp),
    /// The pod is being deleted gracefully: finish with a zero grace period.
    Delete {
        /// The pod's uid, as the delete's precondition.
        uid: String,
    },
}

/// Whether a Job owns the pod: its pod runs to completion instead of forever.
pub fn owned_by_job(pod: &Pod) -> bool {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "Job" && o.api_version.split('/').next() == Some("batch"))
}

/// When the running pod started, as its status says.
fn start_time(pod: &Pod) -> Option<Timestamp> {
    pod.status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0)
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Decides what the node does next with `pod` at `now`; a Job's pods run `job_duration`.
pub fn decide(pod: &Pod, now: Timestamp, job_duration: Duration) -> Decision {
    if pod.metadata.deletion_timestamp.is_some() {
        return Decision::Delete {
            uid: pod.metadata.uid.clone().unwrap_or_default(),
        };
    }
    match phase(pod) {
        "Succeeded" | "Failed" => Decision::Nothing,
        "Running" if !looks_running(pod) => Decision::Run,
        "Running" if owned_by_job(pod) => {
            let start = start_time(pod).unwrap_or(now);
            let due = start.checked_add(job_duration).unwrap_or(Timestamp::MAX);
            if now >= due {
                Decision::Succeed
            } else {
                Decision::WaitUntil(due)
            }
        }
        "Running" => Decision::Nothing,
        _ => Decision::Run,
    }
}

/// Whether a Running pod's status is complete and its Ready condition is what it should
/// be (readiness gates can change it after the containers started).
fn looks_running(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    let containers = pod.spec.as_ref().map_or(0, |s| s.containers.len());
    let statuses = status.container_statuses.as_ref().map_or(0, Vec::len);
    let ready_now = condition(status, "Ready").map(|c| c.status.as_str());
    statuses == containers
        && status.pod_ip.is_some()
        && ready_now == Some(if gates_pass(pod) { "True" } else { "False" })
}

fn condition<'a>(status: &'a PodStatus, type_: &str) -> Option<&'a PodCondition> {
    status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// Whether every readiness gate's condition is True.
fn gates_pass(pod: &Pod) -> bool {
    let gates = pod
        .spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_deref())
        .unwrap_or_default();
    gates.iter().all(|g| {
        pod.status
            .as_ref()
            .and_then(|s| condition(s, &g.condition_type))
            .is_some_and(|c| c.status == "True")
    })
}

/// The conditions this node owns, each as (type, status, reason); the others on the
/// pod (readiness gates, DisruptionTarget…) are kept as they are.
const OWN_CONDITIONS: [&str; 5] = [
    "PodReadyToStartContainers",
    "Initialized",
    "Ready",
    "ContainersReady",
    "PodScheduled",
];

/// Sets the node's conditions on top of the pod's current ones: an unchanged status
/// keeps its transition time.
fn with_conditions(
    current: Option<&PodStatus>,
    now: Timestamp,
    own: [(&str, bool, Option<&str>); 5],
) -> Vec<PodCondition> {
    let old = current
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let mut out: Vec<PodCondition> = own
        .iter()
        .map(|&(type_, ok, reason)| {
            let status = if ok { "True" } else { "False" };
            let since = old
                .iter()
                .find(|c| c.type_ == type_ && c.status == status)
                .and_then(|c| c.last_transition_time.clone())
                .unwrap_or(Time(now));
            PodCondition {
                type_: type_.to_string(),
                status: status.to_string(),
                reason: reason.map(str::to_string),
                last_transition_time: Some(since),
                ..PodCondition::default()
            }
        })
        .collect();
    out.extend(
        old.iter()
            .filter(|c| !OWN_CONDITIONS.contains(&c.type_.as_str()))
            .cloned(),
    );
    out
}

fn container_id(pod: &Pod, name: &str) -> String {
    format!(
        "sim://{}/{name}",
        pod.metadata.uid.as_deref().unwrap_or_default()
    )
}

fn image_id(image: &str) -> String {
    format!("sim://{image}")
}

/// When a container started: what its status already says, else the pod's start.
fn started_at(old: Option<&[ContainerStatus]>, name: &str, start: &Time) -> Time {
    old.unwrap_or_default()
        .iter()
        .find(|s| s.name == name)
        .and_then(|s| s.state.as_ref())
        .and_then(|st| {
            st.running
                .as_ref()
                .and_then(|r| r.started_at.clone())
                .or_else(|| st.terminated.as_ref().and_then(|t| t.started_at.clone()))
        })
        .unwrap_or_else(|| start.clone())
}

fn running(pod: &Pod, c: &Container, since: Time) -> ContainerStatus {
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        image_id: image_id(c.image.as_deref().unwrap_or_default()),
        container_id: Some(container_id(pod, &c.name)),
        ready: true,
        started: Some(true),
        restart_count: 0,
        state: Some(ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(since),
            }),
            ..ContainerState::default()
        }),
        ..ContainerStatus::default()
    }
}

fn completed(pod: &Pod, c: &Container, since: Time, until: Time, ready: bool) -> ContainerStatus {
    let id = container_id(pod, &c.name);
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        image_id: image_id(c.image.as_deref().unwrap_or_default()),
        container_id: Some(id.clone()),
        ready,
        started: Some(false),
        restart_count: 0,
        state: Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                container_id: Some(id),
                exit_code: 0,
                reason: Some("Completed".to_string()),
                started_at: Some(since),
                finished_at: Some(until),
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        }),
        ..ContainerStatus::default()
    }
}

/// Whether an init container is a sidecar (it keeps running beside the others).
fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// The status of `pod` running on a node at `host_ip` with address `pod_ip`: init
/// containers completed (sidecars running), every container started and ready, and the
/// pod Ready unless a readiness gate holds it back. What the pod already reports (start
/// times, transition times) is kept.
pub fn running_status(pod: &Pod, host_ip: Ipv4Addr, pod_ip: Ipv4Addr, now: Timestamp) -> PodStatus {
    let current = pod.status.as_ref();
    let start = current
        .and_then(|s| s.start_time.clone())
        .unwrap_or(Time(now));
    let spec = pod.spec.as_ref();
    let old_init = current.and_then(|s| s.init_container_statuses.as_deref());
    let old = current.and_then(|s| s.container_statuses.as_deref());
    let init: Vec<ContainerStatus> = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let since = started_at(old_init, &c.name, &start);
            if is_sidecar(c) {
                running(pod, c, since)
            } else {
                completed(pod, c, since, start.clone(), true)
            }
        })
        .collect();
    let containers: Vec<ContainerStatus> = spec
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| running(pod, c, started_at(old, &c.name, &start)))
        .collect();
    let gates = gates_pass(pod);
    let conditions = with_conditions(
        current,
        now,
        [
            ("PodReadyToStartContainers", true, None),
            ("Initialized", true, None),
            ("Ready", gates, (!gates).then_some("ReadinessGatesNotReady")),
            ("ContainersReady", true, None),
            ("PodScheduled", true, None),
        ],
    );
    PodStatus {
        phase: Some("Running".to_string()),
        host_ip: Some(host_ip.to_string()),
        host_ips: Some(vec![HostIP {
            ip: host_ip.to_string(),
        }]),
        pod_ip: Some(pod_ip.to_string()),
        pod_ips: Some(vec![PodIP {
            ip: pod_ip.to_string(),
        }]),
        start_time: Some(start),
        conditions: Some(conditions),
        init_container_statuses: (!init.is_empty()).then_some(init),
        container_statuses: Some(containers),
        qos_class: current.and_then(|s| s.qos_class.clone()),
        ..PodStatus::default()
    }
}

/// The status of a Job's pod whose containers all exited 0 at `now`: phase Succeeded,
/// containers terminated Completed, the pod no longer Ready. Addresses and start time
/// stay as they were.
pub fn succeeded_status(pod: &Pod, now: Timestamp) -> PodStatus {
    let current = pod.status.as_ref();
    let start = current
        .and_then(|s| s.start_time.clone())
        .unwrap_or(Time(now));
    let spec = pod.spec.as_ref();
    let old_init = current.and_then(|s| s.init_container_statuses.as_deref());
    let old = current.and_then(|s| s.container_statuses.as_deref());
    let init: Vec<ContainerStatus> = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let since = started_at(old_init, &c.name, &start);
            // A sidecar is stopped once the main containers are done.
            let until = if is_sidecar(c) {
                Time(now)
            } else {
                start.clone()
            };
            completed(pod, c, since, until, !is_sidecar(c))
        })
        .collect();
    let containers: Vec<ContainerStatus> = spec
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| completed(pod, c, started_at(old, &c.name, &start), Time(now), false))
        .collect();
    let done = Some("PodCompleted");
    let conditions = with_conditions(
        current,
        now,
        [
            ("PodReadyToStartContainers", false, None),
            ("Initialized", true, done),
            ("Ready", false, done),
            ("ContainersReady", false, done),
            ("PodScheduled", true, None),
        ],
    );
    PodStatus {
        phase: Some("Succeeded".to_string()),
        host_ip: current.and_then(|s| s.host_ip.clone()),
        host_ips: current.and_then(|s| s.host_ips.clone()),
        pod_ip: current.and_then(|s| s.pod_ip.clone()),
        pod_ips: current.and_then(|s| s.pod_ips.clone()),
        start_time: Some(start),
        conditions: Some(conditions),
        init_container_statuses: (!init.is_empty()).then_some(init),
        container_statuses: Some(containers),
        qos_class: current.and_then(|s| s.qos_class.clone()),
        ..PodStatus::default()
    }
}

/// The pod's address as its status gives it, if it has one.
pub fn current_ip(pod: &Pod) -> Option<Ipv4Addr> {
    pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
}

/// Whether the pod shares its node's network namespace (and so its address).
pub fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodReadinessGate, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    const JOB: Duration = Duration::from_secs(5);
    const HOST: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
    const IP: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 7);

    fn container(name: &str) -> Container {
        Container {
            name: name.to_string(),
            image: Some(format!("{name}:1")),
            ..Container::default()
        }
    }

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".to_string()),
                namespace: Some("default".to_string()),
                uid: Some("u1".to_string()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some("sim-0".to_string()),
                containers: vec![container("app"), container("log")],
                init_containers: Some(vec![container("setup")]),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some("Pending".to_string()),
                qos_class: Some("BestEffort".to_string()),
                conditions: Some(vec![PodCondition {
                    type_: "PodScheduled".to_string(),
                    status: "True".to_string(),
                    last_transition_time: Some(Time(ts(10))),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
        }
    }

    fn job_pod() -> Pod {
        let mut p = pod();
        p.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "batch/v1".to_string(),
            kind: "Job".to_string(),
            name: "j".to_string(),
            uid: "j1".to_string(),
            controller: Some(true),
            ..OwnerReference::default()
        }]);
        p
    }

    fn cond<'a>(s: &'a PodStatus, t: &str) -> &'a PodCondition {
        condition(s, t).unwrap()
    }

    #[test]
    fn a_pending_pod_runs_ready_with_its_addresses() {
        let p = pod();
        assert_eq!(decide(&p, ts(20), JOB), Decision::Run);
        let s = running_status(&p, HOST, IP, ts(20));
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.128.0.7"));
        assert_eq!(s.pod_ips.as_ref().unwrap()[0].ip, "10.128.0.7");
        assert_eq!(s.host_ip.as_deref(), Some("10.99.0.1"));
        assert_eq!(s.start_time, Some(Time(ts(20))));
        assert_eq!(s.qos_class.as_deref(), Some("BestEffort"));

        let cs = s.container_statuses.as_ref().unwrap();
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0].name, "app");
        assert!(cs[0].ready);
        assert_eq!(cs[0].started, Some(true));
        assert_eq!(cs[0].restart_count, 0);
        assert_eq!(cs[0].image, "app:1");
        assert_eq!(cs[0].image_id, "sim://app:1");
        assert_eq!(cs[0].container_id.as_deref(), Some("sim://u1/app"));
        let run = cs[0].state.as_ref().unwrap().running.as_ref().unwrap();
        assert_eq!(run.started_at, Some(Time(ts(20))));

        let init = &s.init_container_statuses.as_ref().unwrap()[0];
        let t = init.state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(t.reason.as_deref(), Some("Completed"));
        assert_eq!(t.exit_code, 0);

        for c in [
            "PodReadyToStartContainers",
            "Initialized",
            "ContainersReady",
            "Ready",
        ] {
            assert_eq!(cond(&s, c).status, "True", "{c}");
            assert_eq!(cond(&s, c).last_transition_time, Some(Time(ts(20))));
        }
        // Already true: keeps the scheduler's transition time.
        assert_eq!(
            cond(&s, "PodScheduled").last_transition_time,
            Some(Time(ts(10)))
        );

        // Written back, the pod is done: nothing more to do, ever.
        let mut p = p;
        p.status = Some(s);
        assert_eq!(decide(&p, ts(1000), JOB), Decision::Nothing);
        // Writing again changes nothing (idempotent), even later.
        let again = running_status(&p, HOST, IP, ts(50));
        assert_eq!(Some(&again), p.status.as_ref());
    }

    #[test]
    fn a_job_pod_succeeds_after_its_duration() {
        let mut p = job_pod();
        assert_eq!(decide(&p, ts(20), JOB), Decision::Run);
        p.status = Some(running_status(&p, HOST, IP, ts(20)));
        assert_eq!(decide(&p, ts(22), JOB), Decision::WaitUntil(ts(25)));
        assert_eq!(decide(&p, ts(25), JOB), Decision::Succeed);

        let s = succeeded_status(&p, ts(25));
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.128.0.7"));
        assert_eq!(s.start_time, Some(Time(ts(20))));
        for c in s.container_statuses.as_ref().unwrap() {
            assert!(!c.ready);
            let t = c.state.as_ref().unwrap().terminated.as_ref().unwrap();
            assert_eq!(t.exit_code, 0);
            assert_eq!(t.reason.as_deref(), Some("Completed"));
            assert_eq!(t.started_at, Some(Time(ts(20))));
            assert_eq!(t.finished_at, Some(Time(ts(25))));
        }
        assert_eq!(cond(&s, "Ready").status, "False");
        assert_eq!(cond(&s, "Ready").reason.as_deref(), Some("PodCompleted"));
        assert_eq!(cond(&s, "Ready").last_transition_time, Some(Time(ts(25))));
        assert_eq!(
            cond(&s, "Initialized").last_transition_time,
            Some(Time(ts(20)))
        );

        p.status = Some(s);
        assert_eq!(decide(&p, ts(100), JOB), Decision::Nothing);
    }

    #[test]
    fn a_deleted_pod_is_finished_with_its_uid() {
        let mut p = pod();
        p.metadata.deletion_timestamp = Some(Time(ts(30)));
        assert_eq!(
            decide(&p, ts(30), JOB),
            Decision::Delete {
                uid: "u1".to_string()
            }
        );
        // Even once it has finished.
        p.status.as_mut().unwrap().phase = Some("Succeeded".to_string());
        assert!(matches!(decide(&p, ts(30), JOB), Decision::Delete { .. }));
    }

    #[test]
    fn readiness_gates_hold_ready_back_until_true() {
        let mut p = pod();
        p.spec.as_mut().unwrap().readiness_gates = Some(vec![PodReadinessGate {
            condition_type: "example.com/lb".to_string(),
        }]);
        p.status = Some(running_status(&p, HOST, IP, ts(20)));
        let s = p.status.as_ref().unwrap();
        assert_eq!(cond(s, "Ready").status, "False");
        assert_eq!(cond(s, "ContainersReady").status, "True");
        assert_eq!(decide(&p, ts(21), JOB), Decision::Nothing);

        // The gate opens: Ready follows, the gate's condition is kept.
        p.status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()
            .push(PodCondition {
                type_: "example.com/lb".to_string(),
                status: "True".to_string(),
                ..PodCondition::default()
            });
        assert_eq!(decide(&p, ts(22), JOB), Decision::Run);
        let s = running_status(&p, HOST, IP, ts(22));
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(cond(&s, "Ready").last_transition_time, Some(Time(ts(22))));
        assert_eq!(cond(&s, "example.com/lb").status, "True");
        assert_eq!(s.start_time, Some(Time(ts(20))));
    }

    #[test]
    fn sidecars_keep_running() {
        let mut p = pod();
        let mut sidecar = container("proxy");
        sidecar.restart_policy = Some("Always".to_string());
        p.spec.as_mut().unwrap().init_containers = Some(vec![container("setup"), sidecar]);
        let s = running_status(&p, HOST, IP, ts(20));
        let init = s.init_container_statuses.as_ref().unwrap();
        assert!(init[0].state.as_ref().unwrap().terminated.is_some());
        assert!(init[1].state.as_ref().unwrap().running.is_some());
        assert!(init[1].ready);
    }

    #[test]
    fn only_batch_jobs_count_as_jobs() {
        let mut p = job_pod();
        assert!(owned_by_job(&p));
        p.metadata.owner_references.as_mut().unwrap()[0].api_version = "example.com/v1".to_string();
        assert!(!owned_by_job(&p));
        assert!(!owned_by_job(&pod()));
    }
}
