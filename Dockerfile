# The equiserve server on a CUDA runtime image, with the GPU build of ONNX Runtime
# (Dockerfile.cpu: the same on a slim CPU image).
# Build: docker build -t equiserve .   Run: docker run --gpus all -p 50051:50051 equiserve
# Builds the server alone (no training stack: --no-default-features --features serve).
# (Not buildable in the development sandbox, which has no Docker engine.)

FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3-pip && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN EQUISERVE_ORT_PACKAGE=onnxruntime-gpu scripts/setup \
 && cargo build --release --locked --no-default-features --features serve --bin equiserve --bin equiserve-client

# onnxruntime-gpu 1.31 is built against CUDA 13 and cuDNN 9 (its wheel's requirements).
FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04
WORKDIR /app
COPY --from=build /src/target/release/equiserve /src/target/release/equiserve-client /app/
COPY --from=build /src/.ort/lib /app/.ort/lib
COPY models /app/models
ENV EQUISERVE_ADDR=0.0.0.0:50051 EQUISERVE_MODELS_DIR=/app/models EQUISERVE_DEVICE=auto EQUISERVE_LOG_FORMAT=json
EXPOSE 50051
# Nothing here needs root.
USER 65532:65532
ENTRYPOINT ["/app/equiserve"]
