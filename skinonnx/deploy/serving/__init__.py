"""`serve`: the model as a service on the Open Inference Protocol (KServe v2), torch-free (docs/SERVE.md).

One job per module: :mod:`.settings` (limits and batching knobs), :mod:`.model` (the ONNX file as the service
sees it: v2 metadata, image bytes -> model input, one run), :mod:`.v2` (the protocol's JSON and binary tensor
encoding), :mod:`.batcher` (dynamic batching with a bounded queue), :mod:`.metrics` (Prometheus),
:mod:`.problems` (the 4xx/5xx errors and their JSON), :mod:`.app` (the FastAPI routes), :mod:`.local`
(uvicorn, graceful shutdown) and :mod:`.ray_engine` (the same app on Ray Serve).
"""
