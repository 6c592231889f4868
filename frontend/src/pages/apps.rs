//! Apps and their versions; drag-and-drop (or pick) uploads with progress,
//! speed, time left and cancel, several files queued one after another.

use std::collections::VecDeque;

use app::model::{AppSummary, AppVersion};
use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::prelude::*;
use web_sys::{File, FormData, XmlHttpRequest};

use super::ErrorLine;
use crate::api;
use crate::logic::{human_bytes, human_duration};

#[derive(Clone, Debug, PartialEq)]
enum UpState {
    Queued,
    Sending,
    Done(String),
    Failed(String),
    Cancelled,
}

#[derive(Clone)]
struct Upload {
    id: u32,
    name: String,
    size: f64,
    sent: RwSignal<f64>,
    started: RwSignal<f64>,
    state: RwSignal<UpState>,
}

#[component]
pub fn AppsPage() -> impl IntoView {
    let apps = RwSignal::new(None::<Vec<AppSummary>>);
    let error = RwSignal::new(None::<String>);
    let uploads = RwSignal::new(Vec::<Upload>::new());
    let queue = StoredValue::new_local(VecDeque::<(u32, File)>::new());
    let current = StoredValue::new_local(None::<(u32, XmlHttpRequest)>);
    let next_id = StoredValue::new(0u32);
    let dragging = RwSignal::new(false);
    let expanded = RwSignal::new(None::<String>);
    let versions = RwSignal::new(Vec::<AppVersion>::new());

    let reload = move || {
        spawn_local(async move {
            match api::get::<serde_json::Value>("/api/apps").await {
                Ok(v) => {
                    apps.try_set(serde_json::from_value(v["apps"].clone()).ok());
                }
                Err(e) => {
                    error.try_set(Some(e.message));
                }
            }
        })
    };
    reload();

    let load_versions = move |name: String| {
        spawn_local(async move {
            match api::get::<serde_json::Value>(&format!(
                "/api/apps/{}",
                js_sys::encode_uri_component(&name)
            ))
            .await
            {
                Ok(v) => {
                    versions.set(serde_json::from_value(v["versions"].clone()).unwrap_or_default())
                }
                Err(e) => error.set(Some(e.message)),
            }
        })
    };

    // Starts the next queued upload if none is running.
    fn pump(
        queue: StoredValue<VecDeque<(u32, File)>, LocalStorage>,
        current: StoredValue<Option<(u32, XmlHttpRequest)>, LocalStorage>,
        uploads: RwSignal<Vec<Upload>>,
        on_done: impl Fn() + Clone + 'static,
    ) {
        if current.with_value(|c| c.is_some()) {
            return;
        }
        let Some((id, file)) = queue.try_update_value(|q| q.pop_front()).flatten() else {
            return;
        };
        let Some(up) = uploads.with_untracked(|u| u.iter().find(|x| x.id == id).cloned()) else {
            return;
        };
        if up.state.get_untracked() == UpState::Cancelled {
            pump(queue, current, uploads, on_done);
            return;
        }
        let Ok(xhr) = XmlHttpRequest::new() else {
            return;
        };
        let Ok(form) = FormData::new() else { return };
        let _ = form.append_with_blob_and_filename("file", &file, &file.name());
        let _ = xhr.open_with_async("POST", "/api/apps", true);
        up.state.set(UpState::Sending);
        up.started.set(js_sys::Date::now());
        let sent = up.sent;
        let progress =
            Closure::<dyn FnMut(web_sys::ProgressEvent)>::new(move |e: web_sys::ProgressEvent| {
                sent.set(e.loaded())
            });
        if let Ok(u) = xhr.upload() {
            u.set_onprogress(Some(progress.as_ref().unchecked_ref()));
        }
        progress.forget();
        let x = xhr.clone();
        let state = up.state;
        let size = up.size;
        let done = on_done.clone();
        let finish = Closure::<dyn FnMut(web_sys::Event)>::new(move |e: web_sys::Event| {
            let kind = e.type_();
            let status = x.status().unwrap_or(0);
            let text = x.response_text().ok().flatten().unwrap_or_default();
            let next = match kind.as_str() {
                "abort" => UpState::Cancelled,
                "error" => UpState::Failed("the connection failed".into()),
                _ if (200..300).contains(&status) => {
                    sent.set(size);
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                    let uid = v["version"]["uid"].as_str().unwrap_or("?").to_string();
                    UpState::Done(if v["created"] == true {
                        format!("new version {uid}")
                    } else {
                        format!("already stored as version {uid}")
                    })
                }
                _ => {
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                    if status == 401 {
                        crate::auth::ask(
                            v["error"]
                                .as_str()
                                .unwrap_or("Uploads need the dispatcher's token."),
                        );
                    }
                    UpState::Failed(
                        v["error"]
                            .as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| format!("HTTP {status}")),
                    )
                }
            };
            state.set(next);
            current.set_value(None);
            done();
            pump(queue, current, uploads, done.clone());
        });
        xhr.set_onload(Some(finish.as_ref().unchecked_ref()));
        xhr.set_onerror(Some(finish.as_ref().unchecked_ref()));
        xhr.set_onabort(Some(finish.as_ref().unchecked_ref()));
        finish.forget();
        current.set_value(Some((id, xhr.clone())));
        if xhr.send_with_opt_form_data(Some(&form)).is_err() {
            up.state.set(UpState::Failed(
                "the browser refused to send the file".into(),
            ));
            current.set_value(None);
        }
    }

    let enqueue = move |files: Vec<File>| {
        for f in files {
            let id = next_id.get_value();
            next_id.set_value(id + 1);
            uploads.update(|u| {
                u.push(Upload {
                    id,
                    name: f.name(),
                    size: f.size(),
                    sent: RwSignal::new(0.0),
                    started: RwSignal::new(0.0),
                    state: RwSignal::new(UpState::Queued),
                })
            });
            queue.update_value(|q| q.push_back((id, f)));
        }
        pump(queue, current, uploads, reload);
    };

    let cancel = move |id: u32| {
        let running = current.with_value(|c| {
            c.as_ref()
                .filter(|(cid, _)| *cid == id)
                .map(|(_, x)| x.clone())
        });
        match running {
            Some(xhr) => {
                let _ = xhr.abort();
            }
            None => {
                if let Some(u) = uploads.with_untracked(|u| u.iter().find(|x| x.id == id).cloned())
                {
                    u.state.set(UpState::Cancelled);
                }
            }
        }
    };

    let files_of = |list: Option<web_sys::FileList>| -> Vec<File> {
        let mut out = vec![];
        if let Some(l) = list {
            for i in 0..l.length() {
                if let Some(f) = l.get(i) {
                    out.push(f);
                }
            }
        }
        out
    };

    // The whole page is a drop target.
    let on_drop = move |ev: web_sys::DragEvent| {
        ev.prevent_default();
        dragging.set(false);
        enqueue(files_of(ev.data_transfer().and_then(|d| d.files())));
    };
    let input_ref: NodeRef<leptos::html::Input> = NodeRef::new();

    let delete_app = move |name: String| {
        let ok = web_sys::window()
            .and_then(|w| {
                w.confirm_with_message(&format!(
                    "Delete app {name} and all its versions? Past jobs keep their files."
                ))
                .ok()
            })
            .unwrap_or(false);
        if !ok {
            return;
        }
        spawn_local(async move {
            match api::delete(&format!(
                "/api/apps/{}",
                js_sys::encode_uri_component(&name)
            ))
            .await
            {
                Ok(()) => reload(),
                Err(e) => error.set(Some(e.message)),
            }
        });
    };

    view! {
        <section class="apps" class:dragging=move || dragging.get()
            on:dragover=move |ev: web_sys::DragEvent| { ev.prevent_default(); dragging.set(true); }
            on:dragleave=move |_| dragging.set(false)
            on:drop=on_drop
            data-testid="drop-zone">
            <div class="title-row"><h1>"Apps"</h1></div>
            <div class="dropzone">
                <p>"Drop program files anywhere on this page, or "
                    <button class="link" on:click=move |_| { if let Some(i) = input_ref.get() { i.click(); } }>"choose files"</button>
                    "."</p>
                <p class="muted">"Each file becomes a new version of the app named after it."</p>
                <input type="file" multiple node_ref=input_ref class="hidden" data-testid="file-input"
                    on:change=move |ev| {
                        let input: web_sys::HtmlInputElement = event_target(&ev);
                        enqueue(files_of(input.files()));
                        input.set_value("");
                    }/>
            </div>
            <ul class="uploads" data-testid="uploads">
                <For each=move || uploads.get() key=|u| u.id children=move |u| {
                    let id = u.id;
                    let size = u.size;
                    let pct = move || if size > 0.0 { (u.sent.get() / size * 100.0).min(100.0) } else { 100.0 };
                    let speed = move || {
                        let secs = (js_sys::Date::now() - u.started.get()) / 1000.0;
                        if secs > 0.0 { u.sent.get() / secs } else { 0.0 }
                    };
                    let detail = move || match u.state.get() {
                        UpState::Queued => "queued".to_string(),
                        UpState::Sending => {
                            let s = speed();
                            let left = if s > 0.0 { (size - u.sent.get()) / s } else { f64::INFINITY };
                            format!("{} of {} · {}/s · {} left", human_bytes(u.sent.get()), human_bytes(size), human_bytes(s), human_duration(left))
                        }
                        UpState::Done(m) => format!("done: {m}"),
                        UpState::Failed(m) => format!("failed: {m}"),
                        UpState::Cancelled => "cancelled".to_string(),
                    };
                    let active = move || matches!(u.state.get(), UpState::Queued | UpState::Sending);
                    view! {
                        <li class="upload" data-testid="upload">
                            <span class="name">{u.name.clone()}</span>
                            <progress max="100" value=move || pct().to_string() aria-label="upload progress"></progress>
                            <span class="detail" data-testid="upload-detail">{detail}</span>
                            <Show when=active><button on:click=move |_| cancel(id)>"Cancel"</button></Show>
                        </li>
                    }
                }/>
            </ul>
            <ErrorLine error=error/>
            {move || match apps.get() {
                None => view! { <p class="muted">"Loading…"</p> }.into_any(),
                Some(list) if list.is_empty() => view! { <div class="empty"><p>"No apps yet: drop a compiled program here to upload it."</p></div> }.into_any(),
                Some(list) => view! {
                    <div class="table-wrap">
                    <table data-testid="apps-table">
                        <thead><tr><th>"App"</th><th>"Versions"</th><th>"Latest"</th><th>"Size"</th><th>"Uploaded"</th><th></th></tr></thead>
                        <tbody>
                        {list.into_iter().map(|a| {
                            let name = a.name.clone();
                            let n1 = name.clone();
                            let n2 = name.clone();
                            let n3 = name.clone();
                            let n4 = name.clone();
                            view! {
                                <tr data-testid=format!("app-{}", a.name)>
                                    <td><button class="link" aria-expanded=move || (expanded.get().as_deref() == Some(n1.as_str())).to_string()
                                        on:click=move |_| {
                                            if expanded.get_untracked().as_deref() == Some(n2.as_str()) { expanded.set(None) } else { expanded.set(Some(n2.clone())); load_versions(n2.clone()); }
                                        }>{name.clone()}</button></td>
                                    <td data-testid="version-count">{a.versions}</td>
                                    <td><code>{a.latest.uid.clone()}</code>" "{a.latest.tag.clone()}</td>
                                    <td>{human_bytes(a.latest.size as f64)}</td>
                                    <td>{a.latest.uploaded.get(..19).unwrap_or_default().replace('T', " ")}</td>
                                    <td class="actions">
                                        <a class="button" href=format!("/new?app={}", js_sys::encode_uri_component(&name))>"New job"</a>
                                        <button class="danger" on:click=move |_| delete_app(n3.clone())>"Delete"</button>
                                    </td>
                                </tr>
                                <Show when=move || expanded.get().as_deref() == Some(n4.as_str())>
                                    <tr class="versions"><td colspan="6">
                                        <super::charts::AppHistory app=name.clone()/>
                                        <table class="inner">
                                            <thead><tr><th>"Version"</th><th>"sha256"</th><th>"Size"</th><th>"Tag"</th><th>"Uploaded"</th></tr></thead>
                                            <tbody>
                                            <For each=move || versions.get() key=|v| v.uid.clone() children=|v| view! {
                                                <tr><td><code>{v.uid.clone()}</code></td><td><code class="hash">{v.sha256.clone()}</code></td><td>{human_bytes(v.size as f64)}</td><td>{v.tag.clone()}</td><td>{v.uploaded.get(..19).unwrap_or_default().replace('T', " ")}</td></tr>
                                            }/>
                                            </tbody>
                                        </table>
                                    </td></tr>
                                </Show>
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
