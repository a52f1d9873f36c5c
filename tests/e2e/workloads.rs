//! Deployments, garbage collection and namespace deletion with kubectl on simulated nodes.
//!
//! Each test starts its own server and three simulated nodes (the scheduler binds the
//! pods, the simulator marks them Ready) and drives them with kubectl 1.32: scaling,
//! rolling updates (watched pod by pod against maxSurge and maxUnavailable), rollout
//! history, undo, pause, resume and restart, deletion with each propagation policy, and
//! deletion of a whole namespace.

use crate::harness::{normalized_lines, wait_until, Cases, Kubectl, Output, Server};
use crate::sim::Sim;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Convergence on a debug build on a busy 2-core machine.
const SOON: Duration = Duration::from_secs(60);
/// How long something that must not happen is given to happen anyway.
const STEADY: Duration = Duration::from_secs(3);
/// The kubectl these tests run (the kubectl tier covers both versions).
const KUBECTL: Kubectl = Kubectl::V132;

/// A server with three simulated nodes; the simulator stops first.
struct Cluster {
    _sim: Sim,
    server: Server,
}

impl Cluster {
    /// Starts a server and three simulated nodes, and waits until the nodes are Ready.
    fn start() -> Cluster {
        let server = Server::start();
        let sim = Sim::start(&server, &["--count", "3", "--name-prefix", "sim-"]);
        let cluster = Cluster { _sim: sim, server };
        wait_until(SOON, "three Ready nodes", || {
            let out = cluster.kc(&["get", "nodes", "--no-headers"]);
            let ready = normalized_lines(out.ok())
                .iter()
                .filter(|l| l.split(' ').nth(1) == Some("Ready"))
                .count();
            (ready == 3).then_some(()).ok_or(out.stdout.clone())
        });
        cluster
    }

    /// Runs kubectl with `args`.
    fn kc(&self, args: &[&str]) -> Output {
        self.server.kubectl(KUBECTL).run(args)
    }

    /// `kubectl apply -f -` of `doc` in `ns`.
    #[track_caller]
    fn apply(&self, ns: &str, doc: &Value) {
        self.server
            .kubectl(KUBECTL)
            .stdin(doc.to_string())
            .run(&["apply", "-n", ns, "-f", "-"])
            .ok();
    }

    /// `kubectl get <what> -o json` in `ns` (empty: none given).
    #[track_caller]
    fn get(&self, ns: &str, what: &[&str]) -> Value {
        let mut args = vec!["get", "-o", "json"];
        if !ns.is_empty() {
            args.extend(["-n", ns]);
        }
        args.extend_from_slice(what);
        self.kc(&args).json()
    }

    /// The items of `kubectl get <kind> -l <selector>`.
    #[track_caller]
    fn list(&self, ns: &str, kind: &str, selector: &str) -> Vec<Value> {
        items(&self.get(ns, &[kind, "-l", selector]))
    }

    /// The pods with `app=<app>` that are not being deleted.
    #[track_caller]
    fn live_pods(&self, ns: &str, app: &str) -> Vec<Value> {
        self.list(ns, "pods", &format!("app={app}"))
            .into_iter()
            .filter(|p| !terminating(p))
            .collect()
    }

    /// `kubectl rollout status` until the Deployment is rolled out.
    #[track_caller]
    fn rolled_out(&self, ns: &str, name: &str) {
        let out = self.kc(&[
            "rollout",
            "status",
            "-n",
            ns,
            &format!("deployment/{name}"),
            "--timeout=60s",
        ]);
        let last = normalized_lines(out.ok()).pop().unwrap_or_default();
        assert_eq!(
            last,
            format!("deployment \"{name}\" successfully rolled out"),
            "{out:?}"
        );
    }

    /// The ReplicaSets of `app=<app>` as (name, spec.replicas, image), sorted.
    #[track_caller]
    fn replicasets(&self, ns: &str, app: &str) -> Vec<(String, i64, String)> {
        let mut sets: Vec<_> = self
            .list(ns, "replicasets", &format!("app={app}"))
            .iter()
            .map(|rs| {
                (
                    name(rs).to_string(),
                    rs["spec"]["replicas"].as_i64().unwrap_or(-1),
                    rs["spec"]["template"]["spec"]["containers"][0]["image"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                )
            })
            .collect();
        sets.sort();
        sets
    }

    /// Whether `kubectl get <what>` answers NotFound.
    fn gone(&self, what: &[&str]) -> Result<(), String> {
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        let out = self.kc(&args);
        if !out.status.success() && out.stderr.contains("NotFound") {
            Ok(())
        } else {
            Err(format!("{out:?}"))
        }
    }
}

/// A Deployment of `replicas` pods of `image`, labelled `app=<name>`, rolling with
/// maxSurge 1 and maxUnavailable 1.
fn deployment(name: &str, replicas: i64, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1},
            },
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    })
}

fn items(list: &Value) -> Vec<Value> {
    list["items"].as_array().cloned().unwrap_or_default()
}

fn name(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or("")
}

fn terminating(obj: &Value) -> bool {
    obj["metadata"].get("deletionTimestamp").is_some()
}

fn image(pod: &Value) -> &str {
    pod["spec"]["containers"][0]["image"].as_str().unwrap_or("")
}

fn running_and_ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj["metadata"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(String::from))
        .collect()
}

fn owner_uids(obj: &Value) -> Vec<String> {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["uid"].as_str().map(String::from))
        .collect()
}

/// Checks for `duration` that `check` keeps holding (for what must not happen).
#[track_caller]
fn stays(duration: Duration, what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let end = Instant::now() + duration;
    while Instant::now() < end {
        if let Err(why) = check() {
            panic!("{what} stopped holding: {why}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Waits until the Deployment's status has caught up with its spec.
#[track_caller]
fn observed(c: &Cluster, ns: &str, name: &str) -> Value {
    wait_until(SOON, &format!("deployment {name} observed"), || {
        let d = c.get(ns, &["deployment", name]);
        let (generation, seen) = (
            &d["metadata"]["generation"],
            &d["status"]["observedGeneration"],
        );
        (generation == seen)
            .then(|| d.clone())
            .ok_or(format!("generation {generation}, observed {seen}"))
    })
}

/// What a [`PodWatch`] saw: the extremes of the pod counts and a timeline of changes.
#[derive(Debug, Default, Clone)]
struct Seen {
    /// The first list arrived.
    synced: bool,
    /// Events after the first list.
    events: usize,
    /// The fewest Ready, non-terminating pods at any moment.
    min_ready: Option<usize>,
    /// The most non-terminating pods at any moment.
    max_total: usize,
    /// (ready, total, images of the live pods) each time it changed.
    timeline: Vec<(usize, usize, String)>,
    /// Watch errors (retried).
    errors: Vec<String>,
}

/// A kube-rs watch of the pods of one label selector, on a thread of its own, counting
/// Ready and non-terminating pods after every event.
struct PodWatch {
    seen: Arc<Mutex<Seen>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PodWatch {
    /// Starts watching pods with `selector` in `default`; returns once the first list is in.
    fn start(server: &Server, selector: &str) -> PodWatch {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = {
            let (seen, kubeconfig, selector) =
                (seen.clone(), server.kubeconfig(), selector.to_string());
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(watch_pods(kubeconfig, selector, seen, stopped))
            })
        };
        let w = PodWatch {
            seen,
            stop: Some(stop),
            thread: Some(thread),
        };
        wait_until(SOON, "the pod watch to list", || {
            let s = w.seen.lock().unwrap();
            s.synced.then_some(()).ok_or(format!("{:?}", s.errors))
        });
        w
    }

    /// What was seen so far.
    fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }

    /// Stops the watch and returns what it saw.
    fn finish(mut self) -> Seen {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.seen()
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn client(kubeconfig: &Path) -> kube::Client {
    let config = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let config =
        kube::Config::from_custom_kubeconfig(config, &kube::config::KubeConfigOptions::default())
            .await
            .unwrap();
    kube::Client::try_from(config).unwrap()
}

async fn watch_pods(
    kubeconfig: PathBuf,
    selector: String,
    seen: Arc<Mutex<Seen>>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let pods: Api<Pod> = Api::namespaced(client(&kubeconfig).await, "default");
    let stream = watcher(pods, watcher::Config::default().labels(&selector)).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut state: BTreeMap<String, Value> = BTreeMap::new();
    let mut listing: BTreeMap<String, Value> = BTreeMap::new();
    loop {
        let event = tokio::select! {
            _ = &mut stop => return,
            e = stream.next() => match e {
                Some(e) => e,
                None => return,
            },
        };
        let as_json = |p: &Pod| serde_json::to_value(p).unwrap();
        match event {
            Ok(watcher::Event::Init) => {
                listing.clear();
                continue;
            }
            Ok(watcher::Event::InitApply(p)) => {
                let v = as_json(&p);
                listing.insert(name(&v).to_string(), v);
                continue;
            }
            Ok(watcher::Event::InitDone) => {
                state = std::mem::take(&mut listing);
            }
            Ok(watcher::Event::Apply(p)) => {
                let v = as_json(&p);
                state.insert(name(&v).to_string(), v);
            }
            Ok(watcher::Event::Delete(p)) => {
                state.remove(p.metadata.name.as_deref().unwrap_or(""));
            }
            Err(e) => {
                seen.lock().unwrap().errors.push(e.to_string());
                continue;
            }
        }
        let live: Vec<&Value> = state.values().filter(|p| !terminating(p)).collect();
        let ready = live.iter().filter(|p| running_and_ready(p)).count();
        let mut images: Vec<&str> = live.iter().map(|p| image(p)).collect();
        images.sort();
        let mut s = seen.lock().unwrap();
        if s.synced {
            s.events += 1;
        }
        s.synced = true;
        s.min_ready = Some(s.min_ready.map_or(ready, |m| m.min(ready)));
        s.max_total = s.max_total.max(live.len());
        let point = (ready, live.len(), images.join(","));
        if s.timeline.last() != Some(&point) {
            s.timeline.push(point);
        }
    }
}

/// Scaling a Deployment up and down with `kubectl scale`.
#[test]
fn deployment_scales_up_and_down() {
    let c = Cluster::start();
    c.apply("default", &deployment("web", 3, "img:1"));
    c.rolled_out("default", "web");
    assert_eq!(c.live_pods("default", "web").len(), 3);

    for (n, line) in [(6, "web 6/6 6 6"), (2, "web 2/2 2 2")] {
        c.kc(&["scale", "deployment/web", &format!("--replicas={n}")])
            .assert_lines(&["deployment.apps/web scaled"]);
        c.rolled_out("default", "web");
        let out = c.kc(&["get", "deployment", "web", "--no-headers"]);
        let row = normalized_lines(out.ok()).join("\n");
        assert!(row.starts_with(&format!("{line} ")), "{out:?}");
        // Rolled out means the pods beyond the count are at least terminating.
        let live = c.live_pods("default", "web");
        assert_eq!(live.len(), n, "live pods after scaling to {n}: {live:#?}");
        assert!(live.iter().all(running_and_ready), "{live:#?}");
        // One ReplicaSet throughout, of the Deployment's size.
        let sets = c.replicasets("default", "web");
        assert_eq!(sets.len(), 1, "{sets:?}");
        assert_eq!(sets[0].1, n as i64, "{sets:?}");
    }
    // Terminating pods finish on their nodes.
    wait_until(SOON, "two pods left", || {
        let all = c.list("default", "pods", "app=web");
        (all.len() == 2)
            .then_some(())
            .ok_or(format!("{} pods", all.len()))
    });
}

/// A rolling update stays within maxSurge and maxUnavailable, pod by pod; history, undo,
/// pause, resume and restart behave as kubectl expects.
#[test]
fn rolling_update_history_undo_pause_restart() {
    let c = Cluster::start();
    c.apply("default", &deployment("web", 4, "img:1"));
    c.rolled_out("default", "web");
    let watch = PodWatch::start(&c.server, "app=web");
    assert_eq!(
        watch.seen().timeline.last().map(|t| (t.0, t.1)),
        Some((4, 4)),
        "{:?}",
        watch.seen()
    );

    // All pods of `image`, as many as the Deployment wants.
    let all_run = |image_: &str| {
        let live = c.live_pods("default", "web");
        assert_eq!(live.len(), 4, "{live:#?}");
        assert!(
            live.iter()
                .all(|p| image(p) == image_ && running_and_ready(p)),
            "all pods should run {image_}: {live:#?}"
        );
    };
    let template_image = || {
        c.kc(&[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ])
        .ok()
        .to_string()
    };

    // The rollout.
    c.kc(&["set", "image", "deployment/web", "app=img:2"])
        .assert_lines(&["deployment.apps/web image updated"]);
    c.rolled_out("default", "web");
    all_run("img:2");
    let sets = c.replicasets("default", "web");
    assert_eq!(sets.len(), 2, "{sets:?}");
    assert!(
        sets.iter().any(|(_, n, img)| *n == 4 && img == "img:2")
            && sets.iter().any(|(_, n, img)| *n == 0 && img == "img:1"),
        "{sets:?}"
    );

    // History.
    let out = c.kc(&["rollout", "history", "deployment/web"]);
    let lines = normalized_lines(out.ok());
    assert_eq!(
        lines,
        [
            "deployment.apps/web",
            "REVISION CHANGE-CAUSE",
            "1 <none>",
            "2 <none>"
        ],
        "{out:?}"
    );
    let out = c.kc(&["rollout", "history", "deployment/web", "--revision=1"]);
    assert!(out.ok().contains("img:1"), "{out:?}");

    // Undo: back to the first template, which becomes revision 3.
    c.kc(&["rollout", "undo", "deployment/web"])
        .assert_lines(&["deployment.apps/web rolled back"]);
    assert_eq!(template_image(), "img:1");
    c.rolled_out("default", "web");
    all_run("img:1");
    let out = c.kc(&["rollout", "history", "deployment/web"]);
    let lines = normalized_lines(out.ok());
    assert_eq!(lines[2..], ["2 <none>", "3 <none>"], "{out:?}");
    assert_eq!(c.replicasets("default", "web").len(), 2);

    // Paused: a new template does not roll.
    c.kc(&["rollout", "pause", "deployment/web"])
        .assert_lines(&["deployment.apps/web paused"]);
    c.kc(&["set", "image", "deployment/web", "app=img:3"])
        .assert_lines(&["deployment.apps/web image updated"]);
    let d = observed(&c, "default", "web");
    let progressing = d["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Progressing")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (&progressing["status"], &progressing["reason"]),
        (&json!("Unknown"), &json!("DeploymentPaused")),
        "{d:#}"
    );
    let before = c.replicasets("default", "web");
    stays(STEADY, "the ReplicaSets of a paused Deployment", || {
        let now = c.replicasets("default", "web");
        (now == before)
            .then_some(())
            .ok_or(format!("{before:?} became {now:?}"))
    });
    all_run("img:1");

    // Resumed: it rolls.
    c.kc(&["rollout", "resume", "deployment/web"])
        .assert_lines(&["deployment.apps/web resumed"]);
    c.rolled_out("default", "web");
    all_run("img:3");

    // Restarted: a new ReplicaSet of the same image.
    let before: Vec<String> = c
        .replicasets("default", "web")
        .into_iter()
        .map(|s| s.0)
        .collect();
    c.kc(&["rollout", "restart", "deployment/web"])
        .assert_lines(&["deployment.apps/web restarted"]);
    c.rolled_out("default", "web");
    all_run("img:3");
    let sets = c.replicasets("default", "web");
    let new: Vec<_> = sets.iter().filter(|s| !before.contains(&s.0)).collect();
    assert_eq!(new.len(), 1, "one new ReplicaSet: {before:?} → {sets:?}");
    assert_eq!((new[0].1, new[0].2.as_str()), (4, "img:3"), "{sets:?}");
    let hash = new[0].0.trim_start_matches("web-");
    let live = c.live_pods("default", "web");
    assert!(
        live.iter()
            .all(|p| p["metadata"]["labels"]["pod-template-hash"] == hash),
        "every pod should be of {}: {live:#?}",
        new[0].0
    );

    // Every moment of the four rollouts, as the watch saw them.
    let seen = watch.finish();
    eprintln!(
        "pod watch: {} events; (ready, total) timeline: {:?}",
        seen.events,
        seen.timeline.iter().map(|t| (t.0, t.1)).collect::<Vec<_>>()
    );
    assert!(seen.events > 0, "{seen:?}");
    // What the controllers did, to tell why when a bound is crossed.
    let events = || {
        c.kc(&[
            "get",
            "events",
            "--sort-by=.metadata.resourceVersion",
            "-o",
            "custom-columns=RV:.metadata.resourceVersion,REASON:.reason,\
             OBJECT:.involvedObject.name,MESSAGE:.message",
        ])
        .ok()
        .to_string()
    };
    assert!(
        seen.min_ready.unwrap_or(0) >= 3,
        "fewer than replicas - maxUnavailable (3) Ready pods at some moment: {:#?}\n{}",
        seen.timeline,
        events()
    );
    assert!(
        seen.max_total <= 5,
        "more than replicas + maxSurge (5) pods at some moment: {:#?}\n{}",
        seen.timeline,
        events()
    );
}

/// Deleting a Deployment with each propagation policy kubectl offers.
#[test]
fn deployment_deletion_propagates() {
    let c = Cluster::start();
    for app in ["bg", "fg", "fg-held", "orphan"] {
        c.apply("default", &deployment(app, 2, "img:1"));
    }
    for app in ["bg", "fg", "fg-held", "orphan"] {
        c.rolled_out("default", app);
    }
    let nothing_left = |app: &str| {
        let selector = format!("app={app}");
        let left: Vec<String> = ["replicasets", "pods"]
            .iter()
            .flat_map(|k| c.list("default", k, &selector))
            .map(|o| format!("{} {}", o["kind"], name(&o)))
            .collect();
        left.is_empty().then_some(()).ok_or(format!("{left:?}"))
    };
    let mut cases = Cases::default();

    cases.case("background", || {
        c.kc(&["delete", "deployment", "bg", "--cascade=background"])
            .assert_lines(&["deployment.apps \"bg\" deleted"]);
        c.gone(&["deployment", "bg"]).unwrap();
        wait_until(SOON, "the ReplicaSet and pods of bg to go", || {
            nothing_left("bg")
        });
    });

    cases.case("foreground", || {
        // kubectl waits until the Deployment is gone; by then so are its dependents.
        c.kc(&["delete", "deployment", "fg", "--cascade=foreground"])
            .assert_lines(&["deployment.apps \"fg\" deleted"]);
        c.gone(&["deployment", "fg"]).unwrap();
        nothing_left("fg").unwrap();
    });

    cases.case("foreground, a pod held by a finalizer", || {
        let pods = c.live_pods("default", "fg-held");
        assert_eq!(pods.len(), 2);
        let held = name(&pods[0]).to_string();
        c.kc(&[
            "patch",
            "pod",
            &held,
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":["e2e.skiff.dev/hold"]}}"#,
        ])
        .ok();
        c.kc(&[
            "delete",
            "deployment",
            "fg-held",
            "--cascade=foreground",
            "--wait=false",
        ])
        .assert_lines(&["deployment.apps \"fg-held\" deleted"]);
        // The other pod goes; the held one, its ReplicaSet and the Deployment wait.
        wait_until(SOON, "only the held pod to be left", || {
            let left = c.list("default", "pods", "app=fg-held");
            let names: Vec<&str> = left.iter().map(name).collect();
            (names == [held.as_str()] && terminating(&left[0]))
                .then_some(())
                .ok_or(format!("{names:?}"))
        });
        let waiting = |obj: Value| {
            assert!(terminating(&obj), "{obj:#}");
            assert!(
                finalizers(&obj).contains(&"foregroundDeletion".to_string()),
                "{obj:#}"
            );
        };
        stays(
            STEADY,
            "the foreground deletion waiting for the pod",
            || {
                waiting(c.get("default", &["deployment", "fg-held"]));
                let sets = c.list("default", "replicasets", "app=fg-held");
                assert_eq!(sets.len(), 1, "{sets:#?}");
                waiting(sets[0].clone());
                Ok(())
            },
        );
        // Released, the pod goes, then its ReplicaSet, then the Deployment.
        c.kc(&[
            "patch",
            "pod",
            &held,
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
        ])
        .ok();
        c.kc(&[
            "wait",
            "--for=delete",
            "deployment/fg-held",
            "--timeout=60s",
        ])
        .ok();
        nothing_left("fg-held").unwrap();
    });

    cases.case("orphan", || {
        let uid = c.get("default", &["deployment", "orphan"])["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_string();
        let pods_before: Vec<String> = c
            .live_pods("default", "orphan")
            .iter()
            .map(|p| name(p).to_string())
            .collect();
        c.kc(&["delete", "deployment", "orphan", "--cascade=orphan"])
            .assert_lines(&["deployment.apps \"orphan\" deleted"]);
        c.gone(&["deployment", "orphan"]).unwrap();
        let check = || {
            let sets = c.list("default", "replicasets", "app=orphan");
            if sets.len() != 1 || owner_uids(&sets[0]).contains(&uid) {
                return Err(format!("ReplicaSets: {sets:#?}"));
            }
            let rs_uid = sets[0]["metadata"]["uid"].as_str().unwrap_or("");
            let pods = c.live_pods("default", "orphan");
            let mut names: Vec<String> = pods.iter().map(|p| name(p).to_string()).collect();
            names.sort();
            let mut want = pods_before.clone();
            want.sort();
            if names != want || !pods.iter().all(|p| owner_uids(p) == [rs_uid]) {
                return Err(format!("pods: {pods:#?}"));
            }
            Ok(())
        };
        check().unwrap();
        stays(STEADY, "the orphaned ReplicaSet and pods", check);
    });

    cases.finish();
}

/// Deleting a namespace deletes everything in it, then the namespace; content held by a
/// finalizer keeps the namespace Terminating until it is let go.
#[test]
fn namespace_deletion_empties_it() {
    let c = Cluster::start();
    for ns in ["doomed", "held"] {
        c.kc(&["create", "namespace", ns])
            .assert_lines(&[&format!("namespace/{ns} created")]);
        c.apply(ns, &deployment("web", 2, "img:1"));
        c.apply(
            ns,
            &json!({
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
            }),
        );
        c.apply(
            ns,
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"},
                    "data": {"k": "v"}}),
        );
        c.apply(
            ns,
            &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                    "stringData": {"k": "v"}}),
        );
    }
    c.apply(
        "held",
        &json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "hold", "finalizers": ["e2e.skiff.dev/hold"]}}),
    );
    for ns in ["doomed", "held"] {
        c.rolled_out(ns, "web");
    }

    // What is left in `ns`, of the kinds it held and those controllers write.
    let left_in = |ns: &str| -> Vec<String> {
        let kinds = "deployments,replicasets,pods,services,endpoints,endpointslices,\
                     configmaps,secrets,serviceaccounts,events";
        items(&c.get("default", &[kinds, "--all-namespaces"]))
            .iter()
            .filter(|o| o["metadata"]["namespace"] == ns)
            .map(|o| format!("{} {}", o["kind"].as_str().unwrap_or(""), name(o)))
            .collect()
    };
    let empty = |ns: &str| {
        let left = left_in(ns);
        left.is_empty().then_some(()).ok_or(format!("{left:?}"))
    };

    c.kc(&["delete", "namespace", "held", "--wait=false"])
        .assert_lines(&["namespace \"held\" deleted"]);

    // kubectl waits until the namespace is gone; nothing under it is left, and nothing
    // comes back.
    c.kc(&["delete", "namespace", "doomed", "--timeout=60s"])
        .assert_lines(&["namespace \"doomed\" deleted"]);
    c.gone(&["namespace", "doomed"]).unwrap();
    empty("doomed").unwrap();
    stays(STEADY, "the deleted namespace staying empty", || {
        empty("doomed")
    });

    // The held ConfigMap is marked, not deleted, and the namespace waits for it.
    wait_until(SOON, "only the held ConfigMap to be left", || {
        let left = left_in("held");
        (left == ["ConfigMap hold"])
            .then_some(())
            .ok_or(format!("{left:?}"))
    });
    let hold = c.get("held", &["configmap", "hold"]);
    assert!(terminating(&hold), "{hold:#}");
    let ns = c.get("", &["namespace", "held"]);
    assert_eq!(ns["status"]["phase"], "Terminating", "{ns:#}");
    // Its conditions say what holds it, in upstream's words.
    wait_until(SOON, "conditions naming the held ConfigMap", || {
        let ns = c.get("", &["namespace", "held"]);
        let said: Vec<String> = ns["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["status"] == "True")
            .map(|c| {
                format!(
                    "{}: {}",
                    c["type"].as_str().unwrap_or(""),
                    c["message"].as_str().unwrap_or("")
                )
            })
            .collect();
        (said
            == [
                "NamespaceContentRemaining: Some resources are remaining: configmaps. has 1 resource instances",
                "NamespaceFinalizersRemaining: Some content in the namespace has finalizers remaining: e2e.skiff.dev/hold in 1 resource instances",
            ])
        .then_some(())
        .ok_or(format!("{said:#?}"))
    });
    stays(
        STEADY,
        "the namespace waiting for the held ConfigMap",
        || {
            let ns = c.get("", &["namespace", "held"]);
            let left = left_in("held");
            (ns["status"]["phase"] == "Terminating" && left == ["ConfigMap hold"])
                .then_some(())
                .ok_or(format!("{left:?}, {ns:#}"))
        },
    );
    c.kc(&[
        "patch",
        "configmap",
        "hold",
        "-n",
        "held",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ])
    .ok();
    c.kc(&["wait", "--for=delete", "namespace/held", "--timeout=60s"])
        .ok();
    c.gone(&["namespace", "held"]).unwrap();
    empty("held").unwrap();
}
