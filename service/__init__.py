"""Export service: exports tools as packages, bundles and record files."""
