//! Extended XYZ, the trajectory text format that ASE, OVITO and VMD open.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::Path,
};

use ndarray::{ArrayView3, ArrayView4, Axis};

use super::{DataError, PARTICLES};

/// The species written for every particle unless told otherwise: ASE's dummy atom, which
/// ASE, OVITO and VMD all read (the particles are not atoms of any element).
pub const DEFAULT_SPECIES: &str = "X";

/// A species is one word of letters and digits: anything else would shift the columns.
pub fn check_species(species: &str) -> Result<(), String> {
    if species.is_empty() || !species.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(format!("species '{species}' is not a name readers take (letters and digits)"));
    }
    Ok(())
}

/// Writes `frames` [frames, 12, 3] as extended XYZ: one block per frame, its step in
/// the comment line; every particle is of `species`, its index in a `particle` column.
pub fn write_xyz(path: &Path, frames: ArrayView3<f32>, steps: &[u32], species: &str) -> Result<(), DataError> {
    write_ensemble_xyz(path, frames.insert_axis(Axis(1)), steps, species)
}

/// Writes an ensemble's `frames` [frames, B, 12, 3] as extended XYZ: every member's 12
/// particles in each step's block, with a `member` column when B > 1 (so that OVITO or
/// ASE can colour or select the members).
pub fn write_ensemble_xyz(path: &Path, frames: ArrayView4<f32>, steps: &[u32], species: &str) -> Result<(), DataError> {
    if let Err(message) = check_species(species) {
        return Err(DataError::Invalid { path: path.display().to_string(), message });
    }
    let io = |source| DataError::Io { path: path.display().to_string(), source };
    let mut out = BufWriter::new(File::create(path).map_err(io)?);
    let members = frames.len_of(Axis(1));
    let properties = if members > 1 { "species:S:1:pos:R:3:particle:I:1:member:I:1" } else { "species:S:1:pos:R:3:particle:I:1" };
    for (frame, step) in frames.outer_iter().zip(steps) {
        writeln!(out, "{}", members * PARTICLES).map_err(io)?;
        writeln!(out, "Properties={properties} step={step} pbc=\"F F F\"").map_err(io)?;
        for (member, system) in frame.outer_iter().enumerate() {
            for (index, particle) in system.outer_iter().enumerate() {
                write!(out, "{species} {:.8} {:.8} {:.8} {index}", particle[0], particle[1], particle[2]).map_err(io)?;
                if members > 1 {
                    write!(out, " {member}").map_err(io)?;
                }
                writeln!(out).map_err(io)?;
            }
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
        write_xyz(&path, frames.view(), &[0, 5], DEFAULT_SPECIES).expect("writes");
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2 * (PARTICLES + 2));
        assert_eq!(lines[0], "12");
        assert!(lines[1].contains("Properties=species:S:1:pos:R:3:particle:I:1") && lines[1].contains("step=0"));
        assert_eq!(lines[PARTICLES + 3], "Properties=species:S:1:pos:R:3:particle:I:1 step=5 pbc=\"F F F\"");
        assert_eq!(lines[PARTICLES + 4 + 11], "X 133.00000000 134.00000000 135.00000000 11");
        let ensemble = ndarray::Array4::from_shape_fn((2, 3, PARTICLES, 3), |(t, m, p, d)| (t * 1000 + m * 100 + p * 3 + d) as f32);
        write_ensemble_xyz(&path, ensemble.view(), &[0, 5], "Ar").expect("writes");
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2 * (3 * PARTICLES + 2));
        assert_eq!(lines[0], "36");
        assert!(lines[1].starts_with("Properties=species:S:1:pos:R:3:particle:I:1:member:I:1 step=0"));
        assert_eq!(lines[2 + PARTICLES + 1], "Ar 103.00000000 104.00000000 105.00000000 1 1");
        assert!(write_xyz(&path, frames.view(), &[0, 5], "P 1").is_err(), "a species with a space would shift the columns");
    }
}
