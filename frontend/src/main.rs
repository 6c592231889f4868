//! Dispatcher's dashboard: a Leptos client-side app, compiled to wasm by
//! Trunk (and cut by page: split.sh) and served by the `dispatcher` binary.
//! It talks only to the JSON API and its server-sent events; role files
//! are checked and placed in the browser by the same `app` crate the server
//! uses.

mod api;
mod auth;
mod logic;
mod pages;
mod sse;

use leptos::prelude::*;
use leptos_router::components::{Route, Router, Routes, A};
use leptos_router::{lazy_route, path, Lazy, LazyRoute};

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
                    <Route path=path!("/jobs/:id") view={Lazy::<JobRoute>::new()}/>
                    <Route path=path!("/new") view={Lazy::<NewJobRoute>::new()}/>
                    <Route path=path!("/schedules") view={Lazy::<SchedulesRoute>::new()}/>
                    <Route path=path!("/schedules/:id") view={Lazy::<ScheduleRoute>::new()}/>
                    <Route path=path!("/sweeps") view={Lazy::<SweepsRoute>::new()}/>
                    <Route path=path!("/sweeps/:id") view={Lazy::<SweepRoute>::new()}/>
                    <Route path=path!("/apps") view={Lazy::<AppsRoute>::new()}/>
                    <Route path=path!("/cluster") view={Lazy::<ClusterRoute>::new()}/>
                </Routes>
            </main>
        </Router>
    }
}

/// A page whose code is a chunk of its own, fetched when the page is first
/// opened (the jobs page, where most visits start, is in the main module).
/// `$early` runs at the navigation, while the chunk is fetched (it may start
/// the page's first read: see `api::prefetch`).
macro_rules! lazy_page {
    ($route:ident, $page:expr) => {
        lazy_page!($route, $page, || ());
    };
    ($route:ident, $page:expr, $early:expr) => {
        struct $route;

        #[lazy_route]
        impl LazyRoute for $route {
            fn data() -> Self {
                ($early)();
                $route
            }

            fn view(_this: Self) -> AnyView {
                untrack($page).into_any()
            }
        }
    };
}

lazy_page!(JobRoute, pages::job::JobPage, pages::job::prefetch);
lazy_page!(NewJobRoute, pages::new_job::NewJobPage);

/// The less visited pages share one chunk: each split point multiplies the
/// small chunks of code that some split points share (with every page its
/// own, a job page needed 36 files), and these pages share most of theirs.
macro_rules! other_page {
    ($route:ident, $n:literal) => {
        struct $route;

        impl LazyRoute for $route {
            fn data() -> Self {
                $route
            }

            async fn view(_this: Self) -> AnyView {
                other_page($n).await
            }

            async fn preload() {
                preload_other_pages().await
            }
        }
    };
}

#[leptos::wasm_split::wasm_split(
    other_pages,
    wasm_split_path = ::leptos::wasm_split,
    preload(preload_other_pages)
)]
fn other_page(page: u8) -> AnyView {
    match page {
        0 => untrack(pages::schedules::SchedulesPage).into_any(),
        1 => untrack(pages::schedules::SchedulePage).into_any(),
        2 => untrack(pages::sweeps::SweepsPage).into_any(),
        3 => untrack(pages::sweeps::SweepPage).into_any(),
        4 => untrack(pages::apps::AppsPage).into_any(),
        _ => untrack(pages::cluster::ClusterPage).into_any(),
    }
}

other_page!(SchedulesRoute, 0);
other_page!(ScheduleRoute, 1);
other_page!(SweepsRoute, 2);
other_page!(SweepRoute, 3);
other_page!(AppsRoute, 4);
other_page!(ClusterRoute, 5);

/// Starts fetching the job page's code once the pointer or focus reaches
/// the jobs table, so that opening a job from the list rarely waits for it
/// (the first visit itself still loads only the jobs page's part).
pub(crate) fn warm_job_page() {
    thread_local!(static WARMED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
    if !WARMED.with(|w| w.replace(true)) {
        leptos::task::spawn_local(<JobRoute as LazyRoute>::preload());
    }
}
