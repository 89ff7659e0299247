"""LangChain adapter for ModelMesh Lite (``MeshChatModel``)."""
