//! The pods bound to this node: one watch (`spec.nodeName=<node>`), one worker per pod.
//! At start the containers already on disk are grouped by pod and handed to the pod's
//! worker, so containers that ran through a restart of skiff are adopted, not restarted;
//! those whose pod is gone are stopped and removed once the first list has arrived.

use super::worker::{self, labels, Record};
use super::{Error, Kubelet};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The container runs on disk, by pod uid.
fn on_disk(k: &Kubelet) -> Result<HashMap<String, Vec<Record>>, Error> {
    let mut by_pod: HashMap<String, Vec<Record>> = HashMap::new();
    let ids = k
        .containers
        .list()
        .map_err(|e| Error::Runtime(e.to_string()))?;
    for id in ids {
        let l = match k.containers.labels(&id) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(container = %id, error = %e, "unreadable container; removing it");
                let _ = k.containers.remove(&id);
                continue;
            }
        };
        let (Some(uid), Some(name)) = (l.get(labels::POD_UID), l.get(labels::CONTAINER)) else {
            let _ = k.containers.remove(&id);
            continue;
        };
        by_pod.entry(uid.clone()).or_default().push(Record {
            id: id.clone(),
            name: name.clone(),
            attempt: l
                .get(labels::ATTEMPT)
                .and_then(|a| a.parse().ok())
                .unwrap_or(0),
            image_id: l.get(labels::IMAGE_ID).cloned().unwrap_or_default(),
        });
    }
    Ok(by_pod)
}

/// Watches the node's pods and runs their workers until cancelled.
pub async fn run(k: Arc<Kubelet>, cancel: CancellationToken) -> Result<(), Error> {
    let mut adopted = on_disk(&k)?;
    let count: usize = adopted.values().map(Vec::len).sum();
    if count > 0 {
        tracing::info!(
            containers = count,
            pods = adopted.len(),
            "found containers from before"
        );
    }
    let api: Api<Pod> = Api::all(k.client.clone());
    let config =
        watcher::Config::default().fields(&format!("spec.nodeName={}", k.config.node_name));
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    let mut workers: HashMap<String, watch::Sender<Option<Pod>>> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut listed: HashSet<String> = HashSet::new();
    let mut first_list_done = false;

    let spawn = |tasks: &mut tokio::task::JoinSet<String>,
                 workers: &mut HashMap<String, watch::Sender<Option<Pod>>>,
                 adopted: &mut HashMap<String, Vec<Record>>,
                 uid: String,
                 pod: Option<Pod>| {
        let (tx, rx) = watch::channel(pod);
        let records = adopted.remove(&uid).unwrap_or_default();
        let k = k.clone();
        let u = uid.clone();
        tasks.spawn(async move {
            worker::run(k, u.clone(), rx, records).await;
            u
        });
        workers.insert(uid, tx);
    };

    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                match done {
                    Ok(uid) => {
                        // Keep a sender for a pod whose worker is still wanted.
                        if workers.get(&uid).is_some_and(|tx| tx.borrow().is_none() || tx.is_closed()) {
                            workers.remove(&uid);
                        }
                    }
                    Err(e) if e.is_panic() => tracing::error!(error = %e, "a pod worker panicked"),
                    Err(_) => {}
                }
                continue;
            }
            event = events.next() => event,
        };
        let Some(event) = event else {
            return Ok(());
        };
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "watching the node's pods");
                continue;
            }
        };
        match event {
            Event::Init => listed.clear(),
            Event::InitApply(pod) | Event::Apply(pod) => {
                let Some(uid) = pod.metadata.uid.clone() else {
                    continue;
                };
                listed.insert(uid.clone());
                match workers.get(&uid) {
                    Some(tx) if !tx.is_closed() => {
                        tx.send_replace(Some(pod));
                    }
                    _ => spawn(&mut tasks, &mut workers, &mut adopted, uid, Some(pod)),
                }
            }
            Event::Delete(pod) => {
                if let Some(uid) = pod.metadata.uid.clone() {
                    if let Some(tx) = workers.get(&uid) {
                        tx.send_replace(None);
                    }
                }
            }
            Event::InitDone => {
                for (uid, tx) in &workers {
                    if !listed.contains(uid) {
                        tx.send_replace(None);
                    }
                }
                if !first_list_done {
                    first_list_done = true;
                    // Containers of pods that no longer exist: stop and remove them.
                    let orphans: Vec<String> = adopted.keys().cloned().collect();
                    for uid in orphans {
                        tracing::info!(pod = %uid, "stopping the containers of a pod that is gone");
                        spawn(&mut tasks, &mut workers, &mut adopted, uid, None);
                    }
                }
            }
        }
    }
}
