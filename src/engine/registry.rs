//! The loaded models by name, the default first.

use super::{Engine, EngineError};

/// The loaded models, the default first.
#[derive(Clone)]
pub struct Registry {
    engines: Vec<Engine>,
}

impl Registry {
    /// Wraps loaded engines; the first is the default.
    pub fn new(engines: Vec<Engine>) -> Self {
        assert!(!engines.is_empty(), "a registry needs at least one model");
        Registry { engines }
    }

    /// The named model, or the default when `name` is `None`.
    pub fn get(&self, name: Option<&str>) -> Result<&Engine, EngineError> {
        match name {
            None => Ok(&self.engines[0]),
            Some(n) => self
                .engines
                .iter()
                .find(|e| e.info().name == n)
                .ok_or_else(|| EngineError::UnknownModel(n.to_string())),
        }
    }

    /// All models, default first.
    pub fn all(&self) -> &[Engine] {
        &self.engines
    }
}
