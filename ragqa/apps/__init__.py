"""What people run: the ``ragqa`` command line (``cli``, training commands in ``train_cli``),
the Streamlit chat UI's launcher (``ui_launch``; the app is ``ui/app.py``), uploads and feedback
for the UI. The top layer: nothing in the library imports it."""
