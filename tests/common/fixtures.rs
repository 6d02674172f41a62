//! Reading the e3nn reference values in `tests/fixtures/e3nn/*.json` (e3nn 0.6.0's
//! outputs, copied from the study's shared fixtures): every array is `{"shape": [...],
//! "data": [row-major f64]}`.

use ndarray::ArrayD;
use serde_json::Value;

/// The parsed fixture.
pub fn load(name: &str) -> Value {
    let path = super::fixtures_dir().join("e3nn").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn array(value: &Value) -> ArrayD<f64> {
    let shape: Vec<usize> = value["shape"].as_array().expect("shape").iter().map(|d| d.as_u64().expect("dim") as usize).collect();
    let data: Vec<f64> = value["data"].as_array().expect("data").iter().map(|v| v.as_f64().expect("number")).collect();
    ArrayD::from_shape_vec(shape, data).expect("shape matches data")
}

/// max |a − b|, asserting equal lengths.
pub fn max_abs_diff<'a>(a: impl IntoIterator<Item = &'a f64>, b: impl IntoIterator<Item = &'a f64>) -> f64 {
    let (a, b): (Vec<f64>, Vec<f64>) = (a.into_iter().copied().collect(), b.into_iter().copied().collect());
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// A state dict as the fixtures store it (name → array), as (shape, values) per name.
pub fn state_dict(value: &Value) -> std::collections::HashMap<String, (Vec<usize>, Vec<f64>)> {
    value
        .as_object()
        .expect("state dict")
        .iter()
        .map(|(name, tensor)| {
            let a = array(tensor);
            (name.clone(), (a.shape().to_vec(), a.iter().copied().collect()))
        })
        .collect()
}
