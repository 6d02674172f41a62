"""The model repository over the Open Inference Protocol: list the models, take one out
of service and bring it back (the server runs with --model-control explicit; with
--auth-token-file, these calls need an admin token, given here with --token).

    python examples/repository.py [--addr 127.0.0.1:50051] [--model mlp] [--token TOKEN]
"""

import argparse

import tritonclient.grpc as grpcclient

parser = argparse.ArgumentParser()
parser.add_argument("--addr", default="127.0.0.1:50051")
parser.add_argument("--model", default="mlp")
parser.add_argument("--token")
args = parser.parse_args()

headers = {"authorization": f"Bearer {args.token}"} if args.token else None
client = grpcclient.InferenceServerClient(args.addr)
for model in client.get_model_repository_index(headers=headers).models:
    print(f"{model.name} version {model.version or '-'}: {model.state} {model.reason}".rstrip())

client.unload_model(args.model, headers=headers)
assert not client.is_model_ready(args.model, headers=headers)
print(f"{args.model}: unloaded")
client.load_model(args.model, headers=headers)
assert client.is_model_ready(args.model, headers=headers)
print(f"{args.model}: loaded again and ready")
