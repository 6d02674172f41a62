"""Next-frame prediction with the default model over the Open Inference Protocol.

pairforce-h4 reads a window of 4 frames: `positions` (frame t, [B, 12, 3]) and
`previous` (frames t-3 .. t-1, oldest first, [B, 3, 12, 3]). It answers `dx` (the mean
next displacement), `next_positions` (x + dx).

    python examples/predict.py [--addr 127.0.0.1:50051] [--data data/paths.npz]
"""

import argparse

import numpy as np
import tritonclient.grpc as grpcclient

parser = argparse.ArgumentParser()
parser.add_argument("--addr", default="127.0.0.1:50051")
parser.add_argument("--data", default="data/paths.npz")
parser.add_argument("--model", default="pairforce-h4")
args = parser.parse_args()

frames = np.load(args.data)["arr"].astype(np.float32)
if frames.shape[-1] == 2:  # 2-D data: the served models take 3-D positions, z = 0
    frames = np.concatenate([frames, np.zeros(frames.shape[:-1] + (1,), np.float32)], axis=-1)

client = grpcclient.InferenceServerClient(args.addr)
metadata = client.get_model_metadata(args.model)
window = next((list(t.shape) for t in metadata.inputs if t.name == "previous"), None)
held = window[1] if window else 0  # frames before t the model reads

# 64 frames from the last fifth of the trajectory, each with the frames before it.
ts = np.arange(len(frames) - 65, len(frames) - 1)
inputs = [grpcclient.InferInput("positions", [len(ts), 12, 3], "FP32")]
inputs[0].set_data_from_numpy(frames[ts])
if held:
    previous = np.stack([frames[t - held : t] for t in ts])
    inputs.append(grpcclient.InferInput("previous", list(previous.shape), "FP32"))
    inputs[1].set_data_from_numpy(previous)
dx = client.infer(args.model, inputs).as_numpy("dx")

truth = frames[ts + 1] - frames[ts]
mse, zero = float(np.mean((dx - truth) ** 2)), float(np.mean(truth**2))
print(f"{args.model}: dx {dx.shape}, MSE {mse:.3e}, skill over 'nothing moves' {1 - mse / zero:.5f}")
assert dx.shape == (len(ts), 12, 3) and np.isfinite(dx).all()
assert mse < zero, "the model predicts the motion better than no motion"
