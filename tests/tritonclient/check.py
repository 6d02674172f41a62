"""Drives an equiserve server with the official tritonclient (gRPC), unchanged: the same
calls would run against a Triton server serving these models.

Usage: check.py HOST:PORT OUT.npz MAX_BATCH
The server serves, in explicit model control, `mlp` (versions 1 and 2; K = 1) and
`pairforce-h4` (K = 4), on two CPU sessions each, at most MAX_BATCH frames a request. Asserts the protocol's answers here; writes the tensors it sent
and got to OUT.npz for the Rust test to compare with ONNX Runtime and with the server's
own Rollout.
"""

import queue
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.grpc import model_config_pb2, service_pb2
from tritonclient.utils import InferenceServerException

url, out, max_batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = grpcclient.InferenceServerClient(url)
rng = np.random.default_rng(7)
frames = lambda *shape: rng.normal(scale=0.5, size=shape).astype(np.float32)


def expect_error(call, status, fragment):
    try:
        call()
    except InferenceServerException as e:
        assert e.status() == status, f"{e.status()} != {status}: {e.message()}"
        assert fragment in e.message(), f"'{fragment}' not in '{e.message()}'"
        return e
    raise AssertionError(f"no error; expected {status}")


def positions_input(values):
    tensor = grpcclient.InferInput("positions", list(values.shape), "FP32")
    tensor.set_data_from_numpy(values)
    return tensor


# Health and metadata.
assert client.is_server_live()
assert client.is_server_ready()
assert client.is_model_ready("mlp")
assert client.is_model_ready("mlp", "1") and client.is_model_ready("mlp", "2")
assert not client.is_model_ready("mlp", "3")
assert not client.is_model_ready("nope")
server = client.get_server_metadata()
assert server.name == "equiserve", server
assert {"model_repository", "model_configuration", "statistics"} <= set(server.extensions), server
meta = client.get_model_metadata("mlp")
assert list(meta.versions) == ["1", "2"], meta.versions
assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("positions", "FP32", [-1, 12, 3])]
assert {t.name for t in meta.outputs} == {"dx", "next_positions"}
history = client.get_model_metadata("pairforce-h4")
assert [(t.name, list(t.shape)) for t in history.inputs] == [("positions", [-1, 12, 3]), ("previous", [-1, 3, 12, 3])]
# A stochastic model lists its spread beside its mean.
assert [(t.name, list(t.shape)) for t in history.outputs] == [("dx", [-1, 12, 3]), ("dx_std", [-1, 12]), ("next_positions", [-1, 12, 3])], history.outputs

# Infer a batch (raw contents, as tritonclient sends), the newest version by default.
batch = frames(5, 12, 3)
result = client.infer("mlp", [positions_input(batch)], request_id="batch-1")
assert result.get_response().id == "batch-1"
assert result.get_response().model_version == "2"
dx = result.as_numpy("dx")
assert dx.shape == (5, 12, 3) and dx.dtype == np.float32
np.testing.assert_allclose(result.as_numpy("next_positions"), batch + dx, rtol=0, atol=1e-6)
dx_v1 = client.infer("mlp", [positions_input(batch)], model_version="1").as_numpy("dx")
assert not np.allclose(dx_v1, dx), "versions 1 and 2 are different models"

# Only the outputs asked for.
only_dx = client.infer("mlp", [positions_input(batch)], outputs=[grpcclient.InferRequestedOutput("dx")])
assert only_dx.as_numpy("next_positions") is None and only_dx.as_numpy("dx") is not None

# Typed contents (fp32_contents) give the same answer as raw bytes.
request = service_pb2.ModelInferRequest(model_name="mlp")
typed = request.inputs.add(name="positions", datatype="FP32", shape=[5, 12, 3])
typed.contents.fp32_contents.extend(batch.ravel().tolist())
typed_result = grpcclient.InferResult(client._client_stub.ModelInfer(request))
np.testing.assert_array_equal(typed_result.as_numpy("dx"), dx)

# A history model takes its window as a second input.
now, previous = frames(3, 12, 3), frames(3, 3, 12, 3)
window = grpcclient.InferInput("previous", [3, 3, 12, 3], "FP32")
window.set_data_from_numpy(previous)
history_result = client.infer("pairforce-h4", [positions_input(now), window])
history_dx, history_std = history_result.as_numpy("dx"), history_result.as_numpy("dx_std")
assert history_std.shape == (3, 12) and (history_std > 0).all(), history_std

# Errors, with the protocol's status codes and what was wrong.
expect_error(lambda: client.infer("nope", [positions_input(batch)]), "StatusCode.NOT_FOUND", "unknown model 'nope'")
expect_error(lambda: client.infer("mlp", [positions_input(batch)], model_version="7"), "StatusCode.NOT_FOUND", "version 7")
expect_error(lambda: client.infer("mlp", [positions_input(frames(2, 36))]), "StatusCode.INVALID_ARGUMENT", "expected [batch, 12, 3]")
expect_error(lambda: client.infer("pairforce-h4", [positions_input(now)]), "StatusCode.INVALID_ARGUMENT", "no input 'previous'")
wrong_type = grpcclient.InferInput("positions", [1, 12, 3], "FP64")
wrong_type.set_data_from_numpy(frames(1, 12, 3).astype(np.float64))
expect_error(lambda: client.infer("mlp", [wrong_type]), "StatusCode.INVALID_ARGUMENT", "datatype FP64")

expect_error(lambda: client.get_model_config("nope"), "StatusCode.NOT_FOUND", "unknown model 'nope'")
# What is not served says so.
expect_error(lambda: client.get_trace_settings(), "StatusCode.UNIMPLEMENTED", "/inference.GRPCInferenceService/TraceSetting is not served here")
expect_error(lambda: client.unregister_cuda_shared_memory(), "StatusCode.UNIMPLEMENTED", "without shared memory")
expect_error(lambda: client.get_inference_statistics("mlp", "7"), "StatusCode.NOT_FOUND", "version 7")

# The configuration, read with Triton's own model_config.proto.
config = client.get_model_config("pairforce-h4").config
assert (config.name, config.platform, config.backend) == ("pairforce-h4", "onnxruntime_onnx", "onnxruntime"), config
assert config.max_batch_size == max_batch, config.max_batch_size
fp32 = model_config_pb2.TYPE_FP32
assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [("positions", fp32, [12, 3]), ("previous", fp32, [3, 12, 3])], config.input
assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [("dx", fp32, [12, 3]), ("dx_std", fp32, [12]), ("next_positions", fp32, [12, 3])], config.output
assert [(g.count, g.kind) for g in config.instance_group] == [(2, model_config_pb2.ModelInstanceGroup.KIND_CPU)], config.instance_group
assert config.dynamic_batching.max_queue_delay_microseconds == 0, config.dynamic_batching

# Statistics: version 1 of mlp has answered one request of 5 frames, in one call; the
# requests refused before reaching the model (bad shape, unknown version) count nowhere.
stats = client.get_inference_statistics("mlp", "1").model_stats
assert [(s.name, s.version) for s in stats] == [("mlp", "1")], stats
v1 = stats[0]
assert (v1.inference_count, v1.execution_count) == (5, 1), v1
assert (v1.inference_stats.success.count, v1.inference_stats.fail.count) == (1, 0), v1
assert v1.inference_stats.queue.count == 1 and v1.inference_stats.compute_infer.count == 1, v1
assert 0 < v1.inference_stats.compute_infer.ns <= v1.inference_stats.success.ns, v1
assert [(b.batch_size, b.compute_infer.count) for b in v1.batch_stats] == [(5, 1)], v1.batch_stats
assert v1.last_inference > 1_700_000_000_000, v1.last_inference
everything = {(s.name, s.version) for s in client.get_inference_statistics().model_stats}
assert everything == {("mlp", "1"), ("mlp", "2"), ("pairforce-h4", "1")}, everything
before_stream = client.get_inference_statistics("mlp", "2").model_stats[0]

# A streamed rollout: a decoupled model answering one request with one response per frame.
steps, emit_every = 7, 3
start = frames(2, 12, 3)
responses = queue.Queue()
client.start_stream(callback=lambda result, error: responses.put((result, error)))
client.async_stream_infer(
    "mlp",
    [positions_input(start)],
    request_id="rollout-1",
    parameters={"steps": steps, "emit_every": emit_every},
    enable_empty_final_response=True,
)
rolled, rolled_steps = [], []
while True:
    result, error = responses.get(timeout=60)
    assert error is None, error
    response = result.get_response()
    assert response.id == "rollout-1"
    if response.parameters["triton_final_response"].bool_param:
        assert len(response.outputs) == 0
        break
    rolled.append(result.as_numpy("positions"))
    rolled_steps.append(response.parameters["step"].int64_param)
assert rolled_steps == [3, 6, 7], rolled_steps
# A history model rolls out from its window (two inputs), every frame streamed.
client.async_stream_infer("pairforce-h4", [positions_input(now), window], request_id="history", parameters={"steps": 4})
history_steps = []
while True:
    result, error = responses.get(timeout=60)
    assert error is None, error
    response = result.get_response()
    assert response.id == "history" and result.as_numpy("positions").shape == (3, 12, 3)
    history_steps.append(response.parameters["step"].int64_param)
    if response.parameters["triton_final_response"].bool_param:
        break
assert history_steps == [1, 2, 3, 4], history_steps


def sampled_rollout(parameters, request_id):
    """The frames and the reported seeds of a streamed rollout of pairforce-h4 from the window."""
    client.async_stream_infer("pairforce-h4", [positions_input(now), window], request_id=request_id, parameters=parameters)
    frames_out, seeds = [], []
    while True:
        result, error = responses.get(timeout=60)
        assert error is None, error
        response = result.get_response()
        frames_out.append(result.as_numpy("positions"))
        seeds.append(response.parameters["seed"].uint64_param if "seed" in response.parameters else None)
        if response.parameters["triton_final_response"].bool_param:
            return np.stack(frames_out), seeds


# A sampled rollout: one seed, one trajectory; the seed comes back in every response.
sampled, seeds = sampled_rollout({"steps": 5, "sample": True, "seed": 42}, "sampled")
again, _ = sampled_rollout({"steps": 5, "sample": True, "seed": 42}, "sampled-again")
other, _ = sampled_rollout({"steps": 5, "sample": True, "seed": 43}, "other-seed")
mean, mean_seeds = sampled_rollout({"steps": 5}, "mean")
assert seeds == [42] * 5 and mean_seeds == [None] * 5, (seeds, mean_seeds)
np.testing.assert_array_equal(sampled, again)
assert not np.array_equal(sampled, other) and not np.array_equal(sampled, mean)
_, picked = sampled_rollout({"steps": 2, "sample": True}, "picked")
assert picked[0] is not None and picked[0] == picked[1], picked
client.async_stream_infer("mlp", [positions_input(start)], parameters={"steps": 2, "sample": True})
result, error = responses.get(timeout=60)
assert error is not None and "deterministic" in error.message(), error
# An error in a stream comes back as a response; the stream stays open.
client.async_stream_infer("nope", [positions_input(start)], parameters={"steps": 2})
result, error = responses.get(timeout=60)
assert error is not None and "unknown model 'nope'" in error.message(), error
client.async_stream_infer("mlp", [positions_input(start)], request_id="after-error")
result, error = responses.get(timeout=60)
assert error is None and result.get_response().id == "after-error"
client.stop_stream()
# A rollout counts as one request and an inference per system and step: on version 2 the
# rollout of 2 systems × 7 steps and the 2-frame request after the error, in at least
# 7 + 1 model calls.
after_stream = client.get_inference_statistics("mlp").model_stats
assert [s.version for s in after_stream] == ["1", "2"], after_stream
after_stream = after_stream[1]
assert after_stream.inference_stats.success.count == before_stream.inference_stats.success.count + 2, after_stream
assert after_stream.inference_count == before_stream.inference_count + 2 * 7 + 2, (before_stream, after_stream)
assert after_stream.execution_count >= before_stream.execution_count + 7 + 1, (before_stream, after_stream)

# The repository: index, unload, load.
index = {(m.name, m.version): m.state for m in client.get_model_repository_index().models}
assert index == {("mlp", "1"): "READY", ("mlp", "2"): "READY", ("pairforce-h4", "1"): "READY"}, index
client.unload_model("pairforce-h4")
assert not client.is_model_ready("pairforce-h4")
# Known but not loaded: UNAVAILABLE, as Triton answers, with why.
expect_error(lambda: client.infer("pairforce-h4", [positions_input(now), window]), "StatusCode.UNAVAILABLE", "'pairforce-h4' has no version ready (version 1: unloaded)")
states = {(m.name, m.version): (m.state, m.reason) for m in client.get_model_repository_index().models}
assert states[("pairforce-h4", "1")] == ("UNAVAILABLE", "unloaded"), states
client.load_model("pairforce-h4")
assert client.is_model_ready("pairforce-h4")
np.testing.assert_array_equal(client.infer("pairforce-h4", [positions_input(now), window]).as_numpy("dx"), history_dx)
expect_error(lambda: client.load_model("absent"), "StatusCode.NOT_FOUND", "no model 'absent'")

np.savez(
    out,
    batch=batch,
    dx=dx,
    dx_v1=dx_v1,
    now=now,
    previous=previous,
    history_dx=history_dx,
    history_std=history_std,
    start=start,
    rolled=np.stack(rolled),
    sampled=sampled,
)
print("tritonclient: every check passed")
