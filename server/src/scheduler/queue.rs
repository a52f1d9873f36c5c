//! The scheduling queue: pods waiting to be tried, highest priority first then oldest;
//! pods backing off after an error; pods found unschedulable, parked until the cluster
//! changes (then retried once their back-off is over) or their longer idle back-off ends.
//! Time is passed in, so tests need no clock.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

/// The back-off before a retry after `attempts` failures when something changed (or after
/// an API error): 1 s, doubling, at most 10 s (upstream's defaults).
pub fn backoff(attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(10);
    Duration::from_secs(1u64 << exp).min(Duration::from_secs(10))
}

/// How long an unschedulable pod waits when nothing in the cluster changes: 2 s, doubling,
/// at most 60 s. These idle retries stand in for a change the scheduler has no event
/// for; they are not attempts, so they do not lengthen [`backoff`] (upstream parks such
/// a pod, with its attempts unchanged, until an event or a 5-minute flush).
pub fn idle_retry(attempts: u32) -> Duration {
    let exp = attempts.clamp(1, 10);
    Duration::from_secs(1u64 << exp).min(Duration::from_secs(60))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Active,
    Backoff,
    Unschedulable { since: Instant },
    InFlight,
}

#[derive(Debug)]
struct Entry {
    pod: Arc<Pod>,
    priority: i32,
    state: State,
    /// Tries that failed, counting neither idle retries nor the one in flight.
    attempts: u32,
    /// Idle retries since the last real attempt; they space out the next idle retry.
    idle_rounds: u32,
    /// The try in flight is an idle retry.
    idle: bool,
    /// Bumped on every state change; heap items carrying an older one are stale.
    generation: u64,
}

/// The queue. Keys are `namespace/name`.
#[derive(Debug, Default)]
pub struct Queue {
    entries: HashMap<String, Entry>,
    active: BinaryHeap<(i32, Reverse<u64>, String)>,
    timers: BinaryHeap<Reverse<(Instant, u64, String)>>,
    unschedulable: HashSet<String>,
    changed: bool,
    next_generation: u64,
}

fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// Whether an update of a parked pod may change the verdict (spec or labels changed; not
/// a status update such as this scheduler's own condition).
fn relevant_update(old: &Pod, new: &Pod) -> bool {
    old.spec != new.spec || old.metadata.labels != new.metadata.labels
}

impl Queue {
    fn bump(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    fn activate(&mut self, key: &str) {
        self.activate_as(key, false);
    }

    fn activate_as(&mut self, key: &str, idle: bool) {
        let generation = self.bump();
        if let Some(e) = self.entries.get_mut(key) {
            e.state = State::Active;
            e.idle = idle;
            e.generation = generation;
            self.active
                .push((e.priority, Reverse(generation), key.to_owned()));
        }
        self.unschedulable.remove(key);
    }

    fn wait_until(&mut self, key: &str, until: Instant, state: State) {
        let generation = self.bump();
        if let Some(e) = self.entries.get_mut(key) {
            e.state = state;
            e.generation = generation;
            self.timers
                .push(Reverse((until, generation, key.to_owned())));
        }
    }

    /// Adds a pod to schedule, or updates one already queued.
    pub fn upsert(&mut self, key: &str, pod: Arc<Pod>, now: Instant) {
        match self.entries.get_mut(key) {
            None => {
                self.entries.insert(
                    key.to_owned(),
                    Entry {
                        priority: priority(&pod),
                        pod,
                        state: State::Active,
                        attempts: 0,
                        idle_rounds: 0,
                        idle: false,
                        generation: 0,
                    },
                );
                self.activate(key);
            }
            Some(e) => {
                let relevant = relevant_update(&e.pod, &pod);
                e.priority = priority(&pod);
                e.pod = pod;
                if let (State::Unschedulable { .. }, true) = (e.state, relevant) {
                    let until = now + backoff(e.attempts);
                    self.unschedulable.remove(key);
                    self.wait_until(key, until, State::Backoff);
                }
            }
        }
    }

    /// Forgets a pod (deleted, bound, or no longer for this scheduler).
    pub fn remove(&mut self, key: &str) {
        self.entries.remove(key);
        self.unschedulable.remove(key);
    }

    /// Whether the pod is known to the queue (in any state).
    #[cfg(test)]
    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// The next pod to try; it is in flight until [`Queue::done`], [`Queue::unschedulable`]
    /// or [`Queue::retry_later`].
    pub fn pop(&mut self) -> Option<(String, Arc<Pod>)> {
        while let Some((_, Reverse(generation), key)) = self.active.pop() {
            let Some(e) = self.entries.get_mut(&key) else {
                continue;
            };
            if e.generation != generation || e.state != State::Active {
                continue;
            }
            e.state = State::InFlight;
            return Some((key, e.pod.clone()));
        }
        None
    }

    /// Whether a pod is waiting to be tried now.
    pub fn has_active(&self) -> bool {
        !self.active.is_empty()
    }

    /// The pod was bound (or someone else bound it).
    pub fn done(&mut self, key: &str) {
        self.remove(key);
    }

    /// No node fits: park the pod until the cluster changes or its idle back-off ends.
    pub fn unschedulable(&mut self, key: &str, now: Instant) {
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        if e.idle {
            e.idle_rounds += 1;
        } else {
            e.attempts += 1;
            e.idle_rounds = 0;
        }
        let until = now + idle_retry(e.attempts + e.idle_rounds);
        self.unschedulable.insert(key.to_owned());
        self.wait_until(key, until, State::Unschedulable { since: now });
    }

    /// An error (not a verdict): retry after the back-off.
    pub fn retry_later(&mut self, key: &str, now: Instant) {
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        e.attempts += 1;
        let until = now + backoff(e.attempts);
        self.wait_until(key, until, State::Backoff);
    }

    /// Something changed that may let parked pods fit (a node came or changed, a pod went).
    /// Cheap: the work happens once in the next [`Queue::promote`].
    pub fn cluster_changed(&mut self) {
        if !self.unschedulable.is_empty() {
            self.changed = true;
        }
    }

    /// Moves pods whose time has come to the active queue.
    pub fn promote(&mut self, now: Instant) {
        if std::mem::take(&mut self.changed) {
            let parked: Vec<String> = self.unschedulable.drain().collect();
            for key in parked {
                let Some(e) = self.entries.get(&key) else {
                    continue;
                };
                let State::Unschedulable { since } = e.state else {
                    continue;
                };
                let until = since + backoff(e.attempts);
                if until <= now {
                    self.activate(&key);
                } else {
                    self.wait_until(&key, until, State::Backoff);
                }
            }
        }
        while let Some(Reverse((when, generation, _))) = self.timers.peek() {
            if *when > now {
                break;
            }
            let generation = *generation;
            let Some(Reverse((_, _, key))) = self.timers.pop() else {
                break;
            };
            let state = self
                .entries
                .get(&key)
                .filter(|e| e.generation == generation)
                .map(|e| e.state);
            match state {
                Some(State::Backoff) => self.activate(&key),
                Some(State::Unschedulable { .. }) => self.activate_as(&key, true),
                _ => {}
            }
        }
    }

    /// When the next timer fires (possibly a stale one: waking early is harmless).
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((when, _, _))| *when)
    }

    /// Drops pods not in `keep` (after a relist of all pods).
    pub fn retain(&mut self, keep: &HashSet<String>) {
        self.entries.retain(|k, _| keep.contains(k));
        self.unschedulable.retain(|k| keep.contains(k));
    }

    /// Number of pods known to the queue.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Number of pods parked as unschedulable.
    #[cfg(test)]
    pub fn unschedulable_count(&self) -> usize {
        self.entries
            .values()
            .filter(|e| matches!(e.state, State::Unschedulable { .. }))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;

    fn pod(prio: i32) -> Arc<Pod> {
        Arc::new(Pod {
            spec: Some(PodSpec {
                priority: Some(prio),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    #[test]
    fn back_off_durations() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(5), Duration::from_secs(10));
        assert_eq!(backoff(100), Duration::from_secs(10));
        assert_eq!(idle_retry(1), Duration::from_secs(2));
        assert_eq!(idle_retry(5), Duration::from_secs(32));
        assert_eq!(idle_retry(6), Duration::from_secs(60));
        assert_eq!(idle_retry(1000), Duration::from_secs(60));
    }

    #[test]
    fn priority_then_fifo() {
        let now = Instant::now();
        let mut q = Queue::default();
        q.upsert("a", pod(0), now);
        q.upsert("b", pod(10), now);
        q.upsert("c", pod(0), now);
        assert_eq!(q.pop().unwrap().0, "b");
        assert_eq!(q.pop().unwrap().0, "a");
        assert_eq!(q.pop().unwrap().0, "c");
        assert!(q.pop().is_none());
        // In flight: an update does not requeue it.
        q.upsert("a", pod(0), now);
        assert!(q.pop().is_none());
        q.done("a");
        assert!(!q.contains("a"));
    }

    #[test]
    fn unschedulable_pods_wait_for_a_change_or_the_idle_back_off() {
        let t0 = Instant::now();
        let mut q = Queue::default();
        q.upsert("p", pod(0), t0);
        q.pop();
        q.unschedulable("p", t0);
        assert_eq!(q.unschedulable_count(), 1);
        // Nothing changes: not retried before the idle back-off (2 s), then retried.
        q.promote(t0 + Duration::from_millis(1900));
        assert!(q.pop().is_none());
        assert_eq!(q.next_wakeup(), Some(t0 + Duration::from_secs(2)));
        q.promote(t0 + Duration::from_secs(2));
        assert_eq!(q.pop().unwrap().0, "p");

        // Second failure at t1; a change at t1 + 0.5 s waits out the 2 s back-off.
        let t1 = t0 + Duration::from_secs(3);
        q.unschedulable("p", t1);
        q.cluster_changed();
        q.promote(t1 + Duration::from_millis(500));
        assert!(q.pop().is_none());
        q.promote(t1 + Duration::from_secs(2));
        assert_eq!(q.pop().unwrap().0, "p");

        // A change after the back-off is over retries at once.
        let t2 = t1 + Duration::from_secs(10);
        q.unschedulable("p", t2);
        q.cluster_changed();
        q.promote(t2 + Duration::from_secs(5));
        assert_eq!(q.pop().unwrap().0, "p");
    }

    #[test]
    fn idle_retries_do_not_lengthen_the_back_off_after_a_change() {
        let t0 = Instant::now();
        let mut q = Queue::default();
        q.upsert("p", pod(0), t0);
        q.pop();
        q.unschedulable("p", t0);
        // Idle retries at +2 s, +6 s, +14 s, each spaced further apart...
        let mut t = t0;
        for wait in [2, 4, 8] {
            t += Duration::from_secs(wait);
            q.promote(t);
            assert_eq!(q.pop().unwrap().0, "p");
            q.unschedulable("p", t);
        }
        assert_eq!(q.next_wakeup(), Some(t + Duration::from_secs(16)));
        // ...but a change 1 s after the last one retries it after upstream's 1 s
        // back-off for one failed attempt, not the 8 s of four.
        q.cluster_changed();
        q.promote(t + Duration::from_secs(1));
        assert_eq!(q.pop().unwrap().0, "p");
    }

    #[test]
    fn status_updates_do_not_wake_parked_pods_but_spec_updates_do() {
        let t0 = Instant::now();
        let mut q = Queue::default();
        q.upsert("p", pod(0), t0);
        q.pop();
        q.unschedulable("p", t0);
        q.upsert("p", pod(0), t0);
        q.promote(t0 + Duration::from_secs(1));
        assert!(q.pop().is_none());
        q.upsert("p", pod(5), t0 + Duration::from_secs(1));
        q.promote(t0 + Duration::from_secs(2));
        assert_eq!(q.pop().unwrap().0, "p");
    }

    #[test]
    fn errors_back_off_and_removal_cancels_timers() {
        let t0 = Instant::now();
        let mut q = Queue::default();
        q.upsert("p", pod(0), t0);
        q.pop();
        q.retry_later("p", t0);
        q.promote(t0 + Duration::from_millis(999));
        assert!(q.pop().is_none());
        q.promote(t0 + Duration::from_secs(1));
        assert_eq!(q.pop().unwrap().0, "p");
        q.retry_later("p", t0);
        q.remove("p");
        q.promote(t0 + Duration::from_secs(60));
        assert!(q.pop().is_none());
        assert_eq!(q.len(), 0);
    }
}
