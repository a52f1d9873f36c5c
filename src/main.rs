//! The `skiff` binary: parses arguments, sets up logging, and hands over to the server
//! and the agent, the image store, or a container's shim. Nothing else happens here.

mod cli;
mod config;
mod secrets_encrypt;
mod token;

use anyhow::{Context, Result};
use clap::Parser;
use cli::{Cli, Command};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Server(args) => server(*args),
        Command::Agent(args) => agent(*args),
        Command::Token(args) => init_logging("warn")
            .and_then(|()| run_until_signal(|_| token::run(args)))
            .map(|()| ExitCode::SUCCESS),
        Command::Certificate(args) => certificate(args),
        Command::Images(args) => images(args),
        Command::Shim { dir } => shim(&dir),
        Command::ContainerExec { dir, tty, args } => {
            let code = skiff_embedded::container::exec::main(&dir, args, tty);
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(255)))
        }
        Command::Killall { data_dir } => killall(data_dir),
        Command::SimNodes(args) => sim_nodes(args),
        Command::Kubectl { args } => kubectl(args),
        Command::SecretsEncrypt(args) => secrets_encrypt::run(args),
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
    let settings = config::server_config(args)?;
    init_logging(&settings.log)?;
    let (config, agent) = (settings.server, settings.agent);
    run_until_signal(|cancel| async move {
        let Some(agent) = agent else {
            skiff_server::run(config, cancel).await?;
            return Ok(());
        };
        // The node in this process: it starts once the API serves, with the client the
        // server issues it, and talks to the API over HTTPS like any other node.
        let (node_tx, node_rx) = tokio::sync::oneshot::channel();
        let mut server = tokio::spawn(skiff_server::run_with_node(
            config,
            cancel.clone(),
            Some(node_tx),
        ));
        let agent_cancel = cancel.clone();
        let mut node = tokio::spawn(async move {
            match node_rx.await {
                Ok(creds) => skiff_agent::kubelet::run(creds, agent, agent_cancel).await,
                Err(_) => Ok(()),
            }
        });
        // Whichever ends first stops the other (a finished task is not awaited again);
        // its error is the reason reported.
        let (first, then) = tokio::select! {
            r = &mut server => {
                cancel.cancel();
                (server_ended(r), node_ended(node.await))
            }
            r = &mut node => {
                cancel.cancel();
                (node_ended(r), server_ended(server.await))
            }
        };
        first.and(then)
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `skiff agent`: join a server and run a node.
fn agent(args: cli::AgentArgs) -> Result<ExitCode> {
    let settings = config::agent_config(args)?;
    init_logging(&settings.log)?;
    run_until_signal(|cancel| async move {
        skiff_agent::join::run(settings.join, settings.node, cancel).await?;
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `skiff certificate rotate`: the certificates signed by the CA are removed, so that
/// skiff issues (server) or asks for (agent) new ones at its next start. The CA, the
/// ServiceAccount signing key and the tokens stay.
fn certificate(args: cli::CertificateArgs) -> Result<ExitCode> {
    let cli::CertificateCommand::Rotate { data_dir } = args.command;
    let data_dir =
        data_dir.unwrap_or_else(|| std::path::PathBuf::from(skiff_core::defaults::DATA_DIR));
    let mut removed = skiff_agent::join::remove_identity(&data_dir);
    let server_tls = data_dir.join("server").join("tls");
    if let Ok(entries) = std::fs::read_dir(&server_tls) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let leaf = name.starts_with("client-") || name.starts_with("serving-");
            if leaf && (name.ends_with(".crt") || name.ends_with(".key")) {
                std::fs::remove_file(e.path())
                    .with_context(|| format!("removing {}", e.path().display()))?;
                removed += 1;
            }
        }
    }
    if removed == 0 {
        anyhow::bail!("no certificates to rotate in {}", data_dir.display());
    }
    println!(
        "removed {removed} certificate files from {}; restart skiff to get new ones",
        data_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// How the server task of `skiff server` ended, as its result.
fn server_ended(
    r: std::result::Result<std::result::Result<(), skiff_server::Error>, tokio::task::JoinError>,
) -> Result<()> {
    Ok(r.context("the server panicked")??)
}

/// How the node task of `skiff server` ended, as its result.
fn node_ended(
    r: std::result::Result<
        std::result::Result<(), skiff_agent::kubelet::Error>,
        tokio::task::JoinError,
    >,
) -> Result<()> {
    r.context("the node panicked")?.context("the node failed")
}

/// `skiff shim DIR`: one container's shim. Single-threaded on purpose (libcontainer
/// forks); it logs to its stderr, which the agent points at the container's folder.
fn shim(dir: &std::path::Path) -> Result<ExitCode> {
    let filter = std::env::var("SKIFF_LOG").unwrap_or_else(|_| "warn".into());
    // Its own file, not fd 2: the container's init is forked from the shim and logs
    // through the same subscriber after its stderr has become the container's.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("shim.log"))
        .with_context(|| format!("opening {}", dir.join("shim.log").display()))?;
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .with_context(|| format!("log filter {filter:?}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(log))
        .init();
    let code = skiff_embedded::container::shim::main(dir);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// `skiff killall`: every container of the node stopped, its mounts undone, and the
/// node's network (nftables table, bridge, VXLAN device, routes) removed.
fn killall(data_dir: Option<std::path::PathBuf>) -> Result<ExitCode> {
    init_logging("warn")?;
    let data_dir =
        data_dir.unwrap_or_else(|| std::path::PathBuf::from(skiff_core::defaults::DATA_DIR));
    let killed = skiff_agent::kubelet::killall(&data_dir)
        .with_context(|| format!("stopping the containers of {}", data_dir.display()))?;
    println!("stopped {killed} containers");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?
        .block_on(skiff_agent::network::remove())
        .context("removing the node's network")?;
    Ok(ExitCode::SUCCESS)
}

/// `skiff images …`: the node's image store, used directly (the node need not run).
fn images(args: cli::ImagesArgs) -> Result<ExitCode> {
    use skiff_embedded::image::ImageStore;
    let data_dir = args
        .data_dir
        .unwrap_or_else(|| std::path::PathBuf::from(skiff_core::defaults::DATA_DIR));
    let root = data_dir.join("agent").join("image-store");
    let mut store = ImageStore::open(&root)
        .with_context(|| format!("opening the image store in {}", root.display()))?;
    match args.command {
        cli::ImagesCommand::Import { files } => {
            for f in files {
                let names = store
                    .import(&f)
                    .with_context(|| format!("importing {}", f.display()))?;
                for n in names {
                    println!("imported {n}");
                }
            }
        }
        cli::ImagesCommand::Ls => {
            println!("{:<60} {:<20} {:>10}", "IMAGE", "IMAGE ID", "SIZE");
            for i in store.list().context("listing the images")? {
                let id = i.config_digest.to_string();
                let short = id
                    .trim_start_matches("sha256:")
                    .chars()
                    .take(13)
                    .collect::<String>();
                println!("{:<60} {:<20} {:>10}", i.name, short, human_size(i.size));
            }
        }
        cli::ImagesCommand::Rm { names } => {
            let mut missing = Vec::new();
            for n in names {
                if store.remove(&n).with_context(|| format!("removing {n}"))? {
                    println!("removed {n}");
                } else {
                    missing.push(n);
                }
            }
            if !missing.is_empty() {
                anyhow::bail!("no such image: {}", missing.join(", "));
            }
        }
        cli::ImagesCommand::Prune => {
            // The images of containers on this node stay, named or not: their layers
            // are mounted.
            let containers = skiff_embedded::container::Containers::new(
                data_dir.join("agent").join("containers"),
                "/proc/self/exe",
            );
            let mut in_use = Vec::new();
            for id in containers.list().context("listing the containers")? {
                let labels = containers.labels(&id).unwrap_or_default();
                let image = labels.get(skiff_agent::kubelet::worker::labels::IMAGE_ID);
                if let Some(digest) = image
                    .and_then(|i| i.rsplit_once('@'))
                    .and_then(|(_, d)| d.parse().ok())
                {
                    in_use.push(digest);
                }
            }
            let freed = store.prune(&in_use).context("pruning the image store")?;
            println!("freed {}", human_size(freed));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.1}{}", UNITS[unit])
    }
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
