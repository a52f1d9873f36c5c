//! core/v1 Events as upstream's event recorder writes them, so `kubectl describe` shows
//! the Events section: one Event per distinct (object, type, reason, message), and a
//! repeat patches that Event's `count` and `lastTimestamp` instead of adding another.

use super::driver::{Clock, Effects, Kind};
use k8s_openapi::api::core::v1::ObjectReference;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// How many distinct events the recorder remembers for aggregation (upstream's LRU size).
const REMEMBERED: usize = 4096;

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
    message: String,
}

#[derive(Debug, Clone)]
struct Seen {
    name: String,
    count: i32,
}

/// Writes Events for one component (`source.component`, `reportingComponent`).
pub struct Recorder {
    effects: Arc<dyn Effects>,
    clock: Arc<dyn Clock>,
    component: String,
    seen: Mutex<(HashMap<Identity, Seen>, VecDeque<Identity>)>,
    last_nanos: Mutex<i128>,
}

impl Recorder {
    /// A recorder writing through `effects` as `component`.
    pub fn new(effects: Arc<dyn Effects>, clock: Arc<dyn Clock>, component: &str) -> Self {
        Recorder {
            effects,
            clock,
            component: component.to_string(),
            seen: Mutex::new((HashMap::new(), VecDeque::new())),
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
        };
        let previous = self.lock_seen().0.get(&id).cloned();
        let kind = Kind::events();
        if let Some(prev) = previous {
            let count = prev.count.saturating_add(1);
            let patch = json!({"count": count, "lastTimestamp": stamp});
            match self
                .effects
                .merge_patch(&kind, &namespace, &prev.name, patch)
                .await
            {
                Ok(_) => {
                    self.remember(
                        id,
                        Seen {
                            count,
                            name: prev.name,
                        },
                    );
                    return Ok(());
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let name = format!("{}.{:x}", id.name, self.unique_nanos(now));
        let body = event(
            involved,
            &namespace,
            &name,
            type_,
            reason,
            message,
            &stamp,
            &self.component,
        );
        self.effects.create(&kind, &namespace, body).await?;
        self.remember(id, Seen { name, count: 1 });
        Ok(())
    }

    fn lock_seen(
        &self,
    ) -> std::sync::MutexGuard<'_, (HashMap<Identity, Seen>, VecDeque<Identity>)> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remember(&self, id: Identity, seen: Seen) {
        let mut guard = self.lock_seen();
        let (map, order) = &mut *guard;
        if map.insert(id.clone(), seen).is_none() {
            order.push_back(id);
            while order.len() > REMEMBERED {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
        }
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
        assert_eq!(body["source"]["component"], "c");
        assert_eq!(body["involvedObject"]["kind"], "ReplicaSet");
    }
}
