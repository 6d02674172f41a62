//! Reading the study's .npz format, and clear errors for files that are not it; every
//! loader of outside files (npz, safetensors, ONNX) given arbitrary bytes.

use crate::common;

use std::{fs::File, io::Write, path::Path};

use equiserve::data::{SimulationConfig, load_npz, load_npz_described, save_npz, simulate};
use ndarray::{Array, Array2, Array3};
use ndarray_npy::NpzWriter;

fn write_npz<A: ndarray_npy::WritableElement, D: ndarray::Dimension>(path: &Path, name: &str, array: &Array<A, D>) {
    let mut npz = NpzWriter::new(File::create(path).expect("create"));
    npz.add_array(name, array).expect("add");
    npz.finish().expect("finish");
}

fn error_of(path: &Path) -> String {
    load_npz(path).expect_err("file must be rejected").to_string()
}

#[test]
fn the_studys_trajectory_loads_lifted_to_3d() {
    let trajectory = load_npz(&common::study_data()).expect("paths.npz loads");
    let x = trajectory.positions();
    assert_eq!(x.shape(), &[2048, 12, 3]);
    // First frame, first particles, as stored (float64 in the file).
    assert!((x[[0, 0, 0]] - 26.025).abs() < 1e-3 && (x[[0, 0, 1]] - 6.058).abs() < 1e-3);
    assert!((x[[0, 1, 0]] - 26.119).abs() < 1e-3 && (x[[0, 1, 1]] - 6.396).abs() < 1e-3);
    assert!(x.slice(ndarray::s![.., .., 2]).iter().all(|z| *z == 0.0), "2-D data gets z = 0");
}

#[test]
fn simulated_trajectories_round_trip_in_both_layouts() {
    let dir = tempfile::tempdir().expect("temp dir");
    for planar in [true, false] {
        let trajectory = simulate(&SimulationConfig { frames: 20, planar, equilibration_steps: 10, ..Default::default() });
        let path = dir.path().join(format!("planar_{planar}.npz"));
        save_npz(&trajectory, &path, planar).expect("saves");
        assert_eq!(load_npz(&path).expect("loads"), trajectory);
    }
    // float32 files load too.
    let path = dir.path().join("f32.npz");
    let positions = Array3::<f32>::from_shape_fn((4, 12, 3), |(f, p, d)| (f * 100 + p * 3 + d) as f32);
    write_npz(&path, "arr", &positions);
    assert_eq!(load_npz(&path).expect("loads").positions(), &positions);
}

#[test]
fn bad_files_get_errors_naming_file_and_problem() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = |name: &str| dir.path().join(name);

    write_npz(&path("other_name.npz"), "positions", &Array3::<f64>::zeros((4, 12, 2)));
    let message = error_of(&path("other_name.npz"));
    assert!(message.contains("other_name.npz") && message.contains("no array named 'arr'"), "{message}");
    assert!(message.contains("positions"), "lists what the file has: {message}");

    write_npz(&path("eleven.npz"), "arr", &Array3::<f64>::zeros((4, 11, 2)));
    let message = error_of(&path("eleven.npz"));
    assert!(message.contains("eleven.npz") && message.contains("[4, 11, 2]"), "{message}");

    write_npz(&path("flat.npz"), "arr", &Array2::<f64>::zeros((4, 24)));
    assert!(error_of(&path("flat.npz")).contains("must have shape [frames, 12, 2|3]"));

    let mut with_nan = Array3::<f64>::zeros((4, 12, 3));
    with_nan[[2, 5, 1]] = f64::NAN;
    write_npz(&path("nan.npz"), "arr", &with_nan);
    let message = error_of(&path("nan.npz"));
    assert!(message.contains("nan.npz") && message.contains("non-finite") && message.contains("frame 2, particle 5, coordinate 1"), "{message}");

    write_npz(&path("one_frame.npz"), "arr", &Array3::<f64>::zeros((1, 12, 3)));
    assert!(error_of(&path("one_frame.npz")).contains("at least 2 frames"));

    write_npz(&path("bools.npz"), "arr", &Array3::<bool>::from_elem((4, 12, 3), false));
    let message = error_of(&path("bools.npz"));
    assert!(message.contains("bools.npz") && message.contains("array 'arr'"), "{message}");

    File::create(path("text.npz")).expect("create").write_all(b"not a zip").expect("write");
    let message = error_of(&path("text.npz"));
    assert!(message.contains("text.npz") && message.contains("not a readable .npz"), "{message}");

    let message = error_of(&path("missing.npz"));
    assert!(message.contains("missing.npz"), "{message}");
}

#[test]
fn integer_and_compressed_arrays_load_as_floats() {
    let dir = tempfile::tempdir().expect("temp dir");
    let counts = Array3::from_shape_fn((5, 12, 2), |(t, p, d)| (t * 100 + p * 10 + d) as i64);
    let path = dir.path().join("ints.npz");
    write_npz(&path, "arr", &counts);
    let (trajectory, dtype) = load_npz_described(&path).expect("int64 loads");
    assert_eq!(dtype, "int64");
    assert_eq!(trajectory.positions()[[3, 4, 1]], 341.0);
    assert_eq!(trajectory.positions()[[3, 4, 2]], 0.0);

    // What np.savez_compressed writes: arr.npy deflated in the zip.
    use ndarray_npy::WriteNpyExt;
    let floats = counts.mapv(|v| v as f32 / 8.0);
    let mut npy = Vec::new();
    floats.write_npy(&mut npy).expect("npy bytes");
    let path = dir.path().join("compressed.npz");
    let mut zip = zip::ZipWriter::new(File::create(&path).expect("create"));
    let deflated = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("arr.npy", deflated).expect("entry");
    zip.write_all(&npy).expect("write");
    zip.finish().expect("finish");
    let (trajectory, dtype) = load_npz_described(&path).expect("a compressed npz loads");
    assert_eq!(dtype, "float32");
    assert_eq!(trajectory.positions()[[3, 4, 1]], 341.0 / 8.0);
}

mod arbitrary_bytes {
    use equiserve::{
        data::load_npz,
        onnx::{ExecutionDevice, OnnxModel, Signature},
        train::read_safetensors,
    };
    use proptest::prelude::*;

    /// Bytes that start like the real thing more often than chance would.
    fn file_bytes(magic: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
        (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..2048))
            .prop_map(move |(with_magic, tail)| if with_magic { [magic, &tail].concat() } else { tail })
    }

    fn written(bytes: &[u8], name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        (dir, path)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

        #[test]
        fn npz_files_of_arbitrary_bytes_are_refused_with_the_file_named(bytes in file_bytes(b"PK\x03\x04")) {
            let (_dir, path) = written(&bytes, "fuzz.npz");
            if let Err(e) = load_npz(&path) {
                prop_assert!(e.to_string().contains("fuzz.npz"), "{e}");
            }
        }

        #[test]
        fn safetensors_of_arbitrary_bytes_are_refused(bytes in file_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00{")) {
            let (_dir, path) = written(&bytes, "weights.safetensors");
            let _ = read_safetensors(&path);
        }

        #[test]
        fn onnx_files_of_arbitrary_bytes_are_refused(bytes in file_bytes(b"\x08\x0a\x12")) {
            if equiserve::onnx::init_runtime(None).is_err() {
                return Ok(());
            }
            let (_dir, path) = written(&bytes, "model.onnx");
            prop_assert!(OnnxModel::load(&path, &Signature::dynamics(1), ExecutionDevice::Cpu, 1).is_err());
        }
    }
}
