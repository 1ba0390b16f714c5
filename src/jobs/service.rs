//! The job service: what server functions and JSON handlers call (submit, status, cancel,
//! history, images) and what the worker reports to (progress, cancel flags, step times).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, watch, Notify};
use uuid::Uuid;

use super::store::{EnqueueLimits, Enqueued, Idempotency, JobCounts, JobStore, WebhookDue, WebhookOutcome};
use super::hot::HotViews;
use super::{Job, Status};
use crate::api::{resolve_params, ApiError, ErrorKind, GenerateParams, JobView, ModelSummary, WebhookTargets};

/// Who is asking: the resolved client IP (the fairness key) and the browser's visitor cookie.
#[derive(Clone, Debug, PartialEq)]
pub struct Client {
    pub ip: IpAddr,
    pub visitor: Option<String>,
    /// The visitor id was made for this request (no cookie came): it has no history yet.
    pub new_visitor: bool,
}

#[derive(Clone, Debug)]
pub struct QueueLimits {
    /// Waiting jobs at most; beyond, submits get `queue_full`.
    pub max_queued: u32,
    /// Queued or processing jobs per client address at most (a ceiling for everyone behind
    /// one NAT); beyond, submits get `busy`.
    pub max_active_per_client: u32,
    /// Queued or processing jobs per visitor (browser) at most, under that ceiling.
    pub max_active_per_visitor: u32,
    /// How many recent jobs a visitor's history shows.
    pub history_len: u32,
}

#[derive(Clone)]
pub struct JobService {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn JobStore>,
    limits: QueueLimits,
    models: Vec<ModelSummary>,
    default_model: String,
    /// "Job X changed": wakes event streams of this instance without polling the store.
    changes: broadcast::Sender<Uuid>,
    work: Notify,
    /// Cancel flags of the jobs this instance's worker is running, and when each started.
    running: Mutex<HashMap<Uuid, (Arc<AtomicBool>, Instant)>>,
    /// The worker has been inside one job past its time limit (the watchdog's finding).
    stuck: AtomicBool,
    /// Smoothed milliseconds per denoising step, measured by the worker; feeds queue ETAs.
    ms_per_step: Mutex<Option<f64>>,
    /// Without a worker here: the workers' shared step time, and when it was read.
    shared_ms_per_step: Mutex<Option<(Instant, Option<f64>)>>,
    /// The store announces changes to every process itself (shared store).
    store_announces: bool,
    accepting: AtomicBool,
    ready: AtomicBool,
    shutdown: watch::Sender<bool>,
    /// Where webhooks may go; unset: this server sends none (no signing secret).
    webhook_targets: OnceLock<WebhookTargets>,
    /// Views that status reads answer from memory.
    hot: HotViews,
    /// How long ended jobs are kept (unset: for good).
    retention: OnceLock<Duration>,
}

/// How long an `Idempotency-Key` names its job.
const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);

/// A key of 1 to 255 visible ASCII characters.
fn checked_idempotency_key(key: &str) -> Result<&str, ApiError> {
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::new(ErrorKind::BadRequest, "Idempotency-Key must be 1 to 255 visible ASCII characters."));
    }
    Ok(key)
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn internal(context: &str, e: anyhow::Error) -> ApiError {
    tracing::error!(error = format!("{e:#}"), "{context}");
    ApiError::internal()
}

/// A stored thing that may be missing: a fault is internal, absence is `not_found`.
fn found<T>(read: anyhow::Result<Option<T>>, what: &str) -> Result<T, ApiError> {
    read.map_err(|e| internal(&format!("reading a {what}"), e))?.ok_or_else(|| ApiError::not_found(what))
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::not_found("job"))
}

impl JobService {
    pub fn new(
        store: Arc<dyn JobStore>,
        limits: QueueLimits,
        models: Vec<ModelSummary>,
        default_model: String,
    ) -> Self {
        let (changes, _) = broadcast::channel(1024);
        let (shutdown, _) = watch::channel(false);
        let store_announces = store.follow_changes(changes.clone());
        Self {
            inner: Arc::new(Inner {
                store,
                store_announces,
                shared_ms_per_step: Mutex::new(None),
                limits,
                models,
                default_model,
                changes: changes.clone(),
                work: Notify::new(),
                running: Mutex::new(HashMap::new()),
                stuck: AtomicBool::new(false),
                ms_per_step: Mutex::new(None),
                accepting: AtomicBool::new(true),
                ready: AtomicBool::new(false),
                shutdown,
                webhook_targets: OnceLock::new(),
                hot: HotViews::new(changes.subscribe()),
                retention: OnceLock::new(),
            }),
        }
    }

    pub fn models(&self) -> &[ModelSummary] {
        &self.inner.models
    }

    pub fn default_model(&self) -> &str {
        &self.inner.default_model
    }

    /// Validates and queues a job; answers at once, never waiting for inference.
    pub async fn submit(&self, params: &GenerateParams, client: &Client) -> Result<JobView, ApiError> {
        self.submit_idempotent(params, client, None).await
    }

    /// `submit` with an `Idempotency-Key`: the same key and body within 24 h answer the job
    /// the first request made; another body is `idempotency_mismatch`.
    pub async fn submit_idempotent(
        &self,
        params: &GenerateParams,
        client: &Client,
        idempotency_key: Option<&str>,
    ) -> Result<JobView, ApiError> {
        let idempotency = match idempotency_key {
            Some(key) => Some(Idempotency {
                key: checked_idempotency_key(key)?.to_string(),
                body: serde_json::to_string(params).map_err(|e| internal("encoding a request", e.into()))?,
                ttl_ms: IDEMPOTENCY_TTL.as_millis() as i64,
            }),
            None => None,
        };
        let resolved = resolve_params(params, &self.inner.models, &self.inner.default_model, rand::random())?;
        let webhook = params.webhook.as_deref().map(|url| self.checked_webhook(url)).transpose()?;
        if !self.inner.accepting.load(Ordering::SeqCst) {
            return Err(ApiError::new(ErrorKind::NotReady, "The server is restarting; try again in a few seconds.")
                .retry_after(5));
        }
        let job = Job { webhook, ..Job::new(resolved, client.ip.to_string(), client.visitor.clone(), now_ms()) };
        let limits = &self.inner.limits;
        let outcome = self
            .inner
            .store
            .enqueue_with(
                &job,
                &EnqueueLimits {
                    max_queued: limits.max_queued,
                    per_client: limits.max_active_per_client,
                    per_visitor: limits.max_active_per_visitor,
                },
                idempotency.as_ref(),
            )
            .await
            .map_err(|e| internal("enqueue failed", e))?;
        match outcome {
            Enqueued::Existing(id) => {
                // Retention may have deleted the job before its key lapsed: 410 expired.
                let earlier = self.job(id).await?;
                let mut view = self.view(&earlier).await.map_err(|e| internal("reading a job", e))?;
                view.cancel_token = earlier.cancel_token.clone();
                Ok(view)
            }
            Enqueued::IdempotencyMismatch => Err(ApiError::new(
                ErrorKind::IdempotencyMismatch,
                "This Idempotency-Key was used with a different request body.",
            )),
            Enqueued::Accepted => {
                metrics::counter!("easel_jobs_submitted_total").increment(1);
                self.inner.work.notify_one();
                self.changed(job.id);
                let mut view = self.view(&job).await.map_err(|e| internal("reading a new job", e))?;
                view.cancel_token = job.cancel_token.clone();
                Ok(view)
            }
            Enqueued::QueueFull => {
                let wait = self.eta_secs_for_one_slot();
                Err(ApiError::new(
                    ErrorKind::QueueFull,
                    format!("The queue is full ({} waiting); try again in about {wait} s.", limits.max_queued),
                )
                .retry_after(wait))
            }
            Enqueued::Busy => Err(ApiError::new(
                ErrorKind::Busy,
                "You already have an image being painted; wait for it or cancel it first.",
            )
            .retry_after(self.eta_secs_for_one_slot())),
        }
    }

    /// Lets jobs name a webhook, sent to `targets` only (the server has a signing secret).
    pub fn accept_webhooks(&self, targets: WebhookTargets) {
        let _ = self.inner.webhook_targets.set(targets);
    }

    fn checked_webhook(&self, url: &str) -> Result<String, ApiError> {
        let targets = self.inner.webhook_targets.get().ok_or_else(|| {
            ApiError::new(ErrorKind::InvalidParams, "This server sends no webhooks: its operator has not set webhook_secret.")
        })?;
        Ok(targets.check_url(url)?.to_string())
    }

    /// Due webhooks, leased to this process (see `JobStore::claim_webhooks`).
    pub async fn claim_webhooks(&self, lease: Duration, limit: u32) -> anyhow::Result<Vec<WebhookDue>> {
        self.inner.store.claim_webhooks(now_ms(), lease.as_millis() as i64, limit).await
    }

    pub async fn webhook_attempted(&self, id: Uuid, outcome: WebhookOutcome) -> anyhow::Result<()> {
        self.inner.store.webhook_attempted(id, outcome).await
    }

    /// The job as it stands: from memory when held and still true (see `hot`), else the store.
    pub async fn status(&self, id: &str) -> Result<JobView, ApiError> {
        let uuid = parse_id(id)?;
        if let Some(view) = self.inner.hot.get(uuid, now_ms()) {
            return Ok(view);
        }
        let job = self.job(uuid).await?;
        let view = self.view(&job).await.map_err(|e| internal("reading a job", e))?;
        let expires_at_ms = match (job.finished_at_ms, self.inner.retention.get()) {
            (Some(finished), Some(retention)) => Some(finished + retention.as_millis() as i64),
            _ => None,
        };
        self.inner.hot.put(uuid, &view, expires_at_ms);
        Ok(view)
    }

    /// Waits until the job has ended (or `within` has passed: `timeout`) and answers it.
    pub async fn wait_until_ended(&self, id: &str, within: Duration) -> Result<JobView, ApiError> {
        let deadline = tokio::time::Instant::now() + within;
        let mut changes = self.subscribe();
        loop {
            let view = self.status(id).await?;
            if view.state.is_terminal() {
                return Ok(view);
            }
            // Woken by this job's changes, or at least every second (announcements can be lost).
            let wake = tokio::time::Instant::now() + Duration::from_secs(1);
            loop {
                tokio::select! {
                    changed = changes.recv() => match changed {
                        Ok(changed) if changed.to_string() != id => continue,
                        _ => break,
                    },
                    _ = tokio::time::sleep_until(wake.min(deadline)) => break,
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ApiError::new(ErrorKind::Timeout, "The image took too long; follow the job by its id instead."));
            }
        }
    }

    /// Cancels a queued job at once, or a processing one within a denoising step. Only its
    /// submitter may: the same visitor cookie, or the `cancelToken` the submit answered with.
    pub async fn cancel(&self, id: &str, visitor: Option<&str>, token: Option<&str>) -> Result<JobView, ApiError> {
        let owned = self.job(parse_id(id)?).await?;
        if !owned.may_cancel(visitor, token) {
            return Err(ApiError::new(
                ErrorKind::Forbidden,
                "Only whoever submitted this job can cancel it (same browser, or its cancelToken).",
            ));
        }
        let id = owned.id;
        let job = self
            .inner
            .store
            .request_cancel(id, now_ms())
            .await
            .map_err(|e| internal("cancel failed", e))?
            .ok_or_else(|| ApiError::not_found("job"))?;
        if job.status == Status::Processing {
            if let Some((flag, _)) = self.inner.running.lock().expect("running map").get(&id) {
                flag.store(true, Ordering::SeqCst);
            }
        }
        self.changed(id);
        self.view(&job).await.map_err(|e| internal("reading a job", e))
    }

    /// The visitor's recent jobs, newest first.
    pub async fn recent(&self, visitor: Option<&str>) -> Result<Vec<JobView>, ApiError> {
        let Some(visitor) = visitor else { return Ok(Vec::new()) };
        let jobs = self
            .inner
            .store
            .recent_for_visitor(visitor, self.inner.limits.history_len)
            .await
            .map_err(|e| internal("reading history", e))?;
        let mut views = Vec::with_capacity(jobs.len());
        for job in &jobs {
            views.push(self.view(job).await.map_err(|e| internal("reading history", e))?);
        }
        Ok(views)
    }

    /// The finished PNG of a job.
    pub async fn image(&self, id: &str) -> Result<Vec<u8>, ApiError> {
        let id = parse_id(id)?;
        match found(self.inner.store.image(id).await, "image") {
            Err(e) if e.kind == ErrorKind::NotFound => Err(self.gone_or(id, e).await),
            other => other,
        }
    }

    /// The latest preview of a running job.
    pub async fn preview(&self, id: &str) -> Result<Vec<u8>, ApiError> {
        let id = parse_id(id)?;
        found(self.inner.store.preview(id).await, "preview")
    }

    pub async fn counts(&self) -> anyhow::Result<JobCounts> {
        self.inner.store.counts().await
    }

    /// Notifications "job X changed" for event streams.
    pub fn subscribe(&self) -> broadcast::Receiver<Uuid> {
        self.inner.changes.subscribe()
    }

    /// Becomes true once when the server starts shutting down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }

    /// Graceful shutdown: refuse new jobs and end event streams.
    pub fn stop_accepting(&self) {
        self.inner.accepting.store(false, Ordering::SeqCst);
        self.inner.shutdown.send_replace(true);
        self.inner.work.notify_waiters();
    }

    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::SeqCst)
    }

    async fn job(&self, id: Uuid) -> Result<Job, ApiError> {
        match found(self.inner.store.get(id).await, "job") {
            Err(e) if e.kind == ErrorKind::NotFound => Err(self.gone_or(id, e).await),
            other => other,
        }
    }

    /// `expired` (410) for a job retention deleted, else the error as it was.
    async fn gone_or(&self, id: Uuid, missing: ApiError) -> ApiError {
        match self.inner.store.expired(id).await {
            Ok(true) => ApiError::new(
                ErrorKind::Expired,
                "This job and its image were deleted after the retention time; generate it again with the same settings.",
            ),
            Ok(false) => missing,
            Err(e) => internal("reading an expired job", e),
        }
    }

    /// Retention, in the background: jobs that ended more than `retention` ago are deleted.
    pub fn spawn_retention(&self, retention: Duration) {
        let _ = self.inner.retention.set(retention);
        let jobs = self.clone();
        let every = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(600));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let cutoff = now_ms() - retention.as_millis() as i64;
                match jobs.inner.store.purge_finished(cutoff).await {
                    Ok(0) => {}
                    Ok(n) => {
                        jobs.inner.hot.clear();
                        tracing::info!(deleted = n, "retention deleted finished jobs");
                    }
                    Err(e) => tracing::error!(error = format!("{e:#}"), "retention failed"),
                }
            }
        });
    }

    /// Free bytes on the store's disk, where that is this machine's.
    pub fn free_disk_bytes(&self) -> Option<u64> {
        self.inner.store.free_disk_bytes()
    }

    async fn view(&self, job: &Job) -> anyhow::Result<JobView> {
        let queue = if job.status == Status::Queued {
            let ahead = self.inner.store.queue_ahead(job).await?;
            let ms_per_step = match self.ms_per_step() {
                Some(ms) => Some(ms),
                None => self.shared_ms_per_step().await,
            };
            let eta = ms_per_step.map(|ms| ((ahead.steps_ahead + job.params.steps as u64) as f64 * ms) as u64);
            Some((ahead.position, eta))
        } else {
            None
        };
        Ok(job.view(queue))
    }

    fn eta_secs_for_one_slot(&self) -> u64 {
        let per_job_ms = self.ms_per_step().unwrap_or(1000.0) * 20.0;
        ((per_job_ms / 1000.0).ceil() as u64).clamp(1, 300)
    }

    fn ms_per_step(&self) -> Option<f64> {
        *self.inner.ms_per_step.lock().expect("step time")
    }

    /// The workers' step time from a shared store, read at most every few seconds.
    async fn shared_ms_per_step(&self) -> Option<f64> {
        const FRESH: Duration = Duration::from_secs(5);
        if let Some((read_at, ms)) = *self.inner.shared_ms_per_step.lock().expect("shared step time") {
            if read_at.elapsed() < FRESH {
                return ms;
            }
        }
        let ms = self.inner.store.shared_step_ms().await.unwrap_or_else(|e| {
            tracing::warn!(error = format!("{e:#}"), "reading the shared step time failed");
            None
        });
        *self.inner.shared_ms_per_step.lock().expect("shared step time") = Some((Instant::now(), ms));
        ms
    }

    /// Whether the store answers.
    pub async fn store_reachable(&self) -> bool {
        match self.inner.store.ping().await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "the job store does not answer");
                false
            }
        }
    }

    /// Jobs whose worker died run again or end `interrupted` (see `JobStore::recover_interrupted`).
    pub async fn recover_interrupted(&self) -> anyhow::Result<super::Recovery> {
        self.inner.store.recover_interrupted(now_ms()).await
    }

    /// Marks a process without a worker ready to take jobs (the workers are elsewhere).
    pub fn set_web_ready(&self) {
        self.set_ready(true);
    }

    // ---- what the worker reports ----

    pub(super) fn store(&self) -> &Arc<dyn JobStore> {
        &self.inner.store
    }

    pub(super) fn changed(&self, id: Uuid) {
        // A shared store announced it already, to every process including this one.
        if self.inner.store_announces {
            return;
        }
        // No receivers is fine: nobody is watching.
        let _ = self.inner.changes.send(id);
    }

    pub(super) fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::SeqCst);
    }

    pub(super) fn is_stopping(&self) -> bool {
        !self.inner.accepting.load(Ordering::SeqCst)
    }

    pub(super) fn register_running(&self, id: Uuid) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        self.inner.running.lock().expect("running map").insert(id, (flag.clone(), Instant::now()));
        flag
    }

    pub(super) fn unregister_running(&self, id: Uuid) {
        self.inner.running.lock().expect("running map").remove(&id);
    }

    /// Stops every running job now (graceful shutdown ran out of time).
    pub(super) fn cancel_all_running(&self) {
        for (flag, _) in self.inner.running.lock().expect("running map").values() {
            flag.store(true, Ordering::SeqCst);
        }
    }

    /// The worker made progress on the job (a step, a model loaded): the watchdog's clock restarts.
    pub(super) fn touch_running(&self, id: Uuid) {
        if let Some((_, since)) = self.inner.running.lock().expect("running map").get_mut(&id) {
            *since = Instant::now();
        }
    }

    /// The jobs this process's worker has made no progress on for longer than `limit`.
    pub(super) fn overdue(&self, limit: Duration) -> Vec<Uuid> {
        let running = self.inner.running.lock().expect("running map");
        running.iter().filter(|(_, (_, since))| since.elapsed() > limit).map(|(id, _)| *id).collect()
    }

    pub(super) fn set_stuck(&self, stuck: bool) {
        self.inner.stuck.store(stuck, Ordering::SeqCst);
    }

    /// Whether the worker is stuck inside a job past its time limit (readiness fails).
    pub fn is_stuck(&self) -> bool {
        self.inner.stuck.load(Ordering::SeqCst)
    }

    /// Records one step's time; answers the smoothed time per step.
    pub(super) fn record_step(&self, elapsed: Duration) -> f64 {
        let ms = elapsed.as_secs_f64() * 1000.0;
        metrics::histogram!("easel_step_seconds").record(elapsed.as_secs_f64());
        let mut avg = self.inner.ms_per_step.lock().expect("step time");
        let smoothed = match *avg {
            Some(prev) => prev * 0.8 + ms * 0.2,
            None => ms,
        };
        *avg = Some(smoothed);
        smoothed
    }

    pub(super) async fn wait_for_work(&self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.inner.work.notified()).await;
    }
}
