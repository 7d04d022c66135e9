"""A new scenario from sample data (``cli new-scenario``): profile the files, let the kind of
model draft its files, place them in the project, and validate the whole before anything runs."""
