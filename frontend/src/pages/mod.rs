//! One module per page.

pub mod apps;
pub mod charts;
pub mod cluster;
pub mod job;
pub mod jobs;
pub mod new_job;
pub mod schedules;
pub mod sweeps;

use leptos::prelude::*;

use crate::sse::Conn;

/// The live-connection badge shown beside live views.
#[component]
pub fn ConnBadge(conn: ReadSignal<Conn>) -> impl IntoView {
    let text = move || match conn.get() {
        Conn::Connecting => "connecting…",
        Conn::Open => "live",
        Conn::Reconnecting => "reconnecting…",
        Conn::Closed => "offline",
        Conn::Ended => "ended",
    };
    let class = move || match conn.get() {
        Conn::Open => "conn conn-live",
        Conn::Closed => "conn conn-off",
        Conn::Ended => "conn conn-ended",
        _ => "conn conn-wait",
    };
    view! { <span class=class role="status" data-testid="conn">{text}</span> }
}

/// A state badge (job or peer state).
#[component]
pub fn StateBadge(#[prop(into)] state: Signal<String>) -> impl IntoView {
    view! { <span class=move || format!("badge state-{}", state.get().to_lowercase()) data-testid="state">{move || state.get()}</span> }
}

/// A dismissable error line.
#[component]
pub fn ErrorLine(error: RwSignal<Option<String>>) -> impl IntoView {
    view! {
        <Show when=move || error.with(Option::is_some)>
            <p class="error" role="alert">
                {move || error.get().unwrap_or_default()}
                " "
                <button class="link" on:click=move |_| error.set(None)>"dismiss"</button>
            </p>
        </Show>
    }
}
