"""A streamed rollout over the Open Inference Protocol: one response per emitted frame.

A request with the parameter `steps` (and optionally `emit_every`) on the stream is a
rollout; the server keeps the model's window. The last response carries the
`triton_final_response` parameter; stop the stream after it.

    python examples/rollout.py [--addr 127.0.0.1:50051] [--data data/paths.npz] [--steps 100]
"""

import argparse
import queue

import numpy as np
import tritonclient.grpc as grpcclient

parser = argparse.ArgumentParser()
parser.add_argument("--addr", default="127.0.0.1:50051")
parser.add_argument("--data", default="data/paths.npz")
parser.add_argument("--model", default="pairforce-h4")
parser.add_argument("--steps", type=int, default=100)
parser.add_argument("--emit-every", type=int, default=10)
args = parser.parse_args()

frames = np.load(args.data)["arr"].astype(np.float32)
if frames.shape[-1] == 2:
    frames = np.concatenate([frames, np.zeros(frames.shape[:-1] + (1,), np.float32)], axis=-1)

client = grpcclient.InferenceServerClient(args.addr)
metadata = client.get_model_metadata(args.model)
window = next((list(t.shape) for t in metadata.inputs if t.name == "previous"), None)
held = window[1] if window else 0
start = len(frames) - args.steps - 1

inputs = [grpcclient.InferInput("positions", [1, 12, 3], "FP32")]
inputs[0].set_data_from_numpy(frames[start : start + 1])
if held:
    inputs.append(grpcclient.InferInput("previous", [1, held, 12, 3], "FP32"))
    inputs[1].set_data_from_numpy(frames[None, start - held : start])

responses = queue.Queue()
client.start_stream(callback=lambda result, error: responses.put((result, error)))
client.async_stream_infer(args.model, inputs, parameters={"steps": args.steps, "emit_every": args.emit_every})
emitted = []
while True:
    result, error = responses.get(timeout=60)
    if error is not None:
        raise SystemExit(f"rollout failed: {error}")
    response = result.get_response()
    step = response.parameters["step"].int64_param
    emitted.append((step, result.as_numpy("positions")[0]))
    if response.parameters["triton_final_response"].bool_param:
        break
client.stop_stream()

for step, positions in emitted:
    rmse = float(np.sqrt(np.mean((positions - frames[start + step]) ** 2)))
    print(f"step {step:4d}: RMSE against the trajectory {rmse:.3e}")
assert [s for s, _ in emitted][-1] == args.steps, "the last frame is the last step"
