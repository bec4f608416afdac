"""Adapters that plug ragqa into other frameworks.

Each integration lives in its own submodule and imports its framework only when that submodule
is imported, so ``import ragqa`` never needs them:

- ``ragqa.integrations.langchain``: ``RagqaRetriever`` (a LangChain retriever over a ragqa
  ``Index``) and ``RagqaChatModel`` (a LangChain chat model over a ragqa generator). Needs
  ``pip install langchain-core``.
"""
