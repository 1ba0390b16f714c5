//! The shared job store: Redis, for many web processes and separate workers on one queue.
//!
//! Layout (every key under a prefix, `easel:`):
//! - `job:<id>`: a hash per job; `active:<client>`: the client's queued or running jobs (busy
//!   check); `visitor:<v>`: a visitor's history; `counts`: jobs by status; `seq`: arrival order.
//! - Per model `q:<model>:…`: `jobs`, the waiting jobs in fair-share order (score = round, then
//!   arrival); `tickets`, a stream with one entry per waiting job, read by the consumer group
//!   `workers`; `claims`, ticket → job while it runs; `running`; `clock` and `last`, the rounds.
//! - `img:<id>`, `preview:<id>`: PNGs, served by any web process; `events`: pub/sub of job ids.
//!
//! A worker reads a ticket with `XREADGROUP` and takes the job first in fair-share order with
//! it; the ticket stays pending while the job runs, renewed (`XCLAIM`) by the worker's
//! heartbeat, and is acknowledged when the job ends. A worker that dies stops renewing: after
//! the heartbeat time another worker takes the ticket over with `XAUTOCLAIM` and the job runs
//! again, at most `MAX_ATTEMPTS` times. Every state change is one Lua script, so checks and
//! updates are atomic across processes, and each announces the job on `events`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, Script};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::store::{EnqueueLimits, Enqueued, Idempotency, JobCounts, JobStore, QueueAhead, Recovery, Sharing, WebhookDue, WebhookOutcome};
use super::{Job, Outcome, Status, MAX_ATTEMPTS};
use crate::api::{ErrorKind, JobFailure};

const PREFIX: &str = "easel:";
const GROUP: &str = "workers";
/// A preview outlives its job's run only briefly.
const PREVIEW_SECS: u64 = 3600;

#[derive(Clone, Debug)]
pub struct RedisSettings {
    /// `redis://host:port/db`
    pub url: String,
    /// Silence after which another worker takes a running job over; zero: at once (tests).
    pub heartbeat: Duration,
    /// How long finished jobs and their images are kept; zero: for good.
    pub retention: Duration,
    /// How long `claim_next` waits for a job to arrive; zero: not at all.
    pub claim_wait: Duration,
    /// A job's claim is renewed at most this long (its time limit and some): a worker hung
    /// past it loses the job to another worker.
    pub max_run: Duration,
}

pub struct RedisStore {
    client: redis::Client,
    conn: ConnectionManager,
    /// The blocking stream read gets a connection of its own, so it never holds up other calls.
    claim_conn: tokio::sync::Mutex<Option<ConnectionManager>>,
    /// This process's name in the consumer group.
    consumer: String,
    settings: RedisSettings,
    /// Streams whose consumer group exists.
    groups: Mutex<HashSet<String>>,
    /// Heartbeats of the jobs this process runs.
    heartbeats: Mutex<HashMap<Uuid, tokio::task::AbortHandle>>,
    /// Which model's ticket is tried first next time.
    turn: AtomicUsize,
}

/// Shared by the scripts: key names and the transitions several of them make.
const LUA_PRELUDE: &str = r#"
local p = ARGV[1]
local function jkey(id) return p .. 'job:' .. id end
local function qkey(model, part) return p .. 'q:' .. model .. ':' .. part end
local function member(seq, id) return string.format('%020d', tonumber(seq)) .. ':' .. id end
local function count(status, by) redis.call('HINCRBY', p .. 'counts', status, by) end
local function announce(id) redis.call('PUBLISH', p .. 'events', id) end
local function release_ticket(model, entry)
  local t = qkey(model, 'tickets')
  redis.call('XACK', t, 'workers', entry)
  redis.call('XDEL', t, entry)
  redis.call('HDEL', qkey(model, 'claims'), entry)
end
-- Leaves `processing`: the ticket is done with, the job no longer runs anywhere.
local function stop_running(id, model, entry)
  release_ticket(model, entry)
  redis.call('SREM', qkey(model, 'running'), id)
  redis.call('HDEL', jkey(id), 'entry', 'owner')
  count('processing', -1)
end
-- A terminal state: frees the client's slot, drops the preview, starts the retention clock.
local function terminate(id, client, status, now, retention)
  local key = jkey(id)
  redis.call('HSET', key, 'status', status, 'finished', now)
  redis.call('SREM', p .. 'active:' .. client, id)
  local visitor = redis.call('HGET', key, 'visitor')
  if visitor then redis.call('SREM', p .. 'vactive:' .. visitor, id) end
  redis.call('DEL', p .. 'preview:' .. id)
  count(status, 1)
  -- Its webhook is due now (the set orders webhooks by when they are due).
  if redis.call('HEXISTS', key, 'webhook') == 1 then redis.call('ZADD', p .. 'webhooks', now, id) end
  if tonumber(retention) > 0 then
    redis.call('EXPIRE', key, retention)
    redis.call('EXPIRE', p .. 'img:' .. id, retention)
    -- Remembered 30 days longer, so that the job answers "expired" rather than "not found".
    redis.call('SET', p .. 'gone:' .. id, 1, 'EX', tonumber(retention) + 2592000)
  end
end
-- Back in line at its old place, with a fresh ticket.
local function requeue(id, model, seq, round)
  local key = jkey(id)
  redis.call('HSET', key, 'status', 'queued', 'step', 0)
  redis.call('HDEL', key, 'preview_step', 'started')
  redis.call('DEL', p .. 'preview:' .. id)
  redis.call('ZADD', qkey(model, 'jobs'), round, member(seq, id))
  redis.call('XADD', qkey(model, 'tickets'), '*', 'job', id)
  count('queued', 1)
end
"#;

fn script(body: &str) -> Script {
    Script::new(&format!("{LUA_PRELUDE}\n{body}"))
}

/// ARGV: prefix, id, model, client, visitor ('' for none), params, steps, created, max_queued,
/// max_active, retention, cancel token ('' for none), idempotency key ('' for none), its body,
/// its time to live in ms, max active per visitor, webhook URL ('' for none).
static ENQUEUE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local id, model, client, visitor = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local idem = ARGV[13] ~= '' and (p .. 'idem:' .. client .. ':' .. ARGV[13]) or nil
if idem then
  local earlier = redis.call('HMGET', idem, 'body', 'job')
  if earlier[1] then
    if earlier[1] == ARGV[14] then return 'existing:' .. earlier[2] end
    return 'mismatch'
  end
end
local active = p .. 'active:' .. client
if redis.call('SCARD', active) >= tonumber(ARGV[10]) then return 'busy' end
local vactive = visitor ~= '' and (p .. 'vactive:' .. visitor) or nil
if vactive and redis.call('SCARD', vactive) >= tonumber(ARGV[16]) then return 'busy' end
if tonumber(redis.call('HGET', p .. 'counts', 'queued') or '0') >= tonumber(ARGV[9]) then return 'full' end
local seq = redis.call('INCR', p .. 'seq')
-- The round after the client's previous job, but not one already served.
local clock = tonumber(redis.call('GET', qkey(model, 'clock')) or '0')
local last = tonumber(redis.call('HGET', qkey(model, 'last'), client) or '0')
local round = math.max(clock, last) + 1
redis.call('HSET', qkey(model, 'last'), client, round)
local key = jkey(id)
redis.call('HSET', key, 'id', id, 'params', ARGV[6], 'client', client, 'model', model, 'steps', ARGV[7],
  'created', ARGV[8], 'seq', seq, 'round', round, 'status', 'queued', 'step', 0, 'attempts', 0, 'cancel', 0)
if ARGV[12] ~= '' then redis.call('HSET', key, 'cancel_token', ARGV[12]) end
if ARGV[17] ~= '' then redis.call('HSET', key, 'webhook', ARGV[17]) end
if visitor ~= '' then
  local v = p .. 'visitor:' .. visitor
  redis.call('HSET', key, 'visitor', visitor)
  redis.call('ZADD', v, seq, id)
  redis.call('ZREMRANGEBYRANK', v, 0, -201)
  if tonumber(ARGV[11]) > 0 then redis.call('EXPIRE', v, ARGV[11]) end
end
redis.call('SADD', active, id)
if vactive then redis.call('SADD', vactive, id) end
redis.call('SADD', p .. 'models', model)
redis.call('ZADD', qkey(model, 'jobs'), round, member(seq, id))
redis.call('XADD', qkey(model, 'tickets'), '*', 'job', id)
count('queued', 1)
if idem then
  redis.call('HSET', idem, 'body', ARGV[14], 'job', id)
  redis.call('PEXPIRE', idem, ARGV[15])
end
announce(id)
return 'accepted'
"#,
    )
});

/// ARGV: prefix, model, ticket, consumer, now. The job first in line, or nil.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local model, entry, consumer = ARGV[2], ARGV[3], ARGV[4]
-- A ticket already standing for a running job (delivered again after its group was remade)
-- stays with that job.
if redis.call('HEXISTS', qkey(model, 'claims'), entry) == 1 then return false end
-- Only a ticket still pending for this worker counts: another worker may have taken it over
-- (and given its job a new ticket) while this one was slow to claim.
if #redis.call('XCLAIM', qkey(model, 'tickets'), 'workers', consumer, 0, entry, 'JUSTID') == 0 then return false end
local popped = redis.call('ZPOPMIN', qkey(model, 'jobs'))
if #popped == 0 then
  -- A spare ticket: its job was cancelled while it waited.
  release_ticket(model, entry)
  return false
end
local id = string.sub(popped[1], 22)
local round = tonumber(popped[2])
local clock = math.max(tonumber(redis.call('GET', qkey(model, 'clock')) or '0'), round)
redis.call('SET', qkey(model, 'clock'), clock)
local key = jkey(id)
local client = redis.call('HGET', key, 'client')
-- A client whose last round is served needs no entry: its next job joins the clock's round.
local last = redis.call('HGET', qkey(model, 'last'), client)
if last and tonumber(last) <= clock then redis.call('HDEL', qkey(model, 'last'), client) end
redis.call('HSET', key, 'status', 'processing', 'step', 0, 'started', ARGV[5], 'entry', entry, 'owner', consumer)
redis.call('HDEL', key, 'preview_step')
redis.call('HINCRBY', key, 'attempts', 1)
redis.call('HSET', qkey(model, 'claims'), entry, id)
redis.call('SADD', qkey(model, 'running'), id)
count('queued', -1)
count('processing', 1)
announce(id)
return redis.call('HGETALL', key)
"#,
    )
});

/// ARGV: prefix, model, ticket. A ticket read but not used (a read delivers one per stream):
/// it goes back as a fresh one at once.
static UNUSED: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
release_ticket(ARGV[2], ARGV[3])
redis.call('XADD', qkey(ARGV[2], 'tickets'), '*', 'job', '')
return 1
"#,
    )
});

/// ARGV: prefix, id, consumer, png. Only the job's current owner stores its image.
static IMAGE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local f = redis.call('HMGET', jkey(ARGV[2]), 'status', 'owner')
if f[1] ~= 'processing' or f[2] ~= ARGV[3] then return 0 end
local key = p .. 'img:' .. ARGV[2]
redis.call('SET', key, ARGV[4])
-- Its retention restarts when the job ends; this bounds an image whose job never does.
if tonumber(ARGV[5]) > 0 then redis.call('EXPIRE', key, ARGV[5]) end
return 1
"#,
    )
});

/// ARGV: prefix, id, step ('' for a heartbeat only), consumer. Renews the claim; answers 1 when
/// the worker should stop (cancel requested, or the job was taken over).
static STEP: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local key = jkey(ARGV[2])
local f = redis.call('HMGET', key, 'status', 'owner', 'cancel', 'entry', 'model')
if f[1] ~= 'processing' or f[2] ~= ARGV[4] then return 1 end
if #redis.call('XCLAIM', qkey(f[5], 'tickets'), 'workers', ARGV[4], 0, f[4], 'JUSTID') == 0 then return 1 end
if ARGV[3] ~= '' then
  redis.call('HSET', key, 'step', ARGV[3])
  announce(ARGV[2])
end
return tonumber(f[3])
"#,
    )
});

/// ARGV: prefix, id, step, consumer, png.
static PREVIEW: LazyLock<Script> = LazyLock::new(|| {
    script(&format!(
        r#"
local key = jkey(ARGV[2])
local f = redis.call('HMGET', key, 'status', 'owner')
if f[1] ~= 'processing' or f[2] ~= ARGV[4] then return 0 end
redis.call('SET', p .. 'preview:' .. ARGV[2], ARGV[5], 'EX', {PREVIEW_SECS})
redis.call('HSET', key, 'preview_step', ARGV[3])
announce(ARGV[2])
return 1
"#
    ))
});

/// ARGV: prefix, id, consumer, outcome (completed|failed|cancelled|requeue), now, inference_ms,
/// error kind, error message, retention. Only the job's current owner can end it.
static FINISH: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local id = ARGV[2]
local key = jkey(id)
local f = redis.call('HMGET', key, 'status', 'owner', 'cancel', 'entry', 'model', 'client', 'seq', 'round', 'attempts', 'steps')
if f[1] ~= 'processing' or f[2] ~= ARGV[3] then return 0 end
stop_running(id, f[5], f[4])
local outcome = ARGV[4]
if outcome == 'requeue' and f[3] ~= '1' then
  -- A graceful stop: the attempt does not count.
  requeue(id, f[5], f[7], f[8])
  redis.call('HSET', key, 'attempts', math.max(tonumber(f[9]) - 1, 0))
else
  -- A cancel is never undone by a requeue.
  if outcome == 'requeue' then outcome = 'cancelled' end
  if outcome == 'completed' then redis.call('HSET', key, 'step', f[10], 'inference_ms', ARGV[6]) end
  if outcome == 'failed' then redis.call('HSET', key, 'error_kind', ARGV[7], 'error_message', ARGV[8]) end
  terminate(id, f[6], outcome, ARGV[5], ARGV[9])
end
announce(id)
return 1
"#,
    )
});

/// ARGV: prefix, now, lease in ms, limit. Leases the due webhooks: [id, attempt, id, attempt, ...].
static CLAIM_WEBHOOKS: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local due_set, now = p .. 'webhooks', tonumber(ARGV[2])
local claimed = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', due_set, '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))) do
  if redis.call('EXISTS', jkey(id)) == 1 then
    redis.call('ZADD', due_set, now + tonumber(ARGV[3]), id)
    table.insert(claimed, id)
    table.insert(claimed, redis.call('HINCRBY', jkey(id), 'webhook_attempts', 1))
  else
    -- Expired by retention before it was delivered.
    redis.call('ZREM', due_set, id)
  end
end
return claimed
"#,
    )
});

/// ARGV: prefix, id, now, retention. The job after the request, or nil when there is none.
static CANCEL: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local id = ARGV[2]
local key = jkey(id)
local f = redis.call('HMGET', key, 'status', 'model', 'seq', 'client')
if not f[1] then return false end
if f[1] == 'queued' then
  redis.call('ZREM', qkey(f[2], 'jobs'), member(f[3], id))
  count('queued', -1)
  terminate(id, f[4], 'cancelled', ARGV[3], ARGV[4])
  announce(id)
elseif f[1] == 'processing' then
  redis.call('HSET', key, 'cancel', 1)
  announce(id)
end
return redis.call('HGETALL', key)
"#,
    )
});

/// ARGV: prefix, id. {jobs ahead, steps ahead} in the job's model queue.
static AHEAD: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local f = redis.call('HMGET', jkey(ARGV[2]), 'status', 'model', 'seq')
if f[1] ~= 'queued' then return {0, 0} end
local jobs = qkey(f[2], 'jobs')
local rank = redis.call('ZRANK', jobs, member(f[3], ARGV[2]))
if not rank then return {0, 0} end
local steps = 0
if rank > 0 then
  for _, m in ipairs(redis.call('ZRANGE', jobs, 0, rank - 1)) do
    steps = steps + tonumber(redis.call('HGET', jkey(string.sub(m, 22)), 'steps') or '0')
  end
end
for _, id in ipairs(redis.call('SMEMBERS', qkey(f[2], 'running'))) do
  local r = redis.call('HMGET', jkey(id), 'steps', 'step')
  steps = steps + math.max(tonumber(r[1] or '0') - tonumber(r[2] or '0'), 0)
end
return {rank, steps}
"#,
    )
});

/// ARGV: prefix, model, consumer, min idle ms, now, retention, max attempts. Takes over the
/// tickets nobody renewed for the heartbeat time: their jobs run again, or end.
static RECLAIM: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local model, consumer = ARGV[2], ARGV[3]
local t = qkey(model, 'tickets')
local requeued, failed, cancelled = 0, 0, 0
if redis.call('EXISTS', t) == 0 then return {0, 0, 0} end
local cursor = '0-0'
repeat
  local res = redis.call('XAUTOCLAIM', t, 'workers', consumer, ARGV[4], cursor, 'COUNT', 100, 'JUSTID')
  cursor = res[1]
  for _, entry in ipairs(res[2]) do
    local id = redis.call('HGET', qkey(model, 'claims'), entry)
    local f = {}
    if id then f = redis.call('HMGET', jkey(id), 'status', 'entry', 'cancel', 'attempts', 'client', 'seq', 'round') end
    if id and f[1] == 'processing' and f[2] == entry then
      stop_running(id, model, entry)
      if f[3] == '1' then
        terminate(id, f[5], 'cancelled', ARGV[5], ARGV[6])
        cancelled = cancelled + 1
      elseif tonumber(f[4]) >= tonumber(ARGV[7]) then
        redis.call('HSET', jkey(id), 'error_kind', 'interrupted', 'error_message',
          'The worker stopped ' .. f[4] .. ' times while painting this image; giving up.')
        terminate(id, f[5], 'failed', ARGV[5], ARGV[6])
        failed = failed + 1
      else
        -- The dead attempt counts.
        requeue(id, model, f[6], f[7])
        requeued = requeued + 1
      end
      announce(id)
    else
      release_ticket(model, entry)
      -- Read but never used (its worker died in between): the job it stood for still waits.
      if not id then redis.call('XADD', t, '*', 'job', '') end
    end
  end
until cursor == '0-0'
return {requeued, failed, cancelled}
"#,
    )
});

impl RedisStore {
    /// Connects (failing when Redis does not answer); this process joins the consumer group
    /// under a name of its own.
    pub async fn connect(settings: RedisSettings) -> anyhow::Result<Self> {
        let shown = redact(&settings.url);
        let client = redis::Client::open(settings.url.as_str()).with_context(|| format!("reading the Redis URL {shown}"))?;
        let conn = client
            .get_connection_manager_with_config(connection_config(Duration::from_secs(5)))
            .await
            .with_context(|| format!("connecting to Redis at {shown}"))?;
        let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "host".into());
        let consumer = format!("{host}-{}-{}", std::process::id(), &Uuid::new_v4().simple().to_string()[..8]);
        let store = Self {
            client,
            conn,
            claim_conn: tokio::sync::Mutex::new(None),
            consumer,
            settings,
            groups: Mutex::new(HashSet::new()),
            heartbeats: Mutex::new(HashMap::new()),
            turn: AtomicUsize::new(0),
        };
        store.ping().await.with_context(|| format!("Redis at {shown} does not answer"))?;
        Ok(store)
    }

    /// A connection of its own for other shared state (the rate limits), quick to give up
    /// when Redis is away, so that a check never holds a request up for long.
    pub async fn quick_connection(&self) -> anyhow::Result<ConnectionManager> {
        let config = connection_config(Duration::from_millis(500)).set_connection_timeout(Some(Duration::from_millis(500)));
        self.client.get_connection_manager_with_config(config).await.context("connecting to Redis")
    }

    pub fn prefix(&self) -> &'static str {
        PREFIX
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    fn tickets(model: &str) -> String {
        format!("{PREFIX}q:{model}:tickets")
    }

    /// Creates the consumer group of each model's ticket stream once (from its first entry, so
    /// tickets added before any worker existed are read too).
    async fn ensure_groups(&self, models: &[String]) -> anyhow::Result<()> {
        for model in models {
            let stream = Self::tickets(model);
            if self.groups.lock().expect("groups").contains(&stream) {
                continue;
            }
            let created: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&stream)
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut self.conn())
                .await;
            match created {
                Ok(()) => {}
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(e) => return Err(e).with_context(|| format!("creating the consumer group of {stream}")),
            }
            self.groups.lock().expect("groups").insert(stream);
        }
        Ok(())
    }

    async fn claim_connection(&self) -> anyhow::Result<ConnectionManager> {
        let mut slot = self.claim_conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let timeout = self.settings.claim_wait + Duration::from_secs(5);
        let conn = self.client.get_connection_manager_with_config(connection_config(timeout)).await.context("connecting to Redis")?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Renews the claim on a running job every third of the heartbeat time.
    fn start_heartbeat(&self, id: Uuid) {
        if self.settings.heartbeat.is_zero() {
            return;
        }
        let every = self.settings.heartbeat / 3;
        let until = tokio::time::Instant::now() + self.settings.max_run;
        let (mut conn, consumer) = (self.conn(), self.consumer.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                if tokio::time::Instant::now() > until {
                    tracing::warn!(job = %id, "the job outran its time limit by far; no longer renewing its claim");
                    return;
                }
                let renewed: redis::RedisResult<i64> =
                    STEP.arg(PREFIX).arg(id.to_string()).arg("").arg(&consumer).invoke_async(&mut conn).await;
                if let Err(e) = renewed {
                    tracing::warn!(job = %id, error = %e, "renewing a job's claim failed");
                }
            }
        });
        self.heartbeats.lock().expect("heartbeats").insert(id, task.abort_handle());
    }

    fn stop_heartbeat(&self, id: Uuid) {
        if let Some(task) = self.heartbeats.lock().expect("heartbeats").remove(&id) {
            task.abort();
        }
    }

    fn retention_secs(&self) -> u64 {
        self.settings.retention.as_secs()
    }
}

fn connection_config(response_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(response_timeout))
        .set_max_delay(Duration::from_secs(2))
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

/// A job from its hash; `None` for an empty one (no such job, or expired).
fn job_from(fields: HashMap<String, String>) -> anyhow::Result<Option<Job>> {
    if fields.is_empty() {
        return Ok(None);
    }
    let text = |name: &str| fields.get(name).with_context(|| format!("a job without {name}"));
    let number = |name: &str| -> anyhow::Result<Option<i64>> {
        fields.get(name).map(|v| v.parse::<i64>().with_context(|| format!("job field {name} = {v:?}"))).transpose()
    };
    let status = text("status")?;
    let failure = match fields.get("error_kind") {
        Some(kind) => Some(JobFailure {
            kind: ErrorKind::parse(kind).with_context(|| format!("unknown error kind {kind:?}"))?,
            message: fields.get("error_message").cloned().unwrap_or_default(),
        }),
        None => None,
    };
    Ok(Some(Job {
        id: Uuid::parse_str(text("id")?).context("job id")?,
        params: serde_json::from_str(text("params")?).context("job params")?,
        client: text("client")?.clone(),
        visitor: fields.get("visitor").cloned(),
        cancel_token: fields.get("cancel_token").cloned(),
        webhook: fields.get("webhook").cloned(),
        status: Status::parse(status).with_context(|| format!("unknown status {status:?}"))?,
        step: number("step")?.unwrap_or(0) as u32,
        preview_step: number("preview_step")?.map(|s| s as u32),
        attempts: number("attempts")?.unwrap_or(0) as u32,
        cancel_requested: fields.get("cancel").is_some_and(|c| c == "1"),
        failure,
        created_at_ms: number("created")?.unwrap_or(0),
        started_at_ms: number("started")?,
        finished_at_ms: number("finished")?,
        inference_ms: number("inference_ms")?.map(|ms| ms as u64),
    }))
}

#[async_trait]
impl JobStore for RedisStore {
    async fn enqueue_with(&self, job: &Job, limits: &EnqueueLimits, idempotency: Option<&Idempotency>) -> anyhow::Result<Enqueued> {
        let answer: String = ENQUEUE
            .arg(PREFIX)
            .arg(job.id.to_string())
            .arg(&job.params.model)
            .arg(&job.client)
            .arg(job.visitor.as_deref().unwrap_or(""))
            .arg(serde_json::to_string(&job.params)?)
            .arg(job.params.steps)
            .arg(job.created_at_ms)
            .arg(limits.max_queued)
            .arg(limits.per_client)
            .arg(self.retention_secs())
            .arg(job.cancel_token.as_deref().unwrap_or(""))
            .arg(idempotency.map_or("", |i| i.key.as_str()))
            .arg(idempotency.map_or("", |i| i.body.as_str()))
            .arg(idempotency.map_or(1, |i| i.ttl_ms.max(1)))
            .arg(limits.per_visitor)
            .arg(job.webhook.as_deref().unwrap_or(""))
            .invoke_async(&mut self.conn())
            .await
            .context("enqueueing a job")?;
        Ok(match answer.as_str() {
            "busy" => Enqueued::Busy,
            "full" => Enqueued::QueueFull,
            "mismatch" => Enqueued::IdempotencyMismatch,
            other => match other.strip_prefix("existing:") {
                Some(id) => Enqueued::Existing(Uuid::parse_str(id).context("an idempotency key's job")?),
                None => Enqueued::Accepted,
            },
        })
    }

    async fn get(&self, id: Uuid) -> anyhow::Result<Option<Job>> {
        let fields: HashMap<String, String> = self.conn().hgetall(format!("{PREFIX}job:{id}")).await.context("reading a job")?;
        job_from(fields)
    }

    async fn queue_ahead(&self, job: &Job) -> anyhow::Result<QueueAhead> {
        let (position, steps_ahead): (u32, u64) =
            AHEAD.arg(PREFIX).arg(job.id.to_string()).invoke_async(&mut self.conn()).await.context("reading a queue position")?;
        Ok(QueueAhead { position, steps_ahead })
    }

    async fn claim_next(&self, now_ms: i64, models: &[String]) -> anyhow::Result<Option<Job>> {
        if models.is_empty() {
            return Ok(None);
        }
        self.ensure_groups(models).await?;
        let streams: Vec<String> = models.iter().map(|m| Self::tickets(m)).collect();
        let from: Vec<&str> = vec![">"; streams.len()];
        let mut conn = self.claim_connection().await?;
        // Spare tickets (of jobs cancelled while waiting) give nothing: read on a few times.
        for attempt in 0..8 {
            let mut options = StreamReadOptions::default().group(GROUP, &self.consumer).count(1);
            if attempt == 0 && !self.settings.claim_wait.is_zero() {
                options = options.block(self.settings.claim_wait.as_millis() as usize);
            }
            let read: redis::RedisResult<Option<StreamReadReply>> = conn.xread_options(&streams, &from, &options).await;
            let reply = match read {
                Ok(reply) => reply,
                Err(e) => {
                    // The groups are gone if Redis lost its data: make them again next time.
                    if e.code() == Some("NOGROUP") {
                        self.groups.lock().expect("groups").clear();
                    }
                    return Err(e).context("reading the job queue");
                }
            };
            // One ticket per stream that had any; models take turns being tried first.
            let mut tickets: Vec<(&String, String)> = Vec::new();
            for key in reply.map(|r| r.keys).unwrap_or_default() {
                let model = &models[streams.iter().position(|s| *s == key.key).context("a ticket from an unknown stream")?];
                tickets.extend(key.ids.into_iter().map(|id| (model, id.id)));
            }
            if tickets.is_empty() {
                return Ok(None);
            }
            let turn = self.turn.fetch_add(1, Ordering::Relaxed) % tickets.len();
            tickets.rotate_left(turn);
            let mut claimed = None;
            for (model, entry) in tickets {
                if claimed.is_some() {
                    let _: i64 = UNUSED
                        .arg(PREFIX)
                        .arg(model)
                        .arg(&entry)
                        .invoke_async(&mut self.conn())
                        .await
                        .context("returning a ticket")?;
                    continue;
                }
                let fields: Option<HashMap<String, String>> = CLAIM
                    .arg(PREFIX)
                    .arg(model)
                    .arg(&entry)
                    .arg(&self.consumer)
                    .arg(now_ms)
                    .invoke_async(&mut self.conn())
                    .await
                    .context("claiming a job")?;
                claimed = fields.map(job_from).transpose()?.flatten();
            }
            if let Some(job) = claimed {
                self.start_heartbeat(job.id);
                return Ok(Some(job));
            }
        }
        Ok(None)
    }

    async fn set_step(&self, id: Uuid, step: u32) -> anyhow::Result<bool> {
        let stop: i64 = STEP
            .arg(PREFIX)
            .arg(id.to_string())
            .arg(step)
            .arg(&self.consumer)
            .invoke_async(&mut self.conn())
            .await
            .context("recording progress")?;
        Ok(stop == 1)
    }

    async fn finish(&self, id: Uuid, outcome: &Outcome, now_ms: i64) -> anyhow::Result<()> {
        let (name, inference_ms, kind, message) = match outcome {
            Outcome::Completed { inference_ms } => ("completed", *inference_ms, "", ""),
            Outcome::Failed(f) => ("failed", 0, f.kind.as_str(), f.message.as_str()),
            Outcome::Cancelled => ("cancelled", 0, "", ""),
            Outcome::Requeue => ("requeue", 0, "", ""),
        };
        let _: i64 = FINISH
            .arg(PREFIX)
            .arg(id.to_string())
            .arg(&self.consumer)
            .arg(name)
            .arg(now_ms)
            .arg(inference_ms)
            .arg(kind)
            .arg(message)
            .arg(self.retention_secs())
            .invoke_async(&mut self.conn())
            .await
            .context("finishing a job")?;
        // Only now: until the end is recorded, the job is still this worker's.
        self.stop_heartbeat(id);
        Ok(())
    }

    async fn request_cancel(&self, id: Uuid, now_ms: i64) -> anyhow::Result<Option<Job>> {
        let fields: Option<HashMap<String, String>> = CANCEL
            .arg(PREFIX)
            .arg(id.to_string())
            .arg(now_ms)
            .arg(self.retention_secs())
            .invoke_async(&mut self.conn())
            .await
            .context("cancelling a job")?;
        Ok(fields.map(job_from).transpose()?.flatten())
    }

    async fn recover_interrupted(&self, now_ms: i64) -> anyhow::Result<Recovery> {
        // Redis restored its pending tickets with their old delivery times, so downtime looks
        // like silence: give running workers a heartbeat's time to renew first.
        let info: String = redis::cmd("INFO").arg("server").query_async(&mut self.conn()).await.context("INFO server")?;
        let uptime = info.lines().find_map(|l| l.strip_prefix("uptime_in_seconds:")).and_then(|v| v.trim().parse::<u64>().ok());
        if uptime.is_some_and(|secs| secs < self.settings.heartbeat.as_secs()) {
            return Ok(Recovery::default());
        }
        let models: Vec<String> = self.conn().smembers(format!("{PREFIX}models")).await.context("listing queues")?;
        self.ensure_groups(&models).await?;
        let mut recovery = Recovery::default();
        for model in &models {
            let (requeued, failed, cancelled): (u64, u64, u64) = RECLAIM
                .arg(PREFIX)
                .arg(model)
                .arg(&self.consumer)
                .arg(self.settings.heartbeat.as_millis() as u64)
                .arg(now_ms)
                .arg(self.retention_secs())
                .arg(MAX_ATTEMPTS)
                .invoke_async(&mut self.conn())
                .await
                .with_context(|| format!("taking over the silent workers' {model} jobs"))?;
            recovery.requeued += requeued;
            recovery.failed += failed;
            recovery.cancelled += cancelled;
        }
        Ok(recovery)
    }

    async fn recent_for_visitor(&self, visitor: &str, limit: u32) -> anyhow::Result<Vec<Job>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn();
        let ids: Vec<String> =
            conn.zrevrange(format!("{PREFIX}visitor:{visitor}"), 0, limit as isize - 1).await.context("reading history")?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(format!("{PREFIX}job:{id}"));
        }
        let rows: Vec<HashMap<String, String>> = pipe.query_async(&mut conn).await.context("reading history")?;
        // Expired jobs leave empty rows behind: skipped.
        Ok(rows.into_iter().map(job_from).collect::<anyhow::Result<Vec<_>>>()?.into_iter().flatten().collect())
    }

    async fn claim_webhooks(&self, now_ms: i64, lease_ms: i64, limit: u32) -> anyhow::Result<Vec<WebhookDue>> {
        let claimed: Vec<(String, u32)> = CLAIM_WEBHOOKS
            .arg(PREFIX)
            .arg(now_ms)
            .arg(lease_ms)
            .arg(limit)
            .invoke_async(&mut self.conn())
            .await
            .context("claiming due webhooks")?;
        let mut due = Vec::with_capacity(claimed.len());
        for (id, attempt) in claimed {
            let id = Uuid::parse_str(&id).context("a webhook's job id")?;
            if let Some(job) = self.get(id).await? {
                due.push(WebhookDue { job, attempt });
            }
        }
        Ok(due)
    }

    async fn webhook_attempted(&self, id: Uuid, outcome: WebhookOutcome) -> anyhow::Result<()> {
        let due_set = format!("{PREFIX}webhooks");
        let mut conn = self.conn();
        // The job's record may have expired meanwhile: only the due set is written.
        let _: i64 = match outcome {
            WebhookOutcome::RetryAt(at) => redis::cmd("ZADD").arg(&due_set).arg("XX").arg(at).arg(id.to_string()).query_async(&mut conn).await,
            WebhookOutcome::Delivered | WebhookOutcome::GaveUp => conn.zrem(&due_set, id.to_string()).await,
        }
        .context("recording a webhook attempt")?;
        Ok(())
    }

    async fn counts(&self) -> anyhow::Result<JobCounts> {
        let counts: HashMap<String, i64> = self.conn().hgetall(format!("{PREFIX}counts")).await.context("counting jobs")?;
        let get = |status: Status| counts.get(status.as_str()).copied().unwrap_or(0).max(0) as u64;
        Ok(JobCounts {
            queued: get(Status::Queued),
            processing: get(Status::Processing),
            completed: get(Status::Completed),
            failed: get(Status::Failed),
            cancelled: get(Status::Cancelled),
        })
    }

    async fn put_image(&self, id: Uuid, png: Vec<u8>) -> anyhow::Result<()> {
        let expire = match self.retention_secs() {
            0 => 0,
            secs => secs + 3600,
        };
        let stored: i64 = IMAGE
            .arg(PREFIX)
            .arg(id.to_string())
            .arg(&self.consumer)
            .arg(png)
            .arg(expire)
            .invoke_async(&mut self.conn())
            .await
            .context("storing an image")?;
        anyhow::ensure!(stored == 1, "job {id} is no longer this worker's: another worker took it over");
        Ok(())
    }

    async fn image(&self, id: Uuid) -> anyhow::Result<Option<Vec<u8>>> {
        let png: Option<Vec<u8>> = self.conn().get(format!("{PREFIX}img:{id}")).await.context("reading an image")?;
        // Never serve an empty image.
        Ok(png.filter(|bytes| !bytes.is_empty()))
    }

    async fn put_preview(&self, id: Uuid, step: u32, png: Vec<u8>) -> anyhow::Result<()> {
        let _: i64 = PREVIEW
            .arg(PREFIX)
            .arg(id.to_string())
            .arg(step)
            .arg(&self.consumer)
            .arg(png)
            .invoke_async(&mut self.conn())
            .await
            .context("storing a preview")?;
        Ok(())
    }

    async fn preview(&self, id: Uuid) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(self.conn().get(format!("{PREFIX}preview:{id}")).await.context("reading a preview")?)
    }

    async fn expired(&self, id: Uuid) -> anyhow::Result<bool> {
        let mut conn = self.conn();
        let (gone, present): (bool, bool) = redis::pipe()
            .exists(format!("{PREFIX}gone:{id}"))
            .exists(format!("{PREFIX}job:{id}"))
            .query_async(&mut conn)
            .await
            .context("reading an expired job")?;
        Ok(gone && !present)
    }

    async fn ping(&self) -> anyhow::Result<()> {
        let _: String = redis::cmd("PING").query_async(&mut self.conn()).await.context("PING")?;
        Ok(())
    }

    fn sharing(&self) -> Option<Sharing> {
        Some(Sharing { reclaim_every: (self.settings.heartbeat / 2).max(Duration::from_millis(200)) })
    }

    fn follow_changes(&self, changes: broadcast::Sender<Uuid>) -> bool {
        let client = self.client.clone();
        let channel = format!("{PREFIX}events");
        tokio::spawn(async move {
            loop {
                match client.get_async_pubsub().await {
                    Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                        Ok(()) => {
                            let mut messages = pubsub.on_message();
                            while let Some(message) = messages.next().await {
                                if let Some(id) = message.get_payload::<String>().ok().and_then(|s| Uuid::parse_str(&s).ok()) {
                                    // No receivers is fine: nobody is watching.
                                    let _ = changes.send(id);
                                }
                            }
                            tracing::warn!("lost the Redis event subscription; reconnecting");
                        }
                        Err(e) => tracing::warn!(error = %e, "subscribing to Redis events failed"),
                    },
                    Err(e) => tracing::warn!(error = %e, "connecting to Redis for events failed"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        true
    }

    async fn share_step_ms(&self, ms: f64) -> anyhow::Result<()> {
        let () = self.conn().set_ex(format!("{PREFIX}ms_per_step"), ms, 3600).await.context("sharing the step time")?;
        Ok(())
    }

    async fn shared_step_ms(&self) -> anyhow::Result<Option<f64>> {
        Ok(self.conn().get(format!("{PREFIX}ms_per_step")).await.context("reading the step time")?)
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        for (_, task) in self.heartbeats.lock().expect("heartbeats").drain() {
            task.abort();
        }
    }
}

/// A throwaway `redis-server` for tests, on a free loopback port.
#[cfg(test)]
pub(crate) mod test_server {
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    pub struct TestRedis {
        child: Child,
        pub url: String,
        _dir: tempfile::TempDir,
    }

    impl TestRedis {
        pub fn start() -> TestRedis {
            let dir = tempfile::tempdir().expect("temp dir");
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server is not installed: `bash scripts/test.sh` installs it (Debian's redis-server)");
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "redis-server did not start on port {port}");
                std::thread::sleep(Duration::from_millis(20));
            }
            TestRedis { child, url: format!("redis://127.0.0.1:{port}/0"), _dir: dir }
        }
    }

    impl Drop for TestRedis {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_server::TestRedis;
    use super::*;

    fn settings(url: &str) -> RedisSettings {
        RedisSettings {
            url: url.into(),
            heartbeat: Duration::ZERO,
            retention: Duration::from_secs(60),
            claim_wait: Duration::ZERO,
            max_run: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn the_redis_store_keeps_the_store_contract() {
        let redis = TestRedis::start();
        let store = RedisStore::connect(settings(&redis.url)).await.unwrap();
        super::super::store::contract::check(&store).await;
    }

    #[tokio::test]
    async fn redis_retention_expires_ended_jobs_and_remembers_their_ids() {
        let redis = TestRedis::start();
        let store = RedisStore::connect(RedisSettings { retention: Duration::from_secs(1), ..settings(&redis.url) }).await.unwrap();
        let params = crate::api::ResolvedParams::tiny_for_tests("old", 2);
        let job = Job::new(params, "c".into(), Some("v".into()), 1);
        store.enqueue(&job, 5, 5).await.unwrap();
        store.claim_next(2, &["tiny".into()]).await.unwrap().unwrap();
        store.put_image(job.id, vec![7; 8]).await.unwrap();
        store.finish(job.id, &Outcome::Completed { inference_ms: 1 }, 3).await.unwrap();
        assert!(!store.expired(job.id).await.unwrap(), "kept for the retention time");
        assert!(store.image(job.id).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(2_100)).await;
        assert!(store.get(job.id).await.unwrap().is_none());
        assert!(store.image(job.id).await.unwrap().is_none());
        assert!(store.expired(job.id).await.unwrap());
        assert!(!store.expired(Uuid::new_v4()).await.unwrap());
        assert!(store.recent_for_visitor("v", 10).await.unwrap().is_empty(), "history skips expired jobs");
    }

    #[tokio::test]
    async fn redis_changes_reach_every_process_and_silent_workers_lose_their_jobs() {
        let redis = TestRedis::start();
        let web = RedisStore::connect(settings(&redis.url)).await.unwrap();
        let live = RedisSettings { heartbeat: Duration::from_millis(600), ..settings(&redis.url) };
        let worker = RedisStore::connect(live.clone()).await.unwrap();
        let (tx, mut rx) = broadcast::channel(16);
        assert!(web.follow_changes(tx));
        tokio::time::sleep(Duration::from_millis(200)).await;

        let params = crate::api::ResolvedParams::tiny_for_tests("a fox", 4);
        let job = Job::new(params, "c".into(), None, 1);
        web.enqueue(&job, 5, 5).await.unwrap();
        assert_eq!(tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap(), job.id);
        let claimed = worker.claim_next(2, &["tiny".into()]).await.unwrap().unwrap();
        assert_eq!(claimed.id, job.id);
        assert_eq!(tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap(), job.id);

        // A live worker's heartbeat keeps its job; another worker cannot take it over.
        let rescuer = RedisStore::connect(live).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        assert_eq!(rescuer.recover_interrupted(3).await.unwrap(), Recovery::default());
        assert!(!worker.set_step(job.id, 1).await.unwrap());

        // Silent past the heartbeat: taken over; the old worker learns it must stop and its
        // result no longer counts.
        worker.stop_heartbeat(job.id);
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert_eq!(rescuer.recover_interrupted(4).await.unwrap(), Recovery { requeued: 1, failed: 0, cancelled: 0 });
        assert!(worker.set_step(job.id, 2).await.unwrap(), "the silent worker is told to stop");
        let again = rescuer.claim_next(5, &["tiny".into()]).await.unwrap().unwrap();
        assert_eq!((again.id, again.attempts), (job.id, 2));
        worker.finish(job.id, &Outcome::Completed { inference_ms: 1 }, 6).await.unwrap();
        assert_eq!(web.get(job.id).await.unwrap().unwrap().status, Status::Processing, "only the owner ends a job");
        rescuer.finish(job.id, &Outcome::Completed { inference_ms: 1 }, 7).await.unwrap();
        assert_eq!(web.get(job.id).await.unwrap().unwrap().status, Status::Completed);
        assert_eq!(web.counts().await.unwrap().completed, 1);
    }
}
