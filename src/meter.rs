//! Every heap byte, counted where it is allocated. The memory budget (`crate::budget`) is
//! *reserved* from estimates; an estimate can be wrong, and a third-party decoder or
//! hyper's buffers can allocate what nobody estimated. So the global allocator counts:
//!
//! - the process's live Rust heap ([`heap_bytes`]);
//! - the live bytes allocated on behalf of server work ([`measured_bytes`]): anything
//!   allocated while a *tag* is set on the thread — a request's [`Lease`] while its handler,
//!   blocking closures and inference job run (see [`Metered`] and [`spawn_blocking`]), or
//!   the shared server tag while connections are served;
//! - each request's live and peak bytes, so a stage that passed its reservation is caught at
//!   the next stage boundary ([`Lease::check`]).
//!
//! Each allocation carries a 16-byte header naming the tag it was made under (slot and
//! generation), so a free on another thread, or after the request ended, is charged to the
//! right place. Allocations aligned above 16 bytes (rare: SIMD tables) have no header and are
//! counted only in the process total. C libraries (ONNX Runtime, libjpeg) call `malloc`
//! directly and are not seen here: ONNX Runtime's memory is per model and in the idle RSS,
//! and libjpeg runs under its own hard limit (`imageio`).
//!
//! Built with the default feature `alloc-meter`; without it the counters read zero and
//! nothing is enforced from measurements (the overhead comparison in docs/performance.md).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// Bytes in front of each tagged allocation (the tag, padded to the allocator's alignment).
const HEADER: usize = 16;
/// Requests metered at once; more than this run unmetered (still counted in the totals).
const SLOTS: usize = 4096;
/// Slot of the server's own work (connections, inference threads between jobs).
const SERVER_SLOT: u32 = 1;
/// The first slot a request can get.
const FIRST_REQUEST_SLOT: u32 = 2;

/// Allocations a request makes that no estimate covers by design (headers, parsed query,
/// log fields, small maps): a stage may pass its reservation by this much unnoticed.
pub const ALLOWANCE: i64 = 1 << 20;

/// Per-slot counters. `gen` changes when the slot is handed to another request, so frees of
/// an earlier request's bytes do not touch the new one's counts.
struct Slot {
    gen: AtomicU32,
    live: AtomicI64,
    peak: AtomicI64,
    reserved: AtomicI64,
    reserved_peak: AtomicI64,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            gen: AtomicU32::new(0),
            live: AtomicI64::new(0),
            peak: AtomicI64::new(0),
            reserved: AtomicI64::new(0),
            reserved_peak: AtomicI64::new(0),
        }
    }
}

static TABLE: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];
/// Live bytes of every Rust allocation.
static HEAP: AtomicI64 = AtomicI64::new(0);
/// Live bytes of allocations made under a tag.
static TAGGED: AtomicI64 = AtomicI64::new(0);
/// One past the highest slot ever handed out (scans stop there).
static HIGH: AtomicUsize = AtomicUsize::new(FIRST_REQUEST_SLOT as usize);
/// Slots given back, to hand out again.
static FREE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

thread_local! {
    /// The tag allocations on this thread are charged to (slot << 32 | generation; 0: none).
    static TAG: Cell<u64> = const { Cell::new(0) };
    /// The lease behind `TAG`, when it is a request's (kept alive by whoever entered it).
    static LEASE: Cell<*const Lease> = const { Cell::new(std::ptr::null()) };
}

fn tag_of(slot: u32, gen: u32) -> u64 {
    (u64::from(slot) << 32) | u64::from(gen)
}

/// Charges `delta` bytes to `tag` (and the totals).
#[inline]
fn account(tag: u64, delta: i64) {
    HEAP.fetch_add(delta, Relaxed);
    if tag == 0 {
        return;
    }
    TAGGED.fetch_add(delta, Relaxed);
    let slot = &TABLE[(tag >> 32) as usize];
    if slot.gen.load(Relaxed) == tag as u32 {
        let now = slot.live.fetch_add(delta, Relaxed) + delta;
        if delta > 0 && now > slot.peak.load(Relaxed) {
            slot.peak.fetch_max(now, Relaxed);
        }
    }
}

/// The counting allocator: the system allocator with a tag in front of each block.
pub struct Counting;

// SAFETY: every block handed out is a System block offset by HEADER (for alignments up to
// HEADER, which HEADER's alignment satisfies) or a plain System block (larger alignments);
// `dealloc` and `realloc` tell the two apart by the same alignment test on the same layout.
unsafe impl GlobalAlloc for Counting {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.alloc_with(layout, |l| System.alloc(l))
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.alloc_with(layout, |l| System.alloc_zeroed(l))
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.align() > HEADER {
            HEAP.fetch_sub(layout.size() as i64, Relaxed);
            return System.dealloc(ptr, layout);
        }
        let base = ptr.sub(HEADER);
        let tag = (base as *const u64).read();
        account(tag, -(layout.size() as i64));
        System.dealloc(base, with_header(layout.size()));
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() > HEADER {
            let p = System.realloc(ptr, layout, new_size);
            if !p.is_null() {
                HEAP.fetch_add(new_size as i64 - layout.size() as i64, Relaxed);
            }
            return p;
        }
        let Some(total) = new_size.checked_add(HEADER) else {
            return std::ptr::null_mut();
        };
        let base = ptr.sub(HEADER);
        let p = System.realloc(base, with_header(layout.size()), total);
        if p.is_null() {
            return p;
        }
        // A block keeps the tag it was first allocated under: a Vec grows for its owner.
        let tag = (p as *const u64).read();
        account(tag, new_size as i64 - layout.size() as i64);
        p.add(HEADER)
    }
}

impl Counting {
    #[inline]
    unsafe fn alloc_with(&self, layout: Layout, raw: impl FnOnce(Layout) -> *mut u8) -> *mut u8 {
        if layout.align() > HEADER {
            let p = raw(layout);
            if !p.is_null() {
                HEAP.fetch_add(layout.size() as i64, Relaxed);
            }
            return p;
        }
        let Some(total) = layout.size().checked_add(HEADER) else {
            return std::ptr::null_mut();
        };
        if total > isize::MAX as usize - HEADER {
            return std::ptr::null_mut();
        }
        let p = raw(with_header(layout.size()));
        if p.is_null() {
            return p;
        }
        let tag = TAG.with(Cell::get);
        (p as *mut u64).write(tag);
        account(tag, layout.size() as i64);
        p.add(HEADER)
    }
}

/// The System layout of a headed block of `size` user bytes.
#[inline]
fn with_header(size: usize) -> Layout {
    // SAFETY: callers checked size + HEADER does not overflow isize; HEADER is a power of two.
    unsafe { Layout::from_size_align_unchecked(size + HEADER, HEADER) }
}

/// Live bytes of the process's Rust heap.
pub fn heap_bytes() -> u64 {
    HEAP.load(Relaxed).max(0) as u64
}

/// Live bytes allocated on behalf of server work (requests, connections, inference).
pub fn measured_bytes() -> u64 {
    TAGGED.load(Relaxed).max(0) as u64
}

/// Measured bytes that no reservation covers: what requests hold beyond their reservations,
/// plus what outlives its request (bytes hyper still has to send) and the server's own
/// buffers. The budget counts these as used, so an estimate miss delays new work.
pub fn unreserved_bytes() -> u64 {
    let mut covered = 0i64;
    let high = HIGH.load(Relaxed).min(SLOTS);
    for slot in &TABLE[FIRST_REQUEST_SLOT as usize..high] {
        let live = slot.live.load(Relaxed);
        if live > 0 {
            covered += live.min(slot.reserved.load(Relaxed).max(0));
        }
    }
    (TAGGED.load(Relaxed) - covered).max(0) as u64
}

/// Whether this build counts allocations (feature `alloc-meter`).
pub const ENABLED: bool = cfg!(feature = "alloc-meter");

/// One request's place in the meter: its allocations are counted against it, and its
/// reservations are mirrored into it, while it lives. Shared (`Arc`) by everything that
/// works for the request; the slot is handed back when the last holder is gone.
#[derive(Debug)]
pub struct Lease {
    slot: u32,
    gen: u32,
}

/// A stage that measured more than it reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overrun {
    /// The stage that ended with the overrun.
    pub stage: &'static str,
    /// The request's measured peak during the stage.
    pub measured: u64,
    /// The most it had reserved during the stage.
    pub reserved: u64,
}

impl std::fmt::Display for Overrun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} measured {} bytes against a reservation of {} bytes",
            self.stage, self.measured, self.reserved
        )
    }
}

impl Lease {
    /// A fresh lease, or `None` when every slot is taken (the request then runs unmetered,
    /// still counted in the totals).
    pub fn new() -> Option<Arc<Lease>> {
        let slot = FREE.lock().ok().and_then(|mut f| f.pop()).or_else(|| {
            let next = HIGH.fetch_add(1, Relaxed);
            if next < SLOTS {
                Some(next as u32)
            } else {
                HIGH.fetch_sub(1, Relaxed);
                None
            }
        })?;
        let gen = TABLE[slot as usize].gen.load(Relaxed);
        Some(Arc::new(Lease { slot, gen }))
    }

    fn slot(&self) -> &'static Slot {
        &TABLE[self.slot as usize]
    }

    fn tag(&self) -> u64 {
        tag_of(self.slot, self.gen)
    }

    /// Bytes this request's allocations hold now.
    pub fn live(&self) -> u64 {
        self.slot().live.load(Relaxed).max(0) as u64
    }

    /// Mirrors a change of the request's reservations (see `budget::Reservation`).
    pub(crate) fn reserved_changed(&self, delta: i64) {
        let s = self.slot();
        let now = s.reserved.fetch_add(delta, Relaxed) + delta;
        s.reserved_peak.fetch_max(now, Relaxed);
    }

    /// Ends a stage: its measured peak against the most it reserved, both then restarted
    /// from now. An overrun beyond [`ALLOWANCE`] is returned for the caller to stop on.
    pub fn check(&self, stage: &'static str) -> Result<(), Overrun> {
        if !ENABLED {
            return Ok(());
        }
        let s = self.slot();
        let measured = s.peak.swap(s.live.load(Relaxed), Relaxed).max(0);
        let reserved = s
            .reserved_peak
            .swap(s.reserved.load(Relaxed), Relaxed)
            .max(0);
        if reserved > 0 {
            metrics::histogram!("segserve_memory_stage_peak_ratio", "stage" => stage)
                .record(measured as f64 / reserved as f64);
        }
        if measured > reserved + ALLOWANCE {
            return Err(Overrun {
                stage,
                measured: measured as u64,
                reserved: reserved as u64,
            });
        }
        Ok(())
    }

    /// Charges this thread's allocations to the lease until the guard drops.
    pub fn enter(self: &Arc<Self>) -> Entered {
        let prev = (
            TAG.with(|t| t.replace(self.tag())),
            LEASE.with(|l| l.replace(Arc::as_ptr(self))),
        );
        Entered { prev }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let s = self.slot();
        // Later frees of this request's bytes see another generation and leave the slot be.
        s.gen.store(self.gen.wrapping_add(1), Relaxed);
        for c in [&s.live, &s.peak, &s.reserved, &s.reserved_peak] {
            c.store(0, Relaxed);
        }
        if let Ok(mut free) = FREE.lock() {
            free.push(self.slot);
        }
    }
}

/// Restores the previous tag when dropped.
pub struct Entered {
    prev: (u64, *const Lease),
}

impl Drop for Entered {
    fn drop(&mut self) {
        TAG.with(|t| t.set(self.prev.0));
        LEASE.with(|l| l.set(self.prev.1));
    }
}

/// Charges this thread's allocations to the server's own work until the guard drops.
pub fn enter_server() -> Entered {
    let prev = (
        TAG.with(|t| t.replace(tag_of(SERVER_SLOT, 0))),
        LEASE.with(|l| l.replace(std::ptr::null())),
    );
    Entered { prev }
}

/// The request lease this thread works for, if any.
pub fn current() -> Option<Arc<Lease>> {
    let p = LEASE.with(Cell::get);
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` was set by `Lease::enter` from a live Arc that the enterer keeps alive
    // until its guard restores the previous value, which happens before that Arc can drop.
    unsafe {
        Arc::increment_strong_count(p);
        Some(Arc::from_raw(p))
    }
}

/// A future whose every poll is charged to `lease` (or to the server's work when `None`).
pub struct Metered<F> {
    inner: Pin<Box<F>>,
    lease: Option<Arc<Lease>>,
}

impl<F: Future> Metered<F> {
    /// Wraps `inner`.
    pub fn new(inner: F, lease: Option<Arc<Lease>>) -> Self {
        Metered {
            inner: Box::pin(inner),
            lease,
        }
    }
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _entered = match &self.lease {
            Some(l) => l.enter(),
            None => enter_server(),
        };
        self.inner.as_mut().poll(cx)
    }
}

/// `tokio::task::spawn_blocking`, with the closure's allocations charged to the lease of
/// the calling thread.
pub fn spawn_blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    let lease = current();
    tokio::task::spawn_blocking(move || {
        let _entered = lease.as_ref().map(Lease::enter);
        f()
    })
}

#[cfg(all(test, feature = "alloc-meter"))]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_charged_for_what_it_allocates_wherever_it_is_freed() {
        let lease = Lease::new().unwrap();
        let v = {
            let _in = lease.enter();
            vec![1u8; 3 << 20]
        };
        assert!(lease.live() >= 3 << 20);
        lease.reserved_changed(1 << 20);
        let overrun = lease.check("test").unwrap_err();
        assert_eq!(overrun.reserved, 1 << 20);
        assert!(overrun.measured >= 3 << 20);
        // Freed on another thread, outside the lease: still the lease's bytes.
        std::thread::spawn(move || drop(v)).join().unwrap();
        assert!(lease.live() < 1 << 20);
        // The stage that freed them started with them live; the next one starts without.
        assert!(lease.check("freeing").is_err());
        assert!(lease.check("after").is_ok());
    }

    #[test]
    fn bytes_outliving_their_request_stay_measured_but_leave_the_slot_alone() {
        let lease = Lease::new().unwrap();
        let before = measured_bytes();
        let v = {
            let _in = lease.enter();
            vec![0u8; 2 << 20]
        };
        drop(lease);
        // Other tests allocate concurrently; compare with a margin.
        assert!(measured_bytes() + (1 << 20) >= before + (2 << 20));
        let next = Lease::new().unwrap();
        drop(v);
        assert_eq!(next.live(), 0);
    }

    #[test]
    fn current_follows_the_entered_lease() {
        assert!(current().is_none());
        let lease = Lease::new().unwrap();
        {
            let _in = lease.enter();
            let c = current().unwrap();
            assert!(Arc::ptr_eq(&c, &lease));
            let _server = enter_server();
            assert!(current().is_none());
        }
        assert!(current().is_none());
    }
}
