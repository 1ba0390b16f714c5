//! The embedded job store: SQLite (WAL) for job rows, a local directory for PNGs. Needs
//! nothing running; one process owns it. The queue is fair-share (see `store`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use uuid::Uuid;

use super::store::{EnqueueLimits, Enqueued, Idempotency, JobCounts, JobStore, QueueAhead, Recovery, WebhookDue, WebhookOutcome};
use super::{Job, Outcome, Status};
use crate::api::{ErrorKind, JobFailure};

pub struct SqliteStore {
    pool: SqlitePool,
    images: PathBuf,
    /// Makes enqueue's check-then-insert atomic within this process (SQLite has one writer).
    enqueue_lock: tokio::sync::Mutex<()>,
}

#[derive(sqlx::FromRow)]
struct JobRow {
    id: String,
    status: String,
    params: String,
    client: String,
    visitor: Option<String>,
    cancel_token: Option<String>,
    webhook: Option<String>,
    step: i64,
    preview_step: Option<i64>,
    attempts: i64,
    cancel_requested: bool,
    error_kind: Option<String>,
    error_message: Option<String>,
    created_at_ms: i64,
    started_at_ms: Option<i64>,
    finished_at_ms: Option<i64>,
    inference_ms: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct WebhookRow {
    #[sqlx(flatten)]
    job: JobRow,
    webhook_attempts: i64,
}

impl TryFrom<JobRow> for Job {
    type Error = anyhow::Error;

    fn try_from(row: JobRow) -> anyhow::Result<Job> {
        let failure = match (row.error_kind, row.error_message) {
            (Some(kind), message) => Some(JobFailure {
                kind: ErrorKind::parse(&kind).with_context(|| format!("unknown error kind {kind:?}"))?,
                message: message.unwrap_or_default(),
            }),
            _ => None,
        };
        Ok(Job {
            id: Uuid::parse_str(&row.id).context("job id")?,
            params: serde_json::from_str(&row.params).context("job params")?,
            client: row.client,
            visitor: row.visitor,
            cancel_token: row.cancel_token,
            webhook: row.webhook,
            status: Status::parse(&row.status).with_context(|| format!("unknown status {:?}", row.status))?,
            step: row.step as u32,
            preview_step: row.preview_step.map(|s| s as u32),
            attempts: row.attempts as u32,
            cancel_requested: row.cancel_requested,
            failure,
            created_at_ms: row.created_at_ms,
            started_at_ms: row.started_at_ms,
            finished_at_ms: row.finished_at_ms,
            inference_ms: row.inference_ms.map(|ms| ms as u64),
        })
    }
}

impl SqliteStore {
    /// Opens (creating if needed) `dir/easel.db` and `dir/images/`, and migrates the schema.
    pub async fn open(dir: &Path) -> anyhow::Result<Self> {
        let images = dir.join("images");
        tokio::fs::create_dir_all(&images)
            .await
            .with_context(|| format!("creating {}", images.display()))?;
        let db = dir.join("easel.db");
        // By file name, not a URL: a path may hold `?`, `#` or `%`.
        let options = SqliteConnectOptions::new()
            .filename(&db)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .with_context(|| format!("opening {}", db.display()))?;
        sqlx::migrate!().run(&pool).await.context("migrating the job database")?;
        remove_leftovers(&images).await?;
        Ok(Self { pool, images, enqueue_lock: tokio::sync::Mutex::new(()) })
    }

    fn image_path(&self, id: Uuid) -> PathBuf {
        self.images.join(format!("{id}.png"))
    }

    fn preview_path(&self, id: Uuid) -> PathBuf {
        self.images.join(format!("{id}.preview.png"))
    }

    /// What a key the client used before answers: its job, a mismatch, or nothing (new, or
    /// expired; expired keys are dropped on the way).
    async fn idempotent_answer(&self, client: &str, idempotency: &Idempotency) -> anyhow::Result<Option<Enqueued>> {
        let now = super::now_ms();
        sqlx::query("DELETE FROM idempotency WHERE created_at_ms < ?").bind(now - 24 * 3600 * 1000).execute(&self.pool).await?;
        let earlier: Option<(String, String, i64)> =
            sqlx::query_as("SELECT body, job_id, created_at_ms FROM idempotency WHERE client = ? AND key = ?")
                .bind(client)
                .bind(&idempotency.key)
                .fetch_optional(&self.pool)
                .await
                .context("reading an idempotency key")?;
        Ok(match earlier {
            Some((_, _, at)) if at + idempotency.ttl_ms <= now => None,
            Some((body, job_id, _)) if body == idempotency.body => Some(Enqueued::Existing(Uuid::parse_str(&job_id)?)),
            Some(_) => Some(Enqueued::IdempotencyMismatch),
            None => None,
        })
    }

    /// Enqueue's checks and insert (with the idempotency key, in one transaction); the insert
    /// on `conn` (synchronous = FULL).
    async fn insert_job(
        &self,
        conn: &mut sqlx::pool::PoolConnection<sqlx::Sqlite>,
        job: &Job,
        limits: &EnqueueLimits,
        idempotency: Option<&Idempotency>,
    ) -> anyhow::Result<Enqueued> {
        let active = self
            .count("SELECT COUNT(*) FROM jobs WHERE client = ? AND status IN ('queued', 'processing')", &job.client)
            .await?;
        if active >= limits.per_client {
            return Ok(Enqueued::Busy);
        }
        if let Some(visitor) = &job.visitor {
            let mine = self
                .count("SELECT COUNT(*) FROM jobs WHERE visitor = ? AND status IN ('queued', 'processing')", visitor)
                .await?;
            if mine >= limits.per_visitor {
                return Ok(Enqueued::Busy);
            }
        }
        let queued = self.count("SELECT COUNT(*) FROM jobs WHERE status = ?", "queued").await?;
        if queued >= limits.max_queued {
            return Ok(Enqueued::QueueFull);
        }
        let mut tx = sqlx::Connection::begin(&mut **conn).await.context("enqueueing a job")?;
        // The round after the client's previous job, but not one already served.
        sqlx::query(
            "INSERT INTO jobs (id, status, params, steps, client, visitor, created_at_ms, model, cancel_token, webhook, round)
             VALUES (?1, 'queued', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9,
                     1 + MAX((SELECT round FROM fair_clock WHERE id = 1),
                             COALESCE((SELECT MAX(round) FROM jobs WHERE client = ?4), 0)))",
        )
        .bind(job.id.to_string())
        .bind(serde_json::to_string(&job.params)?)
        .bind(job.params.steps as i64)
        .bind(&job.client)
        .bind(&job.visitor)
        .bind(job.created_at_ms)
        .bind(&job.params.model)
        .bind(&job.cancel_token)
        .bind(&job.webhook)
        .execute(&mut *tx)
        .await
        .context("inserting a job")?;
        if let Some(idempotency) = idempotency {
            sqlx::query("INSERT OR REPLACE INTO idempotency (client, key, body, job_id, created_at_ms) VALUES (?, ?, ?, ?, ?)")
                .bind(&job.client)
                .bind(&idempotency.key)
                .bind(&idempotency.body)
                .bind(job.id.to_string())
                .bind(super::now_ms())
                .execute(&mut *tx)
                .await
                .context("keeping an idempotency key")?;
        }
        tx.commit().await.context("enqueueing a job")?;
        Ok(Enqueued::Accepted)
    }


    async fn count(&self, sql: &'static str, bind: &str) -> anyhow::Result<u32> {
        let n: i64 = sqlx::query_scalar(sql).bind(bind).fetch_one(&self.pool).await?;
        Ok(n as u32)
    }
}

/// At start (one process owns the folder): half-written files of a process that died, and
/// previews, which belong to runs that are over.
async fn remove_leftovers(images: &Path) -> anyhow::Result<()> {
    let mut entries = tokio::fs::read_dir(images).await.with_context(|| format!("listing {}", images.display()))?;
    let mut removed = 0;
    while let Some(entry) = entries.next_entry().await? {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".tmp") || name.ends_with(".preview.png") {
            tokio::fs::remove_file(entry.path()).await.with_context(|| format!("removing {}", entry.path().display()))?;
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(removed, "removed leftover temporary files and previews");
    }
    Ok(())
}

/// Writes through a temporary file so a reader never sees half a PNG; with `durable`, the
/// bytes reach the disk before the rename, so a power loss never leaves an empty image behind.
async fn write_atomically(path: &Path, bytes: Vec<u8>, durable: bool) -> anyhow::Result<()> {
    let (path, tmp) = (path.to_path_buf(), path.with_extension("tmp"));
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut file = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        std::io::Write::write_all(&mut file, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
        if durable {
            file.sync_all().with_context(|| format!("syncing {}", tmp.display()))?;
        }
        std::fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
        if durable {
            // The rename itself is durable once the folder is synced.
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("syncing {}", dir.display()))?;
            }
        }
        Ok(())
    })
    .await?
}

/// A file's bytes; an empty file counts as missing (never served as an image).
async fn read_if_exists(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    match tokio::fs::read(path).await {
        Ok(bytes) if bytes.is_empty() => Ok(None),
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn enqueue_with(&self, job: &Job, limits: &EnqueueLimits, idempotency: Option<&Idempotency>) -> anyhow::Result<Enqueued> {
        let _guard = self.enqueue_lock.lock().await;
        if let Some(idempotency) = idempotency {
            if let Some(earlier) = self.idempotent_answer(&job.client, idempotency).await? {
                return Ok(earlier);
            }
        }
        // An accepted job must survive a power loss: this commit waits for the disk.
        let mut conn = self.pool.acquire().await.context("enqueueing a job")?;
        sqlx::query("PRAGMA synchronous = FULL").execute(&mut *conn).await?;
        let accepted = self.insert_job(&mut conn, job, limits, idempotency).await;
        sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await?;
        accepted
    }

    async fn get(&self, id: Uuid) -> anyhow::Result<Option<Job>> {
        sqlx::query_as::<_, JobRow>("SELECT * FROM jobs WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .map(Job::try_from)
            .transpose()
    }

    async fn queue_ahead(&self, job: &Job) -> anyhow::Result<QueueAhead> {
        let (position, steps_ahead): (i64, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*) FILTER (WHERE status = 'queued'),
                    SUM(CASE WHEN status = 'queued' THEN steps ELSE steps - step END)
             FROM jobs
             WHERE (status = 'queued' AND (round, seq) < (SELECT round, seq FROM jobs WHERE id = ?1))
                OR status = 'processing'",
        )
        .bind(job.id.to_string())
        .fetch_one(&self.pool)
        .await?;
        Ok(QueueAhead { position: position as u32, steps_ahead: steps_ahead.unwrap_or(0).max(0) as u64 })
    }

    async fn claim_next(&self, now_ms: i64, models: &[String]) -> anyhow::Result<Option<Job>> {
        let mut tx = self.pool.begin().await.context("claiming a job")?;
        let claimed = sqlx::query_as::<_, JobRow>(
            "UPDATE jobs
             SET status = 'processing', attempts = attempts + 1, step = 0, preview_step = NULL,
                 started_at_ms = ?1
             WHERE seq = (SELECT seq FROM jobs
                          WHERE status = 'queued' AND model IN (SELECT value FROM json_each(?2))
                          ORDER BY round, seq LIMIT 1)
               AND status = 'queued'
             RETURNING *",
        )
        .bind(now_ms)
        .bind(serde_json::to_string(models)?)
        .fetch_optional(&mut *tx)
        .await
        .context("claiming a job")?;
        if let Some(row) = &claimed {
            sqlx::query("UPDATE fair_clock SET round = MAX(round, (SELECT round FROM jobs WHERE id = ?1)) WHERE id = 1")
                .bind(&row.id)
                .execute(&mut *tx)
                .await
                .context("advancing the fair-share clock")?;
        }
        tx.commit().await.context("claiming a job")?;
        claimed.map(Job::try_from).transpose()
    }

    async fn set_step(&self, id: Uuid, step: u32) -> anyhow::Result<bool> {
        let cancel: Option<bool> = sqlx::query_scalar(
            "UPDATE jobs SET step = ?2 WHERE id = ?1 AND status = 'processing' RETURNING cancel_requested",
        )
        .bind(id.to_string())
        .bind(step as i64)
        .fetch_optional(&self.pool)
        .await?;
        Ok(cancel.unwrap_or(false))
    }

    async fn finish(&self, id: Uuid, outcome: &Outcome, now_ms: i64) -> anyhow::Result<()> {
        let id_text = id.to_string();
        let query = match outcome {
            // Back in line, unless its cancel arrived meanwhile: a cancel is never undone.
            Outcome::Requeue => sqlx::query(
                "UPDATE jobs SET
                     status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'queued' END,
                     finished_at_ms = CASE WHEN cancel_requested THEN ?2 ELSE NULL END,
                     step = 0, preview_step = NULL, attempts = MAX(attempts - 1, 0), started_at_ms = NULL
                 WHERE id = ?1 AND status = 'processing'",
            )
            .bind(&id_text)
            .bind(now_ms),
            Outcome::Completed { inference_ms } => sqlx::query(
                "UPDATE jobs SET status = 'completed', step = steps, finished_at_ms = ?2, inference_ms = ?3
                 WHERE id = ?1 AND status = 'processing'",
            )
            .bind(&id_text)
            .bind(now_ms)
            .bind(*inference_ms as i64),
            Outcome::Cancelled => sqlx::query(
                "UPDATE jobs SET status = 'cancelled', finished_at_ms = ?2 WHERE id = ?1 AND status = 'processing'",
            )
            .bind(&id_text)
            .bind(now_ms),
            Outcome::Failed(failure) => sqlx::query(
                "UPDATE jobs SET status = 'failed', finished_at_ms = ?2, error_kind = ?3, error_message = ?4
                 WHERE id = ?1 AND status = 'processing'",
            )
            .bind(&id_text)
            .bind(now_ms)
            .bind(failure.kind.as_str())
            .bind(&failure.message),
        };
        query.execute(&self.pool).await.context("finishing a job")?;
        if !matches!(outcome, Outcome::Requeue) {
            let _ = tokio::fs::remove_file(self.preview_path(id)).await;
        }
        Ok(())
    }

    async fn request_cancel(&self, id: Uuid, now_ms: i64) -> anyhow::Result<Option<Job>> {
        sqlx::query(
            "UPDATE jobs SET
                 status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END,
                 finished_at_ms = CASE WHEN status = 'queued' THEN ?2 ELSE finished_at_ms END,
                 cancel_requested = CASE WHEN status = 'processing' THEN 1 ELSE cancel_requested END
             WHERE id = ?1",
        )
        .bind(id.to_string())
        .bind(now_ms)
        .execute(&self.pool)
        .await
        .context("cancelling a job")?;
        self.get(id).await
    }

    async fn recover_interrupted(&self, now_ms: i64) -> anyhow::Result<Recovery> {
        let stranded: Vec<(String, i64, bool)> =
            sqlx::query_as("SELECT id, attempts, cancel_requested FROM jobs WHERE status = 'processing'")
                .fetch_all(&self.pool)
                .await?;
        let mut recovery = Recovery::default();
        for (id, attempts, cancel_requested) in stranded {
            let id = Uuid::parse_str(&id)?;
            if cancel_requested {
                self.finish(id, &Outcome::Cancelled, now_ms).await?;
                recovery.cancelled += 1;
                continue;
            }
            let outcome = Outcome::after_interruption(attempts as u32);
            match outcome {
                // The dead attempt counts: put back in line directly, keeping `attempts`.
                Outcome::Requeue => {
                    sqlx::query(
                        "UPDATE jobs SET status = 'queued', step = 0, preview_step = NULL, started_at_ms = NULL
                         WHERE id = ?1 AND status = 'processing'",
                    )
                    .bind(id.to_string())
                    .execute(&self.pool)
                    .await?;
                    recovery.requeued += 1;
                }
                _ => {
                    self.finish(id, &outcome, now_ms).await?;
                    recovery.failed += 1;
                }
            }
        }
        Ok(recovery)
    }

    async fn recent_for_visitor(&self, visitor: &str, limit: u32) -> anyhow::Result<Vec<Job>> {
        sqlx::query_as::<_, JobRow>("SELECT * FROM jobs WHERE visitor = ? ORDER BY seq DESC LIMIT ?")
            .bind(visitor)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(Job::try_from)
            .collect()
    }

    async fn claim_webhooks(&self, now_ms: i64, lease_ms: i64, limit: u32) -> anyhow::Result<Vec<WebhookDue>> {
        let rows = sqlx::query_as::<_, WebhookRow>(
            "UPDATE jobs SET webhook_attempts = webhook_attempts + 1, webhook_due_at_ms = ?1 + ?2
             WHERE id IN (SELECT id FROM jobs
                          WHERE webhook IS NOT NULL AND webhook_state IS NULL AND webhook_due_at_ms <= ?1
                            AND status IN ('completed', 'failed', 'cancelled')
                          ORDER BY webhook_due_at_ms LIMIT ?3)
             RETURNING *",
        )
        .bind(now_ms)
        .bind(lease_ms)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .context("claiming due webhooks")?;
        rows.into_iter()
            .map(|row| Ok(WebhookDue { attempt: row.webhook_attempts as u32, job: Job::try_from(row.job)? }))
            .collect()
    }

    async fn webhook_attempted(&self, id: Uuid, outcome: WebhookOutcome) -> anyhow::Result<()> {
        let query = match outcome {
            WebhookOutcome::Delivered => sqlx::query("UPDATE jobs SET webhook_state = 'delivered' WHERE id = ?"),
            WebhookOutcome::GaveUp => sqlx::query("UPDATE jobs SET webhook_state = 'failed' WHERE id = ?"),
            WebhookOutcome::RetryAt(at) => sqlx::query("UPDATE jobs SET webhook_due_at_ms = ? WHERE id = ?").bind(at),
        };
        query.bind(id.to_string()).execute(&self.pool).await.context("recording a webhook attempt")?;
        Ok(())
    }

    async fn counts(&self) -> anyhow::Result<JobCounts> {
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT status, COUNT(*) FROM jobs GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        let mut counts = JobCounts::default();
        for (status, n) in rows {
            let n = n as u64;
            match Status::parse(&status) {
                Some(Status::Queued) => counts.queued = n,
                Some(Status::Processing) => counts.processing = n,
                Some(Status::Completed) => counts.completed = n,
                Some(Status::Failed) => counts.failed = n,
                Some(Status::Cancelled) => counts.cancelled = n,
                None => {}
            }
        }
        Ok(counts)
    }

    async fn put_image(&self, id: Uuid, png: Vec<u8>) -> anyhow::Result<()> {
        // A job the watchdog already failed gets no image when its step finally returns.
        let status: Option<String> = sqlx::query_scalar("SELECT status FROM jobs WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        anyhow::ensure!(status.as_deref() == Some("processing"), "job {id} is not running any more");
        write_atomically(&self.image_path(id), png, true).await
    }

    async fn image(&self, id: Uuid) -> anyhow::Result<Option<Vec<u8>>> {
        read_if_exists(&self.image_path(id)).await
    }

    async fn put_preview(&self, id: Uuid, step: u32, png: Vec<u8>) -> anyhow::Result<()> {
        write_atomically(&self.preview_path(id), png, false).await?;
        sqlx::query("UPDATE jobs SET preview_step = ?2 WHERE id = ?1 AND status = 'processing'")
            .bind(id.to_string())
            .bind(step as i64)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn preview(&self, id: Uuid) -> anyhow::Result<Option<Vec<u8>>> {
        read_if_exists(&self.preview_path(id)).await
    }

    async fn purge_finished(&self, cutoff_ms: i64) -> anyhow::Result<u64> {
        let ended: Vec<(String,)> = sqlx::query_as(
            "SELECT id FROM jobs WHERE status IN ('completed', 'failed', 'cancelled') AND finished_at_ms < ?
               AND (webhook IS NULL OR webhook_state IS NOT NULL) LIMIT 1000",
        )
        .bind(cutoff_ms)
        .fetch_all(&self.pool)
        .await
        .context("finding expired jobs")?;
        for (id,) in &ended {
            // The image first: a row whose image is gone is purged again next time.
            if let Ok(uuid) = Uuid::parse_str(id) {
                match tokio::fs::remove_file(self.image_path(uuid)).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e).context("removing an expired image"),
                }
            }
            let mut tx = self.pool.begin().await?;
            sqlx::query("INSERT OR IGNORE INTO expired (id, expired_at_ms) VALUES (?, ?)")
                .bind(id)
                .bind(cutoff_ms)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM jobs WHERE id = ?").bind(id).execute(&mut *tx).await?;
            tx.commit().await.context("deleting an expired job")?;
        }
        // Ids are remembered for 30 days after their jobs went.
        sqlx::query("DELETE FROM expired WHERE expired_at_ms < ?")
            .bind(cutoff_ms - 30 * 24 * 3600 * 1000)
            .execute(&self.pool)
            .await?;
        Ok(ended.len() as u64)
    }

    async fn expired(&self, id: Uuid) -> anyhow::Result<bool> {
        let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM expired WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    fn free_disk_bytes(&self) -> Option<u64> {
        fs2::available_space(&self.images).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_sqlite_store_keeps_the_store_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        super::super::store::contract::check(&store).await;
    }

    #[tokio::test]
    async fn leftovers_are_removed_at_start_and_empty_images_never_served() {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images");
        std::fs::create_dir_all(&images).unwrap();
        let (kept, empty) = (Uuid::new_v4(), Uuid::new_v4());
        std::fs::write(images.join(format!("{kept}.png")), b"png").unwrap();
        std::fs::write(images.join(format!("{empty}.png")), b"").unwrap();
        std::fs::write(images.join(format!("{kept}.tmp")), b"half").unwrap();
        std::fs::write(images.join(format!("{kept}.preview.png")), b"old").unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&images).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        let mut expected = vec![format!("{kept}.png"), format!("{empty}.png")];
        expected.sort();
        assert_eq!(left, expected);
        assert_eq!(store.image(kept).await.unwrap(), Some(b"png".to_vec()));
        assert_eq!(store.image(empty).await.unwrap(), None, "a 0-byte image is never served");
    }

    #[tokio::test]
    async fn retention_deletes_ended_jobs_and_remembers_their_ids() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let params = crate::api::ResolvedParams::tiny_for_tests("old", 2);
        let old = Job::new(params.clone(), "a".into(), None, 1_000);
        let recent = Job::new(params.clone(), "b".into(), None, 1_000);
        let waiting = Job::new(params, "c".into(), None, 1_000);
        for (job, ended_at) in [(&old, 5_000), (&recent, 50_000)] {
            store.enqueue(job, 10, 10).await.unwrap();
            assert_eq!(store.claim_next(2_000, &["tiny".into()]).await.unwrap().unwrap().id, job.id);
            store.put_image(job.id, vec![7; 8]).await.unwrap();
            store.finish(job.id, &Outcome::Completed { inference_ms: 1 }, ended_at).await.unwrap();
        }
        store.enqueue(&waiting, 10, 10).await.unwrap();
        assert_eq!(store.purge_finished(10_000).await.unwrap(), 1);
        assert!(store.get(old.id).await.unwrap().is_none());
        assert_eq!(store.image(old.id).await.unwrap(), None);
        assert!(!dir.path().join(format!("images/{}.png", old.id)).exists());
        assert!(store.expired(old.id).await.unwrap());
        assert!(!store.expired(recent.id).await.unwrap() && !store.expired(Uuid::new_v4()).await.unwrap());
        assert!(store.get(recent.id).await.unwrap().is_some() && store.image(recent.id).await.unwrap().is_some());
        assert!(store.get(waiting.id).await.unwrap().is_some(), "a waiting job is never purged");
        assert!(store.free_disk_bytes().unwrap() > 0);
    }

    #[tokio::test]
    async fn jobs_survive_reopening_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let params = crate::api::ResolvedParams {
            prompt: "kept".into(),
            negative_prompt: "blur".into(),
            width: 64,
            height: 128,
            steps: 3,
            guidance: 2.5,
            seed: 9,
            model: "tiny".into(),
        };
        let job = Job::new(params, "c".into(), None, 5);
        {
            let store = SqliteStore::open(dir.path()).await.unwrap();
            store.enqueue(&job, 10, 10).await.unwrap();
        }
        let store = SqliteStore::open(dir.path()).await.unwrap();
        assert_eq!(store.get(job.id).await.unwrap().unwrap(), job);
    }
}
