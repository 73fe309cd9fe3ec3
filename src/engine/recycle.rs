//! Output buffers that go back to their model when the request is done with them.
//!
//! Each run's outputs are copied out of ONNX Runtime (its values live in the session's arena
//! and are reused by the next run). Into fresh `Vec`s, that copy faulted in ~1.8 MB of new
//! pages on every request for the 320 model (glibc hands the top of the heap back to the
//! kernel once 128 KiB of it is free): 96 % of the server's page faults (`perf record -e
//! page-faults`). A recycled buffer's pages stay mapped, so the copy is a plain `memcpy`.
//!
//! A pool keeps at most as many buffers as requests can hold outputs at once (the model's
//! compute places), so what it retains is bounded and counted as the server's own bytes by
//! the memory meter.

use std::ops::Deref;
use std::sync::{Arc, Mutex};

/// A model's free buffers of one output.
#[derive(Debug)]
pub(crate) struct Recycler {
    free: Mutex<Vec<Vec<f32>>>,
    /// Most buffers kept; beyond that a returned buffer is freed.
    keep: usize,
}

impl Recycler {
    pub(crate) fn new(keep: usize) -> Arc<Recycler> {
        Arc::new(Recycler {
            free: Mutex::new(Vec::with_capacity(keep)),
            keep,
        })
    }

    /// A copy of `src` in a recycled buffer (a new one while none is free).
    pub(crate) fn copy_of(self: &Arc<Self>, src: &[f32]) -> Recycled {
        let mut buf = self
            .free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default();
        buf.clear();
        if buf.capacity() < src.len() {
            // Kept past the request that first needed it: the server's bytes, not the
            // request's (the request's reservation still covers its outputs).
            let _server = crate::meter::enter_server();
            buf.reserve_exact(src.len());
        }
        buf.extend_from_slice(src);
        Recycled {
            buf,
            home: Some(self.clone()),
        }
    }

    /// Buffers free now.
    #[cfg(test)]
    fn free_count(&self) -> usize {
        self.free.lock().unwrap().len()
    }
}

/// An output's values; its buffer goes back to the model's pool when dropped.
#[derive(Debug, Default)]
pub struct Recycled {
    buf: Vec<f32>,
    home: Option<Arc<Recycler>>,
}

impl Recycled {
    /// The values as a `Vec` of their own (the buffer leaves its pool).
    pub fn into_vec(mut self) -> Vec<f32> {
        self.home = None;
        std::mem::take(&mut self.buf)
    }
}

impl From<Vec<f32>> for Recycled {
    /// Values that belong to no pool (tools, tests).
    fn from(buf: Vec<f32>) -> Self {
        Recycled { buf, home: None }
    }
}

impl Deref for Recycled {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        &self.buf
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        let Some(home) = self.home.take() else { return };
        let mut free = home.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < home.keep {
            free.push(std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_up_to_the_bound_and_are_reused() {
        let pool = Recycler::new(2);
        let a = pool.copy_of(&[1.0, 2.0, 3.0]);
        let b = pool.copy_of(&[4.0; 5]);
        let c = pool.copy_of(&[5.0]);
        assert_eq!((&*a, &*c), (&[1.0, 2.0, 3.0][..], &[5.0][..]));
        let reused = a.as_ptr();
        drop(a);
        drop(b);
        drop(c);
        assert_eq!(pool.free_count(), 2, "the third buffer is freed, not kept");
        // The last one returned is reused first, whatever it held.
        let d = pool.copy_of(&[7.0, 8.0]);
        assert_eq!(&*d, &[7.0, 8.0]);
        let e = pool.copy_of(&[9.0]);
        assert_eq!(e.as_ptr(), reused);
        assert_eq!(&*e, &[9.0]);
    }

    #[test]
    fn a_buffer_taken_out_of_its_pool_does_not_come_back() {
        let pool = Recycler::new(4);
        let v = pool.copy_of(&[1.0, 2.0]).into_vec();
        assert_eq!(v, vec![1.0, 2.0]);
        assert_eq!(pool.free_count(), 0);
        drop(Recycled::from(vec![3.0]));
        assert_eq!(pool.free_count(), 0);
    }
}
