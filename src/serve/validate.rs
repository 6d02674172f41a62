//! Checking what a request sends before it reaches a model.

use ndarray::{Array3, Array4};

use super::ServeError;
use crate::data::{DIMS, FRAME_LEN, PARTICLES};

/// A request's model version: empty for the newest ready one, else a positive integer.
pub fn version(version: &str) -> Result<Option<u64>, ServeError> {
    if version.is_empty() {
        return Ok(None);
    }
    match version.parse::<u64>() {
        Ok(number) if number > 0 => Ok(Some(number)),
        _ => Err(ServeError::InvalidArgument(format!(
            "model version '{}': expected a positive integer, or empty for the newest",
            version.chars().take(32).collect::<String>()
        ))),
    }
}

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
    finite("positions", &positions)?;
    Ok(Array3::from_shape_vec((batch, PARTICLES, DIMS), positions).expect("length checked above"))
}

fn finite(field: &str, values: &[f32]) -> Result<(), ServeError> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(index) => Err(ServeError::InvalidArgument(format!(
            "{field}[{index}] is {} (frame {}, particle {}, coordinate {}): values must be finite",
            values[index],
            index / FRAME_LEN,
            index % FRAME_LEN / DIMS,
            index % DIMS
        ))),
    }
}

/// Checks `previous` against a model of `history_frames` frames and `batch` frames in
/// `positions`: empty for K = 1, else [batch, K − 1, 12, 3], finite.
pub fn previous(previous: Vec<f32>, batch: usize, history_frames: usize) -> Result<Option<Array4<f32>>, ServeError> {
    let held = history_frames - 1;
    if held == 0 {
        if previous.is_empty() {
            return Ok(None);
        }
        return Err(ServeError::InvalidArgument(format!(
            "previous holds {} floats, but this model reads one frame (history_frames 1): send positions only",
            previous.len()
        )));
    }
    let expected = batch * held * FRAME_LEN;
    if previous.len() != expected {
        return Err(ServeError::InvalidArgument(format!(
            "previous has {} floats; this model reads history_frames {history_frames}, so it needs the {held} frame(s) before \
             each of the {batch} frame(s): [{batch}, {held}, {PARTICLES}, {DIMS}] = {expected} floats, oldest first",
            previous.len()
        )));
    }
    finite("previous", &previous)?;
    Ok(Some(Array4::from_shape_vec((batch, held, PARTICLES, DIMS), previous).expect("length checked above")))
}

/// Checks the initial windows of a rollout of B systems (1 ≤ B ≤ `max_batch`) and its
/// step count: B × steps, the system-steps it will compute, is at most `max_system_steps`.
pub fn rollout_start(
    positions: Vec<f32>,
    earlier: Vec<f32>,
    history_frames: usize,
    steps: u32,
    limits: (usize, u64),
) -> Result<(Array3<f32>, Option<Array4<f32>>), ServeError> {
    let (max_batch, max_system_steps) = limits;
    let start = frames(positions, max_batch)?;
    let systems = start.dim().0;
    let earlier = previous(earlier, systems, history_frames)?;
    let system_steps = systems as u64 * u64::from(steps);
    if steps == 0 || system_steps > max_system_steps {
        let most = max_system_steps / systems as u64;
        return Err(ServeError::InvalidArgument(format!(
            "steps must be between 1 and {most} for {systems} system(s) (at most {max_system_steps} system-steps per rollout), got {steps}"
        )));
    }
    Ok((start, earlier))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Floats as a client may send them: ordinary, huge, or not numbers at all.
    fn floats(max_len: usize) -> impl Strategy<Value = Vec<f32>> {
        let value = prop_oneof![4 => -10.0f32..10.0, 1 => any::<f32>(), 1 => Just(f32::NAN), 1 => Just(f32::INFINITY)];
        proptest::collection::vec(value, 0..max_len)
    }

    proptest! {
        #[test]
        fn any_request_is_accepted_whole_or_refused_with_a_reason(
            positions in floats(4 * FRAME_LEN + 3),
            earlier in floats(4 * FRAME_LEN + 3),
            history_frames in 1usize..4,
            steps in 0u32..40,
        ) {
            match frames(positions.clone(), 3) {
                Ok(x) => prop_assert!(x.len() == positions.len() && x.iter().all(|v| v.is_finite())),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
            if let Ok(window) = previous(earlier.clone(), 2, history_frames) {
                prop_assert_eq!(window.map_or(0, |w| w.len()), earlier.len());
            }
            if let Ok((start, window)) = rollout_start(positions, earlier, history_frames, steps, (3, 30)) {
                prop_assert!(start.dim().0 as u64 * u64::from(steps) <= 30);
                prop_assert_eq!(window.is_some(), history_frames > 1);
            }
        }
    }

    #[test]
    fn frames_must_be_whole_bounded_and_finite() {
        let frame = [0.5_f32; FRAME_LEN];
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
    fn previous_frames_must_fit_the_models_window() {
        let frame = vec![0.5_f32; FRAME_LEN];
        assert!(previous(Vec::new(), 2, 1).expect("none for one frame").is_none());
        let message = |result: Result<Option<Array4<f32>>, ServeError>| result.expect_err("invalid").to_string();
        assert!(message(previous(frame.clone(), 1, 1)).contains("history_frames 1"));
        assert_eq!(previous(frame.repeat(6), 2, 4).expect("valid").expect("some").dim(), (2, 3, PARTICLES, DIMS));
        let missing = message(previous(Vec::new(), 2, 4));
        assert!(missing.contains("history_frames 4") && missing.contains("[2, 3, 12, 3]"), "{missing}");
        assert!(message(previous(frame.repeat(5), 2, 4)).contains("216 floats"));
        let mut bad = frame.repeat(3);
        bad[40] = f32::INFINITY;
        assert!(message(previous(bad, 1, 4)).contains("previous[40]"));
    }

    #[test]
    fn rollouts_start_from_whole_windows_and_bounded_system_steps() {
        let frame = vec![0.5_f32; FRAME_LEN];
        assert!(rollout_start(frame.clone(), Vec::new(), 1, 10, (4, 10)).is_ok());
        assert!(rollout_start(frame.clone(), frame.repeat(2), 3, 10, (4, 10)).expect("valid").1.is_some());
        assert!(rollout_start(frame.clone(), Vec::new(), 3, 10, (4, 10)).expect_err("no window").to_string().contains("history_frames 3"));
        let (ensemble, windows) = rollout_start(frame.repeat(2), frame.repeat(4), 3, 5, (4, 10)).expect("an ensemble of two");
        assert_eq!((ensemble.dim().0, windows.expect("windows").dim().1), (2, 2));
        assert!(rollout_start(frame.repeat(2), Vec::new(), 1, 6, (4, 10)).expect_err("12 system-steps").to_string().contains("between 1 and 5 for 2"));
        assert!(rollout_start(frame.repeat(5), Vec::new(), 1, 1, (4, 10)).expect_err("five systems").to_string().contains("limit of 4"));
        assert!(rollout_start(frame.clone(), Vec::new(), 1, 0, (4, 10)).expect_err("no steps").to_string().contains("between 1 and 10"));
        assert!(rollout_start(frame[1..].to_vec(), Vec::new(), 1, 1, (4, 10)).is_err());
    }
}
