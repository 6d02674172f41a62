//! The serving core: what `equiserve.v1.Dynamics` does, without the transport.
//! Requests come in as plain values, answers and failures go out as domain types
//! ([`ServeError`]); each protocol is a thin mapping onto this.

use std::{sync::Arc, time::Duration};

use ndarray::{Array2, Array3, Axis};

use super::{
    ServeError,
    displacement::Displacement,
    model::ModelVersion,
    repository::ModelRepository,
    rollout::{self, RolloutCounter, RolloutFrames, RolloutPlan},
    validate,
};

/// Longest model name a request may carry (it is echoed in errors).
pub const MAX_MODEL_NAME: usize = 256;

/// Bounds on what one request may ask for.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Frames per Predict, and systems per ensemble rollout.
    pub max_batch: usize,
    /// System-steps per rollout (an ensemble of B systems over S steps computes B × S).
    pub max_rollout_steps: u64,
    /// Rollouts running at once; admitted ones are never ended by other traffic.
    pub max_rollouts: usize,
    /// A rollout whose client takes no frame for this long is ended (its place freed).
    pub rollout_stall_timeout: Duration,
}

/// A model's answer to a batch of frames.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub batch: usize,
    /// The model version that answered.
    pub version: u64,
    /// [batch, 12, 3]: the mean displacement.
    pub dx: Array3<f32>,
    /// [batch, 12]: a stochastic model's standard deviation of each coordinate of each
    /// particle's displacement; `None` for a deterministic model.
    pub dx_std: Option<Array2<f32>>,
    /// positions + dx.
    pub next_positions: Array3<f32>,
}

/// What a rollout request asks for, as sent.
#[derive(Debug, Clone, Default)]
pub struct RolloutStart {
    /// float32 [B, 12, 3]: one system, or an ensemble of B rolled out together.
    pub positions: Vec<f32>,
    /// float32 [B, K − 1, 12, 3], oldest first (empty for one-frame models).
    pub previous: Vec<f32>,
    pub steps: u32,
    /// Emit every n-th frame (0 or 1: every frame); the last one is always emitted.
    pub emit_every: u32,
    /// Sample x + dx + dx_std · ξ (a stochastic model only) instead of stepping the mean.
    pub sample: bool,
    /// The noise's seed (with `sample` only); `None` lets the server pick one, which the
    /// frames report.
    pub seed: Option<u64>,
}

/// Ends every model's rollouts with UNAVAILABLE, for a server whose shutdown grace ran out.
#[derive(Clone)]
pub struct RolloutEnder(Arc<ModelRepository>);

impl RolloutEnder {
    pub fn end_all(&self) {
        self.0.end_rollouts();
    }
}

pub struct DynamicsCore {
    registry: Arc<ModelRepository>,
    limits: Limits,
    rollouts: RolloutCounter,
}

impl DynamicsCore {
    pub fn new(registry: Arc<ModelRepository>, limits: Limits) -> Self {
        Self { registry, limits, rollouts: RolloutCounter::default() }
    }

    pub fn rollout_ender(&self) -> RolloutEnder {
        RolloutEnder(Arc::clone(&self.registry))
    }

    pub fn rollouts_in_progress(&self) -> RolloutCounter {
        self.rollouts.clone()
    }

    pub fn registry(&self) -> &Arc<ModelRepository> {
        &self.registry
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The version every model serves by default.
    pub fn models(&self) -> Vec<Arc<ModelVersion>> {
        self.registry.ready()
    }

    /// Whether `name` is a served model.
    pub fn serves(&self, name: &str) -> bool {
        self.registry.serves(name)
    }

    /// `version` of `name` (empty: the newest ready one), as requests name them.
    pub fn model(&self, name: &str, version: &str) -> Result<Arc<ModelVersion>, ServeError> {
        if name.len() > MAX_MODEL_NAME {
            return Err(ServeError::InvalidArgument(format!("model name of {} bytes; names are at most {MAX_MODEL_NAME}", name.len())));
        }
        self.registry.get(name, validate::version(version)?)
    }

    /// dx and x + dx for `positions`, packed float32 [batch, 12, 3], and for a history
    /// model of K frames `previous`, packed [batch, K − 1, 12, 3], on `version` of `model`.
    pub async fn predict(&self, model: &str, version: &str, positions: Vec<f32>, previous: Vec<f32>) -> Result<Prediction, ServeError> {
        self.predict_on(self.model(model, version)?, positions, previous).await
    }

    /// [`Self::predict`] on a model already looked up (a protocol that needed its window first).
    pub async fn predict_on(&self, model: Arc<ModelVersion>, positions: Vec<f32>, previous: Vec<f32>) -> Result<Prediction, ServeError> {
        let positions = validate::frames(positions, self.limits.max_batch)?;
        let previous = validate::previous(previous, positions.dim().0, model.history_frames())?;
        let Displacement { dx, dx_std } = model.displacement(positions.clone(), previous).await?;
        let next_positions = &positions + &dx;
        let finite = |frame: usize| {
            let spread = dx_std.as_ref().map(|std| std.index_axis(Axis(0), frame));
            dx.index_axis(Axis(0), frame).iter().chain(next_positions.index_axis(Axis(0), frame)).chain(spread.iter().flatten()).all(|v| v.is_finite())
        };
        if let Some(frame) = (0..dx.dim().0).find(|&frame| !finite(frame)) {
            return Err(ServeError::NotFinite { model: model.name().to_string(), frame });
        }
        Ok(Prediction { batch: positions.dim().0, version: model.version, dx, dx_std, next_positions })
    }

    /// Starts a rollout on `version` of `model` of `steps` steps from B frames (and the
    /// K − 1 frames before each, oldest first, for a history model); frames arrive on the
    /// returned stream.
    pub fn rollout(&self, model: &str, version: &str, start: RolloutStart) -> Result<RolloutFrames, ServeError> {
        self.rollout_on(self.model(model, version)?, start)
    }

    /// [`Self::rollout`] on a model already looked up.
    pub fn rollout_on(&self, model: Arc<ModelVersion>, start: RolloutStart) -> Result<RolloutFrames, ServeError> {
        let RolloutStart { positions, previous, steps, emit_every, sample, seed } = start;
        let seed = match (sample, seed) {
            (false, Some(_)) => return Err(ServeError::InvalidArgument("a seed without sample: set sample to draw a sampled rollout".into())),
            (true, _) if !model.is_stochastic() => {
                return Err(ServeError::InvalidArgument(format!(
                    "model '{}' version {} is deterministic (it gives no dx_std): its rollouts cannot be sampled",
                    model.name(),
                    model.version
                )));
            }
            (true, seed) => Some(seed.unwrap_or_else(rand::random)),
            (false, None) => None,
        };
        let limits = (self.limits.max_batch, self.limits.max_rollout_steps);
        let (start, previous) = validate::rollout_start(positions, previous, model.history_frames(), steps, limits)?;
        let plan = RolloutPlan {
            start,
            previous,
            steps,
            emit_every: emit_every.max(1),
            stall_timeout: self.limits.rollout_stall_timeout,
            seed,
            kick_shape: model.summary.kick_shape(),
        };
        rollout::start(plan, &model.rollout_stepper(), &self.rollouts, self.limits.max_rollouts)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use tokio::sync::watch;

    use super::*;
    use crate::{
        onnx::ExecutionDevice,
        serve::{ModelControl, PoolConfig, fake_backend::Fake},
    };

    fn core() -> DynamicsCore {
        let repository = ModelRepository::empty(Path::new("."), ExecutionDevice::Cpu, PoolConfig::default(), ModelControl::None);
        let limits = Limits { max_batch: 64, max_rollout_steps: 10_000, max_rollouts: 4, rollout_stall_timeout: Duration::from_secs(30) };
        DynamicsCore::new(Arc::new(repository), limits)
    }

    fn request(sample: bool, seed: Option<u64>) -> RolloutStart {
        RolloutStart { positions: vec![0.5; 36], steps: 2, sample, seed, ..Default::default() }
    }

    #[tokio::test]
    async fn sampling_asks_for_a_stochastic_model_and_a_seed_for_sampling() {
        let core = core();
        let (_shutdown, watching) = watch::channel(false);
        let deterministic = Arc::new(Fake::new(None).version(watching.clone()));
        let refused = core.rollout_on(Arc::clone(&deterministic), request(true, None)).err().expect("refused");
        assert!(matches!(&refused, ServeError::InvalidArgument(m) if m.contains("'fake'") && m.contains("deterministic")), "{refused}");
        let refused = core.rollout_on(deterministic, request(false, Some(3))).err().expect("refused");
        assert!(matches!(&refused, ServeError::InvalidArgument(m) if m.contains("seed without sample")), "{refused}");

        let stochastic = Arc::new(Fake::stochastic(0.0, 0.01).version(watching));
        let picked = core.rollout_on(Arc::clone(&stochastic), request(true, None)).expect("admitted");
        assert!(picked.seed().is_some(), "the server picks a seed and reports it");
        assert_eq!(core.rollout_on(Arc::clone(&stochastic), request(true, Some(11))).expect("admitted").seed(), Some(11));
        assert_eq!(core.rollout_on(stochastic, request(false, None)).expect("admitted").seed(), None, "the mean draws nothing");
    }

    #[tokio::test]
    async fn a_prediction_carries_a_stochastic_models_spread() {
        let core = core();
        let (_shutdown, watching) = watch::channel(false);
        let prediction = core.predict_on(Arc::new(Fake::stochastic(1.0, 0.25).version(watching.clone())), vec![0.5; 72], Vec::new()).await.expect("answered");
        assert_eq!(prediction.dx_std.expect("a spread").shape(), [2, 12]);
        let deterministic = core.predict_on(Arc::new(Fake::new(None).version(watching)), vec![0.5; 36], Vec::new()).await.expect("answered");
        assert_eq!(deterministic.dx_std, None);
        assert!(deterministic.next_positions.iter().all(|&v| v == 1.5), "x + 2x");
    }
}
