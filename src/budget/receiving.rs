//! The share of the budget an upload holds while it arrives, with its caps per server and
//! per client.

use std::sync::Arc;

use super::*;

/// The part of a request's reservation that holds an upload still arriving: slow senders
/// wait on the network, not on us, so together they may hold at most half the budget, and
/// one client address at most an eighth; past that a body is refused with 503 rather than
/// letting a few clients that send slowly (or never finish) starve the work that can run.
#[derive(Debug)]
pub struct Receiving {
    budget: Arc<MemoryBudget>,
    client: Option<std::net::IpAddr>,
    held: u64,
}

impl MemoryBudget {
    /// A share for one upload from `client`.
    pub fn receiving(self: &Arc<Self>, client: Option<std::net::IpAddr>) -> Receiving {
        Receiving {
            budget: self.clone(),
            client,
            held: 0,
        }
    }
}

impl Receiving {
    /// Holds `total` bytes of arriving upload in all, or refuses.
    pub fn ensure(&mut self, total: u64) -> Result<(), BudgetError> {
        let Some(extra) = total.checked_sub(self.held).filter(|e| *e > 0) else {
            return Ok(());
        };
        let limit = self.budget.limit;
        let mut t = self
            .budget
            .receiving
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let all_cap = limit / RECEIVING_SHARE;
        if t.all + extra > all_cap {
            return Err(BudgetError::Busy {
                needed: extra,
                available: all_cap.saturating_sub(t.all),
                limit: all_cap,
            });
        }
        if let Some(ip) = self.client {
            let client_cap = limit / CLIENT_SHARE;
            let mine = t.per_client.entry(ip).or_insert(0);
            if *mine + extra > client_cap {
                let available = client_cap.saturating_sub(*mine);
                if *mine == 0 {
                    t.per_client.remove(&ip);
                }
                return Err(BudgetError::Busy {
                    needed: extra,
                    available,
                    limit: client_cap,
                });
            }
            *mine += extra;
        }
        t.all += extra;
        self.held = total;
        Ok(())
    }
}

impl Drop for Receiving {
    fn drop(&mut self) {
        if self.held == 0 {
            return;
        }
        let mut t = self
            .budget
            .receiving
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        t.all = t.all.saturating_sub(self.held);
        if let Some(ip) = self.client {
            if let Some(mine) = t.per_client.get_mut(&ip) {
                *mine = mine.saturating_sub(self.held);
                if *mine == 0 {
                    t.per_client.remove(&ip);
                }
            }
        }
    }
}
