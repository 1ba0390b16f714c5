//! Configuration: defaults, then an optional TOML file, then `EASEL_*` environment variables
//! and command-line flags (`easel --help` lists them all). The site address and asset paths
//! come from Leptos.toml / `LEPTOS_*` variables.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// SQLite database and images live here.
    pub data_dir: PathBuf,
    /// One folder per model, each with its model.toml.
    pub models_dir: PathBuf,
    /// The model loaded at start and used when a request names none.
    pub default_model: String,
    /// Models offered to clients (folder names); empty offers every model in `models_dir`.
    pub models: Vec<String>,
    /// "cpu", or "gpu" (CUDA or Metal when built with that feature; falls back to the CPU).
    pub device: String,
    /// Waiting jobs at most; beyond, submits answer 503 queue_full.
    pub max_queued: u32,
    /// Active jobs per client address at most: a ceiling for everyone behind one NAT; beyond,
    /// submits answer 429 busy.
    pub max_active_per_client: u32,
    /// Active jobs per visitor (browser cookie) at most, under the address's ceiling.
    pub max_active_per_visitor: u32,
    /// A job running longer than this fails with `timeout`.
    pub job_timeout_secs: u64,
    /// Submits per minute per client IP (JSON API and server function together).
    pub submits_per_minute: u32,
    /// Sustained status/events/image requests per second per client IP ...
    pub reads_per_second: u32,
    /// ... and the burst allowed above that rate.
    pub read_burst: u32,
    /// Peers whose `X-Forwarded-For` is believed (addresses or CIDR ranges). Empty: nobody's.
    pub trusted_proxies: Vec<TrustedProxy>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Recent jobs shown in a visitor's history.
    pub history_len: u32,
    /// On SIGTERM, how long the running job may take to finish before it is re-queued.
    pub shutdown_grace_secs: u64,
    /// Log as JSON lines instead of text.
    pub log_json: bool,
    /// Where jobs live: "sqlite" (embedded, in `data_dir`; one process) or a Redis URL
    /// (`redis://host:port/db`; shared by many web and worker processes).
    pub store: String,
    /// Whether this process runs a worker. Off: web only (needs a shared store).
    pub worker: bool,
    /// The worker-only process's address for /healthz, /readyz and /metrics.
    pub worker_addr: std::net::SocketAddr,
    /// A running job whose worker is silent this long is taken over by another worker (Redis).
    pub heartbeat_secs: u64,
    /// A finished job's record and image are kept this long, then deleted (410 `expired`);
    /// 0 keeps them for good.
    pub retention_secs: u64,
    /// IPv6 clients are counted by this many leading bits (their /64 by default).
    pub ipv6_prefix: u8,
    /// Bearer keys that open `/v1/images/generations`; none: it is open to all.
    pub api_keys: Vec<String>,
    /// Readiness fails when the data disk has less free space than this.
    pub min_free_disk_mb: u64,
    /// A client that has not sent a request's headers within this time is disconnected.
    pub header_read_timeout_secs: u64,
    /// Open connections at most (event streams included).
    pub max_connections: usize,
    /// On SIGTERM, connections still open after this long are dropped.
    pub shutdown_deadline_secs: u64,
    /// A request's body must arrive within this time, else 408.
    pub request_timeout_secs: u64,
    /// Open event streams per client at most ...
    pub sse_per_client: usize,
    /// ... and in all.
    pub sse_total: usize,
    /// An event stream ends after this long (the page reconnects or polls).
    pub sse_lifetime_secs: u64,
    /// Signs webhooks (Standard Webhooks: `whsec_` and base64). Unset: jobs may name no webhook.
    pub webhook_secret: Option<String>,
    /// Hosts (names or addresses) a webhook may reach although they are loopback or private.
    pub webhook_allow_hosts: Vec<String>,
    /// Waits before each retry of a webhook that was not answered with 2xx; then it is given up.
    pub webhook_retry_secs: Vec<u64>,
    /// A webhook attempt (connect, send, answer) must finish within this time.
    pub webhook_timeout_secs: u64,
}

/// What this process does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The site and the API, plus a worker unless `worker` is off.
    Web,
    /// Only a worker: claims jobs and paints; HTTP only for health and metrics.
    Worker,
}

/// Whether the store is the embedded SQLite one or Redis at a URL.
#[derive(Clone, Debug, PartialEq)]
pub enum StoreKind {
    Sqlite,
    Redis(String),
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: "data".into(),
            models_dir: "models".into(),
            default_model: "shapes".into(),
            models: Vec::new(),
            device: "cpu".into(),
            max_queued: 32,
            max_active_per_client: 4,
            max_active_per_visitor: 1,
            job_timeout_secs: 300,
            submits_per_minute: 8,
            reads_per_second: 20,
            read_burst: 200,
            trusted_proxies: Vec::new(),
            max_body_bytes: 16 * 1024,
            history_len: 24,
            shutdown_grace_secs: 20,
            log_json: false,
            store: "sqlite".into(),
            worker: true,
            worker_addr: ([127, 0, 0, 1], 3100).into(),
            heartbeat_secs: 15,
            retention_secs: 7 * 24 * 3600,
            ipv6_prefix: 64,
            api_keys: Vec::new(),
            min_free_disk_mb: 256,
            header_read_timeout_secs: 10,
            max_connections: 10_000,
            shutdown_deadline_secs: 30,
            request_timeout_secs: 30,
            sse_per_client: 16,
            sse_total: 10_000,
            sse_lifetime_secs: 3600,
            webhook_secret: None,
            webhook_allow_hosts: Vec::new(),
            // Standard Webhooks' schedule: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
            webhook_retry_secs: vec![5, 300, 1800, 7200, 18000, 36000, 36000],
            webhook_timeout_secs: 10,
        }
    }
}

/// Command-line flags; each also reads its `EASEL_*` variable. Unset ones leave the file's or
/// the default value.
#[derive(Debug, Parser, Serialize)]
#[command(name = "easel", version, about = "easel: a text-to-image web app. Serves on the address in Leptos.toml (LEPTOS_SITE_ADDR overrides).")]
struct Flags {
    /// What this process is: the site with its worker (default), or `worker` alone
    #[arg(value_enum)]
    #[serde(skip)]
    role: Option<Role>,
    /// TOML file with any of the settings below (snake_case keys)
    #[arg(long, env = "EASEL_CONFIG")]
    #[serde(skip)]
    config: Option<PathBuf>,
    #[arg(long, env = "EASEL_DATA_DIR", help = "Where the SQLite database and images live [default: data]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    #[arg(long, env = "EASEL_MODELS_DIR", help = "Folder of model folders [default: models]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    models_dir: Option<PathBuf>,
    #[arg(long, env = "EASEL_DEFAULT_MODEL", help = "Model loaded at start [default: tiny]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    default_model: Option<String>,
    #[arg(long, env = "EASEL_MODELS", value_delimiter = ',', help = "Models offered, comma-separated [default: all]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    models: Option<Vec<String>>,
    #[arg(long, env = "EASEL_DEVICE", help = "cpu or gpu [default: cpu]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<String>,
    #[arg(long, env = "EASEL_MAX_QUEUED", help = "Waiting jobs at most [default: 32]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_queued: Option<u32>,
    #[arg(long, env = "EASEL_MAX_ACTIVE_PER_CLIENT", help = "Active jobs per client IP, for all its visitors together [default: 4]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_active_per_client: Option<u32>,
    #[arg(long, env = "EASEL_MAX_ACTIVE_PER_VISITOR", help = "Active jobs per visitor (browser) [default: 1]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_active_per_visitor: Option<u32>,
    #[arg(long, env = "EASEL_JOB_TIMEOUT_SECS", help = "Per-job time limit [default: 300]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    job_timeout_secs: Option<u64>,
    #[arg(long, env = "EASEL_SUBMITS_PER_MINUTE", help = "Submits per minute per IP [default: 8]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    submits_per_minute: Option<u32>,
    #[arg(long, env = "EASEL_READS_PER_SECOND", help = "Status/events/image requests per second per IP [default: 20]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    reads_per_second: Option<u32>,
    #[arg(long, env = "EASEL_READ_BURST", help = "Burst above that rate [default: 200]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    read_burst: Option<u32>,
    #[arg(long, env = "EASEL_TRUSTED_PROXIES", value_delimiter = ',', help = "Proxies whose X-Forwarded-For is believed, comma-separated IPs or CIDRs [default: none]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    trusted_proxies: Option<Vec<TrustedProxy>>,
    #[arg(long, env = "EASEL_MAX_BODY_BYTES", help = "Largest request body [default: 16384]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_body_bytes: Option<usize>,
    #[arg(long, env = "EASEL_HISTORY_LEN", help = "Jobs in a visitor's history [default: 24]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    history_len: Option<u32>,
    #[arg(long, env = "EASEL_SHUTDOWN_GRACE_SECS", help = "Time the running job gets on SIGTERM [default: 20]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    shutdown_grace_secs: Option<u64>,
    #[arg(long, env = "EASEL_LOG_JSON", value_parser = clap::builder::BoolishValueParser::new(), help = "Log JSON lines: true/false, 1/0, yes/no [default: false]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_json: Option<bool>,
    #[arg(long, env = "EASEL_STORE", help = "sqlite, or redis://host:port/db to share jobs between processes [default: sqlite]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    store: Option<String>,
    #[arg(long, env = "EASEL_WORKER", value_parser = clap::builder::BoolishValueParser::new(), help = "Run a worker in this web process: on/off [default: on]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    worker: Option<bool>,
    /// Web only: serve the site and the API, run no jobs (same as --worker off)
    #[arg(long)]
    #[serde(skip)]
    no_worker: bool,
    #[arg(long, env = "EASEL_WORKER_ADDR", help = "`easel worker`: address of /healthz, /readyz, /metrics [default: 127.0.0.1:3100]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    worker_addr: Option<std::net::SocketAddr>,
    #[arg(long, env = "EASEL_HEARTBEAT_SECS", help = "Redis: a running job whose worker is silent this long runs elsewhere [default: 15]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    heartbeat_secs: Option<u64>,
    #[arg(long, env = "EASEL_RETENTION_SECS", help = "How long finished jobs and images are kept, then deleted (410 expired) [default: 604800]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    retention_secs: Option<u64>,
    #[arg(long, env = "EASEL_IPV6_PREFIX", value_parser = clap::value_parser!(u8).range(1..=128), help = "IPv6 clients are counted per prefix of this length [default: 64]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    ipv6_prefix: Option<u8>,
    #[arg(long, env = "EASEL_API_KEYS", value_delimiter = ',', hide_env_values = true, help = "Bearer keys for /v1/images/generations, comma-separated [default: none, open]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    api_keys: Option<Vec<String>>,
    #[arg(long, env = "EASEL_MIN_FREE_DISK_MB", help = "Not ready when the data disk has less free space [default: 256]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    min_free_disk_mb: Option<u64>,
    #[arg(long, env = "EASEL_HEADER_READ_TIMEOUT_SECS", help = "Disconnect a client that has not sent its request headers within this time [default: 10]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    header_read_timeout_secs: Option<u64>,
    #[arg(long, env = "EASEL_MAX_CONNECTIONS", help = "Open connections at most [default: 10000]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_connections: Option<usize>,
    #[arg(long, env = "EASEL_SHUTDOWN_DEADLINE_SECS", help = "On SIGTERM, drop connections still open after this long [default: 30]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    shutdown_deadline_secs: Option<u64>,
    #[arg(long, env = "EASEL_REQUEST_TIMEOUT_SECS", help = "A request's body must arrive within this time, else 408 [default: 30]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    request_timeout_secs: Option<u64>,
    #[arg(long, env = "EASEL_SSE_PER_CLIENT", help = "Open event streams per client IP [default: 16]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    sse_per_client: Option<usize>,
    #[arg(long, env = "EASEL_SSE_TOTAL", help = "Open event streams in all [default: 10000]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    sse_total: Option<usize>,
    #[arg(long, env = "EASEL_SSE_LIFETIME_SECS", help = "An event stream ends after this long [default: 3600]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    sse_lifetime_secs: Option<u64>,
    #[arg(long, env = "EASEL_WEBHOOK_SECRET", hide_env_values = true, help = "Signs webhooks: whsec_ and base64 of 24 to 64 random bytes [default: none, webhooks off]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_secret: Option<String>,
    #[arg(long, env = "EASEL_WEBHOOK_ALLOW_HOSTS", value_delimiter = ',', help = "Hosts a webhook may reach although loopback or private, comma-separated [default: none]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_allow_hosts: Option<Vec<String>>,
    #[arg(long, env = "EASEL_WEBHOOK_RETRY_SECS", value_delimiter = ',', help = "Waits before each webhook retry, comma-separated [default: 5,300,1800,7200,18000,36000,36000]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_retry_secs: Option<Vec<u64>>,
    #[arg(long, env = "EASEL_WEBHOOK_TIMEOUT_SECS", help = "Time limit of one webhook attempt [default: 10]")]
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_timeout_secs: Option<u64>,
}

/// A trusted proxy: one address (`10.0.0.7`) or a range (`10.0.0.0/8`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TrustedProxy(pub IpNet);

impl std::str::FromStr for TrustedProxy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        s.parse::<IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
            .map(TrustedProxy)
            .map_err(|_| format!("{s:?} is neither an IP address nor a CIDR range"))
    }
}

impl TryFrom<String> for TrustedProxy {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<TrustedProxy> for String {
    fn from(p: TrustedProxy) -> String {
        p.0.to_string()
    }
}

impl Config {
    /// The trusted proxies as networks.
    pub fn trusted_networks(&self) -> Vec<IpNet> {
        self.trusted_proxies.iter().map(|p| p.0).collect()
    }


    /// Reads the configuration and the role from the process's arguments, environment and
    /// config file. `--help` and `--version` print and exit here.
    pub fn load() -> anyhow::Result<(Self, Role)> {
        let flags = Flags::parse();
        let role = flags.role.unwrap_or(Role::Web);
        let config = Self::from_flags(flags)?;
        anyhow::ensure!(role != Role::Worker || config.worker, "`easel worker` is a worker: it cannot run with the worker off");
        anyhow::ensure!(
            config.store_kind()? != StoreKind::Sqlite || (role == Role::Web && config.worker),
            "a web process without a worker, or a worker alone, needs a store shared between processes: \
             set store = \"redis://host:port/db\" (EASEL_STORE, --store)"
        );
        Ok((config, role))
    }

    /// The store setting, checked.
    pub fn store_kind(&self) -> anyhow::Result<StoreKind> {
        let store = self.store.trim();
        if store == "sqlite" {
            Ok(StoreKind::Sqlite)
        } else if store.starts_with("redis://") || store.starts_with("rediss://") || store.starts_with("redis+unix://") {
            Ok(StoreKind::Redis(store.to_string()))
        } else {
            anyhow::bail!("store must be \"sqlite\" or a redis:// URL, not {store:?}")
        }
    }

    /// The engine's device choice from the `device` setting.
    pub fn device(&self) -> anyhow::Result<crate::engine::DevicePreference> {
        match self.device.as_str() {
            "cpu" => Ok(crate::engine::DevicePreference::Cpu),
            "gpu" => Ok(crate::engine::DevicePreference::Gpu),
            other => anyhow::bail!("device must be \"cpu\" or \"gpu\", not {other:?}"),
        }
    }

    fn from_flags(flags: Flags) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = &flags.config {
            anyhow::ensure!(path.is_file(), "the config file {} does not exist", path.display());
            figment = figment.merge(Toml::file(path));
        }
        let config: Config = figment
            .merge(Serialized::defaults(&flags))
            .extract()
            .context("reading the configuration")?;
        let config = if flags.no_worker { Config { worker: false, ..config } } else { config };
        anyhow::ensure!(config.submits_per_minute > 0, "submits_per_minute must be at least 1");
        anyhow::ensure!(config.reads_per_second > 0, "reads_per_second must be at least 1");
        anyhow::ensure!(config.max_active_per_client > 0, "max_active_per_client must be at least 1");
        anyhow::ensure!(config.max_active_per_visitor > 0, "max_active_per_visitor must be at least 1");
        anyhow::ensure!(config.heartbeat_secs > 0, "heartbeat_secs must be at least 1");
        anyhow::ensure!((1..=128).contains(&config.ipv6_prefix), "ipv6_prefix must be between 1 and 128");
        anyhow::ensure!(config.header_read_timeout_secs > 0, "header_read_timeout_secs must be at least 1");
        anyhow::ensure!(config.max_connections > 0, "max_connections must be at least 1");
        anyhow::ensure!(config.request_timeout_secs > 0, "request_timeout_secs must be at least 1");
        anyhow::ensure!((1..=300).contains(&config.webhook_timeout_secs), "webhook_timeout_secs must be between 1 and 300");
        anyhow::ensure!(
            config.webhook_retry_secs.iter().all(|s| *s <= 7 * 24 * 3600),
            "each of webhook_retry_secs must be at most 604800 (7 days)"
        );
        if config.webhook_secret.is_some() && config.retention_secs > 0 {
            // Retention must not delete a job whose webhook is still being retried.
            let retrying: u64 = config.webhook_retry_secs.iter().sum::<u64>() + 2 * config.webhook_timeout_secs + 5;
            anyhow::ensure!(
                config.retention_secs > retrying,
                "retention_secs ({}) must be longer than the webhook retries take ({retrying} s: webhook_retry_secs and timeouts)",
                config.retention_secs
            );
        }
        // A trailing comma must not make the empty string a key.
        let api_keys: Vec<String> = config.api_keys.iter().map(|k| k.trim().to_string()).filter(|k| !k.is_empty()).collect();
        let config = Config { api_keys, ..config };
        config.store_kind()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("easel-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("easel.toml");
        std::fs::write(&file, "max_queued = 5\nsubmits_per_minute = 3\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.1\"]\n").unwrap();
        let flags = Flags::try_parse_from([
            "easel",
            "--config",
            file.to_str().unwrap(),
            "--submits-per-minute",
            "4",
        ])
        .unwrap();
        let config = Config::from_flags(flags).unwrap();
        assert_eq!(config.max_queued, 5);
        assert_eq!(config.submits_per_minute, 4);
        let expected: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "192.0.2.1/32".parse().unwrap()];
        assert_eq!(config.trusted_networks(), expected);
        assert!(Flags::try_parse_from(["easel", "--trusted-proxies", "127.0.0.1,::1,10.0.0.0/8"]).is_ok());
        assert!(Flags::try_parse_from(["easel", "--trusted-proxies", "localhost"]).is_err());
        assert_eq!(config.history_len, Config::default().history_len);
    }

    #[test]
    fn roles_and_stores() {
        let parse = |args: &[&str]| Flags::try_parse_from(args).map(|f| (f.role, Config::from_flags(f)));
        let (role, config) = parse(&["easel", "worker", "--store", "redis://127.0.0.1:6379/0"]).unwrap();
        assert_eq!(role, Some(Role::Worker));
        assert_eq!(config.unwrap().store_kind().unwrap(), StoreKind::Redis("redis://127.0.0.1:6379/0".into()));
        let (_, config) = parse(&["easel", "--no-worker"]).unwrap();
        assert!(!config.unwrap().worker);
        let (_, config) = parse(&["easel", "--worker", "off"]).unwrap();
        assert!(!config.unwrap().worker);
        let (role, config) = parse(&["easel"]).unwrap();
        assert_eq!((role, config.unwrap().store_kind().unwrap()), (None, StoreKind::Sqlite));
        assert!(parse(&["easel", "--store", "postgres://x"]).unwrap().1.is_err());
        assert!(parse(&["easel", "painter"]).is_err());
    }

    #[test]
    fn unknown_keys_and_missing_files_are_errors() {
        let dir = std::env::temp_dir().join(format!("easel-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("easel.toml");
        std::fs::write(&file, "max_qeued = 5\n").unwrap();
        let flags = Flags::try_parse_from(["easel", "--config", file.to_str().unwrap()]).unwrap();
        assert!(Config::from_flags(flags).is_err());
        let flags = Flags::try_parse_from(["easel", "--config", "/nonexistent/easel.toml"]).unwrap();
        assert!(Config::from_flags(flags).is_err());
    }

    #[test]
    fn webhook_settings_are_checked() {
        let load = |args: &[&str]| Config::from_flags(Flags::try_parse_from([&["easel"], args].concat()).unwrap());
        let secret = "--webhook-secret=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let config = load(&[secret, "--webhook-allow-hosts=127.0.0.1,hooks.internal", "--webhook-retry-secs=1,2"]).unwrap();
        assert_eq!((config.webhook_allow_hosts.len(), config.webhook_retry_secs.clone()), (2, vec![1, 2]));
        assert!(load(&["--webhook-timeout-secs=0"]).is_err());
        assert!(load(&["--webhook-timeout-secs=301"]).is_err());
        assert!(load(&["--webhook-retry-secs=5,604801"]).is_err());
        // Retention shorter than the retries would delete jobs whose webhooks are still due.
        let short = load(&[secret, "--retention-secs=3600"]).unwrap_err();
        assert!(short.to_string().contains("webhook retries"), "{short}");
        assert!(load(&[secret, "--retention-secs=3600", "--webhook-retry-secs=5,60"]).is_ok());
        assert!(load(&["--retention-secs=60"]).is_ok(), "no secret, no webhooks, no constraint");
    }
}
