//! What the API server itself adds to objects as they are created or updated, beyond
//! defaults: the steps upstream spreads over admission plugins (`Priority`,
//! `ServiceAccount`) and the kinds' strategies (Job selectors, the DaemonSet template
//! generation).

use super::objects::{meta, meta_mut, meta_str};
use super::status::{ApiError, ApiResult};
use super::Api;
use crate::registry::Resource;
use serde_json::{json, Map, Value};

/// The label a Job's pods carry with its uid (and the one its generated selector picks).
pub const JOB_CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
/// The label a Job's pods carry with its name.
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";
/// The annotation a DaemonSet carries with the generation of its pod template.
pub const DAEMONSET_TEMPLATE_GENERATION: &str = "deprecated.daemonset.template.generation";

/// The PriorityClasses every cluster has, with upstream's values.
pub const SYSTEM_PRIORITY_CLASSES: [(&str, i64, &str); 2] = [
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

/// The policy of a class that does not say.
const PREEMPT_LOWER_PRIORITY: &str = "PreemptLowerPriority";

/// Runs on an object about to be created, after its name and uid are set and before
/// defaults and validation.
pub fn on_create(api: &Api, r: &Resource, obj: &mut Value) -> ApiResult<()> {
    match (r.group, r.kind) {
        ("", "Pod") => {
            pod_service_account(api, obj)?;
            pod_priority(api, obj)
        }
        ("batch", "Job") => {
            job_selector(obj);
            Ok(())
        }
        ("apps", "DaemonSet") => {
            set_annotation(obj, DAEMONSET_TEMPLATE_GENERATION, "1");
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Runs on the new state of an object being updated (its main part), after defaults and
/// validation.
pub fn on_update(r: &Resource, old: &Value, new: &mut Value) {
    if (r.group, r.kind) == ("apps", "DaemonSet") {
        let generation = meta(old)
            .get("annotations")
            .and_then(|a| a.get(DAEMONSET_TEMPLATE_GENERATION))
            .and_then(Value::as_str)
            .and_then(|g| g.parse::<i64>().ok())
            .unwrap_or(1);
        let changed = old.pointer("/spec/template") != new.pointer("/spec/template");
        let generation = generation + i64::from(changed);
        set_annotation(new, DAEMONSET_TEMPLATE_GENERATION, &generation.to_string());
    }
}

/// The ServiceAccount a pod that names none runs as.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// Where the token volume is mounted in each container.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The prefix of the token volume's name.
pub const TOKEN_VOLUME_PREFIX: &str = "kube-api-access-";
/// The lifetime of the token the kubelet puts there: upstream's one hour and seven
/// seconds, which marks kubelet-made tokens.
pub const TOKEN_EXPIRATION_SECONDS: i64 = 3607;
/// The ConfigMap with the cluster CA in every namespace.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
/// The annotation a mirror (static) pod carries.
const MIRROR_POD: &str = "kubernetes.io/config.mirror";

/// Upstream's `ServiceAccount` admission on a pod being created: the ServiceAccount
/// defaults to `default`; a named one must exist (403 otherwise); `default` need not yet,
/// because the ServiceAccount controller makes it just after its namespace (upstream
/// waits for it briefly instead, and a cluster without controllers would never have it),
/// and the kubelet retries the token until it exists. Unless the pod or its account opt
/// out, every container gets the projected token volume. Mirror pods are left alone.
fn pod_service_account(api: &Api, pod: &mut Value) -> ApiResult<()> {
    if meta(pod)
        .get("annotations")
        .and_then(|a| a.get(MIRROR_POD))
        .is_some()
    {
        return Ok(());
    }
    let ns = meta_str(pod, "namespace").to_string();
    let name = pod
        .pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_SERVICE_ACCOUNT)
        .to_string();
    let accounts = crate::registry::find_kind("", "ServiceAccount")
        .ok_or_else(|| ApiError::internal("ServiceAccount is not served"))?;
    let account = api
        .store
        .get(&accounts.key(Some(&ns), &name))
        .and_then(|e| serde_json::from_slice::<Value>(&e.value).ok());
    if account.is_none() && name != DEFAULT_SERVICE_ACCOUNT {
        return Err(ApiError::forbidden(
            "",
            "pods",
            meta_str(pod, "name"),
            format!(
                "error looking up service account {ns}/{name}: serviceaccount \"{name}\" not found"
            ),
        ));
    }
    let suffix = super::objects::generate_name("");
    service_account(pod, &name, account.as_ref(), &suffix);
    Ok(())
}

/// The pure part of the ServiceAccount admission: `name` is the account, `account` it
/// if it exists, `suffix` the five random characters of a new volume's name.
pub fn service_account(pod: &mut Value, name: &str, account: Option<&Value>, suffix: &str) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    spec.insert("serviceAccountName".into(), name.into());
    // The pod's choice wins over its account's; both unset means mount.
    let automount = spec
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| {
            account
                .and_then(|a| a.get("automountServiceAccountToken"))
                .and_then(Value::as_bool)
        })
        .unwrap_or(true);
    // The account's image pull secrets serve a pod that names none.
    let pull_secrets = account
        .and_then(|a| a.get("imagePullSecrets"))
        .and_then(Value::as_array)
        .filter(|s| !s.is_empty());
    let has_pull_secrets = spec
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .is_some_and(|s| !s.is_empty());
    if let (Some(secrets), false) = (pull_secrets, has_pull_secrets) {
        spec.insert("imagePullSecrets".into(), Value::Array(secrets.clone()));
    }
    if !automount {
        return;
    }
    let existing = spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .find(|n| n.starts_with(TOKEN_VOLUME_PREFIX))
        .map(String::from);
    let volume = existing
        .clone()
        .unwrap_or_else(|| format!("{TOKEN_VOLUME_PREFIX}{suffix}"));
    let mount = json!({"name": volume, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
    let mut needed = false;
    for list in ["initContainers", "containers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in containers.iter_mut().filter(|c| c.is_object()) {
            let mounted = c
                .get("volumeMounts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(TOKEN_MOUNT_PATH));
            if mounted {
                continue;
            }
            let mounts = &mut c["volumeMounts"];
            if !mounts.is_array() {
                *mounts = json!([]);
            }
            if let Some(m) = mounts.as_array_mut() {
                m.push(mount.clone());
            }
            needed = true;
        }
    }
    if needed && existing.is_none() {
        let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
        if !volumes.is_array() {
            *volumes = json!([]);
        }
        if let Some(v) = volumes.as_array_mut() {
            v.push(token_volume(&volume));
        }
    }
}

/// The projected volume with the token, the cluster CA and the namespace.
fn token_volume(name: &str) -> Value {
    json!({
        "name": name,
        "projected": {
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION_SECONDS, "path": "token"}},
                {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
            "defaultMode": 420,
        },
    })
}

fn set_annotation(obj: &mut Value, key: &str, value: &str) {
    let m = meta_mut(obj);
    let annotations = m
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    if !annotations.is_object() {
        *annotations = Value::Object(Map::new());
    }
    annotations[key] = value.into();
}

/// Upstream's Job strategy: unless `spec.manualSelector`, the pod template gets the
/// Job's uid and name as labels (the current and the legacy keys, where the user has not
/// set them) and the selector picks the uid label.
fn job_selector(obj: &mut Value) {
    if obj.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true) {
        return;
    }
    let uid = meta_str(obj, "uid").to_string();
    let name = meta_str(obj, "name").to_string();
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let template = spec.entry("template").or_insert_with(|| json!({}));
    if let Some(t) = template.as_object_mut() {
        let metadata = t.entry("metadata").or_insert_with(|| json!({}));
        if !metadata.is_object() {
            *metadata = json!({});
        }
        let labels = &mut metadata["labels"];
        if !labels.is_object() {
            *labels = json!({});
        }
        if let Some(labels) = labels.as_object_mut() {
            for (key, value) in [
                (JOB_CONTROLLER_UID, &uid),
                (JOB_NAME, &name),
                ("controller-uid", &uid),
                ("job-name", &name),
            ] {
                labels.entry(key).or_insert_with(|| value.clone().into());
            }
        }
    }
    let selector = spec.entry("selector").or_insert_with(|| json!({}));
    if !selector.is_object() {
        *selector = json!({});
    }
    let match_labels = &mut selector["matchLabels"];
    if !match_labels.is_object() {
        *match_labels = json!({});
    }
    if let Some(m) = match_labels.as_object_mut() {
        m.entry(JOB_CONTROLLER_UID).or_insert_with(|| uid.into());
    }
}

/// Upstream's `Priority` admission plugin: a pod's `priorityClassName` (or else the
/// global default class) decides its `spec.priority` and `spec.preemptionPolicy`. An
/// unknown class is refused with 403, as is a priority that disagrees with the class.
fn pod_priority(api: &Api, obj: &mut Value) -> ApiResult<()> {
    let pod_name = meta_str(obj, "name").to_string();
    let class_name = obj
        .pointer("/spec/priorityClassName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let classes = crate::registry::find_kind("scheduling.k8s.io", "PriorityClass")
        .ok_or_else(|| ApiError::internal("PriorityClass is not served"))?;
    let class = if class_name.is_empty() {
        let page = api
            .store
            .list(&classes.prefix(None), None, 0, false, &|_| true);
        page.items
            .iter()
            .filter_map(|e| serde_json::from_slice::<Value>(&e.value).ok())
            .filter(|c| c.get("globalDefault").and_then(Value::as_bool) == Some(true))
            .min_by_key(|c| c.get("value").and_then(Value::as_i64).unwrap_or(0))
    } else {
        let entry = api
            .store
            .get(&classes.key(None, &class_name))
            .ok_or_else(|| {
                ApiError::forbidden(
                    "",
                    "pods",
                    &pod_name,
                    format!("no PriorityClass with name {class_name} was found"),
                )
            })?;
        Some(
            serde_json::from_slice::<Value>(&entry.value)
                .map_err(|e| ApiError::internal(format!("decoding PriorityClass: {e}")))?,
        )
    };
    let value = class
        .as_ref()
        .and_then(|c| c.get("value"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let policy = class.as_ref().map(|c| {
        c.get("preemptionPolicy")
            .and_then(Value::as_str)
            .unwrap_or(PREEMPT_LOWER_PRIORITY)
            .to_string()
    });
    let default_name = class
        .as_ref()
        .filter(|_| class_name.is_empty())
        .map(|c| meta_str(c, "name").to_string());
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let refuse = |what: String| ApiError::forbidden("", "pods", &pod_name, what);
    if let Some(given) = spec.get("priority").and_then(Value::as_i64) {
        if given != value {
            return Err(refuse(format!("the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name")));
        }
    }
    spec.insert("priority".into(), value.into());
    if let Some(name) = default_name {
        spec.insert("priorityClassName".into(), name.into());
    }
    match policy {
        Some(policy) => {
            if let Some(given) = spec.get("preemptionPolicy").and_then(Value::as_str) {
                if given != policy {
                    return Err(refuse(format!("the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name")));
                }
            }
            spec.insert("preemptionPolicy".into(), policy.into());
        }
        None => {
            spec.entry("preemptionPolicy")
                .or_insert_with(|| PREEMPT_LOWER_PRIORITY.into());
        }
    }
    Ok(())
}

/// The built-in PriorityClass objects, as bootstrap creates them.
pub fn system_priority_classes() -> Vec<Value> {
    SYSTEM_PRIORITY_CLASSES
        .iter()
        .map(|(name, value, description)| {
            json!({
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": name},
                "value": value,
                "globalDefault": false,
                "description": description,
                "preemptionPolicy": PREEMPT_LOWER_PRIORITY,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_container_gets_the_token_volume_once() {
        let mut pod = json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {
            "initContainers": [{"name": "i", "image": "x"}],
            "containers": [
                {"name": "a", "image": "x"},
                {"name": "b", "image": "x", "volumeMounts": [{"name": "mine", "mountPath": TOKEN_MOUNT_PATH}]},
            ],
            "volumes": [{"name": "mine", "emptyDir": {}}],
        }});
        service_account(&mut pod, "default", None, "abcde");
        let spec = &pod["spec"];
        assert_eq!(spec["serviceAccountName"], "default");
        let mount = json!({"name": "kube-api-access-abcde", "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
        assert_eq!(spec["initContainers"][0]["volumeMounts"], json!([mount]));
        assert_eq!(spec["containers"][0]["volumeMounts"], json!([mount]));
        assert_eq!(
            spec["containers"][1]["volumeMounts"]
                .as_array()
                .unwrap()
                .len(),
            1,
            "a container that mounts there already is left alone"
        );
        let volumes = spec["volumes"].as_array().unwrap();
        assert_eq!(volumes.len(), 2);
        let v = &volumes[1];
        assert_eq!(v["name"], "kube-api-access-abcde");
        assert_eq!(v["projected"]["defaultMode"], 420);
        let sources = &v["projected"]["sources"];
        assert_eq!(sources[0]["serviceAccountToken"]["expirationSeconds"], 3607);
        assert_eq!(sources[0]["serviceAccountToken"]["path"], "token");
        assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
        assert_eq!(sources[1]["configMap"]["items"][0]["key"], "ca.crt");
        assert_eq!(
            sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
            "metadata.namespace"
        );
        // Admitting again (an update never does, but a retried create might) adds nothing.
        let again = pod.clone();
        service_account(&mut pod, "default", None, "zzzzz");
        assert_eq!(pod, again);
    }

    #[test]
    fn the_pod_or_its_account_may_opt_out() {
        let base = json!({"spec": {"serviceAccountName": "robot", "containers": [{"name": "a"}]}});
        let mut pod = base.clone();
        pod["spec"]["automountServiceAccountToken"] = false.into();
        service_account(&mut pod, "robot", None, "abcde");
        assert!(pod["spec"].get("volumes").is_none());

        let account =
            json!({"automountServiceAccountToken": false, "imagePullSecrets": [{"name": "reg"}]});
        let mut pod = base.clone();
        service_account(&mut pod, "robot", Some(&account), "abcde");
        assert!(pod["spec"].get("volumes").is_none());
        assert_eq!(pod["spec"]["imagePullSecrets"], json!([{"name": "reg"}]));

        // The pod's true beats the account's false.
        let mut pod = base.clone();
        pod["spec"]["automountServiceAccountToken"] = true.into();
        service_account(&mut pod, "robot", Some(&account), "abcde");
        assert_eq!(pod["spec"]["volumes"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn a_job_gets_its_selector_and_pod_labels() {
        let mut job = json!({
            "metadata": {"name": "pi", "uid": "u-1"},
            "spec": {"template": {"metadata": {"labels": {"app": "pi", "job-name": "mine"}}}},
        });
        job_selector(&mut job);
        assert_eq!(
            job["spec"]["selector"],
            json!({"matchLabels": {JOB_CONTROLLER_UID: "u-1"}})
        );
        assert_eq!(
            job["spec"]["template"]["metadata"]["labels"],
            json!({"app": "pi", "job-name": "mine", "controller-uid": "u-1",
                   JOB_CONTROLLER_UID: "u-1", JOB_NAME: "pi"})
        );
        let mut manual = json!({
            "metadata": {"name": "m", "uid": "u-2"},
            "spec": {"manualSelector": true, "selector": {"matchLabels": {"a": "b"}}},
        });
        let before = manual.clone();
        job_selector(&mut manual);
        assert_eq!(manual, before);
    }

    #[test]
    fn the_daemonset_template_generation_follows_template_changes() {
        let r = crate::registry::find_kind("apps", "DaemonSet").unwrap();
        let old = json!({
            "metadata": {"annotations": {DAEMONSET_TEMPLATE_GENERATION: "3"}},
            "spec": {"template": {"spec": {"containers": [{"image": "a"}]}}},
        });
        let mut same = json!({
            "metadata": {},
            "spec": {"template": {"spec": {"containers": [{"image": "a"}]}}, "minReadySeconds": 5},
        });
        on_update(r, &old, &mut same);
        assert_eq!(
            same["metadata"]["annotations"][DAEMONSET_TEMPLATE_GENERATION],
            "3"
        );
        let mut changed = json!({
            "metadata": {"annotations": {DAEMONSET_TEMPLATE_GENERATION: "9"}},
            "spec": {"template": {"spec": {"containers": [{"image": "b"}]}}},
        });
        on_update(r, &old, &mut changed);
        assert_eq!(
            changed["metadata"]["annotations"][DAEMONSET_TEMPLATE_GENERATION],
            "4"
        );
    }
}
