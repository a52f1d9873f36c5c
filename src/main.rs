//! The `skiff` binary: parses arguments, sets up logging, and hands over to the server
//! (or, later, the agent). Nothing else happens here.

mod cli;
mod config;

use anyhow::{Context, Result};
use clap::Parser;
use cli::{Cli, Command};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server(args) => server(*args),
        Command::SimNodes(args) => sim_nodes(args),
        Command::Kubectl { args } => kubectl(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("skiff: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(filter: &str) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("log filter {filter:?}"))?;
    // Colours only on a terminal: under systemd the journal would store escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
    Ok(())
}

fn server(args: cli::ServerArgs) -> Result<ExitCode> {
    let (config, log) = config::server_config(args)?;
    init_logging(&log)?;
    run_until_signal(|cancel| async move {
        skiff_server::run(config, cancel).await?;
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `fut` on a fresh runtime until it ends or SIGTERM/Ctrl-C cancels it.
fn run_until_signal<F, Fut>(f: F) -> Result<()>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("skiff")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let cancel = CancellationToken::new();
        let signals = cancel.clone();
        tokio::spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for SIGTERM");
                        return;
                    }
                };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("shutting down");
            signals.cancel();
        });
        f(cancel).await
    })
}

fn sim_nodes(args: cli::SimNodesArgs) -> Result<ExitCode> {
    let mut labels = Vec::new();
    for l in &args.labels {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--label {l:?} is not key=value"))?;
        labels.push((k.to_string(), v.to_string()));
    }
    if !(args.job_duration >= 0.0 && args.job_duration.is_finite()) {
        anyhow::bail!(
            "--job-duration {} is not a number of seconds",
            args.job_duration
        );
    }
    let config = skiff_agent::sim::SimConfig {
        count: args.count,
        name_prefix: args.name_prefix.clone(),
        cpu: args.cpu.clone(),
        memory: args.memory.clone(),
        pods: args.pods,
        labels,
        job_duration: std::time::Duration::from_secs_f64(args.job_duration),
    };
    init_logging(&args.log)?;
    let kubeconfig = args.kubeconfig.clone();
    run_until_signal(|cancel| async move {
        let client = skiff_core::client::from_file(&kubeconfig)
            .await
            .with_context(|| format!("kubeconfig {}", kubeconfig.display()))?;
        skiff_agent::sim::run(client, config, cancel).await?;
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `skiff kubectl ARGS…`: kubectl from PATH with the admin kubeconfig, unless the user
/// already chose one.
fn kubectl(args: Vec<String>) -> Result<ExitCode> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|dir| dir.join("kubectl"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow::anyhow!("kubectl was not found on PATH; install kubectl to use `skiff kubectl`")
        })?;
    let mut cmd = std::process::Command::new(&found);
    cmd.args(&args);
    if std::env::var_os("KUBECONFIG").is_none() {
        let kubeconfig = std::env::var_os("SKIFF_WRITE_KUBECONFIG")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::PathBuf::from(skiff_core::defaults::KUBECONFIG_PATH));
        cmd.env("KUBECONFIG", kubeconfig);
    }
    let status = cmd
        .status()
        .with_context(|| format!("running {}", found.display()))?;
    Ok(match status.code() {
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}
