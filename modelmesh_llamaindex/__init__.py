"""LlamaIndex adapter for ModelMesh Lite (``MeshLLM``)."""
