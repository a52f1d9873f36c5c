//! Preemption, as upstream's DefaultPreemption plugin does it: when a pod fits nowhere,
//! find nodes where removing pods of lower priority would let it fit, choose the fewest and
//! least important victims on each (sparing pods a PodDisruptionBudget protects when it
//! can), and pick the node where preempting hurts least. Pure functions over the cache and
//! plain values; the loop in `mod.rs` nominates the pod and deletes the victims.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::cache::{Cache, PodFacts};
use super::filter::{self, Reason};
use super::schedule::{self, Cursor, DryRun, Unschedulable};

/// A node without pods of lower priority.
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";
/// A node that fails for a reason removing pods cannot change.
pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
/// A pod with `preemptionPolicy: Never`.
pub const NEVER: &str = "not eligible due to preemptionPolicy=Never.";
/// A pod whose earlier victims are still terminating.
pub const TERMINATING: &str = "not eligible due to a terminating pod on the nominated node.";
/// Dry runs stop once this share (percent) of the potential nodes gave candidates...
const MIN_CANDIDATE_NODES_PERCENT: usize = 10;
/// ...and at least this many (upstream's defaults).
const MIN_CANDIDATE_NODES: usize = 100;

/// A PodDisruptionBudget as preemption reads it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Budget {
    /// Its namespace.
    pub namespace: String,
    /// `spec.selector`.
    pub selector: Option<LabelSelector>,
    /// `status.disruptionsAllowed`.
    pub allowed: i32,
    /// Names in `status.disruptedPods` (already counted by the API server).
    pub disrupted: HashSet<String>,
}

impl Budget {
    /// Reads a PodDisruptionBudget.
    pub fn from_pdb(pdb: &PodDisruptionBudget) -> Budget {
        let status = pdb.status.as_ref();
        Budget {
            namespace: pdb.metadata.namespace.clone().unwrap_or_default(),
            selector: pdb.spec.as_ref().and_then(|s| s.selector.clone()),
            allowed: status.and_then(|s| s.disruptions_allowed).unwrap_or(0),
            disrupted: status
                .and_then(|s| s.disrupted_pods.as_ref())
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default(),
        }
    }

    fn selects(&self, pod: &PodFacts) -> bool {
        let empty = self.selector.as_ref().is_none_or(|s| {
            s.match_labels.as_ref().is_none_or(|m| m.is_empty())
                && s.match_expressions.as_ref().is_none_or(Vec::is_empty)
        });
        // As upstream's preemption: a missing or empty selector matches nothing.
        self.namespace == pod.namespace
            && !empty
            && filter::selector_matches(self.selector.as_ref(), &pod.labels)
    }
}

/// The pods to preempt on one node.
#[derive(Debug, Clone)]
pub struct Victims {
    /// Most important first.
    pub pods: Vec<Arc<PodFacts>>,
    /// How many of them a budget does not allow to disrupt.
    pub pdb_violations: usize,
}

/// A node where preemption makes room.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The node.
    pub node: String,
    /// What to delete there.
    pub victims: Victims,
}

/// What preemption decided.
#[derive(Debug)]
pub enum Outcome {
    /// Delete the victims and nominate the pod to the node.
    Preempt(Candidate),
    /// Nothing to preempt.
    NotPossible {
        /// What upstream appends to the FailedScheduling message (`preemption: ...`).
        message: String,
        /// Whether the pod's nomination, if any, is to be cleared (no node would do even
        /// with preemption, as opposed to not trying).
        clear_nomination: bool,
    },
}

/// Upstream's MoreImportantPod as an ordering, most important first: higher priority, then
/// the pod that started earlier (one not started yet counts as starting now).
pub fn importance(a: &PodFacts, b: &PodFacts) -> Ordering {
    b.priority
        .cmp(&a.priority)
        .then_with(|| started(a).cmp(&started(b)))
}

fn started(p: &PodFacts) -> i64 {
    p.start.unwrap_or(i64::MAX)
}

/// Splits `pods` into those whose eviction would exceed a budget and the others, keeping
/// their order; each budget's allowance is spent in that order (upstream's
/// filterPodsWithPDBViolation).
pub fn split_by_budget(
    pods: Vec<Arc<PodFacts>>,
    budgets: &[&Budget],
) -> (Vec<Arc<PodFacts>>, Vec<Arc<PodFacts>>) {
    let mut allowed: Vec<i32> = budgets.iter().map(|b| b.allowed).collect();
    let (mut violating, mut fine) = (Vec::new(), Vec::new());
    for pod in pods {
        let mut violates = false;
        if !pod.labels.is_empty() {
            for (i, b) in budgets.iter().enumerate() {
                if !b.selects(&pod) || b.disrupted.contains(&pod.name) {
                    continue;
                }
                allowed[i] -= 1;
                if allowed[i] < 0 {
                    violates = true;
                }
            }
        }
        if violates {
            violating.push(pod);
        } else {
            fine.push(pod);
        }
    }
    (violating, fine)
}

/// Chooses victims on one node (upstream's SelectVictimsOnNode): every pod of lower
/// priority than `priority` is removed; if the pod then fits (`fits`, given the keys of
/// the pods removed), pods are put back one at a time, budget-protected ones first and
/// the most important first, and whatever does not fit back is a victim. The error is the
/// node's status for the message: no victims, or why it fails even without them.
pub fn select_victims<'a>(
    on_node: impl IntoIterator<Item = &'a Arc<PodFacts>>,
    priority: i32,
    budgets: &[&Budget],
    mut fits: impl FnMut(&HashSet<String>) -> Result<(), Vec<Reason>>,
) -> Result<Victims, Vec<String>> {
    let mut potential: Vec<Arc<PodFacts>> = on_node
        .into_iter()
        .filter(|p| p.priority < priority)
        .cloned()
        .collect();
    if potential.is_empty() {
        return Err(vec![NO_VICTIMS.to_owned()]);
    }
    let mut removed: HashSet<String> = potential.iter().map(|p| p.key.clone()).collect();
    if let Err(why) = fits(&removed) {
        return Err(why.iter().map(ToString::to_string).collect());
    }
    potential.sort_by(|a, b| importance(a, b));
    let (violating, fine) = split_by_budget(potential, budgets);
    let mixed = !violating.is_empty() && !fine.is_empty();
    let mut victims = Vec::new();
    let mut pdb_violations = 0;
    for (pod, violates) in violating
        .into_iter()
        .map(|p| (p, true))
        .chain(fine.into_iter().map(|p| (p, false)))
    {
        removed.remove(&pod.key);
        if fits(&removed).is_err() {
            removed.insert(pod.key.clone());
            pdb_violations += usize::from(violates);
            victims.push(pod);
        }
    }
    if victims.is_empty() {
        // The pod fits with every pod in place: the filters disagree with the earlier
        // verdict (upstream reports this as an error of the node).
        return Err(Vec::new());
    }
    if mixed {
        victims.sort_by(|a, b| importance(a, b));
    }
    Ok(Victims {
        pods: victims,
        pdb_violations,
    })
}

/// Picks the candidate to preempt on (upstream's pickOneNodeForPreemption): fewest budget
/// violations, then the lowest highest victim priority, the lowest sum of priorities, the
/// fewest victims, the latest start among the highest-priority victims, then the first.
pub fn pick(candidates: &[Candidate]) -> Option<usize> {
    type Score = fn(&Victims) -> i64;
    let scores: [Score; 5] = [
        |v| -(v.pdb_violations as i64),
        |v| -v.pods.first().map_or(0, |p| i64::from(p.priority)),
        |v| {
            -v.pods
                .iter()
                .map(|p| i64::from(p.priority) + i64::from(i32::MAX) + 1)
                .sum::<i64>()
        },
        |v| -(v.pods.len() as i64),
        |v| {
            let top = v.pods.first().map_or(0, |p| p.priority);
            v.pods
                .iter()
                .filter(|p| p.priority == top)
                .map(|p| started(p))
                .min()
                .unwrap_or(i64::MAX)
        },
    ];
    let mut left: Vec<usize> = (0..candidates.len()).collect();
    for score in scores {
        if left.len() <= 1 {
            break;
        }
        let best = left
            .iter()
            .map(|&i| score(&candidates[i].victims))
            .max()
            .unwrap_or(0);
        left.retain(|&i| score(&candidates[i].victims) == best);
    }
    left.first().copied()
}

/// Whether the pod may preempt now (upstream's PodEligibleToPreemptOthers): not with
/// `preemptionPolicy: Never`, and not while victims of an earlier preemption are still
/// terminating on its nominated node (unless that node is now out of the question).
fn eligible(
    cache: &Cache,
    pod: &Pod,
    facts: &PodFacts,
    failures: &[(usize, Vec<Reason>)],
) -> Result<(), &'static str> {
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
        return Err(NEVER);
    }
    let Some(nominated) = schedule::nominated_node(cache, pod, &facts.key) else {
        return Ok(());
    };
    let Some(info) = cache.node(nominated) else {
        return Ok(());
    };
    let unresolvable = failures.iter().any(|(i, why)| {
        cache.slots().get(*i).is_some_and(|s| s.name == nominated)
            && !why.iter().all(Reason::preemption_may_help)
    });
    if unresolvable {
        return Ok(());
    }
    if info
        .pods
        .values()
        .any(|p| p.priority < facts.priority && p.preempted)
    {
        return Err(TERMINATING);
    }
    Ok(())
}

/// Runs preemption for a pod that fits nowhere (`unschedulable` is why).
pub fn preempt(
    cache: &Cache,
    pod: &Pod,
    facts: &PodFacts,
    unschedulable: &Unschedulable,
    budgets: &[&Budget],
    cursor: &mut Cursor,
) -> Outcome {
    if let Err(why) = eligible(cache, pod, facts, &unschedulable.failures) {
        return Outcome::NotPossible {
            message: format!("preemption: {why}"),
            clear_nomination: false,
        };
    }
    let all = cache.node_count();
    let potential: Vec<usize> = unschedulable
        .failures
        .iter()
        .filter(|(_, why)| why.iter().all(Reason::preemption_may_help))
        .map(|(i, _)| *i)
        .collect();
    let n = potential.len();
    let wanted = (n * MIN_CANDIDATE_NODES_PERCENT / 100)
        .max(MIN_CANDIDATE_NODES)
        .min(n);
    let offset = cursor.below(n);
    let mut statuses: Vec<String> = Vec::new();
    let (mut clean, mut violating) = (Vec::new(), Vec::new());
    if n > 0 {
        let dry = DryRun::new(cache, pod, facts);
        for k in 0..n {
            let Some(info) = cache.slots().get(potential[(offset + k) % n]) else {
                continue;
            };
            let result = select_victims(info.pods.values(), facts.priority, budgets, |gone| {
                dry.fits(info, gone)
            });
            match result {
                Ok(victims) => {
                    let c = Candidate {
                        node: info.name.clone(),
                        victims,
                    };
                    if c.victims.pdb_violations == 0 {
                        clean.push(c);
                    } else {
                        violating.push(c);
                    }
                    if !clean.is_empty() && clean.len() + violating.len() >= wanted {
                        break;
                    }
                }
                Err(why) => statuses.extend(why),
            }
        }
    }
    clean.append(&mut violating);
    let mut candidates = clean;
    match pick(&candidates) {
        Some(best) => Outcome::Preempt(candidates.swap_remove(best)),
        None => {
            statuses.extend(std::iter::repeat_n(
                NOT_HELPFUL.to_owned(),
                all.saturating_sub(n),
            ));
            Outcome::NotPossible {
                message: format!("preemption: {}", filter::fit_error(all, statuses)),
                clear_nomination: true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::cache::tests::{bound, node, pod};
    use crate::scheduler::schedule::schedule;
    use crate::scheduler::Strategy;
    use std::collections::BTreeMap;

    /// A victim-to-be: key, priority, start, milli-CPU, labels.
    fn facts(name: &str, priority: i32, start: Option<i64>, cpu: i64) -> Arc<PodFacts> {
        let mut f = PodFacts {
            key: format!("default/{name}"),
            namespace: "default".into(),
            name: name.into(),
            priority,
            start,
            ..Default::default()
        };
        f.requests.milli_cpu = cpu;
        f.requests.pods = 1;
        Arc::new(f)
    }

    fn labelled(p: Arc<PodFacts>, app: &str) -> Arc<PodFacts> {
        let mut f = (*p).clone();
        f.labels = BTreeMap::from([("app".to_owned(), app.to_owned())]);
        Arc::new(f)
    }

    /// A node of `capacity` milli-CPU: the pod (`want`) fits when what is left of `pods`
    /// after removing `gone` leaves room.
    fn room(
        capacity: i64,
        want: i64,
        pods: &[Arc<PodFacts>],
    ) -> impl FnMut(&HashSet<String>) -> Result<(), Vec<Reason>> + '_ {
        move |gone| {
            let used: i64 = pods
                .iter()
                .filter(|p| !gone.contains(&p.key))
                .map(|p| p.requests.milli_cpu)
                .sum();
            if used + want <= capacity {
                Ok(())
            } else {
                Err(vec![Reason::Insufficient("cpu".into())])
            }
        }
    }

    fn names(v: &Victims) -> Vec<&str> {
        v.pods.iter().map(|p| p.name.as_str()).collect()
    }

    fn budget(app: &str, allowed: i32) -> Budget {
        Budget {
            namespace: "default".into(),
            selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("app".to_owned(), app.to_owned())])),
                match_expressions: None,
            }),
            allowed,
            disrupted: HashSet::new(),
        }
    }

    #[test]
    fn importance_is_priority_then_age() {
        let old = facts("old", 5, Some(100), 0);
        let young = facts("young", 5, Some(200), 0);
        let pending = facts("pending", 5, None, 0);
        let high = facts("high", 6, None, 0);
        let mut all = [pending, young, high, old];
        all.sort_by(|a, b| importance(a, b));
        let order: Vec<&str> = all.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(order, ["high", "old", "young", "pending"]);
    }

    #[test]
    fn victims_are_few_and_of_the_lowest_priority() {
        // 4 CPUs full: two at priority 1 (1 CPU each), one at 2 (1 CPU), one at 100
        // (1 CPU, not preemptable by a 50). The 50 needs 1 CPU.
        let pods = vec![
            facts("low-a", 1, Some(10), 1000),
            facts("low-b", 1, Some(20), 1000),
            facts("mid", 2, Some(5), 1000),
            facts("top", 100, Some(1), 1000),
        ];
        let v = select_victims(&pods, 50, &[], room(4000, 1000, &pods)).unwrap();
        // The most important are put back first: mid, then low-a (older); low-b goes.
        assert_eq!(names(&v), ["low-b"]);
        assert_eq!(v.pdb_violations, 0);

        // Needing 2.5 CPUs takes three, most important first in the answer.
        let v = select_victims(&pods, 50, &[], room(4000, 2500, &pods)).unwrap();
        assert_eq!(names(&v), ["mid", "low-a", "low-b"]);

        // Nothing below the pod's priority: no victims.
        assert_eq!(
            select_victims(&pods, 1, &[], room(4000, 1000, &pods)).unwrap_err(),
            [NO_VICTIMS]
        );
        // Even without every lower pod it does not fit: the filter's reasons.
        assert_eq!(
            select_victims(&pods, 50, &[], room(4000, 4000, &pods)).unwrap_err(),
            ["Insufficient cpu"]
        );
    }

    #[test]
    fn budgets_protected_pods_go_last() {
        let pods = vec![
            labelled(facts("db-0", 1, Some(1), 1000), "db"),
            labelled(facts("web-0", 1, Some(2), 1000), "web"),
        ];
        let db = budget("db", 0);
        // Without budgets the older db-0 is put back first and stays; web-0 goes.
        let v = select_victims(&pods, 10, &[], room(2000, 1000, &pods)).unwrap();
        assert_eq!(names(&v), ["web-0"]);
        // With the budget, db-0 is put back first anyway and web-0 goes.
        let v = select_victims(&pods, 10, &[&db], room(2000, 1000, &pods)).unwrap();
        assert_eq!((names(&v), v.pdb_violations), (vec!["web-0"], 0));
        // A budget on web: db-0 (older, more important) would be kept without it; with
        // it, web-0 is put back first and db-0 goes instead.
        let web = budget("web", 0);
        let v = select_victims(&pods, 10, &[&web], room(2000, 1000, &pods)).unwrap();
        assert_eq!((names(&v), v.pdb_violations), (vec!["db-0"], 0));
        // Both needed: one violation counted.
        let v = select_victims(&pods, 10, &[&web], room(2000, 2000, &pods)).unwrap();
        assert_eq!((names(&v), v.pdb_violations), (vec!["db-0", "web-0"], 1));
    }

    #[test]
    fn budget_allowance_is_spent_in_order() {
        let pods: Vec<Arc<PodFacts>> = (0..3)
            .map(|i| labelled(facts(&format!("w{i}"), 1, Some(i), 10), "web"))
            .collect();
        let (violating, fine) = split_by_budget(pods.clone(), &[&budget("web", 1)]);
        assert_eq!(fine.len(), 1);
        assert_eq!(fine[0].name, "w0");
        assert_eq!(violating.len(), 2);
        // Already disrupted pods do not spend the allowance; other namespaces and empty
        // selectors match nothing.
        let mut b = budget("web", 1);
        b.disrupted.insert("w0".into());
        let (violating, _) = split_by_budget(pods.clone(), &[&b]);
        assert_eq!(violating.len(), 1);
        let mut other = budget("web", 0);
        other.namespace = "other".into();
        let empty = Budget {
            namespace: "default".into(),
            selector: Some(LabelSelector::default()),
            ..Default::default()
        };
        let (violating, _) = split_by_budget(pods, &[&other, &empty]);
        assert!(violating.is_empty());
    }

    fn candidate(node: &str, victims: &[Arc<PodFacts>], violations: usize) -> Candidate {
        Candidate {
            node: node.into(),
            victims: Victims {
                pods: victims.to_vec(),
                pdb_violations: violations,
            },
        }
    }

    #[test]
    fn the_node_where_preempting_hurts_least() {
        let p = |name: &str, prio: i32, start: i64| facts(name, prio, Some(start), 0);
        let pick_of = |c: &[Candidate]| c[pick(c).unwrap()].node.clone();
        // Fewer budget violations first.
        let c = [
            candidate("a", &[p("x", 1, 0)], 1),
            candidate("b", &[p("y", 5, 0)], 0),
        ];
        assert_eq!(pick_of(&c), "b");
        // Then the lowest highest priority.
        let c = [
            candidate("a", &[p("x", 5, 0)], 0),
            candidate("b", &[p("y", 3, 0), p("z", 3, 0)], 0),
        ];
        assert_eq!(pick_of(&c), "b");
        // Then the lowest sum of priorities (negative ones too).
        let c = [
            candidate("a", &[p("x", 3, 0), p("y", 2, 0)], 0),
            candidate("b", &[p("z", 3, 0), p("w", -5, 0)], 0),
        ];
        assert_eq!(pick_of(&c), "b");
        // Then the fewest victims.
        let c = [
            candidate("a", &[p("x", 3, 0), p("y", 0, 0)], 0),
            candidate("b", &[p("z", 3, 0)], 0),
        ];
        // Sum: a = 3 + 0 + 2·2^31, b = 3 + 2^31: b is lower already.
        assert_eq!(pick_of(&c), "b");
        // Then the latest start of the highest-priority victims.
        let c = [
            candidate("a", &[p("x", 3, 100)], 0),
            candidate("b", &[p("y", 3, 200)], 0),
            candidate("c", &[p("z", 3, 150)], 0),
        ];
        assert_eq!(pick_of(&c), "b");
        // Then the first.
        let c = [
            candidate("a", &[p("x", 3, 100)], 0),
            candidate("b", &[p("y", 3, 100)], 0),
        ];
        assert_eq!(pick_of(&c), "a");
        assert_eq!(pick(&[]), None);
    }

    fn with_priority(mut p: Pod, prio: i32) -> Pod {
        p.spec.as_mut().unwrap().priority = Some(prio);
        p
    }

    fn run(cache: &Cache, p: &Pod) -> (Unschedulable, Outcome) {
        let facts = PodFacts::from_pod(p);
        let u = schedule(
            cache,
            p,
            &facts,
            Strategy::LeastAllocated,
            &mut Cursor::new(3),
        )
        .unwrap_err();
        let outcome = preempt(cache, p, &facts, &u, &[], &mut Cursor::new(5));
        (u, outcome)
    }

    fn message(u: &Unschedulable, o: &Outcome) -> String {
        match o {
            Outcome::NotPossible { message, .. } => format!("{} {message}", u.message),
            Outcome::Preempt(c) => panic!("preempts on {}", c.node),
        }
    }

    #[test]
    fn over_the_cache() {
        let mut c = Cache::default();
        for n in ["a", "b", "c"] {
            c.apply_node(&node(n, "2", "4Gi"));
        }
        // Nothing runs: nothing to preempt, as upstream words it.
        let (u, o) = run(&c, &with_priority(pod("big", "100", ""), 10));
        assert_eq!(
            message(&u, &o),
            "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are \
             available: 3 No preemption victims found for incoming pod."
        );
        // Fill a and b with priority-1 pods and c with a priority-20 one.
        c.apply_pod(&bound(with_priority(pod("a1", "1", ""), 1), "a"));
        c.apply_pod(&bound(with_priority(pod("a2", "1", ""), 1), "a"));
        c.apply_pod(&bound(with_priority(pod("b1", "2", ""), 1), "b"));
        c.apply_pod(&bound(with_priority(pod("c1", "2", ""), 20), "c"));
        // Too big even on an emptied node: a and b say why, c has nothing lower.
        let (u, o) = run(&c, &with_priority(pod("big", "3", ""), 10));
        assert_eq!(
            message(&u, &o),
            "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are \
             available: 1 No preemption victims found for incoming pod, 2 Insufficient cpu."
        );
        // preemptionPolicy Never.
        let mut never = with_priority(pod("n", "1", ""), 10);
        never.spec.as_mut().unwrap().preemption_policy = Some("Never".into());
        let (u, o) = run(&c, &never);
        assert_eq!(
            message(&u, &o),
            "0/3 nodes are available: 3 Insufficient cpu. preemption: not eligible due to \
             preemptionPolicy=Never."
        );
        // A 1-CPU pod of priority 10: one victim on a (a 1-CPU pod) beats b's 2-CPU one
        // only on... both have one victim of priority 1; a's sum equals b's; same count;
        // neither started: the first tried wins. Either way, exactly one victim.
        let (_, o) = run(&c, &with_priority(pod("mid", "1", ""), 10));
        let Outcome::Preempt(cand) = o else {
            panic!("no preemption")
        };
        assert!(cand.node == "a" || cand.node == "b", "{}", cand.node);
        assert_eq!(cand.victims.pods.len(), 1);
        // A taint is not something preemption can fix.
        let mut tainted = Cache::default();
        let mut n = node("t", "2", "4Gi");
        n.spec.as_mut().unwrap().taints = Some(vec![k8s_openapi::api::core::v1::Taint {
            key: "dedicated".into(),
            value: Some("db".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        }]);
        tainted.apply_node(&n);
        let (u, o) = run(&tainted, &with_priority(pod("p", "1", ""), 10));
        assert_eq!(
            message(&u, &o),
            "0/1 nodes are available: 1 node(s) had untolerated taint {dedicated: db}. \
             preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn room_freed_is_kept_for_the_preemptor() {
        let mut c = Cache::default();
        c.apply_node(&node("a", "2", "4Gi"));
        c.apply_pod(&bound(with_priority(pod("low", "2", ""), 1), "a"));
        let high = with_priority(pod("high", "2", ""), 100);
        let (_, o) = run(&c, &high);
        let Outcome::Preempt(cand) = o else {
            panic!("no preemption")
        };
        assert_eq!(cand.node, "a");
        assert_eq!(names(&cand.victims), ["low"]);
        c.nominate(Arc::new(PodFacts::from_pod(&high)), "a");
        c.mark_preempted("default/low");

        // While the victim terminates, the preemptor waits instead of preempting more.
        let (u, o) = run(&c, &high);
        assert_eq!(
            message(&u, &o),
            "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to a \
             terminating pod on the nominated node."
        );
        // Once it is gone, a pod of lower priority does not take the room...
        c.remove_pod("default/low");
        let again = with_priority(pod("low-2", "1", ""), 1);
        let (u, _) = run(&c, &again);
        assert_eq!(u.message, "0/1 nodes are available: 1 Insufficient cpu.");
        // ...and the preemptor goes there.
        let facts = PodFacts::from_pod(&high);
        let chosen = schedule(
            &c,
            &high,
            &facts,
            Strategy::LeastAllocated,
            &mut Cursor::new(1),
        );
        assert_eq!(chosen.unwrap(), "a");
        // Bound: the reservation ends with the nomination.
        c.assume(Arc::new(facts), "a");
        assert_eq!(c.nominated_on("a").count(), 0);
    }

    #[test]
    fn anti_affinity_victims_are_found_by_the_dry_run() {
        use k8s_openapi::api::core::v1::{Affinity, PodAffinityTerm, PodAntiAffinity};
        let mut c = Cache::default();
        c.apply_node(&node("a", "8", "8Gi"));
        let mut db = with_priority(pod("db-low", "10m", ""), 1);
        db.metadata.labels = Some(BTreeMap::from([("app".to_owned(), "db".to_owned())]));
        c.apply_pod(&bound(db, "a"));
        c.apply_pod(&bound(with_priority(pod("other", "10m", ""), 1), "a"));
        let mut p = with_priority(pod("db-high", "10m", ""), 100);
        p.spec.as_mut().unwrap().affinity = Some(Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                    label_selector: Some(LabelSelector {
                        match_labels: Some(BTreeMap::from([("app".to_owned(), "db".to_owned())])),
                        match_expressions: None,
                    }),
                    topology_key: crate::scheduler::cache::HOSTNAME.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
        let (u, o) = run(&c, &p);
        assert_eq!(
            u.message,
            "0/1 nodes are available: 1 node(s) didn't match pod anti-affinity rules."
        );
        let Outcome::Preempt(cand) = o else {
            panic!("no preemption")
        };
        assert_eq!(names(&cand.victims), ["db-low"]);
    }
}
