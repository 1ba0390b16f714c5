//! The contract between the browser and the server: wire types, error kinds, validation and
//! the server functions. Compiles for both targets; server-only bodies reach `jobs` under `ssr`.

pub mod client;
mod error;
mod server_fns;
mod types;
mod validate;
pub mod wire;
#[cfg(feature = "ssr")]
mod webhook_target;

pub use error::{ApiError, ErrorKind};
pub use server_fns::*;
pub use types::*;
pub use validate::{check_prompt, resolve_params};
#[cfg(feature = "ssr")]
pub use webhook_target::{refused_range, WebhookTargets, MAX_WEBHOOK_URL_LEN};

/// Longest prompt accepted, in characters after trimming.
pub const MAX_PROMPT_CHARS: usize = 1000;
