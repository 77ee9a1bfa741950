//! The flags of `gracegate certs`.

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// The webhook's Service name.
    #[arg(long, env = "GRACEGATE_SERVICE", default_value = "gracegate")]
    pub service: String,

    /// The webhook's namespace.
    #[arg(long, env = "GRACEGATE_NAMESPACE", default_value = "gracegate-system")]
    pub namespace: String,

    /// Directory for ca.crt, ca.key, tls.crt, tls.key and ca-bundle.
    #[arg(long, env = "GRACEGATE_CERTS_OUT", default_value = "certs")]
    pub out: PathBuf,

    /// Validity of the serving certificate.
    #[arg(long, env = "GRACEGATE_CERT_VALID_DAYS", default_value_t = 365)]
    pub valid_days: i64,

    /// Start a CA rotation: a new CA, and a ca-bundle trusting the old and the new one; the
    /// serving certificate is left as it is. Without it, the CA in --out is kept.
    #[arg(
        long,
        env = "GRACEGATE_CERTS_NEW_CA",
        conflicts_with = "drop_previous_ca"
    )]
    pub new_ca: bool,

    /// Finish a CA rotation: the ca-bundle trusts the current CA only.
    #[arg(long, env = "GRACEGATE_CERTS_DROP_PREVIOUS_CA")]
    pub drop_previous_ca: bool,
}

impl CertsArgs {
    pub fn step(&self) -> crate::certs::CaStep {
        match (self.new_ca, self.drop_previous_ca) {
            (true, _) => crate::certs::CaStep::NewCa,
            (false, true) => crate::certs::CaStep::DropPreviousCa,
            (false, false) => crate::certs::CaStep::Reuse,
        }
    }
}
