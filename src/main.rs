use anyhow::Context as _;
use gracegate::cli::{Command, LogFormat};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // One process-wide TLS provider (ring) before anything opens a connection.
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;
    let cli = gracegate::cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Webhook(args) => gracegate::webhook::server::run(args)
            .await
            .context("webhook")?,
        Command::Watcher(args) => gracegate::serve::run_watcher(args)
            .await
            .context("watcher")?,
        Command::Serve(args) => gracegate::serve::run_serve(args).await.context("serve")?,
        Command::Certs(args) => {
            let next = gracegate::certs::issue(
                &args.out,
                &args.service,
                &args.namespace,
                args.valid_days,
                args.step(),
            )
            .with_context(|| format!("certificates in {}", args.out.display()))?;
            println!("{next}");
        }
    }
    Ok(())
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
