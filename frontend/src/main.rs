//! Dispatcher's dashboard: a Leptos client-side app, compiled to wasm by
//! Trunk and served by the `dispatcher` binary. It talks only to the JSON API
//! and its server-sent events; role files are checked and placed in the
//! browser by the same `app` crate the server uses.

mod api;
mod auth;
mod logic;
mod pages;
mod sse;

use leptos::prelude::*;
use leptos_router::components::{Route, Router, Routes, A};
use leptos_router::path;

fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(App);
}

#[component]
fn App() -> impl IntoView {
    view! {
        <Router>
            <header class="top">
                <a class="brand" href="/jobs">"Dispatcher"</a>
                <nav aria-label="main">
                    <A href="/jobs">"Jobs"</A>
                    <A href="/new">"New job"</A>
                    <A href="/schedules">"Schedules"</A>
                    <A href="/sweeps">"Sweeps"</A>
                    <A href="/apps">"Apps"</A>
                    <A href="/cluster">"Cluster"</A>
                </nav>
                <auth::SignIn/>
            </header>
            <main id="main">
                <Routes fallback=|| view! { <section class="empty"><h1>"Not found"</h1><p>"There is no page here. "<a href="/jobs">"See the jobs."</a></p></section> }>
                    <Route path=path!("/") view=pages::jobs::JobsPage/>
                    <Route path=path!("/jobs") view=pages::jobs::JobsPage/>
                    <Route path=path!("/jobs/:id") view=pages::job::JobPage/>
                    <Route path=path!("/new") view=pages::new_job::NewJobPage/>
                    <Route path=path!("/schedules") view=pages::schedules::SchedulesPage/>
                    <Route path=path!("/schedules/:id") view=pages::schedules::SchedulePage/>
                    <Route path=path!("/sweeps") view=pages::sweeps::SweepsPage/>
                    <Route path=path!("/sweeps/:id") view=pages::sweeps::SweepPage/>
                    <Route path=path!("/apps") view=pages::apps::AppsPage/>
                    <Route path=path!("/cluster") view=pages::cluster::ClusterPage/>
                </Routes>
            </main>
        </Router>
    }
}
