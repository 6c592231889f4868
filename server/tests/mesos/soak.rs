//! The kill soak against the test master (see `common/soak.rs`): the
//! dispatcher is SIGKILLed while it is subscribed, launching and
//! acknowledging, and each restart resubscribes with its stored framework
//! id and adopts what is still running.

#[path = "../common/soak.rs"]
mod shared;

use super::master::TestMaster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_framework_at_random_moments_loses_nothing_it_acknowledged() {
    let m = TestMaster::start(1.0).await;
    for i in 0..3u64 {
        let base = 32000 + i * 100;
        m.add_agent(4.0, 4096.0, (base, base + 99)).await;
    }
    let extra: Vec<String> = [
        "--master",
        &m.addr(0),
        "--fast-timers",
        "--offer-hold-secs",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    shared::soak("mesos-test-master", &extra).await;
}
