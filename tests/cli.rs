//! The binaries' command lines: outputs, and clear failures instead of panics.

mod common;

use std::process::{Command, Output};

use common::train_export;
use equiserve::{
    data::{SimulationConfig, Split, SplitConfig, Target, save_npz, simulate},
    train::target_rms,
};

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_clean_failure(output: &Output, expected: &[&str]) {
    let message = stderr(output);
    assert!(!output.status.success(), "should fail: {message}");
    assert!(!message.contains("panicked"), "panicked: {message}");
    for part in expected {
        assert!(message.contains(part), "{message:?} lacks {part:?}");
    }
}

#[test]
fn training_writes_model_card_and_plot_and_keeps_them_on_failure() {
    let out = tempfile::tempdir().expect("temp dir");
    let run = |extra: &[&str]| -> Output {
        train_export().args(["--frames", "200", "--epochs", "2", "--target", "x", "--shuffle", "--out"]).arg(out.path()).args(extra).output().expect("runs")
    };
    let output = run(&[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(summary.contains("mlp") && summary.contains("test MSE"), "summary table: {summary}");
    let model_dir = out.path().join("mlp");
    for file in ["model.onnx", "card.json", "loss.svg", "correlation.svg", "trajectory.svg"] {
        assert!(model_dir.join(file).is_file(), "{file} missing");
    }
    let report = std::fs::read_to_string(out.path().join("REPORT.md")).expect("REPORT.md");
    assert!(
        report.contains("| mlp | 8868 | simulator | 2 | yes |")
            && report.contains(&format!(" ({cores_in_report} sessions) |", cores_in_report = std::thread::available_parallelism().map_or(1, |n| n.get()))),
        "{report}"
    );
    let card: serde_json::Value = crate::common::card_of(&model_dir);
    assert_eq!(card["metrics"]["target"], "x");
    assert_eq!(card["training"]["config"]["shuffle"], true);
    // --output-scale auto: the root mean square of the same run's training targets.
    let trajectory = simulate(&SimulationConfig { frames: 200, seed: 0, ..Default::default() });
    let split = Split::new(&trajectory, &SplitConfig { train_pairs: None, train_fraction: 0.8 }).expect("split");
    let expected = target_rms(&split, Target::X).expect("positions are not all zero");
    let scale = card["training"]["config"]["output_scale"].as_f64().expect("output scale");
    assert!((scale - expected).abs() < 1e-9 * expected, "output scale {scale} vs {expected}");
    assert_eq!(card["data"]["source"], "simulator");
    assert_eq!(card["split"]["train_pairs"], 159);
    assert_eq!(card["onnx"]["inputs"][0]["shape"], serde_json::json!(["batch", "12", "3"]));
    assert_eq!(card["onnx"]["outputs"][0]["name"], "dx");
    assert_eq!(card["onnx"]["inputs"].as_array().map(Vec::len), Some(1), "one frame read: no window input");
    assert!(card["inference"]["frames_per_second_batch_32"].as_f64().expect("throughput") > 0.0);
    // Through the server's default pool: one single-threaded session per core.
    assert!(card["inference"]["frames_per_second_batch_32_pooled"].as_f64().expect("pooled throughput") > 0.0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    assert_eq!(card["inference"]["pool_workers"].as_u64(), Some(cores));

    // Another model trained into the same folder joins the report; the first stays in it.
    // This one holds out the last quarter of its training pairs to choose its epoch.
    let output = train_export()
        .args(["--model", "e3small", "--frames", "200", "--epochs", "3", "--validation", "0.25", "--out"])
        .arg(out.path())
        .output()
        .expect("runs");
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("the last 40 training pairs held out for validation"), "{}", stderr(&output));
    let report = std::fs::read_to_string(out.path().join("REPORT.md")).expect("REPORT.md");
    assert!(report.contains("| e3small | 344 | simulator | 3 (kept ") && report.contains("| mlp | 8868 | simulator | 2 | yes |"), "{report}");
    let card: serde_json::Value = crate::common::card_of(&out.path().join("e3small"));
    let history = card["training"]["history"].as_array().expect("history");
    assert!(history.iter().all(|epoch| epoch["validation_mse"].as_f64().is_some_and(f64::is_finite)), "{history:?}");
    let loss_plot = std::fs::read_to_string(out.path().join("e3small/loss.svg")).expect("loss.svg");
    assert!(loss_plot.contains("validation (kept epoch"), "no validation curve in the loss plot");

    // Throughput measured again for every model in the folder, written into the cards.
    let measure = || train_export().args(["report", "--measure", "--dir"]).arg(out.path()).output().expect("runs");
    let output = measure();
    assert!(output.status.success(), "{}", stderr(&output));
    for name in ["mlp", "e3small"] {
        assert!(stderr(&output).contains(&format!("{name}: ")) && stderr(&output).contains("frames/s at batch 1"), "{}", stderr(&output));
    }
    // A card whose data cannot be read is named with the file.
    let card_file = model_dir.join("card.json");
    let original = std::fs::read_to_string(&card_file).expect("card");
    let mut moved: serde_json::Value = serde_json::from_str(&original).expect("json");
    moved["data"]["source"] = "/nowhere/moved.npz".into();
    moved["data"]["simulation"] = serde_json::Value::Null;
    std::fs::write(&card_file, moved.to_string()).expect("write card");
    assert_clean_failure(&measure(), &["/nowhere/moved.npz", "mlp"]);
    std::fs::write(&card_file, original).expect("restore card");

    // A run that fails on bad data leaves the previous model untouched.
    let before = std::fs::read(model_dir.join("model.onnx")).expect("model");
    let output = run(&["--data", "/nonexistent/paths.npz"]);
    assert_clean_failure(&output, &["/nonexistent/paths.npz"]);
    assert_eq!(std::fs::read(model_dir.join("model.onnx")).expect("model"), before);

    // A write that fails half-way (as on a full disk: here the card's staged file cannot
    // be written) leaves every earlier file as it was, and nothing staged behind.
    let files = ["model.onnx", "card.json", "loss.svg", "rollout.svg"];
    let read_all = || files.map(|file| std::fs::read(model_dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}")));
    let (earlier, earlier_report) = (read_all(), std::fs::read(out.path().join("REPORT.md")).expect("report"));
    let blocker = model_dir.join("card.json.partial");
    std::fs::create_dir(&blocker).expect("block the card's staged file");
    assert_clean_failure(&run(&["--seed", "9"]), &["card.json.partial"]);
    assert!(read_all() == earlier, "an earlier file changed");
    assert_eq!(std::fs::read(out.path().join("REPORT.md")).expect("report"), earlier_report);
    std::fs::remove_dir(&blocker).expect("unblock");
    let staged: Vec<_> = std::fs::read_dir(&model_dir)
        .expect("list")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".partial"))
        .collect();
    assert!(staged.is_empty(), "left behind: {staged:?}");
}

#[test]
fn same_seed_same_model() {
    let (a, b) = (tempfile::tempdir().expect("a"), tempfile::tempdir().expect("b"));
    for dir in [&a, &b] {
        let output = train_export().args(["--frames", "120", "--epochs", "2", "--out"]).arg(dir.path()).output().expect("runs");
        assert!(output.status.success(), "{}", stderr(&output));
    }
    let model = |dir: &tempfile::TempDir| std::fs::read(dir.path().join("mlp/model.onnx")).expect("model");
    assert_eq!(model(&a), model(&b));
}

#[test]
fn bad_arguments_fail_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let not_npz = dir.path().join("notes.npz");
    std::fs::write(&not_npz, "hello").expect("write");
    let output = train_export().arg("--data").arg(&not_npz).args(["--out"]).arg(dir.path()).output().expect("runs");
    assert_clean_failure(&output, &["notes.npz", "not a readable .npz"]);

    let output = train_export().args(["--frames", "50", "--train-pairs", "49", "--out"]).arg(dir.path()).output().expect("runs");
    assert_clean_failure(&output, &["cannot split 49 pairs"]);

    let output = train_export().args(["--model", "gnn", "--history", "3"]).output().expect("runs");
    assert_clean_failure(&output, &["--model gnn does not read windows of 3 frames", "mlp, e3large, pairforce"]);

    let output = train_export().args(["--model", "pairforce"]).output().expect("runs");
    assert_clean_failure(&output, &["--model pairforce does not read one frame", "--history 1"]);

    let output = train_export().args(["--history", "0"]).output().expect("runs");
    assert_clean_failure(&output, &["--history must be at least 1"]);

    let output = train_export().args(["--output-scale", "0"]).output().expect("runs");
    assert_clean_failure(&output, &["--output-scale", "'0' is neither auto, none nor a positive number"]);

    let output = train_export().args(["--validation", "1"]).output().expect("runs");
    assert_clean_failure(&output, &["--validation must be in [0, 1), got 1"]);

    let output = train_export().args(["--patience", "5"]).output().expect("runs");
    assert_clean_failure(&output, &["--patience needs held-out pairs", "--validation"]);

    let output = train_export().env("EQUISERVE_ORT_LIB", "/nowhere/libonnxruntime.so").output().expect("runs");
    assert_clean_failure(&output, &["/nowhere/libonnxruntime.so"]);

    // Nothing listens on port 1: the client says where it went and what happened, not
    // just "transport error".
    let output = Command::new(env!("CARGO_BIN_EXE_equiserve-client")).args(["--addr", "127.0.0.1:1", "list"]).output().expect("runs");
    assert_clean_failure(&output, &["127.0.0.1:1", "refused"]);
}

#[test]
fn simulate_writes_a_loadable_trajectory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sim.npz");
    let output = train_export().args(["simulate", "--frames", "64", "--out"]).arg(&path).output().expect("runs");
    assert!(output.status.success(), "{}", stderr(&output));
    let trajectory = equiserve::data::load_npz(&path).expect("loads");
    assert_eq!(trajectory.positions().shape(), &[64, 12, 3]);
}

#[test]
fn the_server_explains_what_it_cannot_serve() {
    let server = || Command::new(env!("CARGO_BIN_EXE_equiserve"));
    let empty = tempfile::tempdir().expect("temp dir");
    let output = server().arg("--models-dir").arg(empty.path()).args(["--addr", "127.0.0.1:0"]).output().expect("runs");
    assert_clean_failure(&output, &["no servable models"]);

    let output = server().args(["--models-dir", "/nonexistent/models"]).output().expect("runs");
    assert_clean_failure(&output, &["/nonexistent/models"]);

    let output = server().env("EQUISERVE_ORT_LIB", "/nowhere/libonnxruntime.so").output().expect("runs");
    assert_clean_failure(&output, &["/nowhere/libonnxruntime.so"]);
    // Models to load at start: only under explicit control, and each must be there.
    let models = common::trained_models_dir();
    let output = server().arg("--models-dir").arg(models).args(["--load-model", "mlp"]).output().expect("runs");
    assert_clean_failure(&output, &["--load-model needs --model-control explicit"]);
    let output = server()
        .arg("--models-dir")
        .arg(models)
        .args(["--model-control", "explicit", "--load-model", "mlp,nope", "--addr", "127.0.0.1:0"])
        .output()
        .expect("runs");
    assert_clean_failure(&output, &["no model 'nope' in the repository"]);
}

/// The server binary on an ephemeral port, logging JSON to a pipe; stopped with SIGTERM.
struct ServerProcess {
    child: std::process::Child,
    address: String,
    log_lines: Vec<String>,
}

impl ServerProcess {
    fn start(models_dir: &std::path::Path) -> Self {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_equiserve"))
            .arg("--models-dir")
            .arg(models_dir)
            // Every model loaded at start under explicit control, as Triton writes it.
            .args(["--model-control", "explicit", "--load-model", "*", "--allow-unauthenticated-admin"])
            .args(["--addr", "127.0.0.1:0", "--log-format", "json", "--device", "cpu"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the server starts");
        let lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        // Read on a thread that keeps the pipe drained (so that logging never blocks the
        // server), with a bound on the wait for the address.
        let (sender, received) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        let mut log_lines = Vec::new();
        // Every line is JSON; the "serving" one gives the address.
        let address = loop {
            let line = received.recv_timeout(std::time::Duration::from_secs(60)).unwrap_or_else(|e| panic!("no address from the server ({e}): {log_lines:?}"));
            let record: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            let serving = record["fields"]["message"] == "serving";
            log_lines.push(line);
            if serving {
                break record["fields"]["address"].as_str().expect("the address").to_string();
            }
        };
        Self { child, address, log_lines }
    }

    /// SIGTERM, then the exit it must make within its grace.
    fn stop(mut self) -> std::process::ExitStatus {
        // SAFETY: signals our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "the server did not exit after SIGTERM");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for ServerProcess {
    /// A test that fails before `stop` must not leave its server running (holding the
    /// test's output open).
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn the_client_cli_predicts_and_rolls_out_files_on_a_live_server() {
    use equiserve::{
        data::load_npz,
        onnx::{ExecutionDevice, OnnxModel, Signature},
    };
    // mlp in two versions: 1 the shipped model, 2 (served by default) one trained here.
    let models = common::trained_models_dir();
    let repository = tempfile::tempdir().expect("temp dir");
    common::copy_model(&common::shipped_model("mlp"), &repository.path().join("mlp/1"));
    common::copy_model(&models.join("mlp"), &repository.path().join("mlp/2"));
    let server = ServerProcess::start(repository.path());
    assert!(server.log_lines.iter().any(|line| line.contains("allow-unauthenticated-admin")), "the open repository is warned about: {:?}", server.log_lines);
    for line in &server.log_lines {
        assert!(!line.contains('\u{1b}'), "escape codes in a redirected log: {line:?}");
        let record: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(record["level"].is_string() && record["fields"].is_object(), "{record}");
    }
    let client = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_equiserve-client")).args(["--addr", &server.address]).args(args).output().expect("runs");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();

    let listed = client(&["list"]);
    let table = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success() && table.lines().any(|l| l.starts_with("mlp") && l.contains("2 (of 1,2)")), "{table}{}", stderr(&listed));
    let card = client(&["card", "mlp", "--model-version", "1"]);
    let shipped_card = std::fs::read_to_string(common::shipped_model("mlp").join("card.json")).expect("card");
    let as_json = |text: &str| serde_json::from_str::<serde_json::Value>(text).expect("JSON");
    assert_eq!(as_json(&String::from_utf8_lossy(&card.stdout)), as_json(&shipped_card), "{}", stderr(&card));

    let trajectory = simulate(&SimulationConfig { frames: 12, seed: 5, ..Default::default() });
    save_npz(&trajectory, std::path::Path::new(&path("frames.npz")), false).expect("save");
    let output = client(&["predict", "--model", "mlp", "--in", &path("frames.npz"), "--out", &path("dx.npz")]);
    assert!(output.status.success(), "{}", stderr(&output));
    let mut npz = ndarray_npy::NpzReader::new(std::fs::File::open(path("dx.npz")).expect("dx.npz")).expect("an npz");
    let dx: ndarray::Array3<f32> = npz.by_name("dx").expect("dx");
    let mut direct = OnnxModel::load(&models.join("mlp/model.onnx"), &Signature::dynamics(1), ExecutionDevice::Cpu, 1).expect("loads");
    let expected = direct.run(trajectory.positions().view()).expect("runs");
    assert!(dx.iter().zip(&expected).all(|(a, b)| (a - b).abs() <= 1e-6 * b.abs().max(1.0)), "dx differs from ONNX Runtime's");
    let output = client(&["predict", "--model", "mlp", "--model-version", "1", "--in", &path("frames.npz"), "--out", &path("dx-v1.npz")]);
    assert!(output.status.success(), "{}", stderr(&output));
    let dx_v1: ndarray::Array3<f32> =
        ndarray_npy::NpzReader::new(std::fs::File::open(path("dx-v1.npz")).expect("dx-v1.npz")).expect("an npz").by_name("dx").expect("dx");
    let mut shipped = OnnxModel::load(&common::shipped_model("mlp").join("model.onnx"), &Signature::dynamics(1), ExecutionDevice::Cpu, 1).expect("loads");
    let expected_v1 = shipped.run(trajectory.positions().view()).expect("runs");
    assert!(dx_v1.iter().zip(&expected_v1).all(|(a, b)| (a - b).abs() <= 1e-6 * b.abs().max(1.0)), "version 1's dx differs from the shipped model's");

    // A rollout as .npz is a trajectory: the start frame, then each step, as chaining the model gives.
    let output = client(&["rollout", "--model", "mlp", "--from", &path("frames.npz"), "--frame", "3", "--steps", "5", "--out", &path("rollout.npz")]);
    assert!(output.status.success(), "{}", stderr(&output));
    let rolled = load_npz(std::path::Path::new(&path("rollout.npz"))).expect("a trajectory");
    assert_eq!(rolled.frames(), 6);
    let mut x = trajectory.positions().slice(ndarray::s![3..4, .., ..]).to_owned();
    for step in 0..=5 {
        let gap = rolled.positions().slice(ndarray::s![step..step + 1, .., ..]).iter().zip(&x).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(gap <= 1e-5, "step {step}: {gap}");
        x = &x + &direct.run(x.view()).expect("runs");
    }
    let output = client(&[
        "rollout",
        "--model",
        "mlp",
        "--model-version",
        "1",
        "--from",
        &path("frames.npz"),
        "--frame",
        "3",
        "--steps",
        "2",
        "--out",
        &path("rollout-v1.npz"),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let rolled_v1 = load_npz(std::path::Path::new(&path("rollout-v1.npz"))).expect("a trajectory");
    let start = trajectory.positions().slice(ndarray::s![3..4, .., ..]).to_owned();
    let two_steps = {
        let once = &start + &shipped.run(start.view()).expect("runs");
        &once + &shipped.run(once.view()).expect("runs")
    };
    let gap = rolled_v1.positions().slice(ndarray::s![2..3, .., ..]).iter().zip(&two_steps).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(gap <= 1e-5, "version 1's rollout: {gap}");
    let output = client(&["rollout", "--model", "mlp", "--from", &path("frames.npz"), "--steps", "4", "--emit-every", "2", "--out", &path("rollout.xyz")]);
    assert!(output.status.success(), "{}", stderr(&output));
    let xyz = std::fs::read_to_string(path("rollout.xyz")).expect("xyz");
    let comments: Vec<&str> = xyz.lines().filter(|l| l.starts_with("Properties=")).collect();
    assert_eq!(comments.len(), 3, "start, step 2, step 4: {comments:?}");
    assert!(comments[2].contains("step=4"));

    // An ensemble: member 0 is frame 3 itself, the others perturbed; member 0 rolls out
    // as the single rollout above, and each member as chaining the model from it gives.
    let start = trajectory.positions().slice(ndarray::s![3..4, .., ..]).to_owned();
    let members = ndarray::concatenate![ndarray::Axis(0), start, &start + 0.01, &start - 0.02];
    equiserve::data::save_arrays(std::path::Path::new(&path("ensemble.npz")), &[("arr", (&members).into())]).expect("save");
    let output = client(&[
        "rollout",
        "--model",
        "mlp",
        "--from",
        &path("frames.npz"),
        "--frame",
        "3",
        "--steps",
        "5",
        "--ensemble",
        &path("ensemble.npz"),
        "--out",
        &path("ensemble-out.npz"),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let mut npz = ndarray_npy::NpzReader::new(std::fs::File::open(path("ensemble-out.npz")).expect("out")).expect("an npz");
    let ensemble: ndarray::Array4<f32> = npz.by_name("arr").expect("arr [frames, B, 12, 3]");
    assert_eq!(ensemble.dim(), (6, 3, 12, 3));
    assert_eq!(ensemble.index_axis(ndarray::Axis(1), 0), rolled.positions().view(), "member 0 is the single rollout");
    let mut x = members.clone();
    for step in 0..=5 {
        let gap = ensemble.index_axis(ndarray::Axis(0), step).iter().zip(&x).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(gap <= 1e-5, "ensemble step {step}: {gap}");
        x = &x + &direct.run(x.view()).expect("runs");
    }
    let output = client(&[
        "rollout",
        "--model",
        "mlp",
        "--from",
        &path("frames.npz"),
        "--steps",
        "2",
        "--ensemble",
        &path("ensemble.npz"),
        "--out",
        &path("ensemble.xyz"),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let xyz = std::fs::read_to_string(path("ensemble.xyz")).expect("xyz");
    assert!(xyz.starts_with("36\nProperties=species:S:1:pos:R:3:particle:I:1:member:I:1 step=0"), "{}", &xyz[..80]);

    // Every .xyz opens in ASE with the positions written: the same rollouts as .npz, a
    // single system and an ensemble, with the default species and another.
    let same = |out: &str, extra: &[&str]| {
        let (from, out) = (path("frames.npz"), path(out));
        let mut args = vec!["rollout", "--model", "mlp", "--from", from.as_str(), "--steps", "2", "--out", out.as_str()];
        args.extend_from_slice(extra);
        let output = client(&args);
        assert!(output.status.success(), "{}", stderr(&output));
    };
    let ensemble_file = path("ensemble.npz");
    let ensemble_args = ["--ensemble", ensemble_file.as_str()];
    for (out, extra) in [("single.xyz", &[][..]), ("single.npz", &[][..]), ("members.xyz", &ensemble_args[..]), ("members.npz", &ensemble_args[..])] {
        same(out, extra);
    }
    same("argon.xyz", &["--species", "Ar"]);
    if let Some(python) = common::test_python("reading .xyz with ASE") {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ase/check.py");
        for (species, files) in [("X", vec!["single.xyz", "single.npz", "members.xyz", "members.npz"]), ("Ar", vec!["argon.xyz", "single.npz"])] {
            let output = std::process::Command::new(&python).arg(&script).arg(species).args(files.iter().map(|f| path(f))).output().expect("python runs");
            assert!(output.status.success(), "ASE: {}{}", String::from_utf8_lossy(&output.stdout), stderr(&output));
        }
    }
    let output = client(&["rollout", "--model", "mlp", "--from", &path("frames.npz"), "--steps", "2", "--species", "P 0", "--out", &path("bad.xyz")]);
    assert_clean_failure(&output, &["species 'P 0'", "letters and digits"]);

    let output = client(&["predict", "--model", "nope", "--in", &path("frames.npz"), "--out", &path("x.npz")]);
    assert_clean_failure(&output, &["NotFound", "unknown model 'nope'"]);
    assert_eq!(stderr(&output).trim().lines().count(), 1, "one line: {}", stderr(&output));
    let output = client(&["rollout", "--model", "mlp", "--model-version", "7", "--from", &path("frames.npz"), "--steps", "2", "--out", &path("r.npz")]);
    assert_clean_failure(&output, &["NotFound", "version 7", "1, 2"]);
    let output = client(&["rollout", "--model", "mlp", "--from", &path("frames.npz"), "--steps", "2", "--out", &path("r.txt")]);
    assert_clean_failure(&output, &["r.txt", ".xyz", ".npz"]);
    assert!(server.stop().success(), "the server exits cleanly on SIGTERM");
}

/// Sampled rollouts from the CLI: one seed gives the same members, in any ensemble size;
/// members differ; the seed the server picked is printed; a deterministic model refuses.
#[test]
fn the_client_cli_samples_ensembles_reproducibly() {
    let repository = tempfile::tempdir().expect("temp dir");
    for name in ["mlp", "pairforce-h4"] {
        common::copy_model(&common::shipped_model(name), &repository.path().join(name));
    }
    let server = ServerProcess::start(repository.path());
    let client = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_equiserve-client")).args(["--addr", &server.address]).args(args).output().expect("runs");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/paths.npz").to_string_lossy().into_owned();
    let sampled = |members: &str, seed: Option<&str>, out: &str| {
        let mut args =
            vec!["rollout", "--model", "pairforce-h4", "--from", data.as_str(), "--frame", "1700", "--steps", "20", "--sample", "--members", members];
        if let Some(seed) = seed {
            args.extend(["--seed", seed]);
        }
        let output = client(&[&args[..], &["--out", out]].concat());
        assert!(output.status.success(), "{}", stderr(&output));
        let read: ndarray::Array4<f32> = ndarray_npy::NpzReader::new(std::fs::File::open(out).expect("written")).expect("npz").by_name("arr").expect("arr");
        (read, stderr(&output))
    };
    let (four, said) = sampled("4", Some("5"), &path("four.npz"));
    assert!(said.contains("seed 5"), "{said}");
    assert_eq!(four.shape(), [21, 4, 12, 3]);
    let (again, _) = sampled("4", Some("5"), &path("again.npz"));
    assert_eq!(four, again, "one seed, the same ensemble");
    let (two, _) = sampled("2", Some("5"), &path("two.npz"));
    assert_eq!(two, four.slice(ndarray::s![.., ..2, .., ..]), "members 0 and 1 are the same in an ensemble of two");
    let last = four.index_axis(ndarray::Axis(0), 20);
    assert_ne!(last.index_axis(ndarray::Axis(0), 0), last.index_axis(ndarray::Axis(0), 1), "each member draws its own noise");
    let (_, said) = sampled("2", None, &path("picked.npz"));
    assert!(said.contains("(sampled, seed "), "the server's pick is printed: {said}");

    // predict records the frames it covers, and a stochastic model's spread.
    let trajectory = simulate(&SimulationConfig { frames: 10, seed: 2, ..Default::default() });
    save_npz(&trajectory, std::path::Path::new(&path("ten.npz")), false).expect("save");
    let output = client(&["predict", "--model", "pairforce-h4", "--in", &path("ten.npz"), "--out", &path("predicted.npz")]);
    assert!(output.status.success(), "{}", stderr(&output));
    let mut npz = ndarray_npy::NpzReader::new(std::fs::File::open(path("predicted.npz")).expect("written")).expect("npz");
    let frame: ndarray::Array1<i64> = npz.by_name("frame").expect("frame");
    assert_eq!(frame.to_vec(), (3..10).collect::<Vec<i64>>(), "a model of 4 frames predicts from frame 3 on");
    let dx_std: ndarray::Array2<f32> = npz.by_name("dx_std").expect("dx_std");
    assert!(dx_std.dim() == (7, 12) && dx_std.iter().all(|&s| s > 0.0), "{dx_std:?}");

    let output = client(&["rollout", "--model", "mlp", "--from", &data, "--steps", "2", "--sample", "--out", &path("mlp.npz")]);
    assert_clean_failure(&output, &["InvalidArgument", "'mlp'", "deterministic"]);
    let output = client(&["rollout", "--model", "pairforce-h4", "--from", &data, "--frame", "10", "--steps", "2", "--seed", "3", "--out", &path("x.npz")]);
    assert_clean_failure(&output, &["--sample"]);
    assert!(server.stop().success());
}

/// Every script in examples/ runs green with the test environment's tritonclient against
/// the server binary serving the shipped mlp and pairforce-h4, from the repository root as
/// the README runs them.
#[test]
fn the_examples_run_against_the_server_binary() {
    let Some(python) = common::test_python("the examples") else { return };
    let repository = tempfile::tempdir().expect("temp dir");
    for name in ["mlp", "pairforce-h4"] {
        common::copy_model(&common::shipped_model(name), &repository.path().join(name));
    }
    let server = ServerProcess::start(repository.path());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut examples: Vec<_> = std::fs::read_dir(root.join("examples"))
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "py"))
        .collect();
    examples.sort();
    assert!(examples.len() >= 3, "{examples:?}");
    for example in &examples {
        let mut command = Command::new(&python);
        command.arg(example).args(["--addr", &server.address]).current_dir(root);
        let output = common::output_within(command, std::time::Duration::from_secs(120));
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{}: {stdout}{}", example.display(), stderr(&output));
        assert!(!stdout.trim().is_empty(), "{} says what it did", example.display());
    }
    assert!(server.stop().success());
}
