//! Autoregressive rollouts x ← x + model(x), computed in a task of their own and
//! handed out frame by frame through a small channel.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use ndarray::{Array3, Array4};
use tokio::sync::mpsc;

use super::{LoadedModel, ServeError, metrics};
use crate::data::advance_window;

/// Frames a rollout may compute ahead of its client: a slow client slows the rollout
/// instead of growing memory.
const FRAMES_AHEAD: usize = 16;

/// How many rollouts are computing right now.
#[derive(Debug, Clone, Default)]
pub struct RolloutCounter(Arc<AtomicUsize>);

impl RolloutCounter {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    fn enter(&self) -> RolloutGuard {
        self.0.fetch_add(1, Ordering::SeqCst);
        metrics::rollout_started();
        RolloutGuard(self.clone())
    }
}

/// Counts a rollout until it ends, however it ends.
struct RolloutGuard(RolloutCounter);

impl Drop for RolloutGuard {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Ordering::SeqCst);
        metrics::rollout_ended();
    }
}

/// One emitted frame of a rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutStep {
    /// Steps taken to reach this frame (1..=steps).
    pub step: u32,
    /// [12, 3], row-major.
    pub positions: Vec<f32>,
}

/// What a validated rollout request asks for.
pub struct RolloutPlan {
    pub model: Arc<LoadedModel>,
    /// [1, 12, 3].
    pub start: Array3<f32>,
    /// The frames before `start`, [1, K − 1, 12, 3] oldest first, for history models.
    pub previous: Option<Array4<f32>>,
    pub steps: u32,
    /// Emit every n-th frame (at least 1); the last one is always emitted.
    pub emit_every: u32,
}

/// Starts `plan` in a task of its own; its frames (or the error that ended it) arrive
/// on the returned channel. Dropping the receiver stops the computation at the next step.
pub fn start(plan: RolloutPlan, counter: &RolloutCounter) -> mpsc::Receiver<Result<RolloutStep, ServeError>> {
    let in_progress = counter.enter();
    let (frames_out, frames_in) = mpsc::channel(FRAMES_AHEAD);
    tokio::spawn(async move {
        let _in_progress = in_progress;
        let RolloutPlan { model, start: mut x, mut previous, steps, emit_every } = plan;
        let name = model.name().to_string();
        for step in 1..=steps {
            if frames_out.is_closed() {
                tracing::debug!(model = %name, step, "rollout cancelled by the client");
                return;
            }
            let dx = match model.dx(x.clone(), previous.clone()).await {
                Ok(dx) => dx,
                Err(e) => {
                    let _ = frames_out.send(Err(e)).await;
                    return;
                }
            };
            if let Some(window) = &mut previous {
                *window = advance_window(window, x.view());
            }
            x += &dx;
            if x.iter().any(|v| !v.is_finite()) {
                let _ = frames_out.send(Err(ServeError::Diverged { model: name, step })).await;
                return;
            }
            if step % emit_every == 0 || step == steps {
                let frame = RolloutStep { step, positions: x.iter().copied().collect() };
                if frames_out.send(Ok(frame)).await.is_err() {
                    return;
                }
            }
        }
    });
    frames_in
}
