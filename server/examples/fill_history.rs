//! Writes a history of finished jobs into a data directory, for the
//! dashboard's browser test over a big history:
//! `fill_history <data dir> <jobs>` (the directory must not be in use).

#[path = "../benches/support/history_fill.rs"]
mod history_fill;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(jobs)) = (args.next(), args.next().and_then(|n| n.parse().ok())) else {
        eprintln!("usage: fill_history <data dir> <jobs>");
        std::process::exit(2);
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap();
    history_fill::fill(&dir, jobs);
}
