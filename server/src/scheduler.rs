//! Schedules: jobs that start themselves at the times a schedule names
//! (`schedule.rs` reads them), with a policy for a run that falls due while
//! the previous one still runs, and one for the runs missed while the
//! dispatcher was down.
//!
//! One task looks every 200 ms for schedules with a run due. A due time
//! starts at most one job, ever: the job, the row naming its schedule and
//! due time, and the schedule's move to its next time are written in one
//! transaction (`db::insert_job`), and a due time that already has a row
//! is never run again. Due times that start no job (skipped, missed) get a
//! row saying why, written with the move too.

use std::time::Duration;

use app::model::{Concurrency, Missed, ScheduleRequest, ScheduleView};
use jiff::Timestamp;

use crate::db::{self, DueRecord, ScheduleRow};
use crate::error::ApiError;
use crate::schedule::When;
use crate::service::{self, AppState, Link};

/// The next runs shown for a schedule.
const NEXT_RUNS: usize = 5;
/// Runs of a schedule's history shown with it.
const HISTORY: u64 = 100;

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn now_ms() -> i64 {
    crate::util::now_ms() as i64
}

/// When the schedule runs, or what is wrong with how it says so.
pub fn when_of(req: &ScheduleRequest) -> Result<When, String> {
    match (&req.schedule, &req.cron) {
        (Some(s), None) => {
            if req.tz.is_some() {
                return Err("tz goes with cron; a repeating interval carries its own offset (2026-12-01T02:00:00+01:00)".into());
            }
            When::interval(s)
        }
        (None, Some(c)) => When::cron(c, req.tz.as_deref()),
        (Some(_), Some(_)) => Err("give schedule (an ISO 8601 repeating interval) or cron, not both".into()),
        (None, None) => Err("say when it runs: schedule (e.g. R/2026-12-01T02:00:00Z/P1D) or cron (e.g. \"0 2 * * *\", with tz)".into()),
    }
}

/// Checks a new schedule as a submission would be checked, then records it.
pub async fn create(st: &AppState, mut req: ScheduleRequest) -> Result<ScheduleView, ApiError> {
    let when = when_of(&req).map_err(ApiError::bad_request)?;
    if req.name.chars().count() > 200 {
        return Err(ApiError::bad_request("name is longer than 200 characters"));
    }
    if req.uid.as_deref() == Some("latest") {
        req.uid = None;
    }
    if req.role_file.len() > st.settings.limits.max_role_file {
        return Err(st.settings.limits.role_file_too_large());
    }
    service::check_options(&req.options)?;
    service::resolve_version(st, &req.app, req.uid.as_deref()).await?;
    service::accept_role_file(st, &req.role_file)?;
    let Some(next) = when
        .next_after(Timestamp::now())
        .map(|t| t.as_millisecond())
    else {
        return Err(ApiError::bad_request(match (&req.schedule, &req.cron) {
            (Some(s), _) => format!("{s:?} has no run left: its last run is in the past"),
            (_, Some(c)) => format!("cron {c:?} never runs (no matching time in the next five years, e.g. February 30th)"),
            _ => "the schedule never runs".to_string(),
        }));
    };
    let next = Some(next);
    let r = req.clone();
    let id = st
        .db
        .call(move |c| db::insert_schedule(c, &r, next))
        .await?;
    tracing::info!(schedule = id, app = %req.app, next = ?next.map(crate::util::rfc3339_ms), "schedule created");
    get(st, id, false).await
}

/// A schedule with its next runs (and its history when asked).
pub async fn get(st: &AppState, id: u64, history: bool) -> Result<ScheduleView, ApiError> {
    let limit = if history { HISTORY } else { 1 };
    // The schedule and its runs in one read: its next time and its runs
    // are written together, and read together they agree.
    let (row, runs) = st
        .db
        .call(move |c| {
            let Some(row) = db::schedule(c, id)? else {
                return Ok(None);
            };
            Ok(Some((row, db::schedule_runs(c, id, limit)?)))
        })
        .await?
        .ok_or_else(|| ApiError::not_found(format!("there is no schedule {id}")))?;
    Ok(view(row, runs, history))
}

fn view(
    row: ScheduleRow,
    (runs, count): (Vec<app::model::ScheduleRun>, u64),
    history: bool,
) -> ScheduleView {
    let id = row.id;
    let next_runs = match (row.paused, row.next_ms, when_of(&row.req)) {
        (false, Some(next), Ok(when)) => {
            let first = ts(next);
            let mut all = vec![first];
            all.extend(when.next_runs(first, NEXT_RUNS - 1));
            all.into_iter().map(|t| t.to_string()).collect()
        }
        _ => vec![],
    };
    let req = row.req;
    ScheduleView {
        id,
        name: req.name,
        app: req.app,
        uid: req.uid,
        role_file: req.role_file,
        options: req.options,
        schedule: req.schedule,
        cron: req.cron,
        tz: req.tz,
        concurrency: req.concurrency,
        missed: req.missed,
        paused: row.paused,
        created: row.created,
        next_runs,
        queued: row.pending_ms.map(crate::util::rfc3339_ms),
        last: runs.first().cloned(),
        runs: count,
        jobs: if history { runs } else { vec![] },
    }
}

pub async fn list(st: &AppState) -> Result<Vec<ScheduleView>, ApiError> {
    let all = st
        .db
        .call(|c| {
            db::schedules(c)?
                .into_iter()
                .map(|row| {
                    let runs = db::schedule_runs(c, row.id, 1)?;
                    Ok((row, runs))
                })
                .collect::<Result<Vec<_>, crate::error::Internal>>()
        })
        .await?;
    Ok(all
        .into_iter()
        .map(|(row, runs)| view(row, runs, false))
        .collect())
}

/// Pauses (no run starts, a queued one waits) or resumes (from the next
/// due time after now: runs that fell due while paused are not made up).
pub async fn set_paused(st: &AppState, id: u64, paused: bool) -> Result<ScheduleView, ApiError> {
    let row = st
        .db
        .call(move |c| db::schedule(c, id))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("there is no schedule {id}")))?;
    let next = if paused {
        row.next_ms
    } else {
        when_of(&row.req)
            .ok()
            .and_then(|w| w.next_after(Timestamp::now()))
            .map(|t| t.as_millisecond())
    };
    st.db
        .call(move |c| db::set_schedule_paused(c, id, paused, next))
        .await?;
    tracing::info!(
        schedule = id,
        paused,
        "schedule {}",
        if paused { "paused" } else { "resumed" }
    );
    get(st, id, false).await
}

pub async fn delete(st: &AppState, id: u64) -> Result<(), ApiError> {
    if !st.db.call(move |c| db::delete_schedule(c, id)).await? {
        return Err(ApiError::not_found(format!("there is no schedule {id}")));
    }
    tracing::info!(schedule = id, "schedule deleted");
    Ok(())
}

/// Runs the schedules until `stop`. Due times before `started_ms` fell
/// while the dispatcher was down: each schedule's `missed` policy decides.
pub fn spawn(st: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let started_ms = now_ms();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(200));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            let now = now_ms();
            let due = match st.db.call(move |c| db::due_schedules(c, now)).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the schedules");
                    continue;
                }
            };
            for row in due {
                if let Err(e) = step(&st, row, now, started_ms).await {
                    tracing::error!(error = ?e, "a schedule's run failed");
                }
            }
        }
    });
}

/// One schedule with a run due (or queued) at `now`. Each due time it
/// records (a job started, or why none did) is written together with the
/// schedule's times from then on: a reader never sees a run counted while
/// its due time is still listed as next.
async fn step(st: &AppState, row: ScheduleRow, now: i64, started_ms: i64) -> Result<(), ApiError> {
    let id = row.id;
    let when = match when_of(&row.req) {
        Ok(w) => w,
        Err(e) => {
            // Its time zone left this machine's tzdb, say: it cannot run.
            tracing::error!(schedule = id, error = %e, "schedule cannot say when it runs; paused");
            st.db
                .call(move |c| db::set_schedule_paused(c, id, true, None))
                .await?;
            return Ok(());
        }
    };
    let mut pending = row.pending_ms;
    let last = st.db.call(move |c| db::schedule_last_job(c, id)).await?;
    let mut previous_runs = last.filter(|(_, s)| !s.is_terminal()).map(|(j, _)| j);
    // A queued run starts once the one before it ended; the due time, if
    // any, is dealt with next.
    if let Some(p) = pending {
        if previous_runs.is_none() {
            pending = None;
            let run = DueRecord::new(id, p, row.next_ms, pending);
            previous_runs = start(st, &row, run, "").await?;
        }
    }
    let Some(due) = row.next_ms.filter(|d| *d <= now) else {
        return Ok(());
    };
    let next = when.next_after(ts(now)).map(|t| t.as_millisecond());
    if st
        .db
        .call(move |c| db::schedule_run_exists(c, id, due))
        .await?
    {
        // Started before a crash cut the schedule's move on short (a
        // dispatcher from before runs and moves were written together).
        let after = when.next_after(ts(due)).map(|t| t.as_millisecond());
        return set_times(st, id, after, pending).await;
    }
    if due < started_ms {
        // Counted one by one, up to a bound: a one-second interval down for
        // a day would otherwise hold this task for a long while.
        const COUNTED: u64 = 10_000;
        let mut missed = 1u64;
        let mut t = ts(due);
        while missed < COUNTED {
            match when.next_after(t).filter(|x| x.as_millisecond() <= now) {
                Some(x) => {
                    missed += 1;
                    t = x;
                }
                None => break,
            }
        }
        let runs = match missed {
            1 => "1 run".to_string(),
            COUNTED => format!("{COUNTED} runs or more"),
            n => format!("{n} runs"),
        };
        let run = DueRecord::new(id, due, next, pending);
        match row.req.missed {
            Missed::Skip => {
                tracing::warn!(
                    schedule = id,
                    missed,
                    "runs missed while the dispatcher was down; skipped"
                );
                let why = format!(
                    "skipped: {runs} fell due while the dispatcher was down (missed: skip)"
                );
                skip(st, run, why).await?;
            }
            Missed::RunOnce => {
                tracing::warn!(
                    schedule = id,
                    missed,
                    "runs missed while the dispatcher was down; running once"
                );
                if previous_runs.is_some() {
                    let why = format!("skipped: {runs} missed while the dispatcher was down, and the previous run still runs");
                    skip(st, run, why).await?;
                } else {
                    let note = format!(" ({runs} missed while the dispatcher was down, run once)");
                    start(st, &row, run, &note).await?;
                }
            }
        }
        return Ok(());
    }
    match (previous_runs, row.req.concurrency) {
        (None, _) => {
            start(st, &row, DueRecord::new(id, due, next, pending), "").await?;
        }
        (Some(prev), Concurrency::Skip) => {
            let why = format!("skipped: job {prev} was still running (concurrency: skip)");
            skip(st, DueRecord::new(id, due, next, pending), why).await?;
        }
        (Some(prev), Concurrency::Queue) => {
            if pending.is_none() {
                // No row yet: the due time is recorded when its run starts.
                return set_times(st, id, next, Some(due)).await;
            }
            let why = format!(
                "skipped: a run already waits for job {prev} to end (concurrency: queue holds one)"
            );
            skip(st, DueRecord::new(id, due, next, pending), why).await?;
        }
        (Some(prev), Concurrency::Replace) => {
            st.runner
                .kill(prev, format!("replaced by the next run of schedule {id}"))
                .await;
            start(st, &row, DueRecord::new(id, due, next, pending), "").await?;
        }
    }
    Ok(())
}

async fn set_times(
    st: &AppState,
    id: u64,
    next: Option<i64>,
    pending: Option<i64>,
) -> Result<(), ApiError> {
    st.db
        .call(move |c| db::set_schedule_times(c, id, next, pending))
        .await?;
    Ok(())
}

/// Records a due time that starts no job, and why.
async fn skip(st: &AppState, mut run: DueRecord, why: String) -> Result<(), ApiError> {
    run.outcome = why;
    st.db
        .call(move |c| db::record_schedule_skip(c, &run))
        .await?;
    st.bus.metrics().schedule_run("skipped");
    Ok(())
}

/// Starts `run`; a submission that fails (the app was deleted, the role
/// file no longer fits the limits) is recorded as why.
async fn start(
    st: &AppState,
    row: &ScheduleRow,
    mut run: DueRecord,
    note: &str,
) -> Result<Option<u64>, ApiError> {
    let id = row.id;
    let due = run.due_ms;
    let mut options = row.req.options.clone();
    if options.tag.is_empty() {
        options.tag = if row.req.name.is_empty() {
            format!("schedule {id}")
        } else {
            row.req.name.clone()
        };
    }
    run.outcome = format!("submitted{note}");
    let submitted = service::submit_linked(
        st,
        &row.req.app,
        row.req.uid.as_deref(),
        row.req.role_file.clone(),
        options,
        Link {
            schedule: Some(run.clone()),
            ..Link::default()
        },
    )
    .await;
    match submitted {
        Ok(s) => {
            st.bus.metrics().schedule_run("started");
            tracing::info!(schedule = id, job = s.id, due = %crate::util::rfc3339_ms(due), "scheduled run started{note}");
            Ok(Some(s.id))
        }
        Err(ApiError::Client { message, .. }) => {
            let why = format!("not started: {message}");
            tracing::warn!(schedule = id, %why, "scheduled run");
            run.outcome = why;
            st.db
                .call(move |c| db::record_schedule_skip(c, &run))
                .await?;
            st.bus.metrics().schedule_run("not_started");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}
