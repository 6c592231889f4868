//! New job: pick an app and version, edit the role file (line numbers, YAML
//! highlighting, problems marked as you type, checked in wasm by the same
//! code as the server), preview placement on the cluster, set options, submit.

use app::model::{AppSummary, AppVersion, ClusterView, JobOptions, JobPage};
use app::{Diagnostic, Severity};
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::{use_navigate, use_query_map};

use super::ErrorLine;
use crate::api;
use crate::logic::{highlight_line, line_markers, utf16_offset};

#[derive(Clone, Debug, PartialEq)]
enum Preview {
    Unknown,
    Fits(Vec<(String, usize)>),
    Waits(String),
}

#[component]
pub fn NewJobPage() -> impl IntoView {
    let query = use_query_map();
    let navigate = use_navigate();
    let apps = RwSignal::new(Vec::<AppSummary>::new());
    let app_name = RwSignal::new(query.read_untracked().get("app").unwrap_or_default());
    let versions = RwSignal::new(Vec::<AppVersion>::new());
    let uid = RwSignal::new(String::new());
    let text = RwSignal::new(app::templates::SAMPLE.to_string());
    let checked = RwSignal::new(text.get_untracked());
    let server_diags = RwSignal::new(Vec::<Diagnostic>::new());
    let cluster = RwSignal::new(None::<ClusterView>);
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let opts = RwSignal::new(JobOptions {
        user: String::new(),
        ..Default::default()
    });
    let time_limit = RwSignal::new(String::new());
    // "Run on a schedule": a schedule is created instead of one job.
    let scheduled = RwSignal::new(false);
    let when_kind = RwSignal::new("interval".to_string());
    let when_text = RwSignal::new(String::new());
    let tz = RwSignal::new("UTC".to_string());
    let concurrency = RwSignal::new("skip".to_string());
    let missed = RwSignal::new("skip".to_string());
    let sched_name = RwSignal::new(String::new());
    let sched_latest = RwSignal::new(true);
    // "Run as a sweep": one job per combination of the parameters' values.
    let swept = RwSignal::new(false);
    let sweep_lines = RwSignal::new(String::new());
    let repeat = RwSignal::new("1".to_string());
    let textarea: NodeRef<leptos::html::Textarea> = NodeRef::new();
    let tab_leaves = StoredValue::new(false);

    spawn_local(async move {
        if let Ok(v) = api::get::<serde_json::Value>("/api/apps").await {
            let list: Vec<AppSummary> =
                serde_json::from_value(v["apps"].clone()).unwrap_or_default();
            if app_name.get_untracked().is_empty() {
                if let Some(first) = list.first() {
                    app_name.set(first.name.clone());
                }
            }
            apps.try_set(list);
        }
        if let Ok(c) = api::get::<ClusterView>("/api/cluster").await {
            cluster.try_set(Some(c));
        }
    });
    Effect::new(move |_| {
        let name = app_name.get();
        if name.is_empty() {
            return;
        }
        spawn_local(async move {
            if let Ok(v) = api::get::<serde_json::Value>(&format!(
                "/api/apps/{}",
                js_sys::encode_uri_component(&name)
            ))
            .await
            {
                let list: Vec<AppVersion> =
                    serde_json::from_value(v["versions"].clone()).unwrap_or_default();
                uid.try_set(list.first().map(|v| v.uid.clone()).unwrap_or_default());
                versions.try_set(list);
            }
        });
    });

    // Check 250 ms after the last keystroke.
    let generation = StoredValue::new(0u64);
    Effect::new(move |_| {
        let t = text.get();
        generation.update_value(|g| *g += 1);
        let mine = generation.get_value();
        spawn_local(async move {
            gloo_timers::future::TimeoutFuture::new(250).await;
            // The page may be gone by now (a submit navigated away).
            if generation.try_get_value() == Some(mine) {
                checked.try_set(t);
                server_diags.try_set(vec![]);
            }
        });
    });
    // The check result has no equality (compiled regexes), so it is a signal
    // updated when the checked text changes rather than a memo.
    let report = RwSignal::new(app::check(&checked.get_untracked()));
    Effect::new(move |_| report.set(checked.with(|t| app::check(t))));
    let diags = Memo::new(move |_| {
        let mut d = report.with(|r| r.diagnostics.clone());
        d.extend(server_diags.get());
        d
    });
    let markers = Memo::new(move |_| diags.with(|d| line_markers(d)));
    let errors = Memo::new(move |_| diags.with(|d| d.iter().filter(|x| x.is_error()).count()));
    let preview = Memo::new(move |_| {
        let Some(c) = cluster.get() else {
            return Preview::Unknown;
        };
        report.with(|r| match &r.role_file {
            None => Preview::Unknown,
            Some(rf) => match app::placement::place(rf.roles(), &c.offers) {
                Ok(p) => {
                    let mut hosts: Vec<(String, usize)> = vec![];
                    for s in &p.peers {
                        match hosts.iter_mut().find(|h| h.0 == s.host) {
                            Some(h) => h.1 += 1,
                            None => hosts.push((s.host.clone(), 1)),
                        }
                    }
                    Preview::Fits(hosts)
                }
                Err(short) => Preview::Waits(short.to_string()),
            },
        })
    });

    let prefill = move |which: &str| match which {
        "sample" => text.set(app::templates::SAMPLE.to_string()),
        "reference" => text.set(app::templates::REFERENCE.to_string()),
        _ => {
            let name = app_name.get_untracked();
            spawn_local(async move {
                let url = format!(
                    "/api/jobs?limit=1&app={}",
                    js_sys::encode_uri_component(&name)
                );
                match api::get::<JobPage>(&url).await {
                    Ok(p) => match p.jobs.first() {
                        Some(j) => {
                            if let Ok(d) =
                                api::get::<app::model::JobDetail>(&format!("/api/jobs/{}", j.id))
                                    .await
                            {
                                text.set(d.role_file);
                            }
                        }
                        None => error.set(Some(format!(
                            "{name} has no jobs yet: there is no last role file"
                        ))),
                    },
                    Err(e) => error.set(Some(e.message)),
                }
            });
        }
    };

    let goto = move |d: &Diagnostic| {
        if let Some(el) = textarea.get() {
            let off = text.with_untracked(|t| utf16_offset(t, d.line, d.column));
            let _ = el.focus();
            let _ = el.set_selection_range(off, off);
        }
    };

    let submit = move |_| {
        if errors.get_untracked() > 0 {
            error.set(Some("fix the role file's errors first".into()));
            return;
        }
        let mut options = opts.get_untracked();
        let tl = time_limit.get_untracked();
        if !tl.trim().is_empty() {
            match app::role::TimeLimit::parse(&tl) {
                Ok(t) => options.time_limit = Some(t.secs()),
                Err(e) => {
                    error.set(Some(format!("time limit {tl:?}: {e}")));
                    return;
                }
            }
        }
        if scheduled.get_untracked() && swept.get_untracked() {
            error.set(Some("choose one: a schedule or a sweep".into()));
            return;
        }
        let (url, body) = if swept.get_untracked() {
            let parameters = match app::sweep::parse_lines(&sweep_lines.get_untracked()) {
                Ok(p) if !p.is_empty() => p,
                Ok(_) => {
                    error.set(Some(
                        "name at least one parameter: workers.peers = 1, 2, 4".into(),
                    ));
                    return;
                }
                Err(e) => {
                    error.set(Some(format!("sweep parameters, {e}")));
                    return;
                }
            };
            let Ok(times) = repeat.get_untracked().trim().parse::<u32>() else {
                error.set(Some(format!(
                    "repeat {:?} is not a whole number",
                    repeat.get_untracked()
                )));
                return;
            };
            (
                "/api/sweeps",
                serde_json::json!({
                    "app": app_name.get_untracked(),
                    "uid": uid.get_untracked(),
                    "role_file": text.get_untracked(),
                    "parameters": parameters,
                    "repeat": times,
                    "options": options,
                }),
            )
        } else if scheduled.get_untracked() {
            let w = when_text.get_untracked();
            let mut b = serde_json::json!({
                "name": sched_name.get_untracked(),
                "app": app_name.get_untracked(),
                "uid": if sched_latest.get_untracked() { None } else { Some(uid.get_untracked()) },
                "role_file": text.get_untracked(),
                "options": options,
                "concurrency": concurrency.get_untracked(),
                "missed": missed.get_untracked(),
            });
            if when_kind.get_untracked() == "cron" {
                b["cron"] = w.into();
                b["tz"] = tz.get_untracked().into();
            } else {
                b["schedule"] = w.into();
            }
            ("/api/schedules", b)
        } else {
            (
                "/api/jobs",
                serde_json::json!({ "app": app_name.get_untracked(), "uid": uid.get_untracked(), "role_file": text.get_untracked(), "options": options }),
            )
        };
        busy.set(true);
        let nav = navigate.clone();
        spawn_local(async move {
            match api::post_json::<serde_json::Value>(url, &body).await {
                Ok(v) if url == "/api/schedules" => {
                    nav(&format!("/schedules/{}", v["id"]), Default::default())
                }
                Ok(v) if url == "/api/sweeps" => {
                    nav(&format!("/sweeps/{}", v["id"]), Default::default())
                }
                Ok(v) => nav(&format!("/jobs/{}", v["id"]), Default::default()),
                Err(e) => {
                    let ds: Vec<Diagnostic> = e
                        .details
                        .iter()
                        .filter_map(|d| serde_json::from_value(d.clone()).ok())
                        .collect();
                    // A sweep's problem is in one combination's role file,
                    // not in the editor's lines: its message names which.
                    if ds.is_empty() || url == "/api/sweeps" {
                        error.set(Some(e.message));
                    } else {
                        // Server-side problems show like local ones.
                        server_diags.set(
                            ds.into_iter()
                                .filter(|d| !report.with_untracked(|r| r.diagnostics.contains(d)))
                                .collect(),
                        );
                        error.set(Some(
                            "the dispatcher refused the role file; see the problems below".into(),
                        ));
                    }
                }
            }
            busy.try_set(false);
        });
    };

    let line_count = move || text.with(|t| t.split('\n').count());

    view! {
        <section class="new-job">
            <div class="title-row"><h1>"New job"</h1></div>
            {move || apps.with(Vec::is_empty).then(|| view! {
                <p class="empty">"There are no apps yet. " <a href="/apps">"Upload a program first."</a></p>
            })}
            <div class="form-row">
                <label>"App "
                    <select data-testid="app-select" prop:value=move || app_name.get() on:change=move |ev| app_name.set(event_target_value(&ev))>
                        <For each=move || apps.get() key=|a| a.name.clone() children=|a| view! { <option value=a.name.clone()>{a.name.clone()}</option> }/>
                    </select>
                </label>
                <label>"Version "
                    <select data-testid="version-select" prop:value=move || uid.get() on:change=move |ev| uid.set(event_target_value(&ev))>
                        <For each=move || versions.get() key=|v| v.uid.clone() children=|v| view! { <option value=v.uid.clone()>{format!("{} {}", v.uid, v.tag)}</option> }/>
                    </select>
                </label>
                <span class="prefill">"Start from: "
                    <button class="link" on:click=move |_| prefill("sample")>"sample"</button>" · "
                    <button class="link" on:click=move |_| prefill("reference")>"field reference"</button>" · "
                    <button class="link" on:click=move |_| prefill("last")>"last used"</button>
                </span>
            </div>
            <div class="editor" data-testid="editor">
                <div class="gutter" aria-hidden="true">
                    {move || (1..=line_count()).map(|n| {
                        let m = markers.with(|m| m.get(&(n as u32)).copied());
                        let class = match m { Some(Severity::Error) => "ln ln-error", Some(Severity::Warning) => "ln ln-warning", None => "ln" };
                        view! { <div class=class data-line=n>{n}</div> }
                    }).collect_view()}
                </div>
                <div class="code">
                    <pre class="highlight" aria-hidden="true">
                        {move || text.with(|t| t.split('\n').enumerate().map(|(i, l)| {
                            let spans = highlight_line(l);
                            let class = match markers.with(|m| m.get(&(i as u32 + 1)).copied()) {
                                Some(Severity::Error) => "hl-line hl-error",
                                Some(Severity::Warning) => "hl-line hl-warning",
                                None => "hl-line",
                            };
                            view! { <div class=class>{spans.into_iter().map(|(c, s)| view! { <span class=c>{s}</span> }).collect_view()}"\u{200b}"</div> }
                        }).collect_view())}
                    </pre>
                    <textarea node_ref=textarea class="input" spellcheck="false" autocapitalize="off" autocomplete="off"
                        aria-label="role file" data-testid="role-editor"
                        rows=move || line_count().to_string()
                        prop:value=move || text.get()
                        on:input=move |ev| text.set(event_target_value(&ev))
                        on:keydown=move |ev: web_sys::KeyboardEvent| {
                            // Tab indents instead of leaving the editor; Escape, then Tab,
                            // leaves it, so the keyboard is never trapped.
                            if ev.key() == "Escape" {
                                tab_leaves.set_value(true);
                                return;
                            }
                            if ev.key() == "Tab" && tab_leaves.get_value() {
                                tab_leaves.set_value(false);
                                return;
                            }
                            tab_leaves.set_value(false);
                            if ev.key() == "Tab" && !ev.shift_key() {
                                if let Some(el) = textarea.get() {
                                    ev.prevent_default();
                                    let start = el.selection_start().ok().flatten().unwrap_or(0) as usize;
                                    let mut t: Vec<u16> = text.get_untracked().encode_utf16().collect();
                                    t.splice(start..start, "  ".encode_utf16());
                                    text.set(String::from_utf16_lossy(&t));
                                    let _ = el.set_selection_range(start as u32 + 2, start as u32 + 2);
                                }
                            }
                        }></textarea>
                </div>
            </div>
            <div class="problems" data-testid="problems">
                {move || {
                    let ds = diags.get();
                    if ds.is_empty() {
                        view! { <p class="ok" data-testid="no-problems">"No problems."</p> }.into_any()
                    } else {
                        view! {
                            <ul>
                                {ds.into_iter().map(|d| {
                                    let dd = d.clone();
                                    let sev = match d.severity { Severity::Error => "error", Severity::Warning => "warning" };
                                    view! {
                                        <li class=format!("problem problem-{sev}") data-testid="problem">
                                            <button class="link" on:click=move |_| goto(&dd)>{format!("{}:{}", d.line, d.column)}</button>
                                            " " <span class="sev">{sev}</span> " " {d.message.clone()}
                                            {(!d.path.is_empty()).then(|| view! { <span class="muted">{format!(" ({})", d.path)}</span> })}
                                        </li>
                                    }
                                }).collect_view()}
                            </ul>
                        }.into_any()
                    }
                }}
            </div>
            <div class="preview" data-testid="preview">
                {move || match preview.get() {
                    Preview::Unknown => view! { <p class="muted">"Placement preview appears when the role file is valid."</p> }.into_any(),
                    Preview::Fits(hosts) => view! {
                        <p class="ok">"Fits now: " {hosts.iter().map(|(h, n)| format!("{h} ({n} peers)")).collect::<Vec<_>>().join(", ")}</p>
                    }.into_any(),
                    Preview::Waits(why) => view! { <p class="warn">"Would wait: " {why}</p> }.into_any(),
                }}
            </div>
            <details class="options">
                <summary>"Options"</summary>
                <div class="grid">
                    <label>"Tag " <input type="text" prop:value=move || opts.get().tag on:input=move |ev| opts.update(|o| o.tag = event_target_value(&ev))/></label>
                    <label>"User " <input type="text" prop:value=move || opts.get().user on:input=move |ev| opts.update(|o| o.user = event_target_value(&ev))/></label>
                    <label>"Time limit " <input type="text" placeholder="e.g. 30m" prop:value=move || time_limit.get() on:input=move |ev| time_limit.set(event_target_value(&ev))/></label>
                    <label>"Retries " <input type="number" min="0" max="20" placeholder="role file's" data-testid="retries"
                        prop:value=move || opts.get().retries.map(|r| r.to_string()).unwrap_or_default()
                        on:input=move |ev| opts.update(|o| o.retries = event_target_value(&ev).trim().parse().ok())/></label>
                    <label>"Retry on " <select data-testid="retry-on" on:change=move |ev| opts.update(|o| o.retry_on = app::model::RetryOn::parse(&event_target_value(&ev)).ok())>
                        <option value="" selected=move || opts.get().retry_on.is_none()>"role file's (lost)"</option>
                        <option value="lost">"lost (infrastructure)"</option>
                        <option value="failed">"failed (the program)"</option>
                        <option value="failed,lost">"both"</option>
                    </select></label>
                    <label>"Command prefix " <input type="text" prop:value=move || opts.get().cmd_prefix on:input=move |ev| opts.update(|o| o.cmd_prefix = event_target_value(&ev))/></label>
                    <label>"Command infix " <input type="text" prop:value=move || opts.get().cmd_infix on:input=move |ev| opts.update(|o| o.cmd_infix = event_target_value(&ev))/></label>
                    <label>"Command suffix " <input type="text" prop:value=move || opts.get().cmd_suffix on:input=move |ev| opts.update(|o| o.cmd_suffix = event_target_value(&ev))/></label>
                </div>
            </details>
            <details class="options" data-testid="schedule-options">
                <summary>"Run on a schedule"</summary>
                <label class="check"><input type="checkbox" data-testid="scheduled" prop:checked=move || scheduled.get() on:change=move |ev| scheduled.set(event_target_checked(&ev))/>" Create a schedule that runs this job, instead of running it once"</label>
                <div class="grid">
                    <label>"Name " <input type="text" data-testid="schedule-name" placeholder="e.g. nightly TPC-H" prop:value=move || sched_name.get() on:input=move |ev| sched_name.set(event_target_value(&ev))/></label>
                    <label>"When " <select data-testid="when-kind" on:change=move |ev| when_kind.set(event_target_value(&ev))>
                        <option value="interval" selected=move || when_kind.get() == "interval">"repeating interval (ISO 8601)"</option>
                        <option value="cron" selected=move || when_kind.get() == "cron">"cron"</option>
                    </select></label>
                    <label>{move || if when_kind.get() == "cron" { "Cron line " } else { "Interval " }}
                        <input type="text" data-testid="when" placeholder=move || if when_kind.get() == "cron" { "0 2 * * *" } else { "R/2026-12-01T02:00:00Z/P1D" } prop:value=move || when_text.get() on:input=move |ev| when_text.set(event_target_value(&ev))/></label>
                    <Show when=move || when_kind.get() == "cron">
                        <label>"Time zone " <input type="text" data-testid="tz" placeholder="Europe/Berlin" prop:value=move || tz.get() on:input=move |ev| tz.set(event_target_value(&ev))/></label>
                    </Show>
                    <label>"If the last run still runs " <select data-testid="concurrency" on:change=move |ev| concurrency.set(event_target_value(&ev))>
                        <option value="skip">"skip this run"</option>
                        <option value="queue">"queue it (one waits)"</option>
                        <option value="replace">"kill the last run"</option>
                    </select></label>
                    <label class="check"><input type="checkbox" data-testid="schedule-latest" prop:checked=move || sched_latest.get() on:change=move |ev| sched_latest.set(event_target_checked(&ev))/>" each run takes the app's latest version (else the one chosen above)"</label>
                    <label>"Runs missed while down " <select data-testid="missed" on:change=move |ev| missed.set(event_target_value(&ev))>
                        <option value="skip">"skip them"</option>
                        <option value="run_once">"run once"</option>
                    </select></label>
                </div>
            </details>
            <details class="options" data-testid="sweep-options">
                <summary>"Run as a sweep"</summary>
                <label class="check"><input type="checkbox" data-testid="swept" prop:checked=move || swept.get() on:change=move |ev| swept.set(event_target_checked(&ev))/>" Run this role file once per combination of these values (one line per parameter: role.field = value, value, ...)"</label>
                <div class="grid">
                    <label>"Parameters " <textarea data-testid="sweep-lines" rows="3" placeholder="workers.peers = 1, 2, 4\nworkers.k3_globals.query = q1, q18" prop:value=move || sweep_lines.get() on:input=move |ev| sweep_lines.set(event_target_value(&ev))></textarea></label>
                    <label>"Repeat each " <input type="number" min="1" max="100" data-testid="sweep-repeat" prop:value=move || repeat.get() on:input=move |ev| repeat.set(event_target_value(&ev))/></label>
                </div>
            </details>
            <ErrorLine error=error/>
            <div class="actions">
                <button class="primary" data-testid="submit" disabled=move || { busy.get() || errors.get() != 0 || app_name.get().is_empty() } on:click=submit>
                    {move || match (busy.get(), scheduled.get(), swept.get()) { (true, _, _) => "Submitting…", (false, true, _) => "Create schedule", (false, false, true) => "Submit sweep", _ => "Submit job" }}
                </button>
            </div>
        </section>
    }
}
