//! What one photo's run is asked to do ([`SegmentRequest`], [`Wants`]), and the place in
//! the model's queue it runs under ([`Ticket`]).

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::budget::Reservation;
use crate::engine::{Admission, Engine, EngineError, FilterOptions, Slot};
use crate::imageio::DecodeMode;
use crate::options::SegmentOptions;

/// What the pipeline hands `finish` besides the boxes: masks, the exact upright photo
/// (for the routes that draw on it), both or neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wants {
    /// Boxes, classes and scores.
    Boxes,
    /// Boxes and their masks.
    Masks,
    /// Boxes and the photo.
    BoxesOnPhoto,
    /// Boxes, masks and the photo.
    MasksOnPhoto,
}

impl Wants {
    /// Masks or not.
    pub fn boxes_or_masks(masks: bool) -> Wants {
        if masks {
            Wants::Masks
        } else {
            Wants::Boxes
        }
    }

    /// The same, with the photo.
    pub fn on_photo(self) -> Wants {
        match self {
            Wants::Boxes | Wants::BoxesOnPhoto => Wants::BoxesOnPhoto,
            Wants::Masks | Wants::MasksOnPhoto => Wants::MasksOnPhoto,
        }
    }

    /// Whether masks are computed.
    pub fn masks(self) -> bool {
        matches!(self, Wants::Masks | Wants::MasksOnPhoto)
    }

    /// Whether the decoded photo is kept for `finish` (then it is decoded whole and
    /// exactly, never streamed or scaled).
    pub fn photo(self) -> bool {
        matches!(self, Wants::BoxesOnPhoto | Wants::MasksOnPhoto)
    }
}

/// What to do with one photo: built once, from the upload and what the route wants, then
/// refined by the request's options.
#[derive(Debug)]
pub struct SegmentRequest {
    pub(super) bytes: Bytes,
    pub(super) reservation: Reservation,
    pub(super) wants: Wants,
    pub(super) filter: FilterOptions,
    pub(super) decode: Option<DecodeMode>,
    pub(super) ticket: Option<Ticket>,
    pub(super) admission: Option<Admission>,
}

impl SegmentRequest {
    /// A request for the photo in `bytes`, whose reservation already holds them; default
    /// filters, the server's decode mode, and a queue place taken when it runs.
    pub fn new(bytes: Bytes, reservation: Reservation, wants: Wants) -> Self {
        SegmentRequest {
            bytes,
            reservation,
            wants,
            filter: FilterOptions::default(),
            decode: None,
            ticket: None,
            admission: None,
        }
    }

    /// The request's filters and decode mode.
    pub fn options(mut self, options: &SegmentOptions) -> Self {
        self.filter = options.filter.clone();
        self.decode = options.decode;
        self
    }

    /// A place in the queue already taken (from the headers, before the body was read),
    /// for the ticket to start from.
    pub fn admitted(mut self, admission: Option<Admission>) -> Self {
        self.admission = admission;
        self
    }

    /// A place already taken (when the caller had work to do under it first).
    pub fn holding(mut self, ticket: Option<Ticket>) -> Self {
        self.ticket = ticket;
        self
    }
}

/// A place in the engine's queue and compute stage: taken before any work on a request,
/// held (moved along with the work) until its answer is built.
#[derive(Debug)]
pub struct Ticket {
    _admission: Admission,
    _slot: Slot,
    /// How long taking it waited.
    pub(super) waited: Duration,
}

impl Ticket {
    /// Takes a place, or sheds load: `Overloaded` at once when the queue is full,
    /// `QueueTimeout` after waiting the queue timeout for a slot.
    /// `admission`, when given, is the queue place already taken.
    pub async fn take(
        engine: &Engine,
        admission: Option<Admission>,
    ) -> Result<Ticket, EngineError> {
        let started = Instant::now();
        let admission = match admission {
            Some(a) => a,
            None => engine.try_admit()?,
        };
        let slot = engine.slot(&admission).await?;
        Ok(Ticket {
            _admission: admission,
            _slot: slot,
            waited: started.elapsed(),
        })
    }
}
