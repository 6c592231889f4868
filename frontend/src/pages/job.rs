//! One job: status and times, the role file, live peers, a timeline of peer
//! states, live peer logs, and kill / replay / archive / copy-as-curl.

use app::model::{AttemptInfo, Event, EventKind, JobDetail, JobState, PeerInfo, PeerState};
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::{use_navigate, use_params_map};
use wasm_bindgen::JsCast;

use super::{ConnBadge, ErrorLine, StateBadge};
use crate::api;
use crate::logic::{curl_for, human_bytes, human_duration, parse_time_ms};
use crate::sse::{self, Conn};

/// Starts reading the job's detail (the biggest read of a big job's page)
/// as soon as the page is navigated to, while its code is still arriving.
pub fn prefetch() {
    let id = use_params_map().with_untracked(|p| p.get("id").and_then(|s| s.parse::<u64>().ok()));
    if let Some(id) = id {
        api::prefetch(&format!("/api/jobs/{id}"));
    }
}

#[component]
pub fn JobPage() -> impl IntoView {
    let params = use_params_map();
    let id = Memo::new(move |_| params.read().get("id").and_then(|s| s.parse::<u64>().ok()));
    view! {
        {move || match id.get() {
            Some(id) => view! { <JobView id=id/> }.into_any(),
            // K3's `/jobs/<app>` lands here in a browser: show that app's jobs.
            None => {
                let app = params.read().get("id").unwrap_or_default();
                view! { <leptos_router::components::Redirect path=format!("/jobs?app={}", js_sys::encode_uri_component(&app))/> }.into_any()
            }
        }}
    }
}

#[component]
fn JobView(id: u64) -> impl IntoView {
    let navigate = use_navigate();
    let job = RwSignal::new(None::<JobDetail>);
    let samples = RwSignal::new(super::charts::Samples::new());
    let peers = RwSignal::new(Vec::<PeerInfo>::new());
    let history = RwSignal::new(History::default());
    // The most any peer was given (cores, bytes): the charts' reference
    // lines. Known from the detail only, so kept apart from the rows that
    // every event touches.
    let given = RwSignal::new((None::<f64>, None::<u64>));
    let note_given = move |d: &[PeerInfo]| {
        let cpu = d.iter().filter_map(|p| p.asked_cpu).reduce(f64::max);
        let mem = d.iter().filter_map(|p| p.asked_mem_bytes).max();
        given.update(|g| *g = (g.0.or(cpu), g.1.or(mem)));
    };
    let error = RwSignal::new(None::<String>);
    let missing = RwSignal::new(false);
    let (conn, set_conn) = signal(Conn::Connecting);
    let now = RwSignal::new(js_sys::Date::now());
    let copied = RwSignal::new(false);

    spawn_local(async move {
        match api::get::<JobDetail>(&format!("/api/jobs/{id}")).await {
            Ok(d) => {
                // Events may have come first: fold the detail into them.
                peers.update(|p| PeerInfo::merge_detail(p, &d.peers));
                note_given(&d.peers);
                // The usage so far; live samples arrive as `usage` events.
                let sampled: Vec<u32> = d
                    .peers
                    .iter()
                    .filter(|p| p.usage_samples > 0)
                    .map(|p| p.index)
                    .take(super::charts::MAX_PEERS)
                    .collect();
                job.set(Some(d));
                for n in sampled {
                    if let Ok(v) =
                        api::get::<serde_json::Value>(&format!("/api/jobs/{id}/peers/{n}/usage"))
                            .await
                    {
                        let pts: Vec<(f64, f64, f64)> = v
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|s| {
                                Some((
                                    parse_time_ms(s["time"].as_str()?)?,
                                    s["cpu"].as_f64()?,
                                    s["rss_bytes"].as_f64()?,
                                ))
                            })
                            .collect();
                        samples.update(|m| {
                            let e = m.entry(n).or_default();
                            // Live samples may have come first: merge by time.
                            e.extend(pts);
                            e.sort_by(|a, b| a.0.total_cmp(&b.0));
                            e.dedup_by(|a, b| a.0 == b.0);
                        });
                    }
                }
            }
            Err(e) if e.message.starts_with("there is no job") => missing.set(true),
            Err(e) => error.set(Some(e.message)),
        }
    });

    // Every event of this job, from the first: the page rebuilds itself from
    // them, so a reload mid-run catches up.
    sse::subscribe(
        &format!("/api/jobs/{id}/events"),
        &["job", "peer", "archive", "attempt", "usage"],
        move |name, data| {
            if name == "usage" {
                // A live sample: fold it into the peer's peak and mean.
                let v: serde_json::Value = serde_json::from_str(&data).unwrap_or_default();
                let (Some(index), Some(cpu), Some(rss)) = (
                    v["peer"].as_u64(),
                    v["cpu"].as_f64(),
                    v["rss_bytes"].as_u64(),
                ) else {
                    return;
                };
                if let Some(t) = v["time"].as_str().and_then(parse_time_ms) {
                    samples.update(|m| {
                        m.entry(index as u32)
                            .or_default()
                            .push((t, cpu, rss as f64))
                    });
                }
                peers.update(|ps| {
                    let at = ps.binary_search_by_key(&(index as u32), |p| p.index);
                    if let Some(p) = at.ok().map(|i| &mut ps[i]) {
                        let n = p.usage_samples as f64;
                        p.mean_cpu = Some((p.mean_cpu.unwrap_or(0.0) * n + cpu) / (n + 1.0));
                        p.peak_rss_bytes = Some(p.peak_rss_bytes.unwrap_or(0).max(rss));
                        p.usage_samples += 1;
                    }
                });
                return;
            }
            let Ok(ev) = serde_json::from_str::<Event>(&data) else {
                return;
            };
            let t = parse_time_ms(&ev.time).unwrap_or_else(js_sys::Date::now);
            match ev.kind {
                EventKind::Job { state, reason } => job.update(|j| {
                    // What each peer was given is recorded at launch; a page
                    // opened before then reads it once the job runs.
                    let given = peers.with_untracked(|ps| {
                        ps.iter().all(|p| p.asked_mem_bytes.is_some()) && !ps.is_empty()
                    });
                    if state == JobState::Running && !given {
                        spawn_local(async move {
                            if let Ok(d) = api::get::<JobDetail>(&format!("/api/jobs/{id}")).await {
                                peers.update(|p| PeerInfo::merge_detail(p, &d.peers));
                                note_given(&d.peers);
                            }
                        });
                    }
                    if let Some(j) = j {
                        j.job.state = state;
                        j.job.reason = reason.clone();
                        if state == JobState::Running && j.job.started.is_none() {
                            j.job.started = Some(ev.time.clone());
                        }
                        let n = j.job.attempt;
                        if state == JobState::Running && !j.attempts.iter().any(|a| a.attempt == n)
                        {
                            j.attempts.push(AttemptInfo {
                                attempt: n,
                                state,
                                reason: String::new(),
                                started: Some(ev.time.clone()),
                                ended: None,
                            });
                        }
                        if state.is_terminal() {
                            if let Some(a) = j
                                .attempts
                                .iter_mut()
                                .find(|a| a.attempt == n && a.ended.is_none())
                            {
                                a.state = state;
                                a.reason = reason;
                                a.ended = Some(ev.time.clone());
                            }
                        }
                        if state.is_terminal() {
                            j.job.ended = Some(ev.time.clone());
                        }
                    }
                }),
                kind @ EventKind::Peer { .. } => {
                    let Some(info) = PeerInfo::from_event(&kind) else {
                        return;
                    };
                    let (index, state) = (info.index, info.state);
                    peers.update(|ps| {
                        PeerInfo::apply_event(ps, info);
                    });
                    history.update(|h| h.push(index, t, state));
                }
                EventKind::Archive { size } => job.update(|j| {
                    if let Some(j) = j {
                        j.job.archive_size = Some(size);
                    }
                }),
                EventKind::Attempt {
                    attempt,
                    state,
                    reason,
                    ..
                } => job.update(|j| {
                    if let Some(j) = j {
                        if let Some(a) = j.attempts.iter_mut().find(|a| a.attempt == attempt) {
                            a.state = state;
                            a.reason = reason;
                            a.ended = Some(ev.time.clone());
                        }
                        j.job.attempt = attempt + 1;
                    }
                }),
            }
        },
        set_conn,
    );
    let clock = StoredValue::new_local(Some(gloo_timers::callback::Interval::new(
        1000,
        move || now.set(js_sys::Date::now()),
    )));
    on_cleanup(move || clock.update_value(|c| drop(c.take())));

    let kill = move |_| {
        let ok = web_sys::window()
            .and_then(|w| {
                w.confirm_with_message(&format!("Kill job {id}? Every running peer is stopped."))
                    .ok()
            })
            .unwrap_or(false);
        if !ok {
            return;
        }
        spawn_local(async move {
            if let Err(e) =
                api::post_empty::<serde_json::Value>(&format!("/api/jobs/{id}/kill")).await
            {
                error.set(Some(e.message));
            }
        });
    };
    let replay = move |_| {
        let nav = navigate.clone();
        spawn_local(async move {
            match api::post_empty::<serde_json::Value>(&format!("/api/jobs/{id}/replay")).await {
                Ok(v) => nav(&format!("/jobs/{}", v["id"]), Default::default()),
                Err(e) => error.set(Some(e.message)),
            }
        });
    };
    let copy_curl = move |_| {
        let Some(j) = job.get_untracked() else { return };
        let cmd = curl_for(
            &api::origin(),
            &j.job.app,
            &j.job.uid,
            &j.role_file,
            &j.options,
        );
        if let Some(w) = web_sys::window() {
            let _ = w.navigator().clipboard().write_text(&cmd);
            copied.set(true);
            spawn_local(async move {
                gloo_timers::future::TimeoutFuture::new(2000).await;
                copied.try_set(false);
            });
        }
    };

    let state = Signal::derive(move || {
        job.with(|j| {
            j.as_ref()
                .map(|j| j.job.state.as_str().to_string())
                .unwrap_or_default()
        })
    });
    let ended = move || job.with(|j| j.as_ref().is_some_and(|j| j.job.state.is_terminal()));
    // Cores each role asked for per peer, from the job's role file (parsed
    // once, not per row).
    let role_cpu = Memo::new(move |_| {
        job.with(|j| {
            let Some(rf) = j
                .as_ref()
                .and_then(|j| app::RoleFile::parse(&j.role_file).ok())
            else {
                return Vec::new();
            };
            rf.0.roles()
                .iter()
                .map(|r| (r.name.clone(), r.cpu.cores()))
                .collect::<Vec<_>>()
        })
    });
    let duration = move || {
        job.with(|j| {
            let j = j.as_ref()?;
            let s = parse_time_ms(j.job.started.as_deref()?)?;
            let e = j
                .job
                .ended
                .as_deref()
                .and_then(parse_time_ms)
                .unwrap_or(now.get());
            // The clock ticks once a second, so it can lag the start a little.
            Some(human_duration(((e - s) / 1000.0).max(0.0)))
        })
        .unwrap_or_else(|| "—".into())
    };

    view! {
        <section class="job">
            <Show when=move || missing.get()>
                <div class="empty"><p>{format!("There is no job {id}. ")}<a href="/jobs">"See the jobs."</a></p></div>
            </Show>
            <div class="title-row">
                <h1>{format!("Job {id}")}</h1>
                <StateBadge state=state/>
                <ConnBadge conn=conn/>
            </div>
            {move || job.get().map(|j| view! {
                <dl class="facts">
                    <dt>"App"</dt><dd><a href=format!("/jobs?app={}", j.job.app)>{j.job.app.clone()}</a>" "<code>{j.job.uid.clone()}</code></dd>
                    <dt>"Reason"</dt><dd data-testid="reason">{if j.job.reason.is_empty() { "—".to_string() } else { j.job.reason.clone() }}</dd>
                    <dt>"Submitted"</dt><dd>{j.job.submitted.get(..19).unwrap_or_default().replace('T', " ")}</dd>
                    <dt>"Duration"</dt><dd>{duration}</dd>
                    <dt>"Tag"</dt><dd>{if j.job.tag.is_empty() { "—".to_string() } else { j.job.tag.clone() }}</dd>
                    {j.job.replay_of.map(|r| view! { <dt>"Replay of"</dt><dd><a href=format!("/jobs/{r}")>{format!("job {r}")}</a></dd> })}
                </dl>
            })}
            <ErrorLine error=error/>
            <div class="actions">
                <button class="danger" data-testid="kill" disabled=ended on:click=kill>"Kill"</button>
                <button data-testid="replay" on:click=replay>"Replay"</button>
                {move || match job.with(|j| j.as_ref().and_then(|j| j.job.archive_size)) {
                    Some(size) => view! { <a class="button" data-testid="archive" href=format!("/api/jobs/{id}/archive") download=format!("job-{id}.tar.gz")>{format!("Download archive ({})", human_bytes(size as f64))}</a> }.into_any(),
                    None => view! { <span class="muted">{move || if ended() { "Archive being built…" } else { "Archive when the job ends" }}</span> }.into_any(),
                }}
                <button on:click=copy_curl>{move || if copied.get() { "Copied" } else { "Copy as curl" }}</button>
            </div>
            <Attempts job=job/>
            <h2>"Peers"</h2>
            <PeersTable peers=peers role_cpu=role_cpu/>
            <super::charts::UsageCharts samples=samples
                asked_cpu=Signal::derive(move || {
                    // The most any peer was given: the line a peer should stay under.
                    given.get().0.or_else(|| job.with(|j| {
                        let rf = app::RoleFile::parse(&j.as_ref()?.role_file).ok()?.0;
                        Some(rf.roles().first()?.cpu.cores())
                    }))
                })
                asked_mem=Signal::derive(move || given.get().1.map(|b| b as f64))/>
            <Timeline peers=peers history=history now=now ended=Signal::derive(ended)/>
            <LogPanel id=id peers=peers total=Signal::derive(move || job.with(|j| j.as_ref().map(|j| j.job.peers_total).unwrap_or(0)))/>
            <h2>"Role file"</h2>
            <pre class="rolefile" data-testid="role-file">{move || job.with(|j| j.as_ref().map(|j| j.role_file.clone()).unwrap_or_default())}</pre>
        </section>
    }
}

/// A retried job's attempts, one row each; nothing for a job run once.
#[component]
fn Attempts(job: RwSignal<Option<JobDetail>>) -> impl IntoView {
    let rows = move || {
        job.with(|j| {
            j.as_ref()
                .map(|j| (j.attempts.clone(), j.job.attempt, j.job.state))
                .unwrap_or((vec![], 1, JobState::Submitted))
        })
    };
    move || {
        let (attempts, current, state) = rows();
        // One attempt and no other coming: nothing to tell apart.
        if attempts.len() <= 1 && current <= 1 {
            return None;
        }
        let waiting = !state.is_terminal() && !attempts.iter().any(|a| a.attempt == current);
        Some(view! {
            <h2>"Attempts"</h2>
            <div class="table-wrap">
            <table data-testid="attempts-table">
                <thead><tr><th>"#"</th><th>"State"</th><th>"Started"</th><th>"Duration"</th><th>"Reason"</th></tr></thead>
                <tbody>
                    {attempts.into_iter().map(|a| {
                        let took = match (a.started.as_deref().and_then(parse_time_ms), a.ended.as_deref().and_then(parse_time_ms)) {
                            (Some(s), Some(e)) => human_duration(((e - s) / 1000.0).max(0.0)),
                            _ => "—".into(),
                        };
                        view! {
                            <tr data-testid="attempt-row">
                                <td>{a.attempt}</td>
                                <td><span class=format!("badge state-{}", a.state.as_str().to_lowercase())>{a.state.as_str()}</span></td>
                                <td>{a.started.as_deref().and_then(|s| s.get(..19)).unwrap_or("—").replace('T', " ")}</td>
                                <td>{took}</td>
                                <td>{if a.reason.is_empty() { "—".to_string() } else { a.reason }}</td>
                            </tr>
                        }
                    }).collect_view()}
                    {waiting.then(|| view! {
                        <tr data-testid="attempt-row" class="muted"><td>{current}</td><td>"next"</td><td colspan="3">"waits for its backoff, then for resources"</td></tr>
                    })}
                </tbody>
            </table>
            </div>
        })
    }
}

/// Each peer's state changes, by peer, with the first and last times:
/// what the timeline draws, kept so that an event costs one push (a
/// 10,000-peer job sends 40,000 of them).
#[derive(Clone, Default)]
struct History {
    by_peer: Vec<Vec<(f64, PeerState)>>,
    t0: f64,
    last: f64,
}

impl History {
    fn push(&mut self, peer: u32, t: f64, state: PeerState) {
        let i = peer as usize;
        if self.by_peer.len() <= i {
            self.by_peer.resize(i + 1, Vec::new());
        }
        if self.is_empty() || t < self.t0 {
            self.t0 = t;
        }
        self.last = self.last.max(t).max(f64::MIN_POSITIVE);
        self.by_peer[i].push((t, state));
    }

    fn is_empty(&self) -> bool {
        self.last == 0.0
    }
}

/// Rows drawn around the visible ones, so that a fast scroll shows no gap.
const OVERSCAN: usize = 20;

/// The rows of a scrolled list of `n` rows `row_h` high that are in view
/// (plus some either side), for a viewport `view_h` high.
fn window(scroll_top: f64, view_h: f64, row_h: f64, n: usize) -> (usize, usize) {
    let first = ((scroll_top / row_h) as usize)
        .saturating_sub(OVERSCAN)
        .min(n);
    let shown = (view_h / row_h).ceil() as usize + 2 * OVERSCAN;
    (first, (first + shown).min(n))
}

const ROW_H: f64 = 36.0;

/// The peers, one row each; only the rows in view are in the DOM, so a
/// 10,000-peer job's table scrolls as a 4-peer one does.
#[component]
fn PeersTable(peers: RwSignal<Vec<PeerInfo>>, role_cpu: Memo<Vec<(String, f64)>>) -> impl IntoView {
    let scroll = RwSignal::new((0.0f64, 600.0f64));
    let container = NodeRef::<leptos::html::Div>::new();
    let on_scroll = move |_| {
        if let Some(el) = container.get() {
            scroll.set((el.scroll_top() as f64, el.client_height() as f64));
        }
    };
    let count = Memo::new(move |_| peers.with(|p| p.len()));
    let range = Memo::new(move |_| {
        let (top, h) = scroll.get();
        window(top, h, ROW_H, count.get())
    });
    let visible = move || {
        let (a, b) = range.get();
        peers.with(|p| p.get(a..b).map(<[PeerInfo]>::to_vec).unwrap_or_default())
    };
    view! {
        <div class="table-wrap peers-wrap" node_ref=container on:scroll=on_scroll data-testid="peers-scroll">
        <table data-testid="peers-table" aria-rowcount=move || count.get() + 1>
            <thead><tr><th>"#"</th><th>"Role"</th><th>"Host:port"</th><th>"State"</th><th>"Exit"</th><th>"CPU (mean / asked)"</th><th>"Memory (peak / asked)"</th><th>"Reason"</th></tr></thead>
            <tbody>
                <tr class="spacer" aria-hidden="true"><td colspan="8" style=move || format!("height:{}px", range.get().0 as f64 * ROW_H)></td></tr>
                <For each=visible key=|p| (p.index, p.state, p.exit_code, p.usage_samples) children=move |p| {
                    let exit = match (p.exit_code, p.signal) { (Some(c), _) => format!("code {c}"), (None, Some(s)) => format!("signal {s}"), _ => "—".into() };
                    let asked = p.asked_cpu.or_else(|| {
                        role_cpu.with_untracked(|r| r.iter().find(|(n, _)| *n == p.role).map(|(_, c)| *c))
                    });
                    let cpu = match (p.mean_cpu, asked) {
                        (Some(m), Some(a)) => format!("{m:.2} / {a}"),
                        (Some(m), None) => format!("{m:.2}"),
                        (None, _) => "—".into(),
                    };
                    let mem = match (p.peak_rss_bytes, p.asked_mem_bytes) {
                        (Some(b), Some(a)) => format!("{} / {}", human_bytes(b as f64), human_bytes(a as f64)),
                        (Some(b), None) => human_bytes(b as f64),
                        (None, _) => "—".into(),
                    };
                    view! {
                        <tr data-testid=format!("peer-{}", p.index) aria-rowindex=p.index + 2>
                            <td>{p.index}</td><td>{p.role.clone()}</td><td>{format!("{}:{}", p.host, p.port)}</td>
                            <td><StateBadge state=p.state.as_str().to_string()/></td><td>{exit}</td>
                            <td data-testid="peer-cpu">{cpu}</td><td data-testid="peer-mem">{mem}</td><td title=p.reason.clone()>{p.reason.clone()}</td>
                        </tr>
                    }
                }/>
                <tr class="spacer" aria-hidden="true"><td colspan="8" style=move || format!("height:{}px", (count.get() - range.get().1) as f64 * ROW_H)></td></tr>
            </tbody>
        </table>
        </div>
    }
}

const TL_ROW_H: f64 = 22.0;

/// Each peer's states over time as coloured segments; only the rows in
/// view are drawn.
#[component]
fn Timeline(
    peers: RwSignal<Vec<PeerInfo>>,
    history: RwSignal<History>,
    now: RwSignal<f64>,
    ended: Signal<bool>,
) -> impl IntoView {
    let scroll = RwSignal::new((0.0f64, 400.0f64));
    let container = NodeRef::<leptos::html::Div>::new();
    let on_scroll = move |_| {
        if let Some(el) = container.get() {
            scroll.set((el.scroll_top() as f64, el.client_height() as f64));
        }
    };
    let count = Memo::new(move |_| peers.with(|p| p.len()));
    let rows = move || {
        let (top, h) = scroll.get();
        let (a, b) = window(top, h, TL_ROW_H, count.get());
        let indexes: Vec<u32> =
            peers.with(|p| p.get(a..b).into_iter().flatten().map(|p| p.index).collect());
        history.with(|hist| {
            let t0 = hist.t0;
            let t1 = if ended.get() { hist.last } else { now.get().max(hist.last) };
            let span = (t1 - t0).max(1.0);
            let rows = indexes.into_iter().map(|index| {
                let mine: &[(f64, PeerState)] = hist.by_peer.get(index as usize).map(Vec::as_slice).unwrap_or_default();
                let segs = mine.iter().enumerate().map(|(i, (t, st))| {
                    let end = mine.get(i + 1).map(|n| n.0).unwrap_or(if st.is_terminal() { *t } else { t1 });
                    let left = (t - t0) / span * 100.0;
                    let width = ((end - t) / span * 100.0).max(if st.is_terminal() { 0.6 } else { 0.0 });
                    view! { <div class=format!("seg state-{}", st.as_str().to_lowercase()) style=format!("left:{left:.2}%;width:{width:.2}%") title=st.as_str()></div> }
                }).collect_view();
                view! { <div class="tl-row"><span class="tl-label">{format!("peer {index}")}</span><div class="tl-track">{segs}</div></div> }
            }).collect_view();
            let n = count.get();
            view! {
                <div style=format!("height:{}px", a as f64 * TL_ROW_H)></div>
                {rows}
                <div style=format!("height:{}px", (n - b) as f64 * TL_ROW_H)></div>
            }
        })
    };
    let span = move || {
        history.with(|h| {
            let t1 = if ended.get() {
                h.last
            } else {
                now.get().max(h.last)
            };
            human_duration((t1 - h.t0).max(1.0) / 1000.0)
        })
    };
    view! {
        <Show when=move || history.with(|h| !h.is_empty())>
            <h2>"Timeline"</h2>
            <div class="timeline" data-testid="timeline">
                <div class="tl-scroll" node_ref=container on:scroll=on_scroll>{rows}</div>
                <p class="muted">{move || format!("{} from the first start", span())}</p>
            </div>
        </Show>
    }
}

const LINE_H: f64 = 18.0;

/// One peer's stdout or stderr, live; only the visible lines are in the DOM,
/// so 100,000 lines stay smooth.
#[component]
fn LogPanel(id: u64, peers: RwSignal<Vec<PeerInfo>>, total: Signal<u32>) -> impl IntoView {
    let peer = RwSignal::new(0u32);
    // A list of 10,000 options (redrawn as peers arrive) helps nobody: a
    // big job's peer is picked by number.
    let many = move || total.get() > 200;
    let stream = RwSignal::new("stdout".to_string());
    view! {
        <h2>"Logs"</h2>
        <div class="form-row">
            <label>"Peer "
                {move || if many() {
                    view! {
                        <input type="number" data-testid="log-peer" min="0" max=move || total.get().saturating_sub(1).to_string() value=move || peer.get_untracked().to_string()
                            on:change=move |ev| peer.set(event_target_value(&ev).parse::<u32>().unwrap_or(0).min(total.get_untracked().saturating_sub(1)))/>
                    }.into_any()
                } else {
                    view! {
                        <select data-testid="log-peer" on:change=move |ev| peer.set(event_target_value(&ev).parse().unwrap_or(0))>
                            <For each=move || peers.get() key=|p| p.index children=|p| view! { <option value=p.index.to_string()>{format!("{} ({})", p.index, p.role)}</option> }/>
                        </select>
                    }.into_any()
                }}
            </label>
            <label>"Stream "
                <select data-testid="log-stream" on:change=move |ev| stream.set(event_target_value(&ev))>
                    <option value="stdout">"stdout"</option>
                    <option value="stderr">"stderr"</option>
                </select>
            </label>
        </div>
        {move || {
            let (p, s) = (peer.get(), stream.get());
            view! { <LogView id=id peer=p stream=s/> }
        }}
    }
}

#[component]
fn LogView(id: u64, peer: u32, stream: String) -> impl IntoView {
    let lines = StoredValue::new_local(Vec::<String>::new());
    let partial = StoredValue::new_local(String::new());
    let count = RwSignal::new(0usize);
    let scroll_top = RwSignal::new(0.0f64);
    let height = RwSignal::new(360.0f64);
    let follow = RwSignal::new(true);
    let done = RwSignal::new(false);
    let (conn, set_conn) = signal(Conn::Connecting);
    let container: NodeRef<leptos::html::Div> = NodeRef::new();

    sse::subscribe(
        &format!("/api/jobs/{id}/peers/{peer}/logs?stream={stream}"),
        &["log", "end"],
        move |name, data| {
            if name == "end" {
                done.set(true);
                return;
            }
            let v: serde_json::Value = serde_json::from_str(&data).unwrap_or_default();
            let text = v["text"].as_str().unwrap_or_default();
            partial.update_value(|p| p.push_str(text));
            let mut complete = Vec::new();
            partial.update_value(|p| {
                while let Some(nl) = p.find('\n') {
                    complete.push(p[..nl].to_string());
                    p.drain(..=nl);
                }
            });
            if !complete.is_empty() {
                lines.update_value(|l| l.extend(complete));
                count.set(lines.with_value(Vec::len));
            }
        },
        set_conn,
    );
    // Keep the newest line in view while following.
    Effect::new(move |_| {
        let n = count.get();
        if follow.get_untracked() {
            if let Some(el) = container.get() {
                let el: &web_sys::Element = el.unchecked_ref();
                el.set_scroll_top((n as f64 * LINE_H) as i32);
            }
        }
    });
    let on_scroll = move |_| {
        if let Some(el) = container.get() {
            let el: &web_sys::Element = el.unchecked_ref();
            let top = el.scroll_top() as f64;
            let h = el.client_height() as f64;
            scroll_top.set(top);
            height.set(h);
            follow.set(top + h >= el.scroll_height() as f64 - LINE_H * 2.0);
        }
    };
    let visible = move || {
        let n = count.get();
        let first = ((scroll_top.get() / LINE_H) as usize)
            .saturating_sub(20)
            .min(n);
        let last = (first + (height.get() / LINE_H) as usize + 40).min(n);
        let slice: Vec<(usize, String)> =
            lines.with_value(|l| (first..last).map(|i| (i, l[i].clone())).collect());
        slice.into_iter().map(|(i, l)| view! { <div class="log-line" style=format!("top:{}px", i as f64 * LINE_H)>{l}</div> }).collect_view()
    };
    view! {
        <div class="log-head">
            <ConnBadge conn=conn/>
            <span class="muted" data-testid="log-count">{move || format!("{} lines{}", count.get(), if done.get() { ", ended" } else { "" })}</span>
            <Show when=move || !follow.get()>
                <button class="link" on:click=move |_| follow.set(true)>"follow"</button>
            </Show>
        </div>
        <div class="log" node_ref=container on:scroll=on_scroll data-testid="log" tabindex="0" aria-label="peer log">
            <div class="log-inner" style=move || format!("height:{}px", count.get() as f64 * LINE_H)>{visible}</div>
        </div>
    }
}
