//! Running one model for many concurrent requests, batched.
//!
//! ort's `Session::run` takes `&mut self`, so a session cannot be shared without a
//! lock. Instead each model gets a small pool of worker threads, each owning its own
//! session. Work waits in queues: rollout steps (which own their capacity and go first)
//! and requests (admitted up to a bound, else turned away at once). A free worker takes
//! whatever is waiting, up to `max_batch_frames` frames, runs it as one ONNX Runtime
//! call and splits the answer: concurrent small requests cost one run, not one each.
//! Work larger than that cap, or that finds the pool idle, is cut into parts that wait
//! in a queue of their own and run alone, so that every session works on it (batching
//! would otherwise put the parts back together on one session).

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crossbeam_channel::{Receiver, Sender, select_biased};
use tokio::sync::oneshot;

use ndarray::Array3;

use super::{
    memory::{self, MemoryBudget},
    metrics::{self, ModelLabels},
    statistics::{CallTimes, Statistics, StatisticsSnapshot},
};
use crate::{
    data::{DIMS, PARTICLES},
    onnx::{ExecutionDevice, NamedTensors, OnnxModel, RuntimeError, Signature, every_core},
};

/// What runs a model's calls: ONNX Runtime ([`OnnxModel`]), or a stand-in where the
/// pool itself is tested.
pub trait Backend: Send + 'static {
    /// The inputs it takes and the outputs it gives.
    fn signature(&self) -> &Signature;
    /// Where it runs, as ONNX Runtime names execution providers.
    fn execution_provider(&self) -> &'static str;
    /// Every output of the signature for `inputs`.
    fn infer(&mut self, inputs: &NamedTensors) -> Result<NamedTensors, RuntimeError>;
}

impl Backend for OnnxModel {
    fn signature(&self) -> &Signature {
        OnnxModel::signature(self)
    }

    fn execution_provider(&self) -> &'static str {
        OnnxModel::execution_provider(self)
    }

    fn infer(&mut self, inputs: &NamedTensors) -> Result<NamedTensors, RuntimeError> {
        OnnxModel::infer(self, inputs)
    }
}

/// How many sessions run one model, how they batch, and how much work may wait.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Sessions per model; `None` picks by where the model runs: one per CPU core on the
    /// CPU (each session single-threaded by default), two on CUDA (one GPU serialises the
    /// work anyway; a second session overlaps the host-side copies).
    pub workers: Option<usize>,
    /// ONNX Runtime intra-op threads per session.
    pub threads_per_worker: usize,
    /// Requests that may be admitted per worker (waiting or running) before new ones
    /// are turned away.
    pub queue_per_worker: usize,
    /// Most frames one ONNX Runtime call holds: waiting requests are batched up to it and
    /// larger ones split.
    pub max_batch_frames: usize,
    /// How long a free session waits for more work to fill a batch; zero (the default)
    /// runs at once whatever is waiting.
    pub max_queue_delay: Duration,
    /// Bytes all models' calls may hold at once (see [`MemoryBudget`]).
    pub memory_budget: u64,
    /// Bytes one call may hold: a heavy model's large batch runs as smaller calls, which
    /// are faster (the working set stays smaller) and let the others share the budget.
    pub max_call_bytes: u64,
    /// Work admitted requests may hold, waiting or running, in seconds of the model's
    /// sessions (frames × its seconds per frame measured at load, over its sessions):
    /// past it, requests are turned away at once instead of queueing for minutes on a
    /// heavy model. A request alone is always admitted.
    pub max_queued_seconds: f64,
    /// Sessions keep ONNX Runtime's CPU memory arena: faster large batches, but each
    /// session keeps the memory of its largest call (at most `max_call_bytes`) for good,
    /// beside what the budget accounts for.
    pub cpu_arena: bool,
}

impl Default for PoolConfig {
    /// The server's defaults: sessions by device, each single-threaded, no waiting.
    fn default() -> Self {
        Self {
            workers: None,
            threads_per_worker: 1,
            queue_per_worker: 64,
            max_batch_frames: 1024,
            max_queue_delay: Duration::ZERO,
            memory_budget: MemoryBudget::default_limit(),
            max_call_bytes: 256 << 20,
            max_queued_seconds: 10.0,
            cpu_arena: false,
        }
    }
}

/// Sessions per model on CUDA when the configuration leaves it open.
const CUDA_WORKERS: usize = 2;

/// Smallest part worth handing to another session when an idle pool splits a request.
const MIN_PART_FRAMES: usize = 4;

/// Frames of the call whose memory is measured when a model loads.
const PROBE_FRAMES: usize = 32;

/// A call that held this much gives freed memory back to the system after it.
const RETURN_MEMORY_AFTER: u64 = 16 << 20;

/// Bytes per frame assumed where the process's peak memory cannot be measured.
const UNMEASURED_FRAME_COST: u64 = 1 << 20;

/// One model call's share of a batch: a tensor per input, all with the same batch.
struct Job {
    inputs: NamedTensors,
    enqueued: Instant,
    reply: oneshot::Sender<Result<Answer, RuntimeError>>,
}

/// Queued parts of one call, in order: their answers, once run, stack into its answer.
pub(crate) struct Pending {
    answers: Vec<oneshot::Receiver<Result<Answer, RuntimeError>>>,
}

impl Pending {
    async fn answer(self) -> Result<Answer, EngineError> {
        let mut outputs = Vec::with_capacity(self.answers.len());
        let mut times = CallTimes::default();
        for answer in self.answers {
            let answer = answer.await.map_err(|_| EngineError::Lost)??;
            times = times.longest(answer.times);
            outputs.push(answer.outputs);
        }
        if outputs.len() == 1 {
            return Ok(Answer { outputs: outputs.pop().expect("one part"), times });
        }
        NamedTensors::concatenate(&outputs)
            .map(|outputs| Answer { outputs, times })
            .ok_or_else(|| EngineError::Runtime(RuntimeError::Inference("the parts' outputs do not stack".into())))
    }

    /// The call's outputs, stacked in the order of its rows.
    pub(crate) async fn outputs(self) -> Result<NamedTensors, EngineError> {
        self.answer().await.map(|answer| answer.outputs)
    }
}

impl Job {
    /// Whoever asked is gone (a cancelled call, a passed deadline, a dropped rollout):
    /// running it would only keep the cores from work someone waits for.
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}

/// A job's outputs and how long it waited and ran.
struct Answer {
    outputs: NamedTensors,
    times: CallTimes,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("{0} requests already admitted, the most this model takes")]
    Busy(usize),
    #[error("{queued:.3} s of this model's work already admitted and {asked:.3} s asked; it takes {budget:.3} s")]
    TooMuchWork { queued: f64, asked: f64, budget: f64 },
    /// The pool's queues are closed: it is stopping (the server shuts down).
    #[error("model workers have stopped")]
    Stopped,
    /// The worker that took the job ended without answering it (it failed).
    #[error("the model worker running this request failed")]
    Lost,
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// The worker pool of one model. Dropping it closes the queues and waits for the
/// workers, so that no session outlives its pool (a CUDA session freed while the process
/// exits aborts it).
pub struct ModelWorkers {
    /// The model version's metric labels.
    labels: ModelLabels,
    requests: Sender<Job>,
    /// Rollout steps: unbounded because one model has one rollout stepper, which waits
    /// for its step before sending the next (at most one step is here).
    rollout_steps: Sender<Job>,
    /// Parts of work cut for several sessions, each run alone: bounded by the admitted
    /// requests and the one rollout step they come from.
    parts: Sender<Job>,
    threads: Vec<JoinHandle<()>>,
    admitted: Arc<AtomicUsize>,
    capacity: usize,
    /// Work of the admitted requests, in microseconds of the pool, and its bound.
    admitted_work: Arc<AtomicU64>,
    work_budget: u64,
    /// Seconds of one session per frame, measured at load.
    frame_seconds: f64,
    max_batch_frames: usize,
    max_queue_delay: Duration,
    /// Peak bytes one frame adds to a call, measured at load.
    frame_cost: u64,
    execution_provider: &'static str,
    statistics: Arc<Statistics>,
}

/// Holds one admitted request's place, and its work, until it is answered or abandoned.
struct Admission<'a> {
    workers: &'a ModelWorkers,
    work: u64,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.workers.admitted_work.fetch_sub(self.work, Ordering::SeqCst);
        let now = self.workers.admitted.fetch_sub(1, Ordering::SeqCst) - 1;
        metrics::requests_admitted(&self.workers.labels, now);
    }
}

impl ModelWorkers {
    /// Loads one session per worker (all on `device`, each checked against
    /// `signature`), measures what a frame costs, and starts the workers; every call
    /// reserves its frames' cost from `budget` before it runs.
    pub fn start(
        labels: &ModelLabels,
        onnx_file: &Path,
        signature: &Signature,
        device: ExecutionDevice,
        config: PoolConfig,
        budget: Arc<MemoryBudget>,
    ) -> Result<Self, RuntimeError> {
        Self::start_with(labels, config, budget, || {
            OnnxModel::load_with_arena(onnx_file, signature, device, config.threads_per_worker.max(1), config.cpu_arena)
        })
    }

    /// [`start`](Self::start) with the sessions `load` makes, one per worker.
    pub fn start_with<B: Backend>(
        labels: &ModelLabels,
        config: PoolConfig,
        budget: Arc<MemoryBudget>,
        load: impl Fn() -> Result<B, RuntimeError>,
    ) -> Result<Self, RuntimeError> {
        let mut first = load()?;
        let (frame_cost, frame_seconds) = frame_cost(&mut first)?;
        let execution_provider = first.execution_provider();
        let workers = config.workers.unwrap_or_else(|| match execution_provider {
            "CPUExecutionProvider" => every_core(),
            _ => CUDA_WORKERS,
        });
        let workers = workers.max(1);
        let (requests, request_queue) = crossbeam_channel::unbounded::<Job>();
        let (rollout_steps, rollout_queue) = crossbeam_channel::unbounded::<Job>();
        let (parts, part_queue) = crossbeam_channel::unbounded::<Job>();
        // A call fits the budget and the call limit: larger work is cut into parts.
        let affordable = usize::try_from(budget.limit().min(config.max_call_bytes) / frame_cost).unwrap_or(usize::MAX);
        let batching = Batching { max_frames: config.max_batch_frames.min(affordable).max(1), max_delay: config.max_queue_delay, frame_cost };
        let statistics = Arc::new(Statistics::default());
        let mut threads = Vec::with_capacity(workers);
        let mut sessions = Some(first);
        for index in 0..workers {
            let session = match sessions.take() {
                Some(session) => session,
                None => load()?,
            };
            let queues = Queues { rollout_steps: rollout_queue.clone(), parts: part_queue.clone(), requests: request_queue.clone() };
            let worker_labels = labels.clone();
            let (budget, statistics) = (Arc::clone(&budget), Arc::clone(&statistics));
            let thread = thread::Builder::new()
                .name(format!("onnx-{}-{index}", labels.model))
                .spawn(move || work(&worker_labels, session, &queues, batching, &budget, &statistics))
                .map_err(|e| RuntimeError::Inference(format!("cannot start a worker thread: {e}")))?;
            threads.push(thread);
        }
        Ok(Self {
            labels: labels.clone(),
            requests,
            rollout_steps,
            parts,
            threads,
            admitted: Arc::default(),
            capacity: workers * config.queue_per_worker.max(1),
            admitted_work: Arc::default(),
            work_budget: micros(config.max_queued_seconds.max(0.0)),
            frame_seconds: frame_seconds / workers as f64,
            max_batch_frames: batching.max_frames,
            max_queue_delay: batching.max_delay,
            frame_cost,
            execution_provider,
            statistics,
        })
    }

    /// How many sessions serve this model.
    pub fn workers(&self) -> usize {
        self.threads.len()
    }

    pub fn execution_provider(&self) -> &'static str {
        self.execution_provider
    }

    /// Peak bytes one frame adds to a call of this model.
    pub fn frame_cost(&self) -> u64 {
        self.frame_cost
    }

    /// Most frames one call runs: `max_batch_frames`, or fewer when the budget holds fewer.
    pub fn max_batch_frames(&self) -> usize {
        self.max_batch_frames
    }

    /// How long a free session waits for more work to fill a batch.
    pub fn max_queue_delay(&self) -> Duration {
        self.max_queue_delay
    }

    /// What the model has answered and run since it loaded.
    /// The model version's metric labels.
    pub(crate) fn labels(&self) -> &ModelLabels {
        &self.labels
    }

    /// Where the version's requests are counted, for its rollouts to be counted too.
    pub(crate) fn statistics_handle(&self) -> Arc<Statistics> {
        Arc::clone(&self.statistics)
    }

    pub fn statistics(&self) -> StatisticsSnapshot {
        self.statistics.snapshot()
    }

    /// The model's outputs for `inputs`, batched with whatever else is waiting; turned
    /// away at once (`Busy`) when the model has as many requests as it admits.
    pub async fn infer(&self, inputs: NamedTensors) -> Result<NamedTensors, EngineError> {
        let arrived = Instant::now();
        let frames = inputs.batch();
        let answer = match self.admit(frames) {
            Ok(_admission) => self.run(inputs, &self.requests).await,
            Err(busy) => Err(busy),
        };
        match &answer {
            Ok(answer) => self.statistics.answered(frames, arrived.elapsed(), answer.times),
            Err(_) => self.statistics.failed(arrived.elapsed()),
        }
        answer.map(|answer| answer.outputs)
    }

    /// One step of the model's rollouts, queued at once (never turned away, taken before
    /// requests): the caller can work while it runs, then await its outputs.
    pub(crate) fn send_rollout_step(&self, inputs: NamedTensors) -> Result<Pending, EngineError> {
        self.send(inputs, &self.rollout_steps)
    }

    fn admit(&self, frames: usize) -> Result<Admission<'_>, EngineError> {
        let work = micros(frames as f64 * self.frame_seconds);
        let before = self.admitted.fetch_add(1, Ordering::SeqCst);
        let queued = self.admitted_work.fetch_add(work, Ordering::SeqCst);
        let admission = Admission { workers: self, work };
        if before >= self.capacity {
            return Err(EngineError::Busy(self.capacity));
        }
        if queued > 0 && queued.saturating_add(work) > self.work_budget {
            let seconds = |micros: u64| micros as f64 * 1e-6;
            return Err(EngineError::TooMuchWork { queued: seconds(queued), asked: seconds(work), budget: seconds(self.work_budget) });
        }
        metrics::requests_admitted(&self.labels, before + 1);
        Ok(admission)
    }

    /// Queues `inputs` (in parts, when worth it) and gathers the answer.
    async fn run(&self, inputs: NamedTensors, queue: &Sender<Job>) -> Result<Answer, EngineError> {
        self.send(inputs, queue)?.answer().await
    }

    /// Queues `inputs`, in parts when worth it.
    fn send(&self, inputs: NamedTensors, queue: &Sender<Job>) -> Result<Pending, EngineError> {
        let sizes = self.part_sizes(inputs.batch());
        let (parts, queue) = if sizes.len() == 1 { (vec![inputs], queue) } else { (inputs.split(&sizes), &self.parts) };
        let mut answers = Vec::with_capacity(parts.len());
        for inputs in parts {
            let (reply, answer) = oneshot::channel();
            queue.send(Job { inputs, enqueued: Instant::now(), reply }).map_err(|_| EngineError::Stopped)?;
            answers.push(answer);
        }
        Ok(Pending { answers })
    }

    /// Sizes of the parts `frames` is run in: no larger than a batch may be, and spread
    /// over every session when nothing else is waiting.
    fn part_sizes(&self, frames: usize) -> Vec<usize> {
        let needed = frames.div_ceil(self.max_batch_frames);
        let idle = self.requests.is_empty() && self.rollout_steps.is_empty() && self.parts.is_empty();
        let spread = if idle { self.workers().min(frames / MIN_PART_FRAMES) } else { 1 };
        let parts = needed.max(spread).max(1);
        let (base, extra) = (frames / parts, frames % parts);
        (0..parts).map(|i| base + usize::from(i < extra)).collect()
    }
}

impl Drop for ModelWorkers {
    fn drop(&mut self) {
        // Swapping in senders with no receivers drops the real ones: the queues
        // disconnect and each worker exits after its current batch.
        let closed = || crossbeam_channel::bounded(0).0;
        drop(std::mem::replace(&mut self.requests, closed()));
        drop(std::mem::replace(&mut self.rollout_steps, closed()));
        drop(std::mem::replace(&mut self.parts, closed()));
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!(model = %self.labels.model, version = %self.labels.version, "a worker thread panicked");
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Batching {
    max_frames: usize,
    max_delay: Duration,
    frame_cost: u64,
}

/// Peak bytes and seconds per frame of a call of `session`, on zeros of its signature's
/// shapes (the memory a call needs depends on the shapes, not the values), after a
/// warm-up call.
fn frame_cost(session: &mut impl Backend) -> Result<(u64, f64), RuntimeError> {
    let zeros = |frames: usize| session.signature().inputs_for_frames(Array3::zeros((frames, PARTICLES, DIMS)).view());
    let (one, probe) = (zeros(1), zeros(PROBE_FRAMES));
    session.infer(&one)?;
    let mut outcome = Ok(());
    let start = Instant::now();
    let measured = memory::peak_per_frame(PROBE_FRAMES, || outcome = session.infer(&probe).map(drop));
    let seconds = start.elapsed().as_secs_f64() / PROBE_FRAMES as f64;
    outcome?;
    Ok((measured.unwrap_or(UNMEASURED_FRAME_COST).max(1), seconds))
}

fn micros(seconds: f64) -> u64 {
    (seconds * 1e6).ceil() as u64
}

/// A worker's ends of the model's queues.
struct Queues {
    rollout_steps: Receiver<Job>,
    parts: Receiver<Job>,
    requests: Receiver<Job>,
}

enum Next {
    Job(Job),
    /// Nothing more arrived in time.
    Nothing,
    /// The pool is closing.
    Closed,
}

fn received(job: Result<Job, crossbeam_channel::RecvError>) -> Next {
    job.map_or(Next::Closed, Next::Job)
}

impl Queues {
    /// The next job to open a batch with, waiting for one: rollout steps first, then
    /// parts (the second says whether it is a part, which runs alone).
    fn first(&self) -> (Next, bool) {
        select_biased! {
            recv(self.rollout_steps) -> job => (received(job), false),
            recv(self.parts) -> job => (received(job), true),
            recv(self.requests) -> job => (received(job), false),
        }
    }

    /// A job to add to a batch, waiting at most until `deadline`.
    fn more(&self, deadline: Instant) -> Next {
        select_biased! {
            recv(self.rollout_steps) -> job => received(job),
            recv(self.requests) -> job => received(job),
            default(deadline.saturating_duration_since(Instant::now())) => Next::Nothing,
        }
    }
}

/// A worker: forms batches from the queues until they close, and runs each once its
/// memory is reserved.
fn work(labels: &ModelLabels, mut session: impl Backend, queues: &Queues, batching: Batching, budget: &MemoryBudget, statistics: &Statistics) {
    // A job that did not fit the last batch opens the next one.
    let mut carried: Option<Job> = None;
    loop {
        let (first, alone) = match carried.take() {
            Some(job) => (job, false),
            None => match queues.first() {
                (Next::Job(job), alone) => (job, alone),
                (Next::Nothing | Next::Closed, _) => return,
            },
        };
        if first.abandoned() {
            metrics::job_abandoned(labels);
            continue;
        }
        let mut frames = first.inputs.batch();
        let mut batch = vec![first];
        let deadline = Instant::now() + batching.max_delay;
        while !alone && frames < batching.max_frames {
            match queues.more(deadline) {
                Next::Job(job) if job.abandoned() => metrics::job_abandoned(labels),
                Next::Job(job) if frames + job.inputs.batch() > batching.max_frames => {
                    carried = Some(job);
                    break;
                }
                Next::Job(job) => {
                    frames += job.inputs.batch();
                    batch.push(job);
                }
                Next::Nothing | Next::Closed => break,
            }
        }
        let bytes = frames as u64 * batching.frame_cost;
        let reservation = budget.reserve(bytes);
        run_batch(labels, &mut session, batch, statistics);
        drop(reservation);
        if bytes >= RETURN_MEMORY_AFTER {
            memory::return_freed_memory();
        }
    }
}

/// One call of the session, whatever it does: a panic or outputs that do not fit the
/// signature with a row per frame become an error for the call's jobs, and the worker
/// goes on with the next.
fn guarded_infer(session: &mut impl Backend, inputs: &NamedTensors, frames: usize) -> Result<NamedTensors, RuntimeError> {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| session.infer(inputs)));
    let outputs = match outcome {
        Ok(result) => result?,
        Err(panic) => {
            let message = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_default();
            return Err(RuntimeError::Inference(format!("the model's call panicked: {message}")));
        }
    };
    session.signature().check_outputs(&outputs, frames).map_err(RuntimeError::Inference)?;
    Ok(outputs)
}

/// Runs the jobs of `batch` as one call and answers each with its own rows.
fn run_batch(labels: &ModelLabels, session: &mut impl Backend, mut batch: Vec<Job>, statistics: &Statistics) {
    let start = Instant::now();
    for job in &batch {
        metrics::job_waited(labels, start.duration_since(job.enqueued).as_secs_f64());
    }
    let sizes: Vec<usize> = batch.iter().map(|job| job.inputs.batch()).collect();
    let frames: usize = sizes.iter().sum();
    let stacked = if batch.len() == 1 {
        Some(std::mem::take(&mut batch[0].inputs))
    } else {
        let inputs: Vec<NamedTensors> = batch.iter_mut().map(|job| std::mem::take(&mut job.inputs)).collect();
        NamedTensors::concatenate(&inputs)
    };
    let result = match stacked {
        Some(stacked) => guarded_infer(session, &stacked, frames).map(|outputs| outputs.split(&sizes)),
        None => Err(RuntimeError::Inference("requests in one batch do not stack".into())),
    };
    let computed = start.elapsed();
    metrics::batch_ran(labels, sizes.iter().sum(), computed.as_secs_f64());
    statistics.call(sizes.iter().sum(), computed);
    match result {
        Ok(outputs) => {
            for (job, outputs) in batch.into_iter().zip(outputs) {
                let times = CallTimes { queued: start.duration_since(job.enqueued), computed };
                // The caller may have gone (a cancelled request); nothing to do then.
                let _ = job.reply.send(Ok(Answer { outputs, times }));
            }
        }
        Err(error) => {
            for job in batch {
                let _ = job.reply.send(Err(error.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        future::Future,
        task::{Context, Poll},
    };

    use ndarray::ArrayD;

    use super::*;
    use crate::{
        onnx::{DX, POSITIONS},
        serve::fake_backend::{Behaviour, Fake},
    };

    fn pool(fake: &Fake, workers: usize, queue_per_worker: usize, max_batch_frames: usize, max_queue_delay: Duration) -> ModelWorkers {
        let config =
            PoolConfig { workers: Some(workers), queue_per_worker, max_batch_frames, max_queue_delay, max_call_bytes: u64::MAX / 4, ..PoolConfig::default() };
        fake.pool(config)
    }

    /// `frames` frames whose values tell them apart.
    fn frames(frames: usize, offset: f32) -> NamedTensors {
        NamedTensors::dynamics(Array3::from_shape_fn((frames, PARTICLES, DIMS), |(f, p, d)| offset + (f * 36 + p * 3 + d) as f32), None)
    }

    fn doubled(inputs: &NamedTensors) -> ArrayD<f32> {
        inputs.get(POSITIONS).expect("positions").mapv(|v| 2.0 * v)
    }

    #[tokio::test]
    async fn requests_and_rollout_steps_waiting_together_run_as_one_call_and_each_gets_its_rows() {
        let fake = Fake::new(None);
        // A second of waiting for more work: the three arrive within it even on a loaded machine.
        let workers = pool(&fake, 1, 8, 64, Duration::from_secs(1));
        let (a, b, c) = (frames(2, 0.0), frames(3, 1000.0), frames(1, 2000.0));
        let (ra, rb, rc) = tokio::join!(workers.infer(a.clone()), async { workers.send_rollout_step(b.clone())?.outputs().await }, workers.infer(c.clone()));
        for (answer, inputs) in [(ra, &a), (rb, &b), (rc, &c)] {
            assert_eq!(answer.expect("answered").get(DX), Some(&doubled(inputs)));
        }
        assert_eq!(fake.calls(), [6], "one call for all three");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn admission_turns_requests_away_beyond_the_bound_and_admits_again_after() {
        let (open, gate) = crossbeam_channel::unbounded();
        (0..2).for_each(|_| open.send(()).expect("gate")); // the pool's two probe calls
        let fake = Fake::new(Some(gate));
        let workers = Arc::new(pool(&fake, 1, 2, 64, Duration::ZERO));
        let waiting: Vec<_> = (0..2)
            .map(|i| {
                let workers = Arc::clone(&workers);
                tokio::spawn(async move { workers.infer(frames(1, i as f32)).await })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        while workers.admitted.load(Ordering::SeqCst) < 2 {
            assert!(Instant::now() < deadline, "two requests admitted");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(matches!(workers.infer(frames(1, 9.0)).await, Err(EngineError::Busy(2))));
        (0..2).for_each(|_| open.send(()).expect("gate"));
        for request in waiting {
            request.await.expect("joins").expect("answered");
        }
        open.send(()).expect("gate");
        workers.infer(frames(1, 9.0)).await.expect("admitted again");
    }

    #[tokio::test]
    async fn a_failing_panicking_or_row_dropping_call_fails_its_request_and_the_worker_goes_on() {
        let fake = Fake::new(None);
        let workers = pool(&fake, 1, 8, 64, Duration::ZERO);
        fake.misbehave(&[Behaviour::Fail, Behaviour::Panic, Behaviour::DropRows]);
        let messages: Vec<String> = [workers.infer(frames(2, 0.0)).await, workers.infer(frames(2, 0.0)).await, workers.infer(frames(3, 0.0)).await]
            .into_iter()
            .map(|outcome| outcome.expect_err("fails").to_string())
            .collect();
        assert!(messages[0].contains("the fake failed"), "{messages:?}");
        assert!(messages[1].contains("panicked") && messages[1].contains("the fake panicked"), "{messages:?}");
        assert!(messages[2].contains("came back [1, 12, 3] for 3 frames"), "{messages:?}");
        let inputs = frames(2, 5.0);
        assert_eq!(workers.infer(inputs.clone()).await.expect("the same worker answers").get(DX), Some(&doubled(&inputs)));
        assert_eq!(workers.workers(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_requests_parts_not_yet_started_never_run() {
        let (open, gate) = crossbeam_channel::unbounded();
        (0..2).for_each(|_| open.send(()).expect("gate"));
        let fake = Fake::new(Some(gate));
        let workers = pool(&fake, 1, 8, 1, Duration::ZERO);
        {
            let mut request = Box::pin(workers.infer(frames(8, 0.0)));
            let pending = request.as_mut().poll(&mut Context::from_waker(std::task::Waker::noop()));
            assert!(matches!(pending, Poll::Pending), "eight one-frame parts queued, the first waiting at the gate");
        }
        // Tokens for all eight parts and the next request, as if every part ran.
        (0..9).for_each(|_| open.send(()).expect("gate"));
        let inputs = frames(1, 3.0);
        assert_eq!(workers.infer(inputs.clone()).await.expect("answered").get(DX), Some(&doubled(&inputs)));
        // At most the part a worker had taken when its caller went (it waited at the
        // gate), then the next request.
        let calls = fake.calls();
        assert!((1..=2).contains(&calls.len()) && calls.iter().all(|&frames| frames == 1), "{calls:?}: of 8 parts, {} ran", calls.len() - 1);
    }

    /// Admission by cost: requests whose work would take the admitted work past the
    /// budget are turned away at once; smaller ones still fit, and a request alone is
    /// always admitted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_beyond_the_budget_is_turned_away_at_once() {
        let (open, gate) = crossbeam_channel::unbounded();
        (0..2).for_each(|_| open.send(()).expect("gate"));
        let mut fake = Fake::new(Some(gate));
        fake.frame_time = Duration::from_millis(2);
        let config = PoolConfig { workers: Some(1), max_queued_seconds: 0.05, max_call_bytes: u64::MAX / 4, ..PoolConfig::default() };
        let workers = Arc::new(fake.pool(config));
        // Sizes from the measured cost, so that a slow machine does not change the test.
        let frames_for = |seconds: f64| ((seconds / workers.frame_seconds).round() as usize).max(1);
        let spawn = |count: usize| {
            let workers = Arc::clone(&workers);
            tokio::spawn(async move { workers.infer(frames(count, 0.0)).await })
        };
        let first = spawn(frames_for(0.02));
        let deadline = Instant::now() + Duration::from_secs(10);
        while workers.admitted.load(Ordering::SeqCst) < 1 {
            assert!(Instant::now() < deadline, "the first request admitted");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let refused = workers.infer(frames(frames_for(0.04), 0.0)).await.expect_err("0.02 + 0.04 s > 0.05 s");
        assert!(matches!(refused, EngineError::TooMuchWork { .. }) && refused.to_string().contains("takes 0.050 s"), "{refused}");
        let second = spawn(frames_for(0.01));
        (0..3).for_each(|_| open.send(()).expect("gate"));
        first.await.expect("joins").expect("answered");
        second.await.expect("joins").expect("0.02 + 0.01 s fit");
        assert_eq!(workers.admitted_work.load(Ordering::SeqCst), 0, "answered work is given back");
        workers.infer(frames(frames_for(0.2), 0.0)).await.expect("alone, any request is admitted");
    }
}
