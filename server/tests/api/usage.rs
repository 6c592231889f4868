//! Resource usage of a real busy peer on the local backend: one that holds
//! 150 MB and burns a core shows about that, on the usage route, as live
//! `usage` events, in the peers' summary and as `usage.csv` in the archive.

use crate::helpers::*;
use crate::usage_check::{check_burner_usage, BURNER};

#[tokio::test]
async fn a_busy_peer_s_cpu_and_memory_are_sampled_served_streamed_and_archived() {
    let app = spawn_app_with(|c| c.usage_every_secs = 0.5).await;
    app.upload("burner", BURNER).await;
    let id = app.submit("burner", "name: b\npeers: 1\ncpu: 1\n").await;
    check_burner_usage(&app, id).await;
}
