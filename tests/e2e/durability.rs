//! Every create the server acknowledged survives a SIGKILL in the middle of a write load,
//! and nothing is half-written.

use crate::harness::Server;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WRITERS: usize = 8;
/// Kill once this many creates were acknowledged.
const KILL_AFTER: usize = 2000;

/// The payload a ConfigMap named `name` must carry: derived from the name, so a torn
/// or mixed-up write shows.
fn payload(name: &str) -> String {
    let mut s = String::with_capacity(2048);
    let mut i = 0u32;
    while s.len() < 2000 {
        s.push_str(&format!("{name}:{i};"));
        i += 1;
    }
    s
}

fn digest(s: &str) -> String {
    // FNV-1a: enough to tell a payload from a damaged one.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn configmap(name: &str) -> ConfigMap {
    let p = payload(name);
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"test": "durability"}},
        "data": {"digest": digest(&p), "payload": p},
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_creates_survive_sigkill() {
    let mut server = tokio::task::block_in_place(Server::start);
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let refused: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));

    let mut writers = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        // A client (and so a connection) per writer, as separate processes would have.
        let api: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
        let (acked, refused, stop) = (acked.clone(), refused.clone(), stop.clone());
        writers.spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let name = format!("w{w}-{i:05}");
                match api.create(&PostParams::default(), &configmap(&name)).await {
                    Ok(cm) => {
                        let rv = cm.metadata.resource_version.expect("a resourceVersion");
                        acked.lock().unwrap().push((name, rv));
                        i += 1;
                    }
                    // A Status means a live server refused the write: that is a failure.
                    Err(kube::Error::Api(status)) => {
                        refused.lock().unwrap().push(format!("{name}: {status:?}"));
                        i += 1;
                    }
                    // The connection failed: the server is gone; retry the same name until
                    // told to stop (it may or may not have been committed).
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        });
    }

    let started = Instant::now();
    while acked.lock().unwrap().len() < KILL_AFTER {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "only {} creates acknowledged in 120s",
            acked.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::task::block_in_place(|| server.kill());
    stop.store(true, Ordering::SeqCst);
    let killed_at = acked.lock().unwrap().len();
    while let Some(done) = writers.join_next().await {
        done.expect("a writer panicked");
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        refused.lock().unwrap().is_empty(),
        "the server refused creates: {:#?}",
        refused.lock().unwrap()
    );

    tokio::task::block_in_place(|| server.start_again());
    let api: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let listed = api
        .list(&ListParams::default().labels("test=durability"))
        .await
        .expect("listing after the restart");
    let found: BTreeMap<String, ConfigMap> = listed
        .items
        .into_iter()
        .map(|cm| (cm.metadata.name.clone().unwrap(), cm))
        .collect();
    eprintln!(
        "durability: {} creates acknowledged ({killed_at} when killed after {:?}), {} found after restart",
        acked.len(),
        started.elapsed(),
        found.len()
    );

    // Nothing half-written: every object there is whole and matches its name.
    for (name, cm) in &found {
        let data = cm.data.as_ref().expect("data");
        assert_eq!(
            data.get("payload"),
            Some(&payload(name)),
            "payload of {name}"
        );
        assert_eq!(
            data.get("digest"),
            Some(&digest(&payload(name))),
            "digest of {name}"
        );
    }
    // Nothing acknowledged is lost, and it is at the revision the client was told.
    let lost: Vec<&String> = acked
        .iter()
        .filter(|(n, _)| !found.contains_key(n))
        .map(|(n, _)| n)
        .collect();
    assert!(lost.is_empty(), "acknowledged creates lost: {lost:?}");
    for (name, rv) in &acked {
        assert_eq!(
            found[name].metadata.resource_version.as_ref(),
            Some(rv),
            "resourceVersion of {name}"
        );
    }
    // At most the one request in flight per writer may have landed unacknowledged.
    let extra = found.len() - acked.len();
    assert!(extra <= WRITERS, "{extra} objects nobody was told about");

    // Revisions keep growing after the restart, and the server takes writes.
    let after = api
        .create(&PostParams::default(), &configmap("after-restart"))
        .await
        .expect("a create after the restart");
    let newest = found
        .values()
        .filter_map(|cm| cm.metadata.resource_version.as_deref())
        .map(|rv| rv.parse::<u64>().expect("numeric resourceVersion"))
        .max()
        .unwrap_or(0);
    let rv: u64 = after
        .metadata
        .resource_version
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv > newest, "revision went back: {rv} <= {newest}");
}
