//! What the policies fit on, computed once per evaluation and shared by
//! them (read-only, across threads): the training rows, the candidates,
//! each row's candidate index, and the ridge fit of the linear policies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bandit_core::event::FeedbackEvent;
use bandit_core::ModelSettings;

use crate::error::Result;
use crate::history::LogRow;
use crate::lab::local::LocalModel;

/// The candidate products, by index.
#[derive(Debug, Clone)]
pub struct Arms {
    pub ids: Vec<String>,
    index: HashMap<String, usize>,
}

impl Arms {
    #[must_use]
    pub fn new(ids: Vec<String>) -> Self {
        let index = ids.iter().enumerate().map(|(i, id)| (id.clone(), i)).collect();
        Self { ids, index }
    }

    #[must_use]
    pub fn position(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Each row's candidate index (None: not a candidate), looked up once
    /// for every policy.
    #[must_use]
    pub fn positions(&self, rows: &[LogRow]) -> Vec<Option<usize>> {
        rows.iter().map(|row| self.position(&row.product_id)).collect()
    }
}

/// The training split as the policies see it.
#[derive(Debug)]
pub struct Training<'a> {
    pub rows: &'a [LogRow],
    pub arms: &'a Arms,
    /// Per row of `rows`, its product's candidate index.
    pub arm_of: Vec<Option<usize>>,
    settings: ModelSettings,
    /// The ridge fit, made by the first linear policy that asks for it
    /// while the others wait (the lock is held while fitting). A failed
    /// fit is not kept: each asker fits again and gets the same error.
    ridge: Mutex<Option<Arc<LocalModel>>>,
}

impl<'a> Training<'a> {
    /// `settings`: those of the linear policies' ridge fit.
    #[must_use]
    pub fn new(rows: &'a [LogRow], arms: &'a Arms, settings: ModelSettings) -> Self {
        Self { rows, arms, arm_of: arms.positions(rows), settings, ridge: Mutex::new(None) }
    }

    /// The training rows of candidate products folded, in log order, into
    /// an in-process model and published: the ridge fit every linear policy
    /// starts from. The same for all of them, so it is made once.
    ///
    /// # Errors
    /// A fold or an inversion that fails (finite rows and λ > 0 cannot).
    pub fn ridge(&self) -> Result<Arc<LocalModel>> {
        let mut slot = self.ridge.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(local) = slot.as_ref() {
            return Ok(Arc::clone(local));
        }
        let local = Arc::new(self.fit_ridge()?);
        *slot = Some(Arc::clone(&local));
        Ok(local)
    }

    fn fit_ridge(&self) -> Result<LocalModel> {
        let dim = self.settings.dim;
        let mut local = LocalModel::new(self.settings)?;
        // One event, refilled for each row: no allocation per row.
        let mut event = FeedbackEvent {
            event_id: String::new(),
            product_id: String::new(),
            reward: 0.0,
            context_vector: Vec::with_capacity(dim),
            timestamp: 0,
            ..Default::default()
        };
        for (row, arm) in self.rows.iter().zip(&self.arm_of) {
            if arm.is_none() || row.context.len() != dim {
                continue;
            }
            event.event_id.clear();
            event.event_id.push_str(row.event_id.as_deref().unwrap_or_default());
            event.product_id.clear();
            event.product_id.push_str(&row.product_id);
            event.reward = row.response;
            event.context_vector.clear();
            event.context_vector.extend_from_slice(&row.context);
            local.fold(&event)?;
        }
        local.publish()?;
        Ok(local)
    }

    /// Per candidate: θ = A⁻¹b and packed A⁻¹ of the ridge fit (the
    /// prior's for a product without training rows).
    ///
    /// # Errors
    /// As [`Self::ridge`].
    pub fn posteriors(&self) -> Result<Vec<(Vec<f64>, Vec<f64>)>> {
        let local = self.ridge()?;
        self.arms.ids.iter().map(|id| local.posterior(id)).collect()
    }
}
