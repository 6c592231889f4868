//! The Mesos backend: a framework speaking the v1 scheduler HTTP API.
//!
//! `framework` is the pure core (offers, tasks, reconciliation); `conn`
//! keeps the subscription and sends calls; `detect` finds the leading
//! master (a list or ZooKeeper); `files` reads sandboxes through
//! the agents' files API; `task` turns peers into TaskInfos.

pub mod conn;
pub mod detect;
pub mod files;
pub mod framework;
pub mod task;

pub use task::{offer_from, parse_task_id, peer_state, task_id, task_info};

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
