//! Sweeps: the list, and one sweep's combinations with each run's outcome
//! and duration, a chart of duration against one parameter (a line per
//! value of another: median with a min–max band over the repeats; linear
//! or log axes), and the CSV. Live: a job of the sweep that changes state
//! refetches it.

use app::model::{Event, EventKind, JobState};
use app::sweep::{series, SweepDetail, SweepSummary};
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::use_params_map;

use super::{ConnBadge, ErrorLine};
use crate::api;
use crate::sse::{self, Conn};

#[component]
pub fn SweepsPage() -> impl IntoView {
    let sweeps = RwSignal::new(None::<Vec<SweepSummary>>);
    let error = RwSignal::new(None::<String>);
    spawn_local(async move {
        match api::get::<serde_json::Value>("/api/sweeps").await {
            Ok(v) => {
                sweeps.try_set(serde_json::from_value(v["sweeps"].clone()).ok());
            }
            Err(e) => {
                error.try_set(Some(e.message));
            }
        }
    });
    view! {
        <section class="sweeps">
            <h1>"Sweeps"</h1>
            <ErrorLine error=error/>
            {move || match sweeps.get() {
                None => view! { <p class="muted">"Loading…"</p> }.into_any(),
                Some(list) if list.is_empty() => view! {
                    <div class="empty" data-testid="sweeps-empty">
                        <p>"No sweep yet. A sweep runs one role file over lists of values, one job per combination:"</p>
                        <pre>{"curl -H 'Content-Type: application/json' http://127.0.0.1:5000/api/sweeps \\\n  -d '{\"app\": \"prog\", \"role_file\": \"name: w\\npeers: 1\\n\",\n       \"parameters\": {\"w.peers\": [1, 2, 4]}, \"repeat\": 3}'"}</pre>
                    </div>
                }.into_any(),
                Some(list) => view! {
                    <div class="table-wrap">
                    <table data-testid="sweeps-table">
                        <thead><tr><th>"#"</th><th>"App"</th><th>"Parameters"</th><th>"Combinations"</th><th>"Repeat"</th><th>"Jobs ended"</th><th>"Failed"</th><th>"Created"</th></tr></thead>
                        <tbody>
                            {list.into_iter().map(|s| view! {
                                <tr>
                                    <td><a href=format!("/sweeps/{}", s.id)>{s.id}</a></td>
                                    <td>{s.app}" "<code>{s.uid}</code></td>
                                    <td>{s.parameters.join(", ")}</td>
                                    <td>{s.combinations}</td>
                                    <td>{s.repeat}</td>
                                    <td>{format!("{} / {}", s.jobs_ended, s.jobs_total)}</td>
                                    <td>{s.jobs_failed}</td>
                                    <td>{s.created.get(..19).unwrap_or_default().replace('T', " ")}</td>
                                </tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                    </div>
                }.into_any(),
            }}
        </section>
    }
}

const W: f64 = 600.0;
const H: f64 = 260.0;
const PAD: f64 = 40.0;

/// A value's place on an axis from `lo` to `hi`, as a fraction.
fn frac(v: f64, lo: f64, hi: f64, log: bool) -> f64 {
    let f = |x: f64| if log { x.max(1e-9).ln() } else { x };
    if hi > lo {
        (f(v) - f(lo)) / (f(hi) - f(lo))
    } else {
        0.5
    }
}

#[component]
pub fn SweepPage() -> impl IntoView {
    let params = use_params_map();
    let id: u64 = params
        .with_untracked(|p| p.get("id").and_then(|s| s.parse().ok()))
        .unwrap_or(0);
    let detail = RwSignal::new(None::<SweepDetail>);
    let error = RwSignal::new(None::<String>);
    let missing = RwSignal::new(false);
    let x_param = RwSignal::new(String::new());
    let by_param = RwSignal::new(String::new());
    let log_x = RwSignal::new(false);
    let log_y = RwSignal::new(false);
    let (conn, set_conn) = signal(Conn::Connecting);

    let load = move || {
        spawn_local(async move {
            match api::get::<SweepDetail>(&format!("/api/sweeps/{id}")).await {
                Ok(d) => {
                    if x_param.get_untracked().is_empty() {
                        let keys: Vec<String> = d.parameters.keys().cloned().collect();
                        x_param.set(keys.first().cloned().unwrap_or_default());
                        by_param.set(keys.get(1).cloned().unwrap_or_default());
                    }
                    detail.try_set(Some(d));
                }
                Err(e) if e.message.starts_with("there is no sweep") => {
                    missing.try_set(true);
                }
                Err(e) => {
                    error.try_set(Some(e.message));
                }
            }
        })
    };
    load();
    // A job of this sweep changed state: the sweep is read again.
    sse::subscribe(
        "/api/events",
        &["job"],
        move |_, data| {
            let Ok(ev) = serde_json::from_str::<Event>(&data) else {
                return;
            };
            let ours = detail.with_untracked(|d| {
                d.as_ref().is_some_and(|d| {
                    d.points
                        .iter()
                        .any(|p| p.jobs.iter().any(|j| j.id == ev.job))
                })
            });
            if ours && matches!(ev.kind, EventKind::Job { .. }) {
                load();
            }
        },
        set_conn,
    );

    let kill = move |_| {
        spawn_local(async move {
            match api::post_empty::<serde_json::Value>(&format!("/api/sweeps/{id}/kill")).await {
                Ok(_) => load(),
                Err(e) => error.set(Some(e.message)),
            }
        })
    };

    let chart = move || {
        let d = detail.get()?;
        let x = x_param.get();
        let by = by_param.get();
        let lines = series(&d, &x, (!by.is_empty() && by != x).then_some(by.as_str()));
        let pts: Vec<_> = lines.iter().flat_map(|l| l.points.iter()).collect();
        if pts.is_empty() {
            return Some(view! { <p class="muted" data-testid="sweep-chart-empty">"The chart draws once a combination has a finished run."</p> }.into_any());
        }
        let (lx, ly) = (log_x.get(), log_y.get());
        let x0 = pts.iter().map(|p| p.x).fold(f64::INFINITY, f64::min);
        let x1 = pts.iter().map(|p| p.x).fold(f64::NEG_INFINITY, f64::max);
        let y1 = pts.iter().map(|p| p.max).fold(0.0, f64::max) * 1.05;
        let y0 = if ly {
            pts.iter()
                .map(|p| p.min)
                .fold(f64::INFINITY, f64::min)
                .max(1e-3)
        } else {
            0.0
        };
        let px = move |x: f64| PAD + frac(x, x0, x1, lx) * (W - 2.0 * PAD);
        let py = move |y: f64| H - PAD - frac(y.max(y0), y0, y1, ly) * (H - 2.0 * PAD);
        let drawn = lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let class = format!("series s{}", i % 8);
                let median: Vec<String> = l.points.iter().map(|p| format!("{:.1},{:.1}", px(p.x), py(p.median))).collect();
                // The band: up along the maxima, back along the minima.
                let mut band: Vec<String> = l.points.iter().map(|p| format!("{:.1},{:.1}", px(p.x), py(p.max))).collect();
                band.extend(l.points.iter().rev().map(|p| format!("{:.1},{:.1}", px(p.x), py(p.min))));
                let dots = l
                    .points
                    .iter()
                    .map(|p| {
                        let tip = format!(
                            "{}{}{}: median {:.2} s (min {:.2}, max {:.2})",
                            l.label,
                            if l.label.is_empty() { "" } else { ", " },
                            p.x_label,
                            p.median,
                            p.min,
                            p.max
                        );
                        view! { <circle cx=format!("{:.1}", px(p.x)) cy=format!("{:.1}", py(p.median)) r="3.5" data-testid="sweep-dot"><title>{tip}</title></circle> }
                    })
                    .collect_view();
                view! {
                    <g class=class data-testid="sweep-line">
                        <polygon class="band" points=band.join(" ")/>
                        <polyline points=median.join(" ") fill="none"><title>{l.label.clone()}</title></polyline>
                        {dots}
                    </g>
                }
            })
            .collect_view();
        let mut ticks: Vec<(f64, String)> = Vec::new();
        for p in &pts {
            if !ticks.iter().any(|t| t.0 == p.x) {
                ticks.push((p.x, p.x_label.clone()));
            }
        }
        let xticks = ticks
            .into_iter()
            .map(|(x, label)| view! { <text class="tick" x=format!("{:.1}", px(x)) y=(H - PAD + 16.0).to_string() text-anchor="middle">{label}</text> })
            .collect_view();
        let legend = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.label.is_empty())
            .map(|(i, l)| view! { <li class=format!("series s{}", i % 8)><span class="swatch"></span>{l.label.clone()}</li> })
            .collect_view();
        Some(view! {
            <figure class="sweep-chart" data-testid="sweep-chart">
                <figcaption>{format!("Duration (s) by {x}")}<span class="muted">{format!(" (top {y1:.2} s; median, band from min to max)")}</span></figcaption>
                <svg viewBox=format!("0 0 {W} {H}") role="img" aria-label="duration by parameter">
                    <line class="axis" x1=PAD.to_string() x2=(W - PAD).to_string() y1=(H - PAD).to_string() y2=(H - PAD).to_string()/>
                    <line class="axis" x1=PAD.to_string() x2=PAD.to_string() y1=PAD.to_string() y2=(H - PAD).to_string()/>
                    <text class="tick" x=(PAD - 4.0).to_string() y=(PAD + 4.0).to_string() text-anchor="end">{format!("{y1:.1}")}</text>
                    <text class="tick" x=(PAD - 4.0).to_string() y=(H - PAD).to_string() text-anchor="end">{format!("{y0:.1}")}</text>
                    {xticks}
                    {drawn}
                </svg>
                <ul class="sweep-legend">{legend}</ul>
            </figure>
        }.into_any())
    };

    view! {
        <section class="sweep">
            <Show when=move || missing.get()>
                <div class="empty"><p>{format!("There is no sweep {id}. ")}<a href="/sweeps">"See the sweeps."</a></p></div>
            </Show>
            <div class="title-row">
                <h1>{format!("Sweep {id}")}</h1>
                <ConnBadge conn=conn/>
            </div>
            <ErrorLine error=error/>
            {move || detail.get().map(|d| {
                let keys: Vec<String> = d.parameters.keys().cloned().collect();
                let keys2 = keys.clone();
                let live = d.jobs_ended < d.jobs_total;
                view! {
                    <dl class="facts">
                        <dt>"App"</dt><dd>{d.app.clone()}" "<code>{d.uid.clone()}</code></dd>
                        <dt>"Jobs"</dt><dd data-testid="sweep-progress">{format!("{} of {} ended", d.jobs_ended, d.jobs_total)}</dd>
                        <dt>"Repeat"</dt><dd>{d.repeat}</dd>
                        <dt>"Created"</dt><dd>{d.created.get(..19).unwrap_or_default().replace('T', " ")}</dd>
                    </dl>
                    <div class="actions">
                        <a class="button" data-testid="sweep-csv" href=format!("/api/sweeps/{id}/csv") download=format!("sweep-{id}.csv")>"Download CSV"</a>
                        <button class="danger" disabled=!live on:click=kill>"Kill its jobs"</button>
                    </div>
                    <div class="chart-controls">
                        <label>"x: " <select data-testid="sweep-x" on:change=move |ev| x_param.set(event_target_value(&ev))>
                            {keys.iter().map(|k| { let k2 = k.clone(); view! { <option value=k.clone() selected=move || x_param.get() == k2>{k.clone()}</option> } }).collect_view()}
                        </select></label>
                        <label>"a line per: " <select data-testid="sweep-by" on:change=move |ev| by_param.set(event_target_value(&ev))>
                            <option value="" selected=move || by_param.get().is_empty()>"(one line)"</option>
                            {keys2.iter().map(|k| { let k2 = k.clone(); view! { <option value=k.clone() selected=move || by_param.get() == k2>{k.clone()}</option> } }).collect_view()}
                        </select></label>
                        <label><input type="checkbox" data-testid="sweep-logx" prop:checked=move || log_x.get() on:change=move |ev| log_x.set(event_target_checked(&ev))/>" log x"</label>
                        <label><input type="checkbox" prop:checked=move || log_y.get() on:change=move |ev| log_y.set(event_target_checked(&ev))/>" log y"</label>
                    </div>
                }
            })}
            {chart}
            <h2>"Combinations"</h2>
            {move || detail.get().map(|d| {
                let keys: Vec<String> = d.parameters.keys().cloned().collect();
                view! {
                    <div class="table-wrap">
                    <table data-testid="sweep-table">
                        <thead><tr>
                            {keys.iter().map(|k| view! { <th>{k.clone()}</th> }).collect_view()}
                            <th>"Runs"</th><th>"Median"</th><th>"Min – max"</th>
                        </tr></thead>
                        <tbody>
                            {d.points.into_iter().map(|p| {
                                let cells = keys.iter().map(|k| {
                                    let v = match p.values.get(k) { Some(serde_json::Value::String(s)) => s.clone(), Some(v) => v.to_string(), None => String::new() };
                                    view! { <td>{v}</td> }
                                }).collect_view();
                                let runs = p.jobs.iter().map(|j| {
                                    let took = j.duration_s.map(|d| format!(" {d:.2} s")).unwrap_or_default();
                                    let class = format!("badge state-{}", j.state.as_str().to_lowercase());
                                    let title = format!("job {} (repeat {}): {}{}", j.id, j.repeat, j.state, took);
                                    view! { <a href=format!("/jobs/{}", j.id) class=class title=title>{format!("{}{}", j.id, if j.state == JobState::Finished { took } else { format!(" {}", j.state) })}</a>" " }
                                }).collect_view();
                                let f = |v: Option<f64>| v.map(|v| format!("{v:.2} s")).unwrap_or_else(|| "—".into());
                                let range = match (p.min_s, p.max_s) { (Some(a), Some(b)) => format!("{a:.2} – {b:.2} s"), _ => "—".into() };
                                view! { <tr data-testid="sweep-row">{cells}<td>{runs}</td><td>{f(p.median_s)}</td><td>{range}</td></tr> }
                            }).collect_view()}
                        </tbody>
                    </table>
                    </div>
                }
            })}
        </section>
    }
}
