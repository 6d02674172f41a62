//! Autoregressive rollouts x ← x + model(window), stepped together.
//!
//! Every live rollout of a model advances in the same ONNX Runtime call each step
//! (continuous batching): a rollout joins or leaves between steps. Each rollout hands
//! its frames out through a small channel; one whose client has not taken them sits the
//! step out, so a slow reader neither holds the others back nor grows memory. A rollout
//! may be an ensemble of B systems, advanced as B rows of the same call.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use ndarray::{Array3, Array4, Axis, concatenate, s};
use tokio::sync::{Notify, mpsc};

use super::{LoadedModel, ServeError, metrics};
use crate::data::advance_window;

/// Systems' worth of frames a rollout may compute ahead of its client (at least two
/// frames, at most 16): memory per rollout stays bounded whatever its ensemble size.
const SYSTEMS_AHEAD: usize = 256;

/// How many rollouts are admitted and not yet ended.
#[derive(Debug, Clone, Default)]
pub struct RolloutCounter(Arc<AtomicUsize>);

impl RolloutCounter {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    /// A place for one more rollout, unless `max` are running.
    fn try_enter(&self, model: &str, max: usize) -> Option<RolloutGuard> {
        self.0.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| (now < max).then_some(now + 1)).ok()?;
        metrics::rollout_started();
        Some(RolloutGuard { counter: self.clone(), model: model.to_string(), ended: None })
    }
}

/// How a rollout ended, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Finished,
    Diverged,
    Failed,
    /// Its client took no frame for the stall timeout.
    Stalled,
    /// The server shut down before it finished.
    ShutDown,
}

/// Holds a rollout's place until it ends, however it ends (`ended` still `None` when it
/// is dropped: its client went away).
struct RolloutGuard {
    counter: RolloutCounter,
    model: String,
    ended: Option<Ended>,
}

impl Drop for RolloutGuard {
    fn drop(&mut self) {
        (self.counter).0.fetch_sub(1, Ordering::SeqCst);
        let how = match self.ended {
            None => "cancelled",
            Some(Ended::Finished) => "finished",
            Some(Ended::Diverged) => "diverged",
            Some(Ended::Failed) => "failed",
            Some(Ended::Stalled) => "stalled",
            Some(Ended::ShutDown) => "shut down",
        };
        metrics::rollout_ended(&self.model, how);
    }
}

/// One emitted frame of a rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutStep {
    /// Steps taken to reach this frame (1..=steps).
    pub step: u32,
    /// Systems in the frame (the ensemble's size; 1 for a single system).
    pub batch: usize,
    /// [batch, 12, 3], row-major.
    pub positions: Vec<f32>,
}

/// What a validated rollout request asks for.
pub struct RolloutPlan {
    pub model: Arc<LoadedModel>,
    /// [B, 12, 3]: B systems, rolled out side by side.
    pub start: Array3<f32>,
    /// The frames before `start`, [B, K − 1, 12, 3] oldest first, for history models.
    pub previous: Option<Array4<f32>>,
    pub steps: u32,
    /// Emit every n-th frame (at least 1); the last one is always emitted.
    pub emit_every: u32,
    /// How long the rollout may wait for its client to take a frame before it is ended.
    pub stall_timeout: Duration,
}

type FrameResult = Result<RolloutStep, ServeError>;

/// A rollout's frames as they are computed, or the error that ended it. Dropping it
/// cancels the rollout at the next step.
pub struct RolloutFrames {
    frames: mpsc::Receiver<FrameResult>,
    /// Tells the stepper that this rollout has room again (or is gone).
    wake: Arc<Notify>,
}

impl tokio_stream::Stream for RolloutFrames {
    type Item = FrameResult;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<FrameResult>> {
        let polled = self.frames.poll_recv(cx);
        if polled.is_ready() {
            self.wake.notify_one();
        }
        polled
    }
}

impl Drop for RolloutFrames {
    fn drop(&mut self) {
        self.wake.notify_one();
    }
}

/// The task that steps one model's rollouts; started with the model's first rollout,
/// it ends when the model is unloaded and its last rollout has ended.
pub(crate) struct RolloutStepper {
    joining: mpsc::UnboundedSender<Member>,
    wake: Arc<Notify>,
    /// Set when the server shuts down: every rollout, running or arriving, is ended.
    ending: Arc<AtomicBool>,
}

impl RolloutStepper {
    pub(crate) fn spawn() -> Self {
        let (joining, arrivals) = mpsc::unbounded_channel();
        let (wake, ending) = (Arc::new(Notify::new()), Arc::new(AtomicBool::new(false)));
        tokio::spawn(step_all(arrivals, Arc::clone(&wake), Arc::clone(&ending)));
        Self { joining, wake, ending }
    }

    /// Ends every rollout of the model with UNAVAILABLE (the server is going away).
    pub(crate) fn end_all(&self) {
        self.ending.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

/// Admits `plan` (unless `max_rollouts` are running) and hands it to its model's stepper.
pub fn start(plan: RolloutPlan, counter: &RolloutCounter, max_rollouts: usize) -> Result<RolloutFrames, ServeError> {
    let RolloutPlan { model, start, previous, steps, emit_every, stall_timeout } = plan;
    let place = counter.try_enter(model.name(), max_rollouts).ok_or_else(|| ServeError::Busy {
        model: model.name().to_string(),
        reason: format!("{max_rollouts} rollouts are running, the most this server admits"),
    })?;
    // One more slot than frames ahead: the error that ends a stalled rollout always fits.
    let ahead = (SYSTEMS_AHEAD / start.dim().0).clamp(2, 16);
    let (frames_out, frames) = mpsc::channel(ahead + 1);
    let stepper = model.rollout_stepper();
    let wake = Arc::clone(&stepper.wake);
    let member = Member {
        model: Arc::clone(&model),
        positions: start,
        previous,
        step: 0,
        steps,
        emit_every,
        frames: frames_out,
        place,
        stall_timeout,
        waiting_since: None,
    };
    stepper
        .joining
        .send(member)
        .map_err(|_| ServeError::Internal { model: model.name().to_string(), message: "the model's rollout stepper has stopped".into() })?;
    wake.notify_one();
    Ok(RolloutFrames { frames, wake })
}

/// One live rollout.
struct Member {
    /// Keeps the model (and the version the rollout started on) loaded until it ends.
    model: Arc<LoadedModel>,
    /// [B, 12, 3].
    positions: Array3<f32>,
    previous: Option<Array4<f32>>,
    step: u32,
    steps: u32,
    emit_every: u32,
    frames: mpsc::Sender<FrameResult>,
    place: RolloutGuard,
    stall_timeout: Duration,
    /// Since when its client has had no room for another frame.
    waiting_since: Option<Instant>,
}

impl Member {
    fn systems(&self) -> usize {
        self.positions.dim().0
    }

    /// A place for the next frame, keeping the last slot for an ending error.
    fn room(&self) -> Option<mpsc::OwnedPermit<FrameResult>> {
        if self.frames.capacity() < 2 {
            return None;
        }
        self.frames.clone().try_reserve_owned().ok()
    }

    /// Ends the rollout if its client has taken no frame for its stall timeout; when
    /// it may still come to, the instant to look again.
    fn check_stall(&mut self, now: Instant) -> Option<Instant> {
        let since = *self.waiting_since.get_or_insert(now);
        let deadline = since + self.stall_timeout;
        if now < deadline {
            return Some(deadline);
        }
        self.place.ended = Some(Ended::Stalled);
        let model = self.model.name().to_string();
        let _ = self.frames.try_send(Err(ServeError::Stalled { model, seconds: self.stall_timeout.as_secs_f64() }));
        None
    }
}

/// The stepper's loop: take in new rollouts, drop cancelled ones, advance every one
/// whose client has room for a frame, in one call; wait when none has.
async fn step_all(mut arrivals: mpsc::UnboundedReceiver<Member>, wake: Arc<Notify>, ending: Arc<AtomicBool>) {
    let mut members: Vec<Member> = Vec::new();
    let mut open = true;
    loop {
        while let Ok(member) = arrivals.try_recv() {
            members.push(member);
        }
        if ending.load(Ordering::SeqCst) {
            for member in &mut members {
                member.place.ended = Some(Ended::ShutDown);
                // The slot kept for an ending error takes it.
                let _ = member.frames.try_send(Err(ServeError::ShuttingDown { model: member.model.name().to_string() }));
            }
            members.clear();
        }
        members.retain(|member| !member.frames.is_closed());
        let (mut ready, mut look_again) = (Vec::new(), None::<Instant>);
        let now = Instant::now();
        for (index, member) in members.iter_mut().enumerate() {
            match member.room() {
                Some(permit) => {
                    member.waiting_since = None;
                    ready.push((index, permit));
                }
                None => {
                    if let Some(deadline) = member.check_stall(now) {
                        look_again = Some(look_again.map_or(deadline, |earliest| earliest.min(deadline)));
                    }
                }
            }
        }
        if !ready.is_empty() {
            step(&mut members, ready).await;
        }
        members.retain(|member| member.place.ended.is_none());
        if !open && members.is_empty() {
            return;
        }
        if members.iter().any(|member| member.waiting_since.is_none()) {
            continue;
        }
        // Every rollout waits for its client (or there are none): sleep until one has
        // room, one arrives, or a stall deadline passes.
        let stall = async {
            match look_again {
                Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = wake.notified() => {}
            () = stall => {}
            arrival = arrivals.recv(), if open => match arrival {
                Some(member) => members.push(member),
                None => open = false,
            },
        }
    }
}

/// Advances the `ready` members one step in one model call and sends what is due.
async fn step(members: &mut [Member], ready: Vec<(usize, mpsc::OwnedPermit<FrameResult>)>) {
    let model = Arc::clone(&members[ready[0].0].model);
    let positions: Vec<_> = ready.iter().map(|(i, _)| members[*i].positions.view()).collect();
    let positions = concatenate(Axis(0), &positions).expect("frames of one shape");
    let previous = match members[ready[0].0].previous {
        Some(_) => {
            let windows: Vec<_> = ready.iter().filter_map(|(i, _)| members[*i].previous.as_ref().map(|w| w.view())).collect();
            Some(concatenate(Axis(0), &windows).expect("windows of one shape"))
        }
        None => None,
    };
    metrics::rollout_step(model.name(), positions.dim().0);
    let dx = match model.step_rollouts(positions, previous).await {
        Ok(dx) => dx,
        Err(error) => {
            for (index, permit) in ready {
                members[index].place.ended = Some(Ended::Failed);
                permit.send(Err(error.clone()));
            }
            return;
        }
    };
    let mut row = 0;
    for (index, permit) in ready {
        let member = &mut members[index];
        let systems = member.systems();
        if let Some(window) = &mut member.previous {
            *window = advance_window(window, member.positions.view());
        }
        member.positions += &dx.slice(s![row..row + systems, .., ..]);
        row += systems;
        member.step += 1;
        if member.positions.iter().any(|v| !v.is_finite()) {
            member.place.ended = Some(Ended::Diverged);
            permit.send(Err(ServeError::Diverged { model: model.name().to_string(), step: member.step }));
        } else if member.step.is_multiple_of(member.emit_every) || member.step == member.steps {
            if member.step == member.steps {
                member.place.ended = Some(Ended::Finished);
            }
            let frame = RolloutStep { step: member.step, batch: systems, positions: member.positions.iter().copied().collect() };
            permit.send(Ok(frame));
        }
    }
}
