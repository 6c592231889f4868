//! The Mesos backend: a framework speaking the v1 scheduler HTTP API.
//!
//! `framework` is the pure core (offers, tasks, reconciliation); `backend`
//! is what the runner drives (tasks recorded and launched, events turned
//! into peer updates, teardown) and `start` wires it all; `conn`
//! keeps the subscription and sends calls; `detect` finds the leading
//! master (a list or ZooKeeper); `files` reads sandboxes through
//! the agents' files API; `task` turns peers into TaskInfos.

pub mod backend;
pub mod conn;
pub mod detect;
pub mod files;
pub mod framework;
pub mod task;

pub use task::{offer_from, parse_task_id, peer_state, task_id, task_info};

/// How the dispatcher reaches the master and the agents: `https` for the
/// master (agents say their own scheme in their offers), and the roots
/// trusted beside the system's (`--mesos-ca-file`).
#[derive(Clone, Default)]
pub struct Transport {
    pub https: bool,
    roots: Vec<reqwest::Certificate>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Transport({}, {} extra roots)",
            self.scheme(),
            self.roots.len()
        )
    }
}

impl Transport {
    /// `ca_file`: PEM, one or more certificates.
    pub fn new(https: bool, ca_file: Option<&std::path::Path>) -> Result<Transport, String> {
        let mut roots = Vec::new();
        if let Some(f) = ca_file {
            let what = format!("--mesos-ca-file {}", f.display());
            let pem = std::fs::read(f).map_err(|e| format!("{what}: cannot read it: {e}"))?;
            roots = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("{what}: not PEM certificates: {e}"))?;
            if roots.is_empty() {
                return Err(format!(
                    "{what}: holds no certificate (want PEM, -----BEGIN CERTIFICATE-----)"
                ));
            }
        }
        Ok(Transport { https, roots })
    }

    pub fn scheme(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }

    /// A client builder that trusts the system's roots and the CA file's.
    pub fn client(&self) -> reqwest::ClientBuilder {
        self.roots.iter().fold(reqwest::Client::builder(), |b, c| {
            b.add_root_certificate(c.clone())
        })
    }
}

/// An HTTP error with its causes, which say what TLS or the network
/// refused (reqwest's own message is only "error sending request").
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        cur = s.source();
    }
    out
}

/// HTTP Basic credentials for the master (`--authenticate_http_frameworks`)
/// and the agents' files API. The secret never appears in `Debug` output.
#[derive(Clone)]
pub struct Credentials {
    pub principal: String,
    secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, secret hidden)", self.principal)
    }
}

impl Credentials {
    /// The principal and the first line of `secret_file`.
    pub fn from_file(
        principal: &str,
        secret_file: &std::path::Path,
    ) -> Result<Credentials, String> {
        let text = std::fs::read_to_string(secret_file).map_err(|e| {
            format!(
                "--mesos-secret-file {}: cannot read it: {e}",
                secret_file.display()
            )
        })?;
        let secret = text.lines().next().unwrap_or("").to_string();
        if secret.is_empty() {
            return Err(format!(
                "--mesos-secret-file {}: the file is empty; its first line is the secret",
                secret_file.display()
            ));
        }
        if principal.is_empty() || principal.contains(':') {
            return Err(format!(
                "--mesos-principal {principal:?}: must be non-empty and without ':'"
            ));
        }
        Ok(Credentials {
            principal: principal.to_string(),
            secret,
        })
    }

    pub fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        req.basic_auth(&self.principal, Some(&self.secret))
    }
}

/// Adds the credentials, if any, to a request.
pub fn authorized(
    req: reqwest::RequestBuilder,
    creds: Option<&Credentials>,
) -> reqwest::RequestBuilder {
    match creds {
        Some(c) => c.apply(req),
        None => req,
    }
}
