//! Jobs and CronJobs on simulated nodes.
//!
//! The simulator completes a Job's pods `--job-duration` seconds after they start, so a
//! Job's life is what the Job controller makes of it: how many pods at a time, how they
//! are counted, when the Job is Complete or Failed, and what is left afterwards.

use crate::harness::{normalize, normalized_lines, wait_until, Kubectl, Server};
use crate::sim::Sim;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Generous for a debug build on a busy 2-core machine.
const SOON: Duration = Duration::from_secs(60);
/// A `* * * * *` CronJob fires at the next minute boundary: up to a minute away.
const NEXT_MINUTE: Duration = Duration::from_secs(80);

fn start() -> (Server, Sim) {
    let server = Server::start();
    let sim = Sim::start(&server, &["--count", "2", "--job-duration", "1"]);
    wait_until(SOON, "two Ready simulated nodes", || {
        let out = server
            .kubectl(Kubectl::V132)
            .run(&["get", "nodes", "--no-headers"]);
        let ready = normalized_lines(&out.stdout)
            .iter()
            .filter(|l| l.split(' ').nth(1) == Some("Ready"))
            .count();
        (ready == 2).then_some(()).ok_or(out.stdout.clone())
    });
    (server, sim)
}

fn create(server: &Server, json: &str) {
    server
        .kubectl(Kubectl::V132)
        .stdin(json)
        .run(&["create", "-f", "-"])
        .ok();
}

fn get_json(server: &Server, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    server.kubectl(Kubectl::V132).run(&all).json()
}

fn job(name: &str, spec: &str) -> String {
    format!(
        r#"{{"apiVersion":"batch/v1","kind":"Job","metadata":{{"name":"{name}"}},
            "spec":{{{spec}"template":{{"spec":{{"restartPolicy":"Never",
                "containers":[{{"name":"c","image":"busybox"}}]{extra}}}}}}}}}"#,
        extra = if name == "deadline" {
            r#","nodeSelector":{"nowhere":"true"}"#
        } else {
            ""
        }
    )
}

fn wait_for(server: &Server, condition: &str, job: &str) {
    server
        .kubectl(Kubectl::V132)
        .run(&[
            "wait",
            &format!("--for=condition={condition}"),
            &format!("job/{job}"),
            "--timeout=60s",
        ])
        .ok();
}

/// (reason, message) of the Events about a Job, oldest first.
fn events(server: &Server, job: &str) -> Vec<(String, String)> {
    let list = get_json(server, &["events"]);
    let mut out: Vec<(String, String, String)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["involvedObject"]["name"] == job)
        .map(|e| {
            (
                e["firstTimestamp"].as_str().unwrap_or("").to_string(),
                e["reason"].as_str().unwrap_or("").to_string(),
                e["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    out.sort();
    out.into_iter().map(|(_, r, m)| (r, m)).collect()
}

fn conditions(job: &Value) -> Vec<(String, String, String)> {
    job["status"]["conditions"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    (
                        c["type"].as_str().unwrap_or("").to_string(),
                        c["status"].as_str().unwrap_or("").to_string(),
                        c["reason"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Seconds since the epoch as RFC 3339 in UTC (civil-from-days, proleptic Gregorian).
fn rfc3339(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, min, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}Z")
}

fn triple(t: &str, s: &str, r: &str) -> (String, String, String) {
    (t.to_string(), s.to_string(), r.to_string())
}

#[test]
fn jobs_run_their_pods_to_completion_within_parallelism() {
    let (server, _sim) = start();
    let k = || server.kubectl(Kubectl::V132);

    // Every change to the Job's pods, in order, to count the active ones at each step.
    let mut watch = k().spawn(&[
        "get",
        "pods",
        "-l",
        "job-name=five",
        "--watch",
        "--no-headers",
        "-o",
        "custom-columns=NAME:.metadata.name,PHASE:.status.phase,DELETING:.metadata.deletionTimestamp",
    ]);
    create(&server, &job("five", r#""completions":5,"parallelism":2,"#));
    create(
        &server,
        &job(
            "indexed",
            r#""completions":3,"parallelism":3,"completionMode":"Indexed","#,
        ),
    );
    create(&server, &job("deadline", r#""activeDeadlineSeconds":2,"#));
    create(&server, &job("ttl", r#""ttlSecondsAfterFinished":0,"#));
    create(&server, &job("held", r#""suspend":true,"#));

    let mut pods: BTreeMap<String, (String, bool)> = BTreeMap::new();
    let mut most = 0;
    while pods.values().filter(|(p, _)| p == "Succeeded").count() < 5 {
        let line = watch.wait_for_line(SOON, |_| true);
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 3, "{line}");
        pods.insert(f[0].to_string(), (f[1].to_string(), f[2] != "<none>"));
        let active = pods
            .values()
            .filter(|(phase, gone)| {
                !gone && matches!(phase.as_str(), "Pending" | "Running" | "<none>")
            })
            .count();
        assert!(active <= 2, "{active} active pods: {:#?}", watch.seen());
        most = most.max(active);
    }
    watch.stop();
    assert_eq!(most, 2, "{pods:?}");

    wait_for(&server, "complete", "five");
    let five = get_json(&server, &["job", "five"]);
    let status = &five["status"];
    assert_eq!(status["succeeded"], 5, "{status}");
    assert!(
        status.get("failed").is_none() && status.get("active").is_none(),
        "{status}"
    );
    assert_eq!(status["ready"], 0);
    assert_eq!(status["terminating"], 0);
    assert_eq!(status["uncountedTerminatedPods"], serde_json::json!({}));
    assert!(status["completionTime"].is_string() && status["startTime"].is_string());
    assert_eq!(
        conditions(&five),
        [
            triple("SuccessCriteriaMet", "True", "CompletionsReached"),
            triple("Complete", "True", "CompletionsReached"),
        ]
    );
    let row = normalize(k().run(&["get", "job", "five", "--no-headers"]).ok());
    assert!(row.starts_with("five Complete 5/5 "), "{row}");
    // The pods stay, counted, without the tracking finalizer, labelled for their Job.
    let uid = five["metadata"]["uid"].as_str().unwrap();
    // The API server generated the selector and the template's labels on create.
    assert_eq!(
        five["spec"]["selector"],
        serde_json::json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
    );
    let template_labels = &five["spec"]["template"]["metadata"]["labels"];
    assert_eq!(template_labels["batch.kubernetes.io/job-name"], "five");
    assert_eq!(template_labels["controller-uid"], uid);
    let list = get_json(
        &server,
        &[
            "pods",
            "-l",
            &format!("batch.kubernetes.io/controller-uid={uid}"),
        ],
    );
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    for p in items {
        assert_eq!(p["status"]["phase"], "Succeeded");
        assert!(
            p["metadata"].get("finalizers").is_none(),
            "{}",
            p["metadata"]
        );
        assert_eq!(
            p["metadata"]["labels"]["batch.kubernetes.io/job-name"],
            "five"
        );
        assert_eq!(p["metadata"]["ownerReferences"][0]["uid"], uid);
    }
    let seen = events(&server, "five");
    let created = seen
        .iter()
        .filter(|(r, m)| r == "SuccessfulCreate" && m.starts_with("Created pod: five-"))
        .count();
    assert_eq!(created, 5, "{seen:?}");
    assert!(
        seen.contains(&("Completed".into(), "Job completed".into())),
        "{seen:?}"
    );

    // Indexed: one pod per index, named and hostnamed after it.
    wait_for(&server, "complete", "indexed");
    let indexed = get_json(&server, &["job", "indexed"]);
    assert_eq!(indexed["status"]["completedIndexes"], "0-2");
    assert_eq!(indexed["status"]["succeeded"], 3);
    let list = get_json(&server, &["pods", "-l", "job-name=indexed"]);
    let mut hosts: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let index = p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
                .as_str()
                .unwrap();
            assert!(p["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with(&format!("indexed-{index}-")));
            p["spec"]["hostname"].as_str().unwrap().to_string()
        })
        .collect();
    hosts.sort();
    assert_eq!(hosts, ["indexed-0", "indexed-1", "indexed-2"]);

    // Past its deadline (its pod can never be scheduled): Failed, and the pod is gone.
    wait_for(&server, "failed", "deadline");
    let deadline = get_json(&server, &["job", "deadline"]);
    assert_eq!(
        conditions(&deadline),
        [
            triple("FailureTarget", "True", "DeadlineExceeded"),
            triple("Failed", "True", "DeadlineExceeded"),
        ]
    );
    assert!(deadline["status"].get("completionTime").is_none());
    let seen = events(&server, "deadline");
    assert!(
        seen.contains(&(
            "DeadlineExceeded".into(),
            "Job was active longer than specified deadline".into()
        )),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|(r, _)| r == "SuccessfulDelete"),
        "{seen:?}"
    );
    wait_until(SOON, "the deadline Job's pod to go", || {
        let out = k().run(&["get", "pods", "-l", "job-name=deadline", "-o", "name"]);
        out.ok()
            .trim()
            .is_empty()
            .then_some(())
            .ok_or(out.stdout.clone())
    });
    let row = normalize(k().run(&["get", "job", "deadline", "--no-headers"]).ok());
    assert!(row.starts_with("deadline Failed 0/1 "), "{row}");

    // ttlSecondsAfterFinished: 0 deletes the Job, and its pods with it, once finished.
    wait_until(SOON, "the ttl Job and its pods to go", || {
        let job = k().run(&["get", "job", "ttl", "-o", "name"]);
        let pods = k().run(&["get", "pods", "-l", "job-name=ttl", "-o", "name"]);
        (job.stderr.contains("NotFound") && pods.stdout.trim().is_empty())
            .then_some(())
            .ok_or(format!("{job:?} {pods:?}"))
    });

    // Suspended: no pods and a Suspended condition, until it is resumed.
    wait_for(&server, "suspended", "held");
    let held = get_json(&server, &["job", "held"]);
    assert_eq!(
        conditions(&held),
        [triple("Suspended", "True", "JobSuspended")]
    );
    assert!(held["status"].get("startTime").is_none());
    let row = normalize(k().run(&["get", "job", "held", "--no-headers"]).ok());
    assert!(row.starts_with("held Suspended 0/1 "), "{row}");
    k().run(&[
        "patch",
        "job",
        "held",
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":false}}"#,
    ])
    .ok();
    wait_for(&server, "complete", "held");
    let held = get_json(&server, &["job", "held"]);
    assert_eq!(
        conditions(&held)[0],
        triple("Suspended", "False", "JobResumed")
    );
    let seen = events(&server, "held");
    let reasons: Vec<&str> = seen.iter().map(|(r, _)| r.as_str()).collect();
    assert!(reasons.starts_with(&["Suspended", "Resumed"]), "{seen:?}");
}

#[test]
fn a_cronjob_runs_at_the_next_minute_and_keeps_its_history() {
    let (server, _sim) = start();
    let k = || server.kubectl(Kubectl::V132);
    // Start early in a minute, so the Jobs made by hand finish before the first run.
    wait_until(SOON, "the early part of a minute", || {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let second = now.as_secs() % 60;
        (1..=50)
            .contains(&second)
            .then_some(())
            .ok_or(second.to_string())
    });
    create(
        &server,
        r#"{"apiVersion":"batch/v1","kind":"CronJob","metadata":{"name":"tick"},
            "spec":{"schedule":"* * * * *","successfulJobsHistoryLimit":1,
                    "jobTemplate":{"spec":{"template":{"spec":{"restartPolicy":"Never",
                        "containers":[{"name":"c","image":"busybox"}]}}}}}}"#,
    );
    let uid = get_json(&server, &["cronjob", "tick"])["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();

    // Two Jobs made from it by hand finish at once; the history keeps only the newer.
    k().run(&["create", "job", "--from=cronjob/tick", "manual-a"])
        .ok();
    k().run(&["create", "job", "--from=cronjob/tick", "manual-b"])
        .ok();
    wait_for(&server, "complete", "manual-b");
    wait_until(SOON, "manual-a to be trimmed", || {
        let out = k().run(&["get", "jobs", "-o", "name"]);
        let names = normalized_lines(&out.stdout);
        (!names.contains(&"job.batch/manual-a".to_string()))
            .then_some(())
            .ok_or(out.stdout.clone())
    });
    let seen = events(&server, "tick");
    assert!(
        seen.contains(&("SuccessfulDelete".into(), "Deleted job manual-a".into())),
        "{seen:?}"
    );

    // The schedule fires at the next minute: its Job completes and is all that is kept.
    let scheduled = wait_until(NEXT_MINUTE, "a scheduled Job", || {
        let list = get_json(&server, &["jobs"]);
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["metadata"]["name"].as_str().unwrap().starts_with("tick-"))
            .cloned()
            .ok_or_else(|| list.to_string())
    });
    let name = scheduled["metadata"]["name"].as_str().unwrap().to_string();
    let meta = &scheduled["metadata"];
    assert_eq!(meta["ownerReferences"][0]["uid"], uid.as_str());
    assert_eq!(meta["ownerReferences"][0]["kind"], "CronJob");
    let stamp = meta["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
        .as_str()
        .unwrap();
    let minutes: i64 = name.trim_start_matches("tick-").parse().unwrap();
    assert_eq!(stamp, rfc3339(minutes * 60), "{name}");
    wait_for(&server, "complete", &name);

    wait_until(SOON, "the history to keep only the scheduled Job", || {
        let out = k().run(&["get", "jobs", "-o", "name"]);
        let names = normalized_lines(&out.stdout);
        (names == [format!("job.batch/{name}")])
            .then_some(())
            .ok_or(out.stdout.clone())
    });
    let status = wait_until(SOON, "the CronJob's status", || {
        let cj = get_json(&server, &["cronjob", "tick"]);
        let s = cj["status"].clone();
        (s.get("active").is_none() && s["lastSuccessfulTime"].is_string())
            .then_some(s.clone())
            .ok_or(s.to_string())
    });
    assert_eq!(status["lastScheduleTime"], stamp);
    let seen = events(&server, "tick");
    for want in [
        (
            "SuccessfulCreate".to_string(),
            format!("Created job {name}"),
        ),
        (
            "SawCompletedJob".to_string(),
            format!("Saw completed job: {name}, condition: Complete"),
        ),
        (
            "SuccessfulDelete".to_string(),
            "Deleted job manual-b".to_string(),
        ),
    ] {
        assert!(seen.contains(&want), "no {want:?} in {seen:?}");
    }
    let row = normalize(k().run(&["get", "cronjob", "tick", "--no-headers"]).ok());
    assert!(row.starts_with("tick * * * * * <none> False 0 "), "{row}");
}
