//! Autoregressive rollouts x ← x + model(window), stepped together.
//!
//! Every live rollout of a model advances in the same model call each step (continuous
//! batching): a rollout joins or leaves between steps. Each rollout hands its frames out
//! through a small channel; one whose client has not taken them sits the step out, so a
//! slow reader neither holds the others back nor grows memory. A rollout may be an
//! ensemble of B systems, advanced as B rows of the same call. A sampled rollout of a
//! stochastic model adds dx_std · ξ to each step, ξ keyed by (seed, member, step)
//! (`data::sampling`), so its trajectory depends on nothing else in the call.
//!
//! The stepper holds the version's worker pool, not the version: the repository may
//! swap the version out while its rollouts run on to their end.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use ndarray::{Array3, Array4, Axis, concatenate, s};
use tokio::sync::{Notify, mpsc, watch};

use super::{
    ServeError,
    displacement::{Displacement, displacement_of},
    engine::ModelWorkers,
    metrics::{self, ModelLabels},
    statistics::Statistics,
};
use crate::{
    data::{
        advance_window,
        sampling::{KickShape, KickStep, Kicks, add_sample, projected_noise},
    },
    onnx::NamedTensors,
};

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
    fn try_enter(&self, labels: &ModelLabels, max: usize) -> Option<RolloutGuard> {
        self.0.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| (now < max).then_some(now + 1)).ok()?;
        metrics::rollout_started();
        Some(RolloutGuard { counter: self.clone(), labels: labels.clone(), ended: None })
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
    labels: ModelLabels,
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
        metrics::rollout_ended(&self.labels, how);
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
    /// [B, 12, 3]: B systems, rolled out side by side.
    pub start: Array3<f32>,
    /// The frames before `start`, [B, K − 1, 12, 3] oldest first, for history models.
    pub previous: Option<Array4<f32>>,
    pub steps: u32,
    /// Emit every n-th frame (at least 1); the last one is always emitted.
    pub emit_every: u32,
    /// How long the rollout may wait for its client to take a frame before it is ended.
    pub stall_timeout: Duration,
    /// A sampled rollout's noise seed (system b of the ensemble draws as member b);
    /// `None` steps the mean, x + dx.
    pub seed: Option<u64>,
    /// How a sampled rollout's kicks are correlated, as the model's card says (none: white).
    pub kick_shape: Option<KickShape>,
}

type FrameResult = Result<RolloutStep, ServeError>;

/// A rollout's frames as they are computed, or the error that ended it. Dropping it
/// cancels the rollout at the next step.
pub struct RolloutFrames {
    frames: mpsc::Receiver<FrameResult>,
    /// Tells the stepper that this rollout has room again (or is gone).
    wake: Arc<Notify>,
    seed: Option<u64>,
}

impl RolloutFrames {
    /// The seed of a sampled rollout's noise.
    pub fn seed(&self) -> Option<u64> {
        self.seed
    }
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

/// The handle of the task that steps one version's rollouts; the task ends when every
/// handle is gone (the version was dropped) and its last rollout has ended.
#[derive(Clone)]
pub(crate) struct RolloutStepper {
    model: Arc<str>,
    /// The version's ModelStatistics, which count its rollouts as requests.
    statistics: Arc<Statistics>,
    labels: ModelLabels,
    joining: mpsc::UnboundedSender<Member>,
    wake: Arc<Notify>,
}

impl RolloutStepper {
    /// Starts stepping on `workers`; every rollout, running or arriving, ends with
    /// UNAVAILABLE once `shutdown` turns true.
    pub(crate) fn spawn(model: String, workers: Arc<ModelWorkers>, shutdown: watch::Receiver<bool>) -> Self {
        let (joining, arrivals) = mpsc::unbounded_channel();
        let wake = Arc::new(Notify::new());
        let model: Arc<str> = model.into();
        let (statistics, labels) = (workers.statistics_handle(), workers.labels().clone());
        tokio::spawn(step_all(Arc::clone(&model), workers, arrivals, Arc::clone(&wake), shutdown));
        Self { model, statistics, labels, joining, wake }
    }

    /// Whether its task still takes rollouts (a stopped one is replaced by its version).
    pub(crate) fn is_running(&self) -> bool {
        !self.joining.is_closed()
    }
}

/// Admits `plan` (unless `max_rollouts` are running) and hands it to `stepper`.
pub fn start(plan: RolloutPlan, stepper: &RolloutStepper, counter: &RolloutCounter, max_rollouts: usize) -> Result<RolloutFrames, ServeError> {
    let RolloutPlan { start, previous, steps, emit_every, stall_timeout, seed, kick_shape } = plan;
    let model = stepper.model.to_string();
    let place = counter
        .try_enter(&stepper.labels, max_rollouts)
        .ok_or_else(|| ServeError::Busy { model: model.clone(), reason: format!("{max_rollouts} rollouts are running, the most this server admits") })?;
    // One more slot than frames ahead: the error that ends a stalled rollout always fits.
    let ahead = (SYSTEMS_AHEAD / start.dim().0).clamp(2, 16);
    let (frames_out, frames) = mpsc::channel(ahead + 1);
    let member = Member {
        positions: start,
        previous,
        step: 0,
        steps,
        emit_every,
        sampling: seed.map(|seed| Sampling { seed, kicks: Kicks::new(kick_shape.as_ref()) }),
        frames: frames_out,
        place,
        stall_timeout,
        waiting_since: None,
        started: Instant::now(),
        statistics: Arc::clone(&stepper.statistics),
    };
    stepper.joining.send(member).map_err(|_| ServeError::Internal { model, message: "the model's rollout stepper has stopped".into() })?;
    stepper.wake.notify_one();
    Ok(RolloutFrames { frames, wake: Arc::clone(&stepper.wake), seed })
}

/// One live rollout.
struct Member {
    /// [B, 12, 3].
    positions: Array3<f32>,
    previous: Option<Array4<f32>>,
    step: u32,
    steps: u32,
    emit_every: u32,
    /// A sampled rollout's noise (none: the mean).
    sampling: Option<Sampling>,
    frames: mpsc::Sender<FrameResult>,
    place: RolloutGuard,
    stall_timeout: Duration,
    /// Since when its client has had no room for another frame.
    waiting_since: Option<Instant>,
    started: Instant,
    statistics: Arc<Statistics>,
}

/// A sampled rollout's seed and the state of its kicks.
struct Sampling {
    seed: u64,
    kicks: Kicks,
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
    fn check_stall(&mut self, model: &str, now: Instant) -> Option<Instant> {
        let since = *self.waiting_since.get_or_insert(now);
        let deadline = since + self.stall_timeout;
        if now < deadline {
            return Some(deadline);
        }
        self.place.ended = Some(Ended::Stalled);
        let _ = self.frames.try_send(Err(ServeError::Stalled { model: model.to_string(), seconds: self.stall_timeout.as_secs_f64() }));
        None
    }

    /// Ends the rollout with `error` in the slot kept for it.
    fn fail(&mut self, how: Ended, error: ServeError) {
        self.place.ended = Some(how);
        let _ = self.frames.try_send(Err(error));
    }
}

impl Drop for Member {
    /// Counts the rollout, however it ended. A stepper that panicked drops its rollouts:
    /// their clients hear why instead of seeing their streams end as if finished.
    fn drop(&mut self) {
        let took = self.started.elapsed();
        match self.place.ended {
            Some(Ended::Finished) => self.statistics.rollout_finished(self.systems() as u64 * u64::from(self.step), took),
            _ => self.statistics.failed(took),
        }
        metrics::rollout_ran(&self.place.labels, took.as_secs_f64(), self.step);
        if std::thread::panicking() && self.place.ended.is_none() {
            let _ = self.frames.try_send(Err(ServeError::Internal { model: self.place.labels.model.clone(), message: "the rollout stepper failed".into() }));
        }
    }
}

/// The stepper's loop: take in new rollouts, drop cancelled ones, advance every one
/// whose client has room for a frame, in one call; wait when none has.
async fn step_all(
    model: Arc<str>,
    workers: Arc<ModelWorkers>,
    mut arrivals: mpsc::UnboundedReceiver<Member>,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut members: Vec<Member> = Vec::new();
    let (mut open, mut watching) = (true, true);
    loop {
        while let Ok(member) = arrivals.try_recv() {
            members.push(member);
        }
        if *shutdown.borrow() {
            for member in &mut members {
                member.fail(Ended::ShutDown, ServeError::ShuttingDown { model: model.to_string() });
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
                    if let Some(deadline) = member.check_stall(&model, now) {
                        look_again = Some(look_again.map_or(deadline, |earliest| earliest.min(deadline)));
                    }
                }
            }
        }
        if !ready.is_empty() {
            step(&model, &workers, &mut members, ready).await;
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
            changed = shutdown.changed(), if watching => watching = changed.is_ok(),
        }
    }
}

/// Advances the `ready` members one step in one model call and sends what is due. When
/// the call fails for several rollouts, each is tried alone, so that one whose input
/// breaks the model ends without taking the others with it.
async fn step(model: &str, workers: &ModelWorkers, members: &mut [Member], ready: Vec<(usize, mpsc::OwnedPermit<FrameResult>)>) {
    let indices: Vec<usize> = ready.iter().map(|(index, _)| *index).collect();
    metrics::rollout_step(workers.labels(), indices.iter().map(|&i| members[i].systems()).sum());
    match displacement(model, workers, members, &indices).await {
        Ok(displacement) => advance(model, members, ready, displacement),
        Err(_) if ready.len() > 1 => {
            for (index, permit) in ready {
                match displacement(model, workers, members, &[index]).await {
                    Ok(displacement) => advance(model, members, vec![(index, permit)], displacement),
                    Err(error) => fail(&mut members[index], permit, error),
                }
            }
        }
        Err(error) => {
            for (index, permit) in ready {
                fail(&mut members[index], permit, error.clone());
            }
        }
    }
}

fn fail(member: &mut Member, permit: mpsc::OwnedPermit<FrameResult>, error: ServeError) {
    member.place.ended = Some(Ended::Failed);
    permit.send(Err(error));
}

/// The model's displacement for the windows of `indices`, stacked in that order, and
/// each sampled member's kicks for this step, drawn and shaped while the model runs.
async fn displacement(model: &str, workers: &ModelWorkers, members: &[Member], indices: &[usize]) -> Result<(Displacement, Vec<Option<KickStep>>), ServeError> {
    let internal = |message: String| ServeError::Internal { model: model.to_string(), message };
    let positions: Vec<_> = indices.iter().map(|&i| members[i].positions.view()).collect();
    let positions = concatenate(Axis(0), &positions).map_err(|e| internal(format!("rollout frames of different shapes: {e}")))?;
    let windows: Vec<_> = indices.iter().filter_map(|&i| members[i].previous.as_ref().map(|w| w.view())).collect();
    let previous = match windows.len() {
        0 => None,
        n if n == indices.len() => Some(concatenate(Axis(0), &windows).map_err(|e| internal(format!("rollout windows of different shapes: {e}")))?),
        _ => return Err(internal("rollouts with and without windows in one call".into())),
    };
    let pending = workers.send_rollout_step(NamedTensors::dynamics(positions, previous)).map_err(|e| ServeError::from_engine(model, e))?;
    // The kicks depend on the frame and the rollout's kick state, not on dx: drawn and
    // shaped now, they overlap the call instead of following it (for 1,024 members about
    // a ninth of a session's call, `cargo bench --bench sampling`).
    let kicks = indices
        .iter()
        .map(|&i| {
            let member = &members[i];
            member.sampling.as_ref().map(|sampling| sampling.kicks.peek(projected_noise(member.positions.view(), sampling.seed, 0, u64::from(member.step))))
        })
        .collect();
    let outputs = pending.outputs().await.map_err(|e| ServeError::from_engine(model, e))?;
    Ok((displacement_of(model, outputs)?, kicks))
}

/// Moves each ready member by its rows of `displacement` (sampled ones with their
/// kicks, in the order of `ready`, taking their state) and sends the frames that are due.
fn advance(
    model: &str,
    members: &mut [Member],
    ready: Vec<(usize, mpsc::OwnedPermit<FrameResult>)>,
    (displacement, kicks): (Displacement, Vec<Option<KickStep>>),
) {
    let mut row = 0;
    for ((index, permit), kicks) in ready.into_iter().zip(kicks) {
        let member = &mut members[index];
        let systems = member.systems();
        let rows = s![row..row + systems, .., ..];
        row += systems;
        let mut next = &member.positions + &displacement.dx.slice(rows);
        if let (Some(kicks), Some(sampling)) = (kicks, &mut member.sampling) {
            let Some(dx_std) = &displacement.dx_std else {
                let message = "a sampled rollout's model gave no dx_std".to_string();
                fail(member, permit, ServeError::Internal { model: model.to_string(), message });
                continue;
            };
            let kicks = sampling.kicks.take(kicks);
            add_sample(next.view_mut(), dx_std.slice(s![row - systems..row, ..]), kicks.view());
        }
        if let Some(window) = &mut member.previous {
            advance_window(window, member.positions.view());
        }
        member.positions = next;
        member.step += 1;
        if member.positions.iter().any(|v| !v.is_finite()) {
            member.place.ended = Some(Ended::Diverged);
            permit.send(Err(ServeError::Diverged { model: model.to_string(), step: member.step }));
        } else if member.step.is_multiple_of(member.emit_every) || member.step == member.steps {
            if member.step == member.steps {
                member.place.ended = Some(Ended::Finished);
            }
            let frame = RolloutStep { step: member.step, batch: systems, positions: member.positions.iter().copied().collect() };
            permit.send(Ok(frame));
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;

    use super::*;
    use crate::{
        data::{DIMS, PARTICLES},
        serve::{fake_backend::Fake, model::ModelVersion},
    };

    const STALL: Duration = Duration::from_secs(30);

    fn plan(start: Array3<f32>, steps: u32, seed: Option<u64>) -> RolloutPlan {
        RolloutPlan { start, previous: None, steps, emit_every: 1, stall_timeout: STALL, seed, kick_shape: None }
    }

    /// `systems` copies of one frame whose values tell its coordinates apart.
    fn start(systems: usize, value: f32) -> Array3<f32> {
        Array3::from_shape_fn((systems, PARTICLES, DIMS), |(_, p, d)| value + (p * DIMS + d) as f32 * 0.01)
    }

    async fn every_frame(frames: RolloutFrames) -> Vec<Result<RolloutStep, ServeError>> {
        frames.collect().await
    }

    fn version(fake: &Fake) -> (ModelVersion, watch::Sender<bool>) {
        let (shutdown, watching) = watch::channel(false);
        (fake.version(watching), shutdown)
    }

    /// The frames of a finished rollout, [steps, B, 12, 3] flattened per step.
    fn positions(frames: &[Result<RolloutStep, ServeError>]) -> Vec<Vec<f32>> {
        frames.iter().map(|frame| frame.as_ref().expect("a frame").positions.clone()).collect()
    }

    #[tokio::test]
    async fn a_rollout_that_breaks_the_model_ends_internal_while_the_others_go_on() {
        let mut fake = Fake::new(None);
        fake.dx_scale = -0.1;
        fake.panic_at = Some(1e6);
        let (model, _shutdown) = version(&fake);
        let counter = RolloutCounter::default();
        let stepper = model.rollout_stepper();
        // Both join before the stepper first runs: its first call holds both.
        let healthy = start(1, 1.0);
        let good = super::start(plan(healthy.clone(), 5, None), &stepper, &counter, 8).expect("admitted");
        let bad = super::start(plan(start(1, 1e7), 5, None), &stepper, &counter, 8).expect("admitted");
        let (good, bad) = tokio::join!(every_frame(good), every_frame(bad));
        assert_eq!(good.len(), 5, "the healthy rollout ran every step: {good:?}");
        let expected: Vec<f32> = healthy.iter().map(|v| v * 0.9f32.powi(5)).collect();
        let last = &positions(&good)[4];
        assert!(last.iter().zip(&expected).all(|(a, b)| (a - b).abs() < 1e-5), "x ← 0.9 x five times");
        match bad.as_slice() {
            [Err(ServeError::Internal { message, .. })] => assert!(message.contains("broke on its input"), "{message}"),
            other => panic!("the broken rollout should end INTERNAL at once: {other:?}"),
        }
        // The stepper survived: a later rollout runs to its end.
        let later = super::start(plan(start(2, 0.5), 3, None), &stepper, &counter, 8).expect("admitted");
        assert_eq!(every_frame(later).await.iter().filter(|f| f.is_ok()).count(), 3);
        assert_eq!(counter.get(), 0, "every place given back");
    }

    #[tokio::test]
    async fn a_failed_call_ends_its_rollout_internal() {
        let fake = Fake::new(None);
        let (model, _shutdown) = version(&fake);
        fake.misbehave(&[crate::serve::fake_backend::Behaviour::Fail]);
        let frames = super::start(plan(start(1, 0.0), 4, None), &model.rollout_stepper(), &RolloutCounter::default(), 8).expect("admitted");
        match every_frame(frames).await.as_slice() {
            [Err(ServeError::Internal { message, .. })] => assert!(message.contains("the fake failed"), "{message}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn shutdown_ends_running_and_arriving_rollouts_unavailable() {
        let fake = Fake::new(None);
        let (model, shutdown) = version(&fake);
        let counter = RolloutCounter::default();
        let stepper = model.rollout_stepper();
        let mut running = super::start(plan(start(1, 0.0), 1_000_000, None), &stepper, &counter, 8).expect("admitted");
        running.next().await.expect("a first frame").expect("a frame");
        shutdown.send_replace(true);
        let rest: Vec<_> = running.collect().await;
        assert!(matches!(rest.last(), Some(Err(ServeError::ShuttingDown { .. }))), "{:?}", rest.last());
        let arriving = super::start(plan(start(1, 0.0), 10, None), &stepper, &counter, 8).expect("admitted");
        assert!(matches!(every_frame(arriving).await.as_slice(), [Err(ServeError::ShuttingDown { .. })]));
        assert_eq!(counter.get(), 0);
    }

    /// One seed, one trajectory: whatever is stepped beside it and whatever the
    /// ensemble's size, member b draws the same noise; other members and seeds differ.
    #[tokio::test]
    async fn a_sampled_rollout_depends_on_its_seed_and_member_alone() {
        let fake = Fake::stochastic(-0.05, 0.01);
        let (model, _shutdown) = version(&fake);
        let (counter, stepper) = (RolloutCounter::default(), model.rollout_stepper());
        let steps = 6;
        let alone = positions(&every_frame(super::start(plan(start(1, 1.0), steps, Some(7)), &stepper, &counter, 8).expect("admitted")).await);
        let ensemble = super::start(plan(start(3, 1.0), steps, Some(7)), &stepper, &counter, 8).expect("admitted");
        let other_seed = super::start(plan(start(1, 1.0), steps, Some(8)), &stepper, &counter, 8).expect("admitted");
        let mean = super::start(plan(start(1, 1.0), steps, None), &stepper, &counter, 8).expect("admitted");
        let (ensemble, other_seed, mean) = tokio::join!(every_frame(ensemble), every_frame(other_seed), every_frame(mean));
        let (ensemble, other_seed, mean) = (positions(&ensemble), positions(&other_seed), positions(&mean));
        let frame = PARTICLES * DIMS;
        for step in 0..steps as usize {
            assert_eq!(ensemble[step][..frame], alone[step][..], "member 0 of three = the rollout alone, bit for bit (step {step})");
        }
        let last = steps as usize - 1;
        assert_ne!(ensemble[last][frame..2 * frame], ensemble[last][..frame], "member 1 draws its own noise");
        assert_ne!(other_seed[last], alone[last], "another seed, another trajectory");
        let spread: f32 = alone[last].iter().zip(&mean[last]).map(|(a, m)| (a - m).powi(2)).sum::<f32>() / frame as f32;
        // Six steps of σ = 0.01 (shrunk by 0.95 a step): an rms near 0.02 around the mean.
        assert!((1e-4..1e-3).contains(&spread), "mean square distance from the mean {spread}");
    }

    /// A model whose card shapes its kicks is sampled with them: the server's trajectory
    /// is the one `data::sampling` draws for the seed (not the white one), and member 0 of
    /// an ensemble is still the rollout alone, bit for bit.
    #[tokio::test]
    async fn a_sampled_rollout_draws_the_kicks_its_card_shapes() {
        let fake = Fake::stochastic(-0.05, 0.01);
        let (model, _shutdown) = version(&fake);
        let (counter, stepper) = (RolloutCounter::default(), model.rollout_stepper());
        let shape = KickShape { mode_spread: std::array::from_fn(|m| 1.0 + 0.2 * m as f64), mode_persistence: [0.6; PARTICLES] };
        let steps = 6;
        let shaped = |systems: usize, kick_shape: Option<KickShape>| RolloutPlan { kick_shape, ..plan(start(systems, 1.0), steps, Some(7)) };
        let alone = positions(&every_frame(super::start(shaped(1, Some(shape)), &stepper, &counter, 8).expect("admitted")).await);
        let ensemble = positions(&every_frame(super::start(shaped(3, Some(shape)), &stepper, &counter, 8).expect("admitted")).await);
        let white = positions(&every_frame(super::start(shaped(1, None), &stepper, &counter, 8).expect("admitted")).await);
        let (mut x, mut kicks) = (start(1, 1.0), Kicks::new(Some(&shape)));
        for step in 0..steps as usize {
            let noise = kicks.next(projected_noise(x.view(), 7, 0, step as u64));
            let mut next = &x + &x.mapv(|v| -0.05 * v);
            add_sample(next.view_mut(), ndarray::Array2::from_elem((1, PARTICLES), 0.01).view(), noise.view());
            x = next;
            let largest = x.iter().zip(&alone[step]).map(|(a, b)| (a - b).abs()).fold(0.0_f32, f32::max);
            assert!(largest < 1e-6, "step {step}: {largest}");
            assert_eq!(ensemble[step][..PARTICLES * DIMS], alone[step][..], "step {step}");
        }
        assert_ne!(white[steps as usize - 1], alone[steps as usize - 1], "shaped kicks are not the white draws");
    }
}
