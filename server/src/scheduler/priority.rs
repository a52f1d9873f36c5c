//! Pod priority from PriorityClasses.
//!
//! The API server's admission step (`api/admission.rs`) copies a pod's class value into
//! `spec.priority` (and its `preemptionPolicy`) when the pod is created, and bootstrap
//! creates the built-in `system-*` classes. The scheduler reads `spec.priority`; for a pod
//! stored without one (written before admission did this) it resolves the class itself,
//! the same way.

use std::collections::{HashMap, HashSet};

use crate::api::admission::SYSTEM_PRIORITY_CLASSES;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::scheduling::v1::PriorityClass;

/// The policy of a class that does not say.
const PREEMPT_LOWER_PRIORITY: &str = "PreemptLowerPriority";

/// What a PriorityClass gives its pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Class {
    /// `value`.
    pub value: i32,
    /// `globalDefault`.
    pub global_default: bool,
    /// `preemptionPolicy`.
    pub preemption_policy: Option<String>,
}

/// The PriorityClasses the watch has shown, by name.
#[derive(Debug, Default)]
pub struct Classes {
    by_name: HashMap<String, Class>,
}

impl Classes {
    /// Adds or updates a class.
    pub fn apply(&mut self, pc: &PriorityClass) {
        let Some(name) = pc.metadata.name.clone() else {
            return;
        };
        self.by_name.insert(
            name,
            Class {
                value: pc.value.unwrap_or(0),
                global_default: pc.global_default.unwrap_or(false),
                preemption_policy: pc.preemption_policy.clone(),
            },
        );
    }

    /// Removes a class.
    pub fn delete(&mut self, name: &str) {
        self.by_name.remove(name);
    }

    /// Drops classes not in `keep` (after a relist).
    pub fn retain(&mut self, keep: &HashSet<String>) {
        self.by_name.retain(|k, _| keep.contains(k));
    }

    /// A class by name; the built-in ones exist even before their objects do.
    fn get(&self, name: &str) -> Option<Class> {
        if let Some(c) = self.by_name.get(name) {
            return Some(c.clone());
        }
        SYSTEM_PRIORITY_CLASSES
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, value, _)| Class {
                value: i32::try_from(*value).unwrap_or(i32::MAX),
                global_default: false,
                preemption_policy: None,
            })
    }

    /// The global default class: of several, the one with the lowest value (as upstream).
    fn global_default(&self) -> Option<&Class> {
        self.by_name
            .values()
            .filter(|c| c.global_default)
            .min_by_key(|c| c.value)
    }

    /// Fills in `spec.priority` and `spec.preemptionPolicy` of a pod that has no priority
    /// yet, as admission would have: from its class, else from the global default class,
    /// else 0. A pod naming an unknown class is left alone (admission would have refused
    /// it; it counts as priority 0).
    pub fn resolve(&self, pod: &mut Pod) {
        let Some(spec) = pod.spec.as_mut() else {
            return;
        };
        if spec.priority.is_some() {
            return;
        }
        let class = match spec
            .priority_class_name
            .as_deref()
            .filter(|n| !n.is_empty())
        {
            Some(name) => match self.get(name) {
                Some(c) => Some(c),
                None => return,
            },
            None => self.global_default().cloned(),
        };
        let (value, policy) = match class {
            Some(c) => (c.value, c.preemption_policy),
            None => (0, None),
        };
        spec.priority = Some(value);
        if spec.preemption_policy.is_none() {
            spec.preemption_policy =
                Some(policy.unwrap_or_else(|| PREEMPT_LOWER_PRIORITY.to_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn class(name: &str, value: i32, default: bool, policy: Option<&str>) -> PriorityClass {
        PriorityClass {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            value: Some(value),
            global_default: Some(default),
            preemption_policy: policy.map(str::to_owned),
            ..Default::default()
        }
    }

    fn pod(class: Option<&str>, priority: Option<i32>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                priority_class_name: class.map(str::to_owned),
                priority,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn resolved(classes: &Classes, mut p: Pod) -> (Option<i32>, Option<String>) {
        classes.resolve(&mut p);
        let spec = p.spec.unwrap();
        (spec.priority, spec.preemption_policy)
    }

    #[test]
    fn classes_give_pods_their_priority() {
        let mut c = Classes::default();
        c.apply(&class("high", 1000, false, Some("Never")));
        c.apply(&class("low", 10, false, None));
        assert_eq!(
            resolved(&c, pod(Some("high"), None)),
            (Some(1000), Some("Never".into()))
        );
        assert_eq!(
            resolved(&c, pod(Some("low"), None)),
            (Some(10), Some(PREEMPT_LOWER_PRIORITY.into()))
        );
        // Admission already did it: left alone.
        assert_eq!(resolved(&c, pod(Some("high"), Some(5))), (Some(5), None));
        // Built-ins, unknown classes, and no class without a global default.
        assert_eq!(
            resolved(&c, pod(Some("system-node-critical"), None)).0,
            Some(2_000_001_000)
        );
        assert_eq!(resolved(&c, pod(Some("nope"), None)), (None, None));
        assert_eq!(resolved(&c, pod(None, None)).0, Some(0));
        // The lowest global default applies to pods without a class.
        c.apply(&class("d1", 50, true, None));
        c.apply(&class("d2", 40, true, None));
        assert_eq!(resolved(&c, pod(None, None)).0, Some(40));
        c.retain(&HashSet::from(["high".to_owned(), "d1".to_owned()]));
        assert_eq!(resolved(&c, pod(None, None)).0, Some(50));
        c.delete("d1");
        assert_eq!(resolved(&c, pod(None, None)).0, Some(0));
        assert_eq!(resolved(&c, pod(Some("low"), None)), (None, None));
    }
}
