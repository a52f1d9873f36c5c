//! The pod's status as upstream's kubelet writes it, from what the runtime reports: each
//! container's state, last state and restart count, the pod's phase and its conditions.
//! Pure functions over plain values.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, PodCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// One run of a container, as the runtime reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The runtime's id.
    pub id: String,
    /// 0 for the first run, then one more per restart.
    pub attempt: u32,
    /// Where it is.
    pub state: RunState,
}

/// Where a run is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    /// Its shim is starting it.
    Starting,
    /// It runs.
    Running {
        /// Since when.
        started_at: Timestamp,
    },
    /// It ended.
    Exited {
        /// When it started.
        started_at: Timestamp,
        /// When it ended.
        finished_at: Timestamp,
        /// Its exit code.
        exit_code: i32,
        /// The signal that ended it.
        signal: Option<i32>,
        /// The OOM killer ended it.
        oom_killed: bool,
    },
    /// It could not start, or its shim vanished.
    Failed(String),
}

impl RunState {
    /// Whether it is over.
    pub fn is_done(&self) -> bool {
        matches!(self, RunState::Exited { .. } | RunState::Failed(_))
    }

    /// Whether it ended with exit code 0.
    pub fn succeeded(&self) -> bool {
        matches!(self, RunState::Exited { exit_code: 0, .. })
    }
}

/// The container ID as the API shows it.
pub fn container_id(id: &str) -> String {
    format!("{}://{id}", skiff_core::defaults::RUNTIME_NAME)
}

fn terminated(run: &Run) -> Option<ContainerStateTerminated> {
    match &run.state {
        RunState::Exited {
            started_at,
            finished_at,
            exit_code,
            signal,
            oom_killed,
        } => Some(ContainerStateTerminated {
            container_id: Some(container_id(&run.id)),
            exit_code: *exit_code,
            signal: *signal,
            reason: Some(
                if *oom_killed {
                    "OOMKilled"
                } else if *exit_code == 0 {
                    "Completed"
                } else {
                    "Error"
                }
                .to_string(),
            ),
            started_at: Some(Time(*started_at)),
            finished_at: Some(Time(*finished_at)),
            message: None,
        }),
        RunState::Failed(message) => Some(ContainerStateTerminated {
            container_id: Some(container_id(&run.id)),
            exit_code: 128,
            reason: Some("StartError".to_string()),
            message: Some(message.clone()),
            ..ContainerStateTerminated::default()
        }),
        _ => None,
    }
}

/// What the kubelet is waiting on for a container that does not run (image pull,
/// back-off, a config error), if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// Upstream's reason (`ContainerCreating`, `CrashLoopBackOff`, `ErrImagePull`, ...).
    pub reason: String,
    /// Its message.
    pub message: Option<String>,
}

/// The status of one container.
pub struct Inputs<'a> {
    /// The container's name.
    pub name: &'a str,
    /// The image as the pod names it.
    pub image: &'a str,
    /// The image's ID (`<name>@sha256:…`), once resolved.
    pub image_id: &'a str,
    /// Its latest run.
    pub current: Option<&'a Run>,
    /// The run before.
    pub previous: Option<&'a Run>,
    /// Set when the latest run is over and no new one is underway, or there is none.
    pub waiting: Option<&'a Waiting>,
    /// Its readiness (no readiness probe: ready while it runs).
    pub ready: bool,
}

/// A container's status.
pub fn container_status(i: &Inputs) -> ContainerStatus {
    let restart_count = i.current.map_or(0, |r| r.attempt as i32);
    let last_terminated = |r: Option<&Run>| {
        r.and_then(terminated).map(|t| ContainerState {
            terminated: Some(t),
            ..ContainerState::default()
        })
    };
    let (state, last_state) = match (i.current, i.waiting) {
        (Some(run), _) if matches!(run.state, RunState::Running { .. }) => {
            let RunState::Running { started_at } = run.state else {
                unreachable!("matched above")
            };
            (
                ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: Some(Time(started_at)),
                    }),
                    ..ContainerState::default()
                },
                last_terminated(i.previous),
            )
        }
        (current, Some(w)) => (
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(w.reason.clone()),
                    message: w.message.clone(),
                }),
                ..ContainerState::default()
            },
            // A container waiting to run again shows its last run as the last state.
            last_terminated(current.filter(|r| r.state.is_done()).or(i.previous)),
        ),
        (Some(run), None) if run.state.is_done() => (
            ContainerState {
                terminated: terminated(run),
                ..ContainerState::default()
            },
            last_terminated(i.previous),
        ),
        _ => (
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("ContainerCreating".to_string()),
                    message: None,
                }),
                ..ContainerState::default()
            },
            last_terminated(i.previous),
        ),
    };
    let running = state.running.is_some();
    ContainerStatus {
        name: i.name.to_string(),
        image: i.image.to_string(),
        image_id: i.image_id.to_string(),
        container_id: i
            .current
            .filter(|r| r.state != RunState::Starting)
            .map(|r| container_id(&r.id)),
        ready: running && i.ready,
        started: Some(running),
        restart_count,
        state: Some(state),
        last_state: Some(last_state.unwrap_or_default()),
        ..ContainerStatus::default()
    }
}

/// The pod's phase from its containers' statuses, as upstream's `getPhase`.
pub fn phase(
    init_done: bool,
    init_failed: bool,
    statuses: &[ContainerStatus],
    restart_policy: &str,
) -> &'static str {
    if init_failed {
        return "Failed";
    }
    if !init_done {
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in statuses {
        let state = s.state.clone().unwrap_or_default();
        if state.running.is_some() {
            running += 1;
        } else if let Some(t) = state.terminated {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if state.waiting.is_some() {
            // A container that ran before and waits to run again counts as running.
            let ran = s
                .last_state
                .as_ref()
                .is_some_and(|l| l.terminated.is_some());
            if ran {
                running += 1;
            } else {
                waiting += 1;
            }
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        if restart_policy == "Always" {
            "Running"
        } else if succeeded == stopped {
            "Succeeded"
        } else {
            "Failed"
        }
    } else {
        "Pending"
    }
}

/// One pod condition, keeping its transition time when its status did not change.
pub fn condition(
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    now: Timestamp,
    previous: &[PodCondition],
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    PodCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: if ok { None } else { reason.map(str::to_string) },
        last_transition_time: Some(since),
        ..PodCondition::default()
    }
}

/// The back-off before restarting a container that has restarted `restarts` times:
/// none before the first restart, then 10 s doubling to 5 minutes, as upstream.
pub fn backoff(restarts: u32) -> std::time::Duration {
    if restarts == 0 {
        return std::time::Duration::ZERO;
    }
    let secs = 10u64.saturating_mul(1u64 << (restarts - 1).min(10));
    std::time::Duration::from_secs(secs.min(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn exited(attempt: u32, code: i32, oom: bool) -> Run {
        Run {
            id: format!("c{attempt}"),
            attempt,
            state: RunState::Exited {
                started_at: ts(10),
                finished_at: ts(20),
                exit_code: code,
                signal: None,
                oom_killed: oom,
            },
        }
    }

    fn inputs<'a>(
        current: Option<&'a Run>,
        previous: Option<&'a Run>,
        waiting: Option<&'a Waiting>,
    ) -> Inputs<'a> {
        Inputs {
            name: "c",
            image: "busybox",
            image_id: "docker.io/library/busybox@sha256:00",
            current,
            previous,
            waiting,
            ready: true,
        }
    }

    #[test]
    fn running_then_crash_loop() {
        let running = Run {
            id: "c1".into(),
            attempt: 1,
            state: RunState::Running { started_at: ts(30) },
        };
        let prev = exited(0, 1, false);
        let s = container_status(&inputs(Some(&running), Some(&prev), None));
        assert!(s.ready);
        assert_eq!(s.restart_count, 1);
        assert_eq!(s.container_id.as_deref(), Some("skiff://c1"));
        let last = s.last_state.unwrap().terminated.unwrap();
        assert_eq!((last.exit_code, last.reason.as_deref()), (1, Some("Error")));

        let crashed = exited(1, 137, true);
        let w = Waiting {
            reason: "CrashLoopBackOff".into(),
            message: Some("back-off 10s".into()),
        };
        let s = container_status(&inputs(Some(&crashed), Some(&prev), Some(&w)));
        assert_eq!(
            s.state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("CrashLoopBackOff")
        );
        assert_eq!(
            s.last_state.unwrap().terminated.unwrap().reason.as_deref(),
            Some("OOMKilled")
        );
        assert!(!s.ready);
        assert_eq!(
            phase(
                true,
                false,
                &[container_status(&inputs(
                    Some(&crashed),
                    Some(&prev),
                    Some(&w)
                ))],
                "Always"
            ),
            "Running"
        );
    }

    #[test]
    fn phases() {
        let done = exited(0, 0, false);
        let failed = exited(0, 2, false);
        let ok = container_status(&inputs(Some(&done), None, None));
        let bad = container_status(&inputs(Some(&failed), None, None));
        let new = container_status(&inputs(None, None, None));
        assert_eq!(
            phase(true, false, std::slice::from_ref(&ok), "Never"),
            "Succeeded"
        );
        assert_eq!(phase(true, false, &[ok.clone(), bad], "Never"), "Failed");
        assert_eq!(phase(true, false, &[ok, new.clone()], "Never"), "Pending");
        assert_eq!(
            phase(false, false, std::slice::from_ref(&new), "Always"),
            "Pending"
        );
        assert_eq!(phase(false, true, &[new], "Never"), "Failed");
    }

    #[test]
    fn backoff_doubles_to_five_minutes() {
        assert_eq!(backoff(0).as_secs(), 0);
        assert_eq!(backoff(1).as_secs(), 10);
        assert_eq!(backoff(2).as_secs(), 20);
        assert_eq!(backoff(6).as_secs(), 300);
        assert_eq!(backoff(60).as_secs(), 300);
    }
}
