//! The cluster: backend (on Mesos: the framework's subscription), hosts
//! with resource bars, waiting jobs and why.

use app::model::ClusterView;
use leptos::prelude::*;
use leptos::task::spawn_local;

use super::ErrorLine;
use crate::api;
use crate::logic::human_bytes;

#[component]
pub fn ClusterPage() -> impl IntoView {
    let view_ = RwSignal::new(None::<ClusterView>);
    let error = RwSignal::new(None::<String>);
    let load = move || {
        spawn_local(async move {
            match api::get::<ClusterView>("/api/cluster").await {
                Ok(v) => {
                    view_.try_set(Some(v));
                    error.try_set(None);
                }
                Err(e) => {
                    error.try_set(Some(e.message));
                }
            }
        })
    };
    load();
    let every = StoredValue::new_local(Some(gloo_timers::callback::Interval::new(2000, load)));
    on_cleanup(move || every.update_value(|c| drop(c.take())));
    let bar = |used: f64, total: f64, label: String| {
        let pct = if total > 0.0 {
            (used / total * 100.0).min(100.0)
        } else {
            0.0
        };
        let aria = label.clone();
        view! {
            <div class="bar" role="meter" aria-valuenow=pct.round().to_string() aria-valuemin="0" aria-valuemax="100" aria-label=aria>
                <div class="fill" style=format!("width:{pct:.1}%")></div>
                <span>{label}</span>
            </div>
        }
    };
    view! {
        <section class="cluster">
            <div class="title-row"><h1>"Cluster"</h1></div>
            <ErrorLine error=error/>
            {move || view_.get().and_then(|c| c.mesos).and_then(|m| {
                // A refusal (credentials, ACLs, the root user) will not go
                // away by retrying: say so above everything else.
                let e = m.last_error.clone()?;
                let title = match m.state.as_str() {
                    "refused" => "The master refuses this dispatcher",
                    "subscribed" => return None,
                    _ => "Not connected to the master",
                };
                Some(view! {
                    <div class="error mesos-problem" role="alert" data-testid="mesos-problem">
                        <strong>{title}</strong>
                        <p>{e}</p>
                    </div>
                })
            })}
            {move || view_.get().map(|c| view! {
                <dl class="facts">
                    <dt>"Backend"</dt><dd data-testid="backend">{c.backend.clone()}</dd>
                    <dt>"Running jobs"</dt><dd>{c.running.len()}</dd>
                    {c.mesos.clone().map(|m| view! {
                        <dt>"Masters"</dt><dd>{m.masters.clone()}</dd>
                        <dt>"Leading master"</dt><dd data-testid="leader">{m.leader.clone().unwrap_or_else(|| "none yet".into())}</dd>
                        <dt>"Subscription"</dt><dd data-testid="subscription" class=format!("sub-{}", m.state)>{m.state.clone()}</dd>
                        // While not subscribed the problem is shown above.
                        {m.last_error.clone().filter(|_| m.state == "subscribed").map(|e| view! { <dt>"Last problem"</dt><dd class="muted">{e}</dd> })}
                        <dt>"Framework id"</dt><dd><code>{m.framework_id.clone().unwrap_or_else(|| "not registered".into())}</code></dd>
                        <dt>"Last heartbeat"</dt><dd>{match m.last_heartbeat_secs_ago {
                            Some(s) => format!("{s:.0} s ago (every {:.0} s)", m.heartbeat_interval_secs),
                            None => "none yet".into(),
                        }}</dd>
                        <dt>"Offers held"</dt><dd>{format!("{}{}", m.offers_held, if m.suppressed { " (suppressed: nothing waits)" } else { "" })}</dd>
                        <dt>"Tasks"</dt><dd>{format!("{} tracked, {} being reconciled", m.tasks, m.reconciling)}</dd>
                    })}
                </dl>
                <h2>"Hosts"</h2>
                <div class="table-wrap">
                <table data-testid="hosts">
                    <thead><tr><th>"Host"</th><th>"CPUs"</th><th>"Memory"</th><th>"Ports"</th><th>"Peers"</th></tr></thead>
                    <tbody>
                    {c.hosts.is_empty().then(|| view! {
                        <tr><td colspan="5" class="muted">"No agent has offered resources yet."</td></tr>
                    })}
                    {c.hosts.iter().map(|h| view! {
                        <tr>
                            <td>{h.host.clone()}" "<span class="muted">{h.address.clone()}</span></td>
                            <td>{bar(h.cpus_used, h.cpus, format!("{:.2} of {:.2}", h.cpus_used, h.cpus))}</td>
                            <td>{bar(h.mem_used_mb as f64, h.mem_mb as f64, format!("{} of {} MB", h.mem_used_mb, h.mem_mb))}</td>
                            <td>{h.ports.clone()}</td>
                            <td>{h.peers}</td>
                        </tr>
                    }).collect_view()}
                    </tbody>
                </table>
                </div>
                {c.storage.clone().map(|s| {
                    let used = s.total_bytes as f64;
                    let disk = s.free_bytes.map(|f| f as f64 + used);
                    view! {
                        <h2>"Data directory"</h2>
                        <dl class="facts" data-testid="storage">
                            <dt>"Where"</dt><dd><code>{s.dir.clone()}</code></dd>
                            <dt>"Size"</dt><dd data-testid="storage-total">{match disk {
                                Some(d) => bar(used, d, format!("{} ({} free)", human_bytes(used), human_bytes(d - used))).into_any(),
                                None => human_bytes(used).into_any(),
                            }}</dd>
                            <dt>"Parts"</dt><dd>{format!(
                                "database {}, apps {}, jobs {}",
                                human_bytes(s.database_bytes as f64),
                                human_bytes(s.apps_bytes as f64),
                                human_bytes(s.jobs_bytes as f64)
                            )}</dd>
                            <dt>"Retention"</dt><dd data-testid="retention">{s.retention.clone()}
                                {(s.jobs_deleted + s.blobs_deleted > 0).then(|| format!(
                                    " ({} and {} deleted since start)",
                                    count(s.jobs_deleted, "job", "jobs"),
                                    count(s.blobs_deleted, "binary", "binaries")
                                ))}</dd>
                            <dt>"Measured"</dt><dd class="muted">{s.measured.clone()}</dd>
                        </dl>
                    }
                })}
                <h2>"Waiting jobs"</h2>
                {if c.waiting.is_empty() {
                    view! { <p class="muted">"Nothing is waiting."</p> }.into_any()
                } else {
                    view! { <ul>{c.waiting.iter().map(|w| view! { <li><a href=format!("/jobs/{}", w.job)>{format!("job {}", w.job)}</a>": "{w.reason.clone()}</li> }).collect_view()}</ul> }.into_any()
                }}
            })}
        </section>
    }
}

fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
