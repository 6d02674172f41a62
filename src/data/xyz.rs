//! Extended XYZ, the trajectory text format that ASE, OVITO and VMD open.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::Path,
};

use ndarray::ArrayView3;

use super::{DataError, PARTICLES};

/// Writes `frames` [frames, 12, 3] as extended XYZ: one block per frame, its step in
/// the comment line; the particles are labelled by number (`P0` … `P11`), which the
/// readers treat as the species.
pub fn write_xyz(path: &Path, frames: ArrayView3<f32>, steps: &[u32]) -> Result<(), DataError> {
    let io = |source| DataError::Io { path: path.display().to_string(), source };
    let mut out = BufWriter::new(File::create(path).map_err(io)?);
    for (frame, step) in frames.outer_iter().zip(steps) {
        writeln!(out, "{PARTICLES}").map_err(io)?;
        writeln!(out, "Properties=species:S:1:pos:R:3 step={step} pbc=\"F F F\"").map_err(io)?;
        for (index, particle) in frame.outer_iter().enumerate() {
            writeln!(out, "P{index} {:.8} {:.8} {:.8}", particle[0], particle[1], particle[2]).map_err(io)?;
        }
    }
    out.flush().map_err(io)
}

#[cfg(test)]
mod tests {
    use ndarray::Array3;

    use super::*;

    #[test]
    fn each_frame_is_a_block_with_its_step() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.xyz");
        let frames = Array3::from_shape_fn((2, PARTICLES, 3), |(t, p, d)| (t * 100 + p * 3 + d) as f32);
        write_xyz(&path, frames.view(), &[0, 5]).expect("writes");
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2 * (PARTICLES + 2));
        assert_eq!(lines[0], "12");
        assert!(lines[1].contains("Properties=species:S:1:pos:R:3") && lines[1].contains("step=0"));
        assert_eq!(lines[PARTICLES + 3], "Properties=species:S:1:pos:R:3 step=5 pbc=\"F F F\"");
        assert_eq!(lines[PARTICLES + 4 + 11], "P11 133.00000000 134.00000000 135.00000000");
    }
}
