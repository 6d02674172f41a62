//! deploy/ and the Dockerfiles, checked with what runs without a cluster or Docker:
//! tests/deploy/validate.py (Kubernetes schemas, KServe's CRD schemas, and every flag
//! and variable they set against `equiserve --help`).

use std::{path::Path, process::Command};

#[test]
fn manifests_and_dockerfiles_are_valid_and_use_real_flags() {
    let Some(python) = crate::common::test_python("the deploy/ validation") else { return };
    let help = Command::new(env!("CARGO_BIN_EXE_equiserve")).arg("--help").output().expect("equiserve --help");
    assert!(help.status.success());
    let help_file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(help_file.path(), &help.stdout).expect("write");
    let project = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(python).arg(project.join("tests/deploy/validate.py")).arg(project).arg(help_file.path()).output().expect("python runs");
    let log = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "deploy/ is not valid:\n{log}");
    for manifest in ["Deployment", "Service", "HorizontalPodAutoscaler", "ServingRuntime", "InferenceService", "Dockerfile.cpu"] {
        assert!(log.contains(manifest), "{manifest} was not checked:\n{log}");
    }
}

/// docs/card.schema.json describes every card shipped and every card export writes
/// today (tests/cards/validate.py, with `jsonschema`).
#[test]
fn every_card_fits_the_documented_schema() {
    let Some(python) = crate::common::test_python("the card schema check") else { return };
    let project = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cards: Vec<std::path::PathBuf> = std::fs::read_dir(project.join("models"))
        .expect("models/")
        .map(|entry| entry.expect("entry").path().join("card.json"))
        .filter(|card| card.is_file())
        .collect();
    let shipped = cards.len();
    cards.push(crate::common::trained_models_dir().join("mlp/card.json"));
    // The shipped default pulls towards the centroid; the calibration pushes chains its
    // forces hold too tight (κ < 0).
    let pushed = tempfile::NamedTempFile::new().expect("temp file");
    let mut card: serde_json::Value = crate::common::card_of(&project.join("models/pairforce-h4"));
    card["noise"]["confinement"] = serde_json::json!(-1e-5);
    std::fs::write(pushed.path(), card.to_string()).expect("written");
    cards.push(pushed.path().to_path_buf());
    let output = Command::new(python)
        .arg(project.join("tests/cards/validate.py"))
        .arg(project.join("docs/card.schema.json"))
        .args(&cards)
        .output()
        .expect("python runs");
    let log = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "cards outside the schema:\n{log}");
    assert!(shipped >= 9 && log.matches(": valid").count() == cards.len(), "{log}");
}
