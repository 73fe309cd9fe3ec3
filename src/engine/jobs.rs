//! A job for the inference threads, and how a request sends one and waits for its answer.
//! What the request holds (its places, its reservation) travels inside the job and comes
//! back with the answer, so it stays held until the run is really over even when the
//! caller stops waiting.

use std::time::Instant;

use tokio::sync::oneshot;

use super::{shed_counter, Engine, EngineError, RawOutput, SHED_QUEUE_FULL};

/// One photo's run, as the workers take it from the queue.
pub(crate) struct Job {
    pub(super) input: Vec<f32>,
    /// Canvas (height, width) of `input`: it varies per photo on dynamic-shape models.
    pub(super) hw: (usize, usize),
    pub(super) enqueued: Instant,
    /// The request the job's allocations (the copied outputs) are charged to.
    pub(super) lease: Option<std::sync::Arc<crate::meter::Lease>>,
    /// Where the answer goes, with what the caller handed over.
    pub(super) reply: Box<dyn Reply>,
}

/// The answer's way back, typed by the caller and erased for the queue.
pub(crate) trait Reply: Send {
    /// Whether the caller stopped waiting (its job need not run).
    fn is_closed(&self) -> bool;
    /// Sends the answer; what the caller handed over goes back with it, or is dropped here
    /// when nobody waits any more.
    fn send(self: Box<Self>, result: Result<RawOutput, EngineError>);
}

struct Answer<C> {
    tx: oneshot::Sender<(Result<RawOutput, EngineError>, C)>,
    carry: C,
}

impl<C: Send> Reply for Answer<C> {
    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    fn send(self: Box<Self>, result: Result<RawOutput, EngineError>) {
        let _ = self.tx.send((result, self.carry));
    }
}

impl Engine {
    /// Runs the model on a prepared [3, H, W] tensor, `hw` = (H, W), on one of the pool's
    /// sessions. `carry` (the caller's slot, permits, reservation) travels with the job and
    /// comes back with the answer; if the caller stops waiting it is dropped only once the
    /// run is done.
    pub async fn infer<C: Send + 'static>(
        &self,
        input: Vec<f32>,
        hw: (usize, usize),
        carry: C,
    ) -> Result<(RawOutput, C), EngineError> {
        if input.len() != 3 * hw.0 * hw.1 {
            return Err(EngineError::Inference(format!(
                "input has {} values, not 3 x {} x {}",
                input.len(),
                hw.0,
                hw.1
            )));
        }
        let (tx, rx) = oneshot::channel();
        let job = Job {
            input,
            hw,
            enqueued: Instant::now(),
            lease: crate::meter::current(),
            reply: Box::new(Answer { tx, carry }),
        };
        self.try_queue(job)?;
        let (result, carry) = rx.await.map_err(|_| EngineError::Closed)?;
        Ok((result?, carry))
    }

    fn try_queue(&self, job: Job) -> Result<(), EngineError> {
        self.inner.jobs.try_send(job).map_err(|e| match e {
            crossbeam_channel::TrySendError::Full(_) => {
                shed_counter(&self.inner.info.name, SHED_QUEUE_FULL).increment(1);
                EngineError::Overloaded
            }
            crossbeam_channel::TrySendError::Disconnected(_) => EngineError::Closed,
        })
    }
}
