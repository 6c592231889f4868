//! The `dispatcher` binary: reads the configuration, starts logging and runs
//! the application until SIGINT or SIGTERM.

use clap::Parser;
use dispatcher::config::LogFormat;
use dispatcher::{Application, Config};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cfg = Config::parse();
    let teardown = cfg.teardown;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=info"));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match cfg.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
    let app = match Application::build(cfg).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("dispatcher: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if teardown {
        return match app.teardown().await {
            Ok(id) => {
                println!("framework {id} torn down: the master kills its tasks");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("dispatcher: teardown failed: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    tracing::info!(address = %app.local_addr(), "dispatcher listening on http://{}", app.local_addr());
    if let Err(e) = app.run_until(shutdown_signal()).await {
        eprintln!("dispatcher: {e}");
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
