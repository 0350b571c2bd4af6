"""Retrieval and its measurement: pair scores and mining under the base model (scoring), the FAISS
index of a block of vectors (index), trec_eval metrics (metrics), and the validation pool (validation)."""
