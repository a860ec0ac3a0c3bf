//! How many photos are worked on at once: a few run, a few more wait their turn, and the rest
//! are told at once to come back ([`Error::Busy`]), so that a burst of large photos takes a
//! bounded amount of memory and time instead of every core and gigabytes.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Photos worked on at once, and how many may wait.
pub struct Admission {
    state: Mutex<Counts>,
    turn: Condvar,
    running_max: usize,
    waiting_max: usize,
    wait_max: Duration,
}

#[derive(Default)]
struct Counts {
    running: usize,
    waiting: usize,
}

/// A turn: held while the work runs, given back on drop.
pub struct Permit<'a>(&'a Admission);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut c = twin_core::sync::lock(&self.0.state);
        c.running -= 1;
        drop(c);
        self.0.turn.notify_one();
    }
}

/// Seconds a busy answer asks the caller to wait before trying again.
pub const RETRY_AFTER_SECONDS: u64 = 2;

impl Admission {
    /// `running` at once (at least 1), up to `waiting` more waiting at most `wait` each.
    pub fn new(running: usize, waiting: usize, wait: Duration) -> Self {
        Admission {
            state: Mutex::new(Counts::default()),
            turn: Condvar::new(),
            running_max: running.max(1),
            waiting_max: waiting,
            wait_max: wait,
        }
    }

    /// As many at once as the machine has cores, twice as many waiting, 20 s each.
    pub fn for_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::new(cores, 2 * cores, Duration::from_secs(20))
    }

    /// Waits for a turn: [`Error::Busy`] when too many already wait, or the wait is too long.
    pub fn enter(&self) -> Result<Permit<'_>> {
        let busy = || {
            Error::Busy(format!(
                "the server is busy with other photos; try again in {RETRY_AFTER_SECONDS} seconds"
            ))
        };
        let mut c = twin_core::sync::lock(&self.state);
        if c.running < self.running_max && c.waiting == 0 {
            c.running += 1;
            return Ok(Permit(self));
        }
        if c.waiting >= self.waiting_max {
            return Err(busy());
        }
        c.waiting += 1;
        let deadline = Instant::now() + self.wait_max;
        loop {
            if c.running < self.running_max {
                c.waiting -= 1;
                c.running += 1;
                return Ok(Permit(self));
            }
            let now = Instant::now();
            if now >= deadline {
                c.waiting -= 1;
                return Err(busy());
            }
            c = self
                .turn
                .wait_timeout(c, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_few_run_a_few_wait_the_rest_are_told_to_come_back() {
        let a = Arc::new(Admission::new(2, 1, Duration::from_secs(30)));
        let p1 = a.enter().unwrap();
        let _p2 = a.enter().unwrap();
        // A third waits for a turn, and gets the first one given back.
        let waiter = {
            let a = a.clone();
            std::thread::spawn(move || a.enter().map(|_| ()).is_ok())
        };
        while twin_core::sync::lock(&a.state).waiting == 0 {
            std::thread::yield_now();
        }
        // A fourth finds the queue full.
        assert!(matches!(a.enter(), Err(Error::Busy(_))));
        drop(p1);
        assert!(waiter.join().unwrap());
        // A wait that runs out says busy too.
        let b = Admission::new(1, 1, Duration::from_millis(10));
        let _held = b.enter().unwrap();
        assert!(matches!(b.enter(), Err(Error::Busy(_))));
        assert_eq!(twin_core::sync::lock(&b.state).waiting, 0);
    }
}
