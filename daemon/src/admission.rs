//! Who gets a connection's resources, and in which order (the receive stage's admission).
//!
//! A TCP connection costs nothing until it is admitted step by step, each step before the
//! next resource is taken:
//!
//! 1. **Address allow-list**, at accept: a refused address is closed at once. It reads no
//!    byte and takes no slot of any kind.
//! 2. **Per-address budget**: at most `max_connections_per_address` connections from one
//!    address, of which at most a quarter of `max_unassociated` (at least 1) may be waiting
//!    to associate. More are closed at once.
//! 3. **Unassociated budget**: at most `max_unassociated` connections wait for their
//!    A-ASSOCIATE-RQ at once, each for at most `acse_timeout_secs` (ARTIM). More are closed
//!    at once. Silent or trickling sockets cost only this budget, never an association slot.
//! 4. **Association slot** (`max_associations`), only once the whole A-ASSOCIATE-RQ has
//!    arrived: without a free slot the peer gets A-ASSOCIATE-RJ (transient, local limit
//!    exceeded).
//!
//! An association that stores nothing for `association_idle_secs` is aborted (C-ECHO does
//! not count as work), so a peer cannot hold a slot with one echo a minute.
//!
//! Refusals are counted; their log lines are throttled per reason ([`Throttle`]), so a flood
//! cannot flood the journal.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Per-address counts: all connections, and those still waiting to associate.
#[derive(Debug, Default, Clone, Copy)]
struct Count {
    total: u32,
    unassociated: u32,
}

/// The budgets of steps 2 and 3.
#[derive(Debug)]
pub struct Admission {
    unassociated: Arc<Semaphore>,
    per_address: Mutex<HashMap<IpAddr, Count>>,
    max_per_address: u32,
    max_unassociated_per_address: u32,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its address already has `max_connections_per_address` connections.
    AddressBudget,
    /// Its address already has its share of connections waiting to associate.
    AddressUnassociated,
    /// `max_unassociated` connections are waiting to associate.
    Unassociated,
}

impl Refused {
    pub fn text(self) -> &'static str {
        match self {
            Refused::AddressBudget => "connection closed: too many connections from this address",
            Refused::AddressUnassociated => {
                "connection closed: too many connections from this address waiting to associate"
            }
            Refused::Unassociated => "connection closed: too many connections waiting to associate",
        }
    }
}

/// A connection admitted to wait for its A-ASSOCIATE-RQ. Dropping it gives everything back.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    ip: IpAddr,
    /// Held while unassociated.
    waiting: Option<OwnedSemaphorePermit>,
}

impl Admission {
    pub fn new(max_unassociated: usize, max_per_address: usize) -> Admission {
        Admission {
            unassociated: Arc::new(Semaphore::new(max_unassociated)),
            per_address: Mutex::new(HashMap::new()),
            max_per_address: max_per_address as u32,
            max_unassociated_per_address: (max_unassociated / 4).max(1) as u32,
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Count>> {
        // Plain counters: a panic elsewhere cannot leave them half-updated.
        self.per_address.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Steps 2 and 3 for a connection from `ip`.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Ticket, Refused> {
        let mut counts = self.counts();
        let c = counts.entry(ip).or_default();
        if c.total >= self.max_per_address {
            return Err(Refused::AddressBudget);
        }
        if c.unassociated >= self.max_unassociated_per_address {
            return Err(Refused::AddressUnassociated);
        }
        let permit = self
            .unassociated
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Unassociated)?;
        c.total += 1;
        c.unassociated += 1;
        Ok(Ticket {
            admission: self.clone(),
            ip,
            waiting: Some(permit),
        })
    }
}

impl Ticket {
    /// The A-ASSOCIATE-RQ has arrived: give back the unassociated budget (the connection
    /// still counts for its address).
    pub fn associating(&mut self) {
        if self.waiting.take().is_some() {
            let mut counts = self.admission.counts();
            if let Some(c) = counts.get_mut(&self.ip) {
                c.unassociated = c.unassociated.saturating_sub(1);
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut counts = self.admission.counts();
        if let Some(c) = counts.get_mut(&self.ip) {
            c.total = c.total.saturating_sub(1);
            if self.waiting.is_some() {
                c.unassociated = c.unassociated.saturating_sub(1);
            }
            if c.total == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// At most one log line per interval for one kind of event; the lines in between are
/// counted and the next line says how many were left out.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl Throttle {
    pub fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a line may be written now (`n` lines were left out since the last);
    /// `None` when this one is to be left out.
    pub fn allow(&self) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match *last {
            Some(t) if now.duration_since(t) < self.every => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => {
                *last = Some(now);
                Some(self.suppressed.swap(0, Ordering::Relaxed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_per_address_and_unassociated() {
        let a = Arc::new(Admission::new(8, 3));
        let x: IpAddr = "10.0.0.1".parse().unwrap();
        let y: IpAddr = "10.0.0.2".parse().unwrap();
        // Two may wait from one address (8 / 4), a third is refused.
        let mut t1 = a.admit(x).unwrap();
        let _t2 = a.admit(x).unwrap();
        assert_eq!(a.admit(x).unwrap_err(), Refused::AddressUnassociated);
        // Once one associates, another may wait; then the address total (3) is reached.
        t1.associating();
        let _t3 = a.admit(x).unwrap();
        assert_eq!(a.admit(x).unwrap_err(), Refused::AddressBudget);
        // Another address is not affected until the global budget (8) runs out.
        let ys: Vec<Ticket> = (0..2).map(|_| a.admit(y).unwrap()).collect();
        drop(ys);
        // Two of the eight wait (t2, t3); six more addresses fill the global budget.
        let others: Vec<Ticket> = (3..9)
            .map(|i| a.admit(format!("10.0.1.{i}").parse().unwrap()).unwrap())
            .collect();
        assert_eq!(others.len(), 6);
        assert_eq!(
            a.admit("10.0.2.1".parse().unwrap()).unwrap_err(),
            Refused::Unassociated
        );
        drop(others);
        assert!(a.admit("10.0.2.1".parse().unwrap()).is_ok());
    }

    #[test]
    fn throttle_counts_what_it_leaves_out() {
        let t = Throttle::new(Duration::from_secs(3600));
        assert_eq!(t.allow(), Some(0));
        assert_eq!(t.allow(), None);
        assert_eq!(t.allow(), None);
        let t = Throttle::new(Duration::ZERO);
        assert_eq!(t.allow(), Some(0));
    }
}
