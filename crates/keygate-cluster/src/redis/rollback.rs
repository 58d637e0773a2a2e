//! Telling a replay from a log that went back in time: the entries this replica read or
//! appended must still be in the log, unchanged, or it resyncs.

use std::collections::HashSet;
use std::sync::PoisonError;

use ::redis::aio::MultiplexedConnection;
use ::redis::streams::StreamRangeReply;
use ::redis::{FromRedisValue, Value};

use super::{MAX_REPUBLISH, RECENT, RedisBus, Seen, mac_of};
use crate::Event;

impl RedisBus {
    /// The MAC of the entry this replica read at `seq`, if it still remembers it.
    pub(super) fn mac_at(&self, seq: u64) -> Option<String> {
        self.recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .rev()
            .find(|s| s.seq == seq)
            .map(|s| s.mac.clone())
    }

    /// Whether the log still holds, unchanged, the last entry this replica read and every
    /// entry it appended and has not read back. `None` if it does; `Some("trimmed")` if they
    /// were trimmed away (the log moved on past this replica); `Some("rollback")` if the log
    /// went back in time: Redis restarted from an older snapshot or AOF, failed over to a
    /// replica that had not caught up, or another Redis answers at the address.
    pub(super) async fn check_log(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> redis::RedisResult<Option<&'static str>> {
        let mut expect: Vec<(String, String)> = Vec::new();
        if let Some(anchor) = self
            .recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .back()
        {
            expect.push((anchor.id.clone(), anchor.mac.clone()));
        }
        expect.extend(
            self.unread
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|u| (u.id.clone(), u.mac.clone())),
        );
        if expect.is_empty() {
            return Ok(None);
        }
        let mut pipe = redis::pipe();
        pipe.get(&self.names.seq)
            .cmd("XRANGE")
            .arg(&self.names.log)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1);
        for (id, _) in &expect {
            pipe.cmd("XRANGE").arg(&self.names.log).arg(id).arg(id);
        }
        let replies: Vec<Value> = pipe.query_async(conn).await?;
        let mut replies = replies.into_iter();
        let seq = replies
            .next()
            .and_then(|v| Option::<u64>::from_redis_value(v).ok().flatten());
        if seq.unwrap_or(0) < self.position().seq {
            return Ok(Some("rollback"));
        }
        // A reply that is not a range reads as an empty one.
        let range =
            |v: Value| StreamRangeReply::from_redis_value(v).map_or_else(|_| Vec::new(), |r| r.ids);
        let first = replies
            .next()
            .and_then(|v| range(v).into_iter().next())
            .map(|entry| entry.id);
        for ((id, mac), reply) in expect.iter().zip(replies) {
            match range(reply).first() {
                Some(entry) if mac_of(entry) == Some(mac.as_str()) => {}
                // Another entry under that id: rewritten.
                Some(_) => return Ok(Some("rollback")),
                // Gone: trimmed if the log now starts after it, else lost.
                None if first.as_deref().is_some_and(|f| stream_id_after(f, id)) => {
                    return Ok(Some("trimmed"));
                }
                None => return Ok(Some("rollback")),
            }
        }
        Ok(None)
    }

    /// The application events this replica read or appended that the log no longer holds
    /// (at most [`MAX_REPUBLISH`], the newest).
    pub(super) async fn lost_app_events(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> redis::RedisResult<Vec<Event>> {
        let mine: Vec<Seen> = {
            let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            let unread = self.unread.lock().unwrap_or_else(PoisonError::into_inner);
            recent
                .iter()
                .chain(unread.iter())
                .filter(|s| s.app.is_some())
                .cloned()
                .collect()
        };
        if mine.is_empty() {
            return Ok(Vec::new());
        }
        let tail: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(&self.names.log)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(2 * RECENT)
            .query_async(conn)
            .await?;
        let held: HashSet<&str> = tail.ids.iter().filter_map(mac_of).collect();
        let mut lost: Vec<Event> = mine
            .into_iter()
            .filter(|s| !held.contains(s.mac.as_str()))
            .filter_map(|s| s.app)
            .collect();
        if lost.len() > MAX_REPUBLISH {
            lost.drain(..lost.len() - MAX_REPUBLISH);
        }
        Ok(lost)
    }
}

/// Whether stream id `a` sorts after `b` (`ms-seq`).
pub(super) fn stream_id_after(a: &str, b: &str) -> bool {
    fn parts(id: &str) -> (u64, u64) {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
    }
    parts(a) > parts(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_order_numerically() {
        for (a, b, after) in [
            ("10-0", "9-5", true),
            ("9-6", "9-5", true),
            ("9-5", "9-5", false),
            ("1-0", "0-0", true),
        ] {
            assert_eq!(stream_id_after(a, b), after, "{a} after {b}");
        }
    }
}
