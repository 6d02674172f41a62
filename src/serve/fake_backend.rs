//! A stand-in for ONNX Runtime where the serving core is tested without it: a backend
//! of the dynamics signature answering dx = scale · positions (and a constant dx_std
//! when stochastic) that records its calls, misbehaves when told, and can be held at
//! a gate.

use std::{
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

use ndarray::{Array2, Axis, Slice};
use tokio::sync::watch;

use super::{
    engine::{Backend, ModelWorkers, PoolConfig},
    memory::MemoryBudget,
    metrics::ModelLabels,
    model::ModelVersion,
};
use crate::{
    card::{CardSummary, OnnxInfo},
    data::PARTICLES,
    onnx::{DX, DX_STD, NamedTensors, POSITIONS, RuntimeError, Signature},
};

/// What the stand-in does on one call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Behaviour {
    Answer,
    Fail,
    Panic,
    DropRows,
}

#[derive(Clone)]
pub(crate) struct Fake {
    signature: Signature,
    calls: Arc<Mutex<Vec<usize>>>,
    script: Arc<Mutex<Vec<Behaviour>>>,
    gate: Option<crossbeam_channel::Receiver<()>>,
    /// How long each frame of a call takes.
    pub frame_time: Duration,
    /// dx = dx_scale · positions.
    pub dx_scale: f32,
    dx_std: Option<f32>,
    /// A call with an input value at least this large panics (a rollout that breaks the model).
    pub panic_at: Option<f32>,
}

impl Fake {
    /// A deterministic stand-in answering dx = 2 · positions; with a gate, each call
    /// waits for a token first.
    pub(crate) fn new(gate: Option<crossbeam_channel::Receiver<()>>) -> Self {
        Self {
            signature: Signature::dynamics(1),
            calls: Arc::default(),
            script: Arc::default(),
            gate,
            frame_time: Duration::ZERO,
            dx_scale: 2.0,
            dx_std: None,
            panic_at: None,
        }
    }

    /// A stochastic stand-in: dx = `dx_scale` · positions, dx_std = `dx_std` everywhere.
    pub(crate) fn stochastic(dx_scale: f32, dx_std: f32) -> Self {
        Self { signature: Signature::dynamics(1).with_dx_std(), dx_scale, dx_std: Some(dx_std), ..Self::new(None) }
    }

    /// The frames of the calls since the pool started (its two probe calls left out).
    pub(crate) fn calls(&self) -> Vec<usize> {
        self.calls.lock().expect("calls").iter().skip(2).copied().collect()
    }

    /// The next calls, in order, do as `behaviours` say (then they answer again).
    pub(crate) fn misbehave(&self, behaviours: &[Behaviour]) {
        self.script.lock().expect("script").extend_from_slice(behaviours);
    }

    /// A pool of `config` over clones of this stand-in.
    pub(crate) fn pool(&self, config: PoolConfig) -> ModelWorkers {
        ModelWorkers::start_with(&ModelLabels::new("fake", 1), config, Arc::new(MemoryBudget::new(u64::MAX / 4)), || Ok(self.clone())).expect("starts")
    }

    /// A served version "fake" over a one-worker pool of this stand-in.
    pub(crate) fn version(&self, shutdown: watch::Receiver<bool>) -> ModelVersion {
        let onnx = OnnxInfo {
            file: "model.onnx".into(),
            signature: self.signature.clone(),
            opset: 21,
            ir_version: 10,
            parity_relative_error: 0.0,
            compute_dtype: "float32".into(),
        };
        let summary = CardSummary { name: "fake".into(), architecture: "fake".into(), params: 0, onnx, history_frames: None, noise: None };
        let pool = self.pool(PoolConfig { workers: Some(1), max_call_bytes: u64::MAX / 4, ..PoolConfig::default() });
        ModelVersion::new(summary, "{}".into(), 1, pool, shutdown)
    }
}

impl Backend for Fake {
    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn execution_provider(&self) -> &'static str {
        "test"
    }

    fn infer(&mut self, inputs: &NamedTensors) -> Result<NamedTensors, RuntimeError> {
        if let Some(gate) = &self.gate {
            let _ = gate.recv();
        }
        self.calls.lock().expect("calls").push(inputs.batch());
        thread::sleep(self.frame_time * inputs.batch() as u32);
        let behaviour = {
            let mut script = self.script.lock().expect("script");
            if script.is_empty() { Behaviour::Answer } else { script.remove(0) }
        };
        let positions = inputs.get(POSITIONS).expect("positions");
        if self.panic_at.is_some_and(|limit| positions.iter().any(|v| v.abs() >= limit)) {
            panic!("the fake broke on its input");
        }
        let answer = NamedTensors::new().with(DX, positions.mapv(|v| self.dx_scale * v));
        let answer = match self.dx_std {
            Some(std) => answer.with(DX_STD, Array2::from_elem((inputs.batch(), PARTICLES), std).into_dyn()),
            None => answer,
        };
        match behaviour {
            Behaviour::Answer => Ok(answer),
            Behaviour::Fail => Err(RuntimeError::Inference("the fake failed".into())),
            Behaviour::Panic => panic!("the fake panicked"),
            Behaviour::DropRows => Ok(NamedTensors::new().with(DX, positions.slice_axis(Axis(0), Slice::from(0..1)).to_owned())),
        }
    }
}
