//! Dispatcher's shared core, compiled natively for the server and to wasm for
//! the dashboard: the role-file parser and validator ([`role`]), gang
//! placement ([`placement`]), the peer contract ([`peer`]) and the job model
//! and API types ([`model`]). No I/O and no async runtime live here.

pub mod diag;
pub mod model;
#[cfg(feature = "peer")]
pub mod peer;
pub mod placement;
pub mod role;
pub mod sweep;
pub mod templates;
pub mod yaml;

pub use diag::{Diagnostic, Severity};
pub use role::{check, RoleFile};
