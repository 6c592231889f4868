//! The jobs table: live (server-sent events), filterable, paginated.

use app::model::{JobPage, JobState, JobSummary};
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
    let offset = Memo::new(move |_| {
        query
            .read()
            .get("offset")
            .and_then(|o| o.parse::<u64>().ok())
            .unwrap_or(0)
    });
    let page = RwSignal::new(None::<JobPage>);
    let apps = RwSignal::new(Vec::<String>::new());
    let error = RwSignal::new(None::<String>);
    let (conn, set_conn) = signal(Conn::Connecting);
    let tick = RwSignal::new(0u32);
    let now = RwSignal::new(js_sys::Date::now());

    let load = move || {
        let url = format!(
            "/api/jobs?limit={PAGE}&offset={}&app={}&state={}",
            offset.get_untracked(),
            js_sys::encode_uri_component(&app_filter.get_untracked()),
            state_filter.get_untracked()
        );
        spawn_local(async move {
            match api::get::<JobPage>(&url).await {
                Ok(p) => {
                    page.try_set(Some(p));
                    error.try_set(None);
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
            offset.get(),
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
    // Any event may change the page: refetch, at most every 300 ms.
    let pending = StoredValue::new(false);
    sse::subscribe(
        "/api/events",
        &["job", "peer", "archive"],
        move |_, _| {
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
        },
        set_conn,
    );
    let clock = StoredValue::new_local(Some(gloo_timers::callback::Interval::new(
        1000,
        move || now.set(js_sys::Date::now()),
    )));
    on_cleanup(move || clock.update_value(|c| drop(c.take())));

    let nav = navigate.clone();
    let set_query = move |app: String, state: String, off: u64| {
        let mut q = vec![];
        if !app.is_empty() {
            q.push(format!("app={}", js_sys::encode_uri_component(&app)));
        }
        if !state.is_empty() {
            q.push(format!("state={state}"));
        }
        if off > 0 {
            q.push(format!("offset={off}"));
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
                    <select data-testid="filter-app" on:change=move |ev| sq1(event_target_value(&ev), state_filter.get_untracked(), 0)
                        prop:value=move || app_filter.get()>
                        <option value="">"all"</option>
                        <For each=move || apps.get() key=|a| a.clone() children=move |a| view! { <option value=a.clone()>{a.clone()}</option> }/>
                    </select>
                </label>
                <label>"Status "
                    <select data-testid="filter-state" on:change=move |ev| sq2(app_filter.get_untracked(), event_target_value(&ev), 0)
                        prop:value=move || state_filter.get()>
                        <option value="">"all"</option>
                        {JobState::ALL.iter().map(|s| view! { <option value=s.as_str()>{s.as_str()}</option> }).collect_view()}
                    </select>
                </label>
            </div>
            <ErrorLine error=error/>
            {move || match page.get() {
                None => view! { <p class="muted">"Loading…"</p> }.into_any(),
                Some(p) if p.jobs.is_empty() && p.offset == 0 && (!app_filter.get().is_empty() || !state_filter.get().is_empty()) => view! {
                    <div class="empty">
                        <p>"No jobs match these filters. " <a href="/jobs">"Show all jobs."</a></p>
                    </div>
                }.into_any(),
                Some(p) if p.jobs.is_empty() && p.offset == 0 => view! {
                    <div class="empty">
                        <p>"No jobs yet."</p>
                        <p>"Upload a program on the " <a href="/apps">"Apps"</a> " page, then start one from " <a href="/new">"New job"</a> "."</p>
                    </div>
                }.into_any(),
                Some(p) => {
                    let total = p.total;
                    let off = p.offset;
                    let sqa = sq3.clone();
                    let sqb = sq4.clone();
                    view! {
                        <div class="table-wrap">
                        <table class="jobs" data-testid="jobs-table">
                            <thead><tr><th>"#"</th><th>"Status"</th><th>"App"</th><th>"Peers"</th><th>"Submitted"</th><th>"Duration"</th><th>"Tag"</th></tr></thead>
                            <tbody>
                                {p.jobs.into_iter().map(|j| view! { <JobRow job=j now=now/> }).collect_view()}
                            </tbody>
                        </table>
                        </div>
                        <div class="pager">
                            <button disabled=move || off == 0 on:click=move |_| sqa(app_filter.get_untracked(), state_filter.get_untracked(), off.saturating_sub(PAGE))>"← Newer"</button>
                            <span class="muted">{format!("{}–{} of {}", off + 1, (off + PAGE).min(total), total)}</span>
                            <button disabled=move || { off + PAGE >= total } on:click=move |_| sqb(app_filter.get_untracked(), state_filter.get_untracked(), off + PAGE)>"Older →"</button>
                        </div>
                    }.into_any()
                }
            }}
        </section>
    }
}

#[component]
fn JobRow(job: JobSummary, now: RwSignal<f64>) -> impl IntoView {
    let href = format!("/jobs/{}", job.id);
    let start = job.started.as_deref().and_then(parse_time_ms);
    let end = job.ended.as_deref().and_then(parse_time_ms);
    let duration = move || match (start, end) {
        (Some(s), Some(e)) => human_duration((e - s) / 1000.0),
        (Some(s), None) => human_duration(((now.get() - s) / 1000.0).max(0.0)),
        _ => "—".into(),
    };
    let submitted = job
        .submitted
        .get(..19)
        .unwrap_or(&job.submitted)
        .replace('T', " ");
    let state = job.state.as_str().to_string();
    let title = if job.reason.is_empty() {
        String::new()
    } else {
        job.reason.clone()
    };
    view! {
        <tr data-testid=format!("job-row-{}", job.id)>
            <td><a href=href.clone()>{job.id}</a></td>
            <td title=title><StateBadge state=state/></td>
            <td><a href=href>{job.app.clone()}</a>" "<span class="muted">{job.uid.clone()}</span></td>
            <td>{format!("{} / {}", job.peers_running, job.peers_total)}</td>
            <td>{submitted}</td>
            <td>{duration}</td>
            <td>{job.tag.clone()}</td>
        </tr>
    }
}
