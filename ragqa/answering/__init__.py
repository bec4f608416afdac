"""Questions in, answers with sources out: prompt assembly from templates (``prompting``,
``templates/*.toml``) and the pipeline that retrieves, prompts, generates, cites and abstains
(``pipeline.RagQA``). Uses ``indexing`` and ``generators``."""
