//! A request's reservation: the bytes it holds, grown before each stage and checked
//! against what the meter measured after it.

use std::sync::Arc;

use super::*;

/// Bytes one request holds against the budget; released when dropped. It moves with the
/// work (into blocking closures, into the response body), so a cancelled request keeps
/// its share until its buffers are really gone.
#[derive(Debug)]
pub struct Reservation {
    pub(super) budget: Arc<MemoryBudget>,
    pub(super) held: u64,
    /// The request's place in the meter, where the held bytes are mirrored.
    pub(super) lease: Option<Arc<Lease>>,
    /// The model the work is for, once known (the refusal counter's label).
    pub(super) model: Option<Arc<str>>,
}

impl Reservation {
    /// Bytes held now.
    pub fn held(&self) -> u64 {
        self.held
    }

    /// Names the model this reservation's work is for (for the refusal counter).
    pub fn set_model(&mut self, model: &str) {
        if self.model.as_deref() != Some(model) {
            self.model = Some(model.into());
        }
    }

    /// The request's meter lease, if it has one.
    pub fn lease(&self) -> Option<&Arc<Lease>> {
        self.lease.as_ref()
    }

    fn mirror(&self, delta: i64) {
        if let Some(l) = &self.lease {
            l.reserved_changed(delta);
        }
    }

    /// Holds `extra` more bytes, or refuses (holding what it held before).
    pub fn grow(&mut self, extra: u64) -> Result<(), BudgetError> {
        if extra == 0 {
            return Ok(());
        }
        self.budget.take(self.held, extra, self.model.as_deref())?;
        self.held += extra;
        self.mirror(extra as i64);
        Ok(())
    }

    /// Ends a stage: the request's measured peak during it must not have passed what it
    /// reserved (see `meter::Lease::check`). An overrun is logged with the stage's name.
    pub fn check(&self, stage: &'static str) -> Result<(), BudgetError> {
        let Some(lease) = &self.lease else {
            return Ok(());
        };
        lease.check(stage).map_err(|o| {
            if audit() {
                tracing::error!(
                    stage,
                    measured = o.measured,
                    reserved = o.reserved,
                    "memory audit: a stage used more than it reserved"
                );
            } else {
                tracing::warn!(
                    stage,
                    measured = o.measured,
                    reserved = o.reserved,
                    "a stage used more memory than it reserved; request stopped"
                );
            }
            BudgetError::Overrun(o)
        })
    }

    /// Holds at least `total` bytes in all: grows if it holds less, keeps what it has otherwise.
    pub fn ensure(&mut self, total: u64) -> Result<(), BudgetError> {
        self.grow(total.saturating_sub(self.held))
    }

    /// Holds exactly `total` bytes: gives back the excess, or grows to it (which may be
    /// refused, and must not be ignored).
    pub fn set(&mut self, total: u64) -> Result<(), BudgetError> {
        if total >= self.held {
            return self.grow(total - self.held);
        }
        self.shrink_to(total);
        Ok(())
    }

    /// Gives back whatever is held beyond `total` (nothing if it holds less): for work that
    /// is over, where holding less can never need a refusal.
    pub fn shrink_to(&mut self, total: u64) {
        if total < self.held {
            self.budget.give_back(self.held - total);
            self.mirror(-((self.held - total) as i64));
            self.held = total;
        }
    }

    /// Moves `bytes` of what this reservation holds into a new one (for work that
    /// leaves on its own, e.g. an answer's bytes), or all of it if it holds less.
    pub fn split_off(&mut self, bytes: u64) -> Reservation {
        let moved = bytes.min(self.held);
        self.held -= moved;
        self.mirror(-(moved as i64));
        let r = Reservation {
            budget: self.budget.clone(),
            held: moved,
            lease: self.lease.clone(),
            model: self.model.clone(),
        };
        r.mirror(moved as i64);
        r
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.held > 0 {
            self.budget.give_back(self.held);
            self.mirror(-(self.held as i64));
        }
    }
}
