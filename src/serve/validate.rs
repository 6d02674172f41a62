//! Checking what a request sends before it reaches a model.

use ndarray::Array3;

use super::ServeError;
use crate::data::{DIMS, FRAME_LEN, PARTICLES};

/// Checks a packed [batch, 12, 3] array: whole frames, 1..=max_batch of them, all finite.
pub fn frames(positions: Vec<f32>, max_batch: usize) -> Result<Array3<f32>, ServeError> {
    let invalid = |message: String| Err(ServeError::InvalidArgument(message));
    if positions.is_empty() {
        return invalid("positions is empty: send at least one frame of 12×3 floats".into());
    }
    if !positions.len().is_multiple_of(FRAME_LEN) {
        return invalid(format!(
            "positions has {} floats, not a multiple of {FRAME_LEN} (frames of {PARTICLES} particles × {DIMS} coordinates)",
            positions.len()
        ));
    }
    let batch = positions.len() / FRAME_LEN;
    if batch > max_batch {
        return invalid(format!("batch of {batch} frames exceeds the limit of {max_batch}"));
    }
    if let Some(index) = positions.iter().position(|v| !v.is_finite()) {
        return invalid(format!(
            "positions[{index}] is {} (frame {}, particle {}, coordinate {}): values must be finite",
            positions[index],
            index / FRAME_LEN,
            index % FRAME_LEN / DIMS,
            index % DIMS
        ));
    }
    Ok(Array3::from_shape_vec((batch, PARTICLES, DIMS), positions).expect("length checked above"))
}

/// Checks the initial frame of a rollout and its step count.
pub fn rollout_start(positions: Vec<f32>, steps: u32, max_steps: u32) -> Result<Array3<f32>, ServeError> {
    if positions.len() != FRAME_LEN {
        return Err(ServeError::InvalidArgument(format!(
            "rollout starts from one frame of {FRAME_LEN} floats ({PARTICLES}×{DIMS}), got {}",
            positions.len()
        )));
    }
    let start = frames(positions, 1)?;
    if steps == 0 || steps > max_steps {
        return Err(ServeError::InvalidArgument(format!("steps must be between 1 and {max_steps}, got {steps}")));
    }
    Ok(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_must_be_whole_bounded_and_finite() {
        let frame = vec![0.5_f32; FRAME_LEN];
        assert_eq!(frames(frame.repeat(2), 2).expect("valid").dim(), (2, PARTICLES, DIMS));
        let message = |result: Result<Array3<f32>, ServeError>| result.expect_err("invalid").to_string();
        assert!(message(frames(Vec::new(), 2)).contains("empty"));
        assert!(message(frames(vec![0.0; 35], 2)).contains("not a multiple of 36"));
        assert!(message(frames(frame.repeat(3), 2)).contains("exceeds the limit of 2"));
        let mut bad = frame.repeat(2);
        bad[36 + 3 * 4 + 1] = f32::NAN;
        assert!(message(frames(bad, 2)).contains("frame 1, particle 4, coordinate 1"));
    }

    #[test]
    fn rollouts_start_from_one_frame_and_a_bounded_step_count() {
        let frame = vec![0.5_f32; FRAME_LEN];
        assert!(rollout_start(frame.clone(), 10, 10).is_ok());
        assert!(rollout_start(frame.repeat(2), 10, 10).expect_err("two frames").to_string().contains("one frame"));
        assert!(rollout_start(frame.clone(), 0, 10).expect_err("no steps").to_string().contains("between 1 and 10"));
        assert!(rollout_start(frame, 11, 10).is_err());
    }
}
