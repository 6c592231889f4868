//! Usage charts: CPU (cores) and resident memory of every peer over time,
//! one line per peer, the role's request as a dashed reference line, a
//! tooltip (SVG `title`) on every point naming the peer and the value.
//! Drawn by hand as SVG: no chart library in the wasm. Colours come from
//! the theme's CSS variables, so both themes read; the SVG scales to the
//! page's width, so a phone shows it whole.

use std::collections::BTreeMap;

use leptos::prelude::*;

use crate::logic::{chart, human_bytes};

/// One sample: time (ms), cores, resident bytes.
pub type Point = (f64, f64, f64);

/// Samples by peer.
pub type Samples = BTreeMap<u32, Vec<Point>>;

/// Peers drawn at most; the rest are in the route and the archive.
pub const MAX_PEERS: usize = 32;

const W: f64 = 600.0;
const H: f64 = 160.0;

fn clock(t_ms: f64) -> String {
    let d = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(t_ms));
    format!(
        "{:02}:{:02}:{:02}",
        d.get_hours(),
        d.get_minutes(),
        d.get_seconds()
    )
}

/// One chart: `pick` takes a sample's value; `fmt` writes one.
fn usage_chart(
    title: &'static str,
    testid: &'static str,
    samples: &Samples,
    reference: Option<(f64, String)>,
    pick: fn(&Point) -> f64,
    fmt: fn(f64) -> String,
) -> impl IntoView {
    let peers: Vec<(u32, Vec<Point>)> = samples
        .iter()
        .take(MAX_PEERS)
        .map(|(p, s)| (*p, s.clone()))
        .collect();
    let series: Vec<Vec<(f64, f64)>> = peers
        .iter()
        .map(|(_, s)| s.iter().map(|x| (x.0, pick(x))).collect())
        .collect();
    let c = chart(&series, reference.as_ref().map(|r| r.0), W, H);
    let lines = peers
        .iter()
        .zip(&c.lines)
        .enumerate()
        .map(|(i, ((peer, pts), line))| {
            let class = format!("series s{}", i % 8);
            // Points to hover, where there are not too many to draw.
            let dots = (pts.len() <= 240).then(|| {
                line.split(' ')
                    .zip(pts)
                    .filter_map(|(xy, s)| {
                        let (x, y) = xy.split_once(',')?;
                        let tip = format!("peer {peer} at {}: {}", clock(s.0), fmt(pick(s)));
                        Some(view! { <circle cx=x.to_string() cy=y.to_string() r="2.5"><title>{tip}</title></circle> })
                    })
                    .collect_view()
            });
            view! {
                <g class=class data-testid="usage-line">
                    <polyline points=line.clone() fill="none"><title>{format!("peer {peer}")}</title></polyline>
                    {dots}
                </g>
            }
        })
        .collect_view();
    let reference = reference.map(|(v, label)| {
        let y = H - (v / c.top).clamp(0.0, 1.0) * H;
        view! {
            <line class="ref" x1="0" x2=W.to_string() y1=format!("{y:.1}") y2=format!("{y:.1}")><title>{label.clone()}</title></line>
            <text class="ref-label" x=(W - 4.0).to_string() y=format!("{:.1}", (y - 4.0).max(10.0)) text-anchor="end">{label}</text>
        }
    });
    let span = if c.t1 > c.t0 {
        format!("{} – {}", clock(c.t0), clock(c.t1))
    } else {
        String::new()
    };
    view! {
        <figure class="usage-chart" data-testid=testid>
            <figcaption>{title}<span class="muted">{format!(" (top {})", fmt(c.top))}</span></figcaption>
            <svg viewBox=format!("0 0 {W} {H}") role="img" aria-label=title>
                <line class="axis" x1="0" x2=W.to_string() y1=H.to_string() y2=H.to_string()/>
                {reference}
                {lines}
            </svg>
            <div class="muted chart-span">{span}</div>
        </figure>
    }
}

/// Both charts, with a legend; an empty state until the first samples.
#[component]
pub fn UsageCharts(
    samples: RwSignal<Samples>,
    asked_cpu: Signal<Option<f64>>,
    asked_mem: Signal<Option<f64>>,
) -> impl IntoView {
    move || {
        let s = samples.get();
        if s.values().all(|v| v.is_empty()) {
            return view! { <h2>"Resource usage"</h2><p class="muted" data-testid="usage-empty">"No samples yet: peers are sampled every few seconds while they run."</p> }.into_any();
        }
        let legend = s
            .keys()
            .take(MAX_PEERS)
            .enumerate()
            .map(|(i, p)| view! { <span class=format!("legend s{}", i % 8)>{format!("peer {p}")}</span> })
            .collect_view();
        let more =
            (s.len() > MAX_PEERS).then(|| format!(" (first {MAX_PEERS} of {} peers)", s.len()));
        let cpu_ref = asked_cpu.get().map(|c| (c, format!("asked: {c} cores")));
        let mem_ref = asked_mem
            .get()
            .map(|m| (m, format!("given: {}", human_bytes(m))));
        view! {
            <h2>"Resource usage"{more}</h2>
            <div class="legend-row">{legend}</div>
            <div class="charts">
                {usage_chart("CPU (cores)", "cpu-chart", &s, cpu_ref, |x| x.1, |v| format!("{v:.2} cores"))}
                {usage_chart("Memory (resident)", "mem-chart", &s, mem_ref, |x| x.2, human_bytes)}
            </div>
        }
        .into_any()
    }
}

/// An app's past jobs: duration against submission time, one dot per job
/// coloured by outcome, so that a regression shows at a glance.
#[component]
pub fn AppHistory(app: String) -> impl IntoView {
    let jobs = RwSignal::new(None::<Vec<app::model::JobSummary>>);
    let url = format!(
        "/api/jobs?app={}&limit=200",
        js_sys::encode_uri_component(&app)
    );
    leptos::task::spawn_local(async move {
        if let Ok(p) = crate::api::get::<app::model::JobPage>(&url).await {
            jobs.try_set(Some(p.jobs));
        }
    });
    move || {
        let list = jobs.get()?;
        let done: Vec<(f64, f64, &app::model::JobSummary)> = list
            .iter()
            .filter_map(|j| {
                let t = crate::logic::parse_time_ms(&j.submitted)?;
                let s = crate::logic::parse_time_ms(j.started.as_deref()?)?;
                let e = crate::logic::parse_time_ms(j.ended.as_deref()?)?;
                Some((t, (e - s).max(0.0) / 1000.0, j))
            })
            .collect();
        if done.is_empty() {
            return Some(view! { <p class="muted" data-testid="history-empty">"No finished runs of this app yet."</p> }.into_any());
        }
        let series = vec![done.iter().map(|(t, d, _)| (*t, *d)).collect::<Vec<_>>()];
        let c = chart(&series, None, W, H);
        let dots = c.lines[0]
            .split(' ')
            .zip(&done)
            .filter_map(|(xy, (_, d, j))| {
                let (x, y) = xy.split_once(',')?;
                let class = format!("run state-{}", j.state.as_str().to_lowercase());
                let tip = format!("job {} ({}): {}", j.id, j.state.as_str(), crate::logic::human_duration(*d));
                Some(view! { <circle class=class cx=x.to_string() cy=y.to_string() r="4"><title>{tip}</title></circle> })
            })
            .collect_view();
        Some(view! {
            <figure class="usage-chart history-chart" data-testid="history-chart">
                <figcaption>"Duration of past runs"<span class="muted">{format!(" (top {}, {} runs)", crate::logic::human_duration(c.top), done.len())}</span></figcaption>
                <svg viewBox=format!("0 0 {W} {H}") role="img" aria-label="duration of past runs">
                    <line class="axis" x1="0" x2=W.to_string() y1=H.to_string() y2=H.to_string()/>
                    {dots}
                </svg>
                <div class="muted chart-span">{format!("{} – {}", clock(c.t0), clock(c.t1))}</div>
            </figure>
        }.into_any())
    }
}
