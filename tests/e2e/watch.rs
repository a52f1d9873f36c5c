//! A kube-rs watcher sees every change exactly once, in order, across a server restart.

use crate::harness::Server;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One observed (or expected) event: what happened, to which pod, at which revision.
type Seen = (&'static str, String, String);

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"test": "watch"}},
        "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]},
    }))
    .unwrap()
}

fn rv(p: &Pod) -> String {
    p.metadata
        .resource_version
        .clone()
        .expect("a resourceVersion")
}

fn name(p: &Pod) -> String {
    p.metadata.name.clone().expect("a name")
}

struct Writer {
    pods: Api<Pod>,
    expected: Vec<Seen>,
}

impl Writer {
    async fn create(&mut self, n: &str) {
        let p = self
            .pods
            .create(&PostParams::default(), &pod(n))
            .await
            .unwrap_or_else(|e| panic!("creating pod {n}: {e}"));
        assert_eq!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Pending")
        );
        self.expected.push(("apply", n.to_string(), rv(&p)));
    }

    async fn modify(&mut self, n: &str, value: &str) {
        let p = self
            .pods
            .patch(
                n,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"step": value}}})),
            )
            .await
            .unwrap_or_else(|e| panic!("patching pod {n}: {e}"));
        self.expected.push(("apply", n.to_string(), rv(&p)));
    }

    async fn delete(&mut self, n: &str) {
        // No kubelet and no node: an unscheduled pod is deleted at once, and the reply is
        // the object as deleted, at the deletion's revision.
        let deleted = self
            .pods
            .delete(n, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("deleting pod {n}: {e}"));
        let p = deleted
            .left()
            .unwrap_or_else(|| panic!("deleting the unscheduled pod {n} should return it"));
        self.expected.push(("delete", n.to_string(), rv(&p)));
    }
}

/// Waits until `seen` holds the expected events (or more), then compares them.
async fn wait_for(seen: &Arc<Mutex<Vec<Seen>>>, expected: &[Seen], when: &str) {
    let want = expected.len();
    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if seen.lock().unwrap().len() >= want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let got = seen.lock().unwrap().clone();
    assert!(
        waited.is_ok(),
        "{when}: only {} of {want} events arrived.\n got: {got:#?}\nwant: {expected:#?}",
        got.len()
    );
    assert_eq!(
        got, expected,
        "{when}: the events seen differ from the changes made"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_sees_every_change_across_a_restart() {
    // Without the scheduler, which would add its own changes (PodScheduled=False) to the
    // pods this test writes.
    let mut server = tokio::task::block_in_place(|| Server::start_with(&["--disable-scheduler"]));
    let client = server.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let stream = watcher(
        pods.clone(),
        watcher::Config::default().labels("test=watch"),
    )
    .default_backoff();
    let task = {
        let seen = seen.clone();
        let errors = errors.clone();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let entry = match event {
                    Ok(watcher::Event::Init) => ("init", String::new(), String::new()),
                    Ok(watcher::Event::InitApply(p)) => ("init-apply", name(&p), rv(&p)),
                    Ok(watcher::Event::InitDone) => ("init-done", String::new(), String::new()),
                    Ok(watcher::Event::Apply(p)) => ("apply", name(&p), rv(&p)),
                    Ok(watcher::Event::Delete(p)) => ("delete", name(&p), rv(&p)),
                    Err(e) => {
                        errors.lock().unwrap().push(e.to_string());
                        continue;
                    }
                };
                seen.lock().unwrap().push(entry);
            }
        })
    };

    let mut w = Writer {
        pods: pods.clone(),
        expected: vec![
            ("init", String::new(), String::new()),
            ("init-done", String::new(), String::new()),
        ],
    };
    wait_for(&seen, &w.expected, "the initial list").await;

    w.create("a").await;
    w.modify("a", "1").await;
    w.create("b").await;
    w.modify("a", "2").await;
    w.delete("a").await;
    wait_for(&seen, &w.expected, "before the restart").await;

    // Restart while the watch is open; the watcher resumes from the last revision it saw.
    tokio::task::block_in_place(|| server.restart());
    // The writer takes a new client, so only the watcher has to cope with the restart.
    w.pods = Api::namespaced(server.client().await, "default");
    w.modify("b", "after-restart").await;
    w.create("c").await;
    w.delete("b").await;
    w.create("d").await;
    w.modify("d", "1").await;
    wait_for(&seen, &w.expected, "after the restart").await;

    // A last change proves nothing else was queued behind the ones compared above.
    w.create("sentinel").await;
    wait_for(&seen, &w.expected, "at the end").await;

    let listed: Vec<String> = pods
        .list(&Default::default())
        .await
        .expect("listing pods")
        .items
        .iter()
        .map(name)
        .collect();
    assert_eq!(listed, ["c", "d", "sentinel"]);
    task.abort();
    eprintln!(
        "watch errors while the server restarted (expected, retried): {:?}",
        errors.lock().unwrap()
    );
}
