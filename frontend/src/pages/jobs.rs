//! The jobs table: live (server-sent events), filterable, paged by keyset
//! (`?before=<id>`: a page deep in a year of jobs costs what the first does).
//!
//! The stream starts where the first page was read (`events_seq`), so no
//! history is downloaded; an event changes the row it names in place (a
//! peer's event refetches that one row), and only a job that may enter the
//! page (a new one, or any change under a state filter) refetches the page.

use app::model::{Event, JobPage, JobState, JobSummary, RowChange};
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::{use_navigate, use_query_map};

use super::{ConnBadge, ErrorLine, StateBadge};
use crate::api;
use crate::logic::{human_duration, parse_time_ms};
use crate::sse::{self, Conn};

const PAGE: u64 = 25;

#[component]
pub fn JobsPage() -> impl IntoView {
    let query = use_query_map();
    let navigate = use_navigate();
    let app_filter = Memo::new(move |_| query.read().get("app").unwrap_or_default());
    let state_filter = Memo::new(move |_| query.read().get("state").unwrap_or_default());
    // Keyset paging: a page is "older than job #before"; none is the newest.
    let before = Memo::new(move |_| {
        query
            .read()
            .get("before")
            .and_then(|o| o.parse::<u64>().ok())
    });
    let page = RwSignal::new(None::<JobPage>);
    // The rows, each its own signal so that an event redraws one row.
    let rows = RwSignal::new(Vec::<(u64, RwSignal<JobSummary>)>::new());
    // The event each row reflects: an event at or before it is old news.
    let seen = StoredValue::new(std::collections::HashMap::<u64, u64>::new());
    let stream_from = RwSignal::new(None::<u64>);
    let apps = RwSignal::new(Vec::<String>::new());
    let error = RwSignal::new(None::<String>);
    let (conn, set_conn) = signal(Conn::Connecting);
    let tick = RwSignal::new(0u32);
    let now = RwSignal::new(js_sys::Date::now());

    // One row fetched again (a peer changed, or the page was read before an
    // event of it that came first), coalesced per job.
    let refreshing = StoredValue::new(std::collections::HashSet::<u64>::new());
    let refetch_row = move |id: u64| {
        if !refreshing
            .try_update_value(|r| r.insert(id))
            .unwrap_or(false)
        {
            return;
        }
        spawn_local(async move {
            gloo_timers::future::TimeoutFuture::new(300).await;
            refreshing.try_update_value(|r| r.remove(&id));
            let url = format!("/api/jobs?limit=1&before={}", id + 1);
            if let Ok(p) = api::get::<JobPage>(&url).await {
                if let Some(j) = p.jobs.into_iter().find(|j| j.id == id) {
                    let row = rows
                        .try_with_untracked(|r| r.iter().find(|(i, _)| *i == id).map(|(_, s)| *s))
                        .flatten();
                    if let Some(row) = row {
                        seen.try_update_value(|s| s.insert(id, p.events_seq));
                        row.try_set(j);
                    }
                }
            }
        });
    };
    // The newest event seen of each job, whether its row is shown or not:
    // a page read before it must read that row again.
    let recent = StoredValue::new(std::collections::HashMap::<u64, u64>::new());
    let load = move || {
        let url = format!(
            "/api/jobs?limit={PAGE}{}&app={}&state={}",
            before
                .get_untracked()
                .map(|b| format!("&before={b}"))
                .unwrap_or_default(),
            js_sys::encode_uri_component(&app_filter.get_untracked()),
            state_filter.get_untracked()
        );
        spawn_local(async move {
            match api::get::<JobPage>(&url).await {
                Ok(p) => {
                    let seq = p.events_seq;
                    // A row an event (or a row read) has taken past this
                    // page's read stays as it is: the page is older news.
                    let newer: std::collections::HashMap<u64, (u64, JobSummary)> = rows
                        .try_with_untracked(|r| {
                            r.iter()
                                .filter_map(|(id, row)| {
                                    let at = seen.try_with_value(|s| s.get(id).copied())??;
                                    (at > seq).then(|| (*id, (at, row.get_untracked())))
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    let fresh: Vec<(u64, u64, JobSummary)> = p
                        .jobs
                        .iter()
                        .map(|j| match newer.get(&j.id) {
                            Some((at, kept)) => (j.id, *at, kept.clone()),
                            None => (j.id, seq, j.clone()),
                        })
                        .collect();
                    seen.try_update_value(|s| {
                        s.clear();
                        s.extend(fresh.iter().map(|(id, at, _)| (*id, *at)));
                    });
                    let stale: Vec<u64> = fresh
                        .iter()
                        .filter(|(id, at, _)| {
                            recent
                                .try_with_value(|r| r.get(id).is_some_and(|s| s > at))
                                .unwrap_or(false)
                        })
                        .map(|(id, _, _)| *id)
                        .collect();
                    recent.try_update_value(|r| r.retain(|_, s| *s > seq));
                    rows.try_set(
                        fresh
                            .into_iter()
                            .map(|(id, _, j)| (id, RwSignal::new(j)))
                            .collect(),
                    );
                    for id in stale {
                        refetch_row(id);
                    }
                    page.try_set(Some(p));
                    error.try_set(None);
                    if stream_from.get_untracked().is_none() {
                        stream_from.try_set(Some(seq));
                    }
                }
                Err(e) => {
                    error.try_set(Some(e.message));
                }
            }
        });
    };
    Effect::new(move |_| {
        let _ = (
            app_filter.get(),
            state_filter.get(),
            before.get(),
            tick.get(),
        );
        load();
    });
    spawn_local(async move {
        if let Ok(v) = api::get::<serde_json::Value>("/api/apps").await {
            let names = v["apps"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x["name"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            apps.try_set(names);
        }
    });
    // A change the page cannot make itself: refetch, at most every 300 ms.
    let pending = StoredValue::new(false);
    let refetch_page = move || {
        if pending.get_value() {
            return;
        }
        pending.set_value(true);
        spawn_local(async move {
            gloo_timers::future::TimeoutFuture::new(300).await;
            // Nothing to do if the page was left meanwhile.
            pending.try_set_value(false);
            tick.try_update(|t| *t += 1);
        });
    };
    let on_event = move |_: &str, data: String| {
        let Ok(ev) = serde_json::from_str::<Event>(&data) else {
            return;
        };
        recent.update_value(|r| {
            let s = r.entry(ev.job).or_insert(0);
            *s = (*s).max(ev.seq);
        });
        let row = rows.with_untracked(|r| r.iter().find(|(i, _)| *i == ev.job).map(|(_, s)| *s));
        let filtered = !state_filter.get_untracked().is_empty();
        match row {
            Some(row) => {
                let old = seen.with_value(|s| s.get(&ev.job).copied().unwrap_or(0));
                if ev.seq <= old {
                    return;
                }
                seen.update_value(|s| {
                    s.insert(ev.job, ev.seq);
                });
                let mut changed = RowChange::Updated;
                row.update(|j| changed = j.apply(&ev));
                if changed == RowChange::Refetch {
                    refetch_row(ev.job);
                }
                if filtered && matches!(ev.kind, app::model::EventKind::Job { .. }) {
                    refetch_page();
                }
            }
            None => {
                let newest = rows.with_untracked(|r| r.first().map(|(i, _)| *i).unwrap_or(0));
                let is_job = matches!(ev.kind, app::model::EventKind::Job { .. });
                let new_on_top = ev.job > newest && before.get_untracked().is_none();
                if is_job && (new_on_top || filtered) {
                    refetch_page();
                }
            }
        }
    };
    Effect::new(move |_| {
        if let Some(seq) = stream_from.get() {
            sse::subscribe(
                &format!("/api/events?after={seq}"),
                &["job", "peer", "archive"],
                on_event,
                set_conn,
            );
        }
    });
    let clock = StoredValue::new_local(Some(gloo_timers::callback::Interval::new(
        1000,
        move || now.set(js_sys::Date::now()),
    )));
    on_cleanup(move || clock.update_value(|c| drop(c.take())));

    let nav = navigate.clone();
    let set_query = move |app: String, state: String, older_than: Option<u64>| {
        let mut q = vec![];
        if !app.is_empty() {
            q.push(format!("app={}", js_sys::encode_uri_component(&app)));
        }
        if !state.is_empty() {
            q.push(format!("state={state}"));
        }
        if let Some(b) = older_than {
            q.push(format!("before={b}"));
        }
        let url = if q.is_empty() {
            "/jobs".to_string()
        } else {
            format!("/jobs?{}", q.join("&"))
        };
        nav(&url, Default::default());
    };
    let sq1 = set_query.clone();
    let sq2 = set_query.clone();
    let sq3 = set_query.clone();
    let sq4 = set_query;

    view! {
        <section>
            <div class="title-row">
                <h1>"Jobs"</h1>
                <ConnBadge conn=conn/>
                <a class="button primary" href="/new">"New job"</a>
            </div>
            <div class="filters">
                <label>"App "
                    <select data-testid="filter-app" on:change=move |ev| sq1(event_target_value(&ev), state_filter.get_untracked(), None)
                        prop:value=move || app_filter.get()>
                        <option value="">"all"</option>
                        <For each=move || apps.get() key=|a| a.clone() children=move |a| view! { <option value=a.clone()>{a.clone()}</option> }/>
                    </select>
                </label>
                <label>"Status "
                    <select data-testid="filter-state" on:change=move |ev| sq2(app_filter.get_untracked(), event_target_value(&ev), None)
                        prop:value=move || state_filter.get()>
                        <option value="">"all"</option>
                        {JobState::ALL.iter().map(|s| view! { <option value=s.as_str()>{s.as_str()}</option> }).collect_view()}
                    </select>
                </label>
            </div>
            <ErrorLine error=error/>
            {move || match page.get() {
                None => view! { <p class="muted">"Loading…"</p> }.into_any(),
                Some(p) if p.jobs.is_empty() && before.get().is_none() && (!app_filter.get().is_empty() || !state_filter.get().is_empty()) => view! {
                    <div class="empty">
                        <p>"No jobs match these filters. " <a href="/jobs">"Show all jobs."</a></p>
                    </div>
                }.into_any(),
                Some(p) if p.jobs.is_empty() && before.get().is_none() => view! {
                    <div class="empty">
                        <p>"No jobs yet."</p>
                        <p>"Upload a program on the " <a href="/apps">"Apps"</a> " page, then start one from " <a href="/new">"New job"</a> "."</p>
                    </div>
                }.into_any(),
                Some(p) => {
                    let total = p.total;
                    let next = p.next_before;
                    let first = before.get_untracked().is_none();
                    let shown = p.jobs.len();
                    let label = match before.get_untracked() {
                        None => format!("{}–{shown} of {total}", shown.min(1)),
                        Some(b) => format!("{shown} older than #{b}, of {total}"),
                    };
                    let sqa = sq3.clone();
                    let sqb = sq4.clone();
                    view! {
                        <div class="table-wrap">
                        <table class="jobs" data-testid="jobs-table" on:pointerover=|_| crate::warm_job_page() on:focusin=|_| crate::warm_job_page()>
                            <thead><tr><th>"#"</th><th>"Status"</th><th>"App"</th><th>"Peers"</th><th>"Submitted"</th><th>"Duration"</th><th>"Tag"</th></tr></thead>
                            <tbody>
                                <For each=move || rows.get() key=|(id, _)| *id children=move |(_, j)| view! { <JobRow job=j now=now/> }/>
                            </tbody>
                        </table>
                        </div>
                        <div class="pager">
                            <button data-testid="newest" disabled=first on:click=move |_| sqa(app_filter.get_untracked(), state_filter.get_untracked(), None)>"« Newest"</button>
                            <span class="muted" data-testid="page-label">{label}</span>
                            <button data-testid="older" disabled=next.is_none() on:click=move |_| sqb(app_filter.get_untracked(), state_filter.get_untracked(), next)>"Older →"</button>
                        </div>
                    }.into_any()
                }
            }}
        </section>
    }
}

#[component]
fn JobRow(job: RwSignal<JobSummary>, now: RwSignal<f64>) -> impl IntoView {
    let j = job.get_untracked();
    let id = j.id;
    let href = format!("/jobs/{id}");
    let duration = move || {
        let (start, end) = job.with(|j| {
            (
                j.started.as_deref().and_then(parse_time_ms),
                j.ended.as_deref().and_then(parse_time_ms),
            )
        });
        match (start, end) {
            (Some(s), Some(e)) => human_duration((e - s) / 1000.0),
            (Some(s), None) => human_duration(((now.get() - s) / 1000.0).max(0.0)),
            _ => "—".into(),
        }
    };
    let submitted = j
        .submitted
        .get(..19)
        .unwrap_or(&j.submitted)
        .replace('T', " ");
    view! {
        <tr data-testid=format!("job-row-{id}")>
            <td><a href=href.clone()>{id}</a></td>
            <td title=move || job.with(|j| j.reason.clone())>
                <StateBadge state=Signal::derive(move || job.with(|j| j.state.as_str().to_string()))/>
            </td>
            <td><a href=href>{j.app.clone()}</a>" "<span class="muted">{j.uid.clone()}</span></td>
            <td>{move || job.with(|j| format!("{} / {}", j.peers_running, j.peers_total))}</td>
            <td>{submitted}</td>
            <td>{duration}</td>
            <td>{j.tag.clone()}</td>
        </tr>
    }
}
