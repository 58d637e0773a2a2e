//! Loading shared state from scratch (at start and at every resync) and, when the log lost
//! data, writing back what this replica holds: revocations, flushes, application events.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError};
use std::time::UNIX_EPOCH;

use ::redis::aio::MultiplexedConnection;
use ::redis::streams::StreamRangeReply;
use keygate::{FlushId, ProviderId, Revocation};

use super::append::score;
use super::{Fields, Position, RedisBus, Seen, cursor_of, mac_of};
use crate::wire;
use crate::{Apply, Delivery, Envelope, Event, SharedState};

impl RedisBus {
    /// Reads the log's end, the shared revocations, flushes and key sets, and hands them to
    /// `node`; continues from the log's end.
    ///
    /// When the log lost entries this replica had read or appended (`epoch`: Redis lost its
    /// data; `rollback`: it went back in time), the replica also gives back what it holds:
    /// its revocations (into the shared set), its flushes (a provider whose last flush the
    /// log no longer has is flushed again, so that a key set from before it cannot be
    /// restored from Redis), and the application events it read or published that the log
    /// no longer holds (published again).
    pub(super) async fn full_sync(
        &self,
        conn: &mut MultiplexedConnection,
        node: &dyn Apply,
        reason: &'static str,
    ) -> redis::RedisResult<()> {
        let before = self.position();
        let epoch = self.epoch(conn).await?;
        // The write-back counter is read before the revocations: see the module docs.
        let (seq, reseeded, last, flushes): (Option<u64>, Option<u64>, StreamRangeReply, Fields) =
            redis::pipe()
                .atomic()
                .get(&self.names.seq)
                .get(&self.names.reseeded)
                .cmd("XREVRANGE")
                .arg(&self.names.log)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .hgetall(&self.names.flushes)
                .query_async(conn)
                .await?;
        let last = last.ids.into_iter().next();
        let last_id = last
            .as_ref()
            .map_or_else(|| "0-0".to_owned(), |entry| entry.id.clone());
        let now = self.unix_now();
        let members: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(&self.names.revocations)
            .arg(now)
            .arg("+inf")
            .query_async(conn)
            .await?;
        let sets: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(&self.names.keysets)
            .query_async(conn)
            .await?;

        // A log that looked rolled back but has another epoch lost everything: say so.
        let reason = if reason == "rollback" && before.known && *before.epoch != *epoch {
            "epoch"
        } else {
            reason
        };
        let lost = before.known && (*before.epoch != *epoch || reason == "rollback");
        let lost_apps = if lost {
            self.lost_app_events(conn).await?
        } else {
            Vec::new()
        };

        let mut state = SharedState {
            revocations: self.decode_revocations(&members),
            key_sets: Vec::new(),
            flushes: Vec::new(),
        };
        for (_, s) in &flushes {
            match self.decode_member(s) {
                Ok(Envelope {
                    event: Event::Flush { provider, flush },
                    ..
                }) => state.flushes.push((provider, flush)),
                Ok(_) => self.reject("state"),
                Err(e) => self.reject(e.reason()),
            }
        }
        for (_, s) in &sets {
            match self.decode_member(s) {
                Ok(Envelope {
                    event: Event::KeySet { provider, set },
                    ..
                }) => {
                    self.note_key_set(&provider, &set);
                    state.key_sets.push((provider, set));
                }
                Ok(_) => self.reject("state"),
                Err(e) => self.reject(e.reason()),
            }
        }
        // Flushes the log lost: never let its older word undo them.
        let mut reflush: Vec<(ProviderId, FlushId, bool)> = Vec::new();
        if lost {
            let shared: HashMap<ProviderId, FlushId> = state.flushes.iter().cloned().collect();
            for (provider, mine) in node.flushes() {
                match shared.get(&provider) {
                    Some(theirs) if *theirs == mine => {}
                    // The log knows another flush: after a rollback, nobody can tell which
                    // came last, so flush once more, after both.
                    Some(_) => reflush.push((provider, FlushId::random(), true)),
                    // The log knows none: give it ours.
                    None => reflush.push((provider, mine, false)),
                }
            }
            let overridden: HashSet<&ProviderId> = reflush.iter().map(|(p, _, _)| p).collect();
            state.flushes.retain(|(p, _)| !overridden.contains(p));
        }
        tracing::info!(
            reason,
            epoch = %epoch,
            seq = seq.unwrap_or(0),
            revocations = state.revocations.len(),
            key_sets = state.key_sets.len(),
            flushes = state.flushes.len(),
            "bus resync"
        );
        if reason == "start" {
            node.load(state);
        } else {
            node.resync(state);
        }
        let mut reseeded = reseeded.unwrap_or(0);
        if lost {
            // Redis lost data: give it back the revocations this replica still holds, so
            // replicas that start later load them too.
            reseeded = self
                .reseed(conn, node.revocations(), &epoch, reseeded)
                .await?;
        }
        let cursor = {
            let mut pos = self.pos.lock().unwrap_or_else(PoisonError::into_inner);
            *pos = Position {
                epoch: epoch.as_str().into(),
                seq: seq.unwrap_or(0),
                id: last_id,
                known: true,
                reseeded,
            };
            cursor_of(&pos)
        };
        {
            let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            recent.clear();
            if let Some(entry) = &last
                && let Some(mac) = mac_of(entry)
            {
                recent.push_back(Seen {
                    seq: seq.unwrap_or(0),
                    id: entry.id.clone(),
                    mac: mac.to_owned(),
                    app: None,
                });
            }
        }
        self.unread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.note_resync(reason);
        if reason != "start" {
            self.count_resync(reason);
            let _ = self.tx.send(Delivery::Resync { cursor, reason });
        }
        // Published after the position moved to the log's end, so this replica reads them
        // back like any other entry.
        for (provider, flush, apply_here) in reflush {
            tracing::warn!(%provider, "the log lost a flush; flushing again");
            let event = Event::Flush { provider, flush };
            // Appended first, so that the set this replica then fetches under it is shared.
            if let Err(e) = self.append(&event).await {
                tracing::warn!(error = %e, "could not restore a flush to the log");
            }
            if apply_here {
                node.apply(&Envelope {
                    seq: 0,
                    epoch: epoch.as_str().into(),
                    origin: Arc::clone(&self.origin),
                    at: self.clock.now(),
                    event,
                });
            }
        }
        for event in lost_apps {
            if let Err(e) = self.append(&event).await {
                tracing::warn!(error = %e, "could not restore an application event to the log");
            }
        }
        Ok(())
    }

    /// Writes `revocations` back into the shared set. If that added any, bumps the write-back
    /// counter so that replicas already in this epoch load them. Returns the counter value
    /// this replica has now seen everything up to: `seen`, or the bumped value when nobody
    /// else bumped it meanwhile.
    pub(super) async fn reseed(
        &self,
        conn: &mut MultiplexedConnection,
        revocations: Vec<Revocation>,
        epoch: &str,
        seen: u64,
    ) -> redis::RedisResult<u64> {
        let now = self.unix_now();
        let mut pipe = redis::pipe();
        let mut n = 0usize;
        for r in revocations {
            // A kind the wire format does not have cannot be written back.
            let Ok(expiry) = wire::revocation_expiry(&r) else {
                continue;
            };
            if expiry.is_some_and(|e| e <= now) {
                continue;
            }
            // Every replica signs the same bytes for the same revocation, so the set keeps
            // one member however many replicas reseed it.
            let Ok(entry) = wire::encode(
                &self.settings.keys,
                &Event::Revoke(r),
                0,
                "reseed",
                "reseed",
                UNIX_EPOCH,
            ) else {
                continue;
            };
            pipe.zadd(&self.names.revocations, entry.to_json(), score(expiry));
            n += 1;
        }
        if n == 0 {
            return Ok(seen);
        }
        let added: Vec<u64> = pipe.query_async(conn).await?;
        let added: u64 = added.iter().sum();
        tracing::warn!(
            epoch,
            revocations = n,
            added,
            "restored revocations to a log that lost its data"
        );
        if added == 0 {
            return Ok(seen);
        }
        let bumped: u64 = redis::cmd("INCR")
            .arg(&self.names.reseeded)
            .query_async(conn)
            .await?;
        Ok(if bumped == seen + 1 { bumped } else { seen })
    }

    /// Loads the shared revocations again if another replica wrote some back since this one
    /// last loaded them.
    pub(super) async fn reload_if_reseeded(
        &self,
        conn: &mut MultiplexedConnection,
        node: &dyn Apply,
    ) -> redis::RedisResult<()> {
        let current: Option<u64> = redis::cmd("GET")
            .arg(&self.names.reseeded)
            .query_async(conn)
            .await?;
        let current = current.unwrap_or(0);
        if current == self.position().reseeded {
            return Ok(());
        }
        let members: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(&self.names.revocations)
            .arg(self.unix_now())
            .arg("+inf")
            .query_async(conn)
            .await?;
        let state = SharedState {
            revocations: self.decode_revocations(&members),
            ..SharedState::default()
        };
        tracing::info!(
            revocations = state.revocations.len(),
            "another replica restored revocations; loading them"
        );
        // Revocations only grow until they expire: adding them again is always safe.
        node.load(state);
        self.pos
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .reseeded = current;
        Ok(())
    }

    /// The revocations among signed shared-state members; anything else is dropped and counted.
    pub(super) fn decode_revocations(&self, members: &[String]) -> Vec<Revocation> {
        let mut out = Vec::new();
        for m in members {
            match self.decode_member(m) {
                Ok(Envelope {
                    event: Event::Revoke(r),
                    ..
                }) => out.push(r),
                Ok(_) => self.reject("state"),
                Err(e) => self.reject(e.reason()),
            }
        }
        out
    }
}
