use anyhow::Context as _;
use gracegate::cli::Command;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // One process-wide TLS provider (ring) before anything opens a connection.
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;
    // Help says `kubectl gracegate` when run as the plugin `kubectl-gracegate`.
    let cli = gracegate::plugin::parse();
    // Held to the end: dropping it writes out the last batch of log lines.
    let logs = gracegate::logging::init(cli.log_format);
    match cli.command {
        Command::Webhook(args) => gracegate::serve::run_webhook(args)
            .await
            .context("webhook")?,
        Command::Watcher(args) => gracegate::serve::run_watcher(args)
            .await
            .context("watcher")?,
        Command::Serve(args) => gracegate::serve::run_serve(args).await.context("serve")?,
        Command::Audit(args) => {
            let code = gracegate::audit::shell::run(args).await.context("audit")?;
            if code != 0 {
                drop(logs);
                std::process::exit(code);
            }
        }
        Command::Plan(args) => {
            print!(
                "{}",
                gracegate::plan::cluster::run(&args).await.context("plan")?
            );
        }
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
