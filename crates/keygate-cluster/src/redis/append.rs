//! Publishing: the append script that takes an entry only at the log's next sequence
//! number (and updates shared state in the same step), and the writer's retry loop around it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{PUBLISH_ATTEMPTS, RedisBus, Seen, unavailable};
use crate::wire;
use crate::{BusError, Cursor, Event};

/// Appends one entry if the epoch matches and its sequence number is the next one; updates
/// shared state in the same step. A flush records itself (signed, for replicas; its bare id, for
/// this script) and deletes the provider's shared key set; a key set is refused (`stale`)
/// unless it was fetched under the provider's last flush, so the shared set is never one from
/// before a flush.
pub(super) const APPEND: &str = r"
local epoch = redis.call('GET', KEYS[1])
if not epoch then return {'noepoch', ''} end
if epoch ~= ARGV[1] then return {'epoch', epoch} end
local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
if seq + 1 ~= tonumber(ARGV[2]) then return {'seq', tostring(seq)} end
if ARGV[4] == 'revoke' and redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[7]) then
  return {'full', ''}
end
if ARGV[4] == 'keyset' and (redis.call('HGET', KEYS[7], ARGV[5]) or '') ~= ARGV[8] then
  return {'stale', ''}
end
local fields = {}
for i = 9, #ARGV do fields[#fields + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', unpack(fields))
redis.call('SET', KEYS[2], ARGV[2])
if ARGV[4] == 'revoke' then
  redis.call('ZADD', KEYS[4], ARGV[5], ARGV[6])
elseif ARGV[4] == 'keyset' then
  redis.call('HSET', KEYS[5], ARGV[5], ARGV[6])
elseif ARGV[4] == 'flush' then
  redis.call('HSET', KEYS[6], ARGV[5], ARGV[6])
  redis.call('HSET', KEYS[7], ARGV[5], ARGV[8])
  redis.call('HDEL', KEYS[5], ARGV[5])
end
return {'ok', id}
";

/// Returns the epoch, creating it if Redis has none (a new log, or one that lost its data).
pub(super) const INIT_EPOCH: &str = r"
local epoch = redis.call('GET', KEYS[1])
if epoch then return epoch end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
";

impl RedisBus {
    /// Signs and appends `event`; returns its position.
    pub(super) async fn append(&self, event: &Event) -> Result<Cursor, BusError> {
        let mut conn = self.connection().await?;
        let guess = self.position();
        let (mut epoch, mut seq) = (guess.epoch.to_string(), guess.seq);
        if !guess.known {
            epoch = match self.epoch(&mut conn).await {
                Ok(e) => e,
                Err(e) => {
                    self.broken(&e).await;
                    return Err(unavailable(&e));
                }
            };
        }
        for attempt in 0..PUBLISH_ATTEMPTS {
            let next = seq + 1;
            let entry = wire::encode(
                &self.settings.keys,
                event,
                next,
                &epoch,
                &self.origin,
                self.clock.now(),
            )?;
            let (op, field, member, flush) = match event {
                Event::Revoke(r) => (
                    "revoke",
                    score(wire::revocation_expiry(r)?),
                    entry.to_json(),
                    String::new(),
                ),
                Event::KeySet { provider, set } => (
                    "keyset",
                    provider.to_string(),
                    entry.to_json(),
                    set.flush
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                ),
                Event::Flush { provider, flush } => (
                    "flush",
                    provider.to_string(),
                    entry.to_json(),
                    flush.to_string(),
                ),
                _ => ("none", String::new(), String::new(), String::new()),
            };
            let mut call = self.append.prepare_invoke();
            call.key(&self.names.epoch)
                .key(&self.names.seq)
                .key(&self.names.log)
                .key(&self.names.revocations)
                .key(&self.names.keysets)
                .key(&self.names.flushes)
                .key(&self.names.flush_ids)
                .arg(&epoch)
                .arg(next)
                .arg(self.settings.max_log_len)
                .arg(op)
                .arg(field)
                .arg(member)
                .arg(self.settings.max_revocations)
                .arg(flush);
            for (name, value) in entry.fields() {
                call.arg(name).arg(value);
            }
            let reply: (String, String) = match call.invoke_async(&mut conn).await {
                Ok(r) => r,
                Err(e) => {
                    self.broken(&e).await;
                    return Err(unavailable(&e));
                }
            };
            match reply.0.as_str() {
                "ok" => {
                    self.counters.published.fetch_add(1, Ordering::Relaxed);
                    self.note_published(Seen {
                        seq: next,
                        id: reply.1.clone(),
                        mac: entry.mac.clone(),
                        app: matches!(event, Event::App { .. }).then(|| event.clone()),
                    });
                    self.await_replicas(&mut conn).await?;
                    return Ok(Cursor {
                        epoch: epoch.as_str().into(),
                        seq: next,
                        pos: reply.1.as_str().into(),
                    });
                }
                "seq" => seq = reply.1.parse().unwrap_or(seq),
                "epoch" => epoch = reply.1,
                "noepoch" => {
                    epoch = self.epoch(&mut conn).await.map_err(|e| unavailable(&e))?;
                    seq = 0;
                }
                "stale" => {
                    return Err(BusError::Unavailable(
                        "the key set was fetched before the provider's last flush; not shared"
                            .to_owned(),
                    ));
                }
                "full" => {
                    return Err(BusError::Unavailable(format!(
                        "shared revocation state holds its maximum of {} entries",
                        self.settings.max_revocations
                    )));
                }
                other => {
                    return Err(BusError::Unavailable(format!(
                        "unexpected reply from the append script: {other}"
                    )));
                }
            }
            // Lost a race with another writer: back off a little, with jitter.
            let pause = Duration::from_micros(fastrand::u64(0..=200 * u64::from(attempt + 1)));
            tokio::time::sleep(pause).await;
        }
        Err(BusError::Unavailable(
            "too much contention for the log's next sequence number".to_owned(),
        ))
    }
}

/// The score of a revocation in the shared set: when it can go (`+inf`: never).
pub(super) fn score(expiry: Option<i64>) -> String {
    expiry.map_or_else(|| "+inf".to_owned(), |e| e.to_string())
}
