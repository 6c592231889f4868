//! Schedules: the list with each one's next run and last outcome (pause,
//! resume, delete), and one schedule's next runs and history. Both read
//! again every two seconds: runs start on the server's clock, not on an
//! event a page could subscribe to before it happens.

use app::model::{ScheduleRun, ScheduleView};
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::use_params_map;

use super::ErrorLine;
use crate::api;
use crate::logic::{human_duration, parse_time_ms};

fn when_text(s: &ScheduleView) -> String {
    match (&s.schedule, &s.cron) {
        (Some(i), _) => i.clone(),
        (None, Some(c)) => format!("{c} ({})", s.tz.clone().unwrap_or_else(|| "UTC".into())),
        _ => "—".into(),
    }
}

/// "in 3 s", "in 2 h" for a time still to come.
fn from_now(t: &str, now: f64) -> String {
    match parse_time_ms(t) {
        Some(ms) if ms >= now => format!("in {}", human_duration((ms - now) / 1000.0)),
        Some(_) => "now".into(),
        None => t.to_string(),
    }
}

fn outcome(r: &ScheduleRun) -> impl IntoView {
    let state = r.state.map(|s| s.as_str().to_string());
    view! {
        {state.map(|s| view! { <span class=format!("badge state-{}", s.to_lowercase())>{s.clone()}</span>" " })}
        {r.job.map(|j| view! { <a href=format!("/jobs/{j}")>{format!("job {j}")}</a>" " })}
        <span class="muted">{r.outcome.clone()}</span>
    }
}

fn every_2s(f: impl Fn() + 'static) {
    let clock = StoredValue::new_local(Some(gloo_timers::callback::Interval::new(2000, f)));
    on_cleanup(move || clock.update_value(|c| drop(c.take())));
}

#[component]
pub fn SchedulesPage() -> impl IntoView {
    let list = RwSignal::new(None::<Vec<ScheduleView>>);
    let error = RwSignal::new(None::<String>);
    let now = RwSignal::new(js_sys::Date::now());
    let load = move || {
        spawn_local(async move {
            match api::get::<serde_json::Value>("/api/schedules").await {
                Ok(v) => {
                    list.try_set(serde_json::from_value(v["schedules"].clone()).ok());
                    now.try_set(js_sys::Date::now());
                }
                Err(e) => {
                    error.try_set(Some(e.message));
                }
            }
        })
    };
    load();
    every_2s(load);
    let act = move |url: String, delete: bool| {
        spawn_local(async move {
            let r = if delete {
                api::delete(&url).await
            } else {
                api::post_empty::<serde_json::Value>(&url).await.map(|_| ())
            };
            match r {
                Ok(()) => load(),
                Err(e) => error.set(Some(e.message)),
            }
        })
    };
    view! {
        <section class="schedules">
            <div class="title-row"><h1>"Schedules"</h1></div>
            <ErrorLine error=error/>
            {move || match list.get() {
                None => view! { <p class="muted">"Loading…"</p> }.into_any(),
                Some(l) if l.is_empty() => view! {
                    <div class="empty" data-testid="schedules-empty">
                        <p>"No schedule yet. "<a href="/new">"Write a job"</a>" and tick \u{201c}Run on a schedule\u{201d}, or:"</p>
                        <pre>{"curl -H 'Content-Type: application/json' http://127.0.0.1:5000/api/schedules \\\n  -d '{\"app\": \"prog\", \"role_file\": \"name: w\\npeers: 4\\n\", \"cron\": \"0 2 * * *\", \"tz\": \"Europe/Berlin\"}'"}</pre>
                    </div>
                }.into_any(),
                Some(l) => view! {
                    <div class="table-wrap">
                    <table data-testid="schedules-table">
                        <thead><tr><th>"#"</th><th>"Name"</th><th>"App"</th><th>"When"</th><th>"Next run"</th><th>"Last run"</th><th>"Runs"</th><th></th></tr></thead>
                        <tbody>
                            {l.into_iter().map(|s| {
                                let id = s.id;
                                let next = if s.paused { "paused".to_string() } else { s.next_runs.first().map(|t| from_now(t, now.get_untracked())).unwrap_or_else(|| "none left".into()) };
                                let last = s.last.as_ref().map(|r| outcome(r).into_any()).unwrap_or_else(|| view! { <span class="muted">"not yet"</span> }.into_any());
                                let toggle = if s.paused { ("Resume", "resume") } else { ("Pause", "pause") };
                                view! {
                                    <tr data-testid="schedule-row">
                                        <td><a href=format!("/schedules/{id}")>{id}</a></td>
                                        <td>{if s.name.is_empty() { "—".to_string() } else { s.name.clone() }}</td>
                                        <td>{s.app.clone()}" "<code>{s.uid.clone().unwrap_or_else(|| "latest".into())}</code></td>
                                        <td><code>{when_text(&s)}</code></td>
                                        <td data-testid="schedule-next">{next}</td>
                                        <td data-testid="schedule-last">{last}</td>
                                        <td>{s.runs}</td>
                                        <td class="row-actions">
                                            <button data-testid="schedule-toggle" on:click=move |_| act(format!("/api/schedules/{id}/{}", toggle.1), false)>{toggle.0}</button>
                                            " "
                                            <button class="danger" on:click=move |_| {
                                                let ok = web_sys::window().and_then(|w| w.confirm_with_message(&format!("Delete schedule {id}? Its jobs stay.")).ok()).unwrap_or(false);
                                                if ok { act(format!("/api/schedules/{id}"), true) }
                                            }>"Delete"</button>
                                        </td>
                                    </tr>
                                }
                            }).collect_view()}
                        </tbody>
                    </table>
                    </div>
                }.into_any(),
            }}
        </section>
    }
}

#[component]
pub fn SchedulePage() -> impl IntoView {
    let params = use_params_map();
    let id: u64 = params
        .with_untracked(|p| p.get("id").and_then(|s| s.parse().ok()))
        .unwrap_or(0);
    let s = RwSignal::new(None::<ScheduleView>);
    let error = RwSignal::new(None::<String>);
    let missing = RwSignal::new(false);
    let now = RwSignal::new(js_sys::Date::now());
    let load = move || {
        spawn_local(async move {
            match api::get::<ScheduleView>(&format!("/api/schedules/{id}")).await {
                Ok(v) => {
                    s.try_set(Some(v));
                    now.try_set(js_sys::Date::now());
                }
                Err(e) if e.message.starts_with("there is no schedule") => {
                    missing.try_set(true);
                }
                Err(e) => {
                    error.try_set(Some(e.message));
                }
            }
        })
    };
    load();
    every_2s(load);
    view! {
        <section class="schedule">
            <Show when=move || missing.get()>
                <div class="empty"><p>{format!("There is no schedule {id}. ")}<a href="/schedules">"See the schedules."</a></p></div>
            </Show>
            <div class="title-row"><h1>{move || s.with(|s| match s { Some(s) if !s.name.is_empty() => format!("Schedule {id}: {}", s.name), _ => format!("Schedule {id}") })}</h1></div>
            <ErrorLine error=error/>
            {move || s.get().map(|v| view! {
                <dl class="facts">
                    <dt>"App"</dt><dd>{v.app.clone()}" "<code>{v.uid.clone().unwrap_or_else(|| "latest".into())}</code></dd>
                    <dt>"When"</dt><dd><code>{when_text(&v)}</code></dd>
                    <dt>"If still running"</dt><dd>{format!("{:?}", v.concurrency).to_lowercase()}</dd>
                    <dt>"Missed runs"</dt><dd>{if v.missed == app::model::Missed::RunOnce { "run once" } else { "skipped" }}</dd>
                    <dt>"State"</dt><dd data-testid="schedule-state">{if v.paused { "paused" } else { "active" }}</dd>
                    {v.queued.clone().map(|q| view! { <dt>"Queued"</dt><dd>{format!("the run due {q} waits for the last to end")}</dd> })}
                </dl>
                <h2>"Next runs"</h2>
                {if v.next_runs.is_empty() {
                    view! { <p class="muted">{if v.paused { "Paused: nothing runs until it is resumed." } else { "None left: the interval has ended." }}</p> }.into_any()
                } else {
                    view! { <ol class="next-runs" data-testid="next-runs">{v.next_runs.iter().map(|t| view! { <li><code>{t.clone()}</code>" "<span class="muted">{from_now(t, now.get_untracked())}</span></li> }).collect_view()}</ol> }.into_any()
                }}
                <h2>"History"</h2>
                {if v.jobs.is_empty() {
                    view! { <p class="muted">"No run yet."</p> }.into_any()
                } else {
                    view! {
                        <div class="table-wrap">
                        <table data-testid="schedule-history">
                            <thead><tr><th>"Due"</th><th>"Run"</th></tr></thead>
                            <tbody>{v.jobs.iter().map(|r| view! { <tr data-testid="history-row"><td><code>{r.due.clone()}</code></td><td>{outcome(r)}</td></tr> }).collect_view()}</tbody>
                        </table>
                        </div>
                    }.into_any()
                }}
                <h2>"Role file"</h2>
                <pre class="rolefile">{v.role_file.clone()}</pre>
            })}
        </section>
    }
}
