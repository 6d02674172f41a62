"""A sampled ensemble over the Open Inference Protocol: N members rolled out from one
window of the trajectory, each step x + dx + dx_std * xi with the model's own noise.

A stochastic model (its metadata lists `dx_std`) rolls out sampled with the parameter
`sample`; `seed` fixes the noise (member b of the ensemble draws its own stream, so the
same seed gives the same members whatever else the server computes). Every response
carries the seed, the server's pick when none was given. The ensemble's spread around its
mean is then compared with the mean's error against the trajectory.

    python examples/sampled_ensemble.py [--addr 127.0.0.1:50051] [--members 16] [--steps 50] [--seed 7]
"""

import argparse
import queue

import numpy as np
import tritonclient.grpc as grpcclient

parser = argparse.ArgumentParser()
parser.add_argument("--addr", default="127.0.0.1:50051")
parser.add_argument("--data", default="data/paths.npz")
parser.add_argument("--model", default="pairforce-h4")
parser.add_argument("--members", type=int, default=16)
parser.add_argument("--steps", type=int, default=50)
parser.add_argument("--seed", type=int, default=7)
args = parser.parse_args()

frames = np.load(args.data)["arr"].astype(np.float32)
if frames.shape[-1] == 2:
    frames = np.concatenate([frames, np.zeros(frames.shape[:-1] + (1,), np.float32)], axis=-1)

client = grpcclient.InferenceServerClient(args.addr)
metadata = client.get_model_metadata(args.model)
if "dx_std" not in {t.name for t in metadata.outputs}:
    raise SystemExit(f"{args.model} is deterministic (no dx_std output): its rollouts cannot be sampled")
window = next((list(t.shape) for t in metadata.inputs if t.name == "previous"), None)
held = window[1] if window else 0
start = len(frames) - args.steps - 1

# The same window for every member: they differ only by their noise.
inputs = [grpcclient.InferInput("positions", [args.members, 12, 3], "FP32")]
inputs[0].set_data_from_numpy(np.repeat(frames[start : start + 1], args.members, axis=0))
if held:
    inputs.append(grpcclient.InferInput("previous", [args.members, held, 12, 3], "FP32"))
    inputs[1].set_data_from_numpy(np.repeat(frames[None, start - held : start], args.members, axis=0))

responses = queue.Queue()
client.start_stream(callback=lambda result, error: responses.put((result, error)))
client.async_stream_infer(args.model, inputs, parameters={"steps": args.steps, "emit_every": 10, "sample": True, "seed": args.seed})
while True:
    result, error = responses.get(timeout=120)
    if error is not None:
        raise SystemExit(f"rollout failed: {error}")
    response = result.get_response()
    step = response.parameters["step"].int64_param
    ensemble = result.as_numpy("positions")
    mean = ensemble.mean(axis=0)
    spread = float(np.sqrt(((ensemble - mean) ** 2).mean()))
    error_of_mean = float(np.sqrt(((mean - frames[start + step]) ** 2).mean()))
    print(f"step {step:4d}: spread {spread:.3e}, RMSE of the ensemble mean {error_of_mean:.3e} (seed {response.parameters['seed'].uint64_param})")
    if response.parameters["triton_final_response"].bool_param:
        break
client.stop_stream()
