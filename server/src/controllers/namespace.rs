//! Namespace deletion: once a namespace is marked for deletion, everything in it is
//! deleted, then the `kubernetes` finalizer is removed and the namespace goes away.

use crate::api::objects::{finalizers, meta_str};
use crate::api::Api;
use crate::registry::RESOURCES;
use crate::store::{self, WriteOp};
use serde_json::Value;
use std::collections::BTreeSet;
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
                    match api
                        .store
                        .write(WriteOp::Delete {
                            key: e.key.to_string(),
                            expected: None,
                        })
                        .await
                    {
                        Ok(_) | Err(store::Error::NotFound) => {}
                        Err(err) => return Err(err),
                    }
                }
            }
            tracing::info!(namespace = %name, "deleted the namespace's content");
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
            match api.store.write(op).await {
                Ok(_) | Err(store::Error::Conflict { .. }) | Err(store::Error::NotFound) => {
                    Ok(true)
                }
                Err(e) => Err(e),
            }
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
}
