//! The CronJob controller: creates a Job from the template at each time the schedule
//! names (in `spec.timeZone`, UTC without one), as `<cronjob>-<minutes since epoch>` so
//! a time is never run twice; follows its Jobs to keep `status.active`,
//! `lastScheduleTime` and `lastSuccessfulTime`; applies the concurrency policy and the
//! starting deadline; and deletes finished Jobs beyond the history limits.
//!
//! [`Schedule`] is upstream's cron dialect (robfig/cron's standard parser: five fields,
//! names, ranges, steps, lists, `?`, the `@yearly`…`@hourly` descriptors and `@every`),
//! computed with jiff's time zone database, including its daylight-saving behaviour: a
//! time skipped by a spring-forward gap does not run, and one in a repeated hour runs
//! in both. [`reconcile`] decides one sync from plain values; [`CronJobController`]
//! carries it out and requeues precisely for the next due time.

use super::driver::{
    self, controller_of, controller_ref, Caches, Clock, Effects, Key, Kind, Next, Queue, Reconciler,
};
use super::events::{reference, EventType, Recorder};
use super::job::finished_condition;
use futures::future::BoxFuture;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::PropagationPolicy;
use kube::ResourceExt;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// The annotation with the time a Job was scheduled for (RFC 3339, in the time zone).
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Requeues land this long after the due time, so the clock has surely passed it.
const NEXT_DELTA: Duration = Duration::from_millis(100);
/// More missed times than this get a warning (upstream's limit).
const MANY_MISSED: i64 = 100;
/// How long a writer waits for the caches to show its own writes.
const SETTLE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Schedules

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// Five cron fields in a time zone.
    Cron(Fields),
    /// `@every <duration>`: that many whole seconds after the previous time.
    Every(i64),
}

/// The five fields as bit sets, with whether the day fields were `*` (or `?`).
#[derive(Debug, Clone, PartialEq)]
pub struct Fields {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    dom_star: bool,
    dow_star: bool,
    tz: TimeZone,
}

struct Bounds {
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTES: Bounds = Bounds {
    min: 0,
    max: 59,
    names: &[],
};
const HOURS: Bounds = Bounds {
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Bounds = Bounds {
    min: 1,
    max: 31,
    names: &[],
};
const MONTHS: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
const DOW: Bounds = Bounds {
    min: 0,
    max: 6,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

fn all(b: &Bounds) -> u64 {
    bits(b.min, b.max, 1)
}

fn bits(start: u32, end: u32, step: u32) -> u64 {
    (start..=end)
        .step_by(step.max(1) as usize)
        .fold(0, |acc, i| acc | (1u64 << i))
}

fn parse_number(expr: &str) -> Result<u32, String> {
    let n: i64 = expr.parse().map_err(|_| {
        format!("failed to parse int from {expr}: strconv.Atoi: parsing {expr:?}: invalid syntax")
    })?;
    if n < 0 {
        return Err(format!("negative number ({n}) not allowed: {expr}"));
    }
    u32::try_from(n).map_err(|_| format!("failed to parse int from {expr}: value out of range"))
}

fn parse_value(expr: &str, b: &Bounds) -> Result<u32, String> {
    let lower = expr.to_ascii_lowercase();
    if let Some(i) = b.names.iter().position(|n| *n == lower) {
        let i = u32::try_from(i).unwrap_or(0);
        return Ok(i + if b.min == 1 { 1 } else { 0 });
    }
    parse_number(expr)
}

/// One comma-separated part of a field: its bits and whether it was a bare `*`/`?`.
fn parse_range(expr: &str, b: &Bounds) -> Result<(u64, bool), String> {
    let range_step: Vec<&str> = expr.split('/').collect();
    let low_high: Vec<&str> = range_step[0].split('-').collect();
    let single = low_high.len() == 1;
    let (start, mut end, mut star) = if low_high[0] == "*" || low_high[0] == "?" {
        (b.min, b.max, true)
    } else {
        let start = parse_value(low_high[0], b)?;
        let end = match low_high.len() {
            1 => start,
            2 => parse_value(low_high[1], b)?,
            _ => return Err(format!("too many hyphens: {expr}")),
        };
        (start, end, false)
    };
    let step = match range_step.len() {
        1 => 1,
        2 => {
            let step = parse_number(range_step[1])?;
            // "N/step" means "N-max/step".
            if single {
                end = b.max;
            }
            if step > 1 {
                star = false;
            }
            step
        }
        _ => return Err(format!("too many slashes: {expr}")),
    };
    if start < b.min {
        return Err(format!(
            "beginning of range ({start}) below minimum ({}): {expr}",
            b.min
        ));
    }
    if end > b.max {
        return Err(format!(
            "end of range ({end}) above maximum ({}): {expr}",
            b.max
        ));
    }
    if start > end {
        return Err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        ));
    }
    if step == 0 {
        return Err(format!("step of range should be a positive number: {expr}"));
    }
    Ok((bits(start, end, step), star))
}

fn parse_field(field: &str, b: &Bounds) -> Result<(u64, bool), String> {
    let mut out = (0, false);
    for part in field.split(',') {
        let (bits, star) = parse_range(part, b)?;
        out.0 |= bits;
        out.1 |= star;
    }
    Ok(out)
}

/// Parses a Go duration ("1h30m", "90s", "1.5h") into nanoseconds.
fn parse_go_duration(s: &str) -> Result<i128, String> {
    let bad = || format!("time: invalid duration {s:?}");
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("time: missing unit in duration {s:?}"))?;
        let number: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            other => return Err(format!("time: unknown unit {other:?} in duration {s:?}")),
        };
        rest = &rest[unit_len..];
        total += number * unit;
    }
    let n = total as i128;
    Ok(if neg { -n } else { n })
}

impl Schedule {
    /// Parses `spec` (upstream's standard dialect) for time zone `tz`.
    pub fn parse(spec: &str, tz: TimeZone) -> Result<Schedule, String> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err("empty spec string".into());
        }
        if let Some(descriptor) = spec.strip_prefix('@') {
            return Self::descriptor(descriptor, spec, tz);
        }
        let fields: Vec<&str> = spec.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "expected exactly 5 fields, found {}: [{}]",
                fields.len(),
                fields.join(" ")
            ));
        }
        let (minute, _) = parse_field(fields[0], &MINUTES)?;
        let (hour, _) = parse_field(fields[1], &HOURS)?;
        let (dom, dom_star) = parse_field(fields[2], &DOM)?;
        let (month, _) = parse_field(fields[3], &MONTHS)?;
        let (dow, dow_star) = parse_field(fields[4], &DOW)?;
        Ok(Schedule::Cron(Fields {
            minute,
            hour,
            dom,
            month,
            dow,
            dom_star,
            dow_star,
            tz,
        }))
    }

    fn descriptor(name: &str, spec: &str, tz: TimeZone) -> Result<Schedule, String> {
        if let Some(d) = name.strip_prefix("every ") {
            let nanos = parse_go_duration(d.trim())
                .map_err(|e| format!("failed to parse duration {spec}: {e}"))?;
            let secs = i64::try_from(nanos / 1_000_000_000).unwrap_or(i64::MAX);
            return Ok(Schedule::Every(secs.max(1)));
        }
        let fields = |minute, hour, dom, dom_star, month, dow, dow_star| {
            Schedule::Cron(Fields {
                minute,
                hour,
                dom,
                month,
                dow,
                dom_star,
                dow_star,
                tz: tz.clone(),
            })
        };
        Ok(match name {
            "yearly" | "annually" => fields(1, 1, 1 << 1, false, 1 << 1, all(&DOW), true),
            "monthly" => fields(1, 1, 1 << 1, false, all(&MONTHS), all(&DOW), true),
            "weekly" => fields(1, 1, all(&DOM), true, all(&MONTHS), 1, false),
            "daily" | "midnight" => fields(1, 1, all(&DOM), true, all(&MONTHS), all(&DOW), true),
            "hourly" => fields(
                1,
                all(&HOURS),
                all(&DOM),
                true,
                all(&MONTHS),
                all(&DOW),
                true,
            ),
            _ => return Err(format!("unrecognized descriptor: {spec}")),
        })
    }

    /// The first time strictly after `t` (at a whole minute for cron fields), or `None`
    /// if there is none within five years.
    pub fn next(&self, t: Timestamp) -> Option<Timestamp> {
        match self {
            Schedule::Every(secs) => Timestamp::from_second(t.as_second().checked_add(*secs)?).ok(),
            Schedule::Cron(f) => f.next(t),
        }
    }
}

fn has(set: u64, i: i8) -> bool {
    (0..64).contains(&i) && set & (1u64 << i) != 0
}

impl Fields {
    fn day_matches(&self, z: &jiff::Zoned) -> bool {
        let dom = has(self.dom, z.day());
        let dow = has(self.dow, z.weekday().to_sunday_zero_offset());
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The start of a local day, or the first instant after it when midnight does not
    /// exist there.
    fn start_of(&self, date: jiff::civil::Date) -> Option<Timestamp> {
        self.tz
            .to_ambiguous_zoned(date.at(0, 0, 0, 0))
            .compatible()
            .ok()
            .map(|z| z.timestamp())
    }

    fn next(&self, after: Timestamp) -> Option<Timestamp> {
        // The first whole minute at least a second after `after`.
        let s = after.as_second().checked_add(1)?;
        let mut t = Timestamp::from_second(s + (60 - s.rem_euclid(60)) % 60).ok()?;
        let limit = t.to_zoned(self.tz.clone()).year() + 5;
        loop {
            let z = t.to_zoned(self.tz.clone());
            if z.year() > limit {
                return None;
            }
            if !has(self.month, z.month()) {
                let first = z.date().first_of_month();
                let next = first.checked_add(jiff::Span::new().months(1)).ok()?;
                t = self.start_of(next)?.max(t + SignedDuration::from_secs(60));
                continue;
            }
            if !self.day_matches(&z) {
                t = self
                    .start_of(z.date().tomorrow().ok()?)?
                    .max(t + SignedDuration::from_secs(60));
                continue;
            }
            // Hours and minutes advance in absolute time, as upstream's library does: a
            // local hour a gap skips never comes, a repeated one comes twice.
            let into_hour = i64::from(z.minute()) * 60 + i64::from(z.second());
            if !has(self.hour, z.hour()) {
                t = t - SignedDuration::from_secs(into_hour) + SignedDuration::from_secs(3600);
                continue;
            }
            if !has(self.minute, z.minute()) {
                let later = (z.minute() + 1..60).find(|m| has(self.minute, *m));
                t = match later {
                    Some(m) => t + SignedDuration::from_secs(i64::from(m - z.minute()) * 60),
                    None => {
                        t - SignedDuration::from_secs(into_hour) + SignedDuration::from_secs(3600)
                    }
                };
                continue;
            }
            return Some(t);
        }
    }
}

/// How many times a sync found missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    /// None.
    None,
    /// Some.
    Few,
    /// More than 100.
    Many,
}

/// Upstream's mostRecentScheduleTime: from the last schedule time (or the creation,
/// or, with `deadline`, no earlier than `now - deadline`), the most recent due time
/// not after `now`, and how many were missed.
pub fn most_recent(
    schedule: &Schedule,
    base: Timestamp,
    deadline: Option<i64>,
    now: Timestamp,
) -> Result<(Timestamp, Option<Timestamp>, Missed), String> {
    let mut earliest = base;
    if let Some(d) = deadline {
        let limit = now - SignedDuration::from_secs(d);
        if limit > earliest {
            earliest = limit;
        }
    }
    let Some(t1) = schedule.next(earliest) else {
        return Ok((earliest, None, Missed::None));
    };
    if now < t1 {
        return Ok((earliest, None, Missed::None));
    }
    let Some(t2) = schedule.next(t1) else {
        return Ok((earliest, Some(t1), Missed::None));
    };
    if now < t2 {
        return Ok((earliest, Some(t1), Missed::None));
    }
    let between = t2.duration_since(t1).as_secs();
    if between < 1 {
        return Err("time difference between two schedules is less than 1 second".into());
    }
    let elapsed = now.duration_since(t1).as_secs();
    let missed = elapsed / between + 1;
    let from = t1 + SignedDuration::from_secs((missed - 2) * between);
    let mut most = None;
    let mut t = schedule.next(from);
    while let Some(x) = t.filter(|x| *x <= now) {
        most = Some(x);
        t = schedule.next(x);
    }
    let kind = if missed > MANY_MISSED {
        Missed::Many
    } else {
        Missed::Few
    };
    Ok((earliest, most, kind))
}

/// How long until the next due time after the most recent one (plus a little).
pub fn next_in(schedule: &Schedule, base: Timestamp, now: Timestamp) -> Option<Duration> {
    let from = match most_recent(schedule, base, None, now) {
        Err(_) => now,
        Ok((earliest, most, _)) => most.unwrap_or(earliest),
    };
    let next = schedule.next(from)?;
    Some(next.duration_since(now).unsigned_abs() + NEXT_DELTA)
}

/// A Job's name for a scheduled time: `<cronjob>-<minutes since the epoch>`.
pub fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

/// A time as Go's RFC 3339 writes it in `tz` ("Z" for a zero offset).
pub fn rfc3339_in(t: Timestamp, tz: &TimeZone) -> String {
    let z = t.to_zoned(tz.clone());
    if z.offset().seconds() == 0 {
        z.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

/// The time zone a CronJob's schedule is read in.
pub fn time_zone(cj: &CronJob) -> Result<TimeZone, String> {
    match cj.spec.time_zone.as_deref() {
        None | Some("") | Some("UTC") => Ok(TimeZone::UTC),
        Some(name) => TimeZone::get(name).map_err(|e| e.to_string()),
    }
}

/// The Job a CronJob creates for `scheduled`.
pub fn job_from_template(cj: &CronJob, scheduled: Timestamp, tz: &TimeZone) -> Value {
    let template = &cj.spec.job_template;
    let meta = template.metadata.as_ref();
    let mut annotations: BTreeMap<String, String> =
        meta.and_then(|m| m.annotations.clone()).unwrap_or_default();
    annotations.insert(SCHEDULED_TIMESTAMP.into(), rfc3339_in(scheduled, tz));
    let mut metadata = json!({
        "name": job_name(&cj.name_any(), scheduled),
        "namespace": cj.namespace(),
        "annotations": annotations,
        "ownerReferences": [controller_ref(cj)],
    });
    if let Some(labels) = meta.and_then(|m| m.labels.as_ref()) {
        metadata["labels"] = json!(labels);
    }
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": template.spec,
    })
}

/// A reference to a Job for `status.active`.
pub fn job_reference(job: &Value) -> ObjectReference {
    let s = |p: &str| job.pointer(p).and_then(Value::as_str).map(String::from);
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: s("/metadata/name"),
        namespace: s("/metadata/namespace"),
        uid: s("/metadata/uid"),
        resource_version: s("/metadata/resourceVersion"),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------
// Decisions

/// A Job to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// Its name.
    pub name: String,
    /// The object.
    pub body: Value,
    /// The time it was scheduled for.
    pub scheduled: Timestamp,
}

/// What one sync does, in this order: events, replacements, the creation, the history
/// trim, the status (plus the new Job's reference), the requeue.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// Events about the CronJob: (type, reason, message).
    pub events: Vec<(EventType, &'static str, String)>,
    /// Active Jobs to delete before creating (concurrencyPolicy Replace): (name, uid).
    pub replace: Vec<(String, String)>,
    /// The Job to create.
    pub create: Option<NewJob>,
    /// Finished Jobs beyond the history limits, oldest first: (name, uid).
    pub trim: Vec<(String, String)>,
    /// The status (without the new Job, which the driver adds once it exists).
    pub status: CronJobStatus,
    /// Look again after this long.
    pub requeue: Option<Duration>,
}

/// What a sync sees besides the CronJob.
pub struct Observed<'a> {
    /// The Jobs the CronJob controls.
    pub jobs: &'a [Arc<Job>],
    /// Names in `status.active` that a live read found gone.
    pub missing: &'a HashSet<String>,
    /// Now.
    pub now: Timestamp,
}

fn uid_of(job: &Job) -> &str {
    job.metadata.uid.as_deref().unwrap_or("")
}

fn start_time(job: &Job) -> Option<Timestamp> {
    job.status.as_ref()?.start_time.as_ref().map(|t| t.0)
}

/// The finished Jobs beyond `limit`, oldest start first (no start time last, then by
/// name), as upstream picks them.
fn beyond_limit(mut jobs: Vec<&Job>, limit: Option<i32>) -> Vec<(String, String)> {
    let Some(limit) = limit else {
        return Vec::new();
    };
    let excess = jobs
        .len()
        .saturating_sub(usize::try_from(limit.max(0)).unwrap_or(0));
    jobs.sort_by(|a, b| {
        let (sa, sb) = (start_time(a), start_time(b));
        match (sa, sb) {
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(_), None) => std::cmp::Ordering::Less,
            _ if sa == sb => a.name_any().cmp(&b.name_any()),
            _ => sa.cmp(&sb),
        }
    });
    jobs.into_iter()
        .take(excess)
        .map(|j| (j.name_any(), uid_of(j).to_string()))
        .collect()
}

/// Decides one sync of `cj`.
pub fn reconcile(cj: &CronJob, obs: &Observed<'_>) -> Plan {
    let now = obs.now;
    let mut plan = Plan::default();
    let mut status = cj.status.clone().unwrap_or_default();
    let mut active = status.active.take().unwrap_or_default();

    // Follow the Jobs.
    for job in obs.jobs {
        let uid = uid_of(job);
        let listed = active.iter().any(|r| r.uid.as_deref() == Some(uid));
        let finished = finished_condition(job).map(|c| c.type_.clone());
        match (listed, &finished) {
            (false, None) => plan.events.push((
                EventType::Warning,
                "UnexpectedJob",
                format!(
                    "Saw a job that the controller did not create or forgot: {}",
                    job.name_any()
                ),
            )),
            (true, Some(cond)) => {
                active.retain(|r| r.uid.as_deref() != Some(uid));
                plan.events.push((
                    EventType::Normal,
                    "SawCompletedJob",
                    format!("Saw completed job: {}, condition: {cond}", job.name_any()),
                ));
            }
            _ => {}
        }
        if finished.as_deref() == Some("Complete") {
            let done = job.status.as_ref().and_then(|s| s.completion_time.clone());
            if let Some(done) = done {
                if status
                    .last_successful_time
                    .as_ref()
                    .is_none_or(|t| t.0 < done.0)
                {
                    status.last_successful_time = Some(done);
                }
            }
        }
    }
    // Jobs that are gone leave the active list.
    active.retain(|r| {
        let seen = obs.jobs.iter().any(|j| r.uid.as_deref() == Some(uid_of(j)));
        let name = r.name.clone().unwrap_or_default();
        if !seen && obs.missing.contains(&name) {
            plan.events.push((
                EventType::Normal,
                "MissingJob",
                format!("Active job went missing: {name}"),
            ));
            return false;
        }
        true
    });

    if cj.metadata.deletion_timestamp.is_some() {
        status.active = (!active.is_empty()).then_some(active);
        plan.status = status;
        return plan;
    }

    schedule(cj, obs, &mut plan, &mut status, &mut active, now);

    // Trim the history (Jobs replaced above are already going).
    let replaced: HashSet<&str> = plan.replace.iter().map(|(_, u)| u.as_str()).collect();
    let finished_as = |kind: &str| -> Vec<&Job> {
        obs.jobs
            .iter()
            .map(Arc::as_ref)
            .filter(|j| !replaced.contains(uid_of(j)))
            .filter(|j| finished_condition(j).is_some_and(|c| c.type_ == kind))
            .collect()
    };
    plan.trim = beyond_limit(
        finished_as("Complete"),
        cj.spec.successful_jobs_history_limit,
    );
    plan.trim.extend(beyond_limit(
        finished_as("Failed"),
        cj.spec.failed_jobs_history_limit,
    ));
    let trimmed: HashSet<&str> = plan.trim.iter().map(|(_, u)| u.as_str()).collect();
    active.retain(|r| !trimmed.contains(r.uid.as_deref().unwrap_or("")));

    status.active = (!active.is_empty()).then_some(active);
    plan.status = status;
    plan
}

/// The scheduling part of a sync (upstream's syncCronJob after following the Jobs).
fn schedule(
    cj: &CronJob,
    obs: &Observed<'_>,
    plan: &mut Plan,
    status: &mut CronJobStatus,
    active: &mut Vec<ObjectReference>,
    now: Timestamp,
) {
    let spec = &cj.spec;
    let tz = match time_zone(cj) {
        Ok(tz) => tz,
        Err(e) => {
            let name = spec.time_zone.clone().unwrap_or_default();
            plan.events.push((
                EventType::Warning,
                "UnknownTimeZone",
                format!("invalid timeZone: {name:?}: {e}"),
            ));
            return;
        }
    };
    if spec.suspend == Some(true) {
        return;
    }
    let sched = match Schedule::parse(&spec.schedule, tz.clone()) {
        Ok(s) => s,
        Err(e) => {
            plan.events.push((
                EventType::Warning,
                "UnparseableSchedule",
                format!("unparseable schedule: {:?} : {e}", spec.schedule),
            ));
            return;
        }
    };
    let created = cj.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
    let base = status.last_schedule_time.as_ref().map_or(created, |t| t.0);
    let scheduled = match most_recent(&sched, base, spec.starting_deadline_seconds, now) {
        Err(e) => {
            plan.events.push((
                EventType::Warning,
                "InvalidSchedule",
                format!("invalid schedule: {} : {e}", spec.schedule),
            ));
            return;
        }
        Ok((_, most, missed)) => {
            if missed == Missed::Many && most.is_some() {
                plan.events.push((
                    EventType::Warning,
                    "TooManyMissedTimes",
                    "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew".into(),
                ));
            }
            most
        }
    };
    plan.requeue = next_in(&sched, base, now);
    let Some(scheduled) = scheduled.filter(|t| *t <= now) else {
        return;
    };
    if let Some(d) = spec.starting_deadline_seconds {
        if scheduled + SignedDuration::from_secs(d) < now {
            plan.events.push((
                EventType::Warning,
                "MissSchedule",
                format!(
                    "Missed scheduled time to start a job: {}",
                    scheduled.strftime("%a, %d %b %Y %H:%M:%S %z")
                ),
            ));
            return;
        }
    }
    let name = job_name(&cj.name_any(), scheduled);
    let done = active
        .iter()
        .any(|r| r.name.as_deref() == Some(name.as_str()))
        || status
            .last_schedule_time
            .as_ref()
            .is_some_and(|t| t.0 == scheduled);
    if done {
        return;
    }
    match spec.concurrency_policy.as_deref() {
        Some("Forbid") if !active.is_empty() => {
            plan.events.push((
                EventType::Normal,
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
            ));
            return;
        }
        Some("Replace") => {
            for r in active.drain(..) {
                let live = obs
                    .jobs
                    .iter()
                    .find(|j| r.uid.as_deref() == Some(uid_of(j)));
                if let Some(j) = live {
                    plan.replace.push((j.name_any(), uid_of(j).to_string()));
                }
            }
        }
        _ => {}
    }
    plan.create = Some(NewJob {
        body: job_from_template(cj, scheduled, &tz),
        name,
        scheduled,
    });
    plan.requeue = next_in(&sched, scheduled, now);
}

// ---------------------------------------------------------------------------
// The driver

/// Registers the controller's hooks and returns its workers (5, upstream's count).
pub fn start(ctx: &super::Context) -> super::Workers {
    let queue = Queue::new();
    CronJobController::watch(&ctx.caches, &queue);
    let controller = CronJobController::new(
        ctx.caches.clone(),
        ctx.effects.clone(),
        ctx.clock.clone(),
        ctx.recorder("cronjob-controller"),
    );
    ctx.workers(controller, queue, 5)
}

/// The controller: caches in, API calls out.
pub struct CronJobController {
    caches: Arc<Caches>,
    effects: Arc<dyn Effects>,
    clock: Arc<dyn Clock>,
    events: Arc<Recorder>,
    settle: Duration,
}

fn code(e: &kube::Error) -> Option<(u16, &str)> {
    match e {
        kube::Error::Api(s) => Some((s.code, s.reason.as_str())),
        _ => None,
    }
}

impl CronJobController {
    /// A controller over `caches`, writing through `effects`.
    pub fn new(
        caches: Arc<Caches>,
        effects: Arc<dyn Effects>,
        clock: Arc<dyn Clock>,
        events: Arc<Recorder>,
    ) -> Arc<Self> {
        Arc::new(CronJobController {
            caches,
            effects,
            clock,
            events,
            settle: SETTLE,
        })
    }

    /// Registers the cache hooks that fill `queue`: a CronJob's changes and its Jobs'.
    pub fn watch(caches: &Caches, queue: &Arc<Queue<Key>>) {
        let q = queue.clone();
        caches.cronjobs.on_change(Box::new(move |cj: &CronJob, _| {
            q.add(Key::of(&cj.metadata))
        }));
        let q = queue.clone();
        caches.jobs.on_change(Box::new(move |job: &Job, _| {
            if let Some(r) = controller_of(&job.metadata) {
                if r.kind == "CronJob" && r.api_version == "batch/v1" {
                    q.add(Key {
                        namespace: job.namespace().unwrap_or_default(),
                        name: r.name.clone(),
                    });
                }
            }
        }));
    }

    async fn sync_one(&self, key: &Key) -> driver::Result<Next> {
        let Some(cached) = self.caches.cronjobs.get(&key.namespace, &key.name) else {
            return Ok(Next::Done);
        };
        let mut cj = (*cached).clone();
        let uid = cj.metadata.uid.clone().unwrap_or_default();
        let jobs: Vec<Arc<Job>> = self
            .caches
            .jobs
            .in_namespace(&key.namespace)
            .into_iter()
            .filter(|j| controller_of(&j.metadata).is_some_and(|r| r.uid == uid))
            .collect();
        let listed = |cj: &CronJob, j: &Job| {
            cj.status
                .as_ref()
                .and_then(|s| s.active.as_ref())
                .is_some_and(|a| a.iter().any(|r| r.uid == j.metadata.uid))
        };
        // A running Job missing from the active list may be our own write the cache
        // has not shown yet: read the CronJob live before calling it unexpected.
        if jobs
            .iter()
            .any(|j| finished_condition(j).is_none() && !listed(&cj, j))
        {
            if let Some(fresh) = self.get::<CronJob>(&key.namespace, &key.name).await? {
                if fresh.metadata.uid.as_deref() == Some(uid.as_str()) {
                    cj = fresh;
                }
            }
        }
        // Jobs in the active list the cache lacks: gone, or not in the cache yet?
        let mut missing = HashSet::new();
        let active = cj
            .status
            .as_ref()
            .and_then(|s| s.active.clone())
            .unwrap_or_default();
        for r in &active {
            if jobs.iter().any(|j| j.metadata.uid == r.uid) {
                continue;
            }
            let name = r.name.clone().unwrap_or_default();
            let live = self.get::<Job>(&key.namespace, &name).await?;
            if live.is_none_or(|j| j.metadata.uid != r.uid) {
                missing.insert(name);
            }
        }
        let now = self.clock.now();
        let plan = reconcile(
            &cj,
            &Observed {
                jobs: &jobs,
                missing: &missing,
                now,
            },
        );
        self.apply(&cj, plan).await
    }

    async fn get<K: serde::de::DeserializeOwned + kube::Resource<DynamicType = ()>>(
        &self,
        namespace: &str,
        name: &str,
    ) -> driver::Result<Option<K>> {
        let kind = Kind::of::<K>(true);
        let v = self
            .effects
            .get(&kind, namespace, name)
            .await
            .map_err(driver::api_error("get", &kind, namespace, name))?;
        match v {
            None => Ok(None),
            Some(v) => serde_json::from_value(v)
                .map(Some)
                .map_err(|e| driver::Error::Encode(kind.resource.kind.clone(), e)),
        }
    }

    /// Deletes a Job (background, as upstream); records the outcome.
    async fn delete_job(&self, cj: &CronJob, name: &str, uid: &str) -> bool {
        let kind = Kind::of::<Job>(true);
        let ns = cj.namespace().unwrap_or_default();
        let me = reference(cj);
        match self
            .effects
            .delete(
                &kind,
                &ns,
                name,
                Some(uid),
                Some(PropagationPolicy::Background),
            )
            .await
        {
            Ok(()) => {
                self.events
                    .record(
                        &me,
                        EventType::Normal,
                        "SuccessfulDelete",
                        &format!("Deleted job {name}"),
                    )
                    .await;
                true
            }
            Err(e) if code(&e).is_some_and(|(c, _)| c == 404) => true,
            Err(e) => {
                self.events
                    .record(
                        &me,
                        EventType::Warning,
                        "FailedDelete",
                        &format!("Deleted job: {}", driver::api_message(&e)),
                    )
                    .await;
                false
            }
        }
    }

    /// Carries a [`Plan`] out.
    pub async fn apply(&self, cj: &CronJob, plan: Plan) -> driver::Result<Next> {
        let ns = cj.namespace().unwrap_or_default();
        let name = cj.name_any();
        let me = reference(cj);
        let kind = Kind::of::<Job>(true);
        let mut next = plan.requeue.map_or(Next::Done, Next::After);
        let mut status = plan.status;
        let mut failed = false;

        for (t, reason, msg) in &plan.events {
            self.events.record(&me, *t, reason, msg).await;
        }
        for (job, uid) in &plan.replace {
            if !self.delete_job(cj, job, uid).await {
                failed = true;
            }
        }
        if let (Some(new), false) = (plan.create, failed) {
            match self.effects.create(&kind, &ns, new.body.clone()).await {
                Ok(made) => {
                    self.events
                        .record(
                            &me,
                            EventType::Normal,
                            "SuccessfulCreate",
                            &format!("Created job {}", new.name),
                        )
                        .await;
                    status
                        .active
                        .get_or_insert_with(Vec::new)
                        .push(job_reference(&made));
                    status.last_schedule_time = Some(Time(new.scheduled));
                }
                Err(e) if code(&e) == Some((409, "AlreadyExists")) => {
                    // Ours from an earlier sync whose status write was lost?
                    if let Some(job) = self.get::<Job>(&ns, &new.name).await? {
                        let ours = controller_of(&job.metadata)
                            .is_some_and(|r| Some(&r.uid) == cj.metadata.uid.as_ref());
                        let active = status.active.get_or_insert_with(Vec::new);
                        if ours && !active.iter().any(|r| r.uid == job.metadata.uid) {
                            let v = serde_json::to_value(&job)
                                .map_err(|e| driver::Error::Encode("Job".into(), e))?;
                            active.push(job_reference(&v));
                            status.last_schedule_time = Some(Time(new.scheduled));
                        }
                        if active.is_empty() {
                            status.active = None;
                        }
                    }
                }
                Err(e) => {
                    self.events
                        .record(
                            &me,
                            EventType::Warning,
                            "FailedCreate",
                            &format!("Error creating job: {}", driver::api_message(&e)),
                        )
                        .await;
                    failed = true;
                }
            }
        }
        for (job, uid) in &plan.trim {
            self.delete_job(cj, job, uid).await;
        }

        if cj.status.as_ref() != Some(&status) {
            let mut body = cj.clone();
            body.status = Some(status);
            let ckind = Kind::of::<CronJob>(true);
            let value = serde_json::to_value(&body)
                .map_err(|e| driver::Error::Encode("CronJob".into(), e))?;
            match self.effects.replace_status(&ckind, &ns, &name, value).await {
                Ok(v) => {
                    // Let the next sync see this write.
                    let rv = v
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    self.caches
                        .cronjobs
                        .wait_for(
                            |c| {
                                c.get(&ns, &name).is_none_or(|o| {
                                    o.metadata.resource_version.as_deref() == Some(rv.as_str())
                                        || o.metadata.uid != cj.metadata.uid
                                })
                            },
                            self.settle,
                        )
                        .await;
                }
                Err(e) if code(&e).is_some_and(|(c, _)| c == 404 || c == 409) => {
                    next = next.min(Next::After(Duration::from_secs(1)));
                }
                Err(e) => return Err(driver::api_error("update status of", &ckind, &ns, &name)(e)),
            }
        }
        if failed {
            next = next.min(Next::After(Duration::from_secs(5)));
        }
        Ok(next)
    }
}

impl Reconciler for CronJobController {
    type Key = Key;

    fn name(&self) -> &'static str {
        "cronjob"
    }

    fn sync<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, driver::Result<Next>> {
        Box::pin(self.sync_one(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::driver::tests::{FixedClock, Recording};
    use crate::controllers::driver::Cache;
    use futures::stream;
    use k8s_openapi::api::batch::v1::{
        CronJobSpec, JobCondition, JobSpec, JobStatus, JobTemplateSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
    use kube::runtime::watcher;
    use std::sync::Mutex;

    fn utc(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn cron(spec: &str) -> Schedule {
        Schedule::parse(spec, TimeZone::UTC).unwrap()
    }

    fn next(spec: &str, from: &str) -> Option<String> {
        cron(spec).next(utc(from)).map(|t| t.to_string())
    }

    fn in_zone(spec: &str, zone: &str, from: &str, n: usize) -> Vec<String> {
        let s = Schedule::parse(spec, TimeZone::get(zone).unwrap()).unwrap();
        let mut t = utc(from);
        (0..n)
            .map(|_| {
                t = s.next(t).unwrap();
                t.to_string()
            })
            .collect()
    }

    #[test]
    fn parses_upstreams_dialect_and_its_errors() {
        assert!(Schedule::parse("*/15 9-17 * * mon-FRI", TimeZone::UTC).is_ok());
        assert!(Schedule::parse("0 0 ? JAN,jul 0", TimeZone::UTC).is_ok());
        assert_eq!(cron("@every 1h30m"), Schedule::Every(5400));
        assert_eq!(cron("@every 500ms"), Schedule::Every(1));
        let err = |s: &str| Schedule::parse(s, TimeZone::UTC).unwrap_err();
        assert_eq!(
            err("* * * *"),
            "expected exactly 5 fields, found 4: [* * * *]"
        );
        assert_eq!(
            err("60 * * * *"),
            "end of range (60) above maximum (59): 60"
        );
        assert_eq!(
            err("* * 0 * *"),
            "beginning of range (0) below minimum (1): 0"
        );
        assert_eq!(
            err("5-1 * * * *"),
            "beginning of range (5) beyond end of range (1): 5-1"
        );
        assert_eq!(
            err("*/0 * * * *"),
            "step of range should be a positive number: */0"
        );
        assert_eq!(err("1-2-3 * * * *"), "too many hyphens: 1-2-3");
        assert_eq!(err("* * * * 7"), "end of range (7) above maximum (6): 7");
        assert_eq!(err("@fortnightly"), "unrecognized descriptor: @fortnightly");
        assert!(err("x * * * *").starts_with("failed to parse int from x"));
    }

    #[test]
    fn next_times_follow_fields_descriptors_and_day_rules() {
        let n = |s: &str, f: &str| next(s, f).unwrap_or_default();
        assert_eq!(
            n("* * * * *", "2024-05-01T10:00:30Z"),
            "2024-05-01T10:01:00Z"
        );
        assert_eq!(
            n("* * * * *", "2024-05-01T10:00:00Z"),
            "2024-05-01T10:01:00Z"
        );
        assert_eq!(
            n("*/15 * * * *", "2024-05-01T10:16:00Z"),
            "2024-05-01T10:30:00Z"
        );
        // Friday evening to Monday morning.
        assert_eq!(
            n("0 9 * * 1-5", "2024-05-03T17:00:00Z"),
            "2024-05-06T09:00:00Z"
        );
        assert_eq!(n("@hourly", "2024-05-01T10:00:00Z"), "2024-05-01T11:00:00Z");
        assert_eq!(n("@daily", "2024-05-01T10:00:00Z"), "2024-05-02T00:00:00Z");
        assert_eq!(n("@weekly", "2024-05-01T10:00:00Z"), "2024-05-05T00:00:00Z");
        assert_eq!(
            n("@monthly", "2024-05-01T10:00:00Z"),
            "2024-06-01T00:00:00Z"
        );
        assert_eq!(n("@yearly", "2024-05-01T10:00:00Z"), "2025-01-01T00:00:00Z");
        assert_eq!(
            n("0 0 29 2 *", "2025-01-01T00:00:00Z"),
            "2028-02-29T00:00:00Z"
        );
        // Both day fields restricted: either matches (the 13th, or a Friday).
        assert_eq!(
            n("0 0 13 * 5", "2024-05-01T00:00:00Z"),
            "2024-05-03T00:00:00Z"
        );
        assert_eq!(
            n("0 0 13 * 5", "2024-05-10T00:00:00Z"),
            "2024-05-13T00:00:00Z"
        );
        // One of them `*`: only the other counts.
        assert_eq!(
            n("0 0 13 * *", "2024-05-01T00:00:00Z"),
            "2024-05-13T00:00:00Z"
        );
        // Never (no 31 February within five years).
        assert_eq!(next("0 0 31 2 *", "2024-01-01T00:00:00Z"), None);
        assert_eq!(
            n("@every 90s", "2024-05-01T10:00:00.5Z"),
            "2024-05-01T10:01:30Z"
        );
    }

    #[test]
    fn time_zones_and_daylight_saving() {
        // 09:00 in New York is 14:00Z in winter and 13:00Z in summer.
        assert_eq!(
            in_zone("0 9 * * *", "America/New_York", "2024-03-09T00:00:00Z", 3),
            [
                "2024-03-09T14:00:00Z",
                "2024-03-10T13:00:00Z",
                "2024-03-11T13:00:00Z"
            ]
        );
        // 02:30 does not exist on 10 March 2024 there: that day has no run.
        assert_eq!(
            in_zone("30 2 * * *", "America/New_York", "2024-03-09T12:00:00Z", 2),
            ["2024-03-11T06:30:00Z", "2024-03-12T06:30:00Z"]
        );
        // 01:30 happens twice on 3 November 2024: upstream's library runs both.
        assert_eq!(
            in_zone("30 1 * * *", "America/New_York", "2024-11-03T00:00:00Z", 3),
            [
                "2024-11-03T05:30:00Z",
                "2024-11-03T06:30:00Z",
                "2024-11-04T06:30:00Z"
            ]
        );
        // Hourly runs stay an hour apart across the change.
        assert_eq!(
            in_zone("0 * * * *", "Europe/Berlin", "2024-03-31T00:30:00Z", 3),
            [
                "2024-03-31T01:00:00Z",
                "2024-03-31T02:00:00Z",
                "2024-03-31T03:00:00Z"
            ]
        );
        let tz = TimeZone::get("America/New_York").unwrap();
        assert_eq!(
            rfc3339_in(utc("2024-03-11T13:00:00Z"), &tz),
            "2024-03-11T09:00:00-04:00"
        );
        assert_eq!(
            rfc3339_in(utc("2024-03-11T13:00:00Z"), &TimeZone::UTC),
            "2024-03-11T13:00:00Z"
        );
    }

    fn cronjob(schedule: &str) -> CronJob {
        CronJob {
            metadata: ObjectMeta {
                name: Some("tick".into()),
                namespace: Some("default".into()),
                uid: Some("cj-uid".into()),
                resource_version: Some("3".into()),
                creation_timestamp: Some(Time(utc("2024-05-01T10:00:30Z"))),
                ..Default::default()
            },
            spec: CronJobSpec {
                schedule: schedule.into(),
                concurrency_policy: Some("Allow".into()),
                successful_jobs_history_limit: Some(3),
                failed_jobs_history_limit: Some(1),
                suspend: Some(false),
                job_template: JobTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(BTreeMap::from([("app".into(), "tick".into())])),
                        ..Default::default()
                    }),
                    spec: Some(JobSpec {
                        backoff_limit: Some(2),
                        ..Default::default()
                    }),
                },
                ..Default::default()
            },
            status: None,
        }
    }

    fn scheduled_at(mut cj: CronJob, at: &str) -> CronJob {
        cj.status
            .get_or_insert_with(Default::default)
            .last_schedule_time = Some(Time(utc(at)));
        cj
    }

    fn with_active(mut cj: CronJob, jobs: &[&Job]) -> CronJob {
        let refs = jobs
            .iter()
            .map(|j| job_reference(&serde_json::to_value(j).unwrap()))
            .collect();
        cj.status.get_or_insert_with(Default::default).active = Some(refs);
        cj
    }

    /// A Job of the CronJob, started at `start`, finished as `state` if given.
    fn job(name: &str, start: &str, state: Option<&str>) -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("u-{name}")),
                owner_references: Some(vec![OwnerReference {
                    api_version: "batch/v1".into(),
                    kind: "CronJob".into(),
                    name: "tick".into(),
                    uid: "cj-uid".into(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]),
                ..Default::default()
            },
            spec: None,
            status: Some(JobStatus {
                start_time: Some(Time(utc(start))),
                completion_time: (state == Some("Complete")).then(|| Time(utc(start))),
                conditions: state.map(|s| {
                    vec![JobCondition {
                        type_: s.into(),
                        status: "True".into(),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        }
    }

    fn decide(cj: &CronJob, jobs: Vec<Job>, now: &str) -> Plan {
        let jobs: Vec<Arc<Job>> = jobs.into_iter().map(Arc::new).collect();
        reconcile(
            cj,
            &Observed {
                jobs: &jobs,
                missing: &HashSet::new(),
                now: utc(now),
            },
        )
    }

    #[test]
    fn creates_the_job_of_each_due_time_once_and_requeues_for_the_next() {
        let cj = cronjob("* * * * *");
        // Before the first due time: wait for it, precisely.
        let plan = decide(&cj, vec![], "2024-05-01T10:00:40Z");
        assert!(plan.create.is_none());
        assert_eq!(plan.requeue, Some(Duration::from_millis(20_100)));

        let plan = decide(&cj, vec![], "2024-05-01T10:01:00.2Z");
        let new = plan.create.unwrap();
        let minutes = utc("2024-05-01T10:01:00Z").as_second() / 60;
        assert_eq!(new.name, format!("tick-{minutes}"));
        assert_eq!(new.scheduled, utc("2024-05-01T10:01:00Z"));
        let meta = &new.body["metadata"];
        assert_eq!(meta["name"], new.name.as_str());
        assert_eq!(
            meta["annotations"][SCHEDULED_TIMESTAMP],
            "2024-05-01T10:01:00Z"
        );
        assert_eq!(meta["labels"]["app"], "tick");
        assert_eq!(meta["ownerReferences"][0]["kind"], "CronJob");
        assert_eq!(meta["ownerReferences"][0]["controller"], true);
        assert_eq!(new.body["spec"]["backoffLimit"], 2);
        assert_eq!(plan.requeue, Some(Duration::from_millis(59_900)));

        // Already run for 10:01: nothing until 10:02.
        let cj = scheduled_at(cronjob("* * * * *"), "2024-05-01T10:01:00Z");
        let plan = decide(&cj, vec![], "2024-05-01T10:01:30Z");
        assert!(plan.create.is_none());
        assert_eq!(plan.requeue, Some(Duration::from_millis(30_100)));

        // In a time zone, the annotation carries its offset.
        let mut cj = cronjob("0 6 * * *");
        cj.spec.time_zone = Some("Europe/Berlin".into());
        let plan = decide(&cj, vec![], "2024-05-02T04:00:01Z");
        let new = plan.create.unwrap();
        assert_eq!(
            new.body["metadata"]["annotations"][SCHEDULED_TIMESTAMP],
            "2024-05-02T06:00:00+02:00"
        );

        // Suspended: nothing, not even a requeue.
        let mut cj = cronjob("* * * * *");
        cj.spec.suspend = Some(true);
        let plan = decide(&cj, vec![], "2024-05-01T10:05:00Z");
        assert!(plan.create.is_none() && plan.requeue.is_none());

        // A bad zone is reported.
        let mut cj = cronjob("* * * * *");
        cj.spec.time_zone = Some("Mars/Olympus".into());
        let plan = decide(&cj, vec![], "2024-05-01T10:05:00Z");
        assert_eq!(plan.events[0].1, "UnknownTimeZone");
    }

    #[test]
    fn the_starting_deadline_skips_runs_too_late_and_many_misses_warn() {
        let cj = scheduled_at(cronjob("* * * * *"), "2024-05-01T10:00:00Z");
        // 10:05 is due 30 s ago: within a 40 s deadline, not within 20 s.
        let mut late = cj.clone();
        late.spec.starting_deadline_seconds = Some(40);
        let plan = decide(&late, vec![], "2024-05-01T10:05:30Z");
        assert_eq!(plan.create.unwrap().scheduled, utc("2024-05-01T10:05:00Z"));
        late.spec.starting_deadline_seconds = Some(20);
        let plan = decide(&late, vec![], "2024-05-01T10:05:30Z");
        assert!(plan.create.is_none());
        assert_eq!(plan.requeue, Some(Duration::from_millis(30_100)));
        // Without a deadline, only the most recent missed time runs.
        let plan = decide(&cj, vec![], "2024-05-01T10:05:30Z");
        assert_eq!(plan.create.unwrap().scheduled, utc("2024-05-01T10:05:00Z"));
        assert!(plan.events.is_empty());
        // More than 100 missed: a warning, and still the most recent runs.
        let plan = decide(&cj, vec![], "2024-05-01T13:00:30Z");
        assert_eq!(plan.events[0].1, "TooManyMissedTimes");
        assert_eq!(plan.create.unwrap().scheduled, utc("2024-05-01T13:00:00Z"));
    }

    #[test]
    fn concurrency_policies() {
        let running = job("tick-1", "2024-05-01T10:00:00Z", None);
        let base = with_active(
            scheduled_at(cronjob("* * * * *"), "2024-05-01T10:00:00Z"),
            &[&running],
        );
        let now = "2024-05-01T10:01:00.5Z";
        let plan = decide(&base, vec![running.clone()], now);
        assert!(plan.create.is_some(), "Allow runs beside the active one");
        assert_eq!(plan.status.active.as_ref().map(Vec::len), Some(1));

        let mut forbid = base.clone();
        forbid.spec.concurrency_policy = Some("Forbid".into());
        let plan = decide(&forbid, vec![running.clone()], now);
        assert!(plan.create.is_none());
        assert_eq!(plan.events[0].1, "JobAlreadyActive");
        assert_eq!(plan.requeue, Some(Duration::from_millis(59_600)));

        let mut replace = base.clone();
        replace.spec.concurrency_policy = Some("Replace".into());
        let plan = decide(&replace, vec![running], now);
        assert_eq!(
            plan.replace,
            vec![("tick-1".to_string(), "u-tick-1".to_string())]
        );
        assert!(plan.create.is_some());
        assert_eq!(plan.status.active, None);
    }

    #[test]
    fn follows_its_jobs_and_trims_the_history() {
        let done = job("tick-5", "2024-05-01T10:05:00Z", Some("Complete"));
        let cj = with_active(
            scheduled_at(cronjob("0 0 * * *"), "2024-05-01T10:05:00Z"),
            &[&done],
        );
        let mut jobs = vec![done];
        for m in 1..=4 {
            let start = format!("2024-05-01T10:0{m}:00Z");
            jobs.push(job(&format!("tick-{m}"), &start, Some("Complete")));
        }
        jobs.push(job("bad-1", "2024-05-01T09:00:00Z", Some("Failed")));
        jobs.push(job("bad-2", "2024-05-01T09:30:00Z", Some("Failed")));
        jobs.push(job("stray", "2024-05-01T09:30:00Z", None));
        let plan = decide(&cj, jobs, "2024-05-01T10:06:00Z");
        assert_eq!(
            plan.events,
            vec![
                (
                    EventType::Normal,
                    "SawCompletedJob",
                    "Saw completed job: tick-5, condition: Complete".to_string()
                ),
                (
                    EventType::Warning,
                    "UnexpectedJob",
                    "Saw a job that the controller did not create or forgot: stray".to_string()
                ),
            ]
        );
        assert_eq!(plan.status.active, None);
        assert_eq!(
            plan.status.last_successful_time,
            Some(Time(utc("2024-05-01T10:05:00Z")))
        );
        let trimmed: Vec<&str> = plan.trim.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(trimmed, ["tick-1", "tick-2", "bad-1"]);

        // An active Job that is gone for good leaves the list.
        let gone = job("tick-9", "2024-05-01T10:05:00Z", None);
        let cj = with_active(cronjob("0 0 * * *"), &[&gone]);
        let missing = HashSet::from(["tick-9".to_string()]);
        let plan = reconcile(
            &cj,
            &Observed {
                jobs: &[],
                missing: &missing,
                now: utc("2024-05-01T10:06:00Z"),
            },
        );
        assert_eq!(plan.events[0].1, "MissingJob");
        assert_eq!(plan.status.active, None);
    }

    async fn feed<K>(cache: &Cache<K>, objs: Vec<K>)
    where
        K: kube::Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        let mut events = vec![Ok(watcher::Event::Init)];
        events.extend(objs.into_iter().map(|o| Ok(watcher::Event::InitApply(o))));
        events.push(Ok(watcher::Event::InitDone));
        cache.feed(stream::iter(events)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn driver_creates_the_job_and_records_it_in_the_status() {
        let fx = Arc::new(Recording::default());
        let caches = Arc::new(Caches::new());
        let clock = Arc::new(FixedClock(Mutex::new(utc("2024-05-01T10:01:00.1Z"))));
        let events = Arc::new(Recorder::new(
            fx.clone(),
            clock.clone(),
            "cronjob-controller",
        ));
        let c = CronJobController::new(caches.clone(), fx.clone(), clock, events);
        let queue = Queue::new();
        CronJobController::watch(&caches, &queue);
        feed(&caches.cronjobs, vec![cronjob("* * * * *")]).await;
        feed(&caches.jobs, vec![]).await;
        let key = queue.next().await;
        let next = c.sync(&key).await.unwrap();
        assert_eq!(next, Next::After(Duration::from_millis(60_000)));
        let calls = fx.calls();
        let minutes = utc("2024-05-01T10:01:00Z").as_second() / 60;
        assert_eq!(
            calls[0],
            format!("create Job default/tick-{minutes}"),
            "{calls:#?}"
        );
        assert!(
            calls[1].starts_with("create Event default/tick."),
            "{calls:#?}"
        );
        let status = &calls[2];
        assert!(
            status.starts_with("status CronJob default/tick"),
            "{status}"
        );
        assert!(
            status.contains(r#""lastScheduleTime":"2024-05-01T10:01:00Z""#),
            "{status}"
        );
        assert!(
            status.contains(&format!(r#""name":"tick-{minutes}""#)),
            "{status}"
        );
    }
}
