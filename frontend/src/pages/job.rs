//! One job: status and times, the role file, live peers, a timeline of peer
//! states, live peer logs, and kill / replay / archive / copy-as-curl.

use app::model::{Event, EventKind, JobDetail, JobState, PeerInfo, PeerState};
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::{use_navigate, use_params_map};
use wasm_bindgen::JsCast;

use super::{ConnBadge, ErrorLine, StateBadge};
use crate::api;
use crate::logic::{curl_for, human_bytes, human_duration, parse_time_ms};
use crate::sse::{self, Conn};

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
    let history = RwSignal::new(Vec::<(u32, f64, PeerState)>::new());
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
        &["job", "peer", "archive", "usage"],
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
                    if let Some(p) = ps.iter_mut().find(|p| p.index as u64 == index) {
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
                            }
                        });
                    }
                    if let Some(j) = j {
                        j.job.state = state;
                        j.job.reason = reason;
                        if state == JobState::Running && j.job.started.is_none() {
                            j.job.started = Some(ev.time.clone());
                        }
                        if state.is_terminal() {
                            j.job.ended = Some(ev.time.clone());
                        }
                    }
                }),
                EventKind::Peer {
                    index,
                    role,
                    host,
                    port,
                    state,
                    exit_code,
                    signal,
                    reason,
                } => {
                    peers.update(|ps| {
                        let info = PeerInfo {
                            index,
                            role,
                            host,
                            port,
                            state,
                            exit_code,
                            signal,
                            reason,
                            started: None,
                            ended: None,
                            peak_rss_bytes: None,
                            mean_cpu: None,
                            usage_samples: 0,
                            asked_cpu: None,
                            asked_mem_bytes: None,
                        };
                        // The page shows no per-peer times, so the event
                        // replaces the row (keeping its usage so far).
                        match ps.iter_mut().find(|p| p.index == index) {
                            Some(p) => {
                                *p = PeerInfo {
                                    peak_rss_bytes: p.peak_rss_bytes,
                                    mean_cpu: p.mean_cpu,
                                    usage_samples: p.usage_samples,
                                    asked_cpu: p.asked_cpu,
                                    asked_mem_bytes: p.asked_mem_bytes,
                                    ..info
                                }
                            }
                            None => {
                                ps.push(info);
                                ps.sort_by_key(|p| p.index);
                            }
                        }
                    });
                    history.update(|h| h.push((index, t, state)));
                }
                EventKind::Archive { size } => job.update(|j| {
                    if let Some(j) = j {
                        j.job.archive_size = Some(size);
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
    // Cores each role asked for per peer, from the job's role file.
    let asked_cpu = move |role: &str| {
        job.with_untracked(|j| {
            let rf = app::RoleFile::parse(&j.as_ref()?.role_file).ok()?.0;
            let r = rf.roles().iter().find(|r| r.name == role)?;
            Some(r.cpu.cores())
        })
    };
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
            <h2>"Peers"</h2>
            <div class="table-wrap">
            <table data-testid="peers-table">
                <thead><tr><th>"#"</th><th>"Role"</th><th>"Host:port"</th><th>"State"</th><th>"Exit"</th><th>"CPU (mean / asked)"</th><th>"Memory (peak / asked)"</th><th>"Reason"</th></tr></thead>
                <tbody>
                    <For each=move || peers.get() key=|p| (p.index, p.state, p.exit_code, p.usage_samples) children=move |p| {
                        let exit = match (p.exit_code, p.signal) { (Some(c), _) => format!("code {c}"), (None, Some(s)) => format!("signal {s}"), _ => "—".into() };
                        let asked = p.asked_cpu.or_else(|| asked_cpu(&p.role));
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
                            <tr data-testid=format!("peer-{}", p.index)>
                                <td>{p.index}</td><td>{p.role.clone()}</td><td>{format!("{}:{}", p.host, p.port)}</td>
                                <td><StateBadge state=p.state.as_str().to_string()/></td><td>{exit}</td>
                                <td data-testid="peer-cpu">{cpu}</td><td data-testid="peer-mem">{mem}</td><td>{p.reason.clone()}</td>
                            </tr>
                        }
                    }/>
                </tbody>
            </table>
            </div>
            <super::charts::UsageCharts samples=samples
                asked_cpu=Signal::derive(move || {
                    // The most any peer was given: the line a peer should stay under.
                    let given = peers.with(|ps| ps.iter().filter_map(|p| p.asked_cpu).reduce(f64::max));
                    given.or_else(|| job.with(|j| {
                        let rf = app::RoleFile::parse(&j.as_ref()?.role_file).ok()?.0;
                        Some(rf.roles().first()?.cpu.cores())
                    }))
                })
                asked_mem=Signal::derive(move || peers.with(|ps| ps.iter().filter_map(|p| p.asked_mem_bytes).max()).map(|b| b as f64))/>
            <Timeline peers=peers history=history now=now ended=Signal::derive(ended)/>
            <LogPanel id=id peers=peers/>
            <h2>"Role file"</h2>
            <pre class="rolefile" data-testid="role-file">{move || job.with(|j| j.as_ref().map(|j| j.role_file.clone()).unwrap_or_default())}</pre>
        </section>
    }
}

/// Each peer's states over time as coloured segments.
#[component]
fn Timeline(
    peers: RwSignal<Vec<PeerInfo>>,
    history: RwSignal<Vec<(u32, f64, PeerState)>>,
    now: RwSignal<f64>,
    ended: Signal<bool>,
) -> impl IntoView {
    let bars = move || {
        let h = history.get();
        if h.is_empty() {
            return None;
        }
        let t0 = h.iter().map(|x| x.1).fold(f64::INFINITY, f64::min);
        let last = h.iter().map(|x| x.1).fold(0.0, f64::max);
        let t1 = if ended.get() {
            last
        } else {
            now.get().max(last)
        };
        let span = (t1 - t0).max(1.0);
        let rows = peers.get().into_iter().map(|p| {
            let mine: Vec<_> = h.iter().filter(|x| x.0 == p.index).collect();
            let segs = mine.iter().enumerate().map(|(i, (_, t, st))| {
                let end = mine.get(i + 1).map(|n| n.1).unwrap_or(if st.is_terminal() { *t } else { t1 });
                let left = (t - t0) / span * 100.0;
                let width = ((end - t) / span * 100.0).max(if st.is_terminal() { 0.6 } else { 0.0 });
                view! { <div class=format!("seg state-{}", st.as_str().to_lowercase()) style=format!("left:{left:.2}%;width:{width:.2}%") title=st.as_str()></div> }
            }).collect_view();
            view! { <div class="tl-row"><span class="tl-label">{format!("peer {}", p.index)}</span><div class="tl-track">{segs}</div></div> }
        }).collect_view();
        Some(view! {
            <h2>"Timeline"</h2>
            <div class="timeline" data-testid="timeline">{rows}<p class="muted">{format!("{} from the first start", human_duration(span / 1000.0))}</p></div>
        })
    };
    view! { {bars} }
}

const LINE_H: f64 = 18.0;

/// One peer's stdout or stderr, live; only the visible lines are in the DOM,
/// so 100,000 lines stay smooth.
#[component]
fn LogPanel(id: u64, peers: RwSignal<Vec<PeerInfo>>) -> impl IntoView {
    let peer = RwSignal::new(0u32);
    let stream = RwSignal::new("stdout".to_string());
    view! {
        <h2>"Logs"</h2>
        <div class="form-row">
            <label>"Peer "
                <select data-testid="log-peer" on:change=move |ev| peer.set(event_target_value(&ev).parse().unwrap_or(0))>
                    <For each=move || peers.get() key=|p| p.index children=|p| view! { <option value=p.index.to_string()>{format!("{} ({})", p.index, p.role)}</option> }/>
                </select>
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
