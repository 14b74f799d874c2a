"""Archives and manifests: safe paths in, reproducible archives out."""
