//! The queue port: messages between the parts, SQS in AWS and an in-process queue locally.
//!
//! Delivery is at-least-once, as with SQS: a received message stays in flight until it is
//! acknowledged, and comes back when its visibility timeout passes without one. Consumers must
//! be idempotent (the dataset step is).

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// A failure of the queue.
#[derive(Debug, thiserror::Error)]
#[error("queue: {0}")]
pub struct QueueError(pub String);

/// A received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Identifies this delivery (for [`Queue::ack`]).
    pub receipt: u64,
    /// The message body.
    pub body: String,
    /// How many times it has been delivered (1 the first time).
    pub deliveries: u32,
}

/// The queue port.
pub trait Queue: Send + Sync {
    /// Sends a message.
    fn send(&self, body: &str) -> Result<(), QueueError>;
    /// Receives up to `max` messages, waiting up to `wait` for the first one.
    fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, QueueError>;
    /// Acknowledges a delivery: the message is done.
    fn ack(&self, receipt: u64) -> Result<(), QueueError>;
}

struct Entry {
    body: String,
    deliveries: u32,
}

struct State {
    ready: VecDeque<Entry>,
    in_flight: Vec<(u64, Instant, Entry)>,
    next_receipt: u64,
}

/// A queue inside the process (the embedded default).
pub struct InProcessQueue {
    state: Mutex<State>,
    signal: Condvar,
    visibility: Duration,
}

impl InProcessQueue {
    /// A queue whose unacknowledged messages come back after `visibility`.
    pub fn new(visibility: Duration) -> Self {
        InProcessQueue {
            state: Mutex::new(State {
                ready: VecDeque::new(),
                in_flight: Vec::new(),
                next_receipt: 1,
            }),
            signal: Condvar::new(),
            visibility,
        }
    }

    /// Messages waiting or in flight.
    pub fn len(&self) -> usize {
        let s = crate::sync::lock(&self.state);
        s.ready.len() + s.in_flight.len()
    }

    /// True when nothing is waiting or in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Queue for InProcessQueue {
    fn send(&self, body: &str) -> Result<(), QueueError> {
        let mut s = crate::sync::lock(&self.state);
        s.ready.push_back(Entry {
            body: body.to_string(),
            deliveries: 0,
        });
        self.signal.notify_one();
        Ok(())
    }

    fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, QueueError> {
        let deadline = Instant::now() + wait;
        let mut s = crate::sync::lock(&self.state);
        loop {
            // Expired deliveries come back first.
            let now = Instant::now();
            let mut i = 0;
            while i < s.in_flight.len() {
                if s.in_flight[i].1 <= now {
                    let (_, _, e) = s.in_flight.remove(i);
                    s.ready.push_front(e);
                } else {
                    i += 1;
                }
            }
            if !s.ready.is_empty() || now >= deadline {
                break;
            }
            let next_expiry = s
                .in_flight
                .iter()
                .map(|f| f.1)
                .min()
                .unwrap_or(deadline)
                .min(deadline);
            let (g, _) = self
                .signal
                .wait_timeout(s, next_expiry.saturating_duration_since(now))
                .unwrap_or_else(|p| p.into_inner());
            s = g;
        }
        let mut out = Vec::new();
        while out.len() < max {
            let Some(mut e) = s.ready.pop_front() else {
                break;
            };
            e.deliveries += 1;
            let receipt = s.next_receipt;
            s.next_receipt += 1;
            out.push(Received {
                receipt,
                body: e.body.clone(),
                deliveries: e.deliveries,
            });
            let until = Instant::now() + self.visibility;
            s.in_flight.push((receipt, until, e));
        }
        Ok(out)
    }

    fn ack(&self, receipt: u64) -> Result<(), QueueError> {
        let mut s = crate::sync::lock(&self.state);
        s.in_flight.retain(|f| f.0 != receipt);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acked_messages_are_gone_and_unacked_come_back() {
        let q = InProcessQueue::new(Duration::from_millis(50));
        q.send("a").unwrap();
        q.send("b").unwrap();
        let got = q.receive(10, Duration::ZERO).unwrap();
        assert_eq!(
            got.iter().map(|r| r.body.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        q.ack(got[0].receipt).unwrap();
        assert!(
            q.receive(10, Duration::ZERO).unwrap().is_empty(),
            "b is in flight"
        );
        let again = q.receive(10, Duration::from_millis(500)).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!((again[0].body.as_str(), again[0].deliveries), ("b", 2));
        q.ack(again[0].receipt).unwrap();
        assert!(q.is_empty());
    }

    #[test]
    fn receive_waits_for_a_sender() {
        let q = std::sync::Arc::new(InProcessQueue::new(Duration::from_secs(30)));
        let q2 = q.clone();
        let t = std::thread::spawn(move || q2.receive(1, Duration::from_secs(5)).unwrap());
        std::thread::sleep(Duration::from_millis(50));
        q.send("hello").unwrap();
        assert_eq!(t.join().unwrap()[0].body, "hello");
    }
}
