//! The worker: a plain thread that owns the loaded model, claims jobs (fair share across
//! clients, only for the models it offers) and runs them, so the async runtime never blocks on
//! inference.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use image::RgbImage;
use tokio::runtime::Handle;

use super::service::now_ms;
use super::{Job, JobService, Outcome};
use crate::api::{ErrorKind, JobFailure, ResolvedParams};

/// Why painting stopped without an image.
#[derive(Debug)]
pub enum PaintError {
    Cancelled,
    Failed(JobFailure),
}

/// Step callback: (step, total, preview).
pub type OnStep<'a> = dyn FnMut(u32, u32, Option<&RgbImage>) + 'a;

/// What the worker needs from an engine: keep one model loaded, paint a PNG.
pub trait Painter: Send + 'static {
    /// Makes `model` the loaded one, loading it if another (or none) is.
    fn prepare(&mut self, model: &str) -> Result<(), JobFailure>;
    /// Paints the image and returns the PNG; checks `cancel` between steps.
    fn paint(&self, params: &ResolvedParams, on_step: &mut OnStep<'_>, cancel: &AtomicBool) -> Result<Vec<u8>, PaintError>;
}

pub struct Worker {
    service: JobService,
    painter: Box<dyn Painter>,
    default_model: String,
    job_timeout: Duration,
    runtime: Handle,
    control: Arc<Control>,
}

#[derive(Default)]
struct Control {
    /// Finish the current job, then exit.
    stop: AtomicBool,
    /// Stop the current job now and put it back in line.
    requeue: AtomicBool,
}

/// Owns the worker thread.
pub struct WorkerHandle {
    thread: JoinHandle<()>,
    control: Arc<Control>,
    service: JobService,
}

impl WorkerHandle {
    /// Graceful stop: the running job may finish within `grace`; after that it is re-queued.
    pub fn shutdown(self, grace: Duration) {
        self.control.stop.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + grace;
        while !self.thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if !self.thread.is_finished() {
            tracing::warn!("the running job did not finish within {grace:?}; re-queueing it");
            self.control.requeue.store(true, Ordering::SeqCst);
            self.service.cancel_all_running();
        }
        if self.thread.join().is_err() {
            tracing::error!("the worker thread panicked");
        }
    }
}

impl Worker {
    pub fn spawn(
        service: JobService,
        painter: Box<dyn Painter>,
        default_model: String,
        job_timeout: Duration,
        runtime: Handle,
    ) -> anyhow::Result<WorkerHandle> {
        let control = Arc::new(Control::default());
        spawn_watchdog(service.clone(), job_timeout, &runtime);
        let worker = Worker { service: service.clone(), painter, default_model, job_timeout, runtime, control: control.clone() };
        let thread = std::thread::Builder::new().name("easel-worker".into()).spawn(move || worker.run())?;
        Ok(WorkerHandle { thread, control, service })
    }

    fn run(mut self) {
        let started = Instant::now();
        match prepare(self.painter.as_mut(), &self.default_model) {
            Ok(()) => {
                tracing::info!(model = %self.default_model, secs = started.elapsed().as_secs_f64(), "model loaded");
                self.service.set_ready(true);
            }
            Err(e) => tracing::error!(model = %self.default_model, "cannot load the default model: {}", e.message),
        }
        let models: Vec<String> = self.service.models().iter().map(|m| m.name.clone()).collect();
        let sharing = self.service.store().sharing();
        let mut last_reclaim = Instant::now();
        // Once shutdown begins, the queue stays as it is for the next start.
        while !self.control.stop.load(Ordering::SeqCst) && !self.service.is_stopping() {
            if sharing.is_some_and(|s| last_reclaim.elapsed() >= s.reclaim_every) {
                self.reclaim_from_silent_workers();
                last_reclaim = Instant::now();
            }
            let claimed = self.runtime.block_on(self.service.store().claim_next(now_ms(), &models));
            match claimed {
                // Shutdown began while the claim waited: back in line for another worker.
                Ok(Some(job)) if self.control.stop.load(Ordering::SeqCst) || self.service.is_stopping() => {
                    self.record_end(job.id, &Outcome::Requeue);
                }
                Ok(Some(job)) => self.run_job(job),
                // A shared store's claim already waited for work.
                Ok(None) if sharing.is_some() => {}
                Ok(None) => {
                    self.runtime.block_on(self.service.wait_for_work(Duration::from_millis(500)));
                }
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "claiming a job failed");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
        self.service.set_ready(false);
        tracing::info!("worker stopped");
    }

    /// Shared store: jobs whose worker died run again here (or end `interrupted`).
    fn reclaim_from_silent_workers(&self) {
        match self.runtime.block_on(self.service.store().recover_interrupted(now_ms())) {
            Ok(recovery) if recovery != Default::default() => {
                tracing::warn!(requeued = recovery.requeued, failed = recovery.failed, cancelled = recovery.cancelled, "took over jobs of a silent worker");
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = format!("{e:#}"), "looking for jobs of silent workers failed"),
        }
    }

    fn run_job(&mut self, job: Job) {
        let id = job.id;
        tracing::info!(job = %id, model = %job.params.model, steps = job.params.steps, attempt = job.attempts, "job started");
        let cancel = self.service.register_running(id);
        self.service.changed(id);
        let started = Instant::now();
        let outcome = self.paint(&job, &cancel, started);
        self.record_end(id, &outcome);
        let (state, kind) = match &outcome {
            Outcome::Completed { .. } => ("completed", ""),
            Outcome::Failed(f) => ("failed", f.kind.as_str()),
            Outcome::Cancelled => ("cancelled", ""),
            Outcome::Requeue => ("requeued", ""),
        };
        metrics::counter!("easel_jobs_finished_total", "state" => state, "kind" => kind).increment(1);
        tracing::info!(job = %id, state, kind, ms = started.elapsed().as_millis() as u64, "job ended");
        self.service.unregister_running(id);
        self.service.changed(id);
    }

    /// Records how a job ended. Retried for about a minute (a store briefly away, Redis
    /// restarting): a job left `processing` keeps its client `busy`, and a shared store would
    /// give it to another worker to paint again (`finish` only touches a processing job, so a
    /// retry is harmless).
    fn record_end(&self, id: uuid::Uuid, outcome: &Outcome) {
        let store = self.service.store().clone();
        let mut wait = Duration::from_millis(100);
        for attempt in 1..=35 {
            match self.runtime.block_on(store.finish(id, outcome, now_ms())) {
                Ok(()) => return,
                Err(e) => tracing::error!(job = %id, attempt, error = format!("{e:#}"), "recording a job's end failed"),
            }
            std::thread::sleep(wait);
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }

    fn paint(&mut self, job: &Job, cancel: &AtomicBool, started: Instant) -> Outcome {
        if let Err(failure) = prepare(self.painter.as_mut(), &job.params.model) {
            return Outcome::Failed(failure);
        }
        self.service.touch_running(job.id);
        let (service, runtime, timeout) = (&self.service, &self.runtime, self.job_timeout);
        let store = service.store().clone();
        let mut timed_out = false;
        let mut last_step = Instant::now();
        let mut on_step = |step: u32, _total: u32, preview: Option<&RgbImage>| {
            let ms_per_step = service.record_step(last_step.elapsed());
            last_step = Instant::now();
            service.touch_running(job.id);
            if let Err(e) = runtime.block_on(store.share_step_ms(ms_per_step)) {
                tracing::warn!(error = format!("{e:#}"), "sharing the step time failed");
            }
            match runtime.block_on(store.set_step(job.id, step)) {
                Ok(true) => cancel.store(true, Ordering::SeqCst),
                Ok(false) => {}
                Err(e) => tracing::warn!(job = %job.id, error = format!("{e:#}"), "recording progress failed"),
            }
            if started.elapsed() > timeout {
                timed_out = true;
                cancel.store(true, Ordering::SeqCst);
            }
            if let Some(png) = preview.and_then(encode_preview) {
                if let Err(e) = runtime.block_on(store.put_preview(job.id, step, png)) {
                    tracing::warn!(job = %job.id, error = format!("{e:#}"), "storing a preview failed");
                }
            }
            service.changed(job.id);
        };
        let painter = &self.painter;
        let result = catch_unwind(AssertUnwindSafe(|| painter.paint(&job.params, &mut on_step, cancel)));
        match result {
            Ok(Ok(png)) => {
                let inference_ms = started.elapsed().as_millis() as u64;
                match runtime.block_on(store.put_image(job.id, png)) {
                    Ok(()) => Outcome::Completed { inference_ms },
                    Err(e) => {
                        tracing::error!(job = %job.id, error = format!("{e:#}"), "storing an image failed");
                        Outcome::failed(ErrorKind::InferenceFailed, "The image was painted but could not be saved.")
                    }
                }
            }
            Ok(Err(PaintError::Cancelled)) if timed_out => Outcome::failed(
                ErrorKind::Timeout,
                format!("Painting took longer than the {} s limit and was stopped.", timeout.as_secs()),
            ),
            Ok(Err(PaintError::Cancelled)) if self.control.requeue.load(Ordering::SeqCst) => Outcome::Requeue,
            Ok(Err(PaintError::Cancelled)) => Outcome::Cancelled,
            Ok(Err(PaintError::Failed(failure))) => Outcome::Failed(failure),
            Err(panic) => {
                tracing::error!(job = %job.id, "inference panicked: {}", panic_message(&panic));
                Outcome::failed(ErrorKind::InferenceFailed, "The engine crashed while painting this image.")
            }
        }
    }
}

/// Fails a job the worker has made no progress on (no step, no model loaded) for well past its
/// time limit. The time limit is otherwise checked between steps, so one step that never ends
/// (a hung driver, a deadlock)
/// would keep the job `processing` and its client `busy` for good; readiness fails meanwhile,
/// so that an orchestrator can restart the process.
fn spawn_watchdog(service: JobService, job_timeout: Duration, runtime: &Handle) {
    let limit = job_timeout + (job_timeout / 10).max(Duration::from_secs(1));
    runtime.spawn(async move {
        let mut failed = std::collections::HashSet::new();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            let overdue = service.overdue(limit);
            service.set_stuck(!overdue.is_empty());
            failed.retain(|id| overdue.contains(id));
            for id in overdue {
                if !failed.insert(id) {
                    continue;
                }
                tracing::error!(job = %id, secs = limit.as_secs_f64(), "the worker is stuck inside a job; failing it");
                let outcome = Outcome::failed(
                    ErrorKind::Timeout,
                    format!("Painting stopped responding and was given up after {} s.", limit.as_secs()),
                );
                match service.store().finish(id, &outcome, now_ms()).await {
                    Ok(()) => {
                        metrics::counter!("easel_jobs_finished_total", "state" => "failed", "kind" => "timeout").increment(1);
                        service.changed(id);
                    }
                    Err(e) => tracing::error!(job = %id, error = format!("{e:#}"), "failing a stuck job failed"),
                }
            }
        }
    });
}

/// Loads a model; a panic while loading fails the job instead of killing the worker.
fn prepare(painter: &mut dyn Painter, model: &str) -> Result<(), JobFailure> {
    catch_unwind(AssertUnwindSafe(|| painter.prepare(model))).unwrap_or_else(|panic| {
        tracing::error!(model, "loading the model panicked: {}", panic_message(&panic));
        Err(JobFailure { kind: ErrorKind::InferenceFailed, message: format!("The model {model:?} could not be loaded.") })
    })
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> &str {
    panic.downcast_ref::<String>().map(String::as_str).or_else(|| panic.downcast_ref::<&str>().copied()).unwrap_or("unknown panic")
}

fn encode_preview(img: &RgbImage) -> Option<Vec<u8>> {
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).ok()?;
    Some(png)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{GenerateParams, ModelSummary};
    use crate::jobs::{Client, QueueLimits, SqliteStore};

    /// Panics on prompts containing "panic", paints a 1-pixel "PNG" otherwise. Stands in for the
    /// engine only to prove the worker survives a panic inside inference.
    struct Flaky;

    impl Painter for Flaky {
        fn prepare(&mut self, model: &str) -> Result<(), JobFailure> {
            assert_ne!(model, "broken", "the model loader blew up");
            Ok(())
        }
        fn paint(&self, params: &ResolvedParams, on_step: &mut OnStep<'_>, _cancel: &AtomicBool) -> Result<Vec<u8>, PaintError> {
            on_step(1, params.steps, None);
            assert!(!params.prompt.contains("panic"), "the engine blew up");
            Ok(vec![1])
        }
    }

    fn model() -> ModelSummary {
        ModelSummary::tiny_for_tests()
    }

    /// Hangs inside its first step for `secs`. Stands in for a hung driver, to prove the watchdog.
    struct Hangs(u64);

    impl Painter for Hangs {
        fn prepare(&mut self, _model: &str) -> Result<(), JobFailure> {
            Ok(())
        }
        fn paint(&self, params: &ResolvedParams, on_step: &mut OnStep<'_>, _cancel: &AtomicBool) -> Result<Vec<u8>, PaintError> {
            std::thread::sleep(Duration::from_secs(self.0));
            on_step(1, params.steps, None);
            Ok(vec![1])
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_stuck_inside_one_step_is_failed_and_readiness_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let limits = QueueLimits { max_queued: 10, max_active_per_client: 10, max_active_per_visitor: 10, history_len: 10 };
        let service = JobService::new(Arc::new(store), limits, vec![model()], "tiny".into());
        let handle = Worker::spawn(service.clone(), Box::new(Hangs(4)), "tiny".into(), Duration::from_secs(1), Handle::current()).unwrap();
        let client = Client { ip: "127.0.0.1".parse().unwrap(), visitor: None, new_visitor: false };
        let started = Instant::now();
        let id = service.submit(&GenerateParams { prompt: "a fox".into(), ..Default::default() }, &client).await.unwrap().job_id;
        // The time limit (1 s) plus the watchdog's margin (1 s), long before the step ends (4 s).
        loop {
            let state = service.status(&id).await.unwrap().state;
            if state.is_terminal() {
                match state {
                    crate::api::JobState::Failed { error } => assert_eq!(error.kind, ErrorKind::Timeout),
                    other => panic!("expected a timeout, got {other:?}"),
                }
                break;
            }
            assert!(started.elapsed() < Duration::from_millis(3_500), "the stuck job was not failed in time");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(service.is_stuck(), "readiness must report the stuck worker");
        // When the step finally returns, its late result changes nothing and the worker is free.
        let deadline = Instant::now() + Duration::from_secs(10);
        while service.is_stuck() {
            assert!(Instant::now() < deadline, "the worker still counts as stuck after its step returned");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(matches!(service.status(&id).await.unwrap().state, crate::api::JobState::Failed { .. }));
        service.stop_accepting();
        tokio::task::spawn_blocking(move || handle.shutdown(Duration::from_secs(5))).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_fails_that_job_and_the_worker_carries_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let limits = QueueLimits { max_queued: 10, max_active_per_client: 10, max_active_per_visitor: 10, history_len: 10 };
        let broken = ModelSummary { name: "broken".into(), ..model() };
        let service = JobService::new(Arc::new(store), limits, vec![model(), broken], "tiny".into());
        let handle = Worker::spawn(service.clone(), Box::new(Flaky), "tiny".into(), Duration::from_secs(10), Handle::current()).unwrap();
        let client = Client { ip: "127.0.0.1".parse().unwrap(), visitor: None, new_visitor: false };
        let submit = |prompt: &str, model: &str| GenerateParams { prompt: prompt.into(), model: Some(model.into()), ..Default::default() };
        let mut ids = Vec::new();
        for (prompt, model) in [("any", "broken"), ("please panic", "tiny"), ("a fox", "tiny")] {
            ids.push(service.submit(&submit(prompt, model), &client).await.unwrap().job_id);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut states = Vec::new();
        loop {
            states.clear();
            for id in &ids {
                states.push(service.status(id).await.unwrap().state);
            }
            if states.iter().all(|s| s.is_terminal()) {
                break;
            }
            assert!(Instant::now() < deadline, "jobs never finished: {states:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for failed in &states[..2] {
            match failed {
                crate::api::JobState::Failed { error } => assert_eq!(error.kind, ErrorKind::InferenceFailed),
                other => panic!("expected inference_failed, got {other:?}"),
            }
        }
        assert!(matches!(states[2], crate::api::JobState::Completed { .. }), "{:?}", states[2]);
        assert!(service.is_ready());
        service.stop_accepting();
        tokio::task::spawn_blocking(move || handle.shutdown(Duration::from_secs(5))).await.unwrap();
        assert!(!service.is_ready(), "a stopped worker is not ready");
    }
}
