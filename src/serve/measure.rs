//! What a model sustains on this machine: ONNX Runtime frames per second at batch 1
//! and 32, and batches of 32 through the server's default worker pool. Measured at
//! export and by `train-export report --measure`; written into the card.

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use ndarray::{Array3, ArrayView3, s};

use super::{ModelWorkers, PoolConfig, memory::MemoryBudget, metrics::ModelLabels};
use crate::{
    card::InferenceSpeed,
    onnx::{ExecutionDevice, OnnxModel, RuntimeError, Signature, every_core},
};

/// Frames per second through ONNX Runtime at batch 1 and 32 on the test frames
/// (about half a second each), and batches of 32 through the default pool.
pub fn measure_inference(onnx_file: &Path, signature: &Signature, frames: ArrayView3<f32>) -> Result<InferenceSpeed, RuntimeError> {
    let threads = every_core();
    let mut session = OnnxModel::load(onnx_file, signature, ExecutionDevice::Auto, threads)?;
    let count = frames.dim().0;
    // The best of three windows after a warm-up run: a moment's contention on a shared
    // CPU (or the runtime's first allocations) would otherwise set the figure. Every run
    // is a full batch: a shorter one at the end of the frames makes the runtime plan
    // memory for a second shape, which costs more than the run.
    let mut rate = |batch: usize| -> Result<f64, RuntimeError> {
        let batch = batch.min(count);
        let mut run = |start: usize| session.infer(&session.signature().inputs_for_frames(frames.slice(s![start..start + batch, .., ..]))).map(drop);
        run(0)?;
        let mut best = 0.0_f64;
        for _ in 0..3 {
            let start = Instant::now();
            let (mut done, mut next) = (0usize, 0usize);
            while start.elapsed().as_secs_f64() < 0.3 {
                run(next)?;
                done += batch;
                next = if next + 2 * batch > count { 0 } else { next + batch };
            }
            best = best.max(done as f64 / start.elapsed().as_secs_f64());
        }
        Ok(best)
    };
    let (frames_per_second_batch_1, frames_per_second_batch_32) = (rate(1)?, rate(32)?);
    let execution_provider = session.execution_provider().to_string();
    // The pool's sessions get the cores to themselves.
    drop(session);
    let (pooled, pool_workers) = measure_pooled(onnx_file, signature, frames.slice(s![..32.min(count), .., ..]).to_owned())?;
    Ok(InferenceSpeed {
        frames_per_second_batch_1,
        frames_per_second_batch_32,
        frames_per_second_batch_32_pooled: Some(pooled),
        pool_workers: Some(pool_workers),
        execution_provider,
        threads,
    })
}

/// Frames/s of `batch` through the server's default worker pool, with two requests in
/// flight per worker so that none waits (best of three windows), and the pool's size.
fn measure_pooled(onnx_file: &Path, signature: &Signature, batch: Array3<f32>) -> Result<(f64, usize), RuntimeError> {
    let pool = PoolConfig::default();
    let budget = Arc::new(MemoryBudget::new(pool.memory_budget));
    let workers = Arc::new(ModelWorkers::start(&ModelLabels::new("measure", 1), onnx_file, signature, ExecutionDevice::Auto, pool, budget)?);
    let sessions = workers.workers();
    let runtime =
        tokio::runtime::Builder::new_current_thread().build().map_err(|e| RuntimeError::Inference(format!("cannot start a runtime to measure with: {e}")))?;
    let frames_per_request = batch.dim().0;
    let rate = runtime.block_on(async {
        let window = |duration: Duration| {
            let deadline = Instant::now() + duration;
            let mut clients = tokio::task::JoinSet::new();
            for _ in 0..2 * sessions {
                let (workers, inputs) = (Arc::clone(&workers), signature.inputs_for_frames(batch.view()));
                clients.spawn(async move {
                    let mut requests = 0usize;
                    while Instant::now() < deadline {
                        workers.infer(inputs.clone()).await.map_err(|e| RuntimeError::Inference(e.to_string()))?;
                        requests += 1;
                    }
                    Ok::<usize, RuntimeError>(requests)
                });
            }
            async move {
                let start = Instant::now();
                let mut requests = 0;
                while let Some(done) = clients.join_next().await {
                    requests += done.map_err(|e| RuntimeError::Inference(e.to_string()))??;
                }
                Ok::<f64, RuntimeError>((requests * frames_per_request) as f64 / start.elapsed().as_secs_f64())
            }
        };
        window(Duration::from_millis(50)).await?;
        let mut best = 0.0_f64;
        for _ in 0..3 {
            best = best.max(window(Duration::from_millis(300)).await?);
        }
        Ok::<f64, RuntimeError>(best)
    })?;
    Ok((rate, sessions))
}
