//! A model's places: the queue (admission), the compute stage (slots, two per session, so a
//! session never waits for image work) and the recycled input tensors. Requests take their
//! places here before any work; the gauges an autoscaler reads count them.

use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;

use super::{shed_counter, Engine, EngineError, SHED_QUEUE_FULL, SHED_QUEUE_TIMEOUT};

/// How long a request that finds its model's queue full waits for a place before the 503
/// (see [`Engine::admit_within`]): short beside the queue timeout, long beside a refusal.
pub const ROOM_HOLD: Duration = Duration::from_millis(200);
/// Pool and queue sizing.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Number of sessions, each on its own thread.
    pub sessions: usize,
    /// Threads of the intra-op pool the sessions share (see `session::init_runtime`).
    pub threads: usize,
    /// Requests admitted beyond those being computed.
    pub queue_depth: usize,
    /// Longest a request may wait for a session.
    pub queue_timeout: Duration,
    /// Largest batch per run, for models whose batch dimension is dynamic (1 = no batching).
    pub max_batch: usize,
    /// How long a session waits for more requests to fill a batch.
    pub batch_window: Duration,
}

/// Proof of admission: while held, the request counts against the queue.
#[derive(Debug)]
pub struct Admission(#[allow(dead_code)] OwnedSemaphorePermit);

/// A place in the compute stage (decode, letterbox, inference, postprocessing, encoding),
/// counted in `segserve_compute_busy` while held.
#[derive(Debug)]
pub struct Slot(
    #[allow(dead_code)] OwnedSemaphorePermit,
    #[allow(dead_code)] Counted,
);

/// One in a gauge while alive: the queue gauges stay exact however a wait or a piece of
/// work ends (an answer, an error, a timeout, or a client that leaves and drops the future).
#[derive(Debug)]
pub struct Counted(metrics::Gauge);

impl Counted {
    fn new(gauge: metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Counted(gauge)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Requests per session allowed in the compute stage: one computing, one being decoded so
/// the session never waits for image work.
pub(super) const STAGE_PER_SESSION: usize = 2;

impl Engine {
    /// Looks for room in the queue before a request's body is read, waiting up to `hold`
    /// ([`ROOM_HOLD`] on the routes) when it is full: refusing from the headers costs next to
    /// nothing, where reading and parsing an upload only to refuse it costs as much as
    /// serving it. With room at once nothing is taken
    /// (`None`: the place is taken with [`Engine::try_admit`] once the photo is in, so slow
    /// uploads never hold places). When it had to wait, the place it got is kept (`Some`):
    /// a look that let it go would wake every waiter to read its body and be refused after
    /// all. Clients that retry a 503 at once (ignoring `Retry-After`) would otherwise turn
    /// refusals into a busy loop that takes the CPUs from the work being served; held for
    /// a moment, each costs one refusal per `hold`. Nothing is read or reserved while it
    /// waits: the body stays in the socket.
    pub async fn admit_within(&self, hold: Duration) -> Result<Option<Admission>, EngineError> {
        if self.inner.admission.available_permits() > 0 {
            return Ok(None);
        }
        match tokio::time::timeout(hold, self.inner.admission.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(Some(Admission(p))),
            _ => {
                shed_counter(&self.inner.info.name, SHED_QUEUE_FULL).increment(1);
                Err(EngineError::Overloaded)
            }
        }
    }

    /// Takes a place in the queue, or fails at once when it is full (the caller sheds load).
    pub fn try_admit(&self) -> Result<Admission, EngineError> {
        self.inner
            .admission
            .clone()
            .try_acquire_owned()
            .map(Admission)
            .map_err(|_| {
                shed_counter(&self.inner.info.name, SHED_QUEUE_FULL).increment(1);
                EngineError::Overloaded
            })
    }

    /// Waits (up to the queue timeout) for a place in the compute stage. Queued requests
    /// wait here holding only their compressed bytes, so memory under load stays flat:
    /// decoded photos and tensors exist for at most `2 x sessions` requests at a time.
    pub async fn slot(&self, _admission: &Admission) -> Result<Slot, EngineError> {
        let sem = self.inner.stage.clone();
        let _pending = Counted::new(self.inner.pending.clone());
        match tokio::time::timeout(self.inner.pool.queue_timeout, sem.acquire_owned()).await {
            Ok(Ok(p)) => Ok(Slot(p, Counted::new(self.inner.busy.clone()))),
            Ok(Err(_)) => Err(EngineError::Closed),
            Err(_) => {
                shed_counter(&self.inner.info.name, SHED_QUEUE_TIMEOUT).increment(1);
                Err(EngineError::QueueTimeout)
            }
        }
    }

    /// A zeroed-or-recycled input buffer of the model's full size, [3, H, W] at `input_hw`.
    /// A rect canvas (dynamic-shape models) is never larger: `resize` it to
    /// [`crate::geometry::Letterbox::tensor_len`], which then only shortens it.
    pub fn input_buffer(&self) -> Vec<f32> {
        let (h, w) = self.inner.info.input_hw;
        let recycled = self
            .inner
            .buffers
            .lock()
            .expect("buffer pool lock poisoned")
            .pop();
        let mut b = recycled.unwrap_or_default();
        if b.capacity() < 3 * h * w {
            // Pooled buffers outlive the request that first needed one, so they are the
            // server's bytes (a request reserves the tensor it uses, not the pool's growth).
            let _server = crate::meter::enter_server();
            b.reserve_exact(3 * h * w - b.len());
        }
        b.resize(3 * h * w, 0.0);
        b
    }
}
