//! Namespace deletion: once a namespace is marked for deletion, everything in it is
//! deleted, then the `kubernetes` finalizer is removed and the namespace goes away.
//!
//! Objects in it that carry finalizers, and pods bound to a node, are only marked for
//! deletion, as a DELETE would mark them: the namespace waits until whoever owns each
//! finalizer has let it go and each kubelet has stopped its pods. Meanwhile the
//! namespace's status conditions say what remains, as upstream's do.

use crate::api::objects::{finalizers, format_time, mark_deleted, meta_str};
use crate::api::Api;
use crate::registry::RESOURCES;
use crate::store::{self, WriteOp};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What to do about one namespace.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Not being deleted: nothing.
    Nothing,
    /// Delete the objects left in it.
    DeleteContent,
    /// Empty: remove the `kubernetes` finalizer from `spec.finalizers`.
    Finalize,
    /// Finalized but still held by metadata finalizers: wait for their owners.
    Wait,
}

/// Decides what a namespace needs, given how many objects it still holds.
pub fn reconcile(ns: &Value, remaining: usize) -> Action {
    if meta_str(ns, "deletionTimestamp").is_empty() {
        return Action::Nothing;
    }
    if remaining > 0 {
        return Action::DeleteContent;
    }
    let spec_finalizers = ns
        .pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    if spec_finalizers {
        return Action::Finalize;
    }
    if finalizers(ns).is_empty() {
        // The update that removed the last finalizer deletes the namespace itself.
        Action::Nothing
    } else {
        Action::Wait
    }
}

/// What to do about one object left in a dying namespace.
#[derive(Debug, PartialEq, Eq)]
pub enum Content {
    /// Delete it.
    Delete,
    /// It has finalizers: mark it for deletion (`deletionTimestamp`) and wait.
    Mark,
    /// Marked already; its finalizers are still there: wait.
    Wait,
}

/// Decides about one object left in a dying namespace.
pub fn content(obj: &Value) -> Content {
    if finalizers(obj).is_empty() && grace_of(obj).is_none() {
        Content::Delete
    } else if meta_str(obj, "deletionTimestamp").is_empty() {
        Content::Mark
    } else {
        Content::Wait
    }
}

/// The grace period of a pod bound to a node (its kubelet finishes the deletion), as a
/// DELETE would give it; `None` for anything else.
fn grace_of(obj: &Value) -> Option<i64> {
    let bound = obj
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    (obj["kind"] == "Pod" && obj["apiVersion"] == "v1" && bound).then(|| {
        obj.pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(30)
    })
}

/// `obj` marked for deletion now, with its grace period (none but a pod's).
fn marked(obj: &Value, now: jiff::Timestamp) -> Value {
    let grace = grace_of(obj).unwrap_or(0);
    let mut obj = obj.clone();
    mark_deleted(&mut obj, grace, now);
    obj
}

/// What is left in a dying namespace: objects by resource (`plural.group`) and the
/// finalizers that hold them, with how many objects each holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Remaining {
    /// Objects per resource.
    pub resources: BTreeMap<String, usize>,
    /// Objects per finalizer.
    pub finalizers: BTreeMap<String, usize>,
}

/// The deletion conditions upstream's namespace controller writes, for `left`, keeping
/// the transition times of those in `old` that did not change.
pub fn conditions(left: &Remaining, old: &[Value], now: jiff::Timestamp) -> Vec<Value> {
    let counted = |m: &BTreeMap<String, usize>, sep: &str| -> String {
        m.iter()
            .map(|(k, n)| format!("{k}{sep}{n} resource instances"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let content = if left.resources.is_empty() {
        (
            "False",
            "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization".to_string(),
        )
    } else {
        (
            "True",
            "SomeResourcesRemain",
            format!(
                "Some resources are remaining: {}",
                counted(&left.resources, " has ")
            ),
        )
    };
    let finalizers = if left.finalizers.is_empty() {
        (
            "False",
            "ContentHasNoFinalizers",
            "All content-preserving finalizers finished".to_string(),
        )
    } else {
        (
            "True",
            "SomeFinalizersRemain",
            format!(
                "Some content in the namespace has finalizers remaining: {}",
                counted(&left.finalizers, " in ")
            ),
        )
    };
    let rows = [
        (
            "NamespaceDeletionDiscoveryFailure",
            (
                "False",
                "ResourcesDiscovered",
                "All resources successfully discovered".to_string(),
            ),
        ),
        (
            "NamespaceDeletionGroupVersionParsingFailure",
            (
                "False",
                "ParsedGroupVersions",
                "All legacy kube types successfully parsed".to_string(),
            ),
        ),
        (
            "NamespaceDeletionContentFailure",
            (
                "False",
                "ContentDeleted",
                "All content successfully deleted, may be waiting on finalization".to_string(),
            ),
        ),
        ("NamespaceContentRemaining", content),
        ("NamespaceFinalizersRemaining", finalizers),
    ];
    rows.into_iter()
        .map(|(kind, (status, reason, message))| {
            let since = old
                .iter()
                .find(|c| c["type"] == kind && c["status"] == status)
                .and_then(|c| c.get("lastTransitionTime").cloned())
                .unwrap_or_else(|| format_time(now).into());
            json!({"type": kind, "status": status, "lastTransitionTime": since,
                   "reason": reason, "message": message})
        })
        .collect()
}

/// Counts what is left in namespace `ns`.
fn remaining(api: &Api, ns: &str) -> Remaining {
    let mut left = Remaining::default();
    for r in RESOURCES.iter().filter(|r| r.namespaced) {
        for e in api
            .store
            .list(&r.prefix(Some(ns)), None, 0, false, &|_| true)
            .items
        {
            *left
                .resources
                .entry(format!("{}.{}", r.plural, r.group))
                .or_default() += 1;
            if let Ok(obj) = serde_json::from_slice::<Value>(&e.value) {
                for f in finalizers(&obj) {
                    *left.finalizers.entry(f).or_default() += 1;
                }
            }
        }
    }
    left
}

/// Writes the deletion conditions of the namespace at `key` (read as `ns` at
/// `revision`) when they changed. A conflict is left to the next look.
async fn write_conditions(
    api: &Api,
    key: &str,
    ns: &Value,
    revision: store::Revision,
) -> Result<(), store::Error> {
    let left = remaining(api, meta_str(ns, "name"));
    let old = ns
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let new = conditions(&left, &old, jiff::Timestamp::now());
    if new == old {
        return Ok(());
    }
    let mut next = ns.clone();
    next["status"]["conditions"] = Value::Array(new);
    write(
        api,
        WriteOp::Update {
            key: key.to_string(),
            value: next,
            expected: Some(revision),
        },
    )
    .await
}

/// Writes `op`, preconditioned on what was read. An object changed or gone meanwhile is
/// left to the next look, which starts from what it is then.
async fn write(api: &Api, op: WriteOp) -> Result<(), store::Error> {
    match api.store.write(op).await {
        Ok(_) | Err(store::Error::Conflict { .. }) | Err(store::Error::NotFound) => Ok(()),
        Err(e) => Err(e),
    }
}

/// How often a dying namespace is looked at again.
const RECHECK: Duration = Duration::from_millis(250);

fn prefixes(ns: &str) -> impl Iterator<Item = String> + '_ {
    RESOURCES
        .iter()
        .filter(|r| r.namespaced)
        .map(move |r| r.prefix(Some(ns)))
}

/// One step for the namespace at `key`; returns whether it must be looked at again
/// (content was deleted, or controllers may still be winding down inside it).
async fn step(api: &Api, key: &str) -> Result<bool, store::Error> {
    let Some(entry) = api.store.get(key) else {
        return Ok(false);
    };
    let Ok(ns) = serde_json::from_slice::<Value>(&entry.value) else {
        return Ok(false);
    };
    let name = meta_str(&ns, "name").to_string();
    let remaining: usize = prefixes(&name).map(|p| api.store.count(&p)).sum();
    match reconcile(&ns, remaining) {
        Action::Nothing => Ok(false),
        Action::Wait => Ok(true),
        Action::DeleteContent => {
            for prefix in prefixes(&name) {
                for e in api.store.list(&prefix, None, 0, false, &|_| true).items {
                    let Ok(obj) = serde_json::from_slice::<Value>(&e.value) else {
                        continue;
                    };
                    // Preconditioned on what was decided from: a finalizer added
                    // meanwhile is honoured on the next look.
                    let (key, expected) = (e.key.to_string(), Some(e.revision));
                    let op = match content(&obj) {
                        Content::Delete => WriteOp::Delete { key, expected },
                        Content::Mark => WriteOp::Update {
                            key,
                            value: marked(&obj, jiff::Timestamp::now()),
                            expected,
                        },
                        Content::Wait => continue,
                    };
                    write(api, op).await?;
                }
            }
            tracing::info!(namespace = %name, "deleted the namespace's content");
            write_conditions(api, key, &ns, entry.revision).await?;
            Ok(true)
        }
        Action::Finalize => {
            let mut next = ns.clone();
            next["spec"]["finalizers"] = Value::Array(Vec::new());
            let op = if finalizers(&ns).is_empty() {
                WriteOp::Delete {
                    key: key.to_string(),
                    expected: Some(entry.revision),
                }
            } else {
                WriteOp::Update {
                    key: key.to_string(),
                    value: next,
                    expected: Some(entry.revision),
                }
            };
            write(api, op).await?;
            Ok(true)
        }
    }
}

/// Steps `key`, remembering it in `dying` while it needs another look.
async fn visit(api: &Api, key: &str, dying: &mut BTreeSet<String>) {
    match step(api, key).await {
        Ok(true) => {
            dying.insert(key.to_string());
        }
        Ok(false) => {
            dying.remove(key);
        }
        Err(e) => {
            tracing::warn!(error = %e, %key, "namespace deletion step failed");
            dying.insert(key.to_string());
        }
    }
}

/// Follows namespaces and finishes the deletion of those marked for it. A dying
/// namespace is looked at again every [`RECHECK`] until it is gone: controllers that
/// were mid-sync when its content went may still write into it (upstream's namespace
/// controller requeues the same way).
pub async fn run(api: Arc<Api>, cancel: CancellationToken) -> Result<(), crate::Error> {
    let prefix = "/registry/core/namespaces/";
    let mut dying = BTreeSet::new();
    let mut recheck = tokio::time::interval(RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Catch up on everything, then follow changes; start over if the watch breaks.
        let revision = api.store.revision();
        let pending: Vec<String> = api
            .store
            .list(prefix, None, 0, false, &|_| true)
            .items
            .iter()
            .map(|e| e.key.to_string())
            .collect();
        for key in pending {
            visit(&api, &key, &mut dying).await;
        }
        let Ok(mut watch) = api.store.watch(prefix, revision) else {
            continue;
        };
        loop {
            let events = tokio::select! {
                e = watch.next() => e,
                _ = recheck.tick(), if !dying.is_empty() => {
                    for key in dying.clone() {
                        visit(&api, &key, &mut dying).await;
                    }
                    continue;
                }
                _ = cancel.cancelled() => return Ok(()),
            };
            let Ok(events) = events else { break };
            for ev in events {
                if ev.kind == store::EventKind::Put {
                    visit(&api, &ev.entry.key, &mut dying).await;
                } else {
                    dying.remove(&*ev.entry.key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deletion_goes_content_then_finalizer() {
        let live = json!({"metadata": {"name": "a"}, "spec": {"finalizers": ["kubernetes"]}});
        assert_eq!(reconcile(&live, 3), Action::Nothing);
        let dying = json!({"metadata": {"name": "a", "deletionTimestamp": "2026-01-01T00:00:00Z"}, "spec": {"finalizers": ["kubernetes"]}});
        assert_eq!(reconcile(&dying, 3), Action::DeleteContent);
        assert_eq!(reconcile(&dying, 0), Action::Finalize);
        let held = json!({"metadata": {"name": "a", "deletionTimestamp": "x", "finalizers": ["example.com/x"]}, "spec": {"finalizers": []}});
        assert_eq!(reconcile(&held, 0), Action::Wait);
    }

    #[test]
    fn content_with_finalizers_is_marked_and_waited_for() {
        let plain = json!({"metadata": {"name": "cm"}});
        assert_eq!(content(&plain), Content::Delete);
        let held = json!({"metadata": {"name": "cm", "finalizers": ["example.com/x"]}});
        assert_eq!(content(&held), Content::Mark);
        let now = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let marked = marked(&held, now);
        assert_eq!(
            marked["metadata"],
            json!({"name": "cm", "finalizers": ["example.com/x"],
                   "deletionTimestamp": "2023-11-14T22:13:20Z",
                   "deletionGracePeriodSeconds": 0})
        );
        assert_eq!(content(&marked), Content::Wait);
        let released =
            json!({"metadata": {"name": "cm", "deletionTimestamp": "x", "finalizers": []}});
        assert_eq!(content(&released), Content::Delete);
    }

    #[test]
    fn pods_on_nodes_get_their_grace_period() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                         "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 5}});
        assert_eq!(content(&pod), Content::Mark);
        let now = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let m = marked(&pod, now);
        assert_eq!(m["metadata"]["deletionTimestamp"], "2023-11-14T22:13:25Z");
        assert_eq!(m["metadata"]["deletionGracePeriodSeconds"], 5);
        assert_eq!(content(&m), Content::Wait);
        let pending = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                             "spec": {}});
        assert_eq!(content(&pending), Content::Delete);
    }

    #[test]
    fn conditions_say_what_remains() {
        let t0 = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let left = Remaining {
            resources: BTreeMap::from([("configmaps.".into(), 1), ("pods.".into(), 2)]),
            finalizers: BTreeMap::from([("example.com/hold".into(), 1)]),
        };
        let first = conditions(&left, &[], t0);
        let by_type = |cs: &[Value], t: &str| cs.iter().find(|c| c["type"] == t).cloned().unwrap();
        let c = by_type(&first, "NamespaceContentRemaining");
        assert_eq!(c["status"], "True");
        assert_eq!(c["reason"], "SomeResourcesRemain");
        assert_eq!(
            c["message"],
            "Some resources are remaining: configmaps. has 1 resource instances, pods. has 2 resource instances"
        );
        let f = by_type(&first, "NamespaceFinalizersRemaining");
        assert_eq!(
            f["message"],
            "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances"
        );
        // Later, with the pods gone: the unchanged conditions keep their times.
        let t1 = jiff::Timestamp::from_second(1_700_000_060).unwrap();
        let fewer = Remaining {
            resources: BTreeMap::from([("configmaps.".into(), 1)]),
            ..left
        };
        let second = conditions(&fewer, &first, t1);
        assert_eq!(
            by_type(&second, "NamespaceFinalizersRemaining")["lastTransitionTime"],
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(second.len(), 5);
        let empty = conditions(&Remaining::default(), &second, t1);
        let c = by_type(&empty, "NamespaceContentRemaining");
        assert_eq!(
            (&c["status"], &c["reason"]),
            (&json!("False"), &json!("ContentDeleted"))
        );
        assert_eq!(c["lastTransitionTime"], "2023-11-14T22:14:20Z");
    }
}
