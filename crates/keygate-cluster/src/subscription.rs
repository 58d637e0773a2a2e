//! [`Subscription`]: application events for a Rust service in the same process as the bus,
//! resumable from a [`Cursor`].

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::{Bus, Cursor, Delivery, Event, HistoryGone};

/// A subscription to application events, for Rust services in the same process as the bus:
/// the library face of `GET /admin/v1/events/stream`.
///
/// It yields every [`Event::App`] after the starting cursor in log order, and a
/// [`Delivery::Resync`] whenever events may have been missed; the subscriber must then drop
/// everything it caches.
pub struct Subscription {
    bus: Arc<dyn Bus>,
    live: broadcast::Receiver<Delivery>,
    backlog: VecDeque<Delivery>,
    last: Option<Cursor>,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// Subscribes from `after` (a resumed stream) or from now on.
    pub async fn new(bus: Arc<dyn Bus>, after: Option<Cursor>) -> Subscription {
        // Subscribe before reading history so nothing falls between the two.
        let live = bus.subscribe();
        let mut backlog = VecDeque::new();
        let last = match after {
            Some(after) => match bus.history(&after).await {
                Ok(events) => {
                    backlog.extend(events);
                    Some(after)
                }
                Err(HistoryGone) => {
                    let cursor = bus.cursor();
                    backlog.push_back(Delivery::Resync {
                        cursor: cursor.clone(),
                        reason: "trimmed",
                    });
                    Some(cursor)
                }
            },
            None => Some(bus.cursor()),
        };
        Subscription {
            bus,
            live,
            backlog,
            last,
        }
    }

    /// The next application event or resync; `None` once the bus is gone.
    pub async fn next(&mut self) -> Option<Delivery> {
        loop {
            let delivery = match self.backlog.pop_front() {
                Some(d) => d,
                None => match self.live.recv().await {
                    Ok(d) => d,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let cursor = self.bus.cursor();
                        self.last = Some(cursor.clone());
                        return Some(Delivery::Resync {
                            cursor,
                            reason: "lagged",
                        });
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            };
            match &delivery {
                Delivery::Event { cursor, envelope } => {
                    let seen = self
                        .last
                        .as_ref()
                        .is_some_and(|l| l.epoch == cursor.epoch && cursor.seq <= l.seq);
                    if seen {
                        continue;
                    }
                    self.last = Some(cursor.clone());
                    if matches!(envelope.event, Event::App { .. }) {
                        return Some(delivery);
                    }
                }
                Delivery::Resync { cursor, .. } => {
                    self.last = Some(cursor.clone());
                    return Some(delivery);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use keygate::{FlushId, ProviderId};

    use super::*;
    use crate::LocalBus;
    use crate::local::LOCAL_HISTORY;

    fn app(key: &str) -> Event {
        Event::App {
            namespace: "users".into(),
            key: key.into(),
        }
    }

    fn app_key(d: &Delivery) -> Option<&str> {
        match d {
            Delivery::Event { envelope, .. } => match &envelope.event {
                Event::App { key, .. } => Some(key),
                _ => None,
            },
            Delivery::Resync { .. } => None,
        }
    }

    #[tokio::test]
    async fn a_subscription_resumes_after_its_cursor_and_sees_only_app_events() {
        let bus: Arc<dyn Bus> = Arc::new(LocalBus::new("n"));
        bus.publish(app("1")).await.unwrap();
        bus.publish(Event::Flush {
            provider: ProviderId::new("t", "p"),
            flush: FlushId::random(),
        })
        .await
        .unwrap();
        let after_first = Cursor {
            seq: 1,
            pos: "1".into(),
            ..bus.cursor()
        };
        bus.publish(app("3")).await.unwrap();
        let mut sub = Subscription::new(Arc::clone(&bus), Some(after_first)).await;
        assert_eq!(app_key(&sub.next().await.unwrap()), Some("3"));
        bus.publish(app("4")).await.unwrap();
        assert_eq!(app_key(&sub.next().await.unwrap()), Some("4"));
    }

    #[tokio::test]
    async fn a_subscription_from_another_epoch_or_a_trimmed_position_is_told_to_resync() {
        let bus: Arc<dyn Bus> = Arc::new(LocalBus::new("n"));
        for i in 0..(LOCAL_HISTORY + 10) {
            bus.publish(app(&i.to_string())).await.unwrap();
        }
        for stale in [
            Cursor {
                seq: 3,
                pos: "3".into(),
                ..bus.cursor()
            },
            Cursor {
                epoch: "other".into(),
                ..bus.cursor()
            },
        ] {
            let mut sub = Subscription::new(Arc::clone(&bus), Some(stale)).await;
            match sub.next().await.unwrap() {
                Delivery::Resync { cursor, reason } => {
                    assert_eq!((cursor, reason), (bus.cursor(), "trimmed"));
                }
                other => panic!("expected a resync, got {other:?}"),
            }
        }
        // The newest entries are still there.
        let near = Cursor {
            seq: bus.cursor().seq - 1,
            ..bus.cursor()
        };
        let mut sub = Subscription::new(Arc::clone(&bus), Some(near)).await;
        let last = (LOCAL_HISTORY + 9).to_string();
        assert_eq!(app_key(&sub.next().await.unwrap()), Some(last.as_str()));
    }
}
