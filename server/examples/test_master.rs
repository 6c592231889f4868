//! The test master (`tests/mesos/master.rs`) as a process, for the browser
//! tests of the dashboard on the Mesos backend (`end2end/`). A test tool
//! speaking Mesos' wire protocol, never a backend to run jobs on.
//!
//! `cargo run -p dispatcher --example test_master -- [agents] [principal:secret]`
//! prints the leading master's `host:port` on its first line, then serves
//! until killed. With `principal:secret` it requires HTTP Basic
//! authentication, as a master with `--authenticate_http_frameworks` does.

#[path = "../tests/mesos/master.rs"]
mod master;

use std::io::Write;

#[tokio::main]
async fn main() {
    let agents: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2);
    let m = master::TestMaster::start(1.0).await;
    if let Some((p, s)) = std::env::args()
        .nth(2)
        .as_deref()
        .and_then(|a| a.split_once(':'))
    {
        m.require_auth(p, s);
    }
    for _ in 0..agents {
        m.add_agent(2.0, 2048.0, (31000, 31099)).await;
    }
    println!("{}", m.addr(0));
    std::io::stdout().flush().unwrap();
    std::future::pending::<()>().await;
}
