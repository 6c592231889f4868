//! Signing in. A dispatcher started with `--token` needs it for changes, and
//! with `--read-token` for everything. The dashboard asks once, posts it to
//! `/api/session`, and from then on the browser's HttpOnly session cookie
//! goes with every fetch, upload and event stream; the page never keeps the
//! token. Any answer 401 opens the sign-in dialog with the server's reason.

use std::cell::Cell;

use leptos::prelude::*;
use serde::Deserialize;

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct Session {
    pub access: String,
    pub write_token: bool,
    pub read_token: bool,
}

#[derive(Clone, Copy)]
struct Auth {
    /// Some(reason) while the dialog is open.
    asking: RwSignal<Option<String>>,
    session: RwSignal<Option<Session>>,
}

thread_local! {
    static AUTH: Cell<Option<Auth>> = const { Cell::new(None) };
}

/// Opens the sign-in dialog (from any 401).
pub fn ask(reason: &str) {
    if let Some(a) = AUTH.with(Cell::get) {
        // The first reason stays: a page's several 401s say the same thing.
        if a.asking.get_untracked().is_none() {
            a.asking.set(Some(reason.to_string()));
        }
    }
}

fn reload() {
    if let Some(w) = web_sys::window() {
        let _ = w.location().reload();
    }
}

async fn load_session(a: Auth) {
    if let Ok(s) = crate::api::get::<Session>("/api/session").await {
        if s.read_token && s.access == "none" {
            a.asking.set(Some(
                "This dispatcher is private: its jobs, logs and archives need a token.".into(),
            ));
        }
        a.session.set(Some(s));
    }
}

/// The header's sign-in state and the dialog.
#[component]
pub fn SignIn() -> impl IntoView {
    let a = Auth {
        asking: RwSignal::new(None),
        session: RwSignal::new(None),
    };
    AUTH.with(|c| c.set(Some(a)));
    leptos::task::spawn_local(load_session(a));
    let token = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let t = token.get_untracked();
        if t.trim().is_empty() {
            error.set(Some(
                "Type the token the dispatcher was started with.".into(),
            ));
            return;
        }
        busy.set(true);
        leptos::task::spawn_local(async move {
            let r = crate::api::post_json::<Session>(
                "/api/session",
                &serde_json::json!({ "token": t.trim() }),
            )
            .await;
            busy.set(false);
            match r {
                Ok(_) => {
                    token.set(String::new());
                    a.asking.set(None);
                    // Everything on the page (lists, streams) starts again signed in.
                    reload();
                }
                Err(e) => error.set(Some(e.message)),
            }
        });
    };
    let sign_out = move |_| {
        leptos::task::spawn_local(async move {
            let _ = crate::api::delete("/api/session").await;
            reload();
        });
    };
    let status = move || {
        a.session.get().map(|s| {
            let guarded = s.write_token || s.read_token;
            match (guarded, s.access.as_str()) {
                (false, _) => ().into_any(),
                (true, "write") => view! {
                    <span class="who" data-testid="signed-in">"Signed in "
                        <button class="link" on:click=sign_out>"Sign out"</button></span>
                }
                .into_any(),
                _ => view! {
                    <button class="link who" data-testid="sign-in"
                        on:click=move |_| a.asking.set(Some("Changes need the dispatcher's token.".into()))>
                        "Sign in"</button>
                }
                .into_any(),
            }
        })
    };
    view! {
        {status}
        <Show when=move || a.asking.get().is_some()>
            <div class="backdrop">
                <form class="dialog" role="dialog" aria-modal="true" aria-labelledby="signin-title" on:submit=submit>
                    <h2 id="signin-title">"Sign in"</h2>
                    <p>{move || a.asking.get().unwrap_or_default()}</p>
                    <label for="token">"Token"</label>
                    <input id="token" name="token" type="password" autocomplete="current-password" autofocus
                        prop:value=move || token.get()
                        on:input=move |ev| { token.set(event_target_value(&ev)); error.set(None); }/>
                    <p class="hint">"The value of the dispatcher's --token (or --read-token to only look). It is kept for this browser session."</p>
                    <Show when=move || error.get().is_some()>
                        <p class="error" role="alert" data-testid="signin-error">{move || error.get().unwrap_or_default()}</p>
                    </Show>
                    <div class="actions">
                        <button type="submit" disabled=move || busy.get()>"Sign in"</button>
                        <button type="button" on:click=move |_| { a.asking.set(None); error.set(None); }>"Cancel"</button>
                    </div>
                </form>
            </div>
        </Show>
    }
}
