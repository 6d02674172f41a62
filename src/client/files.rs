//! What `equiserve-client` does for people: list the models, show a card, predict the
//! frames of a file, roll out from a frame of a trajectory into a file.

use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2, Array3, Array4, Axis};
use tokio_stream::StreamExt;

use super::{Client, ConnectError, Windows};
use crate::{
    data::{DIMS, DataError, FRAME_LEN, PARTICLES, check_species, load_frames, save_arrays, write_ensemble_xyz},
    proto::v1::{GetModelRequest, ListModelsRequest, ModelSummary, PredictRequest, RolloutRequest},
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The server's answer, as one line: the code and its message.
    #[error("the server said {code:?}: {message}")]
    Server { code: tonic::Code, message: String },
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("{0}")]
    Usage(String),
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        ClientError::Server { code: status.code(), message: status.message().to_string() }
    }
}

/// A served model and the version asked for (`None`: the newest ready one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelChoice {
    pub name: String,
    pub version: Option<u64>,
}

impl ModelChoice {
    /// The version as requests carry it (empty: the newest ready one).
    fn version_field(&self) -> String {
        self.version.map(|v| v.to_string()).unwrap_or_default()
    }

    fn info_request(&self) -> GetModelRequest {
        GetModelRequest { name: self.name.clone(), version: self.version_field() }
    }
}

impl std::fmt::Display for ModelChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.version {
            Some(version) => write!(f, "{} version {version}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Frames per Predict call when a file holds more (the server's default limit is 4,096).
const FRAMES_PER_CALL: usize = 1024;

pub async fn list(client: &mut Client) -> Result<Vec<ModelSummary>, ClientError> {
    Ok(client.list_models(ListModelsRequest {}).await?.into_inner().models)
}

/// The model's card as the server holds it (JSON).
pub async fn card(client: &mut Client, model: &ModelChoice) -> Result<String, ClientError> {
    Ok(client.get_model(model.info_request()).await?.into_inner().card_json)
}

async fn history_frames(client: &mut Client, model: &ModelChoice) -> Result<usize, ClientError> {
    let info = client.get_model(model.info_request()).await?.into_inner();
    Ok(info.summary.map_or(1, |summary| summary.history_frames.max(1) as usize))
}

/// What [`predict`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Predicted {
    /// The first frame of the file predicted from (K − 1 for a model of K frames: the
    /// frames before it are its first window).
    pub first_frame: usize,
    pub frames: usize,
}

/// dx and x + dx for every frame of `input` (`arr` [frames, 12, 2|3]) that has the
/// model's window before it, written to `output` as `dx` and `next` [frames, 12, 3].
pub async fn predict(client: &mut Client, model: &ModelChoice, input: &Path, output: &Path) -> Result<Predicted, ClientError> {
    let frames = load_frames(input)?;
    let history_frames = history_frames(client, model).await?;
    let windows = Windows::new(&frames, history_frames).ok_or_else(|| {
        ClientError::Usage(format!("{}: {} frame(s); {model} reads {history_frames} frames, so it needs at least that many", input.display(), frames.dim().0))
    })?;
    let (mut dx, mut next, mut dx_std) = (Vec::new(), Vec::new(), Vec::new());
    for start in (0..windows.len()).step_by(FRAMES_PER_CALL) {
        let count = FRAMES_PER_CALL.min(windows.len() - start);
        let (positions, previous) = windows.batch(start, count);
        let request = PredictRequest { model: model.name.clone(), version: model.version_field(), positions, previous };
        let answer = client.predict(request).await?.into_inner();
        dx.extend(answer.dx);
        next.extend(answer.next_positions);
        dx_std.extend(answer.dx_std);
    }
    let first_frame = history_frames - 1;
    let count = windows.len();
    let dx = packed(dx, count)?;
    let next = packed(next, count)?;
    // Which input frame each row predicts from: a model of K frames starts at K − 1.
    let frame = Array1::from_iter((first_frame..first_frame + count).map(|f| f as i64));
    let mut arrays = vec![("dx", (&dx).into()), ("next", (&next).into()), ("frame", (&frame).into())];
    let dx_std = if dx_std.is_empty() {
        None
    } else {
        Some(Array2::from_shape_vec((count, PARTICLES), dx_std).map_err(|_| ClientError::Usage("the server sent a dx_std that is not [frames, 12]".into()))?)
    };
    if let Some(dx_std) = &dx_std {
        arrays.push(("dx_std", dx_std.into()));
    }
    save_arrays(output, &arrays)?;
    Ok(Predicted { first_frame, frames: count })
}

fn packed(values: Vec<f32>, frames: usize) -> Result<Array3<f32>, ClientError> {
    Array3::from_shape_vec((frames, PARTICLES, DIMS), values)
        .map_err(|_| ClientError::Usage(format!("the server answered {frames} frame(s) with the wrong number of floats")))
}

/// The start snapshots and windows of an ensemble: each member's window is the
/// trajectory's (`start` and `previous`, one system) shifted by member − start.
fn ensemble_windows(members: &Array3<f32>, start: &[f32], previous: &[f32]) -> (Vec<f32>, Vec<f32>, usize) {
    let mut positions = Vec::with_capacity(members.len());
    let mut windows = Vec::with_capacity(members.dim().0 * previous.len());
    for member in members.outer_iter() {
        let shift: Vec<f32> = member.iter().zip(start).map(|(m, s)| m - s).collect();
        positions.extend(member.iter());
        for frame in previous.chunks(FRAME_LEN) {
            windows.extend(frame.iter().zip(&shift).map(|(p, d)| p + d));
        }
    }
    (positions, windows, members.dim().0)
}

/// Where a rollout goes: `.xyz` (extended XYZ) or `.npz` (`arr`, the trajectory format).
#[derive(Debug, Clone)]
pub struct RolloutPlan {
    pub model: ModelChoice,
    pub trajectory: PathBuf,
    /// The frame of `trajectory` to start from (the frames before it fill the window).
    pub frame: usize,
    pub steps: u32,
    pub emit_every: u32,
    /// .npz `arr` [B, 12, 2|3]: B start snapshots rolled out together in place of the
    /// start frame; for a history model each keeps the trajectory's recent displacements
    /// (its window is the trajectory's, shifted by member − start frame).
    pub ensemble: Option<PathBuf>,
    /// Sample each step with the model's noise (a stochastic model), rather than step
    /// its mean.
    pub sample: bool,
    /// The noise's seed; `None`: the server picks one (reported in [`RolloutWritten`]).
    pub seed: Option<u64>,
    /// Sampled members rolled out from the one start frame, each with its own noise.
    pub members: Option<usize>,
    pub output: PathBuf,
    /// The species every particle is written as in .xyz.
    pub species: String,
}

/// What a rollout wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolloutWritten {
    pub frames: usize,
    /// A sampled rollout's seed: the one asked for, or the server's pick.
    pub seed: Option<u64>,
}

/// Rolls `plan` out on the server, calling `progress(step)` for every frame that
/// arrives; writes the start frame and every emitted frame (an ensemble as [frames, B,
/// 12, 3] in `arr`, or every member's particles in each .xyz block).
pub async fn rollout(client: &mut Client, plan: &RolloutPlan, mut progress: impl FnMut(u32)) -> Result<RolloutWritten, ClientError> {
    let writes_xyz = match plan.output.extension().and_then(|e| e.to_str()) {
        Some("xyz") => true,
        Some("npz") => false,
        _ => return Err(ClientError::Usage(format!("{}: write .xyz (extended XYZ) or .npz", plan.output.display()))),
    };
    if writes_xyz {
        check_species(&plan.species).map_err(ClientError::Usage)?;
    }
    let frames = load_frames(&plan.trajectory)?;
    let held = history_frames(client, &plan.model).await? - 1;
    let count = frames.dim().0;
    if plan.frame >= count || plan.frame < held {
        return Err(ClientError::Usage(format!(
            "{}: frame {} is not one to start from: the file has frames 0..{}, and {} needs the {held} before the start",
            plan.trajectory.display(),
            plan.frame,
            count.saturating_sub(1),
            plan.model
        )));
    }
    let windows = Windows::new(&frames, held + 1).expect("the start frame has its window, checked above");
    let (start, previous) = windows.batch(plan.frame - held, 1);
    let (start, previous, members) = match (&plan.ensemble, plan.members) {
        (Some(_), Some(_)) => return Err(ClientError::Usage("--ensemble and --members both set: give the start snapshots one way".into())),
        (None, Some(_)) if !plan.sample => {
            return Err(ClientError::Usage("--members without --sample: copies of one deterministic rollout are the same trajectory".into()));
        }
        (None, Some(0)) => return Err(ClientError::Usage("--members 0: roll out at least one".into())),
        (None, Some(count)) => (start.repeat(count), previous.repeat(count), count),
        (None, None) => (start, previous, 1),
        (Some(path), None) => ensemble_windows(&load_frames(path)?, &start, &previous),
    };
    if plan.seed.is_some() && !plan.sample {
        return Err(ClientError::Usage("--seed without --sample: only a sampled rollout draws noise".into()));
    }
    let request = RolloutRequest {
        model: plan.model.name.clone(),
        version: plan.model.version_field(),
        positions: start.clone(),
        steps: plan.steps,
        emit_every: plan.emit_every,
        previous,
        sample: plan.sample,
        seed: plan.seed,
    };
    let mut stream = client.rollout(request).await?.into_inner();
    let mut positions = start;
    let mut steps = vec![0u32];
    let mut seed = None;
    while let Some(frame) = stream.next().await {
        let frame = frame?;
        seed = seed.or(frame.seed);
        if frame.positions.len() != members * FRAME_LEN {
            return Err(ClientError::Usage(format!("step {}: the server sent {} floats for {members} system(s)", frame.step, frame.positions.len())));
        }
        positions.extend(frame.positions);
        steps.push(frame.step);
        progress(frame.step);
    }
    let written = Array4::from_shape_vec((steps.len(), members, PARTICLES, DIMS), positions).expect("whole frames");
    match (writes_xyz, members) {
        (true, _) => write_ensemble_xyz(&plan.output, written.view(), &steps, &plan.species)?,
        (false, 1) => save_arrays(&plan.output, &[("arr", (&written.index_axis_move(Axis(1), 0)).into())])?,
        (false, _) => save_arrays(&plan.output, &[("arr", (&written).into())])?,
    }
    Ok(RolloutWritten { frames: steps.len(), seed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensemble_members_keep_the_trajectorys_recent_displacements() {
        let start: Vec<f32> = (0..FRAME_LEN).map(|i| i as f32).collect();
        // Two earlier frames of the window, oldest first.
        let previous: Vec<f32> = (0..2 * FRAME_LEN).map(|i| 100.0 + i as f32).collect();
        let members = Array3::from_shape_fn((2, PARTICLES, DIMS), |(m, p, d)| start[p * DIMS + d] + m as f32 * 0.5);
        let (positions, windows, count) = ensemble_windows(&members, &start, &previous);
        assert_eq!(count, 2);
        assert_eq!(positions, members.iter().copied().collect::<Vec<_>>());
        assert_eq!(windows.len(), 2 * previous.len());
        assert_eq!(&windows[..previous.len()], &previous[..], "member 0 is the start frame: its window is the trajectory's");
        assert!(windows[previous.len()..].iter().zip(&previous).all(|(w, p)| (w - (p + 0.5)).abs() < 1e-6), "member 1's window is shifted with it");
    }
}
