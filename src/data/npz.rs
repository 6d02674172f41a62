//! The study's trajectory format: an `.npz` holding `arr`, float `[frames, 12, 2|3]`.

use std::{fs::File, io::BufWriter, path::Path};

use ndarray::{Array3, ArrayD, Axis, Ix3, s};
use ndarray_npy::{NpzReader, NpzWriter, ReadNpzError};

use super::{DIMS, DataError, PARTICLES, Trajectory, check_finite};

const ARRAY_NAME: &str = "arr";

/// Loads `arr` (`[frames, 12, 2|3]`, float or integer; stored plain or compressed, as
/// `np.savez` and `np.savez_compressed` write); 2-D data gets z = 0.
pub fn load_npz(path: &Path) -> Result<Trajectory, DataError> {
    load_npz_described(path).map(|(trajectory, _)| trajectory)
}

/// [`load_npz`], and the element type the array was stored as (`float64`, `int32`, …),
/// which a model card records when it was not float.
pub fn load_npz_described(path: &Path) -> Result<(Trajectory, &'static str), DataError> {
    let (positions, dtype) = read_positions(path)?;
    let trajectory = Trajectory::new(positions).map_err(|e| DataError::invalid(path, format!("array '{ARRAY_NAME}': {e}")))?;
    Ok((trajectory, dtype))
}

/// The frames of `arr` as float32 `[frames, 12, 3]`, however few (one is enough to
/// predict from), all finite.
pub fn load_frames(path: &Path) -> Result<Array3<f32>, DataError> {
    let (positions, _) = read_positions(path)?;
    if positions.is_empty() {
        return Err(DataError::invalid(path, format!("array '{ARRAY_NAME}' holds no frames")));
    }
    check_finite(&positions).map_err(|e| DataError::invalid(path, format!("array '{ARRAY_NAME}': {e}")))?;
    Ok(positions)
}

/// `arr` checked for its shape and lifted to 3-D.
fn read_positions(path: &Path) -> Result<(Array3<f32>, &'static str), DataError> {
    let file = File::open(path).map_err(|source| DataError::Io { path: path.display().to_string(), source })?;
    let mut npz = NpzReader::new(file).map_err(|e| DataError::invalid(path, format!("not a readable .npz archive ({e})")))?;
    let names = npz.names().map_err(|e| DataError::invalid(path, e.to_string()))?;
    if !names.iter().any(|n| n == ARRAY_NAME || n == "arr.npy") {
        return Err(DataError::invalid(path, format!("no array named '{ARRAY_NAME}' (found: {})", names.join(", "))));
    }
    let (raw, dtype) = read_numeric_array(&mut npz).map_err(|e| DataError::invalid(path, format!("array '{ARRAY_NAME}': {e}")))?;
    let raw =
        raw.into_dimensionality::<Ix3>().map_err(|_| DataError::invalid(path, format!("array '{ARRAY_NAME}' must have shape [frames, {PARTICLES}, 2|3]")))?;
    let (frames, particles, dims) = raw.dim();
    if particles != PARTICLES || !(dims == 2 || dims == 3) {
        return Err(DataError::invalid(path, format!("array '{ARRAY_NAME}' has shape [{frames}, {particles}, {dims}], expected [frames, {PARTICLES}, 2|3]")));
    }
    let mut positions = Array3::<f32>::zeros((frames, PARTICLES, DIMS));
    positions.slice_mut(s![.., .., ..dims]).assign(&raw.mapv(|v| v as f32));
    Ok((positions, dtype))
}

/// `arr` as float64, whichever of the usual numeric types it was stored as.
fn read_numeric_array(npz: &mut NpzReader<File>) -> Result<(ArrayD<f64>, &'static str), ReadNpzError> {
    fn read<T: ndarray_npy::ReadableElement + Copy>(npz: &mut NpzReader<File>, to_f64: fn(T) -> f64) -> Result<ArrayD<f64>, ReadNpzError> {
        Ok(npz.by_name::<ndarray::OwnedRepr<T>, ndarray::IxDyn>(ARRAY_NAME)?.mapv(to_f64))
    }
    type Reader = fn(&mut NpzReader<File>) -> Result<ArrayD<f64>, ReadNpzError>;
    let readers: [(&'static str, Reader); 5] = [
        ("float64", |npz| read::<f64>(npz, |v| v)),
        ("float32", |npz| read::<f32>(npz, f64::from)),
        ("int64", |npz| read::<i64>(npz, |v| v as f64)),
        ("int32", |npz| read::<i32>(npz, f64::from)),
        ("int16", |npz| read::<i16>(npz, f64::from)),
    ];
    let mut last = None;
    for (dtype, reader) in readers {
        match reader(npz) {
            Ok(array) => return Ok((array, dtype)),
            // Another element type: try the next.
            Err(e @ ReadNpzError::Npy(ndarray_npy::ReadNpyError::WrongDescriptor(_))) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("at least one reader"))
}

/// Writes `arr` as float64, keeping only x and y when `planar` (the study's 2-D format).
pub fn save_npz(trajectory: &Trajectory, path: &Path, planar: bool) -> Result<(), DataError> {
    let io = |source| DataError::Io { path: path.display().to_string(), source };
    let file = File::create(path).map_err(io)?;
    let dims = if planar { 2 } else { DIMS };
    let array = trajectory.positions().slice_axis(Axis(2), (0..dims).into()).mapv(f64::from);
    let mut npz = NpzWriter::new(BufWriter::new(file));
    npz.add_array(ARRAY_NAME, &array).and_then(|_| npz.finish().map(drop)).map_err(|e| DataError::invalid(path, format!("writing '{ARRAY_NAME}': {e}")))
}

/// An array to write into an `.npz`: float32 values, or int64 indices (of frames, say).
pub enum NpzArray<'a> {
    Float(ndarray::ArrayViewD<'a, f32>),
    Index(ndarray::ArrayViewD<'a, i64>),
}

impl<'a, D: ndarray::Dimension> From<&'a ndarray::Array<f32, D>> for NpzArray<'a> {
    fn from(array: &'a ndarray::Array<f32, D>) -> Self {
        Self::Float(array.view().into_dyn())
    }
}

impl<'a, D: ndarray::Dimension> From<&'a ndarray::Array<i64, D>> for NpzArray<'a> {
    fn from(array: &'a ndarray::Array<i64, D>) -> Self {
        Self::Index(array.view().into_dyn())
    }
}

/// Writes arrays by name (e.g. `dx`, `next` and `frame` of a prediction) as an `.npz`
/// numpy reads with `np.load`.
pub fn save_arrays(path: &Path, arrays: &[(&str, NpzArray)]) -> Result<(), DataError> {
    let io = |source| DataError::Io { path: path.display().to_string(), source };
    let mut npz = NpzWriter::new(BufWriter::new(File::create(path).map_err(io)?));
    for (name, array) in arrays {
        let written = match array {
            NpzArray::Float(values) => npz.add_array(*name, values),
            NpzArray::Index(values) => npz.add_array(*name, values),
        };
        written.map_err(|e| DataError::invalid(path, format!("writing '{name}': {e}")))?;
    }
    npz.finish().map(drop).map_err(|e| DataError::invalid(path, format!("finishing the archive: {e}")))
}
