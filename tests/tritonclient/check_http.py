"""Drives an equiserve server's HTTP/REST endpoint with the official tritonclient.http,
unchanged: the same calls would run against a Triton server serving these models.

Usage: check_http.py HOST:PORT OUT.npz
The server serves, in explicit model control, `mlp` (versions 1 and 2; K = 1) and
`pairforce-h4` (K = 4, stochastic). Asserts the protocol's answers here; writes the
tensors it sent and got to OUT.npz for the Rust test to compare with ONNX Runtime.
"""

import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

url, out = sys.argv[1], sys.argv[2]
client = httpclient.InferenceServerClient(url)
rng = np.random.default_rng(11)
frames = lambda *shape: rng.normal(scale=0.5, size=shape).astype(np.float32)


def expect_error(call, fragment):
    try:
        call()
    except InferenceServerException as e:
        assert fragment in e.message(), f"'{fragment}' not in '{e.message()}'"
        return e
    raise AssertionError(f"no error; expected one saying '{fragment}'")


def positions_input(values, binary=True):
    tensor = httpclient.InferInput("positions", list(values.shape), "FP32")
    tensor.set_data_from_numpy(values, binary_data=binary)
    return tensor


# Health and metadata.
assert client.is_server_live() and client.is_server_ready()
assert client.is_model_ready("mlp") and client.is_model_ready("mlp", "1") and client.is_model_ready("mlp", "2")
assert not client.is_model_ready("mlp", "3") and not client.is_model_ready("nope")
assert client.get_server_metadata()["name"] == "equiserve"
meta = client.get_model_metadata("mlp")
assert meta["versions"] == ["1", "2"] and meta["platform"] == "onnxruntime_onnx", meta
history_meta = client.get_model_metadata("pairforce-h4")
assert [(t["name"], t["shape"]) for t in history_meta["inputs"]] == [("positions", [-1, 12, 3]), ("previous", [-1, 3, 12, 3])], history_meta
assert [(t["name"], t["shape"]) for t in history_meta["outputs"]] == [("dx", [-1, 12, 3]), ("dx_std", [-1, 12]), ("next_positions", [-1, 12, 3])], history_meta
config = client.get_model_config("pairforce-h4")
assert config["backend"] == "onnxruntime" and [t["dims"] for t in config["input"]] == [[12, 3], [3, 12, 3]], config

# Binary tensors in and out (tritonclient's default), the newest version by default.
batch = frames(5, 12, 3)
result = client.infer("mlp", [positions_input(batch)], request_id="binary-1")
assert result.get_response()["id"] == "binary-1" and result.get_response()["model_version"] == "2", result.get_response()
dx = result.as_numpy("dx")
assert dx.shape == (5, 12, 3) and dx.dtype == np.float32
np.testing.assert_allclose(result.as_numpy("next_positions"), batch + dx, rtol=0, atol=1e-6)
# JSON tensors in and out, one output asked for: the same numbers.
as_json = client.infer("mlp", [positions_input(batch, binary=False)], outputs=[httpclient.InferRequestedOutput("dx", binary_data=False)])
np.testing.assert_array_equal(as_json.as_numpy("dx"), dx)
assert as_json.as_numpy("next_positions") is None
dx_v1 = client.infer("mlp", [positions_input(batch)], model_version="1").as_numpy("dx")
assert not np.allclose(dx_v1, dx), "versions 1 and 2 are different models"

# A history model takes its window; a stochastic one answers its spread.
now, previous = frames(3, 12, 3), frames(3, 3, 12, 3)
window = httpclient.InferInput("previous", [3, 3, 12, 3], "FP32")
window.set_data_from_numpy(previous)
history = client.infer("pairforce-h4", [positions_input(now), window])
history_dx, history_std = history.as_numpy("dx"), history.as_numpy("dx_std")
assert history_std.shape == (3, 12) and (history_std > 0).all(), history_std

# Errors say what was wrong.
expect_error(lambda: client.infer("nope", [positions_input(batch)]), "unknown model 'nope'")
expect_error(lambda: client.infer("mlp", [positions_input(batch)], model_version="7"), "version 7")
expect_error(lambda: client.infer("mlp", [positions_input(frames(2, 36))]), "expected [batch, 12, 3]")
expect_error(lambda: client.infer("pairforce-h4", [positions_input(now)]), "no input 'previous'")

# Statistics and the repository.
stats = client.get_inference_statistics("mlp", "1")["model_stats"]
assert [(s["name"], s["version"]) for s in stats] == [("mlp", "1")] and stats[0]["inference_count"] == 5, stats
index = {(m["name"], m["version"]): m["state"] for m in client.get_model_repository_index()}
assert index == {("mlp", "1"): "READY", ("mlp", "2"): "READY", ("pairforce-h4", "1"): "READY"}, index
client.unload_model("pairforce-h4")
assert not client.is_model_ready("pairforce-h4")
expect_error(lambda: client.infer("pairforce-h4", [positions_input(now), window]), "has no version ready")
client.load_model("pairforce-h4")
np.testing.assert_array_equal(client.infer("pairforce-h4", [positions_input(now), window]).as_numpy("dx"), history_dx)
expect_error(lambda: client.load_model("absent"), "no model 'absent'")

np.savez(out, batch=batch, dx=dx, dx_v1=dx_v1, now=now, previous=previous, history_dx=history_dx, history_std=history_std)
print("tritonclient.http: every check passed")
