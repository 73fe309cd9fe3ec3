//! Where the server is in its life: loading its models, ready, or draining after a
//! shutdown signal. One value, moved forward from two places (the loader and the shutdown
//! path) and read by the probes and the connection handling; it never goes back.

use std::sync::atomic::{AtomicU8, Ordering};

/// A phase of the server's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Models are loading and warming up: the probes say not ready, the API answers 503.
    Loading,
    /// Serving.
    Ready,
    /// A shutdown signal came: readiness is off and answers carry `Connection: close`,
    /// while requests already routed here are still served.
    Draining,
}

/// The current [`Phase`], shared by every handler.
#[derive(Debug, Default)]
pub struct Lifecycle(AtomicU8);

const LOADING: u8 = 0;
const READY: u8 = 1;
const DRAINING: u8 = 2;

impl Lifecycle {
    /// The phase now.
    pub fn phase(&self) -> Phase {
        match self.0.load(Ordering::Acquire) {
            LOADING => Phase::Loading,
            READY => Phase::Ready,
            _ => Phase::Draining,
        }
    }

    /// Whether the readiness probes should say yes.
    pub fn is_ready(&self) -> bool {
        self.phase() == Phase::Ready
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.phase() == Phase::Draining
    }

    /// The models are loaded and warm. A server already draining stays draining: a load
    /// that ends after the signal must not turn readiness back on.
    pub fn loaded(&self) {
        let _ = self
            .0
            .compare_exchange(LOADING, READY, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Shutdown begins.
    pub fn drain(&self) {
        self.0.store(DRAINING, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_only_move_forward() {
        let l = Lifecycle::default();
        assert_eq!(l.phase(), Phase::Loading);
        assert!(!l.is_ready() && !l.is_draining());
        l.loaded();
        assert!(l.is_ready());
        l.drain();
        assert!(l.is_draining() && !l.is_ready());
        l.loaded();
        assert_eq!(l.phase(), Phase::Draining);
    }
}
