//! The memory budget: a process-wide count of the bytes that requests may hold at once.
//!
//! Limits on bodies and image sizes say what one request may send; they do not say how many
//! such requests fit in a pod. So every request *reserves* its estimated peak bytes before
//! it does the work (the body while it arrives, the decode buffers from the image header,
//! masks once the boxes are known, the encoded answer), and gives them back when the work
//! and the answer are gone. A request that could never fit gets a 413 from its caller; one
//! that does not fit *now* gets a 503 with `Retry-After`. This is Envoy's overload manager
//! and Triton's admission in miniature: refuse before the allocation, not after the OOM kill.
//!
//! The budget covers request work only; the models, ONNX Runtime and the runtime's own
//! memory (the idle RSS) come on top, which is why the default is a fraction of the limit.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::time::Duration;

mod receiving;
mod reservation;

pub use receiving::Receiving;
pub use reservation::Reservation;

use crate::meter::{self, Lease, Overrun};

/// A release at least this large asks the allocator to return its free pages to the OS
/// (see `crate::alloc::trim`); smaller ones leave memory for the next request to reuse.
const TRIM_AFTER_BYTES: u64 = 32 << 20;
/// A trim waits this long first, so one trim follows a burst of releases.
const TRIM_DEBOUNCE: Duration = Duration::from_millis(100);
/// Once nothing is reserved, the free heap is returned after this long without a request:
/// under a steady load the heap's free pages are what the next request reuses without
/// faulting them in again (see `crate::alloc`), so they are kept while work comes.
const IDLE_TRIM_AFTER: Duration = Duration::from_secs(1);

/// What wakes the trimmer.
#[derive(Debug, Clone, Copy)]
enum Trim {
    /// A large release.
    Large,
    /// Nothing reserved any more.
    Idle,
}

/// What the trimmer reads: bytes reserved now, and how many reservations were ever made
/// (so it can tell a quiet second from a busy one that happens to end at zero).
#[derive(Debug, Default)]
struct Usage {
    used: AtomicU64,
    takes: AtomicU64,
}

/// Why a reservation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// This request alone would need more than the whole budget: retrying cannot help.
    #[error("needs {needed} bytes of working memory, more than the server's whole budget of {limit} bytes")]
    NeverFits {
        /// What the request would hold in all, with this reservation.
        needed: u64,
        /// The budget.
        limit: u64,
    },
    /// Other requests hold too much right now: retry later.
    #[error(
        "needs {needed} more bytes of working memory and only {available} of {limit} are free now"
    )]
    Busy {
        /// The extra bytes asked for.
        needed: u64,
        /// Free at the time of asking.
        available: u64,
        /// The budget.
        limit: u64,
    },
    /// The request's measured memory passed what it had reserved (an estimate missed): it
    /// is stopped at the stage boundary rather than allowed to go on unaccounted.
    #[error("used more memory than it reserved ({0})")]
    Overrun(Overrun),
}

impl BudgetError {
    /// The refusal of `what`, with `advice` for the client.
    pub fn refusing(self, what: impl Into<String>, advice: &'static str) -> Refusal {
        Refusal {
            what: what.into(),
            advice,
            error: self,
        }
    }
}

/// The budget said no: the one type every stage returns for it, turned into an HTTP answer
/// in one place (`error.rs`: 413 for never, 503 for not now or an overrun).
#[derive(Debug, thiserror::Error)]
#[error("{what} {error}")]
pub struct Refusal {
    /// The work that was refused, e.g. "decoding this 6480x4860 image".
    pub what: String,
    /// What the client can ask for instead.
    pub advice: &'static str,
    /// Why.
    pub error: BudgetError,
}

/// Auditor mode (`--audit-memory`, the test suites): an overrun is a server fault (500,
/// logged as an error), so every estimate miss fails a test instead of a pod.
static AUDIT: AtomicBool = AtomicBool::new(false);

/// Turns auditor mode on or off for the process.
pub fn set_audit(on: bool) {
    AUDIT.store(on, Ordering::Relaxed);
}

/// Whether auditor mode is on.
pub fn audit() -> bool {
    AUDIT.load(Ordering::Relaxed)
}

/// The process-wide budget. Cheap to share: clone the `Arc`.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    used: Arc<Usage>,
    gauge: metrics::Gauge,
    /// Wakes the trimmer thread (a full channel means a trim is already due).
    trimmer: Option<SyncSender<Trim>>,
    /// Whether measured bytes nobody reserved count as used (see [`MemoryBudget::in_use`]).
    fail_closed: bool,
    /// Bytes of bodies still arriving, per client address (see [`Receiving`]).
    receiving: std::sync::Mutex<ReceivingTotals>,
}

/// Bytes held by uploads that are still arriving.
#[derive(Debug, Default)]
struct ReceivingTotals {
    all: u64,
    per_client: std::collections::HashMap<std::net::IpAddr, u64>,
}

/// Share of the budget that uploads still arriving may hold, in all (the rest is for work
/// that has all its input and can finish).
const RECEIVING_SHARE: u64 = 2;
/// Share of the budget one client's arriving uploads may hold.
const CLIENT_SHARE: u64 = 8;

impl MemoryBudget {
    /// A budget of `limit` bytes, reported as `segserve_memory_reserved_bytes` (and the limit
    /// as `segserve_memory_budget_bytes`).
    /// A thread of its own returns freed memory to the OS after a large release, so RSS
    /// follows the reservations rather than the high-water mark.
    pub fn new(limit: u64) -> Arc<Self> {
        metrics::gauge!("segserve_memory_budget_bytes").set(limit as f64);
        let gauge = metrics::gauge!("segserve_memory_reserved_bytes");
        gauge.set(0.0);
        let (tx, rx) = sync_channel::<Trim>(1);
        let used = Arc::new(Usage::default());
        let usage = used.clone();
        let spawned = std::thread::Builder::new()
            .name("segserve-trim".into())
            .spawn(move || {
                while let Ok(why) = rx.recv() {
                    match why {
                        Trim::Large => std::thread::sleep(TRIM_DEBOUNCE),
                        Trim::Idle => {
                            let takes = usage.takes.load(Ordering::Acquire);
                            std::thread::sleep(IDLE_TRIM_AFTER);
                            let quiet = usage.takes.load(Ordering::Acquire) == takes
                                && usage.used.load(Ordering::Acquire) == 0;
                            if !quiet {
                                continue;
                            }
                        }
                    }
                    crate::alloc::trim();
                }
            });
        Arc::new(MemoryBudget {
            limit,
            used,
            gauge,
            // Without the thread the budget still works; memory just returns later.
            trimmer: spawned.ok().map(|_| tx),
            fail_closed: false,
            receiving: Default::default(),
        })
    }

    /// The server's budget: [`MemoryBudget::new`], and the bytes the allocator measured but
    /// nobody reserved count as used too (when the build meters allocations).
    pub fn measured(limit: u64) -> Arc<Self> {
        let mut b = Self::new(limit);
        Arc::get_mut(&mut b).expect("just made").fail_closed = meter::ENABLED;
        b
    }

    /// No limit: for the offline commands, where one process serves one user.
    pub fn unlimited() -> Arc<Self> {
        Arc::new(MemoryBudget {
            limit: u64::MAX,
            used: Default::default(),
            gauge: metrics::Gauge::noop(),
            trimmer: None,
            fail_closed: false,
            receiving: Default::default(),
        })
    }

    /// The budget in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes reserved now.
    pub fn used(&self) -> u64 {
        self.used.used.load(Ordering::Acquire)
    }

    /// An empty reservation, to grow as the request learns what it needs. It is charged to
    /// the request this thread works for (`meter::current`), whose measured bytes it covers.
    pub fn reservation(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: self.clone(),
            held: 0,
            lease: meter::current(),
            model: None,
        }
    }

    /// Bytes in use as the budget counts them: the reservations, plus the measured bytes no
    /// reservation covers (an estimate's miss, answers hyper has yet to send, connection
    /// buffers). Fail closed: what nobody reserved still takes room.
    pub fn in_use(&self) -> u64 {
        self.used
            .used
            .load(Ordering::Acquire)
            .saturating_add(self.unreserved())
    }

    fn unreserved(&self) -> u64 {
        if self.fail_closed {
            meter::unreserved_bytes()
        } else {
            0
        }
    }

    /// Takes `extra` bytes on top of the `held` a request already has, or refuses.
    fn take(&self, held: u64, extra: u64, model: Option<&str>) -> Result<(), BudgetError> {
        let total = held.saturating_add(extra);
        if total > self.limit {
            return Err(BudgetError::NeverFits {
                needed: total,
                limit: self.limit,
            });
        }
        let unreserved = self.unreserved();
        let mut used = self.used.used.load(Ordering::Acquire);
        loop {
            let available = self.limit.saturating_sub(used.saturating_add(unreserved));
            if extra > available {
                // Counted where the budget refuses, whatever the stage.
                metrics::counter!("segserve_requests_shed_total",
                    "model" => model.unwrap_or("none").to_string(), "reason" => "memory")
                .increment(1);
                return Err(BudgetError::Busy {
                    needed: extra,
                    available,
                    limit: self.limit,
                });
            }
            match self.used.used.compare_exchange_weak(
                used,
                used + extra,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.used.takes.fetch_add(1, Ordering::AcqRel);
                    self.gauge.set((used + extra) as f64);
                    return Ok(());
                }
                Err(now) => used = now,
            }
        }
    }

    fn give_back(&self, bytes: u64) {
        let before = self.used.used.fetch_sub(bytes, Ordering::AcqRel);
        debug_assert!(before >= bytes, "released more than was reserved");
        self.gauge.set(before.saturating_sub(bytes) as f64);
        let why = if bytes >= TRIM_AFTER_BYTES {
            Trim::Large
        } else if before == bytes {
            Trim::Idle
        } else {
            return;
        };
        if let Some(tx) = &self.trimmer {
            let _ = tx.try_send(why);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_add_up_and_give_back_on_drop() {
        let b = MemoryBudget::new(1000);
        let mut r1 = b.reservation();
        r1.grow(600).unwrap();
        let mut r2 = b.reservation();
        assert_eq!(
            r2.grow(500),
            Err(BudgetError::Busy {
                needed: 500,
                available: 400,
                limit: 1000
            })
        );
        r2.grow(400).unwrap();
        assert_eq!(b.used(), 1000);
        r1.set(100).unwrap();
        assert_eq!(b.used(), 500);
        drop(r2);
        assert_eq!(b.used(), 100);
        drop(r1);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn a_request_larger_than_the_budget_never_fits() {
        let b = MemoryBudget::new(1000);
        let mut r = b.reservation();
        r.grow(700).unwrap();
        assert_eq!(
            r.grow(400),
            Err(BudgetError::NeverFits {
                needed: 1100,
                limit: 1000
            })
        );
        // A refused grow keeps what was held.
        assert_eq!((r.held(), b.used()), (700, 700));
        r.ensure(300).unwrap();
        assert_eq!(r.held(), 700);
        r.ensure(900).unwrap();
        assert_eq!(b.used(), 900);
    }
}
