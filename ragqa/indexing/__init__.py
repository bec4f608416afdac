"""Documents in, a searchable index out: loading (``documents``), chunking, embedding (torch or
ONNX), the crash-safe versioned index directory (``storage``) with its chunk store, vector stores
(FAISS, Qdrant) and BM25, and search (``index``, ``retrieval``). Imports nothing above it."""
