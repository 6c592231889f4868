//! A free port for a server a test starts, stops and starts again.

/// A port above the ephemeral range (32768–60999 on Linux), free now.
///
/// Not port 0's pick: that is an ephemeral port, and while a restarted
/// server is down, a client reconnecting to it can be given that same port
/// as its own source port and connect to itself (TCP's simultaneous open),
/// which then holds the port so the server cannot listen on it again (seen
/// once in the kill soak: "Address already in use").
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id()
        .wrapping_mul(2_654_435_761)
        .wrapping_add(NEXT.fetch_add(7919, Ordering::Relaxed));
    for i in 0..4000u32 {
        let port = 61000 + ((seed.wrapping_add(i * 131)) % 4535) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
