//! The tail: one connected session reads the log from this replica's position, applies each
//! entry (or drops, counts, or resyncs on it) and delivers it to local subscribers.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use ::redis::aio::MultiplexedConnection;
use ::redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::rollback::stream_id_after;
use super::{
    BACKOFF_MAX, BACKOFF_MIN, BLOCK, PRUNE_EVERY, READ_COUNT, RECENT, RedisBus, Seen, connect,
    cursor_of, mac_of,
};
use crate::wire::EntryError;
use crate::{Apply, Delivery, Event};

impl RedisBus {
    /// Follows the log until dropped: one session after another, reconnecting with
    /// jittered exponential backoff; `ready` goes off after the first sync, or after the
    /// first failed session (a replica verifies without Redis).
    pub(super) async fn follow(self: Arc<Self>, node: Arc<dyn Apply>, ready: oneshot::Sender<()>) {
        let mut ready = Some(ready);
        let mut backoff = BACKOFF_MIN;
        loop {
            let started = Instant::now();
            if let Err(e) = self.session(&*node, &mut ready).await {
                self.set_up(false);
                *self.conn.lock().await = None;
                tracing::warn!(error = %e, "redis bus: connection lost; retrying");
            }
            // Never wait for Redis to start serving: a replica verifies without it.
            if let Some(r) = ready.take() {
                let _ = r.send(());
            }
            if started.elapsed() > BACKOFF_MAX * 2 {
                backoff = BACKOFF_MIN;
            }
            let jittered = backoff.mul_f64(0.5 + fastrand::f64() / 2.0);
            tokio::time::sleep(jittered).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One connected session of the tail: sync if needed, then read until an error.
    pub(super) async fn session(
        &self,
        node: &dyn Apply,
        ready: &mut Option<oneshot::Sender<()>>,
    ) -> redis::RedisResult<()> {
        let (mut conn, node_a) = self.connect_to(Some(self.settings.timeout)).await?;
        // The blocking read gets its own connection with no response timeout of its own.
        let (mut tail, node_b) = self.connect_to(None).await?;
        if node_a != node_b {
            // A failover between the two connects: start over on one node.
            return Err(connect::demoted(&format!(
                "the primary moved from {node_a} to {node_b} while connecting"
            )));
        }
        let pos = self.position();
        if pos.known {
            // Back after an outage, a restart or a failover: the log may have started over or
            // gone back in time meanwhile.
            let current = self.epoch(&mut conn).await?;
            if current != *pos.epoch {
                self.full_sync(&mut conn, node, "epoch").await?;
            } else if let Some(reason) = self.check_log(&mut conn).await? {
                self.full_sync(&mut conn, node, reason).await?;
            }
        } else {
            self.full_sync(&mut conn, node, "start").await?;
        }
        self.set_up(true);
        if let Some(r) = ready.take() {
            let _ = r.send(());
        }
        let mut last_prune = Instant::now() - PRUNE_EVERY;
        let mut last_round = Instant::now();
        loop {
            if last_round.elapsed() >= BLOCK {
                self.still_primary(&mut conn).await?;
                // Busy or quiet, the log may go back in time without this replica's
                // connections dropping (a restore behind a proxy, say): look every round.
                if let Some(reason) = self.check_log(&mut conn).await? {
                    self.full_sync(&mut conn, node, reason).await?;
                }
                self.reload_if_reseeded(&mut conn, node).await?;
                last_round = Instant::now();
            }
            if last_prune.elapsed() >= PRUNE_EVERY {
                let _: () = redis::cmd("ZREMRANGEBYSCORE")
                    .arg(&self.names.revocations)
                    .arg("-inf")
                    .arg(format!("({}", self.unix_now()))
                    .query_async(&mut conn)
                    .await?;
                last_prune = Instant::now();
            }
            let from = self.position().id;
            let mut xread = redis::cmd("XREAD");
            xread
                .arg("COUNT")
                .arg(READ_COUNT)
                .arg("BLOCK")
                .arg(u64::try_from(BLOCK.as_millis()).unwrap_or(2000))
                .arg("STREAMS")
                .arg(&self.names.log)
                .arg(&from);
            let read = xread.query_async::<Option<StreamReadReply>>(&mut tail);
            let reply = tokio::time::timeout(BLOCK + self.settings.timeout, read)
                .await
                .map_err(|_| {
                    redis::RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "tail read timed out",
                    ))
                })??;
            let entries = match reply {
                None => {
                    // Quiet: make sure the log did not start over under us. (Whether it went
                    // back in time is checked every round, at the top of the loop.)
                    let current = self.epoch(&mut conn).await?;
                    if current != *self.position().epoch {
                        self.full_sync(&mut conn, node, "epoch").await?;
                    }
                    continue;
                }
                Some(read) => read.keys.into_iter().flat_map(|key| key.ids),
            };
            for entry in entries {
                if let Some(reason) = self.receive(&mut conn, node, entry).await? {
                    self.full_sync(&mut conn, node, reason).await?;
                    break;
                }
            }
        }
    }

    /// Applies one entry read from the log. Returns the resync it calls for, if any.
    pub(super) async fn receive(
        &self,
        conn: &mut MultiplexedConnection,
        node: &dyn Apply,
        entry: StreamId,
    ) -> redis::RedisResult<Option<&'static str>> {
        let mac = mac_of(&entry).unwrap_or_default().to_owned();
        let decoded = self.decode_entry(&entry);
        let id = entry.id;
        let pos = self.position();
        let envelope = match decoded {
            Ok(envelope) => envelope,
            Err(e) => {
                // Dropped, counted, never applied; its content is not logged.
                if e != EntryError::UnknownType {
                    tracing::warn!(entry = %id, reason = e.reason(), "dropped a bus entry");
                }
                self.reject(e.reason());
                self.advance_id(id);
                return Ok(None);
            }
        };
        if *envelope.epoch != *pos.epoch {
            let current: Option<String> = redis::cmd("GET")
                .arg(&self.names.epoch)
                .query_async(conn)
                .await?;
            if current.as_deref() == Some(&*pos.epoch) {
                // A signed entry of an older life of the log, written again: a replay.
                self.reject("replay");
                self.advance_id(id);
                return Ok(None);
            }
            return Ok(Some("epoch"));
        }
        if envelope.seq <= pos.seq {
            // A sequence number already applied is a replay only if the entry is the one
            // applied at that number. Another, validly signed, means the log went back in
            // time and was written again: resync before applying or dropping anything.
            let replay = match self.mac_at(envelope.seq) {
                Some(applied) => applied == mac,
                None => self.check_log(conn).await? != Some("rollback"),
            };
            if !replay {
                return Ok(Some("rollback"));
            }
            self.reject("replay");
            self.advance_id(id);
            return Ok(None);
        }
        if envelope.seq > pos.seq + 1 {
            let first: StreamRangeReply = redis::cmd("XRANGE")
                .arg(&self.names.log)
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(1)
                .query_async(conn)
                .await?;
            let trimmed = first
                .ids
                .first()
                .is_some_and(|first| stream_id_after(&first.id, &pos.id));
            return Ok(Some(if trimmed { "trimmed" } else { "gap" }));
        }
        if let Event::KeySet { provider, set } = &envelope.event {
            self.note_key_set(provider, set);
        }
        if *envelope.origin != *self.origin {
            tracing::debug!(seq = envelope.seq, origin = %envelope.origin, kind = envelope.event.kind(), "applying bus event");
            node.apply(&envelope);
            self.counters.applied.fetch_add(1, Ordering::Relaxed);
        }
        self.note_read(Seen {
            seq: envelope.seq,
            id: id.clone(),
            mac,
            app: matches!(envelope.event, Event::App { .. }).then(|| envelope.event.clone()),
        });
        let cursor = {
            let mut p = self.pos.lock().unwrap_or_else(PoisonError::into_inner);
            p.seq = envelope.seq;
            p.id = id;
            cursor_of(&p)
        };
        let _ = self.tx.send(Delivery::Event {
            cursor,
            envelope: Arc::new(envelope),
        });
        Ok(None)
    }

    pub(super) fn note_published(&self, seen: Seen) {
        let mut unread = self.unread.lock().unwrap_or_else(PoisonError::into_inner);
        if unread.len() == RECENT {
            unread.pop_front();
        }
        unread.push_back(seen);
    }

    pub(super) fn note_read(&self, seen: Seen) {
        self.unread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|u| u.mac != seen.mac);
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(seen);
    }

    pub(super) fn advance_id(&self, id: String) {
        self.pos.lock().unwrap_or_else(PoisonError::into_inner).id = id;
    }
}
