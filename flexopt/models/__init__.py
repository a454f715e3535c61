"""What is sampled from: loading a MODEL argument (folder, hub id, `flexopt:NAME`), the
conditioning of text and class pipelines, and the embedded teacher with its training data.
"""
