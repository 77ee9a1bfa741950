use anyhow::Context as _;
use gracegate::cli::{Command, LogFormat};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // One process-wide TLS provider (ring) before anything opens a connection.
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;
    // Help says `kubectl gracegate` when run as the plugin `kubectl-gracegate`.
    let cli = gracegate::plugin::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Webhook(args) => gracegate::webhook::server::run(args)
            .await
            .context("webhook")?,
        Command::Watcher(args) => gracegate::serve::run_watcher(args)
            .await
            .context("watcher")?,
        Command::Serve(args) => gracegate::serve::run_serve(args).await.context("serve")?,
        Command::Audit(args) => {
            let code = gracegate::audit::shell::run(args).await.context("audit")?;
            if code != 0 {
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
            let bundle =
                gracegate::certs::generate(&args.service, &args.namespace, args.valid_days)?;
            gracegate::certs::write(&bundle, &args.out)
                .with_context(|| format!("writing certificates to {}", args.out.display()))?;
            println!(
                "wrote ca.crt, ca.key, tls.crt, tls.key and ca-bundle to {} for {}",
                args.out.display(),
                gracegate::certs::subject_alt_names(&args.service, &args.namespace).join(", ")
            );
        }
    }
    Ok(())
}

fn init_logging(format: LogFormat) {
    gracegate::logging::init(format);
}
