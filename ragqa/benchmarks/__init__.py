"""Speed and memory benchmarks (each prints a table and writes JSON): ``bench`` (indexing, search,
generation, whole answers, against llama.cpp, all stages at once) and ``scale`` (large indexes,
HNSW against exact search, the checks on open). Not used by the library itself."""
