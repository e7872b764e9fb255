//! LinUCB trained and served in process: core's [`Trainer`] (the sink's
//! state machine) folds events with [`bandit_core::fold::Learning`] and
//! inverts the changed arms, core's [`Model`] (the module's model) applies
//! them and ranks. It is the sink's loop without Kafka and Redis, so the
//! simulator, the evaluator and the benchmarks learn and score exactly as
//! production does, and none of them carries a copy of that loop.

use bandit_core::cholesky::Workspace;
use bandit_core::event::FeedbackEvent;
use bandit_core::fold::Learning;
use bandit_core::trainer::{Handled, Restored, Trainer};
use bandit_core::{Limits, Model, ModelSettings, Payload, RankRequest, RankScratch, Ranked};

use crate::error::{ClientError, Result};

/// The one partition every event is on (the in-process log).
const PARTITION: i32 = 0;

/// See the module documentation.
#[derive(Debug)]
pub struct LocalModel {
    trainer: Trainer,
    model: Model,
    limits: Limits,
    /// The offset the next event gets in the in-process log.
    next_offset: i64,
    scratch: RankScratch,
}

impl LocalModel {
    /// An empty model; no size limits apply in process.
    ///
    /// # Errors
    /// [`ClientError::Core`] for settings the module would refuse
    /// (λ ≤ 0, a decay outside (0, 1], …).
    pub fn new(settings: ModelSettings) -> Result<Self> {
        let limits = Limits { max_dim: usize::MAX, max_arms: usize::MAX, ..Limits::default() };
        settings.validate(&limits)?;
        let mut trainer = Trainer::new(settings.dim, Learning { lambda: settings.lambda, decay: settings.decay });
        trainer.assign(&[PARTITION], &bandit_core::Payload::default());
        Ok(Self { trainer, model: Model::new(settings), limits, next_offset: 0, scratch: RankScratch::default() })
    }

    /// The published model.
    #[must_use]
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Folds one event into its arm; [`Self::publish`] makes it visible.
    ///
    /// # Errors
    /// [`ClientError::Input`] for an event the sink would dead-letter
    /// (another dim, a number that is not finite, an empty product id).
    pub fn fold(&mut self, event: &FeedbackEvent) -> Result<()> {
        loop {
            match self.trainer.handle(PARTITION, self.next_offset, Ok(event)) {
                Handled::Folded => break,
                Handled::NeedArm(id) => {
                    // The sink's restore: the model's copy of the arm, if any.
                    let rows: Vec<usize> = self.model.row_of(id.as_bytes()).into_iter().collect();
                    let export = self.model.export(Some(&rows));
                    if let Restored::Reset { .. } = self.trainer.restored(PARTITION, &id, &export)? {
                        // Only this trainer writes this model, so its fence cannot move.
                        return Err(ClientError::Simulation("the in-process model moved under its trainer".into()));
                    }
                }
                Handled::Rejected(reason) => return Err(ClientError::Input(format!("event {}: {reason}", event.event_id))),
                Handled::Skipped => return Err(ClientError::Simulation("the in-process trainer skipped an event".into())),
                // An example the join emitted again (its source seq was folded): dropped, as the sink does.
                Handled::Duplicate => break,
            }
        }
        self.next_offset += 1;
        Ok(())
    }

    /// Inverts every arm changed since the last publish and applies them to
    /// the model, as a sink flush does. Returns the payload applied (None
    /// when nothing changed).
    ///
    /// # Errors
    /// [`ClientError::Core`] if an inversion fails (finite events and λ > 0
    /// cannot cause that).
    pub fn publish(&mut self) -> Result<Option<Payload>> {
        let Some(payload) = self.trainer.flush()? else { return Ok(None) };
        self.model.apply(&payload, 0, &self.limits)?;
        self.trainer.published(&payload);
        Ok(Some(payload))
    }

    /// The top `k` of `candidates` for a context, with the model's α, scored
    /// as BANDIT.RANK scores them (`Ranked::index` is the candidate's position).
    ///
    /// # Errors
    /// [`ClientError::Core`] for a context of another dim or with a number
    /// that is not finite.
    pub fn rank(&mut self, context: &[f64], candidates: &[String], k: usize) -> Result<&[Ranked]> {
        rank(&self.model, context, candidates, k, &mut self.scratch)
    }

    /// θ and packed A⁻¹ of a product's published arm, or of the prior
    /// (θ = 0, A⁻¹ = (λI)⁻¹) when it has none.
    ///
    /// # Errors
    /// [`ClientError::Core`] if inverting the prior fails (λ > 0 cannot).
    pub fn posterior(&self, id: &str) -> Result<(Vec<f64>, Vec<f64>)> {
        if let Some(arm) = self.model.row_of(id.as_bytes()).and_then(|row| self.model.arm(row)) {
            return Ok((arm.theta.to_vec(), arm.a_inv.to_vec()));
        }
        let settings = self.model.settings();
        let prior = Learning { lambda: settings.lambda, decay: settings.decay }.prior(settings.dim);
        let published = prior.to_payload(id, &mut Workspace::default(), None)?;
        Ok((vec![0.0; settings.dim], published.a_inv))
    }
}

/// The top `k` of `candidates` for a context, with `model`'s α, scored as
/// BANDIT.RANK scores them, in the caller's scratch: [`LocalModel::rank`]
/// for a model shared read-only (the evaluator's policies on their threads).
///
/// # Errors
/// As [`LocalModel::rank`].
pub fn rank<'s>(model: &Model, context: &[f64], candidates: &[String], k: usize, scratch: &'s mut RankScratch) -> Result<&'s [Ranked]> {
    Ok(model.rank_candidates(&request(model, context, k), candidates, scratch)?)
}

/// [`rank`] over every arm of `model` (BANDIT.RANK without candidates):
/// `Ranked::index` is the model row.
///
/// # Errors
/// As [`LocalModel::rank`].
pub fn rank_all<'s>(model: &Model, context: &[f64], k: usize, scratch: &'s mut RankScratch) -> Result<&'s [Ranked]> {
    Ok(model.rank_all(&request(model, context, k), scratch)?)
}

fn request<'c>(model: &Model, context: &'c [f64], k: usize) -> RankRequest<'c> {
    RankRequest { context, alpha: model.settings().alpha, top: Some(k) }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn event(id: &str, x: &[f64], reward: f64) -> FeedbackEvent {
        FeedbackEvent { event_id: "e".into(), product_id: id.into(), reward, context_vector: x.to_vec(), timestamp: 0, ..Default::default() }
    }

    /// By hand, as in the core's fold test: λ = 1, x = [1, 2], r = 1 gives
    /// A⁻¹ = [[5, −2], [−2, 2]] / 6 and θ = A⁻¹b = [1/6, 2/6]; an arm never
    /// seen has θ = 0 and A⁻¹ = I/λ.
    #[test]
    fn folds_publishes_and_ranks_by_hand() {
        let settings = ModelSettings { dim: 2, alpha: 0.0, lambda: 1.0, decay: 1.0 };
        let mut local = LocalModel::new(settings).unwrap();
        local.fold(&event("p", &[1.0, 2.0], 1.0)).unwrap();
        assert!(local.posterior("p").unwrap().0.iter().all(|v| *v == 0.0), "unpublished events are not visible");
        assert_eq!(local.publish().unwrap().unwrap().arms.len(), 1);
        let (theta, a_inv) = local.posterior("p").unwrap();
        for (got, want) in theta.iter().chain(&a_inv).zip([1.0 / 6.0, 2.0 / 6.0, 5.0 / 6.0, -2.0 / 6.0, 2.0 / 6.0]) {
            assert!((got - want).abs() < 1e-15, "{theta:?} {a_inv:?}");
        }
        assert_eq!(local.posterior("never").unwrap(), (vec![0.0, 0.0], vec![1.0, 0.0, 1.0]));
        // α = 0: the score is xᵀθ; x = [0, 1] scores 1/3 for p, 0 for the prior.
        let candidates = ["never".to_owned(), "p".to_owned()];
        let ranked = local.rank(&[0.0, 1.0], &candidates, 2).unwrap();
        assert_eq!(ranked[0].index, 1);
        assert!((ranked[0].score - 1.0 / 3.0).abs() < 1e-6);
        assert!(local.publish().unwrap().is_none(), "nothing changed");
    }

    #[test]
    fn refuses_what_the_sink_refuses() {
        assert!(LocalModel::new(ModelSettings { dim: 2, alpha: 1.0, lambda: 1.0, decay: 0.0 }).is_err());
        let mut local = LocalModel::new(ModelSettings { dim: 2, alpha: 1.0, lambda: 1.0, decay: 0.5 }).unwrap();
        let error = local.fold(&event("p", &[1.0], 1.0)).unwrap_err().to_string();
        assert!(error.contains("context_vector has 1 values, model dim is 2"), "{error}");
        assert!(local.fold(&event("p", &[1.0, f64::NAN], 1.0)).is_err());
    }
}
