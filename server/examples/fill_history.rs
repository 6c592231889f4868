//! Writes a history of finished jobs into a data directory, for the
//! dashboard's browser tests over a big history and a big job:
//! `fill_history <data dir> <jobs> [<peers of one more, big, job>]` (the
//! directory must not be in use). Prints the big job's id.

#[path = "../benches/support/history_fill.rs"]
mod history_fill;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(jobs)) = (args.next(), args.next().and_then(|n| n.parse().ok())) else {
        eprintln!("usage: fill_history <data dir> <jobs> [<peers of one big job>]");
        std::process::exit(2);
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap();
    history_fill::fill(&dir, jobs);
    if let Some(peers) = args.next().and_then(|n| n.parse().ok()) {
        println!("{}", history_fill::fill_big_job(&dir, peers));
    }
}
