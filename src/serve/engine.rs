//! Running one model for many concurrent requests.
//!
//! ort's `Session::run` takes `&mut self`, so a session cannot be shared without a
//! lock. Instead each model gets a small pool of worker threads, each owning its own
//! session; requests wait in one bounded multi-consumer queue and whichever worker is
//! free takes the next. Nothing is locked, and a full queue is reported to the caller
//! at once rather than building up latency.

use std::{
    path::Path,
    thread::{self, JoinHandle},
    time::Instant,
};

use crossbeam_channel::{Sender, TrySendError};
use tokio::sync::oneshot;

use super::metrics;
use crate::onnx::{ExecutionDevice, NamedTensors, OnnxModel, RuntimeError, Signature};

/// How many sessions run one model, and how much work may wait for them.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Sessions per model; `None` picks by where the model runs: one per CPU core on the
    /// CPU (each session single-threaded by default), two on CUDA (one GPU serialises the
    /// work anyway; a second session overlaps the host-side copies).
    pub workers: Option<usize>,
    /// ONNX Runtime intra-op threads per session.
    pub threads_per_worker: usize,
    /// Requests that may wait per worker before new ones are turned away.
    pub queue_per_worker: usize,
}

/// One model call: a tensor per input of the model's signature, all with the same batch.
struct Job {
    inputs: NamedTensors,
    reply: oneshot::Sender<Result<NamedTensors, RuntimeError>>,
}

impl Job {
    fn frames(&self) -> usize {
        self.inputs.iter().next().map_or(0, |(_, tensor)| tensor.shape().first().copied().unwrap_or(0))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("model is busy: {0} requests already queued")]
    Busy(usize),
    #[error("model workers have stopped")]
    Stopped,
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl Default for PoolConfig {
    /// The server's defaults: sessions by device, each single-threaded.
    fn default() -> Self {
        Self { workers: None, threads_per_worker: 1, queue_per_worker: 64 }
    }
}

/// Sessions per model on CUDA when the configuration leaves it open.
const CUDA_WORKERS: usize = 2;

/// The worker pool of one model. Dropping it closes the queue and waits for the workers,
/// so that no session outlives its pool (a CUDA session freed while the process exits
/// aborts it).
pub struct ModelWorkers {
    model: String,
    queue: Sender<Job>,
    threads: Vec<JoinHandle<()>>,
    capacity: usize,
    execution_provider: &'static str,
}

impl ModelWorkers {
    /// Loads one session per worker (all on `device`, each checked against
    /// `signature`) and starts the workers.
    pub fn start(model: &str, onnx_file: &Path, signature: &Signature, device: ExecutionDevice, config: PoolConfig) -> Result<Self, RuntimeError> {
        let load = || OnnxModel::load(onnx_file, signature, device, config.threads_per_worker.max(1));
        let first = load()?;
        let execution_provider = first.execution_provider();
        let workers = config.workers.unwrap_or_else(|| match execution_provider {
            "CPUExecutionProvider" => thread::available_parallelism().map_or(1, |n| n.get()),
            _ => CUDA_WORKERS,
        });
        let workers = workers.max(1);
        let capacity = workers * config.queue_per_worker.max(1);
        let (queue, jobs) = crossbeam_channel::bounded::<Job>(capacity);
        let mut threads = Vec::with_capacity(workers);
        let mut sessions = Some(first);
        for index in 0..workers {
            let mut session = match sessions.take() {
                Some(session) => session,
                None => load()?,
            };
            let jobs = jobs.clone();
            let name = model.to_string();
            let thread = thread::Builder::new()
                .name(format!("onnx-{model}-{index}"))
                .spawn(move || {
                    for job in jobs {
                        metrics::dequeued(&name);
                        let start = Instant::now();
                        let result = session.infer(&job.inputs);
                        metrics::inference(&name, job.frames(), start.elapsed().as_secs_f64());
                        // The caller may have gone (a cancelled request); nothing to do then.
                        let _ = job.reply.send(result);
                    }
                })
                .map_err(|e| RuntimeError::Inference(format!("cannot start a worker thread: {e}")))?;
            threads.push(thread);
        }
        Ok(Self { model: model.to_string(), queue, threads, capacity, execution_provider })
    }

    /// How many sessions serve this model.
    pub fn workers(&self) -> usize {
        self.threads.len()
    }

    pub fn execution_provider(&self) -> &'static str {
        self.execution_provider
    }

    /// The model's outputs for `inputs`, computed by the next free worker.
    pub async fn infer(&self, inputs: NamedTensors) -> Result<NamedTensors, EngineError> {
        let (reply, answer) = oneshot::channel();
        // Counted before sending: a worker may take the job at once.
        metrics::queued(&self.model);
        self.queue.try_send(Job { inputs, reply }).map_err(|e| {
            metrics::dequeued(&self.model);
            match e {
                TrySendError::Full(_) => EngineError::Busy(self.capacity),
                TrySendError::Disconnected(_) => EngineError::Stopped,
            }
        })?;
        Ok(answer.await.map_err(|_| EngineError::Stopped)??)
    }
}

impl Drop for ModelWorkers {
    fn drop(&mut self) {
        // Swapping in a sender with no receivers drops the real one: the workers' queue
        // disconnects and each exits after its current job.
        let (closed, _) = crossbeam_channel::bounded(0);
        drop(std::mem::replace(&mut self.queue, closed));
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!(model = %self.model, "a worker thread panicked");
            }
        }
    }
}
