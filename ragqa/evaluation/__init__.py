"""Measured answers: retrieval (nDCG, recall), QA (EM / F1 of what ``ask`` returns),
summaries (ROUGE), variants and models compared in one report (``evaluate``), and its charts."""
