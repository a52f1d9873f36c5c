//! core/v1 Events as upstream's event recorder writes them, so `kubectl describe` shows
//! the Events section: one Event per distinct (object, type, reason, message), and a
//! repeat patches that Event's `count` and `lastTimestamp` instead of adding another.
//!
//! Like upstream's correlator, the recorder also keeps a busy object from flooding the
//! datastore: past ten distinct messages of one reason within ten minutes, they are
//! combined into one Event ("(combined from similar events): …") whose count grows; and
//! each object gets a burst of 25 writes, refilled at one per five minutes, beyond which
//! events are dropped (a 10,000-replica ReplicaSet writes a few dozen Events, not
//! 10,000).

use super::driver::{Clock, Effects, Kind};
use k8s_openapi::api::core::v1::ObjectReference;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

/// How many distinct events the recorder remembers for aggregation (upstream's LRU size).
const REMEMBERED: usize = 4096;
/// Distinct messages of one (object, type, reason) before they are combined...
const AGGREGATE_MAX: usize = 10;
/// ...within this many seconds.
const AGGREGATE_WINDOW_SECONDS: i64 = 600;
/// The prefix of a combined event's message.
const COMBINED: &str = "(combined from similar events): ";
/// Writes an object's events may burst to...
const SPAM_BURST: f64 = 25.0;
/// ...refilled at this many per second (one per five minutes).
const SPAM_REFILL_PER_SECOND: f64 = 1.0 / 300.0;

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Something expected happened.
    Normal,
    /// Something may need attention.
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Identity {
    kind: String,
    api_version: String,
    namespace: String,
    name: String,
    uid: String,
    type_: EventType,
    reason: String,
    /// The message; empty for the combined event of a reason.
    message: String,
    /// Whether this is the combined event of its reason.
    combined: bool,
}

#[derive(Debug, Clone)]
struct Seen {
    /// The Event written for it, if one was (a spam-filtered one was not).
    name: Option<String>,
    count: i32,
}

/// The messages seen lately for one (object, type, reason).
struct Similar {
    messages: HashSet<String>,
    last: jiff::Timestamp,
}

/// A token bucket of writes for one object.
struct Bucket {
    tokens: f64,
    last: jiff::Timestamp,
}

/// What the recorder remembers between events.
#[derive(Default)]
struct Memory {
    seen: HashMap<Identity, Seen>,
    order: VecDeque<Identity>,
    similar: HashMap<Identity, Similar>,
    buckets: HashMap<String, Bucket>,
}

impl Memory {
    fn remember(&mut self, id: Identity, seen: Seen) {
        if self.seen.insert(id.clone(), seen).is_none() {
            self.order.push_back(id);
            while self.order.len() > REMEMBERED {
                if let Some(old) = self.order.pop_front() {
                    self.seen.remove(&old);
                }
            }
        }
    }

    /// Upstream's aggregator: the identity (and message) an event is written under.
    fn aggregate(&mut self, id: Identity, now: jiff::Timestamp) -> (Identity, String) {
        let key = Identity {
            message: String::new(),
            combined: true,
            ..id.clone()
        };
        if self.similar.len() > REMEMBERED {
            self.similar.clear();
        }
        let record = self.similar.entry(key.clone()).or_insert_with(|| Similar {
            messages: HashSet::new(),
            last: now,
        });
        if (now - record.last).get_seconds() > AGGREGATE_WINDOW_SECONDS {
            record.messages.clear();
        }
        record.messages.insert(id.message.clone());
        record.last = now;
        if record.messages.len() < AGGREGATE_MAX {
            let message = id.message.clone();
            return (id, message);
        }
        // Keep the set from growing past the threshold, as upstream does.
        if let Some(any) = record.messages.iter().next().cloned() {
            record.messages.remove(&any);
        }
        (key, format!("{COMBINED}{}", id.message))
    }

    /// Upstream's spam filter: whether the object at `key` may have one more write.
    fn allow(&mut self, key: String, now: jiff::Timestamp) -> bool {
        if self.buckets.len() > REMEMBERED {
            self.buckets.clear();
        }
        let b = self.buckets.entry(key).or_insert(Bucket {
            tokens: SPAM_BURST,
            last: now,
        });
        let elapsed = (now - b.last)
            .total(jiff::Unit::Second)
            .unwrap_or(0.0)
            .max(0.0);
        b.tokens = (b.tokens + elapsed * SPAM_REFILL_PER_SECOND).min(SPAM_BURST);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Writes Events for one component (`source.component`, `reportingComponent`).
pub struct Recorder {
    effects: Arc<dyn Effects>,
    clock: Arc<dyn Clock>,
    component: String,
    memory: Mutex<Memory>,
    last_nanos: Mutex<i128>,
}

impl Recorder {
    /// A recorder writing through `effects` as `component`.
    pub fn new(effects: Arc<dyn Effects>, clock: Arc<dyn Clock>, component: &str) -> Self {
        Recorder {
            effects,
            clock,
            component: component.to_string(),
            memory: Mutex::new(Memory::default()),
            last_nanos: Mutex::new(0),
        }
    }

    /// Records an event about `involved`. Failures are logged, never returned: an event
    /// lost must not fail the work it describes (upstream drops them too).
    pub async fn record(
        &self,
        involved: &ObjectReference,
        type_: EventType,
        reason: &str,
        message: &str,
    ) {
        if let Err(e) = self.try_record(involved, type_, reason, message).await {
            tracing::debug!(error = %e, reason, "could not record an event");
        }
    }

    async fn try_record(
        &self,
        involved: &ObjectReference,
        type_: EventType,
        reason: &str,
        message: &str,
    ) -> Result<(), kube::Error> {
        let now = self.clock.now();
        let stamp = super::driver::rfc3339(now);
        let namespace = match involved.namespace.as_deref() {
            None | Some("") => "default".to_string(),
            Some(ns) => ns.to_string(),
        };
        let id = Identity {
            kind: involved.kind.clone().unwrap_or_default(),
            api_version: involved.api_version.clone().unwrap_or_default(),
            namespace: namespace.clone(),
            name: involved.name.clone().unwrap_or_default(),
            uid: involved.uid.clone().unwrap_or_default(),
            type_,
            reason: reason.to_string(),
            message: message.to_string(),
            combined: false,
        };
        let spam_key = format!(
            "{}/{}/{}/{}/{}",
            id.api_version, id.kind, id.namespace, id.name, id.uid
        );
        // Aggregate and count first, then filter, as upstream's correlator does: a
        // dropped repeat still counts towards the next one written.
        let (id, message, previous, count) = {
            let mut mem = self.lock_memory();
            let (id, message) = mem.aggregate(id, now);
            let (previous, count) = match mem.seen.get(&id) {
                Some(s) => (s.name.clone(), s.count.saturating_add(1)),
                None => (None, 1),
            };
            if !mem.allow(spam_key, now) {
                mem.remember(
                    id.clone(),
                    Seen {
                        name: previous,
                        count,
                    },
                );
                tracing::trace!(reason, "event dropped by the spam filter");
                return Ok(());
            }
            (id, message, previous, count)
        };
        let kind = Kind::events();
        if let Some(name) = previous {
            let mut patch = json!({"count": count, "lastTimestamp": stamp});
            if id.combined {
                patch["message"] = message.clone().into();
            }
            match self
                .effects
                .merge_patch(&kind, &namespace, &name, patch)
                .await
            {
                Ok(_) => {
                    self.lock_memory().remember(
                        id,
                        Seen {
                            count,
                            name: Some(name),
                        },
                    );
                    return Ok(());
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let name = format!("{}.{:x}", id.name, self.unique_nanos(now));
        let mut body = event(
            involved,
            &namespace,
            &name,
            type_,
            reason,
            &message,
            &stamp,
            &self.component,
        );
        body["count"] = count.into();
        self.effects.create(&kind, &namespace, body).await?;
        self.lock_memory().remember(
            id,
            Seen {
                name: Some(name),
                count,
            },
        );
        Ok(())
    }

    fn lock_memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Nanoseconds since the epoch, made unique within this recorder.
    fn unique_nanos(&self, now: jiff::Timestamp) -> i128 {
        let mut last = self.last_nanos.lock().unwrap_or_else(|e| e.into_inner());
        let n = now.as_nanosecond().max(*last + 1);
        *last = n;
        n
    }
}

/// The Event object upstream's recorder writes.
#[allow(clippy::too_many_arguments)]
fn event(
    involved: &ObjectReference,
    namespace: &str,
    name: &str,
    type_: EventType,
    reason: &str,
    message: &str,
    stamp: &str,
    component: &str,
) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": namespace},
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "source": {"component": component},
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
        "type": type_.as_str(),
        "reportingComponent": component,
        "reportingInstance": "",
    })
}

/// A reference to `obj` for `involvedObject`.
pub fn reference<K: kube::Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    let m = obj.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        namespace: m.namespace.clone(),
        name: m.name.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::driver::tests::{FixedClock, Recording};

    #[tokio::test]
    async fn repeats_are_counted_on_one_event() {
        let fx = Arc::new(Recording::default());
        let clock = Arc::new(FixedClock(Mutex::new(
            jiff::Timestamp::from_second(1_700_000_000).unwrap(),
        )));
        let rec = Recorder::new(fx.clone(), clock.clone(), "replicaset-controller");
        let rs = ObjectReference {
            api_version: Some("apps/v1".into()),
            kind: Some("ReplicaSet".into()),
            namespace: Some("default".into()),
            name: Some("web-1".into()),
            uid: Some("u1".into()),
            ..Default::default()
        };
        rec.record(
            &rs,
            EventType::Normal,
            "SuccessfulCreate",
            "Created pod: web-1-a",
        )
        .await;
        *clock.0.lock().unwrap() = jiff::Timestamp::from_second(1_700_000_010).unwrap();
        rec.record(
            &rs,
            EventType::Normal,
            "SuccessfulCreate",
            "Created pod: web-1-a",
        )
        .await;
        rec.record(
            &rs,
            EventType::Normal,
            "SuccessfulCreate",
            "Created pod: web-1-b",
        )
        .await;
        let calls = fx.calls();
        assert_eq!(calls.len(), 3, "{calls:?}");
        assert!(
            calls[0].starts_with("create Event default/web-1.17"),
            "{calls:?}"
        );
        assert!(
            calls[1].starts_with("patch Event default/web-1.17"),
            "{calls:?}"
        );
        assert!(
            calls[1].contains(r#""count":2"#) && calls[1].contains("2023-11-14T22:13:30Z"),
            "{calls:?}"
        );
        assert!(calls[2].starts_with("create Event"), "{calls:?}");
        let body = event(&rs, "default", "n", EventType::Warning, "R", "m", "t", "c");
        assert_eq!(body["count"], 1);
        assert_eq!(body["source"]["component"], "c");
        assert_eq!(body["involvedObject"]["kind"], "ReplicaSet");
    }

    #[tokio::test]
    async fn a_busy_object_is_combined_then_rate_limited() {
        let fx = Arc::new(Recording::default());
        let t0 = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let clock = Arc::new(FixedClock(Mutex::new(t0)));
        let rec = Recorder::new(fx.clone(), clock.clone(), "replicaset-controller");
        let rs = ObjectReference {
            api_version: Some("apps/v1".into()),
            kind: Some("ReplicaSet".into()),
            namespace: Some("default".into()),
            name: Some("big".into()),
            uid: Some("u1".into()),
            ..Default::default()
        };
        for i in 1..=30 {
            let msg = format!("Created pod: big-{i}");
            rec.record(&rs, EventType::Normal, "SuccessfulCreate", &msg)
                .await;
        }
        let calls = fx.calls();
        // Nine distinct events, then the combined one, patched until the burst of 25
        // writes is spent; the last five are dropped.
        assert_eq!(calls.len(), 25, "{calls:#?}");
        assert!(calls[..10].iter().all(|c| c.starts_with("create Event")));
        let combined = calls[9].trim_start_matches("create Event ");
        assert!(
            calls[10..]
                .iter()
                .all(|c| c.starts_with(&format!("patch Event {combined} "))),
            "{calls:#?}"
        );
        assert!(
            calls[10].contains("(combined from similar events): Created pod: big-11"),
            "{}",
            calls[10]
        );
        assert!(calls[24].contains(r#""count":16"#), "{}", calls[24]);

        // Five minutes refill one write; the dropped repeats were still counted.
        *clock.0.lock().unwrap() = jiff::Timestamp::from_second(1_700_000_300).unwrap();
        rec.record(
            &rs,
            EventType::Normal,
            "SuccessfulCreate",
            "Created pod: big-31",
        )
        .await;
        rec.record(
            &rs,
            EventType::Normal,
            "SuccessfulCreate",
            "Created pod: big-32",
        )
        .await;
        let calls = fx.calls();
        assert_eq!(calls.len(), 26, "{calls:#?}");
        assert!(
            calls[25].contains(r#""count":22"#)
                && calls[25].contains("(combined from similar events): Created pod: big-31"),
            "{}",
            calls[25]
        );
    }
}
