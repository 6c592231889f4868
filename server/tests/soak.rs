//! The kill soak on the local backend (see `common/soak.rs`).

#[path = "common/ports.rs"]
mod ports;
#[path = "common/soak.rs"]
mod soak;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_dispatcher_at_random_moments_loses_nothing_it_acknowledged() {
    soak::soak("local", &[]).await;
}
