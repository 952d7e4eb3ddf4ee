//! Rate limits: token buckets per key, kept in this process or shared by every replica
//! through Redis.
//!
//! Both stores run the same algorithm, GCRA: a bucket is one timestamp, the theoretical
//! arrival time (TAT) of the next request, which each admitted request pushes one
//! emission interval (`per / requests`) later; a request is refused when that would put
//! the TAT more than `burst` intervals ahead of now. Locally the buckets are `governor`'s;
//! in Redis one Lua script reads the clock with `TIME`, decides and writes the TAT, so a
//! decision is one round trip and the replicas' own clocks never enter into it.
//!
//! Shared limits never wait long on Redis: each call is bounded by [`REDIS_TIMEOUT`], and
//! while Redis is unreachable decisions skip it and use local buckets holding the limit
//! divided by `--replicas`, until a background probe finds Redis answering again.
//!
//! Answers carry the header fields of the IETF httpapi draft "RateLimit header fields
//! for HTTP", in the syntax of its revisions 09 and 10: `RateLimit-Policy:
//! "default";q=100;w=60` and `RateLimit: "default";r=42;t=17`.

use crate::{
    config::{RateLimitKeyType, RateLimitPolicy},
    metrics::Metrics,
};
use governor::{
    clock::{Clock, QuantaClock, Reference},
    middleware::StateInformationMiddleware,
    state::keyed::DashMapStateStore,
    Quota,
};
use http::{header, HeaderMap, HeaderName, HeaderValue};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::{
    fmt,
    hash::BuildHasher,
    num::NonZeroU32,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Weak,
    },
    time::Duration,
};
use tokio::sync::Notify;

/// The longest a decision waits for Redis. Redis in the same zone answers the script in
/// well under a millisecond; past 50 ms it is overloaded or gone, and a local decision
/// serves the client better than waiting.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(50);

/// How long a background probe (`PING`, then loading the script) may take. Probes run off
/// the request path, so this may be generous enough for a fresh connection.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// While Redis is down, probes start this often and back off to [`HEALTH_INTERVAL`].
const PROBE_MIN_INTERVAL: Duration = Duration::from_millis(100);

/// While Redis is up, how often it is pinged when no decision has found it down, so the
/// `redis_up` gauge is right even without traffic.
const HEALTH_INTERVAL: Duration = Duration::from_secs(2);

/// How often local buckets that have refilled are dropped. Their state equals a fresh
/// bucket's, so dropping them changes no decision; a minute keeps the sweep (one pass
/// over the map) rare.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// How many checks pass between two looks at the number of local keys: counting visits
/// every shard of the map, so it is not done on every request.
const SIZE_CHECK_EVERY: u64 = 1024;

/// Below this many keys, only [`PRUNE_INTERVAL`] triggers a sweep. Above it, a sweep
/// also runs whenever the map has doubled since the last one, which keeps it within
/// twice the keys that are still counting down, whatever clients send.
const PRUNE_FLOOR: usize = 10_000;

/// Longer keys are hashed before they become part of a Redis key, so a client sending a
/// huge header value cannot make huge Redis keys.
const MAX_REDIS_KEY_PART: usize = 128;

/// Prefix of every Redis key, followed by the Policy's `namespace/name` and the key.
const REDIS_KEY_PREFIX: &str = "portcullis:ratelimit:";

/// The name of the quota policy in the header fields: one Route has one rate limit, so
/// one fixed name is unambiguous and tells clients nothing about the configuration.
const POLICY_ITEM: &str = "default";

pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// One GCRA step in Redis. KEYS[1] is the bucket; ARGV[1] the emission interval and
/// ARGV[2] the burst. Times are microseconds of Redis's clock, exact in Lua's doubles
/// until the year 2255. Returns {admitted (0/1), remaining, retry after µs, reset µs}.
/// The TAT is written with `%d` because Lua would print a number this large in
/// scientific notation, and with an expiry at the moment the bucket is full again,
/// when its key is no longer needed.
const GCRA_SCRIPT: &str = r"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = now
local stored = redis.call('GET', KEYS[1])
if stored then
  tat = math.max(tonumber(stored), now)
end
local capacity = interval * burst
local next_tat = tat + interval
if next_tat - now > capacity then
  return {0, 0, next_tat - capacity - now, tat - now}
end
redis.call('SET', KEYS[1], string.format('%d', next_tat), 'PX', math.ceil((next_tat - now) / 1000))
return {1, math.floor((now + capacity - next_tat) / interval), 0, next_tat - now}
";

/// The limiter of one Policy's `rateLimit` section, shared by the Routes it applies to.
pub struct RateLimiter {
    spec: RateLimitPolicy,
    bucket: Bucket,
    /// `RateLimit-Policy`, the same for every answer.
    policy_header: HeaderValue,
    /// The buckets of this process: the whole limit for a local section; the limit
    /// divided by the replicas for a shared one, used while Redis is unreachable.
    local: Local,
    shared: Option<Shared>,
}

/// Where a shared section's buckets live in Redis.
struct Shared {
    store: Arc<SharedStore>,
    /// `portcullis:ratelimit:namespace/name:`, followed by the request's key.
    key_prefix: String,
}

/// The outcome of one check, with what the response header fields need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Which buckets decided.
    pub store: Store,
    /// Requests a full bucket admits at once (`q`).
    pub limit: u32,
    /// Requests admitted at once from now on (`r`).
    pub remaining: u32,
    /// Time until the bucket is full again (`t`, rounded up to seconds).
    pub reset: Duration,
    /// When refused, the time until one request will be admitted.
    pub retry_after: Option<Duration>,
    policy_header: HeaderValue,
}

/// Which buckets made a decision; the `store` label of the decisions metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Store {
    /// A section counted per replica.
    Local,
    /// A shared section, counted in Redis.
    Redis,
    /// A shared section while Redis is unreachable: the limit divided by the replicas.
    Fallback,
}

/// The connection to Redis that every shared section uses, and whether it answers.
pub struct SharedStore {
    /// `None` when the URL could not be used; shared sections then always fall back.
    conn: Option<ConnectionManager>,
    script: redis::Script,
    replicas: NonZeroU32,
    up: AtomicBool,
    /// Wakes the probe when a decision finds Redis down.
    wake_probe: Notify,
    metrics: Arc<Metrics>,
}

/// A token bucket's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Bucket {
    /// Time for one token to come back: `per / requests`.
    interval: Duration,
    burst: NonZeroU32,
}

/// A bucket's answer, before the header fields are attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Outcome {
    allowed: bool,
    remaining: u32,
    reset: Duration,
    retry_after: Duration,
}

/// Keyed buckets in this process. Keys are stored as 64-bit hashes under a per-process
/// random seed, so every key costs the same few bytes whatever its length; two live keys
/// colliding is as likely as a 64-bit collision, negligible below billions of keys.
struct Local<C: Clock = QuantaClock> {
    limiter: governor::RateLimiter<u64, DashMapStateStore<u64>, C, StateInformationMiddleware>,
    clock: C,
    hasher: std::hash::RandomState,
    bucket: Bucket,
    started: C::Instant,
    checks: AtomicU64,
    /// Nanoseconds after `started` when the next timed sweep is due.
    next_prune: AtomicU64,
    /// A sweep also runs when the map holds more keys than this.
    prune_above: AtomicUsize,
    prune_floor: usize,
    /// Set while one check sweeps, so concurrent checks do not sweep too.
    pruning: AtomicBool,
}

#[derive(Debug, thiserror::Error)]
enum RedisFailure {
    #[error("no usable --redis-url")]
    NoConnection,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

// === impl RateLimiter ===

impl RateLimiter {
    /// Builds the limiter of a `rateLimit` section. `name` (`namespace/name` of the
    /// Policy) prefixes its Redis keys. A shared section without a store (no
    /// `--redis-url`) counts per replica, with the whole limit. Errors are (field path
    /// under the section, message).
    pub fn build(
        spec: &RateLimitPolicy,
        name: &str,
        shared: Option<&Arc<SharedStore>>,
    ) -> Result<RateLimiter, Vec<(String, String)>> {
        let bucket = Bucket::from_spec(spec)?;
        let shared = shared.filter(|_| spec.shared).map(|store| Shared {
            store: store.clone(),
            key_prefix: format!("{REDIS_KEY_PREFIX}{name}:"),
        });
        let local_bucket = match &shared {
            Some(s) => bucket.divided(s.store.replicas),
            None => bucket,
        };
        let policy_header = format!(
            "\"{POLICY_ITEM}\";q={};w={}",
            bucket.burst,
            ceil_secs(bucket.window()).max(1)
        );
        Ok(RateLimiter {
            spec: spec.clone(),
            bucket,
            policy_header: HeaderValue::try_from(policy_header).expect("digits and quotes"),
            local: Local::new(local_bucket, QuantaClock::default()),
            shared,
        })
    }

    /// The section this limiter was built from: a new configuration with the same one
    /// keeps this limiter and its buckets.
    pub fn spec(&self) -> &RateLimitPolicy {
        &self.spec
    }

    /// Counts one request under `key`. Through Redis for a shared section while it
    /// answers; from local buckets otherwise. Never waits on Redis longer than
    /// [`REDIS_TIMEOUT`].
    pub async fn check(&self, key: &str) -> Decision {
        if let Some(shared) = &self.shared {
            if shared.store.is_up() {
                let redis_key = shared.redis_key(key);
                match shared.store.eval(&redis_key, self.bucket).await {
                    Ok(outcome) => return self.decision(outcome, Store::Redis),
                    Err(e) => shared.store.mark_down(&e),
                }
            }
            return self.decision(self.local.check(key), Store::Fallback);
        }
        self.decision(self.local.check(key), Store::Local)
    }

    /// Drops local buckets that have refilled. Checks do this on their own now and then;
    /// this is for callers that want it done now.
    pub fn prune(&self) {
        self.local.prune();
    }

    /// Local keys held now.
    pub fn local_keys(&self) -> usize {
        self.local.len()
    }

    /// `RateLimit-Policy` always states the configured limit; in fallback, `r` and `t`
    /// are those of this replica's share, which is what it enforces.
    fn decision(&self, outcome: Outcome, store: Store) -> Decision {
        Decision {
            allowed: outcome.allowed,
            store,
            limit: self.bucket.burst.get(),
            remaining: outcome.remaining,
            reset: outcome.reset,
            retry_after: (!outcome.allowed).then_some(outcome.retry_after),
            policy_header: self.policy_header.clone(),
        }
    }
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("spec", &self.spec)
            .field("shared", &self.shared.is_some())
            .finish_non_exhaustive()
    }
}

// === impl Shared ===

impl Shared {
    fn redis_key(&self, key: &str) -> String {
        if key.len() <= MAX_REDIS_KEY_PART {
            return format!("{}{key}", self.key_prefix);
        }
        // Every replica must derive the same name, so the hash is a fixed one.
        let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
        let mut name = format!("{}#", self.key_prefix);
        for b in &digest.as_ref()[..16] {
            name.push_str(&format!("{b:02x}"));
        }
        name
    }
}

// === impl Decision ===

impl Decision {
    /// Sets `RateLimit-Policy` and `RateLimit`, and `Retry-After` when refused.
    pub fn apply_headers(&self, headers: &mut HeaderMap) {
        headers.insert(RATELIMIT_POLICY, self.policy_header.clone());
        let state = format!(
            "\"{POLICY_ITEM}\";r={};t={}",
            self.remaining,
            ceil_secs(self.reset)
        );
        headers.insert(
            RATELIMIT,
            HeaderValue::try_from(state).expect("digits and quotes"),
        );
        if let Some(secs) = self.retry_after_secs() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
    }

    /// Whole seconds to wait when refused, at least 1: a client told 0 would retry at
    /// once and be refused again.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after.map(|d| ceil_secs(d).max(1))
    }

    /// The `result` label of the decisions metric.
    pub fn result_label(&self) -> &'static str {
        if self.allowed {
            "allowed"
        } else {
            "limited"
        }
    }

    /// Counts this decision in `portcullis_rate_limit_decisions_total`.
    pub fn record(&self, metrics: &Metrics) {
        metrics
            .rate_limit_decisions
            .with_label_values(&[self.result_label(), self.store.label()])
            .inc();
    }
}

// === impl Store ===

impl Store {
    pub fn label(self) -> &'static str {
        match self {
            Store::Local => "local",
            Store::Redis => "redis",
            Store::Fallback => "fallback",
        }
    }
}

// === impl SharedStore ===

impl SharedStore {
    /// Connects to Redis at `url`, waiting at most a second for a first answer. Never
    /// fails: when Redis does not answer, the store starts down (shared sections use
    /// their fallback buckets) and a background task keeps trying. `replicas` is how
    /// many gateways share the limits, which divides them while Redis is down. Must run
    /// inside a Tokio runtime.
    pub async fn connect(url: &str, replicas: u32, metrics: Arc<Metrics>) -> Arc<SharedStore> {
        let conn = match connection(url) {
            Ok(conn) => Some(conn),
            Err(error) => {
                tracing::error!(%error, "cannot use --redis-url; shared rate limits stay local");
                None
            }
        };
        metrics.rate_limit_redis_up.set(0);
        let store = Arc::new(SharedStore {
            conn,
            script: redis::Script::new(GCRA_SCRIPT),
            replicas: NonZeroU32::new(replicas).unwrap_or(NonZeroU32::MIN),
            up: AtomicBool::new(false),
            wake_probe: Notify::new(),
            metrics,
        });
        if store.conn.is_none() {
            return store;
        }
        match store.probe().await {
            Ok(()) => store.mark_up(),
            Err(error) => tracing::warn!(
                %error,
                replicas,
                "Redis unreachable; shared rate limits use local buckets divided by the replicas"
            ),
        }
        tokio::spawn(watch_health(Arc::downgrade(&store)));
        store
    }

    /// True while decisions go to Redis.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub fn replicas(&self) -> u32 {
        self.replicas.get()
    }

    async fn eval(&self, key: &str, bucket: Bucket) -> Result<Outcome, RedisFailure> {
        let mut conn = self.conn.clone().ok_or(RedisFailure::NoConnection)?;
        let mut call = self.script.key(key);
        call.arg(bucket.interval_micros()).arg(bucket.burst.get());
        let answer = tokio::time::timeout(REDIS_TIMEOUT, call.invoke_async(&mut conn))
            .await
            .map_err(|_| RedisFailure::Timeout(REDIS_TIMEOUT))?;
        let (allowed, remaining, retry_us, reset_us): (i64, i64, i64, i64) = answer?;
        Ok(Outcome {
            allowed: allowed == 1,
            remaining: u32::try_from(remaining).unwrap_or(0),
            reset: micros(reset_us),
            retry_after: micros(retry_us),
        })
    }

    /// One round of `PING`, then loading the script so the next decision is one round
    /// trip again (a restarted Redis has forgotten it).
    async fn probe(&self) -> Result<(), RedisFailure> {
        let mut conn = self.conn.clone().ok_or(RedisFailure::NoConnection)?;
        let round = async {
            redis::cmd("PING").query_async::<()>(&mut conn).await?;
            self.script.prepare_invoke().load_async(&mut conn).await?;
            Ok::<_, redis::RedisError>(())
        };
        tokio::time::timeout(PROBE_TIMEOUT, round)
            .await
            .map_err(|_| RedisFailure::Timeout(PROBE_TIMEOUT))??;
        Ok(())
    }

    /// Logs once per outage, from whichever decision or probe noticed it first.
    fn mark_down(&self, error: &RedisFailure) {
        if self.up.swap(false, Ordering::AcqRel) {
            self.metrics.rate_limit_redis_up.set(0);
            tracing::warn!(
                %error,
                replicas = self.replicas.get(),
                "Redis unreachable; shared rate limits use local buckets divided by the replicas"
            );
            self.wake_probe.notify_one();
        }
    }

    fn mark_up(&self) {
        if !self.up.swap(true, Ordering::AcqRel) {
            self.metrics.rate_limit_redis_up.set(1);
            tracing::info!("Redis reachable; shared rate limits are counted there");
        }
    }
}

impl fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedStore")
            .field("replicas", &self.replicas)
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

/// A connection manager that connects on first use. Its own reconnect attempts are few
/// and short: the probe in [`watch_health`] is what keeps trying during a long outage.
fn connection(url: &str) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(PROBE_TIMEOUT))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client, config)
}

/// Keeps `redis_up` true to Redis: while up, pings it every [`HEALTH_INTERVAL`] or as
/// soon as a decision finds it down; while down, probes with backoff until it answers.
/// Ends once the store is dropped.
async fn watch_health(store: Weak<SharedStore>) {
    let mut delay = PROBE_MIN_INTERVAL;
    loop {
        let Some(s) = store.upgrade() else { return };
        if s.is_up() {
            delay = PROBE_MIN_INTERVAL;
            let woken = tokio::time::timeout(HEALTH_INTERVAL, s.wake_probe.notified()).await;
            if woken.is_err() {
                if let Err(e) = s.probe().await {
                    s.mark_down(&e);
                }
            }
            continue;
        }
        match s.probe().await {
            Ok(()) => s.mark_up(),
            Err(error) => {
                tracing::debug!(%error, "Redis still unreachable");
                drop(s);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(HEALTH_INTERVAL);
            }
        }
    }
}

// === impl Bucket ===

impl Bucket {
    fn from_spec(spec: &RateLimitPolicy) -> Result<Bucket, Vec<(String, String)>> {
        let mut errors = Vec::new();
        let mut error = |field: &str, message: &str| errors.push((field.into(), message.into()));
        if spec.requests == 0 {
            error("requests", "must be at least 1");
        }
        if spec.per.0.is_zero() {
            error("per", "must be longer than zero");
        }
        if spec.burst == Some(0) {
            error("burst", "must be at least 1");
        }
        let named = matches!(
            spec.key.kind,
            RateLimitKeyType::Header | RateLimitKeyType::Claim
        );
        match (&spec.key.name, named) {
            (None, true) => error("key.name", "is required for Header and Claim"),
            (Some(_), false) => error("key.name", "is set only for Header and Claim"),
            (Some(name), true)
                if spec.key.kind == RateLimitKeyType::Header
                    && HeaderName::try_from(name.as_str()).is_err() =>
            {
                error("key.name", "is not a valid header name");
            }
            _ => {}
        }
        let interval = spec.per.0.checked_div(spec.requests).unwrap_or_default();
        if !spec.per.0.is_zero() && spec.requests > 0 && interval < Duration::from_micros(1) {
            // Redis counts in microseconds; a million requests a second per key is no
            // limit worth counting anyway.
            error("requests", "more than one per microsecond of `per`");
        }
        let burst = NonZeroU32::new(spec.burst.unwrap_or(spec.requests));
        match burst {
            Some(burst) if errors.is_empty() => Ok(Bucket { interval, burst }),
            _ => Err(errors),
        }
    }

    /// The share of one replica among `replicas`: the same refill time per replica for
    /// a rate `replicas` times lower, and a burst as much smaller, at least 1.
    fn divided(self, replicas: NonZeroU32) -> Bucket {
        Bucket {
            interval: self.interval.saturating_mul(replicas.get()),
            burst: NonZeroU32::new(self.burst.get() / replicas).unwrap_or(NonZeroU32::MIN),
        }
    }

    /// Time for an empty bucket to fill: the window (`w`) of the quota.
    fn window(self) -> Duration {
        self.interval.saturating_mul(self.burst.get())
    }

    fn interval_micros(self) -> u64 {
        u64::try_from(self.interval.as_micros()).unwrap_or(u64::MAX)
    }

    fn quota(self) -> Quota {
        Quota::with_period(self.interval)
            .expect("the interval is at least a microsecond")
            .allow_burst(self.burst)
    }
}

// === impl Local ===

impl<C: Clock + Clone> Local<C> {
    fn new(bucket: Bucket, clock: C) -> Self {
        let limiter = governor::RateLimiter::dashmap_with_clock(bucket.quota(), clock.clone())
            .with_middleware::<StateInformationMiddleware>();
        Local {
            limiter,
            started: clock.now(),
            clock,
            hasher: std::hash::RandomState::new(),
            bucket,
            checks: AtomicU64::new(0),
            next_prune: AtomicU64::new(nanos(PRUNE_INTERVAL)),
            prune_above: AtomicUsize::new(PRUNE_FLOOR),
            prune_floor: PRUNE_FLOOR,
            pruning: AtomicBool::new(false),
        }
    }

    fn check(&self, key: &str) -> Outcome {
        let hashed = self.hasher.hash_one(key);
        let outcome = match self.limiter.check_key(&hashed) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                // governor reports whole tokens, so this can exceed the exact time to
                // full by less than one interval; `t` is rounded up to seconds anyway.
                let used = self.bucket.burst.get().saturating_sub(remaining);
                Outcome {
                    allowed: true,
                    remaining,
                    reset: self.bucket.interval.saturating_mul(used),
                    retry_after: Duration::ZERO,
                }
            }
            Err(not_until) => {
                let wait: Duration = not_until.wait_time_from(self.clock.now());
                let rest = self.bucket.burst.get() - 1;
                Outcome {
                    allowed: false,
                    remaining: 0,
                    reset: wait + self.bucket.interval.saturating_mul(rest),
                    retry_after: wait,
                }
            }
        };
        self.prune_if_due();
        outcome
    }

    /// Sweeps when [`PRUNE_INTERVAL`] has passed, or when the map has grown past
    /// `prune_above`. The sweep runs on the request that notices; it costs one pass over
    /// the map, about once a minute or once per doubling.
    fn prune_if_due(&self) {
        let elapsed = nanos(self.clock.now().duration_since(self.started).into());
        let count = self.checks.fetch_add(1, Ordering::Relaxed);
        let due = elapsed >= self.next_prune.load(Ordering::Relaxed)
            || (count % SIZE_CHECK_EVERY == SIZE_CHECK_EVERY - 1
                && self.limiter.len() > self.prune_above.load(Ordering::Relaxed));
        if due && !self.pruning.swap(true, Ordering::Acquire) {
            self.prune();
            self.pruning.store(false, Ordering::Release);
        }
    }

    fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        let left = self.limiter.len();
        self.prune_above
            .store(self.prune_floor.max(left * 2), Ordering::Relaxed);
        let elapsed = nanos(self.clock.now().duration_since(self.started).into());
        self.next_prune
            .store(elapsed + nanos(PRUNE_INTERVAL), Ordering::Relaxed);
    }

    fn len(&self) -> usize {
        self.limiter.len()
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn micros(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests;
